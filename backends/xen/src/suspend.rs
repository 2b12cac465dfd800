//! Save/restore of a PVH domU (`xl save`, `xl restore`): the toolstack
//! writes `suspend` to `control/shutdown`; the backend acknowledges it
//! ([`crate::xenstore::poll_shutdown_request`]), suspends the domain with
//! `SCHEDOP_shutdown(SHUTDOWN_suspend)`, and when that call returns in the
//! restored domain, makes again what the hypervisor forgot:
//!
//! - shared info (its guest frame is empty in the new domain), every event
//!   masked first;
//! - the upcall delivery (`HVM_PARAM_CALLBACK_IRQ`, or each vCPU's vector);
//! - per vCPU: `vcpu_info` placement, the timer, IPI and kick ports (new
//!   numbers, recorded again), the periodic timer stopped, the runstate
//!   area. Xen registers another vCPU's `vcpu_info` only while that vCPU
//!   is down, so each other vCPU is taken down (`VCPUOP_down`) and up
//!   again around its turn; it resumes where it was;
//! - the console and xenstore rings' event channels (the rings' frames
//!   stay, their ports change).
//!
//! The processor state, the local APIC and memory are the toolstack's
//! job and come back as they were; pvclock goes on from Xen's system time,
//! so the clock does not go back. A one-shot timer armed before the save
//! is lost (a kernel re-arms it). Classic PV guests are not suspended
//! (their restore also renumbers machine frames): the request is not
//! acknowledged there, so the toolstack gives up and the domain runs on.

use crate::abi::hvm::{callback_via_vector, HVM_PARAM_CALLBACK_IRQ};
use crate::setup::{register_and_bind, SetupError};
use crate::xen::XEN;
use crate::XenError;
use core::fmt;
use pvops_core::smp::SERVICE_VECTOR;

/// Why a suspend did not complete (the domain goes on, maybe without a
/// working event or console channel: the caller says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendError {
    /// Only PVH domUs are suspended.
    Unsupported,
    /// `SCHEDOP_shutdown(SHUTDOWN_suspend)` failed.
    Suspend(XenError),
    /// Re-establishing a step after the restore failed.
    Resume(&'static str, XenError),
}

impl fmt::Display for SuspendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuspendError::Unsupported => f.write_str("only PVH domUs can be suspended"),
            SuspendError::Suspend(e) => write!(f, "SCHEDOP_shutdown(SHUTDOWN_suspend): {e}"),
            SuspendError::Resume(step, e) => write!(f, "after the restore, {step}: {e}"),
        }
    }
}

impl From<SetupError> for SuspendError {
    fn from(e: SetupError) -> Self {
        SuspendError::Resume(e.step, e.error)
    }
}

/// Whether this domain can be suspended by [`suspend_and_resume`].
pub fn supported() -> bool {
    !crate::pv::is_active()
}

/// Suspends the domain and brings the backend back up once it runs again;
/// `Ok(true)` when the suspend was cancelled (the same domain went on),
/// `Ok(false)` after a restore. Runs with this vCPU's interrupts off.
pub fn suspend_and_resume() -> Result<bool, SuspendError> {
    if !supported() {
        return Err(SuspendError::Unsupported);
    }
    x86_64::instructions::interrupts::without_interrupts(|| {
        let cancelled = XEN.suspend().map_err(SuspendError::Suspend)?;
        if !cancelled {
            resume()?;
        }
        Ok(cancelled)
    })
}

fn resume() -> Result<(), SuspendError> {
    let me = crate::percpu::current();
    let gpfn = crate::shared::paddr_of(crate::shared::SHARED_INFO.as_ptr()).map_err(|_| {
        SuspendError::Resume(
            "finding shared info's physical address",
            XenError {
                errno: crate::abi::errno::EFAULT,
            },
        )
    })? >> 12;
    XEN.map_shared_info(gpfn)
        .map_err(|e| SuspendError::Resume("XENMEM_add_to_physmap(shared_info)", e))?;
    if let Some(si) = crate::shared::shared_info() {
        // SAFETY: shared info was just mapped over SHARED_INFO, for good.
        unsafe { crate::evtchn::SharedEvents::new(si) }.mask_all();
    }
    if crate::setup::via() == Some(crate::setup::UpcallVia::CallbackVector) {
        XEN.hvm_set_param(HVM_PARAM_CALLBACK_IRQ, callback_via_vector(SERVICE_VECTOR))
            .map_err(|e| SuspendError::Resume("HVM_PARAM_CALLBACK_IRQ", e))?;
    }
    crate::time::forget_periodic_stopped(me);
    register_and_bind(me)?;
    for cpu in crate::smp::possible().iter() {
        let v = cpu.0;
        if v == me || !XEN.vcpu_is_up(v).unwrap_or(false) {
            continue;
        }
        XEN.vcpu_down(v)
            .map_err(|e| SuspendError::Resume("VCPUOP_down", e))?;
        crate::time::forget_periodic_stopped(v);
        let r = register_and_bind(v);
        // Up again even if a step failed: a vCPU left down would hang
        // whoever waits for it.
        let up = XEN.vcpu_up(v);
        r?;
        up.map_err(|e| SuspendError::Resume("VCPUOP_up", e))?;
    }
    // The rings' frames stay; their ports are new.
    if crate::console::kind() == crate::console::Kind::Ring {
        let _ = crate::console::use_ring(crate::phys_offset());
    }
    crate::find_xenstore_ring(crate::phys_offset());
    Ok(())
}
