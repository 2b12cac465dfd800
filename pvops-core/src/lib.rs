//! # pvops-core
//!
//! The paravirtual-operations layer of an x86_64 kernel: op groups as
//! traits ([`cpu::CpuOps`], [`irq::IrqOps`], [`mmu::MmuOps`],
//! [`time::TimeOps`], [`lock::LockOps`], [`platform::ConsoleOps`],
//! [`platform::ShutdownOps`]), one installed table of function pointers
//! ([`table::PvOps`]), the thin wrappers kernel code calls
//! ([`irq::disable`], [`mmu::set_pte`], [`time::sched_clock`], ...), and
//! platform detection ([`detect`], [`backend`]) kept apart from the ops.
//!
//! Backends live in their own crates (`pvops-native`, `pvops-kvm`,
//! `pvops-xen`); the `pvops` crate puts them together and picks one at boot.
//!
//! The crate is `no_std` and builds and unit-tests on the host: only the
//! backends execute privileged instructions.
//!
//! ## Example
//! The parts that need no hardware work anywhere, e.g. in a host test:
//! ```
//! use pvops_core::{cmdline, time::ClockScale};
//! // A 2.5 GHz counter: 2.5e9 ticks are one second (pvclock-style scaling).
//! let scale = ClockScale::from_hz(2_500_000_000).unwrap();
//! assert!((scale.ticks_to_ns(2_500_000_000) as i64 - 1_000_000_000).abs() < 1_000);
//! // Options for pvops on a kernel command line.
//! assert_eq!(cmdline::option("quiet pvops.backend=native", "backend"), Some("native"));
//! // Before a backend is installed, nothing is.
//! assert!(!pvops_core::table::is_installed());
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(any(test, feature = "test-support"))]
extern crate std;

/// The `x86_64` crate, whose types (`VirtAddr`, `DescriptorTablePointer`,
/// ...) this API takes: use this copy and the versions always match.
pub use x86_64;

pub mod abi;
pub mod backend;
pub mod cmdline;
pub mod cpu;
pub mod detect;
pub mod fault;
pub mod feature;
pub mod irq;
pub mod lock;
pub mod mmu;
pub mod once;
pub mod patch;
pub mod phys;
pub mod platform;
pub mod report;
pub mod shmem;
pub mod smp;
pub mod table;
pub mod time;
pub mod translate;
