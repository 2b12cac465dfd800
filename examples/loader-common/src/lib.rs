//! What the loader example kernels (`examples/multiboot2-kernel`,
//! `examples/bootloader-kernel`, `examples/pvh-high-kernel`) share,
//! written only against pvops' public API: a console that also works
//! before `pvops::init`, a GDT, an IDT with the vectors pvops asks for,
//! and the self-tests that fit a kernel booted
//! by someone else's loader (IRQ flags, the clock, a page-table update and
//! flush through the kernel's own tables, the one-shot timer, a second CPU,
//! memory the hypervisor must not have written). With
//! `loader.ap_start=kernel` the second CPU is started by the kernel's own
//! code ([`loader_smp`]), as a loader's MP protocol would, not by pvops.
//!
//! Each kernel brings its entry and its memory facts ([`Machine`]); this
//! crate does the rest and ends the run with the console protocol's lines.
#![no_std]

pub mod console;
pub mod gdt;
pub mod idt;
pub mod loader_smp;
pub mod paging;
pub mod smp;
pub mod tests;

use core::fmt::Write;

pub use console::Out;

/// Exit codes of the console protocol (README, "Console protocol").
pub mod exit {
    /// Every test passed.
    pub const OK: u8 = 0;
    /// A test failed.
    pub const TEST_FAILED: u8 = 1;
    /// The loader's boot information was unusable.
    pub const BAD_BOOT_INFO: u8 = 2;
    /// An exception nobody expected.
    pub const EXCEPTION: u8 = 3;
    /// No pvops backend could start.
    pub const NO_BACKEND: u8 = 5;
    /// A panic.
    pub const PANIC: u8 = 101;
}

/// Prints one line on the console (pvops' once installed, COM1 before).
#[macro_export]
macro_rules! kprintln {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::Out, $($arg)*);
    }};
}

/// Prints the exit line and leaves through pvops' shutdown (QEMU's
/// isa-debug-exit, then ACPI), or halts if pvops never installed.
pub fn finish(code: u8) -> ! {
    let _ = writeln!(Out, "pvops: exit code={code}");
    if pvops::is_installed() {
        pvops::platform::shutdown(code)
    }
    loop {
        core::hint::spin_loop();
    }
}

/// The panic handler's body: an error line, then exit code 101.
pub fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Out, "pvops: error: panic: {info}");
    finish(exit::PANIC)
}

/// What the kernel knows about its memory, for the tests.
#[derive(Debug, Clone, Copy)]
pub struct Machine {
    /// Physical memory is mapped at `phys + phys_offset`.
    pub phys_offset: u64,
    /// `pvops::cpu::TRAMPOLINE_SIZE` free bytes below 1 MiB for the SMP
    /// start-up trampoline, if the loader's memory map has them. Nothing
    /// needs to map them: pvops writes them through the direct map.
    pub trampoline: Option<u64>,
}

/// Everything after the kernel's own entry: GDT and IDT, `pvops::init`
/// with `ctx`, the platform line, the self-tests (plus the kernel's
/// `extra` checks, run last), the result line, and shutdown.
pub fn run(ctx: &pvops::BootContext<'_>, machine: Machine, extra: &[tests::Test]) -> ! {
    smp::configure(ctx.cmdline);
    run_with(
        || {
            let ops = match pvops::init(ctx, warn_fallback) {
                Ok(ops) => ops,
                Err(e) => {
                    kprintln!("pvops: error: pvops::init: {e}");
                    finish(exit::NO_BACKEND)
                }
            };
            Installed {
                ops,
                machine,
                kernel_map: ctx.kernel_map,
            }
        },
        extra,
    )
}

/// What a kernel's own pvops init (e.g. `pvops::entry::init_pvh_high`)
/// gives [`run_with`].
#[derive(Debug)]
pub struct Installed {
    /// The installed ops table.
    pub ops: &'static pvops::PvOps,
    /// The kernel's memory facts, for the tests.
    pub machine: Machine,
    /// How the kernel told pvops its image is mapped (for the info line).
    pub kernel_map: pvops::KernelMap,
}

/// The `on_fallback` the loader kernels give pvops: a warning line.
pub fn warn_fallback(e: &pvops::BackendError) {
    kprintln!("pvops: warning: {e}; falling back");
}

/// [`run`] for a kernel that installs pvops itself: `init` runs after the
/// canaries are filled (it must install pvops, or print an error and
/// [`finish`]; and call [`smp::configure`] with the command line), then
/// the same GDT, IDT, lines and self-tests follow.
pub fn run_with(init: impl FnOnce() -> Installed, extra: &[tests::Test]) -> ! {
    tests::fill_canaries();
    let Installed {
        ops,
        machine,
        kernel_map,
    } = init();
    // Now that pvops is in, load the tables through it (under Xen PV that
    // is the only way; natively it is the same instruction).
    gdt::load();
    idt::load();
    kprintln!("pvops: {}", ops.identity);
    kprintln!(
        "pvops: info: phys_offset={:#x} kernel_map={:?} cpus_possible={}",
        machine.phys_offset,
        kernel_map,
        pvops::cpu::possible_cpus().iter().count()
    );
    // SAFETY: right after init, on the boot CPU, interrupts off, no other
    // CPU started: what patch::apply asks.
    let stats = unsafe { pvops::patch::apply(&mut pvops::patch::ClearWp::new()) };
    match stats {
        Ok(s) => kprintln!("pvops: info: patch {s}"),
        Err(e) => kprintln!("pvops: warning: patch: {e}"),
    }
    pvops::time::timer_setup(idt::TIMER_VECTOR);
    let failed = tests::run_all(machine, extra);
    finish(if failed == 0 {
        exit::OK
    } else {
        exit::TEST_FAILED
    })
}
