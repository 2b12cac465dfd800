//! Interrupt-flag ops as `pushf`/`cli`/`sti`/`hlt`; EOI and IPIs through
//! the local APIC.

use crate::{apic, Native};
use pvops_core::irq::{IpiTarget, IrqFlags, IrqOps};
use x86_64::instructions::{hlt, interrupts};
use x86_64::registers::rflags;

impl IrqOps for Native {
    #[inline]
    fn save_flags() -> IrqFlags {
        IrqFlags(rflags::read_raw())
    }

    #[inline]
    fn restore_flags(flags: IrqFlags) {
        // Only IF matters to callers; setting it alone avoids popf's cost of
        // writing every other flag.
        if flags.interrupts_enabled() {
            interrupts::enable()
        } else {
            interrupts::disable()
        }
    }

    #[inline]
    fn disable() {
        interrupts::disable()
    }

    #[inline]
    fn enable() {
        interrupts::enable()
    }

    #[inline]
    fn safe_halt() {
        // `sti; hlt`: the interrupt shadow of sti holds off delivery until
        // hlt has started, so a wake-up cannot slip in between.
        interrupts::enable_and_hlt()
    }

    #[inline]
    fn halt() {
        hlt()
    }

    #[inline]
    fn eoi() {
        apic::eoi()
    }

    #[inline]
    fn send_ipi(target: IpiTarget, vector: u8) {
        apic::send_ipi(target, vector)
    }
}
