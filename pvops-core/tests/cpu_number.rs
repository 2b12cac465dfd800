//! Who owns the CPU-number registers: recorded once, read by backends.
//! (Its own test binary: the record is process-wide.)

use pvops_core::cpu::{self, CpuId, CpuNumber};
use std::sync::atomic::{AtomicU32, Ordering};

static RECORDED: AtomicU32 = AtomicU32::new(u32::MAX);

fn kernels_record() -> Option<CpuId> {
    match RECORDED.load(Ordering::Relaxed) {
        u32::MAX => None,
        n => Some(CpuId(n)),
    }
}

#[test]
fn the_kernels_record_is_asked_only_when_it_owns_the_registers() {
    cpu::record_cpu_number(CpuNumber::Pvops);
    assert!(!cpu::kernel_owns_cpu_number());
    assert_eq!(cpu::kernel_cpu_number(), None);

    cpu::record_cpu_number(CpuNumber::Kernel(kernels_record));
    assert!(cpu::kernel_owns_cpu_number());
    // Not recorded yet: the backend asks the platform instead.
    assert_eq!(cpu::kernel_cpu_number(), None);
    RECORDED.store(3, Ordering::Relaxed);
    assert_eq!(cpu::kernel_cpu_number(), Some(CpuId(3)));

    cpu::record_cpu_number(CpuNumber::default());
    assert!(!cpu::kernel_owns_cpu_number());
}
