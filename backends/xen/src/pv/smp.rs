//! Secondary vCPUs of a classic PV guest: `VCPUOP_initialise` with a PV
//! register context (`vcpu_guest_context`), then `VCPUOP_up`. Which vCPUs
//! exist is found as under PVH ([`crate::smp::probe`]).
//!
//! The context starts the vCPU in guest kernel mode (`VGCF_in_kernel`)
//! at `how.entry(how.arg)`, as if called: RSP is `how.stack_top - 8`, on
//! Xen's flat ring-3 selectors (`FLAT_KERNEL_CS`/`SS`, null data
//! selectors), with
//!
//! | field | value |
//! |---|---|
//! | CR3 | machine frame of `how.cr3`'s top table; the boot vCPU runs on it, so it is pinned and validated already (Xen refuses a tree it cannot validate) |
//! | kernel GS base | the vCPU's entry of [`crate::percpu::PV_IDS`]: its id from the first instruction |
//! | event, failsafe callbacks | [`super::traps`]' entries, as registered on the boot vCPU |
//! | trap table | the one the kernel last loaded ([`super::cpu::trap_context`]), so a fault before the new vCPU's own `load_idt` reaches the kernel's handler |
//! | GDT | none: Xen's selectors need none, and the kernel's `load_gdt` on the new vCPU gives Xen the shared GDT page (a frame may serve several vCPUs: Xen counts its uses) |
//! | kernel stack (`kernel_ss:kernel_sp`) | `how.stack_top` |
//! | RFLAGS | IF (Xen forces it: ring 3 runs with interrupts on); IOPL 0, the vCPU asks for I/O access in [`init_secondary`] as the boot vCPU did |
//! | CR0, CR4 | TS clear; the boot vCPU's CR4 (Xen keeps only the bits a PV guest owns) |
//! | FPU | reset (no `VGCF_i387_valid`) |
//!
//! Events: the virtual interrupt flag is the vCPU's `evtchn_upcall_mask`,
//! which Xen does not take from the context. [`start`] sets it in the
//! `vcpu_info` the new vCPU uses until it registers its own (its slot in
//! shared info; Xen's dom0 builder masks those too), and
//! [`init_secondary`] masks it again before registering, which copies the
//! mask over: events stay masked until the kernel enables them.
//!
//! `how.trampoline` is not used.

use super::cpu::trap_context;
use super::traps;
use crate::abi::errno::EINVAL;
use crate::abi::pv::{
    xen_pfn_to_cr3, VcpuGuestContext, FLAT_KERNEL_CS, FLAT_KERNEL_SS, VGCF_IN_KERNEL,
};
use crate::abi::shared::LEGACY_MAX_VCPUS;
use crate::error::XenError;
use crate::percpu::{current, pv_gs_base, slot};
use crate::warn::warn;
use crate::xen::XEN;
use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::cpu::{CpuId, SecondaryStart, StartCpuError};
use zerocopy::FromZeros;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS bit 1, always set.
const RFLAGS_FIXED: u64 = 1 << 1;

/// The vCPUs this backend can start under PV: those with a `vcpu_info`
/// slot in shared info (Xen refuses `VCPUOP_initialise` of a vCPU that
/// has no `vcpu_info` yet, and this backend registers one only on the
/// vCPU itself).
pub fn startable(bits: u64) -> u64 {
    bits & ((1u64 << LEGACY_MAX_VCPUS) - 1)
}

/// Fills `ctx` (zeroed) with the first state of the vCPU whose kernel GS
/// base is `gs_base`, to run `how.entry(how.arg)` on the top table at
/// machine frame `root_mfn`, with the guest-visible `cr4` (see the module
/// docs for each field). The trap table is left empty.
pub fn context(
    ctx: &mut VcpuGuestContext,
    how: &SecondaryStart,
    root_mfn: u64,
    gs_base: u64,
    cr4: u64,
) {
    ctx.flags = VGCF_IN_KERNEL;
    let r = &mut ctx.user_regs;
    r.rip = how.entry as usize as u64;
    // As if `entry` had been called: the return-address slot below a
    // 16-byte-aligned top.
    r.rsp = how.stack_top.wrapping_sub(8);
    r.rdi = how.arg;
    r.cs = FLAT_KERNEL_CS;
    r.ss = FLAT_KERNEL_SS;
    (r.ds, r.es, r.fs, r.gs) = (0, 0, 0, 0);
    r.rflags = RFLAGS_FIXED | RFLAGS_IF;
    ctx.kernel_ss = u64::from(FLAT_KERNEL_SS);
    ctx.kernel_sp = how.stack_top;
    ctx.ctrlreg[3] = xen_pfn_to_cr3(root_mfn);
    ctx.ctrlreg[4] = cr4;
    ctx.event_callback_eip = traps::event_entry as *const () as u64;
    ctx.failsafe_callback_eip = traps::failsafe_entry as *const () as u64;
    ctx.gs_base_kernel = gs_base;
}

/// Masks events in the `vcpu_info` vCPU `v` uses now (see the module
/// docs).
fn mask_events_of(v: u32) {
    if let Some(vi) = crate::shared::vcpu_info(v) {
        // SAFETY: `vi` is v's vcpu_info (shared info or this backend's
        // array, mapped for good); v is down, and Xen reads the byte, which
        // a byte-sized atomic store suits.
        unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask)) }
            .store(1, Ordering::SeqCst);
    }
}

/// The `cpu.start_cpu` op.
pub fn start(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
    let v = cpu.0;
    if slot(v).is_none() || !crate::smp::possible().contains(cpu) || v == current() {
        return Err(StartCpuError::NoSuchCpu(cpu));
    }
    let refused = |e: XenError| StartCpuError::Refused(cpu, e.detail());
    let Some(gs_base) = pv_gs_base(v).filter(|_| crate::percpu::uses_gs()) else {
        return Err(StartCpuError::NoSuchCpu(cpu));
    };
    let root_mfn = super::p2m::mfn(how.cr3 >> 12).ok_or(refused(XenError { errno: EINVAL }))?;
    let mut ctx = VcpuGuestContext::new_zeroed();
    context(
        &mut ctx,
        how,
        root_mfn,
        gs_base,
        <super::XenPv as pvops_core::cpu::CpuOps>::read_cr4(),
    );
    trap_context(&mut ctx.trap_ctxt);
    mask_events_of(v);
    super::traps::publish_vcpu_info(v);
    super::mmu::set_start_root(v, how.cr3 >> 12);
    XEN.vcpu_initialise_pv(v, &ctx).map_err(refused)?;
    XEN.vcpu_up(v).map_err(refused)
}

/// The `cpu.init_secondary` op, on the new vCPU: events masked, I/O
/// access as on the boot vCPU, then its Xen state
/// ([`crate::setup::setup_vcpu`]).
pub fn init_secondary() {
    // Before registering: the registration copies this mask over.
    super::irq::save_and_mask();
    let me = current();
    if let Err(e) = super::cpu::enable_io(me) {
        warn(format_args!(
            "xen-pv: cpu {me}: PHYSDEVOP_set_iopl refused ({e}): I/O port accesses are refused there"
        ));
    }
    if let Err(e) = crate::setup::setup_vcpu(me) {
        warn(format_args!(
            "xen: cpu {me}: {e}: its timer, IPIs and lock kicks do not work"
        ));
    }
    super::traps::publish_vcpu_info(me);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::pv::{TrapInfo, VGCF_ONLINE};

    extern "C" fn entry(_: u64) -> ! {
        unreachable!()
    }

    fn how() -> SecondaryStart {
        SecondaryStart {
            entry,
            arg: 5,
            stack_top: 0x40_0000,
            cr3: 0x12_3000,
            trampoline: 0x8000,
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "compares function addresses, which Miri makes different per use"
    )]
    fn context_starts_in_kernel_mode_at_the_entry() {
        let how = how();
        let mut c = VcpuGuestContext::new_zeroed();
        context(&mut c, &how, 0xabcde, 0xffff_8000_0000_1004, 0x6f0);
        assert_eq!(c.flags, VGCF_IN_KERNEL);
        assert_eq!(c.flags & VGCF_ONLINE, 0, "up by VCPUOP_up, not at once");
        let r = &c.user_regs;
        assert_eq!(r.rip, how.entry as usize as u64);
        assert_eq!((r.rsp, r.rsp % 16), (0x40_0000 - 8, 8));
        assert_eq!(r.rdi, 5);
        assert_eq!((r.cs, r.ss), (0xe033, 0xe02b));
        assert_eq!((r.ds, r.es, r.fs, r.gs), (0, 0, 0, 0));
        assert_eq!(r.rflags, 0x202, "IF (Xen forces it), IOPL 0");
        assert_eq!((c.kernel_ss, c.kernel_sp), (0xe02b, 0x40_0000));
        assert_eq!(c.ctrlreg[3], 0xabcde << 12, "machine frame, not how.cr3");
        assert_eq!((c.ctrlreg[0], c.ctrlreg[1], c.ctrlreg[4]), (0, 0, 0x6f0));
        assert_eq!(c.event_callback_eip, traps::event_entry as *const () as u64);
        assert_eq!(
            c.failsafe_callback_eip,
            traps::failsafe_entry as *const () as u64
        );
        assert_eq!(c.syscall_callback_eip, 0);
        assert_eq!(
            (c.gs_base_kernel, c.gs_base_user, c.fs_base),
            (0xffff_8000_0000_1004, 0, 0)
        );
        assert_eq!((c.gdt_ents, c.ldt_ents, c.vm_assist), (0, 0, 0));
        assert!(c.trap_ctxt.iter().all(|t| *t == TrapInfo::default()));
        assert!(c.fpu_ctxt.iter().all(|b| *b == 0));
    }

    #[test]
    fn only_vcpus_with_a_shared_info_slot_start() {
        assert_eq!(startable(0b11), 0b11);
        assert_eq!(startable(u64::MAX), u64::from(u32::MAX));
    }

    #[test]
    fn gs_bases_point_at_each_id() {
        for v in [0u32, 1, 63] {
            let base = pv_gs_base(v).unwrap();
            // SAFETY: the base is the address of PV_IDS[v], a static.
            assert_eq!(unsafe { *(base as *const u32) }, v);
        }
        assert_eq!(pv_gs_base(64), None);
    }
}
