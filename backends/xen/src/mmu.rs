//! MMU ops: the hardware's. A PVH guest has its own page tables under
//! Xen's nested paging, so every op is native, and remote TLB flushes are
//! pvops' IPI flush ([`pvops_core::smp::flush_tlb_by_ipi`]) with the IPIs
//! sent over event channels.

use crate::XenPvh;
use pvops_core::irq::CpuMask;
use pvops_core::mmu::{MmuOps, PtLevel, TlbRange};
use pvops_native::Native;
use x86_64::VirtAddr;

impl MmuOps for XenPvh {
    #[inline]
    fn read_cr2() -> u64 {
        Native::read_cr2()
    }

    #[inline]
    unsafe fn write_cr2(value: u64) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::write_cr2(value) }
    }

    #[inline]
    fn read_cr3() -> u64 {
        Native::read_cr3()
    }

    #[inline]
    unsafe fn write_cr3(value: u64) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::write_cr3(value) }
    }

    #[inline]
    unsafe fn set_entry(level: PtLevel, entry: *mut u64, value: u64) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::set_entry(level, entry, value) }
    }

    #[inline]
    unsafe fn read_entry(level: PtLevel, entry: *const u64) -> u64 {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::read_entry(level, entry) }
    }

    #[inline]
    fn flush_tlb_single(addr: VirtAddr) {
        Native::flush_tlb_single(addr)
    }

    #[inline]
    fn flush_tlb_local() {
        Native::flush_tlb_local()
    }

    fn flush_tlb_others(cpus: &CpuMask, range: TlbRange) {
        pvops_core::smp::flush_tlb_by_ipi(cpus, range)
    }

    #[inline]
    fn pt_alloc(level: PtLevel, pfn: u64) {
        Native::pt_alloc(level, pfn)
    }

    #[inline]
    fn pt_release(level: PtLevel, pfn: u64) {
        Native::pt_release(level, pfn)
    }

    #[inline]
    fn enter_lazy() {
        Native::enter_lazy()
    }

    #[inline]
    fn leave_lazy() {
        Native::leave_lazy()
    }

    #[inline]
    fn flush_lazy() {
        Native::flush_lazy()
    }
}
