//! Checks that the library crates can be released: `cargo publish` accepts
//! them (packaged and built from their packages, dependencies through a
//! local registry), and they build on the oldest Rust they declare.

use std::path::Path;
use std::process::Command;

/// The crates that go to crates.io, in dependency order.
pub const PUBLISHED: &[&str] = &[
    "pvops-core",
    "pvops-native",
    "pvops-kvm",
    "pvops-xen",
    "pvops-vmware",
    "pvops",
];

/// The oldest Rust the published crates build with (their `rust-version`;
/// naked functions, stable since 1.88, set the floor). Checked by
/// [`msrv_check`]; `.ci/run` installs this toolchain.
pub const MSRV: &str = "1.88.0";

/// What one check found: `Ok(summary)`, `Err(Missing(why))` when a tool is
/// not installed, `Err(Failed(why))` when the check ran and failed.
#[derive(Debug)]
pub enum Outcome {
    /// The check ran and passed.
    Passed(String),
    /// A tool it needs is not installed.
    Missing(String),
    /// The check ran and failed.
    Failed(String),
}

/// `cargo publish --workspace --dry-run`: packages every published crate,
/// builds each from its package against the others' packages, uploads
/// nothing. (`--allow-dirty`: a developer's uncommitted work is checked
/// too.)
///
/// Each run packages into a target directory of its own: cargo unpacks the
/// verified packages from a local registry at `<target>/package/` into
/// `$CARGO_HOME/registry/src/<hash of that path>/`, and reuses an earlier
/// unpacking of the same name and version there, so a second run at the
/// same path would verify against the first run's sources.
pub fn publish_dry_run(root: &Path) -> Outcome {
    let target = root.join("target").join("publish").join(format!(
        "{}-{}",
        std::process::id(),
        unix_seconds()
    ));
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args(["publish", "--workspace", "--dry-run", "--allow-dirty"])
        .arg("--target-dir")
        .arg(&target);
    eprintln!(
        "xtask: cargo publish --workspace --dry-run --allow-dirty --target-dir {}",
        target.display()
    );
    let status = command.status();
    let _ = std::fs::remove_dir_all(&target);
    match status {
        Ok(s) if s.success() => Outcome::Passed(format!(
            "publish dry run: passed ({})",
            PUBLISHED.join(", ")
        )),
        Ok(s) => Outcome::Failed(format!("publish dry run: FAILED ({s})")),
        Err(e) => Outcome::Failed(format!("publish dry run: could not run cargo ({e})")),
    }
}

/// `cargo +MSRV check` of the facade with every backend, for the kernel
/// target, in a target directory of its own.
pub fn msrv_check(root: &Path) -> Outcome {
    let toolchain = format!("+{MSRV}");
    let have = Command::new("rustc")
        .args([toolchain.as_str(), "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        return Outcome::Missing(format!(
            "no Rust {MSRV} toolchain (rustup toolchain install {MSRV} --profile minimal --target x86_64-unknown-none)"
        ));
    }
    let args = [
        toolchain.as_str(),
        "check",
        "-p",
        "pvops",
        "--all-features",
        "--target",
        "x86_64-unknown-none",
    ];
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target").join("msrv"))
        .args(args)
        .status();
    match status {
        Ok(s) if s.success() => {
            Outcome::Passed(format!("msrv: Rust {MSRV} builds pvops with every backend"))
        }
        Ok(s) => Outcome::Failed(format!("msrv: Rust {MSRV} FAILED ({s})")),
        Err(e) => Outcome::Failed(format!("msrv: could not run cargo ({e})")),
    }
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
