//! The functions slots hold and direct calls reach.
//!
//! Per op, a C-ABI function: one generic set per backend
//! (`save_flags::<B>` runs `B::save_flags`), and one set that calls the
//! installed table, for ops a backend replaced after its table was made.
//! Every op but the clock is reached through a *register-saving* stub in
//! front of that function (`saved_*`), which keeps `rcx`, `rdx`, `rsi`,
//! `rdi` and `r8`-`r11`: their sites then clobber only `rax` (as Linux's
//! `PV_CALLEE_SAVE` thunks), so a site patched into `cli` costs the caller
//! no spills. `sched_clock` is always a call and uses the C ABI as is.

use super::Op;
use crate::irq::{IrqFlags, IrqOps};
use crate::mmu::{MmuOps, PtLevel};
use crate::table::ops;
use crate::time::TimeOps;
use x86_64::VirtAddr;

pub(super) extern "C" fn save_flags<T: IrqOps>() -> u64 {
    T::save_flags().0
}

pub(super) extern "C" fn restore_flags<T: IrqOps>(flags: u64) {
    T::restore_flags(IrqFlags(flags))
}

pub(super) extern "C" fn disable<T: IrqOps>() {
    T::disable()
}

pub(super) extern "C" fn enable<T: IrqOps>() {
    T::enable()
}

pub(super) extern "C" fn read_cr2<T: MmuOps>() -> u64 {
    T::read_cr2()
}

pub(super) extern "C" fn read_cr3<T: MmuOps>() -> u64 {
    T::read_cr3()
}

/// # Safety
/// As [`MmuOps::set_entry`].
pub(super) unsafe extern "C" fn set_entry<T: MmuOps>(level: PtLevel, entry: *mut u64, value: u64) {
    // SAFETY: the site's caller (`mmu::set_entry`) upholds the contract.
    unsafe { T::set_entry(level, entry, value) }
}

pub(super) extern "C" fn flush_tlb_single<T: MmuOps>(addr: u64) {
    // The wrapper passed a `VirtAddr`, so `addr` is canonical already.
    T::flush_tlb_single(VirtAddr::new_truncate(addr))
}

pub(super) extern "C" fn sched_clock<T: TimeOps>() -> u64 {
    T::sched_clock()
}

extern "C" fn table_save_flags() -> u64 {
    (ops().irq.save_flags)().0
}

extern "C" fn table_restore_flags(flags: u64) {
    (ops().irq.restore_flags)(IrqFlags(flags))
}

extern "C" fn table_disable() {
    (ops().irq.disable)()
}

extern "C" fn table_enable() {
    (ops().irq.enable)()
}

extern "C" fn table_read_cr2() -> u64 {
    (ops().mmu.read_cr2)()
}

extern "C" fn table_read_cr3() -> u64 {
    (ops().mmu.read_cr3)()
}

/// # Safety
/// As [`MmuOps::set_entry`].
unsafe extern "C" fn table_set_entry(level: PtLevel, entry: *mut u64, value: u64) {
    // SAFETY: the site's caller (`mmu::set_entry`) upholds the contract.
    unsafe { (ops().mmu.set_entry)(level, entry, value) }
}

extern "C" fn table_flush_tlb_single(addr: u64) {
    (ops().mmu.flush_tlb_single)(VirtAddr::new_truncate(addr))
}

extern "C" fn table_sched_clock() -> u64 {
    (ops().time.sched_clock)()
}

/// Defines a naked stub that calls `$inner` with `rcx`, `rdx`, `rsi`,
/// `rdi`, `r8`-`r11` saved, for sites of the callee-saved convention (see
/// the module docs). The callee-saved registers of the C ABI need no help;
/// `rax` carries the result. Entered with `rsp` 8 below a 16-byte boundary
/// (the site is a call from a properly aligned stack), 8 pushes and the
/// `sub` align it again for the inner call.
macro_rules! saver {
    ($(#[$m:meta])* $name:ident = $inner:ident :: <T: $bound:path>) => {
        $(#[$m])*
        #[unsafe(naked)]
        pub(super) extern "C" fn $name<T: $bound>() {
            core::arch::naked_asm!(
                "push rcx", "push rdx", "push rsi", "push rdi",
                "push r8", "push r9", "push r10", "push r11",
                "sub rsp, 8",
                "call {f}",
                "add rsp, 8",
                "pop r11", "pop r10", "pop r9", "pop r8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx",
                "ret",
                f = sym $inner::<T>,
            )
        }
    };
    ($(#[$m:meta])* $name:ident = $inner:ident) => {
        $(#[$m])*
        #[unsafe(naked)]
        extern "C" fn $name() {
            core::arch::naked_asm!(
                "push rcx", "push rdx", "push rsi", "push rdi",
                "push r8", "push r9", "push r10", "push r11",
                "sub rsp, 8",
                "call {f}",
                "add rsp, 8",
                "pop r11", "pop r10", "pop r9", "pop r8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx",
                "ret",
                f = sym $inner,
            )
        }
    };
}

saver!(saved_save_flags = save_flags::<T: IrqOps>);
saver!(saved_restore_flags = restore_flags::<T: IrqOps>);
saver!(saved_disable = disable::<T: IrqOps>);
saver!(saved_enable = enable::<T: IrqOps>);
saver!(saved_read_cr2 = read_cr2::<T: MmuOps>);
saver!(saved_read_cr3 = read_cr3::<T: MmuOps>);
saver!(saved_set_entry = set_entry::<T: MmuOps>);
saver!(saved_flush_tlb_single = flush_tlb_single::<T: MmuOps>);
saver!(saved_table_save_flags = table_save_flags);
saver!(saved_table_restore_flags = table_restore_flags);
saver!(saved_table_disable = table_disable);
saver!(saved_table_enable = table_enable);
saver!(saved_table_read_cr2 = table_read_cr2);
saver!(saved_table_read_cr3 = table_read_cr3);
saver!(saved_table_set_entry = table_set_entry);
saver!(saved_table_flush_tlb_single = table_flush_tlb_single);

/// What a site of `op` calls to run the installed table's entry.
pub(super) fn via_table(op: Op) -> *const () {
    match op {
        Op::SaveFlags => saved_table_save_flags as *const (),
        Op::RestoreFlags => saved_table_restore_flags as *const (),
        Op::Disable => saved_table_disable as *const (),
        Op::Enable => saved_table_enable as *const (),
        Op::ReadCr2 => saved_table_read_cr2 as *const (),
        Op::ReadCr3 => saved_table_read_cr3 as *const (),
        Op::SetEntry => saved_table_set_entry as *const (),
        Op::FlushTlbSingle => saved_table_flush_tlb_single as *const (),
        Op::SchedClock => table_sched_clock as *const (),
    }
}
