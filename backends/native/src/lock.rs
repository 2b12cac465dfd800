//! Lock wait/kick on bare hardware: a waiter just spins politely, so a kick
//! has nobody to wake.

use crate::Native;
use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::lock::LockOps;

impl LockOps for Native {
    #[inline]
    fn wait(byte: &AtomicU8, expected: u8) {
        if byte.load(Ordering::Relaxed) == expected {
            core::hint::spin_loop();
        }
    }

    #[inline]
    fn kick(_cpu: CpuId) {}
}
