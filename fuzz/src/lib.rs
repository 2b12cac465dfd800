//! Shared pieces of the fuzz targets: a fake physical memory built from the
//! fuzzer's bytes, and a fake CPUID.

use pvops_core::cpu::CpuidResult;
use pvops_core::detect::CpuidSource;
use pvops_core::phys::{PhysRead, PhysReadError};

/// Physical memory that holds `bytes` at `base` and nothing else.
pub struct Window<'a> {
    /// First physical address backed.
    pub base: u64,
    /// What is there.
    pub bytes: &'a [u8],
}

impl PhysRead for Window<'_> {
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), PhysReadError> {
        let len = buf.len();
        let err = PhysReadError::OutOfRange { paddr, len };
        let off = paddr.checked_sub(self.base).ok_or(err)?;
        let off = usize::try_from(off).map_err(|_| err)?;
        let end = off.checked_add(len).ok_or(err)?;
        let src = self.bytes.get(off..end).ok_or(err)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Splits the fuzzer's input into a leading u64 (little-endian, zero if
/// short) and the rest.
pub fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let mut word = [0u8; 8];
    let n = data.len().min(8);
    word[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(word), &data[n..])
}

/// A CPUID whose answers come from the fuzzer: leaf `l` gets the 16 bytes
/// at an offset derived from `l`, so scans see arbitrary, lying leaves.
pub struct FuzzCpuid<'a>(pub &'a [u8]);

impl CpuidSource for FuzzCpuid<'_> {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        if self.0.is_empty() {
            return CpuidResult::default();
        }
        let slot = (leaf.wrapping_mul(31) ^ subleaf ^ (leaf >> 8)) as usize;
        let word = |i: usize| {
            let mut b = [0u8; 4];
            for (j, x) in b.iter_mut().enumerate() {
                *x = self.0[(slot * 16 + i * 4 + j) % self.0.len()];
            }
            u32::from_le_bytes(b)
        };
        CpuidResult {
            eax: word(0),
            ebx: word(1),
            ecx: word(2),
            edx: word(3),
        }
    }
}

/// Reads the fuzzer's input front to back; past the end every read is 0,
/// so a target never has to care how long the input is.
pub struct Bytes<'a>(pub &'a [u8]);

impl Bytes<'_> {
    /// The next byte (0 when exhausted).
    pub fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.u8();
        }
    }

    /// Whether anything is left.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A heap value standing for shared memory: reached only through its raw
/// pointer while it lives, as `pvops_core::shmem::ShPtr` requires.
pub struct Heap<T>(*mut T);

impl<T> Heap<T> {
    /// Moves `value` to the heap.
    pub fn new(value: T) -> Self {
        Heap(Box::into_raw(Box::new(value)))
    }

    /// The accessor over it.
    pub fn ptr(&self) -> pvops_core::shmem::ShPtr<T> {
        // SAFETY: the allocation lives until `drop` and is only touched
        // through ShPtrs (and the raw pointer) meanwhile.
        unsafe { pvops_core::shmem::ShPtr::new(self.0) }
    }

    /// The raw pointer.
    pub fn raw(&self) -> *mut T {
        self.0
    }
}

impl<T> Drop for Heap<T> {
    fn drop(&mut self) {
        // SAFETY: from `Box::into_raw`, freed once.
        drop(unsafe { Box::from_raw(self.0) });
    }
}
