//! The PVH entry point, for kernels that want pvops to bring them from the
//! loader to 64-bit Rust: QEMU's `-kernel` and Xen (PVH dom0 or domU) both
//! enter an ELF at the address in its `XEN_ELFNOTE_PHYS32_ENTRY` note, in
//! 32-bit protected mode with paging off and the physical address of
//! `hvm_start_info` in EBX.
//!
//! [`pvh_entry!`](crate::pvh_entry) emits that note and a small entry
//! routine: it zeroes `.bss`, identity-maps the first 4 GiB with 2 MiB
//! pages, enables long mode, switches to a boot stack and calls your
//! `extern "C" fn(start_info_paddr: u64) -> !`. Then [`init_pvh`] parses the
//! start info and installs the best backend.
//!
//! Your linker script must: link the kernel at its physical address (the
//! entry runs before paging; 1 MiB is the usual base), put `.note.Xen` in a
//! `PT_NOTE` segment, and define `__bss_start`/`__bss_end` around `.bss`.
//! `example-kernel/linker.ld` and `examples/minimal-kernel/linker.ld` are
//! two such scripts.

use crate::abi::start_info::{
    self, HvmMemmapEntry, MemmapType, StartInfo, StartInfoError, MAX_MEMMAP_ENTRIES,
};
use crate::backend::{BackendError, BootContext, BootEntry, SelectError};
use crate::phys::DirectMap;
use crate::table::PvOps;
use core::fmt;

/// Xen's ELF note type for the PVH 32-bit entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// How much physical memory the entry identity-maps (and so what
/// [`init_pvh`] may read through).
pub const IDENTITY_MAPPED: u64 = 4 << 30;

/// Emits the PVH ELF note and entry routine, calling `$main` in 64-bit mode
/// with the `hvm_start_info` physical address as its only argument.
///
/// `$main` must be an `extern "C" fn(u64) -> !`. The boot stack is 64 KiB
/// unless `stack_size = N` says otherwise. Use it once per kernel.
///
/// ```text
/// pvops::pvh_entry!(kernel_main);
///
/// extern "C" fn kernel_main(start_info: u64) -> ! {
///     let boot = pvops::entry::init_pvh(start_info, |_| {}).expect("pvops");
///     // ...
/// #   loop {}
/// }
/// ```
#[macro_export]
macro_rules! pvh_entry {
    ($main:path) => {
        $crate::pvh_entry!($main, stack_size = 65536);
    };
    ($main:path, stack_size = $size:expr) => {
        const _: extern "C" fn(u64) -> ! = $main;
        ::core::arch::global_asm!(
            r#"
            .section .note.Xen, "a", @note
            .balign 4
            .long 4
            .long 4
            .long {phys32_entry}
            .asciz "Xen"
            .balign 4
            .long pvops_pvh_start
            .balign 4

            .section .bss.pvops_boot, "aw", @nobits
            .balign 4096
            pvops_boot_pml4: .skip 4096
            pvops_boot_pdpt: .skip 4096
            pvops_boot_pd:   .skip 4096 * 4
            .balign 16
            .skip {stack_size}
            pvops_boot_stack_top:

            .section .rodata.pvops_boot, "a"
            .balign 8
            pvops_boot_gdt:
                .quad 0
                .quad 0x00af9a000000ffff
                .quad 0x00cf92000000ffff
            pvops_boot_gdt_end:
            pvops_boot_gdt_ptr:
                .word pvops_boot_gdt_end - pvops_boot_gdt - 1
                .long pvops_boot_gdt

            .section .text.boot, "ax"
            .code32
            .global pvops_pvh_start
            pvops_pvh_start:
                cli
                cld
                mov %ebx, %ebp
                mov $__bss_start, %edi
                mov $__bss_end, %ecx
                sub %edi, %ecx
                xor %eax, %eax
                rep stosb
                mov $pvops_boot_stack_top, %esp
                mov $pvops_boot_pdpt + 0x3, %eax
                mov %eax, pvops_boot_pml4
                mov $pvops_boot_pd + 0x3, %eax
                mov $pvops_boot_pdpt, %edi
                mov $4, %ecx
            1:  mov %eax, (%edi)
                add $0x1000, %eax
                add $8, %edi
                loop 1b
                mov $pvops_boot_pd, %edi
                mov $0x83, %eax
                mov $2048, %ecx
            2:  mov %eax, (%edi)
                add $0x200000, %eax
                add $8, %edi
                loop 2b
                mov $pvops_boot_pml4, %eax
                mov %eax, %cr3
                mov %cr4, %eax
                or $0x20, %eax
                mov %eax, %cr4
                mov $0xc0000080, %ecx
                rdmsr
                or $0x100, %eax
                wrmsr
                mov %cr0, %eax
                or $0x80000001, %eax
                mov %eax, %cr0
                lgdt pvops_boot_gdt_ptr
                ljmp $0x08, $3f
            .code64
            3:  mov $0x10, %eax
                mov %eax, %ds
                mov %eax, %es
                mov %eax, %ss
                xor %eax, %eax
                mov %eax, %fs
                mov %eax, %gs
                mov $pvops_boot_stack_top, %rsp
                mov %ebp, %edi
                xor %ebp, %ebp
                call {main}
            4:  cli
                hlt
                jmp 4b
            "#,
            phys32_entry = const $crate::entry::XEN_ELFNOTE_PHYS32_ENTRY,
            stack_size = const $size,
            main = sym $main,
            options(att_syntax)
        );
    };
}

/// What [`init_pvh`] hands back.
#[derive(Debug)]
pub struct PvhBoot {
    /// The validated start info (memory map, command line, RSDP, modules).
    pub start_info: StartInfo,
    /// The installed ops table.
    pub ops: &'static PvOps,
}

/// Why [`init_pvh`] failed.
#[derive(Debug)]
pub enum PvhError {
    /// The start info is malformed. pvops was still brought up (with an
    /// empty command line) if `installed` is true, so the kernel can print
    /// this error and power off.
    BadStartInfo {
        /// What was wrong.
        error: StartInfoError,
        /// Whether a backend was installed anyway.
        installed: bool,
    },
    /// No backend could be installed.
    NoBackend(SelectError),
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvhError::BadStartInfo { error, .. } => write!(f, "start_info: {error}"),
            PvhError::NoBackend(e) => e.fmt(f),
        }
    }
}

/// For a kernel entered through [`pvh_entry!`](crate::pvh_entry) (first
/// 4 GiB identity-mapped, image identity-mapped): parses the start info at
/// `start_info_paddr`, detects the platform and installs the best backend.
/// `on_fallback` hears about every backend that bid but failed.
pub fn init_pvh(
    start_info_paddr: u64,
    on_fallback: impl FnMut(&BackendError),
) -> Result<PvhBoot, PvhError> {
    // SAFETY: the PVH entry identity-maps the first 4 GiB; the start info
    // and what it points to are loader-written RAM there.
    let mem = unsafe { DirectMap::new(0, IDENTITY_MAPPED) };
    let parsed = start_info::parse(&mem, start_info_paddr);
    let (cmdline, rsdp) = match &parsed {
        Ok(si) => (si.cmdline(), si.rsdp),
        Err(_) => ("", None),
    };
    let ctx = BootContext {
        phys_offset: 0,
        image_offset: 0,
        rsdp,
        cmdline,
        entry: BootEntry::Pvh,
        cpuid: crate::detect::scan(&crate::detect::HardwareCpuid),
    };
    let installed = crate::init(&ctx, on_fallback);
    match (parsed, installed) {
        (Ok(mut start_info), Ok(ops)) => {
            complete_memmap(&mut start_info, ops);
            Ok(PvhBoot { start_info, ops })
        }
        (Err(error), installed) => Err(PvhError::BadStartInfo {
            error,
            installed: installed.is_ok(),
        }),
        (Ok(_), Err(e)) => Err(PvhError::NoBackend(e)),
    }
}

/// Supplies the memory map when the loader passed none, from the platform
/// itself (the `platform.memory_map` op: Xen gives a PVH dom0 a version 0
/// start info and the map through `XENMEM_memory_map`).
fn complete_memmap(start_info: &mut StartInfo, ops: &PvOps) {
    if start_info.has_memmap() {
        return;
    }
    let mut map = [HvmMemmapEntry {
        addr: 0,
        size: 0,
        kind: MemmapType::RESERVED,
        reserved: 0,
    }; MAX_MEMMAP_ENTRIES];
    let n = (ops.platform.memory_map)(&mut map);
    start_info.set_memmap(&map[..n.min(MAX_MEMMAP_ENTRIES)]);
}
