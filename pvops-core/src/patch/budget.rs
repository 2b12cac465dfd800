//! The prefix budget: how many prefixes an instruction may carry once the
//! patcher has widened it into a full-site form (see [`super`], "Full-site
//! forms"), chosen once per CPU from CPUID's vendor, family and model, as
//! Linux once chose its NOPs per CPU at boot (`arch_init_ideal_nops`: P6,
//! K8 or K7 NOPs by vendor and family).
//!
//! Two values only. [`FULL_SITE_PREFIXES`] (5, a site's length less one
//! opcode byte) lets every prefixable instruction take all the room it
//! needs, so even a 1-byte `cli`/`sti` fills its site alone.
//! [`SAFE_PREFIXES`] (3) is what every x86-64 decoder takes without
//! penalty; under it a 1-byte instruction keeps a padding NOP. A CPU gets
//! the full site only where the sources below say its decoders take that
//! many prefixes at full speed, and 3 everywhere else, an unknown CPU
//! included.
//!
//! # The table
//!
//! | vendor, display family | models | budget | why |
//! | --- | --- | ---: | --- |
//! | Intel 6 | Sandy Bridge and its big-core descendants up to Granite Rapids ([`intel_big_core`]) | 5 | Agner Fog; LLVM `TuningFast15ByteNOP`; GNU as pads them with 5 |
//! | Intel 6 | every other: Core 2, Nehalem, Westmere; the Atom line (Bonnell to Tremont, Gracemont, Crestmont, Darkmont); Lakefield and the hybrids (Alder, Raptor, Meteor, Lunar, Arrow, Panther Lake); Xeon Phi | 3 | prefix limits documented for the Atom line and Xeon Phi, nothing for the rest |
//! | Intel 15, 18, 19, ... | all | 3 | NetBurst; families not described yet |
//! | AMD 14h, 16h | all (Bobcat; Jaguar, Puma) | 5 | Agner Fog; LLVM |
//! | AMD 17h, 19h, 1Ah | all (Zen to Zen 5) | 5 | Agner Fog (Zen); LLVM (znver1 to znver5) |
//! | AMD 15h | all (Bulldozer to Excavator) | 3 | 14-15 cycles for 4-7 prefixes |
//! | AMD 0Fh, 10h-12h, others | all (K8, K10 and derivatives) | 3 | three documented, no more |
//! | Hygon, Zhaoxin, Centaur, VIA, any other | all | 3 | not described |
//!
//! # Sources
//!
//! - Agner Fog, "The microarchitecture of Intel, AMD and VIA CPUs", the
//!   "Instruction decoding" section of each chapter, as summarised per
//!   family in LLVM review D76398 (2020, prefix padding in
//!   `X86AsmBackend.cpp`): Sandy Bridge and later decode any number of
//!   prefixes in one cycle; Ryzen likewise; Bobcat and Jaguar have no
//!   penalty for multiple prefixes; K8 and K10 decode three per instruction per cycle (nothing
//!   is said for more); Bulldozer to Excavator three, else a 10-15 cycle
//!   stall (the Bulldozer chapter: 14-15 extra cycles for 4-7 prefixes);
//!   Atom three (severe delay for more); Silvermont three prefixes *and
//!   escape bytes*; Goldmont "most combinations of" four; Knights Landing
//!   three and escape bytes, 5-6 cycle stall beyond.
//! - LLVM's x86 tunings (`llvm/lib/Target/X86/X86.td`): `TuningFast15ByteNOP`
//!   ("Target can quickly decode up to 15 byte NOPs"), whose 15-byte NOP
//!   (`X86AsmBackend::writeNopData`) carries seven prefixes (six `66`, one
//!   `2e`), is set for sandybridge to sapphirerapids/graniterapids, for
//!   btver1/btver2 and znver1 to znver5; bdver1-4 get only
//!   `TuningFast11ByteNOP` (three prefixes), silvermont
//!   `TuningFast7ByteNOP` (none), and nehalem, westmere, core2, goldmont,
//!   goldmont-plus, tremont, knl, k8 and amdfam10 none of them (ten bytes,
//!   two prefixes). Checked with LLVM 19.1's `llvm-mc -mcpu=...` on
//!   `.p2align` padding. LLVM also gives 15-byte NOPs to alderlake and
//!   its hybrid successors and to the E-core-only gracemont,
//!   sierraforest, grandridge and clearwaterforest; but its alderlake list
//!   is Skylake's plus additions, a P-core's, while every Atom-line decoder
//!   anyone documented (Atom, Silvermont, Goldmont, Tremont, Knights
//!   Landing) has a prefix limit and no source here describes Gracemont's
//!   or its successors'. A hybrid's cores share one family and model and
//!   the patched text runs on all of them, so every part with Atom-line
//!   cores keeps 3. LLVM's assembler itself notes that "various targets
//!   (older chips mostly, but also Atom family) encounter decoder stalls
//!   with too many prefixes" (`padInstructionViaPrefix`).
//! - GNU as: its longest single NOP is 11 bytes, three prefixes, for every
//!   64-bit tuning (`alt_patt` in `gas/config/tc-i386.c`; `.nops` refuses
//!   more in binutils 2.40), the safe floor used here; Linux stops at the
//!   same length "because a number of uarchs have severe decode penalties
//!   for more than 3 prefixes" (commit df25edbac31e). Against Intel's JCC
//!   erratum, which concerns Skylake-derived cores, GNU as pads
//!   instructions with up to five segment prefixes each by default
//!   (`-malign-branch-prefix-size`, default 5).
//! - AMD's Software Optimization Guide for AMD64 Processors (25112, 4.12)
//!   puts at most three `66h` on a NOP, the guidance of the K8 era.
//!
//! Hygon's Dhyana (family 18h) derives from Zen, but none of these sources
//! describes it, so it keeps 3. Under a hypervisor CPUID may describe a
//! virtual CPU (QEMU's default `qemu64` is AMD family 0Fh): the budget then
//! follows what the hypervisor says, which errs towards 3.

use super::SITE_LEN;
use crate::cpu::CpuidResult;
use crate::detect::CpuidSource;

/// The budget on CPUs no source vouches for: three prefixes per
/// instruction, its own included, which every x86-64 decoder takes without
/// penalty (see the module docs).
pub const SAFE_PREFIXES: u8 = 3;

/// The budget where the decoders take any number of prefixes: enough for a
/// 1-byte instruction to fill a whole site alone.
pub const FULL_SITE_PREFIXES: u8 = (SITE_LEN - 1) as u8;

/// A CPU vendor, from CPUID leaf 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Vendor {
    /// `GenuineIntel`.
    Intel,
    /// `AuthenticAMD`.
    Amd,
    /// `HygonGenuine`.
    Hygon,
    /// Any other (Zhaoxin, Centaur, VIA, a hypervisor's own string).
    Other,
}

impl Vendor {
    /// The vendor whose 12-byte string (EBX, EDX, ECX of leaf 0, in that
    /// order) is `s`.
    pub const fn from_string(s: &[u8; 12]) -> Vendor {
        match s {
            b"GenuineIntel" => Vendor::Intel,
            b"AuthenticAMD" => Vendor::Amd,
            b"HygonGenuine" => Vendor::Hygon,
            _ => Vendor::Other,
        }
    }
}

/// What the budget is chosen from: the vendor and the display family and
/// model of CPUID leaf 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuSignature {
    /// Leaf 0's vendor.
    pub vendor: Vendor,
    /// Display family: the base family, plus the extended family when the
    /// base is 0Fh.
    pub family: u32,
    /// Display model: the base model, with the extended model as its high
    /// nibble when the base family is 06h or 0Fh.
    pub model: u32,
}

impl CpuSignature {
    /// Reads leaves 0 and 1 from `src`. A CPU without leaf 1 gets family
    /// and model 0 (no entry of the table).
    pub fn read(src: &impl CpuidSource) -> CpuSignature {
        let l0 = src.cpuid(0, 0);
        let vendor = Vendor::from_string(&vendor_string(&l0));
        let (family, model) = if l0.eax >= 1 {
            family_model(src.cpuid(1, 0).eax)
        } else {
            (0, 0)
        };
        CpuSignature {
            vendor,
            family,
            model,
        }
    }

    /// This CPU's budget ([`prefix_budget`]).
    pub const fn prefix_budget(&self) -> u8 {
        prefix_budget(self.vendor, self.family, self.model)
    }
}

/// Leaf 0's vendor string: EBX, EDX, ECX.
fn vendor_string(l0: &CpuidResult) -> [u8; 12] {
    let mut s = [0u8; 12];
    s[0..4].copy_from_slice(&l0.ebx.to_le_bytes());
    s[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    s[8..12].copy_from_slice(&l0.ecx.to_le_bytes());
    s
}

/// The display family and model of a leaf 1 EAX, as both vendors define
/// them (Intel SDM vol. 2, CPUID, "Feature Information"; AMD APM vol. 3,
/// CPUID Fn0000_0001_EAX).
pub const fn family_model(eax: u32) -> (u32, u32) {
    let base_family = (eax >> 8) & 0xf;
    let base_model = (eax >> 4) & 0xf;
    let ext_family = (eax >> 20) & 0xff;
    let ext_model = (eax >> 16) & 0xf;
    let family = if base_family == 0xf {
        base_family + ext_family
    } else {
        base_family
    };
    let model = if base_family == 0x6 || base_family == 0xf {
        (ext_model << 4) | base_model
    } else {
        base_model
    };
    (family, model)
}

/// Whether Intel family 6 model `model` is a part made of Sandy Bridge's
/// descendants only (no Atom-line cores), the parts Agner Fog and LLVM
/// document as decoding any number of prefixes at full speed. Model
/// numbers as Linux's `intel-family.h` names them.
pub const fn intel_big_core(model: u32) -> bool {
    matches!(
        model,
        // Sandy Bridge, -E/EP; Ivy Bridge, -E/EP.
        0x2a | 0x2d | 0x3a | 0x3e
        // Haswell (client, -E/EP, ULT, GT3e).
        | 0x3c | 0x3f | 0x45 | 0x46
        // Broadwell (client, GT3e, -E/EP, -DE).
        | 0x3d | 0x47 | 0x4f | 0x56
        // Skylake (mobile, desktop, server: also Cascade and Cooper Lake).
        | 0x4e | 0x5e | 0x55
        // Kaby, Coffee, Whiskey, Amber and Comet Lake.
        | 0x8e | 0x9e | 0xa5 | 0xa6
        // Cannon Lake; Ice Lake (server, -D, client, mobile, NNPI).
        | 0x66 | 0x6a | 0x6c | 0x7d | 0x7e | 0x9d
        // Rocket Lake; Tiger Lake (mobile, desktop).
        | 0xa7 | 0x8c | 0x8d
        // Sapphire, Emerald and Granite Rapids (-X, -D).
        | 0x8f | 0xcf | 0xad | 0xae
    )
}

/// The prefix budget for a CPU: [`FULL_SITE_PREFIXES`] where the sources in
/// the module docs say its decoders take that many prefixes without
/// penalty, else [`SAFE_PREFIXES`]. `family` and `model` are the display
/// values ([`family_model`]).
pub const fn prefix_budget(vendor: Vendor, family: u32, model: u32) -> u8 {
    let full = match vendor {
        Vendor::Intel => family == 6 && intel_big_core(model),
        // Bobcat, Jaguar/Puma; Zen, Zen+, Zen 2; Zen 3, Zen 4; Zen 5.
        Vendor::Amd => matches!(family, 0x14 | 0x16 | 0x17 | 0x19 | 0x1a),
        Vendor::Hygon | Vendor::Other => false,
    };
    if full {
        FULL_SITE_PREFIXES
    } else {
        SAFE_PREFIXES
    }
}

/// The budget of the CPU `src` describes.
pub fn prefix_budget_of(src: &impl CpuidSource) -> u8 {
    CpuSignature::read(src).prefix_budget()
}

/// CPUID through the installed table's `cpu.cpuid` op: what [`super::apply`]
/// asks, so that it works wherever the kernel runs (in ring 3 under Xen PV,
/// the op is the backend's CPUID, whose family and model are the real
/// CPU's).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct InstalledCpuid;

impl CpuidSource for InstalledCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        crate::cpu::cpuid(leaf, subleaf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU that answers leaves 0 and 1 only.
    struct Fake {
        vendor: &'static [u8; 12],
        max_leaf: u32,
        leaf1_eax: u32,
    }

    impl CpuidSource for Fake {
        fn cpuid(&self, leaf: u32, _subleaf: u32) -> CpuidResult {
            let w = |i: usize| u32::from_le_bytes(self.vendor[i..i + 4].try_into().unwrap());
            match leaf {
                0 => CpuidResult {
                    eax: self.max_leaf,
                    ebx: w(0),
                    edx: w(4),
                    ecx: w(8),
                },
                1 if self.max_leaf >= 1 => CpuidResult {
                    eax: self.leaf1_eax,
                    ..CpuidResult::default()
                },
                _ => CpuidResult::default(),
            }
        }
    }

    fn fake(vendor: &'static [u8; 12], leaf1_eax: u32) -> Fake {
        Fake {
            vendor,
            max_leaf: 0x16,
            leaf1_eax,
        }
    }

    #[test]
    fn budgets_are_the_two_values() {
        assert_eq!(SAFE_PREFIXES, 3);
        assert_eq!(FULL_SITE_PREFIXES as usize, SITE_LEN - 1);
    }

    #[test]
    fn display_family_and_model() {
        // Real leaf 1 EAX values (stepping in the low nibble).
        // Skylake-SP: family 6, model 0x55.
        assert_eq!(family_model(0x0005_0654), (6, 0x55));
        // Rocket Lake: 6, 0xa7.
        assert_eq!(family_model(0x000a_0671), (6, 0xa7));
        // Sandy Bridge: 6, 0x2a.
        assert_eq!(family_model(0x0002_06a7), (6, 0x2a));
        // Zen 2 (Rome): 0x17, 0x31; Zen 4 (Genoa): 0x19, 0x11.
        assert_eq!(family_model(0x0083_0f10), (0x17, 0x31));
        assert_eq!(family_model(0x00a1_0f11), (0x19, 0x11));
        // Zen 5: 0x1a, 0x44.
        assert_eq!(family_model(0x00b4_0f40), (0x1a, 0x44));
        // Bulldozer (Zambezi): 0x15, 0x01; K8: 0x0f, 0x6b (QEMU's qemu64).
        assert_eq!(family_model(0x0060_0f12), (0x15, 0x01));
        assert_eq!(family_model(0x0006_0fb1), (0x0f, 0x6b));
        // A base family other than 6 or 15 ignores both extended fields.
        assert_eq!(family_model(0x0ff5_0543), (5, 4));
    }

    #[test]
    fn vendors() {
        assert_eq!(Vendor::from_string(b"GenuineIntel"), Vendor::Intel);
        assert_eq!(Vendor::from_string(b"AuthenticAMD"), Vendor::Amd);
        assert_eq!(Vendor::from_string(b"HygonGenuine"), Vendor::Hygon);
        assert_eq!(Vendor::from_string(b"CentaurHauls"), Vendor::Other);
        assert_eq!(Vendor::from_string(b"  Shanghai  "), Vendor::Other);
        assert_eq!(Vendor::from_string(&[0; 12]), Vendor::Other);
    }

    #[test]
    fn intel_big_cores_get_the_full_site() {
        let big = [
            0x2a, 0x2d, 0x3a, 0x3e, 0x3c, 0x3f, 0x45, 0x46, 0x3d, 0x47, 0x4f, 0x56, 0x4e, 0x5e,
            0x55, 0x8e, 0x9e, 0xa5, 0xa6, 0x66, 0x6a, 0x6c, 0x7d, 0x7e, 0x9d, 0xa7, 0x8c, 0x8d,
            0x8f, 0xcf, 0xad, 0xae,
        ];
        for m in big {
            assert_eq!(prefix_budget(Vendor::Intel, 6, m), 5, "model {m:#x}");
        }
        // Every other family 6 model is not a big-core-only part.
        for m in 0..=0xffu32 {
            if !big.contains(&m) {
                assert_eq!(prefix_budget(Vendor::Intel, 6, m), 3, "model {m:#x}");
            }
        }
    }

    #[test]
    fn intel_atom_line_hybrids_and_older_cores_keep_three() {
        let three = [
            // Core 2 (Merom, Penryn, Dunnington), Nehalem, Westmere.
            0x0f, 0x17, 0x1d, 0x1a, 0x1e, 0x1f, 0x2e, 0x25, 0x2c, 0x2f,
            // Bonnell, Saltwell, Silvermont, Airmont.
            0x1c, 0x26, 0x27, 0x35, 0x36, 0x37, 0x4a, 0x4d, 0x5a, 0x5d, 0x4c, 0x75,
            // Goldmont, Goldmont Plus, Tremont.
            0x5c, 0x5f, 0x7a, 0x86, 0x96, 0x9c,
            // Gracemont (Alder Lake-N), Crestmont (Sierra Forest, Grand
            // Ridge), Darkmont (Clearwater Forest).
            0xbe, 0xaf, 0xb6, 0xdd,
            // Hybrids: Lakefield, Alder, Raptor, Meteor, Lunar, Arrow and
            // Panther Lake.
            0x8a, 0x97, 0x9a, 0xb7, 0xba, 0xbf, 0xaa, 0xac, 0xbd, 0xc5, 0xc6, 0xb5, 0xcc,
            // Xeon Phi (Knights Landing, Knights Mill).
            0x57, 0x85,
        ];
        for m in three {
            assert_eq!(prefix_budget(Vendor::Intel, 6, m), 3, "model {m:#x}");
        }
        // NetBurst and the families after 6.
        for f in [0x0f, 0x12, 0x13] {
            assert_eq!(prefix_budget(Vendor::Intel, f, 0x01), 3, "family {f:#x}");
        }
        // A big-core model number means nothing in another family.
        assert_eq!(prefix_budget(Vendor::Intel, 0x13, 0x55), 3);
    }

    #[test]
    fn amd_families() {
        for f in [0x14, 0x16, 0x17, 0x19, 0x1a] {
            for m in [0x00, 0x01, 0x31, 0x61, 0xa0] {
                assert_eq!(prefix_budget(Vendor::Amd, f, m), 5, "family {f:#x}");
            }
        }
        // Bulldozer's documented penalty; K8, K10 and derivatives; the
        // unknown.
        for f in [0x0f, 0x10, 0x11, 0x12, 0x15, 0x18, 0x1b, 0x06] {
            assert_eq!(prefix_budget(Vendor::Amd, f, 0x02), 3, "family {f:#x}");
        }
    }

    #[test]
    fn other_vendors_keep_three() {
        // Hygon Dhyana is family 18h, Zen-derived, but undocumented.
        assert_eq!(prefix_budget(Vendor::Hygon, 0x18, 0x00), 3);
        // The same numbers as a Zen or a Skylake mean nothing elsewhere.
        assert_eq!(prefix_budget(Vendor::Other, 0x17, 0x31), 3);
        assert_eq!(prefix_budget(Vendor::Other, 6, 0x55), 3);
    }

    #[test]
    fn read_from_cpuid() {
        let skx = fake(b"GenuineIntel", 0x0005_0654);
        assert_eq!(
            CpuSignature::read(&skx),
            CpuSignature {
                vendor: Vendor::Intel,
                family: 6,
                model: 0x55
            }
        );
        assert_eq!(prefix_budget_of(&skx), 5);
        assert_eq!(prefix_budget_of(&fake(b"GenuineIntel", 0x0009_0672)), 3); // Alder Lake
        assert_eq!(prefix_budget_of(&fake(b"AuthenticAMD", 0x00a2_0f10)), 5); // Zen 3
        assert_eq!(prefix_budget_of(&fake(b"AuthenticAMD", 0x0063_0f81)), 3); // Excavator
        assert_eq!(prefix_budget_of(&fake(b"AuthenticAMD", 0x0006_0fb1)), 3); // qemu64
        assert_eq!(prefix_budget_of(&fake(b"HygonGenuine", 0x0090_0f02)), 3);
        // No leaf 1: nothing known, the safe budget.
        let bare = Fake {
            vendor: b"GenuineIntel",
            max_leaf: 0,
            leaf1_eax: 0x0005_0654,
        };
        assert_eq!(CpuSignature::read(&bare).family, 0);
        assert_eq!(prefix_budget_of(&bare), 3);
    }
}
