//! The 2-level event-channel scan (`pvops_xen::evtchn::demux`) over the
//! real shared-info accessor (`SharedEvents` on a heap page) with pending
//! and mask bitmaps, selector words and port ownership all chosen by the
//! fuzzer, and "Xen" raising more events right after each bitmap read.
//!
//! Asserts: every port handled is in range, was pending and unmasked in
//! the copy the scan read, belongs to this vCPU, and had its pending bit
//! cleared by this scan before it was handled; the count returned is the
//! number handled; at most 8 rounds; ports pending, unmasked and ours in a
//! word the first selector names are all handled; and afterwards the
//! pending bitmap is exactly what Xen raised minus what was handled (no
//! stray clears, masked and foreign ports left pending).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_core::shmem::ShPtr;
use pvops_fuzz::{Bytes, Heap};
use pvops_xen::abi::evtchn::{Port, BITS_PER_WORD, WORDS};
use pvops_xen::abi::shared::SharedInfo;
use pvops_xen::evtchn::{demux, locate, EventBitmaps, SharedEvents, UpcallFlags};
use std::cell::{Cell, RefCell};
use std::mem::offset_of;
use std::sync::atomic::Ordering;
use zerocopy::FromZeros;

/// The real bitmaps, plus Xen raising ports after each pending-word read.
struct Racing<'a> {
    events: SharedEvents,
    /// The same page's pending words, for Xen's side.
    pending_words: ShPtr<[u64; WORDS]>,
    script: RefCell<Bytes<'a>>,
    /// What the pending bitmap should be: raises applied, handled ports
    /// cleared.
    shadow: RefCell<[u64; WORDS]>,
    /// The copies the scan read, per word (last read).
    pending_copy: RefCell<[Option<u64>; WORDS]>,
    mask_copy: RefCell<[Option<u64>; WORDS]>,
    cleared: RefCell<Vec<Port>>,
}

impl EventBitmaps for Racing<'_> {
    fn pending(&self, w: usize) -> u64 {
        let v = self.events.pending(w);
        self.pending_copy.borrow_mut()[w] = Some(v);
        // Xen raises a port of this word (or none).
        let mut s = self.script.borrow_mut();
        let b = s.u8();
        if b & 0x80 != 0 {
            let port = (w * BITS_PER_WORD) as Port + Port::from(b & 63);
            self.raise(port);
        }
        v
    }
    fn mask(&self, w: usize) -> u64 {
        let v = self.events.mask(w);
        self.mask_copy.borrow_mut()[w] = Some(v);
        v
    }
    fn test_and_clear_pending(&self, port: Port) -> bool {
        let was = self.events.test_and_clear_pending(port);
        if was {
            let (w, bit) = locate(port).unwrap();
            self.shadow.borrow_mut()[w] &= !bit;
            self.cleared.borrow_mut().push(port);
        }
        was
    }
}

impl Racing<'_> {
    /// Xen sets `port` pending (with a locked OR, as Xen does).
    fn raise(&self, port: Port) {
        let (w, bit) = locate(port).unwrap();
        self.shadow.borrow_mut()[w] |= bit;
        self.pending_words
            .index(w)
            .unwrap()
            .fetch_or(bit, Ordering::SeqCst);
    }
}

struct Vcpu<'a> {
    script: RefCell<Bytes<'a>>,
    taken: RefCell<Vec<u64>>,
    clears: Cell<u32>,
}

impl UpcallFlags for Vcpu<'_> {
    fn clear_upcall_pending(&self) {
        self.clears.set(self.clears.get() + 1);
    }
    fn take_selector(&self) -> u64 {
        let mut s = self.script.borrow_mut();
        // Mostly a few words, sometimes everything, 0 ends the scan.
        let sel = match s.u8() % 4 {
            0 => 0,
            1 => !0,
            _ => s.u64(),
        };
        self.taken.borrow_mut().push(sel);
        sel
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let mut page = SharedInfo::new_zeroed();
    // Sparse bitmaps: a few fuzzer-chosen words, the rest zero.
    for _ in 0..(input.u8() % 16) {
        let w = usize::from(input.u8()) % WORDS;
        page.evtchn_pending[w] = input.u64();
        page.evtchn_mask[w] = input.u64();
    }
    let owner_mod = u32::from(input.u8() % 4) + 1;
    let owner_rem = u32::from(input.u8()) % owner_mod;
    let vcpu_bytes = input.u64().to_le_bytes();
    let initial_pending = page.evtchn_pending;
    let initial_mask = page.evtchn_mask;
    let mem = Heap::new(page);
    // SAFETY: the heap page outlives `events` and is only touched through
    // ShPtrs meanwhile.
    let events = unsafe { SharedEvents::new(mem.raw()) };
    let mine = |port: Port| port % owner_mod == owner_rem;
    let racing = Racing {
        events,
        pending_words: mem.ptr().field(offset_of!(SharedInfo, evtchn_pending)),
        script: RefCell::new(input),
        shadow: RefCell::new(initial_pending),
        pending_copy: RefCell::new([None; WORDS]),
        mask_copy: RefCell::new([None; WORDS]),
        cleared: RefCell::new(Vec::new()),
    };
    let vcpu = Vcpu {
        script: RefCell::new(Bytes(&vcpu_bytes)),
        taken: RefCell::new(Vec::new()),
        clears: Cell::new(0),
    };
    let mut handled: Vec<Port> = Vec::new();
    let n = demux(&racing, &vcpu, mine, |port| {
        assert!((port as usize) < WORDS * BITS_PER_WORD);
        let (w, bit) = locate(port).unwrap();
        assert!(mine(port), "port {port} is another vCPU's");
        let p = racing.pending_copy.borrow()[w].expect("word read");
        let m = racing.mask_copy.borrow()[w].expect("mask read");
        assert!(
            p & bit != 0 && m & bit == 0,
            "port {port} not pending+unmasked in the copy"
        );
        assert_eq!(
            racing.cleared.borrow().last(),
            Some(&port),
            "cleared just before"
        );
        handled.push(port);
    });
    assert_eq!(n, handled.len());
    let taken = vcpu.taken.borrow();
    assert!(taken.len() <= 8 && vcpu.clears.get() as usize == taken.len());
    // Everything pending, unmasked and ours in the words the first
    // selector named was handled.
    if let Some(&sel) = taken.first() {
        for w in 0..WORDS {
            if sel & (1 << w) == 0 {
                continue;
            }
            let ready = initial_pending[w] & !initial_mask[w];
            for b in 0..BITS_PER_WORD {
                let port = (w * BITS_PER_WORD + b) as Port;
                if ready & (1 << b) != 0 && mine(port) {
                    assert!(handled.contains(&port), "port {port} left unhandled");
                }
            }
        }
    }
    // The pending bitmap is what was raised minus what was handled.
    let after = mem.ptr().read().evtchn_pending;
    assert_eq!(after, *racing.shadow.borrow());
    drop(racing);
    drop(mem);
});
