//! The reference TSC page (`hv-ref-tsc`): the partition's reference time
//! computed from the TSC with the scale and offset the hypervisor keeps in
//! a page, so `sched_clock` costs no exit. The page is hypervisor-written
//! data: [`reference_time`] is its parser (pure, fuzzed), and it is only
//! read through [`ShPtr`] copies.
//!
//! The TLFS protocol: read the sequence, the scale and offset, the TSC,
//! and the sequence again; equal and non-zero means the values belong
//! together; 0 means the page is not valid now, and the reference counter
//! MSR (an exit) must be read instead. A page that is 0 when it is
//! registered gives [`HvError::RefTscInvalid`] and the clock stays what it
//! was (kvmclock or native); one that turns 0 later makes each read use
//! the MSR until it is valid again.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use pvops_core::shmem::ShPtr;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::abi::{self, msr};
use crate::hypercall::{area_paddr, refuse, HvError, Hypervisor, Real};

/// The head of [`abi::RefTscPage`] (what a read copies; the rest of the
/// page is reserved).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RefTscHead {
    /// See [`abi::RefTscPage::sequence`].
    pub sequence: u32,
    /// Reserved.
    pub reserved1: u32,
    /// See [`abi::RefTscPage::scale`].
    pub scale: u64,
    /// See [`abi::RefTscPage::offset`].
    pub offset: i64,
}

static_assertions::const_assert_eq!(core::mem::size_of::<RefTscHead>(), 24);
static_assertions::const_assert_eq!(
    core::mem::offset_of!(RefTscHead, offset),
    core::mem::offset_of!(abi::RefTscPage, offset)
);

/// Reference time (100 ns units) at `tsc` from one consistent copy of the
/// page head; `None` when the page says it is invalid (sequence 0).
/// The product is taken in 128 bits, the sum wraps as the hypervisor's does.
pub fn reference_time(head: &RefTscHead, tsc: u64) -> Option<u64> {
    if head.sequence == 0 {
        return None;
    }
    let scaled = ((u128::from(tsc) * u128::from(head.scale)) >> 64) as u64;
    Some(scaled.wrapping_add(head.offset as u64))
}

/// The page the hypervisor writes.
#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);

// SAFETY: only the hypervisor writes it; Rust reads it through ShPtr
// copies (volatile), never through a reference.
unsafe impl Sync for Page {}

static PAGE: Page = Page(UnsafeCell::new([0; 4096]));

fn head() -> ShPtr<RefTscHead> {
    // SAFETY: PAGE is a page-aligned static of 4096 bytes, at least the
    // head's size and alignment; nothing in Rust forms a reference to its
    // contents (it is only read through this ShPtr).
    unsafe { ShPtr::new(PAGE.0.get().cast::<RefTscHead>()) }
}

/// How many times a read retries while the hypervisor updates the page.
const MAX_TRIES: u32 = 64;

/// Reads the page as the TLFS says, with `tsc` as the clock: `None` if it
/// is invalid or never settles within [`MAX_TRIES`].
pub(crate) fn read_with(page: ShPtr<RefTscHead>, mut tsc: impl FnMut() -> u64) -> Option<u64> {
    let seq = page.field::<u32>(core::mem::offset_of!(RefTscHead, sequence));
    for _ in 0..MAX_TRIES {
        let copy = page.read();
        core::sync::atomic::fence(Ordering::Acquire);
        let now = tsc();
        core::sync::atomic::fence(Ordering::Acquire);
        if seq.read() == copy.sequence {
            return reference_time(&copy, now);
        }
        core::hint::spin_loop();
    }
    None
}

/// `lfence; rdtsc`.
#[inline]
fn rdtsc_ordered() -> u64 {
    // SAFETY: lfence and rdtsc only order loads and read the TSC.
    unsafe {
        core::arch::x86_64::_mm_lfence();
        core::arch::x86_64::_rdtsc()
    }
}

/// Registers the page and checks it is valid.
pub fn setup<H: Hypervisor + ?Sized>(h: &H) -> Result<(), HvError> {
    let pa = area_paddr(h, &PAGE, msr::REFERENCE_TSC)?;
    refuse(h, crate::fault_points::REF_TSC, msr::REFERENCE_TSC)?;
    // SAFETY: REFERENCE_TSC's privilege bit was checked; PAGE is a static
    // the host may write for ever.
    unsafe { h.write_msr(msr::REFERENCE_TSC, pa | abi::PAGE_ENABLE) };
    if h.fail(crate::fault_points::REF_TSC_INVALID) || head().read().sequence == 0 {
        // SAFETY: as above; 0 withdraws the page.
        unsafe { h.write_msr(msr::REFERENCE_TSC, 0) };
        return Err(HvError::RefTscInvalid);
    }
    Ok(())
}

/// 1 when the reference counter MSR may be read (the fallback).
static HAVE_MSR: AtomicU8 = AtomicU8::new(0);
/// 1 when the page is registered and valid.
static HAVE_PAGE: AtomicU8 = AtomicU8::new(0);
/// The highest value `sched_clock` returned, so a switch between the page
/// and the MSR never goes back.
static LAST: AtomicU64 = AtomicU64::new(0);

/// Records which sources exist (at init).
pub(crate) fn set_sources(page: bool, msr: bool) {
    HAVE_PAGE.store(page.into(), Ordering::Relaxed);
    HAVE_MSR.store(msr.into(), Ordering::Relaxed);
}

/// The partition reference time in 100 ns units: the page, else the MSR
/// (an exit), else `None`.
pub fn reference_100ns() -> Option<u64> {
    if HAVE_PAGE.load(Ordering::Relaxed) != 0 {
        if let Some(t) = read_with(head(), rdtsc_ordered) {
            return Some(t);
        }
    }
    if HAVE_MSR.load(Ordering::Relaxed) != 0 {
        // SAFETY: TIME_REF_COUNT's privilege bit was seen at init.
        return Some(unsafe { Real.read_msr(msr::TIME_REF_COUNT) });
    }
    None
}

/// The `time.sched_clock` op: reference time in nanoseconds, kept
/// monotonic across a fallback to the MSR.
pub fn sched_clock() -> u64 {
    let now = reference_100ns().unwrap_or(0).saturating_mul(100);
    let last = LAST.fetch_max(now, Ordering::Relaxed);
    now.max(last)
}

/// `sched_clock` behind the C ABI, for patched call sites.
pub extern "C" fn sched_clock_c() -> u64 {
    sched_clock()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::boxed::Box;

    fn head_of(sequence: u32, scale: u64, offset: i64) -> RefTscHead {
        RefTscHead {
            sequence,
            reserved1: 0,
            scale,
            offset,
        }
    }

    #[test]
    fn formula() {
        // scale 2^63: half the TSC; offset added after.
        let h = head_of(1, 1 << 63, 10);
        assert_eq!(reference_time(&h, 1000), Some(510));
        assert_eq!(reference_time(&head_of(0, 1 << 63, 0), 1000), None);
        // A negative offset and a large TSC do not overflow.
        let h = head_of(7, u64::MAX, -5);
        assert_eq!(reference_time(&h, u64::MAX), Some(u64::MAX - 1 - 5));
    }

    #[test]
    fn a_changing_sequence_is_read_again() {
        let mem = Box::new(head_of(3, 1 << 63, 0));
        let p = Box::into_raw(mem);
        // SAFETY: p is a live allocation only this test touches via ShPtr.
        let sh = unsafe { ShPtr::new(p) };
        let mut calls = 0;
        // The "hypervisor" bumps the sequence during the first read.
        let t = read_with(sh, || {
            calls += 1;
            if calls == 1 {
                // SAFETY: p is live; a plain write between the reader's
                // two sequence reads, as another CPU's would be.
                unsafe { (*p).sequence = 4 };
            }
            100
        });
        assert_eq!(t, Some(50));
        assert_eq!(calls, 2);
        // A page that never settles gives up.
        let mut n = 0u32;
        let t = read_with(sh, || {
            n += 1;
            // SAFETY: as above.
            unsafe { (*p).sequence = n + 10 };
            1
        });
        assert_eq!(t, None);
        // SAFETY: from Box::into_raw above.
        drop(unsafe { Box::from_raw(p) });
    }

    #[test]
    fn invalid_page_is_withdrawn() {
        use crate::hypercall::tests::FakeHv;
        // The fake never writes the page: sequence stays 0.
        let h = FakeHv::default();
        assert_eq!(setup(&h), Err(HvError::RefTscInvalid));
        let w = h.writes(msr::REFERENCE_TSC);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0] & 1, 1);
        assert_eq!(w[1], 0);
        // Refused: never registered.
        let h = FakeHv::default();
        h.faults
            .configure(Some("hyperv.ref-tsc"), crate::fault_points::ALL);
        assert_eq!(
            setup(&h),
            Err(HvError::Refused {
                msr: msr::REFERENCE_TSC
            })
        );
        assert!(h.writes(msr::REFERENCE_TSC).is_empty());
    }
}
