//! The memory this backend shares with Xen, and where it lives.
//!
//! ## Which guest frame holds shared info
//! `XENMEM_add_to_physmap` puts Xen's shared-info page at a guest frame
//! the guest chooses; whatever RAM was at that frame is given back to Xen.
//! This backend chooses the frame of [`SHARED_INFO`], a page-aligned
//! page of its own `.bss`: RAM the kernel image already owns, so no memory
//! map has to be searched, nothing else can be using it, and it is
//! reached through the kernel image's mapping. Its physical address is
//! the physical address [`pvops_core::translate`] finds for it
//! (`BootContext::kernel_map`).
//! (Linux does the same with a page of its own.) The `vcpu_info` array and
//! the runstate areas are plain `.bss` too, registered by address.
//!
//! Everything in these pages is written by Xen at any time: Rust code
//! touches them only through [`pvops_core::shmem::ShPtr`]
//! ([`shared_info_ptr`], [`vcpu_info_ptr`]), with volatile copies or, for
//! the event words both sides modify, atomic accesses, and checks only the
//! copies it made.

use crate::abi::shared::{SharedInfo, VcpuInfo, LEGACY_MAX_VCPUS};
use crate::percpu::{slot, MAX_VCPUS};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::shmem::ShPtr;

/// A page-aligned page (or less) shared with Xen.
#[repr(C, align(4096))]
pub struct Page<T>(UnsafeCell<T>);

// SAFETY: the contents are only reached through raw pointers with
// volatile or atomic accesses (see the module documentation); Xen is the
// other writer, and every protocol on these pages (versions, atomic bit
// operations) is built for concurrent access.
unsafe impl<T> Sync for Page<T> {}

impl<T> core::fmt::Debug for Page<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Page({:p})", self.0.get())
    }
}

impl<T> Page<T> {
    /// A page holding `value`.
    pub const fn new(value: T) -> Self {
        Page(UnsafeCell::new(value))
    }

    /// Where the contents are.
    pub const fn as_ptr(&self) -> *mut T {
        self.0.get()
    }
}

/// The page Xen's shared info is mapped over (zeroed `.bss` until then).
pub static SHARED_INFO: Page<[u8; 4096]> = Page(UnsafeCell::new([0; 4096]));

/// One `vcpu_info` per vCPU, registered with `VCPUOP_register_vcpu_info`
/// (64 of 64 bytes: exactly one page, so none crosses a page boundary).
pub static VCPU_INFO: Page<[VcpuInfo; MAX_VCPUS]> = Page(UnsafeCell::new(
    [VcpuInfo {
        evtchn_upcall_pending: 0,
        evtchn_upcall_mask: 0,
        pad: [0; 6],
        evtchn_pending_sel: 0,
        arch_cr2: 0,
        arch_pad: 0,
        time: pvops_core::abi::pvclock::VcpuTimeInfo {
            version: 0,
            pad0: 0,
            tsc_timestamp: 0,
            system_time: 0,
            tsc_to_system_mul: 0,
            tsc_shift: 0,
            flags: 0,
            pad: [0; 2],
        },
    }; MAX_VCPUS],
));
static_assertions::const_assert_eq!(core::mem::size_of::<[VcpuInfo; MAX_VCPUS]>(), 4096);

/// Bit `n`: vCPU `n` uses its slot of [`VCPU_INFO`] (else shared info's).
static REGISTERED: AtomicU64 = AtomicU64::new(0);
/// Whether [`SHARED_INFO`] holds Xen's page.
static MAPPED: AtomicU64 = AtomicU64::new(0);

/// The guest-physical address of `p`, a static of this image, for Xen
/// (the whole object must be physically contiguous; see
/// [`pvops_core::translate`]).
pub fn paddr_of<T>(p: *const T) -> Result<u64, pvops_core::translate::TranslateError> {
    pvops_core::translate::phys_of(p)
}

/// Records that Xen's shared info now backs [`SHARED_INFO`].
pub fn set_mapped() {
    MAPPED.store(1, Ordering::Release);
}

/// Xen's shared info, once mapped.
#[inline]
pub fn shared_info() -> Option<*mut SharedInfo> {
    (MAPPED.load(Ordering::Acquire) != 0).then(|| SHARED_INFO.as_ptr() as *mut SharedInfo)
}

/// This backend's slot for vCPU `vcpu` in [`VCPU_INFO`].
pub fn own_vcpu_info(vcpu: u32) -> Option<*mut VcpuInfo> {
    slot(vcpu).map(|i| (VCPU_INFO.as_ptr() as *mut VcpuInfo).wrapping_add(i))
}

/// Records that `vcpu` now uses [`own_vcpu_info`].
pub fn set_registered(vcpu: u32) {
    if let Some(i) = slot(vcpu) {
        REGISTERED.fetch_or(1 << i, Ordering::Release);
    }
}

/// The `vcpu_info` Xen uses for `vcpu`: its registered slot, else its
/// legacy slot in shared info; `None` for a vCPU with neither.
#[inline]
pub fn vcpu_info(vcpu: u32) -> Option<*mut VcpuInfo> {
    let i = slot(vcpu)?;
    if REGISTERED.load(Ordering::Acquire) & (1 << i) != 0 {
        return own_vcpu_info(vcpu);
    }
    let si = shared_info()?;
    // `vcpu_info` is the first field of shared info.
    (i < LEGACY_MAX_VCPUS).then(|| (si as *mut VcpuInfo).wrapping_add(i))
}

/// Xen's shared info for the audited accessor, once mapped.
#[inline]
pub fn shared_info_ptr() -> Option<ShPtr<SharedInfo>> {
    let si = shared_info()?;
    // SAFETY: `si` is `SHARED_INFO`, a page-aligned static page (4096 bytes,
    // more than a SharedInfo) that Xen's page backs for good once mapped;
    // Rust reaches its contents only through ShPtr and atomics.
    Some(unsafe { ShPtr::new(si) })
}

/// The `vcpu_info` Xen uses for `vcpu` ([`vcpu_info`]) for the audited
/// accessor.
#[inline]
pub fn vcpu_info_ptr(vcpu: u32) -> Option<ShPtr<VcpuInfo>> {
    let vi = vcpu_info(vcpu)?;
    // SAFETY: `vi` is a slot of `VCPU_INFO` or of `SHARED_INFO` (both
    // static, 64-byte slots, suitably aligned, mapped for good); Rust
    // reaches them only through ShPtr and atomics.
    Some(unsafe { ShPtr::new(vi) })
}
