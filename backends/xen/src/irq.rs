//! Interrupt ops. The interrupt flag is the hardware's (an HVM guest's
//! RFLAGS.IF gates Xen's upcalls too), EOIs go to the emulated local APIC,
//! IPIs over event channels ([`crate::ipi`]).
//!
//! ## Halting: `sti; hlt`, not `SCHEDOP_block`
//! For an HVM vCPU, Xen's `hlt` handler blocks the vCPU only after checking
//! for a deliverable interrupt or event, and `sti; hlt` leaves no window
//! between the two (`hlt` runs in `sti`'s interrupt shadow; Xen clears the
//! shadow when it steps past `hlt`, so its check sees IF set). A
//! `SCHEDOP_block` hypercall after `sti` would run inside that shadow,
//! where Xen's check counts a pending upcall as blocked and the vCPU could
//! sleep on a wake-up that already arrived. [`IrqOps::halt`] with
//! interrupts *off* must not execute `hlt` at all: Xen takes an HVM vCPU
//! that halts with IF clear as going down (and the whole domain with its
//! last vCPU); it blocks in `SCHEDOP_block` instead, which returns on the
//! next event.

use crate::XenPvh;
use pvops_core::irq::{IpiTarget, IrqFlags, IrqOps};
use pvops_native::Native;

impl IrqOps for XenPvh {
    #[inline]
    fn save_flags() -> IrqFlags {
        Native::save_flags()
    }

    #[inline]
    fn restore_flags(flags: IrqFlags) {
        Native::restore_flags(flags)
    }

    #[inline]
    fn disable() {
        Native::disable()
    }

    #[inline]
    fn enable() {
        Native::enable()
    }

    #[inline]
    fn safe_halt() {
        Native::safe_halt()
    }

    fn halt() {
        if Self::save_flags().interrupts_enabled() {
            x86_64::instructions::hlt();
        } else {
            let _ = crate::xen::XEN.block();
        }
    }

    #[inline]
    fn eoi() {
        Native::eoi()
    }

    fn send_ipi(target: IpiTarget, vector: u8) {
        crate::ipi::send_ipi(target, vector)
    }
}
