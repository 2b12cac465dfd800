//! The classic-PV hypercalls, typed (see [`crate::xen`] for the others).

use crate::abi::nr::{self, DOMID_SELF};
use crate::abi::pv::{
    self, CallbackRegister, MmuUpdate, MmuextOp, MulticallEntry, TrapInfo, VcpuGuestContext,
};
use crate::abi::vcpu::VCPUOP_INITIALISE;
use crate::error::XenError;
use crate::hypercall::Hypercall;
use crate::xen::Xen;

/// A batch of `mmu_update` requests Xen refused part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmuUpdateError {
    /// Requests Xen completed before the one it refused.
    pub done: usize,
    /// Xen's error.
    pub error: XenError,
}

impl<H: Hypercall> Xen<H> {
    /// `mmu_update` of `reqs` (this domain's tables). On failure, says how
    /// many requests Xen completed first: the next one is the refused one.
    pub fn mmu_update(&self, reqs: &[MmuUpdate]) -> Result<(), MmuUpdateError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let mut done: u32 = 0;
        let r = self.call(
            pv::MMU_UPDATE,
            [
                reqs.as_ptr() as u64,
                reqs.len() as u64,
                &mut done as *mut u32 as u64,
                u64::from(DOMID_SELF),
                0,
            ],
        );
        r.map(|_| ()).map_err(|error| MmuUpdateError {
            done: done as usize,
            error,
        })
    }

    /// `mmuext_op` of `ops`.
    pub fn mmuext(&self, ops: &[MmuextOp]) -> Result<(), XenError> {
        let mut done: u32 = 0;
        self.call(
            pv::MMUEXT_OP,
            [
                ops.as_ptr() as u64,
                ops.len() as u64,
                &mut done as *mut u32 as u64,
                u64::from(DOMID_SELF),
                0,
            ],
        )
        .map(|_| ())
    }

    /// `update_va_mapping`: the PTE that maps `va` in the current address
    /// space becomes `machine_pte`; `flags` are `UVMF_*`.
    pub fn update_va_mapping(&self, va: u64, machine_pte: u64, flags: u64) -> Result<(), XenError> {
        self.call(pv::UPDATE_VA_MAPPING, [va, machine_pte, flags, 0, 0])
            .map(|_| ())
    }

    /// `multicall` of `calls`; each entry's `result` is filled in. The
    /// call itself fails only if Xen could not read the batch.
    pub fn multicall(&self, calls: &mut [MulticallEntry]) -> Result<(), XenError> {
        self.call(
            pv::MULTICALL,
            [calls.as_mut_ptr() as u64, calls.len() as u64, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `set_trap_table` (the array must end with a zero `address`).
    pub fn set_trap_table(&self, table: &[TrapInfo]) -> Result<(), XenError> {
        self.call(pv::SET_TRAP_TABLE, [table.as_ptr() as u64, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `set_gdt`: `entries` descriptors in the machine frames `frames`.
    pub fn set_gdt(&self, frames: &[u64], entries: u64) -> Result<(), XenError> {
        self.call(pv::SET_GDT, [frames.as_ptr() as u64, entries, 0, 0, 0])
            .map(|_| ())
    }

    /// `stack_switch`: the stack Xen switches to when guest user mode
    /// enters the kernel.
    pub fn stack_switch(&self, ss: u16, rsp: u64) -> Result<(), XenError> {
        self.call(pv::STACK_SWITCH, [u64::from(ss), rsp, 0, 0, 0])
            .map(|_| ())
    }

    /// `fpu_taskswitch`: sets (`true`) or clears CR0.TS.
    pub fn fpu_taskswitch(&self, set: bool) -> Result<(), XenError> {
        self.call(pv::FPU_TASKSWITCH, [u64::from(set), 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `callback_op(CALLBACKOP_register)`.
    pub fn register_callback(&self, kind: u16, address: u64, flags: u16) -> Result<(), XenError> {
        let a = CallbackRegister {
            kind,
            flags,
            pad: 0,
            address,
        };
        self.call(
            pv::CALLBACK_OP,
            [
                pv::CALLBACKOP_REGISTER,
                &a as *const CallbackRegister as u64,
                0,
                0,
                0,
            ],
        )
        .map(|_| ())
    }

    /// `physdev_op(PHYSDEVOP_set_iopl)`.
    pub fn set_iopl(&self, iopl: u32) -> Result<(), XenError> {
        self.injected(crate::fault_points::IOPL)?;
        let a = iopl;
        self.call(
            pv::PHYSDEV_OP,
            [pv::PHYSDEVOP_SET_IOPL, &a as *const u32 as u64, 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `set_segment_base(which, base)` (`SEGBASE_*`) on the calling vCPU.
    pub fn set_segment_base(&self, which: u32, base: u64) -> Result<(), XenError> {
        self.call(pv::SET_SEGMENT_BASE, [u64::from(which), base, 0, 0, 0])
            .map(|_| ())
    }

    /// `VCPUOP_initialise` of the down vCPU `vcpu` with a PV context (the
    /// same operation as [`Xen::vcpu_initialise`], which takes an HVM
    /// one). The vCPU stays down until `VCPUOP_up` unless `ctx` has
    /// `VGCF_online`.
    pub fn vcpu_initialise_pv(&self, vcpu: u32, ctx: &VcpuGuestContext) -> Result<(), XenError> {
        self.call(
            nr::VCPU_OP,
            [
                VCPUOP_INITIALISE,
                u64::from(vcpu),
                ctx as *const VcpuGuestContext as u64,
                0,
                0,
            ],
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeXen;
    use zerocopy::FromZeros;

    #[test]
    fn vcpu_initialise_pv_passes_the_context() {
        let mut ctx = VcpuGuestContext::new_zeroed();
        ctx.user_regs.rip = 0x1234;
        let want = &ctx as *const VcpuGuestContext as u64;
        let x = Xen(FakeXen::new(move |op, a| {
            assert_eq!(op, nr::VCPU_OP);
            assert_eq!(a, [VCPUOP_INITIALISE, 3, want, 0, 0]);
            // SAFETY: the typed layer passed the live context above.
            let c = unsafe { &*(a[2] as *const VcpuGuestContext) };
            assert_eq!(c.user_regs.rip, 0x1234);
            -17
        }));
        assert_eq!(
            x.vcpu_initialise_pv(3, &ctx),
            Err(XenError { errno: 17 }),
            "EEXIST: already initialised"
        );
    }

    #[test]
    fn set_segment_base_names_the_segment() {
        let x = Xen(FakeXen::new(|op, a| {
            assert_eq!(op, pv::SET_SEGMENT_BASE);
            assert_eq!(
                a,
                [
                    u64::from(pv::SEGBASE_GS_KERNEL),
                    0xffff_8000_0000_0040,
                    0,
                    0,
                    0
                ]
            );
            0
        }));
        assert_eq!(
            x.set_segment_base(pv::SEGBASE_GS_KERNEL, 0xffff_8000_0000_0040),
            Ok(())
        );
    }
}
