//! Secondary vCPUs: which exist (`VCPUOP_is_up` answers `ENOENT` past the
//! last), and starting one with `VCPUOP_initialise` (an HVM register
//! context in 64-bit mode: the kernel's entry, stack, CR3, and the boot
//! vCPU's CR0/CR4/EFER) and `VCPUOP_up`. No real-mode trampoline is
//! involved: [`pvops_core::cpu::SecondaryStart::trampoline`] is not used.

use crate::abi::errno::ENOENT;
use crate::abi::vcpu::{VcpuHvmContext, VcpuHvmX86_64, VCPU_HVM_MODE_64B};
use crate::error::XenError;
use crate::hypercall::Hypercall;
use crate::percpu::{current, slot, MAX_VCPUS};
use crate::warn::warn;
use crate::xen::{Xen, XEN};
use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::cpu::{CpuId, SecondaryStart, StartCpuError};
use pvops_core::irq::CpuMask;
use x86_64::registers::control::{Cr0, Cr4};

/// The vCPUs found by [`probe`] (bit = vCPU id).
static POSSIBLE: AtomicU64 = AtomicU64::new(0);

/// Asks Xen which vCPUs the domain has: ids from 0 up until `ENOENT`
/// (at most [`MAX_VCPUS`]). Any other error ends the probe; what was found
/// so far (at least `me`) stays, and the error is returned with it.
pub fn probe<H: Hypercall>(xen: &Xen<H>, me: u32) -> (u64, Option<XenError>) {
    let mut found = 0u64;
    if let Some(i) = slot(me) {
        found |= 1 << i;
    }
    for v in 0..MAX_VCPUS as u32 {
        match xen.vcpu_is_up(v) {
            Ok(_) => found |= 1 << v,
            Err(e) if e.errno == ENOENT => return (found, None),
            Err(e) => return (found, Some(e)),
        }
    }
    (found, None)
}

/// Records the vCPUs found.
pub fn set_possible(bits: u64) {
    POSSIBLE.store(bits, Ordering::Relaxed);
}

/// The `cpu.possible_cpus` op.
pub fn possible() -> CpuMask {
    let bits = POSSIBLE.load(Ordering::Relaxed);
    let mut m = CpuMask::new();
    for v in 0..MAX_VCPUS as u32 {
        if bits & (1 << v) != 0 {
            m.insert(CpuId(v));
        }
    }
    m
}

/// The register context that starts a vCPU at `how.entry(how.arg)`.
pub fn context(how: &SecondaryStart, cr0: u64, cr4: u64, efer: u64) -> VcpuHvmContext {
    VcpuHvmContext {
        mode: VCPU_HVM_MODE_64B,
        pad: 0,
        x86_64: VcpuHvmX86_64 {
            rip: how.entry as usize as u64,
            // As if `entry` had been called: the return-address slot below
            // a 16-byte-aligned top.
            rsp: how.stack_top.wrapping_sub(8),
            rdi: how.arg,
            rflags: 0x2,
            cr0,
            cr3: how.cr3,
            cr4,
            efer,
            ..Default::default()
        },
        union_tail: [0; 8],
    }
}

/// The `cpu.start_cpu` op.
pub fn start(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
    let v = cpu.0;
    if slot(v).is_none() || !possible().contains(cpu) || v == current() {
        return Err(StartCpuError::NoSuchCpu(cpu));
    }
    // SAFETY: EFER exists on every x86-64 CPU; reading it has no effect.
    let efer = unsafe { x86_64::registers::model_specific::Msr::new(0xc000_0080).read() };
    let ctx = context(how, Cr0::read_raw(), Cr4::read_raw(), efer);
    XEN.vcpu_initialise(v, &ctx)
        .map_err(|e| StartCpuError::Refused(cpu, e.detail()))?;
    XEN.vcpu_up(v)
        .map_err(|e| StartCpuError::Refused(cpu, e.detail()))
}

/// The `cpu.init_secondary` op: the local APIC, then this vCPU's Xen
/// state.
pub fn init_secondary() {
    // SAFETY: the APIC is reached as at boot (x2APIC MSRs, or the page at
    // phys + phys_offset that the BootContext contract maps); this runs
    // once on the new vCPU before it enables interrupts.
    unsafe { pvops_native::apic::init_secondary(crate::phys_offset()) };
    // TSC_AUX is not tagged on this vCPU yet: the slow way.
    let me = crate::percpu::current_slow();
    if let Err(e) = crate::setup::setup_vcpu(me) {
        warn(format_args!(
            "xen: cpu {me}: {e}: its timer, IPIs and lock kicks do not work"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::nr;
    use crate::hypercall::tests::FakeXen;

    fn entry(_: u64) -> ! {
        unreachable!()
    }
    extern "C" fn entry_c(a: u64) -> ! {
        entry(a)
    }

    #[test]
    fn probe_stops_at_enoent() {
        let x = Xen(FakeXen::new(|op, a| {
            assert_eq!((op, a[0]), (nr::VCPU_OP, crate::abi::vcpu::VCPUOP_IS_UP));
            if a[1] < 3 {
                i64::from(a[1] == 0)
            } else {
                -2
            }
        }));
        assert_eq!(probe(&x, 0), (0b111, None));
    }

    #[test]
    fn probe_error_keeps_the_boot_cpu() {
        let x = Xen(FakeXen::new(|_, _| -38));
        let (found, err) = probe(&x, 0);
        assert_eq!(found, 1);
        assert_eq!(err, Some(XenError::NOSYS));
    }

    #[test]
    fn start_context_is_64bit_at_the_entry() {
        let how = SecondaryStart {
            entry: entry_c,
            arg: 3,
            stack_top: 0x20_0000,
            cr3: 0x1000,
            trampoline: 0,
        };
        let c = context(&how, 0x8005_0033, 0x20, 0xd01);
        assert_eq!(c.mode, VCPU_HVM_MODE_64B);
        assert_eq!(c.pad, 0);
        // The very pointer handed in (a fresh `entry_c as usize` may differ:
        // function addresses are not unique, and Miri shows it).
        assert_eq!(c.x86_64.rip, how.entry as usize as u64);
        assert_eq!(c.x86_64.rsp % 16, 8);
        assert_eq!(c.x86_64.rdi, 3);
        assert_eq!(c.x86_64.rflags, 2, "interrupts off");
        assert_eq!(
            (c.x86_64.cr3, c.x86_64.cr4, c.x86_64.efer),
            (0x1000, 0x20, 0xd01)
        );
    }
}
