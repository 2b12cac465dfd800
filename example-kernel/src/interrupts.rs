//! The IDT: one small assembly stub per vector that saves the scratch
//! registers and calls [`dispatch`], which hands the vector to whoever owns
//! it (exceptions, the timer, the test IPI, pvops' service vector).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops::cpu::DescriptorTablePointer;
use x86_64::VirtAddr;

/// The one-shot timer's vector.
pub const TIMER_VECTOR: u8 = 0x30;
/// The vector the IPI self-test sends.
pub const TEST_IPI_VECTOR: u8 = 0x31;
/// pvops' own cross-CPU requests.
pub const SERVICE_VECTOR: u8 = pvops::smp::SERVICE_VECTOR;
/// The APIC's spurious vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

const PAGE_FAULT: u64 = 14;

/// What the stubs leave on the stack, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

global_asm!(
    r#"
    .altmacro
    .section .text.isr, "ax"
    .macro isr_stub n
        .balign 16
    isr_stub_\n:
        .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
        .else
        push $0
        .endif
        push $\n
        jmp isr_common
    .endm
    .set i, 0
    .rept 256
        isr_stub %i
        .set i, i + 1
    .endr

    isr_common:
        push %rax
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        mov %rsp, %rdi
        cld
        call {dispatch}
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        add $16, %rsp
        /* Not iretq: where the kernel is not in ring 0 (Xen PV), returning
         * also restores the virtual interrupt flag, which pvops does. */
        jmp pvops_interrupt_return

    /* probe_read(addr) -> (value, faulted): a load that a page fault turns
     * into faulted = 1 instead of a crash. */
    .global probe_read
    probe_read:
        xor %edx, %edx
    .global probe_read_insn
    probe_read_insn:
        mov (%rdi), %rax
    .global probe_read_resume
    probe_read_resume:
        ret

    .section .rodata.isr, "a"
    .balign 8
    .macro isr_addr n
        .quad isr_stub_\n
    .endm
    .global isr_table
    isr_table:
    .set i, 0
    .rept 256
        isr_addr %i
        .set i, i + 1
    .endr
    .noaltmacro
    "#,
    dispatch = sym dispatch,
    options(att_syntax)
);

extern "C" {
    static isr_table: [u64; 256];
    static probe_read_insn: u8;
    static probe_read_resume: u8;
    fn probe_read(addr: u64) -> ProbeResult;
}

#[repr(C)]
struct ProbeResult {
    value: u64,
    faulted: u64,
}

/// Reads the u64 at `addr`; `None` if the read page-faulted.
///
/// # Safety
/// `addr` must be 8-byte aligned, and if it is mapped, reading it must be
/// sound (no MMIO side effects the caller does not expect).
pub unsafe fn try_read(addr: u64) -> Option<u64> {
    // SAFETY: probe_read only loads from `addr`; a fault there is turned
    // into `faulted` by `dispatch`; the caller vouches for the address.
    let r = unsafe { probe_read(addr) };
    (r.faulted == 0).then_some(r.value)
}

/// Timer interrupts taken.
pub static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);
/// sched_clock at the last timer interrupt.
pub static TIMER_LAST_NS: AtomicU64 = AtomicU64::new(0);
/// Timer re-arms left (for the periodic-tick test); the handler re-arms
/// with `TIMER_PERIOD_NS` while this is non-zero.
pub static TIMER_REARMS: AtomicU64 = AtomicU64::new(0);
/// Period used for re-arming.
pub static TIMER_PERIOD_NS: AtomicU64 = AtomicU64::new(0);
/// Test IPIs received.
pub static TEST_IPIS: AtomicU64 = AtomicU64::new(0);
/// Page faults the probe absorbed.
pub static PROBE_FAULTS: AtomicU64 = AtomicU64::new(0);
/// CR2 as read (through pvops) at the last absorbed fault.
pub static LAST_FAULT_ADDR: AtomicU64 = AtomicU64::new(0);

extern "C" fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        // SAFETY (address-of only): the probe labels are code addresses.
        PAGE_FAULT if frame.rip == core::ptr::addr_of!(probe_read_insn) as u64 => {
            LAST_FAULT_ADDR.store(pvops::mmu::read_cr2(), Ordering::Relaxed);
            PROBE_FAULTS.fetch_add(1, Ordering::Relaxed);
            frame.rax = 0;
            frame.rdx = 1;
            frame.rip = core::ptr::addr_of!(probe_read_resume) as u64;
        }
        v if v < 32 => fatal_exception(frame),
        v if v == u64::from(TIMER_VECTOR) => {
            TIMER_TICKS.fetch_add(1, Ordering::Relaxed);
            TIMER_LAST_NS.store(pvops::time::sched_clock(), Ordering::Relaxed);
            if TIMER_REARMS.load(Ordering::Relaxed) > 0 {
                TIMER_REARMS.fetch_sub(1, Ordering::Relaxed);
                pvops::time::timer_arm(TIMER_PERIOD_NS.load(Ordering::Relaxed));
            }
            pvops::irq::eoi();
        }
        v if v == u64::from(TEST_IPI_VECTOR) => {
            TEST_IPIS.fetch_add(1, Ordering::Relaxed);
            crate::smp::count_ipi();
            pvops::irq::eoi();
        }
        v if v == u64::from(SERVICE_VECTOR) => pvops::smp::service_interrupt(),
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        _ => {
            crate::kprintln!(
                "pvops: warning: unexpected interrupt vector {}",
                frame.vector
            );
            pvops::irq::eoi();
        }
    }
}

fn fatal_exception(frame: &TrapFrame) -> ! {
    crate::kprintln!(
        "pvops: error: exception {} error={:#x} rip={:#x} rsp={:#x} cr2={:#x}",
        frame.vector,
        frame.error_code,
        frame.rip,
        frame.rsp,
        pvops::mmu::read_cr2()
    );
    crate::finish_with(crate::EXIT_EXCEPTION)
}

/// One 16-byte 64-bit interrupt gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const EMPTY: Gate = Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        attributes: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// Present, DPL 0, 64-bit interrupt gate (interrupts off on entry).
    fn interrupt(handler: u64, selector: u16) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            ist: 0,
            attributes: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([Gate::EMPTY; 256]);

/// Fills the IDT with the stubs and loads it through pvops.
pub fn init(code_selector: u16) {
    // SAFETY: runs once on the boot CPU before interrupts are enabled, so
    // nothing else reads or writes IDT meanwhile; isr_table is 256
    // addresses emitted by the assembly above.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (gate, &handler) in idt.0.iter_mut().zip(isr_table.iter()) {
            *gate = Gate::interrupt(handler, code_selector);
        }
    }
    load();
}

/// The IDT's descriptor-table pointer.
pub fn idt_pointer() -> DescriptorTablePointer {
    DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    }
}

/// Loads the (filled) IDT on this CPU.
pub fn load() {
    let ptr = idt_pointer();
    // SAFETY: IDT is a static that lives forever, filled by `init` with
    // gates to the stubs above, which stay mapped.
    unsafe { pvops::cpu::load_idt(&ptr) }
}
