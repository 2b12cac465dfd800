//! Kernels other than the example kernel, built only against pvops' public
//! API, boot and report in the console protocol: proof that the public API
//! is enough for a stranger's kernel.

use pvops_tests::skip;
use xtask::boot::{self, BootOptions};
use xtask::env::Env;

/// The minimal Rust kernel (`examples/minimal-kernel`) in `env`.
fn boot_minimal(env: Env) {
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let kernel = xtask::kernel::build_package("minimal-kernel")
        .unwrap_or_else(|e| panic!("building minimal-kernel: {e:#}"));
    let options = BootOptions {
        smp: 1,
        min_ok: Some(4),
        ..BootOptions::default()
    };
    let b = boot::boot(env, &kernel, &options)
        .unwrap_or_else(|e| panic!("booting minimal-kernel in {env}: {e:#}"));
    assert!(b.passed(), "{}", b.report());
}

#[test]
fn minimal_rust_kernel_tcg() {
    boot_minimal(Env::Tcg);
}

#[test]
fn minimal_rust_kernel_xen_pvh() {
    boot_minimal(Env::XenPvh);
}

/// The same minimal kernel as a classic PV dom0, in ring 3: nothing in it
/// knows.
#[test]
fn minimal_rust_kernel_xen_pv() {
    boot_minimal(Env::XenPv);
}

/// The C kernel (`examples/c-kernel`, gcc + libpvops_ffi.a) in `env`.
fn boot_c(env: Env) {
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let kernel =
        xtask::kernel::build_c_kernel().unwrap_or_else(|e| panic!("building the C kernel: {e:#}"));
    let options = BootOptions {
        smp: 1,
        min_ok: Some(6),
        ..BootOptions::default()
    };
    let b = boot::boot(env, &kernel, &options)
        .unwrap_or_else(|e| panic!("booting the C kernel in {env}: {e:#}"));
    assert!(b.passed(), "{}", b.report());
}

#[test]
fn c_kernel_tcg() {
    boot_c(Env::Tcg);
}

/// The same C kernel as a classic Xen PV dom0, in ring 3, through the
/// library's PV entry.
#[test]
fn c_kernel_xen_pv() {
    boot_c(Env::XenPv);
}

/// Under KVM: the `kvm` environment once its backend exists, else KVM with
/// the PV interface hidden (still a real KVM boot of the C kernel).
#[test]
fn c_kernel_kvm() {
    boot_c(if Env::Kvm.is_implemented() {
        Env::Kvm
    } else {
        Env::KvmHidden
    });
}
