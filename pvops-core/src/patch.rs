//! Call-site patching: the hottest wrappers become call sites that are
//! rewritten once, after [`crate::table::install`], into the backend's own
//! instruction (`cli`, `pushf; pop %rax`, ...) or a direct call, as Linux
//! does with its paravirt call sites.
//!
//! # Sites
//! Each wrapper of an [`Op`] is inline asm, 6 bytes,
//! `call qword ptr [rip + SLOTS + 8*op]` (`ff 15 rel32`). Arguments go in
//! `rdi`, `rsi`, `rdx` and the result comes back in `rax`, as in the C ABI;
//! but every op that may be inlined keeps Linux's `PV_CALLEE_SAVE`
//! convention: only `rax`, the flags and vector/x87 state may change, so a
//! site patched into `cli` costs its caller no register spills. Calls reach
//! such an op through a naked stub that saves `rcx`, `rdx`, `rsi`, `rdi`
//! and `r8`-`r11` around the C-ABI function. `sched_clock`, never inlined,
//! uses the C ABI as is (`clobber_abi("C")`). Next to each site the asm
//! appends a record `(i32 offset to the site, u8 length, u8 op, u16 0)` to
//! the section `pvops_sites`; being a C identifier, the linker brackets it
//! with `__start_pvops_sites`/`__stop_pvops_sites`. The records are
//! position-independent (no run-time relocations) and flagged
//! `SHF_GNU_RETAIN` (`"aR"`), so `--gc-sections` keeps them and the code
//! they point at.
//!
//! # Slots
//! `SLOTS[op]` holds the function (stub) a site calls while it is not
//! patched. Before install it is the `NotInstalled` op (panics naming the
//! op); [`crate::table::install`] points every slot at the installed
//! table's function for the op ([`binding`] says which), so a site that is
//! never rewritten keeps working.
//!
//! # Rewriting
//! [`apply`] rewrites every recorded site: the backend's inline bytes where
//! it declared some ([`InlineOps`]), else `call rel32` to the same function
//! as the slot, plus a NOP. A site whose target is beyond ±2 GiB keeps its
//! indirect call.
//!
//! # Full-site forms
//! A site costs what its instructions cost, and a padding NOP is one more
//! instruction: for a 1-byte op it doubles the site's issue slots. So the
//! inline code should fill all [`SITE_LEN`] bytes itself where x86 allows
//! it. A backend declares its code one of two ways:
//!
//! - [`InlineSet::with_prefixable`]: the instructions, one slice each. The
//!   patcher widens them with redundant DS prefixes (`3e`, ignored in
//!   64-bit mode) when, within the *prefix budget* per instruction
//!   (counting its own), they fill the site; otherwise it writes them as
//!   given plus one NOP. `mov %cr2, %rax` (3 bytes) becomes `ds ds ds
//!   mov`, `pushf; pop %rax` becomes `ds ds pushf; ds ds pop`. `cli` needs
//!   five prefixes: where the budget allows them it becomes `ds ds ds ds
//!   ds cli`, one instruction; under a budget of three it keeps a 5-byte
//!   NOP.
//! - [`InlineSet::with`]: bytes written exactly as given, for full-site
//!   forms prefixes cannot make, such as a longer ModRM/SIB encoding
//!   (`ds mov %rdx, 0x0(%rsi,%riz,1)` for `set_entry`).
//!
//! Why the patcher adds the prefixes rather than each backend spelling out
//! its widened bytes: which prefix is redundant depends on the instruction
//! (`66` turns `pushf` into a 16-bit push, `f3 90` is `pause`, REX turns
//! `nop` into `xchg`, `3e` on an indirect branch is CET's NOTRACK), and so
//! does how many fit (REX counts). Those rules live in one place
//! (`encode.rs`, the budget and its sources in [`budget`]); the backend
//! states only what it knows (its
//! instructions), the declaration is checked at compile time (no control
//! transfer, no FS/GS override, legacy encoding only), and the budget,
//! which is the CPU's and not the backend's, applies to every backend at
//! once. The exact bytes each site gets under a budget are
//! [`InlineBytes::site_bytes`], which the tests pin.
//!
//! # The prefix budget
//! How many prefixes one instruction may carry depends on the CPU's
//! decoders: three are free everywhere, more are free on Sandy Bridge's
//! descendants and AMD's Bobcat, Jaguar and Zen, but cost 14-15 cycles on
//! AMD's Bulldozer family and stall the Atom line. So, as Linux once chose
//! its NOPs per CPU, [`apply`] chooses the budget once, from the vendor,
//! family and model CPUID gives through the installed `cpu.cpuid` op:
//! [`FULL_SITE_PREFIXES`] (five: every 1-byte op becomes one instruction)
//! where the sources in [`budget`] say the decoders take that many without
//! penalty, [`SAFE_PREFIXES`] (three) everywhere else, an unknown CPU
//! included. [`apply_with`] takes the budget explicitly ([`PatchOptions`]),
//! and [`budget::prefix_budget`] is the table as a pure function.
//!
//! # Which code an op gets
//! [`crate::table::PvOps::of`] records, next to the table, a *witness* per
//! patchable op: a copy of the function pointer it put in the table, the C-ABI
//! entry for that same backend function, and (only through
//! [`crate::table::PvOps::of_inline`]) the backend's inline bytes. At install
//! an op whose table entry still equals its witness gets that entry and
//! those bytes; an entry that was replaced afterwards (`t.irq.disable = f`,
//! as KVM and Xen do) no longer matches, and its sites call a thunk that
//! calls the installed table's entry. A replaced op can therefore never be patched
//! with the bytes of the function it replaced.
//!
//! # Conditions for [`apply`]
//! On the boot CPU, once, after install, with interrupts off and no other
//! CPU started (nothing may execute a site while it is rewritten; NMI
//! handlers must not run sites either). The kernel passes a [`TextPoke`]
//! that makes its text writable and restores it ([`ClearWp`] toggles
//! CR0.WP through the installed cpu ops).

mod apply;
mod binding;
pub mod budget;
mod encode;
mod inline;
mod ops;
pub(crate) mod site;
#[cfg(test)]
mod tests;

pub use apply::{apply, apply_with, ClearWp, PatchError, PatchOptions, PatchStats, TextPoke};
pub(crate) use binding::bind_slots;
pub use binding::{binding, slot_target, Binding, PatchTable};
pub use budget::{
    prefix_budget, prefix_budget_of, CpuSignature, Vendor, FULL_SITE_PREFIXES, SAFE_PREFIXES,
};
pub use inline::{InlineBytes, InlineOps, InlineSet};
pub use ops::Op;
pub use site::{sites, Site};

/// Length in bytes of every call site (`ff 15 rel32`): the room inline
/// bytes have.
pub const SITE_LEN: usize = 6;
