//! `cargo xtask run|test`: see `cargo xtask --help`.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use xtask::boot::{self, BootOptions, Mode, Plan};
use xtask::env::{Env, Status};
use xtask::record::{self, Record};
use xtask::{kernel, provision};

/// Host-side harness of pvops: build the example kernel, boot it, judge it.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Boot the example kernel in one environment, stream its console, and
    /// exit 0 only if the run passed.
    Run(RunArgs),
    /// Provision QEMU (and Xen, and kvm-nested's outer machine in
    /// target/kvm-nested), build the kernel, and run every host test and
    /// boot test (`cargo test --workspace`).
    Test,
    /// Benchmarks: boot the kernel in bench mode per environment (VM exits
    /// per op from QEMU under KVM) and/or run the host-process benchmark;
    /// write target/bench/report.{md,json,svg} and print the table.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
struct BenchArgs {
    /// Environments to boot in bench mode [default: every implemented one].
    /// kvm-nested runs its default configuration, each KVM feature off and
    /// kvm=off as inner runs of one outer boot (about 50 s each), with the
    /// inner KVM's counters read over its serial QMP.
    #[arg(long = "env", value_name = "ENV", value_enum)]
    envs: Vec<Env>,
    /// Also run the hardware-speed host benchmark (`cargo bench -p pvops-bench`).
    /// Alone (without --env), only the host benchmark runs.
    #[arg(long)]
    host: bool,
    /// Virtual CPUs for the guest boots.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    smp: u32,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Environment [default: kvm where the host's KVM completes hypercalls (its CPU offers VMX/SVM), else
    /// kvm-nested (Linux's real KVM inside QEMU TCG, provisioned into
    /// target/kvm-nested by apt-get download), else tcg; the harness says
    /// which and why]
    #[arg(long, value_name = "ENV", value_enum)]
    env: Option<Env>,
    /// Number of virtual CPUs [default: what the tests boot the environment
    /// with, 2, so the SMP self-tests run].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    smp: Option<u32>,
    /// Boot with pvops.mode=bench instead of pvops.mode=test.
    #[arg(long)]
    bench: bool,
    /// Override the environment's time bound, in seconds.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
    /// Boot an environment that is not implemented yet (to work on it).
    #[arg(long)]
    force: bool,
    /// Live-migrate the kernel in the middle of its self-tests from one
    /// QEMU to another (QMP migrate to a second QEMU started with
    /// -incoming) and judge both halves: tcg, kvm, kvm-hidden, kvm-nested.
    #[arg(long)]
    migrate: bool,
    /// Extra words for the kernel command line.
    #[arg(last = true, value_name = "KERNEL ARGS")]
    extra: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Test => test(),
        Cmd::Bench(args) => bench(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("xtask: error: {e:#}");
        ExitCode::FAILURE
    })
}

/// The environment `run` uses without `--env`, and why: the host's KVM
/// when it completes hypercalls (every kvm backend feature works there);
/// else kvm-nested, Linux's real KVM inside QEMU TCG (where hypercalls
/// complete, at emulated speed); TCG when QEMU is missing its parts.
fn default_env() -> (Env, String) {
    let kvm = provision::kvm_usable();
    match (&kvm, provision::kvm_completes_hypercalls()) {
        (Ok(()), Ok(())) if Env::Kvm.is_implemented() => {
            return (
                Env::Kvm,
                format!(
                    "{} is usable and the CPU offers VMX/SVM, so KVM completes hypercalls",
                    provision::KVM_DEVICE
                ),
            )
        }
        (_, Err(no_hypercalls)) if Env::KvmNested.is_implemented() => {
            let host = match &kvm {
                Ok(()) => format!("{} is usable, but {no_hypercalls}", provision::KVM_DEVICE),
                Err(why) => format!("KVM is not usable here ({why})"),
            };
            return (
                Env::KvmNested,
                format!(
                    "{host}; kvm-nested runs Linux's real KVM inside QEMU TCG, where hypercalls \
                     complete (pv-ipi, pv-unhalt and pv-sched-yield work)"
                ),
            );
        }
        _ => {}
    }
    match kvm {
        Ok(()) if Env::Kvm.is_implemented() => {
            (Env::Kvm, format!("{} is usable", provision::KVM_DEVICE))
        }
        Ok(()) => (
            Env::Tcg,
            "the kvm environment is not implemented yet".into(),
        ),
        Err(why) => (Env::Tcg, format!("KVM is not usable: {why}")),
    }
}

fn bench(args: BenchArgs) -> Result<ExitCode> {
    use xtask::bench::{run_guest, Variant};
    let root = kernel::workspace_root();
    let envs: Vec<Env> = if !args.envs.is_empty() {
        args.envs.clone()
    } else if args.host {
        Vec::new()
    } else {
        Env::ALL
            .iter()
            .copied()
            .filter(|e| e.is_implemented() && !e.is_domu())
            .collect()
    };
    let mut host = None;
    if args.host {
        let manifest = root.join("bench").join("Cargo.toml");
        if !manifest.is_file() {
            bail!("the host benchmark (bench/, package pvops-bench) is not in this tree yet");
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Every measured loop starts on a 64-byte boundary: the cases
        // differ by fractions of a cycle per op, and where the linker
        // happens to place a loop otherwise moves a case by a few percent
        // from one build to the next (irq_enable's loop, identical to
        // irq_disable's, measured 1.02-1.06x native unaligned). Its own
        // target directory keeps these flags from rebuilding the rest.
        let flags = "-C llvm-args=-align-loops=64";
        eprintln!("xtask: RUSTFLAGS='{flags}' cargo bench -p pvops-bench");
        let status = Command::new(cargo)
            .current_dir(&root)
            .env("RUSTFLAGS", flags)
            .env("CARGO_TARGET_DIR", root.join("target").join("host-bench"))
            .args(["bench", "-p", "pvops-bench"])
            .status()
            .context("could not run cargo bench")?;
        if !status.success() {
            bail!("cargo bench -p pvops-bench failed ({status})");
        }
        let path = xtask::report::bench_dir(&root).join("host.json");
        let text = fs::read_to_string(&path)
            .with_context(|| format!("the host benchmark did not write {}", path.display()))?;
        host = Some(
            serde_json::from_str::<serde_json::Value>(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?,
        );
    }
    let mut guests = Vec::new();
    let mut nested_failures: Vec<String> = Vec::new();
    if !envs.is_empty() {
        provision::ensure_qemu()?;
        let kernel = kernel::build()?;
        for env in envs {
            if !env.is_implemented() {
                bail!("environment {env} is not implemented yet");
            }
            if env.guest() != xtask::env::Guest::ExampleKernel {
                bail!("{env} boots a loader example kernel, which has no benchmarks");
            }
            if env == Env::XenHvmFwDomu {
                bail!(
                    "{env} gets no command line (libxl passes none to a firmware_override \
                     kernel), so the kernel cannot be told to bench; its ops are those of \
                     xen-pvh-domu, which `--env xen-pvh-domu` benches"
                );
            }
            provision::ensure(env)?;
            if env.is_nested() {
                // Every configuration in one outer boot.
                let variants: Vec<Variant> = std::iter::once(Variant::default_variant())
                    .chain(env.bench_variants())
                    .collect();
                eprintln!(
                    "xtask: bench {env} ({}), one outer boot",
                    variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let measured = xtask::bench::run_nested(
                    env,
                    &kernel,
                    args.smp,
                    &variants,
                    xtask::bench::KVM_ITERS,
                    false,
                )?;
                for (run, _) in measured.runs {
                    for line in xtask::report::bench_lines(&run) {
                        println!("{line}");
                    }
                    guests.push(run);
                }
                nested_failures.extend(measured.failures);
                continue;
            }
            for variant in std::iter::once(Variant::default_variant()).chain(env.bench_variants()) {
                eprintln!("xtask: bench {env} ({})", variant.name);
                let (run, _) = run_guest(env, &kernel, args.smp, &variant)?;
                for line in xtask::report::bench_lines(&run) {
                    println!("{line}");
                }
                guests.push(run);
            }
        }
    }
    let md = xtask::report::write(&root, &guests, host.as_ref())?;
    println!("\n{md}");
    eprintln!(
        "xtask: wrote {}/report.{{md,json,svg}}",
        xtask::report::bench_dir(&root).display()
    );
    if !nested_failures.is_empty() {
        for f in &nested_failures {
            eprintln!("xtask: error: {f}");
        }
        bail!(
            "{} kvm-nested configuration(s) failed (the others are in the report)",
            nested_failures.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn run(args: RunArgs) -> Result<ExitCode> {
    let env = match args.env {
        Some(env) => env,
        None => {
            let (env, why) = default_env();
            eprintln!("xtask: no --env given; using {env}: {why}");
            env
        }
    };
    if let Status::NotImplemented { issue } = env.status() {
        if !args.force {
            bail!(
                "environment {env} ({}) is not implemented yet (issue #{issue}); pass --force \
                 to boot it anyway while working on that issue",
                env.description()
            );
        }
        eprintln!("xtask: warning: booting {env}, which is not implemented yet (issue #{issue})");
    }
    provision::ensure(env)?;
    let kernel = kernel::build()?;
    let options = BootOptions {
        smp: args.smp.unwrap_or(env.test_smp()),
        mode: if args.bench { Mode::Bench } else { Mode::Test },
        extra_cmdline: args.extra,
        echo: true,
        timeout: args.timeout.map(Duration::from_secs),
        min_ok: None,
        medium: xtask::env::Medium::Kernel,
    };
    if args.migrate {
        return run_migration(env, &kernel, &options);
    }
    let booted = if env.is_domu() {
        let image = boot::BootImage::read(&kernel)?;
        eprintln!(
            "xtask: booting {} (sha256 {}) in {env} ({}): Xen, Debian's Linux as dom0, then \
             `xl create` of the domU with cmdline `{}`; time bound {} s",
            image.path.display(),
            &image.sha256[..16],
            env.description(),
            options.cmdline(),
            xtask::domu::run_timeout(&[(env, options.timeout)]).as_secs()
        );
        let mut boots = xtask::domu::boot(&kernel, &[(env, options)], true)?;
        let b = boots.pop().context("no domU was judged")?;
        eprintln!("xtask: {}", b.plan.command_line());
        b
    } else {
        let plan = Plan::new(env, &kernel, &options)?;
        eprintln!(
            "xtask: booting {} (sha256 {}) in {env} ({}), cmdline `{}`, time bound {} s",
            plan.image.path.display(),
            &plan.image.sha256[..16],
            env.description(),
            plan.cmdline,
            plan.timeout.as_secs()
        );
        if env.is_nested() {
            eprintln!(
                "xtask: inner QEMU (in the outer machine): {}",
                plan.command_line()
            );
        } else {
            eprintln!("xtask: {}", plan.command_line());
        }
        boot::run_plan(plan, true)?
    };
    for note in &booted.outcome.console.notes {
        println!("xtask: kernel {:?}: {}", note.kind, note.text);
    }
    println!("{}", booted.verdict());
    for problem in &booted.problems {
        println!("  problem: {problem}");
    }
    if !booted.run.stderr.is_empty() && !booted.passed() {
        println!("  (QEMU's stderr is shown above, prefixed `qemu:`)");
    }
    Ok(if booted.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `cargo xtask run --migrate`: one live migration in `env`, both halves
/// judged.
fn run_migration(env: Env, kernel: &std::path::Path, options: &BootOptions) -> Result<ExitCode> {
    let plan = xtask::migrate::plan(env, kernel, options)?;
    eprintln!(
        "xtask: live migration in {env}: cmdline `{}`; source and destination (-incoming) QEMU: {}",
        plan.cmdline,
        plan.command_line()
    );
    let migrated = if env.is_nested() {
        let mut controller = xtask::migrate::NestedController::default();
        let outer = xtask::nested::Options {
            echo: true,
            ..xtask::nested::Options::default()
        };
        let mut nested = xtask::nested::run(std::slice::from_ref(&plan), &outer, &mut |l| {
            controller.line(&l)
        })?;
        xtask::nested::judge_migrations(&mut nested, controller);
        eprintln!("xtask: kvm-nested: {}", nested.timings.summary());
        nested
            .migration
            .context("the outer machine ran no migration")?
    } else {
        xtask::migrate::run_host(&plan, true)?
    };
    if migrated.boot.passed() {
        println!("{}", migrated.verdict());
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{}", xtask::migrate::report(&migrated));
        Ok(ExitCode::FAILURE)
    }
}

/// Crates whose host tests also run under Miri (undefined behaviour,
/// leaks, aliasing): the table, parsers, pvclock math, event-channel and
/// console-ring handling.
const MIRI_CRATES: &[&str] = &[
    "pvops-core",
    "pvops-kvm",
    "pvops-xen",
    "pvops-vmware",
    "pvops-hyperv",
];

/// What Miri and the fuzzers found.
struct Hardening {
    ok: bool,
    lines: Vec<String>,
}

/// Runs the Miri tests and a short fuzzing run of every parser. A missing
/// tool is a loud skip, and a failure under `CI=true`.
fn hardening(root: &std::path::Path) -> Hardening {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut h = Hardening {
        ok: true,
        lines: Vec::new(),
    };
    let missing = |h: &mut Hardening, what: &str, why: &str| {
        eprintln!("xtask: SKIPPED: {what}: {why}");
        h.lines.push(format!("{what}: SKIPPED ({why})"));
        if ci {
            h.ok = false;
        }
    };
    let miri = Command::new("cargo")
        .current_dir(root)
        .args(["+nightly", "miri", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if miri {
        let mut args = vec!["+nightly", "miri", "test"];
        for c in MIRI_CRATES {
            args.extend(["-p", c]);
        }
        args.push("--lib");
        eprintln!("xtask: cargo {}", args.join(" "));
        // Hypercall arguments are pointers passed as integers by the ABI;
        // permissive provenance says so instead of warning at every fake.
        let status = Command::new("cargo")
            .current_dir(root)
            .env("MIRIFLAGS", "-Zmiri-permissive-provenance")
            .args(&args)
            .status();
        match status {
            Ok(s) if s.success() => h
                .lines
                .push(format!("miri: passed ({})", MIRI_CRATES.join(", "))),
            Ok(s) => {
                h.ok = false;
                h.lines.push(format!("miri: FAILED ({s})"));
            }
            Err(e) => missing(&mut h, "miri", &e.to_string()),
        }
    } else {
        missing(
            &mut h,
            "miri",
            "no Miri on a nightly toolchain (rustup component add miri rust-src --toolchain nightly)",
        );
    }
    for check in [xtask::release::publish_dry_run, xtask::release::msrv_check] {
        match check(root) {
            xtask::release::Outcome::Passed(line) => h.lines.push(line),
            xtask::release::Outcome::Failed(line) => {
                h.ok = false;
                h.lines.push(line);
            }
            xtask::release::Outcome::Missing(why) => missing(&mut h, "msrv", &why),
        }
    }
    match xtask::fuzz::unavailable(root) {
        Some(why) => missing(&mut h, "fuzz", &why),
        None => {
            for target in xtask::fuzz::TARGETS {
                eprintln!(
                    "xtask: fuzzing {target} for {} s",
                    xtask::fuzz::SHORT_RUN_SECS
                );
                match xtask::fuzz::run(root, target, xtask::fuzz::SHORT_RUN_SECS) {
                    Ok(r) => h.lines.push(format!(
                        "fuzz {target}: {} runs in {} s, no crash",
                        r.runs,
                        xtask::fuzz::SHORT_RUN_SECS
                    )),
                    Err(e) => {
                        h.ok = false;
                        h.lines.push(format!("fuzz {target}: FAILED: {e:#}"));
                    }
                }
            }
        }
    }
    h
}

/// The static checks `test` runs first: formatting, and clippy with
/// warnings denied on the host and on the kernel target (the kernel's asm
/// and `no_std` paths only exist there).
const LINTS: &[&[&str]] = &[
    &["fmt", "--all", "--", "--check"],
    &[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ],
    &[
        "clippy",
        "-p",
        "example-kernel",
        "-p",
        "minimal-kernel",
        "-p",
        "loader-common",
        "-p",
        "multiboot2-kernel",
        "-p",
        "bootloader-kernel",
        "-p",
        "pvh-high-kernel",
        "-p",
        "pvops-ffi",
        "--target",
        "x86_64-unknown-none",
        "--",
        "-D",
        "warnings",
    ],
];

fn lint(root: &std::path::Path) -> Result<bool> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut ok = true;
    for args in LINTS {
        eprintln!("xtask: cargo {}", args.join(" "));
        let status = Command::new(&cargo)
            .current_dir(root)
            .args(*args)
            .status()
            .with_context(|| format!("could not run `cargo {}`", args.join(" ")))?;
        if !status.success() {
            eprintln!("xtask: FAILED: cargo {}", args.join(" "));
            ok = false;
        }
    }
    // Public docs must build without a warning (broken links, private
    // items named in public docs).
    eprintln!("xtask: RUSTDOCFLAGS=-Dwarnings cargo doc --workspace --no-deps");
    let status = Command::new(&cargo)
        .current_dir(root)
        .env("RUSTDOCFLAGS", "-D warnings")
        .args(["doc", "--workspace", "--no-deps"])
        .status()
        .context("could not run `cargo doc`")?;
    if !status.success() {
        eprintln!("xtask: FAILED: cargo doc --workspace --no-deps");
        ok = false;
    }
    Ok(ok)
}

fn test() -> Result<ExitCode> {
    let lints_ok = lint(&kernel::workspace_root())?;
    provision::ensure_qemu()?;
    if Env::ALL.iter().any(|e| e.is_xen() && e.is_implemented()) {
        provision::ensure_xen()?;
    }
    // kvm-nested's outer machine (packages, base initramfs, vmlinux;
    // cached). When it cannot be provisioned its boot test finds it
    // missing: a loud SKIPPED, and a failure under CI=true.
    if Env::KvmNested.is_implemented() {
        if let Err(e) = xtask::nested::ensure() {
            eprintln!("xtask: kvm-nested cannot be provisioned: {e:#}");
        }
    }
    if Env::ALL.iter().any(|e| e.is_domu() && e.is_implemented()) {
        xtask::domu::ensure_dom0()?;
    }
    // The loader boots (GRUB, the bootloader crate) need more tools; if
    // they cannot be installed here, their tests say SKIPPED (and fail
    // under CI=true) while everything else still runs.
    if let Err(e) = xtask::loaders::provision() {
        eprintln!(
            "xtask: warning: the loader boot tests cannot run here: {e:#}; they will report \
             SKIPPED, which fails under CI=true"
        );
    }
    let image = kernel::build()?;
    eprintln!("xtask: kernel image {}", image.display());

    let root = kernel::workspace_root();
    let records = root.join("target").join("boot-record");
    if records.exists() {
        fs::remove_dir_all(&records).with_context(|| format!("clearing {}", records.display()))?;
    }
    fs::create_dir_all(&records).with_context(|| format!("creating {}", records.display()))?;

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&root)
        .args(["test", "--workspace", "--no-fail-fast"])
        .env(record::RECORD_DIR_VAR, &records);
    // Inherited anyway; explicit because the boot tests' skip policy hangs on it.
    if let Some(ci) = std::env::var_os("CI") {
        command.env("CI", ci);
    }
    eprintln!("xtask: cargo test --workspace --no-fail-fast");
    // Tee its stdout to add up the `test result:` lines: the last one is
    // only the last crate's doc-tests, not the whole story.
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .context("could not run `cargo test --workspace`")?;
    let mut totals = Totals::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test's output")?;
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child
        .wait()
        .context("waiting for `cargo test --workspace`")?;

    let hardening = hardening(&root);
    let booted = record::read_all(&records);
    let mut failed = !status.success() || !lints_ok;
    println!();
    println!("environments:");
    for env in Env::ALL {
        let line = match (env.status(), booted.get(&env)) {
            (Status::NotImplemented { issue }, _) => {
                format!("NOT IMPLEMENTED yet (issue #{issue})")
            }
            (Status::Implemented, Some(record)) => {
                failed |= matches!(record, Record::Failed(_));
                record.to_string()
            }
            (Status::Implemented, None) => {
                failed = true;
                "NOT RUN: its boot test left no record (did the tests build and run?)".to_owned()
            }
        };
        println!("  {:<13} {line}", env.name());
    }
    if !status.success() {
        println!("cargo test --workspace failed ({status})");
    }
    if !lints_ok {
        println!("fmt/clippy failed (see `xtask: FAILED:` above)");
    }
    println!("hardening:");
    for line in &hardening.lines {
        println!("  {line}");
    }
    failed |= !hardening.ok;
    if totals.runs == 0 {
        failed = true;
        println!("no `test result:` line seen: no test ran");
    }
    println!("xtask test: {}", if failed { "FAILED" } else { "ok" });
    println!(
        "xtask: {} passed, {} failed, {} skipped",
        totals.passed, totals.failed, totals.ignored
    );
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Sums of cargo test's `test result:` lines.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    runs: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds `test result: ok. 3 passed; 1 failed; 2 ignored; ...` if `line` is one.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        let Some((_, counts)) = rest.split_once(". ") else {
            return;
        };
        self.runs += 1;
        for part in counts.split(';') {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_arguments() {
        let cli = Cli::try_parse_from([
            "xtask",
            "run",
            "--env",
            "kvm-hidden",
            "--smp",
            "2",
            "--bench",
            "--",
            "a=1",
            "b",
        ])
        .unwrap();
        let Cmd::Run(args) = cli.command else {
            panic!()
        };
        assert_eq!(args.env, Some(Env::KvmHidden));
        assert_eq!(args.smp, Some(2));
        assert!(args.bench);
        assert_eq!(args.extra, ["a=1", "b"]);

        let Cmd::Run(args) = Cli::try_parse_from(["xtask", "run"]).unwrap().command else {
            panic!()
        };
        assert_eq!((args.env, args.smp, args.bench), (None, None, false));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(Cli::try_parse_from(["xtask", "run", "--env", "qemu"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "--smp", "0"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "run", "extra"]).is_err());
    }

    #[test]
    fn cargo_totals() {
        let mut t = Totals::default();
        for line in [
            "running 3 tests",
            "test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            "test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
            "test foo ... ok",
            "test result: garbage",
        ] {
            t.add(line);
        }
        assert_eq!(
            t,
            Totals {
                runs: 3,
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
    }

    #[test]
    fn default_is_never_kvm_hidden() {
        let (env, why) = default_env();
        assert!(matches!(env, Env::Tcg | Env::Kvm | Env::KvmNested), "{env}");
        assert!(!why.is_empty());
        // Where the host's KVM cannot complete a hypercall, the default
        // must not be the host's KVM.
        if provision::kvm_completes_hypercalls().is_err() {
            assert_ne!(env, Env::Kvm, "{why}");
        }
    }
}
