//! Reading guest-physical memory that someone else wrote (loader, firmware,
//! hypervisor).
//!
//! Parsers in pvops never dereference a physical address themselves: they ask
//! a [`PhysRead`] to copy bytes out. The kernel supplies the implementation
//! (usually a copy through its direct map); host tests supply a fake backed by
//! a byte vector. Copying out first means every value is read exactly once
//! before it is checked (no double fetch).

/// Why a physical read failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhysReadError {
    /// The range is not backed by memory the reader can reach.
    OutOfRange {
        /// First byte asked for.
        paddr: u64,
        /// Number of bytes asked for.
        len: usize,
    },
}

impl core::fmt::Display for PhysReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PhysReadError::OutOfRange { paddr, len } => {
                write!(f, "physical range {paddr:#x}+{len:#x} is not readable")
            }
        }
    }
}

/// Copies bytes out of guest-physical memory.
pub trait PhysRead {
    /// Fills `buf` with the bytes at `paddr..paddr + buf.len()`.
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), PhysReadError>;
}

/// A [`PhysRead`] over a direct map: physical address `p` is visible at
/// virtual address `p + offset` for every `p` below `limit`.
#[derive(Debug, Clone, Copy)]
pub struct DirectMap {
    offset: u64,
    limit: u64,
}

impl DirectMap {
    /// Describes a direct map.
    ///
    /// # Safety
    /// Every physical address below `limit` must be mapped readable at
    /// `paddr + offset` for as long as this value is used, and reading it must
    /// have no side effects (no MMIO below `limit` that reacts to reads).
    pub const unsafe fn new(offset: u64, limit: u64) -> Self {
        Self { offset, limit }
    }
}

impl PhysRead for DirectMap {
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), PhysReadError> {
        let len = buf.len();
        let end = paddr
            .checked_add(len as u64)
            .ok_or(PhysReadError::OutOfRange { paddr, len })?;
        if end > self.limit {
            return Err(PhysReadError::OutOfRange { paddr, len });
        }
        let src = paddr.wrapping_add(self.offset) as *const u8;
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: `new`'s contract says the whole range below `limit` is
            // mapped readable at `paddr + offset`; we checked `end <= limit`.
            // Volatile byte reads keep the compiler from re-reading memory
            // another agent may change.
            *b = unsafe { core::ptr::read_volatile(src.add(i)) };
        }
        Ok(())
    }
}
