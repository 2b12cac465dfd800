//! The classic PV ABI (64-bit guests): the structures and numbers of
//! `xen.h`, `arch-x86/xen.h`, `arch-x86/xen-x86_64.h`, `callback.h` and
//! `physdev.h` that a PV kernel needs and a PVH one does not.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `__HYPERVISOR_set_trap_table`.
pub const SET_TRAP_TABLE: u32 = 0;
/// `__HYPERVISOR_mmu_update`.
pub const MMU_UPDATE: u32 = 1;
/// `__HYPERVISOR_set_gdt`.
pub const SET_GDT: u32 = 2;
/// `__HYPERVISOR_stack_switch`.
pub const STACK_SWITCH: u32 = 3;
/// `__HYPERVISOR_fpu_taskswitch`.
pub const FPU_TASKSWITCH: u32 = 5;
/// `__HYPERVISOR_update_descriptor`.
pub const UPDATE_DESCRIPTOR: u32 = 10;
/// `__HYPERVISOR_multicall`.
pub const MULTICALL: u32 = 13;
/// `__HYPERVISOR_update_va_mapping`.
pub const UPDATE_VA_MAPPING: u32 = 14;
/// `__HYPERVISOR_iret`.
pub const IRET: u32 = 23;
/// `__HYPERVISOR_set_segment_base` (x86-64 only).
pub const SET_SEGMENT_BASE: u32 = 25;
/// `__HYPERVISOR_mmuext_op`.
pub const MMUEXT_OP: u32 = 26;
/// `__HYPERVISOR_callback_op`.
pub const CALLBACK_OP: u32 = 30;
/// `__HYPERVISOR_physdev_op`.
pub const PHYSDEV_OP: u32 = 33;

/// `MMU_NORMAL_PT_UPDATE`: a checked `*ptr = val`, `ptr` a machine address.
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;

/// `MMUEXT_PIN_L4_TABLE` (L1..L3 are 0..2).
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// `MMUEXT_UNPIN_TABLE`.
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
/// `MMUEXT_NEW_BASEPTR`: load CR3 (kernel page tables).
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
/// `MMUEXT_TLB_FLUSH_LOCAL`.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// `MMUEXT_INVLPG_LOCAL`.
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
/// `MMUEXT_TLB_FLUSH_MULTI`: flush the vCPUs of a bitmap.
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
/// `MMUEXT_INVLPG_MULTI`: one page on the vCPUs of a bitmap.
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
/// `MMUEXT_NEW_USER_BASEPTR`: the page tables of guest user mode.
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;

/// `UVMF_INVLPG`: flush the one page after `update_va_mapping`.
pub const UVMF_INVLPG: u64 = 2;
/// `UVMF_LOCAL`: on this vCPU only.
pub const UVMF_LOCAL: u64 = 0;

/// `CALLBACKOP_register`.
pub const CALLBACKOP_REGISTER: u64 = 0;
/// `CALLBACKTYPE_event`: event-channel upcalls.
pub const CALLBACKTYPE_EVENT: u16 = 0;
/// `CALLBACKTYPE_failsafe`: Xen could not load a segment on return.
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;
/// `CALLBACKF_mask_events`.
pub const CALLBACKF_MASK_EVENTS: u16 = 1;

/// `PHYSDEVOP_set_iopl`.
pub const PHYSDEVOP_SET_IOPL: u64 = 6;

/// `SEGBASE_FS`: `set_segment_base` of the FS base.
pub const SEGBASE_FS: u32 = 0;
/// `SEGBASE_GS_USER`: the GS base of guest user mode.
pub const SEGBASE_GS_USER: u32 = 1;
/// `SEGBASE_GS_KERNEL`: the GS base of guest kernel mode (the one in
/// effect while the kernel runs).
pub const SEGBASE_GS_KERNEL: u32 = 2;

/// `FLAT_KERNEL_CS64`: the 64-bit code segment a PV kernel runs on
/// (ring 3, in Xen's part of the GDT).
pub const FLAT_KERNEL_CS: u16 = 0xe033;
/// `FLAT_KERNEL_SS64`.
pub const FLAT_KERNEL_SS: u16 = 0xe02b;

/// `MACH2PHYS_VIRT_START`: Xen's read-only machine-to-pseudo-physical
/// table in every 64-bit PV address space, one `u64` per machine frame.
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// `MACH2PHYS_VIRT_END`.
pub const MACH2PHYS_VIRT_END: u64 = 0xffff_8040_0000_0000;

/// Entries of the guest's GDT that Xen takes (`FIRST_RESERVED_GDT_ENTRY`
/// is 14 pages' worth; one page is what this backend uses).
pub const GDT_ENTRIES_PER_PAGE: usize = 512;

/// `trap_info`: one vector of the PV trap table (`set_trap_table`); an
/// entry with `address == 0` ends the array.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct TrapInfo {
    /// The vector.
    pub vector: u8,
    /// Bits 0-1: the privilege level `int n` needs; bit 2: mask events on
    /// entry (an interrupt gate).
    pub flags: u8,
    /// The code selector.
    pub cs: u16,
    /// Padding of the C layout.
    pub pad: u32,
    /// The handler.
    pub address: u64,
}
const_assert_eq!(core::mem::size_of::<TrapInfo>(), 16);

/// `TrapInfo::flags` bit 2: events masked on entry.
pub const TI_MASK_EVENTS: u8 = 1 << 2;

/// `mmu_update`: one request of `__HYPERVISOR_mmu_update`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
pub struct MmuUpdate {
    /// Machine address of the entry, with the request type in bits 0-1.
    pub ptr: u64,
    /// The new entry (machine frame numbers).
    pub val: u64,
}
const_assert_eq!(core::mem::size_of::<MmuUpdate>(), 16);

/// `mmuext_op`: one request of `__HYPERVISOR_mmuext_op`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
pub struct MmuextOp {
    /// `MMUEXT_*`.
    pub cmd: u32,
    /// Padding of the C layout.
    pub pad: u32,
    /// A machine frame or a linear address, by `cmd`.
    pub arg1: u64,
    /// A count or a pointer to a vCPU bitmap, by `cmd`.
    pub arg2: u64,
}
const_assert_eq!(core::mem::size_of::<MmuextOp>(), 24);

/// `multicall_entry`: one hypercall of a `__HYPERVISOR_multicall` batch.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, IntoBytes, Immutable, KnownLayout)]
pub struct MulticallEntry {
    /// The hypercall number.
    pub op: u64,
    /// Its result, written by Xen.
    pub result: i64,
    /// Its arguments.
    pub args: [u64; 6],
}
const_assert_eq!(core::mem::size_of::<MulticallEntry>(), 64);

/// `callback_register`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, IntoBytes, Immutable, KnownLayout)]
pub struct CallbackRegister {
    /// `CALLBACKTYPE_*`.
    pub kind: u16,
    /// `CALLBACKF_*`.
    pub flags: u16,
    /// Padding of the C layout.
    pub pad: u32,
    /// The entry point.
    pub address: u64,
}
const_assert_eq!(core::mem::size_of::<CallbackRegister>(), 16);

/// `VGCF_i387_valid`: [`VcpuGuestContext::fpu_ctxt`] holds an FXSAVE
/// image to load (else the vCPU starts with a reset FPU).
pub const VGCF_I387_VALID: u64 = 1 << 0;
/// `VGCF_in_kernel`: the vCPU starts in guest kernel mode (its kernel
/// page tables, kernel GS base).
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `VGCF_failsafe_disables_events`: the failsafe callback masks events.
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
/// `VGCF_syscall_disables_events`: the syscall callback masks events.
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// `VGCF_online`: `VCPUOP_initialise` also brings the vCPU up (without
/// it the vCPU stays down until `VCPUOP_up`).
pub const VGCF_ONLINE: u64 = 1 << 5;

/// `xen_pfn_to_cr3` of a 64-bit guest: the CR3 value (as
/// [`VcpuGuestContext::ctrlreg`] holds it) of the top table at machine
/// frame `mfn`.
pub const fn xen_pfn_to_cr3(mfn: u64) -> u64 {
    mfn << 12
}

/// `struct cpu_user_regs` of `arch-x86/xen-x86_64.h`: a 64-bit PV vCPU's
/// general registers (the 64-bit names of its register unions).
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[allow(missing_docs)]
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Xen's own (ignored on input).
    pub error_code: u32,
    /// Xen's own (ignored on input).
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    pub pad0: u16,
    /// Ignored by `VCPUOP_initialise` (the event mask is the vCPU's
    /// `vcpu_info`).
    pub saved_upcall_mask: u8,
    pub pad1: [u8; 3],
    /// RFLAGS; Xen forces IF on (ring 3 always runs with it) and takes
    /// IOPL as the vCPU's virtual I/O privilege level.
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    pub pad2: [u16; 3],
    pub es: u16,
    pub pad3: [u16; 3],
    pub ds: u16,
    pub pad4: [u16; 3],
    pub fs: u16,
    pub pad5: [u16; 3],
    pub gs: u16,
    pub pad6: [u16; 3],
}
const_assert_eq!(core::mem::size_of::<CpuUserRegs>(), 200);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rbp), 32);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rax), 80);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rdi), 112);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, error_code), 120);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rip), 128);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, cs), 136);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, saved_upcall_mask), 140);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rflags), 144);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, rsp), 152);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, ss), 160);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, es), 168);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, ds), 176);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, fs), 184);
const_assert_eq!(core::mem::offset_of!(CpuUserRegs, gs), 192);

/// `struct vcpu_guest_context` of `arch-x86/xen.h` for a 64-bit PV guest:
/// the whole first state of a vCPU that `VCPUOP_initialise` takes.
/// Frame numbers in it are machine frames. Build one with
/// [`zerocopy::FromZeros::new_zeroed`] (most fields are 0).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VcpuGuestContext {
    /// FXSAVE image, used with [`VGCF_I387_VALID`].
    pub fpu_ctxt: [u8; 512],
    /// `VGCF_*`.
    pub flags: u64,
    /// The registers the vCPU starts with.
    pub user_regs: CpuUserRegs,
    /// The virtual IDT, indexed by vector (`trap_ctxt[v].vector == v`);
    /// an entry with address 0 is no handler.
    pub trap_ctxt: [TrapInfo; 256],
    /// LDT linear address (page-aligned).
    pub ldt_base: u64,
    /// LDT entries (0: none).
    pub ldt_ents: u64,
    /// Machine frames of the GDT.
    pub gdt_frames: [u64; 16],
    /// GDT entries (0: none; Xen's own selectors work regardless).
    pub gdt_ents: u64,
    /// Stack segment Xen switches to on entry from guest user mode.
    pub kernel_ss: u64,
    /// Stack pointer Xen switches to on entry from guest user mode.
    pub kernel_sp: u64,
    /// CR0-CR7: CR3 is the kernel top table ([`xen_pfn_to_cr3`]), CR1 the
    /// user one (0: none); of CR0 only TS is the guest's, of CR4 a few
    /// bits.
    pub ctrlreg: [u64; 8],
    /// DR0-DR7.
    pub debugreg: [u64; 8],
    /// The event upcall entry (`CALLBACKTYPE_event`).
    pub event_callback_eip: u64,
    /// The failsafe entry (`CALLBACKTYPE_failsafe`).
    pub failsafe_callback_eip: u64,
    /// The `syscall` entry from guest user mode (0: none).
    pub syscall_callback_eip: u64,
    /// `VMASST_TYPE_*` bitmap (only read for vCPU 0).
    pub vm_assist: u64,
    /// FS base.
    pub fs_base: u64,
    /// GS base in guest kernel mode.
    pub gs_base_kernel: u64,
    /// GS base in guest user mode.
    pub gs_base_user: u64,
}
const_assert_eq!(core::mem::size_of::<VcpuGuestContext>(), 5168);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, flags), 512);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, user_regs), 520);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, trap_ctxt), 720);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, ldt_base), 4816);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, gdt_frames), 4832);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, gdt_ents), 4960);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, kernel_ss), 4968);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, kernel_sp), 4976);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, ctrlreg), 4984);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, debugreg), 5048);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, event_callback_eip),
    5112
);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, failsafe_callback_eip),
    5120
);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, syscall_callback_eip),
    5128
);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, vm_assist), 5136);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, fs_base), 5144);
const_assert_eq!(
    core::mem::offset_of!(VcpuGuestContext, gs_base_kernel),
    5152
);
const_assert_eq!(core::mem::offset_of!(VcpuGuestContext, gs_base_user), 5160);

/// Page-table entry bits a PV kernel uses.
pub mod pte {
    /// Present.
    pub const PRESENT: u64 = 1 << 0;
    /// Writable.
    pub const WRITABLE: u64 = 1 << 1;
    /// Accessed.
    pub const ACCESSED: u64 = 1 << 5;
    /// Dirty.
    pub const DIRTY: u64 = 1 << 6;
    /// Large page (a PMD/PUD leaf).
    pub const HUGE: u64 = 1 << 7;
    /// The frame-number bits of an entry.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
}
