//! Hypercalls as typed functions: [`Xen`] wraps a [`Hypercall`] issuer and
//! gives each operation this backend uses its argument types and a
//! `Result` carrying Xen's errno.
//!
//! Argument structures live on the caller's stack for the duration of the
//! call; Xen reads and writes them through the current page tables (HVM
//! guests pass guest *virtual* addresses), so they are always mapped.

use crate::abi::evtchn::{self, BindIpi, BindVirq, Port, PortArg};
use crate::abi::hvm::{self, EvtchnUpcallVector, HvmParam};
use crate::abi::memory::{self, AddToPhysmap};
use crate::abi::nr::{self, DOMID_SELF};
use crate::abi::sched::{self, Poll, Shutdown};
use crate::abi::vcpu::{
    self, RegisterRunstateArea, RegisterVcpuInfo, SetSingleshotTimer, VcpuHvmContext,
};
use crate::abi::version::{self, FeatureInfo, XenFeatures};
use crate::error::XenError;
use crate::fault_points as fp;
use crate::hypercall::{Direct, Hypercall};

/// Typed hypercalls over `H`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Xen<H>(pub H);

/// The real hypercalls.
pub const XEN: Xen<Direct> = Xen(Direct);

fn addr<T>(p: &T) -> u64 {
    p as *const T as u64
}

fn addr_mut<T>(p: &mut T) -> u64 {
    p as *mut T as u64
}

impl<H: Hypercall> Xen<H> {
    pub(crate) fn call(&self, op: u32, args: [u64; 5]) -> Result<u64, XenError> {
        // SAFETY: every caller below passes only pointers to live locals or
        // borrowed buffers of the type the operation expects (or plain
        // integers), which stay valid for the call.
        XenError::check(unsafe { self.0.hypercall(op, args) })
    }

    /// Fault injection (`pvops.fail=`, [`crate::fault_points`]): when
    /// `point` is armed, the hypercall is not made and Xen's answer is
    /// taken to be `-EINVAL`.
    pub(crate) fn injected(&self, point: &'static str) -> Result<(), XenError> {
        if self.0.fail(point) {
            Err(XenError {
                errno: crate::abi::errno::EINVAL,
            })
        } else {
            Ok(())
        }
    }

    /// `XENVER_version`: (major, minor).
    pub fn version(&self) -> Result<(u16, u16), XenError> {
        let v = self.call(nr::XEN_VERSION, [version::XENVER_VERSION, 0, 0, 0, 0])?;
        Ok(((v >> 16) as u16, v as u16))
    }

    /// `XENVER_get_features`, submap 0. Unknown bits are kept.
    pub fn features(&self) -> Result<XenFeatures, XenError> {
        let mut info = FeatureInfo {
            submap_idx: 0,
            submap: 0,
        };
        self.call(
            nr::XEN_VERSION,
            [version::XENVER_GET_FEATURES, addr_mut(&mut info), 0, 0, 0],
        )?;
        Ok(XenFeatures::from_bits_retain(info.submap))
    }

    /// `CONSOLEIO_write` of all of `bytes` (Xen restarts itself for long
    /// writes).
    pub fn console_write(&self, bytes: &[u8]) -> Result<(), XenError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.call(
            nr::CONSOLE_IO,
            [
                nr::CONSOLEIO_WRITE,
                bytes.len() as u64,
                bytes.as_ptr() as u64,
                0,
                0,
            ],
        )
        .map(|_| ())
    }

    /// `XENMEM_add_to_physmap` of the shared-info page at guest frame `gpfn`.
    pub fn map_shared_info(&self, gpfn: u64) -> Result<(), XenError> {
        self.injected(fp::SHARED_INFO)?;
        let mut arg = AddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: memory::XENMAPSPACE_SHARED_INFO,
            idx: 0,
            gpfn,
        };
        self.call(
            nr::MEMORY_OP,
            [memory::XENMEM_ADD_TO_PHYSMAP, addr_mut(&mut arg), 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `XENMEM_memory_map`: fills `buf` with this domain's memory map and
    /// returns how many entries Xen wrote (never more than `buf` holds).
    pub fn memory_map(&self, buf: &mut [memory::E820Entry]) -> Result<usize, XenError> {
        self.injected(fp::MEMORY_MAP)?;
        let cap = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let mut m = memory::MemoryMap {
            nr_entries: cap,
            pad: 0,
            buffer: buf.as_mut_ptr() as u64,
        };
        self.call(
            nr::MEMORY_OP,
            [memory::XENMEM_MEMORY_MAP, addr_mut(&mut m), 0, 0, 0],
        )?;
        Ok((m.nr_entries.min(cap)) as usize)
    }

    /// `HVMOP_get_param` on this domain.
    pub fn hvm_get_param(&self, index: u32) -> Result<u64, XenError> {
        let mut p = HvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value: 0,
        };
        self.call(
            nr::HVM_OP,
            [hvm::HVMOP_GET_PARAM, addr_mut(&mut p), 0, 0, 0],
        )?;
        Ok(p.value)
    }

    /// `HVMOP_set_param` on this domain.
    pub fn hvm_set_param(&self, index: u32, value: u64) -> Result<(), XenError> {
        if index == hvm::HVM_PARAM_CALLBACK_IRQ {
            self.injected(fp::CALLBACK)?;
        }
        let mut p = HvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index,
            value,
        };
        self.call(
            nr::HVM_OP,
            [hvm::HVMOP_SET_PARAM, addr_mut(&mut p), 0, 0, 0],
        )
        .map(|_| ())
    }

    /// Makes Xen read this domain's shared info and `vcpu_info` in the
    /// 64-bit layout: `HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ, 0)` (no
    /// callback yet), one of the calls at which Xen samples the caller's
    /// mode. An HVM domain's firmware runs in 32-bit mode and leaves the
    /// 32-bit layout latched, where the event bitmaps sit elsewhere: the
    /// mask bits this backend clears would not be the ones Xen reads.
    pub fn latch_64bit_shared_info(&self) -> Result<(), XenError> {
        let mut p = HvmParam {
            domid: DOMID_SELF,
            pad: 0,
            index: hvm::HVM_PARAM_CALLBACK_IRQ,
            value: 0,
        };
        self.call(
            nr::HVM_OP,
            [hvm::HVMOP_SET_PARAM, addr_mut(&mut p), 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `HVMOP_set_evtchn_upcall_vector`: `vcpu`'s upcalls arrive as local
    /// APIC `vector`.
    pub fn set_upcall_vector(&self, vcpu: u32, vector: u8) -> Result<(), XenError> {
        self.injected(fp::UPCALL_VECTOR)?;
        let mut a = EvtchnUpcallVector {
            vcpu,
            vector,
            pad: [0; 3],
        };
        self.call(
            nr::HVM_OP,
            [
                hvm::HVMOP_SET_EVTCHN_UPCALL_VECTOR,
                addr_mut(&mut a),
                0,
                0,
                0,
            ],
        )
        .map(|_| ())
    }

    /// `EVTCHNOP_bind_virq`: a new port for `virq` notifying `vcpu`.
    pub fn bind_virq(&self, virq: u32, vcpu: u32) -> Result<Port, XenError> {
        self.injected(fp::BIND_VIRQ)?;
        let mut a = BindVirq {
            virq,
            vcpu,
            port: 0,
        };
        self.call(
            nr::EVENT_CHANNEL_OP,
            [evtchn::EVTCHNOP_BIND_VIRQ, addr_mut(&mut a), 0, 0, 0],
        )?;
        Ok(a.port)
    }

    /// `EVTCHNOP_bind_ipi`: a new port that notifies `vcpu` when sent.
    pub fn bind_ipi(&self, vcpu: u32) -> Result<Port, XenError> {
        self.injected(fp::BIND_IPI)?;
        let mut a = BindIpi { vcpu, port: 0 };
        self.call(
            nr::EVENT_CHANNEL_OP,
            [evtchn::EVTCHNOP_BIND_IPI, addr_mut(&mut a), 0, 0, 0],
        )?;
        Ok(a.port)
    }

    fn port_op(&self, cmd: u64, port: Port) -> Result<(), XenError> {
        let a = PortArg { port };
        self.call(nr::EVENT_CHANNEL_OP, [cmd, addr(&a), 0, 0, 0])
            .map(|_| ())
    }

    /// `EVTCHNOP_send`.
    pub fn send(&self, port: Port) -> Result<(), XenError> {
        self.port_op(evtchn::EVTCHNOP_SEND, port)
    }

    /// `EVTCHNOP_unmask` (Xen re-raises the upcall if the port is pending).
    pub fn unmask(&self, port: Port) -> Result<(), XenError> {
        self.port_op(evtchn::EVTCHNOP_UNMASK, port)
    }

    /// `EVTCHNOP_close`.
    pub fn close(&self, port: Port) -> Result<(), XenError> {
        self.port_op(evtchn::EVTCHNOP_CLOSE, port)
    }

    fn vcpu_op(&self, cmd: u64, vcpu: u32, arg: u64) -> Result<u64, XenError> {
        self.call(nr::VCPU_OP, [cmd, u64::from(vcpu), arg, 0, 0])
    }

    /// `VCPUOP_register_vcpu_info`: `vcpu`'s `vcpu_info` moves to
    /// `offset` in guest frame `gfn` (the calling vCPU, or one that is
    /// down).
    pub fn register_vcpu_info(&self, vcpu: u32, gfn: u64, offset: u32) -> Result<(), XenError> {
        self.injected(fp::VCPU_INFO)?;
        let mut a = RegisterVcpuInfo {
            mfn: gfn,
            offset,
            rsvd: 0,
        };
        self.vcpu_op(vcpu::VCPUOP_REGISTER_VCPU_INFO, vcpu, addr_mut(&mut a))
            .map(|_| ())
    }

    /// `VCPUOP_register_runstate_memory_area` at virtual address `va`.
    pub fn register_runstate(&self, vcpu: u32, va: u64) -> Result<(), XenError> {
        self.injected(fp::RUNSTATE)?;
        let mut a = RegisterRunstateArea { addr: va };
        self.vcpu_op(
            vcpu::VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
            vcpu,
            addr_mut(&mut a),
        )
        .map(|_| ())
    }

    /// `VCPUOP_set_singleshot_timer` for the calling vCPU `vcpu`, at Xen
    /// system time `deadline_ns` (a deadline already past fires at once).
    pub fn set_singleshot_timer(&self, vcpu: u32, deadline_ns: u64) -> Result<(), XenError> {
        self.injected(fp::SINGLESHOT_TIMER)?;
        let mut a = SetSingleshotTimer {
            timeout_abs_ns: deadline_ns,
            flags: 0,
            pad: 0,
        };
        self.vcpu_op(vcpu::VCPUOP_SET_SINGLESHOT_TIMER, vcpu, addr_mut(&mut a))
            .map(|_| ())
    }

    /// `VCPUOP_stop_singleshot_timer` for the calling vCPU `vcpu`.
    pub fn stop_singleshot_timer(&self, vcpu: u32) -> Result<(), XenError> {
        self.vcpu_op(vcpu::VCPUOP_STOP_SINGLESHOT_TIMER, vcpu, 0)
            .map(|_| ())
    }

    /// `VCPUOP_stop_periodic_timer`.
    pub fn stop_periodic_timer(&self, vcpu: u32) -> Result<(), XenError> {
        self.vcpu_op(vcpu::VCPUOP_STOP_PERIODIC_TIMER, vcpu, 0)
            .map(|_| ())
    }

    /// `VCPUOP_is_up`: `Ok(true/false)`, or `ENOENT` when the domain has
    /// no such vCPU.
    pub fn vcpu_is_up(&self, vcpu: u32) -> Result<bool, XenError> {
        self.vcpu_op(vcpu::VCPUOP_IS_UP, vcpu, 0).map(|v| v != 0)
    }

    /// `VCPUOP_initialise` with an HVM register context.
    pub fn vcpu_initialise(&self, vcpu: u32, ctx: &VcpuHvmContext) -> Result<(), XenError> {
        self.vcpu_op(vcpu::VCPUOP_INITIALISE, vcpu, addr(ctx))
            .map(|_| ())
    }

    /// `VCPUOP_up`.
    pub fn vcpu_up(&self, vcpu: u32) -> Result<(), XenError> {
        self.injected(fp::VCPU_UP)?;
        self.vcpu_op(vcpu::VCPUOP_UP, vcpu, 0).map(|_| ())
    }

    /// `VCPUOP_down`.
    pub fn vcpu_down(&self, vcpu: u32) -> Result<(), XenError> {
        self.vcpu_op(vcpu::VCPUOP_DOWN, vcpu, 0).map(|_| ())
    }

    /// `SCHEDOP_shutdown(SHUTDOWN_suspend)`: returns once the domain runs
    /// again, `Ok(false)` in a restored domain, `Ok(true)` when the
    /// suspend was cancelled (the same domain goes on).
    pub fn suspend(&self) -> Result<bool, XenError> {
        let mut a = Shutdown {
            reason: sched::SHUTDOWN_SUSPEND,
        };
        self.call(
            nr::SCHED_OP,
            [sched::SCHEDOP_SHUTDOWN, addr_mut(&mut a), 0, 0, 0],
        )
        .map(|v| v != 0)
    }

    /// `vm_assist(VMASST_CMD_enable, ty)`.
    pub fn vm_assist_enable(&self, ty: u64) -> Result<(), XenError> {
        self.call(nr::VM_ASSIST, [nr::VMASST_CMD_ENABLE, ty, 0, 0, 0])
            .map(|_| ())
    }

    /// `SCHEDOP_block`.
    pub fn block(&self) -> Result<(), XenError> {
        self.call(nr::SCHED_OP, [sched::SCHEDOP_BLOCK, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `SCHEDOP_yield`.
    pub fn yield_now(&self) -> Result<(), XenError> {
        self.call(nr::SCHED_OP, [sched::SCHEDOP_YIELD, 0, 0, 0, 0])
            .map(|_| ())
    }

    /// `SCHEDOP_poll` on one port until it is pending, another event wakes
    /// the vCPU, or Xen system time reaches `timeout_abs_ns` (0: no limit).
    pub fn poll(&self, port: Port, timeout_abs_ns: u64) -> Result<(), XenError> {
        self.poll_any(&[port], timeout_abs_ns)
    }

    /// `SCHEDOP_poll` on several ports: returns when one is pending (or
    /// as [`Xen::poll`] says).
    pub fn poll_any(&self, ports: &[Port], timeout_abs_ns: u64) -> Result<(), XenError> {
        let mut a = Poll {
            ports: ports.as_ptr() as u64,
            nr_ports: ports.len() as u32,
            pad: 0,
            timeout: timeout_abs_ns,
        };
        self.call(
            nr::SCHED_OP,
            [sched::SCHEDOP_POLL, addr_mut(&mut a), 0, 0, 0],
        )
        .map(|_| ())
    }

    /// `SCHEDOP_shutdown` with `reason` (`SHUTDOWN_*`). Returns only if Xen
    /// refuses.
    pub fn shutdown(&self, reason: u32) -> Result<(), XenError> {
        let mut a = Shutdown { reason };
        self.call(
            nr::SCHED_OP,
            [sched::SCHEDOP_SHUTDOWN, addr_mut(&mut a), 0, 0, 0],
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeXen;

    #[test]
    fn version_splits_major_minor() {
        let x = Xen(FakeXen::new(|op, a| {
            assert_eq!((op, a[0]), (nr::XEN_VERSION, 0));
            0x0004_0011
        }));
        assert_eq!(x.version(), Ok((4, 17)));
    }

    #[test]
    fn latching_the_64bit_layout_sets_no_callback_and_ignores_the_callback_fault() {
        let x = Xen(FakeXen::new(|op, a| {
            assert_eq!((op, a[0]), (nr::HVM_OP, hvm::HVMOP_SET_PARAM));
            // SAFETY: the typed layer passed a live HvmParam.
            let p = unsafe { &*(a[1] as *const HvmParam) };
            assert_eq!(
                (p.domid, p.index, p.value),
                (DOMID_SELF, hvm::HVM_PARAM_CALLBACK_IRQ, 0)
            );
            0
        }));
        // `xen.callback` is about setting the vector, not this.
        let r =
            x.0.faults
                .configure(Some("xen.callback"), crate::fault_points::ALL);
        assert!(r.is_clean());
        assert_eq!(x.latch_64bit_shared_info(), Ok(()));
        assert_eq!(x.0.calls.borrow().len(), 1);
    }

    #[test]
    fn errors_carry_errno() {
        let x = Xen(FakeXen::new(|_, _| -38));
        assert_eq!(x.send(5), Err(XenError { errno: 38 }));
        assert_eq!(x.vcpu_is_up(3), Err(XenError::NOSYS));
    }

    #[test]
    fn out_parameters_are_read_back() {
        let x = Xen(FakeXen::new(|op, a| {
            assert_eq!(op, nr::EVENT_CHANNEL_OP);
            match a[0] {
                evtchn::EVTCHNOP_BIND_VIRQ => {
                    // SAFETY: the typed layer passed a live BindVirq.
                    let b = unsafe { &mut *(a[1] as *mut BindVirq) };
                    assert_eq!((b.virq, b.vcpu), (evtchn::VIRQ_TIMER, 1));
                    b.port = 7;
                }
                evtchn::EVTCHNOP_BIND_IPI => {
                    // SAFETY: as above, a live BindIpi.
                    let b = unsafe { &mut *(a[1] as *mut BindIpi) };
                    b.port = 9 + b.vcpu;
                }
                _ => unreachable!(),
            }
            0
        }));
        assert_eq!(x.bind_virq(evtchn::VIRQ_TIMER, 1), Ok(7));
        assert_eq!(x.bind_ipi(2), Ok(11));
        let x = Xen(FakeXen::new(|_, a| {
            // SAFETY: a live FeatureInfo.
            let f = unsafe { &mut *(a[1] as *mut FeatureInfo) };
            assert_eq!(f.submap_idx, 0);
            f.submap = (1 << 8) | (1 << 9) | (1 << 31);
            0
        }));
        let f = x.features().unwrap();
        assert!(f.contains(XenFeatures::HVM_CALLBACK_VECTOR | XenFeatures::HVM_SAFE_PVCLOCK));
        assert_eq!(f.bits() & (1 << 31), 1 << 31, "unknown bits kept");
    }

    #[test]
    fn armed_points_answer_einval_without_a_hypercall() {
        let x = Xen(FakeXen::new(|_, _| 0));
        let r = x.0.faults.configure(
            Some("xen.shared-info,xen.callback,xen.vcpu-up:2"),
            crate::fault_points::ALL,
        );
        assert!(r.is_clean());
        let einval = Err(XenError {
            errno: crate::abi::errno::EINVAL,
        });
        assert_eq!(x.map_shared_info(0x123), einval);
        assert_eq!(
            x.hvm_set_param(hvm::HVM_PARAM_CALLBACK_IRQ, hvm::callback_via_vector(0xf1)),
            einval
        );
        assert_eq!(x.0.calls.borrow().len(), 0, "no hypercall was made");
        // Other parameters are not the callback point.
        assert_eq!(x.hvm_set_param(hvm::HVM_PARAM_CALLBACK_IRQ + 1, 0), Ok(()));
        // Only the second VCPUOP_up fails.
        assert_eq!(x.vcpu_up(1), Ok(()));
        assert_eq!(x.vcpu_up(2), einval);
        assert_eq!(x.vcpu_up(3), Ok(()));
        assert_eq!(x.0.calls.borrow().len(), 3);
        // Unarmed points go through.
        assert_eq!(x.bind_ipi(0), Ok(0));
    }

    #[test]
    fn argument_structures_reach_xen() {
        let x = Xen(FakeXen::new(|op, a| {
            match (op, a[0]) {
                (nr::MEMORY_OP, memory::XENMEM_ADD_TO_PHYSMAP) => {
                    // SAFETY: a live AddToPhysmap.
                    let m = unsafe { &*(a[1] as *const AddToPhysmap) };
                    assert_eq!((m.domid, m.space, m.idx, m.gpfn), (DOMID_SELF, 0, 0, 0x123));
                }
                (nr::HVM_OP, hvm::HVMOP_SET_PARAM) => {
                    // SAFETY: a live HvmParam.
                    let p = unsafe { &*(a[1] as *const HvmParam) };
                    assert_eq!(p.index, hvm::HVM_PARAM_CALLBACK_IRQ);
                    assert_eq!(p.value, 2 << 56 | 0xf1);
                }
                (nr::SCHED_OP, sched::SCHEDOP_POLL) => {
                    // SAFETY: a live Poll whose ports array holds one port.
                    let p = unsafe { &*(a[1] as *const Poll) };
                    assert_eq!(p.nr_ports, 1);
                    // SAFETY: as above.
                    assert_eq!(unsafe { *(p.ports as *const u32) }, 42);
                    assert_eq!(p.timeout, 1_000);
                }
                (nr::VCPU_OP, vcpu::VCPUOP_SET_SINGLESHOT_TIMER) => {
                    assert_eq!(a[1], 3);
                    // SAFETY: a live SetSingleshotTimer.
                    let t = unsafe { &*(a[2] as *const SetSingleshotTimer) };
                    assert_eq!((t.timeout_abs_ns, t.flags), (555, 0));
                }
                (nr::CONSOLE_IO, nr::CONSOLEIO_WRITE) => assert_eq!(a[1], 3),
                other => panic!("unexpected {other:?}"),
            }
            0
        }));
        x.map_shared_info(0x123).unwrap();
        x.hvm_set_param(hvm::HVM_PARAM_CALLBACK_IRQ, hvm::callback_via_vector(0xf1))
            .unwrap();
        x.poll(42, 1_000).unwrap();
        x.set_singleshot_timer(3, 555).unwrap();
        x.console_write(b"abc").unwrap();
        // An empty write issues no hypercall.
        x.console_write(b"").unwrap();
        assert_eq!(x.0.calls.borrow().len(), 5);
    }
}
