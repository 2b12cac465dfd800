//! The second CPU started the way a loader with an MP protocol (Limine's,
//! say) starts it, with pvops playing no part: the kernel broadcasts
//! INIT and two STARTUPs itself, its own real-mode code takes the CPU to
//! 64-bit mode, and the CPU arrives in the kernel's code on the kernel's
//! page tables and stack, where it calls `pvops::cpu::init_secondary()`
//! alone (the contract for CPUs someone else started). Chosen with
//! `loader.ap_start=kernel` on the command line.
//!
//! Limine itself is not in Debian, so this code stands in for it: the
//! point is what pvops sees, a CPU it never started.
//!
//! The code below 1 MiB goes to the loader region the kernel found
//! (`Machine::trampoline`, written through the direct map): page 0 the
//! code and its data, pages 1-3 a temporary root table (the kernel's own
//! root entries, plus an identity map of the first 2 MiB in slot 0, so the
//! real-mode code keeps running once paging is on). From there the CPU
//! jumps into the kernel image, switches to the kernel's CR3 and stack, and
//! calls [`crate::smp`]'s entry as `start_cpu` would have.

use core::arch::global_asm;

/// IA32_APIC_BASE and its x2APIC-enable bit.
const APIC_BASE_MSR: u32 = 0x1b;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ADDR: u64 = 0xffff_f000;
/// x2APIC ICR MSR; xAPIC ICR low and high register offsets.
const X2APIC_ICR: u32 = 0x830;
const XAPIC_ICR_LOW: u64 = 0x300;
const XAPIC_ICR_HIGH: u64 = 0x310;
/// ICR: delivery modes, level assert, delivery pending (xAPIC), and the
/// "all excluding self" shorthand, so no APIC ID has to be known.
const ICR_INIT: u64 = 0b101 << 8;
const ICR_STARTUP: u64 = 0b110 << 8;
const ICR_ASSERT: u64 = 1 << 14;
const ICR_PENDING: u64 = 1 << 12;
const ICR_ALL_BUT_SELF: u64 = 0b11 << 18;
/// EFER, and the CR4 bits the real-mode code may set.
const EFER_MSR: u32 = 0xc000_0080;
const EFER_LMA: u64 = 1 << 10;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
/// CR0: caches off and not-write-through come set out of INIT; cleared.
const CR0_CD_NW_TS: u64 = (1 << 30) | (1 << 29) | (1 << 3);
const TABLE: u64 = 0b11;
const HUGE_TABLE: u64 = (1 << 7) | 0b11;
const FRAME: u64 = 0x000f_ffff_ffff_f000;

// Real mode at CS = page >> 4, IP = 0: every data access goes through DS =
// CS with offsets from `loader_ap_start`, and the 64-bit part addresses its
// data RIP-relative, so the copy runs wherever the region is. The Rust side
// patches the fields in the copy at the same offsets.
global_asm!(
    r#"
    .section .rodata.loader_ap, "a"
    .balign 16
    .global loader_ap_start
    loader_ap_start:
    .code16
        cli
        cld
        mov %cs, %ax
        mov %ax, %ds
        lgdtl (loader_ap_gdtr - loader_ap_start)
        movl (loader_ap_cr4 - loader_ap_start), %eax
        mov %eax, %cr4
        movl (loader_ap_root - loader_ap_start), %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx
        movl (loader_ap_efer - loader_ap_start), %eax
        xor %edx, %edx
        wrmsr
        movl (loader_ap_cr0 - loader_ap_start), %eax
        mov %eax, %cr0
        ljmpl *(loader_ap_far - loader_ap_start)
    .code64
    .global loader_ap_long
    loader_ap_long:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        lea loader_ap_start(%rip), %rdi
        jmp *loader_ap_high_va(%rip)

        .balign 8
    .global loader_ap_gdt
    loader_ap_gdt:
        .quad 0, 0x00af9a000000ffff, 0x00cf92000000ffff
    loader_ap_gdtr:
        .word 23
    .global loader_ap_gdt_base
    loader_ap_gdt_base:
        .long 0
        .balign 8
    .global loader_ap_far
    loader_ap_far:
        .long 0
        .word 0x08
        .balign 8
    .global loader_ap_cr4, loader_ap_root, loader_ap_efer, loader_ap_cr0
    .global loader_ap_high_va, loader_ap_cr3, loader_ap_stack, loader_ap_arg
    .global loader_ap_ticket, loader_ap_end
    loader_ap_cr4: .long 0
    loader_ap_root: .long 0
    loader_ap_efer: .long 0
    loader_ap_cr0: .long 0
    loader_ap_high_va: .quad 0
    loader_ap_cr3: .quad 0
    loader_ap_stack: .quad 0
    loader_ap_arg: .quad 0
    loader_ap_ticket: .long 0
    loader_ap_end:

    /* In the kernel image, still on the temporary root: rdi = the region's
       code page (identity-mapped). Only the first CPU to arrive takes the
       stack; any other halts. Everything is read from the region before
       the kernel's CR3, which does not map it, goes in. */
    .section .text.loader_ap_high, "ax"
    .global loader_ap_high
    loader_ap_high:
        mov $1, %eax
        lock xaddl %eax, (loader_ap_ticket - loader_ap_start)(%rdi)
        test %eax, %eax
        jnz loader_ap_park
        mov (loader_ap_stack - loader_ap_start)(%rdi), %rsp
        mov (loader_ap_cr3 - loader_ap_start)(%rdi), %rax
        mov (loader_ap_arg - loader_ap_start)(%rdi), %rdi
        mov %rax, %cr3
        xor %ebp, %ebp
        call {entry}
    loader_ap_park:
        cli
        hlt
        jmp loader_ap_park
    "#,
    entry = sym crate::smp::ap_entry,
    options(att_syntax)
);

extern "C" {
    static loader_ap_start: u8;
    static loader_ap_long: u8;
    static loader_ap_gdt: u8;
    static loader_ap_gdt_base: u8;
    static loader_ap_far: u8;
    static loader_ap_cr4: u8;
    static loader_ap_root: u8;
    static loader_ap_efer: u8;
    static loader_ap_cr0: u8;
    static loader_ap_high_va: u8;
    static loader_ap_cr3: u8;
    static loader_ap_stack: u8;
    static loader_ap_arg: u8;
    static loader_ap_ticket: u8;
    static loader_ap_end: u8;
    fn loader_ap_high();
}

/// Offset of a label of the start-up code from its first byte.
fn offset(label: *const u8) -> u64 {
    label as u64 - core::ptr::addr_of!(loader_ap_start) as u64
}

/// What the kernel hands its own start-up code.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    /// Physical address of the region below 1 MiB (page-aligned, 4 pages).
    pub region: u64,
    /// Physical memory is mapped at `phys + phys_offset`.
    pub phys_offset: u64,
    /// The stack top the started CPU runs on.
    pub stack_top: u64,
    /// The word it finds as its entry's argument.
    pub arg: u64,
}

/// Writes the start-up code and the temporary root into the region, then
/// wakes every other CPU with INIT, STARTUP, STARTUP; the first to arrive
/// runs `crate::smp::ap_entry(arg)` on `stack_top`.
pub fn start_others(s: &Start) -> Result<(), &'static str> {
    if !s.region.is_multiple_of(4096) || s.region == 0 || s.region + 4 * 4096 > 0x10_0000 {
        return Err("the start-up region is not 4 page-aligned pages below 1 MiB");
    }
    let cr4 = pvops::cpu::read_cr4();
    if cr4 & CR4_LA57 != 0 {
        return Err("5-level paging: this start-up code builds a 4-level root");
    }
    // The kernel image must not live in slot 0 of the root, or the jump
    // into it would land in the start-up identity map.
    if (loader_ap_high as *const () as u64 >> 39) & 511 == 0 {
        return Err("the kernel image is in the low 512 GiB: slot 0 is the start-up identity map");
    }
    let cr3 = pvops::mmu::read_cr3();
    let (root, pdpt, pd) = (s.region + 0x1000, s.region + 0x2000, s.region + 0x3000);
    let at = |pa: u64| (pa + s.phys_offset) as *mut u8;
    let code = core::ptr::addr_of!(loader_ap_start);
    let len = core::ptr::addr_of!(loader_ap_end) as usize - code as usize;
    // SAFETY: the region is the kernel's free RAM below 1 MiB (the loader's
    // memory map said so), reached through the direct map; the code bytes
    // are `len` bytes of this image's .rodata.
    unsafe { core::ptr::copy_nonoverlapping(code, at(s.region), len) };
    let put32 = |field: *const u8, v: u64| {
        // SAFETY: `field` is a label inside the code just copied to the
        // region's first page (the GDT base sits unaligned after its limit).
        unsafe { (at(s.region + offset(field)) as *mut u32).write_unaligned(v as u32) }
    };
    let put64 = |field: *const u8, v: u64| {
        // SAFETY: as for put32.
        unsafe { (at(s.region + offset(field)) as *mut u64).write_unaligned(v) }
    };
    use core::ptr::addr_of;
    put32(
        addr_of!(loader_ap_gdt_base),
        s.region + offset(addr_of!(loader_ap_gdt)),
    );
    put32(
        addr_of!(loader_ap_far),
        s.region + offset(addr_of!(loader_ap_long)),
    );
    put32(addr_of!(loader_ap_cr4), CR4_PAE);
    put32(addr_of!(loader_ap_root), root);
    // SAFETY: EFER exists on every x86-64 CPU; reading it changes nothing.
    // LMA is the CPU's to set.
    let efer = unsafe { pvops::cpu::read_msr(EFER_MSR) } & !EFER_LMA;
    put32(addr_of!(loader_ap_efer), efer);
    put32(
        addr_of!(loader_ap_cr0),
        pvops::cpu::read_cr0() & !CR0_CD_NW_TS,
    );
    put64(
        addr_of!(loader_ap_high_va),
        loader_ap_high as *const () as u64,
    );
    put64(addr_of!(loader_ap_cr3), cr3);
    put64(addr_of!(loader_ap_stack), s.stack_top);
    put64(addr_of!(loader_ap_arg), s.arg);
    put32(addr_of!(loader_ap_ticket), 0);
    // The temporary root built below: the kernel's 512 entries, slot 0
    // replaced by an identity map of 0..2 MiB (where the region is).
    // SAFETY: the kernel's root is RAM mapped through the direct map, and
    // root/pdpt/pd are pages of the region, ours alone until the CPU runs.
    unsafe {
        core::ptr::copy_nonoverlapping(at(cr3 & FRAME) as *const u64, at(root) as *mut u64, 512);
        core::ptr::write_bytes(at(pdpt), 0, 4096);
        core::ptr::write_bytes(at(pd), 0, 4096);
        (at(root) as *mut u64).write_volatile(pdpt | TABLE);
        (at(pdpt) as *mut u64).write_volatile(pd | TABLE);
        (at(pd) as *mut u64).write_volatile(HUGE_TABLE);
    }
    let vector = s.region >> 12;
    send(s.phys_offset, ICR_ALL_BUT_SELF | ICR_INIT | ICR_ASSERT)?;
    wait_ns(10_000_000);
    for _ in 0..2 {
        send(s.phys_offset, ICR_ALL_BUT_SELF | ICR_STARTUP | vector)?;
        wait_ns(200_000);
    }
    Ok(())
}

/// Writes the ICR: the x2APIC MSR, or the xAPIC page through the direct
/// map (the APIC must be mapped there, as pvops' native backend needs too),
/// waiting for the xAPIC to take the previous command.
fn send(phys_offset: u64, icr: u64) -> Result<(), &'static str> {
    // SAFETY: IA32_APIC_BASE exists wherever a local APIC does; reading it
    // changes nothing.
    let base = unsafe { pvops::cpu::read_msr(APIC_BASE_MSR) };
    if base & APIC_BASE_X2APIC != 0 {
        // SAFETY: the x2APIC ICR; an INIT or STARTUP to the other CPUs is
        // what this module is for (none of them runs yet).
        unsafe { pvops::cpu::write_msr(X2APIC_ICR, icr) };
        return Ok(());
    }
    let reg = |r: u64| ((base & APIC_BASE_ADDR) + phys_offset + r) as *mut u32;
    let t0 = pvops::time::sched_clock();
    // SAFETY: the local APIC page, mapped uncached through the direct map
    // (the kernel's contract with pvops' native backend).
    unsafe {
        while u64::from(reg(XAPIC_ICR_LOW).read_volatile()) & ICR_PENDING != 0 {
            if pvops::time::sched_clock() - t0 > 100_000_000 {
                return Err("the xAPIC never took the previous IPI");
            }
            core::hint::spin_loop();
        }
        reg(XAPIC_ICR_HIGH).write_volatile(0);
        reg(XAPIC_ICR_LOW).write_volatile(icr as u32);
    }
    Ok(())
}

fn wait_ns(ns: u64) {
    let t0 = pvops::time::sched_clock();
    while pvops::time::sched_clock() - t0 < ns {
        core::hint::spin_loop();
    }
}
