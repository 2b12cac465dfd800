//! Shutdown: `SCHEDOP_shutdown` with `SHUTDOWN_reboot`, or with
//! `SHUTDOWN_poweroff` when the toolstack asked for a power-off through
//! xenstore's `control/shutdown` and the kernel acknowledged it
//! ([`crate::xenstore::poll_shutdown_request`]).
//!
//! Xen has no way to carry an exit code to whoever runs the machine: the
//! code travels in the `pvops: exit code=<n>` line the kernel prints before
//! calling shutdown. Reboot rather than power-off because of how Xen ends
//! the hardware domain: on power-off it halts the machine (and an emulator
//! keeps running, forever), on reboot it resets it, which QEMU's
//! `-no-reboot` turns into QEMU exiting. For a domU both end the domain.

use crate::abi::sched::{SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT};
use crate::warn::error;
use crate::xen::XEN;

/// Ends the domain; `code` is not carried (see the module documentation).
pub fn shutdown(code: u8) -> ! {
    if crate::pv::is_active() {
        crate::pv::irq::save_and_mask();
    } else {
        x86_64::instructions::interrupts::disable();
    }
    // The toolstack's request, once acknowledged, says how to end.
    if crate::xenstore::requested() == Some(pvops_core::platform::ShutdownRequest::PowerOff) {
        let off = XEN.shutdown(SHUTDOWN_POWEROFF);
        error(format_args!(
            "xen: SCHEDOP_shutdown(poweroff) asked by the toolstack failed: {off:?}; rebooting"
        ));
    }
    let reboot = XEN.shutdown(SHUTDOWN_REBOOT);
    if let Err(e) = reboot {
        error(format_args!(
            "xen: SCHEDOP_shutdown(reboot) for exit code {code} failed: {e}; trying power-off"
        ));
    }
    let off = XEN.shutdown(SHUTDOWN_POWEROFF);
    error(format_args!(
        "xen: the domain did not end (reboot: {reboot:?}, power-off: {off:?}); blocking forever"
    ));
    loop {
        // With interrupts off only an event wakes this, and nothing is
        // waited for; never `hlt` (Xen would take the vCPU down).
        let _ = XEN.block();
    }
}
