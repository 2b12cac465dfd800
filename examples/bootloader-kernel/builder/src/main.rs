//! `bootloader-kernel-builder KERNEL_ELF OUT_DIR`: writes `OUT_DIR/bios.img`
//! and `OUT_DIR/uefi.img`, disk images that boot KERNEL_ELF through the
//! `bootloader` crate 0.11 (BIOS: `qemu-system-x86_64 -drive
//! format=raw,file=bios.img`; UEFI: the same with `-bios OVMF.fd`).

use std::path::PathBuf;
use std::process::ExitCode;

use bootloader_boot_config::LevelFilter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, kernel, out] = args.as_slice() else {
        eprintln!("usage: bootloader-kernel-builder KERNEL_ELF OUT_DIR");
        return ExitCode::from(2);
    };
    let kernel = PathBuf::from(kernel);
    let out = PathBuf::from(out);
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("creating {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    // The bootloader's log goes to the serial console only, warnings and
    // errors only: drawing text into the framebuffer pixel by pixel costs
    // tens of seconds where the CPU is emulated.
    let mut config = bootloader::BootConfig::default();
    config.frame_buffer_logging = false;
    config.log_level = LevelFilter::Warn;
    let bios = out.join("bios.img");
    if let Err(e) = bootloader::BiosBoot::new(&kernel)
        .set_boot_config(&config)
        .create_disk_image(&bios)
    {
        eprintln!("building {}: {e:#}", bios.display());
        return ExitCode::FAILURE;
    }
    let uefi = out.join("uefi.img");
    if let Err(e) = bootloader::UefiBoot::new(&kernel)
        .set_boot_config(&config)
        .create_disk_image(&uefi)
    {
        eprintln!("building {}: {e:#}", uefi.display());
        return ExitCode::FAILURE;
    }
    println!("{}", bios.display());
    println!("{}", uefi.display());
    ExitCode::SUCCESS
}
