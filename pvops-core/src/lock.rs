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

use crate::cpu::current_cpu;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const FREE: u8 = 0;
const LOCKED: u8 = 1;
/// Locked, and someone may be sleeping in [`wait`] for it.
const CONTENDED: u8 = 2;
/// Spins before a waiter asks the platform to sleep.
const SPIN_BEFORE_WAIT: u32 = 128;

/// A spinlock that spins briefly, then sleeps through [`wait`] and is woken
/// by [`kick`] — under a hypervisor, a waiter stops burning the vCPU the
/// lock holder may need; on bare hardware wait/kick are a pause and nothing,
/// so it behaves as a plain test-and-set lock.
///
/// Waiters are tracked by platform CPU number; CPUs numbered 64 and above
/// fall back to pure spinning (they are never put to sleep, so never lost).
#[derive(Debug)]
pub struct PvSpinLock {
    state: AtomicU8,
    waiters: AtomicU64,
    slow_waits: AtomicU32,
}

impl PvSpinLock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
            waiters: AtomicU64::new(0),
            slow_waits: AtomicU32::new(0),
        }
    }

    /// Takes the lock, spinning and then sleeping until it is free.
    pub fn lock(&self) {
        loop {
            for _ in 0..SPIN_BEFORE_WAIT {
                if self
                    .state
                    .compare_exchange_weak(FREE, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return;
                }
                core::hint::spin_loop();
            }
            let me = current_cpu().0;
            if me >= 64 {
                continue;
            }
            let bit = 1u64 << me;
            self.waiters.fetch_or(bit, Ordering::SeqCst);
            // From here on the holder's unlock sees our bit and kicks us.
            match self.state.load(Ordering::SeqCst) {
                // Free again: take it as contended, since others may have
                // registered too and must be kicked at unlock.
                FREE if self
                    .state
                    .compare_exchange(FREE, CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok() =>
                {
                    self.waiters.fetch_and(!bit, Ordering::SeqCst);
                    return;
                }
                LOCKED => {
                    let _ = self.state.compare_exchange(
                        LOCKED,
                        CONTENDED,
                        Ordering::SeqCst,
                        Ordering::Relaxed,
                    );
                }
                _ => {}
            }
            self.slow_waits.fetch_add(1, Ordering::Relaxed);
            wait(&self.state, CONTENDED);
            self.waiters.fetch_and(!bit, Ordering::SeqCst);
            // Acquire as contended so the next unlock still kicks the rest.
            if self
                .state
                .compare_exchange(FREE, CONTENDED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Takes the lock if it is free.
    pub fn try_lock(&self) -> bool {
        self.state
            .compare_exchange(FREE, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Releases the lock, kicking sleepers if there may be any.
    ///
    /// # Safety
    /// The caller must hold the lock.
    pub unsafe fn unlock(&self) {
        if self.state.swap(FREE, Ordering::SeqCst) == CONTENDED {
            let mut w = self.waiters.load(Ordering::SeqCst);
            while w != 0 {
                let cpu = w.trailing_zeros();
                w &= w - 1;
                kick(CpuId(cpu));
            }
        }
    }

    /// How many times a waiter went to sleep in [`wait`] (for tests and
    /// statistics).
    pub fn slow_waits(&self) -> u32 {
        self.slow_waits.load(Ordering::Relaxed)
    }
}

impl Default for PvSpinLock {
    fn default() -> Self {
        Self::new()
    }
}

/// Data behind a [`PvSpinLock`].
#[derive(Debug, Default)]
pub struct SpinLock<T> {
    lock: PvSpinLock,
    data: UnsafeCell<T>,
}

// SAFETY: the lock hands out at most one guard at a time, so `T` is only
// ever reached from one CPU at once; `T: Send` is enough, as for a mutex.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    /// A lock around `value`.
    pub const fn new(value: T) -> Self {
        Self {
            lock: PvSpinLock::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// Takes the lock.
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        self.lock.lock();
        SpinLockGuard { lock: self }
    }

    /// The raw lock (for its statistics).
    pub fn raw(&self) -> &PvSpinLock {
        &self.lock
    }
}

/// Access to the data of a locked [`SpinLock`]; unlocks when dropped.
#[derive(Debug)]
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard exists only while the lock is held, and `&mut
        // self` makes this the only reference through it.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for SpinLockGuard<'_, T> {
    fn drop(&mut self) {
        // SAFETY: the guard holds the lock.
        unsafe { self.lock.lock.unlock() }
    }
}
