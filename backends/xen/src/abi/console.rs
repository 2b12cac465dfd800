//! The PV console ring (`io/console.h`): a page shared with the console
//! backend, found through `HVM_PARAM_CONSOLE_PFN` and signalled through the
//! port in `HVM_PARAM_CONSOLE_EVTCHN`.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Bytes of the input (backend to guest) ring.
pub const IN_SIZE: usize = 1024;
/// Bytes of the output (guest to backend) ring.
pub const OUT_SIZE: usize = 2048;

/// `struct xencons_interface`. Indices are free-running `u32`s; a slot is
/// `index & (size - 1)`.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct XenconsInterface {
    /// Input ring.
    pub input: [u8; IN_SIZE],
    /// Output ring.
    pub out: [u8; OUT_SIZE],
    /// Input consumer index (guest).
    pub in_cons: u32,
    /// Input producer index (backend).
    pub in_prod: u32,
    /// Output consumer index (backend).
    pub out_cons: u32,
    /// Output producer index (guest).
    pub out_prod: u32,
}
const_assert_eq!(core::mem::offset_of!(XenconsInterface, out), 1024);
const_assert_eq!(core::mem::offset_of!(XenconsInterface, in_cons), 3072);
const_assert_eq!(core::mem::offset_of!(XenconsInterface, out_cons), 3080);
const_assert_eq!(core::mem::offset_of!(XenconsInterface, out_prod), 3084);
const_assert_eq!(core::mem::size_of::<XenconsInterface>(), 3088);
