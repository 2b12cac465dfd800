//! The steal clock from the VP runtime MSR (`hv-runtime`): stolen time is
//! the reference time that passed while this VP neither ran nor halted,
//! `elapsed - runtime - halted`. The hypervisor counts a halted VP as not
//! running, so this backend wraps the halt ops to add up the time each
//! CPU spent halted. Each CPU can only read its own runtime: the op for
//! another CPU returns what that CPU computed last.

use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::MAX_CPUS;

use crate::abi::msr;
use crate::hypercall::{Hypervisor, Real};

/// Per CPU: `elapsed - runtime` when it started (what it had before
/// pvops), the time halted since, and the last steal computed.
struct Slot {
    base: AtomicU64,
    halted: AtomicU64,
    last: AtomicU64,
}

static SLOTS: [Slot; MAX_CPUS] = [const {
    Slot {
        base: AtomicU64::new(0),
        halted: AtomicU64::new(0),
        last: AtomicU64::new(0),
    }
}; MAX_CPUS];

/// Steal in nanoseconds from reference time and runtime (both 100 ns),
/// the baseline and the halted nanoseconds; never below `last`.
pub const fn steal_ns(
    ref_100ns: u64,
    runtime_100ns: u64,
    base: u64,
    halted_ns: u64,
    last: u64,
) -> u64 {
    let not_running = ref_100ns.saturating_sub(runtime_100ns).saturating_mul(100);
    let steal = not_running.saturating_sub(base).saturating_sub(halted_ns);
    if steal > last {
        steal
    } else {
        last
    }
}

fn sample<H: Hypervisor + ?Sized>(h: &H) -> Option<u64> {
    let now = crate::ref_tsc::reference_100ns()?;
    // SAFETY: the VP runtime privilege was checked at init.
    let run = unsafe { h.read_msr(msr::VP_RUNTIME) };
    Some(now.saturating_sub(run).saturating_mul(100))
}

/// Records `cpu`'s baseline (this CPU's).
pub fn register<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) {
    if let (Some(s), Some(v)) = (SLOTS.get(cpu.0 as usize), sample(h)) {
        s.base.store(v, Ordering::Relaxed);
    }
}

/// The `time.steal_clock` op.
pub fn steal_clock(cpu: CpuId) -> u64 {
    let Some(s) = SLOTS.get(cpu.0 as usize) else {
        return 0;
    };
    if cpu == crate::this_cpu() {
        if let Some(now) = crate::ref_tsc::reference_100ns() {
            // SAFETY: the VP runtime privilege was checked at init.
            let run = unsafe { Real.read_msr(msr::VP_RUNTIME) };
            let v = steal_ns(
                now,
                run,
                s.base.load(Ordering::Relaxed),
                s.halted.load(Ordering::Relaxed),
                s.last.load(Ordering::Relaxed),
            );
            s.last.fetch_max(v, Ordering::Relaxed);
        }
    }
    s.last.load(Ordering::Relaxed)
}

fn halted_for(f: fn()) {
    let t0 = crate::ref_tsc::reference_100ns();
    f();
    if let (Some(t0), Some(t1)) = (t0, crate::ref_tsc::reference_100ns()) {
        if let Some(s) = SLOTS.get(crate::this_cpu().0 as usize) {
            s.halted
                .fetch_add(t1.saturating_sub(t0).saturating_mul(100), Ordering::Relaxed);
        }
    }
}

/// The `irq.safe_halt` op: the base op, timed.
pub fn safe_halt() {
    halted_for(crate::base::ops().irq.safe_halt)
}

/// The `irq.halt` op: the base op, timed.
pub fn halt() {
    halted_for(crate::base::ops().irq.halt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_formula() {
        // 10 s elapsed, 6 s ran, 1 s before pvops, 2 s halted: 1 s stolen.
        let s = steal_ns(100_000_000, 60_000_000, 1_000_000_000, 2_000_000_000, 0);
        assert_eq!(s, 1_000_000_000);
        // Never back, never below 0.
        assert_eq!(steal_ns(10, 20, 0, 0, 5), 5);
        assert_eq!(steal_ns(100, 0, 50_000, 0, 0), 0);
    }
}
