//! Hypercall numbers (`xen.h`, `__HYPERVISOR_*`), for the 64-bit ABI:
//! number in RAX, arguments in RDI, RSI, RDX, R10, R8, result in RAX.

/// `__HYPERVISOR_memory_op`.
pub const MEMORY_OP: u32 = 12;
/// `__HYPERVISOR_xen_version`.
pub const XEN_VERSION: u32 = 17;
/// `__HYPERVISOR_console_io`.
pub const CONSOLE_IO: u32 = 18;
/// `__HYPERVISOR_vm_assist`.
pub const VM_ASSIST: u32 = 21;
/// `__HYPERVISOR_vcpu_op`.
pub const VCPU_OP: u32 = 24;
/// `__HYPERVISOR_sched_op`.
pub const SCHED_OP: u32 = 29;
/// `__HYPERVISOR_event_channel_op`.
pub const EVENT_CHANNEL_OP: u32 = 32;
/// `__HYPERVISOR_hvm_op`.
pub const HVM_OP: u32 = 34;

/// `CONSOLEIO_write`: write a buffer to Xen's console (the hardware domain
/// only, unless Xen was built to let others).
pub const CONSOLEIO_WRITE: u64 = 0;

/// `VMASST_CMD_enable`.
pub const VMASST_CMD_ENABLE: u64 = 0;
/// `VMASST_TYPE_runstate_update_flag`: Xen sets bit 63 of
/// `state_entry_time` while it updates a runstate area.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u64 = 5;

/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7ff0;
