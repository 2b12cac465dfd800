//! Cross-CPU requests that pvops itself sends: remote TLB flushes by IPI.
//!
//! Backends without a hypervisor-side remote flush (native, and KVM when PV
//! TLB flush is off) use [`flush_tlb_by_ipi`]. The kernel routes
//! [`SERVICE_VECTOR`] to [`service_interrupt`] in its IDT; that is the only
//! vector pvops claims. A backend whose hypervisor signals the guest
//! through an interrupt vector of its choosing (Xen's event upcall) uses
//! this vector too, and registers its handler with [`set_upcall_handler`].

use crate::cpu::current_cpu;
use crate::irq::{self, CpuMask, IpiTarget, MAX_CPUS};
use crate::mmu::{self, TlbRange};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use x86_64::VirtAddr;

/// The interrupt vector pvops sends its own requests on. The kernel's IDT
/// entry for it must call [`service_interrupt`].
pub const SERVICE_VECTOR: u8 = 0xf1;

/// Above this many pages a ranged flush becomes a full local flush.
const FULL_FLUSH_PAGES: u64 = 32;

/// One request at a time: the sender holds `BUSY` until all targets acked.
static BUSY: AtomicBool = AtomicBool::new(false);
static REQ_START: AtomicU64 = AtomicU64::new(0);
/// 0 means "flush everything".
static REQ_PAGES: AtomicU64 = AtomicU64::new(0);
static PENDING: AtomicU32 = AtomicU32::new(0);
/// The CPUs (bit = platform CPU number) that have yet to serve the
/// current request: [`service_interrupt`] may also run for other reasons
/// (a backend's upcall), and must then not count as a target's answer.
static TARGETS: [AtomicU64; MAX_CPUS / 64] = [const { AtomicU64::new(0) }; MAX_CPUS / 64];
/// A backend's upcall handler (a `fn()`), or null.
static UPCALL: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// Counts requests served, for tests and statistics.
static SERVED: AtomicU64 = AtomicU64::new(0);

fn flush_here(range: TlbRange) {
    match range {
        TlbRange::Pages { start, pages } if pages <= FULL_FLUSH_PAGES => {
            for i in 0..pages {
                mmu::flush_tlb_single(start + i * 4096);
            }
        }
        _ => mmu::flush_tlb_local(),
    }
}

/// Flushes `range` on every CPU in `cpus`: locally if this CPU is a member,
/// by an IPI on [`SERVICE_VECTOR`] to each other member, returning once all
/// have acknowledged. Must be called with interrupts enabled when other CPUs
/// are targeted (two CPUs flushing each other at once would otherwise wait
/// forever for each other's acknowledgement).
pub fn flush_tlb_by_ipi(cpus: &CpuMask, range: TlbRange) {
    let me = current_cpu();
    let mut others = *cpus;
    others.remove(me);
    if cpus.contains(me) {
        flush_here(range);
    }
    let count = others.iter().count() as u32;
    if count == 0 {
        return;
    }
    while BUSY
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let (start, pages) = match range {
        TlbRange::All => (0, 0),
        TlbRange::Pages { start, pages } => (start.as_u64(), pages),
    };
    REQ_START.store(start, Ordering::Relaxed);
    REQ_PAGES.store(pages, Ordering::Relaxed);
    for (t, w) in TARGETS.iter().zip(others.words()) {
        t.store(*w, Ordering::Relaxed);
    }
    PENDING.store(count, Ordering::Release);
    irq::send_ipi(IpiTarget::Mask(others), SERVICE_VECTOR);
    while PENDING.load(Ordering::Acquire) != 0 {
        core::hint::spin_loop();
    }
    BUSY.store(false, Ordering::Release);
}

/// Registers `handler` to run first in every [`service_interrupt`]: for a
/// backend whose hypervisor delivers its upcall on [`SERVICE_VECTOR`]
/// (Xen's event channels), which demultiplexes its events there. One
/// handler at a time; a later call replaces it.
pub fn set_upcall_handler(handler: fn()) {
    UPCALL.store(handler as *mut (), Ordering::Release);
}

/// Takes this CPU's bit out of the current request's targets; whether it
/// was there.
fn take_target() -> bool {
    let me = current_cpu().0 as usize;
    if me >= MAX_CPUS {
        return false;
    }
    let bit = 1u64 << (me % 64);
    TARGETS[me / 64].fetch_and(!bit, Ordering::AcqRel) & bit != 0
}

/// Serves pvops requests sent to this CPU; the kernel calls it from its
/// [`SERVICE_VECTOR`] handler. Runs the backend's upcall handler first, if
/// one is registered. Sends the EOI itself.
pub fn service_interrupt() {
    let upcall = UPCALL.load(Ordering::Acquire);
    if !upcall.is_null() {
        // SAFETY: UPCALL only ever holds null or a `fn()` stored by
        // `set_upcall_handler`; function and data pointers have the same
        // size and representation on x86_64.
        let f: fn() = unsafe { core::mem::transmute::<*mut (), fn()>(upcall) };
        f();
    }
    if PENDING.load(Ordering::Acquire) != 0 && take_target() {
        let start = REQ_START.load(Ordering::Relaxed);
        let pages = REQ_PAGES.load(Ordering::Relaxed);
        let range = if pages == 0 {
            TlbRange::All
        } else {
            TlbRange::Pages {
                start: VirtAddr::new_truncate(start),
                pages,
            }
        };
        flush_here(range);
        SERVED.fetch_add(1, Ordering::Relaxed);
        PENDING.fetch_sub(1, Ordering::AcqRel);
    }
    irq::eoi();
}

/// How many remote requests this machine has served since boot.
pub fn served() -> u64 {
    SERVED.load(Ordering::Relaxed)
}
