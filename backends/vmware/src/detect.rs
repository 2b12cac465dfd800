//! When pvops may believe it runs on VMware, and the one rule about the
//! backdoor port: it is knocked on only where something already says
//! VMware.
//!
//! | evidence | backdoor probed | bid |
//! |---|---|---|
//! | CPUID signature `VMwareVMware` (any base) | at init, for GETHZ | [`Priority::VMWARE`] |
//! | SMBIOS type 1 names VMware, no Xen signature | yes: GETVERSION must answer | [`Priority::VMWARE`] |
//! | anything else (bare metal, a hypervisor bit alone) | **never** | none |
//!
//! A hypervisor bit alone is not enough: QEMU's `pc` machine has its
//! `vmport` device on by default, so every KVM and TCG guest would answer
//! the backdoor and be taken for VMware; and on bare metal port 0x5658 may
//! belong to a real device. Linux (`vmware_platform()`) keeps the same
//! rule.
//!
//! [`Priority::VMWARE`] is below KVM's: where KVM's own signature stands
//! beside VMware's emulated interface (QEMU's `vmport`,
//! `vmware-cpuid-freq`), KVM's paravirtual features win.

use crate::backdoor::{self, Backdoor};
use pvops_core::backend::{BootContext, BootEntry, Priority};
use pvops_core::detect::{HypervisorKind, HypervisorLeaf};

/// What says the machine is VMware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// CPUID's hypervisor leaves carry VMware's signature at this base.
    Signature(HypervisorLeaf),
    /// The firmware's SMBIOS names VMware (no VMware signature in CPUID).
    Smbios,
}

impl Evidence {
    /// The evidence in `ctx`, asking `smbios_says_vmware` only when CPUID
    /// has neither VMware's signature nor Xen's (a Xen guest is the Xen
    /// backend's; Xen's `vmware_hwver=` puts VMware's signature in CPUID
    /// anyway) and the kernel runs in ring 0.
    pub fn find(ctx: &BootContext<'_>, smbios_says_vmware: impl FnOnce() -> bool) -> Option<Self> {
        if ctx.entry == BootEntry::XenPv {
            return None;
        }
        if let Some(leaf) = ctx.cpuid.find(HypervisorKind::VMware) {
            return Some(Evidence::Signature(*leaf));
        }
        if ctx.cpuid.find(HypervisorKind::Xen).is_some() {
            return None;
        }
        smbios_says_vmware().then_some(Evidence::Smbios)
    }
}

/// The bid on `evidence`, probing `port` (made only when the evidence
/// allows it) where only SMBIOS spoke.
pub fn bid<B: Backdoor>(evidence: Option<Evidence>, port: impl FnOnce() -> B) -> Option<Priority> {
    match evidence? {
        Evidence::Signature(_) => Some(Priority::VMWARE),
        Evidence::Smbios => backdoor::version(&port())
            .is_ok()
            .then_some(Priority::VMWARE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backdoor::tests::FakeBackdoor;
    use pvops_core::cpu::CpuidResult;
    use pvops_core::detect::{scan, CpuidScan, CpuidSource};

    /// A CPU with the hypervisor bit and `sig` at 0x40000000 (max leaf
    /// 0x40000010), or bare (`None`).
    pub(crate) struct Cpu(pub Option<&'static [u8; 12]>);
    impl CpuidSource for Cpu {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            let Some(sig) = self.0 else {
                return CpuidResult::default();
            };
            let w = |i: usize| u32::from_le_bytes(sig[i..i + 4].try_into().unwrap());
            match leaf {
                1 => CpuidResult {
                    ecx: 1 << 31,
                    ..Default::default()
                },
                0x4000_0000 => CpuidResult {
                    eax: 0x4000_0010,
                    ebx: w(0),
                    ecx: w(4),
                    edx: w(8),
                },
                _ => CpuidResult::default(),
            }
        }
    }

    fn ctx(cpu: Cpu) -> BootContext<'static> {
        BootContext::new(BootEntry::Pvh, "", scan(&cpu))
    }

    #[test]
    fn bare_metal_never_probes_the_port() {
        // No hypervisor bit, no SMBIOS claim: the fake panics if called.
        let bare = BootContext::new(BootEntry::Other, "", CpuidScan::empty());
        let ev = Evidence::find(&bare, || false);
        assert_eq!(ev, None);
        assert_eq!(bid(ev, FakeBackdoor::forbidden), None);
        // A hypervisor bit with another signature (QEMU/KVM with vmport on
        // by default) is no evidence either.
        for sig in [b"KVMKVMKVM\0\0\0", b"TCGTCGTCGTCG"] {
            let ev = Evidence::find(&ctx(Cpu(Some(sig))), || false);
            assert_eq!(bid(ev, FakeBackdoor::forbidden), None, "{sig:?}");
        }
    }

    #[test]
    fn signature_bids_without_a_probe() {
        let ev = Evidence::find(&ctx(Cpu(Some(b"VMwareVMware"))), || {
            panic!("SMBIOS read although CPUID says VMware")
        });
        assert!(matches!(ev, Some(Evidence::Signature(l)) if l.base == 0x4000_0000));
        assert_eq!(bid(ev, FakeBackdoor::forbidden), Some(Priority::VMWARE));
    }

    #[test]
    fn smbios_claim_needs_the_backdoor_to_answer() {
        let kvm_hidden = ctx(Cpu(None));
        let ev = Evidence::find(&kvm_hidden, || true);
        assert_eq!(ev, Some(Evidence::Smbios));
        assert_eq!(bid(ev, FakeBackdoor::qemu), Some(Priority::VMWARE));
        // SMBIOS lies (or vmport is off): the port stays silent, no bid.
        assert_eq!(bid(ev, FakeBackdoor::absent), None);
        // A Xen guest is never scanned.
        let xen = ctx(Cpu(Some(b"XenVMMXenVMM")));
        assert_eq!(Evidence::find(&xen, || panic!("scanned under Xen")), None);
        let pv = BootContext::new(BootEntry::XenPv, "", CpuidScan::empty());
        assert_eq!(Evidence::find(&pv, || panic!("scanned in ring 3")), None);
    }

    #[test]
    fn kvm_outbids_vmware_where_both_are_offered() {
        assert!(Priority::KVM > Priority::VMWARE);
        assert!(Priority::XEN > Priority::VMWARE);
        assert!(Priority::VMWARE > Priority::FALLBACK);
    }

    /// VMware's signature first and Xen's at the next base (what a Xen
    /// with a VMware emulation would show, as Xen does behind Viridian):
    /// VMware bids on its signature without touching the port, and Xen's
    /// higher bid wins.
    #[test]
    fn vmware_signature_before_xen() {
        struct Both;
        impl CpuidSource for Both {
            fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
                let sig = |s: &[u8; 12], eax| {
                    let w = |i: usize| u32::from_le_bytes(s[i..i + 4].try_into().unwrap());
                    CpuidResult {
                        eax,
                        ebx: w(0),
                        ecx: w(4),
                        edx: w(8),
                    }
                };
                match leaf {
                    1 => CpuidResult {
                        ecx: 1 << 31,
                        ..Default::default()
                    },
                    0x4000_0000 => sig(b"VMwareVMware", 0x4000_0010),
                    0x4000_0100 => sig(b"XenVMMXenVMM", 0x4000_0105),
                    _ => CpuidResult::default(),
                }
            }
        }
        let c = BootContext::new(BootEntry::Other, "", scan(&Both));
        let ev = Evidence::find(&c, || panic!("SMBIOS read despite the signature"));
        assert!(matches!(ev, Some(Evidence::Signature(l)) if l.base == 0x4000_0000));
        assert_eq!(bid(ev, FakeBackdoor::forbidden), Some(Priority::VMWARE));
        assert!(c.cpuid.find(HypervisorKind::Xen).is_some());
    }
}
