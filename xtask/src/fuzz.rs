//! Short fuzzing runs of every parser of outside data (`fuzz/`, cargo fuzz
//! with libFuzzer on nightly), as part of `cargo xtask test`; the corpus and
//! the regression inputs under `fuzz/regressions/<target>/` are replayed
//! first, so a crash once found stays fixed.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// The fuzz targets (`fuzz/fuzz_targets/<name>.rs`): boot information
/// (PVH and PV), ACPI, the command line, clock scaling, CPUID detection,
/// the pvclock version protocol under a racing writer, the Xen console
/// ring indices, event-channel bitmap walking, KVM feature/hint parsing
/// and planning, the ELF-note layout of a PVH image, the xenstore
/// client against a scripted daemon, and VMware's SMBIOS evidence,
/// backdoor replies and timing leaf. Thirteen targets of
/// [`SHORT_RUN_SECS`] each keep the short run a little over two minutes.
pub const TARGETS: &[&str] = &[
    "start_info",
    "pv_start_info",
    "acpi",
    "cmdline",
    "clock_scale",
    "cpuid_scan",
    "pvclock",
    "console_ring",
    "evtchn",
    "kvm_features",
    "elfnote",
    "xenstore",
    "vmware",
];

/// Seconds each target runs in `cargo xtask test`.
pub const SHORT_RUN_SECS: u32 = 10;

/// What one short run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuzzRun {
    /// The target.
    pub target: String,
    /// Inputs executed.
    pub runs: u64,
}

/// Whether `cargo +nightly fuzz` can run here; the reason when not.
pub fn unavailable(root: &Path) -> Option<String> {
    let ok = Command::new("cargo")
        .current_dir(root)
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    (!ok).then(|| {
        "cargo-fuzz on a nightly toolchain is missing (cargo install cargo-fuzz --locked; rustup toolchain install nightly)"
            .to_owned()
    })
}

/// Parses libFuzzer's closing `Done <n> runs in <t> second(s)` line.
pub fn parse_runs(output: &str) -> Option<u64> {
    output.lines().rev().find_map(|l| {
        l.trim()
            .strip_prefix("Done ")?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Runs `target` for `secs` seconds over its corpus and regression inputs.
pub fn run(root: &Path, target: &str, secs: u32) -> Result<FuzzRun> {
    let dir = root.join("fuzz");
    let corpus = dir.join("corpus").join(target);
    let regressions = dir.join("regressions").join(target);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&regressions)?;
    // Fixed seed: a failure reproduces with the same command.
    let out = Command::new("cargo")
        .current_dir(&dir)
        .args(["+nightly", "fuzz", "run", "-O", target])
        .arg(&corpus)
        .arg(&regressions)
        .args([
            "--",
            &format!("-max_total_time={secs}"),
            "-seed=1",
            "-print_final_stats=0",
        ])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run cargo fuzz for {target}"))?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let tail: Vec<&str> = text
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "fuzz target {target} failed ({}); the crashing input is under fuzz/artifacts/{target}/ — \
             add it to fuzz/regressions/{target}/ once fixed:\n{}",
            out.status,
            tail.join("\n")
        );
    }
    let runs = parse_runs(&text)
        .with_context(|| format!("fuzz target {target}: no `Done N runs` line"))?;
    Ok(FuzzRun {
        target: target.to_owned(),
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_line() {
        let out = "#2\tINITED\n#1000 pulse\nDone 1961160 runs in 9 second(s)\n";
        assert_eq!(parse_runs(out), Some(1_961_160));
        assert_eq!(parse_runs("crash"), None);
    }

    #[test]
    fn every_target_has_a_source() {
        let root = crate::kernel::workspace_root();
        for t in TARGETS {
            assert!(
                root.join("fuzz/fuzz_targets")
                    .join(format!("{t}.rs"))
                    .is_file(),
                "{t}"
            );
        }
    }
}
