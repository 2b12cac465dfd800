//! The KVM features leaf (base + 1): feature bits in EAX, hint bits in
//! EDX, read through a [`CpuidSource`] so tests can make CPUID say
//! anything.

use bitflags::bitflags;
use core::fmt;
use pvops_core::detect::{CpuidSource, HypervisorLeaf};

use crate::abi::CPUID_FEATURES_OFFSET;

bitflags! {
    /// `KVM_FEATURE_*`: EAX of the features leaf. Bits KVM does not
    /// document are kept ([`KvmFeatures::unknown`]), never dropped.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct KvmFeatures: u32 {
        /// kvmclock at the old MSRs 0x11/0x12.
        const CLOCKSOURCE = 1 << 0;
        /// I/O port accesses need no delay.
        const NOP_IO_DELAY = 1 << 1;
        /// Deprecated MMU hypercall.
        const MMU_OP = 1 << 2;
        /// kvmclock at MSRs 0x4b564d00/0x4b564d01.
        const CLOCKSOURCE2 = 1 << 3;
        /// Asynchronous page faults (MSR 0x4b564d02).
        const ASYNC_PF = 1 << 4;
        /// Steal time (MSR 0x4b564d03).
        const STEAL_TIME = 1 << 5;
        /// Paravirtual end of interrupt (MSR 0x4b564d04).
        const PV_EOI = 1 << 6;
        /// Halted vCPUs can be woken with `KVM_HC_KICK_CPU`.
        const PV_UNHALT = 1 << 7;
        /// The host flushes a preempted vCPU's TLB on request.
        const PV_TLB_FLUSH = 1 << 9;
        /// Async page faults as #PF VM exits to a nested hypervisor.
        const ASYNC_PF_VMEXIT = 1 << 10;
        /// Multicast IPIs with `KVM_HC_SEND_IPI`.
        const PV_SEND_IPI = 1 << 11;
        /// Host-side halt polling can be switched (MSR 0x4b564d05).
        const POLL_CONTROL = 1 << 12;
        /// `KVM_HC_SCHED_YIELD`.
        const PV_SCHED_YIELD = 1 << 13;
        /// "Page ready" async page faults as an interrupt.
        const ASYNC_PF_INT = 1 << 14;
        /// Extended destination ID in MSI address bits 11-5.
        const MSI_EXT_DEST_ID = 1 << 15;
        /// `KVM_HC_MAP_GPA_RANGE`.
        const HC_MAP_GPA_RANGE = 1 << 16;
        /// `MSR_KVM_MIGRATION_CONTROL`.
        const MIGRATION_CONTROL = 1 << 17;
        /// The host may set the pvclock TSC-stable flag.
        const CLOCKSOURCE_STABLE_BIT = 1 << 24;
    }
}

bitflags! {
    /// `KVM_HINTS_*`: EDX of the features leaf. Unknown bits are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct KvmHints: u32 {
        /// vCPUs are never preempted for an unlimited time (dedicated
        /// physical CPUs): preemption-aware tricks are pointless.
        const REALTIME = 1 << 0;
    }
}

impl KvmFeatures {
    /// Set bits that KVM's documentation does not name.
    pub fn unknown(self) -> u32 {
        self.bits() & !Self::all().bits()
    }
}

impl KvmHints {
    /// Set bits that KVM's documentation does not name.
    pub fn unknown(self) -> u32 {
        self.bits() & !Self::all().bits()
    }
}

/// What the features leaf says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvmCpuid {
    /// The base leaf KVM was found at.
    pub base: u32,
    /// Whether the features leaf is within KVM's range at all.
    pub has_features_leaf: bool,
    /// EAX.
    pub features: KvmFeatures,
    /// EDX.
    pub hints: KvmHints,
}

impl KvmCpuid {
    /// Reads the features leaf of the KVM found at `leaf`. A range that
    /// ends at the base (max leaf below base + 1) has no features: every
    /// op stays native.
    pub fn read(src: &impl CpuidSource, leaf: &HypervisorLeaf) -> Self {
        if !leaf.has_leaf(CPUID_FEATURES_OFFSET) {
            return Self {
                base: leaf.base,
                ..Self::default()
            };
        }
        let r = src.cpuid(leaf.base + CPUID_FEATURES_OFFSET, 0);
        Self {
            base: leaf.base,
            has_features_leaf: true,
            features: KvmFeatures::from_bits_retain(r.eax),
            hints: KvmHints::from_bits_retain(r.edx),
        }
    }

    /// Whether `f` is advertised.
    pub fn has(&self, f: KvmFeatures) -> bool {
        self.features.contains(f)
    }

    /// Whether any bit is set that this crate does not know.
    pub fn has_unknown(&self) -> bool {
        self.features.unknown() != 0 || self.hints.unknown() != 0
    }
}

/// `base=0x40000000 eax=0x... edx=0x... unknown-eax=0x... unknown-edx=0x...`
impl fmt::Display for KvmCpuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "base={:#x} eax={:#x} edx={:#x} unknown-eax={:#x} unknown-edx={:#x}",
            self.base,
            self.features.bits(),
            self.hints.bits(),
            self.features.unknown(),
            self.hints.unknown()
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pvops_core::cpu::CpuidResult;
    use pvops_core::detect::{scan, HypervisorKind};
    use std::string::ToString;

    /// A CPUID that answers the hypervisor bit, a KVM base with `max`, and
    /// a features leaf.
    pub(crate) struct FakeCpuid {
        pub max: u32,
        pub eax: u32,
        pub edx: u32,
        pub vendor: &'static [u8; 12],
    }

    impl CpuidSource for FakeCpuid {
        fn cpuid(&self, leaf: u32, _sub: u32) -> CpuidResult {
            let w = |s: &[u8]| u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
            match leaf {
                0 => CpuidResult {
                    eax: 0xd,
                    ebx: w(&self.vendor[0..4]),
                    edx: w(&self.vendor[4..8]),
                    ecx: w(&self.vendor[8..12]),
                },
                1 => CpuidResult {
                    ecx: 1 << 31,
                    ..Default::default()
                },
                0x4000_0000 => CpuidResult {
                    eax: self.max,
                    ebx: 0x4b4d_564b,
                    ecx: 0x564b_4d56,
                    edx: 0x4d,
                },
                // A CPU answers leaves beyond the range with junk: make it
                // look like features so ignoring the range would show.
                0x4000_0001 => CpuidResult {
                    eax: self.eax,
                    edx: self.edx,
                    ..Default::default()
                },
                _ => CpuidResult::default(),
            }
        }
    }

    fn read(max: u32, eax: u32, edx: u32) -> KvmCpuid {
        let f = FakeCpuid {
            max,
            eax,
            edx,
            vendor: b"GenuineIntel",
        };
        let s = scan(&f);
        let leaf = s.find(HypervisorKind::Kvm).expect("kvm found");
        KvmCpuid::read(&f, leaf)
    }

    #[test]
    fn qemu_defaults_and_pv_flags() {
        let c = read(0x4000_0001, 0x0100_007b, 0);
        assert!(c.has_features_leaf);
        assert_eq!(
            c.features,
            KvmFeatures::CLOCKSOURCE
                | KvmFeatures::NOP_IO_DELAY
                | KvmFeatures::CLOCKSOURCE2
                | KvmFeatures::ASYNC_PF
                | KvmFeatures::STEAL_TIME
                | KvmFeatures::PV_EOI
                | KvmFeatures::CLOCKSOURCE_STABLE_BIT
        );
        assert!(!c.has_unknown());
        let c = read(0x4000_0001, 0x0100_2afb, 0);
        for f in [
            KvmFeatures::PV_UNHALT,
            KvmFeatures::PV_TLB_FLUSH,
            KvmFeatures::PV_SEND_IPI,
            KvmFeatures::PV_SCHED_YIELD,
        ] {
            assert!(c.has(f), "{f:?}");
        }
        assert!(!c.has(KvmFeatures::POLL_CONTROL));
    }

    #[test]
    fn unknown_bits_are_kept_and_reported() {
        let c = read(0x4000_0010, (1 << 8) | (1 << 31) | 1, 0b110);
        assert_eq!(c.features.unknown(), (1 << 8) | (1 << 31));
        assert!(c.has(KvmFeatures::CLOCKSOURCE));
        assert_eq!(c.hints.unknown(), 0b110);
        assert!(!c.hints.contains(KvmHints::REALTIME));
        assert!(c.has_unknown());
        let line = c.to_string();
        assert!(line.contains("unknown-eax=0x80000100"), "{line}");
        assert!(line.contains("unknown-edx=0x6"), "{line}");
    }

    #[test]
    fn truncated_range_means_no_features() {
        // max_leaf == base: the features leaf is outside KVM's range.
        let c = read(0x4000_0000, 0xffff_ffff, 1);
        assert!(!c.has_features_leaf);
        assert_eq!(c.features, KvmFeatures::empty());
        assert_eq!(c.hints, KvmHints::empty());
    }

    #[test]
    fn old_host_eax_zero_reads_features() {
        // Old KVM reports EAX = 0 at the base: read as "features leaf only".
        let c = read(0, KvmFeatures::CLOCKSOURCE2.bits(), 0);
        assert!(c.has_features_leaf);
        assert!(c.has(KvmFeatures::CLOCKSOURCE2));
    }
}
