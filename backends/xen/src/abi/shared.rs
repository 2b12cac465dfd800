//! The shared-info page and `vcpu_info` (`xen.h`, `arch-x86/xen.h`,
//! `arch-x86/xen-x86_64.h`).

use super::evtchn::WORDS;
use pvops_core::abi::pvclock::VcpuTimeInfo;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// vCPUs with a slot in the shared-info page (`XEN_LEGACY_MAX_VCPUS`);
/// others must register a `vcpu_info` elsewhere.
pub const LEGACY_MAX_VCPUS: usize = 32;

/// `struct vcpu_info`: one vCPU's event flags and its pvclock record.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VcpuInfo {
    /// Set by Xen when an event is pending for this vCPU; the guest clears
    /// it before scanning.
    pub evtchn_upcall_pending: u8,
    /// PV guests' upcall mask (HVM guests use RFLAGS.IF instead).
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub pad: [u8; 6],
    /// One bit per word of `evtchn_pending` that may hold work.
    pub evtchn_pending_sel: u64,
    /// `arch_vcpu_info.cr2` (PV only).
    pub arch_cr2: u64,
    /// `arch_vcpu_info.pad`.
    pub arch_pad: u64,
    /// The pvclock record.
    pub time: VcpuTimeInfo,
}
const_assert_eq!(core::mem::size_of::<VcpuInfo>(), 64);
const_assert_eq!(core::mem::offset_of!(VcpuInfo, evtchn_pending_sel), 8);
const_assert_eq!(core::mem::offset_of!(VcpuInfo, time), 32);

/// `struct arch_shared_info` (x86-64).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[allow(missing_docs)]
pub struct ArchSharedInfo {
    pub max_pfn: u64,
    pub pfn_to_mfn_frame_list_list: u64,
    pub nmi_reason: u64,
    pub p2m_cr3: u64,
    pub p2m_vaddr: u64,
    pub p2m_generation: u64,
}
const_assert_eq!(core::mem::size_of::<ArchSharedInfo>(), 48);

/// The wall-clock fields of `struct shared_info`, in order: the wall time
/// at Xen system time 0, under a version counter like pvclock's.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct WallClock {
    /// `wc_version`: odd during an update.
    pub version: u32,
    /// `wc_sec`: low 32 bits of the seconds.
    pub sec: u32,
    /// `wc_nsec`.
    pub nsec: u32,
    /// `wc_sec_hi`: high 32 bits of the seconds (x86-64).
    pub sec_hi: u32,
}
const_assert_eq!(core::mem::size_of::<WallClock>(), 16);

impl WallClock {
    /// Nanoseconds since the Unix epoch at system time 0, saturating.
    /// An `nsec` of a second or more (which Xen never writes) is clamped.
    pub fn epoch_ns(&self) -> u64 {
        let secs = u64::from(self.sec_hi) << 32 | u64::from(self.sec);
        secs.saturating_mul(1_000_000_000)
            .saturating_add(u64::from(self.nsec.min(999_999_999)))
    }
}

/// `struct shared_info` (x86-64).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct SharedInfo {
    /// `vcpu_info` of vCPUs below [`LEGACY_MAX_VCPUS`] until they register
    /// their own.
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// One pending bit per port.
    pub evtchn_pending: [u64; WORDS],
    /// One mask bit per port (guest-written).
    pub evtchn_mask: [u64; WORDS],
    /// `wc_version`, `wc_sec`, `wc_nsec`, `wc_sec_hi`.
    pub wc: WallClock,
    /// `struct arch_shared_info`.
    pub arch: ArchSharedInfo,
}
const_assert_eq!(core::mem::offset_of!(SharedInfo, evtchn_pending), 2048);
const_assert_eq!(core::mem::offset_of!(SharedInfo, evtchn_mask), 2560);
const_assert_eq!(core::mem::offset_of!(SharedInfo, wc), 3072);
const_assert_eq!(core::mem::offset_of!(SharedInfo, arch), 3088);
const_assert_eq!(core::mem::size_of::<SharedInfo>(), 3136);
