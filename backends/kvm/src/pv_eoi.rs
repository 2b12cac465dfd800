//! PV EOI: each vCPU registers a 4-byte word with `MSR_KVM_PV_EOI_EN`.
//! When the host injects an interrupt that needs no APIC EOI write it sets
//! bit 0; the guest then signals EOI by clearing the bit, with no VM exit.
//! Test and clear must be one atomic instruction: the host may set or
//! clear the bit whenever this vCPU is not running.
//!
//! Shared-memory rule ([`pvops_core::shmem`]): the word is never read on
//! its own. Its only accesses are the zeroing store at registration and
//! the atomic `fetch_and` whose returned old value is the single copy the
//! EOI decision is made on; a separate read before the clear could see the
//! bit set and then clear one the host had meanwhile withdrawn (or the
//! reverse), so the exemption from copy-then-check is the protocol itself.

use core::sync::atomic::{AtomicU32, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::MAX_CPUS;

use crate::abi::{KVM_PV_EOI_BIT, KVM_PV_EOI_ENABLED, MSR_KVM_PV_EOI_EN};
use crate::hypercall::{Hypervisor, KvmError};
use crate::percpu::{this_cpu, PerCpu};

/// One vCPU's PV EOI word, alone in its cache line.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct EoiWord(AtomicU32);

pub(crate) static WORDS: PerCpu<EoiWord> =
    PerCpu::new([const { EoiWord(AtomicU32::new(0)) }; MAX_CPUS]);

/// Clears the host's "EOI pending" bit atomically; `true` if it was set
/// (the EOI is done, no APIC write needed).
#[inline]
pub fn test_and_clear(word: &AtomicU32) -> bool {
    word.fetch_and(!KVM_PV_EOI_BIT, Ordering::AcqRel) & KVM_PV_EOI_BIT != 0
}

/// Signals end of interrupt: clears the PV bit if the host set it, else
/// calls `apic_eoi`. Without a word (PV EOI not registered on this CPU)
/// always `apic_eoi`.
#[inline]
pub fn eoi_with(word: Option<&AtomicU32>, apic_eoi: impl FnOnce()) {
    if !word.is_some_and(test_and_clear) {
        apic_eoi()
    }
}

/// Registers `cpu`'s word (zeroed, as the host requires).
pub(crate) fn register<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> Result<(), KvmError> {
    let word = WORDS.get(cpu).ok_or(KvmError::CpuOutOfRange(cpu.0))?;
    word.0.store(0, Ordering::Relaxed);
    let paddr = crate::hypercall::area_paddr(h, word as *const EoiWord, MSR_KVM_PV_EOI_EN)?;
    if !paddr.is_multiple_of(4) {
        return Err(KvmError::Misaligned {
            msr: MSR_KVM_PV_EOI_EN,
            paddr,
        });
    }
    crate::hypercall::refuse(h, crate::fault_points::PV_EOI, MSR_KVM_PV_EOI_EN)?;
    // SAFETY: a zeroed, 4-aligned word in a static of this crate, in RAM;
    // Rust only touches it atomically.
    unsafe { h.write_msr(MSR_KVM_PV_EOI_EN, paddr | KVM_PV_EOI_ENABLED) };
    crate::registrations::record(
        cpu,
        crate::registrations::Area::PvEoi,
        paddr | KVM_PV_EOI_ENABLED,
    );
    Ok(())
}

/// The `irq.eoi` op. A CPU whose word was never registered finds it 0 and
/// writes the APIC EOI.
pub fn eoi() {
    let word = WORDS.get(this_cpu()).map(|w| &w.0);
    eoi_with(word, crate::native::ops().irq.eoi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::cell::Cell;

    #[test]
    fn skips_apic_write_when_host_set_the_bit() {
        let w = AtomicU32::new(KVM_PV_EOI_BIT);
        let writes = Cell::new(0);
        eoi_with(Some(&w), || writes.set(writes.get() + 1));
        assert_eq!(writes.get(), 0);
        assert_eq!(w.load(Ordering::Relaxed), 0, "bit cleared");
        // Bit now clear: the next EOI needs the APIC write.
        eoi_with(Some(&w), || writes.set(writes.get() + 1));
        assert_eq!(writes.get(), 1);
    }

    #[test]
    fn other_bits_are_left_alone() {
        let w = AtomicU32::new(0xf0 | KVM_PV_EOI_BIT);
        assert!(test_and_clear(&w));
        assert_eq!(w.load(Ordering::Relaxed), 0xf0);
        assert!(!test_and_clear(&w));
        assert_eq!(w.load(Ordering::Relaxed), 0xf0);
    }

    #[test]
    fn no_word_always_writes_apic() {
        let writes = Cell::new(0);
        eoi_with(None, || writes.set(writes.get() + 1));
        assert_eq!(writes.get(), 1);
    }

    #[test]
    fn register_writes_msr_with_enable_bit() {
        let h = crate::hypercall::tests::FakeHv::default();
        register(&h, CpuId(3)).unwrap();
        let (msr, val) = h.msrs.borrow()[0];
        assert_eq!(msr, MSR_KVM_PV_EOI_EN);
        assert_eq!(val & 1, 1);
        assert_eq!(val & !1, &WORDS.get(CpuId(3)).unwrap().0 as *const _ as u64);
        assert_eq!(register(&h, CpuId(256)), Err(KvmError::CpuOutOfRange(256)));
        assert_eq!(h.msrs.borrow().len(), 1);
    }
}
