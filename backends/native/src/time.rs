//! Time ops on bare hardware: the TSC for the scheduler clock, the CMOS RTC
//! read once at boot for the wall clock, and the local APIC timer in
//! one-shot mode.

use crate::apic::{self, reg, LVT_MASKED};
use crate::Native;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::time::{ClockScale, TimeOps, WallClock};

static TSC_BASE: AtomicU64 = AtomicU64::new(0);
static SCALE_MUL: AtomicU32 = AtomicU32::new(0);
static SCALE_SHIFT: AtomicU8 = AtomicU8::new(0);
/// Wall-clock nanoseconds since the epoch at sched_clock 0.
static WALL_BASE_NS: AtomicU64 = AtomicU64::new(0);
/// APIC timer ticks per millisecond, at divide-by-16.
static APIC_TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);
static TIMER_VECTOR: AtomicU8 = AtomicU8::new(0);

/// APIC timer divide configuration value for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;

/// Starts the scheduler clock at 0 with `scale` for the TSC.
pub(crate) fn init_clock(scale: ClockScale) {
    SCALE_MUL.store(scale.mul_frac, Ordering::Relaxed);
    SCALE_SHIFT.store(scale.shift as u8, Ordering::Relaxed);
    TSC_BASE.store(crate::tsc::read(), Ordering::Release);
}

fn scale() -> ClockScale {
    ClockScale {
        mul_frac: SCALE_MUL.load(Ordering::Relaxed),
        shift: SCALE_SHIFT.load(Ordering::Relaxed) as i8,
    }
}

/// Sets the wall clock: `unix_secs` is the time now.
pub(crate) fn init_wall(unix_secs: u64) {
    let now = <Native as TimeOps>::sched_clock();
    WALL_BASE_NS.store(
        unix_secs.saturating_mul(1_000_000_000).saturating_sub(now),
        Ordering::Relaxed,
    );
}

/// Measures the APIC timer against the scheduler clock (~10 ms, timer
/// masked). Returns ticks per millisecond, or `None` if it does not count.
///
/// Both clock readings lie inside the span the timer counts (started
/// before the first, read after the second), so the ticks cover at least
/// the time they are divided by (in nanoseconds, not whole milliseconds).
/// A vCPU preempted at either edge can then only make the rate too high,
/// and timers fire late, never early. (With the clock read before the
/// timer started, a loaded nested KVM fired a 20 ms one-shot after 17.4.)
pub(crate) fn calibrate_apic_timer() -> Option<u64> {
    apic::write(reg::TIMER_DIVIDE, DIVIDE_BY_16);
    apic::write(reg::LVT_TIMER, LVT_MASKED);
    apic::write(reg::TIMER_INITIAL, u32::MAX);
    let t0 = <Native as TimeOps>::sched_clock();
    let mut t1 = t0;
    // Bounded by iterations as well as time so a stopped clock cannot hang us.
    for _ in 0..50_000_000u32 {
        t1 = <Native as TimeOps>::sched_clock();
        if t1 - t0 >= 10_000_000 {
            break;
        }
        core::hint::spin_loop();
    }
    let left = apic::read(reg::TIMER_CURRENT);
    apic::write(reg::TIMER_INITIAL, 0);
    ticks_per_ms(u64::from(u32::MAX - left), t1 - t0)
}

/// APIC bus frequencies outside this range are treated as wrong answers.
const PLAUSIBLE_BUS_HZ: core::ops::RangeInclusive<u64> = 1_000_000..=10_000_000_000;

/// Sets the APIC timer's rate from its input clock, `bus_hz` (as a
/// hypervisor reports it), instead of measuring it. Returns ticks per
/// millisecond at divide-by-16, or `None` (nothing set) when `bus_hz` is
/// implausible.
pub(crate) fn apic_ticks_per_ms_of_bus(bus_hz: u64) -> Option<u64> {
    if !PLAUSIBLE_BUS_HZ.contains(&bus_hz) {
        return None;
    }
    let per_ms = bus_hz / 16 / 1000;
    APIC_TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    Some(per_ms)
}

/// Ticks per millisecond from `ticks` counted over at least `ns`
/// nanoseconds; `None` when either is 0 (the timer or the clock stands).
fn ticks_per_ms(ticks: u64, ns: u64) -> Option<u64> {
    if ticks == 0 || ns == 0 {
        return None;
    }
    let per_ms = u64::try_from(u128::from(ticks) * 1_000_000 / u128::from(ns)).ok()?;
    APIC_TICKS_PER_MS.store(per_ms, Ordering::Relaxed);
    Some(per_ms)
}

impl TimeOps for Native {
    #[inline]
    fn sched_clock() -> u64 {
        let delta = crate::tsc::read().wrapping_sub(TSC_BASE.load(Ordering::Relaxed));
        scale().ticks_to_ns(delta)
    }

    fn wall_clock() -> WallClock {
        let ns = WALL_BASE_NS.load(Ordering::Relaxed) + Self::sched_clock();
        WallClock {
            secs: ns / 1_000_000_000,
            nsecs: (ns % 1_000_000_000) as u32,
        }
    }

    /// Bare hardware has no host to steal time.
    fn steal_clock(_cpu: CpuId) -> u64 {
        0
    }

    fn timer_setup(vector: u8) {
        TIMER_VECTOR.store(vector, Ordering::Relaxed);
        apic::write(reg::TIMER_DIVIDE, DIVIDE_BY_16);
        // One-shot mode (bits 17-18 zero), masked until armed.
        apic::write(reg::LVT_TIMER, LVT_MASKED | u32::from(vector));
    }

    fn timer_arm(delta_ns: u64) {
        let per_ms = APIC_TICKS_PER_MS.load(Ordering::Relaxed);
        let ticks =
            (u128::from(delta_ns) * u128::from(per_ms) / 1_000_000).clamp(1, u128::from(u32::MAX));
        apic::write(
            reg::LVT_TIMER,
            u32::from(TIMER_VECTOR.load(Ordering::Relaxed)),
        );
        apic::write(reg::TIMER_INITIAL, ticks as u32);
    }

    fn timer_cancel() {
        apic::write(reg::TIMER_INITIAL, 0);
        apic::write(
            reg::LVT_TIMER,
            LVT_MASKED | u32::from(TIMER_VECTOR.load(Ordering::Relaxed)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_from_ticks_and_nanoseconds() {
        assert_eq!(ticks_per_ms(62_500, 10_000_000), Some(6_250));
        // 11.9 ms: no truncation to 11 (which made the rate 8% high).
        assert_eq!(ticks_per_ms(119_000, 11_900_000), Some(10_000));
        assert_eq!(ticks_per_ms(0, 10_000_000), None);
        assert_eq!(ticks_per_ms(5, 0), None);
        assert_eq!(ticks_per_ms(u64::MAX, 1), None);
    }

    #[test]
    fn rate_from_a_given_bus_frequency() {
        // QEMU's APIC bus: 1 GHz, divided by 16.
        assert_eq!(apic_ticks_per_ms_of_bus(1_000_000_000), Some(62_500));
        assert_eq!(apic_ticks_per_ms_of_bus(0), None);
        assert_eq!(apic_ticks_per_ms_of_bus(u64::from(u32::MAX) * 1000), None);
    }
}
