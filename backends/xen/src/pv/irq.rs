//! Interrupt ops of a classic PV guest: the "interrupt flag" is the
//! vCPU's `evtchn_upcall_mask` byte in its `vcpu_info` (ring 3 cannot
//! clear RFLAGS.IF, and Xen delivers events, not interrupts).
//!
//! Unmasking must not lose an event that arrived while masked: after
//! clearing the mask, a pending upcall is forced with a hypercall that
//! does nothing (`XENVER_version`), on whose return Xen delivers it.
//! `safe_halt` is `SCHEDOP_block`, which unmasks and sleeps atomically;
//! `halt` with events masked polls the vCPU's timer and IPI ports instead,
//! which waits without unmasking.

use super::XenPv;
use crate::ports::{port_of, PortKind};
use crate::shared::vcpu_info;
use crate::xen::XEN;
use core::sync::atomic::{compiler_fence, AtomicU8, Ordering};
use pvops_core::irq::{IpiTarget, IrqFlags, IrqOps};

const IF: u64 = 1 << 9;

fn mask_byte() -> Option<&'static AtomicU8> {
    let vi = vcpu_info(crate::percpu::current())?;
    // SAFETY: `vi` is this vCPU's vcpu_info, mapped for good; the mask byte
    // is written by this vCPU and read by Xen, a byte-sized atomic access
    // suits both.
    Some(unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_upcall_mask)) })
}

fn pending() -> bool {
    let Some(vi) = vcpu_info(crate::percpu::current()) else {
        return false;
    };
    // SAFETY: as in `mask_byte`, for the pending byte Xen sets.
    unsafe { AtomicU8::from_ptr(core::ptr::addr_of_mut!((*vi).evtchn_upcall_pending)) }
        .load(Ordering::SeqCst)
        != 0
}

/// Masks events; returns whether they were enabled.
pub fn save_and_mask() -> bool {
    let Some(m) = mask_byte() else { return false };
    let was = m.swap(1, Ordering::Relaxed) == 0;
    compiler_fence(Ordering::SeqCst);
    was
}

/// Unmasks events if `enabled` (from [`save_and_mask`]).
pub fn restore(enabled: bool) {
    if enabled {
        unmask();
    }
}

fn unmask() {
    let Some(m) = mask_byte() else { return };
    compiler_fence(Ordering::SeqCst);
    m.store(0, Ordering::SeqCst);
    // An event that became pending while masked: have Xen deliver it now.
    if pending() {
        let _ = XEN.version();
    }
}

impl IrqOps for XenPv {
    fn save_flags() -> IrqFlags {
        let masked = mask_byte().is_none_or(|m| m.load(Ordering::Relaxed) != 0);
        IrqFlags(if masked { 0 } else { IF })
    }

    fn restore_flags(flags: IrqFlags) {
        if flags.interrupts_enabled() {
            unmask()
        } else {
            Self::disable()
        }
    }

    fn disable() {
        if let Some(m) = mask_byte() {
            m.store(1, Ordering::Relaxed);
        }
        compiler_fence(Ordering::SeqCst);
    }

    fn enable() {
        unmask()
    }

    fn safe_halt() {
        // Unmasks, and returns at once if an event is already pending.
        let _ = XEN.block();
    }

    fn halt() {
        if Self::save_flags().interrupts_enabled() {
            let _ = XEN.block();
            return;
        }
        let me = crate::percpu::current();
        let ports = [port_of(me, PortKind::Timer), port_of(me, PortKind::Ipi)];
        let ports: [u32; 2] = match ports {
            [Some(t), Some(i)] => [t, i],
            _ => {
                core::hint::spin_loop();
                return;
            }
        };
        let _ = XEN.poll_any(&ports, 0);
    }

    fn eoi() {}

    fn send_ipi(target: IpiTarget, vector: u8) {
        crate::ipi::send_ipi(target, vector)
    }
}
