//! The one declaration of the patchable ops, and every list derived from
//! it.
//!
//! [`patchable_ops!`] below holds one line per op: its [`Op`] variant, the
//! table field it dispatches through (`group.field`), the trait bound that
//! field's function comes from, its calling convention at a site, and how
//! the C-ABI arguments a site passes become the trait method's. An op's id
//! is its place in the list (as Linux derives a paravirt op's number from
//! its place in its table). From the list come:
//!
//! - [`Op`], [`Op::COUNT`], [`Op::ALL`], [`Op::name`] and the convention
//!   each op's sites use;
//! - per op, a module with two C-ABI entries (`backend::<T>` runs
//!   `T`'s function, `table` runs whatever the installed table holds) and,
//!   for callee-saved ops, the register-saving stubs in front of each;
//! - the witnesses [`crate::table::PvOps::of`] records, the table lookup
//!   the binding compares them with, the table thunks, and the group
//!   builders [`PvOps::with_irq`], [`PvOps::with_mmu`], [`PvOps::with_time`].
//!
//! The wrapper kernels call (`irq::disable`, ...) stays hand-written, with
//! its `site!`; `site!` checks at compile time that it uses the convention
//! declared here.
//!
//! # Conventions
//! `saved`: Linux's `PV_CALLEE_SAVE`. Sites keep every general register
//! but `rax`, so a site patched into `cli` costs its caller no spills;
//! calls reach the C-ABI function through a naked stub that saves `rcx`,
//! `rdx`, `rsi`, `rdi` and `r8`-`r11`. Only these ops may take inline
//! bytes. `c`: the plain C ABI (`sched_clock`, which no backend's clock
//! fits in a site).

use super::binding::{Entry, PatchTable};
use crate::irq::{IrqOps, IrqOpsTable};
use crate::mmu::{MmuOps, MmuOpsTable};
use crate::table::PvOps;
use crate::time::{TimeOps, TimeOpsTable};

impl Op {
    /// The op with id `id`, if any.
    pub const fn from_id(id: u8) -> Option<Op> {
        if (id as usize) < Op::COUNT {
            Some(Op::ALL[id as usize])
        } else {
            None
        }
    }

    /// Whether a backend may give inline bytes for this op (else its sites
    /// become direct calls): the callee-saved ones.
    pub const fn inline_allowed(self) -> bool {
        self.callee_saved()
    }
}

/// Defines a naked stub that calls `$inner` with `rcx`, `rdx`, `rsi`,
/// `rdi`, `r8`-`r11` saved, for sites of the callee-saved convention. The
/// callee-saved registers of the C ABI need no help; `rax` carries the
/// result. Entered with `rsp` 8 below a 16-byte boundary (the site is a
/// call from a properly aligned stack), 8 pushes and the `sub` align it
/// again for the inner call.
macro_rules! saver {
    ($name:ident = $inner:ident $(::<$g:ident: $bound:ident>)?) => {
        #[unsafe(naked)]
        pub(crate) extern "C" fn $name $(<$g: $bound>)? () {
            core::arch::naked_asm!(
                "push rcx", "push rdx", "push rsi", "push rdi",
                "push r8", "push r9", "push r10", "push r11",
                "sub rsp, 8",
                "call {f}",
                "add rsp, 8",
                "pop r11", "pop r10", "pop r9", "pop r8",
                "pop rdi", "pop rsi", "pop rdx", "pop rcx",
                "ret",
                f = sym $inner $(::<$g>)?,
            )
        }
    };
}

/// What a site of a `saved` or a `c` op calls: the stub, or the C-ABI
/// function itself.
macro_rules! call_entries {
    (saved $bound:ident) => {
        saver!(saved_backend = backend::<T: $bound>);
        saver!(saved_table = table);
        /// What `T`'s sites call: the stub in front of `backend::<T>`.
        pub(crate) const fn call<T: $bound>() -> *const () {
            saved_backend::<T> as *const ()
        }
        /// What a site calls to run the installed table's entry.
        pub(crate) const fn via_table() -> *const () {
            saved_table as *const ()
        }
    };
    (c $bound:ident) => {
        /// What `T`'s sites call: `backend::<T>` itself.
        pub(crate) const fn call<T: $bound>() -> *const () {
            backend::<T> as *const ()
        }
        /// What a site calls to run the installed table's entry.
        pub(crate) const fn via_table() -> *const () {
            table as *const ()
        }
    };
}

/// Whether a convention is the callee-saved one.
macro_rules! callee_saved {
    (saved) => {
        true
    };
    (c) => {
        false
    };
}

/// Expands its tokens when the two group names are the same.
macro_rules! if_group {
    (irq irq $($t:tt)*) => { $($t)* };
    (mmu mmu $($t:tt)*) => { $($t)* };
    (time time $($t:tt)*) => { $($t)* };
    ($a:ident $b:ident $($t:tt)*) => {};
}

/// One group builder of [`PvOps`]: the group `$g` taken whole from `T`,
/// its patchable ops (those of the list whose group is `$g`) bound to
/// `T`'s functions.
macro_rules! group_builder {
    ($(#[$doc:meta])* $name:ident, $g:ident: $bound:ident, $table:ident;
     $($variant:ident $group:ident $field:ident),*) => {
        $(#[$doc])*
        pub const fn $name<T: $bound>(mut self) -> Self {
            let $g = $table::of::<T>();
            let mut patch = self.patch;
            $(if_group!($g $group
                patch = patch.rebind(Op::$variant, $g.$field as *const (), $field::call::<T>());
            );)*
            self.$g = $g;
            self.patch = patch;
            self
        }
    };
}

/// Generates every list of patchable ops from one line per op (see the
/// module docs).
macro_rules! patchable_ops {
    ($(
        $(#[$doc:meta])*
        $variant:ident = $group:ident . $field:ident : $bound:ident, $conv:ident
            |$f:ident| ($($arg:ident : $ty:ty),*) -> $ret:ty $body:block
    )*) => {
        /// The ops whose wrappers are patchable call sites. An op's id
        /// (`op as u8`, recorded with each site) is its place in the one
        /// list in `patch/ops.rs`.
        #[repr(u8)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Op {
            $($(#[$doc])* $variant,)*
        }

        impl Op {
            /// How many patchable ops there are.
            pub const COUNT: usize = [$(Op::$variant),*].len();

            /// Every op, in id order.
            pub const ALL: [Op; Op::COUNT] = [$(Op::$variant),*];

            /// The op's name as the not-installed panic spells it
            /// (`irq.disable`).
            pub const fn name(self) -> &'static str {
                match self {
                    $(Op::$variant => concat!(stringify!($group), ".", stringify!($field)),)*
                }
            }

            /// Whether the op's sites keep every register but `rax` (see
            /// the module docs); only those may be inlined.
            pub(crate) const fn callee_saved(self) -> bool {
                match self {
                    $(Op::$variant => callee_saved!($conv),)*
                }
            }
        }

        $(
            /// The C-ABI entries of one op (see the module docs).
            pub(crate) mod $field {
                #[allow(unused_imports)]
                use super::*;

                /// `T`'s function for the op, behind the C ABI.
                ///
                /// # Safety
                /// Called only from the op's sites (through a slot, a
                /// direct call or the stub), whose wrapper upholds the
                /// op's contract.
                #[allow(clippy::unused_unit)]
                pub(crate) unsafe extern "C" fn backend<T: $bound>($($arg: $ty),*) -> $ret {
                    let $f = <T as $bound>::$field;
                    $body
                }

                /// The installed table's function for the op, behind the
                /// C ABI: for an entry replaced after its table was made.
                ///
                /// # Safety
                /// As for [`backend`].
                #[allow(clippy::unused_unit)]
                pub(crate) unsafe extern "C" fn table($($arg: $ty),*) -> $ret {
                    let $f = crate::table::ops().$group.$field;
                    $body
                }

                call_entries!($conv $bound);
            }
        )*

        /// The table's current function pointer for `op`.
        pub(super) fn current(table: &PvOps, op: Op) -> *const () {
            match op {
                $(Op::$variant => table.$group.$field as *const (),)*
            }
        }

        /// What a site of `op` calls to run the installed table's entry.
        pub(super) fn via_table(op: Op) -> *const () {
            match op {
                $(Op::$variant => $field::via_table(),)*
            }
        }

        impl PatchTable {
            /// The companion of `t`, whose patchable entries were just
            /// made for `B` (the witnesses are copied from them, so they
            /// compare equal).
            pub(crate) const fn of<B: IrqOps + MmuOps + TimeOps>(t: &PvOps) -> Self {
                Self {
                    entries: [$(Entry::bound(t.$group.$field as *const (), $field::call::<B>()),)*],
                }
            }
        }

        impl PvOps {
            group_builder!(
                /// This table with its interrupt group replaced by `T`'s
                /// ops. The patchable ones among them are bound as
                /// [`PvOps::of`] binds its backend's: each site becomes a
                /// direct call to `T`'s function (no inline bytes). For a
                /// backend that takes a whole group from elsewhere; single
                /// entries are replaced by assigning them.
                with_irq, irq: IrqOps, IrqOpsTable; $($variant $group $field),*
            );
            group_builder!(
                /// [`PvOps::with_irq`] for the MMU group.
                with_mmu, mmu: MmuOps, MmuOpsTable; $($variant $group $field),*
            );
            group_builder!(
                /// [`PvOps::with_irq`] for the time group.
                with_time, time: TimeOps, TimeOpsTable; $($variant $group $field),*
            );
        }
    };
}

patchable_ops! {
    /// [`crate::irq::save_flags`]: returns the flags in `rax`.
    SaveFlags = irq.save_flags: IrqOps, saved |op| () -> u64 { op().0 }
    /// [`crate::irq::restore_flags`]: flags in `rdi` (DF, TF, NT and IOPL
    /// cleared by the wrapper).
    RestoreFlags = irq.restore_flags: IrqOps, saved |op| (flags: u64) -> () {
        op(crate::irq::IrqFlags(flags))
    }
    /// [`crate::irq::disable`].
    Disable = irq.disable: IrqOps, saved |op| () -> () { op() }
    /// [`crate::irq::enable`].
    Enable = irq.enable: IrqOps, saved |op| () -> () { op() }
    /// [`crate::mmu::read_cr2`]: returns CR2 in `rax`.
    ReadCr2 = mmu.read_cr2: MmuOps, saved |op| () -> u64 { op() }
    /// [`crate::mmu::read_cr3`]: returns CR3 in `rax`.
    ReadCr3 = mmu.read_cr3: MmuOps, saved |op| () -> u64 { op() }
    /// [`crate::mmu::set_entry`] (and `set_pte`, ...): level in `dil`,
    /// entry pointer in `rsi`, value in `rdx`.
    SetEntry = mmu.set_entry: MmuOps, saved
        |op| (level: crate::mmu::PtLevel, entry: *mut u64, value: u64) -> () {
            // SAFETY: the site's caller (`mmu::set_entry`) upholds the
            // op's contract.
            unsafe { op(level, entry, value) }
        }
    /// [`crate::mmu::flush_tlb_single`]: the address in `rdi`.
    FlushTlbSingle = mmu.flush_tlb_single: MmuOps, saved |op| (addr: u64) -> () {
        // The wrapper passed a `VirtAddr`, so `addr` is canonical already.
        op(x86_64::VirtAddr::new_truncate(addr))
    }
    /// [`crate::time::sched_clock`]: returns nanoseconds in `rax`. Direct
    /// call only: no backend's clock fits in a site.
    SchedClock = time.sched_clock: TimeOps, c |op| () -> u64 { op() }
}
