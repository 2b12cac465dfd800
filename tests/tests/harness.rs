//! Tests of the harness itself against stand-in kernels (see
//! `pvops_tests::fixture`): real QEMU runs whose endings are known, so the
//! verdicts for a pass, a triple fault, a non-zero exit code and a hang are
//! checked end to end. They need QEMU, not the example kernel.

use std::time::Duration;

use pvops_tests::fixture::{self, Ending};
use pvops_tests::skip;
use xtask::boot::{self, BootOptions};
use xtask::env::Env;
use xtask::protocol::{Problem, Termination};
use xtask::provision;
use xtask::qemu::{KillReason, Killed};

/// What a passing example kernel prints.
const PASSING: &str = "pvops: platform=native backend=native features=-\n\
test a ... ok\ntest b ... ok\ntest c ... ok\ntest d ... ok\ntest e ... ok\n\
test result: ok. 5 passed; 0 failed\npvops: exit code=0\n";

/// Whether `env` can run here; skips (or fails under CI) if not.
fn available(env: Env) -> bool {
    match provision::unavailable(env) {
        None => true,
        Some(why) => {
            skip(&format!("harness test in {env}: {why}"));
            false
        }
    }
}

fn options(timeout_secs: u64) -> BootOptions {
    BootOptions {
        timeout: Some(Duration::from_secs(timeout_secs)),
        ..BootOptions::default()
    }
}

#[test]
fn passing_stand_in_passes_under_tcg() {
    if !available(Env::Tcg) {
        return;
    }
    let kernel = fixture::write("pass-tcg", PASSING, Ending::DebugExit(0));
    let b = boot::boot(Env::Tcg, &kernel, &options(60)).unwrap();
    assert!(b.passed(), "{}", b.report());
    assert_eq!(b.outcome.termination, Termination::Exited(1));
    assert_eq!(b.outcome.console.tests.len(), 5);
    assert_eq!(b.image().path, kernel.canonicalize().unwrap());
}

#[test]
fn passing_stand_in_passes_under_kvm_hidden() {
    if !available(Env::KvmHidden) {
        return;
    }
    let kernel = fixture::write("pass-kvm-hidden", PASSING, Ending::DebugExit(0));
    let b = boot::boot(Env::KvmHidden, &kernel, &options(120)).unwrap();
    assert!(b.passed(), "{}", b.report());
}

#[test]
fn triple_fault_fails_even_after_a_perfect_console() {
    if !available(Env::Tcg) {
        return;
    }
    let kernel = fixture::write("triple-fault", PASSING, Ending::TripleFault);
    let b = boot::boot(Env::Tcg, &kernel, &options(60)).unwrap();
    assert_eq!(
        b.outcome.termination,
        Termination::Exited(0),
        "{}",
        b.report()
    );
    assert!(
        matches!(b.problems.as_slice(), [Problem::WrongTermination { .. }]),
        "{}",
        b.report()
    );
}

#[test]
fn nonzero_exit_code_fails() {
    if !available(Env::Tcg) {
        return;
    }
    let text = PASSING.replace("exit code=0", "exit code=3");
    let kernel = fixture::write("exit-3", &text, Ending::DebugExit(3));
    let b = boot::boot(Env::Tcg, &kernel, &options(60)).unwrap();
    assert_eq!(b.outcome.termination, Termination::Exited(7));
    assert_eq!(b.problems, [Problem::NonZeroExitCode(3)], "{}", b.report());
}

#[test]
fn hang_times_out_with_the_console_tail() {
    if !available(Env::Tcg) {
        return;
    }
    let kernel = fixture::write("hang", "pvops: about to hang\n", Ending::Hang);
    let err = boot::boot(Env::Tcg, &kernel, &options(3)).unwrap_err();
    let killed = err
        .downcast_ref::<Killed>()
        .unwrap_or_else(|| panic!("{err:#}"));
    assert_eq!(killed.reason, KillReason::TimedOut(Duration::from_secs(3)));
    assert_eq!(killed.last_lines, ["pvops: about to hang"]);
    assert!(
        format!("{err:#}").contains("did not finish within 3 s"),
        "{err:#}"
    );
}

/// Under KVM a crash must fail fast as well: on real hardware a triple
/// fault resets (QEMU exits 0); on these machines KVM emulates the guest
/// and stops it with "KVM internal error", which the harness turns into a
/// prompt kill instead of waiting for the time bound.
#[test]
fn triple_fault_under_kvm_hidden_fails_fast() {
    if !available(Env::KvmHidden) {
        return;
    }
    let kernel = fixture::write("triple-fault-kvm", PASSING, Ending::TripleFault);
    let start = std::time::Instant::now();
    match boot::boot(Env::KvmHidden, &kernel, &options(120)) {
        Ok(b) => assert!(
            matches!(b.problems.as_slice(), [Problem::WrongTermination { .. }]),
            "{}",
            b.report()
        ),
        Err(err) => {
            let killed = err
                .downcast_ref::<Killed>()
                .unwrap_or_else(|| panic!("{err:#}"));
            assert!(
                matches!(killed.reason, KillReason::GuestStopped(_)),
                "{err:#}"
            );
        }
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}
