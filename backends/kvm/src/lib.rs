//! # pvops-kvm
//!
//! The KVM backend of pvops: the native table ([`pvops_native`]) with
//! single entries replaced by KVM's paravirtual features, each chosen on
//! its own from CPUID leaf `base + 1` and the command line. A feature the
//! host does not offer, or that fails to come up, leaves the native op in
//! place.
//!
//! | feature (features line) | KVM interface | table entries |
//! |---|---|---|
//! | `kvmclock` | `MSR_KVM_SYSTEM_TIME_NEW`, `MSR_KVM_WALL_CLOCK_NEW` | `time.sched_clock`, `time.wall_clock` |
//! | `steal-time` | `MSR_KVM_STEAL_TIME` | `time.steal_clock` |
//! | `pv-eoi` | `MSR_KVM_PV_EOI_EN` | `irq.eoi` |
//! | `pv-ipi` | `KVM_HC_SEND_IPI` | `irq.send_ipi` |
//! | `pv-tlb-flush` | steal-time `preempted` byte | `mmu.flush_tlb_others` |
//! | `pv-unhalt` | `KVM_HC_KICK_CPU` | `lock.wait`, `lock.kick` |
//! | `pv-sched-yield` | `KVM_HC_SCHED_YIELD` | used inside `irq.send_ipi` |
//! | `poll-control` | `MSR_KVM_POLL_CONTROL` | none (per-CPU MSR) |
//! | `nop-io-delay` | CPUID bit only | `cpu.io_delay` |
//!
//! Per-CPU features (kvmclock, steal time, PV EOI, poll control) are set
//! up on the boot CPU by [`init`] and on every other CPU by the
//! `cpu.init_secondary` op this backend installs (native's, then this
//! CPU's MSR registrations). See [`plan::plan`] for the rules, [`percpu`] for
//! how per-CPU areas are laid out and bounded.
//!
//! ## Command line
//! `pvops.kvm.off=<names>` switches features off, by the names above,
//! comma-separated (`all` for every one), e.g.
//! `pvops.kvm.off=pv-eoi,pv-ipi`. Unknown names are reported in a warning
//! line and otherwise ignored. The ops of a feature switched off are the
//! native ones, exactly as when the host does not offer it.
//!
//! `pvops.kvm.hypercalls=auto|on|off` decides whether the features that
//! make hypercalls (`pv-ipi`, `pv-unhalt`, `pv-sched-yield`) may be used.
//! KVM executes a hypercall only on the VM exit of `vmcall`/`vmmcall`; a
//! host that runs the guest through its instruction emulator (a KVM
//! without hardware virtualisation, such as PVM with a guest that is not
//! PVM-aware) never completes one, and the vCPU would spin on the
//! instruction forever. `auto` (the default) times a short loop first and
//! leaves those features off when instructions take hundreds of cycles
//! each ([`hypercall::emulated`]); `on` skips the check, `off` never uses
//! hypercalls.
//!
//! ## Fault injection
//! `pvops.fail=<point>[:<n>],...` makes a feature's enabling MSR write act
//! as refused by the host; [`fault_points`] lists the points and their
//! outcomes.
//!
//! ## Warnings
//! Problems that do not stop the kernel print one line each,
//! `pvops: warning: <what>`, on the native UART: a pvclock record that
//! never settles (`pvops: warning: kvmclock ...`, then the native TSC
//! clock for good), a steal-time area the host never fills (steal clock 0),
//! an APIC ID beyond [`pvops_core::irq::MAX_CPUS`] (no per-CPU features on
//! that CPU), unknown CPUID feature bits, a refused hypercall.
//!
//! ## Not implemented: asynchronous page faults
//! `KVM_FEATURE_ASYNC_PF`/`ASYNC_PF_INT` let the host tell the guest "this
//! page is being swapped in, run something else" through a special #PF
//! (token in CR2, flags in a shared area) and a "page ready" interrupt.
//! Using them needs hooks pvops-core does not have yet: a way into the
//! kernel's #PF handler to recognise and swallow those faults, an
//! interrupt vector of its own with an acknowledge MSR, and a scheduler to
//! run something else meanwhile. Without those, enabling the MSR would
//! inject faults the kernel would treat as real. The feature bits are
//! still parsed and reported.
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
//!     let ops = select_and_install(&ctx, &[pvops_kvm::CANDIDATE, pvops_native::CANDIDATE], |_| {})
//!         .expect("no backend could start");
//!     let _ = ops.identity.features;
//! }
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod abi;
pub mod features;
pub mod hypercall;
pub mod io_delay;
pub mod kvmclock;
mod native;
pub mod percpu;
pub mod plan;
pub mod poll_control;
pub mod pv_eoi;
pub mod pv_ipi;
pub mod pv_sched_yield;
pub mod pv_tlb;
pub mod pv_unhalt;
pub mod registrations;
pub mod steal_time;
mod warn;

use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use pvops_core::backend::{BackendError, BootContext, Candidate, Priority};
use pvops_core::cpu::CpuId;
use pvops_core::detect::{HardwareCpuid, HypervisorKind};
use pvops_core::irq::MAX_CPUS;
use pvops_core::platform::{Identity, Platform};
use pvops_core::table::PvOps;
use pvops_native::NativeHints;

use crate::features::KvmCpuid;
use crate::hypercall::{HypercallInsn, HypercallPolicy, Hypervisor, Real};
use crate::percpu::IdSource;
use crate::plan::{build_table, plan, Feature, FeatureSet, OffList};
use crate::warn::warn;

pub use crate::pv_sched_yield::yield_to;

/// The fault-injection points of this backend, for
/// `pvops.fail=<point>[:<n>],...` ([`pvops_core::fault`]). Each makes the
/// MSR write that enables a feature on a CPU act as refused by the host;
/// use `n` counts registrations in CPU start order (1: the boot CPU).
///
/// | point | what fails | outcome |
/// |---|---|---|
/// | `kvm.kvmclock` | `MSR_KVM_SYSTEM_TIME_NEW` | boot CPU: warning, native TSC clock, `kvmclock` off; other CPU: warning, it reads the boot CPU's record |
/// | `kvm.kvmclock-unsettled` | a kvmclock read finds the record never settling | at boot: as `kvm.kvmclock`; later: warning, the TSC clock from then on (kept monotonic) |
/// | `kvm.steal-time` | `MSR_KVM_STEAL_TIME` | boot CPU: warning, steal clock 0, `steal-time` and `pv-tlb-flush` off; other CPU: warning, its steal clock reads 0 |
/// | `kvm.pv-eoi` | `MSR_KVM_PV_EOI_EN` | boot CPU: warning, APIC EOI, `pv-eoi` off; other CPU: warning, APIC EOI there |
/// | `kvm.poll-control` | `MSR_KVM_POLL_CONTROL` | warning; `poll-control` off (boot CPU), host halt polling left as it was |
pub mod fault_points {
    /// kvmclock's per-CPU registration.
    pub const KVMCLOCK: &str = "kvm.kvmclock";
    /// A kvmclock record read that never settles.
    pub const KVMCLOCK_UNSETTLED: &str = "kvm.kvmclock-unsettled";
    /// Steal time's per-CPU registration.
    pub const STEAL_TIME: &str = "kvm.steal-time";
    /// PV EOI's per-CPU registration.
    pub const PV_EOI: &str = "kvm.pv-eoi";
    /// The per-CPU halt-poll control write.
    pub const POLL_CONTROL: &str = "kvm.poll-control";
    /// Every point, as `pvops.fail=` accepts them.
    pub const ALL: &[&str] = &[
        KVMCLOCK,
        KVMCLOCK_UNSETTLED,
        STEAL_TIME,
        PV_EOI,
        POLL_CONTROL,
    ];
}

/// Arms `pvops.fail=` with this backend's points and prints what it made
/// of the option.
fn arm_faults(ctx: &BootContext<'_>) {
    let report = pvops_core::fault::configure(ctx.option("fail"), fault_points::ALL);
    pvops_core::fault::announce(&report, |w| warn(format_args!("{w}")));
}

/// The backend's name, as `pvops.backend=` names it.
pub const NAME: &str = "kvm";

/// KVM's detection priority (native bids 0).
pub const PRIORITY: Priority = Priority::KVM;

/// The features in force (a [`FeatureSet`]).
static ACTIVE: AtomicU16 = AtomicU16::new(0);
static CPUID_EAX: AtomicU32 = AtomicU32::new(0);
static CPUID_EDX: AtomicU32 = AtomicU32::new(0);

/// The features [`init`] turned on (empty before).
pub fn active() -> FeatureSet {
    FeatureSet::from_bits_retain(ACTIVE.load(Ordering::Relaxed))
}

/// Raw EAX (features) and EDX (hints) of the features leaf as [`init`]
/// read them, unknown bits included.
pub fn cpuid_bits() -> (u32, u32) {
    (
        CPUID_EAX.load(Ordering::Relaxed),
        CPUID_EDX.load(Ordering::Relaxed),
    )
}

/// Bids [`PRIORITY`] when CPUID shows the KVM signature.
pub fn detect(ctx: &BootContext<'_>) -> Option<Priority> {
    if ctx.entry == pvops_core::backend::BootEntry::XenPv {
        return None;
    }
    ctx.cpuid.find(HypervisorKind::Kvm).map(|_| PRIORITY)
}

fn err(reason: &'static str) -> BackendError {
    BackendError {
        backend: NAME,
        reason,
        detail: None,
    }
}

/// Sets up the per-CPU features of `want` on `cpu`, the CPU this runs on;
/// returns those that work. On the boot CPU a failure turns the feature
/// off; on another CPU it only affects that CPU (its ops fall back).
fn setup_cpu<H: Hypervisor + ?Sized>(
    h: &H,
    cpu: CpuId,
    want: FeatureSet,
    boot: bool,
    stable_clock: bool,
) -> FeatureSet {
    let mut ok = want;
    let areas = FeatureSet::KVMCLOCK | FeatureSet::STEAL_TIME | FeatureSet::PV_EOI;
    if !percpu::in_range(cpu) && want.intersects(areas) {
        warn(format_args!(
            "kvm: APIC ID {} is not below {MAX_CPUS}: kvmclock, steal-time and pv-eoi off on that CPU",
            cpu.0
        ));
        ok -= areas;
    }
    if want.intersects(FeatureSet::PER_CPU) {
        percpu::register_this_cpu(h, cpu);
    }
    if ok.has(Feature::Kvmclock) {
        if boot {
            if let Err(e) = kvmclock::setup_boot(h, cpu, stable_clock) {
                warn(format_args!("kvmclock {e}: using the TSC clock"));
                ok -= FeatureSet::KVMCLOCK;
            }
        } else {
            kvmclock::setup_secondary(h, cpu);
        }
    }
    if ok.has(Feature::StealTime) {
        if let Err(e) = steal_time::register(h, cpu) {
            warn(format_args!(
                "kvm steal-time on cpu {}: {e}: steal clock reads 0",
                cpu.0
            ));
            ok -= FeatureSet::STEAL_TIME;
        }
    }
    if ok.has(Feature::PvEoi) {
        if let Err(e) = pv_eoi::register(h, cpu) {
            warn(format_args!("kvm pv-eoi on cpu {}: {e}: APIC EOI", cpu.0));
            ok -= FeatureSet::PV_EOI;
        }
    }
    if ok.has(Feature::PollControl) {
        if let Err(e) = poll_control::setup(h) {
            warn(format_args!(
                "kvm poll-control on cpu {}: {e}: host halt polling left as it is",
                cpu.0
            ));
            ok -= FeatureSet::POLL_CONTROL;
        }
    }
    ok
}

/// Whether the hypercall features in `wanted` may be used under `policy`
/// (probing only when one is wanted and the policy is `auto`).
fn hypercalls_usable(policy: HypercallPolicy, wanted: FeatureSet) -> bool {
    match policy {
        HypercallPolicy::On => true,
        HypercallPolicy::Off => false,
        HypercallPolicy::Auto if !wanted.intersects(FeatureSet::HYPERCALL) => true,
        HypercallPolicy::Auto => {
            let (slow, cycles) = hypercall::emulated(|| hypercall::loop_cycles(64));
            if slow {
                warn(format_args!(
                    "kvm: instructions are emulated ({cycles} TSC cycles per loop iteration): \
                     hypercalls cannot complete, pv-ipi, pv-unhalt and pv-sched-yield off"
                ));
            }
            !slow
        }
    }
}

/// Brings up the native backend, then every KVM feature the host offers
/// and the command line allows, on the boot CPU; returns the table.
pub fn init(ctx: &BootContext<'_>) -> Result<PvOps, BackendError> {
    init_with(ctx, NativeHints::NONE, true)
}

/// [`init`] for a backend composed on this one (pvops-hyperv): `hints`
/// (what it knows better than native could measure, e.g. Hyper-V's
/// frequency MSRs) are passed to [`pvops_native::init_with`], kvmclock's
/// TSC frequency taking precedence over `hints.tsc_hz`; with
/// `allow_hypercalls` false the hypercall features stay off whatever
/// `pvops.kvm.hypercalls=` says (KVM takes every `vmcall` as a Hyper-V
/// hypercall once a Hyper-V guest OS id is set).
pub fn init_with(
    ctx: &BootContext<'_>,
    hints: NativeHints,
    allow_hypercalls: bool,
) -> Result<PvOps, BackendError> {
    let leaf = *ctx
        .cpuid
        .find(HypervisorKind::Kvm)
        .ok_or(err("no KVM signature in CPUID"))?;
    let cpuid = KvmCpuid::read(&HardwareCpuid, &leaf);
    let off = OffList::parse(ctx.option("kvm.off").unwrap_or(""));
    pvops_native::record_boot_context(ctx);
    // kvmclock's scale is the TSC frequency KVM gives the guest: native
    // then needs neither CPUID leaves nor a PIT (microvm has none).
    let tsc_hz = if plan(&cpuid, &off, true).on.has(Feature::Kvmclock) {
        kvmclock::probe_tsc_hz(&Real)
    } else {
        None
    };
    let hints = match tsc_hz {
        Some(hz) => hints.tsc(hz, "kvmclock"),
        None => hints,
    };
    let native =
        pvops_native::init_with(ctx, hints).map_err(|e| BackendError { backend: NAME, ..e })?;
    native::save(&native);
    CPUID_EAX.store(cpuid.features.bits(), Ordering::Relaxed);
    CPUID_EDX.store(cpuid.hints.bits(), Ordering::Relaxed);
    if cpuid.has_unknown() {
        warn(format_args!(
            "kvm: unknown CPUID feature bits eax={:#x} edx={:#x} (kept, unused)",
            cpuid.features.unknown(),
            cpuid.hints.unknown()
        ));
    }
    if let Some(u) = off.unknown {
        warn(format_args!(
            "kvm: pvops.kvm.off names no feature: {}",
            u.as_str()
        ));
    }
    // After native's init: its serial console carries the warnings.
    arm_faults(ctx);
    hypercall::select(HypercallInsn::detect(&HardwareCpuid));
    let policy = if allow_hypercalls {
        HypercallPolicy::parse(ctx.option("kvm.hypercalls"))
    } else {
        HypercallPolicy::Off
    };
    let hypercalls = hypercalls_usable(policy, plan(&cpuid, &off, true).on);
    let p = plan(&cpuid, &off, hypercalls);
    if pvops_core::cpu::kernel_owns_cpu_number() {
        percpu::use_source(IdSource::Kernel);
    } else if p.on.intersects(FeatureSet::PER_CPU) {
        percpu::use_source(IdSource::probe(&HardwareCpuid));
    }
    let cpu = (native.cpu.current_cpu)();
    let on = setup_cpu(&Real, cpu, p.on, true, p.stable_clock).with_dependencies();
    ACTIVE.store(on.bits(), Ordering::Relaxed);
    Ok(build_table(
        on,
        &native,
        Identity {
            platform: Platform::Kvm,
            backend: NAME,
            features: on.names(),
            // The hypervisor a kernel sees first (Hyper-V's leaves at
            // 0x40000000 when KVM offers both; KVM's otherwise).
            hypervisor: ctx.cpuid.primary().map(|l| l.kind),
        },
    ))
}

/// The `cpu.init_secondary` op: native's, then this CPU's registrations.
pub fn init_secondary() {
    let n = native::ops();
    (n.cpu.init_secondary)();
    let cpu = (n.cpu.current_cpu)();
    setup_cpu(&Real, cpu, active() & FeatureSet::PER_CPU, false, false);
}

/// The KVM backend as a detection candidate.
pub const CANDIDATE: Candidate = Candidate {
    name: NAME,
    detect,
    init,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;
    use pvops_core::detect::scan;

    #[test]
    fn detect_bids_only_with_signature() {
        let kvm = crate::features::tests::FakeCpuid {
            max: 0x4000_0001,
            eax: 0,
            edx: 0,
            vendor: b"GenuineIntel",
        };
        let ctx = |cpuid| BootContext::new(pvops_core::backend::BootEntry::Pvh, "", cpuid);
        assert_eq!(detect(&ctx(scan(&kvm))), Some(Priority(100)));
        assert_eq!(detect(&ctx(pvops_core::detect::CpuidScan::empty())), None);
    }

    #[test]
    fn host_that_fills_nothing_degrades_per_feature() {
        // The fake host accepts MSR writes but never writes the areas:
        // kvmclock and steal time are withdrawn with warnings, PV EOI and
        // poll control (which need no host write to start) stay.
        let h = FakeHv::default();
        warn::take_log();
        let want = FeatureSet::PER_CPU;
        let ok = setup_cpu(&h, CpuId(7), want, true, true);
        assert_eq!(ok, FeatureSet::PV_EOI | FeatureSet::POLL_CONTROL);
        let log = warn::take_log();
        assert!(log[0].starts_with("pvops: warning: kvmclock "), "{log:?}");
        assert!(log[1].contains("steal-time"), "{log:?}");
        let msrs = h.msrs.borrow();
        let writes = |msr| {
            msrs.iter()
                .filter(|(m, _)| *m == msr)
                .map(|(_, v)| *v)
                .collect::<std::vec::Vec<_>>()
        };
        // Registered, then withdrawn with 0.
        let st = writes(abi::MSR_KVM_SYSTEM_TIME_NEW);
        assert_eq!(st.len(), 2);
        assert_eq!(st[0] & 1, 1);
        assert_eq!(st[1], 0);
        assert_eq!(writes(abi::MSR_KVM_STEAL_TIME)[1], 0);
        assert_eq!(writes(abi::MSR_KVM_POLL_CONTROL), [1]);
        // Without steal time the preemption features go too.
        assert_eq!(
            (ok | FeatureSet::PV_TLB_FLUSH).with_dependencies(),
            FeatureSet::PV_EOI | FeatureSet::POLL_CONTROL
        );
    }

    #[test]
    fn registrations_read_back_as_written() {
        // What setup_cpu gave the host is what check_registrations later
        // compares with: the last value of each MSR; a withdrawn area
        // (steal time, never filled by this fake) is not checked.
        let h = FakeHv::default();
        warn::take_log();
        let cpu = CpuId(11);
        let ok = setup_cpu(
            &h,
            cpu,
            FeatureSet::STEAL_TIME | FeatureSet::PV_EOI,
            false,
            false,
        );
        assert_eq!(ok, FeatureSet::PV_EOI);
        let last = |msr: u32| {
            h.msrs
                .borrow()
                .iter()
                .rev()
                .find(|(m, _)| *m == msr)
                .map_or(0, |(_, v)| *v)
        };
        let held = registrations::check(cpu, last).unwrap();
        assert_eq!(held.iter().collect::<std::vec::Vec<_>>(), ["pv-eoi"]);
        // A host that forgot PV EOI (as a destination without the MSR would).
        let lost = registrations::check(cpu, |_| 0).unwrap_err();
        assert_eq!(lost.feature, "pv-eoi");
        assert_eq!(lost.written, last(abi::MSR_KVM_PV_EOI_EN));
    }

    #[test]
    fn scattered_image_gets_each_area_its_own_frame() {
        // Regression: a kernel whose image pages lie in scattered frames
        // (the bootloader crate's .bss) was handed "virtual minus one
        // offset", and KVM wrote into the kernel's stacks. Each MSR must
        // carry the translation of its own area.
        use crate::hypercall::tests::Layout;
        let h = FakeHv {
            layout: Layout::Scattered,
            ..FakeHv::default()
        };
        warn::take_log();
        let cpu = CpuId(9);
        let ok = setup_cpu(
            &h,
            cpu,
            FeatureSet::STEAL_TIME | FeatureSet::PV_EOI,
            false,
            false,
        );
        // The fake never fills steal time: withdrawn, as on any such host.
        assert_eq!(ok, FeatureSet::PV_EOI);
        let msrs = h.msrs.borrow();
        let first = |msr| msrs.iter().find(|(m, _)| *m == msr).map(|(_, v)| *v);
        let word = pv_eoi::WORDS.get(cpu).unwrap() as *const _ as u64;
        assert_eq!(
            first(abi::MSR_KVM_PV_EOI_EN),
            Some(Layout::Scattered.translate(word).unwrap() | 1)
        );
        let steal = steal_time::AREAS.get(cpu).unwrap() as *const _ as u64;
        assert_eq!(
            first(abi::MSR_KVM_STEAL_TIME),
            Some(Layout::Scattered.translate(steal).unwrap() | 1)
        );
        assert_ne!(Layout::Scattered.translate(word), Some(word));
    }

    #[test]
    fn tsc_probe_record_is_always_withdrawn() {
        // A host that never fills the record: no frequency, and the probe
        // registration is withdrawn (the host stops writing the static).
        let h = FakeHv::default();
        assert_eq!(kvmclock::probe_tsc_hz(&h), None);
        let msrs = h.msrs.borrow();
        assert_eq!(msrs.len(), 2, "{msrs:?}");
        assert_eq!(msrs[0].0, abi::MSR_KVM_SYSTEM_TIME_NEW);
        assert_eq!(msrs[0].1 & 1, 1);
        assert_eq!(msrs[1], (abi::MSR_KVM_SYSTEM_TIME_NEW, 0));
    }

    #[test]
    fn untranslatable_areas_are_never_registered() {
        use crate::hypercall::tests::Layout;
        let h = FakeHv {
            layout: Layout::Unmapped,
            ..FakeHv::default()
        };
        warn::take_log();
        let ok = setup_cpu(&h, CpuId(3), FeatureSet::PER_CPU, true, true);
        // Poll control needs no area; the three that do are off, and the
        // host was never given an address.
        assert_eq!(ok, FeatureSet::POLL_CONTROL);
        let msrs = h.msrs.borrow();
        assert!(
            msrs.iter().all(|(m, _)| *m == abi::MSR_KVM_POLL_CONTROL),
            "{msrs:?}"
        );
        let log = warn::take_log();
        assert!(
            log.iter()
                .filter(|l| l.contains("no physical address for MSR"))
                .count()
                == 3,
            "{log:?}"
        );
    }

    #[test]
    fn refused_msr_writes_turn_features_off() {
        // pvops.fail= (this fake's own table): the writes are skipped and
        // each feature falls back with a warning naming the MSR.
        let h = FakeHv::default();
        let r = h.faults.configure(
            Some("kvm.kvmclock,kvm.steal-time,kvm.pv-eoi,kvm.poll-control"),
            fault_points::ALL,
        );
        assert!(r.is_clean());
        warn::take_log();
        let ok = setup_cpu(&h, CpuId(5), FeatureSet::PER_CPU, true, true);
        assert_eq!(ok, FeatureSet::empty());
        let log = warn::take_log();
        assert_eq!(log.len(), 4, "{log:?}");
        assert_eq!(
            log[0],
            "pvops: warning: kvmclock write of MSR 0x4b564d01 refused (pvops.fail): using the TSC clock\n"
        );
        assert!(
            log[1].starts_with(
                "pvops: warning: kvm steal-time on cpu 5: write of MSR 0x4b564d03 refused"
            ),
            "{log:?}"
        );
        assert!(
            log[2].starts_with(
                "pvops: warning: kvm pv-eoi on cpu 5: write of MSR 0x4b564d04 refused"
            ),
            "{log:?}"
        );
        assert!(
            log[3].starts_with(
                "pvops: warning: kvm poll-control on cpu 5: write of MSR 0x4b564d05 refused"
            ),
            "{log:?}"
        );
        assert!(h.msrs.borrow().is_empty(), "{:?}", h.msrs.borrow());
        // Without steal time, PV TLB flush goes too.
        assert_eq!(
            (ok | FeatureSet::PV_TLB_FLUSH).with_dependencies(),
            FeatureSet::empty()
        );
    }

    #[test]
    fn a_refused_second_cpu_keeps_the_feature_elsewhere() {
        // `:2`: the second registration (the second CPU) is refused.
        let h = FakeHv::default();
        h.faults.configure(Some("kvm.pv-eoi:2"), fault_points::ALL);
        warn::take_log();
        assert_eq!(
            setup_cpu(&h, CpuId(0), FeatureSet::PV_EOI, true, false),
            FeatureSet::PV_EOI
        );
        assert_eq!(
            setup_cpu(&h, CpuId(1), FeatureSet::PV_EOI, false, false),
            FeatureSet::empty()
        );
        assert_eq!(
            setup_cpu(&h, CpuId(2), FeatureSet::PV_EOI, false, false),
            FeatureSet::PV_EOI
        );
        let log = warn::take_log();
        assert_eq!(log.len(), 1, "{log:?}");
        assert!(log[0].contains("pv-eoi on cpu 1"), "{log:?}");
        assert_eq!(h.msrs.borrow().len(), 2);
    }

    #[test]
    fn apic_id_beyond_arrays_disables_per_cpu_areas() {
        let h = FakeHv::default();
        warn::take_log();
        let ok = setup_cpu(&h, CpuId(300), FeatureSet::PER_CPU, false, false);
        assert_eq!(ok, FeatureSet::POLL_CONTROL);
        assert!(warn::take_log()[0].contains("APIC ID 300"));
        // Only the poll-control MSR was written: no area registered.
        assert_eq!(*h.msrs.borrow(), [(abi::MSR_KVM_POLL_CONTROL, 1)]);
    }
}
