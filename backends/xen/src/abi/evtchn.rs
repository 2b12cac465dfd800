//! `__HYPERVISOR_event_channel_op` (`event_channel.h`): the operations
//! this backend uses and their argument structures, plus the 2-level
//! ABI's geometry.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `EVTCHNOP_bind_virq`.
pub const EVTCHNOP_BIND_VIRQ: u64 = 1;
/// `EVTCHNOP_close`.
pub const EVTCHNOP_CLOSE: u64 = 3;
/// `EVTCHNOP_send`.
pub const EVTCHNOP_SEND: u64 = 4;
/// `EVTCHNOP_bind_ipi`.
pub const EVTCHNOP_BIND_IPI: u64 = 7;
/// `EVTCHNOP_unmask`.
pub const EVTCHNOP_UNMASK: u64 = 9;

/// `VIRQ_TIMER`: per-vCPU timer (singleshot and periodic).
pub const VIRQ_TIMER: u32 = 0;

/// Bits in one word of the 2-level bitmaps (`xen_ulong_t` on x86-64).
pub const BITS_PER_WORD: usize = 64;
/// Words in `evtchn_pending` / `evtchn_mask` (one selector bit each).
pub const WORDS: usize = 64;
/// Ports the 2-level ABI can name (`EVTCHN_2L_NR_CHANNELS`).
pub const NR_CHANNELS: usize = BITS_PER_WORD * WORDS;

/// An event-channel port.
pub type Port = u32;

/// `struct evtchn_bind_virq`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BindVirq {
    /// IN: `VIRQ_*`.
    pub virq: u32,
    /// IN: the vCPU to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: Port,
}
const_assert_eq!(core::mem::size_of::<BindVirq>(), 12);

/// `struct evtchn_bind_ipi`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct BindIpi {
    /// IN: the vCPU to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: Port,
}
const_assert_eq!(core::mem::size_of::<BindIpi>(), 8);

/// `struct evtchn_send`, `struct evtchn_unmask`, `struct evtchn_close`:
/// just a port.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct PortArg {
    /// IN: the port.
    pub port: Port,
}
const_assert_eq!(core::mem::size_of::<PortArg>(), 4);
