//! The raw KVM guest ABI: CPUID leaves, MSR numbers and values, hypercall
//! numbers and return codes, and the shared steal-time record.
//!
//! Numbers are from Linux's `Documentation/virt/kvm/x86/cpuid.rst`,
//! `msr.rst` and `hypercalls.rst` (and the UAPI `kvm_para.h` they describe).
//! The pvclock records kvmclock uses are hypervisor-neutral and live in
//! [`pvops_core::abi::pvclock`].

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The 12-byte signature at the KVM base leaf (EBX, ECX, EDX).
pub const KVM_SIGNATURE: &[u8; 12] = b"KVMKVMKVM\0\0\0";

/// Offset of the features leaf from the KVM base (`KVM_CPUID_FEATURES`,
/// 0x40000001 at the usual base).
pub const CPUID_FEATURES_OFFSET: u32 = 1;

/// `MSR_KVM_WALL_CLOCK_NEW`: write the physical address (4-byte aligned) of
/// a `pvclock_wall_clock`; the host fills it at the write.
pub const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// `MSR_KVM_SYSTEM_TIME_NEW`: physical address (4-byte aligned) of this
/// vCPU's `pvclock_vcpu_time_info`, plus [`KVM_MSR_ENABLED`].
pub const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// `MSR_KVM_ASYNC_PF_EN` (not used: see the crate docs).
pub const MSR_KVM_ASYNC_PF_EN: u32 = 0x4b56_4d02;
/// `MSR_KVM_STEAL_TIME`: physical address (64-byte aligned) of this vCPU's
/// [`KvmStealTime`], plus [`KVM_MSR_ENABLED`].
pub const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// `MSR_KVM_PV_EOI_EN`: physical address (4-byte aligned) of this vCPU's
/// PV EOI word, plus [`KVM_PV_EOI_ENABLED`].
pub const MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;
/// `MSR_KVM_POLL_CONTROL`: bit 0 enables (1) or disables (0) host-side
/// polling when the vCPU halts.
pub const MSR_KVM_POLL_CONTROL: u32 = 0x4b56_4d05;
/// `MSR_KVM_ASYNC_PF_INT` (not used).
pub const MSR_KVM_ASYNC_PF_INT: u32 = 0x4b56_4d06;
/// `MSR_KVM_ASYNC_PF_ACK` (not used).
pub const MSR_KVM_ASYNC_PF_ACK: u32 = 0x4b56_4d07;
/// `MSR_KVM_MIGRATION_CONTROL` (not used).
pub const MSR_KVM_MIGRATION_CONTROL: u32 = 0x4b56_4d08;

/// Bit 0 of the system-time and steal-time MSRs: the area is enabled.
pub const KVM_MSR_ENABLED: u64 = 1;
/// Bit 0 of `MSR_KVM_PV_EOI_EN`: PV EOI is enabled (bit 1 is reserved).
pub const KVM_PV_EOI_ENABLED: u64 = 1;
/// Bit 0 of the PV EOI word: the host says the APIC EOI write may be
/// skipped (clearing the bit signals the EOI).
pub const KVM_PV_EOI_BIT: u32 = 1;
/// `MSR_KVM_POLL_CONTROL` value that keeps host-side halt polling on.
pub const KVM_POLL_CONTROL_HOST_POLL: u64 = 1;

/// Bit 0 of [`KvmStealTime::preempted`]: the vCPU is not running.
pub const KVM_VCPU_PREEMPTED: u8 = 1 << 0;
/// Bit 1 of [`KvmStealTime::preempted`]: set by another vCPU to ask the
/// host to flush this vCPU's TLB before it runs again.
pub const KVM_VCPU_FLUSH_TLB: u8 = 1 << 1;

/// `KVM_HC_VAPIC_POLL_IRQ`.
pub const KVM_HC_VAPIC_POLL_IRQ: u64 = 1;
/// `KVM_HC_MMU_OP` (deprecated).
pub const KVM_HC_MMU_OP: u64 = 2;
/// `KVM_HC_KICK_CPU`: a0 = flags (0), a1 = APIC ID of the vCPU to wake.
pub const KVM_HC_KICK_CPU: u64 = 5;
/// `KVM_HC_CLOCK_PAIRING`.
pub const KVM_HC_CLOCK_PAIRING: u64 = 9;
/// `KVM_HC_SEND_IPI`: a0/a1 = low/high 64 bits of a destination bitmap,
/// a2 = APIC ID of bit 0, a3 = ICR value. Returns how many vCPUs got it.
pub const KVM_HC_SEND_IPI: u64 = 10;
/// `KVM_HC_SCHED_YIELD`: a0 = APIC ID of a preempted vCPU to yield to.
pub const KVM_HC_SCHED_YIELD: u64 = 11;
/// `KVM_HC_MAP_GPA_RANGE`.
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;

/// Destinations one `KVM_HC_SEND_IPI` call can name in 64-bit mode.
pub const SEND_IPI_CLUSTER: u32 = 128;

/// Hypercall return codes (the host returns their negation).
pub mod errno {
    /// Unknown hypercall (`KVM_ENOSYS`).
    pub const KVM_ENOSYS: i64 = 1000;
    /// Bad guest address (`KVM_EFAULT`).
    pub const KVM_EFAULT: i64 = 14;
    /// Bad argument (`KVM_EINVAL`).
    pub const KVM_EINVAL: i64 = 22;
    /// Argument too large (`KVM_E2BIG`).
    pub const KVM_E2BIG: i64 = 7;
    /// Not allowed, e.g. from CPL > 0 (`KVM_EPERM`).
    pub const KVM_EPERM: i64 = 1;
    /// Not supported (`KVM_EOPNOTSUPP`).
    pub const KVM_EOPNOTSUPP: i64 = 95;
}

/// `struct kvm_steal_time`: one vCPU's stolen-time record, 64 bytes,
/// 64-byte aligned, zeroed by the guest before registration.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct KvmStealTime {
    /// Nanoseconds this vCPU was runnable but not running.
    pub steal: u64,
    /// Odd while the host updates the record.
    pub version: u32,
    /// Always 0 so far.
    pub flags: u32,
    /// [`KVM_VCPU_PREEMPTED`] and [`KVM_VCPU_FLUSH_TLB`].
    pub preempted: u8,
    /// Padding.
    pub u8_pad: [u8; 3],
    /// Padding.
    pub pad: [u32; 11],
}

const_assert_eq!(core::mem::size_of::<KvmStealTime>(), 64);
const_assert_eq!(core::mem::offset_of!(KvmStealTime, steal), 0);
const_assert_eq!(core::mem::offset_of!(KvmStealTime, version), 8);
const_assert_eq!(core::mem::offset_of!(KvmStealTime, flags), 12);
const_assert_eq!(core::mem::offset_of!(KvmStealTime, preempted), 16);
const_assert_eq!(core::mem::offset_of!(KvmStealTime, pad), 20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_time_from_bytes() {
        let mut b = [0u8; 64];
        b[0..8].copy_from_slice(&12345u64.to_le_bytes());
        b[8..12].copy_from_slice(&6u32.to_le_bytes());
        b[16] = KVM_VCPU_PREEMPTED | KVM_VCPU_FLUSH_TLB;
        let st = KvmStealTime::read_from_bytes(&b).unwrap();
        assert_eq!(st.steal, 12345);
        assert_eq!(st.version, 6);
        assert_eq!(st.preempted, 3);
    }

    #[test]
    fn signature_matches_detection() {
        assert_eq!(
            pvops_core::detect::HypervisorKind::from_signature(*KVM_SIGNATURE),
            pvops_core::detect::HypervisorKind::Kvm
        );
    }
}
