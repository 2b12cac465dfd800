//! The PVH entry: from 32-bit protected mode with paging off to 64-bit
//! Rust, with just enough page tables (the first 4 GiB identity-mapped with
//! 2 MiB pages) to get there. Everything after that — the kernel's real
//! GDT, IDT and page tables — is built in Rust through pvops.
//!
//! PVH contract (Xen's `arch-x86/hvm/start_info.h`): entered at the
//! address in the `XEN_ELFNOTE_PHYS32_ENTRY` note, in 32-bit flat protected
//! mode, paging off, interrupts off, EBX = physical address of
//! `hvm_start_info`, no stack.

use core::arch::global_asm;

/// Xen's ELF note type for the PVH 32-bit entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

global_asm!(
    r#"
    .section .note.Xen, "a", @note
    .balign 4
    .long 4                 /* name size: "Xen\0" */
    .long 4                 /* descriptor size */
    .long {phys32_entry}
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .balign 4

    .section .bss.boot, "aw", @nobits
    .balign 4096
    boot_pml4: .skip 4096
    boot_pdpt: .skip 4096
    boot_pd:   .skip 4096 * 4
    .balign 16
    boot_stack_bottom: .skip 65536
    .global boot_stack_top
    boot_stack_top:

    .section .rodata.boot, "a"
    .balign 8
    boot_gdt:
        .quad 0
        .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
        .quad 0x00cf92000000ffff    /* 0x10: data, DPL 0 */
    boot_gdt_end:
    boot_gdt_ptr:
        .word boot_gdt_end - boot_gdt - 1
        .long boot_gdt

    .section .text.boot, "ax"
    .code32
    .global pvh_start
    pvh_start:
        cli
        cld
        mov %ebx, %ebp              /* keep hvm_start_info */

        /* Zero .bss: the boot tables and stack live there. */
        mov $__bss_start, %edi
        mov $__bss_end, %ecx
        sub %edi, %ecx
        xor %eax, %eax
        rep stosb
        mov $boot_stack_top, %esp

        /* PML4[0] -> PDPT; PDPT[0..4] -> four PDs; each PD maps 1 GiB. */
        mov $boot_pdpt + 0x3, %eax
        mov %eax, boot_pml4
        mov $boot_pd + 0x3, %eax
        mov $boot_pdpt, %edi
        mov $4, %ecx
    1:  mov %eax, (%edi)
        add $0x1000, %eax
        add $8, %edi
        loop 1b

        /* 2048 2 MiB pages: present, writable, large. */
        mov $boot_pd, %edi
        mov $0x83, %eax
        mov $2048, %ecx
    2:  mov %eax, (%edi)
        add $0x200000, %eax
        add $8, %edi
        loop 2b

        mov $boot_pml4, %eax
        mov %eax, %cr3
        mov %cr4, %eax
        or $0x20, %eax              /* PAE */
        mov %eax, %cr4
        mov $0xc0000080, %ecx       /* EFER */
        rdmsr
        or $0x100, %eax             /* LME */
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax        /* PG | PE */
        mov %eax, %cr0
        lgdt boot_gdt_ptr
        ljmp $0x08, $3f

    .code64
    3:  mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        mov $boot_stack_top, %rsp
        mov %ebp, %edi              /* zero-extends: hvm_start_info paddr */
        xor %ebp, %ebp
        call {entry}
    4:  cli
        hlt
        jmp 4b
    "#,
    phys32_entry = const XEN_ELFNOTE_PHYS32_ENTRY,
    entry = sym crate::kernel_main_pvh,
    options(att_syntax)
);
