//! PV sched yield: a vCPU that has sent IPIs to a set of CPUs (and will
//! wait for them, as a remote TLB flush does) gives its physical CPU to a
//! target the host has preempted, with `KVM_HC_SCHED_YIELD` (APIC ID).
//!
//! Where it is used: after the IPI op (`irq.send_ipi`) sends to a set of
//! CPUs (`Mask`, `AllButSelf`, `All`; not a single `Cpu` nor `ThisCpu`),
//! if any target's steal-time `preempted` bit is set, the sender yields to
//! the first such target once. That covers the IPI flush of
//! [`pvops_core::smp::flush_tlb_by_ipi`] (which sends a `Mask` and then
//! waits), including its targets PV TLB flush could not skip.

use core::sync::atomic::AtomicBool;
use pvops_core::cpu::CpuId;
use pvops_core::irq::{CpuMask, IpiTarget};

use crate::hypercall::{call, Hc, Hypervisor, KvmError, Real};
use crate::warn::warn_once;

/// The first CPU of `mask` that `preempted` says is not running.
pub fn first_preempted(mask: &CpuMask, preempted: impl Fn(CpuId) -> bool) -> Option<CpuId> {
    mask.iter().find(|c| preempted(*c))
}

/// Yields this vCPU's time to `cpu` (through `h`).
pub fn yield_to_with<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> Result<(), KvmError> {
    call(h, Hc::SchedYield, [u64::from(cpu.0), 0, 0, 0]).map(|_| ())
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Yields this vCPU's time to `cpu`, which should be a preempted vCPU.
/// Does nothing unless `pv-sched-yield` is on.
pub fn yield_to(cpu: CpuId) {
    if !crate::active().has(crate::plan::Feature::PvSchedYield) {
        return;
    }
    if let Err(e) = yield_to_with(&Real, cpu) {
        warn_once(
            &WARNED,
            format_args!("kvm pv-sched-yield to cpu {}: {e}", cpu.0),
        );
    }
}

/// Yields to the first preempted CPU of `mask`, if any.
pub fn yield_if_preempted(mask: &CpuMask) {
    if let Some(cpu) = first_preempted(mask, crate::steal_time::preempted) {
        yield_to(cpu);
    }
}

/// The `irq.send_ipi` op when PV sched yield is on but PV IPI is not: the
/// native send, then the yield for sets of CPUs.
pub fn send_ipi_then_yield(target: IpiTarget, vector: u8) {
    let n = crate::native::ops();
    (n.irq.send_ipi)(target, vector);
    match target {
        IpiTarget::Mask(m) => yield_if_preempted(&m),
        IpiTarget::All | IpiTarget::AllButSelf => {
            let mut m = (n.cpu.possible_cpus)();
            m.remove(crate::percpu::this_cpu());
            yield_if_preempted(&m);
        }
        IpiTarget::Cpu(_) | IpiTarget::ThisCpu => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;

    #[test]
    fn picks_first_preempted_target() {
        let mut m = CpuMask::new();
        for id in [1, 4, 6] {
            m.insert(CpuId(id));
        }
        assert_eq!(first_preempted(&m, |c| c.0 >= 4), Some(CpuId(4)));
        assert_eq!(first_preempted(&m, |_| false), None);
    }

    #[test]
    fn yield_hypercall_arguments() {
        let h = FakeHv::default();
        yield_to_with(&h, CpuId(6)).unwrap();
        assert_eq!(h.calls.borrow()[0], (Hc::SchedYield, [6, 0, 0, 0]));
        h.ret.set(-95);
        assert!(yield_to_with(&h, CpuId(6)).is_err());
    }
}
