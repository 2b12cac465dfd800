//! `__HYPERVISOR_hvm_op` (`hvm/hvm_op.h`) and HVM parameters
//! (`hvm/params.h`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `HVMOP_set_param`.
pub const HVMOP_SET_PARAM: u64 = 0;
/// `HVMOP_get_param`.
pub const HVMOP_GET_PARAM: u64 = 1;
/// `HVMOP_flush_tlbs`.
pub const HVMOP_FLUSH_TLBS: u64 = 5;
/// `HVMOP_set_evtchn_upcall_vector`.
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u64 = 23;

/// `HVM_PARAM_CALLBACK_IRQ`: how event upcalls are delivered.
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// `HVM_PARAM_CONSOLE_PFN`: the PV console ring's frame (domU).
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`: the PV console's event channel (domU).
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;

/// Shift of the type in an `HVM_PARAM_CALLBACK_IRQ` value.
pub const CALLBACK_TYPE_SHIFT: u32 = 56;
/// `HVM_PARAM_CALLBACK_TYPE_VECTOR`: bits 7:0 are an IDT vector Xen
/// injects directly (no local APIC, no EOI).
pub const CALLBACK_TYPE_VECTOR: u64 = 2;

/// The `HVM_PARAM_CALLBACK_IRQ` value that delivers upcalls on `vector`.
pub const fn callback_via_vector(vector: u8) -> u64 {
    CALLBACK_TYPE_VECTOR << CALLBACK_TYPE_SHIFT | vector as u64
}

/// `struct xen_hvm_param`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct HvmParam {
    /// IN: the domain ([`super::nr::DOMID_SELF`]).
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// IN: `HVM_PARAM_*`.
    pub index: u32,
    /// IN (set) or OUT (get).
    pub value: u64,
}
const_assert_eq!(core::mem::size_of::<HvmParam>(), 16);
const_assert_eq!(core::mem::offset_of!(HvmParam, index), 4);
const_assert_eq!(core::mem::offset_of!(HvmParam, value), 8);

/// `struct xen_hvm_evtchn_upcall_vector`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct EvtchnUpcallVector {
    /// The vCPU.
    pub vcpu: u32,
    /// The local-APIC vector its upcalls arrive on (EOI needed).
    pub vector: u8,
    /// Padding to the C size.
    pub pad: [u8; 3],
}
const_assert_eq!(core::mem::size_of::<EvtchnUpcallVector>(), 8);

/// `HVM_PARAM_STORE_PFN`: the xenstore ring's frame (domU).
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN`: the xenstore ring's event channel (domU).
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
