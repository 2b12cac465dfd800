//! MMU operations: CR2/CR3, page-table entry updates, TLB flushes,
//! page-table lifetime hooks and lazy (batched) update mode.
//!
//! Entries are written through ops rather than stored directly because a
//! classic Xen PV guest may not write its own page tables (they are
//! read-only to it and every update is a hypercall), and because batching
//! many updates into one hypercall is where paravirtual MMUs win.
//!
//! Entry values given to and returned by these ops are always in the
//! kernel's own terms (guest-physical frame numbers); a backend whose
//! hardware wants other frame numbers (Xen PV machine frames) translates.

use crate::cpu::CpuId;
use crate::irq::CpuMask;
use crate::patch::Op;
use crate::table::ops;
use x86_64::VirtAddr;

/// The level of a page-table entry, named as Linux names them.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PtLevel {
    /// Level 1: maps a 4 KiB page.
    Pte = 1,
    /// Level 2: maps a 2 MiB page or points to a PTE table.
    Pmd = 2,
    /// Level 3: maps a 1 GiB page or points to a PMD table.
    Pud = 3,
    /// Level 4: points to a PUD table.
    P4d = 4,
}

/// Which addresses a remote TLB flush covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlbRange {
    /// Every non-global entry.
    All,
    /// `pages` pages of 4 KiB starting at `start`.
    Pages {
        /// First virtual address (4 KiB aligned).
        start: VirtAddr,
        /// How many 4 KiB pages.
        pages: u64,
    },
}

/// The MMU operations a backend provides.
pub trait MmuOps {
    /// Reads CR2, the address of the last page fault.
    fn read_cr2() -> u64;
    /// Writes CR2 (only useful to test the read path or to clear it).
    ///
    /// # Safety
    /// Harmless to the machine, but a page-fault handler that runs later
    /// reads the value written here, so only write it outside of fault
    /// handling.
    unsafe fn write_cr2(value: u64);
    /// Reads CR3: the physical address of the top-level table and its flags.
    fn read_cr3() -> u64;
    /// Switches to the address space whose top-level table is at `value`.
    ///
    /// # Safety
    /// The new tables must map the running code, its stack and every datum in
    /// use, and must have been announced with [`MmuOps::pt_alloc`].
    unsafe fn write_cr3(value: u64);
    /// Writes `value` into the entry at `entry`, a table of `level`.
    ///
    /// # Safety
    /// `entry` must point into a live page table of `level`, and the mapping
    /// it makes must not alias memory in a way that breaks Rust's rules.
    unsafe fn set_entry(level: PtLevel, entry: *mut u64, value: u64);
    /// [`MmuOps::set_entry`], reporting a platform that refuses the
    /// update (Xen PV validates every entry) instead of only logging it.
    /// The default writes and cannot fail.
    ///
    /// # Safety
    /// As [`MmuOps::set_entry`].
    unsafe fn try_set_entry(
        level: PtLevel,
        entry: *mut u64,
        value: u64,
    ) -> Result<(), EntryRefused> {
        // SAFETY: forwarded to the caller.
        unsafe { Self::set_entry(level, entry, value) };
        Ok(())
    }
    /// Writes the PTE at `entry` and flushes `addr`'s TLB entry, which
    /// `entry` maps. The default is the two ops; under Xen PV it is one
    /// hypercall (`update_va_mapping` when `entry` is the current tables'
    /// PTE for `addr`).
    ///
    /// # Safety
    /// As [`MmuOps::set_entry`] for a PTE.
    unsafe fn set_pte_flush(entry: *mut u64, value: u64, addr: VirtAddr) {
        // SAFETY: forwarded to the caller.
        unsafe { Self::set_entry(PtLevel::Pte, entry, value) };
        Self::flush_tlb_single(addr);
    }
    /// Reads the entry at `entry`.
    ///
    /// # Safety
    /// `entry` must point into a live page table.
    unsafe fn read_entry(level: PtLevel, entry: *const u64) -> u64;
    /// Invalidates the TLB entry of one page on this CPU.
    fn flush_tlb_single(addr: VirtAddr);
    /// Invalidates every non-global TLB entry on this CPU.
    fn flush_tlb_local();
    /// Invalidates `range` on every CPU of `cpus` (this one included if it is
    /// a member) and returns when all have done so.
    fn flush_tlb_others(cpus: &CpuMask, range: TlbRange);
    /// Announces that the frame `pfn` is about to become a page table of
    /// `level` (a PV backend pins or write-protects it).
    fn pt_alloc(level: PtLevel, pfn: u64);
    /// Announces that the frame `pfn` is no longer a page table.
    fn pt_release(level: PtLevel, pfn: u64);
    /// Starts lazy mode: entry updates may be queued until
    /// [`MmuOps::leave_lazy`] or [`MmuOps::flush_lazy`].
    fn enter_lazy();
    /// Issues every queued update and ends lazy mode.
    fn leave_lazy();
    /// Issues every queued update and stays in lazy mode.
    fn flush_lazy();
    /// Whether a PMD or PUD entry may map a large page (2 MiB / 1 GiB leaf
    /// entries). True on hardware; Xen classic PV guests map with 4 KiB
    /// pages only.
    fn large_pages() -> bool {
        true
    }
}

/// The MMU group of the ops table.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct MmuOpsTable {
    pub read_cr2: fn() -> u64,
    pub write_cr2: unsafe fn(u64),
    pub read_cr3: fn() -> u64,
    pub write_cr3: unsafe fn(u64),
    pub set_entry: unsafe fn(PtLevel, *mut u64, u64),
    pub try_set_entry: unsafe fn(PtLevel, *mut u64, u64) -> Result<(), EntryRefused>,
    pub set_pte_flush: unsafe fn(*mut u64, u64, VirtAddr),
    pub read_entry: unsafe fn(PtLevel, *const u64) -> u64,
    pub flush_tlb_single: fn(VirtAddr),
    pub flush_tlb_local: fn(),
    pub flush_tlb_others: fn(&CpuMask, TlbRange),
    pub pt_alloc: fn(PtLevel, u64),
    pub pt_release: fn(PtLevel, u64),
    pub enter_lazy: fn(),
    pub leave_lazy: fn(),
    pub flush_lazy: fn(),
    pub large_pages: fn() -> bool,
}

impl MmuOpsTable {
    /// The table that forwards every op to `T`.
    pub const fn of<T: MmuOps>() -> Self {
        Self {
            read_cr2: T::read_cr2,
            write_cr2: T::write_cr2,
            read_cr3: T::read_cr3,
            write_cr3: T::write_cr3,
            set_entry: T::set_entry,
            try_set_entry: T::try_set_entry,
            set_pte_flush: T::set_pte_flush,
            read_entry: T::read_entry,
            flush_tlb_single: T::flush_tlb_single,
            flush_tlb_local: T::flush_tlb_local,
            flush_tlb_others: T::flush_tlb_others,
            pt_alloc: T::pt_alloc,
            pt_release: T::pt_release,
            enter_lazy: T::enter_lazy,
            leave_lazy: T::leave_lazy,
            flush_lazy: T::flush_lazy,
            large_pages: T::large_pages,
        }
    }
}

impl core::fmt::Debug for MmuOpsTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("MmuOpsTable { .. }")
    }
}

/// Reads CR2.
///
/// A patchable call site ([`crate::patch`]): `mov %cr2, %rax` natively.
#[inline]
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: a call site: it calls the C-ABI `mmu.read_cr2` of the
    // installed table (or the not-installed one) through its slot (via the
    // register-saving stub), or runs bytes with that function's effect once
    // patched; the operands declare its signature and the clobbers of the
    // sites' callee-saved convention (`patch::site`).
    unsafe { crate::patch::site::site!(saved Op::ReadCr2, lateout("rax") v) };
    v
}

/// Writes CR2.
///
/// # Safety
/// See [`MmuOps::write_cr2`].
#[inline]
pub unsafe fn write_cr2(value: u64) {
    // SAFETY: the caller upholds `MmuOps::write_cr2`'s contract.
    unsafe { (ops().mmu.write_cr2)(value) }
}

/// Reads CR3.
///
/// A patchable call site ([`crate::patch`]): `mov %cr3, %rax` natively.
#[inline]
pub fn read_cr3() -> u64 {
    let v: u64;
    // SAFETY: as in `read_cr2`, for `mmu.read_cr3`.
    unsafe { crate::patch::site::site!(saved Op::ReadCr3, lateout("rax") v) };
    v
}

/// Switches address space.
///
/// # Safety
/// See [`MmuOps::write_cr3`].
#[inline]
pub unsafe fn write_cr3(value: u64) {
    // SAFETY: the caller upholds `MmuOps::write_cr3`'s contract.
    unsafe { (ops().mmu.write_cr3)(value) }
}

/// A page-table update that has been made but whose stale TLB entry may
/// still be in use: call [`TlbFlush::flush`], or [`TlbFlush::ignore`] when
/// the old entry was not present (nothing can be cached for it).
#[must_use = "the old translation may still be cached: call flush() or ignore()"]
#[derive(Debug)]
pub struct TlbFlush(VirtAddr);

impl TlbFlush {
    /// Promises that `addr` needs a flush after an entry update.
    pub const fn new(addr: VirtAddr) -> Self {
        Self(addr)
    }

    /// Invalidates the page on this CPU.
    #[inline]
    pub fn flush(self) {
        flush_tlb_single(self.0)
    }

    /// Drops the obligation: right when the old entry was not present.
    #[inline]
    pub fn ignore(self) {}

    /// The address this flush is for.
    pub fn addr(&self) -> VirtAddr {
        self.0
    }
}

/// Writes a level-`level` entry.
///
/// A patchable call site ([`crate::patch`]): `mov %rdx, (%rsi)` natively.
///
/// # Safety
/// See [`MmuOps::set_entry`].
#[inline]
pub unsafe fn set_entry(level: PtLevel, entry: *mut u64, value: u64) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract; the site
    // is as in `read_cr2`, for `mmu.set_entry(dil, rsi, rdx)`.
    unsafe {
        crate::patch::site::site!(
            saved Op::SetEntry,
            in("rdi") level as u64,
            in("rsi") entry,
            in("rdx") value,
            out("rax") _
        )
    }
}

/// Writes a PTE and flushes the TLB entry of `addr`, the page it maps, as
/// one operation (see [`MmuOps::set_pte_flush`]): what `set_pte(..).flush()`
/// does, in one hypercall where updates are hypercalls.
///
/// # Safety
/// See [`MmuOps::set_entry`].
#[inline]
pub unsafe fn set_pte_flush(entry: *mut u64, value: u64, addr: VirtAddr) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { (ops().mmu.set_pte_flush)(entry, value, addr) }
}

/// A page-table update the platform refused, naming the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryRefused {
    /// Virtual address of the entry.
    pub entry: u64,
    /// The value asked for (the kernel's frame numbers).
    pub value: u64,
    /// The platform's error number (negative errno under Xen), 0 if none.
    pub code: i64,
    /// Why, in words.
    pub reason: &'static str,
}

impl core::fmt::Display for EntryRefused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "page-table entry at {:#x} := {:#x} refused: {}",
            self.entry, self.value, self.reason
        )?;
        if self.code != 0 {
            write!(f, " ({})", self.code)?;
        }
        Ok(())
    }
}

impl core::error::Error for EntryRefused {}

/// Writes a level-`level` entry, returning the platform's refusal as an
/// error (see [`MmuOps::try_set_entry`]). Not a patched site.
///
/// # Safety
/// See [`MmuOps::set_entry`].
#[inline]
pub unsafe fn try_set_entry(
    level: PtLevel,
    entry: *mut u64,
    value: u64,
) -> Result<(), EntryRefused> {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { (ops().mmu.try_set_entry)(level, entry, value) }
}

/// Reads a level-`level` entry, in the kernel's frame numbers.
///
/// # Safety
/// See [`MmuOps::read_entry`].
#[inline]
pub unsafe fn read_entry(level: PtLevel, entry: *const u64) -> u64 {
    // SAFETY: the caller upholds `MmuOps::read_entry`'s contract.
    unsafe { (ops().mmu.read_entry)(level, entry) }
}

/// Writes a PTE that maps `addr`; the returned token must be flushed.
///
/// # Safety
/// See [`MmuOps::set_entry`].
#[inline]
pub unsafe fn set_pte(entry: *mut u64, value: u64, addr: VirtAddr) -> TlbFlush {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_entry(PtLevel::Pte, entry, value) };
    TlbFlush::new(addr)
}

/// Writes a PMD entry.
///
/// # Safety
/// See [`MmuOps::set_entry`].
#[inline]
pub unsafe fn set_pmd(entry: *mut u64, value: u64) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_entry(PtLevel::Pmd, entry, value) }
}

/// Writes a PUD entry.
///
/// # Safety
/// See [`MmuOps::set_entry`].
#[inline]
pub unsafe fn set_pud(entry: *mut u64, value: u64) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_entry(PtLevel::Pud, entry, value) }
}

/// Writes a P4D (top-level) entry.
///
/// # Safety
/// See [`MmuOps::set_entry`].
#[inline]
pub unsafe fn set_p4d(entry: *mut u64, value: u64) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_entry(PtLevel::P4d, entry, value) }
}

/// Clears the PTE that maps `addr`; the returned token must be flushed.
///
/// # Safety
/// See [`MmuOps::set_entry`]; nothing may use the old mapping any more.
#[inline]
pub unsafe fn clear_pte(entry: *mut u64, addr: VirtAddr) -> TlbFlush {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_pte(entry, 0, addr) }
}

/// Clears a PMD entry.
///
/// # Safety
/// See [`MmuOps::set_entry`]; nothing may use the old mapping any more.
#[inline]
pub unsafe fn clear_pmd(entry: *mut u64) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_pmd(entry, 0) }
}

/// Clears a PUD entry.
///
/// # Safety
/// See [`MmuOps::set_entry`]; nothing may use the old mapping any more.
#[inline]
pub unsafe fn clear_pud(entry: *mut u64) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_pud(entry, 0) }
}

/// Clears a P4D entry.
///
/// # Safety
/// See [`MmuOps::set_entry`]; nothing may use the old mapping any more.
#[inline]
pub unsafe fn clear_p4d(entry: *mut u64) {
    // SAFETY: the caller upholds `MmuOps::set_entry`'s contract.
    unsafe { set_p4d(entry, 0) }
}

/// Invalidates one page on this CPU.
///
/// A patchable call site ([`crate::patch`]): `invlpg (%rdi)` natively.
#[inline]
pub fn flush_tlb_single(addr: VirtAddr) {
    // SAFETY: as in `read_cr2`, for `mmu.flush_tlb_single(rdi)`.
    unsafe {
        crate::patch::site::site!(
            saved Op::FlushTlbSingle,
            in("rdi") addr.as_u64(),
            out("rax") _
        )
    }
}

/// Invalidates every non-global entry on this CPU.
#[inline]
pub fn flush_tlb_local() {
    (ops().mmu.flush_tlb_local)()
}

/// Invalidates `range` on every CPU of `cpus` and waits for them.
#[inline]
pub fn flush_tlb_others(cpus: &CpuMask, range: TlbRange) {
    (ops().mmu.flush_tlb_others)(cpus, range)
}

/// Announces a new page table of `level` in frame `pfn`.
#[inline]
pub fn pt_alloc(level: PtLevel, pfn: u64) {
    (ops().mmu.pt_alloc)(level, pfn)
}

/// Announces that frame `pfn` is no longer a page table.
#[inline]
pub fn pt_release(level: PtLevel, pfn: u64) {
    (ops().mmu.pt_release)(level, pfn)
}

/// Whether leaf entries above the PTE level (2 MiB, 1 GiB pages) may be
/// used ([`MmuOps::large_pages`]).
#[inline]
pub fn large_pages() -> bool {
    (ops().mmu.large_pages)()
}

/// A lazy-MMU section: entry updates made while it lives may be batched.
///
/// Created by [`lazy`]; ends with [`LazyMmu::commit`] or when dropped, so an
/// early return cannot leave queued updates behind.
#[must_use = "dropping it at once ends lazy mode at once"]
#[derive(Debug)]
pub struct LazyMmu {
    _not_send: core::marker::PhantomData<*const ()>,
}

/// Enters lazy MMU mode on this CPU until the returned guard ends.
#[inline]
pub fn lazy() -> LazyMmu {
    (ops().mmu.enter_lazy)();
    LazyMmu {
        _not_send: core::marker::PhantomData,
    }
}

impl LazyMmu {
    /// Issues every queued update now and stays in lazy mode.
    #[inline]
    pub fn flush(&self) {
        (ops().mmu.flush_lazy)()
    }

    /// Issues every queued update and leaves lazy mode.
    #[inline]
    pub fn commit(self) {
        // Drop does the work.
    }
}

impl Drop for LazyMmu {
    fn drop(&mut self) {
        (ops().mmu.leave_lazy)()
    }
}

/// Sends the TLB flush of `range` to `cpu` alone.
#[inline]
pub fn flush_tlb_cpu(cpu: CpuId, range: TlbRange) {
    let mut m = CpuMask::new();
    m.insert(cpu);
    flush_tlb_others(&m, range)
}
