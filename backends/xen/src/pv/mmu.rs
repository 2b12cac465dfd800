//! MMU ops of a classic PV guest: the page tables are Xen's to validate.
//!
//! The kernel writes and reads entries in pseudo-physical terms, as
//! everywhere; this module translates ([`super::p2m`]) and lets Xen write:
//!
//! - **Entries** go through `mmu_update` (a checked write at the entry's
//!   machine address). Xen validates writes into tables in use and does a
//!   plain write into frames that are not (yet) page tables, so one path
//!   serves tables being built and tables in use. In lazy MMU mode the
//!   requests queue per vCPU (up to [`QUEUE_LEN`]) and leave in one
//!   hypercall; reading an entry first sends the queue, so reads always
//!   see earlier writes.
//! - **Page-table frames** must never be mapped writable while Xen uses
//!   them: [`MmuOps::pt_alloc`] write-protects the frame's mapping in the
//!   current address space and records it; an entry that maps a recorded
//!   frame is written without its RW bit. Entries written before their
//!   frame became a table (the direct map of a new address space is built
//!   before its last tables are allocated) are caught when the new tree is
//!   first loaded: [`MmuOps::write_cr3`] walks it, clears RW where needed,
//!   write-protects every table frame, then pins the top table
//!   (`MMUEXT_PIN_L4_TABLE`) and loads it for kernel and user mode alike
//!   (`MMUEXT_NEW_BASEPTR`, `MMUEXT_NEW_USER_BASEPTR`, one hypercall). The boot
//!   tables Xen built are unpinned once the kernel left them.
//! - **TLB**: `MMUEXT_INVLPG_LOCAL`, `MMUEXT_TLB_FLUSH_LOCAL`, and for
//!   other vCPUs `MMUEXT_TLB_FLUSH_MULTI`/`MMUEXT_INVLPG_MULTI` (Xen flushes
//!   them itself: no IPI).
//! - **CR2** is Xen's copy in `vcpu_info`; **CR3** is the pseudo-physical
//!   address of the top table this vCPU last loaded.
//!
//! Only 4 KiB leaf entries are used ([`MmuOps::large_pages`] is false).
//! Page-table frames must be reached by the kernel through the direct map
//! at `phys + phys_offset`, the only mapping this module write-protects.

use super::p2m;
use super::XenPv;
use crate::abi::nr::DOMID_SELF;
use crate::abi::pv::{self, pte, MmuUpdate, MmuextOp, MulticallEntry, MMU_NORMAL_PT_UPDATE};
use crate::error::XenError;
use crate::hypercall::Hypercall;
use crate::warn::warn;
use crate::xen::{Xen, XEN};
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use pvops_core::irq::CpuMask;
use pvops_core::mmu::{EntryRefused, MmuOps, PtLevel, TlbRange};
use x86_64::VirtAddr;

/// Requests one lazy batch holds; a full queue is sent at once.
pub const QUEUE_LEN: usize = 128;
/// vCPUs with a lazy queue of their own (the others write unbatched, which
/// is slower but correct): a queue is over 2 KiB of `.bss` (`QUEUE_LEN`
/// 16-byte updates and the TLB ops), so not one per
/// possible vCPU ([`crate::percpu::MAX_VCPUS`]).
const QUEUES: usize = 4;
static_assertions::const_assert!(QUEUES <= crate::percpu::MAX_VCPUS);
/// Pseudo-physical frames the page-table record covers (1 GiB).
pub const MAX_PFNS: u64 = 1 << 18;
/// Top tables this module can keep pinned at once.
const MAX_PINNED: usize = 16;

/// An entry update Xen refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryError {
    /// Virtual address of the entry.
    pub entry: u64,
    /// The value the kernel asked for (pseudo-physical).
    pub value: u64,
    /// Why.
    pub error: EntryErrorKind,
}

/// Why an entry update failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryErrorKind {
    /// Xen refused the `mmu_update`.
    Refused(XenError),
    /// The entry's own frame is beyond the domain's memory.
    EntryOutsideDomain,
    /// The value maps a frame beyond the domain's memory.
    TargetOutsideDomain,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry at {:#x} := {:#x}: ", self.entry, self.value)?;
        match self.error {
            EntryErrorKind::Refused(e) => write!(f, "Xen refused it ({e})"),
            EntryErrorKind::EntryOutsideDomain => {
                f.write_str("the entry is not in this domain's memory")
            }
            EntryErrorKind::TargetOutsideDomain => {
                f.write_str("it maps a frame this domain does not have")
            }
        }
    }
}

impl core::error::Error for EntryError {}

impl From<EntryError> for EntryRefused {
    fn from(e: EntryError) -> Self {
        let (code, reason) = match e.error {
            EntryErrorKind::Refused(x) => (x.detail(), "Xen refused the mmu_update"),
            EntryErrorKind::EntryOutsideDomain => (0, "the entry is not in this domain's memory"),
            EntryErrorKind::TargetOutsideDomain => (0, "it maps a frame this domain does not have"),
        };
        EntryRefused {
            entry: e.entry,
            value: e.value,
            code,
            reason,
        }
    }
}

static LAST_ERROR: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);

fn report(e: EntryError) {
    ERRORS.fetch_add(1, Ordering::Relaxed);
    LAST_ERROR.store(e.entry, Ordering::Relaxed);
    warn(format_args!("xen-pv: page-table update failed: {e}"));
}

/// Single-page TLB flushes one lazy batch keeps; more become one flush
/// of the whole local TLB.
pub const TLB_QUEUE_LEN: usize = 16;

struct Queue {
    len: usize,
    /// Kernel-side view of each queued request, for error reports.
    what: [(u64, u64); QUEUE_LEN],
    reqs: [MmuUpdate; QUEUE_LEN],
    /// Pages whose TLB entries to flush after the updates.
    tlb: [u64; TLB_QUEUE_LEN],
    ntlb: usize,
    /// The whole local TLB instead.
    tlb_all: bool,
}

impl Queue {
    const EMPTY: Queue = Queue {
        len: 0,
        what: [(0, 0); QUEUE_LEN],
        reqs: [MmuUpdate { ptr: 0, val: 0 }; QUEUE_LEN],
        tlb: [0; TLB_QUEUE_LEN],
        ntlb: 0,
        tlb_all: false,
    };

    fn flush_page(&mut self, va: u64) {
        if self.tlb_all {
            return;
        }
        if self.ntlb == TLB_QUEUE_LEN {
            self.tlb_all = true;
            self.ntlb = 0;
            return;
        }
        self.tlb[self.ntlb] = va;
        self.ntlb += 1;
    }

    fn has_work(&self) -> bool {
        self.len > 0 || self.ntlb > 0 || self.tlb_all
    }

    /// The queued TLB flushes as `mmuext_op`s (into `out`), and how many.
    fn tlb_ops(&self, out: &mut [MmuextOp; TLB_QUEUE_LEN]) -> usize {
        if self.tlb_all {
            out[0] = MmuextOp {
                cmd: pv::MMUEXT_TLB_FLUSH_LOCAL,
                ..MmuextOp::default()
            };
            return 1;
        }
        for (o, va) in out.iter_mut().zip(&self.tlb[..self.ntlb]) {
            *o = MmuextOp {
                cmd: pv::MMUEXT_INVLPG_LOCAL,
                pad: 0,
                arg1: *va,
                arg2: 0,
            };
        }
        self.ntlb
    }
}

struct Queues([UnsafeCell<Queue>; QUEUES]);

// SAFETY: queue `i` is only touched by vCPU `i`, with events masked (see
// `with_queue`), so never by two contexts at once.
unsafe impl Sync for Queues {}

static QUEUE: Queues = Queues([const { UnsafeCell::new(Queue::EMPTY) }; QUEUES]);
static LAZY: [AtomicBool; QUEUES] = [const { AtomicBool::new(false) }; QUEUES];

/// Runs `f` on this vCPU's queue with events masked, or returns `None`
/// for a vCPU without one.
fn with_queue<R>(f: impl FnOnce(&mut Queue) -> R) -> Option<R> {
    let me = crate::percpu::current() as usize;
    if me >= QUEUES {
        return None;
    }
    let flags = super::irq::save_and_mask();
    // SAFETY: queue `me` belongs to this vCPU and events are masked, so
    // nothing else runs on it meanwhile (see `Queues`).
    let r = f(unsafe { &mut *QUEUE.0[me].get() });
    super::irq::restore(flags);
    Some(r)
}

fn send(q: &mut Queue) {
    send_with(&XEN, q, report)
}

/// Sends the queue through `xen`: the updates and the TLB flushes after
/// them in one `multicall` (or the one hypercall there is work for). A
/// refused update is handed to `refused` (naming the entry as the kernel
/// wrote it) and skipped, the rest are sent, and the flushes repeated
/// after them.
fn send_with<H: Hypercall>(xen: &Xen<H>, q: &mut Queue, mut refused: impl FnMut(EntryError)) {
    let mut ops = [MmuextOp::default(); TLB_QUEUE_LEN];
    let nops = q.tlb_ops(&mut ops);
    q.ntlb = 0;
    q.tlb_all = false;
    let mut start = 0;
    if nops > 0 && q.len > 0 {
        let mut done: u32 = 0;
        let mut calls = [
            MulticallEntry {
                op: u64::from(pv::MMU_UPDATE),
                result: 0,
                args: [
                    q.reqs.as_ptr() as u64,
                    q.len as u64,
                    &mut done as *mut u32 as u64,
                    u64::from(DOMID_SELF),
                    0,
                    0,
                ],
            },
            MulticallEntry {
                op: u64::from(pv::MMUEXT_OP),
                result: 0,
                args: [
                    ops.as_ptr() as u64,
                    nops as u64,
                    0,
                    u64::from(DOMID_SELF),
                    0,
                    0,
                ],
            },
        ];
        let ok = xen.multicall(&mut calls).is_ok();
        let flushed = ok && calls[1].result >= 0;
        match XenError::check(calls[0].result) {
            Ok(_) if ok => start = q.len,
            Ok(_) => {}
            Err(error) => {
                let bad = done as usize;
                if bad < q.len {
                    let (entry, value) = q.what[bad];
                    refused(EntryError {
                        entry,
                        value,
                        error: EntryErrorKind::Refused(error),
                    });
                }
                start = bad + 1;
            }
        }
        if flushed && start >= q.len {
            q.len = 0;
            return;
        }
    }
    while start < q.len {
        match xen.mmu_update(&q.reqs[start..q.len]) {
            Ok(()) => break,
            Err(e) => {
                let bad = start + e.done;
                if bad < q.len {
                    let (entry, value) = q.what[bad];
                    refused(EntryError {
                        entry,
                        value,
                        error: EntryErrorKind::Refused(e.error),
                    });
                }
                // Skip the refused request; send the rest.
                start = bad + 1;
            }
        }
    }
    q.len = 0;
    if nops > 0 {
        if let Err(e) = xen.mmuext(&ops[..nops]) {
            warn(format_args!("xen-pv: queued TLB flush failed: {e}"));
        }
    }
}

fn lazy_here() -> bool {
    let me = crate::percpu::current() as usize;
    me < QUEUES && LAZY[me].load(Ordering::Relaxed)
}

/// Sends this vCPU's queued updates and TLB flushes.
pub fn flush_queue() {
    let _ = with_queue(|q| {
        if q.has_work() {
            send(q)
        }
    });
}

/// Queues a TLB flush of `va` (or of everything) behind the queued
/// updates, in lazy mode; false if this vCPU has no queue or is not lazy.
fn queue_flush(va: Option<u64>) -> bool {
    if !lazy_here() {
        return false;
    }
    with_queue(|q| match va {
        Some(va) => q.flush_page(va),
        None => {
            q.tlb_all = true;
            q.ntlb = 0;
        }
    })
    .is_some()
}

static TABLES: [AtomicU64; (MAX_PFNS / 64) as usize] =
    [const { AtomicU64::new(0) }; (MAX_PFNS / 64) as usize];

/// Records `pfn` as a page-table frame; false if beyond the record.
pub fn mark_table(pfn: u64) -> bool {
    if pfn >= MAX_PFNS {
        return false;
    }
    TABLES[(pfn / 64) as usize].fetch_or(1 << (pfn % 64), Ordering::Relaxed);
    true
}

fn unmark_table(pfn: u64) {
    if pfn < MAX_PFNS {
        TABLES[(pfn / 64) as usize].fetch_and(!(1 << (pfn % 64)), Ordering::Relaxed);
    }
}

/// Whether `pfn` is a recorded page-table frame.
pub fn is_table(pfn: u64) -> bool {
    pfn < MAX_PFNS && TABLES[(pfn / 64) as usize].load(Ordering::Relaxed) & (1 << (pfn % 64)) != 0
}

static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);
/// The top table each vCPU runs on (pseudo-physical frame), by vCPU id.
static CURRENT_ROOT: [AtomicU64; crate::percpu::MAX_VCPUS] =
    [const { AtomicU64::new(0) }; crate::percpu::MAX_VCPUS];

fn root_slot() -> &'static AtomicU64 {
    let me = (crate::percpu::current() as usize).min(crate::percpu::MAX_VCPUS - 1);
    &CURRENT_ROOT[me]
}

/// Records that vCPU `vcpu` starts on the top table at `root_pfn` (the
/// `ctrlreg[3]` of its start context).
pub fn set_start_root(vcpu: u32, root_pfn: u64) {
    if let Some(i) = crate::percpu::slot(vcpu) {
        CURRENT_ROOT[i].store(root_pfn, Ordering::Relaxed);
    }
}
static BOOT_ROOT: AtomicU64 = AtomicU64::new(u64::MAX);
static PINNED: [AtomicU64; MAX_PINNED] = [const { AtomicU64::new(u64::MAX) }; MAX_PINNED];

/// Records where the boot tables are and where the direct map is.
pub fn init(boot_root_pfn: u64, phys_offset: u64) {
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
    CURRENT_ROOT[0].store(boot_root_pfn, Ordering::Relaxed);
    BOOT_ROOT.store(boot_root_pfn, Ordering::Relaxed);
    PINNED[0].store(boot_root_pfn, Ordering::Relaxed);
}

fn is_pinned(root: u64) -> bool {
    PINNED.iter().any(|p| p.load(Ordering::Relaxed) == root)
}

fn set_pinned(root: u64, on: bool) -> bool {
    let (from, to) = if on {
        (u64::MAX, root)
    } else {
        (root, u64::MAX)
    };
    PINNED.iter().any(|p| {
        p.compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    })
}

fn va_of(pfn: u64) -> u64 {
    (pfn << 12).wrapping_add(PHYS_OFFSET.load(Ordering::Relaxed))
}

fn pfn_of_va(va: u64) -> u64 {
    va.wrapping_sub(PHYS_OFFSET.load(Ordering::Relaxed)) >> 12
}

/// The request that writes `value` (pseudo-physical) at `entry`.
fn request(level: PtLevel, entry: u64, value: u64) -> Result<MmuUpdate, EntryErrorKind> {
    let mfn = p2m::mfn(pfn_of_va(entry)).ok_or(EntryErrorKind::EntryOutsideDomain)?;
    let mut val = p2m::to_machine(value).ok_or(EntryErrorKind::TargetOutsideDomain)?;
    let leaf = level == PtLevel::Pte || value & pte::HUGE != 0;
    if leaf && value & pte::PRESENT != 0 && is_table((value & pte::ADDR_MASK) >> 12) {
        // A page table is never writable through a mapping (see the docs).
        val &= !pte::WRITABLE;
    }
    Ok(MmuUpdate {
        ptr: (mfn << 12) | (entry & 0xff8) | MMU_NORMAL_PT_UPDATE,
        val,
    })
}

/// The PTE that maps `va` in this vCPU's current tree, by virtual address
/// (through the direct map), if every level down to it is present.
fn current_pte_of(va: u64) -> Option<u64> {
    let mut table = root_slot().load(Ordering::Relaxed);
    for shift in [39u32, 30, 21] {
        let i = ((va >> shift) & 0x1ff) as usize;
        // SAFETY: `table` is a table of the loaded tree, read through the
        // direct map (module docs); entry i is inside it.
        let e = unsafe { (va_of(table) as *const u64).add(i).read_volatile() };
        if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
            return None;
        }
        table = p2m::pfn((e & pte::ADDR_MASK) >> 12)?;
    }
    Some(va_of(table) + ((va >> 12) & 0x1ff) * 8)
}

/// A PTE update and the flush of its page in one hypercall:
/// `update_va_mapping` when `entry` is the current tree's PTE for `va`,
/// else `mmu_update` and `INVLPG` in one multicall; queued in lazy mode.
///
/// # Safety
/// As [`set_entry`], for the PTE at `entry`, which maps `va`.
pub unsafe fn set_pte_flush(entry: u64, value: u64, va: u64) -> Result<(), EntryError> {
    let err = |error| EntryError {
        entry,
        value,
        error,
    };
    if lazy_here() {
        // SAFETY: this function's own contract, passed on.
        unsafe { set_entry(PtLevel::Pte, entry, value) }?;
        if queue_flush(Some(va)) {
            return Ok(());
        }
    }
    let req = request(PtLevel::Pte, entry, value).map_err(err)?;
    if current_pte_of(va) == Some(entry) {
        return XEN
            .update_va_mapping(va, req.val, pv::UVMF_INVLPG | pv::UVMF_LOCAL)
            .map_err(|e| err(EntryErrorKind::Refused(e)));
    }
    let reqs = [req];
    let op = [MmuextOp {
        cmd: pv::MMUEXT_INVLPG_LOCAL,
        pad: 0,
        arg1: va,
        arg2: 0,
    }];
    let mut calls = [
        MulticallEntry {
            op: u64::from(pv::MMU_UPDATE),
            result: 0,
            args: [reqs.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0, 0],
        },
        MulticallEntry {
            op: u64::from(pv::MMUEXT_OP),
            result: 0,
            args: [op.as_ptr() as u64, 1, 0, u64::from(DOMID_SELF), 0, 0],
        },
    ];
    XEN.multicall(&mut calls)
        .and_then(|()| XenError::check(calls[0].result))
        .map_err(|e| err(EntryErrorKind::Refused(e)))?;
    if let Err(e) = XenError::check(calls[1].result) {
        warn(format_args!("xen-pv: INVLPG of {va:#x} failed: {e}"));
    }
    Ok(())
}

/// Writes one entry now or into the lazy queue.
///
/// # Safety
/// As `MmuOps::set_entry`: `entry` is the address of a live page-table
/// entry at `level` and `value` maps only what the kernel may map there;
/// the write remaps memory for every CPU using that tree.
pub unsafe fn set_entry(level: PtLevel, entry: u64, value: u64) -> Result<(), EntryError> {
    let req = request(level, entry, value).map_err(|error| EntryError {
        entry,
        value,
        error,
    })?;
    if lazy_here() {
        let queued = with_queue(|q| {
            if q.len == QUEUE_LEN {
                send(q);
            }
            q.reqs[q.len] = req;
            q.what[q.len] = (entry, value);
            q.len += 1;
        });
        if queued.is_some() {
            return Ok(());
        }
    }
    XEN.mmu_update(&[req]).map_err(|e| EntryError {
        entry,
        value,
        error: EntryErrorKind::Refused(e.error),
    })
}

fn mmuext1(cmd: u32, arg1: u64, arg2: u64) -> Result<(), XenError> {
    XEN.mmuext(&[MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2,
    }])
}

/// Write-protects the mapping of `pfn` in the current address space.
fn protect_calls(pfn: u64, writable: bool) -> Option<MulticallEntry> {
    let mfn = p2m::mfn(pfn)?;
    let mut val = (mfn << 12) | pte::PRESENT | pte::ACCESSED | pte::DIRTY;
    if writable {
        val |= pte::WRITABLE;
    }
    Some(MulticallEntry {
        op: u64::from(pv::UPDATE_VA_MAPPING),
        result: 0,
        args: [va_of(pfn), val, 0, 0, 0, 0],
    })
}

/// Sends a batch of `update_va_mapping`s; the first failure is returned.
fn send_calls(calls: &mut [MulticallEntry]) -> Result<(), XenError> {
    if calls.is_empty() {
        return Ok(());
    }
    XEN.multicall(calls)?;
    for c in calls.iter() {
        XenError::check(c.result)?;
    }
    Ok(())
}

/// Walks the tree under `root` (lower half only: the upper half is
/// Xen's), calling `f(level_of_table, pfn_of_table)` for every table.
fn walk(
    root: u64,
    f: &mut impl FnMut(PtLevel, u64) -> Result<(), XenError>,
) -> Result<(), XenError> {
    fn down(
        level: PtLevel,
        pfn: u64,
        f: &mut impl FnMut(PtLevel, u64) -> Result<(), XenError>,
    ) -> Result<(), XenError> {
        f(level, pfn)?;
        let child = match level {
            PtLevel::P4d => PtLevel::Pud,
            PtLevel::Pud => PtLevel::Pmd,
            PtLevel::Pmd => PtLevel::Pte,
            PtLevel::Pte => return Ok(()),
        };
        let n = if level == PtLevel::P4d { 256 } else { 512 };
        let table = va_of(pfn) as *const u64;
        for i in 0..n {
            // SAFETY: `table` is a table frame of this domain, reachable
            // through the direct map (module docs); entry i is inside it.
            let e = unsafe { table.add(i).read_volatile() };
            if e & pte::PRESENT == 0 || e & pte::HUGE != 0 {
                continue;
            }
            let Some(p) = p2m::pfn((e & pte::ADDR_MASK) >> 12) else {
                continue;
            };
            down(child, p, f)?;
        }
        Ok(())
    }
    down(PtLevel::P4d, root, f)
}

/// Records every table of the tree under `root` (Xen's boot tables).
pub fn mark_tree(root: u64) -> Result<(), XenError> {
    walk(root, &mut |_, pfn| {
        if mark_table(pfn) {
            Ok(())
        } else {
            Err(XenError {
                errno: crate::abi::errno::ERANGE,
            })
        }
    })
}

/// Makes the tree under `root` acceptable to Xen and pins it.
fn pin_tree(root: u64) -> Result<(), XenError> {
    flush_queue();
    // 1. Record every table of the new tree.
    mark_tree(root)?;
    // 2. No leaf may map a table writable.
    let mut fixes: [MmuUpdate; 64] = [MmuUpdate::default(); 64];
    let mut n = 0;
    walk(root, &mut |level, pfn| {
        if level != PtLevel::Pte {
            return Ok(());
        }
        let table = va_of(pfn) as *const u64;
        let mfn = p2m::mfn(pfn).unwrap_or(0);
        for i in 0..512 {
            // SAFETY: as in `walk`.
            let e = unsafe { table.add(i).read_volatile() };
            if e & pte::PRESENT == 0 || e & pte::WRITABLE == 0 {
                continue;
            }
            if !p2m::pfn((e & pte::ADDR_MASK) >> 12).is_some_and(is_table) {
                continue;
            }
            fixes[n] = MmuUpdate {
                ptr: (mfn << 12) | (i as u64 * 8) | MMU_NORMAL_PT_UPDATE,
                val: e & !pte::WRITABLE,
            };
            n += 1;
            if n == fixes.len() {
                XEN.mmu_update(&fixes[..n]).map_err(|e| e.error)?;
                n = 0;
            }
        }
        Ok(())
    })?;
    XEN.mmu_update(&fixes[..n]).map_err(|e| e.error)?;
    // 3. Every table read-only in the current address space.
    let mut calls = [MulticallEntry::default(); 32];
    let mut n = 0;
    walk(root, &mut |_, pfn| {
        if let Some(c) = protect_calls(pfn, false) {
            calls[n] = c;
            n += 1;
        }
        if n == calls.len() {
            send_calls(&mut calls[..n])?;
            n = 0;
        }
        Ok(())
    })?;
    send_calls(&mut calls[..n])?;
    mmuext1(pv::MMUEXT_TLB_FLUSH_LOCAL, 0, 0)?;
    // 4. Pin.
    let mfn = p2m::mfn(root).ok_or(XenError {
        errno: crate::abi::errno::EINVAL,
    })?;
    mmuext1(pv::MMUEXT_PIN_L4_TABLE, mfn, 0)?;
    set_pinned(root, true);
    Ok(())
}

fn load_root(root: u64) -> Result<(), XenError> {
    flush_queue();
    if !is_pinned(root) {
        pin_tree(root)?;
    }
    let mfn = p2m::mfn(root).ok_or(XenError {
        errno: crate::abi::errno::EINVAL,
    })?;
    // Kernel and user mode on the same tables: the core has one CR3, and a
    // 64-bit PV guest needs a user base pointer before it ever enters
    // user mode. One hypercall for both.
    XEN.mmuext(&[
        MmuextOp {
            cmd: pv::MMUEXT_NEW_BASEPTR,
            pad: 0,
            arg1: mfn,
            arg2: 0,
        },
        MmuextOp {
            cmd: pv::MMUEXT_NEW_USER_BASEPTR,
            pad: 0,
            arg1: mfn,
            arg2: 0,
        },
    ])?;
    let old = root_slot().swap(root, Ordering::Relaxed);
    if old != root && old == BOOT_ROOT.load(Ordering::Relaxed) {
        // Xen's boot tables are left for good: unpin them, so their
        // frames stop counting as tables in Xen's eyes.
        if let Some(m) = p2m::mfn(old) {
            match mmuext1(pv::MMUEXT_UNPIN_TABLE, m, 0) {
                Ok(()) => {
                    set_pinned(old, false);
                    BOOT_ROOT.store(u64::MAX, Ordering::Relaxed);
                }
                Err(e) => warn(format_args!("xen-pv: unpinning the boot page tables: {e}")),
            }
        }
    }
    Ok(())
}

fn vcpu_cr2() -> Option<pvops_core::shmem::ShPtr<u64>> {
    let vi = crate::shared::vcpu_info_ptr(crate::percpu::current())?;
    Some(vi.field::<u64>(core::mem::offset_of!(
        crate::abi::shared::VcpuInfo,
        arch_cr2
    )))
}

impl MmuOps for XenPv {
    fn read_cr2() -> u64 {
        vcpu_cr2().map_or(0, |p| p.read())
    }

    unsafe fn write_cr2(value: u64) {
        if let Some(p) = vcpu_cr2() {
            p.write(value)
        }
    }

    fn read_cr3() -> u64 {
        root_slot().load(Ordering::Relaxed) << 12
    }

    unsafe fn write_cr3(value: u64) {
        let root = (value & pte::ADDR_MASK) >> 12;
        if let Err(e) = load_root(root) {
            crate::warn::error(format_args!(
                "xen-pv: loading page tables at {:#x} failed: {e}",
                root << 12
            ));
        }
    }

    unsafe fn set_entry(level: PtLevel, entry: *mut u64, value: u64) {
        // SAFETY: the op's contract, which the caller upholds.
        if let Err(e) = unsafe { set_entry(level, entry as u64, value) } {
            report(e);
        }
    }

    unsafe fn try_set_entry(
        level: PtLevel,
        entry: *mut u64,
        value: u64,
    ) -> Result<(), EntryRefused> {
        if lazy_here() {
            // A refusal must come back to this caller, not to a later flush.
            flush_queue();
        }
        // SAFETY: the op's contract, which the caller upholds.
        unsafe { set_entry(level, entry as u64, value) }.map_err(|e| {
            ERRORS.fetch_add(1, Ordering::Relaxed);
            e.into()
        })
    }

    unsafe fn read_entry(_level: PtLevel, entry: *const u64) -> u64 {
        if lazy_here() {
            flush_queue();
        }
        // SAFETY: the caller guarantees `entry` is a live entry of a table
        // mapped (read-only, at least) through the direct map.
        p2m::to_pseudo(unsafe { entry.read_volatile() })
    }

    fn flush_tlb_single(addr: VirtAddr) {
        if queue_flush(Some(addr.as_u64())) {
            return;
        }
        let _ = mmuext1(pv::MMUEXT_INVLPG_LOCAL, addr.as_u64(), 0);
    }

    fn flush_tlb_local() {
        if queue_flush(None) {
            return;
        }
        let _ = mmuext1(pv::MMUEXT_TLB_FLUSH_LOCAL, 0, 0);
    }

    unsafe fn set_pte_flush(entry: *mut u64, value: u64, addr: VirtAddr) {
        // SAFETY: the op's contract, which the caller upholds.
        if let Err(e) = unsafe { set_pte_flush(entry as u64, value, addr.as_u64()) } {
            report(e);
        }
    }

    fn flush_tlb_others(cpus: &CpuMask, range: TlbRange) {
        flush_queue();
        let mask = cpus.words().as_ptr() as u64;
        let r = match range {
            TlbRange::Pages { start, pages } if pages <= 32 => (0..pages).try_for_each(|i| {
                mmuext1(pv::MMUEXT_INVLPG_MULTI, start.as_u64() + (i << 12), mask)
            }),
            _ => mmuext1(pv::MMUEXT_TLB_FLUSH_MULTI, 0, mask),
        };
        if let Err(e) = r {
            warn(format_args!("xen-pv: remote TLB flush failed: {e}"));
        }
    }

    fn pt_alloc(_level: PtLevel, pfn: u64) {
        if !mark_table(pfn) {
            warn(format_args!(
                "xen-pv: page table at {:#x} beyond the {} MiB this backend tracks",
                pfn << 12,
                MAX_PFNS >> 8
            ));
        }
        let r = protect_calls(pfn, false)
            .ok_or(XenError {
                errno: crate::abi::errno::EINVAL,
            })
            .and_then(|c| {
                XEN.update_va_mapping(c.args[0], c.args[1], pv::UVMF_INVLPG | pv::UVMF_LOCAL)
            });
        if let Err(e) = r {
            warn(format_args!(
                "xen-pv: write-protecting page table {:#x}: {e}",
                pfn << 12
            ));
        }
    }

    fn pt_release(_level: PtLevel, pfn: u64) {
        flush_queue();
        if is_pinned(pfn) {
            if let Some(m) = p2m::mfn(pfn) {
                if mmuext1(pv::MMUEXT_UNPIN_TABLE, m, 0).is_ok() {
                    set_pinned(pfn, false);
                }
            }
        }
        unmark_table(pfn);
        if let Some(c) = protect_calls(pfn, true) {
            let _ = XEN.update_va_mapping(c.args[0], c.args[1], pv::UVMF_INVLPG | pv::UVMF_LOCAL);
        }
    }

    fn enter_lazy() {
        let me = crate::percpu::current() as usize;
        if me < QUEUES {
            LAZY[me].store(true, Ordering::Relaxed);
        }
    }

    fn leave_lazy() {
        flush_queue();
        let me = crate::percpu::current() as usize;
        if me < QUEUES {
            LAZY[me].store(false, Ordering::Relaxed);
        }
    }

    fn flush_lazy() {
        flush_queue();
    }

    fn large_pages() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeXen;
    use std::vec::Vec;

    fn queue(entries: &[(u64, u64)]) -> Queue {
        let mut q = Queue::EMPTY;
        for (i, &(entry, value)) in entries.iter().enumerate() {
            q.reqs[i] = MmuUpdate {
                ptr: entry,
                val: value,
            };
            q.what[i] = (entry, value);
        }
        q.len = entries.len();
        q
    }

    /// Xen refuses the third of five requests: the error names that entry
    /// as the kernel wrote it, and the two after it are still sent.
    #[test]
    fn a_refused_request_is_named_and_the_rest_sent() {
        let fake = FakeXen::new(|op, args| {
            assert_eq!(op, pv::MMU_UPDATE);
            let first = args[0] as *const MmuUpdate;
            // SAFETY: the batch and the done counter live in the caller's
            // frame for the call (the issuer's contract).
            let ptr = unsafe { (*first).ptr };
            if ptr == 0x1000 {
                // SAFETY: as above; args[2] is the `done` out-pointer.
                unsafe { *(args[2] as *mut u32) = 2 };
                return -22;
            }
            0
        });
        let mut q = queue(&[(0x0, 1), (0x8, 2), (0x10, 3), (0x18, 4), (0x20, 5)]);
        q.reqs[0].ptr = 0x1000; // the batch Xen will refuse at index 2
        let mut refused = Vec::new();
        let xen = Xen(fake);
        send_with(&xen, &mut q, |e| refused.push(e));
        let fake = xen.0;
        assert_eq!(q.len, 0);
        assert_eq!(refused.len(), 1);
        assert_eq!((refused[0].entry, refused[0].value), (0x10, 3));
        assert!(matches!(refused[0].error, EntryErrorKind::Refused(e) if e.errno == 22));
        let calls = fake.calls.borrow();
        assert_eq!(
            calls.len(),
            2,
            "the whole batch, then what follows the refused one"
        );
        assert_eq!(calls[0].1[1], 5);
        assert_eq!(calls[1].1[1], 2);
    }

    /// Updates and the TLB flushes behind them leave in one multicall; more
    /// page flushes than a batch keeps become one local flush.
    #[test]
    fn updates_and_flushes_leave_in_one_multicall() {
        let fake = FakeXen::new(|op, args| {
            assert_eq!(op, pv::MULTICALL);
            assert_eq!(args[1], 2);
            let calls = args[0] as *mut MulticallEntry;
            // SAFETY: the batch lives in the caller's frame for the call.
            let (mmu, ext) = unsafe { (&mut *calls, &mut *calls.add(1)) };
            assert_eq!(mmu.op, u64::from(pv::MMU_UPDATE));
            assert_eq!(mmu.args[1], 3);
            assert_eq!(ext.op, u64::from(pv::MMUEXT_OP));
            assert_eq!(ext.args[1], 1);
            // SAFETY: as above, one mmuext_op.
            let flush = unsafe { *(ext.args[0] as *const MmuextOp) };
            assert_eq!(flush.cmd, pv::MMUEXT_TLB_FLUSH_LOCAL);
            mmu.result = 0;
            ext.result = 0;
            0
        });
        let mut q = queue(&[(0x0, 1), (0x8, 2), (0x10, 3)]);
        for i in 0..=TLB_QUEUE_LEN as u64 {
            q.flush_page(i << 12);
        }
        assert!(q.tlb_all, "the 17th page flush becomes a full flush");
        let xen = Xen(fake);
        send_with(&xen, &mut q, |e| panic!("nothing refused: {e}"));
        assert!(!q.has_work());
        assert_eq!(xen.0.calls.borrow().len(), 1, "one hypercall");
    }

    #[test]
    fn requests_translate_and_keep_tables_read_only() {
        let _g = p2m::tests::LOCK.lock().unwrap_or_else(|e| e.into_inner());
        static LIST: [u64; 8] = [0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57];
        // SAFETY: LIST is a static of 8 entries.
        unsafe { p2m::set_list(LIST.as_ptr() as u64, 8) };
        PHYS_OFFSET.store(0, Ordering::Relaxed);
        // The entry at 0x3010 (pfn 3) maps pfn 5, writable.
        let r = request(PtLevel::Pte, 0x3010, 0x5000 | 0x3).expect("in the domain");
        assert_eq!(r.ptr, (0x53 << 12) | 0x10 | MMU_NORMAL_PT_UPDATE);
        assert_eq!(r.val, (0x55 << 12) | 0x3);
        // Once pfn 5 is a page table, the same mapping loses RW.
        mark_table(5);
        let r = request(PtLevel::Pte, 0x3010, 0x5000 | 0x3).expect("in the domain");
        assert_eq!(r.val, (0x55 << 12) | 0x1);
        // A PMD pointing at the table keeps RW (not a leaf).
        let r = request(PtLevel::Pmd, 0x3010, 0x5000 | 0x3).expect("in the domain");
        assert_eq!(r.val, (0x55 << 12) | 0x3);
        unmark_table(5);
        assert_eq!(
            request(PtLevel::Pte, 0x9000, 0x1003),
            Err(EntryErrorKind::EntryOutsideDomain)
        );
        assert_eq!(
            request(PtLevel::Pte, 0x3000, 0x9003),
            Err(EntryErrorKind::TargetOutsideDomain)
        );
        // Not present: written as is.
        assert_eq!(
            request(PtLevel::Pte, 0x3000, 0x9002).map(|r| r.val),
            Ok(0x9002)
        );
    }

    #[test]
    fn refusals_convert_to_the_core_error() {
        let e = EntryError {
            entry: 0x3010,
            value: 0x5003,
            error: EntryErrorKind::Refused(XenError { errno: 22 }),
        };
        let core: EntryRefused = e.into();
        assert_eq!((core.entry, core.value, core.code), (0x3010, 0x5003, -22));
        assert!(std::format!("{core}").contains("0x3010"), "{core}");
    }
}
