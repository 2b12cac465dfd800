//! The xenstore client (`pvops_xen::xenstore::Client` over the real page
//! accessor `SharedXsRing`) against a daemon the fuzzer plays: each time the
//! client waits, the daemon consumes some request bytes, produces reply
//! bytes of the fuzzer's choosing (headers with any type, id and length),
//! or scribbles on any of the four ring indices.
//!
//! Asserts: every request ends (a result, never a hang: the waits are
//! bounded), a successful read returns no more than the buffer holds, an
//! error reply's name is at most 15 bytes, and after the fuzzer's input is
//! used up nothing panics or reads outside the rings (the accessor would).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_fuzz::{Bytes, Heap};
use pvops_xen::abi::xenstore::{XenstoreInterface, RING_SIZE};
use pvops_xen::xenstore::{Client, SharedXsRing, XsError, XsRing};
use std::cell::{Cell, RefCell};
use std::mem::offset_of;
use zerocopy::FromZeros;

fuzz_target!(|data: &[u8]| {
    let page = Heap::new(XenstoreInterface::new_zeroed());
    let shp = page.ptr();
    // SAFETY: the heap page outlives the ring and is reached only through
    // ShPtrs meanwhile.
    let ring = unsafe { SharedXsRing::new(page.raw()) };
    let script = RefCell::new(Bytes(data));
    let waits = Cell::new(0u32);
    let word = |off: usize| shp.field::<u32>(off);
    let mut wait = || {
        let mut s = script.borrow_mut();
        waits.set(waits.get() + 1);
        match s.u8() % 6 {
            // Consume all requests.
            0 | 1 => word(offset_of!(XenstoreInterface, req_cons))
                .write(ring.req_prod()),
            // Produce some reply bytes.
            2 | 3 => {
                let n = usize::from(s.u8()) % 64;
                for _ in 0..n {
                    let prod = ring.rsp_prod();
                    if prod.wrapping_sub(ring.rsp_cons()) as usize >= RING_SIZE {
                        break;
                    }
                    let slot = prod as usize & (RING_SIZE - 1);
                    shp.field::<[u8; RING_SIZE]>(offset_of!(XenstoreInterface, rsp))
                        .index(slot)
                        .expect("slot in ring")
                        .write(s.u8());
                    word(offset_of!(XenstoreInterface, rsp_prod)).write(prod.wrapping_add(1));
                }
            }
            // Scribble on an index.
            4 => {
                let off = match s.u8() % 4 {
                    0 => offset_of!(XenstoreInterface, req_cons),
                    1 => offset_of!(XenstoreInterface, req_prod),
                    2 => offset_of!(XenstoreInterface, rsp_cons),
                    _ => offset_of!(XenstoreInterface, rsp_prod),
                };
                word(off).write(s.u32());
            }
            _ => {}
        }
        !s.is_empty() && waits.get() < 10_000
    };
    let mut client = Client::new(&ring, &mut wait, 1);
    for i in 0..4 {
        let mut buf = [0u8; 48];
        let r = if i % 2 == 0 {
            client.read("control/shutdown", &mut buf)
        } else {
            client.write("control/shutdown", b"").map(|()| 0)
        };
        match r {
            Ok(n) => assert!(n <= buf.len()),
            Err(XsError::Refused(e)) => assert!(e.as_str().len() <= 15),
            Err(XsError::Corrupt { .. } | XsError::Malformed(_) | XsError::Timeout) => break,
            Err(_) => {}
        }
    }
});
