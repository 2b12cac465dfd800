//! Secondary vCPUs: which exist (`VCPUOP_is_up` answers `ENOENT` past the
//! last), and starting one with `VCPUOP_initialise` (an HVM register
//! context in 64-bit mode: the kernel's entry, stack, CR3, and the boot
//! vCPU's CR0/CR4/EFER) and `VCPUOP_up`. No real-mode trampoline is
//! involved: [`pvops_core::cpu::SecondaryStart::trampoline`] is not used.
//!
//! An HVM guest is different: its firmware (hvmloader) already ran each
//! secondary vCPU once to set it up, so Xen refuses `VCPUOP_initialise`
//! for it (`EEXIST`). There, as on hardware, INIT and STARTUP through the
//! emulated local APIC restart the vCPU at the kernel's trampoline
//! ([`pvops_native::smp::start_at`]); the vCPU's APIC ID comes from the
//! MADT the firmware wrote ([`use_firmware_start`]).

use crate::abi::errno::ENOENT;
use crate::abi::vcpu::{VcpuHvmContext, VcpuHvmX86_64, VCPU_HVM_MODE_64B};
use crate::error::XenError;
use crate::hypercall::Hypercall;
use crate::percpu::{current, slot, MAX_VCPUS};
use crate::warn::warn;
use crate::xen::{Xen, XEN};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use pvops_core::cpu::{CpuId, SecondaryStart, StartCpuError};
use pvops_core::irq::CpuMask;
use pvops_core::time::TimeOps;
use x86_64::registers::control::{Cr0, Cr4};

/// The vCPUs found by [`probe`] (bit = vCPU id).
static POSSIBLE: AtomicU64 = AtomicU64::new(0);

/// No APIC ID known for that vCPU.
const NO_APIC: u32 = u32::MAX;

/// HVM mode: each vCPU's local APIC ID (by vCPU id), or [`NO_APIC`]; all
/// [`NO_APIC`] outside HVM mode, where `VCPUOP_initialise` starts vCPUs.
static FIRMWARE_APIC_IDS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(NO_APIC) }; MAX_VCPUS];
static FIRMWARE_START: AtomicBool = AtomicBool::new(false);

/// The APIC IDs of `madt_cpus`, in the order of the vCPUs they belong to:
/// ascending, as Xen numbers them (vCPU `n` has APIC ID `2n`, and
/// hvmloader lists them in vCPU order).
pub fn apic_ids_by_vcpu(madt_cpus: &CpuMask) -> impl Iterator<Item = u32> + '_ {
    madt_cpus.iter().map(|c| c.0)
}

/// Switches `cpu.start_cpu` to INIT/STARTUP through the local APIC (HVM
/// mode), with the APIC IDs the firmware's MADT lists.
pub fn use_firmware_start(madt_cpus: &CpuMask) {
    for (slot, apic) in FIRMWARE_APIC_IDS.iter().zip(apic_ids_by_vcpu(madt_cpus)) {
        slot.store(apic, Ordering::Relaxed);
    }
    FIRMWARE_START.store(true, Ordering::Release);
}

/// Whether vCPUs are started as hardware CPUs are (HVM mode).
pub fn firmware_start() -> bool {
    FIRMWARE_START.load(Ordering::Acquire)
}

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
    if firmware_start() {
        let apic = FIRMWARE_APIC_IDS[v as usize].load(Ordering::Relaxed);
        if apic == NO_APIC {
            return Err(StartCpuError::NoSuchCpu(cpu));
        }
        return pvops_native::smp::start_at(
            CpuId(apic),
            how,
            <crate::XenCommon as TimeOps>::sched_clock,
        )
        .map_err(|e| match e {
            // Name the vCPU the kernel asked for, not its APIC ID.
            StartCpuError::Timeout(_) => StartCpuError::Timeout(cpu),
            StartCpuError::NoSuchCpu(_) => StartCpuError::NoSuchCpu(cpu),
            other => other,
        });
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
    fn hvm_vcpus_take_the_madt_apic_ids_in_order() {
        // Xen's HVM numbering: vCPU n has APIC ID 2n.
        let mut madt = CpuMask::new();
        for apic in [4, 0, 2] {
            madt.insert(CpuId(apic));
        }
        let ids: std::vec::Vec<u32> = apic_ids_by_vcpu(&madt).collect();
        assert_eq!(ids, [0, 2, 4]);
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
