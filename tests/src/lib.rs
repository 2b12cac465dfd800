//! Helpers of the host-side boot tests: build the kernel once per test
//! process, boot each environment once, and the skip policy.
//!
//! Skip policy: a test whose resource is missing (no QEMU, no usable
//! /dev/kvm, no Xen) prints `SKIPPED: <why>` to stderr and passes, unless
//! `CI=true`, where the same situation is a failure: CI must never be
//! green for a test it did not run.

pub mod fixture;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use xtask::boot::{self, Boot, BootImage, BootOptions};
use xtask::env::Env;
use xtask::nested::NestedRun;
use xtask::record::{self, Record};
use xtask::{kernel, provision};

/// Whether we run under CI (`CI=true`).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips the calling test with a loud notice, or panics under `CI=true`.
pub fn skip(why: &str) {
    if is_ci() {
        panic!("resource missing under CI=true, which is a failure, not a skip: {why}");
    }
    eprintln!();
    eprintln!("******** SKIPPED: {why} ********");
    eprintln!("******** (under CI=true this would fail) ********");
    eprintln!();
}

/// The kernel image, built at most once per test process: the boot tests
/// run on parallel threads and must not race the build. (Other processes
/// building at the same time are serialised by cargo's lock on
/// `target/kernel`.)
pub fn kernel_image() -> Result<&'static Path, &'static str> {
    static KERNEL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    KERNEL
        .get_or_init(|| kernel::build().map_err(|e| format!("{e:#}")))
        .as_deref()
        .map_err(String::as_str)
}

/// Result of booting one environment.
#[derive(Debug)]
pub enum Booted {
    /// A resource is missing; why.
    Skipped(String),
    /// The harness could not boot or QEMU timed out; the error.
    Error(String),
    /// QEMU ran to its end; the judged boot.
    Ran(Box<Boot>),
}

/// Result of kvm-nested's one outer boot: the default configuration and
/// its feature-off matrix.
#[derive(Debug)]
pub enum NestedBooted {
    /// A resource is missing; why.
    Skipped(String),
    /// The outer machine failed, or an inner run never ended; the error
    /// (with the console's tail).
    Error(String),
    /// Every inner run ended; each judged on its own (the default first).
    Ran(Box<NestedRun>),
}

/// Boots kvm-nested once per test process: one outer machine runs the
/// default configuration, then each KVM feature off, then `kvm=off`
/// ([`xtask::nested::boot_matrix`]). [`boot_once`] of kvm-nested is its
/// first inner run.
pub fn nested_matrix_once() -> &'static NestedBooted {
    static RUN: OnceLock<NestedBooted> = OnceLock::new();
    RUN.get_or_init(|| {
        let env = Env::KvmNested;
        if let Some(why) = provision::unavailable(env) {
            return NestedBooted::Skipped(format!("environment {env}: {why}"));
        }
        let kernel = match kernel_image() {
            Ok(kernel) => kernel,
            Err(e) => return NestedBooted::Error(format!("could not get the kernel image: {e}")),
        };
        let options = BootOptions {
            smp: env.test_smp(),
            ..BootOptions::default()
        };
        match xtask::nested::boot_matrix(kernel, &options) {
            Ok(run) => NestedBooted::Ran(Box::new(run)),
            Err(e) => NestedBooted::Error(format!("{e:#}")),
        }
    })
}

/// Held while Xen runs under TCG for a boot test of this process (the dom0
/// environments and the domU run): the domU run keeps both host cores
/// busy for minutes, and a dom0 boot beside it saw its one-shot timer fire
/// 486 ms late (the bound is 250 ms) on a loaded machine. The dom0 boots
/// take seconds, so waiting for each other costs little.
static XEN_UNDER_TCG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Boots the kernel in every implemented domU environment at once, in one
/// dom0 boot ([`xtask::domu::boot`]), once per test process.
fn domus_once() -> &'static Result<Vec<Boot>, String> {
    static DOMUS: OnceLock<Result<Vec<Boot>, String>> = OnceLock::new();
    DOMUS.get_or_init(|| {
        let _xen = XEN_UNDER_TCG.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = kernel_image().map_err(|e| format!("could not get the kernel image: {e}"))?;
        let guests: Vec<(Env, BootOptions)> = Env::DOMU
            .into_iter()
            .filter(|e| e.is_implemented())
            .map(|e| {
                let options = BootOptions {
                    smp: e.test_smp(),
                    ..BootOptions::default()
                };
                (e, options)
            })
            .collect();
        xtask::domu::boot(kernel, &guests, false).map_err(|e| format!("{e:#}"))
    })
}

/// Boots the kernel in `env` once per test process (test mode, 1 CPU); later
/// callers, including concurrent ones, share the result. The domU
/// environments share one dom0 boot.
pub fn boot_once(env: Env) -> &'static Booted {
    static BOOTS: [OnceLock<Booted>; Env::ALL.len()] = [const { OnceLock::new() }; Env::ALL.len()];
    let index = Env::ALL.iter().position(|&e| e == env).unwrap_or_default();
    BOOTS[index].get_or_init(|| {
        if env.is_nested() {
            return match nested_matrix_once() {
                NestedBooted::Skipped(why) => Booted::Skipped(why.clone()),
                NestedBooted::Error(e) => Booted::Error(e.clone()),
                NestedBooted::Ran(run) => match run.boots.first() {
                    Some(b) => Booted::Ran(Box::new(b.clone())),
                    None => Booted::Error("kvm-nested ran no inner configuration".into()),
                },
            };
        }
        if let Some(why) = provision::unavailable(env) {
            return Booted::Skipped(format!("environment {env}: {why}"));
        }
        if env.is_domu() {
            return match domus_once() {
                Err(e) => Booted::Error(e.clone()),
                Ok(boots) => match boots.iter().find(|b| b.plan.env == env) {
                    Some(b) => Booted::Ran(Box::new(b.clone())),
                    None => Booted::Error(format!("the domU run did not include {env}")),
                },
            };
        }
        let kernel = match kernel_image() {
            Ok(kernel) => kernel,
            Err(e) => return Booted::Error(format!("could not get the kernel image: {e}")),
        };
        let options = BootOptions {
            smp: env.test_smp(),
            ..BootOptions::default()
        };
        let _xen = env
            .is_xen()
            .then(|| XEN_UNDER_TCG.lock().unwrap_or_else(|e| e.into_inner()));
        match boot::boot(env, kernel, &options) {
            Ok(b) => Booted::Ran(Box::new(b)),
            Err(e) => Booted::Error(format!("{e:#}")),
        }
    })
}

/// The body of a boot test: boots `env` and asserts the run passed with the
/// expected platform and backend, printing the console if not. Records
/// the result for `cargo xtask test`.
pub fn assert_boots(env: Env) {
    assert!(
        env.is_implemented(),
        "{env} is not implemented: it has no boot test yet"
    );
    match boot_once(env) {
        Booted::Skipped(why) => {
            record::write(env, &Record::Skipped(why.clone()));
            skip(why);
        }
        Booted::Error(e) => {
            record::write(env, &Record::Failed(e.clone()));
            panic!("boot in {env} failed: {e}");
        }
        Booted::Ran(b) => {
            if b.passed() {
                record::write(env, &Record::Passed(b.verdict()));
                eprintln!("{}", b.verdict());
            } else {
                record::write(env, &Record::Failed(b.verdict()));
                eprintln!("{}", b.report());
                panic!("{}", b.verdict());
            }
        }
    }
}

/// The image every environment that booted the example kernel used,
/// checked to be one and the same file and bytes (and the same as the
/// image on disk now). (`xen-hvm-domu` boots a GRUB CD instead.)
pub fn images_booted() -> Vec<(Env, BootImage)> {
    Env::ALL
        .into_iter()
        .filter(|e| e.is_implemented() && e.guest() == xtask::env::Guest::ExampleKernel)
        .filter_map(|env| match boot_once(env) {
            Booted::Ran(b) => Some((env, b.image().clone())),
            Booted::Skipped(_) | Booted::Error(_) => None,
        })
        .collect()
}
