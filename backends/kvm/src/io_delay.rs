//! NOP_IO_DELAY: KVM says port I/O needs no delay, so `io_delay` (a
//! port 0x80 write natively, one VM exit each under KVM) does nothing.

/// The `cpu.io_delay` op with `nop-io-delay` on.
pub fn nop_io_delay() {}
