//! [`WriteOnce`]: a static written once at boot and only read afterwards
//! (the installed ops table, a backend's saved copy of native's table),
//! without a heap or a lock. One home for the compare-exchange, the
//! publication order and the `unsafe` they need.

use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const BUSY: u8 = 1;
const READY: u8 = 2;

/// A value stored at most once, then shared read-only for the life of the
/// program.
pub struct WriteOnce<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: `value` is written only by the one caller that moved `state`
// from EMPTY to BUSY, and read only after READY was stored with Release
// ordering (loaded with Acquire); afterwards it is never written again,
// so sharing it shares `&T` (hence `T: Sync`), and the value may have
// been made on another thread (`T: Send`).
unsafe impl<T: Send + Sync> Sync for WriteOnce<T> {}

/// Why [`WriteOnce::set`] stored nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOnceError {
    /// A value is stored already; it stays.
    Full,
    /// Another caller is storing one right now.
    Busy,
}

impl fmt::Display for WriteOnceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WriteOnceError::Full => "already written",
            WriteOnceError::Busy => "being written by another caller",
        })
    }
}

impl core::error::Error for WriteOnceError {}

impl<T> WriteOnce<T> {
    /// Empty.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores `value` if nothing is stored yet and returns it, now shared.
    pub fn set(&self, value: T) -> Result<&T, WriteOnceError> {
        match self
            .state
            .compare_exchange(EMPTY, BUSY, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(BUSY) => return Err(WriteOnceError::Busy),
            Err(_) => return Err(WriteOnceError::Full),
        }
        // SAFETY: winning EMPTY->BUSY makes this the only writer, and no
        // reader looks at `value` before READY is stored below.
        let stored: &T = unsafe { (*self.value.get()).write(value) };
        self.state.store(READY, Ordering::Release);
        Ok(stored)
    }

    /// The stored value, if one is.
    #[inline]
    pub fn get(&self) -> Option<&T> {
        (self.state.load(Ordering::Acquire) == READY).then(|| {
            // SAFETY: READY is stored only after `value` was fully
            // written, and it is never written again.
            unsafe { (*self.value.get()).assume_init_ref() }
        })
    }
}

impl<T> Default for WriteOnce<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for WriteOnce<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Some(v) => f.debug_tuple("WriteOnce").field(v).finish(),
            None => f.write_str("WriteOnce(<empty>)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_write_wins() {
        let w = WriteOnce::new();
        assert_eq!(w.get(), None);
        assert_eq!(w.set(3u32), Ok(&3));
        assert_eq!(w.set(4), Err(WriteOnceError::Full));
        assert_eq!(w.get(), Some(&3));
        assert_eq!(std::format!("{w:?}"), "WriteOnce(3)");
    }

    #[test]
    fn one_writer_among_threads() {
        static W: WriteOnce<usize> = WriteOnce::new();
        let won: usize = std::thread::scope(|s| {
            let hs: std::vec::Vec<_> = (0..8)
                .map(|i| s.spawn(move || W.set(i).is_ok() as usize))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(won, 1);
        assert!(W.get().is_some());
    }
}
