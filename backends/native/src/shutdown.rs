//! Powering off: QEMU's isa-debug-exit device when present (it carries the
//! exit code to the host), else ACPI S5, else halt with a message.

use crate::acpi::AcpiShutdown;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

/// The port QEMU's `isa-debug-exit` listens on by default.
pub const DEBUG_EXIT_PORT: u16 = 0x501;

/// The ACPI S5 sequence found at init, packed (see `pack`); 0 if none.
static ACPI_S5: AtomicU64 = AtomicU64::new(0);

fn pack(s: &AcpiShutdown) -> u64 {
    1 << 63
        | u64::from(s.pm1a_cnt)
        | u64::from(s.pm1b_cnt.unwrap_or(0)) << 16
        | u64::from(s.slp_typ_a) << 32
        | u64::from(s.slp_typ_b) << 40
}

/// Remembers how to enter S5, found by ACPI parsing at init.
pub fn set_acpi(s: &AcpiShutdown) {
    ACPI_S5.store(pack(s), Ordering::Relaxed);
}

/// Whether an ACPI S5 path is known.
pub fn has_acpi() -> bool {
    ACPI_S5.load(Ordering::Relaxed) != 0
}

const SLP_EN: u16 = 1 << 13;

/// Powers off with `code`; never returns.
pub fn shutdown(code: u8) -> ! {
    x86_64::instructions::interrupts::disable();
    // QEMU exits with status (code << 1) | 1. On a machine without the
    // device nothing decodes port 0x501 and the write is lost.
    // SAFETY: writing an unused ISA port has no effect; on QEMU it ends the VM.
    unsafe { Port::<u8>::new(DEBUG_EXIT_PORT).write(code) };
    let s5 = ACPI_S5.load(Ordering::Relaxed);
    if s5 != 0 {
        let pm1a = s5 as u16;
        let pm1b = (s5 >> 16) as u16;
        let typ_a = ((s5 >> 32) & 0x7) as u16;
        let typ_b = ((s5 >> 40) & 0x7) as u16;
        // SAFETY: PM1a/PM1b control blocks come from the FADT; writing
        // SLP_TYP|SLP_EN there is ACPI's documented way into S5.
        unsafe {
            Port::<u16>::new(pm1a).write(typ_a << 10 | SLP_EN);
            if pm1b != 0 {
                Port::<u16>::new(pm1b).write(typ_b << 10 | SLP_EN);
            }
        }
    }
    if s5 != 0 {
        // The sleep may take effect a little after the write (QEMU ends
        // the VM asynchronously): give it time before saying it failed.
        let t = crate::tsc::read();
        let hz = crate::info().map_or(3_000_000_000, |i| i.tsc_hz);
        while crate::tsc::read().wrapping_sub(t) < hz {
            core::hint::spin_loop();
        }
    }
    crate::serial::write(
        b"pvops: error: shutdown failed (no isa-debug-exit, ACPI S5 did not power off); halting\n",
    );
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
