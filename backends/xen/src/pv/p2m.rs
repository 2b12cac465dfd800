//! Pseudo-physical and machine frames.
//!
//! A classic PV guest sees two kinds of frame number: its own contiguous
//! pseudo-physical frames (what the kernel allocates and what pvops' ops
//! take, `pfn`), and the machine frames Xen put behind them (what page
//! tables, `cr3` and several hypercalls must contain, `mfn`). Xen gives the
//! guest the table one way (`start_info.mfn_list`, pfn to mfn, in the
//! guest's memory) and keeps the other way read-only in every PV address
//! space (`MACH2PHYS_VIRT_START`, mfn to pfn).
//!
//! One exception is kept here: the frame of the kernel's shared-info page
//! is backed by Xen's shared-info page instead ([`set_override`]), as
//! `XENMEM_add_to_physmap` arranges for a PVH guest, so that every address
//! space the kernel builds maps shared info where the kernel's `.bss`
//! page is.

use crate::abi::pv::{pte, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START};
use core::sync::atomic::{AtomicU64, Ordering};

static MFN_LIST: AtomicU64 = AtomicU64::new(0);
static NR_PAGES: AtomicU64 = AtomicU64::new(0);
static OVERRIDE_PFN: AtomicU64 = AtomicU64::new(u64::MAX);
static OVERRIDE_MFN: AtomicU64 = AtomicU64::new(u64::MAX);

/// Uses the pfn-to-mfn list at virtual address `mfn_list` (`nr_pages`
/// entries).
///
/// # Safety
/// The list must stay mapped there, `nr_pages` `u64`s long, for good.
pub unsafe fn set_list(mfn_list: u64, nr_pages: u64) {
    MFN_LIST.store(mfn_list, Ordering::Relaxed);
    NR_PAGES.store(nr_pages, Ordering::Release);
}

/// Pseudo-physical frames the domain has.
pub fn nr_pages() -> u64 {
    NR_PAGES.load(Ordering::Acquire)
}

/// Backs pseudo-physical frame `pfn` with machine frame `mfn` in every
/// translation made from now on (the shared-info page).
///
/// # Safety
/// Every page-table entry written afterwards for `pfn` maps `mfn`: it must
/// be the frame that now backs `pfn` (Xen's shared-info page mapped over
/// it), or kernel mappings of `pfn` would reach another machine frame.
pub unsafe fn set_override(pfn: u64, mfn: u64) {
    OVERRIDE_MFN.store(mfn, Ordering::Relaxed);
    OVERRIDE_PFN.store(pfn, Ordering::Release);
}

/// The machine frame behind `pfn`, or `None` beyond the domain's memory.
#[inline]
pub fn mfn(pfn: u64) -> Option<u64> {
    if pfn == OVERRIDE_PFN.load(Ordering::Acquire) {
        return Some(OVERRIDE_MFN.load(Ordering::Relaxed));
    }
    if pfn >= nr_pages() {
        return None;
    }
    let list = MFN_LIST.load(Ordering::Relaxed) as *const u64;
    // SAFETY: `set_list` guarantees `nr_pages` entries mapped at `list`;
    // `pfn` is below that. Xen does not change a PV guest's list (the guest
    // owns it), so a plain read is enough.
    Some(unsafe { list.add(pfn as usize).read_volatile() })
}

/// The pseudo-physical frame behind machine frame `mfn`, checked against
/// the pfn-to-mfn list (a frame the domain does not own has none).
#[inline]
pub fn pfn(mfn: u64) -> Option<u64> {
    if mfn == OVERRIDE_MFN.load(Ordering::Acquire) {
        return Some(OVERRIDE_PFN.load(Ordering::Relaxed));
    }
    let at = MACH2PHYS_VIRT_START.checked_add(mfn.checked_mul(8)?)?;
    if at >= MACH2PHYS_VIRT_END {
        return None;
    }
    // SAFETY: Xen maps the machine-to-phys table read-only at
    // MACH2PHYS_VIRT_START in every 64-bit PV address space, for every
    // machine frame up to MACH2PHYS_VIRT_END (entries of frames that are
    // not RAM read as invalid, never fault for the frames a guest sees).
    let pfn = unsafe { (at as *const u64).read_volatile() };
    (self::mfn(pfn) == Some(mfn)).then_some(pfn)
}

/// An entry as the kernel wrote it (pseudo-physical) in Xen's terms
/// (machine), or `None` if it maps a frame the domain does not have.
pub fn to_machine(entry: u64) -> Option<u64> {
    if entry & pte::PRESENT == 0 {
        return Some(entry);
    }
    let m = mfn((entry & pte::ADDR_MASK) >> 12)?;
    Some((entry & !pte::ADDR_MASK) | (m << 12))
}

/// An entry as Xen keeps it (machine) in the kernel's terms
/// (pseudo-physical). A present entry of a frame the domain does not own
/// keeps its machine address.
pub fn to_pseudo(entry: u64) -> u64 {
    if entry & pte::PRESENT == 0 {
        return entry;
    }
    match pfn((entry & pte::ADDR_MASK) >> 12) {
        Some(p) => (entry & !pte::ADDR_MASK) | (p << 12),
        None => entry,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The lists are process-wide: tests that set them take this first.
    pub(crate) static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn entries_translate_both_ways_through_the_lists() {
        let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // The machine-to-phys side needs Xen's mapping; only the
        // not-present and pfn-to-mfn paths run on the host.
        static LIST: [u64; 4] = [0x100, 0x205, 0x3ff, 0x17];
        // SAFETY: LIST is a static of 4 entries.
        unsafe { set_list(LIST.as_ptr() as u64, 4) };
        assert_eq!(mfn(1), Some(0x205));
        assert_eq!(mfn(4), None);
        assert_eq!(to_machine(0x2000 | 0x63), Some(0x3ff000 | 0x63));
        assert_eq!(to_machine(0x4000 | 0x3), None, "beyond the domain");
        assert_eq!(to_machine(0xabc0), Some(0xabc0), "not present: as is");
        assert_eq!(to_pseudo(0xabc0), 0xabc0);
        // SAFETY: on the host no page table is written from it.
        unsafe { set_override(2, 0x999) };
        assert_eq!(mfn(2), Some(0x999));
        assert_eq!(pfn(0x999), Some(2));
        assert_eq!(to_pseudo(0x999000 | 0x7), 0x2000 | 0x7);
        // SAFETY: as above.
        unsafe { set_override(u64::MAX, u64::MAX) };
    }
}
