//! `IA32_TSC_AUX` as the CPU number. A backend under a hypervisor writes
//! [`encode`]`(n)` there on CPU `n` and reads it back with `rdpid` or
//! `rdtscp`, which cost no VM exit where reading the local APIC ID does
//! (Linux keeps its CPU number there too). The tag bit tells a value pvops
//! wrote from the reset value (0) or a kernel's own. KVM and Xen both use
//! it; each decides for itself whether it may own the MSR (a kernel that
//! keeps it says so with `BootContext::cpu_number`) and writes it its own
//! way (KVM through its faked-in-tests MSR path).

use pvops_core::detect::CpuidSource;

/// `IA32_TSC_AUX`.
pub const MSR: u32 = 0xc000_0103;

/// Set in every value pvops writes; the CPU number is in the other bits.
pub const TAG: u32 = 1 << 31;

/// The value that names CPU `cpu` (its top bit dropped: no platform
/// numbers its CPUs that high).
pub const fn encode(cpu: u32) -> u32 {
    TAG | (cpu & !TAG)
}

/// The CPU a `TSC_AUX` value names, if pvops wrote it.
pub const fn decode(aux: u32) -> Option<u32> {
    if aux & TAG != 0 {
        Some(aux & !TAG)
    } else {
        None
    }
}

/// Whether the CPU `src` describes has `rdtscp` (CPUID 0x8000_0001
/// EDX bit 27), and so `IA32_TSC_AUX`.
pub fn has_rdtscp(src: &impl CpuidSource) -> bool {
    src.cpuid(0x8000_0000, 0).eax >= 0x8000_0001 && src.cpuid(0x8000_0001, 0).edx & (1 << 27) != 0
}

/// Whether it has `rdpid` (CPUID 7.0 ECX bit 22), and so `IA32_TSC_AUX`.
pub fn has_rdpid(src: &impl CpuidSource) -> bool {
    src.cpuid(0, 0).eax >= 7 && src.cpuid(7, 0).ecx & (1 << 22) != 0
}

/// The TSC and `IA32_TSC_AUX`, in one instruction.
///
/// # Safety
/// The CPU has `rdtscp` ([`has_rdtscp`]).
#[inline]
pub unsafe fn rdtscp() -> (u64, u32) {
    let mut aux = 0u32;
    // SAFETY: the caller checked that the CPU has rdtscp; it reads the
    // TSC and TSC_AUX and has no other effect.
    let tsc = unsafe { core::arch::x86_64::__rdtscp(&mut aux) };
    (tsc, aux)
}

/// `IA32_TSC_AUX`, without the TSC.
///
/// # Safety
/// The CPU has `rdpid` ([`has_rdpid`]).
#[inline]
pub unsafe fn rdpid() -> u32 {
    let v: u64;
    // SAFETY: the caller checked that the CPU has rdpid; it only reads
    // TSC_AUX.
    unsafe { core::arch::asm!("rdpid {}", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::cpu::CpuidResult;

    #[test]
    fn only_tagged_values_name_a_cpu() {
        for cpu in [0, 1, 63, 255, 4096] {
            assert_eq!(decode(encode(cpu)), Some(cpu));
        }
        assert_eq!(encode(5), TAG | 5);
        assert_eq!(decode(0), None);
        assert_eq!(decode(7), None);
    }

    struct Leaves {
        max: u32,
        l7_ecx: u32,
        ext_max: u32,
        ext_edx: u32,
    }

    impl CpuidSource for Leaves {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            let mut r = CpuidResult::default();
            match leaf {
                0 => r.eax = self.max,
                7 => r.ecx = self.l7_ecx,
                0x8000_0000 => r.eax = self.ext_max,
                0x8000_0001 => r.edx = self.ext_edx,
                _ => {}
            }
            r
        }
    }

    #[test]
    fn features_only_within_the_leaves_reported() {
        let l = |max, l7_ecx, ext_max, ext_edx| Leaves {
            max,
            l7_ecx,
            ext_max,
            ext_edx,
        };
        assert!(has_rdpid(&l(0xd, 1 << 22, 0, 0)));
        assert!(!has_rdpid(&l(6, 1 << 22, 0, 0)));
        assert!(has_rdtscp(&l(0, 0, 0x8000_0008, 1 << 27)));
        assert!(!has_rdtscp(&l(0, 0, 0x8000_0000, 1 << 27)));
        assert!(!has_rdtscp(&l(0, 0, 0x8000_0008, 0)));
    }
}
