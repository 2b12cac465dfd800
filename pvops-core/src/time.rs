//! Time operations: the scheduler clock, the wall clock, stolen time and a
//! one-shot timer interrupt.

use crate::cpu::CpuId;
use crate::patch::Op;
use crate::table::ops;

/// Seconds and nanoseconds since 1970-01-01T00:00:00Z.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct WallClock {
    /// Whole seconds since the Unix epoch.
    pub secs: u64,
    /// Nanoseconds past `secs` (below 1e9).
    pub nsecs: u32,
}

/// The time operations a backend provides.
pub trait TimeOps {
    /// Nanoseconds since an arbitrary point at boot; never goes backwards on
    /// one CPU, and agrees across CPUs within the backend's stated bound.
    fn sched_clock() -> u64;
    /// The current wall-clock time.
    fn wall_clock() -> WallClock;
    /// Nanoseconds `cpu` was runnable but not running because the host ran
    /// something else (0 where the platform cannot tell).
    fn steal_clock(cpu: CpuId) -> u64;
    /// Prepares this CPU's one-shot timer to raise `vector` when it fires.
    fn timer_setup(vector: u8);
    /// Arms this CPU's one-shot timer to fire once, `delta_ns` from now.
    /// Arming again replaces the previous deadline.
    fn timer_arm(delta_ns: u64);
    /// Disarms this CPU's one-shot timer.
    fn timer_cancel();
}

/// The time group of the ops table.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct TimeOpsTable {
    pub sched_clock: fn() -> u64,
    pub wall_clock: fn() -> WallClock,
    pub steal_clock: fn(CpuId) -> u64,
    pub timer_setup: fn(u8),
    pub timer_arm: fn(u64),
    pub timer_cancel: fn(),
}

impl TimeOpsTable {
    /// The table that forwards every op to `T`.
    pub const fn of<T: TimeOps>() -> Self {
        Self {
            sched_clock: T::sched_clock,
            wall_clock: T::wall_clock,
            steal_clock: T::steal_clock,
            timer_setup: T::timer_setup,
            timer_arm: T::timer_arm,
            timer_cancel: T::timer_cancel,
        }
    }
}

impl core::fmt::Debug for TimeOpsTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TimeOpsTable { .. }")
    }
}

/// Nanoseconds since boot, monotonic.
///
/// A patchable call site ([`crate::patch`]), patched into a direct call.
#[inline]
pub fn sched_clock() -> u64 {
    let ns: u64;
    // SAFETY: a call site: it calls the C-ABI `time.sched_clock` of the
    // installed table (or the not-installed one) through its slot, or
    // directly once patched; the operands and `clobber_abi("C")` declare
    // that function's signature and clobbers.
    unsafe { crate::patch::site::site!(c Op::SchedClock, lateout("rax") ns) };
    ns
}

/// The current wall-clock time.
#[inline]
pub fn wall_clock() -> WallClock {
    (ops().time.wall_clock)()
}

/// Nanoseconds stolen from `cpu` by the host.
#[inline]
pub fn steal_clock(cpu: CpuId) -> u64 {
    (ops().time.steal_clock)(cpu)
}

/// Prepares this CPU's one-shot timer to raise `vector`.
#[inline]
pub fn timer_setup(vector: u8) {
    (ops().time.timer_setup)(vector)
}

/// Arms this CPU's one-shot timer `delta_ns` from now.
#[inline]
pub fn timer_arm(delta_ns: u64) {
    (ops().time.timer_arm)(delta_ns)
}

/// Disarms this CPU's one-shot timer.
#[inline]
pub fn timer_cancel() {
    (ops().time.timer_cancel)()
}

/// Turns counter ticks into nanoseconds the way pvclock does: shift the
/// delta left (or right, for a negative shift), then multiply by a 32.32
/// fixed-point fraction. The same math serves the TSC on bare hardware,
/// kvmclock and Xen's vcpu_time_info, so it lives here once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockScale {
    /// Multiplier, a fraction with 32 bits after the point.
    pub mul_frac: u32,
    /// Power of two applied to the delta first.
    pub shift: i8,
}

impl ClockScale {
    /// The scale for a counter running at `hz` ticks a second, or `None`
    /// for 0 or a frequency too high to express (over 2^32 GHz).
    pub fn from_hz(hz: u64) -> Option<Self> {
        if hz == 0 {
            return None;
        }
        // Want ns = delta * 1e9 / hz = ((delta << shift) * mul_frac) >> 32
        // with mul_frac < 2^32 as large as possible for precision:
        // mul_frac = (1e9 << 32) / (hz << shift).
        let target: u128 = 1_000_000_000u128 << 32;
        let mut shift: i32 = 0;
        let mut scaled: u128 = u128::from(hz);
        // Make 1e9/scaled < 1 (mul_frac fits 32 bits) ...
        while scaled <= 1_000_000_000 {
            scaled <<= 1;
            shift -= 1;
        }
        // ... but keep it at least 1/2 for precision.
        while scaled > 2_000_000_000 {
            scaled >>= 1;
            shift += 1;
        }
        // scaled = hz * 2^-shift, so delta ticks give delta * 2^shift
        // scaled-ticks: the delta must be shifted by -shift... express in
        // pvclock's convention where the *delta* is shifted.
        let mul = target / scaled;
        if mul > u128::from(u32::MAX) || !(-64..=63).contains(&shift) {
            return None;
        }
        Some(Self {
            mul_frac: mul as u32,
            shift: (-shift) as i8,
        })
    }

    /// The frequency in Hz of a counter this scale converts (the inverse
    /// of [`ClockScale::from_hz`], to within rounding), or `None` for a
    /// scale no real counter has (a zero multiplier, an absurd shift).
    pub fn hz(self) -> Option<u64> {
        if self.mul_frac == 0 || !(-32..=32).contains(&self.shift) {
            return None;
        }
        // ns per tick = mul_frac * 2^shift / 2^32, so
        // hz = 1e9 * 2^32 / (mul_frac * 2^shift).
        let num: u128 = 1_000_000_000u128 << 32;
        let hz = if self.shift >= 0 {
            num / (u128::from(self.mul_frac) << self.shift)
        } else {
            (num << -self.shift) / u128::from(self.mul_frac)
        };
        u64::try_from(hz).ok().filter(|&hz| hz > 0)
    }

    /// Nanoseconds for `delta` ticks. Never overflows and never wraps: any
    /// intermediate that does not fit saturates the result at `u64::MAX`,
    /// so the result is monotonic in `delta` for every scale, including the
    /// nonsense a misbehaving hypervisor may write (found by fuzzing: a
    /// shift of 127 used to wrap).
    #[inline]
    pub fn ticks_to_ns(self, delta: u64) -> u64 {
        let d = u128::from(delta);
        let shifted = if self.shift >= 0 {
            let s = self.shift as u32;
            // Lossless only while no set bit is shifted out.
            if d == 0 || s <= d.leading_zeros() {
                Some(d << s)
            } else {
                None
            }
        } else {
            let s = (-i32::from(self.shift)) as u32;
            Some(if s >= 128 { 0 } else { d >> s })
        };
        shifted
            .and_then(|x| x.checked_mul(u128::from(self.mul_frac)))
            .and_then(|p| u64::try_from(p >> 32).ok())
            .unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::ClockScale;

    fn check(hz: u64) {
        let s = ClockScale::from_hz(hz).expect("scale");
        // One second of ticks is one second, within 1 ppm.
        let ns = s.ticks_to_ns(hz);
        let err = (ns as i128 - 1_000_000_000i128).abs();
        assert!(err <= 1_000, "hz={hz} ns={ns} scale={s:?}");
    }

    #[test]
    fn frequency_back_from_a_scale() {
        for hz in [
            1_193_182,
            100_000_000,
            2_112_000_000,
            3_999_999_999,
            6_000_000_000,
        ] {
            let back = ClockScale::from_hz(hz).unwrap().hz().unwrap();
            let err = (back as i128 - hz as i128).abs();
            assert!(err * 1_000_000 <= hz as i128, "hz={hz} back={back}");
        }
        // A scale in pvclock's form with a negative shift (a GHz counter:
        // delta halved, then multiplied by ~0.87).
        let pv = ClockScale {
            mul_frac: 0xde7d_2c12,
            shift: -1,
        };
        assert_eq!(pv.hz(), Some(2_301_237_843));
        assert_eq!(
            ClockScale {
                mul_frac: 0,
                shift: 0
            }
            .hz(),
            None
        );
        assert_eq!(
            ClockScale {
                mul_frac: 1,
                shift: 127
            }
            .hz(),
            None
        );
    }

    #[test]
    fn scales_common_frequencies() {
        for hz in [
            1_000_000,
            14_318_180,
            1_193_182,
            100_000_000,
            1_000_000_000,
            2_100_000_000,
            3_999_999_999,
            5_000_000_000,
        ] {
            check(hz);
        }
    }

    #[test]
    fn pvclock_example_values() {
        // A 1 GHz counter: shift 0 would need mul_frac = 2^32 (too big), so
        // the scale halves the delta... either way 1e9 ticks = 1e9 ns.
        let s = ClockScale::from_hz(1_000_000_000).unwrap();
        assert_eq!(s.ticks_to_ns(0), 0);
        let ns = s.ticks_to_ns(123_456_789);
        assert!((ns as i64 - 123_456_789).abs() <= 1);
    }

    #[test]
    fn no_overflow_and_zero() {
        assert!(ClockScale::from_hz(0).is_none());
        let s = ClockScale::from_hz(3_000_000_000).unwrap();
        // 2^64 ticks at 3 GHz is ~194 years: fits; must not panic.
        let ns = s.ticks_to_ns(u64::MAX);
        assert!(ns > 6_000_000_000_000_000_000);
        let neg = ClockScale {
            mul_frac: u32::MAX,
            shift: 5,
        };
        assert_eq!(neg.ticks_to_ns(u64::MAX), u64::MAX);
        // Extreme shifts saturate or vanish instead of wrapping (fuzzing
        // regression).
        let big = ClockScale {
            mul_frac: 1,
            shift: 127,
        };
        assert!(big.ticks_to_ns(1) <= big.ticks_to_ns(2));
        assert_eq!(big.ticks_to_ns(2), u64::MAX);
        let tiny = ClockScale {
            mul_frac: u32::MAX,
            shift: -128,
        };
        assert_eq!(tiny.ticks_to_ns(u64::MAX), 0);
    }
}
