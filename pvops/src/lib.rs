//! # pvops
//!
//! Paravirtual operations for x86_64 kernels: one kernel binary that runs
//! on bare hardware, under KVM, Xen and Hyper-V, and picks at boot the fastest
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
//!     let mut ctx = BootContext::new(
//!         BootEntry::Other, // entered by the kernel's own loader
//!         cmdline,
//!         pvops::detect::scan(&pvops::detect::HardwareCpuid),
//!     );
//!     ctx.phys_offset = 0xffff_8000_0000_0000; // all RAM mapped here
//!     ctx.kernel_map = pvops::KernelMap::PageTables; // the default: any layout
//!     ctx.rsdp = rsdp;
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
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use pvops_core::backend::{BackendError, BootContext, BootEntry, SelectError};
pub use pvops_core::cpu::CpuNumber;
pub use pvops_core::table::{install, is_installed, InstallError, PvOps};
pub use pvops_core::translate::KernelMap;
pub use pvops_core::{
    abi, backend, cmdline, cpu, detect, irq, lock, mmu, patch, phys, platform, smp, table, time,
    translate,
};
/// The `x86_64` crate, at the version pvops' API takes its types from
/// ([`x86_64::VirtAddr`] in [`mmu::set_pte`] and [`mmu::flush_tlb_single`],
/// [`cpu::DescriptorTablePointer`]): a kernel names them through
/// `pvops::x86_64` and cannot end up with a second, incompatible version.
pub use x86_64;

#[cfg(feature = "native")]
#[cfg_attr(docsrs, doc(cfg(feature = "native")))]
pub use pvops_native as native;

pub mod entry;

#[cfg(feature = "kvm")]
#[cfg_attr(docsrs, doc(cfg(feature = "kvm")))]
pub use pvops_kvm as kvm;

#[cfg(feature = "xen")]
#[cfg_attr(docsrs, doc(cfg(feature = "xen")))]
pub use pvops_xen as xen;

#[cfg(feature = "hyperv")]
#[cfg_attr(docsrs, doc(cfg(feature = "hyperv")))]
pub use pvops_hyperv as hyperv;

#[cfg(feature = "vmware")]
#[cfg_attr(docsrs, doc(cfg(feature = "vmware")))]
pub use pvops_vmware as vmware;

use pvops_core::backend::Candidate;

/// Every backend compiled into this build, best first in source order
/// (detection priorities decide, not this order).
pub const CANDIDATES: &[Candidate] = &[
    #[cfg(feature = "xen")]
    pvops_xen::CANDIDATE,
    #[cfg(feature = "hyperv")]
    pvops_hyperv::CANDIDATE,
    #[cfg(feature = "kvm")]
    pvops_kvm::CANDIDATE,
    #[cfg(feature = "vmware")]
    pvops_vmware::CANDIDATE,
    #[cfg(feature = "native")]
    pvops_native::CANDIDATE,
];

/// Detects the platform, installs the best backend that initialises, and
/// returns the installed table. A backend that bids but fails is reported
/// to `on_fallback` and the next is tried (native last). When none can
/// start, the error comes back and, in ring 0, a failsafe table with only
/// the serial console and power-off is installed
/// ([`native::install_failsafe`]): check [`is_installed`] to print the
/// error and shut down.
///
/// First it records how the kernel image is mapped
/// ([`BootContext::kernel_map`], see [`translate`]) and checks that pvops'
/// own statics translate, that [`BootContext::rsdp`] is mapped in the
/// direct map where pvops will read it, and that a kernel-kept CPU number
/// ([`BootContext::cpu_number`]) is one pvops can hold: a context that
/// cannot be right is refused here, as [`SelectError::BadContext`] naming
/// the field, before any hypervisor is handed an address or any read
/// faults.
pub fn init(
    ctx: &BootContext<'_>,
    on_fallback: impl FnMut(&BackendError),
) -> Result<&'static PvOps, SelectError> {
    let installed = check_context(ctx)
        .and_then(|()| pvops_core::backend::select_and_install(ctx, CANDIDATES, on_fallback));
    #[cfg(feature = "native")]
    if installed.is_err() {
        // Nothing could start: leave the kernel a console and a power-off
        // (ring 0 only) so it can say why instead of halting in silence.
        pvops_native::install_failsafe(ctx);
    }
    installed
}

/// Records what the backends need of `ctx`, then checks the fields that
/// can be checked before any backend runs.
fn check_context(ctx: &BootContext<'_>) -> Result<(), SelectError> {
    record_kernel_map(ctx)?;
    pvops_core::backend::check_cpu_number(ctx.cpu_number).map_err(SelectError::BadContext)?;
    check_rsdp(ctx)
}

/// [`pvops_core::backend::check_rsdp_mapped`] on the live page tables (a
/// hint of 0 asks for the BIOS-area scan and is not checked). Reads CR3,
/// so only in ring 0 on the target: not under Xen PV, whose CR3 names
/// machine frames and whose RSDP is not used.
fn check_rsdp(ctx: &BootContext<'_>) -> Result<(), SelectError> {
    let Some(paddr) = ctx.rsdp.filter(|&p| p != 0) else {
        return Ok(());
    };
    if ctx.entry == BootEntry::XenPv {
        return Ok(());
    }
    cfg_if::cfg_if! {
        if #[cfg(all(feature = "native", target_os = "none"))] {
            // SAFETY: the BootContext contract maps all RAM (page tables
            // included) readable at phys + phys_offset; the limit is the
            // largest physical address paging can name.
            let mem = unsafe { pvops_core::phys::DirectMap::new(ctx.phys_offset, 1 << 52) };
            pvops_core::backend::check_rsdp_mapped(
                paddr,
                ctx.phys_offset,
                pvops_native::paging_root(),
                &mem,
            )
            .map_err(SelectError::BadContext)
        } else {
            // Without native's CR3 reader (or on a host) there is no walk.
            let _ = paddr;
            Ok(())
        }
    }
}

/// Records `ctx.kernel_map` for the backends and translates a static of
/// pvops with it.
fn record_kernel_map(ctx: &BootContext<'_>) -> Result<(), SelectError> {
    use pvops_core::backend::ContextError;
    use pvops_core::translate::{self, KernelMap, TranslateError};
    let bad = |e| SelectError::BadContext(ContextError::KernelMap(e));
    if matches!(ctx.kernel_map, KernelMap::PageTables) && ctx.entry == BootEntry::XenPv {
        // Under Xen PV, CR3 names machine frames: no walk through the
        // direct map can read them.
        return Err(bad(TranslateError::NeedsRing0));
    }
    cfg_if::cfg_if! {
        if #[cfg(feature = "native")] {
            pvops_native::record_boot_context(ctx);
        } else {
            fn no_root() -> translate::PagingRoot {
                panic!("pvops: KernelMap::PageTables needs the native backend compiled in")
            }
            translate::configure(ctx.kernel_map, ctx.phys_offset, no_root);
        }
    }
    /// A static of this crate: if it does not translate, nothing will.
    static PROBE: u64 = 0;
    translate::phys_of(&PROBE).map(drop).map_err(bad)
}

#[cfg(test)]
extern crate std;

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::backend::ContextError;
    use pvops_core::detect::CpuidScan;
    use pvops_core::translate::{KernelMap, TranslateError};
    use std::string::ToString;

    fn ctx(kernel_map: KernelMap, entry: BootEntry) -> BootContext<'static> {
        let mut c = BootContext::new(entry, "", CpuidScan::empty());
        c.kernel_map = kernel_map;
        c
    }

    // One test: the recorded map is process-wide.
    #[test]
    fn maps_that_cannot_be_right_are_refused_before_any_backend() {
        fn nothing(_: u64) -> Option<u64> {
            None
        }
        let r = record_kernel_map(&ctx(KernelMap::Function(nothing), BootEntry::Other));
        assert!(
            matches!(
                r,
                Err(SelectError::BadContext(ContextError::KernelMap(
                    TranslateError::NotMapped { level: 0, .. }
                )))
            ),
            "{r:?}"
        );
        let r = record_kernel_map(&ctx(KernelMap::PageTables, BootEntry::XenPv));
        assert!(
            matches!(
                r,
                Err(SelectError::BadContext(ContextError::KernelMap(
                    TranslateError::NeedsRing0
                )))
            ),
            "{r:?}"
        );
        let e = r.unwrap_err().to_string();
        assert!(e.contains("BootContext::kernel_map"), "{e}");
        assert_eq!(
            record_kernel_map(&ctx(KernelMap::IDENTITY, BootEntry::Other)),
            Ok(())
        );
    }
}
