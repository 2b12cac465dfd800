//! Xen's CPUID leaves (`arch-x86/cpuid.h`), as offsets from the base where
//! the `XenVMMXenVMM` signature was found (0x40000000, or 0x40000100 when
//! Xen also offers Viridian first).

/// `base + 1`: EAX = major << 16 | minor.
pub const LEAF_VERSION: u32 = 1;
/// `base + 2`: EAX = hypercall pages, EBX = MSR that installs one.
pub const LEAF_HYPERCALL: u32 = 2;
/// `base + 3`: TSC parameters.
pub const LEAF_TSC: u32 = 3;
/// EAX bit of leaf `base + 3`: Xen emulates the TSC (every `rdtsc` and
/// `rdtscp` is a VM exit).
pub const TSC_EMULATED: u32 = 1 << 0;
/// EAX bit of leaf `base + 3`: the host TSC is reliable.
pub const TSC_RELIABLE: u32 = 1 << 1;
/// EAX bit of leaf `base + 3`: `rdtscp` is available.
pub const TSC_RDTSCP: u32 = 1 << 2;
/// `base + 4`: HVM-specific features; EBX = vCPU id, ECX = domain id.
pub const LEAF_HVM: u32 = 4;

bitflags::bitflags! {
    /// EAX of leaf `base + 4` (`XEN_HVM_CPUID_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct HvmFeatures: u32 {
        /// Virtualised APIC registers.
        const APIC_ACCESS_VIRT = 1 << 0;
        /// Virtualised x2APIC accesses.
        const X2APIC_VIRT = 1 << 1;
        /// Memory mapped from other domains has IOMMU entries.
        const IOMMU_MAPPINGS = 1 << 2;
        /// EBX holds the vCPU id.
        const VCPU_ID_PRESENT = 1 << 3;
        /// ECX holds the domain id.
        const DOMID_PRESENT = 1 << 4;
        /// Extended destination IDs in IO-APIC/MSI entries.
        const EXT_DEST_ID = 1 << 5;
        /// `HVMOP_set_evtchn_upcall_vector` works with physical IRQs too.
        const UPCALL_VECTOR = 1 << 6;
    }
}
