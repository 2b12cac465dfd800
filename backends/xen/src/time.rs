//! Time: the scheduler clock from the pvclock record in each vCPU's
//! `vcpu_info`, the wall clock from shared info, the one-shot timer through
//! `VCPUOP_set_singleshot_timer` and `VIRQ_TIMER`, and stolen time from
//! the runstate area ([`crate::runstate`]).
//!
//! Xen's system time (ns since Xen booted) is the scheduler clock as is,
//! so timer deadlines need no conversion. The pvclock math and its
//! version protocol are [`pvops_core::abi::pvclock`]'s, shared with
//! kvmclock. Unless Xen sets `XEN_PVCLOCK_TSC_STABLE_BIT`, records of
//! different vCPUs may disagree slightly, so readings are made monotonic
//! across the machine with one atomic maximum (as Linux does).

use crate::abi::shared::SharedInfo;
use crate::percpu::{slot, MAX_VCPUS};
use crate::ports::{port_of, PortKind};
use crate::shared::{shared_info, vcpu_info};
use crate::warn::warn_once;
use crate::xen::XEN;
use crate::XenPvh;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use pvops_core::abi::pvclock::{
    read_time_info, read_versioned, PvclockFlags, TimeInfoPtr, Versioned, DEFAULT_MAX_TRIES,
};
use pvops_core::cpu::CpuId;
use pvops_core::time::{TimeOps, WallClock};

/// The vector each vCPU's timer raises (0: none set up).
static TIMER_VECTOR: [AtomicU8; MAX_VCPUS] = [const { AtomicU8::new(0) }; MAX_VCPUS];
/// Bit `n`: vCPU `n`'s periodic timer has been stopped.
static PERIODIC_STOPPED: AtomicU64 = AtomicU64::new(0);
/// The largest reading handed out (monotonic across vCPUs).
static LAST: AtomicU64 = AtomicU64::new(0);

static WARNED_CLOCK: AtomicBool = AtomicBool::new(false);
static WARNED_WALL: AtomicBool = AtomicBool::new(false);
static WARNED_TIMER: AtomicBool = AtomicBool::new(false);

/// The vector `vcpu`'s timer raises, once `timer_setup` ran there.
pub fn timer_vector(vcpu: u32) -> Option<u8> {
    match TIMER_VECTOR.get(slot(vcpu)?)?.load(Ordering::Relaxed) {
        0 => None,
        v => Some(v),
    }
}

/// Xen system time now, from `vcpu`'s pvclock record (`None` if the
/// record is unavailable or never settles).
pub fn system_time(vcpu: u32) -> Option<u64> {
    system_time_at(vcpu, None)
}

/// Xen system time at TSC value `tsc` (read now when `None`) from `vcpu`'s
/// record.
fn system_time_at(vcpu: u32, tsc: Option<u64>) -> Option<u64> {
    let vi = vcpu_info(vcpu)?;
    // SAFETY: `vcpu_info` returns a vcpu_info Xen keeps mapped (registered
    // .bss or shared info) and aligned; only Xen writes its time record.
    let rec = unsafe { TimeInfoPtr::new(core::ptr::addr_of!((*vi).time)) };
    match read_time_info(&rec, DEFAULT_MAX_TRIES) {
        // A TSC read before a record that Xen updated meanwhile is a
        // small negative delta: the record's own time, still monotonic.
        Ok(t) => Some(t.time_at(tsc.unwrap_or_else(pvops_native::tsc::read))),
        Err(e) => {
            warn_once(
                &WARNED_CLOCK,
                format_args!("xen: pvclock of cpu {vcpu}: {e}; the clock holds still"),
            );
            None
        }
    }
}

/// Whether `vcpu`'s record says readings agree across vCPUs.
fn stable(vcpu: u32) -> bool {
    let Some(vi) = vcpu_info(vcpu) else {
        return false;
    };
    // SAFETY: as in `system_time`; one volatile byte read.
    let flags = unsafe { core::ptr::addr_of!((*vi).time.flags).read_volatile() };
    PvclockFlags::from_bits_retain(flags).contains(PvclockFlags::TSC_STABLE)
}

/// The wall-clock fields of shared info under their version counter.
struct WallFields(*const crate::abi::shared::WallClock);

impl Versioned for WallFields {
    type Record = crate::abi::shared::WallClock;
    fn version(&self) -> u32 {
        // SAFETY: shared info stays mapped once `shared_info` returned it;
        // the field is an aligned u32.
        unsafe { core::ptr::addr_of!((*self.0).version).read_volatile() }
    }
    fn snapshot(&self) -> Self::Record {
        // SAFETY: as above; any bytes make a valid record, and the version
        // protocol throws torn copies away.
        unsafe { self.0.read_volatile() }
    }
}

/// Stops `vcpu`'s periodic timer (Xen may start one for a new vCPU), once.
fn stop_periodic(vcpu: u32) {
    let Some(i) = slot(vcpu) else { return };
    if PERIODIC_STOPPED.fetch_or(1 << i, Ordering::Relaxed) & (1 << i) == 0 {
        if let Err(e) = XEN.stop_periodic_timer(vcpu) {
            warn_once(
                &WARNED_TIMER,
                format_args!("xen: VCPUOP_stop_periodic_timer on cpu {vcpu}: {e}"),
            );
        }
    }
}

impl TimeOps for XenPvh {
    fn sched_clock() -> u64 {
        let (tsc, me) = crate::percpu::tsc_and_current();
        let Some(now) = system_time_at(me, Some(tsc)) else {
            return LAST.load(Ordering::Relaxed);
        };
        if stable(me) {
            return now;
        }
        LAST.fetch_max(now, Ordering::AcqRel).max(now)
    }

    fn wall_clock() -> WallClock {
        let Some(si) = shared_info() else {
            return WallClock::default();
        };
        let fields = WallFields(
            (si as *const u8).wrapping_add(core::mem::offset_of!(SharedInfo, wc))
                as *const crate::abi::shared::WallClock,
        );
        let base = match read_versioned(&fields, DEFAULT_MAX_TRIES) {
            Ok(wc) => wc.epoch_ns(),
            Err(e) => {
                warn_once(&WARNED_WALL, format_args!("xen: wall clock: {e}"));
                0
            }
        };
        let ns = base.saturating_add(Self::sched_clock());
        WallClock {
            secs: ns / 1_000_000_000,
            nsecs: (ns % 1_000_000_000) as u32,
        }
    }

    fn steal_clock(cpu: CpuId) -> u64 {
        crate::runstate::stolen(cpu.0)
    }

    fn timer_setup(vector: u8) {
        let me = crate::percpu::current();
        if let Some(i) = slot(me) {
            TIMER_VECTOR[i].store(vector, Ordering::Relaxed);
        }
        stop_periodic(me);
    }

    fn timer_arm(delta_ns: u64) {
        let me = crate::percpu::current();
        let Some(now) = system_time(me) else { return };
        if let Err(e) = XEN.set_singleshot_timer(me, now.saturating_add(delta_ns)) {
            warn_once(
                &WARNED_TIMER,
                format_args!("xen: VCPUOP_set_singleshot_timer on cpu {me}: {e}"),
            );
        }
    }

    fn timer_cancel() {
        let me = crate::percpu::current();
        if let Err(e) = XEN.stop_singleshot_timer(me) {
            warn_once(
                &WARNED_TIMER,
                format_args!("xen: VCPUOP_stop_singleshot_timer on cpu {me}: {e}"),
            );
        }
        // A timer event that fired but was not delivered yet is dropped too.
        if let (Some(port), Some(si)) = (port_of(me, PortKind::Timer), shared_info()) {
            // SAFETY: shared info stays mapped once `shared_info` returned it.
            unsafe { crate::evtchn::SharedEvents::new(si) }.clear_pending(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::shared::{VcpuInfo, WallClock as XenWall};
    use pvops_core::abi::pvclock::VcpuTimeInfo;
    use zerocopy::{FromBytes, IntoBytes};

    #[test]
    fn vcpu_info_time_goes_through_the_shared_pvclock() {
        // As Xen writes it for an HVM guest whose TSC started at 0 after
        // Xen's last calibration: the stamp is "negative".
        let vi = VcpuInfo {
            time: VcpuTimeInfo {
                version: 4,
                tsc_timestamp: 0u64.wrapping_sub(1000),
                system_time: 5_000_000,
                tsc_to_system_mul: 1 << 31,
                tsc_shift: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        // The record sits at offset 32 of vcpu_info, byte for byte.
        let raw = VcpuTimeInfo::read_from_bytes(&vi.as_bytes()[32..64]).unwrap();
        assert_eq!(raw, vi.time);
        // SAFETY: `vi` outlives the pointer and is aligned.
        let p = unsafe { TimeInfoPtr::new(core::ptr::addr_of!(vi.time)) };
        let t = read_time_info(&p, 4).unwrap();
        // 1000 ticks to the wrap, 500 after it: 1500 ns at 1 ns per tick.
        assert_eq!(t.time_at(500), 5_001_500);
        // A TSC a little before the stamp is no time, not 2^64 ticks.
        assert_eq!(t.time_at(0u64.wrapping_sub(2000)), 5_000_000);
        // A record mid-update is not used.
        let busy = VcpuInfo {
            time: VcpuTimeInfo {
                version: 5,
                ..vi.time
            },
            ..vi
        };
        // SAFETY: as above.
        let p = unsafe { TimeInfoPtr::new(core::ptr::addr_of!(busy.time)) };
        assert!(read_time_info(&p, 3).is_err());
    }

    #[test]
    fn wall_clock_fields_are_read_under_their_version() {
        let wc = XenWall {
            version: 2,
            sec: 0x6500_0000,
            nsec: 7,
            sec_hi: 1,
        };
        let f = WallFields(&wc);
        let got = read_versioned(&f, 3).unwrap();
        assert_eq!(got, wc);
        assert_eq!(
            got.epoch_ns(),
            ((1u64 << 32) | 0x6500_0000) * 1_000_000_000 + 7
        );
        let updating = XenWall { version: 3, ..wc };
        assert!(read_versioned(&WallFields(&updating), 3).is_err());
        // Nonsense nanoseconds are clamped, huge seconds saturate.
        let odd = XenWall {
            version: 0,
            sec: u32::MAX,
            nsec: u32::MAX,
            sec_hi: u32::MAX,
        };
        assert_eq!(odd.epoch_ns(), u64::MAX);
    }
}
