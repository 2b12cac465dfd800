//! The time-stamp counter: reading it and finding its frequency.

use crate::pit;
use pvops_core::detect::{CpuidSource, HardwareCpuid};

/// Reads the TSC.
#[inline]
pub fn read() -> u64 {
    // SAFETY: rdtsc has no side effects; the kernel runs in ring 0 (or has
    // CR4.TSD clear) on bare hardware.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Where the TSC frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TscSource {
    /// CPUID leaf 0x15 (crystal ratio).
    Cpuid15,
    /// CPUID leaf 0x16 (base frequency).
    Cpuid16,
    /// Measured against the PIT.
    Pit,
    /// Measured against PIT channel 0's counter (machines whose PIT has no
    /// channel-2 gate at port 0x61, such as QEMU's `microvm`).
    PitCounter,
    /// The hypervisor's timing leaf 0x40000010 (EAX: TSC kHz), as VMware
    /// defined it and QEMU fills for KVM (`vmware-cpuid-freq`).
    HypervisorLeaf,
    /// Given by the backend that runs native underneath (kvmclock's or
    /// Xen's pvclock scale).
    Given,
    /// Given by the backend that runs native underneath, which named where
    /// it read it (`NativeHints::tsc`), e.g. `vmware-gethz`.
    Backend(&'static str),
}

impl TscSource {
    /// Name for the info line.
    pub fn as_str(self) -> &'static str {
        match self {
            TscSource::Cpuid15 => "cpuid15",
            TscSource::Cpuid16 => "cpuid16",
            TscSource::Pit => "pit",
            TscSource::PitCounter => "pit-counter",
            TscSource::HypervisorLeaf => "cpuid40000010",
            TscSource::Given => "pvclock",
            TscSource::Backend(name) => name,
        }
    }
}

/// Frequencies outside this range are treated as wrong answers.
pub const PLAUSIBLE_HZ: core::ops::RangeInclusive<u64> = 100_000_000..=20_000_000_000;

/// The TSC frequency from CPUID leaves 0x15/0x16, if they give a plausible
/// one.
pub fn hz_from_cpuid(src: &impl CpuidSource) -> Option<(u64, TscSource)> {
    let max = src.cpuid(0, 0).eax;
    if max >= 0x15 {
        let r = src.cpuid(0x15, 0);
        let (den, num, crystal) = (u64::from(r.eax), u64::from(r.ebx), u64::from(r.ecx));
        if den != 0 && num != 0 && crystal != 0 {
            let hz = crystal * num / den;
            if PLAUSIBLE_HZ.contains(&hz) {
                return Some((hz, TscSource::Cpuid15));
            }
        }
    }
    if max >= 0x16 {
        let mhz = u64::from(src.cpuid(0x16, 0).eax & 0xffff);
        let hz = mhz * 1_000_000;
        if PLAUSIBLE_HZ.contains(&hz) {
            return Some((hz, TscSource::Cpuid16));
        }
    }
    None
}

/// Measures the TSC against the PIT: the fastest of three 10 ms windows
/// (being descheduled only ever lengthens a window).
pub fn hz_from_pit() -> Option<u64> {
    hz_against_pit(pit::tsc_ticks_during)
}

/// The fastest of three 10 ms windows, each `window(pit_ticks)` TSC ticks
/// long, as a plausible frequency.
fn hz_against_pit(window: impl Fn(u16) -> Option<u64>) -> Option<u64> {
    const WINDOW_MS: u64 = 10;
    let pit_ticks = (pit::PIT_HZ * WINDOW_MS / 1000) as u16;
    let best = (0..3).filter_map(|_| window(pit_ticks)).min()?;
    let hz = best * pit::PIT_HZ / u64::from(pit_ticks);
    PLAUSIBLE_HZ.contains(&hz).then_some(hz)
}

/// The TSC frequency from the hypervisor timing leaf 0x40000010 (EAX: TSC
/// kHz) of the hypervisor whose base leaf is `base`, if its range reaches
/// that far and the value is plausible. Only asked when CPUID says a
/// hypervisor is there.
pub fn hz_from_hypervisor_leaf(src: &impl CpuidSource, base: u32) -> Option<u64> {
    const TIMING: u32 = 0x10;
    if src.cpuid(base, 0).eax < base + TIMING {
        return None;
    }
    let hz = u64::from(src.cpuid(base + TIMING, 0).eax) * 1000;
    PLAUSIBLE_HZ.contains(&hz).then_some(hz)
}

/// Measures the TSC against PIT channel 0's counter, read by latching (no
/// gate port needed): the fastest of three 10 ms windows.
pub fn hz_from_pit_counter() -> Option<u64> {
    hz_against_pit(pit::tsc_ticks_counting)
}

/// The TSC frequency: `given` (from the backend that runs native
/// underneath: a paravirtual clock's scale, or a frequency its hypervisor
/// reports, with the name of where it came from if it gave one), else CPUID
/// leaves 0x15/0x16, else the hypervisor timing leaf of `hypervisor_base`,
/// else measured against the PIT (channel 2, then channel 0's counter).
pub fn frequency(
    given: Option<u64>,
    given_by: Option<&'static str>,
    hypervisor_base: Option<u32>,
) -> Option<(u64, TscSource)> {
    if let Some(hz) = given.filter(|hz| PLAUSIBLE_HZ.contains(hz)) {
        return Some((hz, given_by.map_or(TscSource::Given, TscSource::Backend)));
    }
    hz_from_cpuid(&HardwareCpuid)
        .or_else(|| {
            hypervisor_base
                .and_then(|b| hz_from_hypervisor_leaf(&HardwareCpuid, b))
                .map(|hz| (hz, TscSource::HypervisorLeaf))
        })
        .or_else(|| hz_from_pit().map(|hz| (hz, TscSource::Pit)))
        .or_else(|| hz_from_pit_counter().map(|hz| (hz, TscSource::PitCounter)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::cpu::CpuidResult;

    struct Fake<'a>(&'a [(u32, CpuidResult)]);
    impl CpuidSource for Fake<'_> {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            self.0
                .iter()
                .find(|(l, _)| *l == leaf)
                .map(|(_, r)| *r)
                .unwrap_or_default()
        }
    }
    const fn r(eax: u32, ebx: u32, ecx: u32) -> CpuidResult {
        CpuidResult {
            eax,
            ebx,
            ecx,
            edx: 0,
        }
    }

    #[test]
    fn leaf_15_crystal_ratio() {
        let f = Fake(&[(0, r(0x16, 0, 0)), (0x15, r(2, 176, 24_000_000))]);
        assert_eq!(hz_from_cpuid(&f), Some((2_112_000_000, TscSource::Cpuid15)));
    }

    #[test]
    fn leaf_16_when_15_lacks_crystal() {
        let f = Fake(&[
            (0, r(0x16, 0, 0)),
            (0x15, r(2, 176, 0)),
            (0x16, r(2400, 0, 0)),
        ]);
        assert_eq!(hz_from_cpuid(&f), Some((2_400_000_000, TscSource::Cpuid16)));
    }

    #[test]
    fn hypervisor_timing_leaf() {
        let base = 0x4000_0000;
        // QEMU/KVM with vmware-cpuid-freq: 0x40000010 EAX = 2.5 GHz in kHz.
        let f = Fake(&[
            (base, r(base + 0x10, 0, 0)),
            (base + 0x10, r(2_500_000, 1_000_000, 0)),
        ]);
        assert_eq!(hz_from_hypervisor_leaf(&f, base), Some(2_500_000_000));
        // The range stops below it: not read.
        let f = Fake(&[(base, r(base + 1, 0, 0)), (base + 0x10, r(2_500_000, 0, 0))]);
        assert_eq!(hz_from_hypervisor_leaf(&f, base), None);
        // A zero or absurd value is no answer.
        let f = Fake(&[(base, r(base + 0x10, 0, 0)), (base + 0x10, r(7, 0, 0))]);
        assert_eq!(hz_from_hypervisor_leaf(&f, base), None);
    }

    #[test]
    fn given_frequency_keeps_its_source_name() {
        assert_eq!(
            frequency(Some(2_300_000_000), Some("vmware-gethz"), None),
            Some((2_300_000_000, TscSource::Backend("vmware-gethz")))
        );
        assert_eq!(TscSource::Backend("vmware-cpuid").as_str(), "vmware-cpuid");
        assert_eq!(
            frequency(Some(2_300_000_000), None, None),
            Some((2_300_000_000, TscSource::Given))
        );
    }

    #[test]
    fn lying_or_missing_leaves_give_none() {
        assert_eq!(hz_from_cpuid(&Fake(&[(0, r(0xd, 0, 0))])), None);
        // Leaf 0x15 claims 1 kHz: implausible, and leaf 0x16 is absent.
        let f = Fake(&[(0, r(0x15, 0, 0)), (0x15, r(1000, 1, 1_000_000))]);
        assert_eq!(hz_from_cpuid(&f), None);
    }
}
