//! kvm-nested fails loudly, never silently and never by hanging: an outer
//! CPU without SVM (kvm-amd does not load), an inner QEMU that does not
//! start, an inner guest that hangs. Real outer machines and real inner
//! QEMUs; the guests are the harness's stand-in kernels.

use std::time::{Duration, Instant};

use pvops_tests::fixture::{self, Ending};
use pvops_tests::skip;
use xtask::boot::{BootOptions, Plan};
use xtask::env::Env;
use xtask::nested::{self, Options};
use xtask::provision;

fn available() -> bool {
    match provision::unavailable(Env::KvmNested) {
        Some(why) => {
            skip(&why);
            false
        }
        None => true,
    }
}

fn plan(kernel: &std::path::Path, timeout: Duration) -> Plan {
    let options = BootOptions {
        timeout: Some(timeout),
        ..BootOptions::default()
    };
    Plan::new(Env::KvmNested, kernel, &options).expect("plan")
}

/// Without SVM in the outer CPU, kvm-amd does not load: the run ends at
/// once with that reason and the console's tail.
#[test]
fn outer_cpu_without_svm_fails_loudly() {
    if !available() {
        return;
    }
    let kernel = fixture::write("nested-nosvm", "pvops: exit code=0\n", Ending::DebugExit(0));
    let start = Instant::now();
    let options = Options {
        outer_cpu: "qemu64,-svm".into(),
        ..Options::default()
    };
    let err = nested::run(
        &[plan(&kernel, Duration::from_secs(20))],
        &options,
        &mut |_| {},
    )
    .expect_err("an outer machine without SVM must fail");
    let text = format!("{err:#}");
    assert!(text.contains("insmod kvm-amd failed"), "{text}");
    assert!(text.contains("console line"), "no console tail: {text}");
    assert!(start.elapsed() < Duration::from_secs(120), "{text}");
    eprintln!(
        "no SVM: failed in {:.1} s: {}",
        start.elapsed().as_secs_f64(),
        text.lines().next().unwrap_or_default()
    );
}

/// An inner QEMU that does not start (a bad argument; its status 1 would
/// read as the guest's exit code 0) and an inner guest that hangs (killed
/// at its bound by the outer /init): both judged failures with a reason,
/// and the outer run goes on to its end.
#[test]
fn inner_runs_that_do_not_start_or_hang_fail() {
    if !available() {
        return;
    }
    let kernel = fixture::write("nested-hang", "booting\n", Ending::Hang);
    let mut bad = plan(&kernel, Duration::from_secs(20));
    bad.args.push("-no-such-option".into());
    let hang = plan(&kernel, Duration::from_secs(4));
    let run = nested::run(&[bad, hang], &Options::default(), &mut |_| {})
        .unwrap_or_else(|e| panic!("the outer run should end by itself: {e:#}"));
    assert_eq!(run.boots.len(), 2);
    let not_started = &run.boots[0];
    assert!(!not_started.passed());
    let report = not_started.report();
    assert!(report.contains("did not start"), "{report}");
    assert!(
        report.contains("no-such-option"),
        "QEMU's message: {report}"
    );
    let hung = &run.boots[1];
    assert!(!hung.passed());
    let report = hung.report();
    assert!(report.contains("killed it"), "{report}");
    assert!(report.contains("booting"), "the guest's console: {report}");
    eprintln!("{}", run.timings.summary());
}

/// Bench mode on kvm-nested: the inner KVM's counters come back over the
/// outer machine's second serial port around every loop, and hypercalls
/// complete (no other environment here can show one): a PV IPI (to one
/// vCPU or to all others) and a lock kick are one hypercall each, a remote
/// TLB flush at most one, and the interrupt-flag and CR ops none and
/// far fewer exits than an IPI.
#[test]
fn bench_mode_counts_exits_and_hypercalls() {
    if !available() {
        return;
    }
    let kernel = pvops_tests::kernel_image().expect("kernel image");
    let variants = [xtask::bench::Variant::default_variant()];
    // 512 iterations, not the published 2048: the counts asserted here
    // are whole hypercalls, and the run is ~15 s shorter.
    let runs = xtask::bench::run_nested(Env::KvmNested, kernel, 2, &variants, 512, false)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(runs.failures.is_empty(), "{}", runs.failures.join("\n"));
    let (run, boot) = &runs.runs[0];
    assert!(boot.passed(), "{}", boot.report());
    for line in xtask::report::bench_lines(run) {
        eprintln!("{line}");
    }
    let per_op = |op: &str, path: &str, key: &str| -> f64 {
        let row = run
            .rows
            .iter()
            .find(|r| r.op == op && r.path == path)
            .unwrap_or_else(|| panic!("no bench line for {op} {path}: {:?}", run.rows));
        *row.per_op
            .get(key)
            .unwrap_or_else(|| panic!("{op} {path}: no {key} count: {:?}", row.per_op))
    };
    for op in ["send_ipi_one", "send_ipi_all", "lock_kick"] {
        let calls = per_op(op, "pvops", "hypercalls");
        assert!(
            (0.9..=1.1).contains(&calls),
            "{op}: {calls} hypercalls per op, expected one"
        );
        assert!(per_op(op, "pvops", "exits") >= 0.9, "{op}: no exit counted");
    }
    let flush = per_op("flush_tlb_others", "pvops", "hypercalls");
    assert!(flush <= 1.1, "remote TLB flush: {flush} hypercalls per op");
    for (op, path) in [
        ("irq_disable_enable", "patched"),
        ("irq_save_restore", "patched"),
        ("read_cr2", "patched"),
    ] {
        assert!(per_op(op, path, "hypercalls").abs() < 0.05, "{op} {path}");
        // No exit of their own; not an absolute bound, as host preemption
        // (a loaded machine) adds stray exits to any window: well under an
        // IPI's (3 here).
        let exits = per_op(op, path, "exits");
        let ipi = per_op("ipi_self_eoi", "pvops", "exits");
        assert!(
            exits < ipi / 4.0,
            "{op} {path}: {exits} exits per op, an IPI to self {ipi}"
        );
    }
}

/// A kernel panic under Hyper-V's enlightenments reaches the host: the
/// hyperv backend's `report_panic` writes the crash MSRs, and the inner
/// QEMU (`hv-crash`) reports `GUEST_PANICKED` on its QMP (through the
/// outer machine's second serial port) with pvops' marker ("pvops" in
/// ASCII) as the first parameter and the message's first bytes after it.
/// The kernel announces the panic and waits 3 s, so the harness
/// negotiates QMP (events flow only after that) before it comes.
#[test]
fn hyperv_panic_reaches_qmp_as_guest_panicked() {
    if !available() {
        return;
    }
    let kernel = pvops_tests::kernel_image().expect("kernel image");
    let options = BootOptions {
        smp: 2,
        extra_cmdline: vec![
            "pvops.mode=panic".into(),
            "pvops.panic_delay_ms=3000".into(),
        ],
        timeout: Some(Duration::from_secs(60)),
        ..BootOptions::default()
    };
    let plan = Plan::new(Env::HyperV, kernel, &options).expect("plan");
    let mut event = None;
    let mut observer = |line: nested::Line<'_>| {
        if line.run.is_some()
            && event.is_none()
            && line.text.starts_with("pvops: info: panicking on purpose")
        {
            let got = xtask::qmp::SerialQmp::connect(line.socket, Duration::from_secs(5)).and_then(
                |mut q| {
                    q.negotiate()?;
                    q.wait_event("GUEST_PANICKED", Duration::from_secs(30))
                },
            );
            event = Some(got.map_err(|e| format!("{e:#}")));
        }
    };
    let options = Options {
        qmp: true,
        ..Options::default()
    };
    let run = nested::run(&[plan], &options, &mut observer).unwrap_or_else(|e| panic!("{e:#}"));
    let console = run.boots[0].run.console.join("\n");
    let event = event
        .unwrap_or_else(|| panic!("the kernel never announced its panic:\n{console}"))
        .unwrap_or_else(|e| panic!("{e}\n{console}"));
    eprintln!("{event}");
    assert!(
        console.contains("pvops: error: panic: ")
            && console.contains("pvops.mode=panic: a panic on purpose"),
        "{console}"
    );
    assert!(
        console.contains("hv-crash"),
        "the backend did not use the crash MSRs: {console}"
    );
    let info = &event["data"]["info"];
    assert_eq!(info["type"].as_str(), Some("hyper-v"), "{event}");
    let marker = u64::from_le_bytes(*b"pvops\0\0\0");
    assert_eq!(info["arg1"].as_u64(), Some(marker), "{event}");
    assert_eq!(
        info["arg2"].as_u64().map(u64::to_le_bytes),
        Some(*b"pvops.mo"),
        "{event}"
    );
    // QEMU's default panic action powered the machine off: the inner QEMU
    // ended by itself (status 0), not through isa-debug-exit.
    assert!(!console.contains("pvops: exit code="), "{console}");
}
