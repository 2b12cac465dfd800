//! Host-side harness of pvops: provisions QEMU and Xen, builds the example
//! kernel, boots it in each environment and judges its console.
//!
//! The `cargo xtask` binary and the boot tests of `pvops-tests` both use it:
//! [`kernel::build`] gives the image, [`boot::boot`] runs and judges one
//! environment, [`provision::unavailable`] tells a test what is missing.
//!
//! Modules, one concern each: [`env`](mod@env) (what each environment is),
//! [`provision`] (QEMU, Xen, KVM), [`kernel`] (the image), [`qemu`]
//! (running QEMU under a time bound), [`protocol`] (the console protocol
//! and the verdict), [`boot`](mod@boot) (the three together), [`record`] (what the
//! boot tests report to `cargo xtask test`), [`nested`] (kvm-nested: the
//! outer machine with a real KVM, and its inner runs), [`qmp`] (KVM
//! counters), [`bench`](mod@bench) and [`report`] (benchmarks),
//! [`migrate`] (live migration from one QEMU to another).

pub mod bench;
pub mod boot;
pub mod cpio;
pub mod domu;
pub mod env;
pub mod fuzz;
pub mod kernel;
pub mod loaders;
pub mod migrate;
pub mod nested;
pub mod protocol;
pub mod provision;
pub mod qemu;
pub mod qmp;
pub mod record;
pub mod release;
pub mod report;

pub use boot::{boot, Boot, BootImage, BootOptions, Mode, Plan};
pub use env::{Env, Status};
