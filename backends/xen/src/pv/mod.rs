//! The classic PV flavour of the Xen backend: the kernel runs in ring 3,
//! and every privileged act goes through Xen.
//!
//! | op group | how |
//! |---|---|
//! | CPU | [`cpu`]: CPUID by Xen's forced-emulation prefix, GDT by `set_gdt`, IDT by `set_trap_table`, CR0.TS by `fpu_taskswitch`, kernel stack by `stack_switch`; interrupt returns in software, by `HYPERVISOR_iret` when an event is pending ([`traps`]) |
//! | interrupt flag | the `vcpu_info` upcall mask ([`irq`]) |
//! | MMU | `mmu_update` (batched in lazy mode), `mmuext_op` pin/unpin/new base pointer/TLB flushes, `update_va_mapping` ([`mmu`], [`p2m`]) |
//! | events, time, locks, console, shutdown | the PVH backend's code: the ABI is the same ([`crate::evtchn`], [`crate::time`], ...) |
//!
//! ## Entry and boot layout
//! `pvops::boot_entry!` gives the kernel ELF the PV notes (`VIRT_BASE` and
//! `PADDR_OFFSET` 0, so Xen maps its boot layout at virtual = pseudo-
//! physical addresses) and a 64-bit entry that hands the kernel
//! `start_info`. [`setup::extend_direct_map`] then maps the domain's other
//! frames the same way: the kernel sees its memory identity-mapped, as
//! under PVH.
//!
//! ## Events
//! Xen bounces event upcalls to [`traps`]' event entry, which runs what
//! the kernel's [`pvops_core::smp::SERVICE_VECTOR`] handler runs under
//! PVH (`service_interrupt`: the upcall handler, then pvops' cross-CPU
//! requests), directly, so a kernel without an IDT yet loses nothing; the
//! upcall handler ([`crate::upcall`]) runs the kernel's handlers of the
//! timer and IPI vectors ([`traps::raise`]), where PVH re-raises them with
//! the local APIC (and drops a vector the kernel has no handler for).
//!
//! ## Several vCPUs
//! Secondary vCPUs start with `VCPUOP_initialise` (a PV context) and
//! `VCPUOP_up` ([`smp`]). Each vCPU's kernel GS base names it
//! ([`crate::percpu`]), so the backend owns that base. Per vCPU are: the
//! `vcpu_info` (events mask, CR2, pvclock), ports, runstate area, lazy
//! MMU queue ([`mmu`], for vCPUs 0-3; the others write entries at once),
//! CR0.TS, and Xen's copies of the GDT and trap table (loaded on each
//! vCPU from the one GDT page and trap table of [`cpu`]).
//!
//! ## Limits
//! Only vCPUs 0-31 are started (those with a
//! `vcpu_info` slot in shared info, which Xen needs before
//! `VCPUOP_initialise`). Page-table frames must lie in the first GiB of
//! pseudo-physical memory (the record of [`mmu::MAX_PFNS`] frames); the
//! tables that map the domain at boot do (they sit right after Xen's
//! layout), and a kernel allocating from the bottom of the memory map
//! keeps them there.

pub mod calls;
pub mod cpu;
pub mod direct;
pub mod irq;
pub mod mmu;
pub mod p2m;
pub mod setup;
pub mod smp;
pub mod traps;

use crate::abi::pv::{pte, CALLBACKTYPE_EVENT, CALLBACKTYPE_FAILSAFE, UVMF_INVLPG};
use crate::hypercall::{self, Instruction};
use crate::xen::XEN;
use crate::{fail, warn, NAME};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use pvops_core::abi::pv_start_info::{pv_memmap, PvStartInfo};
use pvops_core::abi::start_info::HvmMemmapEntry;
use pvops_core::backend::{BackendError, BootContext};
use pvops_core::cpu::CpuOpsTable;
use pvops_core::patch::Op;
use pvops_core::platform::{Features, Identity, Platform};
use pvops_core::table::PvOps;
use pvops_core::translate::KernelMap;

/// The exit code a failsafe callback ends the domain with.
pub const EXIT_FAILSAFE: u8 = 3;

/// The Xen classic-PV backend's own ops: CPU, interrupt flag and MMU
/// (its table takes them whole, on top of [`crate::XenCommon`]'s time,
/// locks, console and shutdown: see [`bring_up`]).
#[derive(Debug)]
pub enum XenPv {}

static ACTIVE: AtomicBool = AtomicBool::new(false);
static NR_PAGES: AtomicU64 = AtomicU64::new(0);
static RESERVED_START: AtomicU64 = AtomicU64::new(0);
static RESERVED_END: AtomicU64 = AtomicU64::new(0);

/// Whether the backend runs a classic PV guest (set once, at init).
#[inline]
pub fn is_active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// The frame number Xen wants for the kernel's pseudo-physical frame
/// `pfn`: the machine frame under PV, `pfn` itself under PVH.
pub fn frame_for_xen(pfn: u64) -> u64 {
    if is_active() {
        p2m::mfn(pfn).unwrap_or(pfn)
    } else {
        pfn
    }
}

/// Virtual minus pseudo-physical for the image: PV kernels are mapped
/// linearly by Xen's domain builder (`KernelMap::Linear`, checked in
/// [`bring_up`]).
static IMAGE_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Pseudo-physical frame of a kernel virtual address (image or direct
/// map; both are identity here).
pub(crate) fn mmu_pfn_of(va: u64) -> u64 {
    va.wrapping_sub(IMAGE_OFFSET.load(Ordering::Relaxed)) >> 12
}

/// `platform.memory_map`: the domain's pages, less what Xen reserved
/// below the kernel.
fn memory_map(out: &mut [HvmMemmapEntry]) -> usize {
    pv_memmap(
        NR_PAGES.load(Ordering::Relaxed),
        RESERVED_START.load(Ordering::Relaxed)..RESERVED_END.load(Ordering::Relaxed),
        out,
    )
}

/// Chooses the console of a classic PV guest: `CONSOLEIO_write` for dom0
/// (Xen prints it unchanged); for a domU the console ring `start_info`
/// names (Xen drops a domU's `CONSOLEIO_write` unless built for
/// debugging), at once when its frame lies in Xen's boot layout (it does:
/// the domain builder puts it before the boot page tables), else once the
/// direct map is extended (returned as the ring's address and port). A
/// domU without a usable ring keeps the hypercall and says why.
fn choose_console(ctx: &BootContext<'_>, si: &PvStartInfo) -> Option<(u64, u32)> {
    use pvops_core::abi::pv_start_info::{PvConsole, SifFlags};
    crate::console::use_hypercall();
    let PvConsole::DomU { mfn, evtchn } = si.console else {
        return None;
    };
    if si.flags.contains(SifFlags::INITDOMAIN) {
        return None;
    }
    let pfn = match crate::console::pv_ring_frame(mfn, evtchn, si.nr_pages, p2m::pfn) {
        Ok(pfn) => pfn,
        Err(e) => {
            warn::warn(format_args!(
                "xen-pv: {e}: printing through CONSOLEIO_write, which Xen may drop"
            ));
            return None;
        }
    };
    let va = (pfn << 12).wrapping_add(ctx.phys_offset);
    let boot_mapped = si.boot_layout_end() + PvStartInfo::GUARANTEED_PADDING;
    if (pfn << 12) + 4096 <= boot_mapped {
        // SAFETY: the frame is the domain's own (checked against the pfn
        // list), inside Xen's boot layout, which is mapped writable at
        // virtual = pseudo-physical and stays so (the direct map keeps
        // it); nothing else in the kernel owns the ring page.
        unsafe { crate::console::use_ring_at(va, evtchn) };
        None
    } else {
        Some((va, evtchn))
    }
}

/// A classic PV domU's xenstore ring, named in `start_info` by machine
/// frame (dom0 has none at boot). Runs once the direct map covers every
/// frame of the domain.
fn find_xenstore(ctx: &BootContext<'_>, si: &PvStartInfo) {
    use pvops_core::abi::pv_start_info::SifFlags;
    if si.flags.contains(SifFlags::INITDOMAIN) {
        return;
    }
    // The same check as the console ring's: the domain's own frame.
    match crate::console::pv_ring_frame(si.store_mfn, si.store_evtchn, si.nr_pages, p2m::pfn) {
        // SAFETY: the direct map maps every frame of the domain at
        // `pfn << 12` (plus phys_offset) for good; this one is the
        // xenstore ring, used by nothing else in the kernel.
        Ok(pfn) => unsafe {
            crate::xenstore::use_ring_at((pfn << 12).wrapping_add(ctx.phys_offset), si.store_evtchn)
        },
        Err(e) => warn::warn(format_args!("xen-pv: xenstore ring: {e}")),
    }
}

fn xen_err(reason: &'static str) -> impl FnOnce(crate::XenError) -> BackendError {
    move |e| fail(reason, Some(e))
}

/// Brings the backend up for a classic PV guest described by `si`.
pub(crate) fn bring_up(ctx: &BootContext<'_>, si: &PvStartInfo) -> Result<PvOps, BackendError> {
    hypercall::select(Instruction::Syscall);
    let KernelMap::Linear { offset } = ctx.kernel_map else {
        return Err(fail(
            "Xen PV maps the image linearly: BootContext::kernel_map must be KernelMap::Linear",
            None,
        ));
    };
    IMAGE_OFFSET.store(offset, Ordering::Relaxed);
    if matches!(ctx.cpu_number, pvops_core::cpu::CpuNumber::Kernel(_)) {
        return Err(fail(
            "Xen PV names vCPUs by the kernel GS base: BootContext::cpu_number must be CpuNumber::Pvops",
            None,
        ));
    }
    // Linear needs no page-table reader (CR3 names machine frames here).
    pvops_core::translate::configure(ctx.kernel_map, ctx.phys_offset, || {
        unreachable!("KernelMap::Linear reads no page tables")
    });
    let version = XEN.version().map_err(|e| BackendError {
        backend: NAME,
        reason: "XENVER_version failed: Xen does not answer hypercalls",
        detail: Some(e.detail()),
    })?;
    // SAFETY: the parser checked the list lies in the boot layout, which
    // stays mapped (and, once extended, inside the direct map) for good.
    unsafe { p2m::set_list(si.mfn_list, si.nr_pages) };
    let ring_later = choose_console(ctx, si);
    crate::arm_faults(ctx);
    if version < (4, 10) {
        return Err(fail("Xen older than 4.10", None));
    }
    ACTIVE.store(true, Ordering::Relaxed);

    // Shared info first: it holds the event mask.
    let shared_va = crate::shared::SHARED_INFO.as_ptr() as u64;
    let shared_mfn = si.shared_info_maddr >> 12;
    XEN.update_va_mapping(
        shared_va,
        (shared_mfn << 12) | pte::PRESENT | pte::WRITABLE | pte::ACCESSED | pte::DIRTY,
        UVMF_INVLPG,
    )
    .map_err(xen_err("update_va_mapping(shared_info) failed"))?;
    // SAFETY: shared info (shared_mfn) was just mapped over the page at
    // shared_va, whose frame it now backs.
    unsafe { p2m::set_override(mmu_pfn_of(shared_va), shared_mfn) };
    crate::shared::set_mapped();
    irq::save_and_mask();
    if let Some(sh) = crate::shared::shared_info() {
        // SAFETY: shared info was just mapped over SHARED_INFO, for good.
        unsafe { crate::evtchn::SharedEvents::new(sh) }.mask_all();
    }

    XEN.register_callback(
        CALLBACKTYPE_EVENT,
        traps::event_entry as *const () as u64,
        0,
    )
    .map_err(xen_err("CALLBACKOP_register(event) failed"))?;
    XEN.register_callback(
        CALLBACKTYPE_FAILSAFE,
        traps::failsafe_entry as *const () as u64,
        0,
    )
    .map_err(xen_err("CALLBACKOP_register(failsafe) failed"))?;

    mmu::init(si.pt_base >> 12, ctx.phys_offset);
    mmu::mark_tree(si.pt_base >> 12).map_err(xen_err("reading the boot page tables failed"))?;
    let reserved_end = setup::extend_direct_map(si).map_err(|e| {
        warn::error(format_args!("xen-pv: mapping the domain's memory: {e}"));
        BackendError {
            backend: NAME,
            reason: "mapping the domain's memory failed",
            detail: None,
        }
    })?;
    NR_PAGES.store(si.nr_pages, Ordering::Relaxed);
    if let Some((va, port)) = ring_later {
        // SAFETY: the direct map now maps every frame of the domain at
        // `pfn << 12` (plus phys_offset) for good; `va` is the ring's.
        unsafe { crate::console::use_ring_at(va, port) };
    }
    find_xenstore(ctx, si);
    // Below the kernel is nothing Xen gave the kernel to use.
    RESERVED_START.store(0, Ordering::Relaxed);
    RESERVED_END.store(reserved_end, Ordering::Relaxed);

    let iopl = cpu::enable_io(0);
    if let Err(e) = iopl {
        warn::warn(format_args!(
            "xen-pv: PHYSDEVOP_set_iopl refused ({e}): I/O port accesses are refused"
        ));
    }
    // vCPU 0: Xen starts a PV guest there. Its GS base names it from now
    // on (crate::percpu); without that, the other vCPUs stay unused.
    let gs_ids = crate::percpu::configure_pv();
    if let Err(e) = gs_ids {
        warn::warn(format_args!(
            "xen-pv: set_segment_base(SEGBASE_GS_KERNEL) refused ({e}): only the boot vCPU is used"
        ));
    }
    cpu::init_cr0();

    let me = 0;
    crate::set_up_boot_vcpu(me)?;
    traps::publish_vcpu_info(me);
    pvops_core::smp::set_upcall_handler(crate::upcall::handle);
    let mut vcpus = 1 << me;
    if gs_ids.is_ok() {
        let (found, probe_err) = crate::smp::probe(&XEN, me);
        if let Some(e) = probe_err {
            warn::warn(format_args!(
                "xen: VCPUOP_is_up failed ({e}): only the vCPUs found before it are used"
            ));
        }
        vcpus = smp::startable(found);
        if vcpus != found {
            warn::warn(format_args!(
                "xen-pv: vCPUs from {} on are not used (no vcpu_info slot in shared info)",
                crate::abi::shared::LEGACY_MAX_VCPUS
            ));
        }
    }
    crate::smp::set_possible(vcpus);

    let mut names = Features::new();
    names.push(Instruction::Syscall.name());
    names.push("trap-table");
    names.push("iret-hypercall");
    names.push("mmu-update");
    names.push("lazy-mmu-batch");
    names.push("evtchn-2l");
    names.push("pvclock");
    names.push("singleshot-timer");
    names.push("evtchn-ipi");
    names.push("poll-kick");
    if crate::runstate::is_registered(me) {
        names.push("runstate");
    }
    if gs_ids.is_ok() {
        names.push("gs-cpu-id");
        // The assembly ops below reach vcpu_info through GS.
        names.push("direct-irq");
    }
    if iopl.is_ok() {
        names.push("iopl");
    }
    if let Some(c) = crate::console::kind().feature() {
        names.push(c);
    }
    let table = table(Identity {
        platform: Platform::XenPv,
        backend: NAME,
        features: names,
        hypervisor: Some(pvops_core::detect::HypervisorKind::Xen),
    });
    if gs_ids.is_err() {
        return Ok(table);
    }
    // SAFETY: each entry does what XenPv's op does (the mask byte, CR2 of
    // this vCPU's vcpu_info, reached at %gs:8, which names this vCPU and
    // is published before any vCPU runs kernel code) and keeps every
    // register but rax (see `direct`).
    Ok(unsafe {
        table
            .with_direct_call(Op::Disable, direct::disable)
            .with_direct_call(Op::Enable, direct::enable)
            .with_direct_call(Op::SaveFlags, direct::save_flags)
            .with_direct_call(Op::RestoreFlags, direct::restore_flags)
            .with_direct_call(Op::ReadCr2, direct::read_cr2)
    })
}

/// The classic-PV table: [`crate::common_table`] with [`XenPv`]'s CPU,
/// interrupt-flag and MMU groups and the PV memory map. Nothing of
/// native's: in ring 3 its instructions trap or do nothing.
fn table(identity: Identity) -> PvOps {
    let mut t = crate::common_table(PvOps::NOT_INSTALLED, identity)
        .with_irq::<XenPv>()
        .with_mmu::<XenPv>();
    t.cpu = CpuOpsTable::of::<XenPv>();
    t.platform.memory_map = memory_map;
    t
}
