//! Finding Xen and reading its CPUID leaves.
//!
//! Xen's signature `XenVMMXenVMM` is at 0x40000000, or at 0x40000100 when
//! the domain also has Viridian (Hyper-V) enlightenments, which then take
//! the first base. [`pvops_core::detect::scan`] finds every base; this
//! module reads Xen's own leaves relative to the one it found.

use crate::abi::cpuid::{
    HvmFeatures, LEAF_HVM, LEAF_HYPERCALL, LEAF_TSC, LEAF_VERSION, TSC_EMULATED,
};
use pvops_core::backend::{BootContext, BootEntry, Priority};
use pvops_core::detect::{
    signature_of, CpuidSource, HardwareCpuid, HypervisorKind, HypervisorLeaf, HYPERVISOR_LEAF_STEP,
};

/// The detection bid: above KVM's 100 (a Xen domain never also runs on
/// KVM's interface) and native's 0.
pub const PRIORITY: Priority = Priority::XEN;

/// The oldest Xen this backend runs on: 4.10 brought PVH guests (the
/// `hvm_start_info` entry, `VCPUOP_initialise` with an HVM context).
pub const MIN_VERSION: (u16, u16) = (4, 10);

/// What Xen's CPUID leaves say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenCpuid {
    /// The base leaf of Xen's range.
    pub base: u32,
    /// Xen's (major, minor) version.
    pub version: (u16, u16),
    /// The MSR that installs a hypercall page (unused: see
    /// [`crate::hypercall`]), if Xen reports one.
    pub hypercall_msr: Option<u32>,
    /// EAX of leaf `base + 3` (TSC flags), if Xen has that leaf.
    pub tsc_flags: Option<u32>,
    /// HVM features of leaf `base + 4`, if Xen has that leaf.
    pub hvm: Option<HvmFeatures>,
}

impl XenCpuid {
    /// Reads Xen's leaves at `leaf.base`. Leaves beyond what the base
    /// reports are treated as absent.
    pub fn read(src: &impl CpuidSource, leaf: &HypervisorLeaf) -> Self {
        let at = |off: u32| leaf.has_leaf(off).then(|| src.cpuid(leaf.base + off, 0));
        let version = at(LEAF_VERSION).map_or((0, 0), |r| ((r.eax >> 16) as u16, r.eax as u16));
        let hypercall_msr = at(LEAF_HYPERCALL).and_then(|r| (r.eax != 0).then_some(r.ebx));
        let tsc_flags = at(LEAF_TSC).map(|r| r.eax);
        let hvm = at(LEAF_HVM).map(|r| HvmFeatures::from_bits_retain(r.eax));
        XenCpuid {
            base: leaf.base,
            version,
            hypercall_msr,
            tsc_flags,
            hvm,
        }
    }

    /// The leaf that holds the vCPU id in EBX, if Xen reports it there.
    pub fn vcpu_id_leaf(&self) -> Option<u32> {
        self.hvm
            .filter(|f| f.contains(HvmFeatures::VCPU_ID_PRESENT))
            .map(|_| self.base + LEAF_HVM)
    }

    /// Whether Xen says the guest's TSC runs natively (not emulated, so
    /// `rdtsc`/`rdtscp` cost no VM exit). Unknown counts as emulated.
    pub fn tsc_native(&self) -> bool {
        self.tsc_flags.is_some_and(|f| f & TSC_EMULATED == 0)
    }

    /// Whether the version is at least [`MIN_VERSION`].
    #[cfg(test)]
    pub fn new_enough(&self) -> bool {
        self.version >= MIN_VERSION
    }
}

/// Bids [`PRIORITY`] when Xen's signature is present and the kernel came
/// in through the PVH entry (a classic PV guest is another backend's).
pub fn detect(ctx: &BootContext<'_>) -> Option<Priority> {
    match ctx.entry {
        // Only Xen enters a kernel through its PV entry; its signature is
        // confirmed through the forced-emulation prefix (a ring-3 CPUID may
        // not reach Xen at all).
        BootEntry::XenPv => detect_with(ctx, &crate::pv::cpu::FepCpuid),
        _ => detect_with(ctx, &HardwareCpuid),
    }
}

fn detect_with(ctx: &BootContext<'_>, src: &impl CpuidSource) -> Option<Priority> {
    match ctx.entry {
        BootEntry::Pvh => xen_leaf(ctx, src).is_some().then_some(PRIORITY),
        // `src` is Xen's forced-emulation CPUID here (see `detect`).
        BootEntry::XenPv => probe_hidden(src).map(|_| PRIORITY),
        // A Xen HVM guest booted by firmware or a loader: the HVM mode.
        BootEntry::Other => ctx.cpuid.find(HypervisorKind::Xen).map(|_| PRIORITY),
    }
}

/// The bases Xen uses: 0x40000000, or 0x40000100 behind Viridian.
const BASES: [u32; 2] = [0x4000_0000, 0x4000_0100];

/// Xen's base leaf: the one the scan found, or, for a kernel entered
/// through the PVH entry on a CPU whose hypervisor bit is clear (so the
/// scan looked at nothing), Xen's signature read directly at one of its
/// two bases ([`probe_hidden`]). Xen can hide the bit from a PVH domain
/// (`dom0-cpuid=no-hypervisor` on its command line) and still be the only
/// thing that can run it; Linux's PVH entry finds Xen by its signature
/// alone the same way.
pub fn xen_leaf(ctx: &BootContext<'_>, src: &impl CpuidSource) -> Option<HypervisorLeaf> {
    if let Some(leaf) = ctx.cpuid.find(HypervisorKind::Xen) {
        return Some(*leaf);
    }
    if ctx.entry != BootEntry::Pvh || ctx.cpuid.hypervisor_bit {
        return None;
    }
    probe_hidden(src)
}

/// Xen's exact signature at 0x40000000 or 0x40000100 with a range that
/// holds at least the version and hypercall leaves, whatever the
/// hypervisor bit says. Only for kernels that know they run virtualised
/// (a PVH entry): a bare CPU answers leaves it lacks with other leaves'
/// data, though never with this signature and range.
pub fn probe_hidden(src: &impl CpuidSource) -> Option<HypervisorLeaf> {
    BASES.into_iter().find_map(|base| {
        let r = src.cpuid(base, 0);
        let xen = HypervisorKind::from_signature(signature_of(&r)) == HypervisorKind::Xen
            && r.eax >= base + LEAF_HYPERCALL
            && r.eax < base + HYPERVISOR_LEAF_STEP;
        xen.then_some(HypervisorLeaf {
            base,
            max_leaf: r.eax,
            kind: HypervisorKind::Xen,
        })
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pvops_core::cpu::CpuidResult;
    use pvops_core::detect::{scan, CpuidScan};

    /// Viridian at 0x40000000, Xen 4.17 at 0x40000100 with the HVM leaf.
    pub(crate) struct ViridianThenXen;

    fn sig(s: &[u8; 12], max: u32) -> CpuidResult {
        let w = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap());
        CpuidResult {
            eax: max,
            ebx: w(0),
            ecx: w(4),
            edx: w(8),
        }
    }

    impl CpuidSource for ViridianThenXen {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            match leaf {
                1 => CpuidResult {
                    ecx: 1 << 31,
                    ..Default::default()
                },
                0x4000_0000 => sig(b"Microsoft Hv", 0x4000_0006),
                0x4000_0100 => sig(b"XenVMMXenVMM", 0x4000_0105),
                0x4000_0101 => CpuidResult {
                    eax: 0x0004_0011,
                    ..Default::default()
                },
                0x4000_0102 => CpuidResult {
                    eax: 1,
                    ebx: 0x4000_0000,
                    ..Default::default()
                },
                0x4000_0104 => CpuidResult {
                    eax: (1 << 3) | (1 << 4),
                    ebx: 1,
                    ecx: 0,
                    edx: 0,
                },
                _ => CpuidResult::default(),
            }
        }
    }

    fn ctx(cpuid: CpuidScan, entry: BootEntry) -> BootContext<'static> {
        BootContext::new(entry, "", cpuid)
    }

    #[test]
    fn xen_behind_viridian_is_found_at_the_second_base() {
        let s = scan(&ViridianThenXen);
        assert_eq!(s.primary().map(|l| l.kind), Some(HypervisorKind::HyperV));
        let leaf = s.find(HypervisorKind::Xen).unwrap();
        assert_eq!(leaf.base, 0x4000_0100);
        let x = XenCpuid::read(&ViridianThenXen, leaf);
        assert_eq!(x.version, (4, 17));
        assert!(x.new_enough());
        assert_eq!(x.hypercall_msr, Some(0x4000_0000));
        assert_eq!(x.vcpu_id_leaf(), Some(0x4000_0104));
        assert_eq!(x.tsc_flags, Some(0));
        assert!(x.tsc_native());
        assert_eq!(detect(&ctx(s, BootEntry::Pvh)), Some(PRIORITY));
    }

    #[test]
    fn firmware_entry_bids_for_hvm_mode_and_no_bid_without_xen() {
        let s = scan(&ViridianThenXen);
        // Entered by firmware under Xen (behind Viridian too): HVM mode.
        assert_eq!(detect(&ctx(s, BootEntry::Other)), Some(PRIORITY));
        // The PV entry: Xen's own CPUID view (a fake here) decides.
        assert_eq!(
            detect_with(&ctx(s, BootEntry::XenPv), &ViridianThenXen),
            Some(PRIORITY)
        );
        // Nothing found, and nothing at Xen's bases either (a fake CPU:
        // with the bit clear, `detect` would read the real one).
        struct Bare;
        impl CpuidSource for Bare {
            fn cpuid(&self, _: u32, _: u32) -> CpuidResult {
                CpuidResult::default()
            }
        }
        assert_eq!(
            detect_with(&ctx(CpuidScan::empty(), BootEntry::Pvh), &Bare),
            None
        );
        assert_eq!(
            detect_with(&ctx(CpuidScan::empty(), BootEntry::XenPv), &Bare),
            None
        );
    }

    /// Xen 4.17 at 0x40000000 with CPUID.1:ECX.hypervisor clear.
    struct HiddenBit;
    impl CpuidSource for HiddenBit {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            match leaf {
                0x4000_0000 => sig(b"XenVMMXenVMM", 0x4000_0005),
                _ => CpuidResult::default(),
            }
        }
    }

    #[test]
    fn hidden_hypervisor_bit_is_looked_past_only_after_a_pvh_entry() {
        let s = scan(&HiddenBit);
        assert!(!s.hypervisor_bit);
        assert_eq!(s, CpuidScan::empty(), "the scan does not look");
        let pvh = ctx(s, BootEntry::Pvh);
        let leaf = xen_leaf(&pvh, &HiddenBit).unwrap();
        assert_eq!((leaf.base, leaf.max_leaf), (0x4000_0000, 0x4000_0005));
        assert_eq!(detect_with(&pvh, &HiddenBit), Some(PRIORITY));
        assert_eq!(detect_with(&ctx(s, BootEntry::Other), &HiddenBit), None);
        // Not Xen, or a range too short for the hypercall leaf: nothing.
        struct Kvm;
        impl CpuidSource for Kvm {
            fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
                match leaf {
                    0x4000_0000 => sig(b"KVMKVMKVM\0\0\0", 0x4000_0001),
                    0x4000_0100 => sig(b"XenVMMXenVMM", 0x4000_0101),
                    _ => CpuidResult::default(),
                }
            }
        }
        assert_eq!(probe_hidden(&Kvm), None);
        assert_eq!(detect_with(&pvh, &Kvm), None);
        // With the bit set, the scan's answer stands (found nothing: no bid).
        let mut bit = CpuidScan::empty();
        bit.hypervisor_bit = true;
        assert_eq!(detect_with(&ctx(bit, BootEntry::Pvh), &HiddenBit), None);
    }

    #[test]
    fn old_or_truncated_xen() {
        struct Old;
        impl CpuidSource for Old {
            fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
                match leaf {
                    1 => CpuidResult {
                        ecx: 1 << 31,
                        ..Default::default()
                    },
                    // Only the version leaf: no hypercall or HVM leaf.
                    0x4000_0000 => sig(b"XenVMMXenVMM", 0x4000_0001),
                    0x4000_0001 => CpuidResult {
                        eax: 0x0004_0008,
                        ..Default::default()
                    },
                    // Present in the CPU's answers but beyond the range:
                    // must not be read.
                    0x4000_0004 => CpuidResult {
                        eax: 1 << 3,
                        ..Default::default()
                    },
                    _ => CpuidResult::default(),
                }
            }
        }
        let s = scan(&Old);
        let x = XenCpuid::read(&Old, s.find(HypervisorKind::Xen).unwrap());
        assert_eq!(x.version, (4, 8));
        assert!(!x.new_enough());
        assert_eq!(x.hypercall_msr, None);
        assert_eq!(x.hvm, None);
        assert_eq!(x.vcpu_id_leaf(), None);
        assert!(!x.tsc_native(), "no TSC leaf: assume emulated");
    }
}
