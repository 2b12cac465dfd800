//! Shared-memory and boot ABI structures written by loaders and
//! hypervisors, as `zerocopy` types with their sizes and offsets checked at
//! compile time, plus validating parsers.

pub mod elfnote;
pub mod pv_start_info;
pub mod pvclock;
pub mod start_info;
