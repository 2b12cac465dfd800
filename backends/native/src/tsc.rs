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
}

impl TscSource {
    /// Name for the info line.
    pub fn as_str(self) -> &'static str {
        match self {
            TscSource::Cpuid15 => "cpuid15",
            TscSource::Cpuid16 => "cpuid16",
            TscSource::Pit => "pit",
        }
    }
}

/// Frequencies outside this range are treated as wrong answers.
const PLAUSIBLE_HZ: core::ops::RangeInclusive<u64> = 100_000_000..=20_000_000_000;

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
    const WINDOW_MS: u64 = 10;
    let pit_ticks = (pit::PIT_HZ * WINDOW_MS / 1000) as u16;
    let best = (0..3)
        .filter_map(|_| pit::tsc_ticks_during(pit_ticks))
        .min()?;
    let hz = best * pit::PIT_HZ / u64::from(pit_ticks);
    PLAUSIBLE_HZ.contains(&hz).then_some(hz)
}

/// The TSC frequency, from CPUID when it says, else measured.
pub fn frequency() -> Option<(u64, TscSource)> {
    hz_from_cpuid(&HardwareCpuid).or_else(|| hz_from_pit().map(|hz| (hz, TscSource::Pit)))
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
    fn lying_or_missing_leaves_give_none() {
        assert_eq!(hz_from_cpuid(&Fake(&[(0, r(0xd, 0, 0))])), None);
        // Leaf 0x15 claims 1 kHz: implausible, and leaf 0x16 is absent.
        let f = Fake(&[(0, r(0x15, 0, 0)), (0x15, r(1000, 1, 1_000_000))]);
        assert_eq!(hz_from_cpuid(&f), None);
    }
}
