//! Hypervisor detection against fake CPUs.

use std::cell::RefCell;
use std::collections::BTreeMap;

use pvops_core::cpu::CpuidResult;
use pvops_core::detect::{
    scan, signature_of, CpuidScan, CpuidSource, HypervisorKind, HypervisorLeaf,
    CPUID_1_ECX_HYPERVISOR, HYPERVISOR_LEAF_FIRST, HYPERVISOR_LEAF_LAST, HYPERVISOR_LEAF_STEP,
    MAX_HYPERVISOR_LEAVES,
};

/// A CPU that answers from a table (zeros for anything not in it) and
/// remembers which leaves it was asked for.
#[derive(Default)]
struct FakeCpu {
    leaves: BTreeMap<u32, CpuidResult>,
    asked: RefCell<Vec<u32>>,
}

impl FakeCpu {
    /// A CPU with the hypervisor bit set (or not).
    fn new(hypervisor_bit: bool) -> Self {
        let mut cpu = Self::default();
        let ecx = if hypervisor_bit {
            CPUID_1_ECX_HYPERVISOR
        } else {
            0
        };
        cpu.leaves.insert(
            1,
            CpuidResult {
                eax: 0x000a_0671,
                ebx: 0x0800,
                ecx: ecx | 0x7ffa_3203,
                edx: 0x0f8b_fbff,
            },
        );
        cpu
    }

    /// Makes `base` answer with `eax` and the 12-byte `sig`.
    fn with(mut self, base: u32, eax: u32, sig: &[u8; 12]) -> Self {
        let word = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
        self.leaves.insert(
            base,
            CpuidResult {
                eax,
                ebx: word(0),
                ecx: word(4),
                edx: word(8),
            },
        );
        self
    }

    fn asked_hypervisor_leaves(&self) -> usize {
        self.asked
            .borrow()
            .iter()
            .filter(|&&l| l >= HYPERVISOR_LEAF_FIRST)
            .count()
    }
}

impl CpuidSource for FakeCpu {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> CpuidResult {
        self.asked.borrow_mut().push(leaf);
        self.leaves.get(&leaf).copied().unwrap_or_default()
    }
}

const KVM: &[u8; 12] = b"KVMKVMKVM\0\0\0";
const XEN: &[u8; 12] = b"XenVMMXenVMM";
const HYPERV: &[u8; 12] = b"Microsoft Hv";
const TCG: &[u8; 12] = b"TCGTCGTCGTCG";

fn bases(s: &CpuidScan) -> Vec<u32> {
    s.iter().map(|l| l.base).collect()
}

#[test]
fn bare_hardware_scans_nothing() {
    // The hypervisor leaves would answer (a CPU returning other leaves'
    // data), but without the hypervisor bit they are not even asked.
    let cpu = FakeCpu::new(false)
        .with(0x4000_0000, 0x4000_0001, KVM)
        .with(0x4000_0100, 0x4000_0105, XEN);
    let s = scan(&cpu);
    assert!(!s.hypervisor_bit);
    assert_eq!(s, CpuidScan::empty());
    assert_eq!(s.iter().count(), 0);
    assert!(s.primary().is_none());
    assert!(s.find(HypervisorKind::Kvm).is_none());
    assert_eq!(cpu.asked_hypervisor_leaves(), 0);
}

#[test]
fn hypervisor_bit_without_leaves() {
    let cpu = FakeCpu::new(true);
    let s = scan(&cpu);
    assert!(s.hypervisor_bit);
    assert!(s.primary().is_none());
    assert_ne!(s, CpuidScan::empty());
    // Every base 0x40000000..=0x40010000 was looked at.
    let expected =
        ((HYPERVISOR_LEAF_LAST - HYPERVISOR_LEAF_FIRST) / HYPERVISOR_LEAF_STEP + 1) as usize;
    assert_eq!(expected, 257);
    assert_eq!(cpu.asked_hypervisor_leaves(), expected);
}

#[test]
fn kvm() {
    let cpu = FakeCpu::new(true).with(0x4000_0000, 0x4000_0001, KVM);
    let s = scan(&cpu);
    assert!(s.hypervisor_bit);
    let p = *s.primary().expect("KVM found");
    assert_eq!(
        p,
        HypervisorLeaf {
            base: 0x4000_0000,
            max_leaf: 0x4000_0001,
            kind: HypervisorKind::Kvm
        }
    );
    assert_eq!(s.find(HypervisorKind::Kvm), Some(&p));
    assert!(s.find(HypervisorKind::Xen).is_none());
    assert_eq!(bases(&s), [0x4000_0000]);
    assert_eq!(p.kind.to_string(), "kvm");
    assert_eq!(format!("{:?}", p.kind), "kvm");
}

#[test]
fn xen_behind_hyperv() {
    let cpu = FakeCpu::new(true)
        .with(0x4000_0000, 0x4000_000b, HYPERV)
        .with(0x4000_0100, 0x4000_0105, XEN);
    let s = scan(&cpu);
    assert_eq!(bases(&s), [0x4000_0000, 0x4000_0100]);
    let primary = s.primary().unwrap();
    assert_eq!(primary.kind, HypervisorKind::HyperV);
    assert_eq!(primary.kind.to_string(), "hyperv");
    let xen = s.find(HypervisorKind::Xen).unwrap();
    assert_eq!(xen.base, 0x4000_0100);
    assert_eq!(xen.max_leaf, 0x4000_0105);
    assert_eq!(xen.kind.to_string(), "xen");
    assert_eq!(s.find(HypervisorKind::HyperV), Some(primary));
    assert!(s.find(HypervisorKind::Kvm).is_none());
}

#[test]
fn tcg() {
    let cpu = FakeCpu::new(true).with(0x4000_0000, 0x4000_0001, TCG);
    let s = scan(&cpu);
    let p = s.primary().unwrap();
    assert_eq!(p.kind, HypervisorKind::Tcg);
    assert_eq!(p.kind.to_string(), "tcg");
}

#[test]
fn last_base_is_scanned_and_nothing_beyond() {
    let cpu = FakeCpu::new(true)
        .with(HYPERVISOR_LEAF_LAST, HYPERVISOR_LEAF_LAST + 3, KVM)
        .with(
            HYPERVISOR_LEAF_LAST + 0x100,
            HYPERVISOR_LEAF_LAST + 0x101,
            XEN,
        );
    let s = scan(&cpu);
    assert_eq!(bases(&s), [0x4001_0000]);
    assert!(!cpu.asked.borrow().contains(&(HYPERVISOR_LEAF_LAST + 0x100)));
}

#[test]
fn unknown_signature_is_named_and_escaped() {
    let sig = b"My Hyp=rv\0\0\0";
    let cpu = FakeCpu::new(true).with(0x4000_0000, 0x4000_0002, sig);
    let s = scan(&cpu);
    let p = s
        .primary()
        .expect("an unknown but plausible signature is kept");
    assert_eq!(p.kind, HypervisorKind::Unknown(*sig));
    assert_eq!(p.kind.name(), "unknown");
    // Spaces, `=` and NULs are escaped: the result is one key=value token.
    let shown = p.kind.to_string();
    assert_eq!(shown, r"unknown:My\x20Hyp\x3drv\x00\x00\x00");
    assert!(!shown.contains(' ') && !shown.contains('='));
    assert_eq!(format!("{:?}", p.kind), shown);
    // Non-printable bytes (never accepted by a scan, but representable).
    let odd =
        HypervisorKind::from_signature([0x7f, 0x80, 0xff, b'\n', b'\\', b'a', b'~', 0, 1, 2, 3, 4]);
    assert_eq!(
        odd.to_string(),
        r"unknown:\x7f\x80\xff\x0a\a~\x00\x01\x02\x03\x04"
    );
}

#[test]
fn known_signatures() {
    let table: &[(&[u8; 12], HypervisorKind, &str)] = &[
        (KVM, HypervisorKind::Kvm, "kvm"),
        (XEN, HypervisorKind::Xen, "xen"),
        (TCG, HypervisorKind::Tcg, "tcg"),
        (HYPERV, HypervisorKind::HyperV, "hyperv"),
        (b"Linux KVM Hv", HypervisorKind::HyperV, "hyperv"),
        (b"VMwareVMware", HypervisorKind::VMware, "vmware"),
        (b"bhyve bhyve ", HypervisorKind::Bhyve, "bhyve"),
        (b"BHyVE BHyVE ", HypervisorKind::Bhyve, "bhyve"),
        (b"ACRNACRNACRN", HypervisorKind::Acrn, "acrn"),
        (b"VBoxVBoxVBox", HypervisorKind::VirtualBox, "virtualbox"),
        (b" lrpepyh  vr", HypervisorKind::Parallels, "parallels"),
        (b"QNXQVMBSQG\0\0", HypervisorKind::QnxHypervisor, "qnx"),
        (b"Jailhouse\0\0\0", HypervisorKind::Jailhouse, "jailhouse"),
        (b"SRESRESRESRE", HypervisorKind::AppleVz, "apple"),
    ];
    for (sig, kind, name) in table {
        assert_eq!(HypervisorKind::from_signature(**sig), *kind);
        assert_eq!(kind.to_string(), *name);
        assert_eq!(kind.name(), *name);
        // And each is found by a scan (signatures with spaces included).
        let s = scan(&FakeCpu::new(true).with(0x4000_0000, 0x4000_0001, sig));
        assert_eq!(s.primary().map(|l| l.kind), Some(*kind), "{name}");
    }
    // Near misses are unknown.
    assert!(matches!(
        HypervisorKind::from_signature(*b"KVMKVMKVM   "),
        HypervisorKind::Unknown(_)
    ));
}

#[test]
fn signature_register_order() {
    let r = CpuidResult {
        eax: 0,
        ebx: u32::from_le_bytes(*b"Micr"),
        ecx: u32::from_le_bytes(*b"osof"),
        edx: u32::from_le_bytes(*b"t Hv"),
    };
    assert_eq!(&signature_of(&r), HYPERV);
}

#[test]
fn lying_leaves_are_skipped() {
    let cpu = FakeCpu::new(true)
        // Max leaf beyond its own range.
        .with(0x4000_0000, 0x4000_0100, KVM)
        // Max leaf below its base.
        .with(0x4000_0100, 0x4000_00ff, XEN)
        // A max leaf of 0.
        .with(0x4000_0200, 0, TCG)
        // Garbage signature with a plausible range.
        .with(
            0x4000_0300,
            0x4000_0301,
            &[0xde, 0xad, 0xbe, 0xef, 0x90, 0x90, 0x90, 0x90, 1, 2, 3, 4],
        )
        // All-NUL signature.
        .with(0x4000_0400, 0x4000_0401, &[0; 12])
        // A control character in an otherwise ASCII signature.
        .with(0x4000_0500, 0x4000_0501, b"KVMKVMKVM\t\0\0")
        // Finally a real one.
        .with(0x4000_0600, 0x4000_0600, XEN);
    let s = scan(&cpu);
    assert_eq!(bases(&s), [0x4000_0600]);
    let xen = s.primary().unwrap();
    assert_eq!(xen.kind, HypervisorKind::Xen);
    // A base whose range is only itself.
    assert!(xen.has_leaf(0));
    assert!(!xen.has_leaf(1));
}

#[test]
fn more_hypervisors_than_slots() {
    // Every base answers plausibly: 257 candidates, MAX_HYPERVISOR_LEAVES
    // slots.
    let mut cpu = FakeCpu::new(true);
    let mut base = HYPERVISOR_LEAF_FIRST;
    while base <= HYPERVISOR_LEAF_LAST {
        cpu = cpu.with(base, base + 1, TCG);
        base += HYPERVISOR_LEAF_STEP;
    }
    let s = scan(&cpu);
    assert_eq!(s.iter().count(), MAX_HYPERVISOR_LEAVES);
    let expected: Vec<u32> = (0..MAX_HYPERVISOR_LEAVES as u32)
        .map(|i| HYPERVISOR_LEAF_FIRST + i * HYPERVISOR_LEAF_STEP)
        .collect();
    assert_eq!(bases(&s), expected);
    assert_eq!(s.primary().unwrap().base, HYPERVISOR_LEAF_FIRST);
}

#[test]
fn has_leaf() {
    let cpu = FakeCpu::new(true)
        .with(0x4000_0000, 0x4000_000b, HYPERV)
        .with(0x4000_0100, 0x4000_0105, XEN);
    let s = scan(&cpu);
    let hv = s.find(HypervisorKind::HyperV).unwrap();
    assert!(hv.has_leaf(0));
    assert!(hv.has_leaf(0xb));
    assert!(!hv.has_leaf(0xc));
    let xen = s.find(HypervisorKind::Xen).unwrap();
    assert!(xen.has_leaf(0));
    assert!(xen.has_leaf(5));
    assert!(!xen.has_leaf(6));
    // Offsets are within one base's 0x100 leaves, whatever max_leaf says.
    let wide = HypervisorLeaf {
        base: HYPERVISOR_LEAF_LAST,
        max_leaf: u32::MAX,
        kind: HypervisorKind::Kvm,
    };
    assert!(wide.has_leaf(0xff));
    assert!(!wide.has_leaf(0x100));
    assert!(!wide.has_leaf(u32::MAX));
}
