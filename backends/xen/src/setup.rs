//! Per-vCPU set-up, the same on the boot vCPU and on every other: its own
//! `vcpu_info`, its three ports, its upcall vector (when Xen delivers
//! upcalls per vCPU), its runstate area.

use crate::abi::evtchn::VIRQ_TIMER;
use crate::error::XenError;
use crate::ports::{record, PortKind};
use crate::shared::{own_vcpu_info, paddr_of, set_registered};
use crate::warn::warn;
use crate::xen::XEN;
use core::fmt;
use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::smp::SERVICE_VECTOR;

/// How upcalls reach the vCPUs.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpcallVia {
    /// `HVM_PARAM_CALLBACK_IRQ` with a vector: injected by Xen directly,
    /// no local APIC, no EOI (`XENFEAT_hvm_callback_vector`).
    CallbackVector = 1,
    /// `HVMOP_set_evtchn_upcall_vector`: a local-APIC vector per vCPU, with
    /// an EOI (the one `service_interrupt` sends).
    PerVcpuVector = 2,
}

impl UpcallVia {
    /// The name on the features line.
    pub const fn feature(self) -> &'static str {
        match self {
            UpcallVia::CallbackVector => "callback-vector",
            UpcallVia::PerVcpuVector => "upcall-vector",
        }
    }
}

static VIA: AtomicU8 = AtomicU8::new(0);

/// Records how upcalls are delivered (before the first [`setup_vcpu`]).
pub fn set_via(via: UpcallVia) {
    VIA.store(via as u8, Ordering::Relaxed);
}

pub(crate) fn via() -> Option<UpcallVia> {
    match VIA.load(Ordering::Relaxed) {
        1 => Some(UpcallVia::CallbackVector),
        2 => Some(UpcallVia::PerVcpuVector),
        _ => None,
    }
}

/// A step of [`setup_vcpu`] that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupError {
    /// The step, by its hypercall.
    pub step: &'static str,
    /// Xen's answer.
    pub error: XenError,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.step, self.error)
    }
}

impl core::error::Error for SetupError {}

fn step<T>(step: &'static str, r: Result<T, XenError>) -> Result<T, SetupError> {
    r.map_err(|error| SetupError { step, error })
}

fn bind(kind: PortKind, vcpu: u32) -> Result<u32, SetupError> {
    let port = match kind {
        PortKind::Timer => step(
            "EVTCHNOP_bind_virq(VIRQ_TIMER)",
            XEN.bind_virq(VIRQ_TIMER, vcpu),
        )?,
        PortKind::Ipi | PortKind::Kick => step("EVTCHNOP_bind_ipi", XEN.bind_ipi(vcpu))?,
    };
    if record(port, kind, vcpu).is_err() {
        let _ = XEN.close(port);
        return Err(SetupError {
            step: "recording a port (beyond this backend's table)",
            error: XenError {
                errno: crate::abi::errno::ERANGE,
            },
        });
    }
    Ok(port)
}

/// Sets up vCPU `vcpu`, which must be the calling vCPU. Everything but the
/// runstate area is required; a runstate failure is a warning (the steal
/// clock then reads 0 there).
pub fn setup_vcpu(vcpu: u32) -> Result<(), SetupError> {
    own_vcpu_info(vcpu).ok_or(SetupError {
        step: "vCPU id beyond this backend's arrays",
        error: XenError {
            errno: crate::abi::errno::ERANGE,
        },
    })?;
    crate::percpu::tag_this_vcpu(vcpu);
    register_and_bind(vcpu)
}

/// What Xen keeps of vCPU `vcpu` for this backend, made again: its
/// `vcpu_info`, ports, upcall vector, periodic timer stopped, runstate
/// area. `vcpu` is the calling vCPU, or one that is down (Xen registers a
/// `vcpu_info` only for those): [`setup_vcpu`] at start-up,
/// [`crate::suspend`] after a restore.
pub(crate) fn register_and_bind(vcpu: u32) -> Result<(), SetupError> {
    let vi = own_vcpu_info(vcpu).ok_or(SetupError {
        step: "vCPU id beyond this backend's arrays",
        error: XenError {
            errno: crate::abi::errno::ERANGE,
        },
    })?;
    let pa = paddr_of(vi).map_err(|e| {
        warn(format_args!("xen: vcpu_info of cpu {vcpu}: {e}"));
        SetupError {
            step: "finding vcpu_info's physical address (BootContext::kernel_map)",
            error: XenError {
                errno: crate::abi::errno::EFAULT,
            },
        }
    })?;
    let frame = crate::pv::frame_for_xen(pa >> 12);
    match XEN.register_vcpu_info(vcpu, frame, (pa & 0xfff) as u32) {
        Ok(()) => {
            set_registered(vcpu);
            // From now on Xen reads this vCPU's mask there, not in shared
            // info: the PV assembly must use it at once.
            if crate::pv::is_active() {
                crate::pv::traps::publish_vcpu_info(vcpu);
            }
        }
        // Xen keeps the first 32 vCPUs' vcpu_info in shared info until
        // one is registered (Linux falls back the same way).
        Err(e) if crate::shared::vcpu_info(vcpu).is_some() => warn(format_args!(
            "xen: VCPUOP_register_vcpu_info on cpu {vcpu}: {e}; using its vcpu_info in shared info"
        )),
        Err(error) => {
            return Err(SetupError {
                step: "VCPUOP_register_vcpu_info",
                error,
            })
        }
    }
    // Every port starts masked; the kick port stays so.
    let timer = bind(PortKind::Timer, vcpu)?;
    let ipi = bind(PortKind::Ipi, vcpu)?;
    bind(PortKind::Kick, vcpu)?;
    if via() == Some(UpcallVia::PerVcpuVector) {
        step(
            "HVMOP_set_evtchn_upcall_vector",
            XEN.set_upcall_vector(vcpu, SERVICE_VECTOR),
        )?;
    }
    // No tick before the kernel asks for one (Xen may run a periodic
    // timer on VIRQ_TIMER): a kernel that never arms the timer, or has no
    // IDT yet, gets no upcalls from it.
    crate::time::stop_periodic(vcpu);
    step("EVTCHNOP_unmask(timer)", XEN.unmask(timer))?;
    step("EVTCHNOP_unmask(ipi)", XEN.unmask(ipi))?;
    if let Err(e) = crate::runstate::register(vcpu) {
        warn(format_args!(
            "xen: VCPUOP_register_runstate_memory_area on cpu {vcpu}: {e}; steal clock reads 0 there"
        ));
    }
    Ok(())
}
