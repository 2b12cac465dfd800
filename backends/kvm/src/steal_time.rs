//! Steal time: each vCPU registers a 64-byte [`KvmStealTime`] record with
//! `MSR_KVM_STEAL_TIME`; the host keeps the stolen nanoseconds in it and
//! the `preempted` byte that PV TLB flush and PV sched yield read.
//!
//! `steal_clock(cpu)` copies the record under its version protocol with a
//! bounded number of attempts. A record the host never fills (version
//! still 0 after registration) leaves that CPU without steal time: its
//! steal clock reads 0 and a warning is printed once. A record that stops
//! settling returns the last value read (and warns once).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use pvops_core::abi::pvclock::{read_versioned, Versioned, DEFAULT_MAX_TRIES};
use pvops_core::cpu::CpuId;
use pvops_core::irq::MAX_CPUS;

use crate::abi::{KvmStealTime, KVM_MSR_ENABLED, KVM_VCPU_PREEMPTED, MSR_KVM_STEAL_TIME};
use crate::hypercall::{Hypervisor, KvmError};
use crate::percpu::{phys_of, PerCpu};
use crate::warn::warn_once;

/// One vCPU's record, as shared with the host: 64-byte aligned, zeroed.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct StealArea(UnsafeCell<KvmStealTime>);

// SAFETY: every access from Rust goes through the atomic views below; the
// host writes the record too, and the version protocol (steal) or an
// atomic compare-exchange (preempted) copes with that.
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

    fn steal(&self) -> &AtomicU64 {
        // SAFETY: `steal` is an 8-aligned u64 at offset 0 of a 64-aligned
        // record that lives as long as `self`; AtomicU64 has u64's layout,
        // and Rust only ever accesses the field atomically.
        unsafe { AtomicU64::from_ptr(core::ptr::addr_of_mut!((*self.0.get()).steal)) }
    }

    fn version_word(&self) -> &AtomicU32 {
        // SAFETY: as for `steal`: a 4-aligned u32 only accessed atomically.
        unsafe { AtomicU32::from_ptr(core::ptr::addr_of_mut!((*self.0.get()).version)) }
    }

    /// The `preempted` byte (bit 0: not running; bit 1: flush my TLB).
    pub fn preempted(&self) -> &AtomicU8 {
        // SAFETY: as for `steal`: a byte only accessed atomically.
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
    /// (version, steal).
    type Record = (u32, u64);
    fn version(&self) -> u32 {
        self.version_word().load(Ordering::Acquire)
    }
    fn snapshot(&self) -> (u32, u64) {
        (
            self.version_word().load(Ordering::Relaxed),
            self.steal().load(Ordering::Relaxed),
        )
    }
}

static AREAS: PerCpu<StealArea> = PerCpu::new([const { StealArea::new() }; MAX_CPUS]);
static REGISTERED: PerCpu<AtomicBool> = PerCpu::new([const { AtomicBool::new(false) }; MAX_CPUS]);
static LAST: PerCpu<AtomicU64> = PerCpu::new([const { AtomicU64::new(0) }; MAX_CPUS]);
static WARNED_EMPTY: AtomicBool = AtomicBool::new(false);
static WARNED_UNSETTLED: AtomicBool = AtomicBool::new(false);

/// How many times registration looks for the host's first update.
const FILL_POLLS: u32 = 1000;

/// Waits (boundedly) for the host to fill `area` after registration.
pub fn wait_filled(area: &StealArea, polls: u32) -> bool {
    for _ in 0..polls.max(1) {
        if area.version_word().load(Ordering::Acquire) != 0 {
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
    let paddr = phys_of(area.as_ptr());
    if !paddr.is_multiple_of(64) {
        return Err(KvmError::Misaligned {
            msr: MSR_KVM_STEAL_TIME,
            paddr,
        });
    }
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
    area(cpu).is_some_and(|a| a.preempted().load(Ordering::Relaxed) & KVM_VCPU_PREEMPTED != 0)
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
            a.version_word() as *const AtomicU32 as usize - a.as_ptr() as usize,
            8
        );
    }

    #[test]
    fn never_filled_area() {
        let a = StealArea::new();
        assert!(!wait_filled(&a, 10));
        assert_eq!(read(&a, 10), StealRead::Empty);
        a.version_word().store(2, Ordering::Relaxed);
        a.steal().store(777, Ordering::Relaxed);
        assert!(wait_filled(&a, 1));
        assert_eq!(read(&a, 10), StealRead::Value(777));
        a.version_word().store(3, Ordering::Relaxed);
        assert_eq!(read(&a, 10), StealRead::Unsettled);
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
