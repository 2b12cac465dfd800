//! The backend's errors: what VMware's interface answered that cannot be
//! used, each with the fallback its caller takes.

use core::fmt;

/// Why part of VMware's interface could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum VmwareError {
    /// The backdoor's GETVERSION did not answer with the magic in EBX
    /// (nothing behind the port, or something else).
    BackdoorSilent {
        /// EAX as returned.
        eax: u32,
        /// EBX as returned (the magic when VMware answers).
        ebx: u32,
    },
    /// GETVERSION answered with the magic but version `u32::MAX` (VMware's
    /// "no backdoor").
    BackdoorNoVersion,
    /// GETHZ said it has no frequency (EBX all ones).
    GethzUnavailable,
    /// GETHZ gave a TSC frequency outside what any CPU runs at.
    GethzImplausible {
        /// The frequency in Hz as returned.
        hz: u64,
    },
    /// The CPUID range stops before the timing leaf.
    TimingLeafAbsent {
        /// The highest leaf the range reports.
        max_leaf: u32,
    },
    /// The timing leaf gave a TSC frequency outside what any CPU runs at
    /// (0 included: the leaf is there but not filled).
    TimingLeafImplausible {
        /// EAX: the TSC frequency in kHz as returned.
        tsc_khz: u32,
    },
    /// `pvops.fail=` made this call act as refused.
    Injected(&'static str),
    /// The SMBIOS tables could not be read or parsed.
    Smbios(crate::smbios::SmbiosError),
}

impl fmt::Display for VmwareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmwareError::BackdoorSilent { eax, ebx } => write!(
                f,
                "backdoor port 0x5658 did not answer GETVERSION (eax={eax:#x} ebx={ebx:#x})"
            ),
            VmwareError::BackdoorNoVersion => f.write_str("backdoor GETVERSION says no version"),
            VmwareError::GethzUnavailable => f.write_str("backdoor GETHZ has no frequency"),
            VmwareError::GethzImplausible { hz } => {
                write!(
                    f,
                    "backdoor GETHZ gave an implausible TSC frequency {hz} Hz"
                )
            }
            VmwareError::TimingLeafAbsent { max_leaf } => write!(
                f,
                "CPUID timing leaf 0x40000010 absent (range ends at {max_leaf:#x})"
            ),
            VmwareError::TimingLeafImplausible { tsc_khz } => write!(
                f,
                "CPUID timing leaf gave an implausible TSC frequency {tsc_khz} kHz"
            ),
            VmwareError::Injected(point) => write!(f, "{point} refused (pvops.fail)"),
            VmwareError::Smbios(e) => write!(f, "SMBIOS: {e}"),
        }
    }
}

impl core::error::Error for VmwareError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            VmwareError::Smbios(e) => Some(e),
            _ => None,
        }
    }
}
