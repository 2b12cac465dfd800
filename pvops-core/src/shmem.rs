//! The one way pvops touches memory that another agent writes while the
//! kernel runs: a hypervisor's shared pages (pvclock records, KVM steal
//! time, Xen's shared info and `vcpu_info`, runstate areas) and rings
//! shared with a backend (the Xen PV console).
//!
//! Such memory can change between any two instructions. Code that reads a
//! value twice — once to check it, once to use it — can be made to use a
//! value that was never checked (a *double fetch*; Xen's XSA-155 is a
//! family of such bugs in ring consumers). [`ShPtr`] makes the safe way the
//! only way:
//!
//! - **No references.** A `ShPtr<T>` is a raw pointer with rules; it never
//!   hands out `&T` into shared memory, so the compiler can never assume
//!   the memory is stable and re-read (or cache) it behind the code's back.
//! - **Copy once.** [`ShPtr::read`] makes one volatile copy of the whole
//!   `T` into a local and returns it. Every check is made on that copy, and
//!   the same copy is what gets used. `T: FromBytes` means any bytes are a
//!   valid `T`, so even a copy torn by a concurrent writer is a value (the
//!   version protocol of [`crate::abi::pvclock::read_versioned`] throws
//!   such copies away); a torn copy can be wrong, never undefined.
//! - **Checked projections.** [`ShPtr::field`] and [`ShPtr::index`] narrow
//!   a pointer to a part of the record with bounds and alignment checked
//!   (constant-folded for constant offsets), without reading anything.
//! - **Atomic words, where the ABI needs them.** Some words are modified by
//!   the guest *and* the other agent at once: the PV EOI word (test and
//!   clear), the steal-time `preempted` byte (compare-exchange), Xen's
//!   event-channel pending and selector words (clear a bit, swap to 0).
//!   Those protocols are read-modify-writes and must stay one atomic
//!   instruction: a read followed by a separate write would lose the other
//!   agent's update made in between. [`ShPtr::load`], `store`, `swap`,
//!   `fetch_and`, `fetch_or` and `compare_exchange` on `ShPtr<u8|u32|u64>`
//!   do that; each returns the old value as a local copy, so the same rule
//!   (check and use one copy) holds. A word that Rust code modifies
//!   atomically on one CPU is read with `load`, never `read`, on the others
//!   (a volatile read racing an atomic write is a data race in Rust's
//!   memory model, even though x86 would be fine).
//!
//! The hypervisor is outside the Rust abstract machine: its writes are
//! like those of a device, which is what volatile accesses are for (as
//! Linux's `READ_ONCE`). Aligned loads of up to 8 bytes are single
//! instructions on x86-64, so an index or a version word is never torn;
//! larger records are protected by their version protocol.
//!
//! Host tests build `ShPtr`s over ordinary heap memory; code that must be
//! tested against a writer that changes memory *between* two accesses
//! (the double-fetch tests) sits behind a small trait (`Versioned`,
//! `OutRing`, `EventBitmaps`) whose real implementation is a `ShPtr`.

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use zerocopy::{FromBytes, IntoBytes};

/// A pointer to a `T` that another agent may write at any time. See the
/// [module documentation](self).
pub struct ShPtr<T> {
    ptr: *mut T,
}

impl<T> Clone for ShPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ShPtr<T> {}

impl<T> fmt::Debug for ShPtr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShPtr({:p})", self.ptr)
    }
}

impl<T> ShPtr<T> {
    /// Wraps a pointer to shared memory.
    ///
    /// # Safety
    /// For as long as this value, or any `ShPtr` projected from it with
    /// [`field`](Self::field) or [`index`](Self::index), is used:
    /// - `ptr` is aligned for `T` and valid for reads and writes of
    ///   `size_of::<T>()` bytes (mapped RAM; reading it has no side
    ///   effects);
    /// - no Rust reference to any part of it is alive, and Rust code reads
    ///   and writes it only through `ShPtr`s (or, for the words the
    ///   atomic methods cover, atomics of the same size);
    /// - a word that Rust code modifies with the atomic methods is read with
    ///   [`load`](ShPtr::<u32>::load), never [`read`](Self::read), while
    ///   another CPU may be modifying it.
    #[inline]
    pub const unsafe fn new(ptr: *mut T) -> Self {
        Self { ptr }
    }

    /// The address (for handing to the other agent, or for printing).
    #[inline]
    pub const fn as_ptr(self) -> *mut T {
        self.ptr
    }

    /// The `U` at byte `offset` inside the `T`, usually
    /// `p.field::<u32>(core::mem::offset_of!(T, version))`. Nothing is
    /// read.
    ///
    /// # Panics
    /// If the `U` would not lie inside the `T`, or would not be aligned
    /// (`offset` not a multiple of `U`'s alignment, or `U` aligned more
    /// strictly than `T`). With a constant `offset` the checks are made at
    /// compile time and cost nothing.
    #[inline]
    pub fn field<U>(self, offset: usize) -> ShPtr<U> {
        assert!(
            offset
                .checked_add(core::mem::size_of::<U>())
                .is_some_and(|end| end <= core::mem::size_of::<T>()),
            "ShPtr::field: out of bounds"
        );
        assert!(
            offset.is_multiple_of(core::mem::align_of::<U>())
                && core::mem::align_of::<U>() <= core::mem::align_of::<T>(),
            "ShPtr::field: misaligned"
        );
        // The new pointer is inside the same allocation (checked above) and
        // aligned for U (T's alignment is at least U's, and the offset is a
        // multiple of it), so `new`'s contract carries over to it.
        ShPtr {
            ptr: self.ptr.cast::<u8>().wrapping_add(offset).cast::<U>(),
        }
    }
}

impl<T, const N: usize> ShPtr<[T; N]> {
    /// Element `i`, or `None` past the end. Nothing is read.
    #[inline]
    pub fn index(self, i: usize) -> Option<ShPtr<T>> {
        (i < N).then(|| ShPtr {
            // Inside the array (i < N), aligned as every element is.
            ptr: self.ptr.cast::<T>().wrapping_add(i),
        })
    }
}

impl<T: FromBytes + Copy> ShPtr<T> {
    /// One volatile copy of the whole `T` into a local: the only value the
    /// caller may check and use. Whatever the other agent writes meanwhile,
    /// the result is a valid `T` (any bytes are); it may mix old and new
    /// bytes when `T` is larger than one aligned machine word.
    #[inline]
    pub fn read(self) -> T {
        // SAFETY: `new`'s contract (inherited by projections): aligned and
        // valid for reads, no Rust reference aliases it, and no Rust code
        // writes it atomically meanwhile. `T: FromBytes` makes any bytes,
        // even a torn mix, a valid value.
        unsafe { self.ptr.read_volatile() }
    }
}

impl<T: IntoBytes + Copy> ShPtr<T> {
    /// One volatile store of `value` (for memory the guest owns in the
    /// protocol, such as a ring's producer index or its slots).
    #[inline]
    pub fn write(self, value: T) {
        // SAFETY: `new`'s contract: aligned and valid for writes, no Rust
        // reference aliases it. The other agent reads bytes, and any
        // bytes of its ABI types are acceptable to it (FromBytes types all).
        unsafe { self.ptr.write_volatile(value) }
    }
}

macro_rules! atomic_word {
    ($int:ty, $atomic:ty) => {
        impl ShPtr<$int> {
            #[inline]
            fn atomic(&self) -> &$atomic {
                // SAFETY: `new`'s contract: the word is aligned (the
                // atomic type has the integer's size and alignment on
                // x86-64) and valid, and concurrent Rust accesses to it are
                // atomic. The reference lives only for one operation
                // inside this module and is never handed out.
                unsafe { <$atomic>::from_ptr(self.ptr) }
            }

            /// One atomic load: the copy to check and use, for a word that
            /// Rust code also modifies atomically.
            #[inline]
            pub fn load(self, order: Ordering) -> $int {
                self.atomic().load(order)
            }

            /// One atomic store.
            #[inline]
            pub fn store(self, value: $int, order: Ordering) {
                self.atomic().store(value, order)
            }

            /// Atomically replaces the word; returns the old value.
            #[inline]
            pub fn swap(self, value: $int, order: Ordering) -> $int {
                self.atomic().swap(value, order)
            }

            /// Atomic AND (clears the bits not in `bits`); returns the old
            /// value.
            #[inline]
            pub fn fetch_and(self, bits: $int, order: Ordering) -> $int {
                self.atomic().fetch_and(bits, order)
            }

            /// Atomic OR; returns the old value.
            #[inline]
            pub fn fetch_or(self, bits: $int, order: Ordering) -> $int {
                self.atomic().fetch_or(bits, order)
            }

            /// Atomic compare-exchange: stores `new` if the word is
            /// `current`; returns the value found either way.
            #[inline]
            pub fn compare_exchange(
                self,
                current: $int,
                new: $int,
                success: Ordering,
                failure: Ordering,
            ) -> Result<$int, $int> {
                self.atomic()
                    .compare_exchange(current, new, success, failure)
            }
        }
    };
}

atomic_word!(u8, AtomicU8);
atomic_word!(u32, AtomicU32);
atomic_word!(u64, AtomicU64);

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::offset_of;
    use std::boxed::Box;
    use zerocopy::{Immutable, KnownLayout};

    #[repr(C)]
    #[derive(
        Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
    )]
    struct Rec {
        version: u32,
        flag: u8,
        pad: [u8; 3],
        value: u64,
        words: [u64; 4],
    }

    /// A heap record reached only through raw pointers while it lives
    /// (moving a `Box` would retag it under Miri's aliasing model).
    struct Mem(*mut Rec);

    impl Mem {
        fn new(r: Rec) -> Self {
            Mem(Box::into_raw(Box::new(r)))
        }
        fn ptr(&self) -> ShPtr<Rec> {
            // SAFETY: the allocation lives until `drop`, and the tests
            // touch it only through ShPtrs.
            unsafe { ShPtr::new(self.0) }
        }
    }

    impl Drop for Mem {
        fn drop(&mut self) {
            // SAFETY: `self.0` came from `Box::into_raw` and is freed once.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }

    #[test]
    fn read_copies_and_fields_project() {
        let m = Mem::new(Rec {
            version: 4,
            flag: 1,
            value: 99,
            words: [1, 2, 3, 4],
            ..Default::default()
        });
        let p = m.ptr();
        let copy = p.read();
        assert_eq!(copy.value, 99);
        assert_eq!(p.field::<u32>(offset_of!(Rec, version)).read(), 4);
        assert_eq!(p.field::<u8>(offset_of!(Rec, flag)).read(), 1);
        let words = p.field::<[u64; 4]>(offset_of!(Rec, words));
        assert_eq!(words.index(3).unwrap().read(), 4);
        assert!(words.index(4).is_none());
        // A write through the pointer does not change the copy already made.
        p.field::<u64>(offset_of!(Rec, value)).write(7);
        assert_eq!(copy.value, 99);
        assert_eq!(p.read().value, 7);
    }

    #[test]
    fn atomic_words() {
        let m = Mem::new(Rec::default());
        let p = m.ptr();
        let w = p.field::<u64>(offset_of!(Rec, value));
        w.store(0b1010, Ordering::Relaxed);
        assert_eq!(w.fetch_and(!0b10, Ordering::AcqRel), 0b1010);
        assert_eq!(w.fetch_or(1, Ordering::AcqRel), 0b1000);
        assert_eq!(w.swap(0, Ordering::AcqRel), 0b1001);
        assert_eq!(w.load(Ordering::Acquire), 0);
        let f = p.field::<u8>(offset_of!(Rec, flag));
        assert_eq!(
            f.compare_exchange(0, 3, Ordering::AcqRel, Ordering::Relaxed),
            Ok(0)
        );
        assert_eq!(
            f.compare_exchange(0, 5, Ordering::AcqRel, Ordering::Relaxed),
            Err(3)
        );
        let v = p.field::<u32>(0);
        v.store(9, Ordering::Release);
        assert_eq!(v.load(Ordering::Acquire), 9);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn field_past_the_end_panics() {
        let m = Mem::new(Rec::default());
        let p = m.ptr();
        let _ = p.field::<u64>(core::mem::size_of::<Rec>() - 4);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn misaligned_field_panics() {
        let m = Mem::new(Rec::default());
        let p = m.ptr();
        let _ = p.field::<u32>(2);
    }

    #[test]
    #[should_panic(expected = "misaligned")]
    fn field_aligned_above_its_container_panics() {
        let mut bytes = Box::new([0u8; 16]);
        // SAFETY: the box outlives the pointer.
        let p = unsafe { ShPtr::new(&mut *bytes as *mut [u8; 16]) };
        let _ = p.field::<u64>(8);
    }
}
