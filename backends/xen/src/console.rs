//! The console: `CONSOLEIO_write` for the hardware domain (dom0), whose
//! output Xen prints on its own console unchanged; the PV console ring for
//! any other domain (Xen drops a domU's `CONSOLEIO_write` unless built to
//! keep it), located through `HVM_PARAM_CONSOLE_PFN` and signalled through
//! the port in `HVM_PARAM_CONSOLE_EVTCHN`.
//!
//! A classic PV domU finds the same ring in `start_info`
//! (`console.domU.mfn`, a machine frame, and `console.domU.evtchn`):
//! [`pv_ring_frame`] turns the frame into the domain's own pseudo-physical
//! frame, which the PV backend maps, then [`use_ring_at`].
//!
//! Writes never block for long: a ring that stays full (no console
//! backend draining it) loses the rest of the write.

use crate::abi::console::XenconsInterface;
use crate::abi::hvm::{HVM_PARAM_CONSOLE_EVTCHN, HVM_PARAM_CONSOLE_PFN};
use crate::error::XenError;
use crate::ring::{self, SharedRing};
use crate::xen::XEN;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};

const NONE: u8 = 0;
const HYPERCALL: u8 = 1;
const RING: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(NONE);
/// Virtual address of the ring page.
static RING_VA: AtomicU64 = AtomicU64::new(0);
static RING_PORT: AtomicU32 = AtomicU32::new(0);
/// One writer at a time on the ring.
static RING_LOCK: AtomicBool = AtomicBool::new(false);

/// How many times a full ring is waited for before output is dropped.
const FULL_RETRIES: u32 = 10_000;
/// How long a writer waits for another CPU's write to finish.
const LOCK_SPINS: u32 = 10_000_000;

/// Which console is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Nothing prints.
    None,
    /// `CONSOLEIO_write`.
    Hypercall,
    /// The PV console ring.
    Ring,
}

impl Kind {
    /// The name on the features line.
    pub const fn feature(self) -> Option<&'static str> {
        match self {
            Kind::None => None,
            Kind::Hypercall => Some("console-io"),
            Kind::Ring => Some("console-ring"),
        }
    }
}

/// The console in use.
pub fn kind() -> Kind {
    match MODE.load(Ordering::Acquire) {
        HYPERCALL => Kind::Hypercall,
        RING => Kind::Ring,
        _ => Kind::None,
    }
}

/// Prints through `CONSOLEIO_write` from now on.
pub fn use_hypercall() {
    MODE.store(HYPERCALL, Ordering::Release);
}

/// Finds the PV console ring through the HVM parameters and prints through
/// it from now on; `phys_offset` maps guest-physical memory. Returns the
/// error when the parameters are missing or zero (no ring offered).
pub fn use_ring(phys_offset: u64) -> Result<(), XenError> {
    let pfn = XEN.hvm_get_param(HVM_PARAM_CONSOLE_PFN)?;
    let port = XEN.hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN)?;
    if pfn == 0 || port == 0 || port > u64::from(u32::MAX) {
        return Err(XenError {
            errno: crate::abi::errno::ENOENT,
        });
    }
    // SAFETY: under PVH the BootContext contract maps every guest frame
    // at `phys + phys_offset` for good; the frame is the ring Xen named.
    unsafe { use_ring_at((pfn << 12).wrapping_add(phys_offset), port as u32) };
    Ok(())
}

/// Prints through the console ring page mapped at virtual address `va`,
/// signalled through event channel `port`, from now on (what
/// [`use_ring`] does once it found the page; a classic PV domU finds it
/// in `start_info`, see [`pv_ring_frame`]).
///
/// # Safety
/// `va` must map the console ring page, writable, for good, and Rust code
/// must reach that page only through this module from now on.
pub unsafe fn use_ring_at(va: u64, port: u32) {
    RING_VA.store(va, Ordering::Relaxed);
    RING_PORT.store(port, Ordering::Relaxed);
    MODE.store(RING, Ordering::Release);
}

/// Why a classic PV domU's console ring cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvRingRefused {
    /// `start_info` names no ring (frame or event channel 0).
    NotOffered,
    /// The ring's machine frame is not one of the domain's frames.
    ForeignFrame {
        /// The machine frame `start_info` named.
        mfn: u64,
    },
}

impl core::fmt::Display for PvRingRefused {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PvRingRefused::NotOffered => f.write_str("start_info offers no console ring"),
            PvRingRefused::ForeignFrame { mfn } => write!(
                f,
                "the console ring's machine frame {mfn:#x} is not one of the domain's frames"
            ),
        }
    }
}

/// The pseudo-physical frame of a classic PV domU's console ring, from
/// `start_info`'s machine frame `mfn` and port `evtchn`: `pfn_of`
/// translates a machine frame back (the machine-to-phys table, checked
/// against the pfn list), and the frame must be below `nr_pages`.
pub fn pv_ring_frame(
    mfn: u64,
    evtchn: u32,
    nr_pages: u64,
    pfn_of: impl FnOnce(u64) -> Option<u64>,
) -> Result<u64, PvRingRefused> {
    if mfn == 0 || evtchn == 0 {
        return Err(PvRingRefused::NotOffered);
    }
    match pfn_of(mfn) {
        Some(pfn) if pfn < nr_pages => Ok(pfn),
        _ => Err(PvRingRefused::ForeignFrame { mfn }),
    }
}

fn write_ring(bytes: &[u8]) {
    let mut spins = 0;
    while RING_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins > LOCK_SPINS {
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: `use_ring` recorded the ring page's mapping (the direct map
    // of the frame Xen named); Rust reaches it only through this ShPtr.
    let page = unsafe { SharedRing::new(RING_VA.load(Ordering::Relaxed) as *mut XenconsInterface) };
    let port = RING_PORT.load(Ordering::Relaxed);
    let mut rest = bytes;
    let mut retries = 0;
    while !rest.is_empty() {
        match ring::write(&page, rest) {
            Ok(0) => {
                let _ = XEN.send(port);
                retries += 1;
                if retries > FULL_RETRIES {
                    break;
                }
                let _ = XEN.yield_now();
            }
            Ok(n) => {
                rest = &rest[n..];
                retries = 0;
            }
            // The backend scribbled on the indices: stop using the ring.
            Err(_) => {
                MODE.store(HYPERCALL, Ordering::Release);
                break;
            }
        }
    }
    let _ = XEN.send(port);
    RING_LOCK.store(false, Ordering::Release);
}

/// Writes `bytes` to the console in use (dropped when there is none).
pub fn write(bytes: &[u8]) {
    match MODE.load(Ordering::Acquire) {
        HYPERCALL => {
            let _ = XEN.console_write(bytes);
        }
        RING => write_ring(bytes),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn pv_ring_frame_translates_the_domains_own_frame() {
        let m2p = |mfn: u64| (mfn == 0x1234).then_some(0x42);
        assert_eq!(pv_ring_frame(0x1234, 3, 0x8000, m2p), Ok(0x42));
    }

    #[test]
    fn pv_ring_frame_refuses_what_is_not_offered() {
        let never = |_: u64| -> Option<u64> { panic!("not looked up") };
        assert_eq!(
            pv_ring_frame(0, 3, 0x8000, never),
            Err(PvRingRefused::NotOffered)
        );
        assert_eq!(
            pv_ring_frame(0x1234, 0, 0x8000, never),
            Err(PvRingRefused::NotOffered)
        );
    }

    #[test]
    fn pv_ring_frame_refuses_foreign_or_out_of_range_frames() {
        // Not in the machine-to-phys table (or its entry names another frame).
        assert_eq!(
            pv_ring_frame(0x999, 3, 0x8000, |_| None),
            Err(PvRingRefused::ForeignFrame { mfn: 0x999 })
        );
        // A pfn beyond the domain's memory: never mapped by the backend.
        assert_eq!(
            pv_ring_frame(0x999, 3, 0x8000, |_| Some(0x8000)),
            Err(PvRingRefused::ForeignFrame { mfn: 0x999 })
        );
        let e = PvRingRefused::ForeignFrame { mfn: 0x999 }.to_string();
        assert!(e.contains("0x999"), "{e}");
    }
}
