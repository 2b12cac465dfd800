//! The pvclock version protocol (`abi::pvclock::read_time_info`) over the
//! real shared-memory accessor, while a fuzzer-driven "hypervisor" rewrites
//! the record between (and so during) the reader's accesses: versions that
//! change between reads, odd versions, torn bodies.
//!
//! Asserts: at most `max_tries` attempts; a record returned is exactly the
//! copy taken between two reads of the same even version (never a copy
//! that failed the check); a failure reports the attempts made; and time
//! computed from the returned copy never panics and never goes back for a
//! later TSC.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_core::abi::pvclock::{read_time_info, VcpuTimeInfo, Versioned};
use pvops_core::shmem::ShPtr;
use pvops_fuzz::{Bytes, Heap};
use std::cell::RefCell;
use zerocopy::FromBytes;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    Version(u32),
    Snapshot(VcpuTimeInfo),
}

struct Racing<'a> {
    p: ShPtr<VcpuTimeInfo>,
    script: RefCell<Bytes<'a>>,
    log: RefCell<Vec<Access>>,
}

impl Racing<'_> {
    /// The hypervisor's move after each access, chosen by the fuzzer.
    fn after_access(&self) {
        let mut s = self.script.borrow_mut();
        let version = self.p.field::<u32>(0);
        match s.u8() % 5 {
            0 => {}
            1 => version.write(s.u32()),
            2 => version.write(version.read().wrapping_add(1)),
            3 => {
                let mut body = [0u8; 32];
                s.fill(&mut body);
                self.p.write(VcpuTimeInfo::read_from_bytes(&body).unwrap());
            }
            _ => {
                // One field of the body: a torn update.
                let at = (s.u8() % 4) as usize * 8;
                self.p.field::<u64>(at).write(s.u64());
            }
        }
    }
}

impl Versioned for Racing<'_> {
    type Record = VcpuTimeInfo;
    fn version(&self) -> u32 {
        let v = self.p.version();
        self.log.borrow_mut().push(Access::Version(v));
        self.after_access();
        v
    }
    fn snapshot(&self) -> VcpuTimeInfo {
        let r = self.p.snapshot();
        self.log.borrow_mut().push(Access::Snapshot(r));
        self.after_access();
        r
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let max_tries = u32::from(input.u8() % 16);
    let tsc_a = input.u64();
    let tsc_b = input.u64();
    let mut body = [0u8; 32];
    input.fill(&mut body);
    let mem = Heap::new(VcpuTimeInfo::read_from_bytes(&body).unwrap());
    let racing = Racing {
        p: mem.ptr(),
        script: RefCell::new(input),
        log: RefCell::new(Vec::new()),
    };
    let got = read_time_info(&racing, max_tries);
    let log = racing.log.borrow();
    let tries = max_tries.max(1) as usize;
    let snapshots = log
        .iter()
        .filter(|a| matches!(a, Access::Snapshot(_)))
        .count();
    let versions = log.len() - snapshots;
    assert!(snapshots <= tries && versions <= 2 * tries, "{log:?}");
    match got {
        Ok(r) => {
            // The log ends with: version v (even), the copy returned,
            // version v again.
            let n = log.len();
            assert!(n >= 3);
            match (log[n - 3], log[n - 2], log[n - 1]) {
                (Access::Version(a), Access::Snapshot(s), Access::Version(b)) => {
                    assert_eq!(a, b);
                    assert_eq!(a & 1, 0);
                    assert_eq!(s, r, "the checked copy is the one returned");
                }
                other => panic!("returned without a checked copy: {other:?}"),
            }
            // Time from that copy: no panic, never back for a later TSC.
            let (lo, hi) = {
                let da = tsc_a.wrapping_sub(r.tsc_timestamp);
                let db = tsc_b.wrapping_sub(r.tsc_timestamp);
                if da <= db {
                    (tsc_a, tsc_b)
                } else {
                    (tsc_b, tsc_a)
                }
            };
            let dhi = hi.wrapping_sub(r.tsc_timestamp);
            if (dhi as i64) >= 0 {
                assert!(r.time_at(lo) <= r.time_at(hi), "{r:?} {lo} {hi}");
            }
            assert!(r.time_at(lo) >= r.system_time);
        }
        Err(e) => {
            assert_eq!(e.tries as usize, tries);
        }
    }
    // `log`, then `racing`, then `mem` go out of scope, in that order.
});
