//! The smallest useful pvops kernel, written as a stranger would write one:
//! only pvops' public API, no knowledge of the example kernel. It boots
//! through `pvops::boot_entry!` (PVH, or Xen classic PV in ring 3), lets
//! pvops pick the backend, prints the platform line, checks a few ops and
//! powers off with its exit code.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use core::fmt::Write;
use pvops::platform::Console;

/// A named yes/no check of one op group.
type Check = (&'static str, fn() -> bool);

#[cfg(target_os = "none")]
pvops::boot_entry!(kernel_main, stack_size = 65536);

extern "C" fn kernel_main(handoff: pvops::entry::BootHandoff) -> ! {
    let boot = match pvops::entry::init(handoff, |e| {
        let _ = writeln!(Console, "pvops: warning: {e}; falling back");
    }) {
        Ok(boot) => boot,
        Err(e) => {
            let _ = writeln!(Console, "pvops: error: {e}");
            finish(2)
        }
    };
    let _ = writeln!(Console, "pvops: {}", boot.ops.identity);

    let checks: [Check; 4] = [
        ("clock_advances", || {
            let a = pvops::time::sched_clock();
            let mut b = a;
            for _ in 0..1_000_000 {
                b = pvops::time::sched_clock();
                if b > a {
                    break;
                }
            }
            b > a
        }),
        ("irq_flags_roundtrip", || {
            let outer = pvops::irq::save_and_disable();
            let off = !pvops::irq::save_flags().interrupts_enabled();
            pvops::irq::restore_flags(outer);
            off && pvops::irq::save_flags() == outer
        }),
        ("wall_clock_after_2024", || {
            pvops::time::wall_clock().secs > 1_704_067_200
        }),
        ("this_cpu_is_possible", || {
            pvops::cpu::possible_cpus().contains(pvops::cpu::current_cpu())
        }),
    ];
    let mut failed = 0;
    for (name, check) in checks {
        if check() {
            let _ = writeln!(Console, "test {name} ... ok");
        } else {
            failed += 1;
            let _ = writeln!(Console, "test {name} ... FAILED: check returned false");
        }
    }
    let passed = checks.len() - failed;
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    let _ = writeln!(
        Console,
        "test result: {verdict}. {passed} passed; {failed} failed"
    );
    finish(if failed == 0 { 0 } else { 1 })
}

fn finish(code: u8) -> ! {
    let _ = writeln!(Console, "pvops: exit code={code}");
    if pvops::is_installed() {
        pvops::platform::shutdown(code)
    }
    loop {
        core::hint::spin_loop();
    }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Console, "pvops: error: panic: {info}");
    finish(101)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("minimal-kernel is a kernel: build it for x86_64-unknown-none");
    std::process::exit(2);
}
