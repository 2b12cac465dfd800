//! Per-CPU storage shared with the host, and finding out cheaply which CPU
//! this is.
//!
//! Per-CPU arrays are indexed by APIC ID ([`CpuId`]) and hold
//! [`MAX_CPUS`] entries; a CPU whose APIC ID is beyond that gets no
//! per-CPU features (a warning says so), and nothing outside an array is
//! ever touched. The host is given physical addresses found by
//! [`pvops_core::translate`] (`BootContext::kernel_map`), never a guess.
//!
//! ## Which CPU am I?
//! The native answer reads the local APIC ID, which under KVM without
//! APIC virtualisation is a VM exit, as costly as the EOI write PV EOI
//! saves. When the CPU has `rdpid` or `rdtscp`, this backend writes
//! `IA32_TSC_AUX = 0x8000_0000 | APIC ID` on each CPU as it registers it and
//! reads it back with that instruction, which does not exit. A value
//! without the top bit (a CPU not registered yet, or a kernel that wrote
//! TSC_AUX itself) falls back to the APIC. A kernel that keeps TSC_AUX for
//! itself says so with `BootContext::cpu_number =
//! CpuNumber::Kernel(f)`: this backend then never writes the MSR and asks
//! `f` (the kernel's own per-CPU record, no exit) instead.

use core::sync::atomic::{AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::detect::CpuidSource;
use pvops_core::irq::MAX_CPUS;
use pvops_native::tsc_aux;

use crate::hypercall::Hypervisor;
use crate::warn::warn;

/// One `T` per possible APIC ID below [`MAX_CPUS`].
#[derive(Debug)]
pub struct PerCpu<T>([T; MAX_CPUS]);

impl<T> PerCpu<T> {
    /// Wraps the array.
    pub const fn new(slots: [T; MAX_CPUS]) -> Self {
        Self(slots)
    }

    /// The entry of `cpu`, or `None` beyond the array.
    #[inline]
    pub fn get(&self, cpu: CpuId) -> Option<&T> {
        self.0.get(usize::try_from(cpu.0).ok()?)
    }
}

/// Whether `cpu` has per-CPU slots.
pub fn in_range(cpu: CpuId) -> bool {
    (cpu.0 as usize) < MAX_CPUS
}

/// `IA32_TSC_AUX` (the encoding is [`pvops_native::tsc_aux`]'s, shared
/// with Xen).
pub const MSR_TSC_AUX: u32 = tsc_aux::MSR;

/// How [`this_cpu`] learns the CPU number.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSource {
    /// Read the local APIC ID (the native op).
    Apic = 0,
    /// `rdpid` of TSC_AUX.
    Rdpid = 1,
    /// `rdtscp`'s TSC_AUX.
    Rdtscp = 2,
    /// The kernel's own record ([`pvops_core::cpu::CpuNumber::Kernel`]):
    /// the kernel owns TSC_AUX, which this backend then never writes.
    Kernel = 3,
}

static SOURCE: AtomicU8 = AtomicU8::new(IdSource::Apic as u8);

impl IdSource {
    /// The cheapest source the CPU `src` describes offers.
    pub fn probe(src: &impl CpuidSource) -> Self {
        if tsc_aux::has_rdpid(src) {
            IdSource::Rdpid
        } else if tsc_aux::has_rdtscp(src) {
            IdSource::Rdtscp
        } else {
            IdSource::Apic
        }
    }

    /// The source in use.
    pub fn current() -> Self {
        match SOURCE.load(Ordering::Relaxed) {
            1 => IdSource::Rdpid,
            2 => IdSource::Rdtscp,
            3 => IdSource::Kernel,
            _ => IdSource::Apic,
        }
    }

    fn set(self) {
        SOURCE.store(self as u8, Ordering::Relaxed);
    }
}

/// Chooses the source for [`this_cpu`] (once, at init).
pub(crate) fn use_source(s: IdSource) {
    s.set();
}

/// The TSC_AUX value that names `cpu`.
pub fn aux_value(cpu: CpuId) -> u32 {
    tsc_aux::encode(cpu.0)
}

/// The CPU a TSC_AUX value names, if this backend wrote it.
pub fn decode_aux(aux: u32) -> Option<CpuId> {
    tsc_aux::decode(aux).map(CpuId)
}

fn read_aux(s: IdSource) -> Option<u32> {
    match s {
        IdSource::Apic | IdSource::Kernel => None,
        // SAFETY: `probe` saw rdpid in CPUID.
        IdSource::Rdpid => Some(unsafe { tsc_aux::rdpid() }),
        // SAFETY: `probe` saw rdtscp in CPUID.
        IdSource::Rdtscp => Some(unsafe { tsc_aux::rdtscp() }.1),
    }
}

/// Names this CPU in TSC_AUX (when a fast source is in use) and checks it
/// reads back; if not, every CPU goes back to the APIC.
pub(crate) fn register_this_cpu<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) {
    let s = IdSource::current();
    if matches!(s, IdSource::Apic | IdSource::Kernel) {
        return;
    }
    // SAFETY: TSC_AUX exists when rdtscp or rdpid does (what `probe` saw);
    // it holds no address, and this backend owns its value.
    unsafe { h.write_msr(MSR_TSC_AUX, u64::from(aux_value(cpu))) };
    if read_aux(s).and_then(decode_aux) != Some(cpu) {
        IdSource::Apic.set();
        warn(format_args!(
            "kvm: TSC_AUX does not read back on cpu {}: CPU number from the APIC",
            cpu.0
        ));
    }
}

/// Chooses the source of [`this_cpu`] for a backend that uses this
/// module without this crate's `init` (pvops-hyperv on a host without
/// KVM's leaves): the kernel's record when it owns the registers, else
/// the cheapest the CPU offers.
pub fn use_best_source() {
    if pvops_core::cpu::kernel_owns_cpu_number() {
        use_source(IdSource::Kernel);
    } else {
        use_source(IdSource::probe(&pvops_core::detect::HardwareCpuid));
    }
}

/// Names this CPU in TSC_AUX for [`this_cpu`], as this crate does for its
/// own per-CPU features (the same value, so two backends composed on one
/// another agree); falls back to the APIC when it does not read back.
pub fn tag_this_cpu(cpu: CpuId) {
    register_this_cpu(&crate::hypercall::Real, cpu)
}

/// The platform number (APIC ID) of the CPU this runs on.
#[inline]
pub fn this_cpu() -> CpuId {
    let found = match IdSource::current() {
        IdSource::Kernel => pvops_core::cpu::kernel_cpu_number(),
        s => read_aux(s).and_then(decode_aux),
    };
    match found {
        Some(cpu) => cpu,
        None => (crate::native::ops().cpu.current_cpu)(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::cpu::CpuidResult;

    /// A CPU with `rdpid` and/or `rdtscp` (the leaves are
    /// `pvops_native::tsc_aux`'s to read, and tested there).
    struct Cpu {
        rdpid: bool,
        rdtscp: bool,
    }

    impl CpuidSource for Cpu {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            match leaf {
                0 => CpuidResult {
                    eax: 7,
                    ..Default::default()
                },
                7 => CpuidResult {
                    ecx: u32::from(self.rdpid) << 22,
                    ..Default::default()
                },
                0x8000_0000 => CpuidResult {
                    eax: 0x8000_0001,
                    ..Default::default()
                },
                0x8000_0001 => CpuidResult {
                    edx: u32::from(self.rdtscp) << 27,
                    ..Default::default()
                },
                _ => CpuidResult::default(),
            }
        }
    }

    #[test]
    fn probe_prefers_rdpid_then_rdtscp() {
        let probe = |rdpid, rdtscp| IdSource::probe(&Cpu { rdpid, rdtscp });
        assert_eq!(probe(true, true), IdSource::Rdpid);
        assert_eq!(probe(true, false), IdSource::Rdpid);
        assert_eq!(probe(false, true), IdSource::Rdtscp);
        assert_eq!(probe(false, false), IdSource::Apic);
    }

    #[test]
    fn aux_round_trip() {
        for id in [0, 1, 255, 4096] {
            assert_eq!(decode_aux(aux_value(CpuId(id))), Some(CpuId(id)));
        }
        // A TSC_AUX someone else wrote (or the reset value) is not ours.
        assert_eq!(decode_aux(0), None);
        assert_eq!(decode_aux(3), None);
    }

    #[test]
    fn per_cpu_bounds() {
        static A: PerCpu<u8> = PerCpu::new([7; MAX_CPUS]);
        assert_eq!(A.get(CpuId(0)), Some(&7));
        assert_eq!(A.get(CpuId(255)), Some(&7));
        assert_eq!(A.get(CpuId(256)), None);
        assert_eq!(A.get(CpuId(u32::MAX)), None);
        assert!(in_range(CpuId(255)) && !in_range(CpuId(256)));
    }
}
