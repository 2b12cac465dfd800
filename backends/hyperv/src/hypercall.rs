//! Talking to the hypervisor: the typed error ([`HvError`]), the small
//! [`Hypervisor`] trait every feature goes through (so host tests drive
//! them against a fake), the real one ([`Real`]: `rdmsr`/`wrmsr` and calls
//! into the hypercall page), and the hypercall input value ([`Control`]).
//!
//! Register convention (TLFS, x64): input value in RCX, input GPA (or the
//! first 8 bytes of a fast call) in RDX, output GPA (or the next 8) in
//! R8; the result in RAX. The call goes through the hypercall page the
//! hypervisor fills (`vmcall`/`vmmcall` and `ret`), so this crate never
//! picks the instruction.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops_core::cpu::CpuOps;
use pvops_core::translate::TranslateError;

use crate::abi::{self, control, result, status};

/// What went wrong talking to Hyper-V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HvError {
    /// A hypercall returned a status other than success.
    Status {
        /// The call code.
        code: u16,
        /// The status it returned.
        status: u16,
    },
    /// A rep hypercall completed fewer reps than asked.
    Partial {
        /// The call code.
        code: u16,
        /// Reps completed.
        done: u16,
        /// Reps asked.
        asked: u16,
    },
    /// An enabling MSR write did not take: reading the MSR back does not
    /// show the enable bit (a host that ignores the hypercall page).
    NotEnabled {
        /// The MSR.
        msr: u32,
    },
    /// The reference TSC page reads sequence 0: the hypervisor says it is
    /// not valid (use another clock).
    RefTscInvalid,
    /// This CPU's VP index is beyond what the per-VP tables hold.
    VpIndexOutOfRange {
        /// The index the hypervisor gave.
        index: u32,
        /// The limit.
        limit: u32,
    },
    /// A frequency MSR read a value that cannot be a frequency.
    BadFrequency {
        /// The MSR.
        msr: u32,
        /// What it read.
        hz: u64,
    },
    /// The host refused an MSR write (only fault injection,
    /// `pvops.fail=`, produces it: see [`crate::fault_points`]).
    Refused {
        /// The MSR.
        msr: u32,
    },
    /// An area's physical address could not be found; nothing was handed
    /// to the host.
    Untranslatable {
        /// The MSR that would have registered it.
        msr: u32,
        /// Why.
        cause: TranslateError,
    },
    /// A CPU's APIC ID is beyond the per-CPU arrays.
    CpuOutOfRange(u32),
    /// A target CPU has no known VP index yet (it has not run
    /// `init_secondary`), or a set needs the Ex form the host lacks.
    NoVpIndex(u32),
}

impl HvError {
    /// The TLFS name of a hypercall status, if it is one this crate knows.
    pub fn status_name(s: u16) -> Option<&'static str> {
        Some(match s {
            status::SUCCESS => "HV_STATUS_SUCCESS",
            status::INVALID_HYPERCALL_CODE => "HV_STATUS_INVALID_HYPERCALL_CODE",
            status::INVALID_HYPERCALL_INPUT => "HV_STATUS_INVALID_HYPERCALL_INPUT",
            status::INVALID_ALIGNMENT => "HV_STATUS_INVALID_ALIGNMENT",
            status::INVALID_PARAMETER => "HV_STATUS_INVALID_PARAMETER",
            status::ACCESS_DENIED => "HV_STATUS_ACCESS_DENIED",
            status::OPERATION_DENIED => "HV_STATUS_OPERATION_DENIED",
            status::INSUFFICIENT_MEMORY => "HV_STATUS_INSUFFICIENT_MEMORY",
            status::INVALID_VP_INDEX => "HV_STATUS_INVALID_VP_INDEX",
            _ => return None,
        })
    }
}

impl fmt::Display for HvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HvError::Status { code, status } => {
                write!(f, "hypercall {code:#x} returned status {status:#x}")?;
                if let Some(n) = Self::status_name(status) {
                    write!(f, " ({n})")?;
                }
                Ok(())
            }
            HvError::Partial { code, done, asked } => {
                write!(f, "hypercall {code:#x} completed {done} of {asked} reps")
            }
            HvError::NotEnabled { msr } => {
                write!(f, "MSR {msr:#x} does not keep its enable bit")
            }
            HvError::RefTscInvalid => f.write_str("reference TSC page is invalid (sequence 0)"),
            HvError::VpIndexOutOfRange { index, limit } => {
                write!(f, "VP index {index} is not below {limit}")
            }
            HvError::BadFrequency { msr, hz } => {
                write!(f, "MSR {msr:#x} reads {hz} Hz, not a frequency")
            }
            HvError::Refused { msr } => write!(f, "write of MSR {msr:#x} refused (pvops.fail)"),
            HvError::Untranslatable { msr, cause } => {
                write!(f, "no physical address for MSR {msr:#x}'s area: {cause}")
            }
            HvError::CpuOutOfRange(id) => write!(f, "APIC ID {id} is beyond the per-CPU arrays"),
            HvError::NoVpIndex(id) => write!(f, "CPU {id} has no usable VP index"),
        }
    }
}

impl core::error::Error for HvError {}

/// A hypercall input value (RCX).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control(pub u64);

impl Control {
    /// A call with input in memory.
    pub const fn slow(code: u16) -> Self {
        Control(code as u64)
    }

    /// A call with its input in RDX and R8.
    pub const fn fast(code: u16) -> Self {
        Control(code as u64 | control::FAST)
    }

    /// With a variable header of `words` 8-byte units (a VP set's banks).
    pub const fn var_header(self, words: u64) -> Self {
        Control(self.0 | ((words & 0x3ff) << control::VARHEAD_SHIFT))
    }

    /// With `reps` repetitions (the list flushes).
    pub const fn reps(self, reps: u64) -> Self {
        Control(self.0 | ((reps & control::REP_COUNT_MAX) << control::REP_COUNT_SHIFT))
    }

    /// The call code.
    pub const fn code(self) -> u16 {
        self.0 as u16
    }

    /// The rep count asked.
    pub const fn rep_count(self) -> u16 {
        ((self.0 >> control::REP_COUNT_SHIFT) & control::REP_COUNT_MAX) as u16
    }
}

/// Turns a hypercall's RAX into a result: its status, and for a rep call
/// whether every rep completed.
pub fn check(ctl: Control, rax: u64) -> Result<(), HvError> {
    let st = (rax & result::STATUS_MASK) as u16;
    if st != status::SUCCESS {
        return Err(HvError::Status {
            code: ctl.code(),
            status: st,
        });
    }
    let asked = ctl.rep_count();
    let done = ((rax >> result::REPS_SHIFT) & result::REPS_MASK) as u16;
    if asked != 0 && done != asked {
        return Err(HvError::Partial {
            code: ctl.code(),
            done,
            asked,
        });
    }
    Ok(())
}

/// What the feature code needs from the hypervisor. [`Real`] is Hyper-V
/// (or a host emulating it); tests implement it to record MSR writes,
/// answer reads and script hypercall results.
pub trait Hypervisor {
    /// Issues a hypercall: input value `ctl`, `rdx` and `r8` as the TLFS
    /// says for its kind (fast: data; slow: input and output GPAs).
    /// Returns RAX as the host left it.
    fn hypercall(&self, ctl: Control, rdx: u64, r8: u64) -> u64;

    /// Reads a synthetic MSR.
    ///
    /// # Safety
    /// `msr` must exist (its privilege bit was checked).
    unsafe fn read_msr(&self, msr: u32) -> u64;

    /// Writes a synthetic MSR.
    ///
    /// # Safety
    /// `msr` must exist, and any address in `value` must name memory the
    /// host may write for as long as the registration stays.
    unsafe fn write_msr(&self, msr: u32, value: u64);

    /// Counts one use of fault point `point` and says whether it must fail
    /// (`pvops.fail=`). [`Real`] asks the kernel's table; fakes keep their own.
    fn fail(&self, point: &'static str) -> bool {
        pvops_core::fault::hit(point)
    }

    /// The physical address of `vaddr..vaddr + len` (a static of this
    /// crate), which must be physically contiguous.
    fn phys_of_range(&self, vaddr: u64, len: usize) -> Result<u64, TranslateError> {
        pvops_core::translate::phys_of_range(vaddr, len)
    }
}

/// Issues `ctl` and checks its result ([`check`]).
pub fn call<H: Hypervisor + ?Sized>(h: &H, ctl: Control, rdx: u64, r8: u64) -> Result<(), HvError> {
    check(ctl, h.hypercall(ctl, rdx, r8))
}

/// The physical address of `area` (a static of this crate) to hand the
/// host through `msr`.
pub(crate) fn area_paddr<H: Hypervisor + ?Sized, T>(
    h: &H,
    area: *const T,
    msr: u32,
) -> Result<u64, HvError> {
    h.phys_of_range(area as u64, core::mem::size_of::<T>())
        .map_err(|cause| HvError::Untranslatable { msr, cause })
}

/// The fault check before an enabling MSR write.
pub(crate) fn refuse<H: Hypervisor + ?Sized>(
    h: &H,
    point: &'static str,
    msr: u32,
) -> Result<(), HvError> {
    if h.fail(point) {
        Err(HvError::Refused { msr })
    } else {
        Ok(())
    }
}

/// The hypercall page: the hypervisor writes its calling sequence here
/// once [`setup`] registers it. In `.text`, so it is mapped executable
/// (the host writes it through its physical address; the guest only ever
/// calls it).
#[repr(C, align(4096))]
pub(crate) struct HypercallPage(pub(crate) [u8; 4096]);

#[link_section = ".text.pvops_hyperv_hypercall_page"]
pub(crate) static HYPERCALL_PAGE: HypercallPage = HypercallPage([0xcc; 4096]);

/// Hypercalls issued through [`Real`] (for `hypercalls=` bench counts).
static COUNT: AtomicU64 = AtomicU64::new(0);
/// 1 once the hypercall page is enabled.
static READY: AtomicU64 = AtomicU64::new(0);

/// How many hypercalls this backend has made since boot.
pub fn count() -> u64 {
    COUNT.load(Ordering::Relaxed)
}

/// Whether the hypercall page is in use.
pub fn ready() -> bool {
    READY.load(Ordering::Acquire) != 0
}

/// Writes the guest OS id, then registers the hypercall page and checks
/// the enable bit took (a host that ignores the page gets
/// [`HvError::NotEnabled`]).
pub fn setup<H: Hypervisor + ?Sized>(h: &H) -> Result<(), HvError> {
    refuse(h, crate::fault_points::GUEST_OS_ID, abi::msr::GUEST_OS_ID)?;
    // SAFETY: the HYPERCALL privilege bit was checked by the caller; the
    // id MSR takes any value and names no memory.
    unsafe { h.write_msr(abi::msr::GUEST_OS_ID, abi::GUEST_OS_ID) };
    let pa = area_paddr(h, &HYPERCALL_PAGE, abi::msr::HYPERCALL)?;
    refuse(h, crate::fault_points::HYPERCALL, abi::msr::HYPERCALL)?;
    // SAFETY: the page is a page-aligned static of this crate the host may
    // write for ever (it is never freed and Rust never reads it).
    unsafe { h.write_msr(abi::msr::HYPERCALL, pa | abi::PAGE_ENABLE) };
    // SAFETY: as above, the MSR exists.
    let back = unsafe { h.read_msr(abi::msr::HYPERCALL) };
    if back & abi::PAGE_ENABLE == 0 {
        return Err(HvError::NotEnabled {
            msr: abi::msr::HYPERCALL,
        });
    }
    READY.store(1, Ordering::Release);
    Ok(())
}

/// The hypervisor itself: the CPU's MSR instructions, calls into the page.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

impl Hypervisor for Real {
    #[inline]
    fn hypercall(&self, ctl: Control, rdx: u64, r8: u64) -> u64 {
        if !ready() {
            // No page: as the TLFS answers an unknown call.
            return u64::from(status::INVALID_HYPERCALL_CODE);
        }
        COUNT.fetch_add(1, Ordering::Relaxed);
        let rax: u64;
        // SAFETY: READY says the hypervisor filled the page with its call
        // sequence; that sequence follows the C ABI's volatile registers
        // (it changes RAX, RCX, RDX, R8-R11 at most), which clobber_abi
        // declares. Inputs naming memory point at this crate's input
        // buffers, which the host only reads.
        unsafe {
            core::arch::asm!(
                "call {page}",
                page = in(reg) HYPERCALL_PAGE.0.as_ptr(),
                inlateout("rcx") ctl.0 => _,
                inlateout("rdx") rdx => _,
                inlateout("r8") r8 => _,
                lateout("rax") rax,
                clobber_abi("C"),
            );
        }
        rax
    }

    #[inline]
    unsafe fn read_msr(&self, msr: u32) -> u64 {
        // SAFETY: the caller guarantees the MSR exists.
        unsafe { <pvops_native::Native as CpuOps>::read_msr(msr) }
    }

    #[inline]
    unsafe fn write_msr(&self, msr: u32, value: u64) {
        // SAFETY: the caller upholds the trait's contract.
        unsafe { <pvops_native::Native as CpuOps>::write_msr(msr, value) }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use core::cell::{Cell, RefCell};
    use std::collections::BTreeMap;
    use std::string::ToString;
    use std::vec::Vec;

    /// One recorded hypercall: input value, RDX, R8, memory input words.
    pub(crate) type Call = (Control, u64, u64, Vec<u64>);

    /// A fake Hyper-V: records MSR writes and hypercalls (with a copy of
    /// their memory input, read at the GPA given, identity-mapped), answers
    /// MSR reads from a map, scripts the hypercall result.
    #[derive(Default)]
    pub(crate) struct FakeHv {
        pub msrs: RefCell<Vec<(u32, u64)>>,
        pub reads: RefCell<BTreeMap<u32, u64>>,
        /// MSRs whose reads ignore the last write (a host that does not
        /// keep the enable bit).
        pub sticky: RefCell<Vec<u32>>,
        pub calls: RefCell<Vec<Call>>,
        /// RAX of every hypercall (0: success, 0 reps).
        pub ret: Cell<Option<u64>>,
        pub faults: pvops_core::fault::Table,
        /// Nothing translates.
        pub unmapped: bool,
    }

    impl Hypervisor for FakeHv {
        fn hypercall(&self, ctl: Control, rdx: u64, r8: u64) -> u64 {
            // A slow call's input: 8-byte words from the GPA (the fake's
            // memory is this process's, identity-mapped), the fixed part
            // and variable header and reps, up to 24 words.
            let input = if ctl.0 & control::FAST == 0 && rdx != 0 {
                // SAFETY: tests pass the address of a live input buffer of
                // at least 512 bytes.
                (0..24)
                    .map(|i| unsafe { (rdx as *const u64).add(i).read() })
                    .collect()
            } else {
                Vec::new()
            };
            self.calls.borrow_mut().push((ctl, rdx, r8, input));
            self.ret
                .get()
                .unwrap_or(u64::from(ctl.rep_count()) << result::REPS_SHIFT)
        }
        unsafe fn read_msr(&self, msr: u32) -> u64 {
            if let Some(v) = self.reads.borrow().get(&msr) {
                return *v;
            }
            if self.sticky.borrow().contains(&msr) {
                return 0;
            }
            self.msrs
                .borrow()
                .iter()
                .rev()
                .find(|(m, _)| *m == msr)
                .map_or(0, |(_, v)| *v)
        }
        unsafe fn write_msr(&self, msr: u32, value: u64) {
            self.msrs.borrow_mut().push((msr, value));
        }
        fn fail(&self, point: &'static str) -> bool {
            self.faults.hit(point)
        }
        fn phys_of_range(&self, vaddr: u64, _len: usize) -> Result<u64, TranslateError> {
            if self.unmapped {
                Err(TranslateError::NotMapped { vaddr, level: 0 })
            } else {
                Ok(vaddr)
            }
        }
    }

    impl FakeHv {
        pub(crate) fn writes(&self, msr: u32) -> Vec<u64> {
            self.msrs
                .borrow()
                .iter()
                .filter(|(m, _)| *m == msr)
                .map(|(_, v)| *v)
                .collect()
        }
    }

    #[test]
    fn control_values() {
        let c = Control::slow(abi::call::FLUSH_VA_LIST).reps(3);
        assert_eq!(c.0, 0x3 | (3 << 32));
        assert_eq!(c.rep_count(), 3);
        assert_eq!(c.code(), 3);
        let c = Control::fast(abi::call::SEND_IPI);
        assert_eq!(c.0, 0x1_000b);
        let c = Control::slow(abi::call::SEND_IPI_EX).var_header(2);
        assert_eq!(c.0, 0x15 | (2 << 17));
    }

    #[test]
    fn statuses_are_typed_errors() {
        let c = Control::fast(abi::call::SEND_IPI);
        assert_eq!(check(c, 0), Ok(()));
        let e = check(c, 5).unwrap_err();
        assert_eq!(
            e,
            HvError::Status {
                code: 0xb,
                status: 5
            }
        );
        assert!(e.to_string().contains("HV_STATUS_INVALID_PARAMETER"), "{e}");
        assert_eq!(HvError::status_name(0x77), None);
        // A rep call that stopped early.
        let c = Control::slow(abi::call::FLUSH_VA_LIST).reps(4);
        assert_eq!(check(c, 4 << 32), Ok(()));
        assert_eq!(
            check(c, 2 << 32),
            Err(HvError::Partial {
                code: 3,
                done: 2,
                asked: 4
            })
        );
    }

    #[test]
    fn hypercall_page_setup_and_its_failures() {
        let h = FakeHv::default();
        assert_eq!(setup(&h), Ok(()));
        assert_eq!(h.writes(abi::msr::GUEST_OS_ID), [abi::GUEST_OS_ID]);
        let page = &HYPERCALL_PAGE as *const _ as u64;
        assert_eq!(h.writes(abi::msr::HYPERCALL), [page | 1]);
        assert_eq!(page % 4096, 0);
        // A host that does not keep the enable bit.
        let h = FakeHv::default();
        h.sticky.borrow_mut().push(abi::msr::HYPERCALL);
        assert_eq!(
            setup(&h),
            Err(HvError::NotEnabled {
                msr: abi::msr::HYPERCALL
            })
        );
        // Refused by fault injection: nothing written after the point.
        let h = FakeHv::default();
        h.faults
            .configure(Some("hyperv.hypercall"), crate::fault_points::ALL);
        assert_eq!(
            setup(&h),
            Err(HvError::Refused {
                msr: abi::msr::HYPERCALL
            })
        );
        assert!(h.writes(abi::msr::HYPERCALL).is_empty());
        // Untranslatable: the host never gets an address.
        let h = FakeHv {
            unmapped: true,
            ..FakeHv::default()
        };
        assert!(matches!(setup(&h), Err(HvError::Untranslatable { .. })));
        assert!(h.writes(abi::msr::HYPERCALL).is_empty());
    }
}
