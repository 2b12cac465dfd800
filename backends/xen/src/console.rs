//! The console: `CONSOLEIO_write` for the hardware domain (dom0), whose
//! output Xen prints on its own console unchanged; the PV console ring for
//! any other domain (Xen drops a domU's `CONSOLEIO_write` unless built to
//! keep it), located through `HVM_PARAM_CONSOLE_PFN` and signalled through
//! the port in `HVM_PARAM_CONSOLE_EVTCHN`.
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
    RING_VA.store((pfn << 12).wrapping_add(phys_offset), Ordering::Relaxed);
    RING_PORT.store(port as u32, Ordering::Relaxed);
    MODE.store(RING, Ordering::Release);
    Ok(())
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
