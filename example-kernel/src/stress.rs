//! SMP stress (`pvops.stress=<ms>`): every CPU hammers the PV spinlock
//! (wait/kick), the boot CPU ping-pongs IPIs with every other CPU, and
//! page remaps race remote TLB flushes against readers on every other CPU,
//! each for a bounded time. The kernel checks its own invariants — mutual
//! exclusion, no lost wake-up (every CPU finishes in time), every IPI
//! answered, no stale translation read after a flush was acknowledged — and
//! reports counts on a `pvops: info: stress` line.

// Failure reasons are fixed-size buffers (no heap), as in selftest.rs.
#![allow(clippy::result_large_err)]

use crate::console::Message;
use crate::interrupts::TEST_IPI_VECTOR;
use crate::paging::{AddressSpace, FrameAllocator, PAGE, TEST_VA};
use crate::smp;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use pvops::irq::{self, CpuMask, IpiTarget};
use pvops::lock::SpinLock;
use pvops::mmu::{self, TlbRange};
use pvops::{cpu, time};
use x86_64::VirtAddr;

/// How long each CPU may take to notice the stop flag and finish, beyond
/// the stress time itself (emulated CPUs are slow).
const FINISH_LIMIT_NS: u64 = 10_000_000_000;
/// How long one IPI may take to be answered.
const IPI_LIMIT_NS: u64 = 2_000_000_000;

static STOP: AtomicBool = AtomicBool::new(false);

fn fail(args: core::fmt::Arguments<'_>) -> Message {
    let mut m = Message::new();
    let _ = core::fmt::Write::write_fmt(&mut m, args);
    m
}

/// Runs `work` on every other CPU and on this one until `ns` passed, then
/// stops them all; `Err` names a CPU that never finished.
fn on_all_cpus(work: fn(u64) -> u64, ns: u64) -> Result<[u64; smp::MAX_SMP], Message> {
    STOP.store(false, Ordering::Release);
    for i in 1..smp::online() {
        smp::post(i, work, i as u64);
    }
    let t = time::sched_clock();
    let mut counts = [0u64; smp::MAX_SMP];
    // The boot CPU works in slices so it can watch the clock.
    while time::sched_clock() - t < ns {
        counts[0] += work(u64::MAX);
    }
    STOP.store(true, Ordering::Release);
    for (i, c) in counts.iter_mut().enumerate().take(smp::online()).skip(1) {
        *c = smp::wait_done(i, FINISH_LIMIT_NS)
            .ok_or_else(|| fail(format_args!("cpu index {i} never finished (lost wake-up?)")))?;
    }
    Ok(counts)
}

// ---- lock ----

struct Guarded {
    owner: u32,
    count: u64,
}

static LOCK: SpinLock<Guarded> = SpinLock::new(Guarded {
    owner: u32::MAX,
    count: 0,
});
static LOCK_VIOLATIONS: AtomicU64 = AtomicU64::new(0);

/// `arg` is the kernel CPU index, or `u64::MAX` for one slice on the boot
/// CPU. Returns acquisitions.
fn lock_worker(arg: u64) -> u64 {
    let me = if arg == u64::MAX { 0 } else { arg as u32 };
    let mut n = 0;
    loop {
        {
            let mut g = LOCK.lock();
            if g.owner != u32::MAX {
                LOCK_VIOLATIONS.fetch_add(1, Ordering::Relaxed);
            }
            g.owner = me;
            g.count += 1;
            // Hold it a while so others spin, then sleep in lock.wait.
            for _ in 0..64 {
                core::hint::spin_loop();
            }
            if g.owner != me {
                LOCK_VIOLATIONS.fetch_add(1, Ordering::Relaxed);
            }
            g.owner = u32::MAX;
        }
        n += 1;
        if arg == u64::MAX && n == 32 || STOP.load(Ordering::Acquire) {
            return n;
        }
    }
}

/// Mutual exclusion and no lost wake-up under contention from every CPU.
pub fn lock(ns: u64) -> Result<(u64, u32), Message> {
    let before = LOCK.lock().count;
    let waits = LOCK.raw().slow_waits();
    let counts = on_all_cpus(lock_worker, ns)?;
    let total: u64 = counts.iter().sum();
    let counted = LOCK.lock().count - before;
    if counted != total {
        return Err(fail(format_args!(
            "{counted} increments under the lock, {total} acquisitions: the lock let two CPUs in"
        )));
    }
    let v = LOCK_VIOLATIONS.load(Ordering::Relaxed);
    if v != 0 {
        return Err(fail(format_args!(
            "{v} times a CPU found the lock owned by another"
        )));
    }
    if let Some(i) = counts.iter().take(smp::online()).position(|c| *c == 0) {
        return Err(fail(format_args!("cpu index {i} never got the lock")));
    }
    Ok((total, LOCK.raw().slow_waits() - waits))
}

// ---- IPIs ----

/// Ping-pongs the test IPI with every other CPU until `ns` passed; every
/// IPI must be delivered (counted by the receiver) within its limit.
pub fn ipi(ns: u64) -> Result<u64, Message> {
    let t = time::sched_clock();
    let mut round_trips = 0;
    let others: CpuMask = {
        let mut m = CpuMask::new();
        for i in 1..smp::online() {
            m.insert(smp::cpu_id(i));
        }
        m
    };
    let mut round = 0u64;
    while time::sched_clock() - t < ns {
        // Alternate directed, multicast and all-but-self IPIs.
        let before: [u64; smp::MAX_SMP] =
            core::array::from_fn(|i| smp::IPIS[i].load(Ordering::Relaxed));
        match round % 3 {
            0 => {
                for i in 1..smp::online() {
                    irq::send_ipi(IpiTarget::Cpu(smp::cpu_id(i)), TEST_IPI_VECTOR);
                }
            }
            1 => irq::send_ipi(IpiTarget::Mask(others), TEST_IPI_VECTOR),
            _ => irq::send_ipi(IpiTarget::AllButSelf, TEST_IPI_VECTOR),
        }
        for (i, seen) in before.iter().enumerate().take(smp::online()).skip(1) {
            let w = time::sched_clock();
            while smp::IPIS[i].load(Ordering::Relaxed) == *seen {
                if time::sched_clock() - w > IPI_LIMIT_NS {
                    return Err(fail(format_args!(
                        "round {round}: cpu index {i} did not get its IPI (lost)"
                    )));
                }
                core::hint::spin_loop();
            }
            round_trips += 1;
        }
        round += 1;
    }
    Ok(round_trips)
}

// ---- TLB ----

/// The generation every reader must see at least, once the flush that
/// installed it was acknowledged.
static EXPECTED: AtomicU64 = AtomicU64::new(0);
static STALE: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);
static VA: AtomicU64 = AtomicU64::new(0);
static READERS: AtomicU32 = AtomicU32::new(0);

fn tlb_reader(_: u64) -> u64 {
    READERS.fetch_add(1, Ordering::AcqRel);
    let va = VA.load(Ordering::Acquire);
    let mut n = 0;
    while !STOP.load(Ordering::Acquire) {
        let expected = EXPECTED.load(Ordering::Acquire);
        // SAFETY: `va` stays mapped (to one of two test frames) for as long
        // as readers run; the value is only compared.
        let seen = unsafe { core::ptr::read_volatile(va as *const u64) };
        if seen < expected {
            STALE.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
    }
    READS.fetch_add(n, Ordering::Relaxed);
    n
}

/// Remaps a page between two frames while every other CPU reads it; after
/// each remote flush is acknowledged no reader may see an older generation.
pub fn tlb(
    ns: u64,
    frames: &mut FrameAllocator,
    aspace: &AddressSpace,
) -> Result<(u64, u64), Message> {
    let (Some(a), Some(b)) = (frames.alloc(), frames.alloc()) else {
        return Err(fail(format_args!("out of frames")));
    };
    let va = TEST_VA + 40 * PAGE;
    let Some(pte) = aspace.pte(frames, va) else {
        return Err(fail(format_args!("no PTE for {va:#x}")));
    };
    let write_gen = |frame: u64, g: u64| {
        // SAFETY: `frame` is a test frame reached through the direct map,
        // not mapped at `va` while written (after the acknowledged flush).
        unsafe { core::ptr::write_volatile(frame as *mut u64, g) }
    };
    let map = |frame: u64| {
        // SAFETY: `pte` is the live PTE for `va`, used only by this test.
        unsafe { mmu::set_pte(pte, frame | 0x3, VirtAddr::new(va)) }.flush()
    };
    let mut gen = 1;
    write_gen(a, gen);
    map(a);
    EXPECTED.store(gen, Ordering::Release);
    VA.store(va, Ordering::Release);
    STOP.store(false, Ordering::Release);
    READERS.store(0, Ordering::Release);
    STALE.store(0, Ordering::Release);
    READS.store(0, Ordering::Release);
    for i in 1..smp::online() {
        smp::post(i, tlb_reader, 0);
    }
    let mut others = CpuMask::new();
    for i in 1..smp::online() {
        others.insert(smp::cpu_id(i));
    }
    let t = time::sched_clock();
    let (mut cur, mut next) = (a, b);
    let mut remaps = 0;
    while time::sched_clock() - t < ns {
        gen += 1;
        // `next` is unmapped at `va` everywhere (its last flush was
        // acknowledged), so writing the new generation into it is safe.
        write_gen(next, gen);
        map(next);
        mmu::flush_tlb_others(
            &others,
            TlbRange::Pages {
                start: VirtAddr::new(va),
                pages: 1,
            },
        );
        EXPECTED.store(gen, Ordering::Release);
        core::mem::swap(&mut cur, &mut next);
        remaps += 1;
    }
    STOP.store(true, Ordering::Release);
    for i in 1..smp::online() {
        if smp::wait_done(i, FINISH_LIMIT_NS).is_none() {
            return Err(fail(format_args!("reader cpu index {i} never finished")));
        }
    }
    let stale = STALE.load(Ordering::Relaxed);
    if stale != 0 {
        return Err(fail(format_args!(
            "{stale} reads saw a page older than an acknowledged flush"
        )));
    }
    let reads = READS.load(Ordering::Relaxed);
    if READERS.load(Ordering::Relaxed) as usize != smp::online() - 1 || reads == 0 {
        return Err(fail(format_args!("readers did not run ({reads} reads)")));
    }
    let _ = cpu::current_cpu();
    Ok((remaps, reads))
}
