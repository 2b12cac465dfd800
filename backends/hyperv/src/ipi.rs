//! IPIs by hypercall (`hv-ipi`): one `HvCallSendSyntheticClusterIpi` (a
//! fast call: vector and a 64-bit VP mask in registers) for any set of
//! VPs below 64, one `HvCallSendSyntheticClusterIpiEx` (a sparse VP set
//! in the input buffer) beyond, whatever the number of targets. An IPI to
//! this CPU alone, a target without a VP index, a set that needs the Ex
//! form on a host without it, and a failed hypercall all go to the base
//! op (native's or kvm's) for that call; a failed hypercall also prints
//! one warning.

use core::sync::atomic::{AtomicBool, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::{CpuMask, IpiTarget};

use crate::abi::{self, call, vpset};
use crate::hypercall::{self, Control, HvError, Hypervisor, Real};
use crate::vp::{self, VpSet};

/// The lowest vector the hypercall accepts.
pub const MIN_VECTOR: u8 = 0x10;

/// Sends `vector` to the VPs of `set` in one hypercall, from `cpu` (whose
/// input buffer an Ex call uses); `ex` says the host has the Ex form.
pub fn send<H: Hypervisor + ?Sized>(
    h: &H,
    set: &VpSet,
    vector: u8,
    ex: bool,
    cpu: CpuId,
    mask_irqs: bool,
) -> Result<(), HvError> {
    if vector < MIN_VECTOR {
        return Err(HvError::Status {
            code: call::SEND_IPI,
            status: abi::status::INVALID_PARAMETER,
        });
    }
    if let Some(mask) = set.as_mask() {
        // Fast: RDX = vector, target VTL 0; R8 = the mask.
        return hypercall::call(h, Control::fast(call::SEND_IPI), u64::from(vector), mask);
    }
    if !ex {
        return Err(HvError::NoVpIndex(64));
    }
    vp::with_input(
        cpu,
        mask_irqs,
        |buf| {
            buf[0] = u64::from(vector);
            buf[1] = vpset::SPARSE_4K;
            buf[2] = set.valid;
            let mut n = 0;
            for (i, bank) in set.used_banks().enumerate() {
                buf[3 + i] = bank;
                n += 1;
            }
            Control::slow(call::SEND_IPI_EX).var_header(n)
        },
        |ctl, pa| hypercall::call(h, ctl, pa, 0),
    )
    .unwrap_or(Err(HvError::CpuOutOfRange(cpu.0)))
}

/// Whether the Ex form may be used (set at init).
pub(crate) static EX: AtomicBool = AtomicBool::new(false);
static WARNED: AtomicBool = AtomicBool::new(false);

/// The CPUs `target` names, other than the sender; `None` for an IPI to
/// the sender alone (the base op sends that: no hypercall is cheaper than
/// a self-IPI).
pub fn targets(target: IpiTarget, me: CpuId, possible: CpuMask) -> Option<CpuMask> {
    let mut m = match target {
        IpiTarget::ThisCpu => return None,
        IpiTarget::Cpu(c) if c == me => return None,
        IpiTarget::Cpu(c) => {
            let mut m = CpuMask::new();
            m.insert(c);
            m
        }
        IpiTarget::Mask(m) => m,
        IpiTarget::AllButSelf | IpiTarget::All => possible,
    };
    if matches!(target, IpiTarget::AllButSelf) {
        m.remove(me);
    }
    Some(m)
}

/// The `irq.send_ipi` op.
pub fn send_ipi(target: IpiTarget, vector: u8) {
    let base = crate::base::ops();
    let me = crate::this_cpu();
    let Some(mut cpus) = targets(target, me, (base.cpu.possible_cpus)()) else {
        return (base.irq.send_ipi)(target, vector);
    };
    // The sender itself (in a mask or `All`) gets the base op's self-IPI.
    let to_self = cpus.contains(me);
    cpus.remove(me);
    if !cpus.is_empty() {
        let r = vp::set_of(&cpus, vp::vp_of)
            .and_then(|set| send(&Real, &set, vector, EX.load(Ordering::Relaxed), me, true));
        if let Err(e) = r {
            if matches!(e, HvError::Status { .. } | HvError::Partial { .. }) {
                crate::warn::warn_once(
                    &WARNED,
                    format_args!("hv-ipi: {e}: this IPI (and later failures) through the APIC"),
                );
            }
            (base.irq.send_ipi)(IpiTarget::Mask(cpus), vector);
        }
    }
    if to_self {
        (base.irq.send_ipi)(IpiTarget::ThisCpu, vector);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;

    #[test]
    fn a_small_set_is_one_fast_call() {
        let h = FakeHv::default();
        let mut set = VpSet::new();
        set.insert(1);
        set.insert(63);
        assert_eq!(send(&h, &set, 0xf1, false, CpuId(0), false), Ok(()));
        let calls = h.calls.borrow();
        assert_eq!(calls.len(), 1);
        let (ctl, rdx, r8, _) = &calls[0];
        assert_eq!(*ctl, Control::fast(call::SEND_IPI));
        assert_eq!(*rdx, 0xf1);
        assert_eq!(*r8, (1 << 1) | (1 << 63));
    }

    #[test]
    fn a_wide_set_is_one_ex_call() {
        let h = FakeHv::default();
        vp::register_input(&h, CpuId(0)).unwrap();
        let mut set = VpSet::new();
        set.insert(2);
        set.insert(64 * 5 + 3);
        assert_eq!(send(&h, &set, 0xf1, true, CpuId(0), false), Ok(()));
        let calls = h.calls.borrow();
        assert_eq!(calls.len(), 1);
        let (ctl, _, _, input) = &calls[0];
        assert_eq!(*ctl, Control::slow(call::SEND_IPI_EX).var_header(2));
        assert_eq!(input[..5], [0xf1, 0, (1 << 0) | (1 << 5), 1 << 2, 1 << 3]);
        // Without the Ex form: refused before any call.
        drop(calls);
        assert_eq!(
            send(&h, &set, 0xf1, false, CpuId(0), false),
            Err(HvError::NoVpIndex(64))
        );
        assert_eq!(h.calls.borrow().len(), 1);
    }

    #[test]
    fn failures_are_typed() {
        let h = FakeHv::default();
        h.ret.set(Some(u64::from(abi::status::INVALID_VP_INDEX)));
        let mut set = VpSet::new();
        set.insert(1);
        assert_eq!(
            send(&h, &set, 0xf1, false, CpuId(0), false),
            Err(HvError::Status {
                code: call::SEND_IPI,
                status: abi::status::INVALID_VP_INDEX
            })
        );
        // A vector the hypervisor would refuse is never sent.
        assert!(send(&h, &set, 0x0f, false, CpuId(0), false).is_err());
        assert_eq!(h.calls.borrow().len(), 1);
    }

    #[test]
    fn target_sets() {
        let mut possible = CpuMask::new();
        for c in [0, 1, 2] {
            possible.insert(CpuId(c));
        }
        let me = CpuId(1);
        assert_eq!(targets(IpiTarget::ThisCpu, me, possible), None);
        assert_eq!(targets(IpiTarget::Cpu(me), me, possible), None);
        let others = targets(IpiTarget::AllButSelf, me, possible).unwrap();
        assert_eq!(
            others.iter().map(|c| c.0).collect::<std::vec::Vec<_>>(),
            [0, 2]
        );
        assert_eq!(targets(IpiTarget::All, me, possible), Some(possible));
    }
}
