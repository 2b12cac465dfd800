//! # pvops-hyperv
//!
//! The Hyper-V backend of pvops: Microsoft's enlightenments (the TLFS
//! interface, `Hv#1`), as Hyper-V offers them and as KVM emulates them
//! (QEMU's `hv-*` flags). It starts from the kvm backend's table where
//! KVM's own leaves are there too (else native's) and replaces single
//! entries, each feature chosen on its own from CPUID leaves
//! 0x40000003..5 and the command line; a feature the host does not offer,
//! or that fails to come up, leaves the base op in place.
//!
//! | feature (features line) | Hyper-V interface | table entries |
//! |---|---|---|
//! | `hv-hypercall` | `HV_X64_MSR_GUEST_OS_ID`, `HV_X64_MSR_HYPERCALL` | none (the hypercall page the others use) |
//! | `hv-vpindex` | `HV_X64_MSR_VP_INDEX` | none (IPI and flush targets) |
//! | `hv-ref-tsc` | `HV_X64_MSR_REFERENCE_TSC` | `time.sched_clock` |
//! | `hv-frequencies` | `HV_X64_MSR_TSC_FREQUENCY`, `..._APIC_FREQUENCY` | none (native's TSC and APIC timer rates: no PIT) |
//! | `hv-stimer-direct` | `HV_X64_MSR_STIMER0_CONFIG/COUNT`, direct mode | `time.timer_setup`, `timer_arm`, `timer_cancel` |
//! | `hv-apic-msrs` | `HV_X64_MSR_EOI` | `irq.eoi` |
//! | `hv-apic-assist` | `HV_X64_MSR_VP_ASSIST_PAGE` ("no EOI required") | `irq.eoi` |
//! | `hv-ipi` | `HvCallSendSyntheticClusterIpi` (and `Ex`) | `irq.send_ipi` |
//! | `hv-tlbflush` | `HvCallFlushVirtualAddressSpace`/`List` (and `Ex`) | `mmu.flush_tlb_others` |
//! | `hv-spin-wait` | `HvCallNotifyLongSpinWait` | `lock.wait`, `lock.kick` |
//! | `hv-runtime` | `HV_X64_MSR_VP_RUNTIME` | `time.steal_clock`, `irq.safe_halt`, `irq.halt` |
//! | `hv-crash` | `HV_X64_MSR_CRASH_P0..P4`, `HV_X64_MSR_CRASH_CTL` | `platform.report_panic` |
//!
//! Per-CPU state (VP index, hypercall input buffer, VP assist page,
//! runtime baseline) is set up on the boot CPU by [`init`] and on every
//! other CPU by the `cpu.init_secondary` op this backend installs (the
//! base's, then this CPU's).
//!
//! ## Both interfaces (Hyper-V and KVM)
//! QEMU on KVM with `hv-*` flags and without `kvm=off` gives Hyper-V's
//! leaves at 0x40000000 and KVM's at 0x40000100. This backend then bids
//! above kvm ([`pvops_core::backend::Priority::HYPERV`]), brings the kvm
//! backend up as its base, and takes Hyper-V's feature only for the ops
//! where it costs less; the table in [`choice`] says which and why. The
//! platform line then lists the KVM features still in force beside the
//! `hv-*` ones (`platform=hyperv backend=hyperv
//! features=kvmclock,steal-time,...,hv-ipi,hv-tlbflush,...`).
//!
//! ## Command line
//! - `pvops.hyperv.off=<names>`: features off, by the names above
//!   (comma-separated, `all`).
//! - `pvops.hyperv.prefer=auto|kvm|hyperv[,<op>=auto|kvm|hyperv...]`:
//!   who serves each op where both interfaces offer it; ops `clock`,
//!   `eoi`, `ipi`, `tlb`, `steal`, `lock`, `timer` ([`choice`]).
//! - `pvops.kvm.off=` still applies to the kvm base.
//!
//! ## Fault injection
//! `pvops.fail=<point>[:<n>],...` makes a setup step act as refused by
//! the host; [`fault_points`] lists them and their outcomes.
//!
//! ## Not implemented
//! SynIC messages and events (VMBus), the enlightened VMCS and nested
//! features, TLB flushes by XMM fast hypercalls, reenlightenment: nothing
//! here needs them yet.
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod abi;
pub mod apic;
mod base;
pub mod choice;
pub mod crash;
pub mod features;
pub mod hypercall;
pub mod ipi;
pub mod ref_tsc;
pub mod runtime;
pub mod spin;
pub mod stimer;
pub mod tlb;
pub mod vp;
mod warn;

use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use pvops_core::backend::{BackendError, BootContext, BootEntry, Candidate, Priority};
use pvops_core::cpu::CpuId;
use pvops_core::detect::{HardwareCpuid, HypervisorKind};
use pvops_core::platform::{Features, Identity, Platform};
use pvops_core::table::PvOps;
use pvops_native::NativeHints;

use crate::choice::{Op, Prefer};
use crate::features::{Feature, FeatureSet, HvCpuid};
use crate::hypercall::{HvError, Hypervisor, Real};
use crate::warn::warn;

/// The backend's name, as `pvops.backend=` names it.
pub const NAME: &str = "hyperv";

/// The detection bid (see [`Priority::HYPERV`]).
pub const PRIORITY: Priority = Priority::HYPERV;

/// The fault-injection points of this backend, for `pvops.fail=`.
///
/// | point | what fails | outcome |
/// |---|---|---|
/// | `hyperv.guest-os-id` | the guest OS id write | warning; `hv-hypercall` off, so `hv-ipi`, `hv-tlbflush`, `hv-spin-wait` too |
/// | `hyperv.hypercall` | the hypercall page MSR | as above |
/// | `hyperv.vpindex` | reading the VP index | boot CPU: warning, `hv-vpindex`, `hv-ipi`, `hv-tlbflush` off; other CPU: it is never a target (those calls take the base op) |
/// | `hyperv.ref-tsc` | the reference TSC page MSR | warning; sched_clock stays kvmclock or native |
/// | `hyperv.ref-tsc-invalid` | the page reads sequence 0 | as above (the page is withdrawn) |
/// | `hyperv.frequencies` | the frequency MSRs | warning; native measures (CPUID, PIT) |
/// | `hyperv.stimer` | the synthetic timer | warning; the native APIC timer |
/// | `hyperv.apic-assist` | the VP assist page MSR | boot CPU: warning, EOI through the MSR; other CPU: there |
/// | `hyperv.runtime` | the runtime baseline | warning; the base steal clock |
/// | `hyperv.crash` | the crash MSRs | warning; panics reach only the console |
pub mod fault_points {
    /// The guest OS id write.
    pub const GUEST_OS_ID: &str = "hyperv.guest-os-id";
    /// The hypercall page registration.
    pub const HYPERCALL: &str = "hyperv.hypercall";
    /// A CPU's VP index read.
    pub const VP_INDEX: &str = "hyperv.vpindex";
    /// The reference TSC page registration.
    pub const REF_TSC: &str = "hyperv.ref-tsc";
    /// The reference TSC page reading invalid.
    pub const REF_TSC_INVALID: &str = "hyperv.ref-tsc-invalid";
    /// The frequency MSR reads.
    pub const FREQUENCIES: &str = "hyperv.frequencies";
    /// The synthetic timer.
    pub const STIMER: &str = "hyperv.stimer";
    /// A CPU's VP assist page registration.
    pub const APIC_ASSIST: &str = "hyperv.apic-assist";
    /// The runtime baseline.
    pub const RUNTIME: &str = "hyperv.runtime";
    /// The crash MSRs.
    pub const CRASH: &str = "hyperv.crash";
    /// Every point, as `pvops.fail=` accepts them.
    pub const ALL: &[&str] = &[
        GUEST_OS_ID,
        HYPERCALL,
        VP_INDEX,
        REF_TSC,
        REF_TSC_INVALID,
        FREQUENCIES,
        STIMER,
        APIC_ASSIST,
        RUNTIME,
        CRASH,
    ];
}

/// The features in force (a [`FeatureSet`]).
static ACTIVE: AtomicU16 = AtomicU16::new(0);
/// The host's VP limit (leaf 0x40000005 EAX).
static MAX_VPS: AtomicU32 = AtomicU32::new(0);

/// The features [`init`] turned on (empty before).
pub fn active() -> FeatureSet {
    FeatureSet::from_bits_retain(ACTIVE.load(Ordering::Relaxed))
}

/// The platform number (APIC ID) of the CPU this runs on, without an
/// exit where the CPU can (TSC_AUX, tagged as the kvm backend does).
#[inline]
pub fn this_cpu() -> CpuId {
    pvops_kvm::percpu::this_cpu()
}

/// Bids [`PRIORITY`] when CPUID shows Hyper-V's signature.
pub fn detect(ctx: &BootContext<'_>) -> Option<Priority> {
    if ctx.entry == BootEntry::XenPv {
        return None;
    }
    ctx.cpuid.find(HypervisorKind::HyperV).map(|_| PRIORITY)
}

fn err(reason: &'static str) -> BackendError {
    BackendError {
        backend: NAME,
        reason,
        detail: None,
    }
}

/// The TSC and APIC frequencies from their MSRs, each checked to be a
/// plausible frequency (1 MHz to 100 GHz).
pub fn read_frequencies<H: Hypervisor + ?Sized>(h: &H) -> Result<(u64, u64), HvError> {
    if h.fail(fault_points::FREQUENCIES) {
        return Err(HvError::Refused {
            msr: abi::msr::TSC_FREQUENCY,
        });
    }
    let read = |msr| {
        // SAFETY: the frequency MSRs were offered (privilege and feature
        // bits); reading has no effect.
        let hz = unsafe { h.read_msr(msr) };
        if (1_000_000..=100_000_000_000).contains(&hz) {
            Ok(hz)
        } else {
            Err(HvError::BadFrequency { msr, hz })
        }
    };
    Ok((
        read(abi::msr::TSC_FREQUENCY)?,
        read(abi::msr::APIC_FREQUENCY)?,
    ))
}

/// What [`plan`] decided: the Hyper-V features to set up, and which
/// kvm-base features they replace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Hyper-V features wanted (before setup failures).
    pub want: FeatureSet,
}

/// Decides the Hyper-V features from what the host offers, the off list,
/// the per-op preference and the KVM features the base already runs
/// (`kvm`, empty without KVM). Pure.
pub fn plan(
    offered: FeatureSet,
    off: FeatureSet,
    prefer: &Prefer,
    kvm: pvops_kvm::plan::FeatureSet,
) -> Plan {
    use pvops_kvm::plan::FeatureSet as K;
    let first = plan_once(offered, off, prefer, kvm);
    // One hypercall interface: once the guest OS id is set, KVM takes
    // every vmcall as a Hyper-V hypercall, so KVM's hypercall features
    // (pv-ipi, pv-unhalt, pv-sched-yield) end where Hyper-V's begin, and
    // their ops are decided again without them.
    if first.want.contains(FeatureSet::HYPERCALL) && kvm.intersects(K::HYPERCALL) {
        plan_once(offered, off, prefer, kvm - K::HYPERCALL)
    } else {
        first
    }
}

fn plan_once(
    offered: FeatureSet,
    off: FeatureSet,
    prefer: &Prefer,
    kvm: pvops_kvm::plan::FeatureSet,
) -> Plan {
    use pvops_kvm::plan::FeatureSet as K;
    let hv = offered - off;
    let mut want = FeatureSet::empty();
    let mut pick = |op: Op, hv_set: FeatureSet, kvm_has: bool| {
        let hv_offers = hv.intersects(hv_set);
        if prefer.hyperv_serves(op, hv_offers, kvm_has) {
            want |= hv & hv_set;
        }
    };
    pick(Op::Clock, FeatureSet::REF_TSC, kvm.contains(K::KVMCLOCK));
    pick(
        Op::Eoi,
        FeatureSet::APIC_MSRS | FeatureSet::APIC_ASSIST,
        kvm.contains(K::PV_EOI),
    );
    pick(Op::Ipi, FeatureSet::IPI, kvm.contains(K::PV_IPI));
    pick(
        Op::Tlb,
        FeatureSet::TLB_FLUSH,
        kvm.contains(K::PV_TLB_FLUSH),
    );
    pick(Op::Steal, FeatureSet::RUNTIME, kvm.contains(K::STEAL_TIME));
    pick(Op::Lock, FeatureSet::SPIN_WAIT, kvm.contains(K::PV_UNHALT));
    pick(Op::Timer, FeatureSet::STIMER_DIRECT, false);
    // Only Hyper-V has these.
    want |= hv & (FeatureSet::CRASH | FeatureSet::FREQUENCIES);
    // What the chosen ones need.
    if want.intersects(FeatureSet::NEEDS_HYPERCALL) {
        want |= hv & FeatureSet::HYPERCALL;
    }
    if want.intersects(FeatureSet::NEEDS_VP_INDEX) {
        want |= hv & FeatureSet::VP_INDEX;
    }
    if want.contains(FeatureSet::APIC_ASSIST) {
        want |= hv & FeatureSet::APIC_MSRS;
    }
    Plan {
        want: want.with_dependencies(),
    }
}

/// Sets up this CPU's per-CPU features of `want`; returns those that
/// work. On the boot CPU a failure turns the feature off; on another CPU
/// it only affects that CPU.
fn setup_cpu<H: Hypervisor + ?Sized>(
    h: &H,
    cpu: CpuId,
    want: FeatureSet,
    boot: bool,
) -> FeatureSet {
    let mut ok = want;
    if ok.has(Feature::VpIndex) {
        let r = vp::register(h, cpu, MAX_VPS.load(Ordering::Relaxed))
            .and_then(|_| vp::register_input(h, cpu));
        if let Err(e) = r {
            warn(format_args!(
                "hv-vpindex on cpu {}: {e}: IPIs and flushes to it take the base ops",
                cpu.0
            ));
            if boot {
                ok -= FeatureSet::VP_INDEX;
            }
        }
    }
    if ok.has(Feature::ApicAssist) {
        if let Err(e) = apic::register(h, cpu) {
            warn(format_args!(
                "hv-apic-assist on cpu {}: {e}: EOI through the MSR",
                cpu.0
            ));
            if boot {
                ok -= FeatureSet::APIC_ASSIST;
            }
        }
    }
    if ok.has(Feature::Runtime) {
        if h.fail(fault_points::RUNTIME) {
            warn(format_args!(
                "hv-runtime on cpu {}: refused (pvops.fail): base steal clock",
                cpu.0
            ));
            if boot {
                ok -= FeatureSet::RUNTIME;
            }
        } else {
            runtime::register(h, cpu);
        }
    }
    ok.with_dependencies()
}

/// The boot-CPU setup of the global features in `want` (hypercall page,
/// reference TSC page, timer, crash); returns those that work.
fn setup_global<H: Hypervisor + ?Sized>(h: &H, c: &HvCpuid, want: FeatureSet) -> FeatureSet {
    let mut ok = want;
    if ok.has(Feature::Hypercall) {
        if let Err(e) = hypercall::setup(h) {
            warn(format_args!(
                "hv-hypercall: {e}: hv-ipi, hv-tlbflush and hv-spin-wait off"
            ));
            ok -= FeatureSet::HYPERCALL;
        }
    }
    // The page also serves the timer and runtime when it is not the clock.
    let page_offered = c.privileges & abi::privilege::REFERENCE_TSC != 0;
    let need_page =
        ok.intersects(FeatureSet::REF_TSC | FeatureSet::STIMER_DIRECT | FeatureSet::RUNTIME);
    let page = page_offered && need_page && {
        match ref_tsc::setup(h) {
            Ok(()) => true,
            Err(e) => {
                warn(format_args!(
                    "hv-ref-tsc: {e}: sched_clock stays the base's"
                ));
                false
            }
        }
    };
    if !page {
        ok -= FeatureSet::REF_TSC;
    }
    let msr = c.privileges & abi::privilege::TIME_REF_COUNT != 0;
    ref_tsc::set_sources(page, msr);
    if !page && !msr {
        ok -= FeatureSet::STIMER_DIRECT | FeatureSet::RUNTIME;
    }
    if ok.has(Feature::StimerDirect) {
        if let Err(e) = stimer::probe(h) {
            warn(format_args!("hv-stimer-direct: {e}: the APIC timer"));
            ok -= FeatureSet::STIMER_DIRECT;
        }
    }
    if ok.has(Feature::Crash) && h.fail(fault_points::CRASH) {
        warn(format_args!(
            "hv-crash: refused (pvops.fail): panics reach only the console"
        ));
        ok -= FeatureSet::CRASH;
    }
    ipi::EX.store(features::ex_masks(c), Ordering::Relaxed);
    tlb::EX.store(features::ex_masks(c), Ordering::Relaxed);
    spin::RETRIES.store(c.spin_retries, Ordering::Relaxed);
    ok.with_dependencies()
}

/// The table: `base` with the entries of the features in `on` replaced.
pub fn build_table(on: FeatureSet, base: &PvOps, identity: Identity) -> PvOps {
    let mut t = *base;
    t.identity = identity;
    t.platform.hypercalls = hypercalls;
    if on.has(Feature::RefTsc) {
        // SAFETY: sched_clock_c is sched_clock behind the C ABI.
        t = unsafe { t.with_sched_clock(ref_tsc::sched_clock, ref_tsc::sched_clock_c) };
    }
    if on.has(Feature::StimerDirect) {
        t.time.timer_setup = stimer::timer_setup;
        t.time.timer_arm = stimer::timer_arm;
        t.time.timer_cancel = stimer::timer_cancel;
    }
    if on.has(Feature::ApicAssist) {
        t.irq.eoi = apic::eoi_assist;
    } else if on.has(Feature::ApicMsrs) {
        t.irq.eoi = apic::eoi_msr;
    }
    if on.has(Feature::Ipi) {
        t.irq.send_ipi = ipi::send_ipi;
    }
    if on.has(Feature::TlbFlush) {
        t.mmu.flush_tlb_others = tlb::flush_tlb_others;
    }
    if on.has(Feature::SpinWait) {
        t.lock.wait = spin::wait;
        t.lock.kick = spin::kick;
    }
    if on.has(Feature::Runtime) {
        t.time.steal_clock = runtime::steal_clock;
        t.irq.safe_halt = runtime::safe_halt;
        t.irq.halt = runtime::halt;
    }
    if on.has(Feature::Crash) {
        t.platform.report_panic = crash::report_panic;
    }
    if on.intersects(FeatureSet::VP_INDEX | FeatureSet::APIC_ASSIST | FeatureSet::RUNTIME) {
        t.cpu.init_secondary = init_secondary;
    }
    t
}

/// The KVM features of the base table still in force beside `on`.
pub fn kvm_features_kept(
    kvm: pvops_kvm::plan::FeatureSet,
    on: FeatureSet,
) -> pvops_kvm::plan::FeatureSet {
    use pvops_kvm::plan::FeatureSet as K;
    let mut k = kvm;
    if on.has(Feature::RefTsc) {
        k -= K::KVMCLOCK;
    }
    if on.intersects(FeatureSet::APIC_MSRS | FeatureSet::APIC_ASSIST) {
        k -= K::PV_EOI;
    }
    if on.has(Feature::Ipi) {
        // pv-sched-yield lives inside kvm's send_ipi.
        k -= K::PV_IPI | K::PV_SCHED_YIELD;
    }
    if on.has(Feature::TlbFlush) {
        k -= K::PV_TLB_FLUSH;
    }
    if on.has(Feature::SpinWait) {
        k -= K::PV_UNHALT;
    }
    if on.has(Feature::Runtime) {
        k -= K::STEAL_TIME;
    }
    k
}

/// The `platform.hypercalls` op: this backend's and the kvm base's.
fn hypercalls() -> Option<u64> {
    Some(hypercall::count() + pvops_kvm::hypercall::count())
}

/// Brings up the base (kvm's where KVM's leaves are there, else native's)
/// and every Hyper-V feature the host offers, the command line allows and
/// the per-op choice gives to Hyper-V, on the boot CPU; returns the table.
pub fn init(ctx: &BootContext<'_>) -> Result<PvOps, BackendError> {
    let leaf = *ctx
        .cpuid
        .find(HypervisorKind::HyperV)
        .ok_or(err("no Hyper-V signature in CPUID"))?;
    let c = HvCpuid::read(&HardwareCpuid, &leaf);
    if !c.is_tlfs() {
        return Err(BackendError {
            backend: NAME,
            reason: "the Hyper-V leaves do not offer the Hv#1 interface",
            detail: Some(i64::from(c.interface)),
        });
    }
    MAX_VPS.store(c.max_vps, Ordering::Relaxed);
    let (off, unknown_off) = features::parse_off(ctx.option("hyperv.off").unwrap_or(""));
    let prefer_text = ctx.option("hyperv.prefer").unwrap_or("");
    let prefer = Prefer::parse(prefer_text);
    pvops_native::record_boot_context(ctx);
    // Faults armed before the frequency reads; their report printed once
    // the console is up.
    let faults = pvops_core::fault::configure(ctx.option("fail"), fault_points::ALL);
    let offered = features::offered(&c);
    let freqs = (offered - off)
        .has(Feature::Frequencies)
        .then(|| read_frequencies(&Real));
    let mut hints = NativeHints::NONE;
    if let Some(Ok((tsc, apic))) = freqs {
        hints = hints.tsc(tsc, "hv-frequencies").apic_bus(apic);
    }
    let kvm_leaf = ctx.cpuid.find(HypervisorKind::Kvm).copied();
    let kvm_here = kvm_leaf.is_some();
    // What the kvm base would run, decided before it runs: whether KVM's
    // hypercalls stay usable depends on this backend's choice.
    let kvm_offered = kvm_leaf.map_or(pvops_kvm::plan::FeatureSet::empty(), |l| {
        let kc = pvops_kvm::features::KvmCpuid::read(&HardwareCpuid, &l);
        let koff = pvops_kvm::plan::OffList::parse(ctx.option("kvm.off").unwrap_or(""));
        pvops_kvm::plan::plan(&kc, &koff, true).on
    });
    let p = plan(offered, off, &prefer, kvm_offered);
    let hv_hypercalls = p.want.contains(FeatureSet::HYPERCALL);
    let (base, kvm_err) = if kvm_here {
        match pvops_kvm::init_with(ctx, hints, !hv_hypercalls) {
            Ok(t) => (t, None),
            Err(e) => (
                pvops_native::init_with(ctx, hints)
                    .map_err(|e| BackendError { backend: NAME, ..e })?,
                Some(e),
            ),
        }
    } else {
        (
            pvops_native::init_with(ctx, hints).map_err(|e| BackendError { backend: NAME, ..e })?,
            None,
        )
    };
    base::save(&base);
    // From here the console carries warnings.
    pvops_core::fault::announce(&faults, |w| warn(format_args!("{w}")));
    if let Some(e) = kvm_err {
        warn(format_args!(
            "hyperv: the kvm base failed ({e}): native underneath"
        ));
    }
    if let Some(u) = unknown_off {
        warn(format_args!(
            "hyperv: pvops.hyperv.off names no feature: {u}"
        ));
    }
    if let Some((a, b)) = prefer.unknown {
        warn(format_args!(
            "hyperv: pvops.hyperv.prefer: {} means nothing (auto, kvm, hyperv, <op>=...)",
            &prefer_text[a..b]
        ));
    }
    let mut freq_ok = false;
    match freqs {
        Some(Ok(_)) => freq_ok = true,
        Some(Err(e)) => warn(format_args!("hv-frequencies: {e}: native measures")),
        None => {}
    }
    let kvm = if kvm_here && kvm_err.is_none() {
        pvops_kvm::active()
    } else {
        pvops_kvm::plan::FeatureSet::empty()
    };
    pvops_kvm::percpu::use_best_source();
    let cpu = (base.cpu.current_cpu)();
    pvops_kvm::percpu::tag_this_cpu(cpu);
    let mut on = setup_global(&Real, &c, p.want);
    if !freq_ok {
        on -= FeatureSet::FREQUENCIES;
    }
    on = setup_cpu(&Real, cpu, on, true);
    ACTIVE.store(on.bits(), Ordering::Relaxed);
    let mut names = Features::new();
    for f in kvm_features_kept(kvm, on).features() {
        names.push(f.name());
    }
    on.push_names(&mut names);
    Ok(build_table(
        on,
        &base,
        Identity {
            platform: Platform::HyperV,
            backend: NAME,
            features: names,
            hypervisor: ctx.cpuid.primary().map(|l| l.kind),
        },
    ))
}

/// The `cpu.init_secondary` op: the base's, then this CPU's setup.
pub fn init_secondary() {
    let b = base::ops();
    (b.cpu.init_secondary)();
    let cpu = (b.cpu.current_cpu)();
    pvops_kvm::percpu::tag_this_cpu(cpu);
    setup_cpu(&Real, cpu, active(), false);
}

/// The Hyper-V backend as a detection candidate.
pub const CANDIDATE: Candidate = Candidate {
    name: NAME,
    detect,
    init,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::tests::qemu_all;
    use crate::hypercall::tests::FakeHv;
    use pvops_kvm::plan::FeatureSet as K;

    #[test]
    fn detect_bids_only_with_the_signature() {
        let ctx = |scan| BootContext::new(BootEntry::Pvh, "", scan);
        assert_eq!(detect(&ctx(pvops_core::detect::CpuidScan::empty())), None);
        assert!(PRIORITY > Priority::KVM && PRIORITY < Priority::XEN);
    }

    #[test]
    fn alone_every_offered_feature_is_wanted() {
        let p = plan(
            FeatureSet::all(),
            FeatureSet::empty(),
            &Prefer::AUTO,
            K::empty(),
        );
        assert_eq!(p.want, FeatureSet::all());
        // Off by name, with what depends on it.
        let p = plan(
            FeatureSet::all(),
            FeatureSet::HYPERCALL,
            &Prefer::AUTO,
            K::empty(),
        );
        assert_eq!(
            p.want,
            FeatureSet::all() - FeatureSet::HYPERCALL - FeatureSet::NEEDS_HYPERCALL
        );
    }

    #[test]
    fn beside_kvm_each_op_goes_where_the_table_says() {
        let kvm = K::all();
        let p = plan(FeatureSet::all(), FeatureSet::empty(), &Prefer::AUTO, kvm);
        // Hyper-V's hypercalls (IPI, flush) end KVM's: the lock op, whose
        // KVM feature is a hypercall, goes to Hyper-V too.
        assert_eq!(
            p.want,
            FeatureSet::HYPERCALL
                | FeatureSet::VP_INDEX
                | FeatureSet::FREQUENCIES
                | FeatureSet::STIMER_DIRECT
                | FeatureSet::IPI
                | FeatureSet::TLB_FLUSH
                | FeatureSet::SPIN_WAIT
                | FeatureSet::CRASH
        );
        let kept = kvm_features_kept(kvm - K::HYPERCALL, p.want);
        assert_eq!(kept, K::all() - K::HYPERCALL - K::PV_TLB_FLUSH);
        // prefer=kvm: only what KVM lacks.
        let p = plan(
            FeatureSet::all(),
            FeatureSet::empty(),
            &Prefer::parse("kvm"),
            kvm,
        );
        assert_eq!(
            p.want,
            FeatureSet::FREQUENCIES | FeatureSet::STIMER_DIRECT | FeatureSet::CRASH
        );
        // A KVM feature switched off: Hyper-V's serves that op.
        let p = plan(
            FeatureSet::all(),
            FeatureSet::empty(),
            &Prefer::AUTO,
            kvm - K::KVMCLOCK,
        );
        assert!(p.want.contains(FeatureSet::REF_TSC));
    }

    #[test]
    fn setup_with_every_step_refused_keeps_the_base() {
        let h = FakeHv::default();
        h.faults.configure(
            Some("hyperv.hypercall,hyperv.ref-tsc,hyperv.stimer,hyperv.crash,hyperv.vpindex,hyperv.apic-assist,hyperv.runtime"),
            fault_points::ALL,
        );
        warn::take_log();
        let c = qemu_all();
        let on = setup_global(&h, &c, FeatureSet::all());
        // The MSR is there as a time reference: runtime may stay until
        // its own step.
        assert_eq!(
            on,
            FeatureSet::all()
                - FeatureSet::HYPERCALL
                - FeatureSet::NEEDS_HYPERCALL
                - FeatureSet::REF_TSC
                - FeatureSet::STIMER_DIRECT
                - FeatureSet::CRASH
        );
        let on = setup_cpu(&h, CpuId(1), on, true);
        assert_eq!(on, FeatureSet::FREQUENCIES | FeatureSet::APIC_MSRS);
        let log = warn::take_log();
        assert!(log.iter().any(|l| l.contains("hv-hypercall")), "{log:?}");
        assert!(log.iter().any(|l| l.contains("hv-ref-tsc")), "{log:?}");
        assert!(
            log.iter().any(|l| l.contains("hv-vpindex on cpu 1")),
            "{log:?}"
        );
        // The table keeps every base entry but the EOI.
        let base = PvOps::NOT_INSTALLED;
        let t = build_table(on, &base, base.identity);
        assert_eq!(t.irq.send_ipi as usize, base.irq.send_ipi as usize);
        // (Copies of one pointer compare equal; a function's address taken
        // twice need not, under Miri: so the replaced entry is only
        // checked to differ from the base's.)
        assert_ne!(t.irq.eoi as usize, base.irq.eoi as usize);
        assert_eq!(t.time.timer_arm as usize, base.time.timer_arm as usize);
    }

    #[test]
    fn frequencies_are_checked() {
        let h = FakeHv::default();
        h.reads
            .borrow_mut()
            .insert(abi::msr::TSC_FREQUENCY, 2_000_000_000);
        h.reads
            .borrow_mut()
            .insert(abi::msr::APIC_FREQUENCY, 1_000_000_000);
        assert_eq!(read_frequencies(&h), Ok((2_000_000_000, 1_000_000_000)));
        h.reads.borrow_mut().insert(abi::msr::APIC_FREQUENCY, 0);
        assert_eq!(
            read_frequencies(&h),
            Err(HvError::BadFrequency {
                msr: abi::msr::APIC_FREQUENCY,
                hz: 0
            })
        );
        h.faults
            .configure(Some("hyperv.frequencies"), fault_points::ALL);
        assert!(matches!(read_frequencies(&h), Err(HvError::Refused { .. })));
    }
}
