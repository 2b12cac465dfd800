//! HVM mode: a kernel that firmware (hvmloader and SeaBIOS, then a loader
//! such as GRUB) started in an HVM domain, entered through
//! [`pvops_core::backend::BootEntry::Other`].
//!
//! Everything Xen offers a PVH guest works the same there (vmcall/vmmcall
//! hypercalls, shared info, `vcpu_info`, event channels on the callback
//! vector, pvclock, the one-shot timer, the PV console and xenstore rings
//! in the HVM parameters), and the rest of the backend serves it as it
//! serves PVH. What differs is what the firmware left behind:
//! - the emulated 8259 PICs, programmed with vectors over the CPU
//!   exceptions and an emulated PIT ticking on line 0: they are remapped
//!   and masked before interrupts are ever enabled;
//! - secondary vCPUs that hvmloader already ran once: Xen refuses
//!   `VCPUOP_initialise` for them, so they start as hardware CPUs do (see
//!   `smp`), at the APIC IDs the firmware's MADT lists.

use crate::warn::warn;
use pvops_core::backend::BootContext;
use pvops_core::phys::DirectMap;

/// Masks the PICs and learns the vCPUs' APIC IDs from the MADT (without
/// one, the boot vCPU runs alone, with a warning).
pub fn take_over_firmware_devices(ctx: &BootContext<'_>) {
    pvops_native::pic::disable();
    // SAFETY: the BootContext contract maps the low 4 GiB, where the
    // firmware put its ACPI tables, readable at phys + phys_offset.
    let mem = unsafe { DirectMap::new(ctx.phys_offset, 1 << 32) };
    match pvops_native::acpi::find_cpus(&mem, ctx.rsdp) {
        Ok((cpus, _)) if !cpus.is_empty() => crate::smp::use_firmware_start(&cpus),
        Ok(_) => {
            warn(format_args!(
                "xen: hvm: the MADT lists no CPU: secondary vCPUs cannot be started"
            ));
            crate::smp::use_firmware_start(&pvops_core::irq::CpuMask::new());
        }
        Err(e) => {
            warn(format_args!(
                "xen: hvm: no MADT ({e}): secondary vCPUs cannot be started"
            ));
            crate::smp::use_firmware_start(&pvops_core::irq::CpuMask::new());
        }
    }
}
