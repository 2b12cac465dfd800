//! Building the example kernel, or taking the image named by `PVOPS_KERNEL`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Environment variable naming a kernel ELF to boot instead of building
/// the example kernel.
pub const KERNEL_ENV: &str = "PVOPS_KERNEL";
/// The package built as the kernel.
pub const PACKAGE: &str = "example-kernel";
/// The kernel's target.
pub const TARGET: &str = "x86_64-unknown-none";

/// The workspace root (the parent of xtask's manifest directory).
pub fn workspace_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// The kernel's own target directory, `target/kernel`: separate from the
/// workspace's so that building it never waits for the lock an outer
/// `cargo test` or `cargo run` holds on `target/`.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target").join("kernel")
}

/// Where [`build`] leaves the example kernel's ELF.
pub fn elf_path() -> PathBuf {
    target_dir().join(TARGET).join("release").join(PACKAGE)
}

/// The kernel image to boot: the file named by `PVOPS_KERNEL` if set,
/// otherwise the example kernel, built (release) first.
///
/// Concurrent callers in different processes are serialised by cargo's own
/// lock on `target/kernel`; within one process, build once (see pvops-tests).
pub fn build() -> Result<PathBuf> {
    if let Some(path) = env::var_os(KERNEL_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{KERNEL_ENV}={} does not name a file", path.display());
        }
        // Absolute, so that every environment boots the very same file.
        return path
            .canonicalize()
            .with_context(|| format!("resolving {KERNEL_ENV}={}", path.display()));
    }
    build_package(PACKAGE)
}

/// Builds kernel package `package` of this workspace for the kernel target
/// (release, in [`target_dir`]) and returns its ELF.
pub fn build_package(package: &str) -> Result<PathBuf> {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .current_dir(workspace_root())
        .args([
            "build",
            "--package",
            package,
            "--target",
            TARGET,
            "--release",
        ])
        .arg("--target-dir")
        .arg(target_dir())
        .stdin(Stdio::null());
    let shown = format!(
        "cargo build --package {package} --target {TARGET} --release --target-dir {}",
        target_dir().display()
    );
    eprintln!("xtask: building a kernel: {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not run `{shown}`"))?;
    if !status.success() {
        bail!("building {package} failed ({status}); the command was `{shown}`");
    }
    let elf = target_dir().join(TARGET).join("release").join(package);
    if !elf.is_file() {
        bail!("`{shown}` succeeded but left no {}", elf.display());
    }
    Ok(elf)
}

/// Where the C example kernel's sources are.
pub fn c_kernel_dir() -> PathBuf {
    workspace_root().join("examples").join("c-kernel")
}

/// Builds the C example kernel: the `pvops-ffi` static library for the
/// kernel target, then `examples/c-kernel/kernel.c` with the system's gcc,
/// linked against it. Returns the ELF.
pub fn build_c_kernel() -> Result<PathBuf> {
    // The library is a staticlib: build_package would look for a binary.
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "--package",
            "pvops-ffi",
            "--target",
            TARGET,
            "--release",
        ])
        .arg("--target-dir")
        .arg(target_dir())
        .stdin(Stdio::null())
        .status()
        .context("could not run cargo to build pvops-ffi")?;
    if !status.success() {
        bail!("building pvops-ffi for {TARGET} failed ({status})");
    }
    let lib = target_dir()
        .join(TARGET)
        .join("release")
        .join("libpvops_ffi.a");
    let dir = c_kernel_dir();
    let out = target_dir().join("c-kernel");
    let mut gcc = Command::new("gcc");
    gcc.args([
        // Freestanding, no SSE (the CPU's SSE state is not set up), no red
        // zone (interrupts use the kernel stack), fixed addresses.
        "-ffreestanding",
        "-fno-pic",
        "-fno-pie",
        "-no-pie",
        "-nostdlib",
        "-static",
        "-mno-red-zone",
        "-mgeneral-regs-only",
        "-fno-stack-protector",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-Wl,--build-id=none",
    ])
    .arg("-I")
    .arg(workspace_root().join("ffi").join("include"))
    .arg("-T")
    .arg(dir.join("linker.ld"))
    .arg(dir.join("kernel.c"))
    .arg(&lib)
    .arg("-o")
    .arg(&out)
    .stdin(Stdio::null());
    let status = gcc
        .status()
        .context("could not run gcc (apt-get install -y gcc)")?;
    if !status.success() {
        bail!("gcc failed to build the C kernel ({status})");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let root = workspace_root();
        assert!(
            root.join("xtask").join("Cargo.toml").is_file(),
            "{}",
            root.display()
        );
        assert_eq!(
            elf_path(),
            root.join("target/kernel/x86_64-unknown-none/release/example-kernel")
        );
    }
}
