//! The pvclock-style scaling shared by the TSC, kvmclock and Xen: any
//! frequency and delta, no panic, no overflow, and monotonic in the delta.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_core::time::ClockScale;
use pvops_fuzz::take_u64;

fuzz_target!(|data: &[u8]| {
    let (hz, rest) = take_u64(data);
    let (a, rest) = take_u64(rest);
    let (b, rest) = take_u64(rest);
    let (raw, _) = take_u64(rest);
    if let Some(s) = ClockScale::from_hz(hz) {
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        assert!(s.ticks_to_ns(lo) <= s.ticks_to_ns(hi));
    }
    // Scales written by a hypervisor can be anything.
    let s = ClockScale { mul_frac: raw as u32, shift: (raw >> 32) as i8 };
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    assert!(s.ticks_to_ns(lo) <= s.ticks_to_ns(hi));
});
