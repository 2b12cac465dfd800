//! # pvops-xen
//!
//! The Xen backend of pvops, for PVH guests (dom0 or domU), HVM guests
//! started by firmware and a loader (`hvm`: the PVH side plus what the
//! firmware left behind) and, in `pv`, classic 64-bit PV guests (the
//! kernel in ring 3, page tables and traps through hypercalls; see that
//! module). What follows is the PVH side: hardware virtualisation for the CPU and MMU, Xen's paravirtual
//! interfaces for everything a PVH guest has no hardware for. A PVH guest has no PIT, PIC,
//! IO-APIC, UART or RTC (only an emulated local APIC), and nothing here
//! leans on them.
//!
//! | op group | how |
//! |---|---|
//! | CPU, MMU, interrupt flag | native's table, inline patching included, with single entries replaced (`pvh`); `io_delay` is nothing |
//! | console | `CONSOLEIO_write` (dom0) or the PV console ring (domU) — `console`, [`ring`] |
//! | events | 2-level event channels ([`evtchn`]); upcalls on [`pvops_core::smp::SERVICE_VECTOR`] through `HVM_PARAM_CALLBACK_IRQ` (`upcall`) |
//! | IPIs | one IPI port per vCPU, vectors re-raised by local-APIC self-IPI (`ipi`) |
//! | time | pvclock in `vcpu_info` (shared math: [`pvops_core::abi::pvclock`]), wall clock in shared info, `VCPUOP_set_singleshot_timer` + `VIRQ_TIMER`, runstate steal time (`time`, `runstate`) |
//! | halt | `sti; hlt` (see `pvh` for why not `SCHEDOP_block`) |
//! | locks | `SCHEDOP_poll` on a masked per-vCPU port, kicked with `EVTCHNOP_send` (`lock`) |
//! | SMP | `VCPUOP_is_up` to count vCPUs, `VCPUOP_initialise` (64-bit HVM context) + `VCPUOP_up` (`smp`) |
//! | shutdown | `SCHEDOP_shutdown(SHUTDOWN_reboot)`, or `SHUTDOWN_poweroff` when the toolstack asked for it; the exit code is in the kernel's `pvops: exit code=<n>` line (`shutdown`) |
//! | toolstack control (domU) | a xenstore client reading `control/shutdown` for `xl shutdown`/`reboot`/`save` ([`xenstore`]); save/restore of a PVH domU (`suspend`) |
//!
//! Hypercalls are issued with `vmcall`/`vmmcall` chosen by CPU vendor, not
//! through a hypercall page (`hypercall` says why), behind the
//! `hypercall::Hypercall` trait so host tests fake Xen; `xen::Xen`
//! gives them types and `Result<_, XenError>`. The raw ABI is in [`abi`].
//!
//! ## Detection and requirements
//! The backend bids `detect::PRIORITY` (above KVM's) when CPUID shows
//! `XenVMMXenVMM` at 0x40000000 or 0x40000100 and the kernel came in
//! through the PVH entry, or was entered by firmware or a loader
//! (`BootEntry::Other`: HVM mode, `platform=xen-hvm`; if that fails, the
//! native backend runs instead, the HVM domain having its legacy devices). It needs Xen 4.10 or later,
//! `XENFEAT_hvm_safe_pvclock`, and either `XENFEAT_hvm_callback_vector` or
//! the per-vCPU upcall vector (CPUID `XEN_HVM_CPUID_UPCALL_VECTOR`). What it
//! lacks is reported as `pvops: error: xen: ...` on Xen's console and
//! `init` fails; since no other backend can run a PVH domain (the native
//! one declines there), a failsafe console and shutdown stay installed
//! (see [`init`]). Xen is found by its signature even when CPUID's
//! hypervisor bit is clear (`detect::xen_leaf`).
//!
//! ## Fault injection
//! `pvops.fail=<point>[:<n>],...` makes the setup hypercalls listed in
//! [`fault_points`] answer `-EINVAL` without being made; that table gives
//! each one's outcome.
//!
//! ## Command line
//! `pvops.xen.upcall=percpu` prefers the per-vCPU upcall vector
//! (`HVMOP_set_evtchn_upcall_vector`, a local-APIC vector with an EOI) to
//! the domain-wide callback vector when Xen offers both;
//! `pvops.xen.upcall=callback` is the default. `pvops.apic=xapic` keeps
//! the local APIC in xAPIC mode, as for the native backend.
//!
//! ## Memory map
//! Xen 4.17 gives a PVH *dom0* a version 0 `hvm_start_info`, without a
//! memory map. The backend's `platform.memory_map` op
//! (`memmap::platform_map`) reads it with `XENMEM_memory_map`;
//! `pvops::entry::init_pvh` asks that op whenever a start info has no map.
//!
//! ## Exit codes
//! `SCHEDOP_shutdown` carries no exit code: the kernel's
//! `pvops: exit code=<n>` line, printed before the shutdown op, is the
//! only record of it. The domain ends with `SHUTDOWN_reboot`, which for
//! dom0 resets the machine (QEMU's `-no-reboot` then exits) where a
//! power-off would leave the machine halted and QEMU running.
//!
//! ## Machine state this backend owns
//! `IA32_TSC_AUX` (the vCPU id, see `percpu`), the page of `.bss` that
//! shared info is mapped over and the other shared areas (`shared`,
//! `runstate`), and [`pvops_core::smp::SERVICE_VECTOR`] as the upcall
//! vector.
//!
//! ## What the kernel must provide
//! Ring 0; the IDT routing [`pvops_core::smp::SERVICE_VECTOR`] to
//! `pvops_core::smp::service_interrupt` and the APIC's spurious vector
//! ([`pvops_native::apic::SPURIOUS_VECTOR`]) to a handler that returns;
//! the kernel image mapped as `kernel_map` says in every address
//! space it uses (Xen writes the runstate areas by virtual address).
//!
//! ## Example
//! A kernel that wants just this backend (falling back to bare hardware)
//! lists the candidates itself instead of using the `pvops` facade:
//! ```no_run
//! use pvops_core::backend::{select_and_install, BootContext, BootEntry};
//! use pvops_core::detect::{scan, HardwareCpuid};
//!
//! fn early_boot(cmdline: &str) {
//!     let ctx = BootContext::new(BootEntry::Pvh, cmdline, scan(&HardwareCpuid));
//!     let ops = select_and_install(&ctx, &[pvops_xen::CANDIDATE, pvops_native::CANDIDATE], |_| {})
//!         .expect("no backend could start");
//!     let _ = ops.identity.features;
//! }
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod abi;
pub(crate) mod console;
pub(crate) mod detect;
pub mod error;
pub mod evtchn;
pub(crate) mod hvm;
pub(crate) mod hypercall;
pub(crate) mod ipi;
pub(crate) mod lock;
pub(crate) mod memmap;
pub(crate) mod percpu;
pub(crate) mod ports;
pub(crate) mod pv;
pub(crate) mod pvh;
pub(crate) mod require;
pub mod ring;
pub(crate) mod runstate;
pub(crate) mod setup;
pub(crate) mod shared;
pub(crate) mod shutdown;
pub(crate) mod smp;
pub(crate) mod suspend;
pub(crate) mod time;
pub(crate) mod upcall;
mod warn;
pub(crate) mod xen;
pub mod xenstore;

pub use error::XenError;

use crate::abi::hvm::{callback_via_vector, HVM_PARAM_CALLBACK_IRQ};
use crate::abi::version::XenFeatures;
use crate::detect::XenCpuid;
use crate::hypercall::Instruction;
use crate::setup::UpcallVia;
use crate::xen::XEN;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::backend::{BackendError, BootContext, BootEntry, Candidate};
use pvops_core::detect::HardwareCpuid;
use pvops_core::lock::LockOpsTable;
use pvops_core::platform::{
    ConsoleOps, Features, Identity, Platform, PlatformOpsTable, ShutdownOps,
};
use pvops_core::smp::SERVICE_VECTOR;
use pvops_core::table::PvOps;

/// The backend's name, as `pvops.backend=` names it.
pub const NAME: &str = "xen";

/// The ops Xen gives both of its modes, over the same ABI: time (pvclock,
/// the single-shot timer, runstate steal time), locks (poll and kick),
/// console, shutdown, the memory map (PVH's; classic PV replaces it) and
/// the hypercall count. Each mode's table starts from these
/// (`common_table`): PVH on top of native's table (`pvh`), classic PV
/// with its own CPU, interrupt-flag and MMU groups (`pv`). Use it directly
/// (`XenCommon::sched_clock()`) for static dispatch once [`init`] ran.
#[derive(Debug)]
pub enum XenCommon {}

/// `base` with the groups [`XenCommon`] provides (time, locks, platform)
/// taken whole from it, and `identity`.
pub(crate) fn common_table(base: PvOps, identity: Identity) -> PvOps {
    let mut t = base.with_time::<XenCommon>();
    t.identity = identity;
    t.lock = LockOpsTable::of::<XenCommon>();
    t.platform = PlatformOpsTable::of::<XenCommon>();
    t
}

impl pvops_core::platform::CounterOps for XenCommon {
    fn hypercalls() -> Option<u64> {
        Some(crate::hypercall::issued())
    }
}

impl ConsoleOps for XenCommon {
    fn write(bytes: &[u8]) {
        console::write(bytes)
    }
}

impl pvops_core::platform::MemoryMapOps for XenCommon {
    fn memory_map(out: &mut [pvops_core::abi::start_info::HvmMemmapEntry]) -> usize {
        memmap::platform_map(out)
    }
}

impl ShutdownOps for XenCommon {
    fn shutdown(code: u8) -> ! {
        shutdown::shutdown(code)
    }
    fn requested() -> Option<pvops_core::platform::ShutdownRequest> {
        xenstore::poll_shutdown_request()
    }
}

/// `BootContext::phys_offset`, kept for secondary vCPUs.
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Where physical memory is mapped (see
/// [`pvops_core::backend::BootContext::phys_offset`]).
pub fn phys_offset() -> u64 {
    PHYS_OFFSET.load(Ordering::Relaxed)
}

/// Bids `detect::PRIORITY` under Xen, entered through PVH.
pub fn detect(ctx: &BootContext<'_>) -> Option<pvops_core::backend::Priority> {
    detect::detect(ctx)
}

/// The fault-injection points of this backend, for
/// `pvops.fail=<point>[:<n>],...` ([`pvops_core::fault`]). An armed point
/// skips its hypercall and takes `-EINVAL` (22) as Xen's answer; `n`
/// counts calls in the order they are made (1: the boot vCPU's).
///
/// | point | hypercall | outcome |
/// |---|---|---|
/// | `xen.shared-info` | `XENMEM_add_to_physmap` (shared info) | fatal (see [`init`]) |
/// | `xen.vcpu-info` | `VCPUOP_register_vcpu_info` | warning; that vCPU uses its `vcpu_info` in shared info (vCPUs 0-31; fatal beyond) |
/// | `xen.callback` | `HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ)` | warning; per-vCPU upcall vector (`upcall-vector` on the features line) when Xen offers it, else fatal |
/// | `xen.upcall-vector` | `HVMOP_set_evtchn_upcall_vector` | boot vCPU: fatal; another vCPU: warning, that vCPU gets no events |
/// | `xen.bind-virq` | `EVTCHNOP_bind_virq(VIRQ_TIMER)` | boot vCPU: fatal; another vCPU: warning, that vCPU gets no events |
/// | `xen.bind-ipi` | `EVTCHNOP_bind_ipi` (IPI and kick ports, 2 per vCPU) | as `xen.bind-virq` |
/// | `xen.runstate` | `VCPUOP_register_runstate_memory_area` | warning; steal clock 0 there (`runstate` off when the boot vCPU's fails) |
/// | `xen.singleshot-timer` | `VCPUOP_set_singleshot_timer` (each timer arm) | one warning; the tick is raised at once instead (early, never lost) |
/// | `xen.memory-map` | `XENMEM_memory_map` | warning; no memory map (the kernel finds no RAM) |
/// | `xen.vcpu-up` | `VCPUOP_up` | `cpu.start_cpu` fails with `StartCpuError::Refused(cpu, -22)`; the vCPU stays down |
/// | `xen.iopl` | `PHYSDEVOP_set_iopl` (classic PV, each vCPU) | warning; that vCPU's port reads give all ones and writes are dropped, with one warning |
pub mod fault_points {
    /// `XENMEM_add_to_physmap` of shared info.
    pub const SHARED_INFO: &str = "xen.shared-info";
    /// `VCPUOP_register_vcpu_info`.
    pub const VCPU_INFO: &str = "xen.vcpu-info";
    /// `HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ)`.
    pub const CALLBACK: &str = "xen.callback";
    /// `HVMOP_set_evtchn_upcall_vector`.
    pub const UPCALL_VECTOR: &str = "xen.upcall-vector";
    /// `EVTCHNOP_bind_virq`.
    pub const BIND_VIRQ: &str = "xen.bind-virq";
    /// `EVTCHNOP_bind_ipi`.
    pub const BIND_IPI: &str = "xen.bind-ipi";
    /// `VCPUOP_register_runstate_memory_area`.
    pub const RUNSTATE: &str = "xen.runstate";
    /// `VCPUOP_set_singleshot_timer`.
    pub const SINGLESHOT_TIMER: &str = "xen.singleshot-timer";
    /// `XENMEM_memory_map`.
    pub const MEMORY_MAP: &str = "xen.memory-map";
    /// `VCPUOP_up`.
    pub const VCPU_UP: &str = "xen.vcpu-up";
    /// `PHYSDEVOP_set_iopl` (classic PV).
    pub const IOPL: &str = "xen.iopl";
    /// Every point, as `pvops.fail=` accepts them.
    pub const ALL: &[&str] = &[
        SHARED_INFO,
        VCPU_INFO,
        CALLBACK,
        UPCALL_VECTOR,
        BIND_VIRQ,
        BIND_IPI,
        RUNSTATE,
        SINGLESHOT_TIMER,
        MEMORY_MAP,
        VCPU_UP,
        IOPL,
    ];
}

/// Arms `pvops.fail=` with this backend's points and prints what it made
/// of the option (once the console works).
pub(crate) fn arm_faults(ctx: &BootContext<'_>) {
    let report = pvops_core::fault::configure(ctx.option("fail"), fault_points::ALL);
    pvops_core::fault::announce(&report, |w| warn::warn(format_args!("{w}")));
}

/// What is left when the backend cannot come up once Xen answered: the
/// console and shutdown, over hypercalls that need no set-up. Every other
/// op stays the not-installed one (it panics naming itself). No other
/// backend can take over a PVH domain (the native one declines there:
/// no UART, PIT, PIC or RTC), so without this the kernel could not even
/// say why it stops.
fn install_failsafe(ctx: &BootContext<'_>, platform: Platform) {
    let mut features = Features::new();
    features.push("failsafe");
    if let Some(c) = console::kind().feature() {
        features.push(c);
    }
    let mut t = PvOps::NOT_INSTALLED;
    t.identity = Identity {
        platform,
        backend: NAME,
        features,
        // A PV guest's own CPUID may not reach Xen (no CPUID faulting):
        // the entry it came through says whose guest it is.
        hypervisor: match platform {
            Platform::XenPv => Some(pvops_core::detect::HypervisorKind::Xen),
            _ => ctx.cpuid.primary().map(|l| l.kind),
        },
    };
    t.platform.console_write = <XenCommon as ConsoleOps>::write;
    t.platform.shutdown = <XenCommon as ShutdownOps>::shutdown;
    match pvops_core::table::install(t) {
        Ok(_) => warn::error(format_args!(
            "xen: backend not usable; only the console and shutdown ops are installed"
        )),
        Err(e) => warn::error(format_args!("xen: no failsafe console: {e}")),
    }
}

/// Prints `pvops: error: xen: <reason>[: <error>]` and builds the error.
pub(crate) fn fail(reason: &'static str, e: Option<XenError>) -> BackendError {
    match e {
        Some(e) => warn::error(format_args!("xen: {reason}: {e}")),
        None => warn::error(format_args!("xen: {reason}")),
    }
    BackendError {
        backend: NAME,
        reason,
        detail: e.map(XenError::detail),
    }
}

/// Chooses the console: the hypercall for dom0, the ring for a domU that
/// has one (else the hypercall, which Xen may drop).
fn choose_console(features: XenFeatures, phys_offset: u64) {
    if features.contains(XenFeatures::DOM0) || console::use_ring(phys_offset).is_err() {
        console::use_hypercall();
    }
}

/// A PVH domU's xenstore ring, from its HVM parameters (dom0 has none at
/// boot: its xenstored starts later).
fn find_xenstore(features: XenFeatures, phys_offset: u64) {
    if !features.contains(XenFeatures::DOM0) {
        find_xenstore_ring(phys_offset);
    }
}

/// Uses the xenstore ring the HVM parameters name, if any (at boot, and
/// again after a restore: the port changes).
pub(crate) fn find_xenstore_ring(phys_offset: u64) {
    use crate::abi::hvm::{HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN};
    let (Ok(pfn), Ok(port)) = (
        XEN.hvm_get_param(HVM_PARAM_STORE_PFN),
        XEN.hvm_get_param(HVM_PARAM_STORE_EVTCHN),
    ) else {
        return;
    };
    if pfn == 0 || port == 0 || port > u64::from(u32::MAX) {
        return;
    }
    // SAFETY: under PVH the BootContext contract maps every guest frame
    // at `phys + phys_offset` for good; the frame is the ring Xen named,
    // used by nothing else in the kernel.
    unsafe { xenstore::use_ring_at((pfn << 12).wrapping_add(phys_offset), port as u32) };
}

/// The callback vector was refused: the per-vCPU upcall vector instead,
/// when Xen offers it (every vCPU set up from now on gets it too).
fn per_vcpu_instead(cpuid: &XenCpuid, me: u32, e: XenError) -> Result<UpcallVia, BackendError> {
    let offered = cpuid
        .hvm
        .is_some_and(|h| h.contains(crate::abi::cpuid::HvmFeatures::UPCALL_VECTOR));
    if !offered {
        return Err(fail(
            "HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ) failed and Xen offers no per-vCPU upcall vector",
            Some(e),
        ));
    }
    warn::warn(format_args!(
        "xen: HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ) failed: {e}; using the per-vCPU upcall vector"
    ));
    setup::set_via(UpcallVia::PerVcpuVector);
    XEN.set_upcall_vector(me, SERVICE_VECTOR)
        .map_err(|e| fail("HVMOP_set_evtchn_upcall_vector failed", Some(e)))?;
    Ok(UpcallVia::PerVcpuVector)
}

/// `pvops.xen.upcall=callback|percpu`: which upcall delivery to prefer.
fn preferred_via(ctx: &BootContext<'_>) -> Option<UpcallVia> {
    match ctx.option("xen.upcall") {
        None => None,
        Some("callback") => Some(UpcallVia::CallbackVector),
        Some("percpu") => Some(UpcallVia::PerVcpuVector),
        Some(other) => {
            warn::warn(format_args!(
                "xen: pvops.xen.upcall={other} is neither callback nor percpu: ignored"
            ));
            None
        }
    }
}

/// Brings the backend up on the boot vCPU and returns its table.
///
/// When a step Xen must not refuse fails after Xen answered its first
/// hypercalls (requirements unmet, shared info, the boot vCPU's
/// `vcpu_info`/ports/upcall vector), the step is printed as
/// `pvops: error: xen: ...`, the error is returned, and a failsafe table
/// (console and shutdown only, `features=failsafe,...`) is installed, so
/// that `pvops::is_installed()` is true and the kernel can print the error
/// and shut down.
pub fn init(ctx: &BootContext<'_>) -> Result<PvOps, BackendError> {
    let (r, platform) = match (ctx.entry, ctx.xen_pv) {
        (BootEntry::XenPv, Some(si)) => (pv::bring_up(ctx, si), Platform::XenPv),
        (BootEntry::XenPv, None) => {
            // The start info was refused: what needs none of it (the
            // hypercall console and shutdown) still lets the kernel say so.
            hypercall::select(Instruction::Syscall);
            if XEN.version().is_ok() {
                console::use_hypercall();
            }
            (
                Err(BackendError {
                    backend: NAME,
                    reason: "entered through the PV entry without a valid start_info",
                    detail: None,
                }),
                Platform::XenPv,
            )
        }
        (BootEntry::Other, _) => (bring_up(ctx, Platform::XenHvm), Platform::XenHvm),
        _ => (bring_up(ctx, Platform::XenPvh), Platform::XenPvh),
    };
    // An HVM guest has the legacy devices native needs: native is tried
    // next instead (the failsafe would take the table it installs).
    if r.is_err() && platform != Platform::XenHvm && console::kind() != console::Kind::None {
        install_failsafe(ctx, platform);
    }
    r
}

/// PVH and HVM alike: the HVM guest (`platform` [`Platform::XenHvm`],
/// entered by firmware or a loader) also masks the legacy PIC the firmware
/// programmed and starts vCPUs through the local APIC (see `smp`).
fn bring_up(ctx: &BootContext<'_>, platform: Platform) -> Result<PvOps, BackendError> {
    let leaf = detect::xen_leaf(ctx, &HardwareCpuid).ok_or(BackendError {
        backend: NAME,
        reason: "no Xen signature in CPUID",
        detail: None,
    })?;
    let hvm = platform == Platform::XenHvm;
    if ctx.entry
        != if hvm {
            BootEntry::Other
        } else {
            BootEntry::Pvh
        }
    {
        return Err(BackendError {
            backend: NAME,
            reason: "entered neither through the PVH entry nor by firmware (HVM)",
            detail: None,
        });
    }
    let cpuid = XenCpuid::read(&HardwareCpuid, &leaf);
    let insn = Instruction::for_cpu(&HardwareCpuid);
    hypercall::select(insn);
    PHYS_OFFSET.store(ctx.phys_offset, Ordering::Relaxed);
    pvops_native::record_boot_context(ctx);
    percpu::configure(cpuid.vcpu_id_leaf(), cpuid.tsc_native());

    // The first hypercalls: nothing can be printed before they answer.
    let version = XEN.version().map_err(|e| BackendError {
        backend: NAME,
        reason: "XENVER_version failed: Xen does not answer hypercalls",
        detail: Some(e.detail()),
    })?;
    let features = XEN.features().map_err(|e| BackendError {
        backend: NAME,
        reason: "XENVER_get_features failed",
        detail: Some(e.detail()),
    })?;
    if hvm {
        // Before anything reads or writes shared info (see the method).
        XEN.latch_64bit_shared_info()
            .map_err(|e| fail("HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ, 0) failed", Some(e)))?;
    }
    choose_console(features, ctx.phys_offset);
    find_xenstore(features, ctx.phys_offset);
    arm_faults(ctx);
    if !ctx.cpuid.hypervisor_bit {
        warn::warn(format_args!(
            "xen: CPUID.1:ECX.hypervisor is clear; Xen found by its signature at {:#x}",
            leaf.base
        ));
    }

    let prefer = preferred_via(ctx);
    let mut via = require::check(version, features, &cpuid, prefer).map_err(|u| {
        warn::error(format_args!("xen: {u}"));
        BackendError {
            backend: NAME,
            reason: u.reason(),
            detail: u.detail(),
        }
    })?;
    if prefer.is_some_and(|p| p != via) {
        warn::warn(format_args!(
            "xen: pvops.xen.upcall: Xen does not offer that delivery; using {}",
            via.feature()
        ));
    }
    setup::set_via(via);

    let gpfn = shared::paddr_of(shared::SHARED_INFO.as_ptr()).map_err(|e| {
        warn::error(format_args!("xen: the shared-info page: {e}"));
        fail(
            "no physical address for the shared-info page (BootContext::kernel_map)",
            None,
        )
    })? >> 12;
    XEN.map_shared_info(gpfn)
        .map_err(|e| fail("XENMEM_add_to_physmap(shared_info) failed", Some(e)))?;
    shared::set_mapped();
    if let Some(si) = shared::shared_info() {
        // SAFETY: shared info was just mapped over SHARED_INFO, for good.
        unsafe { evtchn::SharedEvents::new(si) }.mask_all();
    }

    // SAFETY: the BootContext contract maps the APIC page at phys +
    // phys_offset (used in xAPIC mode only); this runs once, on the boot
    // vCPU, before anything else uses the APIC.
    unsafe { pvops_native::apic::init(ctx.option("apic") != Some("xapic"), ctx.phys_offset) };
    if hvm {
        hvm::take_over_firmware_devices(ctx);
    }
    let me = percpu::current_slow();
    set_up_boot_vcpu(me)?;
    if via == UpcallVia::CallbackVector {
        if let Err(e) =
            XEN.hvm_set_param(HVM_PARAM_CALLBACK_IRQ, callback_via_vector(SERVICE_VECTOR))
        {
            via = per_vcpu_instead(&cpuid, me, e)?;
        }
    }
    // Interrupts are still off: no upcall can arrive before this.
    pvops_core::smp::set_upcall_handler(upcall::handle);

    let (vcpus, probe_err) = smp::probe(&XEN, me);
    smp::set_possible(vcpus);
    if let Some(e) = probe_err {
        warn::warn(format_args!(
            "xen: VCPUOP_is_up failed ({e}): only the boot vCPU is used"
        ));
    }

    let mut names = Features::new();
    if hvm {
        names.push("hvm");
    }
    names.push(insn.name());
    names.push(via.feature());
    names.push("evtchn-2l");
    names.push("pvclock");
    names.push("singleshot-timer");
    names.push("evtchn-ipi");
    names.push("poll-kick");
    if runstate::is_registered(me) {
        names.push("runstate");
    }
    if percpu::uses_rdtscp() {
        names.push("rdtscp-cpu-id");
    }
    if let Some(c) = console::kind().feature() {
        names.push(c);
    }
    Ok(pvh::table(Identity {
        platform,
        backend: NAME,
        features: names,
        hypervisor: ctx.cpuid.primary().map(|l| l.kind),
    }))
}

/// The boot vCPU's Xen state (PVH and PV alike): runstate updates flagged,
/// then [`setup::setup_vcpu`]; a failure is fatal and printed.
pub(crate) fn set_up_boot_vcpu(me: u32) -> Result<(), BackendError> {
    runstate::enable_update_flag();
    setup::setup_vcpu(me).map_err(|e| {
        warn::error(format_args!("xen: boot cpu {me}: {e}"));
        BackendError {
            backend: NAME,
            reason: "setting up the boot vCPU failed",
            detail: Some(e.error.detail()),
        }
    })
}

/// The Xen backend as a detection candidate: PVH or classic PV by the
/// entry the kernel came through.
pub const CANDIDATE: Candidate = Candidate {
    name: NAME,
    detect,
    init,
};
