//! KVM's features leaf from arbitrary CPUID words (`KvmCpuid::read`), an
//! arbitrary `pvops.kvm.off=` list (`OffList::parse`) and the feature plan
//! made from them (`plan::plan`).
//!
//! Asserts: the feature and hint words are kept bit for bit (unknown bits
//! too, and reported as unknown exactly when undocumented); a range
//! without the features leaf gives no features; the plan only turns on
//! what the host offers and the command line did not switch off; on,
//! switched off and blocked split what is offered; the REALTIME hint and
//! unusable hypercalls block what they must; features that need steal time
//! only run with it; the stable clock needs kvmclock; unknown names are
//! kept as a bounded prefix of what was given.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_core::cpu::CpuidResult;
use pvops_core::detect::{CpuidSource, HypervisorKind, HypervisorLeaf};
use pvops_fuzz::Bytes;
use pvops_kvm::features::{KvmCpuid, KvmFeatures, KvmHints};
use pvops_kvm::plan::{offered, plan, FeatureSet, OffList};
use std::cell::Cell;

struct Cpuid {
    words: [u32; 4],
    asked: Cell<Option<u32>>,
}

impl CpuidSource for Cpuid {
    fn cpuid(&self, leaf: u32, _subleaf: u32) -> CpuidResult {
        self.asked.set(Some(leaf));
        CpuidResult {
            eax: self.words[0],
            ebx: self.words[1],
            ecx: self.words[2],
            edx: self.words[3],
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let base = 0x4000_0000 + 0x100 * u32::from(input.u8());
    let max_leaf = match input.u8() % 4 {
        0 => base,
        1 => base + 1,
        _ => input.u32(),
    };
    let words = [input.u32(), input.u32(), input.u32(), input.u32()];
    let hypercalls = input.u8() & 1 != 0;
    let off_text = String::from_utf8_lossy(input.0).into_owned();

    let leaf = HypervisorLeaf {
        base,
        max_leaf,
        kind: HypervisorKind::Kvm,
    };
    let src = Cpuid {
        words,
        asked: Cell::new(None),
    };
    let k = KvmCpuid::read(&src, &leaf);
    assert_eq!(k.base, base);
    if leaf.has_leaf(1) {
        assert!(k.has_features_leaf);
        assert_eq!(src.asked.get(), Some(base + 1));
        assert_eq!(k.features.bits(), words[0], "feature bits kept as given");
        assert_eq!(k.hints.bits(), words[3], "hint bits kept as given");
    } else {
        assert!(!k.has_features_leaf);
        assert_eq!(src.asked.get(), None, "a leaf beyond the range is not read");
        assert_eq!(k.features, KvmFeatures::empty());
    }
    assert_eq!(
        k.features.unknown(),
        k.features.bits() & !KvmFeatures::all().bits()
    );
    assert_eq!(k.hints.unknown(), k.hints.bits() & !KvmHints::all().bits());
    assert_eq!(
        k.has_unknown(),
        k.features.unknown() != 0 || k.hints.unknown() != 0
    );
    let shown = k.to_string();
    assert!(shown.contains(&format!("eax={:#x}", k.features.bits())));

    let off = OffList::parse(&off_text);
    if let Some(u) = off.unknown {
        assert!(u.as_str().len() <= 24 && off_text.contains(u.as_str()));
    }
    let p = plan(&k, &off, hypercalls);
    let offered = offered(&k);
    assert!(offered.contains(p.on), "only offered features run");
    assert!(!p.on.intersects(off.set), "switched-off features stay off");
    assert_eq!(p.off_by_cmdline, offered & off.set);
    assert!((p.on & p.off_by_cmdline).is_empty() && (p.on & p.blocked).is_empty());
    assert!((p.off_by_cmdline & p.blocked).is_empty());
    assert_eq!(
        p.on | p.off_by_cmdline | p.blocked,
        offered,
        "the three split the offer"
    );
    if k.hints.contains(KvmHints::REALTIME) {
        assert!(!p
            .on
            .intersects(FeatureSet::PV_UNHALT | FeatureSet::NEEDS_STEAL_TIME));
    }
    if !hypercalls {
        assert!(!p.on.intersects(FeatureSet::HYPERCALL));
    }
    if p.on.intersects(FeatureSet::NEEDS_STEAL_TIME) {
        assert!(p.on.contains(FeatureSet::STEAL_TIME));
    }
    if p.stable_clock {
        assert!(p.on.contains(FeatureSet::KVMCLOCK));
        assert!(k.features.contains(KvmFeatures::CLOCKSOURCE_STABLE_BIT));
    }
    assert_eq!(p.on.names().len(), p.on.bits().count_ones() as usize);
});
