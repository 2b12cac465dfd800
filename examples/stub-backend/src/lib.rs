//! A backend written by following `docs/ADDING.md`, as a stranger would:
//! it depends on `pvops-core` and `pvops-native` only, bids when the
//! kernel asks for it by name (`pvops.backend=stub`), starts native, copies
//! its table and replaces one entry: the console, with one that counts the
//! bytes it writes. `cargo xtask test` builds it and runs its tests, so the
//! guide's steps cannot rot unnoticed.
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::backend::{BackendError, BootContext, Candidate, Priority};
use pvops_core::platform::{Features, Identity, Platform};
use pvops_core::table::PvOps;

/// The backend's name, as `pvops.backend=` names it.
pub const NAME: &str = "stub";

/// Step 2: a bid. A real backend adds its constant to `impl Priority` in
/// `pvops-core/src/backend.rs`; a stub that runs only when forced bids
/// just above native.
pub const PRIORITY: Priority = Priority(1);

/// Step 3: bids only when the command line names this backend.
pub fn detect(ctx: &BootContext<'_>) -> Option<Priority> {
    (ctx.option("backend") == Some(NAME)).then_some(PRIORITY)
}

static CONSOLE_BYTES: AtomicU64 = AtomicU64::new(0);
static NATIVE_CONSOLE: AtomicU64 = AtomicU64::new(0);

/// Bytes written through this backend's console.
pub fn console_bytes() -> u64 {
    CONSOLE_BYTES.load(Ordering::Relaxed)
}

/// The replaced entry: count, then write through native's console.
fn console_write(bytes: &[u8]) {
    CONSOLE_BYTES.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let raw = NATIVE_CONSOLE.load(Ordering::Acquire);
    if raw != 0 {
        // SAFETY: a non-zero value is only stored by `compose`, from the
        // native table's `fn(&[u8])`.
        let native = unsafe { core::mem::transmute::<usize, fn(&[u8])>(raw as usize) };
        native(bytes);
    }
}

/// Step 4: native's table, copied, with single entries replaced.
pub fn compose(native: &PvOps) -> PvOps {
    NATIVE_CONSOLE.store(
        native.platform.console_write as usize as u64,
        Ordering::Release,
    );
    let mut t = *native;
    t.platform.console_write = console_write;
    let mut features = Features::new();
    features.push("counted-console");
    t.identity = Identity {
        platform: Platform::Native,
        backend: NAME,
        features,
        hypervisor: native.identity.hypervisor,
    };
    t
}

/// Step 4: brings native up, then composes.
pub fn init(ctx: &BootContext<'_>) -> Result<PvOps, BackendError> {
    let native = pvops_native::init(ctx).map_err(|e| BackendError { backend: NAME, ..e })?;
    Ok(compose(&native))
}

/// The backend as a detection candidate (step 6 lists it in a facade).
pub const CANDIDATE: Candidate = Candidate {
    name: NAME,
    detect,
    init,
};

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::backend::BootEntry;
    use pvops_core::detect::CpuidScan;

    #[test]
    fn bids_only_when_forced() {
        let plain = BootContext::new(BootEntry::Other, "quiet", CpuidScan::empty());
        assert_eq!(detect(&plain), None);
        let forced = BootContext::new(BootEntry::Other, "pvops.backend=stub", CpuidScan::empty());
        assert_eq!(detect(&forced), Some(PRIORITY));
        assert!(PRIORITY > Priority::FALLBACK);
    }

    #[test]
    fn replaces_one_entry_and_keeps_the_rest() {
        let native = PvOps::of::<pvops_native::Native>(Identity {
            platform: Platform::Native,
            backend: pvops_native::NAME,
            features: Features::new(),
            hypervisor: None,
        });
        let t = compose(&native);
        assert_eq!(t.identity.backend, NAME);
        assert_eq!(std::format!("{}", t.identity.features), "counted-console");
        // Everything else is native's own entry, so its sites still inline.
        assert_eq!(t.irq.disable as usize, native.irq.disable as usize);
        assert_eq!(t.mmu.read_cr3 as usize, native.mmu.read_cr3 as usize);
        assert_ne!(
            t.platform.console_write as usize,
            native.platform.console_write as usize
        );
        // The replaced console counts (native's writes nowhere on the host:
        // no UART was found).
        let before = console_bytes();
        (t.platform.console_write)(b"hello");
        assert_eq!(console_bytes() - before, 5);
    }
}
