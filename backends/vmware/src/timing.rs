//! VMware's CPUID timing leaf (base + 0x10): the TSC and APIC bus
//! frequencies in kHz, and which instructions take backdoor calls as
//! hypercalls. QEMU fills the same leaf in KVM's range with
//! `-cpu ...,vmware-cpuid-freq=on` (and an invariant TSC).

use crate::abi::{CPUID_TIMING_LEAF_OFFSET, TIMING_ECX_VMCALL, TIMING_ECX_VMMCALL};
use crate::backdoor::Frequencies;
use crate::error::VmwareError;
use pvops_core::detect::{CpuidSource, HypervisorLeaf};
use pvops_core::fault::Table;

/// Fault point: the timing leaf reads as absent.
pub const FAULT_CPUID_FREQ: &str = "vmware.cpuid-freq";

/// What the timing leaf says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The frequencies (TSC checked plausible).
    pub freq: Frequencies,
    /// Backdoor calls may be made with `vmcall` (Intel).
    pub vmcall: bool,
    /// Backdoor calls may be made with `vmmcall` (AMD).
    pub vmmcall: bool,
}

/// Reads the timing leaf of the hypervisor at `leaf` (whose range must
/// reach it), consulting `faults` first.
pub fn read(
    src: &impl CpuidSource,
    leaf: &HypervisorLeaf,
    faults: &Table,
) -> Result<Timing, VmwareError> {
    if faults.hit(FAULT_CPUID_FREQ) {
        return Err(VmwareError::Injected(FAULT_CPUID_FREQ));
    }
    if !leaf.has_leaf(CPUID_TIMING_LEAF_OFFSET) {
        return Err(VmwareError::TimingLeafAbsent {
            max_leaf: leaf.max_leaf,
        });
    }
    let r = src.cpuid(leaf.base + CPUID_TIMING_LEAF_OFFSET, 0);
    parse(r.eax, r.ebx, r.ecx)
}

/// Reads the timing leaf's EAX (TSC kHz), EBX (APIC bus kHz, 0: unknown)
/// and ECX (hypercall instruction bits).
pub fn parse(eax: u32, ebx: u32, ecx: u32) -> Result<Timing, VmwareError> {
    let tsc_hz = u64::from(eax) * 1000;
    if !pvops_native::tsc::PLAUSIBLE_HZ.contains(&tsc_hz) {
        return Err(VmwareError::TimingLeafImplausible { tsc_khz: eax });
    }
    Ok(Timing {
        freq: Frequencies {
            tsc_hz,
            apic_bus_hz: (ebx != 0).then_some(u64::from(ebx) * 1000),
        },
        vmcall: ecx & TIMING_ECX_VMCALL != 0,
        vmmcall: ecx & TIMING_ECX_VMMCALL != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::cpu::CpuidResult;
    use pvops_core::detect::HypervisorKind;

    struct Leaf10(CpuidResult);
    impl CpuidSource for Leaf10 {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            assert_eq!(leaf, 0x4000_0010, "only the timing leaf is read");
            self.0
        }
    }

    fn leaf(max_leaf: u32) -> HypervisorLeaf {
        HypervisorLeaf {
            base: 0x4000_0000,
            max_leaf,
            kind: HypervisorKind::VMware,
        }
    }

    #[test]
    fn qemu_leaf_in_khz() {
        let src = Leaf10(CpuidResult {
            eax: 2_304_000,
            ebx: 1_000_000,
            ecx: 0,
            edx: 0,
        });
        let t = read(&src, &leaf(0x4000_0010), &Table::new()).unwrap();
        assert_eq!(t.freq.tsc_hz, 2_304_000_000);
        assert_eq!(t.freq.apic_bus_hz, Some(1_000_000_000));
        assert!(!t.vmcall && !t.vmmcall);
        assert_eq!(
            parse(2_000_000, 0, 3).map(|t| (t.vmcall, t.vmmcall)),
            Ok((true, true))
        );
    }

    #[test]
    fn missing_lying_and_refused_leaves() {
        let src = Leaf10(CpuidResult::default());
        // The range stops at 0x40000001: not read at all.
        assert_eq!(
            read(&src, &leaf(0x4000_0001), &Table::new()),
            Err(VmwareError::TimingLeafAbsent {
                max_leaf: 0x4000_0001
            })
        );
        // Present but zero (QEMU without an invariant TSC leaves it so).
        assert_eq!(
            read(&src, &leaf(0x4000_0010), &Table::new()),
            Err(VmwareError::TimingLeafImplausible { tsc_khz: 0 })
        );
        assert_eq!(
            parse(u32::MAX, 0, 0),
            Err(VmwareError::TimingLeafImplausible { tsc_khz: u32::MAX })
        );
        let faults = Table::new();
        faults.configure(Some(FAULT_CPUID_FREQ), crate::fault_points::ALL);
        assert_eq!(
            read(&src, &leaf(0x4000_0010), &faults),
            Err(VmwareError::Injected(FAULT_CPUID_FREQ))
        );
    }
}
