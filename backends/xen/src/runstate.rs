//! Stolen time from each vCPU's runstate area
//! (`VCPUOP_register_runstate_memory_area`): time spent `runnable` (ready
//! but another vCPU ran) plus `offline` (preempted or paused by Xen).
//!
//! Xen writes the area through the vCPU's page tables at the virtual
//! address registered, so the areas are statics of the kernel image, which
//! every address space the kernel uses maps at the same place.
//!
//! Reads are copies made under a bounded retry: with
//! `VMASST_TYPE_runstate_update_flag` Xen sets bit 63 of
//! `state_entry_time` while it writes; either way a copy is kept only when
//! `state_entry_time` read before and after it agree (and the copy's own
//! `state_entry_time` is that value). Every read is a volatile copy
//! through [`pvops_core::shmem::ShPtr`]; the steal figure comes from the
//! kept copy only.

use crate::abi::nr::VMASST_TYPE_RUNSTATE_UPDATE_FLAG;
use crate::abi::vcpu::{RunstateInfo, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE, XEN_RUNSTATE_UPDATE};
use crate::error::XenError;
use crate::percpu::{slot, MAX_VCPUS};
use crate::xen::XEN;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use pvops_core::abi::pvclock::Shared;

const ZERO: RunstateInfo = RunstateInfo {
    state: 0,
    pad: 0,
    state_entry_time: 0,
    time: [0; 4],
};

/// One area per vCPU.
static AREAS: [Shared<RunstateInfo>; MAX_VCPUS] = [const { Shared::new(ZERO) }; MAX_VCPUS];
/// Bit `n`: vCPU `n`'s area is registered.
static REGISTERED: AtomicU64 = AtomicU64::new(0);
/// Whether Xen flags updates in progress.
static UPDATE_FLAG: AtomicBool = AtomicBool::new(false);
/// The largest steal value handed out per vCPU (monotonic).
static LAST: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// How many times a read is tried before the last good value is kept.
const MAX_TRIES: u32 = 1000;

/// Asks Xen to flag runstate updates; returns whether it will.
pub fn enable_update_flag() -> bool {
    let ok = XEN
        .vm_assist_enable(VMASST_TYPE_RUNSTATE_UPDATE_FLAG)
        .is_ok();
    UPDATE_FLAG.store(ok, Ordering::Relaxed);
    ok
}

/// Registers `vcpu`'s area (call on that vCPU or while it is down).
pub fn register(vcpu: u32) -> Result<(), XenError> {
    let i = slot(vcpu).ok_or(XenError {
        errno: crate::abi::errno::ERANGE,
    })?;
    XEN.register_runstate(vcpu, AREAS[i].as_ptr() as u64)?;
    REGISTERED.fetch_or(1 << i, Ordering::Release);
    Ok(())
}

/// Whether `vcpu`'s area is registered.
pub fn is_registered(vcpu: u32) -> bool {
    slot(vcpu).is_some_and(|i| REGISTERED.load(Ordering::Acquire) & (1 << i) != 0)
}

/// A copy of a runstate area, under the update protocol.
pub fn read(
    entry_time: impl Fn() -> u64,
    copy: impl Fn() -> RunstateInfo,
    update_flag: bool,
    tries: u32,
) -> Option<RunstateInfo> {
    for _ in 0..tries.max(1) {
        let before = entry_time();
        if update_flag && before & XEN_RUNSTATE_UPDATE != 0 {
            core::hint::spin_loop();
            continue;
        }
        core::sync::atomic::fence(Ordering::Acquire);
        let snap = copy();
        core::sync::atomic::fence(Ordering::Acquire);
        if entry_time() == before && snap.state_entry_time == before {
            return Some(snap);
        }
        core::hint::spin_loop();
    }
    None
}

/// Stolen nanoseconds in a copy of an area.
pub fn steal_of(r: &RunstateInfo) -> u64 {
    r.time[RUNSTATE_RUNNABLE].saturating_add(r.time[RUNSTATE_OFFLINE])
}

/// The `time.steal_clock` op for `vcpu`: 0 while its area is not
/// registered; never decreasing.
pub fn stolen(vcpu: u32) -> u64 {
    let Some(i) = slot(vcpu) else { return 0 };
    if REGISTERED.load(Ordering::Acquire) & (1 << i) == 0 {
        return 0;
    }
    // A static area only Xen writes: volatile copies through the accessor.
    let p = AREAS[i].ptr();
    let entry = p.field::<u64>(offset_of!(RunstateInfo, state_entry_time));
    let got = read(
        || entry.read(),
        || p.read(),
        UPDATE_FLAG.load(Ordering::Relaxed),
        MAX_TRIES,
    );
    match got {
        Some(r) => {
            let s = steal_of(&r);
            LAST[i].fetch_max(s, Ordering::AcqRel).max(s)
        }
        None => LAST[i].load(Ordering::Acquire),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    fn rec(entry: u64, runnable: u64, offline: u64) -> RunstateInfo {
        RunstateInfo {
            state: 0,
            pad: 0,
            state_entry_time: entry,
            time: [100, runnable, 7, offline],
        }
    }

    #[test]
    fn steal_is_runnable_plus_offline() {
        assert_eq!(steal_of(&rec(1, 30, 12)), 42);
        assert_eq!(steal_of(&rec(1, u64::MAX, 12)), u64::MAX);
    }

    #[test]
    fn update_in_progress_is_waited_out() {
        let entries = [5 | XEN_RUNSTATE_UPDATE, 9, 9];
        let i = Cell::new(0);
        let r = read(
            || {
                let e = entries[i.get().min(2)];
                i.set(i.get() + 1);
                e
            },
            || rec(9, 1, 2),
            true,
            10,
        );
        assert_eq!(r, Some(rec(9, 1, 2)));
    }

    #[test]
    fn torn_copies_are_retried_and_bounded() {
        // The entry time moves between the reads every time: give up.
        let n = Cell::new(0u64);
        let r = read(
            || {
                n.set(n.get() + 1);
                n.get()
            },
            || rec(0, 1, 1),
            false,
            5,
        );
        assert_eq!(r, None);
        assert_eq!(n.get(), 10);
        // A copy whose own entry time disagrees is torn too.
        assert_eq!(read(|| 4, || rec(3, 1, 1), false, 3), None);
        // Without the flag, a set bit 63 is just a value.
        let f = 1 << 63;
        assert_eq!(read(|| f, || rec(f, 1, 1), false, 1), Some(rec(f, 1, 1)));
    }
}
