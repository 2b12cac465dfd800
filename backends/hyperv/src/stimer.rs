//! Synthetic timer 0 in direct mode as the one-shot timer
//! (`hv-stimer-direct`): the expiry is an absolute reference time, and
//! direct mode delivers the kernel's own vector through the local APIC
//! (no SynIC message page). With auto-enable set once by `timer_setup`,
//! arming is one MSR write (the count), against two APIC writes for the
//! native timer; writing 0 stops it.

use core::sync::atomic::{AtomicU8, Ordering};

use crate::abi::{msr, stimer};
use crate::hypercall::{refuse, HvError, Hypervisor, Real};

/// The configuration word for direct mode with `vector`, auto-enabled.
pub const fn config(vector: u8) -> u64 {
    stimer::DIRECT_MODE | stimer::AUTO_ENABLE | ((vector as u64) << stimer::VECTOR_SHIFT)
}

/// The count for a one-shot `delta_ns` from reference time `now_100ns`:
/// at least one unit ahead (0 would stop the timer).
pub const fn count(now_100ns: u64, delta_ns: u64) -> u64 {
    let units = delta_ns.div_ceil(100);
    let units = if units == 0 { 1 } else { units };
    now_100ns.saturating_add(units)
}

/// Checks the fault point for the timer (at init: the host refusing the
/// configuration write turns the feature off).
pub fn probe<H: Hypervisor + ?Sized>(h: &H) -> Result<(), HvError> {
    refuse(h, crate::fault_points::STIMER, msr::STIMER0_CONFIG)
}

/// The vector `timer_setup` was last given (for a CPU that arms first).
static VECTOR: AtomicU8 = AtomicU8::new(0);

/// Configures this CPU's timer 0 for `vector`.
pub fn setup_on<H: Hypervisor + ?Sized>(h: &H, vector: u8) {
    VECTOR.store(vector, Ordering::Relaxed);
    // SAFETY: the synthetic timer privilege and direct mode were checked
    // at init; the value names no memory. Writing it with the count at 0
    // leaves the timer stopped.
    unsafe {
        h.write_msr(msr::STIMER0_COUNT, 0);
        h.write_msr(msr::STIMER0_CONFIG, config(vector));
    }
}

/// Arms this CPU's timer 0 `delta_ns` from reference time `now_100ns`.
pub fn arm_on<H: Hypervisor + ?Sized>(h: &H, now_100ns: u64, delta_ns: u64) {
    // SAFETY: as in `setup_on`; auto-enable starts the timer.
    unsafe { h.write_msr(msr::STIMER0_COUNT, count(now_100ns, delta_ns)) };
}

/// The `time.timer_setup` op.
pub fn timer_setup(vector: u8) {
    setup_on(&Real, vector);
}

/// The `time.timer_arm` op.
pub fn timer_arm(delta_ns: u64) {
    // The reference time exists: the feature needs it (see `offered`).
    let now = crate::ref_tsc::reference_100ns().unwrap_or(0);
    arm_on(&Real, now, delta_ns);
}

/// The `time.timer_cancel` op.
pub fn timer_cancel() {
    // SAFETY: as in `setup_on`; a zero count stops the timer.
    unsafe { Real.write_msr(msr::STIMER0_COUNT, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;

    #[test]
    fn words() {
        assert_eq!(config(0xec), (1 << 12) | (1 << 3) | (0xec << 4));
        assert_eq!(count(1000, 5_000_000), 1000 + 50_000);
        assert_eq!(count(1000, 0), 1001);
        assert_eq!(count(1000, 1), 1001);
        assert_eq!(count(u64::MAX - 1, 1000), u64::MAX);
    }

    #[test]
    fn setup_then_one_write_per_arm() {
        let h = FakeHv::default();
        setup_on(&h, 0x30);
        arm_on(&h, 10, 1000);
        arm_on(&h, 20, 1000);
        assert_eq!(h.writes(msr::STIMER0_CONFIG), [config(0x30)]);
        assert_eq!(h.writes(msr::STIMER0_COUNT), [0, 20, 30]);
        h.faults
            .configure(Some("hyperv.stimer"), crate::fault_points::ALL);
        assert!(probe(&h).is_err());
    }
}
