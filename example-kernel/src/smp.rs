//! Secondary CPUs: started through pvops (which picks INIT-SIPI-SIPI, a
//! hypercall, ...), each running a small idle loop that executes work the
//! boot CPU posts to it. The SMP self-tests use that to look at memory from
//! every CPU.

use crate::gdt;
use crate::interrupts;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use pvops::cpu::{self, CpuId, SecondaryStart};
use pvops::irq::{self, IpiTarget};

/// At most this many CPUs are brought up.
pub const MAX_SMP: usize = 8;
const AP_STACK: usize = 32 * 1024;
/// Free memory below 1 MiB for the start-up trampoline (conventional memory
/// the PVH loaders leave alone).
const TRAMPOLINE_PAGE: u64 = 0x8000;
const _: () = assert!(TRAMPOLINE_PAGE as usize + pvops::cpu::TRAMPOLINE_SIZE <= 0xa0000);

#[repr(C, align(16))]
struct Stacks([[u8; AP_STACK]; MAX_SMP]);
static mut STACKS: Stacks = Stacks([[0; AP_STACK]; MAX_SMP]);

/// Platform CPU numbers of the CPUs that came up, by kernel index (0 is the
/// boot CPU).
static CPU_IDS: [AtomicU32; MAX_SMP] = [const { AtomicU32::new(u32::MAX) }; MAX_SMP];
static ONLINE: AtomicUsize = AtomicUsize::new(1);

/// Work for a CPU: a function and its argument; 0 = none.
static WORK_FN: [AtomicU64; MAX_SMP] = [const { AtomicU64::new(0) }; MAX_SMP];
static WORK_ARG: [AtomicU64; MAX_SMP] = [const { AtomicU64::new(0) }; MAX_SMP];
static WORK_RESULT: [AtomicU64; MAX_SMP] = [const { AtomicU64::new(0) }; MAX_SMP];
/// Per-CPU test IPI counts.
pub static IPIS: [AtomicU64; MAX_SMP] = [const { AtomicU64::new(0) }; MAX_SMP];

/// The number of CPUs online.
pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// The platform number of kernel CPU `index`.
pub fn cpu_id(index: usize) -> CpuId {
    CpuId(CPU_IDS[index].load(Ordering::Acquire))
}

/// The kernel index of the running CPU.
pub fn this_index() -> usize {
    let me = cpu::current_cpu().0;
    (0..online())
        .find(|i| CPU_IDS[*i].load(Ordering::Relaxed) == me)
        .unwrap_or(0)
}

/// Starts every possible CPU (up to [`MAX_SMP`]); returns how many started
/// and prints a warning line for each that did not.
pub fn start_all(cr3: u64) -> usize {
    CPU_IDS[0].store(cpu::current_cpu().0, Ordering::Release);
    let me = cpu::current_cpu();
    for cpu in cpu::possible_cpus().iter().filter(|c| *c != me) {
        let index = ONLINE.load(Ordering::Acquire);
        if index >= MAX_SMP {
            crate::kprintln!(
                "pvops: warning: cpu {} not started: only {MAX_SMP} supported",
                cpu.0
            );
            continue;
        }
        // SAFETY: each index's stack is handed to exactly one CPU, once.
        let stack_top = unsafe { core::ptr::addr_of!(STACKS.0[index]) as u64 + AP_STACK as u64 };
        let how = SecondaryStart {
            entry: ap_entry,
            arg: index as u64,
            stack_top,
            cr3,
            trampoline: TRAMPOLINE_PAGE,
        };
        if let Err(e) = cpu::start_cpu(cpu, &how) {
            crate::kprintln!("pvops: warning: {e}");
            continue;
        }
        // Wait for it to register itself.
        let t = pvops::time::sched_clock();
        while ONLINE.load(Ordering::Acquire) == index {
            if pvops::time::sched_clock() - t > 5_000_000_000 {
                crate::kprintln!(
                    "pvops: warning: cpu {} started but never reported in",
                    cpu.0
                );
                break;
            }
            core::hint::spin_loop();
        }
    }
    online()
}

extern "C" fn ap_entry(index: u64) -> ! {
    let index = index as usize;
    gdt::load_shared();
    interrupts::load();
    cpu::init_secondary();
    CPU_IDS[index].store(cpu::current_cpu().0, Ordering::Release);
    ONLINE.fetch_add(1, Ordering::AcqRel);
    loop {
        irq::disable();
        let f = WORK_FN[index].load(Ordering::Acquire);
        if f == 0 {
            // Any interrupt (the test IPI that posts work) ends the halt.
            irq::safe_halt();
            continue;
        }
        irq::enable();
        // SAFETY: `run_on` stores only `fn(u64) -> u64` pointers here.
        let work: fn(u64) -> u64 = unsafe { core::mem::transmute(f as usize) };
        let r = work(WORK_ARG[index].load(Ordering::Acquire));
        WORK_RESULT[index].store(r, Ordering::Release);
        WORK_FN[index].store(0, Ordering::Release);
    }
}

/// Runs `work(arg)` on kernel CPU `index` (not the caller's) and returns its
/// result, or `None` if it did not finish within `limit_ns`.
pub fn run_on(index: usize, work: fn(u64) -> u64, arg: u64, limit_ns: u64) -> Option<u64> {
    post(index, work, arg);
    wait_done(index, limit_ns)
}

/// Hands `work(arg)` to kernel CPU `index` and wakes it.
pub fn post(index: usize, work: fn(u64) -> u64, arg: u64) {
    WORK_ARG[index].store(arg, Ordering::Release);
    WORK_FN[index].store(work as usize as u64, Ordering::Release);
    irq::send_ipi(IpiTarget::Cpu(cpu_id(index)), interrupts::TEST_IPI_VECTOR);
}

/// Waits for the work posted to `index`; its result, or `None` after
/// `limit_ns`.
pub fn wait_done(index: usize, limit_ns: u64) -> Option<u64> {
    let t = pvops::time::sched_clock();
    while WORK_FN[index].load(Ordering::Acquire) != 0 {
        if pvops::time::sched_clock() - t > limit_ns {
            return None;
        }
        core::hint::spin_loop();
    }
    Some(WORK_RESULT[index].load(Ordering::Acquire))
}

/// Counts a test IPI on the CPU that received it.
pub fn count_ipi() {
    IPIS[this_index()].fetch_add(1, Ordering::Relaxed);
}
