//! Which interface serves each op where a host offers both Hyper-V's and
//! KVM's (QEMU's `hv-*` flags without `kvm=off`): decided per op from what
//! each costs, and overridable with `pvops.hyperv.prefer=`.
//!
//! | op | Hyper-V | KVM | auto takes | why (exits and hypercalls per op, measured: README's bench table) |
//! |---|---|---|---|---|
//! | `clock` (sched_clock) | reference TSC page | kvmclock | KVM | both 0 exits; kvmclock also gives the wall clock and its call sites are patched direct |
//! | `eoi` | VP assist page, EOI MSR | PV EOI | KVM | both 0 exits when the host allows (KVM runs the assist page on its PV EOI) |
//! | `ipi` | one hypercall for any VP set | one hypercall per 128-APIC-ID window | Hyper-V | 1 hypercall either way here; Hyper-V's stays 1 for any spread of targets |
//! | `tlb` | one hypercall, no IPI | IPIs to running vCPUs, preempted ones skipped | Hyper-V | 1 hypercall against an IPI (an exit) per running target |
//! | `steal` | VP runtime MSR (2 reads) | shared steal-time record | KVM | 0 exits against 1-2 |
//! | `lock` | notify after N spins (a hypercall) | halt, kick by hypercall | KVM | the waiter sleeps instead of spinning |
//! | `timer` | synthetic timer, direct mode | none (native APIC timer) | Hyper-V | 1 MSR write per arm against 2 APIC writes |
//!
//! Ops only one interface has (crash reporting, the frequency MSRs) are
//! always Hyper-V's where offered.

/// Who serves an op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// The table above.
    Auto,
    /// KVM's feature where KVM offers one.
    Kvm,
    /// Hyper-V's feature where Hyper-V offers one.
    HyperV,
}

impl Who {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Who::Auto),
            "kvm" => Some(Who::Kvm),
            "hyperv" => Some(Who::HyperV),
            _ => None,
        }
    }
}

/// The ops with a choice, in the order of the table above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `time.sched_clock`.
    Clock,
    /// `irq.eoi`.
    Eoi,
    /// `irq.send_ipi`.
    Ipi,
    /// `mmu.flush_tlb_others`.
    Tlb,
    /// `time.steal_clock`.
    Steal,
    /// `lock.wait`.
    Lock,
    /// `time.timer_*`.
    Timer,
}

impl Op {
    /// Every op, in table order.
    pub const ALL: [Op; 7] = [
        Op::Clock,
        Op::Eoi,
        Op::Ipi,
        Op::Tlb,
        Op::Steal,
        Op::Lock,
        Op::Timer,
    ];

    /// The name `pvops.hyperv.prefer=` uses.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Clock => "clock",
            Op::Eoi => "eoi",
            Op::Ipi => "ipi",
            Op::Tlb => "tlb",
            Op::Steal => "steal",
            Op::Lock => "lock",
            Op::Timer => "timer",
        }
    }

    /// What `auto` takes where both interfaces serve the op.
    pub const fn auto(self) -> Who {
        match self {
            Op::Clock | Op::Eoi | Op::Steal | Op::Lock => Who::Kvm,
            Op::Ipi | Op::Tlb | Op::Timer => Who::HyperV,
        }
    }
}

/// `pvops.hyperv.prefer=`: a default (`auto`, `kvm`, `hyperv`) and/or
/// per-op words (`ipi=kvm`), comma-separated, later words winning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefer {
    per_op: [Who; 7],
    /// The first word that meant nothing, for a warning.
    pub unknown: Option<(usize, usize)>,
}

impl Prefer {
    /// Everything `auto`.
    pub const AUTO: Prefer = Prefer {
        per_op: [Who::Auto; 7],
        unknown: None,
    };

    /// Parses the option's value.
    pub fn parse(value: &str) -> Self {
        let mut p = Prefer::AUTO;
        let mut at = 0;
        for word in value.split(',') {
            let start = at + (word.len() - word.trim_start().len());
            at += word.len() + 1;
            let word = word.trim();
            if word.is_empty() {
                continue;
            }
            let ok = match word.split_once('=') {
                None => Who::parse(word).map(|w| p.per_op = [w; 7]).is_some(),
                Some((op, who)) => {
                    match (Op::ALL.iter().position(|o| o.name() == op), Who::parse(who)) {
                        (Some(i), Some(w)) => {
                            p.per_op[i] = w;
                            true
                        }
                        _ => false,
                    }
                }
            };
            if !ok && p.unknown.is_none() {
                p.unknown = Some((start, start + word.len()));
            }
        }
        p
    }

    /// Whether Hyper-V serves `op`, given which interfaces offer it.
    pub fn hyperv_serves(&self, op: Op, hv_offers: bool, kvm_offers: bool) -> bool {
        match (hv_offers, kvm_offers) {
            (false, _) => false,
            (true, false) => true,
            (true, true) => {
                let who = match self.per_op[op as usize] {
                    Who::Auto => op.auto(),
                    w => w,
                };
                who == Who::HyperV
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_table() {
        let p = Prefer::AUTO;
        let hv: std::vec::Vec<_> = Op::ALL
            .into_iter()
            .filter(|o| p.hyperv_serves(*o, true, true))
            .collect();
        assert_eq!(hv, [Op::Ipi, Op::Tlb, Op::Timer]);
        // An op only one side offers goes to it.
        assert!(p.hyperv_serves(Op::Clock, true, false));
        assert!(!p.hyperv_serves(Op::Ipi, false, true));
    }

    #[test]
    fn overrides() {
        let p = Prefer::parse("kvm");
        assert!(!p.hyperv_serves(Op::Ipi, true, true));
        assert!(p.hyperv_serves(Op::Timer, true, false));
        let p = Prefer::parse("hyperv,steal=kvm");
        assert!(p.hyperv_serves(Op::Clock, true, true));
        assert!(!p.hyperv_serves(Op::Steal, true, true));
        let p = Prefer::parse("auto, clock=hyperv ,bogus,ipi=nobody");
        assert!(p.hyperv_serves(Op::Clock, true, true));
        let v = "auto, clock=hyperv ,bogus,ipi=nobody";
        let (a, b) = p.unknown.unwrap();
        assert_eq!(&v[a..b], "bogus");
    }
}
