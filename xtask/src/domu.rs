//! The domU environments (`xen-pvh-domu`, `xen-pv-domu`, `xen-hvm-domu`):
//! Xen 4.17 in QEMU (TCG) with Debian's Linux 6.1 as a classic PV dom0
//! that runs Xen's real toolstack (`xenstored`, `xen-init-dom0`,
//! `xenconsoled`, `xl`) and makes the kernel a domU, the way people run
//! Xen guests. Worked out in `../shared/recipes/xen-domu/`.
//!
//! Everything comes from Debian's packages (`apt-get download` + `dpkg
//! -x`, no root) into `target/xen-domu/`; the dom0 initramfs is written
//! here ([`crate::cpio`], uncompressed: Linux unpacks it faster than it
//! would gunzip it under TCG) and kept until one of its inputs changes
//! (the `.deb`s, the `/init` script, this builder).
//!
//! One dom0 boot runs every domU a command needs, one after another
//! ([`boot`]): a second small archive appended to the base one carries
//! the kernel, the list of guests and each one's command line. dom0's
//! `/init` (`dom0-init.sh`) prints each guest's own console (xenconsoled's
//! log of its PV console ring) between marker lines, then a result line
//! with how the domain ended, and finally reboots the machine, so QEMU
//! exits by itself. Each guest is judged on its own section
//! ([`split`]), against its environment's expectation, and must have
//! ended with a reboot request (what the kernel's shutdown op asks for).

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::boot::{Boot, BootImage, BootOptions, Plan};
use crate::cpio;
use crate::env::{multiboot_module, Env, Guest};
use crate::kernel::workspace_root;
use crate::protocol::{self, Outcome, Problem};
use crate::provision::{self, download_debian_package};
use crate::qemu;

/// dom0's `/init`.
const INIT: &str = include_str!("dom0-init.sh");

/// Bumped whenever the archive's layout changes, so cached images are
/// rebuilt.
const BUILDER_VERSION: &str = "dom0-initramfs v2";

/// The meta package whose dependency names the dom0 kernel's package.
const LINUX_META: &str = "linux-image-amd64";

/// Debian packages besides the dom0 kernel (versions: the recipe's README).
pub const PACKAGES: &[&str] = &[
    provision::XEN_PACKAGE,
    "busybox-static",
    "xen-utils-4.17",
    "xen-utils-common",
    "xenstore-utils",
    "libxencall1",
    "libxendevicemodel1",
    "libxenevtchn1",
    "libxenforeignmemory1",
    "libxengnttab1",
    "libxenhypfs1",
    "libxenmisc4.17",
    "libxenstore4",
    "libxentoolcore1",
    "libxentoollog1",
    "libyajl2",
    // The HVM device model, its keymaps (it fails without them even with
    // -vnc none) and option ROMs.
    "qemu-system-xen",
    "qemu-system-data",
    // libxl loads SeaBIOS for an HVM guest with the qemu-xen device model
    // even when firmware_override replaces hvmloader.
    "seabios",
];

/// Xen's tools dom0 runs, under `usr/lib/xen-4.17/bin`.
const XEN_TOOLS: &[&str] = &[
    "xl",
    "xenstored",
    "xenconsoled",
    "xenconsole",
    "xen-init-dom0",
    "libxl-save-helper",
];
/// The xenstore clients, under `usr/bin`.
const XENSTORE_CLIENTS: &[&str] = &[
    "xenstore",
    "xenstore-read",
    "xenstore-write",
    "xenstore-ls",
    "xenstore-list",
    "xenstore-rm",
    "xenstore-exists",
    "xenstore-watch",
];
/// dom0 kernel modules the toolstack needs (xenfs needs xen-privcmd).
const MODULES: &[&str] = &[
    "xen-evtchn",
    "xen-gntdev",
    "xen-gntalloc",
    "xen-privcmd",
    "xenfs",
];
const MULTIARCH: &str = "x86_64-linux-gnu";

/// QEMU's memory: Xen, a 1 GiB dom0 and the domUs.
const MEMORY: &str = "2G";
/// PV dom0 Linux dies at once with SMAP (recipe, quirk 1).
const CPU: &str = "max,-smap";
/// Xen's command line: dom0 gets 1 GiB, and one vCPU pinned to the first
/// CPU, while the firmware-booted HVM domU is pinned to the second
/// (`cpus="1"` in its config). With dom0 and that domU sharing the two
/// CPUs of the emulated machine, 7 of 9 runs here went wrong soon after
/// hvmloader and SeaBIOS started, before the kernel ran: dom0's processes
/// (busybox, `xl`) died of segfaults, or the domain vanished or never
/// left GRUB (memory seen wrongly across the emulated SVM's nested paging
/// of a real-mode guest, as far as could be told; QEMU 7.2 TCG). Apart,
/// 7 of 7 runs were clean.
const XEN_CMDLINE: &str = "console=com1 com1=115200,8n1 dom0_mem=1024M,max:1024M \
     dom0_max_vcpus=1 dom0_vcpus_pin loglvl=all guest_loglvl=all";
/// Time for Xen and dom0 to come up, on top of the guests' bounds.
const DOM0_BOUND: Duration = Duration::from_secs(300);

/// Where everything lives: `target/xen-domu/`.
pub fn dir() -> PathBuf {
    workspace_root().join("target").join("xen-domu")
}

/// What QEMU boots: Xen, dom0's kernel, dom0's base initramfs.
#[derive(Debug, Clone)]
pub struct Dom0 {
    /// The hypervisor (the one the dom0 environments boot).
    pub xen: PathBuf,
    /// Debian's Linux.
    pub vmlinuz: PathBuf,
    /// The base initramfs (uncompressed newc).
    pub initrd: PathBuf,
}

impl Dom0 {
    fn at(dir: &Path) -> Dom0 {
        Dom0 {
            xen: provision::xen_binary(),
            vmlinuz: dir.join("vmlinuz"),
            initrd: dir.join("dom0-initrd.cpio"),
        }
    }

    fn stamp(dir: &Path) -> PathBuf {
        dir.join("dom0-initrd.stamp")
    }
}

/// Why the domU environments cannot boot yet (nothing provisioned), or
/// `None`.
pub fn unavailable() -> Option<String> {
    let d = Dom0::at(&dir());
    for f in [&d.xen, &d.vmlinuz, &d.initrd] {
        if !f.is_file() {
            return Some(format!(
                "{} is missing (`cargo xtask test` or `cargo xtask run --env xen-pv-domu` \
                 provisions it)",
                f.display()
            ));
        }
    }
    None
}

/// The `.deb`s the image is built from: fetched when missing.
fn debs(pkgs: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in PACKAGES {
        out.push(download_debian_package(p, pkgs)?);
    }
    out.push(linux_deb(pkgs)?);
    Ok(out)
}

/// The dom0 kernel's `.deb` (`linux-image-<version>-amd64`, what
/// `linux-image-amd64` depends on), fetched when none is there yet.
fn linux_deb(pkgs: &Path) -> Result<PathBuf> {
    if let Some(deb) = find_linux_deb(pkgs)? {
        return Ok(deb);
    }
    let out = Command::new("apt-cache")
        .args(["depends", LINUX_META])
        .output()
        .context("could not run apt-cache")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(package) = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| {
            p.starts_with("linux-image-") && p[12..].starts_with(|c: char| c.is_ascii_digit())
        })
    else {
        bail!(
            "apt-cache depends {LINUX_META} names no linux-image-<version> package (run \
             `apt-get update` as root once)"
        );
    };
    download_debian_package(package, pkgs)
}

fn find_linux_deb(pkgs: &Path) -> Result<Option<PathBuf>> {
    if !pkgs.is_dir() {
        return Ok(None);
    }
    let mut found: Vec<PathBuf> = fs::read_dir(pkgs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("linux-image-")
                    && n[12..].starts_with(|c: char| c.is_ascii_digit())
                    && n.ends_with(".deb")
            })
        })
        .collect();
    found.sort();
    Ok(found.pop())
}

/// What the cached image was built from.
fn fingerprint(debs: &[PathBuf]) -> String {
    let mut h = Sha256::new();
    h.update(BUILDER_VERSION);
    h.update([0]);
    h.update(INIT);
    for d in debs {
        h.update([0]);
        h.update(
            d.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
    }
    let mut s = String::new();
    for b in h.finalize() {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Provisions Xen, dom0's kernel and its initramfs (built once, then
/// rebuilt only when an input changed).
pub fn ensure_dom0() -> Result<Dom0> {
    provision::ensure_xen()?;
    let dir = dir();
    let pkgs = dir.join("pkgs");
    let debs = debs(&pkgs)?;
    let print = fingerprint(&debs);
    let d = Dom0::at(&dir);
    let stamp = Dom0::stamp(&dir);
    if d.initrd.is_file()
        && d.vmlinuz.is_file()
        && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == print)
    {
        return Ok(d);
    }
    eprintln!("xtask: building the dom0 initramfs in {}", dir.display());
    let root = dir.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    fs::create_dir_all(&root)?;
    for deb in &debs {
        provision::run_checked(
            Command::new("dpkg").arg("-x").arg(deb).arg(&root),
            &format!("dpkg -x {} {}", deb.display(), root.display()),
        )?;
    }
    let kver = kernel_version(&root)?;
    fs::copy(root.join(format!("boot/vmlinuz-{kver}")), &d.vmlinuz)
        .with_context(|| format!("copying the dom0 kernel {kver}"))?;
    let partial = dir.join("dom0-initrd.cpio.partial");
    write_initramfs(&root, &kver, &partial)?;
    fs::rename(&partial, &d.initrd)?;
    fs::write(&stamp, format!("{print}\n"))?;
    eprintln!(
        "xtask: dom0 initramfs {} ({} MiB), dom0 Linux {kver}",
        d.initrd.display(),
        fs::metadata(&d.initrd)?.len() >> 20
    );
    Ok(d)
}

/// The version of the one kernel under `root/boot`.
fn kernel_version(root: &Path) -> Result<String> {
    for e in fs::read_dir(root.join("boot"))? {
        let name = e?.file_name();
        if let Some(v) = name.to_str().and_then(|n| n.strip_prefix("vmlinuz-")) {
            return Ok(v.to_owned());
        }
    }
    bail!("no vmlinuz-* under {}/boot", root.display())
}

fn write_initramfs(root: &Path, kver: &str, out: &Path) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = cpio::Writer::new(BufWriter::new(file));
    let xenbin = "usr/lib/xen-4.17/bin";
    for d in [
        "bin",
        "sbin",
        "usr",
        "usr/bin",
        "usr/sbin",
        "usr/libexec",
        "usr/lib",
        "usr/lib/x86_64-linux-gnu",
        "usr/lib/modules",
        "usr/lib/modules/xen",
        "usr/lib/xen-4.17",
        xenbin,
        "usr/lib/xen-4.17/boot",
        "usr/share",
        "usr/share/qemu",
        "usr/share/seabios",
        "lib64",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "etc",
        "etc/xen",
        "var",
        "var/lib",
        "var/log",
        "guest",
    ] {
        w.dir(d, 0o755)?;
    }
    w.symlink("lib", "usr/lib")?;
    w.symlink("var/run", "/run")?;
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.char_device("dev/null", 0o666, 1, 3)?;
    w.file("bin/busybox", 0o755, &read(&root.join("bin/busybox"))?)?;
    w.symlink("bin/sh", "busybox")?;
    w.file("init", 0o755, INIT.as_bytes())?;

    let moddir = root.join(format!("lib/modules/{kver}/kernel/drivers/xen"));
    for m in MODULES {
        let data = module(&moddir, m)?;
        w.file(&format!("usr/lib/modules/xen/{m}.ko"), 0o644, &data)?;
    }

    let mut elfs = Vec::new();
    for t in XEN_TOOLS {
        let src = root.join(xenbin).join(t);
        w.file(&format!("{xenbin}/{t}"), 0o755, &read(&src)?)?;
        elfs.push(src);
    }
    for t in XENSTORE_CLIENTS {
        let src = root.join("usr/bin").join(t);
        w.file(&format!("usr/bin/{t}"), 0o755, &read(&src)?)?;
        elfs.push(src);
    }
    let dm = root.join("usr/libexec/xen-qemu-system-i386");
    w.file("usr/libexec/xen-qemu-system-i386", 0o755, &read(&dm)?)?;
    elfs.push(dm);
    w.file(
        "usr/lib/xen-4.17/boot/hvmloader",
        0o644,
        &read(&root.join("usr/lib/xen-4.17/boot/hvmloader"))?,
    )?;
    w.file(
        "usr/share/seabios/bios-256k.bin",
        0o644,
        &read(&root.join("usr/share/seabios/bios-256k.bin"))?,
    )?;
    w.dir("usr/share/qemu/keymaps", 0o755)?;
    w.tree_at(
        &root.join("usr/share/qemu/keymaps"),
        "usr/share/qemu/keymaps",
    )?;
    w.file(
        "etc/xen/xl.conf",
        0o644,
        &read(&root.join("etc/xen/xl.conf"))?,
    )?;
    w.dir("etc/xen/scripts", 0o755)?;
    w.tree_at(&root.join("etc/xen/scripts"), "etc/xen/scripts")?;

    for (name, path) in shared_libraries(root, &elfs)? {
        let at = if name.starts_with("ld-linux") {
            format!("lib64/{name}")
        } else {
            format!("usr/lib/{MULTIARCH}/{name}")
        };
        // fs::read follows the symlinks ldd resolved to.
        w.file(&at, 0o755, &read(&path)?)?;
    }
    let mut out = w.finish()?;
    out.flush()?;
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A module from the kernel's tree (`<m>.ko` or `<m>/<m>.ko`, plain or xz).
fn module(moddir: &Path, m: &str) -> Result<Vec<u8>> {
    for base in [moddir.join(m), moddir.join(m).join(m)] {
        let ko = base.with_file_name(format!("{m}.ko"));
        if ko.is_file() {
            return read(&ko);
        }
        let xz = base.with_file_name(format!("{m}.ko.xz"));
        if xz.is_file() {
            let out = Command::new("xz")
                .arg("-dc")
                .arg(&xz)
                .output()
                .context("could not run xz")?;
            if !out.status.success() {
                bail!("xz -dc {} failed", xz.display());
            }
            return Ok(out.stdout);
        }
    }
    bail!("kernel module {m} not found under {}", moddir.display())
}

/// Every shared library `elfs` need, as `ldd` resolves them (the unpacked
/// packages first, then this machine's own): (file name, path).
fn shared_libraries(root: &Path, elfs: &[PathBuf]) -> Result<Vec<(String, PathBuf)>> {
    let libpath = [
        root.join(format!("usr/lib/{MULTIARCH}")),
        root.join(format!("lib/{MULTIARCH}")),
        root.join(format!("usr/lib/xen-4.17/lib/{MULTIARCH}")),
    ];
    let libpath = std::env::join_paths(&libpath)?;
    let out = Command::new("ldd")
        .args(elfs)
        .env("LD_LIBRARY_PATH", libpath)
        .output()
        .context("could not run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let (libs, missing) = parse_ldd(&text);
    if !missing.is_empty() {
        bail!(
            "libraries of Xen's tools not found on this machine nor in the packages: {} \
             (install them, e.g. apt-get install <their packages>)",
            missing.join(", ")
        );
    }
    Ok(libs)
}

/// `ldd` output of several files: the libraries found (name, path; sorted,
/// without duplicates), and the names not found.
fn parse_ldd(text: &str) -> (Vec<(String, PathBuf)>, Vec<String>) {
    let mut libs: Vec<(String, PathBuf)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [name, "=>", "not", "found", ..] => missing.push((*name).to_owned()),
            [name, "=>", path, ..] if path.starts_with('/') => {
                libs.push(((*name).to_owned(), PathBuf::from(path)))
            }
            [path, ..] if path.starts_with('/') && path.contains("ld-linux") => {
                let p = PathBuf::from(path);
                if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                    libs.push((n.to_owned(), p.clone()));
                }
            }
            _ => {}
        }
    }
    libs.sort();
    libs.dedup_by(|a, b| a.0 == b.0);
    missing.sort();
    missing.dedup();
    (libs, missing)
}

/// The per-run archive: the kernel, the guests' list and command lines.
fn guest_archive(kernel: &[u8], guests: &[(Env, String)]) -> Result<Vec<u8>> {
    let mut w = cpio::Writer::new(Vec::new());
    w.dir("guest", 0o755)?;
    w.file("guest/kernel", 0o644, kernel)?;
    let mut list = String::new();
    for (env, cmdline) in guests {
        let (kind, name) = names(*env);
        if cmdline.contains(['"', '\n', '\\']) {
            bail!("a domU command line cannot hold quotes, backslashes or newlines: {cmdline:?}");
        }
        if env.guest() == Guest::Multiboot2Cd {
            // The firmware boots a CD: GRUB and the multiboot2 kernel, the
            // command line in grub.cfg.
            let iso = crate::loaders::multiboot2_iso(cmdline)?;
            let bytes = fs::read(&iso).with_context(|| format!("reading {}", iso.display()))?;
            w.file(&format!("guest/{name}.iso"), 0o644, &bytes)?;
        }
        if env.guest() == Guest::PvhHighKernel {
            // xl loads it as a PVH kernel, as the example kernel.
            let elf = crate::loaders::pvh_high_kernel()?;
            let bytes = fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
            w.file(&format!("guest/{name}.elf"), 0o644, &bytes)?;
        }
        let control = env.domu_control().map_or("none", |c| c.xl());
        let action = if env.domu_save_restore() {
            format!("save+{control}")
        } else {
            control.to_owned()
        };
        let _ = write!(list, "{kind}:{name}:{action} ");
        w.file(&format!("guest/{name}.cmdline"), 0o644, cmdline.as_bytes())?;
    }
    w.file("guest/guests", 0o644, list.trim_end().as_bytes())?;
    Ok(w.finish()?)
}

/// (kind, domain name) of a domU environment.
fn names(env: Env) -> (&'static str, &'static str) {
    let kind = env.domu_kind().unwrap_or("none");
    (kind, kind)
}

/// The whole run's time bound for `guests` (each with its own bound, or
/// its environment's): dom0's boot, then per guest the longest bound
/// (dom0 gives up on a guest after it) and time to create and report it.
pub fn run_timeout(guests: &[(Env, Option<Duration>)]) -> Duration {
    let longest = guests
        .iter()
        .map(|(e, t)| t.unwrap_or(e.timeout()))
        .max()
        .unwrap_or_default();
    DOM0_BOUND + (longest + Duration::from_secs(30)) * guests.len() as u32
}

/// One guest's part of the console, as dom0 printed it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Section {
    /// Its console lines (between the markers).
    pub console: Vec<String>,
    /// Whether the end marker was seen.
    pub complete: bool,
    /// The result line's `key=value` pairs.
    pub result: Option<Vec<(String, String)>>,
}

impl Section {
    /// A value of the result line.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.result
            .as_ref()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Cuts the console of one dom0 boot into the sections of the guest named
/// `name`.
pub fn split<S: AsRef<str>>(console: &[S], name: &str) -> Section {
    let begin = format!("XENDOMU-CONSOLE-BEGIN name={name}");
    let end = format!("XENDOMU-CONSOLE-END name={name}");
    let result = format!("XENDOMU-RESULT name={name} ");
    let mut s = Section::default();
    let mut inside = false;
    // `name=pv` must not match `name=pvh`.
    let marks = |line: &str, m: &str| {
        line.match_indices(m).any(|(at, _)| {
            line[at + m.len()..]
                .chars()
                .next()
                .is_none_or(char::is_whitespace)
        })
    };
    for line in console {
        let line = line.as_ref();
        if marks(line, &begin) {
            inside = true;
            s.console.clear();
            continue;
        }
        if inside && marks(line, &end) {
            inside = false;
            s.complete = true;
            continue;
        }
        if let Some(at) = line.find(&result) {
            let rest = &line[at + result.len()..];
            s.result = Some(
                rest.split_whitespace()
                    .filter_map(|w| w.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            );
        } else if inside {
            s.console.push(line.to_owned());
        }
    }
    s
}

/// The reason a domU of `env` must end with: what the toolstack asked for
/// (`xl shutdown`: poweroff, `xl reboot`: reboot), else the reboot the
/// kernel's shutdown op asks for.
pub fn expected_end(env: Env) -> &'static str {
    env.domu_control().map_or("reboot", |c| c.end_reason())
}

/// The kernel must have seen the request the harness sent, by its name.
fn control_problems(env: Env, s: &Section) -> Vec<Problem> {
    let Some(c) = env.domu_control() else {
        return Vec::new();
    };
    let want = format!("shutdown request {} ", c.kernel_name());
    if s.console.iter().any(|l| l.contains(&want)) {
        Vec::new()
    } else {
        vec![Problem::DomainEnd(format!(
            "the kernel never said `{}` after `xl {}`",
            want.trim_end(),
            c.xl()
        ))]
    }
}

/// Where Xen also offers Hyper-V's interface (`viridian`), the kernel must
/// have seen it first in CPUID (`hypervisor=hyperv`) and still chosen Xen:
/// without that the environment would prove nothing a plain HVM domU does
/// not.
fn viridian_problems(env: Env, outcome: &Outcome) -> Vec<Problem> {
    if env != Env::XenHvmViridianDomu {
        return Vec::new();
    }
    // No platform line at all is reported as such already.
    let Some(platform) = outcome.console.platforms.first() else {
        return Vec::new();
    };
    let seen = platform
        .extra
        .iter()
        .find(|(k, _)| k == "hypervisor")
        .map(|(_, v)| v.as_str());
    if seen == Some("hyperv") {
        return Vec::new();
    }
    vec![Problem::DomainEnd(format!(
        "viridian=1 should put Hyper-V's leaves first, but the platform line says hypervisor={}",
        seen.unwrap_or("(nothing)")
    ))]
}

/// The command line a domU of `env` gets: `options`' plus, where the
/// harness runs `xl shutdown`, how long to wait for it.
pub fn guest_cmdline(env: Env, options: &BootOptions) -> String {
    let mut c = options.cmdline();
    if env.domu_save_restore() {
        c.push_str(" pvops.wait_save=240");
    }
    if env.domu_shutdown_test() {
        c.push_str(" pvops.wait_shutdown=120");
    }
    c
}

/// Problems with how the domain ended, as dom0's toolstack saw it;
/// `want` is the shutdown reason expected.
fn end_problems(s: &Section, want: &str) -> Vec<Problem> {
    let mut p = Vec::new();
    if !s.complete {
        p.push(Problem::DomainEnd(
            "dom0 never printed its console section (dom0 or the run died first)".into(),
        ));
    }
    match (s.get("state"), s.get("reason")) {
        (None, _) => p.push(Problem::DomainEnd("no XENDOMU-RESULT line".into())),
        (Some("shutdown"), Some(r)) if r == want => {}
        (Some(state), reason) => p.push(Problem::DomainEnd(format!(
            "state={state} reason={}, expected a shutdown with reason {want}",
            reason.unwrap_or("-")
        ))),
    }
    p
}

/// Boots one dom0 that runs `guests` (domU environments, each with its
/// options: command line, echo) one after another, and judges each on its
/// own console section. `echo` streams the whole console.
pub fn boot(kernel: &Path, guests: &[(Env, BootOptions)], echo: bool) -> Result<Vec<Boot>> {
    if guests.is_empty() {
        bail!("no domU to boot");
    }
    for (env, o) in guests {
        if !env.is_domu() {
            bail!("{env} is not a domU environment");
        }
        if o.smp != 2 {
            eprintln!("xtask: note: every domU gets 2 vCPUs (asked: {})", o.smp);
        }
    }
    if let Some(why) = unavailable() {
        bail!("{why}");
    }
    if guests.iter().any(|(e, _)| e.guest() == Guest::Multiboot2Cd) {
        if let Some(why) = crate::loaders::unavailable(crate::loaders::Loader::Grub) {
            bail!("{why}");
        }
    }
    // Rebuilt here when an input changed since (cheap otherwise).
    let dom0 = ensure_dom0()?;
    let image = BootImage::read(kernel)?;
    let kernel_bytes = fs::read(&image.path)?;
    let list: Vec<(Env, String)> = guests
        .iter()
        .map(|(e, o)| (*e, guest_cmdline(*e, o)))
        .collect();
    let run_dir = dir().join("runs");
    fs::create_dir_all(&run_dir)?;
    // One file per process and call: tests may boot concurrently.
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let initrd = run_dir.join(format!("initrd-{}-{n}.cpio", std::process::id()));
    {
        let mut f = BufWriter::new(File::create(&initrd)?);
        std::io::copy(&mut File::open(&dom0.initrd)?, &mut f)?;
        f.write_all(&guest_archive(&kernel_bytes, &list)?)?;
        f.flush()?;
    }
    let guest_bound = guests
        .iter()
        .map(|(e, o)| o.timeout.unwrap_or(e.timeout()))
        .max()
        .unwrap_or_default();
    let dom0_args = format!(
        "console=hvc0 earlyprintk=xen rdinit=/init panic=10 guest_timeout={}",
        guest_bound.as_secs()
    );
    let Some(initrd_s) = initrd.to_str() else {
        bail!("{} is not UTF-8", initrd.display());
    };
    let modules = format!(
        "{},{}",
        multiboot_module(&dom0.vmlinuz, &dom0_args)?,
        initrd_s.replace(',', ",,")
    );
    let args: Vec<std::ffi::OsString> = [
        "-machine",
        "pc",
        "-m",
        MEMORY,
        "-smp",
        "2",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
        "-accel",
        "tcg",
        "-cpu",
        CPU,
        "-append",
        XEN_CMDLINE,
        "-initrd",
        &modules,
        "-kernel",
    ]
    .iter()
    .map(Into::into)
    .chain(std::iter::once(dom0.xen.clone().into_os_string()))
    .collect();
    let qemu_path = provision::qemu().with_context(|| {
        format!(
            "{} is not on PATH (apt-get install -y {})",
            provision::QEMU,
            provision::QEMU_PACKAGE
        )
    })?;
    let bounds: Vec<(Env, Option<Duration>)> =
        guests.iter().map(|(e, o)| (*e, o.timeout)).collect();
    let timeout = run_timeout(&bounds);
    let run = qemu::run(&qemu_path, &args, timeout, echo);
    let _ = fs::remove_file(&initrd);
    let run = run.context("booting the dom0 that runs the domUs")?;
    let mut boots = Vec::new();
    for (env, o) in guests {
        let (_, name) = names(*env);
        let section = split(&run.console, name);
        let outcome = Outcome {
            console: protocol::parse(&section.console),
            termination: run.termination,
        };
        let mut expectation = env.expectation();
        if let Some(min_ok) = o.min_ok {
            expectation.min_ok = min_ok;
        }
        let mut problems = protocol::check(&outcome, &expectation);
        problems.extend(end_problems(&section, expected_end(*env)));
        problems.extend(control_problems(*env, &section));
        problems.extend(viridian_problems(*env, &outcome));
        let plan = Plan {
            env: *env,
            image: image.clone(),
            cmdline: guest_cmdline(*env, o),
            qemu: qemu_path.clone(),
            args: args.clone(),
            timeout,
            expectation,
        };
        boots.push(Boot {
            plan,
            run: run.clone(),
            outcome,
            problems,
        });
    }
    Ok(boots)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUN: &str = "(XEN) noise\n\
        [dom0 12.1] XENDOMU: xl create -p /etc/xen/pv.cfg (pv)\n\
        XENDOMU-CONSOLE-BEGIN name=pv\n\
        pvops: platform=xen-pv backend=xen features=console-ring\n\
        test a ... ok\n\
        XENDOMU-CONSOLE-END name=pv\n\
        (XEN) more noise\n\
        XENDOMU-RESULT name=pv kind=pv state=shutdown reason=reboot run_s=1.2\n\
        XENDOMU-CONSOLE-BEGIN name=pvh\n\
        test b ... ok\n\
        XENDOMU-CONSOLE-END name=pvhx\n\
        XENDOMU-RESULT name=pvh kind=pvh state=crashed reason=crash run_s=0.5\n";

    #[test]
    fn sections_are_cut_per_guest() {
        let lines: Vec<&str> = RUN.lines().collect();
        let pv = split(&lines, "pv");
        assert_eq!(
            pv.console,
            [
                "pvops: platform=xen-pv backend=xen features=console-ring",
                "test a ... ok"
            ]
        );
        assert!(pv.complete);
        assert_eq!(pv.get("state"), Some("shutdown"));
        assert_eq!(pv.get("run_s"), Some("1.2"));
        assert_eq!(end_problems(&pv, "reboot"), []);
        assert_eq!(end_problems(&pv, "poweroff").len(), 1);

        let pvh = split(&lines, "pvh");
        assert!(!pvh.complete);
        assert_eq!(
            pvh.console.len(),
            2,
            "another guest's marker is not this one's"
        );
        assert_eq!(pvh.get("reason"), Some("crash"));
        assert_eq!(end_problems(&pvh, "reboot").len(), 2);

        let none = split(&lines, "hvm");
        assert!(none.console.is_empty());
        assert_eq!(end_problems(&none, "reboot").len(), 2);
    }

    #[test]
    fn ldd_output_is_read() {
        let text = "/x/xl:\n\
            \tlinux-vdso.so.1 (0x00007ffd)\n\
            \tlibxenlight.so.4.17 => /r/usr/lib/libxenlight.so.4.17 (0x7f)\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\
            \t/lib64/ld-linux-x86-64.so.2 (0x7f)\n\
            /x/xenstored:\n\
            \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x7f)\n\
            \tlibfoo.so.1 => not found\n";
        let (libs, missing) = parse_ldd(text);
        let names: Vec<&str> = libs.iter().map(|l| l.0.as_str()).collect();
        assert_eq!(
            names,
            ["ld-linux-x86-64.so.2", "libc.so.6", "libxenlight.so.4.17"]
        );
        assert_eq!(missing, ["libfoo.so.1"]);
    }

    #[test]
    fn the_guest_archive_lists_each_guest_with_its_command_line() {
        let a = guest_archive(
            b"ELF",
            &[
                (Env::XenPvhDomu, "pvops.mode=test".into()),
                (Env::XenPvDomu, "pvops.mode=bench x=1".into()),
            ],
        )
        .unwrap();
        let text = String::from_utf8_lossy(&a);
        assert!(text.contains("guest/pv.cmdline"), "{text}");
        assert!(
            text.contains("pvh:pvh:save+shutdown pv:pv:reboot"),
            "{text}"
        );
        assert!(text.contains("pvops.mode=bench x=1"), "{text}");
        assert!(guest_archive(b"", &[(Env::XenPvDomu, "a=\"b\"".into())]).is_err());
    }

    #[test]
    fn the_run_bound_grows_with_the_guests() {
        let one = run_timeout(&[(Env::XenPvDomu, None)]);
        let two = run_timeout(&[(Env::XenPvDomu, None), (Env::XenPvhDomu, None)]);
        assert!(two > one && one > DOM0_BOUND);
        let long = run_timeout(&[(Env::XenPvDomu, Some(Duration::from_secs(900)))]);
        assert!(long > Duration::from_secs(900) + DOM0_BOUND);
    }

    #[test]
    fn the_cached_image_follows_its_inputs() {
        let a = fingerprint(&[PathBuf::from("/p/xen_1.deb")]);
        assert_eq!(a, fingerprint(&[PathBuf::from("/q/xen_1.deb")]));
        assert_ne!(a, fingerprint(&[PathBuf::from("/p/xen_2.deb")]));
    }
}
