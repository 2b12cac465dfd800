//! `__HYPERVISOR_xen_version` sub-operations and feature bits
//! (`version.h`, `features.h`).

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XENVER_version`: returns major << 16 | minor.
pub const XENVER_VERSION: u64 = 0;
/// `XENVER_get_features`: fills a [`FeatureInfo`].
pub const XENVER_GET_FEATURES: u64 = 6;

/// `struct xen_feature_info`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FeatureInfo {
    /// IN: which 32-bit submap.
    pub submap_idx: u32,
    /// OUT: the submap.
    pub submap: u32,
}
const_assert_eq!(core::mem::size_of::<FeatureInfo>(), 8);

bitflags::bitflags! {
    /// Submap 0 of `XENVER_get_features` (`XENFEAT_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct XenFeatures: u32 {
        /// `XENFEAT_writable_page_tables`.
        const WRITABLE_PAGE_TABLES = 1 << 0;
        /// `XENFEAT_writable_descriptor_tables`.
        const WRITABLE_DESCRIPTOR_TABLES = 1 << 1;
        /// `XENFEAT_auto_translated_physmap`.
        const AUTO_TRANSLATED_PHYSMAP = 1 << 2;
        /// `XENFEAT_supervisor_mode_kernel`.
        const SUPERVISOR_MODE_KERNEL = 1 << 3;
        /// `XENFEAT_pae_pgdir_above_4gb`.
        const PAE_PGDIR_ABOVE_4GB = 1 << 4;
        /// `XENFEAT_mmu_pt_update_preserve_ad`.
        const MMU_PT_UPDATE_PRESERVE_AD = 1 << 5;
        /// `XENFEAT_highmem_assist`.
        const HIGHMEM_ASSIST = 1 << 6;
        /// `XENFEAT_gnttab_map_avail_bits`.
        const GNTTAB_MAP_AVAIL_BITS = 1 << 7;
        /// `XENFEAT_hvm_callback_vector`: `HVM_PARAM_CALLBACK_IRQ` takes a
        /// vector.
        const HVM_CALLBACK_VECTOR = 1 << 8;
        /// `XENFEAT_hvm_safe_pvclock`: the pvclock in `vcpu_info` is usable
        /// by an HVM guest.
        const HVM_SAFE_PVCLOCK = 1 << 9;
        /// `XENFEAT_hvm_pirqs`.
        const HVM_PIRQS = 1 << 10;
        /// `XENFEAT_dom0`: this is the initial (hardware) domain.
        const DOM0 = 1 << 11;
        /// `XENFEAT_grant_map_identity`.
        const GRANT_MAP_IDENTITY = 1 << 12;
        /// `XENFEAT_memory_op_vnode_supported`.
        const MEMORY_OP_VNODE_SUPPORTED = 1 << 13;
        /// `XENFEAT_ARM_SMCCC_supported`.
        const ARM_SMCCC_SUPPORTED = 1 << 14;
        /// `XENFEAT_linux_rsdp_unrestricted`.
        const LINUX_RSDP_UNRESTRICTED = 1 << 15;
        /// `XENFEAT_not_direct_mapped`.
        const NOT_DIRECT_MAPPED = 1 << 16;
        /// `XENFEAT_direct_mapped`.
        const DIRECT_MAPPED = 1 << 17;
    }
}
