//! kvm-nested: a KVM that completes hypercalls, on machines whose own KVM
//! emulates guest instructions and never does.
//!
//! QEMU software emulation with `-cpu max` emulates an AMD CPU with SVM.
//! Debian's own Linux kernel boots there (the *outer machine*), loads its
//! real KVM (`irqbypass`, `kvm`, `ccp`, `kvm-amd`) and runs this machine's
//! own `qemu-system-x86_64` (the *inner QEMU*, copied into the initramfs
//! with its libraries and firmware) with `-accel kvm -cpu host` on the
//! kernel under test, with the arguments [`Env::qemu_args`] gives the
//! other KVM environments.
//!
//! One outer boot runs a list of inner configurations one after another
//! (the test boot, the feature-off matrix, bench runs): the outer Linux
//! costs its boot once, each configuration seconds. The outer `/init`
//! (`nested_init.sh`) brackets each inner run with marker lines; the
//! harness cuts the console there and judges every section as a boot of
//! its own ([`Boot`]), with the inner QEMU's exit status as its
//! termination.
//!
//! Provisioning ([`ensure`]) needs no root: `apt-get download` of the
//! kernel package `linux-image-amd64` depends on and of `busybox-static`
//! into `target/kvm-nested/debs`, `dpkg -x`, then the base initramfs is
//! written here in `newc` format ([`crate::cpio`], uncompressed: gzip saved
//! nothing overall in the recipe's measurements) and the uncompressed
//! `vmlinux` taken out of the bzImage, which QEMU boots through its PVH
//! note (several seconds sooner than the bzImage, which decompresses
//! itself under TCG). Both are rebuilt only when an input changes (the
//! packages, the host's QEMU, `/init`, this module's layout).
//!
//! The inner QEMU's QMP is its `-qmp /dev/ttyS1`: the outer machine's
//! second serial port, which the outer QEMU offers on a unix socket
//! (`-serial unix:PATH,server=on,wait=off`); see [`crate::qmp::SerialQmp`].

use std::collections::hash_map::DefaultHasher;
use std::ffi::OsString;
use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::boot::{Boot, BootOptions, Plan};
use crate::cpio;
use crate::env::Env;
use crate::kernel::workspace_root;
use crate::protocol::{self, Outcome, Problem, Termination};
use crate::provision;
use crate::qemu::{self, QemuRun, TAIL_LINES};

/// The package whose dependency is the kernel package (`linux-image-6.1.0-NN-amd64`).
pub const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
/// Environment variable naming the kernel package instead (e.g. to pin one).
pub const KERNEL_PACKAGE_VAR: &str = "PVOPS_NESTED_KERNEL_PACKAGE";
/// The shell and tools of the outer `/init`.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// The KVM modules, in load order (each after what it depends on).
pub const MODULES: [&str; 4] = ["irqbypass", "kvm", "ccp", "kvm-amd"];
/// Firmware folders the inner QEMU needs (`pvh.bin`, SeaBIOS, option
/// ROMs); `/usr/share/qemu` links into `../seabios`.
const FIRMWARE_DIRS: [&str; 2] = ["/usr/share/qemu", "/usr/share/seabios"];
/// The outer `/init`.
const INIT: &str = include_str!("nested_init.sh");
/// Bumped when the base archive's layout changes, so caches rebuild.
const LAYOUT_VERSION: u32 = 1;

/// The outer machine: TCG with SVM, two CPUs (the inner guest gets two
/// vCPUs), memory for the unpacked initramfs and the inner guest.
const OUTER_CPU: &str = "max";
const OUTER_SMP: &str = "2";
const OUTER_MEMORY: &str = "2G";
/// The outer Linux's command line.
const OUTER_APPEND: &str = "console=ttyS0 quiet panic=1";
/// Bound of the outer machine's own part: Linux's boot, loading KVM,
/// power-off (measured 4-12 s; generous for a loaded machine).
const OUTER_BOOT_BOUND: Duration = Duration::from_secs(150);

/// What the outer Linux prints when one of its CPUs is stuck: seen once
/// under heavy host load, a CPU of the outer machine never leaving the
/// inner guest, the outer /init's watchdog unable to kill it. Nothing
/// finishes after that, so the run ends there.
const OUTER_STUCK: &[&str] = &[
    "watchdog: BUG: soft lockup",
    "rcu: INFO: rcu_preempt detected stalls",
    "rcu: INFO: rcu_sched detected stalls",
    "self-detected stall on CPU",
];

/// Prefix of the outer `/init`'s marker lines.
pub const MARKER: &str = "kvm-nested: ";

/// Where everything lives: `target/kvm-nested/`.
pub fn dir() -> PathBuf {
    workspace_root().join("target").join("kvm-nested")
}

/// The provisioned outer machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    /// The outer kernel QEMU boots: `vmlinux` (through its PVH note), or
    /// the bzImage `vmlinuz` when no PVH ELF could be taken out of it.
    pub kernel: PathBuf,
    /// The base initramfs (modules, busybox, QEMU, firmware, `/init`).
    pub initrd: PathBuf,
    /// Which packages and QEMU went in (`versions.txt`).
    pub versions: String,
}

impl Assets {
    fn key_path() -> PathBuf {
        dir().join("base.key")
    }

    /// The assets as last built, if they are all there (nothing is
    /// checked against the packages: see [`ensure`]).
    pub fn built() -> Result<Assets, String> {
        let d = dir();
        let missing = |what: &Path| {
            format!(
                "kvm-nested is not provisioned: {} is missing",
                what.display()
            )
        };
        let initrd = d.join("initrd-base.cpio");
        if !initrd.is_file() || !Self::key_path().is_file() {
            return Err(missing(&initrd));
        }
        let kernel = [d.join("vmlinux"), d.join("vmlinuz")]
            .into_iter()
            .find(|k| k.is_file())
            .ok_or_else(|| missing(&d.join("vmlinuz")))?;
        let versions = fs::read_to_string(d.join("versions.txt")).unwrap_or_default();
        Ok(Assets {
            kernel,
            initrd,
            versions,
        })
    }
}

/// The kernel package `linux-image-amd64` depends on, as apt sees it.
fn kernel_package() -> Result<String> {
    if let Some(p) = std::env::var_os(KERNEL_PACKAGE_VAR) {
        return p
            .into_string()
            .map_err(|p| anyhow!("{KERNEL_PACKAGE_VAR}={p:?} is not text"));
    }
    let resolve = || -> Option<String> {
        let out = Command::new("apt-cache")
            .args(["depends", KERNEL_META_PACKAGE])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let dep = l.trim().strip_prefix("Depends:")?.trim();
            (dep.starts_with("linux-image-") && dep.as_bytes().get(12)?.is_ascii_digit())
                .then(|| dep.to_owned())
        })
    };
    if let Some(p) = resolve() {
        return Ok(p);
    }
    if provision::is_root() {
        eprintln!("xtask: apt knows no {KERNEL_META_PACKAGE}: apt-get update");
        provision::run_checked(Command::new("apt-get").arg("update"), "apt-get update")?;
        if let Some(p) = resolve() {
            return Ok(p);
        }
    }
    bail!(
        "cannot resolve the kernel package: `apt-cache depends {KERNEL_META_PACKAGE}` names no \
         linux-image-<version> (run `apt-get update` as root, or set {KERNEL_PACKAGE_VAR})"
    )
}

/// What the base archive is made of, hashed: when it changes, [`ensure`]
/// builds again.
fn input_key(debs: &[&Path], qemu: &Path) -> Result<String> {
    let mut h = DefaultHasher::new();
    LAYOUT_VERSION.hash(&mut h);
    INIT.hash(&mut h);
    MODULES.hash(&mut h);
    OUTER_APPEND.hash(&mut h);
    for path in debs.iter().copied().chain([qemu]) {
        let meta = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        path.hash(&mut h);
        (meta.len(), meta.mtime()).hash(&mut h);
    }
    for d in FIRMWARE_DIRS {
        fs::metadata(d).map(|m| m.mtime()).unwrap_or(0).hash(&mut h);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// Provisions the outer machine (downloads, unpacks, builds the base
/// initramfs and `vmlinux`) unless what is there was built from the same
/// inputs. Loud on every failure: which package, which module, which file.
pub fn ensure() -> Result<Assets> {
    let qemu = provision::ensure_qemu()?
        .canonicalize()
        .context("resolving the QEMU binary")?;
    let d = dir();
    let debs = d.join("debs");
    let kpkg = match kernel_package() {
        Ok(p) => p,
        // Offline with a build at hand: use it.
        Err(e) => match Assets::built() {
            Ok(a) => {
                eprintln!("xtask: warning: {e:#}; using the kvm-nested build already there");
                return Ok(a);
            }
            Err(_) => return Err(e),
        },
    };
    let kdeb = provision::download_debian_package(&kpkg, &debs)
        .with_context(|| format!("kvm-nested: fetching the kernel package {kpkg}"))?;
    let bdeb = provision::download_debian_package(BUSYBOX_PACKAGE, &debs)
        .with_context(|| format!("kvm-nested: fetching {BUSYBOX_PACKAGE}"))?;
    let key = input_key(&[&kdeb, &bdeb], &qemu)?;
    if let Ok(a) = Assets::built() {
        if fs::read_to_string(Assets::key_path()).is_ok_and(|k| k.trim() == key) {
            return Ok(a);
        }
    }
    let start = Instant::now();
    eprintln!(
        "xtask: kvm-nested: building the outer machine in {} from {} and {}",
        d.display(),
        file_name(&kdeb),
        file_name(&bdeb)
    );
    let _ = fs::remove_file(Assets::key_path());
    let root = d.join("root");
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("clearing {}", root.display()))?;
    }
    fs::create_dir_all(&root)?;
    for deb in [&kdeb, &bdeb] {
        provision::run_checked(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root),
            &format!("dpkg-deb -x {} {}", deb.display(), root.display()),
        )?;
    }
    let release = kernel_release(&root)?;
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{release}"));
    if !vmlinuz.is_file() {
        bail!("{} has no boot/vmlinuz-{release}", file_name(&kdeb));
    }
    fs::copy(&vmlinuz, d.join("vmlinuz"))?;
    let _ = fs::remove_file(d.join("vmlinux"));
    match extract_vmlinux(&fs::read(&vmlinuz)?) {
        Ok(elf) => {
            write_atomically(&d.join("vmlinux"), &elf)?;
            eprintln!(
                "xtask: kvm-nested: vmlinux ({} bytes, PVH entry) taken out of vmlinuz-{release}",
                elf.len()
            );
        }
        Err(e) => eprintln!(
            "xtask: warning: kvm-nested: no PVH vmlinux out of vmlinuz-{release} ({e:#}); the \
             outer machine boots the bzImage, some seconds slower"
        ),
    }

    let initrd = d.join("initrd-base.cpio");
    let partial = d.join("initrd-base.cpio.partial");
    let out = BufWriter::new(
        File::create(&partial).with_context(|| format!("creating {}", partial.display()))?,
    );
    let mut w = cpio::Writer::new(out);
    build_base(&mut w, &root, &release, &qemu)?;
    w.finish()?.flush()?;
    fs::rename(&partial, &initrd)?;

    let packages = fs::read_dir(&debs)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let qemu_version = Command::new(&qemu)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default();
    let versions = format!(
        "kernel_release={release}\npackages={packages}\nqemu={} ({qemu_version})\n\
         initrd_base_bytes={}\n",
        qemu.display(),
        fs::metadata(&initrd)?.len()
    );
    fs::write(d.join("versions.txt"), &versions)?;
    // The unpacked packages (~400 MB) are not needed any more.
    let _ = fs::remove_dir_all(&root);
    fs::write(Assets::key_path(), format!("{key}\n"))?;
    eprintln!(
        "xtask: kvm-nested: outer machine built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    Assets::built().map_err(|e| anyhow!(e))
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let partial = path.with_extension("partial");
    fs::write(&partial, data).with_context(|| format!("writing {}", partial.display()))?;
    fs::rename(&partial, path).with_context(|| format!("renaming to {}", path.display()))
}

/// The one `lib/modules/<release>` of the unpacked kernel package.
fn kernel_release(root: &Path) -> Result<String> {
    let modules = root.join("lib").join("modules");
    let mut releases: Vec<String> = fs::read_dir(&modules)
        .with_context(|| format!("the kernel package has no {}", modules.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    releases.sort();
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("no kernel release under {}", modules.display()),
        many => bail!(
            "several kernel releases under {}: {many:?}",
            modules.display()
        ),
    }
}

/// Writes the base archive: directories, `/dev/console`, busybox and its
/// applets, the KVM modules, QEMU with its libraries and firmware, `/init`.
fn build_base<W: Write>(
    w: &mut cpio::Writer<W>,
    root: &Path,
    release: &str,
    qemu: &Path,
) -> Result<()> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut dir = |w: &mut cpio::Writer<W>, name: &str| -> Result<()> {
        // Parents first; each once.
        let mut at = String::new();
        for part in name.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if dirs.insert(at.clone()) {
                w.dir(&at, if at == "tmp" { 0o1777 } else { 0o755 })?;
            }
        }
        Ok(())
    };
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "etc/nested",
        "lib/modules",
        "lib64",
        "usr/share",
    ] {
        dir(w, d)?;
    }
    w.char_device("dev/console", 0o600, 5, 1)?;

    // busybox, and a link per applet (its own list: /sbin/insmod, ...).
    let busybox = root.join("bin").join("busybox");
    if !busybox.is_file() {
        bail!("{BUSYBOX_PACKAGE} has no bin/busybox");
    }
    w.file("bin/busybox", 0o755, &fs::read(&busybox)?)?;
    let list = Command::new(&busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("running {} --list-full", busybox.display()))?;
    if !list.status.success() {
        bail!("{} --list-full failed", busybox.display());
    }
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet.ends_with("/busybox") || applet == "busybox" {
            continue;
        }
        if let Some((parent, _)) = applet.rsplit_once('/') {
            dir(w, parent)?;
        }
        w.symlink(applet, "/bin/busybox")?;
    }

    // The KVM modules, decompressed, in load order, each checked to come
    // after what it depends on.
    let tree = root
        .join("lib")
        .join("modules")
        .join(release)
        .join("kernel");
    let mut loaded: Vec<String> = Vec::new();
    for name in MODULES {
        let path = find_module(&tree, name)?
            .with_context(|| format!("module {name} is not in the kernel package ({release})"))?;
        let data = decompress_module(&path)?;
        if !data.starts_with(b"\x7fELF") {
            bail!("{}: not an ELF module", path.display());
        }
        let depends = modinfo(&data, "depends").unwrap_or_default();
        for dep in depends.split(',').filter(|d| !d.is_empty()) {
            let dep = dep.replace('_', "-");
            if !loaded.contains(&dep) {
                bail!("module {name} depends on {dep}, which is not loaded before it");
            }
        }
        loaded.push(name.to_owned());
        w.file(&format!("lib/modules/{name}.ko"), 0o644, &data)?;
    }

    // QEMU, every library ldd names (links resolved, same paths), the
    // dynamic loader.
    w.file("usr/bin/qemu-system-x86_64", 0o755, &fs::read(qemu)?)?;
    for lib in shared_libraries(qemu)? {
        let name = lib.to_string_lossy().trim_start_matches('/').to_owned();
        if let Some((parent, _)) = name.rsplit_once('/') {
            dir(w, parent)?;
        }
        let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
        w.file(&name, 0o755, &data)?;
    }
    for d in FIRMWARE_DIRS {
        let name = d.trim_start_matches('/');
        dir(w, name)?;
        w.tree_at(Path::new(d), name)
            .with_context(|| format!("packing {d} (Debian: qemu-system-data, seabios)"))?;
    }
    w.file("init", 0o755, INIT.as_bytes())?;
    Ok(())
}

/// `<name>.ko` (or `.ko.xz`, `.ko.gz`, `.ko.zst`) anywhere under `tree`.
fn find_module(tree: &Path, name: &str) -> Result<Option<PathBuf>> {
    let wanted: Vec<String> = ["", ".xz", ".gz", ".zst"]
        .iter()
        .map(|ext| format!("{name}.ko{ext}"))
        .collect();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if wanted.iter().any(|w| entry.file_name() == w.as_str()) {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

/// A module's bytes, decompressed where the package compressed it (so
/// busybox's insmod never decompresses under emulation).
fn decompress_module(path: &Path) -> Result<Vec<u8>> {
    let tool = match path.extension().and_then(|e| e.to_str()) {
        Some("ko") => return Ok(fs::read(path)?),
        Some("xz") => "xz",
        Some("gz") => "gzip",
        Some("zst") => "zstd",
        _ => bail!("{}: unknown module compression", path.display()),
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} -dc {} ({tool} installed?)", path.display()))?;
    if !out.status.success() {
        bail!("{tool} -dc {} failed", path.display());
    }
    Ok(out.stdout)
}

/// The value of `key=` in a module's `.modinfo` (NUL-separated strings).
fn modinfo(module: &[u8], key: &str) -> Option<String> {
    let needle = format!("{key}=");
    module
        .split(|&b| b == 0)
        .find_map(|s| s.strip_prefix(needle.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The shared libraries `ldd` lists for `binary`, and its dynamic loader.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .with_context(|| format!("running ldd {}", binary.display()))?;
    if !out.status.success() {
        bail!("ldd {} failed", binary.display());
    }
    let libs = parse_ldd(&String::from_utf8_lossy(&out.stdout));
    if libs.is_empty() {
        bail!("ldd {} listed no library", binary.display());
    }
    Ok(libs)
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The uncompressed kernel ELF inside a bzImage, checked to carry the PVH
/// entry note (`XEN_ELFNOTE_PHYS32_ENTRY`). The payload is where the
/// setup header says (`payload_offset`/`payload_length`, boot protocol
/// 2.08+); xz, gzip and zstd payloads are decompressed with their tools.
pub fn extract_vmlinux(bzimage: &[u8]) -> Result<Vec<u8>> {
    let u16_at = |o: usize| {
        bzimage
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bzimage
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if bzimage.get(0x202..0x206) != Some(b"HdrS") {
        bail!("not a bzImage (no HdrS setup header)");
    }
    let version = u16_at(0x206).unwrap_or(0);
    if version < 0x208 {
        bail!("boot protocol {version:#x} has no payload fields");
    }
    let setup_sects = match bzimage[0x1f1] {
        0 => 4,
        n => n as usize,
    };
    let pm_start = (setup_sects + 1) * 512;
    let offset = u32_at(0x248).context("short setup header")? as usize;
    let length = u32_at(0x24c).context("short setup header")? as usize;
    let payload = bzimage
        .get(pm_start + offset..pm_start + offset + length)
        .context("the payload lies outside the file")?;
    let tool: &[&str] = if payload.starts_with(b"\xfd7zXZ\0") {
        // The kernel appends the decompressed size after the stream.
        &["xz", "-dc", "--single-stream"]
    } else if payload.starts_with(b"\x1f\x8b") {
        &["gzip", "-dc"]
    } else if payload.starts_with(b"\x28\xb5\x2f\xfd") {
        &["zstd", "-dc"]
    } else {
        bail!(
            "payload compression not recognised ({:02x?})",
            &payload[..4.min(payload.len())]
        );
    };
    let elf = pipe_through(tool, payload)?;
    match pvh_entry(&elf) {
        Some(_) => Ok(elf),
        None => bail!("the decompressed payload is not an ELF with a PVH entry note"),
    }
}

/// Runs `command`, feeding it `input`; its stdout (a tool complaining
/// about trailing bytes is fine if it produced output).
fn pipe_through(command: &[&str], input: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(command[0])
        .args(&command[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("running {} (installed?)", command.join(" ")))?;
    let mut stdin = child.stdin.take().context("no stdin")?;
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output()?;
    let _ = feeder.join();
    if out.stdout.is_empty() {
        bail!("{} produced nothing ({})", command.join(" "), out.status);
    }
    Ok(out.stdout)
}

/// The PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`, type 18, owner "Xen") of a
/// 64-bit ELF, from its `PT_NOTE` segments.
pub fn pvh_entry(elf: &[u8]) -> Option<u64> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?));
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let phoff = u64_at(0x20)? as usize;
    let phentsize = u16_at(0x36)? as usize;
    let phnum = u16_at(0x38)? as usize;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        if u32_at(ph)? != 4 {
            continue; // not PT_NOTE
        }
        let start = u64_at(ph + 8)? as usize;
        let end = start.checked_add(u64_at(ph + 32)? as usize)?;
        let mut at = start;
        while at + 12 <= end {
            let namesz = u32_at(at)? as usize;
            let descsz = u32_at(at + 4)? as usize;
            let kind = u32_at(at + 8)?;
            let name = elf.get(at + 12..at + 12 + namesz)?;
            let desc = at + 12 + namesz.next_multiple_of(4);
            if kind == 18 && name.strip_suffix(b"\0").unwrap_or(name) == b"Xen" {
                let d = elf.get(desc..desc + descsz.min(8))?;
                let mut v = [0u8; 8];
                v[..d.len()].copy_from_slice(d);
                return Some(u64::from_le_bytes(v));
            }
            at = desc + descsz.next_multiple_of(4);
        }
    }
    None
}

/// One inner run's place in the outer console.
#[derive(Debug, Clone, Default)]
struct Section {
    name: String,
    lines: Vec<String>,
    begun: Option<Instant>,
    ended: Option<(i32, bool, Instant)>,
}

/// Host wall-clock times of one outer boot.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Outer QEMU start to `/init` running.
    pub to_init: Option<Duration>,
    /// Outer QEMU start to KVM loaded (`ready`).
    pub to_ready: Option<Duration>,
    /// Each inner run, start to exit, by name.
    pub inner: Vec<(String, Duration)>,
    /// The whole outer run.
    pub total: Duration,
}

impl Timings {
    /// One line for logs.
    pub fn summary(&self) -> String {
        let s = |d: Option<Duration>| {
            d.map(|d| format!("{:.1} s", d.as_secs_f64()))
                .unwrap_or_else(|| "-".into())
        };
        let inner: Vec<String> = self
            .inner
            .iter()
            .map(|(n, d)| format!("{n} {:.1} s", d.as_secs_f64()))
            .collect();
        format!(
            "outer QEMU start to /init {}, to KVM loaded {}; inner runs: {}; whole outer run {:.1} s",
            s(self.to_init),
            s(self.to_ready),
            inner.join(", "),
            self.total.as_secs_f64()
        )
    }
}

/// One outer boot's result: a judged [`Boot`] per inner run, in order.
#[derive(Debug, Clone)]
pub struct NestedRun {
    /// The inner runs, judged each against its own plan.
    pub boots: Vec<Boot>,
    /// The outer machine's whole console.
    pub console: Vec<String>,
    /// Where the time went.
    pub timings: Timings,
    /// The live migration's own result, when the boot ran one (its boot
    /// is also in [`NestedRun::boots`]).
    pub migration: Option<crate::migrate::Migrated>,
}

/// A console line as the observer of [`run`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Index of the inner run the line belongs to, if any.
    pub run: Option<usize>,
    /// A marker line that starts inner run `run`.
    pub begins: bool,
    /// The text.
    pub text: &'a str,
    /// The unix socket of the outer second serial port (the inner QMP
    /// with [`Options::qmp`]).
    pub socket: &'a Path,
    /// The unix socket of the outer third serial port (a migration's
    /// destination QMP, [`crate::migrate`]).
    pub dest_socket: &'a Path,
}

/// Plans for one inner run each (test or bench), as [`Plan::new`] makes
/// them for `env` (one of [`Env::NESTED`]) with `options`, then changed by
/// each variant.
pub fn plans(
    env: Env,
    kernel: &Path,
    options: &BootOptions,
    variants: &[crate::bench::Variant],
) -> Result<Vec<Plan>> {
    if !env.is_nested() {
        bail!("environment {env} does not run inside kvm-nested's outer machine");
    }
    variants
        .iter()
        .map(|v| {
            let mut plan = Plan::new(env, kernel, options)?;
            v.apply(&mut plan)?;
            Ok(plan)
        })
        .collect()
}

/// The environments of [`Env::NESTED`] grouped by outer boot: kvm-nested
/// (with its live migration) in one, hyperv and hyperv-kvm in another.
/// Apart because the outer machine froze three times in about twelve
/// matrix runs at the start of a hyperv inner run (never in a kvm-nested
/// one): in a boot of their own such a freeze fails the Hyper-V
/// environments only. Each group still runs all its configurations in its
/// one outer boot.
pub const OUTER_BOOTS: [&[Env]; 2] = [
    &[Env::KvmNested, Env::MicrovmNested],
    &[Env::HyperV, Env::HyperVKvm],
];

/// The group of [`OUTER_BOOTS`] that boots `env`.
pub fn outer_boot_of(env: Env) -> Option<usize> {
    OUTER_BOOTS.iter().position(|g| g.contains(&env))
}

/// Every inner configuration one outer test boot runs for `envs`, in
/// order: for each, its default configuration, then its feature-off
/// matrix ([`Env::matrix_variants`]: each KVM feature off and `kvm=off`
/// for kvm-nested, each Hyper-V flag off for hyperv).
pub fn matrix_plans(envs: &[Env], kernel: &Path, options: &BootOptions) -> Result<Vec<Plan>> {
    let mut out = Vec::new();
    for &env in envs {
        let variants: Vec<crate::bench::Variant> =
            std::iter::once(crate::bench::Variant::default_variant())
                .chain(env.matrix_variants())
                .collect();
        out.extend(plans(env, kernel, options, &variants)?);
    }
    Ok(out)
}

/// [`matrix_plans`] of `envs` in one outer boot, test mode, kvm-nested's
/// followed by a live migration of its default configuration
/// ([`crate::migrate`]); each inner run judged against its own
/// environment's expectation.
pub fn boot_matrix(envs: &[Env], kernel: &Path, options: &BootOptions) -> Result<NestedRun> {
    // kvm-nested's migration right after its matrix, before any other
    // environment of the group: the microvm run (about 18 s of firmware
    // and kernel loading under the nested KVM before the kernel's first
    // line) comes after it. One migration whose destination never ran
    // was seen with microvm first; the cause is not known.
    let mut plans = Vec::new();
    for &env in envs {
        plans.extend(matrix_plans(&[env], kernel, options)?);
        if env == Env::KvmNested {
            plans.push(crate::migrate::plan(Env::KvmNested, kernel, options)?);
        }
    }
    let outer = Options {
        echo: options.echo,
        ..Options::default()
    };
    let mut migrations = crate::migrate::NestedController::default();
    let mut nested = match run(&plans, &outer, &mut |l| migrations.line(&l)) {
        Err(e) if is_outer_freeze(&e) => {
            // The emulated host froze (see `is_outer_freeze`): no inner run
            // could finish. One more outer boot, said loudly; a second
            // freeze fails the run.
            eprintln!(
                "xtask: warning: {e:#}\nxtask: warning: the outer machine froze (a fault of \
                 the emulated nested host, not of a guest); booting it once more for all \
                 {} inner runs",
                plans.len()
            );
            migrations = crate::migrate::NestedController::default();
            run(&plans, &outer, &mut |l| migrations.line(&l))
                .context("kvm-nested: the outer machine froze twice in a row")?
        }
        r => r?,
    };
    judge_migrations(&mut nested, migrations);
    Ok(nested)
}

/// Whether `e` is the outer machine freezing or stalling as a whole
/// (killed for silence, or its Linux reporting a stuck CPU), as opposed to
/// an inner run failing: seen at the start of inner runs with various
/// configurations (hyperv ones most often), each passing alone, the cause
/// in the nested host under TCG.
pub fn is_outer_freeze(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<qemu::Killed>().map(|k| &k.reason),
        Some(qemu::KillReason::Silent(_) | qemu::KillReason::GuestStopped(_))
    )
}

/// Judges the live-migration runs of `nested` again, with what their
/// migrations gave (a migration run nobody migrated fails).
pub fn judge_migrations(nested: &mut NestedRun, controller: crate::migrate::NestedController) {
    let mut results = controller.finish();
    for (i, boot) in nested.boots.iter_mut().enumerate() {
        if !crate::migrate::is_migration(&boot.plan) {
            continue;
        }
        let stats = match results.iter().position(|(r, _)| *r == i) {
            Some(at) => results.swap_remove(at).1,
            None => Err(format!(
                "the kernel never said it was ready ({:?}), so the harness never migrated it",
                crate::migrate::READY
            )),
        };
        let migrated = crate::migrate::judge_nested(boot, stats);
        *boot = migrated.boot.clone();
        nested.migration = Some(migrated);
    }
}

/// How [`run`] runs the outer machine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Echo the outer console live to stdout.
    pub echo: bool,
    /// Put each inner QEMU's QMP on the outer second serial port.
    pub qmp: bool,
    /// The outer `-cpu` (default `max`: it must offer SVM; the tests use
    /// `qemu64,-svm` to check that its absence fails loudly).
    pub outer_cpu: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            echo: false,
            qmp: false,
            outer_cpu: OUTER_CPU.to_owned(),
        }
    }
}

/// Boots the outer machine once and runs every plan's inner QEMU in turn
/// (each plan made for [`Env::KvmNested`]: its kernel, command line,
/// arguments, bound and expectation are the inner run's). With
/// `options.qmp`, each inner QEMU's QMP is on the outer second serial
/// port (a unix socket of the outer QEMU). `observer` sees every console line as
/// it arrives.
///
/// Errors (never a silent pass): provisioning missing, the outer machine
/// killed at its bound, `/init` reporting a failure (a module that does
/// not load, no `/dev/kvm`, an inner QEMU that cannot run), or an inner
/// run that never ended; each with the console's tail.
pub fn run(
    plans: &[Plan],
    options: &Options,
    observer: &mut dyn FnMut(Line<'_>),
) -> Result<NestedRun> {
    let Options {
        echo,
        qmp,
        ref outer_cpu,
    } = *options;
    if plans.is_empty() {
        bail!("kvm-nested: nothing to run");
    }
    let assets = Assets::built().map_err(|e| anyhow!(e))?;
    let guest = &plans[0].image;
    if plans.iter().any(|p| p.image != *guest) {
        bail!("kvm-nested: every inner run of one outer boot boots the same kernel");
    }
    let qemu = provision::qemu().context("qemu-system-x86_64 is not on PATH")?;

    // The per-run archive: /guest and the configurations, after the base.
    let run_dir = run_dir();
    let _ = fs::remove_dir_all(&run_dir);
    fs::create_dir_all(&run_dir)?;
    let _cleanup = RemoveOnDrop(run_dir.clone());
    let initrd = run_dir.join("initrd.cpio");
    {
        let mut out = BufWriter::new(File::create(&initrd)?);
        let mut base = File::open(&assets.initrd)?;
        std::io::copy(&mut base, &mut out)?;
        let mut w = cpio::Writer::new(out);
        w.file("guest", 0o644, &fs::read(&guest.path)?)?;
        // A loader's UEFI firmware (Medium::UefiDisk) goes in beside it.
        if let Some(firmware) = firmware_of(&plans[0]) {
            let bytes = fs::read(&firmware)
                .with_context(|| format!("reading the firmware {}", firmware.display()))?;
            w.file(GUEST_FIRMWARE.trim_start_matches('/'), 0o644, &bytes)?;
        }
        for (i, plan) in plans.iter().enumerate() {
            let stem = format!("etc/nested/run-{:03}", i + 1);
            let mut args = inner_args(plan, qmp)?.join("\n");
            args.push('\n');
            w.file(&format!("{stem}.args"), 0o644, args.as_bytes())?;
            // A live migration: the destination QEMU beside it.
            if crate::migrate::is_migration(plan) {
                let mut dest =
                    crate::migrate::nested_destination_args(&inner_args(plan, qmp)?).join("\n");
                dest.push('\n');
                w.file(&format!("{stem}.destination"), 0o644, dest.as_bytes())?;
            }
            w.file(&format!("{stem}.name"), 0o644, name_of(plan).as_bytes())?;
            let limit = format!("{}\n", plan.timeout.as_secs().max(1));
            w.file(&format!("{stem}.limit"), 0o644, limit.as_bytes())?;
        }
        w.finish()?.flush()?;
    }
    let socket = qmp_socket(&run_dir);
    let _ = fs::remove_file(&socket);
    let dest_socket = {
        let mut s = socket.clone().into_os_string();
        s.push(".dest");
        PathBuf::from(s)
    };
    let _ = fs::remove_file(&dest_socket);
    let args = outer_args(&assets, &initrd, &socket, &dest_socket, outer_cpu);
    let bound = OUTER_BOOT_BOUND + plans.iter().map(|p| p.timeout).sum::<Duration>();
    if echo {
        eprintln!(
            "xtask: kvm-nested: outer machine: {} {}",
            qemu.display(),
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        );
        eprintln!(
            "xtask: kvm-nested: {} inner run(s): {}; time bound {} s",
            plans.len(),
            plans.iter().map(name_of).collect::<Vec<_>>().join(", "),
            bound.as_secs()
        );
    }

    let start = Instant::now();
    let mut sections: Vec<Section> = Vec::new();
    let mut timings = Timings::default();
    let mut failure: Option<String> = None;
    let mut current: Option<usize> = None;
    let mut watch = |line: &str| {
        let now = Instant::now();
        let (before, marker) = match line.find(MARKER) {
            Some(at) => (&line[..at], Some(&line[at + MARKER.len()..])),
            None => (line, None),
        };
        if let Some(i) = current {
            if marker.is_none() || !before.trim().is_empty() {
                sections[i].lines.push(before.to_owned());
                observer(Line {
                    run: Some(i),
                    begins: false,
                    text: before,
                    socket: &socket,
                    dest_socket: &dest_socket,
                });
            }
        } else {
            observer(Line {
                run: None,
                begins: false,
                text: line,
                socket: &socket,
                dest_socket: &dest_socket,
            });
        }
        let Some(marker) = marker else { return };
        let word = marker.split_whitespace().next().unwrap_or_default();
        if !echo && matches!(word, "ready" | "begin" | "end" | "FAIL:") {
            // Progress, for runs that do not echo the console.
            eprintln!(
                "xtask: {MARKER}{marker} (+{:.1} s)",
                (now - start).as_secs_f64()
            );
        }
        let value = |key: &str| {
            marker
                .split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        match word {
            "init" => timings.to_init = Some(now - start),
            "ready" => timings.to_ready = Some(now - start),
            "begin" => {
                sections.push(Section {
                    name: value("name").unwrap_or_default(),
                    begun: Some(now),
                    ..Section::default()
                });
                current = Some(sections.len() - 1);
                observer(Line {
                    run: current,
                    begins: true,
                    text: line,
                    socket: &socket,
                    dest_socket: &dest_socket,
                });
            }
            "end" => {
                if let Some(i) = current.take() {
                    let status = value("status").and_then(|s| s.parse().ok()).unwrap_or(-1);
                    let killed = value("killed").as_deref() == Some("yes");
                    sections[i].ended = Some((status, killed, now));
                }
            }
            "FAIL:" => {
                failure.get_or_insert_with(|| marker["FAIL:".len()..].trim().to_owned());
            }
            _ => {}
        }
    };
    let log_path = log_path(&run_dir);
    let mut log = File::create(&log_path).ok().map(BufWriter::new);
    let mut watch_and_log = |line: &str| {
        if let Some(f) = log.as_mut() {
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
        watch(line)
    };
    let result = qemu::run_watched_silent(
        &qemu,
        &args,
        bound,
        echo,
        &mut watch_and_log,
        OUTER_STUCK,
        silence_bound(plans),
    );
    drop(log);
    timings.total = start.elapsed();
    let _ = fs::remove_file(&socket);
    let _ = fs::remove_file(&dest_socket);
    let outer = match result {
        Ok(r) => r,
        Err(e) => {
            let why = match e.downcast_ref::<qemu::Killed>().map(|k| &k.reason) {
                Some(qemu::KillReason::GuestStopped(line)) => {
                    format!("the outer Linux reports a stuck CPU ({line:?}), so nothing can finish")
                }
                Some(qemu::KillReason::Silent(quiet)) => format!(
                    "the outer machine printed nothing for {} s (frozen{}), so nothing can finish",
                    quiet.as_secs(),
                    sections
                        .last()
                        .filter(|s| s.ended.is_none())
                        .map(|s| format!(" during inner run {}", s.name))
                        .unwrap_or_default()
                ),
                _ => format!(
                    "the outer machine did not end by itself within {} s",
                    bound.as_secs()
                ),
            };
            return Err(e.context(format!(
                "kvm-nested: {why} (whole console: {})",
                log_path.display()
            )));
        }
    };
    let tail = || {
        let mut s = String::new();
        for l in qemu::tail(&outer.console, TAIL_LINES) {
            s.push_str("\n  | ");
            s.push_str(l);
        }
        for l in &outer.stderr {
            s.push_str("\n  ! ");
            s.push_str(l);
        }
        s.push_str(&format!("\n(whole console: {})", log_path.display()));
        s
    };
    if let Some(why) = failure {
        bail!(
            "kvm-nested: the outer machine failed: {why}\nlast {} console line(s):{}",
            TAIL_LINES,
            tail()
        );
    }
    if timings.to_init.is_none() {
        bail!(
            "kvm-nested: the outer Linux never ran /init (QEMU {}); last console lines:{}",
            outer.termination,
            tail()
        );
    }
    if sections.len() != plans.len() || sections.iter().any(|s| s.ended.is_none()) {
        let unfinished = sections
            .iter()
            .find(|s| s.ended.is_none())
            .map(|s| format!("inner run {} began but never ended", s.name))
            .unwrap_or_else(|| format!("{} of {} inner runs began", sections.len(), plans.len()));
        bail!(
            "kvm-nested: {unfinished} (outer QEMU {}); last console lines:{}",
            outer.termination,
            tail()
        );
    }
    let mut boots = Vec::new();
    for (plan, section) in plans.iter().zip(sections) {
        let (status, killed, ended) = section.ended.expect("checked above");
        let elapsed = ended - section.begun.unwrap_or(start);
        timings.inner.push((section.name.clone(), elapsed));
        boots.push(judge(plan.clone(), section.lines, status, killed, elapsed));
    }
    Ok(NestedRun {
        boots,
        console: outer.console,
        timings,
        migration: None,
    })
}

/// How long the outer console may stay silent: the longest inner bound
/// (after which the outer /init kills that run and prints its end line)
/// plus [`OUTER_SILENCE_MARGIN`]. Twice in about ten matrix runs the whole
/// outer machine froze at the start of a hyperv inner run, printing
/// nothing, its watchdog never firing; without this the harness waited
/// for the whole outer bound (the sum of every inner bound, 40 minutes).
fn silence_bound(plans: &[Plan]) -> Duration {
    plans.iter().map(|p| p.timeout).max().unwrap_or_default() + OUTER_SILENCE_MARGIN
}

/// See [`silence_bound`]: time for the outer /init to notice, kill and say so.
const OUTER_SILENCE_MARGIN: Duration = Duration::from_secs(60);

/// Judges one inner run: its console section against its plan.
fn judge(plan: Plan, lines: Vec<String>, status: i32, killed: bool, elapsed: Duration) -> Boot {
    let termination = if killed {
        Termination::Signaled(9)
    } else {
        Termination::Exited(status)
    };
    let outcome = Outcome {
        console: protocol::parse(&lines),
        termination,
    };
    let mut problems = protocol::check(&outcome, &plan.expectation);
    if killed {
        problems.push(Problem::WrongTermination {
            found: termination,
            why: format!(
                "the inner QEMU did not finish within {} s and the outer /init killed it",
                plan.timeout.as_secs()
            ),
        });
    } else if outcome.console.platforms.is_empty() && outcome.console.tests.is_empty() {
        problems.push(Problem::WrongTermination {
            found: termination,
            why: "the inner QEMU printed no protocol line: it did not start, or its guest never \
                  ran (its messages are in this run's console)"
                .into(),
        });
    }
    Boot {
        run: QemuRun {
            console: lines,
            stderr: Vec::new(),
            termination,
            elapsed,
            dropped_lines: 0,
        },
        plan,
        outcome,
        problems,
    }
}

/// A short name for a plan's configuration: its `-cpu` beyond `host`.
fn name_of(plan: &Plan) -> String {
    let cpu = plan
        .args
        .iter()
        .position(|a| a == "-cpu")
        .and_then(|i| plan.args.get(i + 1))
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Against the environment's own CPU: what the variant changed.
    let base = match plan.env {
        Env::HyperV => crate::env::hyperv_cpu(true, &[]),
        Env::HyperVKvm => crate::env::hyperv_cpu(false, &[]),
        _ => crate::env::KVM_NESTED_CPU.to_owned(),
    };
    let extra = if cpu == base {
        String::new()
    } else if let Some(rest) = cpu.strip_prefix(base.as_str()) {
        rest.trim_start_matches(',').to_owned()
    } else if plan.env == Env::HyperV {
        // A matrix entry: the flags it lacks.
        let missing: Vec<&str> = crate::env::HYPERV_FLAGS
            .iter()
            .filter(|f| !cpu.split(',').any(|c| c == **f))
            .map(|f| f.split('=').next().unwrap_or(f))
            .collect();
        format!("-{}", missing.join(",-"))
    } else {
        cpu.strip_prefix(crate::env::KVM_NESTED_CPU)
            .unwrap_or(&cpu)
            .trim_start_matches(',')
            .to_owned()
    };
    let mode = if plan.cmdline.contains("pvops.mode=bench") {
        "bench"
    } else if crate::migrate::is_migration(plan) {
        "migrate"
    } else {
        "test"
    };
    let env = match plan.env {
        Env::KvmNested => String::new(),
        e => format!("{e}:"),
    };
    if extra.is_empty() {
        format!("{env}{mode}:default")
    } else {
        format!("{env}{mode}:{extra}")
    }
}

/// Where a loader's UEFI firmware is in the outer machine.
const GUEST_FIRMWARE: &str = "/guest-firmware.fd";

/// The `-bios` file of `plan` (a loader's UEFI firmware), if any.
fn firmware_of(plan: &Plan) -> Option<PathBuf> {
    let i = plan.args.iter().position(|a| a == "-bios")?;
    plan.args.get(i + 1).map(PathBuf::from)
}

/// The inner QEMU's arguments for `plan`: its own (made for
/// [`Env::KvmNested`]), the guest at `/guest` (an ELF for `-kernel`, or a
/// loader's `-cdrom` or `-drive` image, its `-bios` firmware at
/// [`GUEST_FIRMWARE`]), the firmware folders, and QMP on the outer second
/// serial port when asked.
fn inner_args(plan: &Plan, qmp: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut args = plan.args.iter();
    while let Some(a) = args.next() {
        let a = a
            .to_str()
            .with_context(|| format!("inner QEMU argument {a:?} is not text"))?;
        out.push(a.to_owned());
        match a {
            "-kernel" | "-cdrom" => {
                args.next();
                out.push("/guest".to_owned());
            }
            "-drive" => {
                args.next();
                out.push("format=raw,file=/guest".to_owned());
            }
            "-bios" => {
                args.next();
                out.push(GUEST_FIRMWARE.to_owned());
            }
            _ => {}
        }
    }
    for d in FIRMWARE_DIRS {
        out.extend(["-L".to_owned(), d.to_owned()]);
    }
    // A live migration's source always has its QMP (the harness migrates
    // through it).
    let has_qmp = out.iter().any(|a| a == "-qmp");
    if (qmp || crate::migrate::is_migration(plan)) && !has_qmp {
        out.extend(["-qmp".to_owned(), "/dev/ttyS1".to_owned()]);
    }
    if let Some(bad) = out.iter().find(|a| a.contains('\n')) {
        bail!("inner QEMU argument {bad:?} contains a line break");
    }
    Ok(out)
}

/// The outer QEMU's arguments.
fn outer_args(
    assets: &Assets,
    initrd: &Path,
    socket: &Path,
    dest_socket: &Path,
    cpu: &str,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
    push(&["-accel", "tcg", "-cpu", cpu, "-smp", OUTER_SMP]);
    push(&["-m", OUTER_MEMORY, "-nodefaults", "-display", "none"]);
    push(&["-no-reboot", "-serial", "stdio"]);
    a.push("-serial".into());
    a.push(format!("unix:{},server=on,wait=off", socket.display()).into());
    // The third (/dev/ttyS2): a live migration's destination QMP.
    a.push("-serial".into());
    a.push(format!("unix:{},server=on,wait=off", dest_socket.display()).into());
    a.push("-kernel".into());
    a.push(assets.kernel.clone().into());
    a.push("-initrd".into());
    a.push(initrd.into());
    a.push("-append".into());
    a.push(OUTER_APPEND.into());
    a
}

/// Where the outer console of the run in `run_dir` is kept (the last
/// runs' consoles, for a look after a failure): `target/kvm-nested/log/`.
fn log_path(run_dir: &Path) -> PathBuf {
    let logs = dir().join("log");
    let _ = fs::create_dir_all(&logs);
    let name = run_dir.file_name().unwrap_or_default().to_string_lossy();
    logs.join(format!("{name}.console"))
}

/// A folder of its own for each outer run (concurrent runs, from one
/// process or several, must not share files or the socket).
fn run_dir() -> PathBuf {
    static RUNS: AtomicU32 = AtomicU32::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    dir().join(format!("run-{}-{n}", std::process::id()))
}

/// The unix socket of the outer machine's second serial port (the inner
/// QMP), short enough for `AF_UNIX` wherever the workspace is.
fn qmp_socket(run_dir: &Path) -> PathBuf {
    let preferred = run_dir.join("qmp.sock");
    if preferred.as_os_str().len() < 100 {
        preferred
    } else {
        let name = run_dir.file_name().unwrap_or_default().to_string_lossy();
        std::env::temp_dir().join(format!("pvops-nested-{name}.sock"))
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_frozen_or_stalled_outer_machine_is_booted_again() {
        let killed = |reason| {
            anyhow::Error::new(qemu::Killed {
                reason,
                last_lines: Vec::new(),
                stderr: Vec::new(),
            })
            .context("kvm-nested: the outer machine printed nothing")
        };
        assert!(is_outer_freeze(&killed(qemu::KillReason::Silent(
            Duration::from_secs(150)
        ))));
        assert!(is_outer_freeze(&killed(qemu::KillReason::GuestStopped(
            "rcu: INFO: rcu_sched detected stalls".into()
        ))));
        assert!(!is_outer_freeze(&anyhow!("an inner run failed")));
    }

    #[test]
    fn ldd_lines() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                    \tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                    \tlibmissing.so => not found\n";
        assert_eq!(
            parse_ldd(text),
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libz.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn modinfo_fields() {
        let m = b"\x7fELF...\0license=GPL\0depends=kvm,ccp\0name=kvm_amd\0";
        assert_eq!(modinfo(m, "depends").as_deref(), Some("kvm,ccp"));
        assert_eq!(modinfo(m, "name").as_deref(), Some("kvm_amd"));
        assert_eq!(modinfo(m, "vermagic"), None);
    }

    /// A 64-bit ELF header and one PT_NOTE with the given notes.
    fn elf_with_notes(notes: &[(&[u8], u32, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, kind, desc) in notes {
            body.extend((name.len() as u32).to_le_bytes());
            body.extend((desc.len() as u32).to_le_bytes());
            body.extend(kind.to_le_bytes());
            body.extend(*name);
            body.resize(body.len().next_multiple_of(4), 0);
            body.extend(*desc);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut elf = vec![0u8; 64 + 56];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&4u32.to_le_bytes());
        elf[64 + 8..64 + 16].copy_from_slice(&120u64.to_le_bytes());
        elf[64 + 32..64 + 40].copy_from_slice(&(body.len() as u64).to_le_bytes());
        elf.extend(body);
        elf
    }

    #[test]
    fn pvh_note_is_found() {
        let elf = elf_with_notes(&[
            (b"GNU\0", 3, b"abcd"),
            (b"Xen\0", 18, &0x0100_0abcu32.to_le_bytes()),
        ]);
        assert_eq!(pvh_entry(&elf), Some(0x0100_0abc));
        let no_pvh = elf_with_notes(&[(b"Xen\0", 17, b"1234")]);
        assert_eq!(pvh_entry(&no_pvh), None);
        assert_eq!(pvh_entry(b"\x7fELF\x01"), None);
        assert_eq!(pvh_entry(&elf[..70]), None);
    }

    #[test]
    fn bzimage_payload_is_found_and_checked() {
        // A fake bzImage: setup header, 1 setup sector, gzip payload.
        let elf = elf_with_notes(&[(b"Xen\0", 18, &0x1234u32.to_le_bytes())]);
        let mut gz = Command::new("gzip")
            .arg("-c")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        gz.stdin.take().unwrap().write_all(&elf).unwrap();
        let payload = gz.wait_with_output().unwrap().stdout;
        let mut img = vec![0u8; 1024];
        img[0x1f1] = 1;
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        img.resize(1024 + 16, 0);
        img.extend(&payload);
        img.extend(1234u32.to_le_bytes());
        assert_eq!(extract_vmlinux(&img).unwrap(), elf);
        assert!(extract_vmlinux(&img[..0x200]).is_err());
        let mut not_pvh = img.clone();
        not_pvh[1024 + 16] = 0; // the payload's magic broken
        assert!(extract_vmlinux(&not_pvh).is_err());
    }

    fn plan(extra_cpu: &str) -> Plan {
        let kernel = std::env::temp_dir().join(format!("nested-plan-{}", std::process::id()));
        fs::write(&kernel, b"k").unwrap();
        let mut p = Plan::new(Env::KvmNested, &kernel, &BootOptions::default());
        if p.is_err() {
            // No QEMU on PATH: a plan by hand.
            p = Ok(Plan {
                env: Env::KvmNested,
                image: crate::boot::BootImage::read(&kernel).unwrap(),
                cmdline: "pvops.mode=test".into(),
                qemu: "/usr/bin/qemu-system-x86_64".into(),
                args: [
                    "-cpu",
                    "host",
                    "-kernel",
                    "/x/k",
                    "-append",
                    "pvops.mode=test",
                ]
                .iter()
                .map(OsString::from)
                .collect(),
                timeout: Duration::from_secs(9),
                expectation: Env::KvmNested.expectation(),
            });
        }
        let mut p = p.unwrap();
        if !extra_cpu.is_empty() {
            let i = p.args.iter().position(|a| a == "-cpu").unwrap();
            p.args[i + 1] = format!("host,{extra_cpu}").into();
        }
        p
    }

    #[test]
    fn inner_arguments() {
        let p = plan("-kvm-pv-ipi");
        assert_eq!(name_of(&p), "test:-kvm-pv-ipi");
        assert_eq!(name_of(&plan("")), "test:default");
        let args = inner_args(&p, true).unwrap();
        let pair = |a: &str, b: &str| args.windows(2).any(|w| w[0] == a && w[1] == b);
        assert!(pair("-kernel", "/guest"), "{args:?}");
        assert!(pair("-cpu", "host,-kvm-pv-ipi"));
        assert!(pair("-L", "/usr/share/qemu"));
        assert!(pair("-qmp", "/dev/ttyS1"));
        assert!(!inner_args(&p, false).unwrap().contains(&"-qmp".to_owned()));
    }

    #[test]
    fn loader_images_are_the_guest_too() {
        use crate::env::Medium;
        let image = std::env::temp_dir().join(format!("nested-medium-{}", std::process::id()));
        fs::write(&image, b"image").unwrap();
        for (medium, flag, value) in [
            (Medium::Cdrom, "-cdrom", "/guest"),
            (Medium::BiosDisk, "-drive", "format=raw,file=/guest"),
            (Medium::UefiDisk, "-drive", "format=raw,file=/guest"),
        ] {
            let options = BootOptions {
                medium,
                ..BootOptions::default()
            };
            let p = match Plan::new(Env::KvmNested, &image, &options) {
                Ok(p) => p,
                // No OVMF on this machine: nothing to check for UEFI.
                Err(e) if medium == Medium::UefiDisk => {
                    assert!(format!("{e:#}").contains("OVMF") || format!("{e:#}").contains("ovmf"));
                    continue;
                }
                Err(e) => panic!("{e:#}"),
            };
            let args = inner_args(&p, false).unwrap();
            let pair = |a: &str, b: &str| args.windows(2).any(|w| w[0] == a && w[1] == b);
            assert!(pair(flag, value), "{medium:?}: {args:?}");
            assert!(
                !args.iter().any(|a| a.contains(image.to_str().unwrap())),
                "{args:?}"
            );
            if medium == Medium::UefiDisk {
                assert!(pair("-bios", GUEST_FIRMWARE), "{args:?}");
                assert!(firmware_of(&p).is_some_and(|f| f.is_file()));
            } else {
                assert_eq!(firmware_of(&p), None);
            }
        }
        fs::remove_file(&image).unwrap();
    }

    fn section(lines: &[&str], status: i32, killed: bool) -> Boot {
        judge(
            plan(""),
            lines.iter().map(|s| s.to_string()).collect(),
            status,
            killed,
            Duration::from_secs(1),
        )
    }

    #[test]
    fn sections_are_judged_on_their_own() {
        let mut good = vec![
            "pvops: platform=kvm backend=kvm features=kvmclock,steal-time,pv-eoi,pv-ipi,pv-tlb-flush,pv-unhalt,pv-sched-yield,poll-control,nop-io-delay hypervisor=kvm".to_owned(),
        ];
        for i in 0..6 {
            good.push(format!("test t{i} ... ok"));
        }
        good.push("test result: ok. 6 passed; 0 failed".into());
        good.push("pvops: exit code=0".into());
        let good: Vec<&str> = good.iter().map(String::as_str).collect();
        let b = section(&good, 1, false);
        assert!(b.passed(), "{}", b.report());
        // The same console, but killed by the outer /init's watchdog.
        let b = section(&good, 137, true);
        assert!(!b.passed());
        assert!(b.report().contains("killed it"), "{}", b.report());
        // An inner QEMU that did not start: status 1 (which would read as
        // exit code 0) and no protocol line.
        let b = section(&["qemu-system-x86_64: failed to initialize kvm"], 1, false);
        assert!(!b.passed());
        assert!(b.report().contains("did not start"), "{}", b.report());
        // Without pv-ipi (the emulation verdict) it fails.
        let no_ipi: Vec<String> = good.iter().map(|l| l.replace("pv-ipi,", "")).collect();
        let no_ipi: Vec<&str> = no_ipi.iter().map(String::as_str).collect();
        assert!(!section(&no_ipi, 1, false).passed());
    }
}
