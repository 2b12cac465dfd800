//! Which port is what: every port this backend binds is recorded with its
//! kind and the vCPU it notifies, and each vCPU's ports are kept for
//! sending and polling.

use crate::abi::evtchn::Port;
use crate::percpu::{slot, MAX_VCPUS};
use core::sync::atomic::{AtomicU32, Ordering};

/// Ports this backend can record (`0..MAX_PORTS`); Xen hands out the
/// lowest free port, and this backend binds three per vCPU.
pub const MAX_PORTS: usize = 1024;

/// What a port is for.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// `VIRQ_TIMER`: the one-shot timer fired.
    Timer = 1,
    /// An IPI: vectors wait in [`crate::ipi`] for this vCPU.
    Ipi = 2,
    /// A lock kick: kept masked, only polled ([`crate::lock`]).
    Kick = 3,
}

impl PortKind {
    fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(PortKind::Timer),
            2 => Some(PortKind::Ipi),
            3 => Some(PortKind::Kick),
            _ => None,
        }
    }
}

/// Per port: `kind << 24 | vcpu`, 0 when unbound.
static PORTS: [AtomicU32; MAX_PORTS] = [const { AtomicU32::new(0) }; MAX_PORTS];
/// Per vCPU and kind (index `kind - 1`): the port, 0 when unbound (Xen
/// never hands out port 0).
static BY_VCPU: [[AtomicU32; 3]; MAX_VCPUS] =
    [const { [const { AtomicU32::new(0) }; 3] }; MAX_VCPUS];

/// Why a port could not be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The port is beyond [`MAX_PORTS`].
    PortTooHigh(Port),
    /// The vCPU is beyond [`MAX_VCPUS`].
    VcpuTooHigh(u32),
}

/// Records `port` as `kind` for `vcpu`.
pub fn record(port: Port, kind: PortKind, vcpu: u32) -> Result<(), RecordError> {
    let i = slot(vcpu).ok_or(RecordError::VcpuTooHigh(vcpu))?;
    let p = port as usize;
    if p == 0 || p >= MAX_PORTS {
        return Err(RecordError::PortTooHigh(port));
    }
    PORTS[p].store(u32::from(kind as u8) << 24 | vcpu, Ordering::Release);
    BY_VCPU[i][kind as usize - 1].store(port, Ordering::Release);
    Ok(())
}

/// What `port` is and which vCPU it notifies.
#[inline]
pub fn lookup(port: Port) -> Option<(PortKind, u32)> {
    let v = PORTS.get(port as usize)?.load(Ordering::Acquire);
    PortKind::from_u8((v >> 24) as u8).map(|k| (k, v & 0x00ff_ffff))
}

/// `vcpu`'s port of `kind`, if bound.
#[inline]
pub fn port_of(vcpu: u32, kind: PortKind) -> Option<Port> {
    let i = slot(vcpu)?;
    match BY_VCPU[i][kind as usize - 1].load(Ordering::Acquire) {
        0 => None,
        p => Some(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_and_look_up() {
        record(7, PortKind::Timer, 3).unwrap();
        record(8, PortKind::Ipi, 3).unwrap();
        assert_eq!(lookup(7), Some((PortKind::Timer, 3)));
        assert_eq!(lookup(8), Some((PortKind::Ipi, 3)));
        assert_eq!(port_of(3, PortKind::Ipi), Some(8));
        assert_eq!(port_of(3, PortKind::Kick), None);
        assert_eq!(lookup(999), None);
        assert_eq!(lookup(5000), None);
        assert_eq!(
            record(0, PortKind::Ipi, 1),
            Err(RecordError::PortTooHigh(0))
        );
        assert_eq!(
            record(1024, PortKind::Ipi, 1),
            Err(RecordError::PortTooHigh(1024))
        );
        assert_eq!(
            record(9, PortKind::Ipi, 64),
            Err(RecordError::VcpuTooHigh(64))
        );
    }
}
