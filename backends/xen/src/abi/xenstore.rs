//! The xenstore ring (`io/xs_wire.h`): a page shared with the xenstore
//! daemon, requests one way, replies and watch events the other, each
//! message a 16-byte header then `len` payload bytes.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes of each ring.
pub const RING_SIZE: usize = 1024;
/// Longest payload a message may carry (`XENSTORE_PAYLOAD_MAX`).
pub const PAYLOAD_MAX: usize = 4096;

/// `XS_READ`: read a node's value.
pub const XS_READ: u32 = 2;
/// `XS_WRITE`: write a node (`path\0value`).
pub const XS_WRITE: u32 = 11;
/// `XS_WATCH_EVENT`: an asynchronous watch event.
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR`: the reply to a refused request (an errno name, NUL
/// terminated).
pub const XS_ERROR: u32 = 16;

/// `struct xsd_sockmsg`, the header of every message.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct XsdSockmsg {
    /// `XS_*`.
    pub ty: u32,
    /// Echoed in the reply.
    pub req_id: u32,
    /// Transaction (0: none).
    pub tx_id: u32,
    /// Payload bytes that follow.
    pub len: u32,
}
const_assert_eq!(core::mem::size_of::<XsdSockmsg>(), 16);

/// `struct xenstore_domain_interface`. Indices are free-running `u32`s; a
/// slot is `index & (RING_SIZE - 1)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenstoreInterface {
    /// Requests to the daemon.
    pub req: [u8; RING_SIZE],
    /// Replies and watch events.
    pub rsp: [u8; RING_SIZE],
    /// Request consumer index (daemon).
    pub req_cons: u32,
    /// Request producer index (guest).
    pub req_prod: u32,
    /// Reply consumer index (guest).
    pub rsp_cons: u32,
    /// Reply producer index (daemon).
    pub rsp_prod: u32,
    /// Features the daemon offers.
    pub server_features: u32,
    /// Connection state.
    pub connection: u32,
    /// Error state.
    pub error: u32,
}
const_assert_eq!(core::mem::offset_of!(XenstoreInterface, rsp), 1024);
const_assert_eq!(core::mem::offset_of!(XenstoreInterface, req_cons), 2048);
const_assert_eq!(core::mem::offset_of!(XenstoreInterface, rsp_prod), 2060);
const_assert_eq!(core::mem::size_of::<XenstoreInterface>(), 2076);
