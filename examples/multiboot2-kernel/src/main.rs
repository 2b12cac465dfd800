//! A higher-half kernel booted by GRUB through multiboot2, written as a
//! stranger would: only pvops' public API.
//!
//! Its own 32-bit entry (`mb2_start32`) builds page tables that map the
//! first 4 GiB three times (identity, the direct map at [`PHYS_OFFSET`],
//! and the kernel's image at `0xffffffff80000000`), enters 64-bit mode,
//! jumps to the higher half and removes the identity map before any Rust
//! code runs. Rust then reads the multiboot2 information (command line,
//! memory map, ACPI RSDP) through the direct map, calls `pvops::init` with
//! `BootEntry::Other` and `KernelMap::PageTables`, and runs the shared
//! self-tests (`loader-common`).
#![cfg_attr(target_os = "none", no_std, no_main)]
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

use loader_common::{exit, finish, kprintln, tests::Test, Machine};

/// Where the 32-bit entry maps all physical memory below 4 GiB (the
/// top-level entry 256: the start of the upper half).
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// What GRUB puts in EAX.
const MULTIBOOT2_MAGIC: u32 = 0x36d7_6289;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    /* The multiboot2 header: magic, architecture 0 (i386 protected mode),
     * length, checksum, then only the end tag. GRUB loads the ELF's
     * segments at their physical addresses and enters at e_entry. */
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    .word 0, 0
    .long 8
mb2_header_end:

    .section .boot.text, "ax"
    .code32
    .global mb2_start32
mb2_start32:
    cli
    cmp ${magic}, %eax
    jne 9f
    /* EBX (the multiboot2 information's address) is kept until Rust. */

    /* 4 page directories of 2 MiB pages: the first 4 GiB, the top GiB
     * (PCI hole, local APIC) uncached. */
    mov $mb2_pd, %edi
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $0x83, %eax                      /* present, writable, 2 MiB */
    cmp $1536, %ecx
    jb 2f
    or $0x18, %eax                      /* PCD | PWT above 3 GiB */
2:  mov %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    /* One PDPT for the identity map and the direct map alike. */
    mov $mb2_pdpt, %edi
    mov $mb2_pd + 3, %eax
    xor %ecx, %ecx
3:  mov %eax, (%edi,%ecx,8)
    movl $0, 4(%edi,%ecx,8)
    add $4096, %eax
    inc %ecx
    cmp $4, %ecx
    jb 3b

    /* The kernel's PDPT: entry 510 (0xffffffff80000000) -> the first GiB. */
    movl $mb2_pd + 3, mb2_pdpt_high + 510 * 8

    movl $mb2_pdpt + 3, mb2_pml4                 /* 0: identity, for the jump */
    movl $mb2_pdpt + 3, mb2_pml4 + 256 * 8       /* direct map */
    movl $mb2_pdpt_high + 3, mb2_pml4 + 511 * 8  /* kernel image */

    mov %cr4, %eax
    or $0x20, %eax                      /* PAE */
    mov %eax, %cr4
    mov $mb2_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx               /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax                /* PG | WP | PE */
    mov %eax, %cr0
    lgdt mb2_gdt_ptr
    ljmp $0x08, $mb2_start64
9:  hlt
    jmp 9b

    .code64
mb2_start64:
    movabs $mb2_high, %rax
    jmp *%rax

    .section .boot.data, "a"
    .balign 8
    .global mb2_gdt
mb2_gdt:
    .quad 0
    .quad 0x00af9a000000ffff            /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff            /* 0x10: data */
mb2_gdt_ptr:
    .word 23
    .long mb2_gdt

    .section .boot.tables, "aw"
    .balign 4096
    .global mb2_pml4
mb2_pml4:       .skip 4096
mb2_pdpt:       .skip 4096
mb2_pdpt_high:  .skip 4096
mb2_pd:         .skip 4 * 4096

    /* The higher half. */
    .section .text.mb2_high, "ax"
mb2_high:
    movabs $mb2_stack_top, %rsp
    /* The GDT through the direct map, then segments. */
    movabs $mb2_gdt + {phys_offset}, %rax
    sub $16, %rsp
    movw $23, (%rsp)
    mov %rax, 2(%rsp)
    lgdt (%rsp)
    add $16, %rsp
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    /* No identity map from here on. */
    movabs $mb2_pml4 + {phys_offset}, %rax
    movq $0, (%rax)
    mov %cr3, %rax
    mov %rax, %cr3
    mov %ebx, %edi                      /* zero-extends: the info's address */
    xor %ebp, %ebp
    call {main}
2:  hlt
    jmp 2b

    .section .bss.mb2_stack, "aw", @nobits
    .balign 16
mb2_stack:
    .skip 65536
mb2_stack_top:
    "#,
    magic = const MULTIBOOT2_MAGIC,
    phys_offset = const PHYS_OFFSET,
    main = sym kernel_main,
    options(att_syntax)
);

/// What the multiboot2 information said, kept for the boot-info test.
#[derive(Debug, Clone, Copy, Default)]
struct Info {
    cmdline_len: usize,
    available_bytes: u64,
    rsdp: Option<u64>,
    trampoline: Option<u64>,
}

static mut INFO: Info = Info {
    cmdline_len: 0,
    available_bytes: 0,
    rsdp: None,
    trampoline: None,
};
static mut CMDLINE: [u8; 512] = [0; 512];

/// Reads the multiboot2 information at physical `info` (through the
/// direct map). Copies the command line out; keeps the physical address of
/// the RSDP copy inside the information (pvops reads it in `init`).
fn parse(info: u64) -> Result<Info, &'static str> {
    let base = info + PHYS_OFFSET;
    let read_u32 = |off: u64| {
        // SAFETY: `off` is checked to lie inside the information's
        // `total_size` bytes (below), which GRUB left in RAM, mapped by the
        // direct map.
        unsafe { ((base + off) as *const u32).read_unaligned() }
    };
    let total = u64::from(read_u32(0));
    if !(16..=1 << 20).contains(&total) {
        return Err("multiboot2 information has an implausible total_size");
    }
    let mut parsed = Info::default();
    let mut off = 8;
    while off + 8 <= total {
        let (kind, size) = (read_u32(off), u64::from(read_u32(off + 4)));
        if size < 8 || off + size > total {
            return Err("multiboot2 tag runs past the information");
        }
        match kind {
            0 => break,
            1 => {
                let len = ((size - 8) as usize).min(511);
                // SAFETY: CMDLINE is written once, here, before anything
                // reads it; the source bytes lie inside the tag.
                let cmdline = unsafe { &mut *core::ptr::addr_of_mut!(CMDLINE) };
                for (i, b) in cmdline.iter_mut().take(len).enumerate() {
                    // SAFETY: inside the tag (len <= size - 8).
                    *b = unsafe { ((base + off + 8 + i as u64) as *const u8).read() };
                }
                parsed.cmdline_len = cmdline[..len].iter().position(|&b| b == 0).unwrap_or(len);
            }
            6 => {
                let entry_size = u64::from(read_u32(off + 8));
                if entry_size < 24 {
                    return Err("multiboot2 memory map entries too small");
                }
                let mut e = off + 16;
                while e + entry_size <= off + size {
                    let lo = |o| u64::from(read_u32(e + o));
                    let addr = lo(0) | lo(4) << 32;
                    let len = lo(8) | lo(12) << 32;
                    if read_u32(e + 16) == 1 {
                        parsed.available_bytes += len;
                        // Room below 1 MiB for the SMP trampoline, not
                        // the first page and not under the information.
                        let size = pvops::cpu::TRAMPOLINE_SIZE as u64;
                        let first = addr.max(0x1000).next_multiple_of(0x1000);
                        let mut page = first;
                        while page + size <= (addr + len).min(0x10_0000) {
                            let clear = page + size <= info || page >= info + total;
                            if clear && parsed.trampoline.is_none() {
                                parsed.trampoline = Some(page);
                            }
                            page += 0x1000;
                        }
                    }
                    e += entry_size;
                }
            }
            // ACPI 1.0 and 2.0+: a copy of the RSDP, whose own address
            // is what pvops takes; 2.0 wins.
            14 if parsed.rsdp.is_none() => parsed.rsdp = Some(info + off + 8),
            15 => parsed.rsdp = Some(info + off + 8),
            _ => {}
        }
        off = (off + size).next_multiple_of(8);
    }
    Ok(parsed)
}

/// The boot information was complete: a command line, RAM, an RSDP.
fn multiboot2_info_parsed(_: &Machine) -> Result<(), &'static str> {
    // SAFETY: INFO was written once before the tests.
    let info = unsafe { *core::ptr::addr_of!(INFO) };
    if info.cmdline_len == 0 {
        return Err("no command line tag (grub.cfg passes one)");
    }
    if info.available_bytes < 16 << 20 {
        return Err("the memory map shows less than 16 MiB of RAM");
    }
    if info.rsdp.is_none() {
        return Err("no ACPI RSDP tag");
    }
    Ok(())
}

extern "C" fn kernel_main(info: u64) -> ! {
    loader_common::console::init_early();
    let parsed = match parse(info) {
        Ok(p) => p,
        Err(e) => {
            kprintln!("pvops: error: {e}");
            finish(exit::BAD_BOOT_INFO)
        }
    };
    // SAFETY: written once here, before any reader; single CPU.
    unsafe { *core::ptr::addr_of_mut!(INFO) = parsed };
    // SAFETY: CMDLINE was filled by `parse` and is never written again.
    let bytes = unsafe { &(&*core::ptr::addr_of!(CMDLINE))[..parsed.cmdline_len] };
    let cmdline = core::str::from_utf8(bytes).unwrap_or("");
    let mut ctx = pvops::BootContext::new(
        pvops::BootEntry::Other,
        cmdline,
        pvops::detect::scan(&pvops::detect::HardwareCpuid),
    );
    ctx.phys_offset = PHYS_OFFSET;
    ctx.kernel_map = pvops::KernelMap::PageTables;
    ctx.rsdp = parsed.rsdp;
    let machine = Machine {
        phys_offset: PHYS_OFFSET,
        trampoline: parsed.trampoline,
    };
    kprintln!(
        "pvops: info: multiboot2 cmdline=\"{cmdline}\" rsdp={:?} trampoline={:?}",
        parsed.rsdp,
        parsed.trampoline
    );
    let extra: [Test; 1] = [("multiboot2_info_parsed", multiboot2_info_parsed)];
    loader_common::run(&ctx, machine, &extra)
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    loader_common::panic(info)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("multiboot2-kernel is a kernel: build it for x86_64-unknown-none");
    std::process::exit(2);
}
