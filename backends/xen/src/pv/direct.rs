//! The hottest classic-PV ops in assembly, for call sites to call
//! directly (`PvOps::with_direct_call`): the interrupt flag and CR2 are
//! bytes of the vCPU's `vcpu_info`, whose address is at `%gs:8`
//! ([`crate::percpu::PvCpu`]), so each op is a load and a byte access, and
//! needs none of the register saving a call into Rust would (the sites
//! keep every register but `rax`). They are what Linux's
//! `xen_irq_disable_direct` and friends are.
//!
//! | op | code |
//! |---|---|
//! | disable | `movb $1` to the mask |
//! | enable | `movb $0` to the mask; if an event is pending, a null hypercall (`XENVER_version`) on whose return Xen delivers it, registers saved around it |
//! | save_flags | RFLAGS.IF (bit 9) set when the mask is clear |
//! | restore_flags | enable or disable by bit 9 of `rdi` |
//! | read_cr2 | the `arch_cr2` Xen writes before a page fault is bounced |
//!
//! Used only once the vCPU's GS base names it and its `vcpu_info` is
//! published (the backend installs them only then).

use crate::abi::shared::VcpuInfo;
use crate::percpu::PV_CPU_VCPU_INFO;
use core::mem::offset_of;

core::arch::global_asm!(
    r#"
    .section .text.pvops_xen_pv_direct, "ax"
    .global pvops_xen_pv_direct_disable
    pvops_xen_pv_direct_disable:
        mov %gs:{vi}, %rax
        movb $1, {mask}(%rax)
        ret

    .global pvops_xen_pv_direct_enable
    pvops_xen_pv_direct_enable:
        mov %gs:{vi}, %rax
        movb $0, {mask}(%rax)
        cmpb $0, {pending}(%rax)
        jne 1f
        ret
    1:  push %rcx
        push %r11
        push %rdi
        push %rsi
        push %rdx
        push %r10
        push %r8
        lock incq {issued}(%rip)
        mov ${xen_version}, %eax
        xor %edi, %edi
        xor %esi, %esi
        syscall
        pop %r8
        pop %r10
        pop %rdx
        pop %rsi
        pop %rdi
        pop %r11
        pop %rcx
        ret

    .global pvops_xen_pv_direct_save_flags
    pvops_xen_pv_direct_save_flags:
        mov %gs:{vi}, %rax
        cmpb $0, {mask}(%rax)
        sete %al
        movzbl %al, %eax
        shl $9, %eax
        ret

    .global pvops_xen_pv_direct_restore_flags
    pvops_xen_pv_direct_restore_flags:
        test $0x200, %edi
        jz pvops_xen_pv_direct_disable
        jmp pvops_xen_pv_direct_enable

    .global pvops_xen_pv_direct_read_cr2
    pvops_xen_pv_direct_read_cr2:
        mov %gs:{vi}, %rax
        mov {cr2}(%rax), %rax
        ret
    "#,
    vi = const PV_CPU_VCPU_INFO,
    mask = const offset_of!(VcpuInfo, evtchn_upcall_mask),
    pending = const offset_of!(VcpuInfo, evtchn_upcall_pending),
    cr2 = const offset_of!(VcpuInfo, arch_cr2),
    issued = sym crate::hypercall::ISSUED,
    xen_version = const crate::abi::nr::XEN_VERSION,
    options(att_syntax)
);

extern "C" {
    /// Masks events (see the module docs).
    #[link_name = "pvops_xen_pv_direct_disable"]
    pub fn disable();
    /// Unmasks events, delivering a pending one.
    #[link_name = "pvops_xen_pv_direct_enable"]
    pub fn enable();
    /// The interrupt state as RFLAGS.IF.
    #[link_name = "pvops_xen_pv_direct_save_flags"]
    pub fn save_flags();
    /// Sets the interrupt state from RFLAGS.IF in `rdi`.
    #[link_name = "pvops_xen_pv_direct_restore_flags"]
    pub fn restore_flags();
    /// CR2 as Xen saved it.
    #[link_name = "pvops_xen_pv_direct_read_cr2"]
    pub fn read_cr2();
}
