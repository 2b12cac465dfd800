//! EOI without an exit (`hv-apic-msrs`, `hv-apic-assist`): each CPU
//! registers a VP assist page, whose APIC assist word the hypervisor sets
//! (bit 0) when the interrupt being delivered needs no EOI write; the EOI
//! op then clears the word (one atomic exchange, as the word is shared)
//! and does nothing else. Otherwise it writes the synthetic EOI MSR,
//! which the hypervisor handles without decoding an APIC access. A CPU
//! whose assist page did not register (or whose APIC ID is beyond
//! [`ASSIST_CPUS`]) writes the MSR.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::shmem::ShPtr;

use crate::abi::{self, msr, VpAssistHead};
use crate::hypercall::{area_paddr, refuse, HvError, Hypervisor, Real};

/// One CPU's VP assist page (the hypervisor uses the whole page).
#[repr(C, align(4096))]
pub(crate) struct AssistPage(UnsafeCell<[u8; 4096]>);

// SAFETY: written by the hypervisor and, for the assist word, by its own
// CPU with atomics only (ShPtr); never through a Rust reference.
unsafe impl Sync for AssistPage {}

/// CPUs (by APIC ID) that get an assist page: a page each is 4 KiB of
/// `.bss`, so not all [`pvops_core::irq::MAX_CPUS`]; CPUs beyond write the
/// EOI MSR.
pub const ASSIST_CPUS: usize = 64;

static PAGES: [AssistPage; ASSIST_CPUS] =
    [const { AssistPage(UnsafeCell::new([0; 4096])) }; ASSIST_CPUS];
/// 1 where the CPU's page is registered.
static ON: [AtomicU8; ASSIST_CPUS] = [const { AtomicU8::new(0) }; ASSIST_CPUS];

fn assist_word(cpu: CpuId) -> Option<ShPtr<u32>> {
    let page = PAGES.get(cpu.0 as usize)?;
    // SAFETY: a page-aligned static of 4096 bytes; Rust only touches it
    // through ShPtr atomics on the assist word.
    let head: ShPtr<VpAssistHead> = unsafe { ShPtr::new(page.0.get().cast()) };
    Some(head.field::<u32>(core::mem::offset_of!(VpAssistHead, apic_assist)))
}

/// Registers `cpu`'s assist page (this CPU's).
pub fn register<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> Result<(), HvError> {
    let page = PAGES
        .get(cpu.0 as usize)
        .ok_or(HvError::CpuOutOfRange(cpu.0))?;
    let pa = area_paddr(h, page, msr::VP_ASSIST_PAGE)?;
    refuse(h, crate::fault_points::APIC_ASSIST, msr::VP_ASSIST_PAGE)?;
    // SAFETY: the APIC access privilege was checked; the page is a static
    // of this CPU's the host may write for ever.
    unsafe { h.write_msr(msr::VP_ASSIST_PAGE, pa | abi::PAGE_ENABLE) };
    ON[cpu.0 as usize].store(1, Ordering::Relaxed);
    Ok(())
}

/// The EOI for `cpu`: returns whether the MSR had to be written.
pub fn eoi_on<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> bool {
    let on = ON
        .get(cpu.0 as usize)
        .is_some_and(|o| o.load(Ordering::Relaxed) != 0);
    if on {
        if let Some(word) = assist_word(cpu) {
            if word.swap(0, Ordering::AcqRel) & abi::APIC_ASSIST_NO_EOI != 0 {
                return false;
            }
        }
    }
    // SAFETY: the APIC access privilege was checked at init; 0 is the EOI.
    unsafe { h.write_msr(msr::EOI, 0) };
    true
}

/// The `irq.eoi` op with the assist page.
pub fn eoi_assist() {
    eoi_on(&Real, crate::this_cpu());
}

/// The `irq.eoi` op through the EOI MSR alone (no CPU lookup).
pub fn eoi_msr() {
    // SAFETY: the APIC access privilege was checked at init.
    unsafe { Real.write_msr(msr::EOI, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;

    #[test]
    fn the_assist_bit_saves_the_write() {
        let h = FakeHv::default();
        let cpu = CpuId(6);
        // Not registered: the MSR.
        assert!(eoi_on(&h, cpu));
        register(&h, cpu).unwrap();
        let page = &PAGES[6] as *const _ as u64;
        assert_eq!(h.writes(msr::VP_ASSIST_PAGE), [page | 1]);
        // The host said no EOI is needed: nothing written, word cleared.
        let w = assist_word(cpu).unwrap();
        w.store(1, Ordering::Relaxed);
        assert!(!eoi_on(&h, cpu));
        assert_eq!(w.load(Ordering::Relaxed), 0);
        // Otherwise the MSR.
        assert!(eoi_on(&h, cpu));
        assert_eq!(h.writes(msr::EOI).len(), 2);
    }

    #[test]
    fn refused_or_out_of_range() {
        let h = FakeHv::default();
        h.faults
            .configure(Some("hyperv.apic-assist"), crate::fault_points::ALL);
        assert_eq!(
            register(&h, CpuId(7)),
            Err(HvError::Refused {
                msr: msr::VP_ASSIST_PAGE
            })
        );
        assert_eq!(register(&h, CpuId(999)), Err(HvError::CpuOutOfRange(999)));
        assert!(h.writes(msr::VP_ASSIST_PAGE).is_empty());
    }
}
