//! Boots the example kernel in every implemented environment.
//!
//! One test per environment; an environment whose issue is still open
//! (kvm #3, xen-pvh #4, xen-pv #5) gets its test when it is implemented.

use pvops_tests::{assert_boots, images_booted, kernel_image, skip};
use xtask::boot::BootImage;
use xtask::env::Env;

#[test]
fn boot_tcg() {
    assert_boots(Env::Tcg);
}

#[test]
fn boot_kvm_hidden() {
    assert_boots(Env::KvmHidden);
}

/// Every environment boots the very same ELF: same path, same bytes.
#[test]
fn same_image_in_every_env() {
    let images = images_booted();
    if images.is_empty() {
        skip("no environment could boot here, so there is no image to compare");
        return;
    }
    let kernel = kernel_image().expect("the kernel image was built for the boots");
    let on_disk = BootImage::read(kernel).expect("reading the kernel image");
    for (env, image) in &images {
        assert_eq!(
            image,
            &on_disk,
            "{env} booted another image than {}",
            kernel.display()
        );
    }
    eprintln!(
        "{} environment(s) booted {} (sha256 {})",
        images.len(),
        on_disk.path.display(),
        on_disk.sha256
    );
}
