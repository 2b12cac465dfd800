//! Mapping single 4 KiB pages in the live page tables, through pvops::mmu:
//! tables reached through the direct map, new ones taken from a small pool
//! in `.bss` and announced with `pt_alloc`, every entry written with the
//! `set_*` ops.

use core::sync::atomic::{AtomicUsize, Ordering};
use pvops::mmu::{self, PtLevel};
use pvops::x86_64::VirtAddr;

/// Present | writable.
const TABLE_FLAGS: u64 = 0b11;
/// Bits 12..52 of an entry: the frame.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
const PAGE_SIZE_BIT: u64 = 1 << 7;
/// CR4.LA57: 5-level paging.
const CR4_LA57: u64 = 1 << 12;

/// One page-aligned 4 KiB page.
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct Page(pub [u8; 4096]);

const POOL_PAGES: usize = 16;
static mut POOL: [Page; POOL_PAGES] = [const { Page([0; 4096]) }; POOL_PAGES];
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A page of the kernel's own `.bss` pool: its virtual address, and its
/// physical one as pvops translates it (`pvops::translate::phys_of`, which
/// follows whatever `KernelMap` the kernel gave `pvops::init`).
pub fn alloc_page() -> Result<(*mut u8, u64), &'static str> {
    let i = NEXT.fetch_add(1, Ordering::Relaxed);
    if i >= POOL_PAGES {
        return Err("page pool exhausted");
    }
    // SAFETY: index i is handed out once (the counter only grows), so this
    // page has no other user; the pointer stays in bounds.
    let page = unsafe { core::ptr::addr_of_mut!(POOL[i]) as *mut u8 };
    // SAFETY: the page is ours (above) and 4096 bytes long.
    unsafe { core::ptr::write_bytes(page, 0, 4096) };
    let phys = pvops::translate::phys_of(page).map_err(|_| "pool page does not translate")?;
    Ok((page, phys))
}

/// The entry of the table at physical `table` for `va` at `level`, as a
/// pointer through the direct map.
fn entry_ptr(phys_offset: u64, table: u64, level: PtLevel, va: u64) -> *mut u64 {
    let shift = 12 + 9 * (level as u64 - 1);
    let index = (va >> shift) & 511;
    (phys_offset + table + index * 8) as *mut u64
}

/// The PTE that maps `va` in the live tables, creating missing tables
/// from the pool when `create` is set. Fails on 5-level paging (pvops has
/// no level-5 entry op) and where a large page maps `va`.
pub fn pte_for(phys_offset: u64, va: u64, create: bool) -> Result<*mut u64, &'static str> {
    if pvops::cpu::read_cr4() & CR4_LA57 != 0 {
        return Err("5-level paging: pvops::mmu::PtLevel has no level 5");
    }
    let mut table = mmu::read_cr3() & ADDR_MASK;
    for level in [PtLevel::P4d, PtLevel::Pud, PtLevel::Pmd] {
        let entry = entry_ptr(phys_offset, table, level, va);
        // SAFETY: `entry` is inside a live table of `level`, read through
        // the direct map that covers all RAM.
        let value = unsafe { mmu::read_entry(level, entry) };
        if value & 1 == 0 {
            if !create {
                return Err("not mapped");
            }
            let (_, phys) = alloc_page()?;
            let below = match level {
                PtLevel::P4d => PtLevel::Pud,
                PtLevel::Pud => PtLevel::Pmd,
                _ => PtLevel::Pte,
            };
            mmu::pt_alloc(below, phys >> 12);
            // SAFETY: `entry` is a live, empty entry of `level`; it now
            // points to a zeroed table nothing else uses.
            unsafe { mmu::set_entry(level, entry, phys | TABLE_FLAGS) };
            table = phys;
        } else if level != PtLevel::P4d && value & PAGE_SIZE_BIT != 0 {
            return Err("a large page maps this address");
        } else {
            table = value & ADDR_MASK;
        }
    }
    Ok(entry_ptr(phys_offset, table, PtLevel::Pte, va))
}

/// Maps `va` to the frame at `phys` (present, writable) and flushes it.
///
/// # Safety
/// Nothing may rely on what `va` mapped before, and the new mapping must
/// not alias memory in a way that breaks Rust's rules for the caller.
pub unsafe fn map(phys_offset: u64, va: u64, phys: u64) -> Result<(), &'static str> {
    let pte = pte_for(phys_offset, va, true)?;
    // SAFETY: `pte` is the live PTE of `va`; the caller accepts the mapping.
    unsafe { mmu::set_pte(pte, (phys & ADDR_MASK) | TABLE_FLAGS, VirtAddr::new(va)) }.flush();
    Ok(())
}

/// Unmaps `va` (a page [`map`] mapped) and flushes it here.
///
/// # Safety
/// Nothing may use `va` afterwards.
pub unsafe fn unmap(phys_offset: u64, va: u64) -> Result<(), &'static str> {
    let pte = pte_for(phys_offset, va, false)?;
    // SAFETY: `pte` is the live PTE of `va`; the caller gave the page up.
    unsafe { mmu::clear_pte(pte, VirtAddr::new(va)) }.flush();
    Ok(())
}

/// A virtual address in the upper half whose top-level entry is empty:
/// room for test mappings whatever the loader mapped.
pub fn free_upper_half_slot(phys_offset: u64) -> Option<u64> {
    let root = mmu::read_cr3() & ADDR_MASK;
    (300..480).find_map(|index: u64| {
        let va = 0xffff_0000_0000_0000 | (index << 39);
        let entry = entry_ptr(phys_offset, root, PtLevel::P4d, va);
        // SAFETY: an entry of the live top-level table, via the direct map.
        let value = unsafe { mmu::read_entry(PtLevel::P4d, entry) };
        (value & 1 == 0).then_some(va)
    })
}
