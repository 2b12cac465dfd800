//! The raw Hyper-V guest interface: CPUID leaves and bits, synthetic MSRs,
//! hypercall codes and status values, and the layouts the hypervisor reads
//! or writes. Numbers from Microsoft's Hypervisor Top Level Functional
//! Specification (TLFS 6.0b), cross-checked against Linux's
//! `hyperv-tlfs.h` and QEMU's `target/i386/kvm/hyperv-proto.h` (facts
//! only). Nothing here does anything; the typed layer is in the other
//! modules.

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// CPUID leaves, relative to the Hyper-V base (0x40000000).
pub mod leaf {
    /// Vendor signature and highest leaf.
    pub const VENDOR: u32 = 0x0;
    /// Interface signature (EAX `Hv#1`).
    pub const INTERFACE: u32 = 0x1;
    /// Privileges (EAX, EBX), power management (ECX), features (EDX).
    pub const FEATURES: u32 = 0x3;
    /// Recommendations (EAX), spin-wait retry count (EBX).
    pub const RECOMMENDATIONS: u32 = 0x4;
    /// Implementation limits (EAX: virtual processors).
    pub const LIMITS: u32 = 0x5;
}

/// EAX of leaf 0x40000001 on a hypervisor conforming to the TLFS: `Hv#1`.
pub const INTERFACE_HV1: u32 = u32::from_le_bytes(*b"Hv#1");

/// Leaf 0x40000003 EAX: the partition's privileges (MSR access).
pub mod privilege {
    /// `HV_X64_MSR_VP_RUNTIME`.
    pub const VP_RUNTIME: u32 = 1 << 0;
    /// `HV_X64_MSR_TIME_REF_COUNT`.
    pub const TIME_REF_COUNT: u32 = 1 << 1;
    /// SynIC MSRs.
    pub const SYNIC: u32 = 1 << 2;
    /// Synthetic timer MSRs.
    pub const SYNTIMERS: u32 = 1 << 3;
    /// APIC access MSRs (EOI, ICR, TPR) and the VP assist page.
    pub const APIC_ACCESS: u32 = 1 << 4;
    /// The guest OS id and hypercall MSRs.
    pub const HYPERCALL: u32 = 1 << 5;
    /// `HV_X64_MSR_VP_INDEX`.
    pub const VP_INDEX: u32 = 1 << 6;
    /// The reset MSR.
    pub const RESET: u32 = 1 << 7;
    /// The reference TSC page MSR.
    pub const REFERENCE_TSC: u32 = 1 << 9;
    /// The TSC and APIC frequency MSRs.
    pub const FREQUENCY_MSRS: u32 = 1 << 11;
}

/// Leaf 0x40000003 EDX: further features.
pub mod feature {
    /// Fast hypercalls may pass input in XMM registers.
    pub const XMM_HYPERCALL_INPUT: u32 = 1 << 4;
    /// The frequency MSRs are available (with [`super::privilege::FREQUENCY_MSRS`]).
    pub const FREQUENCY_MSRS: u32 = 1 << 8;
    /// The guest crash MSRs.
    pub const GUEST_CRASH_MSRS: u32 = 1 << 10;
    /// Synthetic timers may deliver a plain APIC vector (direct mode).
    pub const STIMER_DIRECT: u32 = 1 << 19;
}

/// Leaf 0x40000004 EAX: the hypervisor's recommendations.
pub mod recommend {
    /// Use hypercalls for local TLB flushes.
    pub const LOCAL_TLB_FLUSH: u32 = 1 << 1;
    /// Use hypercalls for remote TLB flushes.
    pub const REMOTE_TLB_FLUSH: u32 = 1 << 2;
    /// Use the APIC MSRs (EOI, ICR, TPR).
    pub const APIC_ACCESS: u32 = 1 << 3;
    /// Relaxed timing (no watchdogs).
    pub const RELAXED_TIMING: u32 = 1 << 5;
    /// Send IPIs by hypercall.
    pub const CLUSTER_IPI: u32 = 1 << 10;
    /// The Ex hypercalls (sparse VP sets) are available.
    pub const EX_PROCESSOR_MASKS: u32 = 1 << 11;
}

/// Leaf 0x40000004 EBX: spin-wait retries before notifying; this value
/// means "never notify".
pub const SPIN_NEVER_NOTIFY: u32 = 0xffff_ffff;

/// Synthetic MSRs.
pub mod msr {
    /// Guest OS identity (must be non-zero before the hypercall page).
    pub const GUEST_OS_ID: u32 = 0x4000_0000;
    /// Hypercall page: GPA | enable (bit 0).
    pub const HYPERCALL: u32 = 0x4000_0001;
    /// This virtual processor's index (read only).
    pub const VP_INDEX: u32 = 0x4000_0002;
    /// Time this VP ran, in 100 ns units (read only).
    pub const VP_RUNTIME: u32 = 0x4000_0010;
    /// Partition reference time, in 100 ns units (read only).
    pub const TIME_REF_COUNT: u32 = 0x4000_0020;
    /// Reference TSC page: GPA | enable (bit 0).
    pub const REFERENCE_TSC: u32 = 0x4000_0021;
    /// TSC frequency in Hz (read only).
    pub const TSC_FREQUENCY: u32 = 0x4000_0022;
    /// APIC timer frequency in Hz (read only).
    pub const APIC_FREQUENCY: u32 = 0x4000_0023;
    /// End of interrupt.
    pub const EOI: u32 = 0x4000_0070;
    /// Interrupt command register.
    pub const ICR: u32 = 0x4000_0071;
    /// Task priority.
    pub const TPR: u32 = 0x4000_0072;
    /// VP assist page: GPA | enable (bit 0).
    pub const VP_ASSIST_PAGE: u32 = 0x4000_0073;
    /// Synthetic timer 0 configuration.
    pub const STIMER0_CONFIG: u32 = 0x4000_00b0;
    /// Synthetic timer 0 expiration (absolute reference time).
    pub const STIMER0_COUNT: u32 = 0x4000_00b1;
    /// Crash parameter 0 (P1..P4 follow).
    pub const CRASH_P0: u32 = 0x4000_0100;
    /// Crash control: writing [`super::CRASH_CTL_NOTIFY`] reports the crash.
    pub const CRASH_CTL: u32 = 0x4000_0105;
}

/// The enable bit of the page MSRs (hypercall, reference TSC, VP assist).
pub const PAGE_ENABLE: u64 = 1;
/// `HV_X64_MSR_CRASH_CTL`: tell the host the guest crashed.
pub const CRASH_CTL_NOTIFY: u64 = 1 << 63;

/// Synthetic timer configuration bits.
pub mod stimer {
    /// The timer runs.
    pub const ENABLE: u64 = 1 << 0;
    /// Periodic rather than one-shot.
    pub const PERIODIC: u64 = 1 << 1;
    /// Writing a non-zero count sets [`ENABLE`].
    pub const AUTO_ENABLE: u64 = 1 << 3;
    /// The APIC vector of direct mode, bits 4..=11.
    pub const VECTOR_SHIFT: u32 = 4;
    /// Deliver the vector through the APIC, not a SynIC message.
    pub const DIRECT_MODE: u64 = 1 << 12;
}

/// Guest OS id in the TLFS's open-source form: bit 63 set, OS type
/// (bits 56..=62) 0 (none registered for pvops), OS id (bits 48..=55)
/// 0x50 ("P"), build number 1 in the low bits. The hypervisor only needs
/// it non-zero before it enables the hypercall page.
pub const GUEST_OS_ID: u64 = (1 << 63) | (0x50 << 48) | 0x0001;

/// Hypercall codes.
pub mod call {
    /// `HvCallFlushVirtualAddressSpace`.
    pub const FLUSH_VA_SPACE: u16 = 0x0002;
    /// `HvCallFlushVirtualAddressList` (rep).
    pub const FLUSH_VA_LIST: u16 = 0x0003;
    /// `HvCallNotifyLongSpinWait` (fast).
    pub const NOTIFY_LONG_SPIN_WAIT: u16 = 0x0008;
    /// `HvCallSendSyntheticClusterIpi` (fast).
    pub const SEND_IPI: u16 = 0x000b;
    /// `HvCallFlushVirtualAddressSpaceEx`.
    pub const FLUSH_VA_SPACE_EX: u16 = 0x0013;
    /// `HvCallFlushVirtualAddressListEx` (rep).
    pub const FLUSH_VA_LIST_EX: u16 = 0x0014;
    /// `HvCallSendSyntheticClusterIpiEx`.
    pub const SEND_IPI_EX: u16 = 0x0015;
}

/// The hypercall input value (RCX): code, fast bit, variable header size,
/// rep count and start.
pub mod control {
    /// Input in registers, not memory.
    pub const FAST: u64 = 1 << 16;
    /// Variable header size in 8-byte units, bits 17..=26.
    pub const VARHEAD_SHIFT: u32 = 17;
    /// Rep count, bits 32..=43.
    pub const REP_COUNT_SHIFT: u32 = 32;
    /// Largest rep count the field holds.
    pub const REP_COUNT_MAX: u64 = 0xfff;
}

/// Hypercall result (RAX): status in bits 0..=15, reps completed in
/// bits 32..=43.
pub mod result {
    /// Mask of the status.
    pub const STATUS_MASK: u64 = 0xffff;
    /// Shift of reps completed.
    pub const REPS_SHIFT: u32 = 32;
    /// Mask of reps completed (after the shift).
    pub const REPS_MASK: u64 = 0xfff;
}

/// Hypercall status values.
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// Unknown call code.
    pub const INVALID_HYPERCALL_CODE: u16 = 0x0002;
    /// Malformed input value.
    pub const INVALID_HYPERCALL_INPUT: u16 = 0x0003;
    /// Misaligned input or output.
    pub const INVALID_ALIGNMENT: u16 = 0x0004;
    /// A parameter was invalid.
    pub const INVALID_PARAMETER: u16 = 0x0005;
    /// Not allowed for this partition.
    pub const ACCESS_DENIED: u16 = 0x0006;
    /// The operation was denied.
    pub const OPERATION_DENIED: u16 = 0x0008;
    /// Out of memory.
    pub const INSUFFICIENT_MEMORY: u16 = 0x000b;
    /// A VP index was invalid.
    pub const INVALID_VP_INDEX: u16 = 0x000e;
}

/// Flush flags.
pub mod flush {
    /// Ignore the processor mask: every VP.
    pub const ALL_PROCESSORS: u64 = 1 << 0;
    /// Ignore the address space: all of them.
    pub const ALL_VIRTUAL_ADDRESS_SPACES: u64 = 1 << 1;
    /// Leave global mappings.
    pub const NON_GLOBAL_MAPPINGS_ONLY: u64 = 1 << 2;
}

/// VP set formats (`HV_GENERIC_SET_*`).
pub mod vpset {
    /// Banks of 64 VPs, one `u64` per bank present in `valid_bank_mask`.
    pub const SPARSE_4K: u64 = 0;
    /// Every VP.
    pub const ALL: u64 = 1;
    /// Banks a set can hold: 64 banks of 64 VPs.
    pub const MAX_BANKS: usize = 64;
}

/// The reference TSC page (`HV_REFERENCE_TSC_PAGE`), written by the
/// hypervisor: reference time = ((tsc * scale) >> 64) + offset, in 100 ns
/// units, valid while `sequence` is non-zero and unchanged across the read.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct RefTscPage {
    /// 0: invalid, use the reference counter MSR instead.
    pub sequence: u32,
    /// Reserved.
    pub reserved1: u32,
    /// 64.64 fixed-point multiplier.
    pub scale: u64,
    /// Signed offset added after scaling.
    pub offset: i64,
    /// The rest of the page.
    pub reserved2: [u64; 509],
}

const_assert_eq!(core::mem::size_of::<RefTscPage>(), 4096);
const_assert_eq!(core::mem::offset_of!(RefTscPage, sequence), 0);
const_assert_eq!(core::mem::offset_of!(RefTscPage, scale), 8);
const_assert_eq!(core::mem::offset_of!(RefTscPage, offset), 16);

/// The head of the VP assist page this backend uses: the APIC assist word
/// (bit 0: "no EOI required", set by the hypervisor, cleared by the guest).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VpAssistHead {
    /// APIC assist word.
    pub apic_assist: u32,
    /// Reserved.
    pub reserved: u32,
}

const_assert_eq!(core::mem::size_of::<VpAssistHead>(), 8);
const_assert_eq!(core::mem::offset_of!(VpAssistHead, apic_assist), 0);

/// Bit of [`VpAssistHead::apic_assist`]: the pending EOI needs no write.
pub const APIC_ASSIST_NO_EOI: u32 = 1;

/// Fixed part of `HvCallSendSyntheticClusterIpi` (16 bytes, passed in
/// RDX and R8 as a fast call).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IpiInput {
    /// The vector (0x10..=0xff).
    pub vector: u32,
    /// Target VTL (0) and reserved bytes.
    pub target_vtl: u8,
    /// Reserved.
    pub reserved: [u8; 3],
    /// Bit n: VP index n.
    pub cpu_mask: u64,
}

const_assert_eq!(core::mem::size_of::<IpiInput>(), 16);
const_assert_eq!(core::mem::offset_of!(IpiInput, cpu_mask), 8);

/// Fixed part of `HvCallSendSyntheticClusterIpiEx`; a VP set follows.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IpiExHead {
    /// The vector.
    pub vector: u32,
    /// Target VTL and reserved bytes.
    pub target_vtl: u8,
    /// Reserved.
    pub reserved: [u8; 3],
    /// The VP set's head.
    pub set: VpSetHead,
}

const_assert_eq!(core::mem::size_of::<IpiExHead>(), 24);
const_assert_eq!(core::mem::offset_of!(IpiExHead, set), 8);

/// A VP set's fixed part (`hv_vpset` without its banks).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VpSetHead {
    /// [`vpset::SPARSE_4K`] or [`vpset::ALL`].
    pub format: u64,
    /// Bit n: bank n (VPs 64n..64n+63) follows.
    pub valid_bank_mask: u64,
}

const_assert_eq!(core::mem::size_of::<VpSetHead>(), 16);

/// Fixed part of `HvCallFlushVirtualAddressSpace` and `...List` (the list
/// form's GVAs follow as reps).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FlushInput {
    /// The address space (CR3), ignored with
    /// [`flush::ALL_VIRTUAL_ADDRESS_SPACES`].
    pub address_space: u64,
    /// [`flush`] flags.
    pub flags: u64,
    /// Bit n: VP index n.
    pub processor_mask: u64,
}

const_assert_eq!(core::mem::size_of::<FlushInput>(), 24);
const_assert_eq!(core::mem::offset_of!(FlushInput, processor_mask), 16);

/// Fixed part of the Ex flushes; a VP set follows, then (list form) GVAs.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct FlushExHead {
    /// As in [`FlushInput`].
    pub address_space: u64,
    /// As in [`FlushInput`].
    pub flags: u64,
    /// The VP set's head.
    pub set: VpSetHead,
}

const_assert_eq!(core::mem::size_of::<FlushExHead>(), 32);
const_assert_eq!(core::mem::offset_of!(FlushExHead, set), 16);

/// One GVA-range entry of the list flushes: page number in bits 12..=63,
/// how many pages *after* the first in bits 0..=11.
pub const GVA_RANGE_MAX_EXTRA_PAGES: u64 = 0xfff;
