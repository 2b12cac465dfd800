//! hvm_start_info and everything it points to, at a fuzzer-chosen offset
//! inside a fuzzer-filled window of physical memory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_fuzz::{take_u64, Window};

fuzz_target!(|data: &[u8]| {
    let (at, rest) = take_u64(data);
    let mem = Window { base: 0x1000, bytes: rest };
    // Land inside the window most of the time, anywhere sometimes.
    let paddr = if at & 1 == 0 { 0x1000 + (at >> 1) % (rest.len() as u64 + 1) } else { at };
    if let Ok(si) = pvops_core::abi::start_info::parse(&mem, paddr) {
        // Whatever parsed must be usable without panicking.
        let _ = si.cmdline().len();
        let _ = si.ram_regions().count();
        let _ = si.memmap().len();
    }
});
