//! The native table KVM starts from, kept for the ops that fall back to it
//! (per call, per CPU, or for good).

use pvops_core::once::WriteOnce;
use pvops_core::platform::{Features, Identity, Platform};
use pvops_core::table::PvOps;
use pvops_native::Native;

static SAVED: WriteOnce<PvOps> = WriteOnce::new();

/// Used before `init` saved the real one (never, once KVM ops are in force).
static DEFAULT: PvOps = PvOps::of::<Native>(Identity {
    platform: Platform::Native,
    backend: pvops_native::NAME,
    features: Features::new(),
    hypervisor: None,
});

/// Keeps `table` as the native ops. Only the first call counts.
pub(crate) fn save(table: &PvOps) {
    let _ = SAVED.set(*table);
}

/// The native ops `init` started from.
#[inline]
pub(crate) fn ops() -> &'static PvOps {
    SAVED.get().unwrap_or(&DEFAULT)
}
