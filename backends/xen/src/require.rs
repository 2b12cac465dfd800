//! What this backend needs from Xen, checked before anything is set up:
//! a version with PVH guests, a pvclock an HVM guest may use, and a way
//! to receive event upcalls as an interrupt vector.

use crate::abi::cpuid::HvmFeatures;
use crate::abi::version::XenFeatures;
use crate::detect::{XenCpuid, MIN_VERSION};
use crate::setup::UpcallVia;
use core::fmt;

/// A requirement Xen does not meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unmet {
    /// Older than [`MIN_VERSION`].
    TooOld {
        /// The version Xen reports.
        found: (u16, u16),
    },
    /// `XENFEAT_hvm_safe_pvclock` is missing.
    NoSafePvclock,
    /// Neither `XENFEAT_hvm_callback_vector` nor the per-vCPU upcall
    /// vector (`XEN_HVM_CPUID_UPCALL_VECTOR`).
    NoUpcallVector,
}

impl Unmet {
    /// A fixed description, for [`pvops_core::backend::BackendError::reason`].
    pub const fn reason(self) -> &'static str {
        match self {
            Unmet::TooOld { .. } => "Xen too old for PVH guests (need 4.10)",
            Unmet::NoSafePvclock => "XENFEAT_hvm_safe_pvclock missing: no usable pvclock",
            Unmet::NoUpcallVector => {
                "neither XENFEAT_hvm_callback_vector nor a per-vCPU upcall vector: no events"
            }
        }
    }

    /// The number that goes with it (the version as major << 16 | minor).
    pub fn detail(self) -> Option<i64> {
        match self {
            Unmet::TooOld { found } => Some(i64::from(found.0) << 16 | i64::from(found.1)),
            _ => None,
        }
    }
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unmet::TooOld { found } => write!(
                f,
                "Xen {}.{} is older than {}.{}, the first with PVH guests",
                found.0, found.1, MIN_VERSION.0, MIN_VERSION.1
            ),
            other => f.write_str(other.reason()),
        }
    }
}

impl core::error::Error for Unmet {}

/// Checks the requirements and picks the upcall delivery: the domain-wide
/// callback vector when Xen offers it, else the per-vCPU vector; `prefer`
/// (from `pvops.xen.upcall=`) picks the per-vCPU one when both are there.
pub fn check(
    version: (u16, u16),
    features: XenFeatures,
    cpuid: &XenCpuid,
    prefer: Option<UpcallVia>,
) -> Result<UpcallVia, Unmet> {
    if version < MIN_VERSION {
        return Err(Unmet::TooOld { found: version });
    }
    if !features.contains(XenFeatures::HVM_SAFE_PVCLOCK) {
        return Err(Unmet::NoSafePvclock);
    }
    let callback = features.contains(XenFeatures::HVM_CALLBACK_VECTOR);
    let per_vcpu = cpuid
        .hvm
        .is_some_and(|h| h.contains(HvmFeatures::UPCALL_VECTOR));
    match (prefer, callback, per_vcpu) {
        (Some(UpcallVia::PerVcpuVector), _, true) => Ok(UpcallVia::PerVcpuVector),
        (_, true, _) => Ok(UpcallVia::CallbackVector),
        (_, false, true) => Ok(UpcallVia::PerVcpuVector),
        (_, false, false) => Err(Unmet::NoUpcallVector),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn cpuid(hvm: Option<HvmFeatures>) -> XenCpuid {
        XenCpuid {
            base: 0x4000_0000,
            version: (4, 17),
            hypercall_msr: Some(0x4000_0000),
            tsc_flags: Some(1),
            hvm,
        }
    }

    const GOOD: XenFeatures = XenFeatures::HVM_CALLBACK_VECTOR.union(XenFeatures::HVM_SAFE_PVCLOCK);

    #[test]
    fn xen_417_uses_the_callback_vector() {
        let c = cpuid(Some(
            HvmFeatures::VCPU_ID_PRESENT | HvmFeatures::UPCALL_VECTOR,
        ));
        assert_eq!(
            check((4, 17), GOOD, &c, None),
            Ok(UpcallVia::CallbackVector)
        );
        assert_eq!(
            check((4, 17), GOOD, &c, Some(UpcallVia::PerVcpuVector)),
            Ok(UpcallVia::PerVcpuVector)
        );
        assert_eq!(
            check((4, 10), GOOD, &c, None),
            Ok(UpcallVia::CallbackVector)
        );
        assert_eq!(check((5, 0), GOOD, &c, None), Ok(UpcallVia::CallbackVector));
    }

    #[test]
    fn old_xen_is_refused_with_its_version() {
        let e = check((4, 9), GOOD, &cpuid(None), None).unwrap_err();
        assert_eq!(e, Unmet::TooOld { found: (4, 9) });
        assert_eq!(e.detail(), Some(0x4_0009));
        assert_eq!(
            e.to_string(),
            "Xen 4.9 is older than 4.10, the first with PVH guests"
        );
        assert!(check((3, 99), GOOD, &cpuid(None), None).is_err());
    }

    #[test]
    fn missing_features() {
        let c = cpuid(None);
        let no_clock = XenFeatures::HVM_CALLBACK_VECTOR;
        assert_eq!(
            check((4, 17), no_clock, &c, None),
            Err(Unmet::NoSafePvclock)
        );
        let no_cb = XenFeatures::HVM_SAFE_PVCLOCK;
        assert_eq!(check((4, 17), no_cb, &c, None), Err(Unmet::NoUpcallVector));
        // Falling back to the per-vCPU vector when that is what there is.
        let per = cpuid(Some(HvmFeatures::UPCALL_VECTOR));
        assert_eq!(
            check((4, 17), no_cb, &per, None),
            Ok(UpcallVia::PerVcpuVector)
        );
        // Asking for the per-vCPU vector where Xen lacks it: the callback.
        assert_eq!(
            check((4, 17), GOOD, &c, Some(UpcallVia::PerVcpuVector)),
            Ok(UpcallVia::CallbackVector)
        );
    }
}
