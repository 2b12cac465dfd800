//! The backdoor port, typed: a small [`Backdoor`] trait (the real port, or
//! a fake in host tests), and the two commands pvops uses, GETVERSION (is
//! VMware there?) and GETHZ (TSC and APIC bus frequencies), with their
//! replies checked.

use crate::abi::{self, cmd, Regs};
use crate::error::VmwareError;
use pvops_core::fault::Table;

/// Anything that answers backdoor calls.
pub trait Backdoor {
    /// One call: `command` in ECX, `arg` in EBX; the registers returned.
    fn call(&self, command: u16, arg: u32) -> Regs;

    /// The `pvops.fail=` table this backdoor's calls consult (the
    /// kernel's; fakes bring their own).
    fn faults(&self) -> &Table {
        pvops_core::fault::active()
    }
}

/// The real backdoor, through port 0x5658.
#[derive(Debug)]
pub struct Port {
    _only_through_new: (),
}

impl Port {
    /// The port, for calls.
    ///
    /// # Safety
    /// Only in ring 0, and only where CPUID's signature or the firmware's
    /// SMBIOS already says VMware ([`crate::detect`](mod@crate::detect)): elsewhere port
    /// 0x5658 may be a device's.
    pub unsafe fn new() -> Self {
        Port {
            _only_through_new: (),
        }
    }
}

impl Backdoor for Port {
    fn call(&self, command: u16, arg: u32) -> Regs {
        // SAFETY: a `Port` exists only where `Port::new`'s contract holds.
        unsafe { abi::port_call(command, arg) }
    }
}

/// What GETVERSION answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The backdoor interface version (QEMU's vmport says 6).
    pub version: u32,
    /// The product type (ECX; 2 is ESX/"server" in VMware's numbering,
    /// QEMU's default).
    pub product: u32,
}

/// Fault point: GETVERSION acts as if nothing answered.
pub const FAULT_BACKDOOR: &str = "vmware.backdoor";
/// Fault point: GETHZ acts as if it had no frequency.
pub const FAULT_GETHZ: &str = "vmware.gethz";

/// Reads GETVERSION's reply: EBX must be the magic and EAX a version.
pub fn parse_version(r: Regs) -> Result<Version, VmwareError> {
    if r.ebx != abi::MAGIC {
        return Err(VmwareError::BackdoorSilent {
            eax: r.eax,
            ebx: r.ebx,
        });
    }
    if r.eax == u32::MAX {
        return Err(VmwareError::BackdoorNoVersion);
    }
    Ok(Version {
        version: r.eax,
        product: r.ecx,
    })
}

/// Asks GETVERSION.
pub fn version(b: &(impl Backdoor + ?Sized)) -> Result<Version, VmwareError> {
    if b.faults().hit(FAULT_BACKDOOR) {
        return Err(VmwareError::Injected(FAULT_BACKDOOR));
    }
    // EBX is sent as anything but the magic, so an echo is no answer.
    parse_version(b.call(cmd::GETVERSION, !abi::MAGIC))
}

/// The frequencies a hypervisor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frequencies {
    /// The TSC's, in Hz (checked plausible).
    pub tsc_hz: u64,
    /// The local APIC timer's input clock (the APIC bus), in Hz, when the
    /// hypervisor gave one.
    pub apic_bus_hz: Option<u64>,
}

/// Reads GETHZ's reply: EBX:EAX the TSC frequency in Hz (EBX all ones: not
/// available), ECX the APIC bus frequency in Hz (0 or all ones: unknown).
pub fn parse_gethz(r: Regs) -> Result<Frequencies, VmwareError> {
    if r.ebx == u32::MAX {
        return Err(VmwareError::GethzUnavailable);
    }
    let hz = (u64::from(r.ebx) << 32) | u64::from(r.eax);
    if !pvops_native::tsc::PLAUSIBLE_HZ.contains(&hz) {
        return Err(VmwareError::GethzImplausible { hz });
    }
    Ok(Frequencies {
        tsc_hz: hz,
        apic_bus_hz: (r.ecx != 0 && r.ecx != u32::MAX).then_some(u64::from(r.ecx)),
    })
}

/// Asks GETHZ.
pub fn gethz(b: &(impl Backdoor + ?Sized)) -> Result<Frequencies, VmwareError> {
    if b.faults().hit(FAULT_GETHZ) {
        return Err(VmwareError::Injected(FAULT_GETHZ));
    }
    parse_gethz(b.call(cmd::GETHZ, u32::MAX))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::vec::Vec;

    /// A backdoor with scripted replies, counting calls.
    pub(crate) struct FakeBackdoor {
        pub version: Regs,
        pub hz: Regs,
        pub calls: RefCell<Vec<u16>>,
        pub faults: Table,
        pub panics: Cell<bool>,
    }

    impl FakeBackdoor {
        /// What QEMU's vmport answers with a 2.5 GHz TSC and 1 GHz bus.
        pub(crate) fn qemu() -> Self {
            FakeBackdoor {
                version: Regs {
                    eax: 6,
                    ebx: abi::MAGIC,
                    ecx: 2,
                    edx: 0,
                },
                hz: Regs {
                    eax: 2_500_000_000,
                    ebx: 0,
                    ecx: 1_000_000_000,
                    edx: 0,
                },
                calls: RefCell::new(Vec::new()),
                faults: Table::new(),
                panics: Cell::new(false),
            }
        }

        /// Nothing behind the port: all ones in EAX, the rest echoed.
        pub(crate) fn absent() -> Self {
            let echo = |ebx| Regs {
                eax: u32::MAX,
                ebx,
                ecx: 0,
                edx: u32::from(abi::PORT),
            };
            FakeBackdoor {
                version: echo(!abi::MAGIC),
                hz: echo(u32::MAX),
                ..Self::qemu()
            }
        }

        /// A backdoor that must never be called (bare metal).
        pub(crate) fn forbidden() -> Self {
            let f = Self::absent();
            f.panics.set(true);
            f
        }
    }

    impl Backdoor for FakeBackdoor {
        fn call(&self, command: u16, _arg: u32) -> Regs {
            assert!(
                !self.panics.get(),
                "backdoor port probed where it must not be"
            );
            self.calls.borrow_mut().push(command);
            match command {
                cmd::GETVERSION => self.version,
                cmd::GETHZ => self.hz,
                _ => Regs::default(),
            }
        }
        fn faults(&self) -> &Table {
            &self.faults
        }
    }

    #[test]
    fn qemu_vmport_answers() {
        let b = FakeBackdoor::qemu();
        assert_eq!(
            version(&b),
            Ok(Version {
                version: 6,
                product: 2
            })
        );
        assert_eq!(
            gethz(&b),
            Ok(Frequencies {
                tsc_hz: 2_500_000_000,
                apic_bus_hz: Some(1_000_000_000)
            })
        );
        assert_eq!(*b.calls.borrow(), [cmd::GETVERSION, cmd::GETHZ]);
    }

    #[test]
    fn silence_and_garbage_are_typed_errors() {
        let b = FakeBackdoor::absent();
        assert!(matches!(
            version(&b),
            Err(VmwareError::BackdoorSilent { eax: u32::MAX, .. })
        ));
        assert_eq!(gethz(&b), Err(VmwareError::GethzUnavailable));
        // The magic, but "no version".
        let r = Regs {
            eax: u32::MAX,
            ebx: abi::MAGIC,
            ..Regs::default()
        };
        assert_eq!(parse_version(r), Err(VmwareError::BackdoorNoVersion));
        // GETHZ garbage: 7 Hz, and 2^63 Hz.
        let r = |eax, ebx| Regs {
            eax,
            ebx,
            ecx: u32::MAX,
            edx: 0,
        };
        assert_eq!(
            parse_gethz(r(7, 0)),
            Err(VmwareError::GethzImplausible { hz: 7 })
        );
        assert!(matches!(
            parse_gethz(r(0, 0x8000_0000)),
            Err(VmwareError::GethzImplausible { .. })
        ));
        // A frequency above 4 GHz needs EBX; an unknown bus stays unknown.
        assert_eq!(
            parse_gethz(r(0x2a05_f200, 1)),
            Ok(Frequencies {
                tsc_hz: 5_000_000_000,
                apic_bus_hz: None
            })
        );
    }

    #[test]
    fn fault_points_refuse_without_calling() {
        let b = FakeBackdoor::qemu();
        b.faults.configure(
            Some("vmware.backdoor,vmware.gethz"),
            crate::fault_points::ALL,
        );
        assert_eq!(version(&b), Err(VmwareError::Injected(FAULT_BACKDOOR)));
        assert_eq!(gethz(&b), Err(VmwareError::Injected(FAULT_GETHZ)));
        assert!(b.calls.borrow().is_empty());
    }
}
