//! `__HYPERVISOR_memory_op` (`memory.h`): what this backend needs to place
//! the shared-info page.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `XENMEM_add_to_physmap`.
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// `XENMEM_memory_map`: this domain's pseudo-physical memory map.
pub const XENMEM_MEMORY_MAP: u64 = 9;
/// `XENMAPSPACE_shared_info`.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;

/// `struct xen_add_to_physmap`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct AddToPhysmap {
    /// Which domain's physmap changes ([`super::nr::DOMID_SELF`]).
    pub domid: u16,
    /// Pages, for `XENMAPSPACE_gmfn_range` only.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index into the space (0 for shared info).
    pub idx: u64,
    /// The guest frame where the page appears.
    pub gpfn: u64,
}
const_assert_eq!(core::mem::size_of::<AddToPhysmap>(), 24);
const_assert_eq!(core::mem::offset_of!(AddToPhysmap, space), 4);
const_assert_eq!(core::mem::offset_of!(AddToPhysmap, idx), 8);
const_assert_eq!(core::mem::offset_of!(AddToPhysmap, gpfn), 16);

/// `struct xen_memory_map`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct MemoryMap {
    /// IN: entries the buffer holds; OUT: entries written.
    pub nr_entries: u32,
    /// Padding (C alignment of the handle).
    pub pad: u32,
    /// Guest address of an array of [`E820Entry`].
    pub buffer: u64,
}
const_assert_eq!(core::mem::size_of::<MemoryMap>(), 16);
const_assert_eq!(core::mem::offset_of!(MemoryMap, buffer), 8);

/// One entry of the map, as BIOS E820 gives it (packed: 20 bytes).
#[repr(C, packed)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// E820 type (1 = RAM, 2 = reserved, 3 = ACPI, 4 = NVS, 5 = unusable).
    pub kind: u32,
}
const_assert_eq!(core::mem::size_of::<E820Entry>(), 20);
