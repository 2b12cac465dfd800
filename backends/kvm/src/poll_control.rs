//! Poll control: `MSR_KVM_POLL_CONTROL` bit 0 enables (1) or disables (0)
//! the host polling for a wake-up for a while after this vCPU halts before
//! it really deschedules it.
//!
//! This backend writes 1 (host polling on). A guest that polls itself
//! before halting (Linux's cpuidle-haltpoll) asks for 0 so the two do not
//! poll twice; pvops halts straight away in `safe_halt` and lock `wait`,
//! so host-side polling is what gives those halts a short wake-up time.
//! Writing it explicitly undoes a 0 a previous kernel (kexec) may have
//! left behind. The MSR is per vCPU, so every CPU writes it.

use crate::abi::{KVM_POLL_CONTROL_HOST_POLL, MSR_KVM_POLL_CONTROL};
use crate::hypercall::{refuse, Hypervisor, KvmError};

/// Sets this vCPU's host-side halt polling to "on". Fails only when fault
/// injection refuses the write (`kvm.poll-control`).
pub(crate) fn setup<H: Hypervisor + ?Sized>(h: &H) -> Result<(), KvmError> {
    refuse(h, crate::fault_points::POLL_CONTROL, MSR_KVM_POLL_CONTROL)?;
    // SAFETY: the MSR exists (POLL_CONTROL was advertised) and holds no
    // address.
    unsafe { h.write_msr(MSR_KVM_POLL_CONTROL, KVM_POLL_CONTROL_HOST_POLL) };
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_one() {
        let h = crate::hypercall::tests::FakeHv::default();
        super::setup(&h).unwrap();
        assert_eq!(h.msrs.borrow()[0], (0x4b56_4d05, 1));
    }
}
