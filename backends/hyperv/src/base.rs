//! The table this backend starts from (kvm's where KVM's leaves are
//! there too, else native's), kept for the ops that fall back to it (per
//! call, per CPU, or for good).

use core::cell::UnsafeCell;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::platform::{Features, Identity, Platform};
use pvops_core::table::PvOps;
use pvops_native::Native;

const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

struct Slot(UnsafeCell<MaybeUninit<PvOps>>);

// SAFETY: written once by the caller that moved STATE from EMPTY to BUSY,
// before READY is published with Release ordering; only read afterwards.
unsafe impl Sync for Slot {}

static STATE: AtomicU8 = AtomicU8::new(EMPTY);
static SAVED: Slot = Slot(UnsafeCell::new(MaybeUninit::uninit()));

/// Used before `init` saved the real one (never, once Hyper-V ops are in force).
static DEFAULT: PvOps = PvOps::of::<Native>(Identity {
    platform: Platform::Native,
    backend: pvops_native::NAME,
    features: Features::new(),
    hypervisor: None,
});

/// Keeps `table` as the base ops. Only the first call counts.
pub(crate) fn save(table: &PvOps) {
    if STATE
        .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        // SAFETY: winning EMPTY->BUSY makes this the only writer, and no
        // reader looks at SAVED before READY is stored below.
        unsafe { (*SAVED.0.get()).write(*table) };
        STATE.store(READY, Ordering::Release);
    }
}

/// The base ops `init` started from.
#[inline]
pub(crate) fn ops() -> &'static PvOps {
    if STATE.load(Ordering::Acquire) == READY {
        // SAFETY: READY is only stored after SAVED was fully written, and
        // it is never written again.
        unsafe { (*SAVED.0.get()).assume_init_ref() }
    } else {
        &DEFAULT
    }
}
