//! `__HYPERVISOR_vcpu_op` (`vcpu.h`, `hvm/hvm_vcpu.h`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `VCPUOP_initialise`: set a down vCPU's first register state.
pub const VCPUOP_INITIALISE: u64 = 0;
/// `VCPUOP_up`.
pub const VCPUOP_UP: u64 = 1;
/// `VCPUOP_down`: take a vCPU offline (its state is kept; `VCPUOP_up`
/// resumes it).
pub const VCPUOP_DOWN: u64 = 2;
/// `VCPUOP_is_up`: 1 or 0, or `-ENOENT` for a vCPU the domain lacks.
pub const VCPUOP_IS_UP: u64 = 3;
/// `VCPUOP_register_runstate_memory_area`.
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
/// `VCPUOP_stop_periodic_timer`.
pub const VCPUOP_STOP_PERIODIC_TIMER: u64 = 7;
/// `VCPUOP_set_singleshot_timer` (calling vCPU only).
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// `VCPUOP_stop_singleshot_timer` (calling vCPU only).
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
/// `VCPUOP_register_vcpu_info`.
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;

/// `RUNSTATE_running`.
pub const RUNSTATE_RUNNING: usize = 0;
/// `RUNSTATE_runnable`: wanted to run, another ran (stolen).
pub const RUNSTATE_RUNNABLE: usize = 1;
/// `RUNSTATE_blocked`.
pub const RUNSTATE_BLOCKED: usize = 2;
/// `RUNSTATE_offline`: preempted or paused by Xen (stolen too).
pub const RUNSTATE_OFFLINE: usize = 3;
/// `XEN_RUNSTATE_UPDATE`: set in `state_entry_time` during an update
/// (with `VMASST_TYPE_runstate_update_flag`).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `struct vcpu_runstate_info`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct RunstateInfo {
    /// `RUNSTATE_*` now.
    pub state: i32,
    /// Padding (C alignment of the next field).
    pub pad: u32,
    /// System time the state was entered; bit 63 is the update flag.
    pub state_entry_time: u64,
    /// Nanoseconds spent in each `RUNSTATE_*`.
    pub time: [u64; 4],
}
const_assert_eq!(core::mem::size_of::<RunstateInfo>(), 48);
const_assert_eq!(core::mem::offset_of!(RunstateInfo, state_entry_time), 8);
const_assert_eq!(core::mem::offset_of!(RunstateInfo, time), 16);

/// `struct vcpu_register_runstate_memory_area`: a guest *virtual*
/// address, which Xen writes through the vCPU's current page tables.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegisterRunstateArea {
    /// Virtual address of a [`RunstateInfo`].
    pub addr: u64,
}
const_assert_eq!(core::mem::size_of::<RegisterRunstateArea>(), 8);

/// `struct vcpu_set_singleshot_timer`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SetSingleshotTimer {
    /// Absolute Xen system time, ns.
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    /// Padding to the C size.
    pub pad: u32,
}
const_assert_eq!(core::mem::size_of::<SetSingleshotTimer>(), 16);

/// `struct vcpu_register_vcpu_info`: where a vCPU's `vcpu_info` lives
/// (a guest frame and an offset; it must not cross the page).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RegisterVcpuInfo {
    /// Guest frame number.
    pub mfn: u64,
    /// Offset in the frame (a multiple of 8, at most 4096 - 64).
    pub offset: u32,
    /// Unused.
    pub rsvd: u32,
}
const_assert_eq!(core::mem::size_of::<RegisterVcpuInfo>(), 16);

/// `VCPU_HVM_MODE_64B`: start in long mode with flat segments.
pub const VCPU_HVM_MODE_64B: u32 = 1;

/// `struct vcpu_hvm_x86_64`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[allow(missing_docs)]
pub struct VcpuHvmX86_64 {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}
const_assert_eq!(core::mem::size_of::<VcpuHvmX86_64>(), 112);

/// Bytes of the 32-bit register union member (`struct vcpu_hvm_x86_32`),
/// which is larger than the 64-bit one and so sets the union's size.
pub const VCPU_HVM_X86_32_SIZE: usize = 120;

/// `struct vcpu_hvm_context` with the 64-bit union member, padded to the
/// union's full size (Xen copies all of it).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VcpuHvmContext {
    /// `VCPU_HVM_MODE_*`.
    pub mode: u32,
    /// Must be 0.
    pub pad: u32,
    /// The registers.
    pub x86_64: VcpuHvmX86_64,
    /// The rest of the union.
    pub union_tail: [u8; VCPU_HVM_X86_32_SIZE - 112],
}
const_assert_eq!(
    core::mem::size_of::<VcpuHvmContext>(),
    8 + VCPU_HVM_X86_32_SIZE
);
const_assert_eq!(core::mem::offset_of!(VcpuHvmContext, x86_64), 8);
