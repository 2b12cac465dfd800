//! SMP stress in every multi-CPU environment: all vCPUs hammer the PV
//! spinlock, IPIs and remote TLB flushes for a bounded time and the kernel
//! checks its invariants (see example-kernel/src/stress.rs). The counts are
//! printed for the record.

use pvops_tests::{kernel_image, skip};
use xtask::boot::{self, BootOptions};
use xtask::env::Env;
use xtask::protocol::Verdict;

/// Milliseconds each stress test runs in the guest.
const STRESS_MS: u32 = 1500;

fn stress(env: Env) {
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let kernel = kernel_image().expect("kernel image");
    let options = BootOptions {
        smp: 2,
        extra_cmdline: vec![format!("pvops.stress={STRESS_MS}")],
        ..BootOptions::default()
    };
    let b =
        boot::boot(env, kernel, &options).unwrap_or_else(|e| panic!("stress boot in {env}: {e:#}"));
    assert!(b.passed(), "{}", b.report());
    for name in ["smp_stress_lock", "smp_stress_ipi", "smp_stress_tlb"] {
        let t = b
            .outcome
            .console
            .tests
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("{env}: no `test {name}` line:\n{}", b.report()));
        assert_eq!(t.verdict, Verdict::Ok, "{env}: {name}");
    }
    for line in b
        .run
        .console
        .iter()
        .filter(|l| l.contains("pvops: info: stress"))
    {
        eprintln!("{env}: {line}");
    }
}

#[test]
fn stress_tcg() {
    stress(Env::Tcg);
}

#[test]
fn stress_kvm() {
    stress(Env::Kvm);
}

#[test]
fn stress_xen_pvh() {
    stress(Env::XenPvh);
}

#[test]
fn stress_xen_pv() {
    stress(Env::XenPv);
}
