//! Live migration: the example kernel moves, while it runs, from one QEMU
//! to another in the middle of its self-tests, and finishes them there.
//!
//! The kernel is booted with `pvops.migrate_wait=<s>`: after its first
//! self-tests it clears a CMOS byte, prints [`READY`] and keeps running
//! (reading its clock) until that byte holds the marker. The harness runs
//! two QEMUs with the same arguments, the destination with `-incoming
//! unix:PATH`; on [`READY`] it sends the source QMP `migrate`, polls
//! `query-migrate` until `completed`, checks the destination runs, writes
//! the marker through the destination's monitor (`o` to ports 0x70/0x71:
//! so only the destination can show it), and quits the source. The kernel
//! then reports `test live_migration ... ok` (clock monotonic across the
//! move, every per-CPU registration still held, timer and IPIs working)
//! and runs its remaining self-tests on the destination.
//!
//! Judged ([`judge`]): the source's console up to the move (the platform
//! line, the first tests, [`READY`], nothing after), the destination's
//! after it (no second boot, [`TEST`] first, every other test, exit code
//! 0), the two together as one run against the environment's
//! expectation, and QMP's word that the migration completed.
//!
//! Where: on this machine ([`run_host`], `tcg`; also `kvm`, `kvm-hidden`
//! by hand), and on the nested KVM ([`Env::KvmNested`]) as one more inner
//! run of the outer boot that runs the feature-off matrix
//! ([`crate::nested::boot_matrix`]): the outer `/init` starts the
//! destination beside the source, the source's QMP is the outer second
//! serial port, the destination's the third ([`NestedController`]).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::boot::{Boot, BootOptions, Plan};
use crate::env::Env;
use crate::protocol::{self, Outcome, Problem, Termination, Verdict};
use crate::qemu::{self, QemuRun};
use crate::qmp::{Qmp, SerialQmp};

/// The kernel's live-migration self-test.
pub const TEST: &str = "live_migration";
/// The command-line option that makes the kernel wait to be migrated.
pub const OPTION: &str = "pvops.migrate_wait";
/// How long the kernel waits (seconds): a bound, not a delay.
pub const WAIT_SECS: u64 = 60;
/// What the kernel prints once it waits to be migrated.
pub const READY: &str = "pvops: info: live migration: ready";
/// What the kernel prints on the destination about its registrations.
pub const HELD: &str = "pvops: info: live migration: registrations held on";
/// What the kernel prints on the destination about the pause sign
/// (`pvops::platform::take_paused`); with kvmclock on it must be set.
pub const PAUSED: &str = "pvops: info: live migration: paused sign";
/// The CMOS byte the marker goes in and its value (the kernel's
/// `selftest::migration::MARKER_INDEX`/`MARKER_VALUE`).
pub const CMOS_MARKER_INDEX: u8 = 0x6f;
/// See [`CMOS_MARKER_INDEX`].
pub const CMOS_MARKER_VALUE: u8 = 0x4d;
/// Per-CPU registrations the destination must still hold, when the
/// platform line names the feature.
pub const REGISTERED_FEATURES: &[&str] = &["kvmclock", "steal-time", "pv-eoi"];
/// How long QMP `migrate` may take to complete.
pub const MIGRATE_LIMIT: Duration = Duration::from_secs(60);

/// Prefix of the lines the nested `/init` adds to a migration section
/// (`migrate| source status=..`, `migrate| dest| <console line>`, ...).
pub const NESTED_PREFIX: &str = "migrate| ";
/// The destination's console in the nested `/init` (`-serial file:`).
pub const NESTED_DEST_CONSOLE: &str = "/tmp/migrate-dest.console";
/// Where the nested destination listens.
pub const NESTED_INCOMING: &str = "unix:/tmp/migrate.sock";

/// Whether `env` can be migrated here: a `pc` machine (CMOS), QEMU on
/// this machine or in the nested one; not Xen (whose guests move with
/// `xl save`/`restore`, see the domU environments) nor microvm (no RTC).
pub const fn supported(env: Env) -> bool {
    matches!(env, Env::Tcg | Env::Kvm | Env::KvmHidden | Env::KvmNested)
}

/// Whether `plan` asks the kernel to wait to be migrated.
pub fn is_migration(plan: &Plan) -> bool {
    plan.cmdline
        .split_whitespace()
        .any(|w| w.starts_with(&format!("{OPTION}=")))
}

/// The plan of a migration run of `kernel` in `env`: the test boot's, the
/// kernel told to wait, [`TEST`] required.
pub fn plan(env: Env, kernel: &Path, options: &BootOptions) -> Result<Plan> {
    if !supported(env) {
        bail!("live migration is not run in {env} (only tcg, kvm, kvm-hidden, kvm-nested)");
    }
    let mut options = options.clone();
    options.extra_cmdline.push(format!("{OPTION}={WAIT_SECS}"));
    let mut plan = Plan::new(env, kernel, &options)?;
    plan.expectation.required.push(TEST.to_owned());
    Ok(plan)
}

/// What QMP said about the migration.
#[derive(Debug, Clone, Default)]
pub struct MigrationStats {
    /// `query-migrate`'s last status (`completed` when it worked).
    pub status: String,
    /// `total-time` (ms): `migrate` to completion, as QEMU counts it.
    pub total_ms: Option<u64>,
    /// `downtime` (ms): how long the guest was stopped.
    pub downtime_ms: Option<u64>,
    /// RAM bytes sent.
    pub ram_bytes: Option<u64>,
    /// Host time from seeing [`READY`] to the marker written.
    pub harness: Duration,
}

impl MigrationStats {
    /// One line for logs.
    pub fn summary(&self) -> String {
        let ms = |v: Option<u64>| v.map_or("-".into(), |v| format!("{v} ms"));
        format!(
            "migration {}: total {}, downtime {}, {} MiB sent; ready line to marker {:.2} s",
            self.status,
            ms(self.total_ms),
            ms(self.downtime_ms),
            self.ram_bytes
                .map_or("-".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
            self.harness.as_secs_f64()
        )
    }
}

/// A judged migration run.
#[derive(Debug, Clone)]
pub struct Migrated {
    /// Both halves as one run (console: the source's lines, then the
    /// destination's), judged against the environment's expectation and
    /// the migration's own checks.
    pub boot: Boot,
    /// The source QEMU's console (up to the move).
    pub source: Vec<String>,
    /// The destination QEMU's console (after the move).
    pub destination: Vec<String>,
    /// What QMP said, or why the harness could not migrate.
    pub stats: Result<MigrationStats, String>,
}

impl Migrated {
    /// One line: the boot's verdict and the migration's figures.
    pub fn verdict(&self) -> String {
        let stats = match &self.stats {
            Ok(s) => s.summary(),
            Err(e) => format!("no migration: {e}"),
        };
        format!(
            "{} [live migration: {} source line(s), {} destination line(s); {stats}]",
            self.boot.verdict(),
            self.source.len(),
            self.destination.len()
        )
    }
}

/// A QMP monitor, over a unix socket or a serial line.
pub trait Monitor {
    /// Runs `command`; its `return` value.
    fn run(&mut self, command: &str, arguments: Value) -> Result<Value>;
}

impl Monitor for Qmp {
    fn run(&mut self, command: &str, arguments: Value) -> Result<Value> {
        self.execute(command, arguments)
    }
}

impl Monitor for SerialQmp {
    fn run(&mut self, command: &str, arguments: Value) -> Result<Value> {
        self.execute(command, arguments, Duration::from_secs(10))
    }
}

/// Migrates: `migrate` to `uri` on `source`, `query-migrate` until it
/// completes (fails at once on `failed`/`cancelled`, or after
/// [`MIGRATE_LIMIT`]), checks `destination` runs, writes the marker
/// through it. Does not quit the source.
pub fn migrate(
    source: &mut dyn Monitor,
    destination: &mut dyn Monitor,
    uri: &str,
) -> Result<MigrationStats> {
    let start = Instant::now();
    source
        .run("migrate", json!({ "uri": uri }))
        .context("QMP migrate on the source")?;
    let answer = loop {
        let a = source
            .run("query-migrate", json!({}))
            .context("QMP query-migrate on the source")?;
        match a["status"].as_str().unwrap_or("none") {
            "completed" => break a,
            s @ ("failed" | "cancelled") => bail!(
                "the migration {s}: {}",
                a["error-desc"].as_str().unwrap_or("QEMU gave no reason")
            ),
            s if start.elapsed() > MIGRATE_LIMIT => bail!(
                "the migration did not complete within {} s (status {s})",
                MIGRATE_LIMIT.as_secs()
            ),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let status = destination
        .run("query-status", json!({}))
        .context("QMP query-status on the destination")?;
    if status["running"].as_bool() != Some(true) {
        bail!("the destination does not run after the migration completed: {status}");
    }
    for (port, value) in [(0x70, CMOS_MARKER_INDEX), (0x71, CMOS_MARKER_VALUE)] {
        let line = format!("o /b {port:#x} {value:#x}");
        destination
            .run("human-monitor-command", json!({ "command-line": line }))
            .with_context(|| format!("writing the marker on the destination ({line})"))?;
    }
    Ok(MigrationStats {
        status: "completed".into(),
        total_ms: answer["total-time"].as_u64(),
        downtime_ms: answer["downtime"].as_u64(),
        ram_bytes: answer["ram"]["transferred"].as_u64(),
        harness: start.elapsed(),
    })
}

/// A folder of its own per host run (sockets), short enough for `AF_UNIX`.
fn run_dir() -> PathBuf {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("pvops-migrate-{}-{n}", std::process::id()))
}

/// Runs `plan` (made by [`plan`], not kvm-nested) as a migration on this
/// machine: destination QEMU first (listening), then the source; each
/// bounded by the plan's time bound. Errors only when a QEMU cannot run
/// at all; everything else is in the judged result.
pub fn run_host(plan: &Plan, echo: bool) -> Result<Migrated> {
    run_host_with(plan, echo, &[])
}

/// [`run_host`], the destination QEMU given `destination_extra` arguments
/// too (the tests make it incompatible on purpose: the run must fail).
pub fn run_host_with(plan: &Plan, echo: bool, destination_extra: &[OsString]) -> Result<Migrated> {
    if plan.env.is_nested() {
        bail!("a kvm-nested migration runs inside the outer machine: see nested::boot_matrix");
    }
    let dir = run_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let _cleanup = RemoveOnDrop(dir.clone());
    let socket = |name: &str| dir.join(name);
    let qmp_arg =
        |path: PathBuf| OsString::from(format!("unix:{},server=on,wait=off", path.display()));
    let incoming = format!("unix:{}", socket("migrate.sock").display());
    let mut src_args = plan.args.clone();
    src_args.extend([OsString::from("-qmp"), qmp_arg(socket("src.qmp"))]);
    let mut dst_args = plan.args.clone();
    dst_args.extend([OsString::from("-qmp"), qmp_arg(socket("dst.qmp"))]);
    dst_args.extend([OsString::from("-incoming"), OsString::from(&incoming)]);
    dst_args.extend(destination_extra.iter().cloned());

    let start = Instant::now();
    let (qemu, bound) = (plan.qemu.clone(), plan.timeout);
    // Its own thread: QEMU dies with the thread that spawned it.
    let destination = std::thread::spawn(move || qemu::run(&qemu, &dst_args, bound, echo));
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (src_qmp, dst_qmp) = (socket("src.qmp"), socket("dst.qmp"));
    let controller: JoinHandle<Result<MigrationStats>> = std::thread::spawn(move || {
        let mut dst = Qmp::connect(&dst_qmp, Duration::from_secs(30))
            .context("the destination QEMU's QMP")?;
        let mut src =
            Qmp::connect(&src_qmp, Duration::from_secs(30)).context("the source QEMU's QMP")?;
        let outcome = match ready_rx.recv_timeout(bound) {
            Ok(()) => migrate(&mut src, &mut dst, &incoming),
            Err(_) => Err(anyhow::anyhow!(
                "the kernel never said it was ready to be migrated ({READY:?})"
            )),
        };
        // The source's part is over either way; without a migration the
        // destination would wait for one until its bound.
        let _ = src.run("quit", json!({}));
        if outcome.is_err() {
            let _ = dst.run("quit", json!({}));
        }
        outcome
    });
    let mut sent = false;
    let source = qemu::run_observed(&plan.qemu, &src_args, bound, echo, &mut |line| {
        if !sent && line.contains(READY) {
            sent = true;
            let _ = ready_tx.send(());
        }
    });
    drop(ready_tx);
    let stats = controller
        .join()
        .map_err(|_| anyhow::anyhow!("the migration thread panicked"))
        .and_then(|r| r)
        .map_err(|e| format!("{e:#}"));
    let destination = destination
        .join()
        .map_err(|_| anyhow::anyhow!("the destination thread panicked"))?;
    let as_run = |r: Result<QemuRun>, who: &str| -> Result<QemuRun> {
        match r {
            Ok(r) => Ok(r),
            Err(e) => match e.downcast_ref::<qemu::Killed>() {
                // Killed at its bound: judged (a hang is a failure with
                // the console's tail), not an error of the harness.
                Some(k) => Ok(QemuRun {
                    console: k.last_lines.clone(),
                    stderr: k.stderr.clone(),
                    termination: Termination::Signaled(9),
                    elapsed: bound,
                    dropped_lines: 0,
                }),
                None => Err(e.context(format!("running the {who} QEMU"))),
            },
        }
    };
    let source = as_run(source, "source")?;
    let destination = as_run(destination, "destination")?;
    Ok(judge(
        plan.clone(),
        Half::from_run(&source),
        Half::from_run(&destination),
        stats,
        start.elapsed(),
    ))
}

/// One QEMU's part of a migration run.
#[derive(Debug, Clone)]
pub struct Half {
    /// Its console.
    pub console: Vec<String>,
    /// Its stderr (kvm-nested: mixed into the console instead).
    pub stderr: Vec<String>,
    /// How it ended.
    pub termination: Termination,
}

impl Half {
    fn from_run(r: &QemuRun) -> Half {
        Half {
            console: r.console.clone(),
            stderr: r.stderr.clone(),
            termination: r.termination,
        }
    }
}

/// Judges a migration run: both consoles as one run against the plan's
/// expectation (the termination is the destination's), plus what a
/// migration must show.
pub fn judge(
    plan: Plan,
    source: Half,
    destination: Half,
    stats: Result<MigrationStats, String>,
    elapsed: Duration,
) -> Migrated {
    let mut console = source.console.clone();
    console.extend(destination.console.iter().cloned());
    let outcome = Outcome {
        console: protocol::parse(&console),
        termination: destination.termination,
    };
    let mut problems = protocol::check(&outcome, &plan.expectation);
    let mut wrong = |why: String| problems.push(Problem::Migration(why));
    if let Err(e) = &stats {
        wrong(format!("the harness could not migrate: {e}"));
    }
    let src = protocol::parse(&source.console);
    let dst = protocol::parse(&destination.console);
    if !source.console.iter().any(|l| l.contains(READY)) {
        wrong(format!("the source never printed {READY:?}"));
    }
    if let Some(t) = src.tests.iter().find(|t| t.name == TEST) {
        wrong(format!(
            "the source reported test {} itself: it did not move",
            t.name
        ));
    }
    if !src.summaries.is_empty() || !src.exit_codes.is_empty() {
        wrong("the source finished the run itself: the guest did not move".into());
    }
    // `quit` after the move: status 0; a debug-exit status is the kernel
    // ending on the source.
    if source.termination != Termination::Exited(0) {
        wrong(format!(
            "the source QEMU ended with {} (expected exit status 0 from QMP quit)",
            source.termination
        ));
    }
    if destination.console.iter().all(|l| l.trim().is_empty()) {
        wrong("the destination never printed: the guest did not run there".into());
    } else {
        if !dst.platforms.is_empty() {
            wrong("the destination printed a platform line: the kernel booted again instead of going on".into());
        }
        match dst.tests.first() {
            Some(t) if t.name == TEST && t.verdict == Verdict::Ok => {}
            Some(t) => wrong(format!(
                "the destination's first test line is {} {:?}, expected {TEST} ok",
                t.name, t.verdict
            )),
            None => wrong("the destination reported no test".into()),
        }
        if dst.exit_codes.is_empty() {
            wrong("the destination did not finish the run (no exit code line)".into());
        }
    }
    // The destination must still hold every per-CPU registration the
    // platform line names.
    let named: Vec<&str> = src
        .platforms
        .first()
        .map(|p| {
            REGISTERED_FEATURES
                .iter()
                .copied()
                .filter(|f| p.features.iter().any(|n| n == f))
                .collect()
        })
        .unwrap_or_default();
    // KVM tells a resumed vCPU it was stopped (kvmclock's guest-stopped flag).
    if named.contains(&"kvmclock") {
        match destination.console.iter().find(|l| l.contains(PAUSED)) {
            Some(l) if l.contains(&format!("{PAUSED} set")) => {}
            Some(l) => wrong(format!(
                "kvmclock is on but its guest-stopped flag was not set: {l:?}"
            )),
            None => wrong(format!("the destination printed no {PAUSED:?} line")),
        }
    }
    if !named.is_empty() {
        match destination.console.iter().find(|l| l.contains(HELD)) {
            None => wrong(format!("the destination printed no {HELD:?} line")),
            Some(line) => {
                let list = line.rsplit(": ").next().unwrap_or_default();
                for f in &named {
                    if !list.split(',').any(|x| x.trim() == *f) {
                        wrong(format!(
                            "{f} is on but not held on the destination: {line:?}"
                        ));
                    }
                }
            }
        }
    }
    let mut stderr: Vec<String> = source
        .stderr
        .iter()
        .map(|l| format!("source: {l}"))
        .collect();
    stderr.extend(
        destination
            .stderr
            .iter()
            .map(|l| format!("destination: {l}")),
    );
    let boot = Boot {
        run: QemuRun {
            console,
            stderr,
            termination: destination.termination,
            elapsed,
            dropped_lines: 0,
        },
        plan,
        outcome,
        problems,
    };
    Migrated {
        boot,
        source: source.console,
        destination: destination.console,
        stats,
    }
}

/// The destination's arguments in the nested `/init`: the source's, its
/// console to [`NESTED_DEST_CONSOLE`] (printed after it ends), its QMP on
/// the outer third serial port, listening on [`NESTED_INCOMING`].
pub fn nested_destination_args(source: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = source.iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "-serial" => {
                args.next();
                out.push(a.clone());
                out.push(format!("file:{NESTED_DEST_CONSOLE}"));
            }
            "-qmp" => {
                args.next();
                out.push(a.clone());
                out.push("/dev/ttyS2".into());
            }
            _ => out.push(a.clone()),
        }
    }
    out.extend(["-incoming".into(), NESTED_INCOMING.into()]);
    out
}

/// Splits a nested migration section (see `nested_init.sh`): the source's
/// lines, its status, the destination's lines and status.
pub fn split_nested_section(lines: &[String], killed: bool, dest_status: i32) -> (Half, Half) {
    let mut source = Vec::new();
    let mut dest = Vec::new();
    let mut source_status = None;
    for l in lines {
        match l.split_once(NESTED_PREFIX) {
            Some((_, rest)) => {
                if let Some(line) = rest.strip_prefix("dest| ") {
                    dest.push(line.to_owned());
                } else if let Some(s) = rest.strip_prefix("source status=") {
                    source_status = s.split_whitespace().next().and_then(|s| s.parse().ok());
                }
            }
            None => source.push(l.clone()),
        }
    }
    let source_termination = match source_status {
        Some(s) => Termination::Exited(s),
        None => Termination::Signaled(9),
    };
    let dest_termination = if killed {
        Termination::Signaled(9)
    } else {
        Termination::Exited(dest_status)
    };
    (
        Half {
            console: source,
            stderr: Vec::new(),
            termination: source_termination,
        },
        Half {
            console: dest,
            stderr: Vec::new(),
            termination: dest_termination,
        },
    )
}

/// Drives the migrations of a nested outer boot: an observer for
/// [`crate::nested::run`] that, when an inner migration run prints
/// [`READY`], migrates it over the outer machine's serial QMP ports, on a
/// thread of its own (the console keeps being read meanwhile).
#[derive(Debug, Default)]
pub struct NestedController {
    running: Vec<(usize, JoinHandle<Result<MigrationStats>>)>,
}

impl NestedController {
    /// Sees one outer console line (call from the observer).
    pub fn line(&mut self, line: &crate::nested::Line<'_>) {
        let Some(run) = line.run else { return };
        if line.begins || !line.text.contains(READY) || self.running.iter().any(|(r, _)| *r == run)
        {
            return;
        }
        let (src, dst) = (line.socket.to_path_buf(), line.dest_socket.to_path_buf());
        let handle = std::thread::spawn(move || {
            let mut s = SerialQmp::connect(&src, Duration::from_secs(5))?;
            let mut d = SerialQmp::connect(&dst, Duration::from_secs(5))?;
            let outcome = migrate(&mut s, &mut d, NESTED_INCOMING);
            // The source's part is over; on failure the destination too
            // (the outer /init then reports both).
            let _ = s.execute("quit", json!({}), Duration::from_secs(3));
            if outcome.is_err() {
                let _ = d.execute("quit", json!({}), Duration::from_secs(3));
            }
            outcome
        });
        self.running.push((run, handle));
    }

    /// Waits for every migration it started; by inner run index.
    pub fn finish(self) -> Vec<(usize, Result<MigrationStats, String>)> {
        self.running
            .into_iter()
            .map(|(run, h)| {
                let r = h
                    .join()
                    .map_err(|_| "the migration thread panicked".to_owned())
                    .and_then(|r| r.map_err(|e| format!("{e:#}")));
                (run, r)
            })
            .collect()
    }
}

/// Re-judges the nested migration boot `boot` (its section as
/// `nested::run` cut it) with the QMP result of its migration.
pub fn judge_nested(boot: &Boot, stats: Result<MigrationStats, String>) -> Migrated {
    let (dest_status, killed) = match boot.run.termination {
        Termination::Exited(s) => (s, false),
        Termination::Signaled(_) => (-1, true),
    };
    let (source, destination) = split_nested_section(&boot.run.console, killed, dest_status);
    judge(
        boot.plan.clone(),
        source,
        destination,
        stats,
        boot.run.elapsed,
    )
}

/// A report for logs: the verdict, the problems, both consoles.
pub fn report(m: &Migrated) -> String {
    let mut out = m.boot.report();
    let _ = writeln!(out, "source console ({} lines):", m.source.len());
    for l in &m.source {
        let _ = writeln!(out, "  src | {l}");
    }
    let _ = writeln!(out, "destination console ({} lines):", m.destination.len());
    for l in &m.destination {
        let _ = writeln!(out, "  dst | {l}");
    }
    out
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A scripted monitor: answers in order, records the commands.
    struct Script {
        answers: VecDeque<Result<Value>>,
        seen: Vec<String>,
    }

    impl Script {
        fn new(answers: Vec<Result<Value>>) -> Script {
            Script {
                answers: answers.into(),
                seen: Vec::new(),
            }
        }
    }

    impl Monitor for Script {
        fn run(&mut self, command: &str, arguments: Value) -> Result<Value> {
            self.seen.push(format!("{command} {arguments}"));
            self.answers
                .pop_front()
                .unwrap_or_else(|| bail!("no scripted answer for {command}"))
        }
    }

    #[test]
    fn completed_migration_writes_the_marker_on_the_destination() {
        let mut src = Script::new(vec![
            Ok(json!({})),
            Ok(json!({"status": "active"})),
            Ok(
                json!({"status": "completed", "total-time": 120, "downtime": 9,
                      "ram": {"transferred": 2097152}}),
            ),
        ]);
        let mut dst = Script::new(vec![
            Ok(json!({"running": true, "status": "running"})),
            Ok(json!("")),
            Ok(json!("")),
        ]);
        let s = migrate(&mut src, &mut dst, "unix:/x").unwrap();
        assert_eq!(
            (s.total_ms, s.downtime_ms, s.ram_bytes),
            (Some(120), Some(9), Some(2097152))
        );
        assert_eq!(src.seen[0], r#"migrate {"uri":"unix:/x"}"#);
        assert!(dst.seen[1].contains("o /b 0x70 0x6f"), "{:?}", dst.seen);
        assert!(dst.seen[2].contains("o /b 0x71 0x4d"), "{:?}", dst.seen);
    }

    #[test]
    fn failed_migration_or_stopped_destination_is_an_error() {
        let mut src = Script::new(vec![
            Ok(json!({})),
            Ok(json!({"status": "failed", "error-desc": "Unable to write to socket"})),
        ]);
        let mut dst = Script::new(vec![]);
        let e = migrate(&mut src, &mut dst, "unix:/x").unwrap_err();
        assert!(format!("{e:#}").contains("Unable to write"), "{e:#}");
        assert!(dst.seen.is_empty(), "no marker without a migration");

        let mut src = Script::new(vec![Ok(json!({})), Ok(json!({"status": "completed"}))]);
        let mut dst = Script::new(vec![Ok(json!({"running": false, "status": "paused"}))]);
        let e = migrate(&mut src, &mut dst, "unix:/x").unwrap_err();
        assert!(format!("{e:#}").contains("does not run"), "{e:#}");
        assert_eq!(dst.seen.len(), 1, "no marker on a stopped destination");
    }

    fn test_plan() -> Plan {
        let kernel = std::env::temp_dir().join(format!("migrate-plan-{}", std::process::id()));
        std::fs::write(&kernel, b"k").unwrap();
        Plan {
            env: Env::Tcg,
            image: crate::boot::BootImage::read(&kernel).unwrap(),
            cmdline: format!("pvops.mode=test {OPTION}=60"),
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            args: Vec::new(),
            timeout: Duration::from_secs(9),
            expectation: {
                let mut e = Env::KvmNested.expectation();
                e.required.push(TEST.into());
                e
            },
        }
    }

    fn lines(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    const PLATFORM: &str = "pvops: platform=kvm backend=kvm features=kvmclock,steal-time,pv-eoi,pv-ipi,pv-tlb-flush,pv-unhalt,pv-sched-yield,poll-control,nop-io-delay hypervisor=kvm";

    fn good_halves() -> (Vec<String>, Vec<String>) {
        let mut src = vec![PLATFORM.to_owned()];
        for i in 0..3 {
            src.push(format!("test a{i} ... ok"));
        }
        src.push(format!("{READY}, waiting up to 60 s"));
        let mut dst = lines(&[
            "pvops: info: live migration: on the destination after 90 ms",
            &format!(
                "{PAUSED} set (taken) on cpu index 0 (before the move: clear), on 1 other cpu(s)"
            ),
            &format!("{HELD} 2 cpu(s): kvmclock,steal-time,pv-eoi"),
            "test live_migration ... ok",
        ]);
        for i in 0..3 {
            dst.push(format!("test b{i} ... ok"));
        }
        dst.push("test result: ok. 7 passed; 0 failed".into());
        dst.push("pvops: exit code=0".into());
        (src, dst)
    }

    fn half(console: Vec<String>, t: Termination) -> Half {
        Half {
            console,
            stderr: Vec::new(),
            termination: t,
        }
    }

    fn stats() -> Result<MigrationStats, String> {
        Ok(MigrationStats {
            status: "completed".into(),
            ..MigrationStats::default()
        })
    }

    #[test]
    fn a_moved_run_passes_and_each_way_of_not_moving_fails() {
        let (src, dst) = good_halves();
        let judge_with = |src: Vec<String>, dst: Vec<String>, st, srct| {
            judge(
                test_plan(),
                half(src, srct),
                half(dst, Termination::Exited(1)),
                st,
                Duration::from_secs(1),
            )
        };
        let ok = judge_with(src.clone(), dst.clone(), stats(), Termination::Exited(0));
        assert!(ok.boot.passed(), "{}", report(&ok));

        // QMP said it failed.
        let m = judge_with(
            src.clone(),
            dst.clone(),
            Err("failed".into()),
            Termination::Exited(0),
        );
        assert!(!m.boot.passed());
        // The destination never printed.
        let m = judge_with(src.clone(), Vec::new(), stats(), Termination::Exited(0));
        assert!(report(&m).contains("never printed"), "{}", report(&m));
        // The kernel booted again on the destination.
        let mut again = vec![PLATFORM.to_owned()];
        again.extend(dst.iter().cloned());
        let m = judge_with(src.clone(), again, stats(), Termination::Exited(0));
        assert!(report(&m).contains("booted again"), "{}", report(&m));
        // The whole run on the source (debug-exit status), nothing moved.
        let mut all = src.clone();
        all.extend(dst.iter().cloned());
        let m = judge_with(all, Vec::new(), stats(), Termination::Exited(1));
        assert!(report(&m).contains("did not move"), "{}", report(&m));
        // PV EOI dropped by the destination.
        let lost: Vec<String> = dst
            .iter()
            .map(|l| l.replace("steal-time,pv-eoi", "steal-time"))
            .collect();
        let m = judge_with(src.clone(), lost, stats(), Termination::Exited(0));
        assert!(
            report(&m).contains("pv-eoi is on but not held"),
            "{}",
            report(&m)
        );
        // kvmclock on, but no guest-stopped flag seen.
        let unpaused: Vec<String> = dst
            .iter()
            .map(|l| l.replace("set (taken) on cpu index 0", "clear on cpu index 0"))
            .collect();
        let m = judge_with(src.clone(), unpaused, stats(), Termination::Exited(0));
        assert!(
            report(&m).contains("guest-stopped flag was not set"),
            "{}",
            report(&m)
        );
    }

    #[test]
    fn nested_sections_split_into_source_and_destination() {
        let (src, dst) = good_halves();
        let mut section = src.clone();
        section.push("qemu-system-x86_64: a warning of the destination".into());
        section.push(format!("{NESTED_PREFIX}source status=0"));
        section.extend(dst.iter().map(|l| format!("{NESTED_PREFIX}dest| {l}")));
        section.push(format!("{NESTED_PREFIX}dest status=1"));
        let (s, d) = split_nested_section(&section, false, 1);
        assert_eq!(s.console.len(), src.len() + 1);
        assert_eq!(s.termination, Termination::Exited(0));
        assert_eq!(d.console, dst);
        assert_eq!(d.termination, Termination::Exited(1));
        let (s, _) = split_nested_section(&src, true, 1);
        assert_eq!(
            s.termination,
            Termination::Signaled(9),
            "no status line: killed"
        );
    }

    #[test]
    fn destination_arguments() {
        let src: Vec<String> = ["-serial", "stdio", "-cpu", "host", "-qmp", "/dev/ttyS1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let d = nested_destination_args(&src);
        let pair = |a: &str, b: &str| d.windows(2).any(|w| w[0] == a && w[1] == b);
        assert!(
            pair("-serial", &format!("file:{NESTED_DEST_CONSOLE}")),
            "{d:?}"
        );
        assert!(pair("-qmp", "/dev/ttyS2"), "{d:?}");
        assert!(pair("-incoming", NESTED_INCOMING), "{d:?}");
        assert!(pair("-cpu", "host"));
        assert!(!d.iter().any(|a| a == "stdio" || a == "/dev/ttyS1"));
    }
}
