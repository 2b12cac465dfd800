//! Steal time: each vCPU registers a 64-byte [`KvmStealTime`] record with
//! `MSR_KVM_STEAL_TIME`; the host keeps the stolen nanoseconds in it and
//! the `preempted` byte that PV TLB flush and PV sched yield read.
//!
//! `steal_clock(cpu)` copies the record under its version protocol with a
//! bounded number of attempts. A record the host never fills (version
//! still 0 after registration) leaves that CPU without steal time: its
//! steal clock reads 0 and a warning is printed once. A record that stops
//! settling returns the last value read (and warns once).
//!
//! Every access goes through [`pvops_core::shmem::ShPtr`]: `steal` and
//! `version` (only the host writes them) are volatile copies of the
//! record's first 16 bytes ([`StealHead`]), checked and used as copied;
//! the `preempted` byte is loaded atomically, because other vCPUs set
//! `KVM_VCPU_FLUSH_TLB` in it with a compare-exchange (PV TLB flush) that
//! must not lose the host's concurrent update of the same byte.

use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use pvops_core::abi::pvclock::{read_versioned, Versioned, VersionedRecord, DEFAULT_MAX_TRIES};
use pvops_core::cpu::CpuId;
use pvops_core::irq::MAX_CPUS;
use pvops_core::shmem::ShPtr;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::abi::{KvmStealTime, KVM_MSR_ENABLED, KVM_VCPU_PREEMPTED, MSR_KVM_STEAL_TIME};
use crate::hypercall::{Hypervisor, KvmError};
use crate::percpu::PerCpu;
use crate::warn::warn_once;

/// The part of [`KvmStealTime`] the version protocol covers, copied in
/// one read: everything before the `preempted` byte (which other vCPUs
/// modify atomically, so it is never part of a plain copy).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct StealHead {
    /// Stolen nanoseconds.
    pub steal: u64,
    /// Odd while the host updates the record.
    pub version: u32,
    /// Always 0 so far.
    pub flags: u32,
}
static_assertions::const_assert_eq!(
    offset_of!(StealHead, steal),
    offset_of!(KvmStealTime, steal)
);
static_assertions::const_assert_eq!(
    offset_of!(StealHead, version),
    offset_of!(KvmStealTime, version)
);
static_assertions::const_assert!(
    core::mem::size_of::<StealHead>() <= offset_of!(KvmStealTime, preempted)
);

impl VersionedRecord for StealHead {
    const VERSION_OFFSET: usize = offset_of!(StealHead, version);
}

/// One vCPU's record, as shared with the host: 64-byte aligned, zeroed.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct StealArea(UnsafeCell<KvmStealTime>);

// SAFETY: every access from Rust goes through `ShPtr` (volatile copies of
// the head, atomic accesses to the `preempted` byte) or the atomic view
// `preempted()`; the host writes the record too, and the version protocol
// (steal) or an atomic compare-exchange (preempted) copes with that.
unsafe impl Sync for StealArea {}

impl StealArea {
    /// A zeroed record.
    pub const fn new() -> Self {
        Self(UnsafeCell::new(KvmStealTime {
            steal: 0,
            version: 0,
            flags: 0,
            preempted: 0,
            u8_pad: [0; 3],
            pad: [0; 11],
        }))
    }

    /// The record, for one access while `self` is borrowed.
    fn sh(&self) -> ShPtr<KvmStealTime> {
        // SAFETY: the cell is valid and 64-byte aligned while `self` is
        // borrowed, which outlasts every use (each caller uses the pointer
        // within one method); Rust reaches the record only through ShPtr
        // and the atomic `preempted()` view of a byte no ShPtr reads plainly.
        unsafe { ShPtr::new(self.0.get()) }
    }

    /// The volatile-copied head (steal, version).
    fn head(&self) -> ShPtr<StealHead> {
        self.sh().field::<StealHead>(0)
    }

    /// The `preempted` byte, loaded once.
    fn preempted_now(&self) -> u8 {
        self.sh()
            .field::<u8>(offset_of!(KvmStealTime, preempted))
            .load(Ordering::Relaxed)
    }

    /// The `preempted` byte (bit 0: not running; bit 1: flush my TLB) as an
    /// atomic, for PV TLB flush's compare-exchange (an ABI read-modify-
    /// write that must stay one atomic instruction).
    pub fn preempted(&self) -> &AtomicU8 {
        // SAFETY: a byte at offset 16 of a record that lives as long as
        // `self`; Rust only ever accesses it atomically.
        unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*self.0.get()).preempted)) }
    }

    fn as_ptr(&self) -> *const KvmStealTime {
        self.0.get()
    }
}

impl Default for StealArea {
    fn default() -> Self {
        Self::new()
    }
}

impl Versioned for StealArea {
    /// (version, steal), from one copy of the head.
    type Record = (u32, u64);
    fn version(&self) -> u32 {
        self.head().version()
    }
    fn snapshot(&self) -> (u32, u64) {
        let h = self.head().snapshot();
        (h.version, h.steal)
    }
}

pub(crate) static AREAS: PerCpu<StealArea> = PerCpu::new([const { StealArea::new() }; MAX_CPUS]);
static REGISTERED: PerCpu<AtomicBool> = PerCpu::new([const { AtomicBool::new(false) }; MAX_CPUS]);
static LAST: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; MAX_CPUS]);
static WARNED_EMPTY: AtomicBool = AtomicBool::new(false);
static WARNED_UNSETTLED: AtomicBool = AtomicBool::new(false);

/// How many times registration looks for the host's first update.
const FILL_POLLS: u32 = 1000;

/// Waits (boundedly) for the host to fill `area` after registration.
pub fn wait_filled(area: &StealArea, polls: u32) -> bool {
    for _ in 0..polls.max(1) {
        if area.version() != 0 {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Registers `cpu`'s record and checks the host filled it; if not, the
/// registration is withdrawn and the CPU has no steal time.
pub(crate) fn register<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> Result<(), KvmError> {
    let area = AREAS.get(cpu).ok_or(KvmError::CpuOutOfRange(cpu.0))?;
    let paddr = crate::hypercall::area_paddr(h, area.as_ptr(), MSR_KVM_STEAL_TIME)?;
    if !paddr.is_multiple_of(64) {
        return Err(KvmError::Misaligned {
            msr: MSR_KVM_STEAL_TIME,
            paddr,
        });
    }
    crate::hypercall::refuse(h, crate::fault_points::STEAL_TIME, MSR_KVM_STEAL_TIME)?;
    // SAFETY: a zeroed, 64-byte-aligned, 64-byte static of this crate in
    // RAM; from Rust it is only accessed atomically.
    unsafe { h.write_msr(MSR_KVM_STEAL_TIME, paddr | KVM_MSR_ENABLED) };
    if !wait_filled(area, FILL_POLLS) {
        // SAFETY: enable bit clear: the host stops writing the record.
        unsafe { h.write_msr(MSR_KVM_STEAL_TIME, 0) };
        return Err(KvmError::NotFilled {
            msr: MSR_KVM_STEAL_TIME,
            version: 0,
        });
    }
    if let Some(r) = REGISTERED.get(cpu) {
        r.store(true, Ordering::Release);
    }
    crate::registrations::record(
        cpu,
        crate::registrations::Area::StealTime,
        paddr | KVM_MSR_ENABLED,
    );
    Ok(())
}

/// The record of `cpu`, if registered.
pub fn area(cpu: CpuId) -> Option<&'static StealArea> {
    let on = REGISTERED.get(cpu)?.load(Ordering::Acquire);
    on.then(|| AREAS.get(cpu)).flatten()
}

/// What one read of a record gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StealRead {
    /// The stolen nanoseconds.
    Value(u64),
    /// The host never filled the record (version 0).
    Empty,
    /// The version never settled within the bound.
    Unsettled,
}

/// Reads a record under the version protocol, bounded.
pub fn read(area: &(impl Versioned<Record = (u32, u64)> + ?Sized), max_tries: u32) -> StealRead {
    match read_versioned(area, max_tries) {
        Ok((0, _)) => StealRead::Empty,
        Ok((_, steal)) => StealRead::Value(steal),
        Err(_) => StealRead::Unsettled,
    }
}

/// The `time.steal_clock` op.
pub fn steal_clock(cpu: CpuId) -> u64 {
    let (Some(area), Some(last)) = (area(cpu), LAST.get(cpu)) else {
        return 0;
    };
    match read(area, DEFAULT_MAX_TRIES) {
        StealRead::Value(v) => {
            last.fetch_max(v, Ordering::Relaxed);
            v
        }
        StealRead::Empty => {
            warn_once(
                &WARNED_EMPTY,
                format_args!("kvm steal time of cpu {} never filled: reads 0", cpu.0),
            );
            0
        }
        StealRead::Unsettled => {
            warn_once(
                &WARNED_UNSETTLED,
                format_args!(
                    "kvm steal time of cpu {} never settles: last value kept",
                    cpu.0
                ),
            );
            last.load(Ordering::Relaxed)
        }
    }
}

/// Whether the host says `cpu` is not running right now (false when
/// steal time is off for it).
pub fn preempted(cpu: CpuId) -> bool {
    area(cpu).is_some_and(|a| a.preempted_now() & KVM_VCPU_PREEMPTED != 0)
}

/// The `preempted` byte of `cpu`, if its steal time is registered.
pub(crate) fn preempted_byte(cpu: CpuId) -> Option<&'static AtomicU8> {
    area(cpu).map(StealArea::preempted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn area_layout() {
        assert_eq!(core::mem::size_of::<StealArea>(), 64);
        assert_eq!(core::mem::align_of::<StealArea>(), 64);
        let a = StealArea::new();
        assert_eq!(
            a.preempted() as *const AtomicU8 as usize - a.as_ptr() as usize,
            16
        );
        assert_eq!(
            a.head()
                .field::<u32>(offset_of!(StealHead, version))
                .as_ptr() as usize
                - a.as_ptr() as usize,
            8
        );
    }

    #[test]
    fn never_filled_area() {
        let a = StealArea::new();
        assert!(!wait_filled(&a, 10));
        assert_eq!(read(&a, 10), StealRead::Empty);
        a.head().write(StealHead {
            steal: 777,
            version: 2,
            flags: 0,
        });
        assert!(wait_filled(&a, 1));
        assert_eq!(read(&a, 10), StealRead::Value(777));
        a.head()
            .field::<u32>(offset_of!(StealHead, version))
            .write(3);
        assert_eq!(read(&a, 10), StealRead::Unsettled);
        // The preempted byte is outside the copied head.
        a.preempted().store(KVM_VCPU_PREEMPTED, Ordering::Relaxed);
        assert_eq!(a.preempted_now(), KVM_VCPU_PREEMPTED);
        assert_eq!(a.head().read().steal, 777);
    }

    struct Torn {
        versions: [u32; 4],
        i: Cell<usize>,
    }
    impl Versioned for Torn {
        type Record = (u32, u64);
        fn version(&self) -> u32 {
            let i = self.i.get();
            self.i.set(i + 1);
            self.versions[i.min(3)]
        }
        fn snapshot(&self) -> (u32, u64) {
            (self.versions[self.i.get().min(3)], self.i.get() as u64)
        }
    }

    #[test]
    fn torn_read_retried() {
        let t = Torn {
            versions: [2, 4, 4, 4],
            i: Cell::new(0),
        };
        assert_eq!(read(&t, 5), StealRead::Value(3));
    }

    #[test]
    fn unregistered_cpu_reads_zero() {
        assert_eq!(steal_clock(CpuId(200)), 0);
        assert_eq!(steal_clock(CpuId(100_000)), 0);
        assert!(!preempted(CpuId(200)));
        assert!(preempted_byte(CpuId(300)).is_none());
    }
}
