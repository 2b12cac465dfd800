//! KVM hypercalls: the raw instruction (`vmcall` on Intel, `vmmcall` on
//! AMD, chosen once from the CPUID vendor string), a small [`Hypervisor`]
//! trait that the feature code talks to (so host tests can fake the
//! hypervisor), and the one typed hypercall function, [`call`].
//!
//! Register convention (hypercalls.rst): number in RAX, up to four
//! arguments in RBX, RCX, RDX, RSI, result in RAX; nothing else clobbered.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use pvops_core::cpu::CpuOps;
use pvops_core::detect::CpuidSource;
use pvops_core::translate::TranslateError;

use crate::abi::{self, errno};

/// The instruction that enters the hypervisor.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallInsn {
    /// Intel VMX (`0f 01 c1`).
    Vmcall = 1,
    /// AMD SVM (`0f 01 d9`).
    Vmmcall = 2,
}

impl HypercallInsn {
    /// The instruction for a CPU whose CPUID leaf 0 vendor string is
    /// `vendor`: `vmmcall` for AMD and Hygon, `vmcall` for everything else.
    pub fn for_vendor(vendor: &[u8; 12]) -> Self {
        match vendor {
            b"AuthenticAMD" | b"HygonGenuine" => HypercallInsn::Vmmcall,
            _ => HypercallInsn::Vmcall,
        }
    }

    /// The instruction for the CPU `src` describes.
    pub fn detect(src: &impl CpuidSource) -> Self {
        Self::for_vendor(&vendor(src))
    }
}

/// The 12-byte vendor string of CPUID leaf 0 (EBX, EDX, ECX).
pub fn vendor(src: &impl CpuidSource) -> [u8; 12] {
    let r = src.cpuid(0, 0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..12].copy_from_slice(&r.ecx.to_le_bytes());
    v
}

/// 0 until [`select`] ran.
static INSN: AtomicU8 = AtomicU8::new(0);
/// Hypercalls issued through [`Real`], for `hypercalls=` bench counts.
static COUNT: AtomicU64 = AtomicU64::new(0);

/// Fixes the instruction [`Real`] uses. Called once by `init`.
pub fn select(insn: HypercallInsn) {
    INSN.store(insn as u8, Ordering::Relaxed);
}

/// The instruction chosen by [`select`], if it ran.
pub fn selected() -> Option<HypercallInsn> {
    match INSN.load(Ordering::Relaxed) {
        1 => Some(HypercallInsn::Vmcall),
        2 => Some(HypercallInsn::Vmmcall),
        _ => None,
    }
}

/// How many hypercalls this backend has made since boot.
pub fn count() -> u64 {
    COUNT.load(Ordering::Relaxed)
}

/// The hypercalls this backend makes. Each of them only passes numbers
/// (no guest addresses), which is why [`call`] can be safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hc {
    /// `KVM_HC_KICK_CPU` (flags, APIC ID).
    KickCpu,
    /// `KVM_HC_SEND_IPI` (bitmap low, bitmap high, min APIC ID, ICR).
    SendIpi,
    /// `KVM_HC_SCHED_YIELD` (APIC ID).
    SchedYield,
}

impl Hc {
    /// The hypercall number.
    pub const fn nr(self) -> u64 {
        match self {
            Hc::KickCpu => abi::KVM_HC_KICK_CPU,
            Hc::SendIpi => abi::KVM_HC_SEND_IPI,
            Hc::SchedYield => abi::KVM_HC_SCHED_YIELD,
        }
    }
}

/// What went wrong talking to KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvmError {
    /// A hypercall returned a negative code (`-KVM_ENOSYS`, ...).
    Hypercall {
        /// The hypercall number.
        nr: u64,
        /// What it returned.
        ret: i64,
    },
    /// A per-CPU area's address is not what the MSR takes.
    Misaligned {
        /// The MSR.
        msr: u32,
        /// The physical address.
        paddr: u64,
    },
    /// A CPU's APIC ID is beyond what the per-CPU arrays hold.
    CpuOutOfRange(u32),
    /// A shared record never settled or was never filled.
    NotFilled {
        /// The MSR that registered it.
        msr: u32,
        /// The version last seen.
        version: u32,
    },
    /// The host refused an MSR write (as a `#GP` would; only fault
    /// injection, `pvops.fail=`, produces it: see [`crate::fault_points`]).
    Refused {
        /// The MSR.
        msr: u32,
    },
    /// A per-CPU area's physical address could not be found (see
    /// [`pvops_core::translate`]); nothing was handed to the host.
    Untranslatable {
        /// The MSR that would have registered it.
        msr: u32,
        /// Why.
        cause: TranslateError,
    },
}

impl KvmError {
    /// The documented name of a hypercall error code, if it is one.
    pub fn errno_name(ret: i64) -> Option<&'static str> {
        Some(match ret.checked_neg()? {
            errno::KVM_ENOSYS => "KVM_ENOSYS",
            errno::KVM_EFAULT => "KVM_EFAULT",
            errno::KVM_EINVAL => "KVM_EINVAL",
            errno::KVM_E2BIG => "KVM_E2BIG",
            errno::KVM_EPERM => "KVM_EPERM",
            errno::KVM_EOPNOTSUPP => "KVM_EOPNOTSUPP",
            _ => return None,
        })
    }
}

impl fmt::Display for KvmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KvmError::Hypercall { nr, ret } => {
                write!(f, "hypercall {nr} returned {ret}")?;
                if let Some(n) = Self::errno_name(ret) {
                    write!(f, " (-{n})")?;
                }
                Ok(())
            }
            KvmError::Misaligned { msr, paddr } => {
                write!(f, "area {paddr:#x} is misaligned for MSR {msr:#x}")
            }
            KvmError::CpuOutOfRange(id) => write!(f, "APIC ID {id} is beyond the per-CPU arrays"),
            KvmError::NotFilled { msr, version } => write!(
                f,
                "area of MSR {msr:#x} never filled or settled (version {version:#x})"
            ),
            KvmError::Refused { msr } => {
                write!(f, "write of MSR {msr:#x} refused (pvops.fail)")
            }
            KvmError::Untranslatable { msr, cause } => {
                write!(f, "no physical address for MSR {msr:#x}'s area: {cause}")
            }
        }
    }
}

impl core::error::Error for KvmError {}

/// What the feature code needs from the hypervisor. [`Real`] is KVM; tests
/// implement it to count calls and return errors.
pub trait Hypervisor {
    /// Issues hypercall `hc` with `args` and returns RAX as the host left it.
    fn hypercall(&self, hc: Hc, args: [u64; 4]) -> i64;
    /// Writes a KVM MSR.
    ///
    /// # Safety
    /// Any address in `value` must name memory the host may write for as
    /// long as the registration stays (KVM writes it behind the program's
    /// back), and `msr` must exist (the feature bit was checked).
    unsafe fn write_msr(&self, msr: u32, value: u64);

    /// Counts one use of fault-injection point `point` and says whether it
    /// must fail (`pvops.fail=`, [`pvops_core::fault`]). [`Real`] asks the
    /// kernel's table; test fakes keep their own.
    fn fail(&self, point: &'static str) -> bool {
        pvops_core::fault::hit(point)
    }

    /// The physical address of `vaddr..vaddr + len` (a static of this
    /// crate), which must be physically contiguous. [`Real`] asks
    /// [`pvops_core::translate`]; test fakes lay out scattered images.
    fn phys_of_range(&self, vaddr: u64, len: usize) -> Result<u64, TranslateError> {
        pvops_core::translate::phys_of_range(vaddr, len)
    }
}

/// The physical address of `area`, a static of this crate, to register
/// with the host through `msr`; never a guess (see [`pvops_core::translate`]).
pub(crate) fn area_paddr<H: Hypervisor + ?Sized, T>(
    h: &H,
    area: *const T,
    msr: u32,
) -> Result<u64, KvmError> {
    h.phys_of_range(area as u64, core::mem::size_of::<T>())
        .map_err(|cause| KvmError::Untranslatable { msr, cause })
}

/// The fault-injection check before a feature's enabling MSR write: when
/// `point` is armed (`pvops.fail=`), the write is skipped and treated as
/// refused by the host ([`KvmError::Refused`]), so the caller takes the
/// same path as on a host that `#GP`s the write.
pub(crate) fn refuse<H: Hypervisor + ?Sized>(
    h: &H,
    point: &'static str,
    msr: u32,
) -> Result<(), KvmError> {
    if h.fail(point) {
        Err(KvmError::Refused { msr })
    } else {
        Ok(())
    }
}

/// Issues `hc` and turns a negative return into [`KvmError::Hypercall`].
pub fn call<H: Hypervisor + ?Sized>(h: &H, hc: Hc, args: [u64; 4]) -> Result<u64, KvmError> {
    let ret = h.hypercall(hc, args);
    if ret < 0 {
        Err(KvmError::Hypercall { nr: hc.nr(), ret })
    } else {
        Ok(ret as u64)
    }
}

/// KVM itself: the selected instruction and the CPU's `wrmsr`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Real;

impl Hypervisor for Real {
    #[inline]
    fn hypercall(&self, hc: Hc, args: [u64; 4]) -> i64 {
        COUNT.fetch_add(1, Ordering::Relaxed);
        let [a0, a1, a2, a3] = args;
        match selected() {
            // SAFETY: `Real` is only used once `init` found KVM and chose
            // the instruction; the hypercalls of `Hc` take no guest
            // addresses, so the host touches no memory of ours.
            Some(HypercallInsn::Vmmcall) => unsafe { raw::vmmcall(hc.nr(), a0, a1, a2, a3) },
            // SAFETY: as above.
            Some(HypercallInsn::Vmcall) => unsafe { raw::vmcall(hc.nr(), a0, a1, a2, a3) },
            None => -errno::KVM_ENOSYS,
        }
    }

    #[inline]
    unsafe fn write_msr(&self, msr: u32, value: u64) {
        // SAFETY: the caller upholds the trait's contract (the MSR exists
        // and the memory it names stays the host's to write).
        unsafe { <pvops_native::Native as CpuOps>::write_msr(msr, value) }
    }
}

/// Whether hypercalls may be used, from `pvops.kvm.hypercalls=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallPolicy {
    /// Use them unless the vCPU's instructions are being emulated (the
    /// default; see [`emulated`]).
    Auto,
    /// Use them without checking.
    On,
    /// Never use them: the hypercall features stay off.
    Off,
}

impl HypercallPolicy {
    /// Reads the option's value (`auto`, `on`, `off`; anything else and
    /// no option mean `auto`).
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("on") => HypercallPolicy::On,
            Some("off") => HypercallPolicy::Off,
            _ => HypercallPolicy::Auto,
        }
    }
}

/// TSC cycles per iteration of a two-instruction loop above which the
/// vCPU is taken to be emulated instruction by instruction. Hardware (bare
/// or VMX/SVM guest) takes about 1; KVM's instruction emulator thousands.
pub const EMULATED_CYCLES_PER_ITER: u64 = 200;

/// TSC cycles per iteration of a `dec; jnz` loop of `iters` iterations.
pub fn loop_cycles(iters: u32) -> u64 {
    let n = iters.max(1);
    let t0 = crate::kvmclock::rdtsc_ordered();
    // SAFETY: a register-only countdown loop; touches no memory.
    unsafe {
        core::arch::asm!(
            "2:",
            "dec {n:e}",
            "jnz 2b",
            n = inout(reg) n => _,
            options(nomem, nostack),
        )
    };
    let t1 = crate::kvmclock::rdtsc_ordered();
    t1.wrapping_sub(t0) / u64::from(n)
}

/// Whether this vCPU's instructions are being emulated one by one, as a
/// KVM host without hardware virtualisation (PVM running a guest that is
/// not PVM-aware) does. KVM executes a hypercall only on the VM exit of
/// `vmcall`/`vmmcall`; its instruction emulator never does (it only
/// rewrites the instruction and retries it), so on such a vCPU a hypercall
/// never completes. `cycles` measures one trial; the least of a few is
/// used (being interrupted only lengthens a trial). Returns the verdict
/// and the cycles per iteration seen.
pub fn emulated(mut cycles: impl FnMut() -> u64) -> (bool, u64) {
    let mut best = u64::MAX;
    for _ in 0..5 {
        best = best.min(cycles());
        if best < EMULATED_CYCLES_PER_ITER {
            break;
        }
    }
    (best >= EMULATED_CYCLES_PER_ITER, best)
}

/// The instructions themselves.
pub mod raw {
    use core::arch::asm;

    /// `vmcall` with number `nr` and four arguments; returns RAX.
    ///
    /// # Safety
    /// Must run under KVM on an Intel CPU (elsewhere it faults), and the
    /// hypercall must not make the host write memory the program owns.
    #[inline]
    pub unsafe fn vmcall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        let ret: u64;
        // SAFETY: the caller guarantees we run under KVM and that the
        // hypercall has no memory effects the program can see. RBX is
        // reserved by LLVM, so a0 is swapped into it around the call and
        // the original RBX restored.
        unsafe {
            asm!(
                "xchg {a0}, rbx",
                "vmcall",
                "xchg {a0}, rbx",
                a0 = inout(reg) a0 => _,
                inlateout("rax") nr => ret,
                in("rcx") a1,
                in("rdx") a2,
                in("rsi") a3,
                options(nostack),
            );
        }
        ret as i64
    }

    /// `vmmcall` with number `nr` and four arguments; returns RAX.
    ///
    /// # Safety
    /// As for [`vmcall`], on an AMD CPU.
    #[inline]
    pub unsafe fn vmmcall(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> i64 {
        let ret: u64;
        // SAFETY: as in `vmcall`.
        unsafe {
            asm!(
                "xchg {a0}, rbx",
                "vmmcall",
                "xchg {a0}, rbx",
                a0 = inout(reg) a0 => _,
                inlateout("rax") nr => ret,
                in("rcx") a1,
                in("rdx") a2,
                in("rsi") a3,
                options(nostack),
            );
        }
        ret as i64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::features::tests::FakeCpuid;
    use core::cell::RefCell;
    use std::string::ToString;
    use std::vec::Vec;

    /// A fake hypervisor: records hypercalls and MSR writes, answers
    /// hypercalls with a scripted result.
    #[derive(Default)]
    pub(crate) struct FakeHv {
        pub calls: RefCell<Vec<(Hc, [u64; 4])>>,
        pub msrs: RefCell<Vec<(u32, u64)>>,
        /// What every hypercall returns (0 unless set).
        pub ret: core::cell::Cell<i64>,
        /// This fake's own `pvops.fail=` table.
        pub faults: pvops_core::fault::Table,
        /// How this fake's kernel image is laid out in physical memory.
        pub layout: Layout,
    }

    /// A fake kernel image's physical layout.
    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Layout {
        /// Identity-mapped: physical == virtual.
        #[default]
        Identity,
        /// Every virtual page in a frame of its own, far from its
        /// neighbours (a `bootloader`-crate `.bss`): virtual page `p` is at
        /// frame `p * 3 + 0x100000`, so no single offset fits two pages.
        Scattered,
        /// Nothing translates.
        Unmapped,
    }

    impl Layout {
        pub(crate) fn translate(self, v: u64) -> Option<u64> {
            match self {
                Layout::Identity => Some(v),
                Layout::Scattered => Some((((v >> 12) * 3 + 0x10_0000) << 12) | (v & 0xfff)),
                Layout::Unmapped => None,
            }
        }
    }

    impl Hypervisor for FakeHv {
        fn hypercall(&self, hc: Hc, args: [u64; 4]) -> i64 {
            self.calls.borrow_mut().push((hc, args));
            self.ret.get()
        }
        unsafe fn write_msr(&self, msr: u32, value: u64) {
            self.msrs.borrow_mut().push((msr, value));
        }
        fn fail(&self, point: &'static str) -> bool {
            self.faults.hit(point)
        }
        fn phys_of_range(&self, vaddr: u64, len: usize) -> Result<u64, TranslateError> {
            pvops_core::translate::contiguous(vaddr, len, |v| {
                self.layout
                    .translate(v)
                    .ok_or(TranslateError::NotMapped { vaddr: v, level: 0 })
            })
        }
    }

    #[test]
    fn instruction_by_vendor() {
        assert_eq!(
            HypercallInsn::for_vendor(b"GenuineIntel"),
            HypercallInsn::Vmcall
        );
        assert_eq!(
            HypercallInsn::for_vendor(b"AuthenticAMD"),
            HypercallInsn::Vmmcall
        );
        assert_eq!(
            HypercallInsn::for_vendor(b"HygonGenuine"),
            HypercallInsn::Vmmcall
        );
        assert_eq!(
            HypercallInsn::for_vendor(b"CentaurHauls"),
            HypercallInsn::Vmcall
        );
        let f = FakeCpuid {
            max: 0x4000_0001,
            eax: 0,
            edx: 0,
            vendor: b"AuthenticAMD",
        };
        assert_eq!(&vendor(&f), b"AuthenticAMD");
        assert_eq!(HypercallInsn::detect(&f), HypercallInsn::Vmmcall);
    }

    #[test]
    fn negative_returns_are_typed_errors() {
        let h = FakeHv::default();
        assert_eq!(call(&h, Hc::KickCpu, [0, 3, 0, 0]), Ok(0));
        h.ret.set(-1000);
        let e = call(&h, Hc::SendIpi, [1, 0, 0, 0xf1]).unwrap_err();
        assert_eq!(e, KvmError::Hypercall { nr: 10, ret: -1000 });
        assert!(e.to_string().contains("KVM_ENOSYS"), "{e}");
        h.ret.set(-22);
        assert_eq!(
            KvmError::errno_name(call(&h, Hc::SchedYield, [0; 4]).map(|_| 0).unwrap_err_ret()),
            Some("KVM_EINVAL")
        );
        assert_eq!(KvmError::errno_name(i64::MIN), None);
        assert_eq!(h.calls.borrow().len(), 3);
        h.ret.set(2);
        assert_eq!(call(&h, Hc::SendIpi, [3, 0, 0, 0xf1]), Ok(2));
    }

    trait RetOf {
        fn unwrap_err_ret(self) -> i64;
    }
    impl RetOf for Result<u64, KvmError> {
        fn unwrap_err_ret(self) -> i64 {
            match self {
                Err(KvmError::Hypercall { ret, .. }) => ret,
                other => panic!("not a hypercall error: {other:?}"),
            }
        }
    }

    #[test]
    fn policy_parsing() {
        assert_eq!(HypercallPolicy::parse(None), HypercallPolicy::Auto);
        assert_eq!(HypercallPolicy::parse(Some("on")), HypercallPolicy::On);
        assert_eq!(HypercallPolicy::parse(Some("off")), HypercallPolicy::Off);
        assert_eq!(HypercallPolicy::parse(Some("x")), HypercallPolicy::Auto);
    }

    #[test]
    fn emulation_verdict_uses_the_fastest_trial() {
        // Hardware: the first trial decides.
        let mut calls = 0;
        assert_eq!(
            emulated(|| {
                calls += 1;
                2
            }),
            (false, 2)
        );
        assert_eq!(calls, 1);
        // One trial interrupted, then a clean one.
        let mut v = [90_000, 3].into_iter();
        assert_eq!(emulated(|| v.next().unwrap()), (false, 3));
        // Emulated: every trial slow.
        let mut calls = 0;
        assert_eq!(
            emulated(|| {
                calls += 1;
                4400 - calls
            }),
            (true, 4395)
        );
        assert_eq!(calls, 5);
    }

    #[test]
    #[cfg_attr(miri, ignore = "times real instructions; Miri interprets them")]
    fn this_host_process_is_not_emulated() {
        let (slow, cycles) = emulated(|| loop_cycles(256));
        assert!(!slow, "{cycles} cycles per iteration");
    }

    #[test]
    fn hypercall_numbers() {
        assert_eq!(Hc::KickCpu.nr(), 5);
        assert_eq!(Hc::SendIpi.nr(), 10);
        assert_eq!(Hc::SchedYield.nr(), 11);
    }
}
