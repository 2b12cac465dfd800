//! kvmclock: the scheduler clock and wall clock from KVM's pvclock records.
//!
//! Each vCPU registers its own `pvclock_vcpu_time_info` with
//! `MSR_KVM_SYSTEM_TIME_NEW`; the wall clock at host time 0 comes from one
//! write of `MSR_KVM_WALL_CLOCK_NEW`. Reading:
//!
//! - when the host advertises `CLOCKSOURCE_STABLE_BIT` and the boot CPU's
//!   record carries the TSC-stable flag, every vCPU reads the boot CPU's
//!   record (times agree across vCPUs; no need to know which CPU this is);
//! - otherwise this CPU's own record, and the result goes through a global
//!   monotonic guard (an atomic max of the last value returned) so time
//!   never goes backwards across vCPUs.
//!
//! Records are copied under the version protocol with a bounded number of
//! attempts ([`pvops_core::abi::pvclock::read_time_info`], through the
//! audited accessor [`pvops_core::shmem::ShPtr`]); the flags, the time and
//! the "filled" check all come from that one copy. A record that
//! never settles switches the clock to the native TSC clock for good (kept
//! continuous with what was returned before, and guarded), after the
//! console line `pvops: warning: kvmclock ...`.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use pvops_core::abi::pvclock::{
    read_time_info, read_wall_clock, PvclockFlags, PvclockWallClock, Shared, Unsettled,
    VcpuTimeInfo, Versioned, DEFAULT_MAX_TRIES,
};
use pvops_core::cpu::CpuId;
use pvops_core::irq::MAX_CPUS;
use pvops_core::time::WallClock;

use crate::abi::{KVM_MSR_ENABLED, MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_WALL_CLOCK_NEW};
use crate::hypercall::{Hypervisor, KvmError};
use crate::percpu::{this_cpu, PerCpu};
use crate::warn::{warn, warn_once};

static AREAS: PerCpu<Shared<VcpuTimeInfo>> =
    PerCpu::new([const { Shared::<VcpuTimeInfo>::zeroed() }; MAX_CPUS]);
static REGISTERED: PerCpu<AtomicBool> = PerCpu::new([const { AtomicBool::new(false) }; MAX_CPUS]);
static WALL: Shared<PvclockWallClock> = Shared::<PvclockWallClock>::zeroed();

/// The host advertised `CLOCKSOURCE_STABLE_BIT`.
static STABLE_FEATURE: AtomicBool = AtomicBool::new(false);
static BOOT_CPU: AtomicU32 = AtomicU32::new(0);
/// Raw kvmclock time at init: sched_clock counts from here.
static BASE_RAW: AtomicU64 = AtomicU64::new(0);
/// Wall-clock nanoseconds at raw kvmclock 0; valid when WALL_OK.
static WALL_BASE_NS: AtomicU64 = AtomicU64::new(0);
static WALL_OK: AtomicBool = AtomicBool::new(false);
/// The monotonic guard: the largest raw value returned on a guarded path.
static LAST: AtomicU64 = AtomicU64::new(0);
/// Set for good once a record never settled.
static FALLBACK: AtomicBool = AtomicBool::new(false);
/// Raw kvmclock minus native sched_clock, to keep the fallback continuous.
static NATIVE_OFFSET: AtomicU64 = AtomicU64::new(0);
static WARNED: AtomicBool = AtomicBool::new(false);

/// The largest of `t` and every value passed before: never goes back.
pub fn monotonic(guard: &AtomicU64, t: u64) -> u64 {
    let prev = guard.fetch_max(t, Ordering::AcqRel);
    prev.max(t)
}

/// One clock reading: the boot record when the host says it is stable,
/// else `local` (or the boot record when this CPU has none) through the
/// guard. `tsc` is read after the record was copied.
pub fn read_clock<B, L>(
    stable_feature: bool,
    boot: &B,
    local: Option<&L>,
    tsc: impl Fn() -> u64,
    guard: &AtomicU64,
    max_tries: u32,
) -> Result<u64, Unsettled>
where
    B: Versioned<Record = VcpuTimeInfo> + ?Sized,
    L: Versioned<Record = VcpuTimeInfo> + ?Sized,
{
    if stable_feature {
        let rec = read_time_info(boot, max_tries)?;
        if rec.flags().contains(PvclockFlags::TSC_STABLE) {
            return Ok(rec.time_at(tsc()));
        }
    }
    let rec = match local {
        Some(l) => read_time_info(l, max_tries)?,
        None => read_time_info(boot, max_tries)?,
    };
    Ok(monotonic(guard, rec.time_at(tsc())))
}

/// Whether a copied record looks filled in by the host.
fn filled(rec: &VcpuTimeInfo) -> bool {
    rec.version != 0 && rec.tsc_to_system_mul != 0
}

/// `lfence; rdtsc`: the TSC, not read before earlier loads completed.
#[inline]
pub(crate) fn rdtsc_ordered() -> u64 {
    // SAFETY: lfence only orders instruction execution.
    unsafe { core::arch::asm!("lfence", options(nomem, nostack, preserves_flags)) };
    pvops_native::tsc::read()
}

/// A record registered only while [`probe_tsc_hz`] runs, before any CPU's
/// own.
static PROBE: Shared<VcpuTimeInfo> = Shared::<VcpuTimeInfo>::zeroed();

/// The TSC frequency KVM gives this guest, from a kvmclock record's scale:
/// registers [`PROBE`], reads it once filled, unregisters it. `None` when
/// the record does not fill or its scale is no real frequency.
pub(crate) fn probe_tsc_hz<H: Hypervisor + ?Sized>(h: &H) -> Option<u64> {
    // Not a registration, and before `pvops.fail=` is armed: the
    // injected refusals apply to the CPUs' own records.
    let paddr = crate::hypercall::area_paddr(h, PROBE.as_ptr(), MSR_KVM_SYSTEM_TIME_NEW).ok()?;
    // SAFETY: a 32-byte, 64-byte-aligned static of this crate in RAM,
    // written by the host only until the registration is withdrawn below.
    unsafe { h.write_msr(MSR_KVM_SYSTEM_TIME_NEW, paddr | KVM_MSR_ENABLED) };
    let rec = read_time_info(&PROBE, DEFAULT_MAX_TRIES);
    // SAFETY: enable bit clear: the host stops writing the record.
    unsafe { h.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
    rec.ok().filter(filled)?.scale().hz()
}

/// Registers `cpu`'s record with the host and checks it got filled.
pub(crate) fn register<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> Result<(), KvmError> {
    let area = AREAS.get(cpu).ok_or(KvmError::CpuOutOfRange(cpu.0))?;
    let paddr = crate::hypercall::area_paddr(h, area.as_ptr(), MSR_KVM_SYSTEM_TIME_NEW)?;
    if !paddr.is_multiple_of(4) {
        return Err(KvmError::Misaligned {
            msr: MSR_KVM_SYSTEM_TIME_NEW,
            paddr,
        });
    }
    crate::hypercall::refuse(h, crate::fault_points::KVMCLOCK, MSR_KVM_SYSTEM_TIME_NEW)?;
    // SAFETY: the area is a static of this crate, in RAM, 32 bytes inside
    // one 64-byte-aligned slot (no page crossing); only the host writes it.
    unsafe { h.write_msr(MSR_KVM_SYSTEM_TIME_NEW, paddr | KVM_MSR_ENABLED) };
    match read_time_info(area, DEFAULT_MAX_TRIES) {
        Ok(rec) if filled(&rec) => {
            if let Some(r) = REGISTERED.get(cpu) {
                r.store(true, Ordering::Release);
            }
            crate::registrations::record(
                cpu,
                crate::registrations::Area::Kvmclock,
                paddr | KVM_MSR_ENABLED,
            );
            Ok(())
        }
        other => {
            // SAFETY: writing 0 (enable bit clear) stops the host writing.
            unsafe { h.write_msr(MSR_KVM_SYSTEM_TIME_NEW, 0) };
            let version = match other {
                Ok(rec) => rec.version,
                Err(e) => e.last_version,
            };
            Err(KvmError::NotFilled {
                msr: MSR_KVM_SYSTEM_TIME_NEW,
                version,
            })
        }
    }
}

/// Sets kvmclock up on the boot CPU: its record, the clock's origin, the
/// wall clock. On error kvmclock stays off (the caller warns).
pub(crate) fn setup_boot<H: Hypervisor + ?Sized>(
    h: &H,
    cpu: CpuId,
    stable_feature: bool,
) -> Result<(), KvmError> {
    register(h, cpu)?;
    BOOT_CPU.store(cpu.0, Ordering::Relaxed);
    STABLE_FEATURE.store(stable_feature, Ordering::Relaxed);
    let raw = raw_from_records().map_err(|e| KvmError::NotFilled {
        msr: MSR_KVM_SYSTEM_TIME_NEW,
        version: e.last_version,
    })?;
    BASE_RAW.store(raw, Ordering::Relaxed);
    let native_now = (crate::native::ops().time.sched_clock)();
    NATIVE_OFFSET.store(raw.wrapping_sub(native_now), Ordering::Relaxed);
    setup_wall_clock(h);
    Ok(())
}

fn setup_wall_clock<H: Hypervisor + ?Sized>(h: &H) {
    let paddr = match crate::hypercall::area_paddr(h, WALL.as_ptr(), MSR_KVM_WALL_CLOCK_NEW) {
        Ok(p) => p,
        Err(e) => return warn(format_args!("kvmclock wall clock: {e}: native wall clock")),
    };
    // SAFETY: a 12-byte, 64-byte-aligned static of this crate in RAM; the
    // host writes it once, during this MSR write.
    unsafe { h.write_msr(MSR_KVM_WALL_CLOCK_NEW, paddr) };
    match read_wall_clock(&WALL, DEFAULT_MAX_TRIES) {
        Ok(w) if w.version != 0 => {
            WALL_BASE_NS.store(w.epoch_ns(), Ordering::Relaxed);
            WALL_OK.store(true, Ordering::Release);
        }
        Ok(w) => warn(format_args!(
            "kvmclock wall clock not filled (version {}): native wall clock",
            w.version
        )),
        Err(e) => warn(format_args!("kvmclock wall clock: {e}: native wall clock")),
    }
}

/// Sets kvmclock up on a secondary CPU; on failure that CPU reads the boot
/// CPU's record (through the guard).
pub(crate) fn setup_secondary<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) {
    if let Err(e) = register(h, cpu) {
        warn(format_args!(
            "kvmclock on cpu {}: {e}: reading the boot CPU's record",
            cpu.0
        ));
    }
}

fn local_area(cpu: CpuId) -> Option<&'static Shared<VcpuTimeInfo>> {
    let registered = REGISTERED.get(cpu)?.load(Ordering::Acquire);
    registered.then(|| AREAS.get(cpu)).flatten()
}

/// Takes `PVCLOCK_GUEST_STOPPED` out of `rec`'s flags; whether it was
/// set. KVM keeps the guest's copy of that bit when it updates the record
/// (it only ever sets it, on a request from the VMM after a pause), so
/// clearing it here is how the guest acknowledges it.
pub fn take_guest_stopped(rec: &'static Shared<VcpuTimeInfo>) -> bool {
    let flags = rec
        .ptr()
        .field::<u8>(core::mem::offset_of!(VcpuTimeInfo, flags));
    let stopped = PvclockFlags::GUEST_STOPPED.bits();
    flags.fetch_and(!stopped, Ordering::SeqCst) & stopped != 0
}

/// The `platform.take_paused` op: this CPU's own record's
/// `PVCLOCK_GUEST_STOPPED`, taken; `None` when this CPU has no record.
pub fn take_paused() -> Option<bool> {
    local_area(this_cpu()).map(take_guest_stopped)
}

/// Raw kvmclock nanoseconds (host time), from the records.
fn raw_from_records() -> Result<u64, Unsettled> {
    if pvops_core::fault::hit(crate::fault_points::KVMCLOCK_UNSETTLED) {
        // Injected (`pvops.fail=`): as a host that never finishes an update.
        return Err(Unsettled {
            tries: DEFAULT_MAX_TRIES,
            last_version: 1,
        });
    }
    let boot = AREAS
        .get(CpuId(BOOT_CPU.load(Ordering::Relaxed)))
        .ok_or(Unsettled {
            tries: 0,
            last_version: 0,
        })?;
    let stable = STABLE_FEATURE.load(Ordering::Relaxed);
    // Only look up the CPU number (maybe a VM exit) when it matters.
    let local = if stable && is_stable(boot) {
        None
    } else {
        local_area(this_cpu())
    };
    read_clock(stable, boot, local, rdtsc_ordered, &LAST, DEFAULT_MAX_TRIES)
}

/// Whether the boot record currently carries the stable flag (one read;
/// `read_clock` re-checks it under the protocol).
fn is_stable(boot: &'static Shared<VcpuTimeInfo>) -> bool {
    // One volatile byte read; any value is fine: this only decides whether
    // to look up the CPU number, and `read_clock` checks the flag again on
    // the copy it then uses (a flag that flips in between costs a guarded
    // read of the boot record, never an unchecked value).
    let flags = boot
        .ptr()
        .field::<u8>(core::mem::offset_of!(VcpuTimeInfo, flags))
        .read();
    PvclockFlags::from_bits_retain(flags).contains(PvclockFlags::TSC_STABLE)
}

/// Raw time from the native TSC clock, continuous with kvmclock.
fn raw_from_native() -> u64 {
    let n = (crate::native::ops().time.sched_clock)();
    monotonic(&LAST, n.wrapping_add(NATIVE_OFFSET.load(Ordering::Relaxed)))
}

/// The offset that makes the native clock (`native_now` now) continue
/// kvmclock: the one measured at init (`offset`), unless that would put
/// the clock behind `last`, the largest value already returned.
pub fn continuation_offset(native_now: u64, last: u64, offset: u64) -> u64 {
    if native_now.wrapping_add(offset) < last {
        last.wrapping_sub(native_now)
    } else {
        offset
    }
}

fn fall_back(e: Unsettled) {
    if !FALLBACK.swap(true, Ordering::AcqRel) {
        // Continue from at least the last guarded value.
        let n = (crate::native::ops().time.sched_clock)();
        let off = continuation_offset(
            n,
            LAST.load(Ordering::Acquire),
            NATIVE_OFFSET.load(Ordering::Relaxed),
        );
        NATIVE_OFFSET.store(off, Ordering::Relaxed);
    }
    warn_once(
        &WARNED,
        format_args!("kvmclock {e}: falling back to the TSC clock for good"),
    );
}

/// Raw kvmclock time, or its native continuation after a fallback.
fn raw_now() -> u64 {
    if FALLBACK.load(Ordering::Relaxed) {
        return raw_from_native();
    }
    match raw_from_records() {
        Ok(t) => t,
        Err(e) => {
            fall_back(e);
            raw_from_native()
        }
    }
}

/// The `time.sched_clock` op: nanoseconds since kvmclock was set up.
pub fn sched_clock() -> u64 {
    raw_now().saturating_sub(BASE_RAW.load(Ordering::Relaxed))
}

/// [`sched_clock`] behind the C ABI: what `sched_clock`'s patched call
/// sites call directly (`PvOps::with_sched_clock`).
pub extern "C" fn sched_clock_c() -> u64 {
    sched_clock()
}

/// The `time.wall_clock` op: the host's wall clock at time 0 plus kvmclock.
pub fn wall_clock() -> WallClock {
    if !WALL_OK.load(Ordering::Acquire) {
        return (crate::native::ops().time.wall_clock)();
    }
    let ns = WALL_BASE_NS
        .load(Ordering::Relaxed)
        .saturating_add(raw_now());
    WallClock {
        secs: ns / 1_000_000_000,
        nsecs: (ns % 1_000_000_000) as u32,
    }
}

/// Whether kvmclock gave up on the records and runs on the TSC.
pub fn fell_back() -> bool {
    FALLBACK.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;
    use std::sync::Arc;

    struct Rec {
        rec: Cell<VcpuTimeInfo>,
        reads: Cell<u32>,
    }
    impl Rec {
        fn new(version: u32, system_time: u64, flags: u8) -> Self {
            Self {
                rec: Cell::new(VcpuTimeInfo {
                    version,
                    system_time,
                    tsc_timestamp: 100,
                    tsc_to_system_mul: 1 << 31,
                    tsc_shift: 1,
                    flags,
                    ..Default::default()
                }),
                reads: Cell::new(0),
            }
        }
    }
    impl Versioned for Rec {
        type Record = VcpuTimeInfo;
        fn version(&self) -> u32 {
            self.rec.get().version
        }
        fn snapshot(&self) -> VcpuTimeInfo {
            self.reads.set(self.reads.get() + 1);
            self.rec.get()
        }
    }

    const STABLE: u8 = PvclockFlags::TSC_STABLE.bits();

    #[test]
    fn stable_reads_boot_record_unguarded() {
        let boot = Rec::new(2, 1000, STABLE);
        let local = Rec::new(2, 5000, 0);
        let g = AtomicU64::new(1_000_000);
        let t = read_clock(true, &boot, Some(&local), || 150, &g, 5).unwrap();
        assert_eq!(t, 1050);
        assert_eq!(local.reads.get(), 0);
        assert_eq!(g.load(Ordering::Relaxed), 1_000_000);
    }

    #[test]
    fn guest_stopped_is_taken_once_and_other_flags_kept() {
        static REC: Shared<VcpuTimeInfo> = Shared::new(VcpuTimeInfo {
            version: 2,
            pad0: 0,
            tsc_timestamp: 0,
            system_time: 0,
            tsc_to_system_mul: 1,
            tsc_shift: 0,
            flags: 0b11, // TSC_STABLE | GUEST_STOPPED, as KVM leaves it after a pause
            pad: [0; 2],
        });
        let flags = || {
            REC.ptr()
                .field::<u8>(core::mem::offset_of!(VcpuTimeInfo, flags))
                .read()
        };
        assert!(take_guest_stopped(&REC));
        assert_eq!(flags(), PvclockFlags::TSC_STABLE.bits());
        assert!(!take_guest_stopped(&REC), "taken once");
        assert_eq!(flags(), PvclockFlags::TSC_STABLE.bits());
    }

    #[test]
    fn unstable_reads_local_record_guarded() {
        // Stable feature but the flag is not set right now.
        let boot = Rec::new(2, 1000, 0);
        let local = Rec::new(2, 5000, 0);
        let g = AtomicU64::new(0);
        assert_eq!(
            read_clock(true, &boot, Some(&local), || 100, &g, 5),
            Ok(5000)
        );
        // Another vCPU whose record is behind: the guard holds time.
        let behind = Rec::new(2, 4000, 0);
        assert_eq!(
            read_clock(false, &boot, Some(&behind), || 100, &g, 5),
            Ok(5000)
        );
        assert_eq!(
            read_clock(false, &boot, Some(&behind), || 2100, &g, 5),
            Ok(6000)
        );
        // No local record: the boot one, still guarded.
        assert_eq!(
            read_clock::<_, Rec>(false, &boot, None, || 100, &g, 5),
            Ok(6000)
        );
    }

    #[test]
    fn unsettled_record_is_an_error() {
        let boot = Rec::new(3, 1000, STABLE);
        let g = AtomicU64::new(0);
        let e = read_clock::<_, Rec>(true, &boot, None, || 0, &g, 7).unwrap_err();
        assert_eq!(e.tries, 7);
        let local = Rec::new(5, 1, 0);
        let boot = Rec::new(2, 1, 0);
        assert!(read_clock(true, &boot, Some(&local), || 0, &g, 7).is_err());
    }

    #[test]
    fn guard_is_monotonic_across_threads() {
        let g = Arc::new(AtomicU64::new(0));
        let handles: std::vec::Vec<_> = (0..4)
            .map(|k| {
                let g = g.clone();
                std::thread::spawn(move || {
                    let mut last = 0;
                    for i in 0..10_000u64 {
                        // Each "CPU" has a skewed clock.
                        let t = monotonic(&g, i * 10 + k * 37);
                        assert!(t >= last);
                        last = t;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(g.load(Ordering::Relaxed), 9999 * 10 + 3 * 37);
    }

    #[test]
    fn fallback_continues_without_going_back() {
        // kvmclock was 5000 ahead of the native clock at init.
        assert_eq!(continuation_offset(100, 4000, 5000), 5000);
        // The native clock drifted slow: continue from the last value.
        assert_eq!(continuation_offset(100, 9000, 5000), 8900);
        let off = continuation_offset(100, 9000, 5000);
        assert_eq!(100u64.wrapping_add(off), 9000);
    }

    #[test]
    fn filled_needs_version_and_multiplier() {
        assert!(!filled(&VcpuTimeInfo::default()));
        assert!(filled(&Rec::new(2, 0, 0).rec.get()));
    }
}
