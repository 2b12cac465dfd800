//! PV TLB flush: a remote flush does not interrupt a vCPU the host has
//! preempted. Instead it sets `KVM_VCPU_FLUSH_TLB` in that vCPU's
//! steal-time `preempted` byte (with a compare-exchange, so a vCPU that
//! starts running meanwhile is not skipped) and the host flushes its TLB
//! before running it again. The others get the usual IPI flush
//! ([`pvops_core::smp::flush_tlb_by_ipi`]).

use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::CpuMask;
use pvops_core::mmu::TlbRange;

use crate::abi::{KVM_VCPU_FLUSH_TLB, KVM_VCPU_PREEMPTED};

/// If the vCPU owning `preempted` is preempted, asks the host to flush its
/// TLB when it next runs; `true` if it did (no IPI needed).
pub fn defer_flush(preempted: &AtomicU8) -> bool {
    let state = preempted.load(Ordering::Acquire);
    if state & KVM_VCPU_PREEMPTED == 0 {
        return false;
    }
    preempted
        .compare_exchange(
            state,
            state | KVM_VCPU_FLUSH_TLB,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
}

/// The CPUs of `cpus` that still need an IPI: `me` (flushed locally by
/// the IPI path) and every CPU whose flush could not be deferred.
pub fn needs_ipi<'a>(
    cpus: &CpuMask,
    me: CpuId,
    preempted: impl Fn(CpuId) -> Option<&'a AtomicU8>,
) -> CpuMask {
    let mut out = *cpus;
    for cpu in cpus.iter().filter(|c| *c != me) {
        if preempted(cpu).is_some_and(defer_flush) {
            out.remove(cpu);
        }
    }
    out
}

/// The `mmu.flush_tlb_others` op with PV TLB flush on.
pub fn flush_tlb_others(cpus: &CpuMask, range: TlbRange) {
    // No need to know which CPU this is (an exit on hosts without rdtscp
    // or rdpid): the running CPU is never preempted, so it always stays in
    // the IPI set, and flush_tlb_by_ipi flushes it locally.
    let ipi = needs_ipi(cpus, CpuId(u32::MAX), crate::steal_time::preempted_byte);
    pvops_core::smp::flush_tlb_by_ipi(&ipi, range)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_vcpu_is_not_deferred() {
        let p = AtomicU8::new(0);
        assert!(!defer_flush(&p));
        assert_eq!(p.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn preempted_vcpu_gets_the_flush_bit() {
        let p = AtomicU8::new(KVM_VCPU_PREEMPTED);
        assert!(defer_flush(&p));
        assert_eq!(
            p.load(Ordering::Relaxed),
            KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB
        );
        // Already marked: marking again is harmless and still defers.
        assert!(defer_flush(&p));
    }

    #[test]
    fn split_between_ipi_and_deferred() {
        let bytes = [
            AtomicU8::new(0),                  // cpu 0: me
            AtomicU8::new(KVM_VCPU_PREEMPTED), // cpu 1: preempted
            AtomicU8::new(0),                  // cpu 2: running
            AtomicU8::new(KVM_VCPU_PREEMPTED), // cpu 3: preempted, no steal time
        ];
        let mut cpus = CpuMask::new();
        for i in 0..4 {
            cpus.insert(CpuId(i));
        }
        let ipi = needs_ipi(&cpus, CpuId(0), |c| {
            (c.0 != 3).then(|| &bytes[c.0 as usize])
        });
        let v: std::vec::Vec<u32> = ipi.iter().map(|c| c.0).collect();
        assert_eq!(v, [0, 2, 3]);
        assert_eq!(
            bytes[1].load(Ordering::Relaxed),
            KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB
        );
        assert_eq!(bytes[2].load(Ordering::Relaxed), 0);
        assert_eq!(bytes[3].load(Ordering::Relaxed), KVM_VCPU_PREEMPTED);
        // Me preempted (impossible, but): never deferred, never marked.
        bytes[0].store(KVM_VCPU_PREEMPTED, Ordering::Relaxed);
        let ipi = needs_ipi(&cpus, CpuId(0), |c| Some(&bytes[c.0 as usize]));
        assert!(ipi.contains(CpuId(0)));
        assert_eq!(bytes[0].load(Ordering::Relaxed), KVM_VCPU_PREEMPTED);
    }

    #[test]
    fn host_clearing_the_byte_races_safely() {
        // The host resumed the vCPU between our load and the exchange:
        // the exchange fails, so the vCPU gets an IPI.
        let p = AtomicU8::new(KVM_VCPU_PREEMPTED);
        let state = p.load(Ordering::Relaxed);
        p.store(0, Ordering::Relaxed); // host: running again
        assert!(p
            .compare_exchange(
                state,
                state | KVM_VCPU_FLUSH_TLB,
                Ordering::AcqRel,
                Ordering::Relaxed
            )
            .is_err());
        assert!(!defer_flush(&p));
    }
}
