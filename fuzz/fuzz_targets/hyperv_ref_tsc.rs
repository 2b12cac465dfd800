//! The reference TSC page as the hypervisor writes it: arbitrary page
//! heads and TSC values through `ref_tsc::reference_time`, the parser of
//! the page.
//!
//! Asserts: sequence 0 is always "invalid" (`None`); otherwise the value
//! is the TLFS formula, ((tsc * scale) >> 64) + offset, computed without
//! overflow (128-bit product, wrapping sum); a larger TSC never gives a
//! smaller scaled part (the clock only goes back if the hypervisor's
//! offset does).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_fuzz::Bytes;
use pvops_hyperv::ref_tsc::{reference_time, RefTscHead};
use zerocopy::FromBytes;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mut raw = [0u8; 24];
    for b in raw.iter_mut() {
        *b = input.u8();
    }
    let head = RefTscHead::read_from_bytes(&raw).expect("24 bytes");
    let tsc = input.u64();
    let later = tsc.saturating_add(input.u64());
    match reference_time(&head, tsc) {
        None => assert_eq!(head.sequence, 0),
        Some(t) => {
            assert_ne!(head.sequence, 0);
            let scaled = ((u128::from(tsc) * u128::from(head.scale)) >> 64) as u64;
            assert_eq!(t, scaled.wrapping_add(head.offset as u64));
            let t2 = reference_time(&head, later).expect("same head, still valid");
            let scaled2 = t2.wrapping_sub(head.offset as u64);
            assert!(scaled2 >= scaled, "the scaled TSC never goes back");
        }
    }
});
