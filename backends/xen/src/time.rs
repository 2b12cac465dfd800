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

use crate::abi::shared::{SharedInfo, VcpuInfo, WallClock as XenWallClock};
use crate::percpu::{slot, MAX_VCPUS};
use crate::ports::{port_of, PortKind};
use crate::shared::{shared_info, shared_info_ptr, vcpu_info_ptr};
use crate::warn::warn_once;
use crate::xen::XEN;
use crate::XenCommon;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use pvops_core::abi::pvclock::{
    read_time_info, read_versioned, PvclockFlags, VcpuTimeInfo, VersionedRecord, DEFAULT_MAX_TRIES,
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
    record(vcpu).map(|r| r.time_at(pvops_native::tsc::read()))
}

/// One copy of `vcpu`'s pvclock record under the version protocol (`None`
/// if the record is unavailable or never settles). The time, and whether
/// it is stable across vCPUs, both come from this one copy.
fn record(vcpu: u32) -> Option<VcpuTimeInfo> {
    let time = vcpu_info_ptr(vcpu)?.field::<VcpuTimeInfo>(offset_of!(VcpuInfo, time));
    match read_time_info(&time, DEFAULT_MAX_TRIES) {
        Ok(rec) => Some(rec),
        Err(e) => {
            warn_once(
                &WARNED_CLOCK,
                format_args!("xen: pvclock of cpu {vcpu}: {e}; the clock holds still"),
            );
            None
        }
    }
}

/// The wall-clock fields of shared info under their version counter.
impl VersionedRecord for XenWallClock {
    const VERSION_OFFSET: usize = offset_of!(XenWallClock, version);
}

/// Stops `vcpu`'s periodic timer (Xen may start one for a new vCPU), once.
/// Forgets that `vcpu`'s periodic timer was stopped (a restored domain
/// starts with Xen's default period again).
pub(crate) fn forget_periodic_stopped(vcpu: u32) {
    if let Some(i) = slot(vcpu) {
        PERIODIC_STOPPED.fetch_and(!(1 << i), Ordering::Relaxed);
    }
}

pub(crate) fn stop_periodic(vcpu: u32) {
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

impl TimeOps for XenCommon {
    fn sched_clock() -> u64 {
        let (tsc, me) = crate::percpu::tsc_and_current();
        let Some(rec) = record(me) else {
            return LAST.load(Ordering::Relaxed);
        };
        // A TSC read before a record that Xen updated meanwhile is a small
        // negative delta: the record's own time, still monotonic.
        let now = rec.time_at(tsc);
        if rec.flags().contains(PvclockFlags::TSC_STABLE) {
            return now;
        }
        LAST.fetch_max(now, Ordering::AcqRel).max(now)
    }

    fn wall_clock() -> WallClock {
        let Some(si) = shared_info_ptr() else {
            return WallClock::default();
        };
        let fields = si.field::<XenWallClock>(offset_of!(SharedInfo, wc));
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
                format_args!(
                    "xen: VCPUOP_set_singleshot_timer on cpu {me}: {e}; the timer fires at once"
                ),
            );
            // A tick that never comes would leave whoever waits for it
            // halted for good: raise it now (early), as Xen does for a
            // deadline already past.
            if let Some(v) = timer_vector(me) {
                crate::ipi::self_ipi(v);
            }
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
    use crate::abi::shared::WallClock as XenWall;
    use pvops_core::shmem::ShPtr;
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
        let mut vi = vi;
        // SAFETY: `vi` outlives the pointer, is aligned, and is only
        // touched through it meanwhile.
        let p = unsafe { ShPtr::new(core::ptr::addr_of_mut!(vi)) }
            .field::<VcpuTimeInfo>(offset_of!(VcpuInfo, time));
        let t = read_time_info(&p, 4).unwrap();
        // 1000 ticks to the wrap, 500 after it: 1500 ns at 1 ns per tick.
        assert_eq!(t.time_at(500), 5_001_500);
        // A TSC a little before the stamp is no time, not 2^64 ticks.
        assert_eq!(t.time_at(0u64.wrapping_sub(2000)), 5_000_000);
        // A record mid-update is not used.
        let mut busy = VcpuInfo {
            time: VcpuTimeInfo {
                version: 5,
                ..vi.time
            },
            ..vi
        };
        // SAFETY: as above.
        let p = unsafe { ShPtr::new(core::ptr::addr_of_mut!(busy)) }
            .field::<VcpuTimeInfo>(offset_of!(VcpuInfo, time));
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
        let mut mem = wc;
        // SAFETY: `mem` outlives the pointer and is only touched through it.
        let f = unsafe { ShPtr::new(core::ptr::addr_of_mut!(mem)) };
        let got = read_versioned(&f, 3).unwrap();
        assert_eq!(got, wc);
        assert_eq!(
            got.epoch_ns(),
            ((1u64 << 32) | 0x6500_0000) * 1_000_000_000 + 7
        );
        let mut updating = XenWall { version: 3, ..wc };
        // SAFETY: as above.
        let f = unsafe { ShPtr::new(core::ptr::addr_of_mut!(updating)) };
        assert!(read_versioned(&f, 3).is_err());
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
