//! Lock wait and kick over event channels: each vCPU has a kick port (an
//! IPI port kept masked, so it never causes an upcall). A waiter clears its
//! port's pending bit, re-checks the lock byte, then sleeps in
//! `SCHEDOP_poll` on the port, which returns when the port becomes pending
//! (the kicker's `EVTCHNOP_send`), on any other event or interrupt, or
//! after [`POLL_TIMEOUT_NS`] at the latest (so a lost kick costs a
//! moment, never a hang).

use crate::ports::{port_of, PortKind};
use crate::shared::shared_info;
use crate::xen::XEN;
use crate::XenCommon;
use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::lock::LockOps;

/// The longest one `wait` sleeps.
pub const POLL_TIMEOUT_NS: u64 = 10_000_000;

impl LockOps for XenCommon {
    fn wait(byte: &AtomicU8, expected: u8) {
        let me = crate::percpu::current();
        let (Some(port), Some(si)) = (port_of(me, PortKind::Kick), shared_info()) else {
            core::hint::spin_loop();
            return;
        };
        // SAFETY: shared info stays mapped once `shared_info` returned it.
        let events = unsafe { crate::evtchn::SharedEvents::new(si) };
        events.clear_pending(port);
        // A kick after this load sets the port pending, which ends the
        // poll at once; a kick before it changed the byte.
        if byte.load(Ordering::SeqCst) != expected {
            return;
        }
        let Some(now) = crate::time::system_time(me) else {
            core::hint::spin_loop();
            return;
        };
        let _ = XEN.poll(port, now.saturating_add(POLL_TIMEOUT_NS));
    }

    fn kick(cpu: CpuId) {
        if let Some(port) = port_of(cpu.0, PortKind::Kick) {
            let _ = XEN.send(port);
        }
    }
}
