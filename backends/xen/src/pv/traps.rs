//! Entries from Xen into a classic PV kernel, and the way back.
//!
//! A PV kernel has no IDT of its own: Xen takes every exception and
//! *bounces* it to the handler the kernel named in its trap table
//! (`set_trap_table`), on the kernel's stack, in a frame that differs from
//! the hardware's by two words on top: RCX and R11, which Xen's own
//! `sysret`-style return needs. Event upcalls and the failsafe callback
//! arrive the same way. So that the kernel keeps one set of interrupt
//! stubs for every platform, this module gives Xen one small entry per
//! vector that pops those two words and jumps to the kernel's IDT handler
//! for the vector ([`HANDLERS`], filled by `load_idt`); the handler then
//! sees exactly the hardware frame.
//!
//! | entry | Xen's frame (lowest first) | becomes |
//! |---|---|---|
//! | exception / `int n` vector `v` | rcx, r11, [error code], rip, cs, rflags, rsp, ss | IDT handler of `v` |
//! | event upcall | rcx, r11, rip, cs, rflags, rsp, ss | pvops' service routine ([`pvops_core::smp::SERVICE_VECTOR`]'s work: upcall handler, cross-CPU requests), called directly |
//! | failsafe | rcx, r11, ds, es, fs, gs, rip, cs, rflags, rsp, ss | a report, then shutdown |
//!
//! RFLAGS.IF in a bounce frame is Xen's copy of "events were enabled"
//! (the inverse of `evtchn_upcall_mask`), since the real IF of ring 3 is
//! always set; and CS has RPL 0 when the kernel was interrupted (RPL 3
//! means guest user mode, whose return switches page tables).
//!
//! ## Returning (`pvops_xen_pv_iret`)
//! The kernel's stubs leave through `pvops_interrupt_return`, which jumps
//! here. Returns to kernel code are done in software: `rip`, `rax` and
//! `rflags` are placed just below the interrupted stack pointer, the stack
//! switches, and `popfq; pop %rax; ret` resume it with every register as
//! it was (no privilege changes: the kernel is in ring 3 both sides). If
//! the interrupted code had events enabled, they are unmasked in the
//! vCPU's `vcpu_info` first (its address at `%gs:8`, see
//! [`publish_vcpu_info`]); an event already pending then needs `HYPERVISOR_iret`,
//! which unmasks and delivers it in one step, and so do returns to user
//! mode and returns before the vCPU is set up. An event that arrives
//! during the software return is delivered on top of it, below every word
//! it still needs. (`iretq` itself, ring 3 to ring 3, would be the obvious way, but
//! QEMU's software CPU reads its frame with supervisor rights, which SMAP
//! refuses on a guest page.)
//!
//! ## Raising a vector in software ([`raise`])
//! Where a PVH guest re-raises a vector with a local-APIC self-IPI, a PV
//! guest has no APIC: [`raise`] builds a hardware-style frame (events
//! masked, as they are in the upcall that calls it) and enters the
//! kernel's handler directly, which returns through the same path.

use crate::abi::pv::{FLAT_KERNEL_CS, IRET};
use core::sync::atomic::{AtomicU64, Ordering};

/// The kernel's IDT handler per vector (0: none), as `load_idt` found them.
pub static HANDLERS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];

/// Publishes where `vcpu`'s `vcpu_info` is now (in its
/// [`crate::percpu::PvCpu`], at `%gs:8` on that vCPU), for the assembly
/// that reaches it without a call: the interrupt return and the direct
/// interrupt-flag ops. Called when the vCPU is started (its slot in shared
/// info) and again when its own `vcpu_info` is registered.
pub fn publish_vcpu_info(vcpu: u32) {
    if let (Some(vi), Some(i)) = (crate::shared::vcpu_info(vcpu), crate::percpu::slot(vcpu)) {
        crate::percpu::PV_IDS[i]
            .vcpu_info
            .store(vi as u64, Ordering::Release);
    }
}

core::arch::global_asm!(
    r#"
    .altmacro
    .section .text.pvops_xen_pv, "ax"
    .macro pv_trap n
        .balign 16
    pvops_xen_pv_trap_\n:
        pop %rcx
        pop %r11
        jmp *({handlers} + 8 * \n)(%rip)
    .endm
    .set i, 0
    .rept 256
        pv_trap %i
        .set i, i + 1
    .endr

    .global pvops_xen_pv_event
    pvops_xen_pv_event:
        pop %rcx
        pop %r11
        push %rax
        push %rcx
        push %rdx
        push %rsi
        push %rdi
        push %r8
        push %r9
        push %r10
        push %r11
        cld
        call {service}
        pop %r11
        pop %r10
        pop %r9
        pop %r8
        pop %rdi
        pop %rsi
        pop %rdx
        pop %rcx
        pop %rax
        jmp pvops_xen_pv_iret

    .global pvops_xen_pv_failsafe
    pvops_xen_pv_failsafe:
        pop %rcx
        pop %r11
        mov %rsp, %rdi
        and $-16, %rsp
        call {failsafe}
        ud2

    .global pvops_xen_pv_iret
    pvops_xen_pv_iret:
        testb $3, 8(%rsp)
        jnz 1f
        testl $0x200, 16(%rsp)
        jz 4f
        /* Back to kernel code that had events enabled: unmask them in
         * this vCPU's vcpu_info; if nothing is pending, return as below
         * (an event arriving from now on is delivered on top of this
         * return, whose words all sit above the stack pointer); if
         * something is, the hypercall delivers it. */
        cmpb $0, {pv_gs}(%rip)
        je 1f
        push %rax
        push %rbx
        mov %gs:{vi}, %rbx
        test %rbx, %rbx
        jz 3f
        movb $0, 1(%rbx)
        cmpb $0, 0(%rbx)
        jne 3f
        pop %rbx
        pop %rax
        jmp 4f
    3:  pop %rbx
        pop %rax
        jmp 1f
    4:  /* Back to kernel code that had events masked: the mask stays
         * set, nothing can be pending for delivery, and no privilege
         * changes, so the return is done here. rip, the saved rax and
         * rflags go below the target stack pointer (kernel code has no
         * red zone), then the stack switches and popfq; pop; ret. */
        push %rax
        push %rbx
        push %rcx
        mov 24(%rsp), %rbx
        mov 40(%rsp), %rcx
        mov 48(%rsp), %rax
        mov %rbx, -8(%rax)
        mov 16(%rsp), %rbx
        mov %rbx, -16(%rax)
        mov %rcx, -24(%rax)
        mov 8(%rsp), %rbx
        mov (%rsp), %rcx
        lea -24(%rax), %rsp
        popfq
        pop %rax
        ret
    1:  lock incq {issued}(%rip)
        push $0
        push %rcx
        push %r11
        push %rax
        mov ${iret}, %eax
        syscall
        ud2

    .global pvops_xen_pv_raise
    pvops_xen_pv_raise:
        mov %rsp, %rax
        and $-16, %rsp
        mov %ss, %ecx
        push %rcx
        push %rax
        pushfq
        andq $~0x200, (%rsp)
        mov %cs, %ecx
        and $~3, %ecx
        push %rcx
        lea 2f(%rip), %rcx
        push %rcx
        jmp *%rdi
    2:  ret

    .section .rodata.pvops_xen_pv, "a"
    .balign 8
    .macro pv_trap_addr n
        .quad pvops_xen_pv_trap_\n
    .endm
    .global pvops_xen_pv_trap_entries
    pvops_xen_pv_trap_entries:
    .set i, 0
    .rept 256
        pv_trap_addr %i
        .set i, i + 1
    .endr
    .noaltmacro
    "#,
    handlers = sym HANDLERS,
    service = sym service_upcall,
    failsafe = sym failsafe,
    iret = const IRET,
    issued = sym crate::hypercall::ISSUED,
    pv_gs = sym crate::percpu::PV_GS,
    vi = const crate::percpu::PV_CPU_VCPU_INFO,
    options(att_syntax)
);

extern "C" {
    /// The entry Xen bounces vector `v` to is `pvops_xen_pv_trap_entries[v]`.
    #[link_name = "pvops_xen_pv_trap_entries"]
    static TRAP_ENTRIES: [u64; 256];
    /// The event-upcall entry (`CALLBACKTYPE_event`).
    #[link_name = "pvops_xen_pv_event"]
    pub fn event_entry();
    /// The failsafe entry (`CALLBACKTYPE_failsafe`).
    #[link_name = "pvops_xen_pv_failsafe"]
    pub fn failsafe_entry();
    /// The interrupt return (see the module docs).
    #[link_name = "pvops_xen_pv_iret"]
    pub fn iret_entry();
    #[link_name = "pvops_xen_pv_raise"]
    fn raise_to(handler: u64);
}

/// Xen's entry for vector `v`.
pub fn trap_entry(v: u8) -> u64 {
    // SAFETY: a read of an immutable table of 256 code addresses.
    unsafe { TRAP_ENTRIES[usize::from(v)] }
}

/// The code selector Xen runs a 64-bit PV kernel on.
pub const KERNEL_CS: u16 = FLAT_KERNEL_CS;

/// The event upcall: pvops' own service routine (the upcall handler, then
/// pvops' cross-CPU requests), as the kernel's `SERVICE_VECTOR` handler
/// would run it; called directly, so that a kernel without an IDT yet (or
/// without that vector) still gets its events handled.
extern "C" fn service_upcall() {
    pvops_core::smp::service_interrupt();
}

/// Runs the kernel's handler for `vector` now, as if the vector had been
/// delivered with events masked. False if the kernel has no handler for
/// it.
pub fn raise(vector: u8) -> bool {
    let h = HANDLERS[usize::from(vector)].load(Ordering::Acquire);
    if h == 0 {
        return false;
    }
    // SAFETY: `h` is the kernel's IDT handler for `vector` (load_idt's
    // contract keeps it valid while loaded); it expects a hardware frame,
    // which raise_to builds, and returns through pvops_interrupt_return,
    // which pops that frame back to raise_to. Caller-saved registers are
    // clobbered as for any extern "C" call; the handler saves the rest.
    unsafe { raise_to(h) };
    true
}

/// What Xen's failsafe callback leaves: segment selectors Xen could not
/// load on a return to the kernel.
#[repr(C)]
struct FailsafeFrame {
    ds: u64,
    es: u64,
    fs: u64,
    gs: u64,
    rip: u64,
    cs: u64,
}

extern "C" fn failsafe(frame: &FailsafeFrame) -> ! {
    crate::warn::error(format_args!(
        "xen: failsafe callback: Xen could not load a segment returning to rip={:#x} cs={:#x} (ds={:#x} es={:#x} fs={:#x} gs={:#x})",
        frame.rip, frame.cs, frame.ds, frame.es, frame.fs, frame.gs
    ));
    crate::shutdown::shutdown(crate::pv::EXIT_FAILSAFE)
}
