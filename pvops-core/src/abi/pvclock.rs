//! pvclock: the per-vCPU time record a hypervisor keeps in guest memory
//! (KVM's kvmclock, Xen's `vcpu_time_info`), the wall-clock record that goes
//! with it, and the version protocol both are read under.
//!
//! Both KVM (`MSR_KVM_SYSTEM_TIME_NEW`) and Xen (`vcpu_info.time`) use the
//! same 32-byte layout:
//!
//! | offset | field               | type  |
//! |-------:|---------------------|-------|
//! |      0 | `version`           | `u32` |
//! |      4 | `pad0`              | `u32` |
//! |      8 | `tsc_timestamp`     | `u64` |
//! |     16 | `system_time`       | `u64` |
//! |     24 | `tsc_to_system_mul` | `u32` |
//! |     28 | `tsc_shift`         | `i8`  |
//! |     29 | `flags`             | `u8`  |
//! |     30 | `pad`               | `[u8; 2]` |
//!
//! The hypervisor makes `version` odd, updates the other fields, then makes
//! it even again. A reader copies the whole record between two reads of
//! `version` and keeps the copy only when both reads agree and are even
//! ([`read_versioned`]). Unlike Linux, the number of attempts is bounded: a
//! record whose version never settles is an error ([`Unsettled`]), not a
//! hang. The time at TSC value `tsc` is then
//! `system_time + scale(tsc - tsc_timestamp)` where the scale is
//! [`ClockScale`] (shift, then 32.32 multiply).
//!
//! Records in shared memory are reached through [`crate::shmem::ShPtr`]
//! (the audited accessor): a [`VersionedRecord`] behind a `ShPtr` or in
//! [`Shared`] storage is [`Versioned`], its version one volatile read and
//! its snapshot one volatile copy; only that copy is checked and used.

use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{fence, Ordering};

use bitflags::bitflags;
use static_assertions::{const_assert, const_assert_eq};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::shmem::ShPtr;
use crate::time::ClockScale;

/// How many times [`read_time_info`] and [`read_wall_clock`] try before
/// they give up on a record that keeps changing. A hypervisor update takes
/// well under a microsecond; a thousand attempts cover any honest one.
pub const DEFAULT_MAX_TRIES: u32 = 1000;

/// `struct pvclock_vcpu_time_info`: one vCPU's time record.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct VcpuTimeInfo {
    /// Odd while the hypervisor updates the record.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// The TSC value at which `system_time` was taken.
    pub tsc_timestamp: u64,
    /// Host time in nanoseconds at `tsc_timestamp`.
    pub system_time: u64,
    /// 32.32 fixed-point multiplier from shifted TSC ticks to nanoseconds.
    pub tsc_to_system_mul: u32,
    /// Power of two applied to a TSC delta before the multiply.
    pub tsc_shift: i8,
    /// [`PvclockFlags`] bits.
    pub flags: u8,
    /// Padding.
    pub pad: [u8; 2],
}

const_assert_eq!(core::mem::size_of::<VcpuTimeInfo>(), 32);
const_assert_eq!(core::mem::offset_of!(VcpuTimeInfo, version), 0);
const_assert_eq!(core::mem::offset_of!(VcpuTimeInfo, tsc_timestamp), 8);
const_assert_eq!(core::mem::offset_of!(VcpuTimeInfo, system_time), 16);
const_assert_eq!(core::mem::offset_of!(VcpuTimeInfo, tsc_to_system_mul), 24);
const_assert_eq!(core::mem::offset_of!(VcpuTimeInfo, tsc_shift), 28);
const_assert_eq!(core::mem::offset_of!(VcpuTimeInfo, flags), 29);
const_assert_eq!(core::mem::offset_of!(VcpuTimeInfo, pad), 30);

bitflags! {
    /// Bits of [`VcpuTimeInfo::flags`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct PvclockFlags: u8 {
        /// `PVCLOCK_TSC_STABLE_BIT`: readings taken on different vCPUs are
        /// monotonic with each other (only meaningful when the hypervisor
        /// advertises it, e.g. KVM's CPUID `CLOCKSOURCE_STABLE_BIT`).
        const TSC_STABLE = 1 << 0;
        /// `PVCLOCK_GUEST_STOPPED`: the host paused this vCPU (for a
        /// watchdog to forgive a long gap).
        const GUEST_STOPPED = 1 << 1;
    }
}

/// Shifts past this make [`ClockScale::ticks_to_ns`] overflow its 128-bit
/// product (a 64-bit delta shifted by 32 times a 32-bit multiplier is just
/// under 2^128).
const MAX_SAFE_SHIFT: i8 = 32;

impl VcpuTimeInfo {
    /// The flags, unknown bits kept.
    pub fn flags(&self) -> PvclockFlags {
        PvclockFlags::from_bits_retain(self.flags)
    }

    /// The record's TSC-to-nanoseconds scale.
    pub fn scale(&self) -> ClockScale {
        ClockScale {
            mul_frac: self.tsc_to_system_mul,
            shift: self.tsc_shift,
        }
    }

    /// Nanoseconds for `delta` TSC ticks with this record's scale. Never
    /// overflows or panics, whatever the hypervisor wrote: the result
    /// saturates at `u64::MAX`.
    pub fn scale_delta(&self, delta: u64) -> u64 {
        let shift = self.tsc_shift;
        if shift < -63 {
            // Every bit of a 64-bit delta is shifted out.
            return 0;
        }
        if shift <= MAX_SAFE_SHIFT {
            return self.scale().ticks_to_ns(delta);
        }
        // Apply the part of the shift beyond what the 128-bit product can
        // take to the delta first, saturating.
        let extra = u32::from(shift.unsigned_abs()) - MAX_SAFE_SHIFT as u32;
        let pre = if delta == 0 {
            0
        } else if delta.leading_zeros() >= extra {
            delta << extra
        } else {
            u64::MAX
        };
        ClockScale {
            mul_frac: self.tsc_to_system_mul,
            shift: MAX_SAFE_SHIFT,
        }
        .ticks_to_ns(pre)
    }

    /// The time in nanoseconds at TSC value `tsc`:
    /// `system_time + scale(tsc - tsc_timestamp)`, the difference taken
    /// modulo 2^64 as the TSC counts: Xen stamps an HVM guest's record in
    /// the guest's TSC, which may have wrapped below zero at the stamp (a
    /// guest TSC that started at 0 after the stamp). A `tsc` just before
    /// the timestamp (read on another CPU, or out of order), i.e. a
    /// difference that is negative as a signed number, counts as no time
    /// elapsed rather than a huge wrapped delta; the sum saturates.
    pub fn time_at(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        let delta = if (delta as i64) < 0 { 0 } else { delta };
        self.system_time.saturating_add(self.scale_delta(delta))
    }
}

/// `struct pvclock_wall_clock`: wall-clock time at the moment the
/// hypervisor's notion of system time was 0 (KVM's
/// `MSR_KVM_WALL_CLOCK_NEW` fills it on each write to the MSR).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct PvclockWallClock {
    /// Odd while the hypervisor updates the record.
    pub version: u32,
    /// Seconds since the Unix epoch.
    pub sec: u32,
    /// Nanoseconds past `sec`.
    pub nsec: u32,
}

const_assert_eq!(core::mem::size_of::<PvclockWallClock>(), 12);
const_assert_eq!(core::mem::offset_of!(PvclockWallClock, sec), 4);
const_assert_eq!(core::mem::offset_of!(PvclockWallClock, nsec), 8);

impl PvclockWallClock {
    /// Nanoseconds since the epoch this record names (`nsec` values of a
    /// second or more, which a sane host never writes, are taken as is).
    pub fn epoch_ns(&self) -> u64 {
        u64::from(self.sec) * 1_000_000_000 + u64::from(self.nsec)
    }
}

/// A record under the version protocol that can be read in two steps: its
/// version alone, and a copy of the whole record.
pub trait Versioned {
    /// What a copy of the record is.
    type Record: Copy;
    /// Reads the version field once.
    fn version(&self) -> u32;
    /// Copies the whole record once.
    fn snapshot(&self) -> Self::Record;
}

/// A record kept changing (or stayed mid-update) for every attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsettled {
    /// How many attempts were made.
    pub tries: u32,
    /// The version seen on the last attempt.
    pub last_version: u32,
}

impl fmt::Display for Unsettled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "record version never settled after {} tries (last {:#x})",
            self.tries, self.last_version
        )
    }
}

impl core::error::Error for Unsettled {}

/// Copies `src` under the version protocol: read the version, copy the
/// record, read the version again; keep the copy when both versions are
/// equal and even. At most `max_tries` attempts (at least one is made).
pub fn read_versioned<V: Versioned + ?Sized>(
    src: &V,
    max_tries: u32,
) -> Result<V::Record, Unsettled> {
    let tries = max_tries.max(1);
    let mut last_version = 0;
    for _ in 0..tries {
        let before = src.version();
        last_version = before;
        if before & 1 != 0 {
            core::hint::spin_loop();
            continue;
        }
        // The copy must not be read before the first version read, nor the
        // second version read before the copy (a compiler barrier on x86,
        // where loads are not reordered with loads).
        fence(Ordering::Acquire);
        let record = src.snapshot();
        fence(Ordering::Acquire);
        let after = src.version();
        if after == before {
            return Ok(record);
        }
        last_version = after;
        core::hint::spin_loop();
    }
    Err(Unsettled {
        tries,
        last_version,
    })
}

/// Copies a vCPU time record under the version protocol.
pub fn read_time_info<V: Versioned<Record = VcpuTimeInfo> + ?Sized>(
    src: &V,
    max_tries: u32,
) -> Result<VcpuTimeInfo, Unsettled> {
    read_versioned(src, max_tries)
}

/// Copies a wall-clock record under the version protocol.
pub fn read_wall_clock<V: Versioned<Record = PvclockWallClock> + ?Sized>(
    src: &V,
    max_tries: u32,
) -> Result<PvclockWallClock, Unsettled> {
    read_versioned(src, max_tries)
}

/// Storage for a record the hypervisor writes, for a `static` whose
/// physical address is handed to it. Starts zeroed (as KVM requires).
#[repr(C, align(64))]
pub struct Shared<T>(UnsafeCell<T>);

// SAFETY: Rust code only ever reaches the contents through `ShPtr`
// (volatile copies; `Versioned` impls below); the only writer is the
// hypervisor, outside the program, and the version protocol detects its
// concurrent updates.
unsafe impl<T: Send> Sync for Shared<T> {}

const_assert!(core::mem::align_of::<Shared<VcpuTimeInfo>>() >= 32);

impl<T> Shared<T> {
    /// Wraps an initial value (zero, for records handed to a hypervisor).
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// Where the record lives (its virtual address).
    pub const fn as_ptr(&self) -> *mut T {
        self.0.get()
    }
}

impl<T> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Shared({:p})", self.0.get())
    }
}

impl Shared<VcpuTimeInfo> {
    /// A zeroed time record.
    pub const fn zeroed() -> Self {
        Self::new(VcpuTimeInfo {
            version: 0,
            pad0: 0,
            tsc_timestamp: 0,
            system_time: 0,
            tsc_to_system_mul: 0,
            tsc_shift: 0,
            flags: 0,
            pad: [0; 2],
        })
    }
}

impl Shared<PvclockWallClock> {
    /// A zeroed wall-clock record.
    pub const fn zeroed() -> Self {
        Self::new(PvclockWallClock {
            version: 0,
            sec: 0,
            nsec: 0,
        })
    }
}

/// A record type read under the version protocol straight from shared
/// memory: where its `u32` version counter is. [`ShPtr`] to such a record
/// (and [`Shared`] storage of one) is then [`Versioned`]: the version is
/// one volatile read of that word, the snapshot one volatile copy of the
/// whole record ([`ShPtr::read`]).
pub trait VersionedRecord: FromBytes + Copy {
    /// Byte offset of the `u32` version counter (checked when used: inside
    /// the record and 4-byte aligned).
    const VERSION_OFFSET: usize;
}

impl VersionedRecord for VcpuTimeInfo {
    const VERSION_OFFSET: usize = core::mem::offset_of!(VcpuTimeInfo, version);
}

impl VersionedRecord for PvclockWallClock {
    const VERSION_OFFSET: usize = core::mem::offset_of!(PvclockWallClock, version);
}

impl<R: VersionedRecord> Versioned for ShPtr<R> {
    type Record = R;
    #[inline]
    fn version(&self) -> u32 {
        self.field::<u32>(R::VERSION_OFFSET).read()
    }
    #[inline]
    fn snapshot(&self) -> R {
        self.read()
    }
}

impl<T> Shared<T> {
    /// The record as a [`ShPtr`], for reads of single fields. Needs a
    /// `'static` record (every record handed to a hypervisor is one), so
    /// the pointer can never outlive it.
    #[inline]
    pub fn ptr(&'static self) -> ShPtr<T> {
        self.sh()
    }

    /// The record as a [`ShPtr`], for use while `self` is borrowed.
    #[inline]
    fn sh(&self) -> ShPtr<T> {
        // SAFETY: the cell is valid and aligned for as long as `self` is
        // borrowed, which outlasts every use of the result (callers in this
        // module use it within one method call; `ptr` needs 'static); Rust
        // code reaches the contents only through ShPtr (see `Sync` above).
        unsafe { ShPtr::new(self.as_ptr()) }
    }
}

impl<R: VersionedRecord> Versioned for Shared<R> {
    type Record = R;
    #[inline]
    fn version(&self) -> u32 {
        self.sh().version()
    }
    #[inline]
    fn snapshot(&self) -> R {
        self.sh().snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::vec::Vec;
    use zerocopy::FromBytes;

    /// A record that plays a scripted sequence of versions and bodies.
    struct Script {
        versions: Vec<u32>,
        bodies: Vec<VcpuTimeInfo>,
        v: Cell<usize>,
        b: Cell<usize>,
    }

    impl Script {
        fn new(versions: &[u32], bodies: &[VcpuTimeInfo]) -> Self {
            Self {
                versions: versions.to_vec(),
                bodies: bodies.to_vec(),
                v: Cell::new(0),
                b: Cell::new(0),
            }
        }
    }

    impl Versioned for Script {
        type Record = VcpuTimeInfo;
        fn version(&self) -> u32 {
            let i = self.v.get();
            self.v.set(i + 1);
            *self
                .versions
                .get(i)
                .unwrap_or(self.versions.last().unwrap())
        }
        fn snapshot(&self) -> VcpuTimeInfo {
            let i = self.b.get();
            self.b.set(i + 1);
            *self.bodies.get(i).unwrap_or(self.bodies.last().unwrap())
        }
    }

    fn rec(version: u32, system_time: u64) -> VcpuTimeInfo {
        VcpuTimeInfo {
            version,
            system_time,
            tsc_timestamp: 1000,
            tsc_to_system_mul: 1 << 31, // 0.5 ns per shifted tick
            tsc_shift: 1,               // ... after doubling: 1 ns per tick
            ..Default::default()
        }
    }

    #[test]
    fn layout_from_bytes() {
        let mut bytes = [0u8; 32];
        bytes[0..4].copy_from_slice(&4u32.to_le_bytes());
        bytes[8..16].copy_from_slice(&0x1122_3344_5566_7788u64.to_le_bytes());
        bytes[16..24].copy_from_slice(&99u64.to_le_bytes());
        bytes[24..28].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        bytes[28] = (-2i8) as u8;
        bytes[29] = 3;
        let r = VcpuTimeInfo::read_from_bytes(&bytes).unwrap();
        assert_eq!(r.version, 4);
        assert_eq!(r.tsc_timestamp, 0x1122_3344_5566_7788);
        assert_eq!(r.system_time, 99);
        assert_eq!(r.tsc_shift, -2);
        assert_eq!(
            r.flags(),
            PvclockFlags::TSC_STABLE | PvclockFlags::GUEST_STOPPED
        );
        let w = PvclockWallClock::read_from_bytes(&[2, 0, 0, 0, 10, 0, 0, 0, 5, 0, 0, 0]).unwrap();
        assert_eq!(w.epoch_ns(), 10_000_000_005);
    }

    #[test]
    fn unknown_flag_bits_kept() {
        let r = VcpuTimeInfo {
            flags: 0x81,
            ..Default::default()
        };
        assert!(r.flags().contains(PvclockFlags::TSC_STABLE));
        assert_eq!(r.flags().bits(), 0x81);
    }

    #[test]
    fn stable_record_reads_first_time() {
        let s = Script::new(&[2, 2], &[rec(2, 500)]);
        let r = read_time_info(&s, 10).unwrap();
        assert_eq!(r.system_time, 500);
        assert_eq!(s.b.get(), 1);
    }

    #[test]
    fn odd_forever_is_an_error_not_a_hang() {
        let s = Script::new(&[7], &[rec(7, 1)]);
        let e = read_time_info(&s, 50).unwrap_err();
        assert_eq!(
            e,
            Unsettled {
                tries: 50,
                last_version: 7
            }
        );
        // An odd version is never copied.
        assert_eq!(s.b.get(), 0);
        // Zero tries still makes one attempt.
        let s = Script::new(&[9], &[rec(9, 1)]);
        assert_eq!(read_time_info(&s, 0).unwrap_err().tries, 1);
    }

    #[test]
    fn torn_update_between_reads_is_retried() {
        // Attempt 1: version 2 before, the host updates during the copy
        // (torn body), version 4 after -> discarded. Attempt 2: version 5
        // (update in progress) -> skipped. Attempt 3: 6/6 -> kept.
        let torn = VcpuTimeInfo {
            system_time: 0xdead,
            ..rec(2, 0)
        };
        let s = Script::new(&[2, 4, 5, 6, 6], &[torn, rec(6, 600)]);
        let r = read_time_info(&s, 10).unwrap();
        assert_eq!(r.system_time, 600);
        assert_eq!(s.b.get(), 2);
    }

    #[test]
    fn version_changing_every_time_gives_up() {
        let versions: Vec<u32> = (0..100).map(|i| i * 2).collect();
        let s = Script::new(&versions, &[rec(0, 0)]);
        let e = read_time_info(&s, 10).unwrap_err();
        assert_eq!(e.tries, 10);
    }

    #[test]
    fn time_at_adds_scaled_delta() {
        let r = rec(2, 1_000_000);
        assert_eq!(r.time_at(1000), 1_000_000);
        assert_eq!(r.time_at(1500), 1_000_500);
        // A TSC before the timestamp is no time elapsed, not 2^64 ticks.
        assert_eq!(r.time_at(10), 1_000_000);
        // A timestamp below zero in the TSC's own modulo-2^64 count (Xen
        // stamps HVM records in guest TSC, which may start after the
        // stamp): the delta crosses zero.
        let wrapped = VcpuTimeInfo {
            tsc_timestamp: 0u64.wrapping_sub(500),
            ..rec(2, 1_000_000)
        };
        assert_eq!(wrapped.time_at(1000), 1_001_500);
        // Negative shift: halve the delta, then multiply by 1.0 (2^32 - 1
        // is the closest 32.32 gets).
        let r = VcpuTimeInfo {
            tsc_shift: -1,
            tsc_to_system_mul: u32::MAX,
            tsc_timestamp: 0,
            system_time: 0,
            ..Default::default()
        };
        assert_eq!(r.time_at(2_000_000), 999_999);
    }

    #[test]
    fn scaling_is_overflow_safe() {
        let mut r = VcpuTimeInfo {
            tsc_to_system_mul: u32::MAX,
            system_time: u64::MAX - 5,
            ..Default::default()
        };
        for shift in [i8::MIN, -64, -63, -1, 0, 1, 31, 32, 33, 63, 64, i8::MAX] {
            r.tsc_shift = shift;
            for delta in [0, 1, 12345, u64::MAX / 3, u64::MAX] {
                let _ = r.scale_delta(delta);
                let _ = r.time_at(delta);
            }
        }
        r.tsc_shift = i8::MAX;
        assert_eq!(r.scale_delta(u64::MAX), u64::MAX);
        assert_eq!(r.scale_delta(0), 0);
        // The largest forward delta (2^63 - 1 ticks) saturates; one more
        // reads as a TSC before the stamp.
        assert_eq!(r.time_at(u64::MAX / 2), u64::MAX);
        assert_eq!(r.time_at(u64::MAX), u64::MAX - 5);
        r.tsc_shift = i8::MIN;
        assert_eq!(r.scale_delta(u64::MAX), 0);
        r.tsc_shift = 33;
        r.system_time = 0;
        // 1 tick << 33 = 2^33, times ~1.0 = just under 2^33 ns.
        assert_eq!(r.scale_delta(1), (1u64 << 33) - 2);
    }

    #[test]
    fn shared_storage_reads_itself() {
        static S: Shared<VcpuTimeInfo> = Shared::<VcpuTimeInfo>::zeroed();
        assert_eq!(S.as_ptr() as usize % 32, 0);
        let r = read_time_info(&S, 3).unwrap();
        assert_eq!(r, VcpuTimeInfo::default());
        // SAFETY: the test owns this record; nothing reads it concurrently.
        unsafe { (*S.as_ptr()).version = 3 };
        assert!(read_time_info(&S, 3).is_err());
        let w: Shared<PvclockWallClock> = Shared::<PvclockWallClock>::zeroed();
        assert_eq!(read_wall_clock(&w, 1).unwrap().epoch_ns(), 0);
        let mut rec = rec(4, 77);
        // SAFETY: `rec` outlives the pointer, is aligned, and is only
        // touched through it while it is used.
        let p = unsafe { ShPtr::new(&mut rec as *mut VcpuTimeInfo) };
        assert_eq!(read_time_info(&p, 1).unwrap().system_time, 77);
        assert_eq!(
            p.field::<u8>(core::mem::offset_of!(VcpuTimeInfo, flags))
                .read(),
            0
        );
    }

    /// Generation A and B of a record, each consistent in itself: every
    /// field says which generation it belongs to.
    fn generation(g: u64) -> VcpuTimeInfo {
        VcpuTimeInfo {
            version: 2 * g as u32,
            tsc_timestamp: g * 100,
            system_time: g * 1000,
            tsc_to_system_mul: g as u32 * 7,
            tsc_shift: g as i8,
            ..Default::default()
        }
    }

    /// The update the hypervisor makes from generation 1 to 2, one store at
    /// a time: version odd, each field, version even.
    fn update_steps() -> Vec<VcpuTimeInfo> {
        let a = generation(1);
        let b = generation(2);
        let mut cur = VcpuTimeInfo { version: 3, ..a };
        let mut steps = std::vec![cur];
        cur.tsc_timestamp = b.tsc_timestamp;
        steps.push(cur);
        cur.system_time = b.system_time;
        steps.push(cur);
        cur.tsc_to_system_mul = b.tsc_to_system_mul;
        steps.push(cur);
        cur.tsc_shift = b.tsc_shift;
        steps.push(cur);
        cur.version = 4;
        steps.push(cur);
        assert_eq!(cur, b);
        steps
    }

    /// The real accessor over a heap record, and a "hypervisor" that makes
    /// its next store right after the reader's access number `k` whenever
    /// bit `k` of `schedule` is set (and after every access from the 16th
    /// on, so it always finishes): a writer racing the reader at every
    /// point the reader could be preempted.
    struct Racing {
        p: ShPtr<VcpuTimeInfo>,
        steps: Vec<VcpuTimeInfo>,
        next: Cell<usize>,
        accesses: Cell<u32>,
        schedule: u32,
        /// How many stores the writer makes at each of its turns.
        burst: usize,
    }

    impl Racing {
        fn after_access(&self) {
            let k = self.accesses.get();
            self.accesses.set(k + 1);
            if k >= 16 || self.schedule & (1 << k) != 0 {
                for _ in 0..self.burst {
                    if let Some(s) = self.steps.get(self.next.get()) {
                        self.p.write(*s);
                        self.next.set(self.next.get() + 1);
                    }
                }
            }
        }
    }

    impl Versioned for Racing {
        type Record = VcpuTimeInfo;
        fn version(&self) -> u32 {
            let v = self.p.version();
            self.after_access();
            v
        }
        fn snapshot(&self) -> VcpuTimeInfo {
            let r = self.p.snapshot();
            self.after_access();
            r
        }
    }

    fn consistent(r: &VcpuTimeInfo) -> bool {
        *r == generation(1) || *r == generation(2)
    }

    /// A record the hypervisor changes between (and during) the reader's
    /// reads can never be checked in one state and used in another: for
    /// every schedule of the racing writer over the first 10 accesses, the
    /// copy returned is one whole generation, never a mix, and it is the
    /// copy whose version reads were checked.
    #[test]
    fn racing_writer_never_gets_a_mixed_record_used() {
        let schedules = if cfg!(miri) { 1u32 << 7 } else { 1u32 << 10 };
        for burst in [1, 3] {
            for schedule in 0..schedules {
                let mut mem = std::boxed::Box::new(generation(1));
                // SAFETY: the box outlives `racing`; it is only touched
                // through the ShPtr until then.
                let p = unsafe { ShPtr::new(&mut *mem as *mut VcpuTimeInfo) };
                let racing = Racing {
                    p,
                    steps: update_steps(),
                    next: Cell::new(0),
                    accesses: Cell::new(0),
                    schedule,
                    burst,
                };
                let r = read_time_info(&racing, 20).expect("an update of 6 stores settles");
                assert!(
                    consistent(&r),
                    "burst {burst} schedule {schedule:#b}: mixed record {r:?}"
                );
                // What is used is that copy: time_at works from its fields.
                assert_eq!(r.time_at(r.tsc_timestamp), r.system_time);
                drop(racing);
                drop(mem);
            }
        }
    }

    /// The same racing writer catches a reader that checks the version and
    /// then copies without checking again (the test has teeth).
    #[test]
    fn racing_writer_catches_a_reader_that_does_not_recheck() {
        fn check_then_copy(src: &impl Versioned<Record = VcpuTimeInfo>) -> Option<VcpuTimeInfo> {
            (src.version() & 1 == 0).then(|| src.snapshot())
        }
        let mut caught = false;
        for schedule in 0..1u32 << 6 {
            let mut mem = std::boxed::Box::new(generation(1));
            // SAFETY: as above.
            let p = unsafe { ShPtr::new(&mut *mem as *mut VcpuTimeInfo) };
            let racing = Racing {
                p,
                steps: update_steps(),
                next: Cell::new(0),
                accesses: Cell::new(0),
                schedule,
                burst: 3,
            };
            if let Some(r) = check_then_copy(&racing) {
                caught |= !consistent(&r);
            }
            drop(racing);
            drop(mem);
        }
        assert!(caught, "a single version check lets a mixed record through");
    }
}
