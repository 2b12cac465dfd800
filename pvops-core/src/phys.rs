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

impl core::error::Error for PhysReadError {}

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

/// Host-test support: guest memory as a few disjoint regions, for parsers
/// that read through [`PhysRead`] (the start infos here, ACPI in the
/// native backend). Built for this crate's tests and, with the
/// `test-support` feature, for other crates' tests.
#[cfg(any(test, feature = "test-support"))]
pub mod fake {
    use super::{PhysRead, PhysReadError};
    use std::vec;
    use std::vec::Vec;

    /// Memory as disjoint `(base, bytes)` regions; a read must fall inside
    /// one region, as a read of unmapped memory would fail.
    #[derive(Debug, Default, Clone)]
    pub struct FakeMem {
        /// The regions.
        pub regions: Vec<(u64, Vec<u8>)>,
    }

    impl FakeMem {
        /// No memory at all.
        pub fn new() -> Self {
            Self::default()
        }

        /// Adds `len` zeroed bytes at `base`.
        pub fn region(mut self, base: u64, len: usize) -> Self {
            self.regions.push((base, vec![0; len]));
            self
        }

        /// Writes `data` at `addr`, which must lie inside one region.
        ///
        /// # Panics
        /// When it does not: a test that writes outside its memory is wrong.
        pub fn write(&mut self, addr: u64, data: &[u8]) {
            for (base, bytes) in &mut self.regions {
                if addr >= *base && addr + data.len() as u64 <= *base + bytes.len() as u64 {
                    let off = (addr - *base) as usize;
                    bytes[off..off + data.len()].copy_from_slice(data);
                    return;
                }
            }
            panic!("test wrote outside its regions at {addr:#x}");
        }
    }

    /// A reader over a [`FakeMem`] that logs every range it is asked for
    /// (`[start, end)`), for tests that nothing is read twice.
    #[derive(Debug)]
    pub struct Logged<'a> {
        /// The memory read.
        pub mem: &'a FakeMem,
        /// The ranges, in order.
        pub log: std::cell::RefCell<Vec<(u64, u64)>>,
    }

    impl PhysRead for Logged<'_> {
        fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), PhysReadError> {
            self.log
                .borrow_mut()
                .push((paddr, paddr + buf.len() as u64));
            self.mem.read_phys(paddr, buf)
        }
    }

    /// xorshift64*: a fixed-seed generator, good enough to pick bytes to
    /// mutate in tests that must never panic on bad input.
    #[derive(Debug, Clone)]
    pub struct Rng(pub u64);

    impl Rng {
        /// The next 64 random bits.
        pub fn next_u64(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// A number below `n` (not 0).
        pub fn below(&mut self, n: usize) -> usize {
            (self.next_u64() % n as u64) as usize
        }
    }

    impl PhysRead for FakeMem {
        fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), PhysReadError> {
            let len = buf.len();
            let err = PhysReadError::OutOfRange { paddr, len };
            let end = paddr.checked_add(len as u64).ok_or(err)?;
            for (base, bytes) in &self.regions {
                if paddr >= *base && end <= *base + bytes.len() as u64 {
                    let off = (paddr - *base) as usize;
                    buf.copy_from_slice(&bytes[off..off + len]);
                    return Ok(());
                }
            }
            Err(err)
        }
    }
}
