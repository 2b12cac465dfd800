//! Lock operations: the wait/kick pair paravirtual spinlocks are built on.
//!
//! A waiter that has spun long enough calls [`wait`] with the byte it is
//! watching and the value that means "keep waiting"; the CPU releasing the
//! lock calls [`kick`] on the waiter. Natively both are cheap (a pause and
//! nothing); under a hypervisor the waiter sleeps in the host instead of
//! burning a vCPU the lock holder may need.

use crate::cpu::CpuId;
use crate::table::ops;
use core::sync::atomic::AtomicU8;

/// The lock operations a backend provides.
pub trait LockOps {
    /// Waits while `byte` still holds `expected`. May return early (spurious
    /// wake-ups are allowed); callers re-check and call again.
    fn wait(byte: &AtomicU8, expected: u8);
    /// Wakes `cpu` if it is in [`LockOps::wait`].
    fn kick(cpu: CpuId);
}

/// The lock group of the ops table.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct LockOpsTable {
    pub wait: fn(&AtomicU8, u8),
    pub kick: fn(CpuId),
}

impl LockOpsTable {
    /// The table that forwards every op to `T`.
    pub const fn of<T: LockOps>() -> Self {
        Self {
            wait: T::wait,
            kick: T::kick,
        }
    }
}

impl core::fmt::Debug for LockOpsTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("LockOpsTable { .. }")
    }
}

/// Waits while `byte` holds `expected` (may return early).
#[inline]
pub fn wait(byte: &AtomicU8, expected: u8) {
    (ops().lock.wait)(byte, expected)
}

/// Wakes `cpu` from [`wait`].
#[inline]
pub fn kick(cpu: CpuId) {
    (ops().lock.kick)(cpu)
}
