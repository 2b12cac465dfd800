//! MMU ops as plain stores, `invlpg` and CR3 reloads.

use crate::Native;
use core::arch::asm;
use pvops_core::irq::CpuMask;
use pvops_core::mmu::{MmuOps, PtLevel, TlbRange};
use x86_64::instructions::tlb;
use x86_64::VirtAddr;

/// Records what the backends need of `ctx` for the rest of the run: its
/// [`KernelMap`](pvops_core::translate::KernelMap) for
/// [`pvops_core::translate`] (with [`paging_root`] as the page-table
/// reader) and who owns the CPU-number registers
/// ([`pvops_core::cpu::record_cpu_number`]). Backends that need them (kvm,
/// xen) call it first in their `init`, so a kernel that lists candidates
/// itself needs nothing more; `pvops::init` calls it earlier still, to
/// refuse a map that cannot be right before any backend runs.
pub fn record_boot_context(ctx: &pvops_core::backend::BootContext<'_>) {
    pvops_core::translate::configure(ctx.kernel_map, ctx.phys_offset, paging_root);
    pvops_core::cpu::record_cpu_number(ctx.cpu_number);
    // Native code another backend calls (the trampoline of
    // `smp::start_at`, the local APIC) reaches memory through it.
    crate::set_phys_offset(ctx.phys_offset);
}

/// The live page-table root, for [`pvops_core::translate`]'s walk of the
/// kernel's own mappings: CR3, and CR4.LA57 (5-level paging).
pub fn paging_root() -> pvops_core::translate::PagingRoot {
    /// CR4.LA57.
    const LA57: u64 = 1 << 12;
    pvops_core::translate::PagingRoot {
        cr3: Native::read_cr3(),
        five_level: <Native as pvops_core::cpu::CpuOps>::read_cr4() & LA57 != 0,
    }
}

impl MmuOps for Native {
    #[inline]
    fn read_cr2() -> u64 {
        let v: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    #[inline]
    unsafe fn write_cr2(value: u64) {
        // SAFETY: CR2 is only a record of the last fault address; the caller
        // guarantees no fault handler is about to read it.
        unsafe { asm!("mov cr2, {}", in(reg) value, options(nomem, nostack, preserves_flags)) }
    }

    #[inline]
    fn read_cr3() -> u64 {
        let v: u64;
        // SAFETY: reading CR3 has no side effects.
        unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    #[inline]
    unsafe fn write_cr3(value: u64) {
        // SAFETY: the caller guarantees the new tables map everything in use.
        unsafe { asm!("mov cr3, {}", in(reg) value, options(nostack, preserves_flags)) }
    }

    #[inline]
    unsafe fn set_entry(_level: PtLevel, entry: *mut u64, value: u64) {
        // A volatile store: the MMU reads the table behind the compiler's back.
        // SAFETY: the caller guarantees `entry` points into a live table.
        unsafe { core::ptr::write_volatile(entry, value) }
    }

    #[inline]
    unsafe fn read_entry(_level: PtLevel, entry: *const u64) -> u64 {
        // SAFETY: the caller guarantees `entry` points into a live table.
        unsafe { core::ptr::read_volatile(entry) }
    }

    #[inline]
    fn flush_tlb_single(addr: VirtAddr) {
        tlb::flush(addr)
    }

    #[inline]
    fn flush_tlb_local() {
        tlb::flush_all()
    }

    fn flush_tlb_others(cpus: &CpuMask, range: TlbRange) {
        pvops_core::smp::flush_tlb_by_ipi(cpus, range)
    }

    /// Bare hardware does not care which frames hold page tables.
    #[inline]
    fn pt_alloc(_level: PtLevel, _pfn: u64) {}

    /// Bare hardware does not care which frames hold page tables.
    #[inline]
    fn pt_release(_level: PtLevel, _pfn: u64) {}

    /// Native stores take effect at once: there is nothing to batch.
    #[inline]
    fn enter_lazy() {}

    /// Native stores take effect at once: there is nothing to issue.
    #[inline]
    fn leave_lazy() {}

    /// Native stores take effect at once: there is nothing to issue.
    #[inline]
    fn flush_lazy() {}
}
