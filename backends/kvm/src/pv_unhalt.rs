//! PV unhalt: a lock waiter halts its vCPU instead of spinning, and the
//! lock releaser wakes it with `KVM_HC_KICK_CPU` (flags 0, APIC ID). KVM
//! remembers a kick that arrives before the halt, so the next halt
//! returns at once and no wake-up is lost.

use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::IrqFlags;

use crate::hypercall::{call, Hc, Hypervisor, KvmError, Real};
use crate::warn::warn_once;

/// The interrupt ops [`wait_with`] needs (the native ones in the kernel).
pub trait HaltOps {
    /// The current interrupt state.
    fn save_flags(&self) -> IrqFlags;
    /// Masks interrupts.
    fn disable(&self);
    /// Restores a saved state.
    fn restore(&self, flags: IrqFlags);
    /// `hlt` with interrupts left as they are.
    fn halt(&self);
    /// `sti; hlt`.
    fn safe_halt(&self);
}

/// Waits while `byte` holds `expected`: checks with interrupts off, then
/// halts with no window for a lost wake-up. With interrupts already off
/// it halts without enabling them (a kick still wakes the vCPU).
pub fn wait_with(ops: &impl HaltOps, byte: &AtomicU8, expected: u8) {
    let flags = ops.save_flags();
    if !flags.interrupts_enabled() {
        if byte.load(Ordering::Acquire) == expected {
            ops.halt();
        }
        return;
    }
    ops.disable();
    if byte.load(Ordering::Acquire) == expected {
        ops.safe_halt();
    }
    ops.restore(flags);
}

/// The native interrupt ops.
struct NativeHalt;

impl HaltOps for NativeHalt {
    fn save_flags(&self) -> IrqFlags {
        (crate::native::ops().irq.save_flags)()
    }
    fn disable(&self) {
        (crate::native::ops().irq.disable)()
    }
    fn restore(&self, flags: IrqFlags) {
        (crate::native::ops().irq.restore_flags)(flags)
    }
    fn halt(&self) {
        (crate::native::ops().irq.halt)()
    }
    fn safe_halt(&self) {
        (crate::native::ops().irq.safe_halt)()
    }
}

/// Wakes `cpu` if it is halted in [`wait`].
pub fn kick_with<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> Result<(), KvmError> {
    call(h, Hc::KickCpu, [0, u64::from(cpu.0), 0, 0]).map(|_| ())
}

/// The `lock.wait` op with PV unhalt on.
pub fn wait(byte: &AtomicU8, expected: u8) {
    wait_with(&NativeHalt, byte, expected)
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// The `lock.kick` op with PV unhalt on.
pub fn kick(cpu: CpuId) {
    if let Err(e) = kick_with(&Real, cpu) {
        // The waiter still wakes on its next interrupt; say why it is slow.
        warn_once(
            &WARNED,
            format_args!("kvm pv-unhalt kick of cpu {}: {e}", cpu.0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;
    use core::cell::RefCell;
    use std::vec::Vec;

    struct Fake {
        flags: IrqFlags,
        log: RefCell<Vec<&'static str>>,
    }
    impl HaltOps for Fake {
        fn save_flags(&self) -> IrqFlags {
            self.flags
        }
        fn disable(&self) {
            self.log.borrow_mut().push("cli")
        }
        fn restore(&self, f: IrqFlags) {
            self.log
                .borrow_mut()
                .push(if f.interrupts_enabled() { "sti" } else { "cli" })
        }
        fn halt(&self) {
            self.log.borrow_mut().push("hlt")
        }
        fn safe_halt(&self) {
            self.log.borrow_mut().push("sti;hlt")
        }
    }

    fn run(if_on: bool, value: u8, expected: u8) -> Vec<&'static str> {
        let f = Fake {
            flags: IrqFlags(if if_on { 0x202 } else { 0x2 }),
            log: RefCell::new(Vec::new()),
        };
        wait_with(&f, &AtomicU8::new(value), expected);
        f.log.into_inner()
    }

    #[test]
    fn halts_only_while_value_matches() {
        assert_eq!(run(true, 1, 1), ["cli", "sti;hlt", "sti"]);
        assert_eq!(run(true, 0, 1), ["cli", "sti"]);
        assert_eq!(run(false, 1, 1), ["hlt"]);
        assert!(run(false, 0, 1).is_empty());
    }

    #[test]
    fn kick_hypercall_arguments() {
        let h = FakeHv::default();
        kick_with(&h, CpuId(9)).unwrap();
        assert_eq!(h.calls.borrow()[0], (Hc::KickCpu, [0, 9, 0, 0]));
        h.ret.set(-22);
        assert_eq!(
            kick_with(&h, CpuId(9)),
            Err(KvmError::Hypercall { nr: 5, ret: -22 })
        );
    }
}
