//! Which vCPU this is, and the bound on vCPU numbers.
//!
//! Per-vCPU state is kept in arrays indexed by Xen's vCPU id (what
//! [`pvops_core::cpu::CpuId`] means under Xen). The id is found the slow
//! way from EBX of CPUID leaf `base + 4` when Xen flags it present (Xen
//! 4.6 and later), else from the local APIC ID, which Xen gives HVM vCPU
//! `n` as `2n`; both are a VM exit.
//!
//! ## The fast way: `IA32_TSC_AUX`
//! Where the CPU has `rdtscp` and Xen runs the guest's TSC natively (CPUID
//! leaf `base + 3` says whether it emulates it), each vCPU stores its id
//! (tagged with bit 31) in `IA32_TSC_AUX` when it is set up, and `rdtscp`
//! returns it together with the TSC in one instruction that costs no exit:
//! the scheduler clock needs both (Linux keeps the CPU number there too).
//! A vCPU whose `TSC_AUX` lacks the tag (not set up yet, or the kernel
//! wrote the MSR) is identified the slow way. This backend therefore owns
//! `IA32_TSC_AUX`. With an emulated TSC every `rdtscp` would be a VM exit
//! anyway, and Xen 4.17 under an emulated SVM without next-RIP support
//! cannot even decode it (it fails the instruction with `#GP`), so then
//! the slow way is the only way.
//!
//! ## Classic PV: the kernel GS base
//! A PV guest has neither way: Xen's CPUID leaf `base + 4` is for HVM
//! guests only and a PV vCPU's APIC ID reads 0. Nor is `rdtscp` enough,
//! even where it runs natively: a vCPU can only tag its own `TSC_AUX`,
//! and a new vCPU needs its id before the kernel calls any op on it (its
//! first `load_gdt` and `load_idt`, the interrupt flag, which lives in
//! the vCPU's `vcpu_info`). So under PV every vCPU's *kernel GS base*
//! points at its own entry of [`PV_IDS`], a read-only table holding each
//! index, and [`current`] is one `%gs`-relative load: no privilege, no
//! trap, no dependence on how Xen runs the TSC. The boot vCPU (vCPU 0:
//! Xen always starts a PV guest there) sets its base with
//! `set_segment_base(SEGBASE_GS_KERNEL)` ([`configure_pv`]); a secondary
//! vCPU gets it in the context that starts it (`gs_base_kernel`, see
//! [`crate::pv::smp`]), so it is right from its first instruction. Until
//! the boot vCPU's base is set, [`current`] answers 0.
//!
//! This backend therefore owns the kernel GS base under PV: the kernel
//! must not write `IA32_GS_BASE` (the PV `write_msr` op refuses it), use
//! `set_segment_base(SEGBASE_GS_KERNEL)`, or load a non-null selector into
//! GS (which loads the descriptor's base). The user-mode GS base
//! (`IA32_KERNEL_GS_BASE` while in the kernel) stays the kernel's.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use pvops_core::detect::{CpuidSource, HardwareCpuid};
use pvops_native::tsc_aux;

/// vCPUs this backend can drive (ids `0..MAX_VCPUS`). Below pvops' own
/// bound ([`pvops_core::irq::MAX_CPUS`], what a `CpuMask` can name) for
/// Xen's reasons: the per-vCPU `vcpu_info` array fills exactly one page
/// at this size, and the sets of vCPUs found and started are one `u64`.
/// Classic PV is bounded lower still by the ABI
/// (`abi::shared::LEGACY_MAX_VCPUS`, vCPUs with a slot in shared info).
pub const MAX_VCPUS: usize = 64;
static_assertions::const_assert!(MAX_VCPUS <= pvops_core::irq::MAX_CPUS);
static_assertions::const_assert!(MAX_VCPUS <= u64::BITS as usize);
static_assertions::const_assert!(crate::abi::shared::LEGACY_MAX_VCPUS <= MAX_VCPUS);

/// The CPUID leaf with the vCPU id in EBX, or 0 to use the APIC ID.
static ID_LEAF: AtomicU32 = AtomicU32::new(0);
/// Whether `rdtscp` exists (and `TSC_AUX` holds tagged ids).
static RDTSCP: AtomicBool = AtomicBool::new(false);

/// Uses `leaf` (from [`crate::detect::XenCpuid::vcpu_id_leaf`]) for
/// [`current_slow`], or the APIC ID when `None`; uses `rdtscp` when the
/// CPU has it and `tsc_native` (Xen does not emulate the TSC).
pub fn configure(leaf: Option<u32>, tsc_native: bool) {
    ID_LEAF.store(leaf.unwrap_or(0), Ordering::Relaxed);
    let rdtscp = tsc_aux::has_rdtscp(&HardwareCpuid);
    // A kernel that owns TSC_AUX (CpuNumber::Kernel) keeps it untouched.
    let owned = pvops_core::cpu::kernel_owns_cpu_number();
    RDTSCP.store(rdtscp && tsc_native && !owned, Ordering::Relaxed);
}

/// What a classic PV vCPU's kernel GS base points at: its id, and the
/// address of its `vcpu_info` once known, which the backend's assembly
/// reaches with one `%gs`-relative load (see [`crate::pv::direct`]).
#[repr(C, align(16))]
#[derive(Debug)]
pub struct PvCpu {
    /// The vCPU id (at `%gs:0`).
    pub id: u32,
    pad: u32,
    /// The vCPU's `vcpu_info` (at `%gs:8`); 0 until published.
    pub vcpu_info: AtomicU64,
}

/// Where [`PvCpu::vcpu_info`] is, for assembly.
pub const PV_CPU_VCPU_INFO: usize = 8;
static_assertions::const_assert_eq!(core::mem::offset_of!(PvCpu, vcpu_info), PV_CPU_VCPU_INFO);

/// Classic PV: entry `n` names vCPU `n`; vCPU `n`'s kernel GS base points
/// at it (see the module docs).
pub static PV_IDS: [PvCpu; MAX_VCPUS] = {
    let mut ids = [const {
        PvCpu {
            id: 0,
            pad: 0,
            vcpu_info: AtomicU64::new(0),
        }
    }; MAX_VCPUS];
    let mut i = 0;
    while i < MAX_VCPUS {
        ids[i].id = i as u32;
        i += 1;
    }
    ids
};
/// Whether the boot vCPU's kernel GS base points into [`PV_IDS`].
pub(crate) static PV_GS: AtomicBool = AtomicBool::new(false);

/// The kernel GS base that names vCPU `vcpu` under PV (the address of its
/// [`PV_IDS`] entry), `None` beyond [`MAX_VCPUS`].
pub fn pv_gs_base(vcpu: u32) -> Option<u64> {
    slot(vcpu).map(|i| core::ptr::addr_of!(PV_IDS[i]) as u64)
}

/// Whether `rdtscp` names the vCPU (see the module docs).
pub fn uses_rdtscp() -> bool {
    RDTSCP.load(Ordering::Relaxed)
}

/// Classic PV, on the boot vCPU (vCPU 0): points its kernel GS base at
/// [`PV_IDS`]`[0]`, after which [`current`] reads ids through GS (see
/// the module docs); no `rdtscp` tags, no APIC ID. If Xen refuses,
/// [`current`] keeps answering 0: only the boot vCPU can then be used.
pub fn configure_pv() -> Result<(), crate::XenError> {
    ID_LEAF.store(0, Ordering::Relaxed);
    RDTSCP.store(false, Ordering::Relaxed);
    let base = pv_gs_base(0).unwrap_or(0);
    crate::xen::XEN.set_segment_base(crate::abi::pv::SEGBASE_GS_KERNEL, base)?;
    PV_GS.store(true, Ordering::Release);
    Ok(())
}

/// Whether vCPU ids are read through GS (classic PV, once configured).
pub fn uses_gs() -> bool {
    PV_GS.load(Ordering::Acquire)
}

/// The id behind this vCPU's kernel GS base (classic PV).
#[inline]
fn pv_current() -> u32 {
    if !uses_gs() {
        return 0;
    }
    let id: u32;
    // SAFETY: once PV_GS is set, every vCPU's kernel GS base points at its
    // own entry of PV_IDS (the boot vCPU's by configure_pv, the others' by
    // the context that started them), a static that is always mapped; the
    // load reads 4 bytes there and nothing else.
    unsafe {
        core::arch::asm!(
            "mov {id:e}, dword ptr gs:[0]",
            id = out(reg) id,
            options(nostack, readonly, preserves_flags)
        )
    };
    id
}

/// The id of the vCPU this runs on, from CPUID or the APIC ID (under
/// classic PV: through GS, see the module docs).
pub fn current_slow() -> u32 {
    if crate::pv::is_active() {
        return pv_current();
    }
    if let Some(cpu) = pvops_core::cpu::kernel_cpu_number() {
        return cpu.0;
    }
    match ID_LEAF.load(Ordering::Relaxed) {
        0 => pvops_native::apic::id() / 2,
        leaf => HardwareCpuid.cpuid(leaf, 0).ebx,
    }
}

/// Tags this vCPU's `IA32_TSC_AUX` with `vcpu` (call on that vCPU, as it
/// is set up).
pub fn tag_this_vcpu(vcpu: u32) {
    if uses_rdtscp() {
        // SAFETY: the CPU has rdtscp, hence IA32_TSC_AUX; bits 63:32 are
        // reserved and written as 0. Nothing else in pvops uses the MSR.
        unsafe {
            x86_64::registers::model_specific::Msr::new(tsc_aux::MSR)
                .write(u64::from(tsc_aux::encode(vcpu)))
        };
    }
}

/// `rdtscp`: the TSC and `IA32_TSC_AUX`.
#[inline]
fn rdtscp() -> (u64, u32) {
    // SAFETY: only called when `uses_rdtscp`, which `configure` set only
    // when CPUID reports rdtscp.
    unsafe { tsc_aux::rdtscp() }
}

/// The id in a `TSC_AUX` value, if this backend tagged it.
#[inline]
pub fn id_from_aux(aux: u32) -> Option<u32> {
    tsc_aux::decode(aux)
}

/// The TSC now and the vCPU it was read on.
#[inline]
pub fn tsc_and_current() -> (u64, u32) {
    if uses_rdtscp() {
        let (tsc, aux) = rdtscp();
        if let Some(id) = id_from_aux(aux) {
            return (tsc, id);
        }
    }
    let id = current_slow();
    (pvops_native::tsc::read(), id)
}

/// The id of the vCPU this runs on.
#[inline]
pub fn current() -> u32 {
    if uses_rdtscp() {
        if let Some(id) = id_from_aux(rdtscp().1) {
            return id;
        }
    }
    current_slow()
}

/// `Some(id as usize)` when `id` has a slot in the per-vCPU arrays.
#[inline]
pub fn slot(id: u32) -> Option<usize> {
    let i = id as usize;
    (i < MAX_VCPUS).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tagged_aux_values_name_a_vcpu() {
        assert_eq!(id_from_aux(tsc_aux::TAG | 5), Some(5));
        assert_eq!(id_from_aux(0), None);
        assert_eq!(slot(63), Some(63));
        assert_eq!(slot(64), None);
    }
}
