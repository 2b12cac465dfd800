//! Writing to the PV console ring (`struct xencons_interface`'s output
//! half): the guest produces at `out_prod`, the console backend consumes
//! at `out_cons`. Both are free-running `u32`s; a byte's slot is its index
//! modulo the ring size, so indices wrap around `u32::MAX` naturally.
//!
//! Both indices are read once per write into locals and only those copies
//! are checked and used: a backend that moves `out_cons` meanwhile, or
//! writes nonsense to either index, cannot make this code write outside
//! the ring, overwrite bytes it has not consumed, or publish a producer
//! index it did not check. The real page ([`SharedRing`]) is read through
//! the audited accessor [`pvops_core::shmem::ShPtr`]: one volatile copy
//! per index read.

use crate::abi::console::{XenconsInterface, OUT_SIZE};
use core::fmt;
use core::mem::offset_of;
use core::sync::atomic::{fence, Ordering};
use pvops_core::shmem::ShPtr;

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

impl core::error::Error for Corrupt {}

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

/// The output half of a real console ring page, through [`ShPtr`].
#[derive(Debug, Clone, Copy)]
pub struct SharedRing(ShPtr<XenconsInterface>);

impl SharedRing {
    /// The ring in the page at `page`.
    ///
    /// # Safety
    /// `ShPtr::new`'s contract for `page`: mapped, aligned, reached by Rust
    /// code only through `ShPtr` for as long as the value is used.
    pub const unsafe fn new(page: *mut XenconsInterface) -> Self {
        // SAFETY: the caller's contract is `ShPtr::new`'s.
        Self(unsafe { ShPtr::new(page) })
    }

    fn index_word(&self, offset: usize) -> ShPtr<u32> {
        self.0.field::<u32>(offset)
    }
}

impl OutRing for SharedRing {
    fn out_cons(&self) -> u32 {
        self.index_word(offset_of!(XenconsInterface, out_cons))
            .read()
    }
    fn out_prod(&self) -> u32 {
        self.index_word(offset_of!(XenconsInterface, out_prod))
            .read()
    }
    fn set_out_prod(&self, prod: u32) {
        self.index_word(offset_of!(XenconsInterface, out_prod))
            .write(prod)
    }
    fn put(&self, slot: usize, byte: u8) {
        // `write` passes slots below OUT_SIZE; `index` would refuse others.
        if let Some(b) = self
            .0
            .field::<[u8; OUT_SIZE]>(offset_of!(XenconsInterface, out))
            .index(slot)
        {
            b.write(byte);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::boxed::Box;
    use std::vec::Vec;
    use zerocopy::FromZeros;

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

    #[test]
    fn shared_ring_writes_the_shared_layout() {
        let mut page = Box::new(XenconsInterface::new_zeroed());
        page.out_prod = u32::MAX - 1;
        page.out_cons = u32::MAX - 1;
        // SAFETY: the box outlives `r`; the page is only touched through
        // it until its last use.
        let r = unsafe { SharedRing::new(&mut *page) };
        assert_eq!(write(&r, b"xyz"), Ok(3));
        assert_eq!(page.out_prod, 1, "index wrapped past u32::MAX");
        assert_eq!(page.out[OUT_SIZE - 2], b'x');
        assert_eq!(page.out[OUT_SIZE - 1], b'y');
        assert_eq!(page.out[0], b'z');
        assert!(page.input.iter().all(|b| *b == 0), "input ring untouched");
    }

    /// What the racing backend does to an index right after the writer
    /// read it (so a second read of the same index would see the change).
    #[derive(Debug, Clone, Copy)]
    enum Attack {
        /// Consume everything: a re-read of `out_cons` would find a whole
        /// free ring.
        DrainAll,
        /// Move the producer index (a re-read would write and publish at a
        /// place never checked).
        MoveProd(u32),
        /// Make the index just read nonsense (more in flight than the ring
        /// holds).
        Corrupt,
        /// Make the indices look sane (when the first copy was nonsense).
        LookSane,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Which {
        Cons,
        Prod,
    }

    /// The real ring page behind the accessor, and a console backend that
    /// changes each index in the same page right after the writer read it:
    /// a value changed between two reads.
    struct Racing {
        ring: SharedRing,
        page: ShPtr<XenconsInterface>,
        attack: Attack,
        index_reads: Cell<u32>,
        puts: RefCell<Vec<usize>>,
        published: RefCell<Vec<u32>>,
    }

    impl Racing {
        fn attack(&self, which: Which) {
            self.index_reads.set(self.index_reads.get() + 1);
            let cons = self
                .page
                .field::<u32>(offset_of!(XenconsInterface, out_cons));
            let prod = self
                .page
                .field::<u32>(offset_of!(XenconsInterface, out_prod));
            match (self.attack, which) {
                (Attack::DrainAll | Attack::LookSane, Which::Cons) => cons.write(prod.read()),
                (Attack::LookSane, Which::Prod) => prod.write(cons.read()),
                (Attack::MoveProd(p), Which::Prod) => prod.write(p),
                (Attack::Corrupt, Which::Cons) => cons.write(prod.read().wrapping_add(1)),
                (Attack::Corrupt, Which::Prod) => prod.write(cons.read().wrapping_add(0x8000_0000)),
                _ => {}
            }
        }
    }

    impl OutRing for Racing {
        fn out_cons(&self) -> u32 {
            let v = self.ring.out_cons();
            self.attack(Which::Cons);
            v
        }
        fn out_prod(&self) -> u32 {
            let v = self.ring.out_prod();
            self.attack(Which::Prod);
            v
        }
        fn set_out_prod(&self, prod: u32) {
            self.published.borrow_mut().push(prod);
            self.ring.set_out_prod(prod);
        }
        fn put(&self, slot: usize, byte: u8) {
            self.puts.borrow_mut().push(slot);
            self.ring.put(slot, byte);
        }
    }

    const UNCONSUMED: u8 = 0xaa;

    /// A page with `in_flight` unconsumed bytes (marked) before `prod`.
    fn page_at(prod: u32, in_flight: u32) -> Box<XenconsInterface> {
        let mut page = Box::new(XenconsInterface::new_zeroed());
        let cons = prod.wrapping_sub(in_flight);
        page.out_prod = prod;
        page.out_cons = cons;
        for i in 0..in_flight.min(OUT_SIZE as u32) {
            page.out[cons.wrapping_add(i) as usize & (OUT_SIZE - 1)] = UNCONSUMED;
        }
        page
    }

    /// The double-fetch test of the console ring: for every attack, every
    /// starting producer index (including around the u32 wrap) and several
    /// fill levels, what the writer checked is exactly what it used — it
    /// reads each index once, writes only the room the first copies
    /// allowed, at the slots of the first producer copy, publishes that
    /// copy plus the count, and never touches unconsumed bytes; a first
    /// copy that failed the check publishes nothing, whatever the indices
    /// say afterwards.
    #[test]
    fn racing_backend_cannot_make_a_checked_index_differ_from_the_used_one() {
        let msg: Vec<u8> = (0..100u8).collect();
        for attack in [
            Attack::DrainAll,
            Attack::MoveProd(7),
            Attack::MoveProd(u32::MAX),
            Attack::Corrupt,
            Attack::LookSane,
        ] {
            for prod0 in [0u32, 5000, u32::MAX - 1] {
                for in_flight in [0u32, 1, OUT_SIZE as u32 - 3, OUT_SIZE as u32, 5000] {
                    let mut page = page_at(prod0, in_flight);
                    let base: *mut XenconsInterface = &mut *page;
                    // SAFETY: the box outlives both pointers; the page is
                    // only touched through them until their last use.
                    let (ring, shp) = unsafe { (SharedRing::new(base), ShPtr::new(base)) };
                    let r = Racing {
                        ring,
                        page: shp,
                        attack,
                        index_reads: Cell::new(0),
                        puts: RefCell::new(Vec::new()),
                        published: RefCell::new(Vec::new()),
                    };
                    let got = write(&r, &msg);
                    let ctx = std::format!("{attack:?} prod {prod0:#x} in flight {in_flight}");
                    assert_eq!(r.index_reads.get(), 2, "{ctx}: each index read once");
                    if in_flight as usize > OUT_SIZE {
                        assert_eq!(
                            got,
                            Err(Corrupt {
                                prod: prod0,
                                cons: prod0.wrapping_sub(in_flight)
                            }),
                            "{ctx}"
                        );
                        assert!(r.published.borrow().is_empty(), "{ctx}");
                        assert!(r.puts.borrow().is_empty(), "{ctx}");
                        continue;
                    }
                    let room = OUT_SIZE - in_flight as usize;
                    let n = room.min(msg.len());
                    assert_eq!(got, Ok(n), "{ctx}: room from the first copies");
                    assert_eq!(
                        *r.published.borrow(),
                        [prod0.wrapping_add(n as u32)],
                        "{ctx}: published the checked producer index plus n"
                    );
                    let expect: Vec<usize> = (0..n)
                        .map(|i| prod0.wrapping_add(i as u32) as usize & (OUT_SIZE - 1))
                        .collect();
                    assert_eq!(*r.puts.borrow(), expect, "{ctx}");
                    drop(r);
                    // The unconsumed bytes are all still there.
                    let cons0 = prod0.wrapping_sub(in_flight);
                    for i in 0..in_flight {
                        let slot = cons0.wrapping_add(i) as usize & (OUT_SIZE - 1);
                        assert_eq!(page.out[slot], UNCONSUMED, "{ctx}: slot {slot}");
                    }
                    for (i, b) in msg[..n].iter().enumerate() {
                        assert_eq!(page.out[expect[i]], *b, "{ctx}");
                    }
                }
            }
        }
    }

    /// The same backend defeats a writer that fetches the producer index
    /// again when it stores the bytes (the test has teeth).
    #[test]
    fn racing_backend_catches_a_writer_that_fetches_twice() {
        fn double_fetch(ring: &impl OutRing, bytes: &[u8]) -> usize {
            let used = ring.out_prod().wrapping_sub(ring.out_cons()) as usize;
            if used > OUT_SIZE {
                return 0;
            }
            let n = (OUT_SIZE - used).min(bytes.len());
            for (i, b) in bytes[..n].iter().enumerate() {
                let prod = ring.out_prod(); // the second fetch
                ring.put(prod.wrapping_add(i as u32) as usize & (OUT_SIZE - 1), *b);
            }
            n
        }
        let in_flight = OUT_SIZE as u32 - 3;
        let mut page = page_at(5000, in_flight);
        let base: *mut XenconsInterface = &mut *page;
        // SAFETY: as above.
        let (ring, shp) = unsafe { (SharedRing::new(base), ShPtr::new(base)) };
        let r = Racing {
            ring,
            page: shp,
            attack: Attack::MoveProd(5000 - 100),
            index_reads: Cell::new(0),
            puts: RefCell::new(Vec::new()),
            published: RefCell::new(Vec::new()),
        };
        assert_eq!(double_fetch(&r, b"abc"), 3);
        drop(r);
        let cons0 = 5000u32.wrapping_sub(in_flight);
        let clobbered = (0..in_flight)
            .filter(|i| page.out[cons0.wrapping_add(*i) as usize & (OUT_SIZE - 1)] != UNCONSUMED)
            .count();
        assert!(
            clobbered > 0,
            "the re-read index overwrote unconsumed bytes"
        );
    }
}
