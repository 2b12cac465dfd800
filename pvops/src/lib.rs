//! # pvops
//!
//! Paravirtual operations for x86_64 kernels: one kernel binary that runs
//! on bare hardware, under KVM and under Xen, and picks at boot the fastest
//! way to do each privileged operation — what Linux's `paravirt_ops` does
//! for Linux, as a library.
//!
//! Kernel code calls the thin wrappers ([`irq::disable`],
//! [`mmu::set_pte`], [`time::sched_clock`], ...). Once, early in boot, it
//! calls [`init`], which scans the CPUID hypervisor leaves, asks every
//! backend compiled in (cargo features `native`, ...) whether it can run
//! here, installs the best one and returns its identity. Nothing above
//! pvops needs to know which platform it runs on.
//!
//! ```no_run
//! use pvops::{BootContext, BootEntry};
//!
//! fn early_boot(cmdline: &str, rsdp: Option<u64>) {
//!     let ctx = BootContext {
//!         phys_offset: 0, // identity-mapped physical memory
//!         image_offset: 0, // and an identity-mapped kernel image
//!         rsdp,
//!         cmdline,
//!         entry: BootEntry::Pvh,
//!         cpuid: pvops::detect::scan(&pvops::detect::HardwareCpuid),
//!         xen_pv: None,
//!     };
//!     let ops = pvops::init(&ctx, |e| {
//!         // A backend bid but failed: say so, the next one is tried.
//!         let _ = e;
//!     })
//!     .expect("no pvops backend");
//!     // From here on every wrapper goes through the installed table.
//!     let flags = pvops::irq::save_and_disable();
//!     pvops::irq::restore_flags(flags);
//!     let _ = ops.identity.platform;
//! }
//! ```
#![no_std]
#![warn(missing_docs)]

pub use pvops_core::backend::{BackendError, BootContext, BootEntry, SelectError};
pub use pvops_core::table::{install, is_installed, InstallError, PvOps};
pub use pvops_core::{
    abi, backend, cmdline, cpu, detect, irq, lock, mmu, patch, phys, platform, smp, table, time,
};

#[cfg(feature = "native")]
pub use pvops_native as native;

pub mod entry;

#[cfg(feature = "kvm")]
pub use pvops_kvm as kvm;

#[cfg(feature = "xen")]
pub use pvops_xen as xen;

use pvops_core::backend::Candidate;

/// Every backend compiled into this build, best first in source order
/// (detection priorities decide, not this order).
pub const CANDIDATES: &[Candidate] = &[
    #[cfg(feature = "xen")]
    pvops_xen::CANDIDATE,
    #[cfg(feature = "kvm")]
    pvops_kvm::CANDIDATE,
    #[cfg(feature = "native")]
    pvops_native::CANDIDATE,
];

/// Detects the platform, installs the best backend that initialises, and
/// returns the installed table. A backend that bids but fails is reported
/// to `on_fallback` and the next is tried (native last).
pub fn init(
    ctx: &BootContext<'_>,
    on_fallback: impl FnMut(&BackendError),
) -> Result<&'static PvOps, SelectError> {
    pvops_core::backend::select_and_install(ctx, CANDIDATES, on_fallback)
}
