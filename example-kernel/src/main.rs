//! The pvops example kernel: one ELF that boots on bare hardware (QEMU TCG,
//! KVM with the PV interface hidden), tests every pvops op group and
//! reports in the console protocol of the README, then powers off with its
//! exit code.
//!
//! Everything platform-specific is below pvops: this kernel has no
//! hypervisor branches.
#![cfg_attr(target_os = "none", no_std, no_main)]
// On the host this crate is only type-checked (clippy, `cargo test
// --workspace`); the kernel proper exists only for `target_os = "none"`.
#![cfg_attr(
    not(target_os = "none"),
    allow(dead_code, unused_imports, unused_macros)
)]

mod bench;
mod console;
mod gdt;
mod interrupts;
mod paging;
mod selftest;
mod smp;
mod stress;

// The entries: PVH (from the loader's 32-bit protected mode, first 4 GiB
// identity-mapped) and Xen classic PV (ring 3, Xen's boot layout mapped);
// both reach `kernel_main` in 64-bit mode.
#[cfg(target_os = "none")]
pvops::boot_entry!(kernel_main);

use pvops::entry::{BootError, BootHandoff};

/// Exit codes the kernel reports (`pvops: exit code=<n>`).
pub const EXIT_OK: u8 = 0;
pub const EXIT_TESTS_FAILED: u8 = 1;
pub const EXIT_BAD_BOOT_INFO: u8 = 2;
pub const EXIT_EXCEPTION: u8 = 3;
pub const EXIT_NO_MEMORY: u8 = 4;
pub const EXIT_NO_BACKEND: u8 = 5;
pub const EXIT_PANIC: u8 = 101;

/// Prints the exit line and powers off.
pub fn finish_with(code: u8) -> ! {
    kprintln!("pvops: exit code={code}");
    pvops::platform::shutdown(code)
}

/// Entered from either entry in 64-bit mode on the boot stack; `boot`
/// says which and where its start info is.
pub extern "C" fn kernel_main(boot: BootHandoff) -> ! {
    let mut fallbacks = [None; 4];
    let mut n = 0;
    let booted = pvops::entry::init(boot, |e| {
        if n < fallbacks.len() {
            fallbacks[n] = Some(*e);
            n += 1;
        }
    });
    let (si, ops) = match booted {
        Ok(b) => (b.start_info, b.ops),
        // The start info was refused; pvops came up anyway (PVH: with an
        // empty command line) or left its failsafe console (Xen PV).
        Err(e @ (BootError::BadStartInfo { .. } | BootError::BadPvStartInfo { .. }))
            if pvops::is_installed() =>
        {
            kprintln!("pvops: {}", pvops::platform::identity());
            kprintln!("pvops: error: {e}");
            finish_with(EXIT_BAD_BOOT_INFO)
        }
        // A backend that failed may still have installed a console and a
        // power-off (the Xen backend's failsafe): report and end cleanly.
        Err(e) if pvops::is_installed() => {
            kprintln!("pvops: error: {e}");
            finish_with(EXIT_NO_BACKEND)
        }
        // Nothing to print with and nothing to power off with: stop here.
        Err(_) => halt_forever(),
    };
    for e in fallbacks.iter().flatten() {
        kprintln!("pvops: warning: {e}; falling back");
    }
    kprintln!("pvops: {}", ops.identity);
    if let Some(i) = pvops::native::info() {
        // Wherever native runs (alone or under a backend that composes on
        // it): where its TSC frequency and APIC timer rate came from.
        kprintln!(
            "pvops: info: tsc_hz={} tsc_source={} apic={:?} apic_timer_per_ms={} apic_timer={} cpus={} rtc={}",
            i.tsc_hz,
            i.tsc_source.as_str(),
            i.apic,
            i.apic_timer_per_ms,
            if i.apic_timer_given { "given" } else { "measured" },
            i.cpus,
            i.rtc
        );
        if ops.identity.backend == pvops::native::NAME {
            if let Err(e) = i.acpi_s5 {
                kprintln!("pvops: warning: no ACPI S5 power-off: {e}");
            }
            if let Err(e) = i.madt {
                kprintln!("pvops: warning: no ACPI MADT, assuming one CPU: {e}");
            }
        }
    }

    // Rewrite pvops' call sites for the installed backend: one CPU,
    // interrupts still off, no other CPU started yet.
    // SAFETY: as just said; ClearWp lets ring 0 write read-only text.
    match unsafe { pvops::patch::apply(&mut pvops::patch::ClearWp::new()) } {
        Ok(s) => kprintln!("pvops: info: patch {s}"),
        Err(e) => kprintln!("pvops: warning: call sites not patched: {e}"),
    }

    let selectors = gdt::init();
    interrupts::init(selectors.code.0);

    let mut frames = paging::FrameAllocator::new(&si);
    let Some(aspace) = paging::AddressSpace::new_kernel(&mut frames, &si) else {
        kprintln!("pvops: error: out of memory building page tables");
        finish_with(EXIT_NO_MEMORY)
    };
    // SAFETY: the new tables identity-map physical memory, which holds the
    // kernel image, its stack and every datum in use.
    unsafe { aspace.activate() };
    pvops::time::timer_setup(interrupts::TIMER_VECTOR);
    pvops::irq::enable();
    let online = smp::start_all(aspace.pml4);
    kprintln!("pvops: info: cpus online={online}");

    let mut ctx = selftest::Context {
        frames: &mut frames,
        aspace: &aspace,
        start_info: &si,
        stress_ns: pvops::cmdline::option(si.cmdline(), "stress")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            .saturating_mul(1_000_000),
    };
    let (passed, failed, skipped) = selftest::run_all(&mut ctx);
    if pvops::cmdline::option(si.cmdline(), "mode") == Some("bench") {
        bench::run_all(si.cmdline(), &mut frames, &aspace);
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    if skipped == 0 {
        kprintln!("test result: {verdict}. {passed} passed; {failed} failed");
    } else {
        kprintln!("test result: {verdict}. {passed} passed; {failed} failed; {skipped} skipped");
    }
    finish_with(if failed == 0 {
        EXIT_OK
    } else {
        EXIT_TESTS_FAILED
    })
}

fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    kprintln!("pvops: error: panic: {info}");
    if pvops::is_installed() {
        finish_with(EXIT_PANIC)
    }
    halt_forever()
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "example-kernel is a kernel: build it for x86_64-unknown-none, or boot it with `cargo xtask run`"
    );
    std::process::exit(2);
}
