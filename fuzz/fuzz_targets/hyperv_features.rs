//! Hyper-V's CPUID leaves from arbitrary words (`HvCpuid::from_words`),
//! arbitrary `pvops.hyperv.off=` and `pvops.hyperv.prefer=` texts, an
//! arbitrary set of KVM features beside, and the plan made from them.
//!
//! Asserts: nothing is offered without the `Hv#1` interface; what is
//! offered keeps its dependencies (hypercalls for IPI, flush and spin
//! wait, VP indices for IPI and flush); the plan only wants what is
//! offered and not switched off, with its dependencies; Hyper-V's
//! hypercalls and KVM's hypercall features never both run (KVM takes
//! every vmcall as Hyper-V's once the guest OS id is set); the KVM
//! features kept never include one whose op Hyper-V took; an unknown
//! prefer word is reported as a slice of what was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_fuzz::Bytes;
use pvops_hyperv::choice::Prefer;
use pvops_hyperv::features::{offered, parse_off, FeatureSet, HvCpuid};
use pvops_hyperv::{kvm_features_kept, plan};
use pvops_kvm::plan::FeatureSet as K;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let tlfs = input.u8() & 1 != 0;
    let mut w = [input.u32(), input.u32(), input.u32(), input.u32(), input.u32(), input.u32()];
    if tlfs {
        w[0] = pvops_hyperv::abi::INTERFACE_HV1;
    }
    let kvm = K::from_bits_truncate(input.u32() as u16);
    let split = usize::from(input.u8());
    let rest = String::from_utf8_lossy(input.0).into_owned();
    let cut = (0..=split.min(rest.len())).rev().find(|i| rest.is_char_boundary(*i)).unwrap_or(0);
    let (off_text, prefer_text) = rest.split_at(cut);

    let c = HvCpuid::from_words(0x4000_0000, 0x4000_0005, w);
    let o = offered(&c);
    if !c.is_tlfs() {
        assert!(o.is_empty(), "no Hv#1, no features");
    }
    assert_eq!(o, o.with_dependencies(), "the offer keeps its dependencies");

    let (off, unknown) = parse_off(off_text);
    if let Some(u) = unknown {
        assert!(off_text.contains(u));
    }
    let prefer = Prefer::parse(prefer_text);
    if let Some((a, b)) = prefer.unknown {
        assert!(a <= b && b <= prefer_text.len());
        assert!(prefer_text.get(a..b).is_some(), "a slice on char boundaries");
    }
    let p = plan(o, off, &prefer, kvm);
    assert!(o.contains(p.want), "only offered features are wanted");
    assert!(!p.want.intersects(off), "switched-off features stay off");
    assert_eq!(p.want, p.want.with_dependencies());
    if p.want.intersects(FeatureSet::NEEDS_HYPERCALL) {
        assert!(p.want.contains(FeatureSet::HYPERCALL));
    }
    // What the kvm base then runs: without its hypercalls when Hyper-V's run.
    let kvm_runs = if p.want.contains(FeatureSet::HYPERCALL) {
        kvm - K::HYPERCALL
    } else {
        kvm
    };
    let kept = kvm_features_kept(kvm_runs, p.want);
    assert!(kvm_runs.contains(kept));
    if p.want.contains(FeatureSet::IPI) {
        assert!(!kept.intersects(K::PV_IPI | K::PV_SCHED_YIELD));
    }
    if p.want.contains(FeatureSet::TLB_FLUSH) {
        assert!(!kept.contains(K::PV_TLB_FLUSH));
    }
    if p.want.contains(FeatureSet::HYPERCALL) {
        assert!(!kept.intersects(K::HYPERCALL));
    }
});
