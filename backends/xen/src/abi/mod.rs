//! Xen's guest ABI as this backend uses it: hypercall and sub-operation
//! numbers, and the argument and shared-memory structures as `zerocopy`
//! types whose sizes and field offsets are checked at compile time against
//! Xen's public headers (`xen/include/public/`, interface of Xen 4.17, the
//! 64-bit x86 layout).
//!
//! Nothing here executes anything: [`crate::hypercall`] issues hypercalls
//! and [`crate::xen`] gives them types.

pub mod console;
pub mod cpuid;
pub mod errno;
pub mod evtchn;
pub mod hvm;
pub mod memory;
pub mod nr;
pub mod pv;
pub mod sched;
pub mod shared;
pub mod vcpu;
pub mod version;
pub mod xenstore;
