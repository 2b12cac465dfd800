//! Secondary CPUs on bare hardware: which exist (ACPI MADT), and starting
//! one with INIT-SIPI-SIPI into a small real-mode trampoline that takes it
//! to 64-bit mode on the kernel's page tables and stack.

use crate::apic;
use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use pvops_core::cpu::{CpuId, SecondaryStart, StartCpuError};
use pvops_core::irq::CpuMask;
use pvops_core::time::TimeOps;

/// ICR delivery modes.
const ICR_INIT: u32 = 0b101 << 8;
const ICR_STARTUP: u32 = 0b110 << 8;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
/// How long a started CPU may take to reach 64-bit mode. Generous: the
/// emulated CPUs here run a few million instructions a second.
const START_TIMEOUT_NS: u64 = 5_000_000_000;

// The trampoline is copied to a page below 1 MiB and entered in real mode
// at its first byte (CS = page >> 4, IP = 0). Its data fields are patched
// before the copy; code addresses it through CS and, once in 64-bit mode,
// RIP-relative, so it runs at whatever page it was copied to.
global_asm!(
    r#"
    .section .rodata.trampoline, "a"
    .balign 16
    .global pvops_trampoline_start
    pvops_trampoline_start:
    .code16
        cli
        cld
        mov %cs, %ax
        mov %ax, %ds
        lgdtl (pvops_tramp_gdt_ptr - pvops_trampoline_start)
        mov %cr4, %eax
        or $0x20, %eax                                  /* PAE */
        mov %eax, %cr4
        movl (pvops_tramp_cr3 - pvops_trampoline_start), %eax
        mov %eax, %cr3
        movl (pvops_tramp_efer - pvops_trampoline_start), %eax
        xor %edx, %edx
        mov $0xc0000080, %ecx
        wrmsr
        mov %cr0, %eax
        or $0x80000001, %eax                            /* PG | PE */
        mov %eax, %cr0
        ljmpl *(pvops_tramp_far - pvops_trampoline_start)
    .code64
    pvops_tramp_long:
        mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        xor %eax, %eax
        mov %eax, %fs
        mov %eax, %gs
        mov pvops_tramp_stack(%rip), %rsp
        mov pvops_tramp_arg(%rip), %rdi
        mov pvops_tramp_entry(%rip), %rax
        lock incl pvops_tramp_started(%rip)
        xor %ebp, %ebp
        call *%rax
    1:  cli
        hlt
        jmp 1b

        .balign 8
    pvops_tramp_gdt:
        .quad 0
        .quad 0x00af9a000000ffff                        /* 0x08: 64-bit code */
        .quad 0x00cf92000000ffff                        /* 0x10: data */
    pvops_tramp_gdt_ptr:
        .word 23
        .global pvops_tramp_gdt_base
    pvops_tramp_gdt_base:
        .long 0
        .balign 8
        .global pvops_tramp_far
    pvops_tramp_far:
        .long 0
        .word 0x08
        .balign 8
        .global pvops_tramp_cr3
    pvops_tramp_cr3: .long 0
        .global pvops_tramp_efer
    pvops_tramp_efer: .long 0
        .global pvops_tramp_stack
    pvops_tramp_stack: .quad 0
        .global pvops_tramp_entry
    pvops_tramp_entry: .quad 0
        .global pvops_tramp_arg
    pvops_tramp_arg: .quad 0
        .global pvops_tramp_started
    pvops_tramp_started: .long 0
        .global pvops_trampoline_end
    pvops_trampoline_end:
        .global pvops_tramp_gdt_offset
        .set pvops_tramp_gdt_offset, pvops_tramp_gdt - pvops_trampoline_start
        .global pvops_tramp_long_offset
        .set pvops_tramp_long_offset, pvops_tramp_long - pvops_trampoline_start
    .code64
    "#,
    options(att_syntax)
);

extern "C" {
    static pvops_trampoline_start: u8;
    static pvops_trampoline_end: u8;
    static pvops_tramp_gdt_base: u8;
    static pvops_tramp_far: u8;
    static pvops_tramp_cr3: u8;
    static pvops_tramp_efer: u8;
    static pvops_tramp_stack: u8;
    static pvops_tramp_entry: u8;
    static pvops_tramp_arg: u8;
    static pvops_tramp_started: u8;
    static pvops_tramp_gdt_offset: u8;
    static pvops_tramp_long_offset: u8;
}

/// Offset of a trampoline symbol from its start.
fn offset_of(sym: *const u8) -> usize {
    sym as usize - core::ptr::addr_of!(pvops_trampoline_start) as usize
}

/// The CPUs found at init (boot CPU at least).
static POSSIBLE: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
/// One start at a time: the trampoline page and its fields are shared.
static STARTING: AtomicBool = AtomicBool::new(false);
/// How many CPUs reported in to `init_secondary`.
pub(crate) static ONLINE: AtomicU32 = AtomicU32::new(1);

/// Records the CPUs the platform has.
pub(crate) fn set_possible(mask: &CpuMask) {
    for (slot, w) in POSSIBLE.iter().zip(mask.words()) {
        slot.store(*w, Ordering::Relaxed);
    }
}

/// The CPUs the platform has, as recorded at init.
pub fn possible() -> CpuMask {
    let mut m = CpuMask::new();
    for (i, slot) in POSSIBLE.iter().enumerate() {
        let w = slot.load(Ordering::Relaxed);
        for bit in 0..64 {
            if w & (1 << bit) != 0 {
                m.insert(CpuId((i * 64 + bit) as u32));
            }
        }
    }
    m
}

fn delay_ns(ns: u64) {
    let t = crate::Native::sched_clock();
    while crate::Native::sched_clock() - t < ns {
        core::hint::spin_loop();
    }
}

/// Starts `cpu` through the trampoline; see [`pvops_core::cpu::CpuOps::start_cpu`].
pub fn start(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
    let page = how.trampoline;
    if !page.is_multiple_of(4096) || page >= 0x10_0000 || page == 0 {
        return Err(StartCpuError::BadTrampoline(page));
    }
    if !possible().contains(cpu) {
        return Err(StartCpuError::NoSuchCpu(cpu));
    }
    if how.cr3 > u64::from(u32::MAX) {
        // The trampoline loads CR3 in 32-bit mode.
        return Err(StartCpuError::BadTrampoline(how.cr3));
    }
    while STARTING
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let result = start_locked(cpu, how, page);
    STARTING.store(false, Ordering::Release);
    result
}

fn start_locked(cpu: CpuId, how: &SecondaryStart, page: u64) -> Result<(), StartCpuError> {
    // The trampoline symbols delimit a blob in .rodata.
    let (start, end) = (
        core::ptr::addr_of!(pvops_trampoline_start),
        core::ptr::addr_of!(pvops_trampoline_end),
    );
    let len = end as usize - start as usize;
    let dst = page as *mut u8;
    // SAFETY: the caller of `start_cpu` gave us this page below 1 MiB to
    // overwrite (SecondaryStart::trampoline) and it is identity-mapped by
    // the current page tables (the kernel's contract with pvops-native).
    unsafe { core::ptr::copy_nonoverlapping(start, dst, len) };
    // The `*_offset` symbols are absolute values set in the asm: their
    // addresses are the values.
    let (gdt_off, long_off) = (
        core::ptr::addr_of!(pvops_tramp_gdt_offset) as u64,
        core::ptr::addr_of!(pvops_tramp_long_offset) as u64,
    );
    // SAFETY: reading EFER is always allowed on x86_64.
    let efer = unsafe { x86_64::registers::model_specific::Msr::new(0xc000_0080).read() };
    let patch32 = |sym: *const u8, v: u32| {
        // SAFETY: `sym` is a field inside the blob just copied to `page`;
        // the same offset in the copy is inside the page.
        unsafe { core::ptr::write_unaligned(dst.add(offset_of(sym)) as *mut u32, v) }
    };
    let patch64 = |sym: *const u8, v: u64| {
        // SAFETY: as for patch32.
        unsafe { core::ptr::write_unaligned(dst.add(offset_of(sym)) as *mut u64, v) }
    };
    patch32(
        core::ptr::addr_of!(pvops_tramp_gdt_base),
        (page + gdt_off) as u32,
    );
    patch32(
        core::ptr::addr_of!(pvops_tramp_far),
        (page + long_off) as u32,
    );
    patch32(core::ptr::addr_of!(pvops_tramp_cr3), how.cr3 as u32);
    // LMA is set by hardware; keep LME, NXE and SCE as the boot CPU has them.
    patch32(
        core::ptr::addr_of!(pvops_tramp_efer),
        (efer & !(1 << 10)) as u32,
    );
    patch64(core::ptr::addr_of!(pvops_tramp_stack), how.stack_top);
    patch64(
        core::ptr::addr_of!(pvops_tramp_entry),
        how.entry as usize as u64,
    );
    patch64(core::ptr::addr_of!(pvops_tramp_arg), how.arg);
    patch32(core::ptr::addr_of!(pvops_tramp_started), 0);
    let started =
        dst.wrapping_add(offset_of(core::ptr::addr_of!(pvops_tramp_started))) as *const AtomicU32;
    let vector = (page >> 12) as u32;
    apic::write_icr(cpu.0, ICR_INIT | ICR_LEVEL_ASSERT);
    delay_ns(10_000_000);
    for _ in 0..2 {
        apic::write_icr(cpu.0, ICR_STARTUP | ICR_LEVEL_ASSERT | vector);
        delay_ns(200_000);
    }
    let t = crate::Native::sched_clock();
    // SAFETY: `started` points at the aligned u32 flag inside the copied
    // trampoline page, which the new CPU increments atomically.
    let flag = unsafe { &*started };
    while flag.load(Ordering::Acquire) == 0 {
        if crate::Native::sched_clock() - t > START_TIMEOUT_NS {
            return Err(StartCpuError::Timeout(cpu));
        }
        core::hint::spin_loop();
    }
    Ok(())
}
