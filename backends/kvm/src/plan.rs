//! Which paravirtual features to turn on, decided from CPUID and the
//! command line alone ([`plan`], a pure function), and the ops table that
//! results ([`build_table`], also pure): the native table with single
//! entries replaced per feature.

use pvops_core::platform::Identity;
use pvops_core::table::PvOps;

use crate::features::{KvmCpuid, KvmFeatures, KvmHints};

pvops_core::feature_set! {
    /// One paravirtual feature this backend can turn on, in the order the
    /// features line lists them.
    pub enum Feature;
    /// A set of [`Feature`]s (bit n is `Feature::ALL[n]`).
    pub struct FeatureSet: u16 {
        /// `kvmclock`: sched_clock and wall clock from the pvclock records.
        Kvmclock = "kvmclock" => KVMCLOCK,
        /// `steal-time`: steal_clock, and the `preempted` flags.
        StealTime = "steal-time" => STEAL_TIME,
        /// `pv-eoi`: the EOI op skips the APIC write when the host allows.
        PvEoi = "pv-eoi" => PV_EOI,
        /// `pv-ipi`: IPIs to sets of CPUs in one hypercall.
        PvIpi = "pv-ipi" => PV_IPI,
        /// `pv-tlb-flush`: remote flushes skip preempted vCPUs.
        PvTlbFlush = "pv-tlb-flush" => PV_TLB_FLUSH,
        /// `pv-unhalt`: lock wait halts, lock kick is a hypercall.
        PvUnhalt = "pv-unhalt" => PV_UNHALT,
        /// `pv-sched-yield`: an IPI sender yields to a preempted target.
        PvSchedYield = "pv-sched-yield" => PV_SCHED_YIELD,
        /// `poll-control`: host-side halt polling set explicitly.
        PollControl = "poll-control" => POLL_CONTROL,
        /// `nop-io-delay`: io_delay does nothing.
        NopIoDelay = "nop-io-delay" => NOP_IO_DELAY,
    }
}

impl FeatureSet {
    /// Features with state in per-CPU areas or MSRs, set up on every CPU.
    pub const PER_CPU: FeatureSet = FeatureSet::KVMCLOCK
        .union(FeatureSet::STEAL_TIME)
        .union(FeatureSet::PV_EOI)
        .union(FeatureSet::POLL_CONTROL);
    /// Features that make hypercalls.
    pub const HYPERCALL: FeatureSet = FeatureSet::PV_IPI
        .union(FeatureSet::PV_UNHALT)
        .union(FeatureSet::PV_SCHED_YIELD);
    /// Features that read other vCPUs' `preempted` flags (steal time).
    pub const NEEDS_STEAL_TIME: FeatureSet =
        FeatureSet::PV_TLB_FLUSH.union(FeatureSet::PV_SCHED_YIELD);

    /// Drops features whose prerequisites are gone (steal time for the
    /// preemption-aware ones).
    pub fn with_dependencies(self) -> FeatureSet {
        if self.contains(FeatureSet::STEAL_TIME) {
            self
        } else {
            self - FeatureSet::NEEDS_STEAL_TIME
        }
    }
}

/// `pvops.kvm.off=<names>`: features switched off on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OffList {
    /// The features named.
    pub set: FeatureSet,
    /// Whether a word named no feature (the first such word is reported).
    pub unknown: Option<UnknownName>,
}

/// A name `pvops.kvm.off=` did not know (kept in a fixed buffer, cut at
/// 24 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownName {
    buf: [u8; 24],
    len: usize,
}

impl UnknownName {
    fn new(s: &str) -> Self {
        let mut buf = [0u8; 24];
        let mut len = s.len().min(buf.len());
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        Self { buf, len }
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl OffList {
    /// Parses a comma-separated list of feature names; `all` names every
    /// feature, empty words are ignored.
    pub fn parse(list: &str) -> Self {
        let (set, unknown) = FeatureSet::parse_off(list);
        Self {
            set,
            unknown: unknown.map(UnknownName::new),
        }
    }
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Features to set up.
    pub on: FeatureSet,
    /// Features the host offers that the command line switched off.
    pub off_by_cmdline: FeatureSet,
    /// Features the host offers that are not used for another reason
    /// (a missing prerequisite, or the REALTIME hint).
    pub blocked: FeatureSet,
    /// Whether the host may set the pvclock TSC-stable flag.
    pub stable_clock: bool,
}

/// Decides the features from CPUID and the command line:
///
/// | feature | needs |
/// |---|---|
/// | `kvmclock` | `CLOCKSOURCE2` (the old MSRs 0x11/0x12 are not used) |
/// | `steal-time` | `STEAL_TIME` |
/// | `pv-eoi` | `PV_EOI` |
/// | `pv-ipi` | `PV_SEND_IPI` |
/// | `pv-tlb-flush` | `PV_TLB_FLUSH`, `steal-time` on, no `REALTIME` hint |
/// | `pv-unhalt` | `PV_UNHALT`, no `REALTIME` hint |
/// | `pv-sched-yield` | `PV_SCHED_YIELD`, `steal-time` on, no `REALTIME` hint |
/// | `poll-control` | `POLL_CONTROL` |
/// | `nop-io-delay` | `NOP_IO_DELAY` |
///
/// Which CPUID feature bit offers which backend feature.
pub const OFFERED_BY: [(KvmFeatures, FeatureSet); 9] = [
    (KvmFeatures::CLOCKSOURCE2, FeatureSet::KVMCLOCK),
    (KvmFeatures::STEAL_TIME, FeatureSet::STEAL_TIME),
    (KvmFeatures::PV_EOI, FeatureSet::PV_EOI),
    (KvmFeatures::PV_SEND_IPI, FeatureSet::PV_IPI),
    (KvmFeatures::PV_TLB_FLUSH, FeatureSet::PV_TLB_FLUSH),
    (KvmFeatures::PV_UNHALT, FeatureSet::PV_UNHALT),
    (KvmFeatures::PV_SCHED_YIELD, FeatureSet::PV_SCHED_YIELD),
    (KvmFeatures::POLL_CONTROL, FeatureSet::POLL_CONTROL),
    (KvmFeatures::NOP_IO_DELAY, FeatureSet::NOP_IO_DELAY),
];

/// The backend features the host's CPUID bits offer (before the command
/// line, hints and dependencies have their say).
pub fn offered(cpuid: &KvmCpuid) -> FeatureSet {
    OFFERED_BY
        .iter()
        .filter(|(bit, _)| cpuid.features.contains(*bit))
        .fold(FeatureSet::empty(), |acc, (_, set)| acc | *set)
}

/// With the REALTIME hint vCPUs are never preempted for long, so waiting
/// in the host and preemption tricks only cost (Linux decides the same).
/// Without usable hypercalls (`hypercalls` false) `pv-ipi`, `pv-unhalt`
/// and `pv-sched-yield` are blocked.
pub fn plan(cpuid: &KvmCpuid, off: &OffList, hypercalls: bool) -> Plan {
    let has = |f| cpuid.features.contains(f);
    let offered = offered(cpuid);
    let off_by_cmdline = offered & off.set;
    let mut on = offered - off.set;
    if cpuid.hints.contains(KvmHints::REALTIME) {
        on -= FeatureSet::PV_UNHALT | FeatureSet::NEEDS_STEAL_TIME;
    }
    if !hypercalls {
        on -= FeatureSet::HYPERCALL;
    }
    on = on.with_dependencies();
    Plan {
        on,
        off_by_cmdline,
        blocked: offered - off.set - on,
        stable_clock: on.has(Feature::Kvmclock) && has(KvmFeatures::CLOCKSOURCE_STABLE_BIT),
    }
}

/// The KVM table: `native` with the entries each feature of `on`
/// improves replaced.
///
/// | feature | entries |
/// |---|---|
/// | `kvmclock` | `time.sched_clock`, `time.wall_clock` |
/// | `steal-time` | `time.steal_clock` |
/// | `pv-eoi` | `irq.eoi` |
/// | `pv-ipi` | `irq.send_ipi` |
/// | `pv-sched-yield` | `irq.send_ipi` (native send, then the yield) when `pv-ipi` is off |
/// | `pv-tlb-flush` | `mmu.flush_tlb_others` |
/// | `pv-unhalt` | `lock.wait`, `lock.kick` |
/// | `poll-control` | none (an MSR write per CPU) |
/// | `nop-io-delay` | `cpu.io_delay` |
/// | any of kvmclock, steal-time, pv-eoi, poll-control | `cpu.init_secondary` |
/// | always | `platform.hypercalls` (the backend's count) |
pub fn build_table(on: FeatureSet, native: &PvOps, identity: Identity) -> PvOps {
    let mut t = *native;
    t.identity = identity;
    // Whatever is on: a count of 0 says no hypercall was made.
    t.platform.hypercalls = hypercalls;
    // Whatever is on: only what was registered is checked.
    t.platform.check_registrations = crate::registrations::check_this_cpu;
    if on.has(Feature::Kvmclock) {
        // SAFETY: sched_clock_c is sched_clock behind the C ABI.
        t = unsafe {
            t.with_sched_clock(crate::kvmclock::sched_clock, crate::kvmclock::sched_clock_c)
        };
        t.time.wall_clock = crate::kvmclock::wall_clock;
        t.platform.take_paused = crate::kvmclock::take_paused;
    }
    if on.has(Feature::StealTime) {
        t.time.steal_clock = crate::steal_time::steal_clock;
    }
    if on.has(Feature::PvEoi) {
        t.irq.eoi = crate::pv_eoi::eoi;
    }
    if on.has(Feature::PvIpi) {
        t.irq.send_ipi = crate::pv_ipi::send_ipi;
    } else if on.has(Feature::PvSchedYield) {
        t.irq.send_ipi = crate::pv_sched_yield::send_ipi_then_yield;
    }
    if on.has(Feature::PvTlbFlush) {
        t.mmu.flush_tlb_others = crate::pv_tlb::flush_tlb_others;
    }
    if on.has(Feature::PvUnhalt) {
        t.lock.wait = crate::pv_unhalt::wait;
        t.lock.kick = crate::pv_unhalt::kick;
    }
    if on.has(Feature::NopIoDelay) {
        t.cpu.io_delay = crate::io_delay::nop_io_delay;
    }
    if on.intersects(FeatureSet::PER_CPU) {
        t.cpu.init_secondary = crate::init_secondary;
    }
    t
}

/// The `platform.hypercalls` op: hypercalls this backend made (all CPUs),
/// so a kernel can check that a PV path was taken.
fn hypercalls() -> Option<u64> {
    Some(crate::hypercall::count())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::platform::Platform;
    use std::string::ToString;

    fn cpuid(eax: u32, edx: u32) -> KvmCpuid {
        KvmCpuid {
            base: 0x4000_0000,
            has_features_leaf: true,
            features: KvmFeatures::from_bits_retain(eax),
            hints: KvmHints::from_bits_retain(edx),
        }
    }

    const QEMU_DEFAULT: u32 = 0x0100_007b;
    const QEMU_PV: u32 = 0x0100_2afb;

    #[test]
    fn names_and_order() {
        let names: std::vec::Vec<_> = Feature::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(
            names.join(","),
            "kvmclock,steal-time,pv-eoi,pv-ipi,pv-tlb-flush,pv-unhalt,pv-sched-yield,poll-control,nop-io-delay"
        );
        for f in Feature::ALL {
            assert_eq!(Feature::from_name(f.name()), Some(f));
            assert_eq!(f.set().bits().count_ones(), 1);
        }
        assert_eq!(FeatureSet::all().features().count(), 9);
        assert_eq!(FeatureSet::all().names().to_string(), names.join(","));
    }

    #[test]
    fn off_list_parsing() {
        let o = OffList::parse("pv-eoi, pv-ipi,,kvmclock");
        assert_eq!(
            o.set,
            FeatureSet::PV_EOI | FeatureSet::PV_IPI | FeatureSet::KVMCLOCK
        );
        assert_eq!(o.unknown, None);
        let o = OffList::parse("pv-eoi,bogus,other");
        assert_eq!(o.set, FeatureSet::PV_EOI);
        assert_eq!(o.unknown.unwrap().as_str(), "bogus");
        assert_eq!(OffList::parse("all").set, FeatureSet::all());
        assert_eq!(OffList::parse("").set, FeatureSet::empty());
        let long = OffList::parse("ééééééééééééééééééééééééé");
        assert!(long.unknown.unwrap().as_str().len() <= 24);
    }

    #[test]
    fn qemu_default_features() {
        let p = plan(&cpuid(QEMU_DEFAULT, 0), &OffList::default(), true);
        assert_eq!(
            p.on.names().to_string(),
            "kvmclock,steal-time,pv-eoi,nop-io-delay"
        );
        assert!(p.stable_clock);
        assert_eq!(p.blocked, FeatureSet::empty());
    }

    #[test]
    fn qemu_pv_features() {
        let p = plan(&cpuid(QEMU_PV, 0), &OffList::default(), true);
        assert_eq!(
            p.on.names().to_string(),
            "kvmclock,steal-time,pv-eoi,pv-ipi,pv-tlb-flush,pv-unhalt,pv-sched-yield,nop-io-delay"
        );
    }

    #[test]
    fn no_features_leaf_means_native() {
        let p = plan(&KvmCpuid::default(), &OffList::default(), true);
        assert_eq!(p.on, FeatureSet::empty());
        assert!(!p.stable_clock);
        assert_eq!(p.on.names().to_string(), "-");
    }

    #[test]
    fn command_line_switches_single_features_off() {
        let p = plan(&cpuid(QEMU_PV, 0), &OffList::parse("pv-eoi,pv-ipi"), true);
        assert!(!p.on.has(Feature::PvEoi) && !p.on.has(Feature::PvIpi));
        assert!(p.on.has(Feature::Kvmclock) && p.on.has(Feature::PvTlbFlush));
        assert_eq!(p.off_by_cmdline, FeatureSet::PV_EOI | FeatureSet::PV_IPI);
        // Turning off kvmclock also drops the stable-clock use.
        let p = plan(&cpuid(QEMU_PV, 0), &OffList::parse("kvmclock"), true);
        assert!(!p.stable_clock);
        // Switching off something the host does not offer is no error.
        let p = plan(&cpuid(QEMU_DEFAULT, 0), &OffList::parse("pv-ipi"), true);
        assert_eq!(p.off_by_cmdline, FeatureSet::empty());
    }

    #[test]
    fn steal_time_off_drops_preemption_features() {
        let p = plan(&cpuid(QEMU_PV, 0), &OffList::parse("steal-time"), true);
        assert!(!p.on.has(Feature::PvTlbFlush));
        assert!(!p.on.has(Feature::PvSchedYield));
        assert!(p.on.has(Feature::PvUnhalt));
        assert_eq!(
            p.blocked,
            FeatureSet::PV_TLB_FLUSH | FeatureSet::PV_SCHED_YIELD
        );
        // The host not offering steal time has the same effect.
        let p = plan(&cpuid(QEMU_PV & !(1 << 5), 0), &OffList::default(), true);
        assert!(!p.on.has(Feature::PvTlbFlush));
    }

    #[test]
    fn realtime_hint_blocks_preemption_features() {
        let p = plan(&cpuid(QEMU_PV, 1), &OffList::default(), true);
        assert_eq!(
            p.on.names().to_string(),
            "kvmclock,steal-time,pv-eoi,pv-ipi,nop-io-delay"
        );
        assert_eq!(
            p.blocked,
            FeatureSet::PV_UNHALT | FeatureSet::PV_TLB_FLUSH | FeatureSet::PV_SCHED_YIELD
        );
    }

    #[test]
    fn old_clocksource_alone_is_not_used() {
        let p = plan(&cpuid(1, 0), &OffList::default(), true);
        assert!(!p.on.has(Feature::Kvmclock));
    }

    #[test]
    fn no_hypercalls_blocks_hypercall_features() {
        let p = plan(&cpuid(QEMU_PV, 0), &OffList::default(), false);
        assert_eq!(
            p.on.names().to_string(),
            "kvmclock,steal-time,pv-eoi,pv-tlb-flush,nop-io-delay"
        );
        assert_eq!(p.blocked, FeatureSet::HYPERCALL);
    }

    #[test]
    fn poll_control_and_unknown_bits() {
        let p = plan(&cpuid((1 << 12) | (1 << 30), 0), &OffList::default(), true);
        assert_eq!(p.on, FeatureSet::POLL_CONTROL);
    }

    fn same(a: usize, b: usize) -> bool {
        a == b
    }

    fn identity(on: FeatureSet) -> Identity {
        Identity {
            platform: Platform::Kvm,
            backend: crate::NAME,
            features: on.names(),
            hypervisor: None,
        }
    }

    /// Which entries differ from the native table, by name.
    fn replaced(on: FeatureSet) -> std::vec::Vec<&'static str> {
        let n = PvOps::NOT_INSTALLED;
        let t = build_table(on, &n, identity(on));
        let mut v = std::vec::Vec::new();
        let mut check = |name, a: usize, b: usize| {
            if !same(a, b) {
                v.push(name)
            }
        };
        check(
            "cpu.io_delay",
            t.cpu.io_delay as usize,
            n.cpu.io_delay as usize,
        );
        check(
            "cpu.init_secondary",
            t.cpu.init_secondary as usize,
            n.cpu.init_secondary as usize,
        );
        check(
            "cpu.current_cpu",
            t.cpu.current_cpu as usize,
            n.cpu.current_cpu as usize,
        );
        check(
            "cpu.write_msr",
            t.cpu.write_msr as usize,
            n.cpu.write_msr as usize,
        );
        check("irq.eoi", t.irq.eoi as usize, n.irq.eoi as usize);
        check(
            "irq.send_ipi",
            t.irq.send_ipi as usize,
            n.irq.send_ipi as usize,
        );
        check(
            "irq.safe_halt",
            t.irq.safe_halt as usize,
            n.irq.safe_halt as usize,
        );
        check(
            "irq.disable",
            t.irq.disable as usize,
            n.irq.disable as usize,
        );
        check(
            "mmu.flush_tlb_others",
            t.mmu.flush_tlb_others as usize,
            n.mmu.flush_tlb_others as usize,
        );
        check(
            "mmu.set_entry",
            t.mmu.set_entry as usize,
            n.mmu.set_entry as usize,
        );
        check(
            "time.sched_clock",
            t.time.sched_clock as usize,
            n.time.sched_clock as usize,
        );
        check(
            "time.wall_clock",
            t.time.wall_clock as usize,
            n.time.wall_clock as usize,
        );
        check(
            "time.steal_clock",
            t.time.steal_clock as usize,
            n.time.steal_clock as usize,
        );
        check(
            "time.timer_arm",
            t.time.timer_arm as usize,
            n.time.timer_arm as usize,
        );
        check("lock.wait", t.lock.wait as usize, n.lock.wait as usize);
        check("lock.kick", t.lock.kick as usize, n.lock.kick as usize);
        check(
            "platform.console_write",
            t.platform.console_write as usize,
            n.platform.console_write as usize,
        );
        v
    }

    #[test]
    fn table_entries_per_feature() {
        assert!(replaced(FeatureSet::empty()).is_empty());
        assert_eq!(
            replaced(FeatureSet::KVMCLOCK),
            ["cpu.init_secondary", "time.sched_clock", "time.wall_clock"]
        );
        assert_eq!(
            replaced(FeatureSet::STEAL_TIME),
            ["cpu.init_secondary", "time.steal_clock"]
        );
        assert_eq!(
            replaced(FeatureSet::PV_EOI),
            ["cpu.init_secondary", "irq.eoi"]
        );
        assert_eq!(replaced(FeatureSet::PV_IPI), ["irq.send_ipi"]);
        assert_eq!(replaced(FeatureSet::PV_SCHED_YIELD), ["irq.send_ipi"]);
        assert_eq!(replaced(FeatureSet::PV_TLB_FLUSH), ["mmu.flush_tlb_others"]);
        assert_eq!(replaced(FeatureSet::PV_UNHALT), ["lock.wait", "lock.kick"]);
        assert_eq!(replaced(FeatureSet::POLL_CONTROL), ["cpu.init_secondary"]);
        assert_eq!(replaced(FeatureSet::NOP_IO_DELAY), ["cpu.io_delay"]);
        assert_eq!(replaced(FeatureSet::all()).len(), 10);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "compares function addresses, which Miri makes unique per use"
    )]
    fn ipi_entry_depends_on_pv_ipi_and_yield() {
        let n = PvOps::NOT_INSTALLED;
        let both = FeatureSet::PV_IPI | FeatureSet::PV_SCHED_YIELD;
        let t = build_table(both, &n, identity(both));
        assert!(same(
            t.irq.send_ipi as usize,
            crate::pv_ipi::send_ipi as *const () as usize
        ));
        let t = build_table(FeatureSet::PV_SCHED_YIELD, &n, identity(both));
        assert!(same(
            t.irq.send_ipi as usize,
            crate::pv_sched_yield::send_ipi_then_yield as *const () as usize
        ));
        let t = build_table(FeatureSet::PV_EOI, &n, identity(FeatureSet::PV_EOI));
        assert_eq!(t.identity.features.to_string(), "pv-eoi");
        assert_eq!(t.identity.platform, Platform::Kvm);
    }

    #[test]
    fn the_backend_reports_its_hypercall_count() {
        let n = PvOps::NOT_INSTALLED;
        for on in [FeatureSet::empty(), FeatureSet::PV_IPI] {
            let t = build_table(on, &n, identity(on));
            assert_eq!((t.platform.hypercalls)(), Some(crate::hypercall::count()));
        }
    }
}
