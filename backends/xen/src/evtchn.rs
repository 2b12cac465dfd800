//! 2-level event channels: the pending and mask bitmaps in shared info,
//! the per-vCPU selector word, and the scan that turns them into ports.
//!
//! Xen, on an event for port `p` bound to vCPU `v`: sets `pending[p]`; if
//! it was clear and `mask[p]` is clear, sets bit `p / 64` of `v`'s
//! `evtchn_pending_sel` and, if that was clear, `v`'s
//! `evtchn_upcall_pending`, and sends `v` an upcall. The guest clears
//! `evtchn_upcall_pending` first, swaps the selector to 0, and for each
//! word it named handles the ports that are pending, unmasked and its
//! own, clearing each pending bit before handling it.
//!
//! The scan ([`demux`]) is written against two small traits so host tests
//! can drive it with plain arrays; [`SharedEvents`] and [`VcpuEvents`]
//! are the real shared memory.

use crate::abi::evtchn::{Port, BITS_PER_WORD, WORDS};
use crate::abi::shared::{SharedInfo, VcpuInfo};
use core::mem::offset_of;
use core::sync::atomic::Ordering;
use pvops_core::shmem::ShPtr;

/// The domain-wide bitmaps.
pub trait EventBitmaps {
    /// Word `w` of the pending bitmap (one read).
    fn pending(&self, w: usize) -> u64;
    /// Word `w` of the mask bitmap (one read).
    fn mask(&self, w: usize) -> u64;
    /// Atomically clears `port`'s pending bit; whether it was set.
    fn test_and_clear_pending(&self, port: Port) -> bool;
}

/// One vCPU's upcall flag and selector.
pub trait UpcallFlags {
    /// Clears `evtchn_upcall_pending`.
    fn clear_upcall_pending(&self);
    /// Atomically swaps `evtchn_pending_sel` to 0 and returns the old value.
    fn take_selector(&self) -> u64;
}

/// Scans after an upcall: handles every pending, unmasked port for which
/// `mine` is true, passing each to `handle` once after clearing its
/// pending bit. Repeats while Xen keeps setting the selector, at most
/// `MAX_ROUNDS` times (a port that fires continuously cannot keep the
/// vCPU here forever; Xen re-raises the upcall for what is left). Returns
/// how many ports were handled.
pub fn demux(
    bitmaps: &impl EventBitmaps,
    vcpu: &impl UpcallFlags,
    mine: impl Fn(Port) -> bool,
    mut handle: impl FnMut(Port),
) -> usize {
    const MAX_ROUNDS: usize = 8;
    let mut handled = 0;
    for _ in 0..MAX_ROUNDS {
        vcpu.clear_upcall_pending();
        let mut sel = vcpu.take_selector();
        if sel == 0 {
            break;
        }
        while sel != 0 {
            let w = sel.trailing_zeros() as usize;
            sel &= sel - 1;
            if w >= WORDS {
                continue;
            }
            // One read of each word; only these copies are looked at.
            let mut bits = bitmaps.pending(w) & !bitmaps.mask(w);
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let port = (w * BITS_PER_WORD + b) as Port;
                if mine(port) && bitmaps.test_and_clear_pending(port) {
                    handle(port);
                    handled += 1;
                }
            }
        }
    }
    handled
}

/// `(word, bit mask)` of `port` in the bitmaps, or `None` beyond them.
pub fn locate(port: Port) -> Option<(usize, u64)> {
    let p = port as usize;
    (p < WORDS * BITS_PER_WORD).then(|| (p / BITS_PER_WORD, 1u64 << (p % BITS_PER_WORD)))
}

/// The bitmaps in Xen's shared-info page.
///
/// Every word is reached through [`ShPtr`] with atomic accesses: Xen sets
/// pending bits with locked instructions while the guest clears them (one
/// `fetch_and` per port, whose old value says whether this CPU is the one
/// that handles it: two CPUs, or the guest and Xen, can never both win),
/// and other vCPUs modify the same words at the same time, so a plain
/// volatile read would race them. Each word is loaded once per scan and
/// only that copy is looked at.
#[derive(Debug, Clone, Copy)]
pub struct SharedEvents(ShPtr<SharedInfo>);

impl SharedEvents {
    /// The bitmaps of the shared info at `si`.
    ///
    /// # Safety
    /// `si` must point to the mapped shared-info page for as long as the
    /// value is used, reached by Rust code only through `ShPtr`/atomics.
    pub const unsafe fn new(si: *mut SharedInfo) -> Self {
        // SAFETY: the caller's contract is `ShPtr::new`'s.
        Self(unsafe { ShPtr::new(si) })
    }

    fn pending_word(&self, w: usize) -> Option<ShPtr<u64>> {
        self.0
            .field::<[u64; WORDS]>(offset_of!(SharedInfo, evtchn_pending))
            .index(w)
    }

    fn mask_word(&self, w: usize) -> Option<ShPtr<u64>> {
        self.0
            .field::<[u64; WORDS]>(offset_of!(SharedInfo, evtchn_mask))
            .index(w)
    }

    /// Masks every port (the state this backend starts from).
    pub fn mask_all(&self) {
        for w in 0..WORDS {
            if let Some(m) = self.mask_word(w) {
                m.store(!0, Ordering::SeqCst);
            }
        }
    }

    /// Masks `port` (no upcall on its events; polling still sees them).
    pub fn mask_port(&self, port: Port) {
        if let Some((w, bit)) = locate(port) {
            if let Some(m) = self.mask_word(w) {
                m.fetch_or(bit, Ordering::SeqCst);
            }
        }
    }

    /// Clears `port`'s pending bit.
    pub fn clear_pending(&self, port: Port) {
        if let Some((w, bit)) = locate(port) {
            if let Some(p) = self.pending_word(w) {
                p.fetch_and(!bit, Ordering::SeqCst);
            }
        }
    }

    /// Whether `port` is pending.
    pub fn is_pending(&self, port: Port) -> bool {
        locate(port).is_some_and(|(w, bit)| self.pending(w) & bit != 0)
    }
}

impl EventBitmaps for SharedEvents {
    fn pending(&self, w: usize) -> u64 {
        self.pending_word(w).map_or(0, |p| p.load(Ordering::SeqCst))
    }

    fn mask(&self, w: usize) -> u64 {
        self.mask_word(w).map_or(!0, |m| m.load(Ordering::SeqCst))
    }

    fn test_and_clear_pending(&self, port: Port) -> bool {
        match locate(port).and_then(|(w, bit)| Some((self.pending_word(w)?, bit))) {
            Some((p, bit)) => p.fetch_and(!bit, Ordering::SeqCst) & bit != 0,
            None => false,
        }
    }
}

/// The upcall flag and selector of one `vcpu_info`. Both are changed by
/// Xen and the guest at once (Xen sets, the guest clears/takes), so both
/// are accessed atomically through [`ShPtr`]: a store of 0 for the flag, a
/// swap for the selector whose old value is the one copy the scan uses.
#[derive(Debug, Clone, Copy)]
pub struct VcpuEvents(ShPtr<VcpuInfo>);

impl VcpuEvents {
    /// The flags of the `vcpu_info` at `vi`.
    ///
    /// # Safety
    /// `vi` must point to a `vcpu_info` Xen uses (registered, or a legacy
    /// slot of mapped shared info) for as long as the value is used,
    /// reached by Rust code only through `ShPtr`/atomics.
    pub const unsafe fn new(vi: *mut VcpuInfo) -> Self {
        // SAFETY: the caller's contract is `ShPtr::new`'s.
        Self(unsafe { ShPtr::new(vi) })
    }
}

impl UpcallFlags for VcpuEvents {
    fn clear_upcall_pending(&self) {
        self.0
            .field::<u8>(offset_of!(VcpuInfo, evtchn_upcall_pending))
            .store(0, Ordering::SeqCst);
    }

    fn take_selector(&self) -> u64 {
        self.0
            .field::<u64>(offset_of!(VcpuInfo, evtchn_pending_sel))
            .swap(0, Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::vec::Vec;

    /// Plain bitmaps plus a selector that a test can refill between
    /// rounds (as Xen would).
    struct Fake {
        pending: RefCell<[u64; WORDS]>,
        mask: [u64; WORDS],
        sels: RefCell<Vec<u64>>,
        upcall_cleared: Cell<u32>,
        pending_reads: Cell<u32>,
    }

    impl Fake {
        fn new(ports: &[Port], masked: &[Port], sels: &[u64]) -> Self {
            let mut pending = [0u64; WORDS];
            for p in ports {
                let (w, b) = locate(*p).unwrap();
                pending[w] |= b;
            }
            let mut mask = [0u64; WORDS];
            for p in masked {
                let (w, b) = locate(*p).unwrap();
                mask[w] |= b;
            }
            Fake {
                pending: RefCell::new(pending),
                mask,
                sels: RefCell::new(sels.iter().rev().copied().collect()),
                upcall_cleared: Cell::new(0),
                pending_reads: Cell::new(0),
            }
        }
    }

    impl EventBitmaps for Fake {
        fn pending(&self, w: usize) -> u64 {
            self.pending_reads.set(self.pending_reads.get() + 1);
            self.pending.borrow()[w]
        }
        fn mask(&self, w: usize) -> u64 {
            self.mask[w]
        }
        fn test_and_clear_pending(&self, port: Port) -> bool {
            let (w, b) = locate(port).unwrap();
            let mut p = self.pending.borrow_mut();
            let was = p[w] & b != 0;
            p[w] &= !b;
            was
        }
    }

    impl UpcallFlags for Fake {
        fn clear_upcall_pending(&self) {
            self.upcall_cleared.set(self.upcall_cleared.get() + 1);
        }
        fn take_selector(&self) -> u64 {
            self.sels.borrow_mut().pop().unwrap_or(0)
        }
    }

    fn run(f: &Fake, mine: impl Fn(Port) -> bool) -> Vec<Port> {
        let mut got = Vec::new();
        demux(f, f, mine, |p| got.push(p));
        got
    }

    #[test]
    fn walks_selected_words_in_port_order() {
        let f = Fake::new(&[3, 1, 64, 130, 4095], &[], &[0b1 | 0b10 | 0b100 | 1 << 63]);
        assert_eq!(run(&f, |_| true), [1, 3, 64, 130, 4095]);
        // Handled ports are no longer pending.
        assert!(f.pending.borrow().iter().all(|w| *w == 0));
        // Upcall flag cleared before each selector read (2 rounds).
        assert_eq!(f.upcall_cleared.get(), 2);
    }

    #[test]
    fn masked_ports_stay_pending() {
        let f = Fake::new(&[5, 6], &[6], &[1]);
        assert_eq!(run(&f, |_| true), [5]);
        assert_eq!(f.pending.borrow()[0], 1 << 6);
    }

    #[test]
    fn other_vcpus_ports_are_left_alone() {
        let f = Fake::new(&[2, 9, 10], &[], &[1]);
        assert_eq!(run(&f, |p| p != 9), [2, 10]);
        assert_eq!(f.pending.borrow()[0], 1 << 9);
    }

    #[test]
    fn words_not_in_the_selector_are_not_read() {
        let f = Fake::new(&[70], &[], &[1]);
        assert!(run(&f, |_| true).is_empty());
        assert_eq!(f.pending_reads.get(), 1);
        assert_eq!(f.pending.borrow()[1], 1 << 6);
    }

    #[test]
    fn later_rounds_pick_up_new_selector_bits() {
        let f = Fake::new(&[1, 65], &[], &[1, 2]);
        assert_eq!(run(&f, |_| true), [1, 65]);
    }

    #[test]
    fn a_selector_that_never_empties_is_bounded() {
        // Xen "keeps setting" the selector with nothing pending: at most 8
        // rounds, then back to the caller.
        let f = Fake::new(&[], &[], &[1; 100]);
        assert!(run(&f, |_| true).is_empty());
        assert_eq!(f.upcall_cleared.get(), 8);
    }

    #[test]
    fn port_locations() {
        assert_eq!(locate(0), Some((0, 1)));
        assert_eq!(locate(65), Some((1, 2)));
        assert_eq!(locate(4095), Some((63, 1 << 63)));
        assert_eq!(locate(4096), None);
    }

    #[test]
    fn shared_memory_accessors() {
        // A heap "shared info" page with the real accessors.
        let mut page = std::boxed::Box::new([0u64; 512]);
        let si = page.as_mut_ptr() as *mut SharedInfo;
        // SAFETY: the box outlives `ev`, is 4 KiB and 8-byte aligned, as
        // SharedInfo's fields need.
        let ev = unsafe { SharedEvents::new(si) };
        ev.mask_all();
        assert_eq!(ev.mask(63), !0);
        // SAFETY: as above.
        unsafe { (*si).evtchn_pending[0] = 0b1010 };
        assert!(ev.is_pending(1));
        assert!(ev.test_and_clear_pending(1));
        assert!(!ev.test_and_clear_pending(1));
        ev.clear_pending(3);
        assert_eq!(ev.pending(0), 0);
        assert_eq!(ev.mask(64), !0, "out-of-range words read as masked");
        assert!(!ev.test_and_clear_pending(5000));
        let vi = page.as_mut_ptr() as *mut VcpuInfo;
        // SAFETY: the first 64 bytes of the box serve as a vcpu_info.
        let v = unsafe { VcpuEvents::new(vi) };
        // SAFETY: as above.
        unsafe {
            (*vi).evtchn_upcall_pending = 1;
            (*vi).evtchn_pending_sel = 0x11;
        }
        v.clear_upcall_pending();
        assert_eq!(v.take_selector(), 0x11);
        assert_eq!(v.take_selector(), 0);
        // SAFETY: as above.
        assert_eq!(unsafe { (*vi).evtchn_upcall_pending }, 0);
    }
}
