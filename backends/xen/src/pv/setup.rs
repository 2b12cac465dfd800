//! Bringing a classic PV domain from Xen's boot layout to what pvops
//! promises a kernel: all of its memory identity-mapped (pseudo-physical
//! address = virtual address), shared info mapped, callbacks registered.
//!
//! Xen maps only its boot layout (kernel, pfn list, start info, boot page
//! tables, boot stack, and at least 512 KiB of padding) at
//! `VIRT_BASE + pfn * 4096`; pvops' PV notes ask for `VIRT_BASE = 0`, so
//! that region is already identity-mapped. [`extend_direct_map`] maps the
//! rest of the domain's frames the same way, 2 MiB at a time in address
//! order, each new PTE table zeroed, filled while still writable, then
//! write-protected and linked in with `mmu_update` (two hypercalls per
//! 2 MiB). The tables are taken one after another from the first free
//! frame after Xen's layout: the padding Xen guarantees at first, then
//! frames this very walk has just mapped (it maps 2 MiB per 4 KiB it
//! takes, so it never catches up with itself). What it took is reported
//! as reserved in the memory map.

use super::{mmu, p2m};
use crate::abi::pv::{pte, MmuUpdate, MMU_NORMAL_PT_UPDATE, UVMF_INVLPG};
use crate::error::XenError;
use crate::xen::XEN;
use pvops_core::abi::pv_start_info::PvStartInfo;

/// Why the direct map could not be completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No mapped, free frame was left for a table (cannot happen while
    /// each table maps more than it takes; kept as a check).
    OutOfPadding {
        /// Frames the domain has.
        nr_pages: u64,
    },
    /// A hypercall failed.
    Xen(&'static str, XenError),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MapError::OutOfPadding { nr_pages } => write!(
                f,
                "no mapped free frame left for a page table while mapping {nr_pages} frames"
            ),
            MapError::Xen(what, e) => write!(f, "{what}: {e}"),
        }
    }
}

impl core::error::Error for MapError {}

const FLAGS: u64 = pte::PRESENT | pte::WRITABLE | pte::ACCESSED | pte::DIRTY;

/// Frames for new tables: `next` is the first free one, `end` the first
/// not known to be mapped (it grows as the walk maps memory).
struct Padding {
    next: u64,
    end: u64,
}

impl Padding {
    /// A fresh, zeroed, write-protected frame, recorded as a table.
    fn table(
        &mut self,
        nr_pages: u64,
        fill: impl FnOnce(&mut [u64; 512]),
    ) -> Result<u64, MapError> {
        if self.next >= self.end {
            return Err(MapError::OutOfPadding { nr_pages });
        }
        let va = self.next;
        self.next += 4096;
        // SAFETY: the frame is in the padding of Xen's boot layout, mapped
        // writable at `va` (identity) and used by nothing: Xen leaves it
        // free, and `next` hands each frame out once.
        let t = unsafe { &mut *(va as *mut [u64; 512]) };
        *t = [0; 512];
        fill(t);
        let pfn = va >> 12;
        let mfn = p2m::mfn(pfn).ok_or(MapError::OutOfPadding { nr_pages })?;
        XEN.update_va_mapping(
            va,
            (mfn << 12) | pte::PRESENT | pte::ACCESSED | pte::DIRTY,
            UVMF_INVLPG,
        )
        .map_err(|e| MapError::Xen("update_va_mapping (write-protecting a new table)", e))?;
        mmu::mark_table(pfn);
        Ok(pfn)
    }
}

fn link(table_pfn: u64, index: usize, child_pfn: u64) -> Result<(), MapError> {
    let tm = p2m::mfn(table_pfn).ok_or(MapError::Xen("pfn list", XenError::NOSYS))?;
    let cm = p2m::mfn(child_pfn).ok_or(MapError::Xen("pfn list", XenError::NOSYS))?;
    XEN.mmu_update(&[MmuUpdate {
        ptr: (tm << 12) | (index as u64 * 8) | MMU_NORMAL_PT_UPDATE,
        val: (cm << 12) | FLAGS,
    }])
    .map_err(|e| MapError::Xen("mmu_update (linking a new table)", e.error))
}

/// The pfn behind a present entry, or `None`.
fn child(entry: u64) -> Option<u64> {
    (entry & pte::PRESENT != 0).then(|| p2m::pfn((entry & pte::ADDR_MASK) >> 12))?
}

fn entry_of(table_pfn: u64, index: usize) -> u64 {
    // SAFETY: the table is part of the current (identity-mapped) tree.
    unsafe { ((table_pfn << 12) as *const u64).add(index).read_volatile() }
}

/// Maps every frame of the domain at its pseudo-physical address; returns
/// the first address after the frames taken for tables.
pub fn extend_direct_map(si: &PvStartInfo) -> Result<u64, MapError> {
    let nr = si.nr_pages;
    let root = si.pt_base >> 12;
    let mut pad = Padding {
        next: si.boot_layout_end(),
        end: si.boot_layout_end() + PvStartInfo::GUARANTEED_PADDING,
    };
    // The domain's memory is below 512 GiB: L4 slot 0.
    let Some(l3) = child(entry_of(root, 0)) else {
        return Err(MapError::Xen(
            "boot page tables: no L3 at slot 0",
            XenError::NOSYS,
        ));
    };
    let chunks = nr.div_ceil(512);
    for chunk in 0..chunks {
        let gib = (chunk / 512) as usize;
        let l2 = match child(entry_of(l3, gib)) {
            Some(p) => p,
            None => {
                let p = pad.table(nr, |_| {})?;
                link(l3, gib, p)?;
                p
            }
        };
        let slot = (chunk % 512) as usize;
        let first = chunk * 512;
        let last = (first + 512).min(nr);
        // Tables for this chunk come from below what is mapped so far.
        match child(entry_of(l2, slot)) {
            Some(l1) => {
                // Xen's own L1s cover its layout to a 4 MiB boundary; fill
                // what may be missing all the same.
                let mut reqs = [MmuUpdate::default(); 32];
                let mut n = 0;
                let l1m = p2m::mfn(l1).unwrap_or(0);
                for pfn in first..last {
                    let i = (pfn - first) as usize;
                    if entry_of(l1, i) & pte::PRESENT != 0 {
                        continue;
                    }
                    let Some(m) = p2m::mfn(pfn) else { continue };
                    let mut val = (m << 12) | FLAGS;
                    if mmu::is_table(pfn) {
                        val &= !pte::WRITABLE;
                    }
                    reqs[n] = MmuUpdate {
                        ptr: (l1m << 12) | (i as u64 * 8),
                        val,
                    };
                    n += 1;
                    if n == reqs.len() {
                        XEN.mmu_update(&reqs)
                            .map_err(|e| MapError::Xen("mmu_update", e.error))?;
                        n = 0;
                    }
                }
                XEN.mmu_update(&reqs[..n])
                    .map_err(|e| MapError::Xen("mmu_update", e.error))?;
            }
            None => {
                let p = pad.table(nr, |t| {
                    for pfn in first..last {
                        if let Some(m) = p2m::mfn(pfn) {
                            t[(pfn - first) as usize] = (m << 12) | FLAGS;
                        }
                    }
                })?;
                link(l2, slot, p)?;
            }
        }
        // Every frame below `last` is mapped now (writable, but for tables,
        // all of which lie below `pad.next`).
        pad.end = pad.end.max(last << 12);
    }
    Ok(pad.next)
}
