//! Live migration on this machine: the example kernel moves from one QEMU
//! to another (QMP `migrate` to a second QEMU started with `-incoming`) in
//! the middle of its self-tests, under TCG, and finishes them on the
//! destination. (On the nested KVM the same run is one more inner run of
//! the outer boot `boot.rs`'s `boot_kvm_nested` does.)

use pvops_tests::{kernel_image, skip};
use xtask::boot::BootOptions;
use xtask::env::Env;
use xtask::migrate;

#[test]
fn live_migration_tcg() {
    let env = Env::Tcg;
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let kernel = kernel_image().expect("kernel image");
    let options = BootOptions {
        smp: env.test_smp(),
        ..BootOptions::default()
    };
    let plan = migrate::plan(env, kernel, &options).expect("plan");
    let m = migrate::run_host(&plan, false).unwrap_or_else(|e| panic!("{e:#}"));
    eprintln!("{}", m.verdict());
    assert!(m.boot.passed(), "{}", migrate::report(&m));
    // Both halves are there: the source up to the move, the destination
    // from the migration test on, each with protocol lines.
    assert!(m.source.iter().any(|l| l.starts_with("test ")));
    assert!(m
        .destination
        .iter()
        .any(|l| l == "test live_migration ... ok"));
    let stats = m.stats.as_ref().expect("QMP stats");
    assert_eq!(stats.status, "completed");
}

/// A destination that cannot take the guest (another memory size, so
/// QEMU refuses the incoming RAM): QMP reports the migration failed, the
/// harness stops both QEMUs at once, and the run fails with that reason
/// and with the destination never printing, never by waiting out the
/// kernel's bound.
#[test]
fn failed_migration_fails_loudly_and_fast() {
    let env = Env::Tcg;
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let kernel = kernel_image().expect("kernel image");
    let options = BootOptions {
        smp: env.test_smp(),
        ..BootOptions::default()
    };
    let plan = migrate::plan(env, kernel, &options).expect("plan");
    let start = std::time::Instant::now();
    let m = migrate::run_host_with(&plan, false, &["-m".into(), "128M".into()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let report = migrate::report(&m);
    assert!(!m.boot.passed(), "{report}");
    let why = m
        .stats
        .as_ref()
        .expect_err("QMP cannot have said completed");
    assert!(why.contains("fail"), "{why}");
    assert!(report.contains("could not migrate"), "{report}");
    assert!(report.contains("never printed"), "{report}");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(30),
        "took {:?}: {report}",
        start.elapsed()
    );
    eprintln!("{}: {why}", m.verdict());
}
