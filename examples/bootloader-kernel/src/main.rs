//! A kernel booted by the `bootloader` crate 0.11 (BIOS or UEFI), written
//! as a stranger would: only pvops' public API and `bootloader_api`.
//!
//! The bootloader maps the kernel (linked at `0xffffffff80000000`) with a
//! frame of its own for every page, `.bss` included, and all physical
//! memory at an offset it chooses (`Mapping::Dynamic`). So the kernel tells
//! pvops `phys_offset = BootInfo::physical_memory_offset` and
//! `KernelMap::PageTables`: pvops finds the physical address of each
//! record it hands KVM or Xen by walking the live page tables. The shared
//! self-tests (`loader-common`) end by checking that nothing wrote into the
//! kernel's `.bss` canaries or the second CPU's stack behind its back, and
//! under KVM that kvmclock and steal time registered.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use bootloader_api::config::Mapping;
use bootloader_api::info::MemoryRegionKind;
use bootloader_api::{BootInfo, BootloaderConfig};
use loader_common::{exit, finish, kprintln, tests::Test, Machine};

/// What the kernel asks of the bootloader: all physical memory mapped
/// somewhere it picks, and a stack big enough for `pvops::init` (~24 KiB)
/// and the tests.
pub static BOOTLOADER_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.kernel_stack_size = 128 * 1024;
    config
};

#[cfg(target_os = "none")]
bootloader_api::entry_point!(kernel_main, config = &BOOTLOADER_CONFIG);

/// How the boot went, for the boot-info test.
static mut FIRMWARE_RSDP: bool = false;
static mut USABLE_BYTES: u64 = 0;

/// The bootloader's information was complete: usable RAM and an RSDP.
fn boot_info_parsed(_: &Machine) -> Result<(), &'static str> {
    // SAFETY: both were written once before the tests ran.
    let (rsdp, usable) = unsafe { (FIRMWARE_RSDP, USABLE_BYTES) };
    if !rsdp {
        return Err("BootInfo::rsdp_addr is empty");
    }
    if usable < 16 << 20 {
        return Err("the memory map shows less than 16 MiB of usable RAM");
    }
    Ok(())
}

fn kernel_main(boot_info: &'static mut BootInfo) -> ! {
    loader_common::console::init_early();
    let Some(phys_offset) = boot_info.physical_memory_offset.into_option() else {
        kprintln!("pvops: error: the bootloader mapped no physical memory (Mapping::Dynamic)");
        finish(exit::BAD_BOOT_INFO)
    };
    let rsdp = boot_info.rsdp_addr.into_option();
    let mut usable = 0;
    let mut trampoline = None;
    for region in boot_info.memory_regions.iter() {
        if region.kind != MemoryRegionKind::Usable {
            continue;
        }
        usable += region.end - region.start;
        // Free memory below 1 MiB (not page 0) for the SMP trampoline.
        let first = region.start.max(0x1000).next_multiple_of(0x1000);
        let size = pvops::cpu::TRAMPOLINE_SIZE as u64;
        if trampoline.is_none() && first + size <= region.end.min(0x10_0000) {
            trampoline = Some(first);
        }
    }
    // SAFETY: written once here, before any reader; one CPU runs.
    unsafe {
        FIRMWARE_RSDP = rsdp.is_some();
        USABLE_BYTES = usable;
    }
    // The bootloader crate passes no command line.
    let mut ctx = pvops::BootContext::new(
        pvops::BootEntry::Other,
        "",
        pvops::detect::scan(&pvops::detect::HardwareCpuid),
    );
    ctx.phys_offset = phys_offset;
    // Its .bss pages lie in frames of their own: walk the page tables.
    ctx.kernel_map = pvops::KernelMap::PageTables;
    ctx.rsdp = rsdp;
    let machine = Machine {
        phys_offset,
        trampoline,
    };
    let extra: [Test; 1] = [("boot_info_parsed", boot_info_parsed)];
    loader_common::run(&ctx, machine, &extra)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    loader_common::panic(info)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("bootloader-kernel is a kernel: build it for x86_64-unknown-none");
    std::process::exit(2);
}
