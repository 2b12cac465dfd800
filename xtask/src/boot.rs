//! One boot of a kernel image in one environment, judged: the glue between
//! [`crate::env`], [`crate::qemu`] and [`crate::protocol`].

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::env::{Env, Launch, Medium};
use crate::protocol::{self, Outcome, Problem};
use crate::provision;
use crate::qemu::{self, QemuRun};

/// What the kernel is asked to do (`pvops.mode=` on its command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Run the self-tests.
    #[default]
    Test,
    /// Run the self-tests, then the benchmarks.
    Bench,
}

impl Mode {
    /// The `pvops.mode=` value.
    pub const fn name(self) -> &'static str {
        match self {
            Mode::Test => "test",
            Mode::Bench => "bench",
        }
    }
}

/// Benchmarks run much longer than the self-tests alone.
const BENCH_TIMEOUT_FACTOR: u32 = 3;

/// How to boot.
#[derive(Debug, Clone)]
pub struct BootOptions {
    /// Virtual CPUs.
    pub smp: u32,
    /// Test or bench mode.
    pub mode: Mode,
    /// Extra kernel command-line words, after `pvops.mode=`.
    pub extra_cmdline: Vec<String>,
    /// Echo the console live to stdout.
    pub echo: bool,
    /// Override of the environment's time bound.
    pub timeout: Option<Duration>,
    /// Override of the fewest `ok` test lines a pass needs (for kernels
    /// with fewer self-tests than the example kernel).
    pub min_ok: Option<usize>,
    /// How the image reaches the machine: an ELF for `-kernel` (the
    /// default), or a loader's CD or disk image (whose command line is its
    /// own: `cmdline()` is not passed then).
    pub medium: Medium,
}

impl Default for BootOptions {
    fn default() -> Self {
        BootOptions {
            smp: 1,
            mode: Mode::Test,
            extra_cmdline: Vec::new(),
            echo: false,
            timeout: None,
            min_ok: None,
            medium: Medium::Kernel,
        }
    }
}

impl BootOptions {
    /// The kernel command line: `pvops.mode=<mode>` then the extras.
    pub fn cmdline(&self) -> String {
        let mut words = vec![format!("pvops.mode={}", self.mode.name())];
        words.extend(self.extra_cmdline.iter().cloned());
        words.join(" ")
    }
}

/// The kernel image a boot used: which file, and exactly which bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootImage {
    /// Absolute path handed to QEMU.
    pub path: PathBuf,
    /// SHA-256 of its contents (lower-case hex) when QEMU was started.
    pub sha256: String,
    /// Size in bytes.
    pub len: u64,
}

impl BootImage {
    /// Reads and hashes the image at `path`.
    pub fn read(path: &Path) -> Result<BootImage> {
        let path = path
            .canonicalize()
            .with_context(|| format!("kernel image {} not found", path.display()))?;
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut sha256 = String::with_capacity(64);
        for byte in Sha256::digest(&bytes) {
            let _ = write!(sha256, "{byte:02x}");
        }
        Ok(BootImage {
            path,
            sha256,
            len: bytes.len() as u64,
        })
    }
}

/// Everything decided before QEMU starts.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The environment.
    pub env: Env,
    /// The kernel image.
    pub image: BootImage,
    /// The kernel command line.
    pub cmdline: String,
    /// QEMU's path.
    pub qemu: PathBuf,
    /// QEMU's arguments.
    pub args: Vec<OsString>,
    /// The time bound.
    pub timeout: Duration,
    /// What the run is held to.
    pub expectation: protocol::Expectation,
}

impl Plan {
    /// Decides how to boot `kernel` in `env`. Needs QEMU on PATH (and, for
    /// Xen, the Xen binary); does not check whether `env` is implemented.
    pub fn new(env: Env, kernel: &Path, options: &BootOptions) -> Result<Plan> {
        if env.is_domu() {
            anyhow::bail!(
                "{env} boots a Linux dom0 that makes the kernel a domU: use xtask::domu::boot \
                 (or xtask::boot::boot)"
            );
        }
        let image = BootImage::read(kernel)?;
        let mut cmdline = options.cmdline();
        for word in env.extra_cmdline() {
            cmdline.push(' ');
            cmdline.push_str(word);
        }
        let xen = provision::xen_binary();
        if env.is_xen() && !xen.is_file() {
            anyhow::bail!(
                "the Xen binary {} is missing; provision it first (xtask::provision::ensure_xen)",
                xen.display()
            );
        }
        let firmware = match options.medium {
            Medium::UefiDisk => Some(Path::new(crate::loaders::OVMF)),
            _ => None,
        };
        if let Some(f) = firmware.filter(|f| !f.is_file()) {
            anyhow::bail!(
                "UEFI firmware {} is missing (apt-get install -y {})",
                f.display(),
                crate::loaders::OVMF_PACKAGE
            );
        }
        let launch = Launch {
            kernel: &image.path,
            medium: options.medium,
            firmware,
            cmdline: &cmdline,
            smp: options.smp,
            xen: env.is_xen().then_some(xen.as_path()),
        };
        let args = env.qemu_args(&launch)?;
        let qemu = provision::qemu().with_context(|| {
            format!(
                "{} is not on PATH (apt-get install -y {})",
                provision::QEMU,
                provision::QEMU_PACKAGE
            )
        })?;
        let timeout = options.timeout.unwrap_or_else(|| match options.mode {
            Mode::Test => env.timeout(),
            Mode::Bench => env.timeout() * BENCH_TIMEOUT_FACTOR,
        });
        let mut expectation = env.expectation();
        if let Some(min_ok) = options.min_ok {
            expectation.min_ok = min_ok;
        }
        Ok(Plan {
            env,
            image,
            cmdline,
            qemu,
            args,
            timeout,
            expectation,
        })
    }

    /// The QEMU command as a shell would take it (for logs).
    pub fn command_line(&self) -> String {
        std::iter::once(self.qemu.as_os_str())
            .chain(self.args.iter().map(OsString::as_os_str))
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./,=:+@%".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A finished, judged boot.
#[derive(Debug, Clone)]
pub struct Boot {
    /// What was booted, and how.
    pub plan: Plan,
    /// The QEMU run.
    pub run: QemuRun,
    /// Parsed console and termination.
    pub outcome: Outcome,
    /// Every problem [`protocol::check`] found; empty if the boot passed.
    pub problems: Vec<Problem>,
}

impl Boot {
    /// Whether the run met its environment's expectation.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The image that was booted.
    pub fn image(&self) -> &BootImage {
        &self.plan.image
    }

    /// One line: PASS/FAIL, environment, and the gist.
    pub fn verdict(&self) -> String {
        let console = &self.outcome.console;
        let ok = console
            .tests
            .iter()
            .filter(|t| t.verdict == protocol::Verdict::Ok)
            .count();
        let platform = console
            .platforms
            .first()
            .map(|p| format!("platform={} backend={}", p.platform, p.backend))
            .unwrap_or_else(|| "no platform line".into());
        let elapsed = self.run.elapsed.as_secs_f64();
        if self.passed() {
            format!(
                "PASS {}: {platform}, {ok} test(s) ok, {} bench line(s), exit code 0, {elapsed:.1} s",
                self.plan.env,
                console.benches.len()
            )
        } else {
            format!(
                "FAIL {}: {} problem(s) ({platform}, {ok} test(s) ok, QEMU {}, {elapsed:.1} s)",
                self.plan.env,
                self.problems.len(),
                self.outcome.termination
            )
        }
    }

    /// A report for failures: the verdict, every problem, the kernel's
    /// warnings and errors, QEMU's command and stderr, and the console.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", self.verdict());
        for problem in &self.problems {
            let _ = writeln!(out, "  problem: {problem}");
        }
        for note in &self.outcome.console.notes {
            let _ = writeln!(out, "  kernel {:?}: {}", note.kind, note.text);
        }
        let _ = writeln!(
            out,
            "image: {} (sha256 {})",
            self.plan.image.path.display(),
            self.plan.image.sha256
        );
        let _ = writeln!(out, "command: {}", self.plan.command_line());
        for line in &self.run.stderr {
            let _ = writeln!(out, "qemu stderr: {line}");
        }
        if self.run.dropped_lines > 0 {
            let _ = writeln!(
                out,
                "({} further lines were not recorded)",
                self.run.dropped_lines
            );
        }
        let _ = writeln!(out, "console ({} lines):", self.run.console.len());
        for line in &self.run.console {
            let _ = writeln!(out, "  | {line}");
        }
        out
    }
}

/// Boots `kernel` in `env` and judges the run against `env`'s expectation.
/// A time-out, or QEMU stopping the guest for good, is an error (a
/// [`qemu::Killed`] inside the `anyhow::Error`).
pub fn boot(env: Env, kernel: &Path, options: &BootOptions) -> Result<Boot> {
    if env.is_domu() {
        let mut boots = crate::domu::boot(kernel, &[(env, options.clone())], options.echo)?;
        return boots.pop().context("the domU run judged no guest");
    }
    let plan = Plan::new(env, kernel, options)?;
    run_plan(plan, options.echo)
}

/// Runs a prepared [`Plan`] and judges it.
pub fn run_plan(plan: Plan, echo: bool) -> Result<Boot> {
    run_plan_observed(plan, echo, &mut |_| {})
}

/// [`run_plan`], showing `observer` every console line as it arrives.
/// A kvm-nested plan is the inner run: it gets an outer machine of its
/// own ([`crate::nested::run`]; to run several in one outer boot, call
/// that), and `observer` sees the inner run's lines.
pub fn run_plan_observed(plan: Plan, echo: bool, observer: &mut dyn FnMut(&str)) -> Result<Boot> {
    if plan.env.is_nested() {
        let mut inner = |l: crate::nested::Line<'_>| {
            if l.run.is_some() && !l.begins {
                observer(l.text)
            }
        };
        let options = crate::nested::Options {
            echo,
            ..crate::nested::Options::default()
        };
        let nested = crate::nested::run(std::slice::from_ref(&plan), &options, &mut inner)?;
        if echo {
            eprintln!("xtask: kvm-nested: {}", nested.timings.summary());
        }
        return nested
            .boots
            .into_iter()
            .next()
            .context("kvm-nested returned no inner run");
    }
    let run = qemu::run_observed(&plan.qemu, &plan.args, plan.timeout, echo, observer)
        .with_context(|| format!("booting {} in {}", plan.image.path.display(), plan.env))?;
    let outcome = Outcome {
        console: protocol::parse(&run.console),
        termination: run.termination,
    };
    let problems = protocol::check(&outcome, &plan.expectation);
    Ok(Boot {
        plan,
        run,
        outcome,
        problems,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline() {
        let mut o = BootOptions::default();
        assert_eq!(o.cmdline(), "pvops.mode=test");
        o.mode = Mode::Bench;
        o.extra_cmdline = vec!["a=1".into(), "b".into()];
        assert_eq!(o.cmdline(), "pvops.mode=bench a=1 b");
    }

    #[test]
    fn image_hash() {
        let dir = std::env::temp_dir().join(format!("xtask-image-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k");
        fs::write(&file, b"abc").unwrap();
        let image = BootImage::read(&file).unwrap();
        assert_eq!(
            image.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(image.len, 3);
        assert!(image.path.is_absolute());
        fs::remove_dir_all(&dir).unwrap();
        assert!(BootImage::read(&file).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("-m"), "-m");
        assert_eq!(
            shell_quote("isa-debug-exit,iobase=0x501"),
            "isa-debug-exit,iobase=0x501"
        );
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
