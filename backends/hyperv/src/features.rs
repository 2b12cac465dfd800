//! What the host offers (CPUID leaves 0x40000001..5 read once into
//! [`HvCpuid`], a parser of hypervisor-written data, fuzzed), the
//! features this backend has ([`Feature`], [`FeatureSet`]) and which
//! CPUID bits each needs ([`offered`]).

use pvops_core::detect::{CpuidSource, HypervisorLeaf};

use crate::abi::{self, feature, leaf, privilege, recommend};

/// The Hyper-V leaves as the host filled them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HvCpuid {
    /// The base the leaves were found at.
    pub base: u32,
    /// Highest leaf (EAX of the base).
    pub max_leaf: u32,
    /// Interface signature (EAX of base + 1); [`abi::INTERFACE_HV1`] for a
    /// TLFS hypervisor.
    pub interface: u32,
    /// Privileges (EAX of base + 3).
    pub privileges: u32,
    /// Features (EDX of base + 3).
    pub features: u32,
    /// Recommendations (EAX of base + 4).
    pub recommendations: u32,
    /// Spin-wait retries before notifying (EBX of base + 4).
    pub spin_retries: u32,
    /// Virtual processors the partition may have (EAX of base + 5), 0 if
    /// not given.
    pub max_vps: u32,
}

impl HvCpuid {
    /// Reads the leaves from `src` at `found.base`. Leaves beyond the
    /// base's max leaf read as zero (nothing offered).
    pub fn read(src: &impl CpuidSource, found: &HypervisorLeaf) -> Self {
        let base = found.base;
        let max_leaf = src.cpuid(base + leaf::VENDOR, 0).eax;
        let get = |l: u32| {
            if base + l <= max_leaf {
                src.cpuid(base + l, 0)
            } else {
                pvops_core::cpu::CpuidResult {
                    eax: 0,
                    ebx: 0,
                    ecx: 0,
                    edx: 0,
                }
            }
        };
        let iface = get(leaf::INTERFACE);
        let feat = get(leaf::FEATURES);
        let rec = get(leaf::RECOMMENDATIONS);
        let lim = get(leaf::LIMITS);
        Self::from_words(
            base,
            max_leaf,
            [iface.eax, feat.eax, feat.edx, rec.eax, rec.ebx, lim.eax],
        )
    }

    /// The leaves from their raw words: interface, privileges (EAX of
    /// 3), features (EDX of 3), recommendations (EAX of 4), spin retries
    /// (EBX of 4), max VPs (EAX of 5). Any words are accepted; a host
    /// that lies can only turn features on that then fail their own checks.
    pub const fn from_words(base: u32, max_leaf: u32, w: [u32; 6]) -> Self {
        HvCpuid {
            base,
            max_leaf,
            interface: w[0],
            privileges: w[1],
            features: w[2],
            recommendations: w[3],
            spin_retries: w[4],
            max_vps: w[5],
        }
    }

    /// Whether the interface is the TLFS's (`Hv#1`): only then do the
    /// other leaves mean what this crate reads into them.
    pub const fn is_tlfs(&self) -> bool {
        self.interface == abi::INTERFACE_HV1
    }

    const fn has_p(&self, bit: u32) -> bool {
        self.privileges & bit != 0
    }
    const fn has_f(&self, bit: u32) -> bool {
        self.features & bit != 0
    }
    const fn has_r(&self, bit: u32) -> bool {
        self.recommendations & bit != 0
    }

    /// Whether a reference time source exists (the TSC page or the
    /// reference counter MSR).
    pub const fn has_reference_time(&self) -> bool {
        self.has_p(privilege::REFERENCE_TSC) || self.has_p(privilege::TIME_REF_COUNT)
    }
}

pvops_core::feature_set! {
    /// One Hyper-V feature of this backend, in features-line order.
    pub enum Feature;
    /// A set of [`Feature`]s (bit n is `Feature::ALL[n]`).
    pub struct FeatureSet: u16 {
        /// `hv-hypercall`: guest OS id and the hypercall page.
        Hypercall = "hv-hypercall" => HYPERCALL,
        /// `hv-vpindex`: each CPU's VP index (the targets of IPIs and flushes).
        VpIndex = "hv-vpindex" => VP_INDEX,
        /// `hv-ref-tsc`: sched_clock from the reference TSC page, no exit.
        RefTsc = "hv-ref-tsc" => REF_TSC,
        /// `hv-frequencies`: TSC and APIC frequencies from MSRs (no PIT).
        Frequencies = "hv-frequencies" => FREQUENCIES,
        /// `hv-stimer-direct`: synthetic timer 0 in direct mode as the one-shot timer.
        StimerDirect = "hv-stimer-direct" => STIMER_DIRECT,
        /// `hv-apic-msrs`: EOI through the synthetic EOI MSR.
        ApicMsrs = "hv-apic-msrs" => APIC_MSRS,
        /// `hv-apic-assist`: the VP assist page's "no EOI required" bit.
        ApicAssist = "hv-apic-assist" => APIC_ASSIST,
        /// `hv-ipi`: IPIs to a set of CPUs in one hypercall.
        Ipi = "hv-ipi" => IPI,
        /// `hv-tlbflush`: remote TLB flushes in one hypercall.
        TlbFlush = "hv-tlbflush" => TLB_FLUSH,
        /// `hv-spin-wait`: long lock waits notify the hypervisor.
        SpinWait = "hv-spin-wait" => SPIN_WAIT,
        /// `hv-runtime`: the steal clock from the VP runtime MSR.
        Runtime = "hv-runtime" => RUNTIME,
        /// `hv-crash`: a kernel panic reported through the crash MSRs.
        Crash = "hv-crash" => CRASH,
    }
}

impl FeatureSet {
    /// Features that make hypercalls (need `hv-hypercall`).
    pub const NEEDS_HYPERCALL: FeatureSet = FeatureSet::IPI
        .union(FeatureSet::TLB_FLUSH)
        .union(FeatureSet::SPIN_WAIT);
    /// Features that name other CPUs by VP index (need `hv-vpindex`).
    pub const NEEDS_VP_INDEX: FeatureSet = FeatureSet::IPI.union(FeatureSet::TLB_FLUSH);

    /// Drops features whose prerequisites are gone.
    pub fn with_dependencies(self) -> FeatureSet {
        let mut s = self;
        if !s.contains(FeatureSet::HYPERCALL) {
            s -= FeatureSet::NEEDS_HYPERCALL;
        }
        if !s.contains(FeatureSet::VP_INDEX) {
            s -= FeatureSet::NEEDS_VP_INDEX;
        }
        if !s.contains(FeatureSet::APIC_MSRS) {
            // The assist page's fallback is the EOI MSR.
            s -= FeatureSet::APIC_ASSIST;
        }
        s
    }
}

/// The features the CPUID bits offer (before the command line, the
/// per-op choice and failures have their say):
///
/// | feature | needs (leaf.register bit) |
/// |---|---|
/// | `hv-hypercall` | 3.EAX 5 |
/// | `hv-vpindex` | 3.EAX 6 |
/// | `hv-ref-tsc` | 3.EAX 9 |
/// | `hv-frequencies` | 3.EAX 11 and 3.EDX 8 |
/// | `hv-stimer-direct` | 3.EAX 3, 3.EDX 19, a reference time (3.EAX 1 or 9) |
/// | `hv-apic-msrs` | 3.EAX 4 |
/// | `hv-apic-assist` | 3.EAX 4 |
/// | `hv-ipi` | 4.EAX 10, `hv-hypercall`, `hv-vpindex` |
/// | `hv-tlbflush` | 4.EAX 2, `hv-hypercall`, `hv-vpindex` |
/// | `hv-spin-wait` | 4.EBX not 0xffffffff, `hv-hypercall` |
/// | `hv-runtime` | 3.EAX 0, a reference time |
/// | `hv-crash` | 3.EDX 10 |
pub fn offered(c: &HvCpuid) -> FeatureSet {
    if !c.is_tlfs() {
        return FeatureSet::empty();
    }
    let mut s = FeatureSet::empty();
    let mut add = |cond: bool, f: FeatureSet| {
        if cond {
            s |= f;
        }
    };
    add(c.has_p(privilege::HYPERCALL), FeatureSet::HYPERCALL);
    add(c.has_p(privilege::VP_INDEX), FeatureSet::VP_INDEX);
    add(c.has_p(privilege::REFERENCE_TSC), FeatureSet::REF_TSC);
    add(
        c.has_p(privilege::FREQUENCY_MSRS) && c.has_f(feature::FREQUENCY_MSRS),
        FeatureSet::FREQUENCIES,
    );
    add(
        c.has_p(privilege::SYNTIMERS) && c.has_f(feature::STIMER_DIRECT) && c.has_reference_time(),
        FeatureSet::STIMER_DIRECT,
    );
    add(c.has_p(privilege::APIC_ACCESS), FeatureSet::APIC_MSRS);
    add(c.has_p(privilege::APIC_ACCESS), FeatureSet::APIC_ASSIST);
    add(c.has_r(recommend::CLUSTER_IPI), FeatureSet::IPI);
    add(c.has_r(recommend::REMOTE_TLB_FLUSH), FeatureSet::TLB_FLUSH);
    add(
        c.spin_retries != abi::SPIN_NEVER_NOTIFY && c.spin_retries != 0,
        FeatureSet::SPIN_WAIT,
    );
    add(
        c.has_p(privilege::VP_RUNTIME) && c.has_reference_time(),
        FeatureSet::RUNTIME,
    );
    add(c.has_f(feature::GUEST_CRASH_MSRS), FeatureSet::CRASH);
    s.with_dependencies()
}

/// Whether the Ex (sparse VP set) hypercalls may be used.
pub const fn ex_masks(c: &HvCpuid) -> bool {
    c.has_r(recommend::EX_PROCESSOR_MASKS)
}

/// `pvops.hyperv.off=<names>` (comma-separated, `all` for every one):
/// the set named, and the first word that named nothing.
pub fn parse_off(list: &str) -> (FeatureSet, Option<&str>) {
    FeatureSet::parse_off(list)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What QEMU 7.2 on KVM gives with every hv-* flag of the `hyperv`
    /// environment (bits as the TLFS numbers them).
    pub(crate) fn qemu_all() -> HvCpuid {
        HvCpuid::from_words(
            0x4000_0000,
            0x4000_000a,
            [
                abi::INTERFACE_HV1,
                0x0000_0b7f | privilege::FREQUENCY_MSRS,
                feature::FREQUENCY_MSRS | feature::GUEST_CRASH_MSRS | feature::STIMER_DIRECT,
                recommend::REMOTE_TLB_FLUSH
                    | recommend::RELAXED_TIMING
                    | recommend::CLUSTER_IPI
                    | recommend::EX_PROCESSOR_MASKS,
                0x1fff,
                4096,
            ],
        )
    }

    #[test]
    fn everything_offered() {
        assert_eq!(offered(&qemu_all()), FeatureSet::all());
        assert!(ex_masks(&qemu_all()));
    }

    #[test]
    fn each_bit_gates_its_feature() {
        let all = qemu_all();
        let without = |f: fn(&mut HvCpuid)| {
            let mut c = all;
            f(&mut c);
            offered(&c)
        };
        assert_eq!(
            without(|c| c.privileges &= !privilege::HYPERCALL),
            FeatureSet::all() - FeatureSet::HYPERCALL - FeatureSet::NEEDS_HYPERCALL
        );
        assert_eq!(
            without(|c| c.privileges &= !privilege::VP_INDEX),
            FeatureSet::all() - FeatureSet::VP_INDEX - FeatureSet::NEEDS_VP_INDEX
        );
        assert_eq!(
            without(|c| c.features &= !feature::STIMER_DIRECT),
            FeatureSet::all() - FeatureSet::STIMER_DIRECT
        );
        assert_eq!(
            without(|c| c.spin_retries = abi::SPIN_NEVER_NOTIFY),
            FeatureSet::all() - FeatureSet::SPIN_WAIT
        );
        assert_eq!(
            without(|c| c.features &= !feature::GUEST_CRASH_MSRS),
            FeatureSet::all() - FeatureSet::CRASH
        );
        assert_eq!(
            without(|c| c.privileges &= !privilege::APIC_ACCESS),
            FeatureSet::all() - FeatureSet::APIC_MSRS - FeatureSet::APIC_ASSIST
        );
        // No reference time at all: no timer, no runtime, no clock.
        assert_eq!(
            without(|c| c.privileges &= !(privilege::REFERENCE_TSC | privilege::TIME_REF_COUNT)),
            FeatureSet::all()
                - FeatureSet::REF_TSC
                - FeatureSet::STIMER_DIRECT
                - FeatureSet::RUNTIME
        );
        // Not the TLFS interface: nothing, whatever the other words say.
        assert_eq!(
            without(|c| c.interface = u32::from_le_bytes(*b"XXXX")),
            FeatureSet::empty()
        );
    }

    #[test]
    fn off_list() {
        assert_eq!(
            parse_off("hv-ipi, hv-crash,,"),
            (FeatureSet::IPI | FeatureSet::CRASH, None)
        );
        assert_eq!(parse_off("all,x").0, FeatureSet::all());
        assert_eq!(parse_off("hv-ipi,bogus,more").1, Some("bogus"));
    }

    #[test]
    fn names_round_trip() {
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
            assert_eq!(f.set().features().next(), Some(f));
        }
    }
}
