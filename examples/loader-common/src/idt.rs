//! The IDT: one assembly stub per vector saving the scratch registers and
//! calling `dispatch`; the stubs return with `jmp pvops_interrupt_return`
//! (not `iretq`), as pvops asks. Vectors: exceptions (fatal, printed),
//! [`TIMER_VECTOR`], pvops' [`SERVICE_VECTOR`] and the APIC's spurious
//! vector 0xff.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops::cpu::DescriptorTablePointer;
use pvops::x86_64::VirtAddr;

/// The one-shot timer's vector (`pvops::time::timer_setup`).
pub const TIMER_VECTOR: u8 = 0x30;
/// pvops' cross-CPU requests (remote TLB flushes, Xen upcalls).
pub const SERVICE_VECTOR: u8 = pvops::smp::SERVICE_VECTOR;
/// The local APIC's spurious vector.
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Timer interrupts taken.
pub static TIMER_TICKS: AtomicU64 = AtomicU64::new(0);
/// `sched_clock` at the last timer interrupt.
pub static TIMER_LAST_NS: AtomicU64 = AtomicU64::new(0);

/// What the stubs leave on the stack, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    r11: u64,
    r10: u64,
    r9: u64,
    r8: u64,
    rdi: u64,
    rsi: u64,
    rdx: u64,
    rcx: u64,
    rax: u64,
    vector: u64,
    error_code: u64,
    rip: u64,
    cs: u64,
    rflags: u64,
    rsp: u64,
    ss: u64,
}

global_asm!(
    r#"
    .altmacro
    .section .text.isr, "ax"
    .macro loader_isr_stub n
        .balign 16
    loader_isr_stub_\n:
        .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
        .else
        push $0
        .endif
        push $\n
        jmp loader_isr_common
    .endm
    .set i, 0
    .rept 256
        loader_isr_stub %i
        .set i, i + 1
    .endr

    loader_isr_common:
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
        jmp pvops_interrupt_return

    .section .rodata.isr, "a"
    .balign 8
    .macro loader_isr_addr n
        .quad loader_isr_stub_\n
    .endm
    .global loader_isr_table
    loader_isr_table:
    .set i, 0
    .rept 256
        loader_isr_addr %i
        .set i, i + 1
    .endr
    .noaltmacro
    "#,
    dispatch = sym dispatch,
    options(att_syntax)
);

extern "C" {
    static loader_isr_table: [u64; 256];
}

extern "C" fn dispatch(frame: &mut TrapFrame) {
    match frame.vector {
        v if v < 32 => {
            crate::kprintln!(
                "pvops: error: exception {} error={:#x} rip={:#x} rsp={:#x} cr2={:#x} cpu={}",
                frame.vector,
                frame.error_code,
                frame.rip,
                frame.rsp,
                pvops::mmu::read_cr2(),
                pvops::cpu::current_cpu().0
            );
            crate::finish(crate::exit::EXCEPTION)
        }
        v if v == u64::from(TIMER_VECTOR) => {
            TIMER_LAST_NS.store(pvops::time::sched_clock(), Ordering::Relaxed);
            TIMER_TICKS.fetch_add(1, Ordering::Release);
            pvops::irq::eoi();
        }
        v if v == u64::from(SERVICE_VECTOR) => pvops::smp::service_interrupt(),
        v if v == u64::from(SPURIOUS_VECTOR) => {}
        _ => {
            crate::kprintln!(
                "pvops: warning: unexpected interrupt vector {} (rip {:#x}, cs {:#x}, rflags {:#x}, rsp {:#x}, ss {:#x})",
                frame.vector,
                frame.rip,
                frame.cs,
                frame.rflags,
                frame.rsp,
                frame.ss
            );
            pvops::irq::eoi();
        }
    }
}

/// One 64-bit interrupt gate.
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

#[repr(C, align(16))]
struct Idt([Gate; 256]);

const EMPTY: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
};

static mut IDT: Idt = Idt([EMPTY; 256]);
static FILLED: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Loads the IDT on this CPU, filling it the first time (on the boot CPU,
/// before any other CPU starts).
pub fn load() {
    if !FILLED.load(Ordering::Acquire) {
        // SAFETY: the first call runs on the boot CPU before interrupts are
        // enabled and before any other CPU starts, so nothing reads IDT
        // meanwhile; loader_isr_table is the 256 stub addresses above.
        unsafe {
            let idt = &mut *core::ptr::addr_of_mut!(IDT);
            for (gate, &handler) in idt.0.iter_mut().zip(loader_isr_table.iter()) {
                *gate = Gate {
                    offset_low: handler as u16,
                    selector: crate::gdt::CODE,
                    ist: 0,
                    attributes: 0x8e, // present, DPL 0, interrupt gate
                    offset_mid: (handler >> 16) as u16,
                    offset_high: (handler >> 32) as u32,
                    reserved: 0,
                };
            }
        }
        FILLED.store(true, Ordering::Release);
    }
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    };
    // SAFETY: IDT is a static that lives forever, filled with gates to the
    // stubs above, which stay mapped.
    unsafe { pvops::cpu::load_idt(&ptr) }
}
