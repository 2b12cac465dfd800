//! IPIs over event channels.
//!
//! The kernel asks for a *vector* on a CPU; Xen signals a *port*. Each vCPU
//! has one IPI port (`EVTCHNOP_bind_ipi`) and a 256-bit set of vectors
//! waiting for it. The sender adds the vector to the target's set, then
//! sends on the target's port; the target's upcall ([`crate::upcall`])
//! takes the whole set and raises each vector on itself with a local-APIC
//! self-IPI, so the kernel's handler runs exactly as it would for a native
//! IPI (and sends its EOI to the local APIC as usual). An IPI to the
//! sending CPU itself skips Xen: it is the self-IPI directly.
//!
//! [`pvops_core::smp::SERVICE_VECTOR`] needs no self-IPI: the upcall
//! already runs inside `service_interrupt`, which serves pvops' own
//! requests right after the upcall handler returns.

use crate::percpu::{slot, MAX_VCPUS};
use crate::ports::{port_of, PortKind};
use crate::warn::warn_once;
use crate::xen::XEN;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::IpiTarget;

/// Vectors waiting for each vCPU, 4 words of 64.
static WAITING: [[AtomicU64; 4]; MAX_VCPUS] =
    [const { [const { AtomicU64::new(0) }; 4] }; MAX_VCPUS];

static WARNED_NO_PORT: AtomicBool = AtomicBool::new(false);
static WARNED_SEND: AtomicBool = AtomicBool::new(false);

/// Adds `vector` to `vcpu`'s waiting set; false for a vCPU out of range.
pub fn post(vcpu: u32, vector: u8) -> bool {
    let Some(i) = slot(vcpu) else { return false };
    let v = usize::from(vector);
    WAITING[i][v / 64].fetch_or(1 << (v % 64), Ordering::AcqRel);
    true
}

/// Takes `vcpu`'s waiting set (leaving it empty).
pub fn take(vcpu: u32) -> [u64; 4] {
    let Some(i) = slot(vcpu) else { return [0; 4] };
    core::array::from_fn(|w| WAITING[i][w].swap(0, Ordering::AcqRel))
}

/// The vectors of a set, lowest first.
pub fn vectors(set: [u64; 4]) -> impl Iterator<Item = u8> {
    (0..256usize)
        .filter(move |v| set[v / 64] & (1 << (v % 64)) != 0)
        .map(|v| v as u8)
}

/// Raises `vector` on this vCPU through its local APIC.
pub fn self_ipi(vector: u8) {
    if crate::pv::is_active() {
        // No local APIC: wait in this vCPU's set like a remote IPI, and
        // signal its own port; the upcall runs the handler once events
        // are unmasked (at once, if they are).
        let me = crate::percpu::current();
        send_remote(me, vector);
        return;
    }
    pvops_native::apic::send_ipi(IpiTarget::ThisCpu, vector);
}

/// Runs `vector`'s handler on this vCPU from the upcall: a local-APIC
/// self-IPI under PVH (taken once the upcall returns), the handler itself
/// under PV ([`crate::pv::traps::raise`]).
pub fn raise_here(vector: u8) {
    if crate::pv::is_active() {
        crate::pv::traps::raise(vector);
    } else {
        pvops_native::apic::send_ipi(IpiTarget::ThisCpu, vector);
    }
}

/// Sends `vector` to vCPU `target` (not this one) over its IPI port.
fn send_remote(target: u32, vector: u8) {
    let Some(port) = port_of(target, PortKind::Ipi) else {
        warn_once(
            &WARNED_NO_PORT,
            format_args!("xen: IPI to cpu {target}, which has no IPI port (not started?): dropped"),
        );
        return;
    };
    post(target, vector);
    if let Err(e) = XEN.send(port) {
        warn_once(
            &WARNED_SEND,
            format_args!("xen: EVTCHNOP_send to cpu {target} port {port} failed: {e}"),
        );
    }
}

fn send_one(me: u32, target: u32, vector: u8) {
    if target == me {
        self_ipi(vector);
    } else {
        send_remote(target, vector);
    }
}

/// The vCPUs that can receive IPIs (their IPI port is bound).
pub fn reachable() -> impl Iterator<Item = u32> {
    (0..MAX_VCPUS as u32).filter(|v| port_of(*v, PortKind::Ipi).is_some())
}

/// The `irq.send_ipi` op.
pub fn send_ipi(target: IpiTarget, vector: u8) {
    let me = crate::percpu::current();
    match target {
        IpiTarget::Cpu(CpuId(c)) => send_one(me, c, vector),
        IpiTarget::Mask(mask) => {
            for CpuId(c) in mask.iter() {
                send_one(me, c, vector);
            }
        }
        IpiTarget::ThisCpu => self_ipi(vector),
        IpiTarget::AllButSelf => {
            for c in reachable().filter(|c| *c != me) {
                send_remote(c, vector);
            }
        }
        IpiTarget::All => {
            for c in reachable().filter(|c| *c != me) {
                send_remote(c, vector);
            }
            self_ipi(vector);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn waiting_sets_collect_and_drain() {
        assert!(post(5, 0x31));
        assert!(post(5, 0xf1));
        assert!(post(5, 0x31));
        assert!(post(5, 0));
        assert!(post(5, 255));
        assert!(!post(64, 0x31));
        let got: Vec<u8> = vectors(take(5)).collect();
        assert_eq!(got, [0, 0x31, 0xf1, 255]);
        assert_eq!(take(5), [0; 4]);
        assert_eq!(take(99), [0; 4]);
    }
}
