//! `__HYPERVISOR_sched_op` (`sched.h`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u64 = 0;
/// `SCHEDOP_block`.
pub const SCHEDOP_BLOCK: u64 = 1;
/// `SCHEDOP_shutdown`.
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// `SCHEDOP_poll`.
pub const SCHEDOP_POLL: u64 = 3;

/// `SHUTDOWN_poweroff`.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_reboot`: for the hardware domain Xen resets the machine
/// (QEMU's `-no-reboot` then exits).
pub const SHUTDOWN_REBOOT: u32 = 1;
/// `SHUTDOWN_suspend`: the toolstack saves the domain; the call returns
/// 0 in the restored domain, 1 when the suspend was cancelled.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// `SHUTDOWN_crash`.
pub const SHUTDOWN_CRASH: u32 = 3;

/// `struct sched_shutdown`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Shutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
const_assert_eq!(core::mem::size_of::<Shutdown>(), 4);

/// `struct sched_poll`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct Poll {
    /// Guest address of an array of ports.
    pub ports: u64,
    /// How many (at most 128).
    pub nr_ports: u32,
    /// Padding.
    pub pad: u32,
    /// Absolute system time to give up at; 0 = never.
    pub timeout: u64,
}
const_assert_eq!(core::mem::size_of::<Poll>(), 24);
const_assert_eq!(core::mem::offset_of!(Poll, nr_ports), 8);
const_assert_eq!(core::mem::offset_of!(Poll, timeout), 16);
