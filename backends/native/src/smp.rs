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

pub use pvops_core::cpu::TRAMPOLINE_SIZE;

// The trampoline is copied to the first page of the kernel's region below
// 1 MiB and entered in real mode at its first byte (CS = page >> 4, IP = 0).
// Its data fields are patched in the copy; code addresses them through CS
// and, once in 64-bit mode, RIP-relative, so it runs wherever it is copied.
//
// It enters long mode on a temporary root table in the region (below
// 4 GiB, as a 32-bit CR3 load needs): a copy of the kernel's root, plus an
// identity map of the trampoline where the kernel's own tables have none
// (a higher-half kernel). It then jumps to `pvops_ap_stub`, in the kernel
// image (mapped through the copied entries), which loads the kernel's own
// CR3 (any 64-bit value), reports in through the direct map and calls the
// kernel's entry. CR0 is the boot CPU's (caches on, its write protection):
// an AP comes out of INIT with CR0.CD and CR0.NW set.
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
        movl (pvops_tramp_cr4 - pvops_trampoline_start), %eax
        mov %eax, %cr4
        movl (pvops_tramp_cr3 - pvops_trampoline_start), %eax
        mov %eax, %cr3
        movl (pvops_tramp_efer - pvops_trampoline_start), %eax
        xor %edx, %edx
        mov $0xc0000080, %ecx
        wrmsr
        movl (pvops_tramp_cr0 - pvops_trampoline_start), %eax
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
        mov pvops_tramp_entry(%rip), %rsi
        mov pvops_tramp_kernel_cr3(%rip), %rdx
        mov pvops_tramp_started_va(%rip), %rcx
        mov pvops_tramp_stub(%rip), %rax
        jmp *%rax

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
        .global pvops_tramp_cr4
    pvops_tramp_cr4: .long 0
        .global pvops_tramp_cr0
    pvops_tramp_cr0: .long 0
        .global pvops_tramp_stack
    pvops_tramp_stack: .quad 0
        .global pvops_tramp_entry
    pvops_tramp_entry: .quad 0
        .global pvops_tramp_arg
    pvops_tramp_arg: .quad 0
        .global pvops_tramp_kernel_cr3
    pvops_tramp_kernel_cr3: .quad 0
        .global pvops_tramp_started_va
    pvops_tramp_started_va: .quad 0
        .global pvops_tramp_stub
    pvops_tramp_stub: .quad 0
        .global pvops_tramp_started
    pvops_tramp_started: .long 0
        .global pvops_trampoline_end
    pvops_trampoline_end:
        .global pvops_tramp_gdt_offset
        .set pvops_tramp_gdt_offset, pvops_tramp_gdt - pvops_trampoline_start
        .global pvops_tramp_long_offset
        .set pvops_tramp_long_offset, pvops_tramp_long - pvops_trampoline_start

    /* In the kernel image, on the temporary root: rdx = the kernel's CR3,
       rcx = the started flag through the direct map, rsi = entry, rdi = arg,
       rsp = the kernel's stack (used only once on the kernel's tables). */
    .section .text.pvops_ap_stub, "ax"
    .global pvops_ap_stub
    pvops_ap_stub:
        mov %rdx, %cr3
        lock incl (%rcx)
        xor %ebp, %ebp
        call *%rsi
    2:  cli
        hlt
        jmp 2b
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
    static pvops_tramp_cr4: u8;
    static pvops_tramp_cr0: u8;
    static pvops_tramp_stack: u8;
    static pvops_tramp_entry: u8;
    static pvops_tramp_arg: u8;
    static pvops_tramp_kernel_cr3: u8;
    static pvops_tramp_started_va: u8;
    static pvops_tramp_stub: u8;
    static pvops_tramp_started: u8;
    static pvops_tramp_gdt_offset: u8;
    static pvops_tramp_long_offset: u8;
    fn pvops_ap_stub();
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

fn delay_ns(clock: fn() -> u64, ns: u64) {
    let t = clock();
    while clock().wrapping_sub(t) < ns {
        core::hint::spin_loop();
    }
}

/// Starts `cpu` through the trampoline; see [`pvops_core::cpu::CpuOps::start_cpu`].
pub fn start(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
    if !possible().contains(cpu) {
        return Err(StartCpuError::NoSuchCpu(cpu));
    }
    start_at(cpu, how, crate::Native::sched_clock)
}

/// Starts the CPU whose local APIC ID is `apic` through the trampoline
/// (INIT, then two STARTUPs), timing the waits with `clock` (nanoseconds).
///
/// For backends that number CPUs their own way but start them as hardware
/// does (Xen's HVM mode: vCPU `n` has APIC ID `2n`, and `VCPUOP_initialise`
/// refuses a vCPU the firmware already ran); `start` is this with the
/// native numbering and clock. Errors name `apic`.
pub fn start_at(
    apic: CpuId,
    how: &SecondaryStart,
    clock: fn() -> u64,
) -> Result<(), StartCpuError> {
    let page = how.trampoline;
    if !page.is_multiple_of(4096) || page == 0 || page + TRAMPOLINE_SIZE as u64 > 0x10_0000 {
        return Err(StartCpuError::BadTrampoline(page));
    }
    while STARTING
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    let result = start_locked(apic, how, page, clock);
    STARTING.store(false, Ordering::Release);
    result
}

/// Physical-address bits of a page-table entry or CR3.
const ADDR: u64 = 0x000f_ffff_ffff_f000;
const PRESENT_WRITABLE: u64 = 0b11;
const HUGE: u64 = 1 << 7;
/// CR0 bits: PE, TS, NW, CD, PG.
const CR0_PE: u64 = 1;
const CR0_TS: u64 = 1 << 3;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
/// CR4 bits the trampoline sets: PAE, and LA57 when the boot CPU uses it.
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;

/// The boot CPU's CR0 as an AP should start with it: paging and
/// protection on, caches on, write protection as the boot CPU has it, no
/// lazy-FPU trap.
fn ap_cr0(boot: u64) -> u64 {
    (boot & !(CR0_CD | CR0_NW | CR0_TS)) | CR0_PE | CR0_PG
}

/// Lays out the temporary root at `region + 0x1000` (reached at
/// `region + phys_offset`): the kernel's root entries, plus an identity map
/// of the first 2 MiB through the region's spare pages when the kernel's
/// tables do not map the trampoline at its physical address (refused when
/// `stub`, the kernel-image code the trampoline jumps to, lies under that
/// same root slot). Returns the root's physical address.
///
/// # Safety
/// `region..region + TRAMPOLINE_SIZE` is RAM the kernel gave for this and
/// no one else uses; all RAM (the kernel's tables included) is mapped at
/// `phys + phys_offset`.
unsafe fn build_temporary_root(
    region: u64,
    phys_offset: u64,
    kernel_cr3: u64,
    five_level: bool,
    stub: u64,
) -> Result<u64, StartCpuError> {
    let table = |pa: u64| (pa + phys_offset) as *mut u64;
    let (root, l4, l3, l2) = (
        region + 0x1000,
        region + 0x2000,
        region + 0x3000,
        region + 0x4000,
    );
    // SAFETY: the kernel's root is a page of RAM, mapped at phys +
    // phys_offset (caller's contract); `root` is a page of the region.
    unsafe { core::ptr::copy_nonoverlapping(table(kernel_cr3 & ADDR), table(root), 512) };
    // SAFETY: as for the copy: all RAM is readable through the direct map.
    let mem = unsafe { pvops_core::phys::DirectMap::new(phys_offset, 1 << 52) };
    let paging = pvops_core::translate::PagingRoot {
        cr3: kernel_cr3,
        five_level,
    };
    if pvops_core::translate::walk(paging, region, &mem) == Ok(region) {
        return Ok(root);
    }
    // The kernel has no identity map there: slot 0 of the temporary root
    // maps 0..2 MiB at itself. The stub must then not live under slot 0.
    let shift = if five_level { 48 } else { 39 };
    if (stub >> shift) & 0x1ff == 0 {
        return Err(StartCpuError::BadTrampoline(region));
    }
    // SAFETY: l4, l3 and l2 are pages of the region (caller's contract),
    // written through the direct map before any CPU uses them.
    unsafe {
        for t in [l4, l3, l2] {
            core::ptr::write_bytes(table(t), 0, 512);
        }
        let below = if five_level {
            *table(l4) = l3 | PRESENT_WRITABLE;
            l4
        } else {
            l3
        };
        *table(root) = below | PRESENT_WRITABLE;
        *table(l3) = l2 | PRESENT_WRITABLE;
        *table(l2) = HUGE | PRESENT_WRITABLE;
    }
    Ok(root)
}

fn start_locked(
    cpu: CpuId,
    how: &SecondaryStart,
    page: u64,
    clock: fn() -> u64,
) -> Result<(), StartCpuError> {
    let phys_offset = crate::phys_offset();
    // SAFETY: reading CR0, CR4 and EFER is always allowed in ring 0.
    let (cr0, cr4, efer) = unsafe {
        (
            x86_64::registers::control::Cr0::read_raw(),
            x86_64::registers::control::Cr4::read_raw(),
            x86_64::registers::model_specific::Msr::new(0xc000_0080).read(),
        )
    };
    let five_level = cr4 & CR4_LA57 != 0;
    let stub = pvops_ap_stub as *const () as u64;
    // SAFETY: SecondaryStart's contract gives us the region below 1 MiB
    // (checked in `start`), and BootContext's maps all RAM at phys +
    // phys_offset.
    let temp_root = unsafe { build_temporary_root(page, phys_offset, how.cr3, five_level, stub)? };
    // The trampoline symbols delimit a blob in .rodata.
    let (start, end) = (
        core::ptr::addr_of!(pvops_trampoline_start),
        core::ptr::addr_of!(pvops_trampoline_end),
    );
    let len = end as usize - start as usize;
    let dst = (page + phys_offset) as *mut u8;
    // SAFETY: the first page of the kernel's region, reached through the
    // direct map (not at virtual == physical: a higher-half kernel has no
    // identity map).
    unsafe { core::ptr::copy_nonoverlapping(start, dst, len) };
    // The `*_offset` symbols are absolute values set in the asm: their
    // addresses are the values.
    let (gdt_off, long_off) = (
        core::ptr::addr_of!(pvops_tramp_gdt_offset) as u64,
        core::ptr::addr_of!(pvops_tramp_long_offset) as u64,
    );
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
    patch32(core::ptr::addr_of!(pvops_tramp_cr3), temp_root as u32);
    // LMA is set by hardware; keep LME, NXE and SCE as the boot CPU has them.
    patch32(
        core::ptr::addr_of!(pvops_tramp_efer),
        (efer & !(1 << 10)) as u32,
    );
    patch32(
        core::ptr::addr_of!(pvops_tramp_cr4),
        (CR4_PAE | (cr4 & CR4_LA57)) as u32,
    );
    patch32(core::ptr::addr_of!(pvops_tramp_cr0), ap_cr0(cr0) as u32);
    patch64(core::ptr::addr_of!(pvops_tramp_stack), how.stack_top);
    patch64(
        core::ptr::addr_of!(pvops_tramp_entry),
        how.entry as usize as u64,
    );
    patch64(core::ptr::addr_of!(pvops_tramp_arg), how.arg);
    patch64(core::ptr::addr_of!(pvops_tramp_kernel_cr3), how.cr3);
    let started = dst.wrapping_add(offset_of(core::ptr::addr_of!(pvops_tramp_started)));
    patch64(core::ptr::addr_of!(pvops_tramp_started_va), started as u64);
    patch64(core::ptr::addr_of!(pvops_tramp_stub), stub);
    patch32(core::ptr::addr_of!(pvops_tramp_started), 0);
    let vector = (page >> 12) as u32;
    apic::write_icr(cpu.0, ICR_INIT | ICR_LEVEL_ASSERT);
    delay_ns(clock, 10_000_000);
    for _ in 0..2 {
        apic::write_icr(cpu.0, ICR_STARTUP | ICR_LEVEL_ASSERT | vector);
        delay_ns(clock, 200_000);
    }
    let t = clock();
    // SAFETY: `started` points at the aligned u32 flag inside the copied
    // trampoline page, which the new CPU increments atomically.
    let flag = unsafe { &*(started as *const AtomicU32) };
    while flag.load(Ordering::Acquire) == 0 {
        if clock().wrapping_sub(t) > START_TIMEOUT_NS {
            return Err(StartCpuError::Timeout(cpu));
        }
        core::hint::spin_loop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CR0_WP: u64 = 1 << 16;

    #[test]
    fn aps_start_with_caches_on_and_the_boot_cpus_write_protection() {
        // What INIT leaves (CD | NW | ET), as a boot CPU would never run.
        let reset = 0x6000_0010;
        let cr0 = ap_cr0(reset | CR0_WP);
        assert_eq!(cr0 & (CR0_CD | CR0_NW), 0);
        assert_ne!(cr0 & CR0_WP, 0);
        assert_eq!(cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        // A typical boot CPU's CR0 (PG WP NE ET MP PE) passes through.
        assert_eq!(ap_cr0(0x8001_0033), 0x8001_0033);
        assert_eq!(ap_cr0(0x8001_003b) & CR0_TS, 0);
    }

    /// Physical memory 0..256 KiB as a host buffer: a kernel root at
    /// 0x3_0000, the trampoline region at 0x1_0000.
    struct Phys(std::vec::Vec<u64>);

    const REGION: u64 = 0x1_0000;
    const KERNEL_ROOT: u64 = 0x3_0000;
    const HIGH_STUB: u64 = 0xffff_ffff_8010_0000;

    impl Phys {
        fn new() -> Self {
            Phys(std::vec![0; 0x4_0000 / 8])
        }
        fn offset(&self) -> u64 {
            self.0.as_ptr() as u64
        }
        fn entry(&self, table: u64, index: usize) -> u64 {
            self.0[(table as usize + index * 8) / 8]
        }
        fn set(&mut self, table: u64, index: usize, value: u64) {
            self.0[(table as usize + index * 8) / 8] = value;
        }
        fn build(&mut self, five_level: bool, stub: u64) -> Result<u64, StartCpuError> {
            let offset = self.offset();
            // SAFETY: every address the function reaches (the kernel's
            // root, the region's four pages, page-table reads of the walk,
            // which stop at the empty root) lies in the buffer at
            // `offset + pa`, and nothing else uses the buffer meanwhile.
            unsafe { build_temporary_root(REGION, offset, KERNEL_ROOT, five_level, stub) }
        }
    }

    /// A higher-half kernel without an identity map: its root's upper
    /// entries are kept, slot 0 maps the first 2 MiB at itself through
    /// the region's spare pages, one more level with 5-level paging.
    #[test]
    fn the_temporary_root_maps_the_trampoline_at_itself_in_either_paging_mode() {
        for five_level in [false, true] {
            let mut m = Phys::new();
            m.set(KERNEL_ROOT, 511, 0x2_0003);
            m.set(KERNEL_ROOT, 256, 0x2_1003);
            let root = m.build(five_level, HIGH_STUB).unwrap();
            assert_eq!(root, REGION + 0x1000);
            assert_eq!(m.entry(root, 511), 0x2_0003, "the kernel's entries copied");
            assert_eq!(m.entry(root, 256), 0x2_1003);
            let mut table = m.entry(root, 0) & ADDR;
            if five_level {
                assert_eq!(table, REGION + 0x2000, "level 4 under level 5");
                table = m.entry(table, 0) & ADDR;
            }
            assert_eq!(table, REGION + 0x3000);
            let l2 = m.entry(table, 0) & ADDR;
            assert_eq!(l2, REGION + 0x4000);
            assert_eq!(
                m.entry(l2, 0),
                HUGE | PRESENT_WRITABLE,
                "0..2 MiB at itself"
            );
        }
    }

    /// Where the kernel's own tables already map the trampoline at its
    /// physical address, its root is copied and nothing is added.
    #[test]
    fn an_identity_mapped_kernel_needs_no_extra_map() {
        let mut m = Phys::new();
        // Slot 0 -> level 3 at 0x2_0000 -> a 1 GiB page at 0.
        m.set(KERNEL_ROOT, 0, 0x2_0003);
        m.set(0x2_0000, 0, HUGE | PRESENT_WRITABLE);
        let root = m.build(false, 0x20_0000).unwrap();
        assert_eq!(m.entry(root, 0), 0x2_0003);
        assert_eq!(m.entry(REGION + 0x3000, 0), 0, "no identity map written");
    }

    /// The stub under slot 0 would be shadowed by the identity map.
    #[test]
    fn a_stub_under_the_identity_slot_is_refused() {
        let mut m = Phys::new();
        assert_eq!(
            m.build(false, 0x20_0000),
            Err(StartCpuError::BadTrampoline(REGION))
        );
        // Under 5-level paging slot 0 spans 256 TiB: a 4-level high-half
        // address in the low half is refused too.
        assert_eq!(
            m.build(true, 0x0000_7fff_8000_0000),
            Err(StartCpuError::BadTrampoline(REGION))
        );
        assert!(m.build(true, HIGH_STUB).is_ok());
    }
}
