//! VMware's guest interface, raw: the numbers (from VMware's public
//! open-vm-tools `backdoor_def.h` and Linux's `arch/x86/kernel/cpu/vmware.c`,
//! facts only) and the one instruction that talks to the backdoor port.
//! Nothing here decides anything; [`crate::backdoor`] and [`crate::timing`]
//! are the typed layer above.

/// The backdoor's I/O port ("low bandwidth"): `in` from it with
/// [`MAGIC`] in EAX and a command in ECX is a call into the hypervisor.
pub const PORT: u16 = 0x5658;
/// `VMXh`: EAX on every call; GETVERSION returns it in EBX.
pub const MAGIC: u32 = 0x564D_5868;

/// Backdoor command numbers (ECX, low 16 bits).
pub mod cmd {
    /// EAX: the interface version (`u32::MAX`: none), EBX: [`super::MAGIC`],
    /// ECX: the product type.
    pub const GETVERSION: u16 = 10;
    /// EBX:EAX: TSC frequency in Hz (EBX `u32::MAX`: not available), ECX:
    /// APIC bus frequency in Hz.
    pub const GETHZ: u16 = 45;
}

/// CPUID leaf with VMware's signature (`VMwareVMware`) and, in EAX, its
/// highest leaf.
pub const CPUID_INFO_LEAF_OFFSET: u32 = 0x00;
/// Offset from the signature's base of VMware's timing leaf: EAX the TSC
/// frequency in kHz, EBX the APIC bus frequency in kHz, ECX hypercall
/// instruction bits ([`TIMING_ECX_VMMCALL`], [`TIMING_ECX_VMCALL`]).
pub const CPUID_TIMING_LEAF_OFFSET: u32 = 0x10;
/// Timing leaf ECX: the hypervisor takes backdoor calls by `vmmcall`.
pub const TIMING_ECX_VMMCALL: u32 = 1 << 0;
/// Timing leaf ECX: the hypervisor takes backdoor calls by `vmcall`.
pub const TIMING_ECX_VMCALL: u32 = 1 << 1;

/// The registers a backdoor call returns.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// One backdoor call through the I/O port: EAX [`MAGIC`], EBX `arg`, ECX
/// `command`, DX [`PORT`]; returns the four registers as the hypervisor
/// left them. Where nothing answers the port, EAX reads all ones and the
/// other registers come back as they were sent.
///
/// # Safety
/// Ring 0 (or IOPL 3). Only where something claims to be VMware (see
/// [`crate::detect`](mod@crate::detect)): on other machines port 0x5658 may belong to a
/// device, and reading it could have effects.
pub unsafe fn port_call(command: u16, arg: u32) -> Regs {
    let (eax, ecx, edx): (u32, u32, u32);
    // RBX is reserved by LLVM: pass it in another register and swap.
    let mut bx = u64::from(arg);
    // SAFETY: the caller guarantees the port may be read here; `in`
    // changes only EAX (and, on a VMware-like hypervisor, EBX, ECX, EDX,
    // which are all declared outputs). ESI and EDI are cleared and marked
    // clobbered: some backdoor commands return data in them.
    unsafe {
        core::arch::asm!(
            "xchg {bx}, rbx",
            "in eax, dx",
            "xchg {bx}, rbx",
            bx = inout(reg) bx,
            inout("eax") MAGIC => eax,
            inout("ecx") u32::from(command) => ecx,
            inout("edx") u32::from(PORT) => edx,
            inout("esi") 0u32 => _,
            inout("edi") 0u32 => _,
            options(nostack, preserves_flags),
        );
    }
    Regs {
        eax,
        ebx: bx as u32,
        ecx,
        edx,
    }
}
