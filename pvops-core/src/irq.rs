//! Interrupt operations: the interrupt flag, halting, end-of-interrupt and
//! inter-processor interrupts.
//!
//! These are the hottest ops in a kernel (every spinlock with interrupts off
//! saves and restores the flag), which is why Linux patches their call sites;
//! see `docs/ARCHITECTURE.md` for how pvops keeps them cheap.

use crate::cpu::CpuId;
use crate::patch::Op;
use crate::table::ops;

/// A saved interrupt state, as `pushf` gives it. Only bit 9 (IF) means
/// anything to [`restore_flags`]; under Xen PV it is synthesised from the
/// event mask.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqFlags(pub u64);

impl IrqFlags {
    /// RFLAGS.IF.
    pub const INTERRUPT_FLAG: u64 = 1 << 9;

    /// Whether interrupts were enabled when these flags were saved.
    #[inline]
    pub const fn interrupts_enabled(self) -> bool {
        self.0 & Self::INTERRUPT_FLAG != 0
    }
}

/// At most this many CPUs can be named in one [`CpuMask`].
pub const MAX_CPUS: usize = 256;

/// A set of platform CPU numbers ([`CpuId`]) below [`MAX_CPUS`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuMask {
    bits: [u64; MAX_CPUS / 64],
}

impl CpuMask {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            bits: [0; MAX_CPUS / 64],
        }
    }

    /// Adds `cpu`; returns `false` (and changes nothing) when `cpu` is not
    /// below [`MAX_CPUS`].
    pub fn insert(&mut self, cpu: CpuId) -> bool {
        let i = cpu.0 as usize;
        if i >= MAX_CPUS {
            return false;
        }
        self.bits[i / 64] |= 1 << (i % 64);
        true
    }

    /// Removes `cpu`.
    pub fn remove(&mut self, cpu: CpuId) {
        let i = cpu.0 as usize;
        if i < MAX_CPUS {
            self.bits[i / 64] &= !(1 << (i % 64));
        }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: CpuId) -> bool {
        let i = cpu.0 as usize;
        i < MAX_CPUS && self.bits[i / 64] & (1 << (i % 64)) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    /// The members in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = CpuId> + '_ {
        (0..MAX_CPUS as u32)
            .filter(move |i| self.bits[*i as usize / 64] & (1 << (i % 64)) != 0)
            .map(CpuId)
    }

    /// The raw 64-bit words, lowest CPUs first.
    pub fn words(&self) -> &[u64; MAX_CPUS / 64] {
        &self.bits
    }
}

/// Where an IPI goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpiTarget {
    /// One CPU.
    Cpu(CpuId),
    /// A set of CPUs; a backend with a multicast hypercall sends it at once.
    Mask(CpuMask),
    /// The CPU that sends it.
    ThisCpu,
    /// Every CPU but the sender.
    AllButSelf,
    /// Every CPU, sender included.
    All,
}

/// The interrupt operations a backend provides.
pub trait IrqOps {
    /// Returns the current interrupt state.
    fn save_flags() -> IrqFlags;
    /// Sets the interrupt state to what `flags` recorded.
    fn restore_flags(flags: IrqFlags);
    /// Masks interrupts on this CPU.
    fn disable();
    /// Unmasks interrupts on this CPU (delivering any that are pending).
    fn enable();
    /// Unmasks interrupts and waits for one, with no window in which an
    /// interrupt can be lost between the two (`sti; hlt` natively).
    fn safe_halt();
    /// Waits for an interrupt with the interrupt state unchanged.
    fn halt();
    /// Signals end of interrupt for the one being handled.
    fn eoi();
    /// Sends interrupt `vector` to `target`.
    fn send_ipi(target: IpiTarget, vector: u8);
}

/// The IRQ group of the ops table.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct IrqOpsTable {
    pub save_flags: fn() -> IrqFlags,
    pub restore_flags: fn(IrqFlags),
    pub disable: fn(),
    pub enable: fn(),
    pub safe_halt: fn(),
    pub halt: fn(),
    pub eoi: fn(),
    pub send_ipi: fn(IpiTarget, u8),
}

impl IrqOpsTable {
    /// The table that forwards every op to `T`.
    pub const fn of<T: IrqOps>() -> Self {
        Self {
            save_flags: T::save_flags,
            restore_flags: T::restore_flags,
            disable: T::disable,
            enable: T::enable,
            safe_halt: T::safe_halt,
            halt: T::halt,
            eoi: T::eoi,
            send_ipi: T::send_ipi,
        }
    }
}

impl core::fmt::Debug for IrqOpsTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("IrqOpsTable { .. }")
    }
}

/// Flags [`restore_flags`] never passes on: a site patched into `popf`
/// must not set single-step (TF), the direction flag (the asm rules want
/// it clear), nested task (NT) or the I/O privilege level. No backend
/// looks at them.
const RESTORE_IGNORED: u64 = (1 << 8) | (1 << 10) | (3 << 12) | (1 << 14);

/// Returns the current interrupt state.
///
/// A patchable call site ([`crate::patch`]): `pushf; pop %rax` natively.
#[inline]
pub fn save_flags() -> IrqFlags {
    let flags: u64;
    // SAFETY: a call site: it calls the C-ABI `irq.save_flags` of the
    // installed table (or the not-installed one) through its slot (via the
    // register-saving stub), or runs bytes with that function's effect once
    // patched; the operands declare its signature and the clobbers of the
    // sites' callee-saved convention (`patch::site`).
    unsafe { crate::patch::site::site!(saved Op::SaveFlags, lateout("rax") flags) };
    IrqFlags(flags)
}

/// Restores a state from [`save_flags`].
///
/// A patchable call site ([`crate::patch`]): `push %rdi; popf` natively.
#[inline]
pub fn restore_flags(flags: IrqFlags) {
    // SAFETY: as in `save_flags`, for `irq.restore_flags(rdi)`.
    unsafe {
        crate::patch::site::site!(
            saved Op::RestoreFlags,
            in("rdi") flags.0 & !RESTORE_IGNORED,
            out("rax") _
        )
    }
}

/// Masks interrupts on this CPU.
///
/// A patchable call site ([`crate::patch`]): `cli` natively.
#[inline]
pub fn disable() {
    // SAFETY: as in `save_flags`, for `irq.disable()`.
    unsafe { crate::patch::site::site!(saved Op::Disable, out("rax") _) }
}

/// Unmasks interrupts on this CPU.
///
/// A patchable call site ([`crate::patch`]): `sti` natively.
#[inline]
pub fn enable() {
    // SAFETY: as in `save_flags`, for `irq.enable()`.
    unsafe { crate::patch::site::site!(saved Op::Enable, out("rax") _) }
}

/// Saves the interrupt state and masks interrupts; give the result to
/// [`restore_flags`].
#[inline]
pub fn save_and_disable() -> IrqFlags {
    let flags = save_flags();
    disable();
    flags
}

/// Unmasks interrupts and waits for one, atomically.
#[inline]
pub fn safe_halt() {
    (ops().irq.safe_halt)()
}

/// Waits for an interrupt, leaving the interrupt state as it is.
#[inline]
pub fn halt() {
    (ops().irq.halt)()
}

/// Signals end of interrupt.
#[inline]
pub fn eoi() {
    (ops().irq.eoi)()
}

/// Sends interrupt `vector` to `target`.
#[inline]
pub fn send_ipi(target: IpiTarget, vector: u8) {
    (ops().irq.send_ipi)(target, vector)
}

/// Runs `f` with interrupts masked, restoring the previous state afterwards.
#[inline]
pub fn without_interrupts<R>(f: impl FnOnce() -> R) -> R {
    let flags = save_and_disable();
    let r = f();
    restore_flags(flags);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_mask_insert_contains_iter() {
        let mut m = CpuMask::new();
        assert!(m.is_empty());
        assert!(m.insert(CpuId(0)));
        assert!(m.insert(CpuId(65)));
        assert!(m.insert(CpuId(255)));
        assert!(!m.insert(CpuId(256)));
        assert!(m.contains(CpuId(65)));
        assert!(!m.contains(CpuId(64)));
        assert!(!m.contains(CpuId(9999)));
        let v: std::vec::Vec<u32> = m.iter().map(|c| c.0).collect();
        assert_eq!(v, [0, 65, 255]);
        m.remove(CpuId(65));
        assert!(!m.contains(CpuId(65)));
    }

    #[test]
    fn flags_interrupt_bit() {
        assert!(IrqFlags(0x202).interrupts_enabled());
        assert!(!IrqFlags(0x2).interrupts_enabled());
    }
}
