//! A small xenstore client over the domain's xenstore ring: `read` and
//! `write` of a node, one request at a time, and on top of it the
//! toolstack's shutdown control (`control/shutdown`, what `xl shutdown` and
//! `xl reboot` write).
//!
//! A domU finds the ring through `HVM_PARAM_STORE_PFN`/`_EVTCHN` (PVH) or
//! `start_info`'s `store_mfn`/`store_evtchn` (classic PV); dom0 has none
//! at boot (its xenstored starts later), so there the client stays off
//! and every call says [`XsError::NoStore`].
//!
//! Everything the daemon writes is checked before use: ring indices are
//! read once per step into locals (more bytes in flight than the ring
//! holds is [`XsError::Corrupt`]), a reply's length is bounded by
//! [`PAYLOAD_MAX`] and by the caller's buffer, its id must echo the
//! request's, and a wait for the daemon gives up after a bounded number of
//! yields. After a malformed reply the client stops using the ring (the
//! stream can no longer be framed).

use crate::abi::xenstore::{
    XenstoreInterface, XsdSockmsg, PAYLOAD_MAX, RING_SIZE, XS_ERROR, XS_READ, XS_WATCH_EVENT,
    XS_WRITE,
};
use core::fmt;
use core::mem::offset_of;
use core::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use pvops_core::platform::ShutdownRequest;
use pvops_core::shmem::ShPtr;
use zerocopy::{FromBytes, IntoBytes};

/// Both halves of a xenstore ring, as the client uses them.
pub trait XsRing {
    /// `req_cons`, read once.
    fn req_cons(&self) -> u32;
    /// `req_prod`, read once.
    fn req_prod(&self) -> u32;
    /// Publishes a new `req_prod`.
    fn set_req_prod(&self, prod: u32);
    /// Stores `byte` in request slot `slot` (below [`RING_SIZE`]).
    fn put(&self, slot: usize, byte: u8);
    /// `rsp_cons`, read once.
    fn rsp_cons(&self) -> u32;
    /// `rsp_prod`, read once.
    fn rsp_prod(&self) -> u32;
    /// Publishes a new `rsp_cons`.
    fn set_rsp_cons(&self, cons: u32);
    /// The byte in reply slot `slot` (below [`RING_SIZE`]).
    fn get(&self, slot: usize) -> u8;
}

/// What went wrong with a xenstore request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XsError {
    /// No xenstore ring (dom0, or none offered).
    NoStore,
    /// The daemon did not answer (or make room) in time.
    Timeout,
    /// Ring indices out of range (more in flight than the ring holds).
    Corrupt {
        /// Producer index as read.
        prod: u32,
        /// Consumer index as read.
        cons: u32,
    },
    /// A reply that breaks the protocol (the ring is given up).
    Malformed(&'static str),
    /// A reply longer than the caller's buffer (it was read and dropped).
    TooLong {
        /// Its length.
        len: usize,
    },
    /// The daemon refused the request with this errno name (`ENOENT`, ...).
    Refused(ErrName),
    /// A request longer than [`PAYLOAD_MAX`].
    RequestTooLong,
}

/// An errno name from an `XS_ERROR` reply (at most 15 bytes kept).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrName {
    bytes: [u8; 15],
    len: u8,
}

impl ErrName {
    fn new(payload: &[u8]) -> Self {
        let text = payload.split(|&b| b == 0).next().unwrap_or_default();
        let mut bytes = [0; 15];
        let n = text.len().min(15);
        bytes[..n].copy_from_slice(&text[..n]);
        ErrName {
            bytes,
            len: n as u8,
        }
    }

    /// The name (`?` for bytes that are not UTF-8).
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

impl fmt::Debug for ErrName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::NoStore => f.write_str("no xenstore ring"),
            XsError::Timeout => f.write_str("xenstored did not answer in time"),
            XsError::Corrupt { prod, cons } => write!(
                f,
                "xenstore ring indices out of range (prod {prod:#x}, cons {cons:#x})"
            ),
            XsError::Malformed(why) => write!(f, "malformed xenstore reply: {why}"),
            XsError::TooLong { len } => write!(f, "xenstore reply of {len} bytes is too long"),
            XsError::Refused(e) => write!(f, "xenstored refused: {}", e.as_str()),
            XsError::RequestTooLong => f.write_str("xenstore request too long"),
        }
    }
}

/// Copies as much of `bytes` into the request ring as fits, publishes it,
/// and returns how many went in.
pub fn ring_write(ring: &impl XsRing, bytes: &[u8]) -> Result<usize, XsError> {
    let cons = ring.req_cons();
    let prod = ring.req_prod();
    let used = prod.wrapping_sub(cons) as usize;
    if used > RING_SIZE {
        return Err(XsError::Corrupt { prod, cons });
    }
    let n = (RING_SIZE - used).min(bytes.len());
    for (i, b) in bytes[..n].iter().enumerate() {
        ring.put(prod.wrapping_add(i as u32) as usize & (RING_SIZE - 1), *b);
    }
    // The bytes before the index that publishes them.
    fence(Ordering::Release);
    ring.set_req_prod(prod.wrapping_add(n as u32));
    Ok(n)
}

/// Copies up to `out.len()` reply bytes out of the ring, consumes them,
/// and returns how many.
pub fn ring_read(ring: &impl XsRing, out: &mut [u8]) -> Result<usize, XsError> {
    let prod = ring.rsp_prod();
    let cons = ring.rsp_cons();
    let avail = prod.wrapping_sub(cons) as usize;
    if avail > RING_SIZE {
        return Err(XsError::Corrupt { prod, cons });
    }
    // The bytes after the index that published them.
    fence(Ordering::Acquire);
    let n = avail.min(out.len());
    for (i, o) in out[..n].iter_mut().enumerate() {
        *o = ring.get(cons.wrapping_add(i as u32) as usize & (RING_SIZE - 1));
    }
    // Read before the slots are handed back.
    fence(Ordering::Release);
    ring.set_rsp_cons(cons.wrapping_add(n as u32));
    Ok(n)
}

/// One request/reply exchange at a time over `ring`. `wait` is called
/// whenever the client needs the daemon to move (it should signal the
/// event channel and yield); it returns `false` once the caller's patience
/// is out.
pub struct Client<'a, R: XsRing> {
    ring: &'a R,
    wait: &'a mut dyn FnMut() -> bool,
    req_id: u32,
}

impl<R: XsRing> fmt::Debug for Client<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("req_id", &self.req_id)
            .finish_non_exhaustive()
    }
}

impl<'a, R: XsRing> Client<'a, R> {
    /// A client over `ring`; request ids start at `req_id`.
    pub fn new(ring: &'a R, wait: &'a mut dyn FnMut() -> bool, req_id: u32) -> Self {
        Client { ring, wait, req_id }
    }

    /// The next request id this client will use.
    pub fn next_id(&self) -> u32 {
        self.req_id
    }

    fn send_all(&mut self, mut bytes: &[u8]) -> Result<(), XsError> {
        while !bytes.is_empty() {
            let n = ring_write(self.ring, bytes)?;
            bytes = &bytes[n..];
            if n == 0 && !(self.wait)() {
                return Err(XsError::Timeout);
            }
        }
        Ok(())
    }

    fn recv_all(&mut self, mut out: &mut [u8]) -> Result<(), XsError> {
        while !out.is_empty() {
            let n = ring_read(self.ring, out)?;
            out = &mut out[n..];
            if n == 0 && !(self.wait)() {
                return Err(XsError::Timeout);
            }
        }
        Ok(())
    }

    /// Drops `len` reply bytes.
    fn skip(&mut self, mut len: usize) -> Result<(), XsError> {
        let mut scratch = [0u8; 64];
        while len > 0 {
            let n = len.min(scratch.len());
            self.recv_all(&mut scratch[..n])?;
            len -= n;
        }
        Ok(())
    }

    /// Sends request `ty` whose payload is `parts` concatenated, and reads
    /// its reply's payload into `reply`; returns the payload's length.
    /// Watch events met on the way are dropped.
    pub fn request(
        &mut self,
        ty: u32,
        parts: &[&[u8]],
        reply: &mut [u8],
    ) -> Result<usize, XsError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > PAYLOAD_MAX {
            return Err(XsError::RequestTooLong);
        }
        let id = self.req_id;
        self.req_id = self.req_id.wrapping_add(1);
        let header = XsdSockmsg {
            ty,
            req_id: id,
            tx_id: 0,
            len: len as u32,
        };
        self.send_all(header.as_bytes())?;
        for p in parts {
            self.send_all(p)?;
        }
        // Tell the daemon; nothing is waited for if it already answered.
        let _ = (self.wait)();
        loop {
            let mut h = [0u8; 16];
            self.recv_all(&mut h)?;
            let Ok(h) = XsdSockmsg::read_from_bytes(&h) else {
                return Err(XsError::Malformed("header"));
            };
            let len = h.len as usize;
            if len > PAYLOAD_MAX {
                return Err(XsError::Malformed(
                    "payload longer than XENSTORE_PAYLOAD_MAX",
                ));
            }
            if h.ty == XS_WATCH_EVENT {
                self.skip(len)?;
                continue;
            }
            if h.req_id != id {
                return Err(XsError::Malformed("reply to another request"));
            }
            if h.ty == XS_ERROR {
                let mut name = [0u8; 32];
                let keep = len.min(name.len());
                self.recv_all(&mut name[..keep])?;
                self.skip(len - keep)?;
                return Err(XsError::Refused(ErrName::new(&name[..keep])));
            }
            if h.ty != ty {
                return Err(XsError::Malformed("reply of another type"));
            }
            if len > reply.len() {
                self.skip(len)?;
                return Err(XsError::TooLong { len });
            }
            self.recv_all(&mut reply[..len])?;
            return Ok(len);
        }
    }

    /// The value of node `path` (relative paths are under the domain's
    /// own `/local/domain/<id>/`) into `out`; returns its length.
    pub fn read(&mut self, path: &str, out: &mut [u8]) -> Result<usize, XsError> {
        self.request(XS_READ, &[path.as_bytes(), &[0]], out)
    }

    /// Writes `value` to node `path`.
    pub fn write(&mut self, path: &str, value: &[u8]) -> Result<(), XsError> {
        let mut ok = [0u8; 8];
        self.request(XS_WRITE, &[path.as_bytes(), &[0], value], &mut ok)
            .map(drop)
    }
}

/// A real xenstore ring page, through [`ShPtr`].
#[derive(Debug, Clone, Copy)]
pub struct SharedXsRing(ShPtr<XenstoreInterface>);

impl SharedXsRing {
    /// The ring in the page at `page`.
    ///
    /// # Safety
    /// `ShPtr::new`'s contract for `page`: mapped, aligned, reached by Rust
    /// code only through `ShPtr` for as long as the value is used.
    pub const unsafe fn new(page: *mut XenstoreInterface) -> Self {
        // SAFETY: the caller's contract is `ShPtr::new`'s.
        Self(unsafe { ShPtr::new(page) })
    }

    fn word(&self, offset: usize) -> ShPtr<u32> {
        self.0.field::<u32>(offset)
    }
}

impl XsRing for SharedXsRing {
    fn req_cons(&self) -> u32 {
        self.word(offset_of!(XenstoreInterface, req_cons)).read()
    }
    fn req_prod(&self) -> u32 {
        self.word(offset_of!(XenstoreInterface, req_prod)).read()
    }
    fn set_req_prod(&self, prod: u32) {
        self.word(offset_of!(XenstoreInterface, req_prod))
            .write(prod)
    }
    fn put(&self, slot: usize, byte: u8) {
        if let Some(b) = self
            .0
            .field::<[u8; RING_SIZE]>(offset_of!(XenstoreInterface, req))
            .index(slot)
        {
            b.write(byte);
        }
    }
    fn rsp_cons(&self) -> u32 {
        self.word(offset_of!(XenstoreInterface, rsp_cons)).read()
    }
    fn rsp_prod(&self) -> u32 {
        self.word(offset_of!(XenstoreInterface, rsp_prod)).read()
    }
    fn set_rsp_cons(&self, cons: u32) {
        self.word(offset_of!(XenstoreInterface, rsp_cons))
            .write(cons)
    }
    fn get(&self, slot: usize) -> u8 {
        self.0
            .field::<[u8; RING_SIZE]>(offset_of!(XenstoreInterface, rsp))
            .index(slot)
            .map_or(0, |b| b.read())
    }
}

static RING_VA: AtomicU64 = AtomicU64::new(0);
static PORT: AtomicU32 = AtomicU32::new(0);
static NEXT_ID: AtomicU32 = AtomicU32::new(1);
/// One request at a time.
static LOCK: AtomicBool = AtomicBool::new(false);
/// The ring broke (a malformed reply): no more requests.
static BROKEN: AtomicBool = AtomicBool::new(false);
/// The shutdown the toolstack asked for and the kernel acknowledged.
static REQUESTED: AtomicU8 = AtomicU8::new(0);
const REQ_POWEROFF: u8 = 1;
const REQ_REBOOT: u8 = 2;

/// Yields before a wait for the daemon counts as a time-out.
const WAIT_YIELDS: u32 = 200_000;

/// Uses the xenstore ring page mapped at `va`, signalled through `port`,
/// from now on.
///
/// # Safety
/// `va` must map the xenstore ring page, writable, for good, and Rust
/// code must reach that page only through this module from now on.
pub unsafe fn use_ring_at(va: u64, port: u32) {
    PORT.store(port, Ordering::Relaxed);
    RING_VA.store(va, Ordering::Release);
}

/// Whether a xenstore ring is in use.
pub fn available() -> bool {
    RING_VA.load(Ordering::Acquire) != 0 && !BROKEN.load(Ordering::Relaxed)
}

/// Runs `f` with a client over the domain's ring (one caller at a time).
pub fn with_client<T>(
    f: impl FnOnce(&mut Client<'_, SharedXsRing>) -> Result<T, XsError>,
) -> Result<T, XsError> {
    if !available() {
        return Err(XsError::NoStore);
    }
    let mut spins = 0u32;
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        spins += 1;
        if spins > 10_000_000 {
            return Err(XsError::Timeout);
        }
        core::hint::spin_loop();
    }
    // SAFETY: `use_ring_at`'s contract: the page is mapped for good and
    // reached only through this module; LOCK makes this the only user.
    let ring =
        unsafe { SharedXsRing::new(RING_VA.load(Ordering::Relaxed) as *mut XenstoreInterface) };
    let port = PORT.load(Ordering::Relaxed);
    let mut yields = 0u32;
    let mut wait = || {
        let _ = crate::xen::XEN.send(port);
        let _ = crate::xen::XEN.yield_now();
        yields += 1;
        yields < WAIT_YIELDS
    };
    let mut client = Client::new(&ring, &mut wait, NEXT_ID.load(Ordering::Relaxed));
    let r = f(&mut client);
    NEXT_ID.store(client.next_id(), Ordering::Relaxed);
    if matches!(r, Err(XsError::Malformed(_) | XsError::Corrupt { .. })) {
        BROKEN.store(true, Ordering::Relaxed);
    }
    LOCK.store(false, Ordering::Release);
    r
}

/// What a `control/shutdown` value asks for (`None`: nothing this kernel
/// acts on; Linux also knows `sysrq`). `suspend` comes back as
/// `Suspended { cancelled: false }`, before anything was done.
pub fn parse_shutdown(value: &[u8]) -> Option<ShutdownRequest> {
    match value {
        b"poweroff" | b"halt" => Some(ShutdownRequest::PowerOff),
        b"reboot" => Some(ShutdownRequest::Reboot),
        b"suspend" => Some(ShutdownRequest::Suspended { cancelled: false }),
        _ => None,
    }
}

/// Reads `control/shutdown`; a request found there is acknowledged (the
/// node emptied, which is what the toolstack waits for) and remembered
/// for [`requested`], and returned. A `suspend` is carried out here
/// (`suspend`) and reported once the domain runs again; where
/// suspending is not supported it is left unacknowledged (the toolstack
/// then gives up).
pub fn poll_shutdown_request() -> Option<ShutdownRequest> {
    let r = with_client(|c| {
        let mut buf = [0u8; 32];
        let n = match c.read("control/shutdown", &mut buf) {
            Ok(n) => n,
            Err(XsError::Refused(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(req) = parse_shutdown(&buf[..n]) else {
            return Ok(None);
        };
        if matches!(req, ShutdownRequest::Suspended { .. }) && !crate::suspend::supported() {
            return Ok(None);
        }
        c.write("control/shutdown", b"")?;
        Ok(Some(req))
    });
    match r {
        Ok(Some(ShutdownRequest::Suspended { .. })) => match crate::suspend::suspend_and_resume() {
            Ok(cancelled) => Some(ShutdownRequest::Suspended { cancelled }),
            Err(e) => {
                crate::warn::warn(format_args!("xen: suspend: {e}"));
                None
            }
        },
        Ok(Some(req)) => {
            REQUESTED.store(
                match req {
                    ShutdownRequest::PowerOff => REQ_POWEROFF,
                    _ => REQ_REBOOT,
                },
                Ordering::Relaxed,
            );
            Some(req)
        }
        Ok(None) => None,
        Err(e) => {
            static ONCE: AtomicBool = AtomicBool::new(false);
            if !matches!(e, XsError::NoStore) {
                crate::warn::warn_once(&ONCE, format_args!("xen: xenstore: {e}"));
            }
            None
        }
    }
}

/// The shutdown the toolstack asked for, once acknowledged.
pub fn requested() -> Option<ShutdownRequest> {
    match REQUESTED.load(Ordering::Relaxed) {
        REQ_POWEROFF => Some(ShutdownRequest::PowerOff),
        REQ_REBOOT => Some(ShutdownRequest::Reboot),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::vec::Vec;

    /// A daemon in the test: the rings as plain memory, and a script of
    /// reply bytes it "produces" each time the client waits.
    struct Fake {
        req: RefCell<[u8; RING_SIZE]>,
        rsp: RefCell<[u8; RING_SIZE]>,
        req_cons: Cell<u32>,
        req_prod: Cell<u32>,
        rsp_cons: Cell<u32>,
        rsp_prod: Cell<u32>,
    }

    impl Fake {
        fn new() -> Self {
            Fake {
                req: RefCell::new([0; RING_SIZE]),
                rsp: RefCell::new([0; RING_SIZE]),
                req_cons: Cell::new(0),
                req_prod: Cell::new(0),
                rsp_cons: Cell::new(0),
                rsp_prod: Cell::new(0),
            }
        }
        /// The daemon consumes every request byte.
        fn take_requests(&self) -> Vec<u8> {
            let mut out = Vec::new();
            while self.req_cons.get() != self.req_prod.get() {
                out.push(self.req.borrow()[self.req_cons.get() as usize & (RING_SIZE - 1)]);
                self.req_cons.set(self.req_cons.get().wrapping_add(1));
            }
            out
        }
        /// The daemon produces `bytes` (as far as they fit).
        fn produce(&self, bytes: &[u8]) -> usize {
            let mut n = 0;
            for b in bytes {
                if self.rsp_prod.get().wrapping_sub(self.rsp_cons.get()) as usize == RING_SIZE {
                    break;
                }
                self.rsp.borrow_mut()[self.rsp_prod.get() as usize & (RING_SIZE - 1)] = *b;
                self.rsp_prod.set(self.rsp_prod.get().wrapping_add(1));
                n += 1;
            }
            n
        }
    }

    impl XsRing for Fake {
        fn req_cons(&self) -> u32 {
            self.req_cons.get()
        }
        fn req_prod(&self) -> u32 {
            self.req_prod.get()
        }
        fn set_req_prod(&self, prod: u32) {
            self.req_prod.set(prod)
        }
        fn put(&self, slot: usize, byte: u8) {
            self.req.borrow_mut()[slot] = byte
        }
        fn rsp_cons(&self) -> u32 {
            self.rsp_cons.get()
        }
        fn rsp_prod(&self) -> u32 {
            self.rsp_prod.get()
        }
        fn set_rsp_cons(&self, cons: u32) {
            self.rsp_cons.set(cons)
        }
        fn get(&self, slot: usize) -> u8 {
            self.rsp.borrow()[slot]
        }
    }

    fn msg(ty: u32, id: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = XsdSockmsg {
            ty,
            req_id: id,
            tx_id: 0,
            len: payload.len() as u32,
        }
        .as_bytes()
        .to_vec();
        v.extend_from_slice(payload);
        v
    }

    /// Runs `f` against a daemon that answers with `script` (fed a little
    /// at a time, as the client waits); returns the result and what the
    /// client sent.
    fn with_daemon<T>(
        script: Vec<u8>,
        chunk: usize,
        f: impl FnOnce(&mut Client<'_, Fake>) -> T,
    ) -> (T, Vec<u8>) {
        let ring = Fake::new();
        let sent = RefCell::new(Vec::new());
        let at = Cell::new(0usize);
        let waits = Cell::new(0u32);
        let mut wait = || {
            sent.borrow_mut().extend(ring.take_requests());
            let end = (at.get() + chunk).min(script.len());
            let n = ring.produce(&script[at.get()..end]);
            at.set(at.get() + n);
            waits.set(waits.get() + 1);
            waits.get() < 1000
        };
        let r = {
            let mut c = Client::new(&ring, &mut wait, 7);
            f(&mut c)
        };
        sent.borrow_mut().extend(ring.take_requests());
        (r, sent.into_inner())
    }

    #[test]
    fn read_sends_the_path_and_returns_the_value() {
        let (r, sent) = with_daemon(msg(XS_READ, 7, b"poweroff"), 5, |c| {
            let mut buf = [0u8; 16];
            c.read("control/shutdown", &mut buf)
                .map(|n| buf[..n].to_vec())
        });
        assert_eq!(r, Ok(b"poweroff".to_vec()));
        assert_eq!(sent, msg(XS_READ, 7, b"control/shutdown\0"));
    }

    #[test]
    fn write_sends_path_nul_value() {
        let (r, sent) = with_daemon(msg(XS_WRITE, 7, b"OK\0"), 64, |c| {
            c.write("control/shutdown", b"")
        });
        assert_eq!(r, Ok(()));
        assert_eq!(sent, msg(XS_WRITE, 7, b"control/shutdown\0"));
    }

    #[test]
    fn watch_events_are_skipped_and_errors_named() {
        let mut script = msg(XS_WATCH_EVENT, 0, b"some/path\0token\0");
        script.extend(msg(XS_ERROR, 7, b"ENOENT\0"));
        let (r, _) = with_daemon(script, 3, |c| {
            let mut buf = [0u8; 16];
            c.read("control/shutdown", &mut buf)
        });
        match r {
            Err(XsError::Refused(e)) => assert_eq!(e.as_str(), "ENOENT"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_reply_longer_than_the_buffer_is_dropped_whole() {
        let mut script = msg(XS_READ, 7, &[b'x'; 100]);
        script.extend(msg(XS_READ, 8, b"ok"));
        let (r, _) = with_daemon(script, 40, |c| {
            let mut buf = [0u8; 16];
            let first = c.read("a", &mut buf);
            let second = c.read("b", &mut buf).map(|n| buf[..n].to_vec());
            (first, second)
        });
        assert_eq!(r.0, Err(XsError::TooLong { len: 100 }));
        assert_eq!(r.1, Ok(b"ok".to_vec()), "the stream stays framed");
    }

    #[test]
    fn malformed_replies_are_refused() {
        // Longer than the protocol allows.
        let mut h = msg(XS_READ, 7, b"");
        h[12..16].copy_from_slice(&(PAYLOAD_MAX as u32 + 1).to_le_bytes());
        let (r, _) = with_daemon(h, 64, |c| c.read("a", &mut [0u8; 8]));
        assert!(matches!(r, Err(XsError::Malformed(_))), "{r:?}");
        // Another request's id, another type.
        let (r, _) = with_daemon(msg(XS_READ, 99, b"v"), 64, |c| c.read("a", &mut [0u8; 8]));
        assert!(matches!(r, Err(XsError::Malformed(_))), "{r:?}");
        let (r, _) = with_daemon(msg(XS_WRITE, 7, b"v"), 64, |c| c.read("a", &mut [0u8; 8]));
        assert!(matches!(r, Err(XsError::Malformed(_))), "{r:?}");
    }

    #[test]
    fn a_silent_daemon_times_out() {
        let (r, _) = with_daemon(Vec::new(), 64, |c| c.read("a", &mut [0u8; 8]));
        assert_eq!(r, Err(XsError::Timeout));
    }

    #[test]
    fn requests_wrap_around_the_ring() {
        // Many requests: the indices pass RING_SIZE several times.
        let mut script = Vec::new();
        for id in 7..27 {
            script.extend(msg(XS_READ, id, b"0123456789"));
        }
        let (r, sent) = with_daemon(script, 50, |c| {
            let mut buf = [0u8; 16];
            (0..20)
                .map(|_| c.read("some/long/path/name", &mut buf))
                .collect::<Vec<_>>()
        });
        assert!(r.iter().all(|x| *x == Ok(10)), "{r:?}");
        assert_eq!(sent.len(), 20 * (16 + 20));
    }

    #[test]
    fn nonsense_indices_are_refused() {
        let ring = Fake::new();
        ring.rsp_prod.set(5000);
        assert_eq!(
            ring_read(&ring, &mut [0u8; 4]),
            Err(XsError::Corrupt {
                prod: 5000,
                cons: 0
            })
        );
        ring.req_cons.set(10);
        ring.req_prod.set(5);
        assert!(ring_write(&ring, b"x").is_err());
        assert_eq!(ring.req_prod.get(), 5, "nothing published");
    }

    #[test]
    fn the_shared_ring_uses_the_shared_layout() {
        use crate::abi::xenstore::XenstoreInterface;
        use std::boxed::Box;
        use zerocopy::FromZeros;
        let mut page = Box::new(XenstoreInterface::new_zeroed());
        page.req_prod = u32::MAX;
        page.req_cons = u32::MAX;
        page.rsp[RING_SIZE - 1] = b'a';
        page.rsp[0] = b'b';
        page.rsp_cons = u32::MAX;
        page.rsp_prod = 1;
        let raw: *mut XenstoreInterface = &mut *page;
        // SAFETY: the box outlives `r` and is touched only through it
        // until its last use.
        let r = unsafe { SharedXsRing::new(raw) };
        assert_eq!(ring_write(&r, b"xy"), Ok(2));
        let mut out = [0u8; 4];
        assert_eq!(ring_read(&r, &mut out), Ok(2));
        assert_eq!(&out[..2], b"ab");
        assert_eq!(page.req_prod, 1, "index wrapped past u32::MAX");
        assert_eq!(page.req[RING_SIZE - 1], b'x');
        assert_eq!(page.req[0], b'y');
        assert_eq!(page.rsp_cons, 1);
    }

    #[test]
    fn shutdown_values() {
        assert_eq!(parse_shutdown(b"poweroff"), Some(ShutdownRequest::PowerOff));
        assert_eq!(parse_shutdown(b"reboot"), Some(ShutdownRequest::Reboot));
        assert_eq!(parse_shutdown(b""), None);
        assert_eq!(
            parse_shutdown(b"suspend"),
            Some(ShutdownRequest::Suspended { cancelled: false })
        );
        assert_eq!(parse_shutdown(b"sysrq"), None);
    }
}
