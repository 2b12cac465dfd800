//! Issuing hypercalls: the [`Hypercall`] trait (so host tests can fake
//! Xen) and [`Direct`], the real instruction.
//!
//! ## `vmcall`/`vmmcall`, not the hypercall page
//! Xen offers a hypercall page: the guest names a frame in the MSR of CPUID
//! leaf `base + 2` and Xen fills it with one stub per hypercall. This
//! backend does not use it. It issues the instruction itself — `vmmcall` on
//! AMD and Hygon CPUs, `vmcall` elsewhere, by the CPUID vendor — as Linux
//! has done since it dropped the page: no frame of guest memory is
//! written by the hypervisor and then executed (the page would have to be
//! writable by Xen and executable by the kernel), no frame has to be
//! reserved before the first hypercall, and the call site is a plain
//! instruction. The cost is knowing the vendor, which CPUID tells. An HVM
//! guest that issues the other vendor's instruction gets `#UD` (Xen only
//! emulates it when asked to), so the choice must be right; it is made
//! once, in [`select`], before the first hypercall.
//!
//! Register convention (64-bit): number in RAX, arguments in RDI, RSI,
//! RDX, R10, R8; result in RAX. Xen may change the argument registers (a
//! preempted hypercall is restarted with updated arguments; debug builds
//! scramble the unused ones), so all are declared clobbered.

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use pvops_core::detect::CpuidSource;

/// Something that issues Xen hypercalls: the CPU ([`Direct`]) or a fake.
pub trait Hypercall {
    /// Issues hypercall `op` with `args` (unused ones 0) and returns RAX
    /// as Xen left it.
    ///
    /// # Safety
    /// Every argument the operation reads as a guest address must point to
    /// memory valid for what the operation reads and writes there, mapped
    /// at that virtual address in the current page tables, for the whole
    /// call.
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64;

    /// Counts one use of fault-injection point `point` and says whether it
    /// must fail (`pvops.fail=`, [`pvops_core::fault`]). The real issuer
    /// asks the kernel's table; test fakes may keep their own.
    fn fail(&self, point: &'static str) -> bool {
        pvops_core::fault::hit(point)
    }
}

/// Which instruction enters Xen.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    /// Intel's `vmcall` (and every vendor but AMD/Hygon).
    Vmcall = 1,
    /// AMD's `vmmcall`.
    Vmmcall = 2,
    /// `syscall`: how a 64-bit classic PV kernel (ring 3) enters Xen.
    /// Xen takes a `syscall` from guest kernel mode as a hypercall; it
    /// clobbers RCX and R11 besides.
    Syscall = 3,
}

impl Instruction {
    /// The instruction for the CPU `src` describes: `vmmcall` for
    /// `AuthenticAMD` and `HygonGenuine`, else `vmcall`.
    pub fn for_cpu(src: &impl CpuidSource) -> Self {
        let r = src.cpuid(0, 0);
        let mut vendor = [0u8; 12];
        vendor[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&r.edx.to_le_bytes());
        vendor[8..12].copy_from_slice(&r.ecx.to_le_bytes());
        match &vendor {
            b"AuthenticAMD" | b"HygonGenuine" => Instruction::Vmmcall,
            _ => Instruction::Vmcall,
        }
    }

    /// Its name, for the features line.
    pub const fn name(self) -> &'static str {
        match self {
            Instruction::Vmcall => "vmcall",
            Instruction::Vmmcall => "vmmcall",
            Instruction::Syscall => "syscall",
        }
    }
}

/// 0 until [`select`] ran, else an [`Instruction`].
static INSN: AtomicU8 = AtomicU8::new(0);

/// Hypercalls issued by [`Direct`] since boot (all vCPUs; a multicall
/// counts once, as it is one entry into Xen).
pub(crate) static ISSUED: AtomicU64 = AtomicU64::new(0);

/// Hypercalls issued since boot (see [`Direct`]): what the in-guest
/// benchmark counts per operation.
pub fn issued() -> u64 {
    ISSUED.load(Ordering::Relaxed)
}

/// Chooses the instruction [`Direct`] issues. Call once, before the first
/// hypercall.
pub fn select(insn: Instruction) {
    INSN.store(insn as u8, Ordering::Relaxed);
}

/// The instruction chosen by [`select`], if any.
#[cfg(test)]
fn selected() -> Option<Instruction> {
    match INSN.load(Ordering::Relaxed) {
        1 => Some(Instruction::Vmcall),
        2 => Some(Instruction::Vmmcall),
        3 => Some(Instruction::Syscall),
        _ => None,
    }
}

/// The hypercall instruction itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct;

impl Hypercall for Direct {
    #[inline]
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        let [a1, a2, a3, a4, a5] = args;
        let mut rax = u64::from(op);
        ISSUED.fetch_add(1, Ordering::Relaxed);
        // One asm for the three instructions. RCX and R11 are syscall's own
        // clobbers; declaring them for vmcall/vmmcall too costs at most a
        // spill around a hypercall.
        macro_rules! enter_xen {
            ($insn:literal) => {
                // SAFETY: the caller guarantees every pointer argument is
                // valid for the operation; `select` chose the instruction
                // that enters Xen here (vmmcall on AMD, vmcall elsewhere,
                // syscall from a 64-bit PV kernel, where a syscall from
                // guest kernel mode is a hypercall). Argument registers
                // are clobbered, memory may be written.
                unsafe {
                    core::arch::asm!(
                        $insn,
                        inout("rax") rax,
                        inout("rdi") a1 => _,
                        inout("rsi") a2 => _,
                        inout("rdx") a3 => _,
                        inout("r10") a4 => _,
                        inout("r8") a5 => _,
                        out("rcx") _,
                        out("r11") _,
                        options(nostack),
                    )
                }
            };
        }
        match INSN.load(Ordering::Relaxed) {
            3 => enter_xen!("syscall"),
            2 => enter_xen!("vmmcall"),
            1 => enter_xen!("vmcall"),
            // Not selected: Xen was never detected. Behave as a Xen that
            // does not know the call rather than executing an instruction
            // that faults on bare hardware.
            _ => return -i64::from(crate::abi::errno::ENOSYS),
        }
        rax as i64
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pvops_core::cpu::CpuidResult;
    use std::cell::RefCell;
    use std::vec::Vec;

    /// A fake Xen: records every call and answers through `respond`, which
    /// may read and write the argument structures (host pointers).
    pub(crate) struct FakeXen {
        pub calls: RefCell<Vec<(u32, [u64; 5])>>,
        #[allow(clippy::type_complexity)]
        pub respond: RefCell<std::boxed::Box<dyn FnMut(u32, [u64; 5]) -> i64>>,
        /// This fake's own `pvops.fail=` table.
        pub faults: pvops_core::fault::Table,
    }

    impl FakeXen {
        pub(crate) fn new(respond: impl FnMut(u32, [u64; 5]) -> i64 + 'static) -> Self {
            Self {
                calls: RefCell::new(Vec::new()),
                respond: RefCell::new(std::boxed::Box::new(respond)),
                faults: pvops_core::fault::Table::new(),
            }
        }
    }

    impl Hypercall for FakeXen {
        unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
            self.calls.borrow_mut().push((op, args));
            (self.respond.borrow_mut())(op, args)
        }
        fn fail(&self, point: &'static str) -> bool {
            self.faults.hit(point)
        }
    }

    struct Vendor(&'static [u8; 12]);
    impl CpuidSource for Vendor {
        fn cpuid(&self, _: u32, _: u32) -> CpuidResult {
            let w = |i: usize| u32::from_le_bytes(self.0[i..i + 4].try_into().unwrap());
            CpuidResult {
                eax: 0x10,
                ebx: w(0),
                edx: w(4),
                ecx: w(8),
            }
        }
    }

    #[test]
    fn instruction_follows_the_vendor() {
        assert_eq!(
            Instruction::for_cpu(&Vendor(b"AuthenticAMD")),
            Instruction::Vmmcall
        );
        assert_eq!(
            Instruction::for_cpu(&Vendor(b"HygonGenuine")),
            Instruction::Vmmcall
        );
        assert_eq!(
            Instruction::for_cpu(&Vendor(b"GenuineIntel")),
            Instruction::Vmcall
        );
        assert_eq!(
            Instruction::for_cpu(&Vendor(b"CentaurHauls")),
            Instruction::Vmcall
        );
    }

    #[test]
    fn direct_without_selection_is_enosys_not_a_fault() {
        // INSN is 0 in the test process: nothing was selected.
        if selected().is_none() {
            // SAFETY: no instruction is issued when nothing is selected.
            let r = unsafe { Direct.hypercall(17, [0; 5]) };
            assert_eq!(r, -38);
        }
    }
}
