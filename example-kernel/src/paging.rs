//! Physical frames and the kernel's page tables, built and changed only
//! through pvops' MMU ops (so the same code works where page tables are
//! read-only to the kernel).

use pvops::abi::start_info::StartInfo;
use pvops::mmu::{self, PtLevel};
use x86_64::VirtAddr;

pub const PAGE: u64 = 4096;
const PRESENT: u64 = 1 << 0;
const WRITABLE: u64 = 1 << 1;
const WRITE_THROUGH: u64 = 1 << 3;
const NO_CACHE: u64 = 1 << 4;
const HUGE: u64 = 1 << 7;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// The direct map covers this much physical memory (RAM and devices).
pub const DIRECT_MAP_END: u64 = 4 << 30;
/// The local APIC's usual register page, mapped uncached.
const APIC_PAGE: u64 = 0xfee0_0000;

/// Where the self-tests map and remap pages (PML4 slot 32, far from the
/// direct map).
pub const TEST_VA: u64 = 0x0000_1000_0000_0000;

extern "C" {
    static __kernel_end: u8;
}

/// A bump allocator over the RAM regions of the memory map, above the
/// kernel image and below the direct map's end.
#[derive(Debug)]
pub struct FrameAllocator {
    regions: [(u64, u64); 32],
    count: usize,
    current: usize,
    next: u64,
    allocated: u64,
}

impl FrameAllocator {
    pub fn new(info: &StartInfo) -> Self {
        let floor = (core::ptr::addr_of!(__kernel_end) as u64).next_multiple_of(PAGE);
        let mut a = FrameAllocator {
            regions: [(0, 0); 32],
            count: 0,
            current: 0,
            next: 0,
            allocated: 0,
        };
        for (start, size) in info.ram_regions() {
            let lo = start.max(floor).next_multiple_of(PAGE);
            let hi = (start.saturating_add(size)).min(DIRECT_MAP_END) & !(PAGE - 1);
            if lo < hi && a.count < a.regions.len() {
                a.regions[a.count] = (lo, hi);
                a.count += 1;
            }
        }
        if a.count > 0 {
            a.next = a.regions[0].0;
        }
        a
    }

    /// A zeroed 4 KiB frame, by physical address.
    pub fn alloc(&mut self) -> Option<u64> {
        while self.current < self.count {
            let (_, hi) = self.regions[self.current];
            if self.next + PAGE <= hi {
                let f = self.next;
                self.next += PAGE;
                self.allocated += 1;
                // SAFETY: the frame is RAM from the memory map, above the
                // kernel image, inside the direct map, and handed out once.
                unsafe { core::ptr::write_bytes(f as *mut u8, 0, PAGE as usize) };
                return Some(f);
            }
            self.current += 1;
            if self.current < self.count {
                self.next = self.regions[self.current].0;
            }
        }
        None
    }

    /// Frames handed out so far.
    pub fn allocated(&self) -> u64 {
        self.allocated
    }
}

fn index(va: u64, level: PtLevel) -> usize {
    ((va >> (12 + 9 * (level as u64 - 1))) & 0x1ff) as usize
}

/// An address space: its top-level table and the allocator it grows from.
#[derive(Debug)]
pub struct AddressSpace {
    pub pml4: u64,
}

impl AddressSpace {
    /// A fresh address space with physical memory identity-mapped, built
    /// entirely through pvops, its updates batched in lazy MMU mode: the
    /// first 4 GiB by 2 MiB pages (the APIC's uncached) where the platform
    /// allows large pages, else every region of the memory map by 4 KiB
    /// pages (Xen PV, where only memory the domain owns can be mapped).
    pub fn new_kernel(frames: &mut FrameAllocator, info: &StartInfo) -> Option<Self> {
        let pml4 = frames.alloc()?;
        mmu::pt_alloc(PtLevel::P4d, pml4 / PAGE);
        let aspace = AddressSpace { pml4 };
        let batch = mmu::lazy();
        if mmu::large_pages() {
            aspace.map_first_4g_2m(frames)?;
        } else {
            for e in info.memmap() {
                aspace.map_4k(frames, e.addr, e.addr.saturating_add(e.size))?;
            }
        }
        batch.commit();
        Some(aspace)
    }

    fn map_first_4g_2m(&self, frames: &mut FrameAllocator) -> Option<()> {
        let pdpt = self.table_for(frames, 0, PtLevel::P4d)?;
        for gib in 0..DIRECT_MAP_END >> 30 {
            let pd = frames.alloc()?;
            mmu::pt_alloc(PtLevel::Pmd, pd / PAGE);
            for i in 0..512u64 {
                let pa = (gib << 30) | (i << 21);
                let mut flags = PRESENT | WRITABLE | HUGE;
                if pa == APIC_PAGE & !((1 << 21) - 1) {
                    flags |= NO_CACHE | WRITE_THROUGH;
                }
                // SAFETY: `pd` is a fresh, zeroed table frame reachable in
                // the current direct map; entry i is inside it.
                unsafe { mmu::set_pmd((pd as *mut u64).add(i as usize), pa | flags) };
            }
            // SAFETY: `pdpt` is a live table of this address space.
            unsafe {
                mmu::set_pud(
                    (pdpt as *mut u64).add(gib as usize),
                    pd | PRESENT | WRITABLE,
                )
            };
        }
        Some(())
    }

    /// Identity-maps `[start, end)` (below the direct map's end) by 4 KiB
    /// pages, one PTE table at a time: entries are only written, never
    /// read back, between two tables (so a lazy batch stays one batch).
    fn map_4k(&self, frames: &mut FrameAllocator, start: u64, end: u64) -> Option<()> {
        let mut va = start & !(PAGE - 1);
        let end = end.min(DIRECT_MAP_END);
        while va < end {
            let pt = self.table_for(frames, va, PtLevel::Pmd)?;
            let table_end = ((va | 0x1f_ffff) + 1).min(end);
            while va < table_end {
                let entry = (pt as *mut u64).wrapping_add(index(va, PtLevel::Pte));
                // SAFETY: `pt` is a live PTE table of this address space
                // (not yet in use, or mapping nothing yet at `va`).
                unsafe { mmu::set_pte(entry, va | PRESENT | WRITABLE, VirtAddr::new(va)) }.ignore();
                va += PAGE;
            }
        }
        Some(())
    }

    /// The physical address of the table one level below `level` that
    /// covers `va`, creating it if absent.
    fn table_for(&self, frames: &mut FrameAllocator, va: u64, level: PtLevel) -> Option<u64> {
        let parent = match level {
            PtLevel::P4d => self.pml4,
            PtLevel::Pud => self.table_for(frames, va, PtLevel::P4d)?,
            PtLevel::Pmd => self.table_for(frames, va, PtLevel::Pud)?,
            PtLevel::Pte => return None,
        };
        let entry = (parent as *mut u64).wrapping_add(index(va, level));
        // SAFETY: `parent` is a live table frame of this address space and
        // the index is below 512.
        let cur = unsafe { mmu::read_entry(level, entry) };
        if cur & PRESENT != 0 {
            if cur & HUGE != 0 && level != PtLevel::P4d {
                return None;
            }
            return Some(cur & ADDR_MASK);
        }
        let child = frames.alloc()?;
        let child_level = match level {
            PtLevel::P4d => PtLevel::Pud,
            PtLevel::Pud => PtLevel::Pmd,
            _ => PtLevel::Pte,
        };
        mmu::pt_alloc(child_level, child / PAGE);
        // SAFETY: as above; the new child table is zeroed and announced.
        unsafe { mmu::set_entry(level, entry, child | PRESENT | WRITABLE) };
        Some(child)
    }

    /// A pointer to the PMD entry that covers `va` (creating the tables
    /// above it).
    pub fn pmd_entry(&self, frames: &mut FrameAllocator, va: u64) -> Option<*mut u64> {
        let pd = self.table_for(frames, va, PtLevel::Pud)?;
        Some((pd as *mut u64).wrapping_add(index(va, PtLevel::Pmd)))
    }

    /// A pointer to the PTE that maps `va` (creating the tables above it).
    pub fn pte(&self, frames: &mut FrameAllocator, va: u64) -> Option<*mut u64> {
        let pt = self.table_for(frames, va, PtLevel::Pmd)?;
        Some((pt as *mut u64).wrapping_add(index(va, PtLevel::Pte)))
    }

    /// Maps the 4 KiB page at `va` to frame `pa`, writable; the caller must
    /// flush the returned token.
    pub fn map(&self, frames: &mut FrameAllocator, va: u64, pa: u64) -> Option<mmu::TlbFlush> {
        let pte = self.pte(frames, va)?;
        // SAFETY: `pte` points into a live PTE table of this address space;
        // the mapping aliases only test frames the caller owns.
        Some(unsafe { mmu::set_pte(pte, pa | PRESENT | WRITABLE, VirtAddr::new(va)) })
    }

    /// Unmaps the page at `va`.
    pub fn unmap(&self, frames: &mut FrameAllocator, va: u64) -> Option<mmu::TlbFlush> {
        let pte = self.pte(frames, va)?;
        // SAFETY: as in `map`; nothing keeps a reference into the page.
        Some(unsafe { mmu::clear_pte(pte, VirtAddr::new(va)) })
    }

    /// Switches to this address space.
    ///
    /// # Safety
    /// Everything in use must be mapped by it (the direct map is).
    pub unsafe fn activate(&self) {
        // SAFETY: forwarded to the caller.
        unsafe { mmu::write_cr3(self.pml4) }
    }
}
