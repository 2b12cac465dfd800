//! ACPI: RSDP (hinted or scanned), RSDT/XSDT, FADT, DSDT `\_S5`, MADT, all
//! from fuzzer bytes placed where firmware puts them.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_fuzz::{take_u64, Window};

fuzz_target!(|data: &[u8]| {
    let (hint, rest) = take_u64(data);
    // The window covers the BIOS area the RSDP scan reads, so scans see
    // fuzzer bytes too; tables may point anywhere (mostly into the window).
    let mem = Window { base: 0xe0000, bytes: rest };
    let hint = match hint & 3 {
        0 => None,
        1 => Some(0xe0000 + (hint >> 2) % (rest.len() as u64 + 1)),
        _ => Some(hint >> 2),
    };
    let _ = pvops_native::acpi::find_s5(&mem, hint);
    let _ = pvops_native::acpi::find_cpus(&mem, hint);
});
