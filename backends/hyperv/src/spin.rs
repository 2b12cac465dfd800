//! Long spin waits (`hv-spin-wait`): the lock-wait op spins as many times
//! as the hypervisor recommends (leaf 0x40000004 EBX), then tells it with
//! `HvCallNotifyLongSpinWait` (a fast call, so it may run another vCPU,
//! perhaps the lock holder) and returns, as a wait may. Kicks stay the
//! base op's (nothing to wake: nobody sleeps).

use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

use crate::abi::call;
use crate::hypercall::{self, Control, HvError, Hypervisor, Real};

/// Spins before notifying (set at init).
pub(crate) static RETRIES: AtomicU32 = AtomicU32::new(0);

/// Waits while `byte` reads `expected`, for at most `retries` spins;
/// then notifies. Returns whether it notified.
pub fn wait_on<H: Hypervisor + ?Sized>(
    h: &H,
    byte: &AtomicU8,
    expected: u8,
    retries: u32,
) -> Result<bool, HvError> {
    for _ in 0..retries {
        if byte.load(Ordering::Acquire) != expected {
            return Ok(false);
        }
        core::hint::spin_loop();
    }
    if byte.load(Ordering::Acquire) != expected {
        return Ok(false);
    }
    // RDX: how many times this wait notified before (the TLFS's count).
    hypercall::call(h, Control::fast(call::NOTIFY_LONG_SPIN_WAIT), 1, 0).map(|_| true)
}

/// The `lock.kick` op: nothing to do, as no waiter sleeps (a waiter
/// spins, notifies and returns; the base op's kick would wake a halt
/// that never happens).
pub fn kick(_cpu: pvops_core::cpu::CpuId) {}

/// The `lock.wait` op.
pub fn wait(byte: &AtomicU8, expected: u8) {
    // A failed notification is only a missed hint: the wait still returns.
    let _ = wait_on(&Real, byte, expected, RETRIES.load(Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;

    #[test]
    fn notifies_only_after_the_retries() {
        let h = FakeHv::default();
        let b = AtomicU8::new(0);
        assert_eq!(wait_on(&h, &b, 1, 100), Ok(false));
        assert!(h.calls.borrow().is_empty());
        assert_eq!(wait_on(&h, &b, 0, 100), Ok(true));
        let calls = h.calls.borrow();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, Control::fast(call::NOTIFY_LONG_SPIN_WAIT));
        drop(calls);
        h.ret.set(Some(2));
        assert!(matches!(wait_on(&h, &b, 0, 1), Err(HvError::Status { .. })));
    }
}
