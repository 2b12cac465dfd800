//! Binding: which function (and which inline bytes) each patchable op of a
//! table gets at its sites, decided by comparing the table's entry with
//! the witness recorded when the table was made.

use super::{ops, site, InlineBytes, InlineSet, Op};
use crate::table::PvOps;
use core::fmt;

/// A code address kept as a plain address: a witness or a call target.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Code(pub(super) *const ());

// SAFETY: `Code` is only an address of code: it is compared, stored into a
// slot or encoded into a call, never dereferenced as data.
unsafe impl Send for Code {}
// SAFETY: as for Send: sharing an address of code shares no data.
unsafe impl Sync for Code {}

impl Code {
    fn addr(self) -> u64 {
        self.0 as u64
    }
}

/// What patching knows about one op of a table.
#[derive(Clone, Copy)]
pub(super) struct Entry {
    /// The table's function pointer when the table was made.
    pub(super) witness: Code,
    /// The C-ABI entry that runs the witness's function.
    pub(super) call: Code,
    /// That function's inline bytes, if its backend declared them.
    pub(super) inline: Option<InlineBytes>,
}

impl Entry {
    /// The entry of a table function `witness` whose sites call `call`.
    pub(super) const fn bound(witness: *const (), call: *const ()) -> Self {
        Entry {
            witness: Code(witness),
            call: Code(call),
            inline: None,
        }
    }
}

/// The patching companion of a [`PvOps`] table (its `patch` field): per
/// patchable op, the function that was put in the table, a C-ABI entry for
/// it and its inline bytes. Made only by [`PvOps::of`] and
/// [`PvOps::of_inline`]; replacing a table entry afterwards is detected at
/// install and routes that op through the table (see the module docs).
#[derive(Clone, Copy)]
pub struct PatchTable {
    pub(super) entries: [Entry; Op::COUNT],
}

impl fmt::Debug for PatchTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inline = self.entries.iter().filter(|e| e.inline.is_some()).count();
        write!(f, "PatchTable {{ inline ops: {inline} }}")
    }
}

impl PatchTable {
    /// A companion with no entries bound, which [`PvOps::of`] replaces at
    /// once (`PatchTable::of` needs the finished groups).
    pub(crate) const UNBOUND: PatchTable = PatchTable {
        entries: [Entry::bound(core::ptr::null(), core::ptr::null()); Op::COUNT],
    };

    /// Makes `entry` the function `op`'s sites call (see
    /// [`PvOps::with_direct_call`]).
    pub(crate) const fn with_call(mut self, op: Op, entry: unsafe extern "C" fn()) -> Self {
        self.entries[op as usize].call = Code(entry as *const ());
        self
    }

    /// Makes `witness` the entry `op`'s sites are bound to and `call` what
    /// they call, with no inline bytes (see [`PvOps::with_sched_clock`]).
    pub(crate) const fn rebind(mut self, op: Op, witness: *const (), call: *const ()) -> Self {
        self.entries[op as usize] = Entry::bound(witness, call);
        self
    }

    /// Adds `set`; private so that bytes can only join the witnesses of the
    /// backend that declared them (in [`PvOps::of_inline`]).
    pub(crate) const fn with_inline(mut self, set: &InlineSet) -> Self {
        let mut i = 0;
        while i < Op::COUNT {
            self.entries[i].inline = set.ops[i];
            i += 1;
        }
        self
    }
}

/// How the installed table runs `op` at a site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// The backend's function, through its C-ABI entry; inline bytes too if
    /// the backend declared them.
    Backend {
        /// The C-ABI entry.
        call: u64,
        /// The inline bytes, if any.
        inline: Option<InlineBytes>,
    },
    /// The table entry was replaced after the table was made: a C-ABI thunk
    /// calls whatever the installed table holds.
    Table {
        /// The thunk.
        call: u64,
    },
}

impl Binding {
    /// The function the slot (and a direct call) goes to.
    pub fn call(&self) -> u64 {
        match *self {
            Binding::Backend { call, .. } | Binding::Table { call } => call,
        }
    }
}

/// How `table` runs `op`: its backend's entry when the table entry is the
/// one [`PvOps::of`] put there, else the table thunk.
pub fn binding(table: &PvOps, op: Op) -> Binding {
    let e = &table.patch.entries[op as usize];
    // Equality can only be trusted one way: `of` copied the witness from
    // the very value it stored, so an untouched entry is equal. A replaced
    // entry could only compare equal if the linker folded two identical
    // functions into one address, and then either's bytes do the same.
    if Code(ops::current(table, op)) == e.witness {
        Binding::Backend {
            call: e.call.addr(),
            inline: e.inline,
        }
    } else {
        Binding::Table {
            call: ops::via_table(op) as u64,
        }
    }
}

/// Points every slot at `table`'s functions. Called by
/// [`crate::table::install`] once `table` is published.
pub(crate) fn bind_slots(table: &PvOps) {
    for op in Op::ALL {
        site::set_slot(op, binding(table, op).call() as *mut ());
    }
}

/// The function a not-yet-patched site of `op` calls now.
pub fn slot_target(op: Op) -> u64 {
    site::slot(op) as u64
}
