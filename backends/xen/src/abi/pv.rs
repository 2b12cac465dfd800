//! The classic PV ABI (64-bit guests): the structures and numbers of
//! `xen.h`, `arch-x86/xen.h`, `arch-x86/xen-x86_64.h`, `callback.h` and
//! `physdev.h` that a PV kernel needs and a PVH one does not.

use static_assertions::const_assert_eq;
use zerocopy::{Immutable, IntoBytes, KnownLayout};

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
#[derive(Debug, Clone, Copy, Default, IntoBytes, Immutable, KnownLayout)]
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
