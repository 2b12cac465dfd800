//! Remote TLB flushes by hypercall (`hv-tlbflush`): every target in one
//! call, no IPI, whatever their number. A whole flush is
//! `HvCallFlushVirtualAddressSpace`; a page range is
//! `HvCallFlushVirtualAddressList` with one rep per 4096 pages; VP indices
//! beyond 63 take the Ex forms (sparse VP set). Every address space is
//! named (this backend does not track CR3s), global mappings are kept for
//! a whole flush as `TlbRange::All` says. This CPU, if named, is flushed
//! locally. A target without a VP index, a set needing Ex on a host
//! without it, and a failed hypercall take the base op (IPIs) for that
//! call.

use core::sync::atomic::{AtomicBool, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::CpuMask;
use pvops_core::mmu::TlbRange;

use crate::abi::{call, flush, vpset, GVA_RANGE_MAX_EXTRA_PAGES};
use crate::hypercall::{self, Control, HvError, Hypervisor, Real};
use crate::vp::{self, VpSet};

/// More GVA entries than this and the whole space is flushed instead.
pub const MAX_RANGES: usize = 16;

/// The GVA-range entries for `pages` pages from `start` (page aligned):
/// each covers up to 4096 pages; `None` when more than [`MAX_RANGES`].
pub fn ranges(start: u64, pages: u64, out: &mut [u64; MAX_RANGES]) -> Option<usize> {
    let mut n = 0;
    let mut va = start & !0xfff;
    let mut left = pages;
    while left > 0 {
        if n == MAX_RANGES {
            return None;
        }
        let extra = (left - 1).min(GVA_RANGE_MAX_EXTRA_PAGES);
        out[n] = va | extra;
        n += 1;
        va = va.wrapping_add((extra + 1) << 12);
        left -= extra + 1;
    }
    Some(n)
}

/// Flushes `range` on the VPs of `set` in one hypercall, from `cpu`.
pub fn flush<H: Hypervisor + ?Sized>(
    h: &H,
    set: &VpSet,
    range: TlbRange,
    ex: bool,
    cpu: CpuId,
    mask_irqs: bool,
) -> Result<(), HvError> {
    let mut gvas = [0u64; MAX_RANGES];
    let list = match range {
        TlbRange::All => None,
        TlbRange::Pages { start, pages } => ranges(start.as_u64(), pages, &mut gvas),
    };
    // A page range may hold global mappings: those flushes keep none.
    let flags = flush::ALL_VIRTUAL_ADDRESS_SPACES
        | match range {
            TlbRange::All => flush::NON_GLOBAL_MAPPINGS_ONLY,
            TlbRange::Pages { .. } => 0,
        };
    let mask = set.as_mask();
    if mask.is_none() && !ex {
        return Err(HvError::NoVpIndex(64));
    }
    vp::with_input(
        cpu,
        mask_irqs,
        |buf| {
            buf[0] = 0; // address space: ignored with ALL_VIRTUAL_ADDRESS_SPACES
            buf[1] = flags;
            let (at, code, banks) = match mask {
                Some(m) => {
                    buf[2] = m;
                    let code = if list.is_some() {
                        call::FLUSH_VA_LIST
                    } else {
                        call::FLUSH_VA_SPACE
                    };
                    (3, code, 0)
                }
                None => {
                    buf[2] = vpset::SPARSE_4K;
                    buf[3] = set.valid;
                    let mut at = 4;
                    for bank in set.used_banks() {
                        buf[at] = bank;
                        at += 1;
                    }
                    let code = if list.is_some() {
                        call::FLUSH_VA_LIST_EX
                    } else {
                        call::FLUSH_VA_SPACE_EX
                    };
                    (at, code, (at - 4) as u64)
                }
            };
            let mut ctl = Control::slow(code).var_header(banks);
            if let Some(n) = list {
                buf[at..at + n].copy_from_slice(&gvas[..n]);
                ctl = ctl.reps(n as u64);
            }
            ctl
        },
        |ctl, pa| hypercall::call(h, ctl, pa, 0),
    )
    .unwrap_or(Err(HvError::CpuOutOfRange(cpu.0)))
}

/// Whether the Ex forms may be used (set at init).
pub(crate) static EX: AtomicBool = AtomicBool::new(false);
static WARNED: AtomicBool = AtomicBool::new(false);

/// The `mmu.flush_tlb_others` op.
pub fn flush_tlb_others(cpus: &CpuMask, range: TlbRange) {
    let base = crate::base::ops();
    let me = crate::this_cpu();
    let mut others = *cpus;
    if others.contains(me) {
        others.remove(me);
        match range {
            TlbRange::All => (base.mmu.flush_tlb_local)(),
            TlbRange::Pages { start, pages } => {
                for i in 0..pages {
                    (base.mmu.flush_tlb_single)(start + i * 4096);
                }
            }
        }
    }
    if others.is_empty() {
        return;
    }
    let r = vp::set_of(&others, vp::vp_of)
        .and_then(|set| flush(&Real, &set, range, EX.load(Ordering::Relaxed), me, true));
    if let Err(e) = r {
        if matches!(e, HvError::Status { .. } | HvError::Partial { .. }) {
            crate::warn::warn_once(
                &WARNED,
                format_args!("hv-tlbflush: {e}: this flush (and later failures) by IPI"),
            );
        }
        (base.mmu.flush_tlb_others)(&others, range);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;
    use x86_64::VirtAddr;

    #[test]
    fn gva_ranges() {
        let mut out = [0; MAX_RANGES];
        assert_eq!(ranges(0x5000, 1, &mut out), Some(1));
        assert_eq!(out[0], 0x5000);
        assert_eq!(ranges(0x10_0000, 4097, &mut out), Some(2));
        assert_eq!(out[..2], [0x10_0000 | 0xfff, 0x10_0000 + (4096 << 12)]);
        assert_eq!(ranges(0, 4096 * 17, &mut out), None);
        assert_eq!(ranges(0, 0, &mut out), Some(0));
    }

    // Each test sends from a CPU of its own: the input pages are global,
    // one per CPU, and the tests run in parallel.
    #[test]
    fn one_call_for_any_target_count() {
        let h = FakeHv::default();
        vp::register_input(&h, CpuId(1)).unwrap();
        let mut set = VpSet::new();
        for v in 0..40 {
            set.insert(v);
        }
        let range = TlbRange::Pages {
            start: VirtAddr::new(0x7000),
            pages: 2,
        };
        assert_eq!(flush(&h, &set, range, false, CpuId(1), false), Ok(()));
        assert_eq!(
            flush(&h, &set, TlbRange::All, false, CpuId(1), false),
            Ok(())
        );
        let calls = h.calls.borrow();
        assert_eq!(calls.len(), 2);
        let (ctl, _, _, input) = &calls[0];
        assert_eq!(*ctl, Control::slow(call::FLUSH_VA_LIST).reps(1));
        assert_eq!(
            input[..4],
            [
                0,
                flush::ALL_VIRTUAL_ADDRESS_SPACES,
                (1 << 40) - 1,
                0x7000 | 1
            ]
        );
        let (ctl, _, _, input) = &calls[1];
        assert_eq!(*ctl, Control::slow(call::FLUSH_VA_SPACE));
        assert_eq!(
            input[1],
            flush::ALL_VIRTUAL_ADDRESS_SPACES | flush::NON_GLOBAL_MAPPINGS_ONLY
        );
    }

    #[test]
    fn ex_form_beyond_vp_63() {
        let h = FakeHv::default();
        vp::register_input(&h, CpuId(2)).unwrap();
        let mut set = VpSet::new();
        set.insert(1);
        set.insert(200);
        assert_eq!(
            flush(&h, &set, TlbRange::All, false, CpuId(2), false),
            Err(HvError::NoVpIndex(64))
        );
        assert!(h.calls.borrow().is_empty());
        assert_eq!(
            flush(&h, &set, TlbRange::All, true, CpuId(2), false),
            Ok(())
        );
        let calls = h.calls.borrow();
        let (ctl, _, _, input) = &calls[0];
        assert_eq!(*ctl, Control::slow(call::FLUSH_VA_SPACE_EX).var_header(2));
        assert_eq!(input[2..6], [vpset::SPARSE_4K, 0b1001, 1 << 1, 1 << 8]);
    }

    #[test]
    fn partial_completion_is_an_error() {
        let h = FakeHv::default();
        vp::register_input(&h, CpuId(3)).unwrap();
        h.ret.set(Some(0));
        let mut set = VpSet::new();
        set.insert(3);
        let range = TlbRange::Pages {
            start: VirtAddr::new(0x7000),
            pages: 1,
        };
        assert!(matches!(
            flush(&h, &set, range, false, CpuId(3), false),
            Err(HvError::Partial { .. })
        ));
    }
}
