//! Kernels booted by real loaders (issue 14): `examples/multiboot2-kernel`
//! on a GRUB ISO made with `grub-mkrescue`, `examples/bootloader-kernel`
//! on the `bootloader` crate 0.11's BIOS and UEFI disk images, and
//! `examples/pvh-high-kernel`, a higher-half ELF QEMU (`-kernel`) and Xen
//! load themselves through pvops' PVH entry. What each
//! needs (GRUB's tools, OVMF, a nightly toolchain for the image builder) is
//! installed by [`provision()`] where it can be, and named by [`unavailable`]
//! where it is not.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::kernel::{self, workspace_root};
use crate::provision::{self, find_on_path, is_root};

/// The multiboot2 example kernel's package.
pub const MULTIBOOT2_PACKAGE: &str = "multiboot2-kernel";
/// The `bootloader` crate example kernel's package.
pub const BOOTLOADER_PACKAGE: &str = "bootloader-kernel";
/// The higher-half PVH example kernel's package.
pub const PVH_HIGH_PACKAGE: &str = "pvh-high-kernel";
/// Debian packages `grub-mkrescue` needs for a BIOS-bootable ISO.
pub const GRUB_PACKAGES: &[&str] = &["grub-pc-bin", "grub-common", "xorriso", "mtools"];
/// Debian's UEFI firmware for QEMU.
pub const OVMF_PACKAGE: &str = "ovmf";
/// OVMF as one image QEMU takes with `-bios`.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// GRUB's BIOS platform files, from `grub-pc-bin`.
const GRUB_I386_PC: &str = "/usr/lib/grub/i386-pc";
/// The toolchain the `bootloader` crate's image builder needs (2026-07-10
/// or later, with the components below); the kernel builds on the pinned
/// stable.
pub const BUILDER_TOOLCHAIN: &str = "nightly-2026-08-01";
/// Components [`BUILDER_TOOLCHAIN`] needs.
pub const BUILDER_COMPONENTS: &[&str] = &["rust-src", "llvm-tools"];

/// Which loader image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loader {
    /// GRUB (multiboot2) on a CD image.
    Grub,
    /// The `bootloader` crate, BIOS disk image.
    BootloaderBios,
    /// The `bootloader` crate, UEFI disk image (OVMF).
    BootloaderUefi,
    /// No loader of the kernel's own: QEMU's `-kernel` (or Xen) enters the
    /// higher-half ELF through its PVH note.
    PvhHigh,
}

impl Loader {
    /// How QEMU is given the image.
    pub const fn medium(self) -> crate::env::Medium {
        match self {
            Loader::Grub => crate::env::Medium::Cdrom,
            Loader::BootloaderBios => crate::env::Medium::BiosDisk,
            Loader::BootloaderUefi => crate::env::Medium::UefiDisk,
            Loader::PvhHigh => crate::env::Medium::Kernel,
        }
    }
}

/// Why `loader` cannot be used here as the machine is (nothing is
/// installed to find out); `None` if it can.
pub fn unavailable(loader: Loader) -> Option<String> {
    // The ELF is booted as built: nothing but QEMU (checked per
    // environment) is needed.
    if loader == Loader::PvhHigh {
        return None;
    }
    if find_on_path("objcopy").is_none() {
        return Some("objcopy is not installed (apt-get install -y binutils)".into());
    }
    match loader {
        Loader::Grub => grub_missing(),
        Loader::BootloaderBios => builder_toolchain_missing(),
        Loader::BootloaderUefi => builder_toolchain_missing().or_else(|| {
            (!Path::new(OVMF).is_file())
                .then(|| format!("{OVMF} is missing (apt-get install -y {OVMF_PACKAGE})"))
        }),
        Loader::PvhHigh => None,
    }
}

fn grub_missing() -> Option<String> {
    let missing: Vec<&str> = ["grub-mkrescue", "xorriso", "mformat"]
        .into_iter()
        .filter(|p| find_on_path(p).is_none())
        .collect();
    if !missing.is_empty() || !Path::new(GRUB_I386_PC).is_dir() {
        return Some(format!(
            "GRUB's ISO tools are missing ({}{}); apt-get install -y {}",
            missing.join(", "),
            if Path::new(GRUB_I386_PC).is_dir() {
                ""
            } else {
                " and /usr/lib/grub/i386-pc"
            },
            GRUB_PACKAGES.join(" ")
        ));
    }
    None
}

fn builder_toolchain_missing() -> Option<String> {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain"])
        .arg(BUILDER_TOOLCHAIN)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output();
    let hint = format!(
        "rustup toolchain install {BUILDER_TOOLCHAIN} --profile minimal --component {}",
        BUILDER_COMPONENTS.join(",")
    );
    match installed {
        Ok(out) if out.status.success() => {
            let list = String::from_utf8_lossy(&out.stdout);
            let missing: Vec<&str> = BUILDER_COMPONENTS
                .iter()
                .copied()
                .filter(|c| !list.lines().any(|l| l.starts_with(c)))
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "the bootloader image builder's toolchain {BUILDER_TOOLCHAIN} lacks {} ({hint})",
                    missing.join(", ")
                )
            })
        }
        _ => Some(format!(
            "the bootloader image builder needs the toolchain {BUILDER_TOOLCHAIN} ({hint})"
        )),
    }
}

/// Installs what the loader boots need: GRUB's tools and OVMF with apt-get
/// (as root on Debian/Ubuntu), the builder's nightly with rustup. Fails
/// with what is still missing and the commands to run.
pub fn provision() -> Result<()> {
    let mut packages: Vec<&str> = Vec::new();
    if grub_missing().is_some() {
        packages.extend(GRUB_PACKAGES);
    }
    if !Path::new(OVMF).is_file() {
        packages.push(OVMF_PACKAGE);
    }
    if find_on_path("objcopy").is_none() {
        packages.push("binutils");
    }
    if !packages.is_empty() {
        let shown = format!("apt-get install -y {}", packages.join(" "));
        if !is_root() || !provision::is_debian_like() {
            bail!("missing Debian packages; run `sudo sh -c 'apt-get update && {shown}'`");
        }
        eprintln!("xtask: installing what the loader boots need: {shown}");
        provision::run_checked(Command::new("apt-get").arg("update"), "apt-get update")?;
        provision::run_checked(
            Command::new("apt-get")
                .args(["install", "-y"])
                .args(&packages),
            &shown,
        )?;
    }
    if builder_toolchain_missing().is_some() {
        let components = BUILDER_COMPONENTS.join(",");
        let shown = format!(
            "rustup toolchain install {BUILDER_TOOLCHAIN} --profile minimal --component {components}"
        );
        eprintln!("xtask: installing the bootloader image builder's toolchain: {shown}");
        provision::run_checked(
            Command::new("rustup").args([
                "toolchain",
                "install",
                BUILDER_TOOLCHAIN,
                "--profile",
                "minimal",
                "--component",
                &components,
            ]),
            &shown,
        )?;
    }
    for loader in [Loader::Grub, Loader::BootloaderBios, Loader::BootloaderUefi] {
        if let Some(why) = unavailable(loader) {
            bail!("{why}");
        }
    }
    Ok(())
}

/// Where loader images are made: `target/loaders/<pid>/`, one directory
/// per process so that concurrent harnesses never write the same file.
/// Directories of processes that have ended are removed first.
fn work_dir() -> Result<PathBuf> {
    let parent = workspace_root().join("target").join("loaders");
    if let Ok(entries) = fs::read_dir(&parent) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.parse::<u32>().ok());
            if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = parent.join(std::process::id().to_string());
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// A copy of `elf` without debug information: a loader reads the whole
/// file, through BIOS disk calls that cost tens of seconds per megabyte
/// where the CPU is emulated (the kernels carry 2 MB of DWARF).
fn stripped(elf: &Path, out: &Path) -> Result<()> {
    provision::run_checked(
        Command::new("objcopy")
            .arg("--strip-debug")
            .arg(elf)
            .arg(out),
        &format!("objcopy --strip-debug {} {}", elf.display(), out.display()),
    )
}

/// Builds the multiboot2 kernel and a GRUB ISO that boots it with
/// `cmdline` (GRUB passes it in the multiboot2 command-line tag).
pub fn multiboot2_iso(cmdline: &str) -> Result<PathBuf> {
    multiboot2_iso_named(cmdline, "multiboot2")
}

/// [`multiboot2_iso`] in a folder `name` of its own, so that ISOs with
/// different command lines can be made side by side in one process.
pub fn multiboot2_iso_named(cmdline: &str, name: &str) -> Result<PathBuf> {
    if let Some(c) = cmdline
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " ._=,:+-/".contains(*c)))
    {
        bail!("the kernel command line {cmdline:?} has {c:?}, which grub.cfg would need quoted");
    }
    let elf = kernel::build_package(MULTIBOOT2_PACKAGE)?;
    let dir = work_dir()?.join(name);
    let root = dir.join("iso");
    let grub = root.join("boot").join("grub");
    fs::create_dir_all(&grub).with_context(|| format!("creating {}", grub.display()))?;
    stripped(&elf, &root.join("boot").join("kernel.elf"))?;
    let cfg = format!(
        "set timeout=0\nset default=0\nmenuentry \"pvops multiboot2-kernel\" {{\n    \
         multiboot2 /boot/kernel.elf {cmdline}\n    boot\n}}\n"
    );
    fs::write(grub.join("grub.cfg"), cfg).context("writing grub.cfg")?;
    let iso = dir.join("multiboot2-kernel.iso");
    // Only the modules the boot uses, no locales, fonts or themes: every
    // byte GRUB reads costs BIOS disk calls.
    let shown = format!("grub-mkrescue -o {} {}", iso.display(), root.display());
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(&iso)
        .args([
            "--install-modules=multiboot2 normal iso9660 biosdisk configfile",
            "--locales=",
            "--fonts=",
            "--themes=",
        ])
        .arg(&root)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not run `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(iso)
}

/// Builds the higher-half PVH kernel; its ELF is what QEMU's `-kernel`
/// takes (and what Xen takes as its dom0 module).
pub fn pvh_high_kernel() -> Result<PathBuf> {
    kernel::build_package(PVH_HIGH_PACKAGE)
}

/// The BIOS and UEFI disk images of the `bootloader` crate example.
#[derive(Debug, Clone)]
pub struct BootloaderImages {
    /// Boots from a BIOS (SeaBIOS).
    pub bios: PathBuf,
    /// Boots from UEFI firmware (OVMF).
    pub uefi: PathBuf,
}

/// Builds the kernel (pinned stable), then its disk images with the image
/// builder (`examples/bootloader-kernel/builder`, on [`BUILDER_TOOLCHAIN`];
/// its first build compiles the bootloader's stages and takes minutes).
pub fn bootloader_images() -> Result<BootloaderImages> {
    let elf = kernel::build_package(BOOTLOADER_PACKAGE)?;
    let dir = work_dir()?.join("bootloader");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let small = dir.join("bootloader-kernel");
    stripped(&elf, &small)?;
    let builder = workspace_root()
        .join("examples")
        .join("bootloader-kernel")
        .join("builder");
    let target_dir = workspace_root().join("target").join("bootloader-builder");
    let mut command = Command::new("rustup");
    command
        .args([
            "run",
            BUILDER_TOOLCHAIN,
            "cargo",
            "run",
            "--release",
            "--quiet",
        ])
        .arg("--manifest-path")
        .arg(builder.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--")
        .arg(&small)
        .arg(&dir)
        .current_dir(&builder)
        .stdin(Stdio::null());
    // What an outer cargo (cargo test, cargo run) set for its own
    // toolchain and target must not leak into the nightly build.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTC",
        "RUSTDOC",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        command.env_remove(var);
    }
    let shown = format!(
        "rustup run {BUILDER_TOOLCHAIN} cargo run --release --manifest-path {} -- {} {}",
        builder.join("Cargo.toml").display(),
        small.display(),
        dir.display()
    );
    eprintln!("xtask: building the bootloader disk images: {shown}");
    provision::run_checked(&mut command, &shown)?;
    let images = BootloaderImages {
        bios: dir.join("bios.img"),
        uefi: dir.join("uefi.img"),
    };
    for image in [&images.bios, &images.uefi] {
        if !image.is_file() {
            bail!("`{shown}` succeeded but left no {}", image.display());
        }
    }
    Ok(images)
}
