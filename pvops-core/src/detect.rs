//! Platform detection, kept apart from the ops (as Linux keeps
//! `kernel/cpu/hypervisor.c` apart from `paravirt_types.h`).
//!
//! Hypervisors announce themselves with a 12-byte signature at CPUID leaf
//! 0x40000000, or at a later multiple of 0x100 when they also offer another
//! hypervisor's interface first (Xen behind Viridian, for example).
//! Detection names every signature it knows, even those pvops has no backend
//! for, so the platform line says where the kernel is running.

use core::fmt;

/// A hypervisor, by the signature it reports.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HypervisorKind {
    /// `KVMKVMKVM\0\0\0`.
    Kvm,
    /// `XenVMMXenVMM`.
    Xen,
    /// `TCGTCGTCGTCG` (QEMU software emulation).
    Tcg,
    /// `Microsoft Hv` (Hyper-V, or another hypervisor's Viridian interface),
    /// or `Linux KVM Hv` (KVM's Hyper-V interface under its own vendor id).
    HyperV,
    /// `VMwareVMware`.
    VMware,
    /// `bhyve bhyve ` (also `BHyVE BHyVE `).
    Bhyve,
    /// `ACRNACRNACRN`.
    Acrn,
    /// `VBoxVBoxVBox`.
    VirtualBox,
    /// ` lrpepyh  vr` (Parallels).
    Parallels,
    /// `QNXQVMBSQG`.
    QnxHypervisor,
    /// `Jailhouse\0\0\0`.
    Jailhouse,
    /// `SRESRESRESRE` (Apple's Hypervisor.framework via some VMMs).
    AppleVz,
    /// A signature pvops does not know.
    Unknown([u8; 12]),
}

/// Known signatures and what they mean.
const SIGNATURES: &[(&[u8; 12], HypervisorKind)] = &[
    (b"KVMKVMKVM\0\0\0", HypervisorKind::Kvm),
    (b"XenVMMXenVMM", HypervisorKind::Xen),
    (b"TCGTCGTCGTCG", HypervisorKind::Tcg),
    (b"Microsoft Hv", HypervisorKind::HyperV),
    // KVM's own vendor id for its Hyper-V interface (what QEMU's
    // `hv-passthrough` passes on from KVM_GET_SUPPORTED_HV_CPUID).
    (b"Linux KVM Hv", HypervisorKind::HyperV),
    (b"VMwareVMware", HypervisorKind::VMware),
    (b"bhyve bhyve ", HypervisorKind::Bhyve),
    (b"BHyVE BHyVE ", HypervisorKind::Bhyve),
    (b"ACRNACRNACRN", HypervisorKind::Acrn),
    (b"VBoxVBoxVBox", HypervisorKind::VirtualBox),
    (b" lrpepyh  vr", HypervisorKind::Parallels),
    (b"QNXQVMBSQG\0\0", HypervisorKind::QnxHypervisor),
    (b"Jailhouse\0\0\0", HypervisorKind::Jailhouse),
    (b"SRESRESRESRE", HypervisorKind::AppleVz),
];

impl HypervisorKind {
    /// Names the signature from CPUID leaf base (EBX, ECX, EDX in that order).
    pub fn from_signature(sig: [u8; 12]) -> Self {
        SIGNATURES
            .iter()
            .find(|(s, _)| **s == sig)
            .map(|(_, k)| *k)
            .unwrap_or(HypervisorKind::Unknown(sig))
    }

    /// A short lowercase name for logs and the platform line.
    pub const fn name(&self) -> &'static str {
        match self {
            HypervisorKind::Kvm => "kvm",
            HypervisorKind::Xen => "xen",
            HypervisorKind::Tcg => "tcg",
            HypervisorKind::HyperV => "hyperv",
            HypervisorKind::VMware => "vmware",
            HypervisorKind::Bhyve => "bhyve",
            HypervisorKind::Acrn => "acrn",
            HypervisorKind::VirtualBox => "virtualbox",
            HypervisorKind::Parallels => "parallels",
            HypervisorKind::QnxHypervisor => "qnx",
            HypervisorKind::Jailhouse => "jailhouse",
            HypervisorKind::AppleVz => "apple",
            HypervisorKind::Unknown(_) => "unknown",
        }
    }
}

/// The short name; an unknown signature prints as `unknown:` followed by
/// its bytes, with anything but printable ASCII other than space and `=`
/// escaped as `\xNN` so the result stays one `key=value` token.
impl fmt::Display for HypervisorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        if let HypervisorKind::Unknown(sig) = self {
            f.write_str(":")?;
            for &b in sig {
                if b.is_ascii_graphic() && b != b'=' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\x{b:02x}")?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Debug for HypervisorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Anything that answers CPUID: the real instruction, Xen PV's forced
/// emulation, or a fake in tests.
pub trait CpuidSource {
    /// Runs CPUID for `leaf`/`subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuResult;
}

use crate::cpu::CpuidResult as CpuResult;

/// The `cpuid` instruction of the CPU this runs on.
#[derive(Debug, Clone, Copy, Default)]
pub struct HardwareCpuid;

impl CpuidSource for HardwareCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuResult {
        // SAFETY: `cpuid` exists on every x86_64 CPU and only reads
        // identification registers.
        #[allow(unused_unsafe)]
        let r = unsafe { core::arch::x86_64::__cpuid_count(leaf, subleaf) };
        CpuResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
}

/// First hypervisor leaf looked at.
pub const HYPERVISOR_LEAF_FIRST: u32 = 0x4000_0000;
/// Last hypervisor leaf looked at.
pub const HYPERVISOR_LEAF_LAST: u32 = 0x4001_0000;
/// Distance between two hypervisor bases.
pub const HYPERVISOR_LEAF_STEP: u32 = 0x100;
/// CPUID.1:ECX bit 31, set by every hypervisor that wants to be found.
pub const CPUID_1_ECX_HYPERVISOR: u32 = 1 << 31;
/// How many hypervisor bases one scan keeps.
pub const MAX_HYPERVISOR_LEAVES: usize = 8;

/// One hypervisor found at a CPUID base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HypervisorLeaf {
    /// The base leaf (0x40000000, 0x40000100, ...).
    pub base: u32,
    /// The highest leaf of this hypervisor's range (EAX of the base leaf).
    pub max_leaf: u32,
    /// Who it is.
    pub kind: HypervisorKind,
}

impl HypervisorLeaf {
    /// Whether leaf `base + offset` is within what this hypervisor reports.
    pub fn has_leaf(&self, offset: u32) -> bool {
        offset < HYPERVISOR_LEAF_STEP
            && self
                .base
                .checked_add(offset)
                .is_some_and(|leaf| leaf <= self.max_leaf)
    }
}

/// What a scan of the hypervisor leaves found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidScan {
    /// Whether CPUID.1:ECX says a hypervisor is present.
    pub hypervisor_bit: bool,
    leaves: [Option<HypervisorLeaf>; MAX_HYPERVISOR_LEAVES],
}

impl CpuidScan {
    /// A scan that found nothing (bare hardware).
    pub const fn empty() -> Self {
        Self {
            hypervisor_bit: false,
            leaves: [None; MAX_HYPERVISOR_LEAVES],
        }
    }

    /// Every hypervisor found, lowest base first.
    pub fn iter(&self) -> impl Iterator<Item = &HypervisorLeaf> {
        self.leaves.iter().flatten()
    }

    /// The first base of `kind`, if any.
    pub fn find(&self, kind: HypervisorKind) -> Option<&HypervisorLeaf> {
        self.iter().find(|l| l.kind == kind)
    }

    /// The hypervisor at the lowest base: the one a kernel that knows them
    /// all would see first.
    pub fn primary(&self) -> Option<&HypervisorLeaf> {
        self.iter().next()
    }

    fn push(&mut self, leaf: HypervisorLeaf) {
        if let Some(slot) = self.leaves.iter_mut().find(|s| s.is_none()) {
            *slot = Some(leaf);
        }
    }
}

/// Reads the 12 signature bytes from EBX, ECX, EDX.
pub fn signature_of(r: &CpuResult) -> [u8; 12] {
    let mut sig = [0u8; 12];
    sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
    sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
    sig
}

/// Whether a base leaf's answer looks like a hypervisor's rather than the
/// data a CPU returns for a leaf it does not have: EAX names a leaf in the
/// base's own range and the signature is printable ASCII padded with NULs.
fn plausible(base: u32, r: &CpuResult, sig: &[u8; 12]) -> bool {
    let in_range = r.eax >= base && r.eax < base + HYPERVISOR_LEAF_STEP;
    let text = sig.iter().all(|b| *b == 0 || (0x20..0x7f).contains(b));
    let non_empty = sig.iter().any(|b| *b != 0);
    in_range && text && non_empty
}

/// Scans the hypervisor leaves 0x40000000..=0x40010000 in steps of 0x100.
///
/// Without the hypervisor bit nothing is scanned: bare CPUs answer leaves
/// they lack with data of other leaves, which could pass for a signature.
/// Leaves that report a maximum outside their own range are skipped, so a
/// lying or truncated range never yields a bogus entry.
pub fn scan(src: &impl CpuidSource) -> CpuidScan {
    let mut out = CpuidScan::empty();
    out.hypervisor_bit = src.cpuid(1, 0).ecx & CPUID_1_ECX_HYPERVISOR != 0;
    if !out.hypervisor_bit {
        return out;
    }
    let mut base = HYPERVISOR_LEAF_FIRST;
    while base <= HYPERVISOR_LEAF_LAST {
        let r = src.cpuid(base, 0);
        let sig = signature_of(&r);
        let kind = HypervisorKind::from_signature(sig);
        if plausible(base, &r, &sig) {
            out.push(HypervisorLeaf {
                base,
                max_leaf: r.eax,
                kind,
            });
        } else if kind == HypervisorKind::Kvm && r.eax == 0 {
            // Old KVM hosts report EAX = 0 at the base; KVM's CPUID
            // documentation says to read that as "features leaf only".
            out.push(HypervisorLeaf {
                base,
                max_leaf: base + 1,
                kind,
            });
        }
        base += HYPERVISOR_LEAF_STEP;
    }
    out
}
