//! A higher-half kernel entered through pvops' PVH entry (QEMU `-kernel`,
//! Xen PVH), written as a stranger would: only pvops' public API.
//!
//! `linker.ld` links it at [`KERNEL_VMA`] + 1 MiB and loads it at 1 MiB.
//! `pvops::pvh_entry!` in its higher-half form maps the first 4 GiB at
//! [`PHYS_OFFSET`] (the direct map) and the first 2 GiB at [`KERNEL_VMA`],
//! removes the identity map and calls [`kernel_main`] in the higher half;
//! `pvops::entry::init_pvh_high` reads the start info through the direct
//! map and installs the best backend. Then the loader kernels' shared
//! self-tests run (`loader-common`), and one of this kernel's own: that
//! the address space is the one the entry promises.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use loader_common::{exit, finish, kprintln, tests::Test, Installed, Machine};
use pvops::entry::{Booted, PvhHighHandoff};

/// Where physical address 0 of the image is linked (the top 2 GiB).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
/// Where all physical memory below 4 GiB is mapped (top-level entry 256).
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;

#[cfg(target_os = "none")]
pvops::pvh_entry!(
    kernel_main,
    higher_half(kernel_vma = KERNEL_VMA, phys_offset = PHYS_OFFSET)
);

/// `hvm_start_info.magic`.
const HVM_START_MAGIC: u32 = 0x336e_c578;
/// The local APIC's page, which the native backend reaches through the
/// direct map and which must be mapped uncached.
const LOCAL_APIC: u64 = 0xfee0_0000;
const PRESENT: u64 = 1;
const LARGE: u64 = 1 << 7;
const PWT_PCD: u64 = 0b11 << 3;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// What the start info said, kept for this kernel's own test.
#[derive(Debug, Clone, Copy)]
struct Facts {
    start_info_paddr: u64,
    ram_bytes: u64,
    cmdline_len: usize,
}

static mut FACTS: Facts = Facts {
    start_info_paddr: 0,
    ram_bytes: 0,
    cmdline_len: 0,
};

/// The entry of the live page tables that maps `va` at the level below
/// the top whose entry has `LARGE` set (or the PTE), read through the
/// direct map; `None` where nothing maps it.
fn leaf_entry(va: u64) -> Option<u64> {
    let mut table = pvops::mmu::read_cr3() & ADDR_MASK;
    for shift in [39u64, 30, 21, 12] {
        let index = (va >> shift) & 511;
        // SAFETY: the table is a live page table in RAM below 4 GiB (the
        // entry's, in .bss), mapped by the direct map.
        let entry = unsafe { ((PHYS_OFFSET + table + index * 8) as *const u64).read_volatile() };
        if entry & PRESENT == 0 {
            return None;
        }
        if shift == 12 || (shift != 39 && entry & LARGE != 0) {
            return Some(entry);
        }
        table = entry & ADDR_MASK;
    }
    None
}

/// The address space is the one the higher-half entry promises: code in
/// the top 2 GiB, no identity map left, the start info readable through
/// the direct map, the image where pvops' page-table walk finds it
/// (linked address minus `KERNEL_VMA`), the local APIC uncached, and the
/// start info complete (command line, RAM).
fn pvh_high_address_space(_: &Machine) -> Result<(), &'static str> {
    // SAFETY: written once before the tests.
    let facts = unsafe { *core::ptr::addr_of!(FACTS) };
    let here = pvh_high_address_space as *const () as u64;
    if here < KERNEL_VMA {
        return Err("the kernel's code does not run in the higher half");
    }
    let root = pvops::mmu::read_cr3() & ADDR_MASK;
    // SAFETY: the top-level table's first entry, through the direct map.
    let identity = unsafe { ((PHYS_OFFSET + root) as *const u64).read_volatile() };
    if identity & PRESENT != 0 {
        return Err("the identity map is still there");
    }
    // SAFETY: the start info lies in RAM below 4 GiB (checked by
    // init_pvh_high), mapped by the direct map; a read has no side effect.
    let magic = unsafe { ((PHYS_OFFSET + facts.start_info_paddr) as *const u32).read_volatile() };
    if magic != HVM_START_MAGIC {
        return Err("the direct map does not show the start info");
    }
    static PROBE: u64 = 0;
    let virt = core::ptr::addr_of!(PROBE) as u64;
    match pvops::translate::phys_of(&PROBE) {
        Ok(phys) if phys == virt - KERNEL_VMA => {}
        Ok(_) => return Err("pvops finds the image elsewhere than KERNEL_VMA says"),
        Err(_) => return Err("pvops cannot translate the image"),
    }
    match leaf_entry(PHYS_OFFSET + LOCAL_APIC) {
        Some(e) if e & PWT_PCD == PWT_PCD => {}
        Some(_) => return Err("the local APIC's page is mapped cached"),
        None => return Err("the direct map does not reach the local APIC"),
    }
    if facts.cmdline_len == 0 {
        return Err("the start info has no command line (-append passes one)");
    }
    if facts.ram_bytes < 16 << 20 {
        return Err("the memory map shows less than 16 MiB of RAM");
    }
    Ok(())
}

/// Free RAM below 1 MiB for the SMP trampoline, clear of the first page
/// and of the start info's page.
fn trampoline(booted: &Booted, start_info_paddr: u64) -> Option<u64> {
    let size = pvops::cpu::TRAMPOLINE_SIZE as u64;
    let info_page = start_info_paddr & !0xfff;
    booted.start_info.ram_regions().find_map(|(addr, len)| {
        let end = (addr + len).min(0x10_0000);
        let mut page = addr.max(0x1000).next_multiple_of(0x1000);
        while page + size <= end {
            if page + size <= info_page || page >= info_page + 0x1000 {
                return Some(page);
            }
            page += 0x1000;
        }
        None
    })
}

extern "C" fn kernel_main(boot: PvhHighHandoff) -> ! {
    loader_common::console::init_early();
    let extra: [Test; 1] = [("pvh_high_address_space", pvh_high_address_space)];
    loader_common::run_with(
        || {
            let booted = match pvops::entry::init_pvh_high(boot, loader_common::warn_fallback) {
                Ok(b) => b,
                Err(e) => {
                    kprintln!("pvops: error: init_pvh_high: {e}");
                    finish(match e {
                        pvops::entry::BootError::NoBackend(_) => exit::NO_BACKEND,
                        _ => exit::BAD_BOOT_INFO,
                    })
                }
            };
            let si = &booted.start_info;
            loader_common::smp::configure(si.cmdline());
            let facts = Facts {
                start_info_paddr: boot.start_info_paddr(),
                ram_bytes: si.ram_regions().map(|(_, len)| len).sum(),
                cmdline_len: si.cmdline().len(),
            };
            // SAFETY: written once here, before any reader; one CPU.
            unsafe { *core::ptr::addr_of_mut!(FACTS) = facts };
            let trampoline = trampoline(&booted, boot.start_info_paddr());
            kprintln!(
                "pvops: info: pvh-high cmdline=\"{}\" rsdp={:?} trampoline={trampoline:?} kernel_main={:#x}",
                si.cmdline(),
                si.rsdp,
                kernel_main as *const () as usize
            );
            Installed {
                ops: booted.ops,
                machine: Machine {
                    phys_offset: boot.phys_offset(),
                    trampoline,
                },
                // What init_pvh_high tells pvops (its docs).
                kernel_map: pvops::KernelMap::PageTables,
            }
        },
        &extra,
    )
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    loader_common::panic(info)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("pvh-high-kernel is a kernel: build it for x86_64-unknown-none");
    std::process::exit(2);
}
