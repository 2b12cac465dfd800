//! Crash reporting (`hv-crash`): on a kernel panic the five crash
//! parameter MSRs get a marker and the first bytes of the message, then
//! the control MSR's notify bit tells the host (QEMU then reports
//! `GUEST_PANICKED` on QMP, with the parameters).

use crate::abi::{msr, CRASH_CTL_NOTIFY};
use crate::hypercall::{Hypervisor, Real};

/// P0: "pvops" in ASCII, so the host's report says whose crash it is.
pub const MARKER: u64 = u64::from_le_bytes(*b"pvops\0\0\0");

/// The five parameters for `message`: the marker, then up to 32 bytes
/// of the message, little-endian, zero-padded.
pub fn params(message: &[u8]) -> [u64; 5] {
    let mut p = [MARKER, 0, 0, 0, 0];
    for (i, chunk) in message.chunks(8).take(4).enumerate() {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        p[1 + i] = u64::from_le_bytes(b);
    }
    p
}

/// Writes the parameters and notifies.
pub fn report_on<H: Hypervisor + ?Sized>(h: &H, message: &[u8]) {
    for (i, v) in params(message).into_iter().enumerate() {
        // SAFETY: the crash MSRs were offered (checked at init); the
        // values name no memory.
        unsafe { h.write_msr(msr::CRASH_P0 + i as u32, v) };
    }
    // SAFETY: as above.
    unsafe { h.write_msr(msr::CRASH_CTL, CRASH_CTL_NOTIFY) };
}

/// The `platform.report_panic` op.
pub fn report_panic(message: &[u8]) {
    report_on(&Real, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;

    #[test]
    fn parameters_then_notify() {
        let h = FakeHv::default();
        report_on(&h, b"panicked at src/main.rs:1:1: boom, and more text here");
        let w = h.msrs.borrow();
        assert_eq!(w.len(), 6);
        assert_eq!(w[0], (msr::CRASH_P0, MARKER));
        assert_eq!(w[1].1.to_le_bytes(), *b"panicked");
        assert_eq!(w[5], (msr::CRASH_CTL, 1 << 63));
        assert_eq!(params(b"ab")[1], u64::from_le_bytes(*b"ab\0\0\0\0\0\0"));
        assert_eq!(params(b"")[1..], [0; 4]);
    }
}
