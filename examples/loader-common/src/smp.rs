//! Starting one more CPU through `pvops::cpu::start_cpu`, as the kernel's
//! own code would: its stack in `.bss`, the current page tables, and the
//! trampoline page identity-mapped for as long as the start takes (what
//! `SecondaryStart::cr3` asks for), unmapped afterwards.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use pvops::cpu::{CpuId, SecondaryStart};
use pvops::mmu;

/// The second CPU's stack.
pub const AP_STACK: usize = 32 * 1024;
/// Filled with this before `pvops::init`; the part the CPU never reaches
/// must still hold it at the end (nothing wrote behind the kernel's back).
pub const STACK_PATTERN: u64 = 0x5afe_57ac_c0de_0001;

#[repr(C, align(4096))]
struct Stack([u64; AP_STACK / 8]);
static mut STACK: Stack = Stack([0; AP_STACK / 8]);

static ONLINE: AtomicBool = AtomicBool::new(false);
static CPU: AtomicU32 = AtomicU32::new(u32::MAX);
static ARG: AtomicU64 = AtomicU64::new(0);
const MAGIC_ARG: u64 = 0xc0ff_ee00_1234_5678;

/// Fills the stack with [`STACK_PATTERN`] (before `pvops::init`, so that a
/// hypervisor's write at a wrong address is seen later).
pub fn fill_stack() {
    // SAFETY: runs once on the boot CPU before the stack is handed out.
    unsafe { (*core::ptr::addr_of_mut!(STACK)).0.fill(STACK_PATTERN) };
}

/// Words of the stack's lower half (which the idle CPU never reaches) that
/// no longer hold the pattern.
pub fn stack_damage() -> usize {
    // SAFETY: a read-only pass over the lower half of the stack; the second
    // CPU uses a few hundred bytes at its top.
    unsafe {
        let s = &*core::ptr::addr_of!(STACK);
        s.0[..AP_STACK / 16]
            .iter()
            .filter(|w| **w != STACK_PATTERN)
            .count()
    }
}

/// Where a second CPU enters the kernel, however it was started.
pub(crate) extern "C" fn ap_entry(arg: u64) -> ! {
    pvops::cpu::init_secondary();
    crate::gdt::load();
    crate::idt::load();
    ARG.store(arg, Ordering::Relaxed);
    CPU.store(pvops::cpu::current_cpu().0, Ordering::Relaxed);
    ONLINE.store(true, Ordering::Release);
    loop {
        // Interrupts on while halted: pvops' service vector (remote TLB
        // flushes) reaches this CPU.
        pvops::irq::safe_halt();
    }
}

/// How the second CPU is started: by `pvops::cpu::start_cpu`, or by the
/// kernel's own INIT-SIPI code ([`crate::loader_smp`], as a loader with an
/// MP protocol would), set from `loader.ap_start=kernel` on the command line.
static STARTED_BY_KERNEL: AtomicBool = AtomicBool::new(false);

/// Reads `loader.ap_start=` from the command line.
pub fn configure(cmdline: &str) {
    let by_kernel = cmdline
        .split_ascii_whitespace()
        .any(|w| w == "loader.ap_start=kernel");
    STARTED_BY_KERNEL.store(by_kernel, Ordering::Relaxed);
}

/// Whether the kernel starts the second CPU itself ([`configure`]).
pub fn started_by_kernel() -> bool {
    STARTED_BY_KERNEL.load(Ordering::Relaxed)
}

/// Starts the second CPU the way a loader would, without
/// `pvops::cpu::start_cpu`, and checks that it joined through
/// `pvops::cpu::init_secondary()` alone: it runs the kernel's code, and
/// pvops names it as a possible CPU other than this one.
pub fn start_second_without_pvops(machine: &crate::Machine) -> Result<CpuId, &'static str> {
    let me = pvops::cpu::current_cpu();
    let Some(region) = machine.trampoline else {
        return Err("the loader's memory map has no free TRAMPOLINE_SIZE below 1 MiB");
    };
    let start = crate::loader_smp::Start {
        region,
        phys_offset: machine.phys_offset,
        // The stack is handed to the first CPU that arrives, once.
        stack_top: core::ptr::addr_of!(STACK) as u64 + AP_STACK as u64,
        arg: MAGIC_ARG,
    };
    crate::kprintln!(
        "pvops: info: the kernel starts the other CPUs itself (INIT, STARTUP at {region:#x}), not pvops"
    );
    crate::loader_smp::start_others(&start)?;
    wait_online()?;
    let cpu = CpuId(CPU.load(Ordering::Relaxed));
    if cpu == me || !pvops::cpu::possible_cpus().contains(cpu) {
        return Err("the new CPU's current_cpu() is not another possible CPU");
    }
    Ok(cpu)
}

fn wait_online() -> Result<(), &'static str> {
    let t0 = pvops::time::sched_clock();
    while !ONLINE.load(Ordering::Acquire) {
        if pvops::time::sched_clock() - t0 > 5_000_000_000 {
            return Err("the CPU started but never reached the kernel's entry");
        }
        core::hint::spin_loop();
    }
    if ARG.load(Ordering::Relaxed) != MAGIC_ARG {
        return Err("the new CPU got the wrong argument");
    }
    Ok(())
}

/// Starts the first possible CPU other than this one (the kernel maps
/// nothing for it: no identity map, pvops reaches the trampoline through
/// the direct map) and waits until it runs the kernel's code.
pub fn start_second(machine: &crate::Machine) -> Result<CpuId, &'static str> {
    let me = pvops::cpu::current_cpu();
    let Some(target) = pvops::cpu::possible_cpus().iter().find(|c| *c != me) else {
        return Err("only one CPU is possible (boot with -smp 2)");
    };
    let Some(page) = machine.trampoline else {
        return Err("the loader's memory map has no free TRAMPOLINE_SIZE below 1 MiB");
    };
    let how = SecondaryStart {
        entry: ap_entry,
        arg: MAGIC_ARG,
        // The stack is handed to exactly this CPU, once.
        stack_top: core::ptr::addr_of!(STACK) as u64 + AP_STACK as u64,
        cr3: mmu::read_cr3(),
        trampoline: page,
    };
    crate::kprintln!(
        "pvops: info: starting cpu {} through trampoline {page:#x} (cr3 {:#x})",
        target.0,
        how.cr3
    );
    let started = pvops::cpu::start_cpu(target, &how);
    if let Err(e) = started {
        crate::kprintln!("pvops: info: start_cpu({}) failed: {e}", target.0);
        return Err("pvops::cpu::start_cpu failed");
    }
    wait_online()?;
    if CPU.load(Ordering::Relaxed) != target.0 {
        return Err("the new CPU's current_cpu() is not the CPU started");
    }
    Ok(target)
}
