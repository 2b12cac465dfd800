//! # pvops-vmware
//!
//! The VMware backend of pvops: the native table ([`pvops_native`]) brought
//! up with what VMware's interface tells better than native could measure,
//! the TSC and local APIC timer frequencies, so no PIT calibration runs.
//!
//! | feature (features line) | VMware interface | effect |
//! |---|---|---|
//! | `backdoor` | port 0x5658, `VMXh`, GETVERSION | the backdoor answers (required where only SMBIOS says VMware) |
//! | `cpuid-freq` | CPUID base + 0x10, EAX (kHz) | TSC frequency, info line `tsc_source=vmware-cpuid` |
//! | `gethz` | backdoor GETHZ, EBX:EAX (Hz) | TSC frequency when the leaf is absent or wrong, `tsc_source=vmware-gethz` |
//! | `apic-freq` | CPUID base + 0x10 EBX (kHz), or GETHZ ECX (Hz) | the APIC timer's rate, not measured |
//!
//! The platform line reads `platform=vmware backend=vmware
//! features=backdoor,cpuid-freq,apic-freq hypervisor=vmware` (or `gethz` in
//! place of `cpuid-freq`).
//!
//! ## Detection
//! See [`detect`](mod@detect): VMware's CPUID signature, or SMBIOS naming VMware *and*
//! the backdoor answering. The backdoor port is never touched without one
//! of those: not on bare metal, not on a hypervisor bit alone.
//! [`Priority::VMWARE`] is below KVM's, so QEMU/KVM with `vmport` and
//! KVM's leaves visible stays with the kvm backend.
//!
//! ## Fallbacks
//! Each source is tried in order, and a failure is a typed
//! [`VmwareError`] printed as one `pvops: warning:` line:
//! the timing leaf (absent, zero, implausible), then GETHZ (unavailable,
//! garbage), then native's own (CPUID 0x15/0x16, then the PIT). Where only
//! SMBIOS spoke and the backdoor does not answer at init, the backend
//! fails and native takes over.
//!
//! ## Command line
//! `pvops.vmware.off=<names>` (comma-separated: `cpuid-freq`, `gethz`,
//! `apic-freq`, `all`) leaves those sources unused.
//!
//! ## Fault injection
//! `pvops.fail=<point>[:<n>],...` ([`pvops_core::fault`]):
//!
//! | point | what fails | outcome |
//! |---|---|---|
//! | `vmware.backdoor` | GETVERSION at init | signature: warning, no `backdoor`, no GETHZ; SMBIOS only: backend fails, native |
//! | `vmware.cpuid-freq` | reading the timing leaf | warning, GETHZ |
//! | `vmware.gethz` | GETHZ | warning, native's own TSC frequency |
//!
//! ## Not implemented, and why
//! - **Backdoor calls by `vmcall`/`vmmcall`** (timing leaf ECX bits 0/1,
//!   VMware's "hypercall" interface): parsed ([`timing::Timing`]) but not
//!   used. No emulation here offers them: QEMU leaves the bits clear (a
//!   `vmcall` goes to KVM, which answers with its own error), and Xen's
//!   VMware emulation takes the I/O port only. Code that cannot run
//!   against anything here would be untested.
//! - **Steal clock** (backdoor command 91, a per-CPU area the host
//!   updates): neither QEMU's `vmport` nor Xen implements the command; the
//!   steal clock stays native's (0).
//! - **Everything else ESXi offers** (VMCI, the balloon, PV SCSI/NIC) are
//!   devices, not ops.
//! - **SMBIOS under UEFI**: only the legacy BIOS area is searched
//!   ([`smbios`]); a UEFI guest with VMware's leaves hidden is not found.
//! - **Xen's `vmware_hwver=`**: not in Xen 4.17 (the Xen booted here):
//!   neither its hypervisor nor libxl/xl contains a VMware emulation (the
//!   series that proposed `vmware_hwver`/`vmware_port` was never merged;
//!   only Viridian is). Were it there, VMware's signature would stand at
//!   0x40000000 and Xen's at the next free base, as behind Viridian: this
//!   backend bids on the signature, Xen's higher bid wins
//!   (`detect::tests::vmware_signature_before_xen`).
//!
//! ## Example
//! A kernel that wants just this backend (falling back to bare hardware)
//! lists the candidates itself instead of using the `pvops` facade:
//! ```no_run
//! use pvops_core::backend::{select_and_install, BootContext, BootEntry};
//! use pvops_core::detect::{scan, HardwareCpuid};
//!
//! fn early_boot(cmdline: &str) {
//!     let ctx = BootContext::new(BootEntry::Other, cmdline, scan(&HardwareCpuid));
//!     let ops = select_and_install(
//!         &ctx,
//!         &[pvops_vmware::CANDIDATE, pvops_native::CANDIDATE],
//!         |_| {},
//!     )
//!     .expect("no backend could start");
//!     // `cpuid-freq` or `gethz` when VMware gave the TSC frequency.
//!     let _ = ops.identity.features;
//! }
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod abi;
pub mod backdoor;
pub mod detect;
mod error;
pub mod smbios;
pub mod timing;
mod warn;

pub use crate::error::VmwareError;

use crate::backdoor::{Backdoor, Frequencies, Port, Version};
use crate::detect::Evidence;
use crate::warn::warn;
use pvops_core::backend::{BackendError, BootContext, Candidate, Priority};
use pvops_core::detect::{CpuidSource, HardwareCpuid, HypervisorLeaf};
use pvops_core::platform::{Features, Identity, Platform};
use pvops_core::table::PvOps;
use pvops_native::NativeHints;

/// The backend's name, as `pvops.backend=` names it.
pub const NAME: &str = "vmware";

/// VMware's detection priority (native bids 0, KVM 100).
pub const PRIORITY: Priority = Priority::VMWARE;

/// The fault-injection points of this backend (see the crate docs).
pub mod fault_points {
    pub use crate::backdoor::{FAULT_BACKDOOR as BACKDOOR, FAULT_GETHZ as GETHZ};
    pub use crate::timing::FAULT_CPUID_FREQ as CPUID_FREQ;
    /// Every point, as `pvops.fail=` accepts them.
    pub const ALL: &[&str] = &[BACKDOOR, CPUID_FREQ, GETHZ];
}

/// Where the TSC frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreqSource {
    /// CPUID's timing leaf (base + 0x10).
    CpuidLeaf,
    /// The backdoor's GETHZ.
    Gethz,
}

impl FreqSource {
    /// The feature name on the platform line.
    pub const fn feature(self) -> &'static str {
        match self {
            FreqSource::CpuidLeaf => "cpuid-freq",
            FreqSource::Gethz => "gethz",
        }
    }

    /// The name on the kernel's info line (`tsc_source=`).
    pub const fn tsc_source(self) -> &'static str {
        match self {
            FreqSource::CpuidLeaf => "vmware-cpuid",
            FreqSource::Gethz => "vmware-gethz",
        }
    }
}

/// Sources switched off by `pvops.vmware.off=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Off {
    /// `cpuid-freq`.
    pub cpuid_freq: bool,
    /// `gethz`.
    pub gethz: bool,
    /// `apic-freq`.
    pub apic_freq: bool,
    /// Whether a name was none of these (it is ignored, with a warning).
    pub unknown: bool,
}

impl Off {
    /// Parses the option's value (empty: nothing off).
    pub fn parse(value: &str) -> Self {
        let mut off = Off::default();
        for name in value.split(',').filter(|n| !n.is_empty()) {
            match name {
                "cpuid-freq" => off.cpuid_freq = true,
                "gethz" => off.gethz = true,
                "apic-freq" => off.apic_freq = true,
                "all" => {
                    off.cpuid_freq = true;
                    off.gethz = true;
                    off.apic_freq = true;
                }
                _ => off.unknown = true,
            }
        }
        off
    }
}

/// The most problems one bring-up reports.
const MAX_PROBLEMS: usize = 3;

/// What [`plan`] found: the backdoor's answer, the frequencies and their
/// source, and each problem met on the way (for warning lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// GETVERSION's answer, or why there is none.
    pub backdoor: Result<Version, VmwareError>,
    /// The frequencies chosen and where from; `None`: native finds its own.
    pub freq: Option<(Frequencies, FreqSource)>,
    /// Sources that were tried and failed, in order.
    pub problems: [Option<VmwareError>; MAX_PROBLEMS],
}

impl Plan {
    fn problem(&mut self, e: VmwareError) {
        if let Some(slot) = self.problems.iter_mut().find(|p| p.is_none()) {
            *slot = Some(e);
        }
    }

    /// The problems, in order.
    pub fn problems(&self) -> impl Iterator<Item = &VmwareError> {
        self.problems.iter().flatten()
    }
}

/// Decides, from `evidence`, CPUID (`cpuid`, whose first hypervisor leaf is
/// `primary`) and the backdoor `port`, where the frequencies come from:
/// the timing leaf, else GETHZ, else nowhere (native measures). Where only
/// SMBIOS spoke, the timing leaf is looked for in the primary hypervisor's
/// range (QEMU puts it in KVM's).
pub fn plan(
    evidence: Evidence,
    primary: Option<HypervisorLeaf>,
    cpuid: &impl CpuidSource,
    port: &impl Backdoor,
    off: Off,
) -> Plan {
    let mut p = Plan {
        backdoor: backdoor::version(port),
        freq: None,
        problems: [None; MAX_PROBLEMS],
    };
    if let Err(e) = p.backdoor {
        p.problem(e);
    }
    let leaf = match evidence {
        Evidence::Signature(leaf) => Some(leaf),
        Evidence::Smbios => primary,
    };
    if !off.cpuid_freq {
        if let Some(leaf) = leaf {
            match timing::read(cpuid, &leaf, port.faults()) {
                Ok(t) => p.freq = Some((t.freq, FreqSource::CpuidLeaf)),
                Err(e) => p.problem(e),
            }
        }
    }
    if p.freq.is_none() && !off.gethz && p.backdoor.is_ok() {
        match backdoor::gethz(port) {
            Ok(f) => p.freq = Some((f, FreqSource::Gethz)),
            Err(e) => p.problem(e),
        }
    }
    if off.apic_freq {
        if let Some((f, _)) = &mut p.freq {
            f.apic_bus_hz = None;
        }
    }
    p
}

fn err(reason: &'static str) -> BackendError {
    BackendError {
        backend: NAME,
        reason,
        detail: None,
    }
}

/// Whether the firmware's SMBIOS names VMware, read through the direct map.
fn smbios_says_vmware(ctx: &BootContext<'_>) -> bool {
    // SAFETY: the BootContext contract maps the low 4 GiB (the BIOS area
    // among it) readable at phys + phys_offset.
    let mem = unsafe { pvops_core::phys::DirectMap::new(ctx.phys_offset, 1 << 32) };
    smbios::says_vmware(&mem).unwrap_or(false)
}

/// The evidence for `ctx` (SMBIOS read only where CPUID allows it).
fn evidence(ctx: &BootContext<'_>) -> Option<Evidence> {
    Evidence::find(ctx, || smbios_says_vmware(ctx))
}

/// Bids [`PRIORITY`] on VMware's CPUID signature, or on SMBIOS naming
/// VMware with the backdoor answering (see [`detect`](mod@detect)).
pub fn detect(ctx: &BootContext<'_>) -> Option<Priority> {
    detect::bid(evidence(ctx), || {
        // SAFETY: `bid` makes the port only on evidence (see `detect`),
        // and `Evidence::find` gives none to a ring-3 (Xen PV) kernel.
        unsafe { Port::new() }
    })
}

/// Brings up native with VMware's frequencies; returns the table.
pub fn init(ctx: &BootContext<'_>) -> Result<PvOps, BackendError> {
    let evidence =
        evidence(ctx).ok_or(err("no VMware signature in CPUID and no VMware in SMBIOS"))?;
    let faults = pvops_core::fault::configure(ctx.option("fail"), fault_points::ALL);
    let off = Off::parse(ctx.option("vmware.off").unwrap_or(""));
    // SAFETY: there is evidence (see `detect`), and we run in ring 0.
    let port = unsafe { Port::new() };
    let p = plan(
        evidence,
        ctx.cpuid.primary().copied(),
        &HardwareCpuid,
        &port,
        off,
    );
    if evidence == Evidence::Smbios && p.backdoor.is_err() {
        return Err(err(
            "SMBIOS names VMware but the backdoor port does not answer",
        ));
    }
    let mut hints = NativeHints::NONE;
    if let Some((f, source)) = p.freq {
        hints = hints.tsc(f.tsc_hz, source.tsc_source());
        if let Some(bus) = f.apic_bus_hz {
            hints = hints.apic_bus(bus);
        }
    }
    let native =
        pvops_native::init_with(ctx, hints).map_err(|e| BackendError { backend: NAME, ..e })?;
    // After native's init: its serial console carries the warnings.
    pvops_core::fault::announce(&faults, |w| warn(format_args!("{w}")));
    if off.unknown {
        warn(format_args!(
            "vmware: pvops.vmware.off names no source (cpuid-freq, gethz, apic-freq, all)"
        ));
    }
    for e in p.problems() {
        warn(format_args!("vmware: {e}"));
    }
    if p.freq.is_none() {
        warn(format_args!(
            "vmware: no TSC frequency from the hypervisor: native's own"
        ));
    }
    let mut features = Features::new();
    if p.backdoor.is_ok() {
        features.push("backdoor");
    }
    if let Some((_, source)) = p.freq {
        features.push(source.feature());
    }
    if pvops_native::info().is_some_and(|i| i.apic_timer_given) {
        features.push("apic-freq");
    }
    let mut t = native;
    t.identity = Identity {
        platform: Platform::Vmware,
        backend: NAME,
        features,
        // The primary CPUID signature, as every backend reports it (none
        // where only SMBIOS and the backdoor say VMware).
        hypervisor: ctx.cpuid.primary().map(|l| l.kind),
    };
    Ok(t)
}

/// The VMware backend as a detection candidate.
pub const CANDIDATE: Candidate = Candidate {
    name: NAME,
    detect,
    init,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Regs;
    use crate::backdoor::tests::FakeBackdoor;
    use pvops_core::cpu::CpuidResult;
    use pvops_core::detect::HypervisorKind;

    /// VMware's leaves: the signature range up to `max`, the timing leaf
    /// with `tsc_khz`.
    struct Leaves {
        tsc_khz: u32,
    }
    impl CpuidSource for Leaves {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            match leaf {
                0x4000_0010 => CpuidResult {
                    eax: self.tsc_khz,
                    ebx: 1_000_000,
                    ecx: 0,
                    edx: 0,
                },
                _ => CpuidResult::default(),
            }
        }
    }

    fn vmware(max_leaf: u32) -> Evidence {
        Evidence::Signature(HypervisorLeaf {
            base: 0x4000_0000,
            max_leaf,
            kind: HypervisorKind::VMware,
        })
    }

    #[test]
    fn timing_leaf_first() {
        let b = FakeBackdoor::qemu();
        let p = plan(
            vmware(0x4000_0010),
            None,
            &Leaves { tsc_khz: 2_304_000 },
            &b,
            Off::default(),
        );
        let (f, src) = p.freq.unwrap();
        assert_eq!(src, FreqSource::CpuidLeaf);
        assert_eq!(f.tsc_hz, 2_304_000_000);
        assert_eq!(f.apic_bus_hz, Some(1_000_000_000));
        assert_eq!(p.problems().count(), 0);
        // GETHZ was not needed.
        assert_eq!(*b.calls.borrow(), [abi::cmd::GETVERSION]);
    }

    #[test]
    fn missing_or_lying_leaf_falls_back_to_gethz() {
        for (max, khz) in [(0x4000_0001, 2_304_000), (0x4000_0010, 0), (0x4000_0010, 3)] {
            let b = FakeBackdoor::qemu();
            let p = plan(
                vmware(max),
                None,
                &Leaves { tsc_khz: khz },
                &b,
                Off::default(),
            );
            assert_eq!(
                p.freq.map(|(f, s)| (f.tsc_hz, s)),
                Some((2_500_000_000, FreqSource::Gethz))
            );
            assert_eq!(p.problems().count(), 1, "{p:?}");
        }
    }

    #[test]
    fn garbage_from_gethz_leaves_native_to_measure() {
        let mut b = FakeBackdoor::qemu();
        b.hz = Regs {
            eax: 12,
            ebx: 0,
            ecx: 0,
            edx: 0,
        };
        let p = plan(
            vmware(0x4000_0001),
            None,
            &Leaves { tsc_khz: 0 },
            &b,
            Off::default(),
        );
        assert_eq!(p.freq, None);
        let problems: std::vec::Vec<_> = p.problems().copied().collect();
        assert_eq!(
            problems,
            [
                VmwareError::TimingLeafAbsent {
                    max_leaf: 0x4000_0001
                },
                VmwareError::GethzImplausible { hz: 12 }
            ]
        );
    }

    #[test]
    fn smbios_evidence_reads_the_leaf_in_the_primary_range() {
        // QEMU/KVM forced onto this backend: the leaf sits in KVM's range.
        let kvm = HypervisorLeaf {
            base: 0x4000_0000,
            max_leaf: 0x4000_0010,
            kind: HypervisorKind::Kvm,
        };
        let b = FakeBackdoor::qemu();
        let p = plan(
            Evidence::Smbios,
            Some(kvm),
            &Leaves { tsc_khz: 2_000_000 },
            &b,
            Off::default(),
        );
        assert_eq!(p.freq.map(|(_, s)| s), Some(FreqSource::CpuidLeaf));
        // kvm=off: no range at all, GETHZ.
        let p = plan(
            Evidence::Smbios,
            None,
            &Leaves { tsc_khz: 2_000_000 },
            &b,
            Off::default(),
        );
        assert_eq!(p.freq.map(|(_, s)| s), Some(FreqSource::Gethz));
    }

    #[test]
    fn refused_backdoor_means_no_gethz() {
        let b = FakeBackdoor::qemu();
        b.faults
            .configure(Some("vmware.backdoor,vmware.cpuid-freq"), fault_points::ALL);
        let p = plan(
            vmware(0x4000_0010),
            None,
            &Leaves { tsc_khz: 2_000_000 },
            &b,
            Off::default(),
        );
        assert_eq!(p.backdoor, Err(VmwareError::Injected("vmware.backdoor")));
        assert_eq!(p.freq, None);
        assert!(b.calls.borrow().is_empty());
    }

    #[test]
    fn command_line_switches_sources_off() {
        let off = Off::parse("cpuid-freq,apic-freq,bogus");
        assert!(off.cpuid_freq && off.apic_freq && !off.gethz && off.unknown);
        let b = FakeBackdoor::qemu();
        let p = plan(
            vmware(0x4000_0010),
            None,
            &Leaves { tsc_khz: 2_000_000 },
            &b,
            off,
        );
        assert_eq!(
            p.freq,
            Some((
                Frequencies {
                    tsc_hz: 2_500_000_000,
                    apic_bus_hz: None
                },
                FreqSource::Gethz
            ))
        );
        assert!(Off::parse("all").gethz);
        assert_eq!(Off::parse(""), Off::default());
    }
}
