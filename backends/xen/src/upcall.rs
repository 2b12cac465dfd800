//! The event upcall: what runs when Xen signals this vCPU.
//!
//! Xen delivers upcalls on [`pvops_core::smp::SERVICE_VECTOR`] (the
//! domain-wide callback vector, `HVM_PARAM_CALLBACK_IRQ`, or a per-vCPU
//! local-APIC vector where that is what Xen offers), which the kernel
//! routes to `pvops_core::smp::service_interrupt`; that calls [`handle`]
//! first. [`handle`] scans this vCPU's pending ports ([`crate::evtchn`])
//! and turns each into what the kernel asked for:
//!
//! | port | action |
//! |---|---|
//! | `VIRQ_TIMER` | self-IPI of the vector given to `timer_setup` |
//! | IPI | self-IPI of every vector waiting in [`crate::ipi`] (but the service vector, served right after) |
//! | lock kick | nothing (kept masked; only polled) |

use crate::evtchn::{demux, SharedEvents, VcpuEvents};
use crate::ipi;
use crate::ports::{lookup, PortKind};
use crate::shared::{shared_info, vcpu_info};
use crate::time::timer_vector;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::smp::SERVICE_VECTOR;

/// Upcalls taken (all vCPUs), for statistics.
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Ports handled (all vCPUs).
static PORTS_HANDLED: AtomicU64 = AtomicU64::new(0);

/// The upcall handler registered with
/// [`pvops_core::smp::set_upcall_handler`]. Runs with interrupts off.
pub fn handle() {
    let Some(si) = shared_info() else { return };
    let me = crate::percpu::current();
    let Some(vi) = vcpu_info(me) else { return };
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: shared info is mapped for good once `shared_info` returns it,
    // and `vcpu_info` returns the area Xen uses for this vCPU.
    let (events, flags) = unsafe { (SharedEvents::new(si), VcpuEvents::new(vi)) };
    let n = demux(
        &events,
        &flags,
        |port| matches!(lookup(port), Some((_, v)) if v == me),
        |port| dispatch(me, port),
    );
    PORTS_HANDLED.fetch_add(n as u64, Ordering::Relaxed);
}

fn dispatch(me: u32, port: u32) {
    match lookup(port) {
        Some((PortKind::Timer, _)) => {
            if let Some(v) = timer_vector(me) {
                ipi::raise_here(v);
            }
        }
        Some((PortKind::Ipi, _)) => {
            for v in ipi::vectors(ipi::take(me)) {
                if v != SERVICE_VECTOR {
                    ipi::raise_here(v);
                }
            }
        }
        Some((PortKind::Kick, _)) | None => {}
    }
}
