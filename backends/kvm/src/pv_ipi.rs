//! PV send IPI: one `KVM_HC_SEND_IPI` hypercall delivers an interrupt to
//! up to 128 vCPUs whose APIC IDs lie in `[min, min + 128)`, named by a
//! 128-bit bitmap (a0 = bits 0-63, a1 = bits 64-127, a2 = min, a3 = ICR).
//! Wider sets are split into several calls ([`batches`]).
//!
//! Targets: `Cpu`, `Mask`, `AllButSelf` and `All` go by hypercall (the
//! last two over the platform's possible CPUs); `ThisCpu` stays native
//! (the self shorthand exits no more than a hypercall). A batch the host
//! refuses is sent the native way, with a warning once.

use core::sync::atomic::AtomicBool;
use pvops_core::cpu::CpuId;
use pvops_core::irq::{CpuMask, IpiTarget};

use crate::abi::SEND_IPI_CLUSTER;
use crate::hypercall::{call, Hc, Hypervisor, Real};
use crate::percpu::this_cpu;
use crate::plan::Feature;
use crate::warn::warn_once;

/// One hypercall's worth of destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpiBatch {
    /// Bits 0-63: APIC IDs `min..min + 64`.
    pub low: u64,
    /// Bits 64-127: APIC IDs `min + 64..min + 128`.
    pub high: u64,
    /// The APIC ID of bit 0.
    pub min: u32,
}

impl IpiBatch {
    fn new(min: u32) -> Self {
        Self {
            low: 0,
            high: 0,
            min,
        }
    }

    /// Adds `id`, which must lie in `[min, min + 128)`.
    fn add(&mut self, id: u32) {
        let off = id - self.min;
        if off < 64 {
            self.low |= 1 << off;
        } else {
            self.high |= 1 << (off - 64);
        }
    }

    /// The APIC IDs this batch names, as a mask (IDs beyond the mask's
    /// range are left out).
    pub fn to_mask(self) -> CpuMask {
        let mut m = CpuMask::new();
        for bit in 0..SEND_IPI_CLUSTER {
            let set = if bit < 64 {
                self.low & (1 << bit) != 0
            } else {
                self.high & (1 << (bit - 64)) != 0
            };
            if set {
                if let Some(id) = self.min.checked_add(bit) {
                    m.insert(CpuId(id));
                }
            }
        }
        m
    }
}

/// Groups increasing APIC IDs into batches: each starts at its lowest ID
/// and takes every following ID less than 128 above it.
pub fn batches<I: Iterator<Item = u32>>(ids: I) -> Batches<I> {
    Batches {
        ids: ids.peekable(),
    }
}

/// The iterator of [`batches`].
#[derive(Debug)]
pub struct Batches<I: Iterator<Item = u32>> {
    ids: core::iter::Peekable<I>,
}

impl<I: Iterator<Item = u32>> Iterator for Batches<I> {
    type Item = IpiBatch;
    fn next(&mut self) -> Option<IpiBatch> {
        let first = self.ids.next()?;
        let mut b = IpiBatch::new(first);
        b.add(first);
        while let Some(&id) = self.ids.peek() {
            if id < first || id - first >= SEND_IPI_CLUSTER {
                break;
            }
            b.add(id);
            self.ids.next();
        }
        Some(b)
    }
}

/// The ICR value for a fixed interrupt of `vector` (physical destination,
/// no shorthand: the host takes destinations from the bitmap).
pub const fn icr(vector: u8) -> u64 {
    vector as u64
}

static WARNED: AtomicBool = AtomicBool::new(false);

/// Sends `vector` to every CPU of `mask`, one hypercall per batch; a
/// batch the host refuses goes to `native` instead. Returns the number of
/// hypercalls made.
pub fn send_mask<H: Hypervisor + ?Sized>(
    h: &H,
    mask: &CpuMask,
    vector: u8,
    mut native: impl FnMut(&CpuMask),
) -> usize {
    let mut calls = 0;
    for b in batches(mask.iter().map(|c| c.0)) {
        calls += 1;
        if let Err(e) = call(
            h,
            Hc::SendIpi,
            [b.low, b.high, u64::from(b.min), icr(vector)],
        ) {
            warn_once(&WARNED, format_args!("kvm pv-ipi: {e}: native IPIs"));
            native(&b.to_mask());
        }
    }
    calls
}

/// The set `target` names, or `None` for targets that stay native.
pub fn resolve(
    target: IpiTarget,
    me: CpuId,
    possible: impl FnOnce() -> CpuMask,
) -> Option<CpuMask> {
    match target {
        IpiTarget::ThisCpu => None,
        IpiTarget::Cpu(c) => {
            let mut m = CpuMask::new();
            m.insert(c).then_some(m)
        }
        IpiTarget::Mask(m) => Some(m),
        IpiTarget::All | IpiTarget::AllButSelf => {
            let mut m = possible();
            if m.is_empty() {
                // The platform does not know its CPUs: the shorthand does.
                return None;
            }
            if target == IpiTarget::AllButSelf {
                m.remove(me);
            }
            Some(m)
        }
    }
}

/// The `irq.send_ipi` op with PV IPI on.
pub fn send_ipi(target: IpiTarget, vector: u8) {
    let n = crate::native::ops();
    let me = if target == IpiTarget::AllButSelf {
        this_cpu()
    } else {
        CpuId(0)
    };
    let Some(mask) = resolve(target, me, n.cpu.possible_cpus) else {
        return (n.irq.send_ipi)(target, vector);
    };
    send_mask(&Real, &mask, vector, |m| {
        (n.irq.send_ipi)(IpiTarget::Mask(*m), vector)
    });
    if !matches!(target, IpiTarget::Cpu(_)) && crate::active().has(Feature::PvSchedYield) {
        crate::pv_sched_yield::yield_if_preempted(&mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;
    use std::vec::Vec;

    fn b(ids: &[u32]) -> Vec<IpiBatch> {
        batches(ids.iter().copied()).collect()
    }

    #[test]
    fn one_batch_for_close_ids() {
        assert_eq!(
            b(&[0, 1, 63, 64, 127]),
            [IpiBatch {
                low: 1 | 2 | (1 << 63),
                high: 1 | (1 << 63),
                min: 0
            }]
        );
        assert_eq!(
            b(&[5]),
            [IpiBatch {
                low: 1,
                high: 0,
                min: 5
            }]
        );
        assert!(b(&[]).is_empty());
    }

    #[test]
    fn min_is_the_lowest_id() {
        let v = b(&[10, 20, 137]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].min, 10);
        assert_eq!(v[0].low, 1 | (1 << 10));
        assert_eq!(v[0].high, 1 << 63);
    }

    #[test]
    fn wide_sets_split() {
        // 0..=127 fit, 128 starts a new batch.
        let v = b(&[0, 127, 128, 255]);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].min, 0);
        assert_eq!(v[1].min, 128);
        assert_eq!(v[1].low, 1);
        assert_eq!(v[1].high, 1 << 63);
        let all: Vec<u32> = (0..256).collect();
        assert_eq!(b(&all).len(), 2);
        let spread: Vec<u32> = (0..8).map(|i| i * 200).collect();
        assert_eq!(b(&spread).len(), 8);
    }

    #[test]
    fn batch_round_trips_to_mask() {
        let mut m = CpuMask::new();
        for id in [3, 64, 100, 130, 200, 255] {
            m.insert(CpuId(id));
        }
        let mut back = CpuMask::new();
        for batch in batches(m.iter().map(|c| c.0)) {
            for c in batch.to_mask().iter() {
                back.insert(c);
            }
        }
        assert_eq!(back, m);
    }

    #[test]
    fn hypercall_arguments_and_count() {
        let h = FakeHv::default();
        let mut m = CpuMask::new();
        for id in [1, 2, 200] {
            m.insert(CpuId(id));
        }
        let calls = send_mask(&h, &m, 0xf1, |_| panic!("no fallback expected"));
        assert_eq!(calls, 2);
        let c = h.calls.borrow();
        assert_eq!(c[0], (Hc::SendIpi, [0b11, 0, 1, 0xf1]));
        assert_eq!(c[1], (Hc::SendIpi, [1, 0, 200, 0xf1]));
    }

    #[test]
    fn refused_batch_goes_native() {
        let h = FakeHv::default();
        h.ret.set(-1000);
        let mut m = CpuMask::new();
        m.insert(CpuId(4));
        m.insert(CpuId(150));
        let mut native = Vec::new();
        crate::warn::take_log();
        send_mask(&h, &m, 0x30, |mm| native.push(*mm));
        assert_eq!(native.len(), 2);
        assert!(native[0].contains(CpuId(4)) && native[1].contains(CpuId(150)));
        assert!(crate::warn::take_log().len() <= 1);
    }

    #[test]
    fn targets_resolve() {
        let mut possible = CpuMask::new();
        for id in 0..4 {
            possible.insert(CpuId(id));
        }
        assert_eq!(resolve(IpiTarget::ThisCpu, CpuId(0), || possible), None);
        let one = resolve(IpiTarget::Cpu(CpuId(7)), CpuId(0), || possible).unwrap();
        assert_eq!(one.iter().collect::<Vec<_>>(), [CpuId(7)]);
        assert_eq!(
            resolve(IpiTarget::Cpu(CpuId(999)), CpuId(0), || possible),
            None
        );
        assert_eq!(
            resolve(IpiTarget::All, CpuId(2), || possible),
            Some(possible)
        );
        let abs = resolve(IpiTarget::AllButSelf, CpuId(2), || possible).unwrap();
        assert_eq!(abs.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 1, 3]);
        assert_eq!(resolve(IpiTarget::All, CpuId(2), CpuMask::new), None);
    }
}
