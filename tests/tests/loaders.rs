//! Kernels booted by real loaders (issue 14), written only against pvops'
//! public API: `examples/multiboot2-kernel` (higher half, direct map, GRUB
//! through multiboot2 from a `grub-mkrescue` ISO) and
//! `examples/bootloader-kernel` (the `bootloader` crate 0.11, BIOS and
//! UEFI), and `examples/pvh-high-kernel` (higher half too, entered by
//! QEMU's `-kernel` or by Xen as its PVH dom0 through the higher-half form
//! of `pvops::pvh_entry!`, set up by `pvops::entry::init_pvh_high`). Each
//! runs the loader-common self-tests (IRQ flags, clock, a
//! page-table update and flush through its own tables, the one-shot timer,
//! a second CPU, features, its boot information, memory canaries) and must
//! report all of them ok in the protocol, with the platform, backend and
//! (under KVM) features the environment expects. Under kvm-nested each
//! boot is an outer machine of its own, whose QEMU runs the loader's image
//! on Linux's real KVM.
//!
//! The multiboot2 kernel also boots with `loader.ap_start=kernel`: its own
//! INIT-SIPI code starts the second CPU, as a loader with an MP protocol
//! (Limine's; not in Debian) would, and the CPU joins pvops with
//! `init_secondary` alone (test `second_cpu_joins_without_start_cpu`).
//!
//! UEFI runs under tcg only. OVMF does not get through this host's
//! emulating KVM: its SEC code runs `fwait; fninit` (bytes 9b db e3, at
//! 0xfffd27d4 in Debian's OVMF.fd) and that KVM stops with `KVM internal
//! error. Suberror: 1` (emulation failure) within a second; under
//! kvm-nested the outer QEMU aborts (signal 6) within
//! 20 s of the inner QEMU starting OVMF: bookworm's 7.2 with
//! `tcg-accel-ops.c:81:tcg_handle_interrupt: assertion failed:
//! (qemu_mutex_iothread_locked())`, bookworm-backports' 10.0.2 likewise
//! (`tcg-accel-ops.c:95: ... (bql_locked())`). A bug of the outer
//! emulator's SVM, not of the kernel: a guest `mov cr8` while an interrupt
//! window is open (`V_IRQ`) raises the interrupt without QEMU's lock.
//! OVMF's interrupt exit restores CR8 with interrupts off, and the nested
//! KVM leaves CR8 writes unintercepted (in-kernel local APIC), so an
//! interrupt arriving during a handler is enough. (With the inner
//! `kernel-irqchip=off`, where KVM intercepts CR8 writes, the outer QEMU
//! did not abort, but OVMF had not reached the kernel after 120 s, and
//! without the in-kernel APIC the platform is not kvm-nested's.) No test
//! here until a Debian QEMU has the fix; see README, "Booted by the
//! `bootloader` crate".

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use pvops_tests::skip;
use xtask::boot::{self, BootOptions};
use xtask::env::Env;
use xtask::loaders::{self, Loader};
use xtask::protocol::Verdict;

/// Every self-test of the loader kernels: the six shared ones, the
/// kernel's own check (its boot information; for the PVH kernel, its
/// address space) and the memory check.
const LOADER_TESTS: usize = 8;

/// Firmware and loader run before the kernel, and under this host's KVM,
/// which emulates guest instructions, SeaBIOS's disk calls are slow: GRUB
/// and the bootloader took 20-110 s to reach the kernel here (the kernel's
/// own run takes under a second).
fn timeout(env: Env) -> Duration {
    match env {
        Env::Tcg | Env::KvmNested => Duration::from_secs(120),
        _ => Duration::from_secs(300),
    }
}

/// The GRUB ISO, built once per test process (the tests run in parallel).
fn grub_iso() -> &'static Result<PathBuf, String> {
    static ISO: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ISO.get_or_init(|| {
        loaders::multiboot2_iso(&BootOptions::default().cmdline()).map_err(|e| format!("{e:#}"))
    })
}

/// The higher-half PVH kernel's ELF, built once per test process.
fn pvh_high_elf() -> &'static Result<PathBuf, String> {
    static ELF: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ELF.get_or_init(|| loaders::pvh_high_kernel().map_err(|e| format!("{e:#}")))
}

/// The command-line word that makes the loader kernels start their second
/// CPU themselves, and the test they then report instead of
/// `second_cpu_starts`.
const KERNEL_STARTS_AP: &str = "loader.ap_start=kernel";
const KERNEL_STARTS_AP_TEST: &str = "second_cpu_joins_without_start_cpu";

/// A GRUB ISO whose command line asks for [`KERNEL_STARTS_AP`], built once.
fn grub_iso_kernel_starts_ap() -> &'static Result<PathBuf, String> {
    static ISO: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    ISO.get_or_init(|| {
        let options = BootOptions {
            extra_cmdline: vec![KERNEL_STARTS_AP.into()],
            ..BootOptions::default()
        };
        loaders::multiboot2_iso_named(&options.cmdline(), "multiboot2-ap")
            .map_err(|e| format!("{e:#}"))
    })
}

/// A loader kernel in `env` with its second CPU started by its own code
/// (the GRUB ISO's command line says so; the PVH ELF gets it from QEMU):
/// every test ok, among them [`KERNEL_STARTS_AP_TEST`].
fn boot_kernel_starts_ap(env: Env, loader: Loader) {
    let built = || match loader {
        Loader::Grub => grub_iso_kernel_starts_ap().clone(),
        Loader::PvhHigh => pvh_high_elf().clone(),
        other => panic!("{other:?} kernels get no command line here"),
    };
    let Some(b) = boot_image(env, loader, built, &[KERNEL_STARTS_AP]) else {
        return;
    };
    assert!(
        b.outcome
            .console
            .tests
            .iter()
            .any(|t| t.name == KERNEL_STARTS_AP_TEST && t.verdict == Verdict::Ok),
        "{KERNEL_STARTS_AP_TEST} did not pass\n{}",
        b.report()
    );
}

/// The bootloader crate's images, built once per test process.
fn bootloader_images() -> &'static Result<loaders::BootloaderImages, String> {
    static IMAGES: OnceLock<Result<loaders::BootloaderImages, String>> = OnceLock::new();
    IMAGES.get_or_init(|| loaders::bootloader_images().map_err(|e| format!("{e:#}")))
}

fn boot_loader(env: Env, loader: Loader) {
    let built = || match loader {
        Loader::Grub => grub_iso().clone(),
        Loader::BootloaderBios => bootloader_images().clone().map(|i| i.bios),
        Loader::BootloaderUefi => bootloader_images().clone().map(|i| i.uefi),
        Loader::PvhHigh => pvh_high_elf().clone(),
    };
    boot_image(env, loader, built, &[]);
}

/// Boots the image `built` makes for `loader` in `env` and asserts that
/// every loader test ran and passed; `None` if it was skipped (loudly).
/// `extra` goes on the kernel command line where QEMU passes one
/// (`-kernel`); a loader image carries its own.
fn boot_image(
    env: Env,
    loader: Loader,
    built: impl FnOnce() -> Result<PathBuf, String>,
    extra: &[&str],
) -> Option<boot::Boot> {
    if let Some(why) = xtask::provision::unavailable(env).or_else(|| loaders::unavailable(loader)) {
        skip(&format!("{loader:?} boot in {env}: {why}"));
        return None;
    }
    let image = built().unwrap_or_else(|e| panic!("building the {loader:?} image: {e}"));
    let options = BootOptions {
        smp: 2,
        min_ok: Some(LOADER_TESTS),
        // No firmware or loader of its own before the kernel: the
        // environment's usual bound.
        timeout: (loader != Loader::PvhHigh).then(|| timeout(env)),
        medium: loader.medium(),
        extra_cmdline: extra.iter().map(|w| w.to_string()).collect(),
        ..BootOptions::default()
    };
    let b = boot::boot(env, &image, &options)
        .unwrap_or_else(|e| panic!("booting {} in {env}: {e:#}", image.display()));
    assert!(b.passed(), "{}", b.report());
    // Not one test may be missing or extra: the loader kernels print exactly
    // these, all of which must pass.
    assert_eq!(
        b.outcome.console.tests.len(),
        LOADER_TESTS,
        "{}",
        b.report()
    );
    eprintln!("{loader:?}: {}", b.verdict());
    Some(b)
}

#[test]
fn multiboot2_kernel_grub_tcg() {
    boot_loader(Env::Tcg, Loader::Grub);
}

#[test]
fn multiboot2_kernel_grub_kvm() {
    boot_loader(Env::Kvm, Loader::Grub);
}

#[test]
fn multiboot2_kernel_grub_kvm_hidden() {
    boot_loader(Env::KvmHidden, Loader::Grub);
}

/// A second CPU pvops did not start joins with `init_secondary` alone.
#[test]
fn multiboot2_kernel_grub_tcg_kernel_starts_ap() {
    boot_kernel_starts_ap(Env::Tcg, Loader::Grub);
}

/// The same on the nested real KVM, where the kvm backend registers the
/// new CPU's kvmclock, steal time and PV EOI in `init_secondary`.
#[test]
fn multiboot2_kernel_grub_kvm_nested_kernel_starts_ap() {
    boot_kernel_starts_ap(Env::KvmNested, Loader::Grub);
}

#[test]
fn bootloader_kernel_bios_tcg() {
    boot_loader(Env::Tcg, Loader::BootloaderBios);
}

/// The layout that made KVM write into the kernel's stacks: the platform
/// line must name kvmclock and steal-time (the environment's expectation)
/// and the kernel's canaries must be intact (its last test).
#[test]
fn bootloader_kernel_bios_kvm() {
    boot_loader(Env::Kvm, Loader::BootloaderBios);
}

#[test]
fn bootloader_kernel_bios_kvm_hidden() {
    boot_loader(Env::KvmHidden, Loader::BootloaderBios);
}

#[test]
fn bootloader_kernel_uefi_tcg() {
    boot_loader(Env::Tcg, Loader::BootloaderUefi);
}

/// Linux's real KVM inside QEMU TCG: hypercalls complete there, so every
/// KVM feature is expected on the platform line.
#[test]
fn multiboot2_kernel_grub_kvm_nested() {
    boot_loader(Env::KvmNested, Loader::Grub);
}

#[test]
fn bootloader_kernel_bios_kvm_nested() {
    boot_loader(Env::KvmNested, Loader::BootloaderBios);
}

#[test]
fn pvh_high_kernel_tcg() {
    boot_loader(Env::Tcg, Loader::PvhHigh);
}

/// The higher-half PVH kernel starting its second CPU itself.
#[test]
fn pvh_high_kernel_tcg_kernel_starts_ap() {
    boot_kernel_starts_ap(Env::Tcg, Loader::PvhHigh);
}

/// The records KVM writes (kvmclock, steal time, PV EOI) are registered at
/// physical addresses pvops finds by walking the higher-half tables: the
/// platform line must name them and the canaries must be intact.
#[test]
fn pvh_high_kernel_kvm() {
    boot_loader(Env::Kvm, Loader::PvhHigh);
}

#[test]
fn pvh_high_kernel_kvm_hidden() {
    boot_loader(Env::KvmHidden, Loader::PvhHigh);
}

/// Linux's real KVM inside QEMU TCG: the inner QEMU enters the ELF
/// through its note, and every KVM feature is expected.
#[test]
fn pvh_high_kernel_kvm_nested() {
    boot_loader(Env::KvmNested, Loader::PvhHigh);
}

/// Xen 4.17 (under QEMU) loads the ELF at its physical addresses and
/// starts it as its PVH dom0 through the note: the xen backend then runs
/// in the higher half, its shared info and vCPU records found by the
/// page-table walk.
#[test]
fn pvh_high_kernel_xen_pvh() {
    boot_loader(Env::XenPvh, Loader::PvhHigh);
}
