//! The Xen PV console ring writer (`pvops_xen::ring::write` over the real
//! page accessor `SharedRing`), with producer and consumer indices the
//! fuzzer chooses and a fuzzer-driven backend that rewrites either index
//! right after the writer reads it, and consumes (or scribbles) between
//! writes, driven by a retry loop like the console's.
//!
//! Asserts, for every call: each index is read once; a refusal happens
//! exactly when the first copies put more than the ring's size in flight,
//! and then nothing is written or published; otherwise the count is what
//! the first copies allowed, the bytes land at the first producer copy's
//! slots (always inside the ring), the published index is that copy plus
//! the count, and no slot outside them changes (unconsumed bytes are never
//! overwritten). The loop always ends and never writes more than asked.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_core::shmem::ShPtr;
use pvops_fuzz::{Bytes, Heap};
use pvops_xen::abi::console::{XenconsInterface, OUT_SIZE};
use pvops_xen::ring::{write, Corrupt, OutRing, SharedRing};
use std::cell::{Cell, RefCell};
use std::mem::offset_of;
use zerocopy::FromZeros;

struct Racing<'a> {
    ring: SharedRing,
    page: ShPtr<XenconsInterface>,
    script: RefCell<Bytes<'a>>,
    cons_reads: Cell<u32>,
    prod_reads: Cell<u32>,
    first_cons: Cell<u32>,
    first_prod: Cell<u32>,
    puts: RefCell<Vec<usize>>,
    published: RefCell<Vec<u32>>,
}

impl Racing<'_> {
    fn cons(&self) -> ShPtr<u32> {
        self.page.field(offset_of!(XenconsInterface, out_cons))
    }
    fn prod(&self) -> ShPtr<u32> {
        self.page.field(offset_of!(XenconsInterface, out_prod))
    }
    /// The backend's move right after an index read.
    fn race(&self, word: ShPtr<u32>) {
        let mut s = self.script.borrow_mut();
        match s.u8() % 4 {
            0 => {}
            1 => word.write(s.u32()),
            2 => word.write(word.read().wrapping_add(u32::from(s.u8()))),
            _ => word.write(word.read().wrapping_sub(u32::from(s.u8()))),
        }
    }
}

impl OutRing for Racing<'_> {
    fn out_cons(&self) -> u32 {
        let v = self.ring.out_cons();
        self.cons_reads.set(self.cons_reads.get() + 1);
        self.first_cons.set(v);
        self.race(self.cons());
        v
    }
    fn out_prod(&self) -> u32 {
        let v = self.ring.out_prod();
        self.prod_reads.set(self.prod_reads.get() + 1);
        self.first_prod.set(v);
        self.race(self.prod());
        v
    }
    fn set_out_prod(&self, prod: u32) {
        self.published.borrow_mut().push(prod);
        self.ring.set_out_prod(prod);
    }
    fn put(&self, slot: usize, byte: u8) {
        assert!(slot < OUT_SIZE, "slot {slot} outside the ring");
        self.puts.borrow_mut().push(slot);
        self.ring.put(slot, byte);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mut page = XenconsInterface::new_zeroed();
    page.out_prod = input.u32();
    page.out_cons = input.u32();
    let len = usize::from(input.u8()) * 32 + usize::from(input.u8() % 32);
    let msg: Vec<u8> = (0..len).map(|i| i as u8 | 1).collect();
    let mem = Heap::new(page);
    // SAFETY: the heap page outlives the ring and is only touched through
    // ShPtrs meanwhile.
    let ring = unsafe { SharedRing::new(mem.raw()) };
    let r = Racing {
        ring,
        page: mem.ptr(),
        script: RefCell::new(input),
        cons_reads: Cell::new(0),
        prod_reads: Cell::new(0),
        first_cons: Cell::new(0),
        first_prod: Cell::new(0),
        puts: RefCell::new(Vec::new()),
        published: RefCell::new(Vec::new()),
    };
    let out = r
        .page
        .field::<[u8; OUT_SIZE]>(offset_of!(XenconsInterface, out));

    // The console's loop: write what fits, retry a bounded number of times
    // when the ring is full, stop for good on nonsense indices.
    const FULL_RETRIES: u32 = 8;
    let mut rest = &msg[..];
    let mut retries = 0;
    let mut calls = 0usize;
    let mut total = 0usize;
    while !rest.is_empty() {
        calls += 1;
        assert!(
            calls <= msg.len() + FULL_RETRIES as usize + 1,
            "the loop does not end"
        );
        r.cons_reads.set(0);
        r.prod_reads.set(0);
        r.puts.borrow_mut().clear();
        r.published.borrow_mut().clear();
        let before = out.read();
        let got = write(&r, rest);
        assert_eq!(
            (r.cons_reads.get(), r.prod_reads.get()),
            (1, 1),
            "each index read once"
        );
        let (prod, cons) = (r.first_prod.get(), r.first_cons.get());
        let used = prod.wrapping_sub(cons) as usize;
        let after = out.read();
        let puts = r.puts.borrow().clone();
        match got {
            Err(c) => {
                assert_eq!(c, Corrupt { prod, cons });
                assert!(used > OUT_SIZE);
                assert!(puts.is_empty() && r.published.borrow().is_empty());
                assert_eq!(before, after);
                break;
            }
            Ok(n) => {
                assert!(used <= OUT_SIZE);
                assert_eq!(
                    n,
                    (OUT_SIZE - used).min(rest.len()),
                    "room from the first copies"
                );
                assert_eq!(*r.published.borrow(), [prod.wrapping_add(n as u32)]);
                let expect: Vec<usize> = (0..n)
                    .map(|i| prod.wrapping_add(i as u32) as usize & (OUT_SIZE - 1))
                    .collect();
                assert_eq!(puts, expect);
                // Exactly those slots changed, to the bytes given.
                let mut want = before;
                for (i, slot) in expect.iter().enumerate() {
                    want[*slot] = rest[i];
                }
                assert!(want == after, "a slot outside the written ones changed");
                total += n;
                rest = &rest[n..];
                if n == 0 {
                    retries += 1;
                    if retries > FULL_RETRIES {
                        break;
                    }
                } else {
                    retries = 0;
                }
            }
        }
        // Between writes the backend consumes some (or scribbles).
        let mut s = r.script.borrow_mut();
        let cons = r.cons();
        match s.u8() % 3 {
            0 => cons.write(cons.read().wrapping_add(u32::from(s.u8()) * 16)),
            1 => cons.write(r.prod().read()),
            _ => cons.write(s.u32()),
        }
    }
    assert!(total <= msg.len());
});
