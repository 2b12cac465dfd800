//! `pvops.*` command-line options.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = core::str::from_utf8(data) else { return };
    let (key, line) = s.split_once('\n').unwrap_or(("backend", s));
    if let Some(v) = pvops_core::cmdline::option(line, key) {
        // The value is a piece of the line, never made up.
        assert!(line.contains(v));
    }
});
