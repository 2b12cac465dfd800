//! Writing to the PV console ring (`struct xencons_interface`'s output
//! half): the guest produces at `out_prod`, the console backend consumes
//! at `out_cons`. Both are free-running `u32`s; a byte's slot is its index
//! modulo the ring size, so indices wrap around `u32::MAX` naturally.
//!
//! Both indices are read once per write into locals and only those copies
//! are checked: a backend that moves `out_cons` meanwhile, or writes
//! nonsense there, cannot make this code write outside the ring or
//! believe it has more room than it has.

use crate::abi::console::OUT_SIZE;
use core::fmt;
use core::sync::atomic::{fence, Ordering};

/// The output half of a console ring.
pub trait OutRing {
    /// `out_cons`, read once.
    fn out_cons(&self) -> u32;
    /// `out_prod`, read once.
    fn out_prod(&self) -> u32;
    /// Publishes a new `out_prod`.
    fn set_out_prod(&self, prod: u32);
    /// Stores `byte` in output slot `slot` (below [`OUT_SIZE`]).
    fn put(&self, slot: usize, byte: u8);
}

/// The indices make no sense: more bytes in flight than the ring holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrupt {
    /// `out_prod` as read.
    pub prod: u32,
    /// `out_cons` as read.
    pub cons: u32,
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "console ring indices out of range (prod {:#x}, cons {:#x})",
            self.prod, self.cons
        )
    }
}

/// Copies as much of `bytes` as fits into the ring and publishes it;
/// returns how many bytes went in (0 when the ring is full).
pub fn write(ring: &impl OutRing, bytes: &[u8]) -> Result<usize, Corrupt> {
    let cons = ring.out_cons();
    let prod = ring.out_prod();
    let used = prod.wrapping_sub(cons) as usize;
    if used > OUT_SIZE {
        return Err(Corrupt { prod, cons });
    }
    let n = (OUT_SIZE - used).min(bytes.len());
    for (i, b) in bytes[..n].iter().enumerate() {
        let idx = prod.wrapping_add(i as u32) as usize & (OUT_SIZE - 1);
        ring.put(idx, *b);
    }
    // The bytes must be visible before the index that publishes them.
    fence(Ordering::Release);
    ring.set_out_prod(prod.wrapping_add(n as u32));
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::vec::Vec;

    struct Fake {
        buf: RefCell<[u8; OUT_SIZE]>,
        prod: Cell<u32>,
        cons: Cell<u32>,
        cons_reads: Cell<u32>,
    }

    impl Fake {
        fn at(prod: u32, cons: u32) -> Self {
            Fake {
                buf: RefCell::new([0; OUT_SIZE]),
                prod: Cell::new(prod),
                cons: Cell::new(cons),
                cons_reads: Cell::new(0),
            }
        }
        /// The backend consumes everything produced.
        fn drain(&self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.cons.get() != self.prod.get() {
                out.push(self.buf.borrow()[self.cons.get() as usize & (OUT_SIZE - 1)]);
                self.cons.set(self.cons.get().wrapping_add(1));
            }
            out
        }
    }

    impl OutRing for Fake {
        fn out_cons(&self) -> u32 {
            self.cons_reads.set(self.cons_reads.get() + 1);
            self.cons.get()
        }
        fn out_prod(&self) -> u32 {
            self.prod.get()
        }
        fn set_out_prod(&self, prod: u32) {
            self.prod.set(prod);
        }
        fn put(&self, slot: usize, byte: u8) {
            self.buf.borrow_mut()[slot] = byte;
        }
    }

    #[test]
    fn writes_and_publishes() {
        let r = Fake::at(0, 0);
        assert_eq!(write(&r, b"hello\n"), Ok(6));
        assert_eq!(r.prod.get(), 6);
        assert_eq!(r.drain(), b"hello\n");
        assert_eq!(r.cons_reads.get(), 1, "out_cons read once per write");
    }

    #[test]
    fn wraps_around_the_ring_and_the_index() {
        // Producer just below u32::MAX, 4 bytes in flight.
        let start = u32::MAX - 2;
        let r = Fake::at(start, start - 4);
        r.drain_partial_setup();
        let msg: Vec<u8> = (0..10u8).collect();
        assert_eq!(write(&r, &msg), Ok(10));
        assert_eq!(r.prod.get(), start.wrapping_add(10));
        let got = r.drain();
        assert_eq!(&got[got.len() - 10..], &msg[..]);
    }

    #[test]
    fn full_ring_takes_what_fits() {
        let r = Fake::at(5000, 5000 - (OUT_SIZE as u32 - 3));
        assert_eq!(write(&r, b"abcdef"), Ok(3));
        assert_eq!(write(&r, b"gh"), Ok(0));
        r.drain();
        assert_eq!(write(&r, b"gh"), Ok(2));
    }

    #[test]
    fn nonsense_indices_are_refused() {
        let r = Fake::at(5000, 0);
        assert_eq!(
            write(&r, b"x"),
            Err(Corrupt {
                prod: 5000,
                cons: 0
            })
        );
        // A consumer ahead of the producer looks like ~4 GiB in flight.
        let r = Fake::at(10, 20);
        assert!(write(&r, b"x").is_err());
        assert_eq!(r.prod.get(), 10, "nothing published");
    }

    impl Fake {
        /// Fills the 4 in-flight bytes so `drain` has something to return.
        fn drain_partial_setup(&self) {
            for i in 0..4u32 {
                let idx = self.cons.get().wrapping_add(i) as usize & (OUT_SIZE - 1);
                self.buf.borrow_mut()[idx] = 0xee;
            }
        }
    }
}
