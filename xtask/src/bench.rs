//! Benchmarks: boots the kernel in bench mode and, under KVM, reads QEMU's
//! per-vCPU counters around each measured loop, so every op gets VM exits
//! and hypercalls per call — figures that do not depend on how fast this
//! (emulated) machine is. Guest cycle counts are kept, labelled as the
//! kernel labels them (`timing=emulated`).
//!
//! The kernel brackets each loop with `bench-sync <n>` / `bench-sync <n>.end`
//! and idles after each (`pvops.bench.sync=<ms>`), so the counters read at
//! those lines cover the loop and a fixed overhead; the `noop` loop measures
//! that overhead, and it is subtracted.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::boot::{self, Boot, BootOptions, Mode, Plan};
use crate::env::{Accel, Env};
use crate::kernel;
use crate::protocol::Bench;
use crate::qmp::{Qmp, Stats};

/// How long the kernel idles after each sync line: long enough for the
/// harness to read the counters before the loop starts.
pub const SYNC_MS: u64 = 150;
/// Iterations per op under KVM: host interrupts and timer noise add a few
/// hundred exits per loop, which this many iterations makes small per op.
pub const KVM_ITERS: u64 = 2048;
/// The idle after each sync line in kvm-nested: the line crosses the
/// inner and the outer serial console, and the counters come back over
/// the outer machine's second serial port.
pub const NESTED_SYNC_MS: u64 = 400;

/// One measured op in one boot.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The op.
    pub op: String,
    /// native, pvops, patched or static.
    pub path: String,
    /// Median cycles per op, as the guest measured them.
    pub cycles_median: u64,
    /// Fewest cycles per op.
    pub cycles_min: u64,
    /// Iterations measured.
    pub iters: u64,
    /// Whether the kernel labelled its cycles as emulated.
    pub emulated: bool,
    /// Counters per op: KVM's (exits, hypercalls, ...) from QEMU, the
    /// `noop` overhead subtracted; or the guest's own hypercall count
    /// (Xen); empty where neither exists (TCG).
    pub per_op: BTreeMap<String, f64>,
}

/// All rows of one boot.
#[derive(Debug, Clone)]
pub struct GuestRun {
    /// The environment.
    pub env: Env,
    /// What was changed from the environment's defaults (e.g. a KVM feature
    /// switched off), or "default".
    pub variant: String,
    /// The platform line's features.
    pub features: String,
    /// The rows, in the kernel's order.
    pub rows: Vec<Row>,
}

/// A change to an environment's QEMU `-cpu` model for one boot (a KVM
/// feature switched off), and what the platform line must then say.
#[derive(Debug, Clone)]
pub struct Variant {
    /// Short name for reports.
    pub name: String,
    /// The `-cpu` value to use instead of the environment's.
    pub cpu: Option<String>,
    /// Backend features that must be off in this variant.
    pub absent: Vec<String>,
    /// The KVM signature is hidden (`kvm=off`): the native backend is
    /// expected instead of the environment's.
    pub native: bool,
}

impl Variant {
    /// The environment as it is.
    pub fn default_variant() -> Variant {
        Variant {
            name: "default".into(),
            cpu: None,
            absent: Vec::new(),
            native: false,
        }
    }

    /// Changes `plan` (QEMU's `-cpu` and the expected features) to this
    /// variant.
    pub fn apply(&self, plan: &mut Plan) -> Result<()> {
        if let Some(cpu) = &self.cpu {
            replace_cpu(&mut plan.args, cpu)?;
        }
        let e = &mut plan.expectation;
        e.features_present.retain(|f| !self.absent.contains(f));
        e.features_absent.extend(self.absent.iter().cloned());
        if self.native {
            e.platform = "native".into();
            e.backend = "native".into();
            e.features_present.clear();
        }
        Ok(())
    }
}

fn replace_cpu(args: &mut [OsString], cpu: &str) -> Result<()> {
    let i = args
        .iter()
        .position(|a| a == "-cpu")
        .context("the environment's QEMU arguments have no -cpu")?;
    args[i + 1] = cpu.into();
    Ok(())
}

/// Counter snapshots keyed by sync sequence number.
#[derive(Default)]
struct Snapshots {
    begin: BTreeMap<u32, Stats>,
    end: BTreeMap<u32, Stats>,
    error: Option<String>,
}

/// A QMP client that reads the per-vCPU KVM counters (on a socket, or
/// over the nested machine's serial line).
trait VcpuStats: Sized {
    fn vcpu_stats(&mut self) -> Result<Stats>;
}

impl VcpuStats for Qmp {
    fn vcpu_stats(&mut self) -> Result<Stats> {
        Qmp::vcpu_stats(self)
    }
}

impl VcpuStats for crate::qmp::SerialQmp {
    fn vcpu_stats(&mut self) -> Result<Stats> {
        crate::qmp::SerialQmp::vcpu_stats(self)
    }
}

impl Snapshots {
    /// Takes the counters at sync point `n` (its end when `end`),
    /// connecting `qmp` first if need be; the first error sticks.
    fn take<Q: VcpuStats>(
        &mut self,
        qmp: &mut Option<Q>,
        connect: impl FnOnce() -> Result<Q>,
        n: u32,
        end: bool,
    ) {
        if self.error.is_some() {
            return;
        }
        if qmp.is_none() {
            match connect() {
                Ok(q) => *qmp = Some(q),
                Err(e) => {
                    self.error = Some(format!("{e:#}"));
                    return;
                }
            }
        }
        let Some(q) = qmp.as_mut() else { return };
        match q.vcpu_stats() {
            Ok(s) if end => {
                self.end.insert(n, s);
            }
            Ok(s) => {
                self.begin.insert(n, s);
            }
            Err(e) => self.error = Some(format!("{e:#}")),
        }
    }
}

fn parse_sync(line: &str) -> Option<(u32, bool)> {
    let rest = line.trim().strip_prefix("bench-sync ")?;
    match rest.strip_suffix(".end") {
        Some(n) => Some((n.parse().ok()?, true)),
        None => Some((rest.parse().ok()?, false)),
    }
}

/// Boots `kernel` in `env` (as `variant` says) in bench mode and collects
/// its rows, with KVM counters per op where the environment has them.
pub fn run_guest(env: Env, kernel: &Path, smp: u32, variant: &Variant) -> Result<(GuestRun, Boot)> {
    let kvm = env.accel() == Accel::Kvm;
    let mut options = BootOptions {
        smp,
        mode: Mode::Bench,
        ..BootOptions::default()
    };
    if kvm {
        options
            .extra_cmdline
            .push(format!("pvops.bench.sync={SYNC_MS}"));
        options
            .extra_cmdline
            .push(format!("pvops.bench.iters={KVM_ITERS}"));
    }
    if env.is_domu() {
        // One dom0 boot for this one domU; the guest counts its own
        // hypercalls (bench lines carry hypercalls=), no QMP.
        options.timeout = Some(env.timeout() * 3);
        let mut boots = crate::domu::boot(kernel, &[(env, options)], false)?;
        let booted = boots.pop().context("the domU run judged no guest")?;
        return finish(env, variant, booted, &Snapshots::default(), false);
    }
    let mut plan = Plan::new(env, kernel, &options)?;
    variant.apply(&mut plan)?;
    let socket = qmp_socket_path(env, &variant.name);
    if kvm {
        let _ = std::fs::remove_file(&socket);
        plan.args.push("-qmp".into());
        plan.args
            .push(format!("unix:{},server=on,wait=off", socket.display()).into());
    }
    let mut snaps = Snapshots::default();
    let mut qmp: Option<Qmp> = None;
    let mut observer = |line: &str| {
        let Some((n, end)) = parse_sync(line) else {
            return;
        };
        if kvm {
            snaps.take(
                &mut qmp,
                || Qmp::connect(&socket, Duration::from_secs(5)),
                n,
                end,
            );
        }
    };
    let booted = boot::run_plan_observed(plan, false, &mut observer)?;
    drop(qmp);
    let _ = std::fs::remove_file(&socket);
    if let Some(e) = &snaps.error {
        bail!("reading KVM counters over QMP failed: {e}");
    }
    finish(env, variant, booted, &snaps, kvm)
}

/// Judges a bench boot and reads its rows.
fn finish(
    env: Env,
    variant: &Variant,
    booted: Boot,
    snaps: &Snapshots,
    kvm: bool,
) -> Result<(GuestRun, Boot)> {
    if !booted.passed() {
        bail!("bench boot failed:\n{}", booted.report());
    }
    let features = booted
        .outcome
        .console
        .platforms
        .first()
        .map(|p| {
            if p.features.is_empty() {
                "-".to_owned()
            } else {
                p.features.join(",")
            }
        })
        .unwrap_or_default();
    if booted.outcome.console.benches.is_empty() {
        bail!(
            "{env} ({}): the kernel passed but printed no bench line (did it get \
             pvops.mode=bench on its command line?)",
            variant.name
        );
    }
    let rows = rows_from(&booted.outcome.console.benches, snaps, kvm)?;
    Ok((
        GuestRun {
            env,
            variant: variant.name.clone(),
            features,
            rows,
        },
        booted,
    ))
}

/// Bench mode on kvm-nested: the default configuration and each of
/// `variants`, each an inner run of one outer boot, with the inner KVM's
/// counters read over QMP around every loop. One [`GuestRun`] per
/// configuration that passed, in order, and a reason per one that did not
/// (its console in the reason): one failure does not hide the others'
/// figures.
/// `iters` per op: [`KVM_ITERS`] for figures to publish, fewer for a
/// quicker check.
pub fn run_nested(
    env: Env,
    kernel: &Path,
    smp: u32,
    variants: &[Variant],
    iters: u64,
    echo: bool,
) -> Result<NestedBench> {
    let options = BootOptions {
        smp,
        mode: Mode::Bench,
        extra_cmdline: vec![
            format!("pvops.bench.sync={NESTED_SYNC_MS}"),
            format!("pvops.bench.iters={iters}"),
        ],
        ..BootOptions::default()
    };
    let plans = crate::nested::plans(env, kernel, &options, variants)?;
    let mut snaps: Vec<Snapshots> = plans.iter().map(|_| Snapshots::default()).collect();
    let mut qmp: Option<crate::qmp::SerialQmp> = None;
    let mut observer = |line: crate::nested::Line<'_>| {
        let Some(run) = line.run else { return };
        if line.begins {
            if let Some(q) = qmp.as_mut() {
                q.new_session();
            }
            return;
        }
        let Some((n, end)) = parse_sync(line.text) else {
            return;
        };
        snaps[run].take(
            &mut qmp,
            || crate::qmp::SerialQmp::connect(line.socket, Duration::from_secs(5)),
            n,
            end,
        );
    };
    let outer = crate::nested::Options {
        echo,
        qmp: true,
        ..crate::nested::Options::default()
    };
    let nested = crate::nested::run(&plans, &outer, &mut observer)?;
    drop(qmp);
    eprintln!("xtask: {env}: {}", nested.timings.summary());
    let mut out = NestedBench::default();
    for ((booted, snap), variant) in nested.boots.into_iter().zip(snaps).zip(variants) {
        if let Some(e) = snap.error {
            out.failures.push(format!(
                "{env} ({}): reading KVM counters over the serial QMP failed: {e}",
                variant.name
            ));
            continue;
        }
        if !booted.passed() {
            out.failures.push(format!(
                "{env} ({}): bench boot failed:\n{}",
                variant.name,
                booted.report()
            ));
            continue;
        }
        let features = booted
            .outcome
            .console
            .platforms
            .first()
            .map(|p| {
                if p.features.is_empty() {
                    "-".to_owned()
                } else {
                    p.features.join(",")
                }
            })
            .unwrap_or_default();
        let rows = match rows_from(&booted.outcome.console.benches, &snap, true) {
            Ok(rows) => rows,
            Err(e) => {
                out.failures
                    .push(format!("{env} ({}): {e:#}", variant.name));
                continue;
            }
        };
        out.runs.push((
            GuestRun {
                env,
                variant: variant.name.clone(),
                features,
                rows,
            },
            booted,
        ));
    }
    Ok(out)
}

/// What [`run_nested`] measured.
#[derive(Debug, Default)]
pub struct NestedBench {
    /// The configurations that passed, with their rows.
    pub runs: Vec<(GuestRun, Boot)>,
    /// Why each other configuration gave no rows.
    pub failures: Vec<String>,
}

fn qmp_socket_path(env: Env, variant: &str) -> PathBuf {
    let dir = kernel::workspace_root().join("target").join("bench");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(format!(
        "qmp-{}-{}-{}.sock",
        std::process::id(),
        env.name(),
        variant
    ))
}

fn delta(s: &Snapshots, n: u32) -> Option<BTreeMap<String, f64>> {
    let (b, e) = (s.begin.get(&n)?, s.end.get(&n)?);
    Some(
        e.iter()
            .map(|(k, v)| (k.clone(), v.saturating_sub(*b.get(k).unwrap_or(&0)) as f64))
            .collect(),
    )
}

fn rows_from(benches: &[Bench], snaps: &Snapshots, kvm: bool) -> Result<Vec<Row>> {
    let num = |b: &Bench, k: &str| -> Result<u64> {
        b.get(k)
            .with_context(|| format!("bench line {} {} lacks {k}", b.op, b.path))?
            .parse()
            .with_context(|| format!("bench line {} {}: {k} is not a number", b.op, b.path))
    };
    let baseline = benches
        .iter()
        .find(|b| b.op == "noop")
        .and_then(|b| b.get("seq")?.parse().ok())
        .and_then(|n| delta(snaps, n));
    if kvm && baseline.is_none() {
        bail!("no counters for the noop baseline (did the kernel print bench-sync lines?)");
    }
    let mut rows = Vec::new();
    for b in benches.iter().filter(|b| b.op != "noop") {
        let iters = num(b, "iters")?.max(1);
        let mut per_op = BTreeMap::new();
        // Counted by the guest itself (the Xen backend counts its own
        // hypercalls): no host counters or baseline needed.
        if b.get("hypercalls").is_some() {
            per_op.insert(
                "hypercalls".to_owned(),
                num(b, "hypercalls")? as f64 / iters as f64,
            );
        }
        if kvm {
            let n: u32 = num(b, "seq")? as u32;
            let d = delta(snaps, n)
                .with_context(|| format!("no counters around {} {}", b.op, b.path))?;
            let base = baseline.as_ref().expect("checked above");
            for (k, v) in d {
                let over = v - base.get(&k).copied().unwrap_or(0.0);
                per_op.insert(k, over / iters as f64);
            }
        }
        rows.push(Row {
            op: b.op.clone(),
            path: b.path.clone(),
            cycles_median: num(b, "cycles_median")?,
            cycles_min: num(b, "cycles_min")?,
            iters,
            emulated: b.get("timing") == Some("emulated"),
            per_op,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_lines() {
        assert_eq!(parse_sync("bench-sync 3"), Some((3, false)));
        assert_eq!(parse_sync("bench-sync 12.end\r"), Some((12, true)));
        assert_eq!(parse_sync("bench-sync x"), None);
        assert_eq!(parse_sync("bench op=x"), None);
    }

    fn bench(op: &str, seq: u32) -> Bench {
        Bench {
            op: op.into(),
            path: "pvops".into(),
            values: vec![
                ("cycles_median".into(), "10".into()),
                ("cycles_min".into(), "9".into()),
                ("iters".into(), "100".into()),
                ("timing".into(), "emulated".into()),
                ("seq".into(), seq.to_string()),
            ],
        }
    }

    fn stats(exits: u64) -> Stats {
        [("exits".to_owned(), exits)].into_iter().collect()
    }

    #[test]
    fn per_op_counts_subtract_the_noop_overhead() {
        let mut s = Snapshots::default();
        s.begin.insert(1, stats(1000));
        s.end.insert(1, stats(1040));
        s.begin.insert(2, stats(5000));
        s.end.insert(2, stats(5240));
        let rows = rows_from(&[bench("noop", 1), bench("eoi", 2)], &s, true).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].per_op.get("exits"), Some(&2.0));
        assert!(rows[0].emulated);
        // Without counters for an op, KVM rows are an error, not zeros.
        let mut s2 = Snapshots::default();
        s2.begin.insert(1, stats(0));
        s2.end.insert(1, stats(0));
        assert!(rows_from(&[bench("noop", 1), bench("eoi", 2)], &s2, true).is_err());
        // TCG: no counters needed.
        assert!(
            rows_from(&[bench("eoi", 2)], &Snapshots::default(), false).unwrap()[0]
                .per_op
                .is_empty()
        );
    }
}
