//! Detection over arbitrary (lying, truncated) CPUID leaves.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_fuzz::FuzzCpuid;

fuzz_target!(|data: &[u8]| {
    let scan = pvops_core::detect::scan(&FuzzCpuid(data));
    for leaf in scan.iter() {
        // Every entry kept is inside the scanned range and names itself.
        assert!(leaf.base >= 0x4000_0000 && leaf.base <= 0x4001_0000);
        let _ = leaf.kind.to_string();
        let _ = leaf.has_leaf(1);
    }
});
