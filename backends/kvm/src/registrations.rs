//! What this backend registered with KVM on each CPU, kept so it can be
//! read back and compared: after a live migration the destination's KVM
//! holds these MSRs only because QEMU carried them over (it reads them on
//! the source and writes them on the destination); a kernel checks that
//! rather than assume it ([`pvops_core::platform::check_registrations`]).

use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::MAX_CPUS;
use pvops_core::platform::{Features, RegistrationLost};

use crate::abi::{MSR_KVM_PV_EOI_EN, MSR_KVM_STEAL_TIME, MSR_KVM_SYSTEM_TIME_NEW};
use crate::percpu::PerCpu;

/// A per-CPU shared area registered through an MSR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// kvmclock's pvclock record (`MSR_KVM_SYSTEM_TIME_NEW`).
    Kvmclock,
    /// The steal-time record (`MSR_KVM_STEAL_TIME`).
    StealTime,
    /// The PV EOI word (`MSR_KVM_PV_EOI_EN`).
    PvEoi,
}

impl Area {
    /// Every area, in the order they are checked.
    pub const ALL: [Area; 3] = [Area::Kvmclock, Area::StealTime, Area::PvEoi];

    /// The MSR that registers it.
    pub const fn msr(self) -> u32 {
        match self {
            Area::Kvmclock => MSR_KVM_SYSTEM_TIME_NEW,
            Area::StealTime => MSR_KVM_STEAL_TIME,
            Area::PvEoi => MSR_KVM_PV_EOI_EN,
        }
    }

    /// Its feature's name on the platform line.
    pub const fn feature(self) -> &'static str {
        match self {
            Area::Kvmclock => "kvmclock",
            Area::StealTime => "steal-time",
            Area::PvEoi => "pv-eoi",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// The value written to each area's MSR, per CPU; 0: not registered.
static WRITTEN: PerCpu<[AtomicU64; 3]> =
    PerCpu::new([const { [const { AtomicU64::new(0) }; 3] }; MAX_CPUS]);

/// Notes that `area` of `cpu` was registered with `value` (its MSR's
/// value: address and enable bit), or withdrawn with 0.
pub(crate) fn record(cpu: CpuId, area: Area, value: u64) {
    if let Some(slots) = WRITTEN.get(cpu) {
        slots[area.index()].store(value, Ordering::Relaxed);
    }
}

/// What was last written for `area` of `cpu` (0: nothing registered).
pub fn written(cpu: CpuId, area: Area) -> u64 {
    WRITTEN
        .get(cpu)
        .map_or(0, |s| s[area.index()].load(Ordering::Relaxed))
}

/// Compares every area registered on `cpu` with what `read_msr` (run on
/// that CPU) says the host holds now; lists the areas that match, or
/// names the first that does not.
pub fn check(cpu: CpuId, read_msr: impl Fn(u32) -> u64) -> Result<Features, RegistrationLost> {
    let mut checked = Features::new();
    for area in Area::ALL {
        let value = written(cpu, area);
        if value == 0 {
            continue;
        }
        let found = read_msr(area.msr());
        if found != value {
            return Err(RegistrationLost {
                feature: area.feature(),
                written: value,
                found,
            });
        }
        checked.push(area.feature());
    }
    Ok(checked)
}

/// The `platform.check_registrations` op: [`check`] on this CPU with its
/// `rdmsr` (KVM answers reads of its MSRs with what it holds).
pub fn check_this_cpu() -> Result<Features, RegistrationLost> {
    let cpu = crate::percpu::this_cpu();
    // SAFETY: KVM's paravirtual MSRs are readable whenever KVM offers the
    // feature, and only registered areas (whose feature it offered) are
    // read; reading has no side effect.
    check(cpu, |msr| unsafe {
        (crate::native::ops().cpu.read_msr)(msr)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn nothing_registered_checks_nothing() {
        let got = check(CpuId(40), |_| panic!("no MSR should be read")).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn held_registrations_are_listed_and_lost_ones_named() {
        let cpu = CpuId(41);
        record(cpu, Area::Kvmclock, 0x1000 | 1);
        record(cpu, Area::StealTime, 0x2040 | 1);
        record(cpu, Area::PvEoi, 0x3004 | 1);
        let held: BTreeMap<u32, u64> = Area::ALL
            .iter()
            .map(|a| (a.msr(), written(cpu, *a)))
            .collect();
        let got = check(cpu, |m| held[&m]).unwrap();
        assert_eq!(
            got.iter().collect::<std::vec::Vec<_>>(),
            ["kvmclock", "steal-time", "pv-eoi"]
        );
        // A destination that dropped steal time (MSR reads 0).
        let lost = check(cpu, |m| if m == MSR_KVM_STEAL_TIME { 0 } else { held[&m] }).unwrap_err();
        assert_eq!(
            lost,
            RegistrationLost {
                feature: "steal-time",
                written: 0x2041,
                found: 0
            }
        );
        // Withdrawn: no longer checked.
        record(cpu, Area::StealTime, 0);
        let got = check(cpu, |m| if m == MSR_KVM_STEAL_TIME { 0 } else { held[&m] }).unwrap();
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn cpus_beyond_the_arrays_record_nothing() {
        let far = CpuId(MAX_CPUS as u32 + 3);
        record(far, Area::PvEoi, 0x5);
        assert_eq!(written(far, Area::PvEoi), 0);
    }
}
