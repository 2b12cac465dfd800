//! Making the environments' tools available: QEMU (from Debian's package),
//! Xen 4.17 (unpacked from Debian's package into the build tree, no root
//! needed), and KVM (only checked: it cannot be installed).

use std::env;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::env::{Accel, Env};
use crate::kernel::workspace_root;

/// QEMU's program name.
pub const QEMU: &str = "qemu-system-x86_64";
/// Debian package that ships [`QEMU`].
pub const QEMU_PACKAGE: &str = "qemu-system-x86";
/// Debian package that ships the Xen hypervisor.
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// The compressed hypervisor inside [`XEN_PACKAGE`].
const XEN_GZ_IN_PACKAGE: &str = "boot/xen-4.17-amd64.gz";
/// The KVM device.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// `program` as found on `PATH`, if it is there.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// QEMU's path, if installed.
pub fn qemu() -> Option<PathBuf> {
    find_on_path(QEMU)
}

/// QEMU's path, installing it with apt-get when we are root on Debian or
/// Ubuntu; otherwise an error that says what to run.
pub fn ensure_qemu() -> Result<PathBuf> {
    if let Some(path) = qemu() {
        return Ok(path);
    }
    let command = format!("apt-get update && apt-get install -y {QEMU_PACKAGE}");
    if !is_root() || !is_debian_like() {
        bail!(
            "{QEMU} is not on PATH, and this harness installs it only as root on Debian/Ubuntu. \
             Install QEMU yourself (Debian/Ubuntu: `sudo sh -c '{command}'`) and retry"
        );
    }
    eprintln!("xtask: {QEMU} not found; installing: {command}");
    run_checked(Command::new("apt-get").arg("update"), "apt-get update")?;
    run_checked(
        Command::new("apt-get").args(["install", "-y", QEMU_PACKAGE]),
        &format!("apt-get install -y {QEMU_PACKAGE}"),
    )?;
    qemu().with_context(|| format!("{QEMU_PACKAGE} was installed but {QEMU} is still not on PATH"))
}

/// Whether /dev/kvm can be opened read-write (what QEMU's `-accel kvm` needs).
pub fn kvm_usable() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(KVM_DEVICE)
        .map(drop)
        .map_err(|e| {
            format!(
                "{KVM_DEVICE} cannot be opened read-write ({e}); KVM needs hardware \
                 virtualisation exposed to this machine and access to {KVM_DEVICE} \
                 (root, or membership of its group)"
            )
        })
}

/// Whether the host's KVM completes guest hypercalls (`vmcall`/`vmmcall`),
/// judged without starting a guest: Linux's hardware KVM (kvm-intel,
/// kvm-amd) needs VMX or SVM, which the CPU then announces in
/// `/proc/cpuinfo`. A `/dev/kvm` on a CPU with neither (as on this
/// project's machines, whose KVM module is `kvm_pvm`) runs guests by
/// emulating their instructions and never returns from a hypercall.
pub fn kvm_completes_hypercalls() -> Result<(), String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo")
        .map_err(|e| format!("/proc/cpuinfo cannot be read ({e})"))?;
    if cpu_flags_virtualise(&cpuinfo) {
        return Ok(());
    }
    let modules: Vec<String> = fs::read_dir("/sys/module")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with("kvm_"))
                .collect()
        })
        .unwrap_or_default();
    let module = if modules.is_empty() {
        String::new()
    } else {
        format!(" (its KVM module: {})", modules.join(", "))
    };
    Err(format!(
        "the CPU offers neither VMX nor SVM (/proc/cpuinfo flags), so this machine's KVM{module} \
         runs guests by emulating their instructions and never completes a hypercall"
    ))
}

/// Whether the first `flags` line of a `/proc/cpuinfo` names `vmx` or `svm`.
fn cpu_flags_virtualise(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find_map(|l| {
            let (key, value) = l.split_once(':')?;
            (key.trim() == "flags").then_some(value)
        })
        .is_some_and(|flags| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

/// Where the unpacked Xen hypervisor lives: `target/xen/`.
pub fn xen_dir() -> PathBuf {
    workspace_root().join("target").join("xen")
}

/// The Xen binary QEMU boots: `target/xen/xen`.
pub fn xen_binary() -> PathBuf {
    xen_dir().join("xen")
}

/// The Xen binary, downloading and unpacking Debian's package when it is
/// not there yet (`apt-get download` needs no root, only apt's lists).
pub fn ensure_xen() -> Result<PathBuf> {
    let xen = xen_binary();
    if xen.is_file() {
        return Ok(xen);
    }
    let dir = xen_dir();
    let root = unpack_debian_package(XEN_PACKAGE, &dir)?;
    let gz = root.join(XEN_GZ_IN_PACKAGE);
    let partial = dir.join("xen.partial");
    let out = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    run_checked(
        Command::new("zcat").arg(&gz).stdout(out),
        &format!("zcat {} > {}", gz.display(), partial.display()),
    )?;
    // Renamed only when complete, so a half-written file is never taken
    // for the hypervisor.
    fs::rename(&partial, &xen).with_context(|| format!("renaming to {}", xen.display()))?;
    Ok(xen)
}

/// Downloads Debian's `package` into `dir` (`apt-get download`: no root
/// needed, only apt's lists; run `apt-get update` first when root and the
/// lists are missing) unless its `.deb` is already there, and unpacks it
/// with `dpkg -x` into `dir` itself. Returns `dir`, the root of the unpacked
/// tree. Several packages may share one `dir`: each `.deb` is found by its
/// own name prefix.
pub fn unpack_debian_package(package: &str, dir: &Path) -> Result<PathBuf> {
    let deb = download_debian_package(package, dir)?;
    run_checked(
        Command::new("dpkg").arg("-x").arg(&deb).arg(dir),
        &format!("dpkg -x {} {}", deb.display(), dir.display()),
    )?;
    Ok(dir.to_path_buf())
}

/// Downloads Debian's `package` into `dir` as [`unpack_debian_package`]
/// does, without unpacking it, unless a `<package>_*.deb` is already
/// there. Returns the `.deb`'s path.
pub fn download_debian_package(package: &str, dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(deb) = find_deb(dir, package)? {
        return Ok(deb);
    }
    eprintln!(
        "xtask: fetching {package}: apt-get download {package} into {}",
        dir.display()
    );
    let download = || {
        let mut command = Command::new("apt-get");
        // As root, apt's `_apt` user may not write `dir`: say so
        // instead of a warning on every download.
        if is_root() {
            command.args(["-o", "APT::Sandbox::User=root"]);
        }
        run_checked(
            command.args(["download", package]).current_dir(dir),
            &format!("apt-get download {package}"),
        )
    };
    if let Err(first) = download() {
        // A fresh machine may have no package lists yet.
        if !is_root() {
            return Err(first.context(format!(
                "run `sudo apt-get update` and retry (apt-get cannot find {package})"
            )));
        }
        run_checked(Command::new("apt-get").arg("update"), "apt-get update")?;
        download()?;
    }
    find_deb(dir, package)?.with_context(|| {
        format!(
            "apt-get download left no {package}_*.deb in {}",
            dir.display()
        )
    })
}

/// The `.deb` of `package` already in `dir`, if any.
pub fn find_deb(dir: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".deb") {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

/// Why `env` cannot boot on this machine as it is (nothing is installed
/// to find out); `None` if it can.
pub fn unavailable(env: Env) -> Option<String> {
    if qemu().is_none() {
        return Some(format!(
            "{QEMU} is not installed (apt-get install -y {QEMU_PACKAGE}, or run `cargo xtask test`)"
        ));
    }
    if env.accel() == Accel::Kvm {
        if let Err(why) = kvm_usable() {
            return Some(why);
        }
    }
    if env.is_domu() {
        if let Some(why) = crate::domu::unavailable() {
            return Some(why);
        }
    }
    if env.is_xen() && !xen_binary().is_file() {
        return Some(format!(
            "the Xen binary {} is missing (`cargo xtask test` or `cargo xtask run --env {env}` \
             fetches it)",
            xen_binary().display()
        ));
    }
    if env.is_nested() {
        if let Err(why) = crate::nested::Assets::built() {
            return Some(format!(
                "{why} (`cargo xtask test` or `cargo xtask run --env {env}` provisions it)"
            ));
        }
    }
    None
}

/// Installs what `env` needs, then fails with the reason if it still
/// cannot boot here (e.g. no usable /dev/kvm).
pub fn ensure(env: Env) -> Result<()> {
    ensure_qemu()?;
    if env.is_xen() {
        ensure_xen()?;
    }
    if env.is_nested() {
        crate::nested::ensure()?;
    }
    if env.is_domu() {
        crate::domu::ensure_dom0()?;
    }
    match unavailable(env) {
        None => Ok(()),
        Some(why) => bail!("environment {env} cannot run on this machine: {why}"),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid takes no arguments, touches no memory and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Debian, Ubuntu, or a derivative that declares itself one.
pub(crate) fn is_debian_like() -> bool {
    if Path::new("/etc/debian_version").exists() {
        return true;
    }
    fs::read_to_string("/etc/os-release").is_ok_and(|text| os_release_is_debian_like(&text))
}

fn os_release_is_debian_like(text: &str) -> bool {
    text.lines()
        .filter_map(|l| l.strip_prefix("ID=").or_else(|| l.strip_prefix("ID_LIKE=")))
        .flat_map(|v| v.trim_matches('"').split_whitespace())
        .any(|id| id == "debian" || id == "ubuntu")
}

/// Runs `command` with inherited output and a non-interactive apt.
pub(crate) fn run_checked(command: &mut Command, shown: &str) -> Result<()> {
    let status = command
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_detection() {
        assert!(os_release_is_debian_like("NAME=\"Debian\"\nID=debian\n"));
        assert!(os_release_is_debian_like(
            "ID=pop\nID_LIKE=\"ubuntu debian\"\n"
        ));
        assert!(os_release_is_debian_like("ID=ubuntu\n"));
        assert!(!os_release_is_debian_like(
            "ID=fedora\nID_LIKE=\"rhel centos\"\n"
        ));
        assert!(!os_release_is_debian_like(""));
    }

    #[test]
    fn hardware_virtualisation_flags() {
        assert!(cpu_flags_virtualise(
            "processor\t: 0\nflags\t\t: fpu vme svm lm\n"
        ));
        assert!(cpu_flags_virtualise("flags\t\t: fpu vmx\nflags : x\n"));
        assert!(!cpu_flags_virtualise(
            "flags\t\t: fpu hypervisor rdtscp rdpid\n"
        ));
        assert!(!cpu_flags_virtualise("vmx flags missing\n"));
    }

    #[test]
    fn path_search() {
        assert!(find_on_path("sh").is_some());
        assert!(find_on_path("surely-no-such-program-here").is_none());
    }

    #[test]
    fn xen_lives_in_the_build_tree() {
        assert!(xen_binary().starts_with(workspace_root().join("target")));
        assert!(xen_binary().ends_with("target/xen/xen"));
    }
}
