//! VMware's hypervisor data: SMBIOS tables in the BIOS area (entry point
//! search and the System Information walk), and the register words of the
//! backdoor's GETVERSION and GETHZ replies and of the CPUID timing leaf.
//!
//! Asserts: nothing panics or reads outside the window; a frequency is
//! only ever accepted within the plausible range; GETHZ's TSC frequency is
//! EBX:EAX exactly, the timing leaf's is EAX kHz exactly; GETVERSION
//! succeeds exactly when EBX is the magic and EAX is not all ones.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_fuzz::Window;
use pvops_native::tsc::PLAUSIBLE_HZ;
use pvops_vmware::abi::{Regs, MAGIC};
use pvops_vmware::{backdoor, smbios, timing};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 16 {
        let w = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
        let r = Regs {
            eax: w(0),
            ebx: w(4),
            ecx: w(8),
            edx: w(12),
        };
        let v = backdoor::parse_version(r);
        assert_eq!(v.is_ok(), r.ebx == MAGIC && r.eax != u32::MAX);
        if let Ok(f) = backdoor::parse_gethz(r) {
            assert!(PLAUSIBLE_HZ.contains(&f.tsc_hz));
            assert_eq!(f.tsc_hz, (u64::from(r.ebx) << 32) | u64::from(r.eax));
            assert_ne!(r.ebx, u32::MAX);
        }
        if let Ok(t) = timing::parse(r.eax, r.ebx, r.ecx) {
            assert_eq!(t.freq.tsc_hz, u64::from(r.eax) * 1000);
            assert!(PLAUSIBLE_HZ.contains(&t.freq.tsc_hz));
        }
    }
    // The fuzzer's bytes as the BIOS area (and whatever the entry point
    // names within it).
    let mem = Window {
        base: smbios::SEARCH.start,
        bytes: data,
    };
    if let Ok(loc) = smbios::find_table(&mem) {
        assert!(loc.len <= smbios::MAX_TABLE);
        let _ = smbios::table_says_vmware(&mem, loc);
    }
    let _ = smbios::says_vmware(&mem);
});
