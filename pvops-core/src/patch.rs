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

pub mod budget;
mod encode;
mod ops;
pub(crate) mod site;

use crate::irq::IrqOps;
use crate::mmu::MmuOps;
use crate::table::{self, PvOps};
use crate::time::TimeOps;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

pub use budget::{
    prefix_budget, prefix_budget_of, CpuSignature, Vendor, FULL_SITE_PREFIXES, SAFE_PREFIXES,
};
use encode::Action;
pub use ops::Op;

/// Length in bytes of every call site (`ff 15 rel32`): the room inline
/// bytes have.
pub const SITE_LEN: usize = 6;

/// Up to [`SITE_LEN`] bytes of machine code a backend offers in place of a
/// call to one op. Built in a `const` by [`InlineSet::with`] (written as
/// given) or [`InlineSet::with_prefixable`] (the patcher may widen it to
/// fill the whole site: see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineBytes {
    len: u8,
    bytes: [u8; SITE_LEN],
    /// Bit `i` set: an instruction starts at byte `i` and may take
    /// redundant DS prefixes. Either 0 (written as given) or the starts of
    /// every instruction of the code.
    starts: u8,
}

impl InlineBytes {
    /// `code` as inline bytes, written to a site as they are (then one NOP
    /// for the room left); fails to compile (const panic) when longer than a
    /// site.
    pub const fn new(code: &[u8]) -> Self {
        assert!(code.len() <= SITE_LEN, "inline bytes longer than a site");
        let mut bytes = [0u8; SITE_LEN];
        let mut i = 0;
        while i < code.len() {
            bytes[i] = code[i];
            i += 1;
        }
        Self {
            len: code.len() as u8,
            bytes,
            starts: 0,
        }
    }

    /// The instructions `insns`, in order, as inline bytes the patcher may
    /// widen with redundant DS prefixes (up to the CPU's prefix budget per
    /// instruction, its own prefixes included) so that they fill the whole
    /// site and no NOP follows. Fails to compile when they are longer than
    /// a site or one of them is not prefixable: a control transfer, a
    /// VEX/EVEX/XOP/REX2 encoding, or one with a segment override other
    /// than DS. Each slice must be exactly one instruction (the backend's
    /// promise under [`InlineOps`]).
    pub const fn prefixable(insns: &[&[u8]]) -> Self {
        let mut bytes = [0u8; SITE_LEN];
        let mut len = 0;
        let mut starts = 0u8;
        let mut k = 0;
        while k < insns.len() {
            let insn = insns[k];
            encode::check_prefixable(insn);
            assert!(
                len + insn.len() <= SITE_LEN,
                "inline bytes longer than a site"
            );
            starts |= 1 << len;
            let mut i = 0;
            while i < insn.len() {
                bytes[len] = insn[i];
                len += 1;
                i += 1;
            }
            k += 1;
        }
        Self {
            len: len as u8,
            bytes,
            starts,
        }
    }

    /// The code, as declared.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The [`SITE_LEN`] bytes [`apply`] writes to a site for this code on a
    /// CPU whose prefix budget is `prefix_budget` ([`PatchStats`] says
    /// which one it used): its full-site form where it has one within that
    /// many prefixes per instruction, else the code and one NOP.
    pub fn site_bytes(&self, prefix_budget: u8) -> [u8; SITE_LEN] {
        encode::inline_site(self, prefix_budget)
    }
}

/// A backend's inline bytes, per op (none by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineSet {
    ops: [Option<InlineBytes>; Op::COUNT],
}

impl InlineSet {
    /// No inline bytes: every site becomes a direct call.
    pub const NONE: InlineSet = InlineSet {
        ops: [None; Op::COUNT],
    };

    /// This set with `code` for `op`, written as given ([`InlineBytes::new`]):
    /// for code already in a full-site form the patcher could not derive,
    /// such as a longer ModRM encoding. A const panic (a compile error in a
    /// `const`) when `op` takes no inline bytes or `code` is too long.
    pub const fn with(self, op: Op, code: &[u8]) -> Self {
        self.with_bytes(op, InlineBytes::new(code))
    }

    /// This set with the instructions `insns` for `op`, which the patcher
    /// widens to a full-site form where the CPU's prefix budget allows
    /// ([`InlineBytes::prefixable`]). A const panic when `op` takes no
    /// inline bytes, the code is too long or an instruction is not
    /// prefixable.
    pub const fn with_prefixable(self, op: Op, insns: &[&[u8]]) -> Self {
        self.with_bytes(op, InlineBytes::prefixable(insns))
    }

    const fn with_bytes(mut self, op: Op, code: InlineBytes) -> Self {
        assert!(
            op.inline_allowed(),
            "this op is patched as a direct call only"
        );
        self.ops[op as usize] = Some(code);
        self
    }

    /// The bytes for `op`, if any.
    pub const fn get(&self, op: Op) -> Option<&InlineBytes> {
        self.ops[op as usize].as_ref()
    }
}

/// A backend whose ops can run as inline bytes at a call site.
///
/// # Safety
/// For every op it gives bytes for, executing those bytes in place of the
/// site's `call` must have the effect calling `Self`'s implementation of
/// that op has, for every argument the op's contract allows
/// ([`crate::irq::restore_flags`]: flags from
/// [`crate::irq::save_flags`]). The bytes find the arguments in `rdi`,
/// `rsi`, `rdx` (as the C ABI passes them) and leave any result in `rax`;
/// they may change `rax`, the arithmetic flags and vector or x87
/// registers, and nothing else: every other general register, arguments
/// included, must keep its value (the sites' callee-saved convention), `rsp`
/// must end where it started, DF stays clear. They must not use
/// `rip`-relative addressing (they are copied) and must fall through to the
/// end of the site. Code declared with [`InlineSet::with_prefixable`] must
/// be given exactly one instruction per slice, and each must do the same
/// with redundant DS prefixes in front (every legacy-encoded instruction
/// that is not a control transfer does in 64-bit mode, which is all the
/// declaration accepts).
pub unsafe trait InlineOps: IrqOps + MmuOps + TimeOps {
    /// The bytes, per op.
    const INLINE: InlineSet;
}

/// A code address kept as a plain address: a witness or a call target.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Code(*const ());

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
struct Entry {
    /// The table's function pointer when the table was made.
    witness: Code,
    /// The C-ABI entry that runs the witness's function.
    call: Code,
    /// That function's inline bytes, if its backend declared them.
    inline: Option<InlineBytes>,
}

impl Entry {
    /// The entry of a table function `witness` whose sites call `call`.
    const fn bound(witness: *const (), call: *const ()) -> Self {
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
    entries: [Entry; Op::COUNT],
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

/// One recorded call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// Address of its first byte.
    pub addr: u64,
    /// Its length (always [`SITE_LEN`] for sites this crate emits).
    pub len: u8,
    /// Which op (`None` for an id this crate does not know).
    pub op: Option<Op>,
}

/// Every call site recorded in this image (the linker's
/// `__start_pvops_sites..__stop_pvops_sites`).
pub fn sites() -> impl Iterator<Item = Site> {
    site::records().iter().filter_map(site::Record::site)
}

/// Makes kernel text writable around [`apply`]'s rewrite and restores it.
///
/// `unprotect` runs once, for the whole span of sites, before the first
/// write, and `protect` once after the last, so either may use pvops
/// wrappers: no site is half-written while they run. `write` may not.
pub trait TextPoke {
    /// Makes `[start, end)` writable, keeping it executable (the code doing
    /// the patching may live there).
    fn unprotect(&mut self, start: u64, end: u64) -> Result<(), &'static str>;

    /// Undoes [`TextPoke::unprotect`].
    fn protect(&mut self, start: u64, end: u64);

    /// Stores `bytes` at `addr`. The default stores through the address
    /// itself; a kernel that writes text through another mapping overrides
    /// it.
    ///
    /// # Safety
    /// `[addr, addr + bytes.len())` lies inside a range `unprotect` made
    /// writable, and no CPU executes it meanwhile.
    unsafe fn write(&mut self, addr: u64, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: the caller guarantees the range is writable and idle.
            unsafe { core::ptr::write_volatile((addr as usize + i) as *mut u8, *b) };
        }
    }
}

/// A [`TextPoke`] for ring 0: clears CR0.WP (so read-only pages take
/// supervisor writes) through the installed cpu ops, and sets it back.
#[derive(Debug, Default)]
pub struct ClearWp {
    saved: Option<u64>,
}

impl ClearWp {
    /// CR0.WP.
    pub const WP: u64 = 1 << 16;

    /// A new toggle.
    pub const fn new() -> Self {
        Self { saved: None }
    }
}

impl TextPoke for ClearWp {
    fn unprotect(&mut self, _start: u64, _end: u64) -> Result<(), &'static str> {
        let cr0 = crate::cpu::read_cr0();
        // SAFETY: clearing WP only lets ring 0 write read-only pages; it is
        // set back in `protect`, and `apply`'s caller runs nothing else.
        unsafe { crate::cpu::write_cr0(cr0 & !Self::WP) };
        self.saved = Some(cr0);
        Ok(())
    }

    fn protect(&mut self, _start: u64, _end: u64) {
        if let Some(cr0) = self.saved.take() {
            // SAFETY: restores the value read in `unprotect`.
            unsafe { crate::cpu::write_cr0(cr0) };
        }
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PatchStats {
    /// Sites recorded.
    pub sites: usize,
    /// Rewritten with the backend's inline bytes.
    pub inline: usize,
    /// Rewritten into a direct call to the backend's C-ABI entry.
    pub direct: usize,
    /// Rewritten into a direct call to a table thunk (the op was replaced
    /// after its table was made).
    pub via_table: usize,
    /// Left indirect: the target is beyond a `rel32`'s reach.
    pub out_of_range: usize,
    /// Records of a site already rewritten (the linker merged two copies of
    /// a function).
    pub duplicates: usize,
    /// The prefix budget inline code was widened within (the CPU's, or the
    /// one [`PatchOptions`] gave).
    pub prefix_budget: u8,
}

impl fmt::Display for PatchStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sites={} inline={} direct={} via_table={} out_of_range={} duplicates={} prefix_budget={}",
            self.sites,
            self.inline,
            self.direct,
            self.via_table,
            self.out_of_range,
            self.duplicates,
            self.prefix_budget
        )
    }
}

/// Why [`apply`] rewrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchError {
    /// No table is installed yet.
    NotInstalled,
    /// [`apply`] already ran.
    AlreadyApplied,
    /// A record names a site that is not an unpatched call of its op's slot
    /// (a broken record section): nothing was written.
    BadSite {
        /// The site's address.
        addr: u64,
    },
    /// The [`TextPoke`] could not make the text writable.
    Text(&'static str),
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatchError::NotInstalled => f.write_str("no pvops table installed"),
            PatchError::AlreadyApplied => f.write_str("call sites already patched"),
            PatchError::BadSite { addr } => {
                write!(
                    f,
                    "record for {addr:#x} does not point at a pvops call site"
                )
            }
            PatchError::Text(why) => write!(f, "text not writable: {why}"),
        }
    }
}

impl core::error::Error for PatchError {}

static APPLIED: AtomicBool = AtomicBool::new(false);

/// Reads the current bytes of a site.
///
/// # Safety
/// `addr` is a recorded site in this image's (readable) text.
unsafe fn read_site(addr: u64) -> [u8; SITE_LEN] {
    let mut b = [0u8; SITE_LEN];
    for (i, byte) in b.iter_mut().enumerate() {
        // SAFETY: the caller guarantees the site is mapped readable.
        *byte = unsafe { core::ptr::read_volatile((addr as usize + i) as *const u8) };
    }
    b
}

/// How [`apply_with`] rewrites the sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatchOptions {
    /// Most prefixes an instruction of inline code may carry once widened,
    /// its own included (see the module docs, "The prefix budget").
    pub prefix_budget: u8,
}

impl PatchOptions {
    /// The budget every CPU takes without penalty ([`SAFE_PREFIXES`]).
    pub const SAFE: PatchOptions = PatchOptions {
        prefix_budget: SAFE_PREFIXES,
    };

    /// The options for the CPU `src` describes: its budget from the table
    /// in [`budget`].
    pub fn for_cpu(src: &impl crate::detect::CpuidSource) -> Self {
        PatchOptions {
            prefix_budget: prefix_budget_of(src),
        }
    }
}

impl Default for PatchOptions {
    fn default() -> Self {
        Self::SAFE
    }
}

/// Rewrites every recorded call site for the installed table (see the
/// module docs) and returns what it did, inline code widened within the
/// prefix budget of this CPU: its vendor, family and model read through
/// the installed `cpu.cpuid` op (so also in ring 3 under Xen PV) and looked
/// up in [`budget::prefix_budget`]. Once only; the slots keep serving any
/// site left indirect.
///
/// # Safety
/// As for [`apply_with`].
pub unsafe fn apply(text: &mut impl TextPoke) -> Result<PatchStats, PatchError> {
    if !table::is_installed() {
        return Err(PatchError::NotInstalled);
    }
    let options = PatchOptions::for_cpu(&budget::InstalledCpuid);
    // SAFETY: forwarded to the caller.
    unsafe { apply_with(text, options) }
}

/// [`apply`] with the options given rather than this CPU's: for a kernel
/// that knows better (a budget fixed at build time, or the smallest of
/// CPUs it has not started yet) and for tests.
///
/// # Safety
/// Call it on one CPU with interrupts off while no other CPU runs (nothing
/// else may execute a site, or `text`'s own code, while it is rewritten),
/// and give a `text` that really makes the kernel text writable.
pub unsafe fn apply_with(
    text: &mut impl TextPoke,
    options: PatchOptions,
) -> Result<PatchStats, PatchError> {
    if !table::is_installed() {
        return Err(PatchError::NotInstalled);
    }
    if APPLIED.swap(true, Ordering::AcqRel) {
        return Err(PatchError::AlreadyApplied);
    }
    let table = table::ops();
    let bindings = Op::ALL.map(|op| binding(table, op));
    // SAFETY: the records name this image's sites and their slots; the
    // caller upholds the rest.
    let r = unsafe {
        rewrite(
            sites,
            site::slot_addr,
            &bindings,
            options.prefix_budget,
            text,
        )
    };
    if r.is_err() {
        // Nothing was written: a later call may try again.
        APPLIED.store(false, Ordering::Release);
    }
    r
}

/// [`apply`]'s work, over any list of sites (a fake buffer in tests),
/// inline code widened within `prefix_budget`.
///
/// # Safety
/// Every site `sites()` yields must be readable; the ones that pass the
/// check (the indirect call of `slot_addr(op)`) must be writable through
/// `text` once unprotected, and executed by nobody meanwhile.
unsafe fn rewrite<I: Iterator<Item = Site>>(
    sites: impl Fn() -> I,
    slot_addr: impl Fn(Op) -> u64,
    bindings: &[Binding; Op::COUNT],
    prefix_budget: u8,
    text: &mut impl TextPoke,
) -> Result<PatchStats, PatchError> {
    // Check every site before writing any, so that a bad record leaves the
    // text as it was.
    let (mut lo, mut hi, mut n) = (u64::MAX, 0u64, 0usize);
    for s in sites() {
        let Some(op) = s.op else {
            return Err(PatchError::BadSite { addr: s.addr });
        };
        // SAFETY: the caller guarantees the site is readable.
        let now = unsafe { read_site(s.addr) };
        if s.len as usize != SITE_LEN || now != encode::indirect(s.addr, slot_addr(op)) {
            return Err(PatchError::BadSite { addr: s.addr });
        }
        lo = lo.min(s.addr);
        hi = hi.max(s.addr + SITE_LEN as u64);
        n += 1;
    }
    let mut stats = PatchStats {
        sites: n,
        prefix_budget,
        ..PatchStats::default()
    };
    if n == 0 {
        return Ok(stats);
    }
    text.unprotect(lo, hi).map_err(PatchError::Text)?;
    for s in sites() {
        let Some(op) = s.op else { continue };
        let b = bindings[op as usize];
        let action = match b {
            Binding::Backend {
                inline: Some(code), ..
            } => Action::Inline(code),
            _ => Action::Call(b.call()),
        };
        let Some(new) = encode::site(s.addr, action, prefix_budget) else {
            stats.out_of_range += 1;
            continue;
        };
        // SAFETY: checked above to be a readable site.
        let now = unsafe { read_site(s.addr) };
        if now == new {
            stats.duplicates += 1;
            continue;
        }
        // SAFETY: `unprotect` made [lo, hi) writable and the caller
        // guarantees nothing executes it meanwhile.
        unsafe { text.write(s.addr, &new) };
        match (action, b) {
            (Action::Inline(_), _) => stats.inline += 1,
            (_, Binding::Table { .. }) => stats.via_table += 1,
            _ => stats.direct += 1,
        }
    }
    text.protect(lo, hi);
    serialize();
    Ok(stats)
}

/// Makes this CPU fetch the rewritten code afresh (CPUID serialises and is
/// allowed in every ring, under every hypervisor).
fn serialize() {
    // Only the serialising side effect is wanted.
    // SAFETY: `cpuid` exists on every x86_64 CPU and only reads
    // identification registers. (The intrinsic is safe from Rust 1.94; the
    // block keeps older compilers, down to the MSRV, building.)
    #[allow(unused_unsafe)]
    let _ = unsafe { core::arch::x86_64::__cpuid(0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Features, Identity, Platform};

    const ID: Identity = Identity {
        platform: Platform::Native,
        backend: "test",
        features: Features::new(),
        hypervisor: None,
    };

    #[test]
    fn op_ids_and_names() {
        for (i, op) in Op::ALL.iter().enumerate() {
            assert_eq!(*op as usize, i);
            assert_eq!(Op::from_id(i as u8), Some(*op));
        }
        assert_eq!(Op::from_id(Op::COUNT as u8), None);
        assert_eq!(Op::Disable.name(), "irq.disable");
        assert!(!Op::SchedClock.inline_allowed());
    }

    #[test]
    fn names_are_the_table_fields() {
        assert_eq!(
            Op::ALL.map(Op::name),
            [
                "irq.save_flags",
                "irq.restore_flags",
                "irq.disable",
                "irq.enable",
                "mmu.read_cr2",
                "mmu.read_cr3",
                "mmu.set_entry",
                "mmu.flush_tlb_single",
                "time.sched_clock",
            ]
        );
        let saved = Op::ALL.map(Op::inline_allowed);
        assert_eq!(saved.iter().filter(|s| !**s).count(), 1);
        assert!(!Op::SchedClock.inline_allowed());
    }

    /// An interrupt group of its own, for `with_irq`.
    enum OtherIrq {}

    impl IrqOps for OtherIrq {
        fn save_flags() -> crate::irq::IrqFlags {
            crate::irq::IrqFlags(0x202)
        }
        fn restore_flags(_: crate::irq::IrqFlags) {}
        fn disable() {}
        fn enable() {}
        fn safe_halt() {}
        fn halt() {}
        fn eoi() {}
        fn send_ipi(_: crate::irq::IpiTarget, _: u8) {}
    }

    /// A group taken whole from another backend binds that backend's
    /// functions (direct calls, no table thunk, no inline bytes of the
    /// table it replaced), and leaves the other groups as they were.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "compares function addresses, which Miri makes different per use"
    )]
    fn a_group_taken_whole_binds_its_backend() {
        const SET: InlineSet = InlineSet::NONE
            .with(Op::Disable, &[0xfa])
            .with(Op::ReadCr2, &[0x0f, 0x20, 0xd0]);
        let base = PvOps::of::<crate::table::NotInstalled>(ID);
        let base = PvOps {
            patch: base.patch.with_inline(&SET),
            ..base
        };
        let t = base.with_irq::<OtherIrq>();
        assert_eq!((t.irq.save_flags)().0, 0x202);
        for op in [Op::SaveFlags, Op::RestoreFlags, Op::Disable, Op::Enable] {
            let Binding::Backend { call, inline } = binding(&t, op) else {
                panic!("{} goes through the table", op.name());
            };
            assert_eq!(inline, None);
            assert_ne!(call, binding(&base, op).call());
        }
        assert_eq!(
            binding(&t, Op::Disable).call(),
            ops::disable::call::<OtherIrq>() as u64
        );
        for op in [Op::ReadCr2, Op::ReadCr3, Op::SetEntry, Op::SchedClock] {
            assert_eq!(binding(&t, op), binding(&base, op));
        }
        assert!(matches!(
            binding(&t, Op::ReadCr2),
            Binding::Backend {
                inline: Some(_),
                ..
            }
        ));
        // Replacing one of its entries afterwards still routes it through
        // the table.
        let mut replaced = t;
        replaced.irq.enable = replacement;
        assert!(matches!(
            binding(&replaced, Op::Enable),
            Binding::Table { .. }
        ));
    }

    #[test]
    fn untouched_table_binds_its_backend() {
        let t = PvOps::NOT_INSTALLED;
        for op in Op::ALL {
            assert!(matches!(
                binding(&t, op),
                Binding::Backend { inline: None, .. }
            ));
        }
    }

    fn replacement() {}

    #[test]
    fn replaced_entry_binds_the_table() {
        let mut t = PvOps::of::<crate::table::NotInstalled>(ID);
        t.irq.disable = replacement;
        assert_eq!(
            binding(&t, Op::Disable),
            Binding::Table {
                call: ops::via_table(Op::Disable) as u64
            }
        );
        assert!(matches!(binding(&t, Op::Enable), Binding::Backend { .. }));
    }

    fn other_clock() -> u64 {
        7
    }
    extern "C" fn other_clock_c() -> u64 {
        other_clock()
    }

    /// A backend's own clock (kvmclock) binds its sites to its C entry, a
    /// direct call after patching, not the table thunk; replacing it again
    /// afterwards routes through the table once more.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "compares function addresses, which Miri makes different per use"
    )]
    fn replaced_sched_clock_binds_its_own_entry() {
        let base = PvOps::of::<crate::table::NotInstalled>(ID);
        // SAFETY: other_clock_c is other_clock behind the C ABI.
        let t = unsafe { base.with_sched_clock(other_clock, other_clock_c) };
        assert_eq!(
            binding(&t, Op::SchedClock),
            Binding::Backend {
                call: other_clock_c as *const () as u64,
                inline: None
            }
        );
        assert_eq!((t.time.sched_clock)(), 7);
        let mut again = t;
        again.time.sched_clock = || 8;
        assert!(matches!(
            binding(&again, Op::SchedClock),
            Binding::Table { .. }
        ));
    }

    extern "C" fn direct_disable() {}

    /// A direct call entry replaces the stub sites call, not the table's
    /// function (table calls stay), and a later replacement of the table
    /// entry still routes the op through the table.
    #[test]
    #[cfg_attr(
        miri,
        ignore = "compares function addresses, which Miri makes different per use"
    )]
    fn direct_call_entries_bind_where_the_table_is_untouched() {
        let base = PvOps::of::<crate::table::NotInstalled>(ID);
        // SAFETY: never called; only the binding is inspected.
        let t = unsafe { base.with_direct_call(Op::Disable, direct_disable) };
        assert_eq!(
            binding(&t, Op::Disable),
            Binding::Backend {
                call: direct_disable as *const () as u64,
                inline: None
            }
        );
        assert_eq!(t.irq.disable as usize, base.irq.disable as usize);
        assert_eq!(binding(&t, Op::Enable), binding(&base, Op::Enable));
        let mut replaced = t;
        replaced.irq.disable = replacement;
        assert!(matches!(
            binding(&replaced, Op::Disable),
            Binding::Table { .. }
        ));
    }

    #[test]
    fn replaced_entry_loses_its_inline_bytes() {
        const SET: InlineSet = InlineSet::NONE.with(Op::Disable, &[0xfa]);
        let t = PvOps::of::<crate::table::NotInstalled>(ID);
        let with = PvOps {
            patch: t.patch.with_inline(&SET),
            ..t
        };
        assert!(matches!(
            binding(&with, Op::Disable),
            Binding::Backend {
                inline: Some(b), ..
            } if b.as_slice() == [0xfa]
        ));
        let mut replaced = with;
        replaced.irq.disable = replacement;
        assert!(matches!(
            binding(&replaced, Op::Disable),
            Binding::Table { .. }
        ));
        // Moving the companion to another table does not move the bytes to
        // that table's functions either.
        let mut other = PvOps::of::<crate::table::NotInstalled>(ID);
        other.irq.disable = replacement;
        other.patch = with.patch;
        assert!(matches!(
            binding(&other, Op::Disable),
            Binding::Table { .. }
        ));
    }

    #[test]
    fn inline_set_rejects_nothing_it_should_accept() {
        const S: InlineSet = InlineSet::NONE
            .with(Op::SaveFlags, &[0x9c, 0x58])
            .with(Op::Enable, &[])
            .with_prefixable(Op::ReadCr2, &[&[0x0f, 0x20, 0xd0]])
            .with_prefixable(Op::RestoreFlags, &[&[0x57], &[0x9d]]);
        let s = S;
        assert_eq!(
            s.get(Op::SaveFlags).map(|b| b.as_slice()),
            Some(&[0x9c, 0x58][..])
        );
        assert_eq!(s.get(Op::Enable).map(|b| b.as_slice()), Some(&[][..]));
        assert_eq!(s.get(Op::Disable), None);
        // Declared code is kept as declared; the widening is the site's,
        // and the same under both budgets for these.
        for budget in [SAFE_PREFIXES, FULL_SITE_PREFIXES] {
            let cr2 = s.get(Op::ReadCr2).unwrap();
            assert_eq!(cr2.as_slice(), [0x0f, 0x20, 0xd0]);
            assert_eq!(cr2.site_bytes(budget), [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd0]);
            let restore = s.get(Op::RestoreFlags).unwrap();
            assert_eq!(restore.as_slice(), [0x57, 0x9d]);
            assert_eq!(
                restore.site_bytes(budget),
                [0x3e, 0x3e, 0x57, 0x3e, 0x3e, 0x9d]
            );
            // `with` bytes are never widened.
            assert_eq!(
                s.get(Op::SaveFlags).unwrap().site_bytes(budget),
                [0x9c, 0x58, 0x0f, 0x1f, 0x40, 0x00]
            );
        }
    }

    #[test]
    fn a_1_byte_op_per_budget() {
        const S: InlineSet = InlineSet::NONE
            .with_prefixable(Op::Disable, &[&[0xfa]])
            .with(Op::Enable, &[0xfb]);
        let cli = S.get(Op::Disable).unwrap();
        // Three prefixes: cli; nopl 0x0(%rax,%rax,1).
        assert_eq!(
            cli.site_bytes(SAFE_PREFIXES),
            [0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]
        );
        // The full site: ds ds ds ds ds cli, one instruction.
        assert_eq!(
            cli.site_bytes(FULL_SITE_PREFIXES),
            [0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0xfa]
        );
        // Exact bytes stay exact under any budget.
        let sti = S.get(Op::Enable).unwrap();
        assert_eq!(
            sti.site_bytes(FULL_SITE_PREFIXES),
            [0xfb, 0x0f, 0x1f, 0x44, 0x00, 0x00]
        );
    }

    /// Answers leaf 0 with `vendor` and leaf 1 with `eax`.
    struct FakeCpu {
        vendor: &'static [u8; 12],
        eax: u32,
    }

    impl crate::detect::CpuidSource for FakeCpu {
        fn cpuid(&self, leaf: u32, _: u32) -> crate::cpu::CpuidResult {
            let w = |i: usize| u32::from_le_bytes(self.vendor[i..i + 4].try_into().unwrap());
            match leaf {
                0 => crate::cpu::CpuidResult {
                    eax: 1,
                    ebx: w(0),
                    edx: w(4),
                    ecx: w(8),
                },
                1 => crate::cpu::CpuidResult {
                    eax: self.eax,
                    ..Default::default()
                },
                _ => Default::default(),
            }
        }
    }

    #[test]
    fn options_follow_the_cpu() {
        let skylake_x = FakeCpu {
            vendor: b"GenuineIntel",
            eax: 0x0005_0654,
        };
        let bulldozer = FakeCpu {
            vendor: b"AuthenticAMD",
            eax: 0x0060_0f12,
        };
        let zen4 = FakeCpu {
            vendor: b"AuthenticAMD",
            eax: 0x00a1_0f11,
        };
        let via = FakeCpu {
            vendor: b"CentaurHauls",
            eax: 0x0000_06f2,
        };
        let budget = |c: &FakeCpu| PatchOptions::for_cpu(c).prefix_budget;
        assert_eq!(budget(&skylake_x), FULL_SITE_PREFIXES);
        assert_eq!(budget(&zen4), FULL_SITE_PREFIXES);
        assert_eq!(budget(&bulldozer), SAFE_PREFIXES);
        assert_eq!(budget(&via), SAFE_PREFIXES);
        assert_eq!(PatchOptions::default(), PatchOptions::SAFE);
        assert_eq!(PatchOptions::SAFE.prefix_budget, 3);
    }

    #[test]
    fn stats_name_the_budget() {
        let s = PatchStats {
            sites: 3,
            inline: 1,
            direct: 1,
            via_table: 1,
            prefix_budget: 5,
            ..PatchStats::default()
        };
        assert_eq!(
            std::format!("{s}"),
            "sites=3 inline=1 direct=1 via_table=1 out_of_range=0 duplicates=0 prefix_budget=5"
        );
    }

    #[test]
    #[should_panic(expected = "control transfer")]
    fn inline_set_refuses_a_prefixable_branch() {
        let _ = InlineSet::NONE.with_prefixable(Op::Disable, &[&[0xc3]]);
    }

    #[test]
    #[should_panic(expected = "longer than a site")]
    fn inline_bytes_too_long() {
        let _ = InlineBytes::new(&[0x90; SITE_LEN + 1]);
    }

    #[test]
    #[should_panic(expected = "direct call only")]
    fn no_inline_clock() {
        let _ = InlineSet::NONE.with(Op::SchedClock, &[0x0f, 0x31]);
    }

    /// A [`TextPoke`] over a buffer: logs its calls, writes directly.
    #[derive(Default)]
    struct Log {
        calls: std::vec::Vec<(&'static str, u64, u64)>,
        refuse: bool,
    }

    impl TextPoke for Log {
        fn unprotect(&mut self, start: u64, end: u64) -> Result<(), &'static str> {
            self.calls.push(("unprotect", start, end));
            if self.refuse {
                Err("refused")
            } else {
                Ok(())
            }
        }
        fn protect(&mut self, start: u64, end: u64) {
            self.calls.push(("protect", start, end));
        }
        unsafe fn write(&mut self, addr: u64, bytes: &[u8]) {
            self.calls.push(("write", addr, bytes.len() as u64));
            for (i, b) in bytes.iter().enumerate() {
                // SAFETY: the test's buffer, as `rewrite` promises.
                unsafe { ((addr as usize + i) as *mut u8).write(*b) };
            }
        }
    }

    /// A fake text: six sites 8 bytes apart (one recorded twice), each
    /// the indirect call of its op's fake slot. Only ever touched through
    /// its raw pointer, as `rewrite` touches text.
    struct Fake {
        ptr: *mut u8,
        ops: [Op; FAKE_SITES],
    }

    const FAKE_SITES: usize = 6;

    const FAKE_SLOTS: u64 = 0x10_0000;
    const FAKE_LEN: usize = 64;

    impl Fake {
        fn new() -> Self {
            // Owned through a raw pointer (`rewrite` writes text behind
            // Rust's back); freed in Drop.
            let buf = std::boxed::Box::into_raw(std::boxed::Box::new([0xccu8; FAKE_LEN]));
            let f = Fake {
                ptr: buf.cast::<u8>(),
                ops: [
                    Op::Disable,
                    Op::Enable,
                    Op::SaveFlags,
                    Op::ReadCr2,
                    Op::SchedClock,
                    Op::ReadCr3,
                ],
            };
            for i in 0..FAKE_SITES {
                let b = encode::indirect(f.site(i), f.slot(f.ops[i]));
                // SAFETY: inside the FAKE_LEN-byte buffer allocated above.
                unsafe {
                    f.ptr
                        .add(i * 8)
                        .copy_from_nonoverlapping(b.as_ptr(), SITE_LEN)
                };
            }
            f
        }
        fn base(&self) -> u64 {
            self.ptr as u64
        }
        fn site(&self, i: usize) -> u64 {
            self.base() + 8 * i as u64
        }
        fn slot(&self, op: Op) -> u64 {
            self.base() + FAKE_SLOTS + 8 * op as u64
        }
        fn sites(&self) -> std::vec::Vec<Site> {
            let mut v: std::vec::Vec<Site> = (0..FAKE_SITES)
                .map(|i| Site {
                    addr: self.site(i),
                    len: SITE_LEN as u8,
                    op: Some(self.ops[i]),
                })
                .collect();
            v.push(v[0]);
            v
        }
        fn all(&self) -> [u8; FAKE_LEN] {
            // SAFETY: the FAKE_LEN-byte buffer owned by this Fake.
            unsafe { self.ptr.cast::<[u8; FAKE_LEN]>().read() }
        }
        fn bytes(&self, i: usize) -> [u8; SITE_LEN] {
            self.all()[i * 8..i * 8 + SITE_LEN].try_into().unwrap()
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            // SAFETY: `ptr` came from Box::into_raw of a [u8; FAKE_LEN] in
            // `new` and is freed only here.
            drop(unsafe { std::boxed::Box::from_raw(self.ptr.cast::<[u8; FAKE_LEN]>()) });
        }
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "executes inline asm (cpuid, real call sites); runs natively in cargo test"
    )]
    fn rewrite_fake_text() {
        // cli and one five-byte NOP.
        rewrite_fake_text_with(SAFE_PREFIXES, [0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        // cli with five DS prefixes: one instruction.
        rewrite_fake_text_with(FULL_SITE_PREFIXES, [0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0xfa]);
    }

    /// Rewrites a fresh fake text within `budget`; `cli` is what the
    /// prefixable `cli` of `irq.disable` must become.
    fn rewrite_fake_text_with(budget: u8, cli: [u8; SITE_LEN]) {
        let f = Fake::new();
        let near = f.base() + 0x4000;
        let far = f.base().wrapping_add(1 << 40);
        let mut bindings = Op::ALL.map(|_| Binding::Table { call: near });
        bindings[Op::Disable as usize] = Binding::Backend {
            call: near,
            inline: Some(InlineBytes::prefixable(&[&[0xfa]])),
        };
        bindings[Op::Enable as usize] = Binding::Backend {
            call: near + 0x10,
            inline: None,
        };
        bindings[Op::SaveFlags as usize] = Binding::Table { call: near + 0x20 };
        bindings[Op::ReadCr2 as usize] = Binding::Backend {
            call: far,
            inline: None,
        };
        bindings[Op::SchedClock as usize] = Binding::Backend {
            call: near + 0x30,
            inline: None,
        };
        bindings[Op::ReadCr3 as usize] = Binding::Backend {
            call: near + 0x40,
            inline: Some(InlineBytes::prefixable(&[&[0x0f, 0x20, 0xd8]])),
        };
        let sites = f.sites();
        let mut log = Log::default();
        let slot = |op| f.slot(op);
        // SAFETY: every site is in `f.buf`, which nothing executes.
        let stats = unsafe { rewrite(|| sites.iter().copied(), slot, &bindings, budget, &mut log) };
        let stats = stats.unwrap();
        assert_eq!(
            stats,
            PatchStats {
                sites: 7,
                inline: 2,
                direct: 2,
                via_table: 1,
                out_of_range: 1,
                duplicates: 1,
                prefix_budget: budget,
            }
        );
        assert_eq!(f.bytes(0), cli);
        // mov %cr3, %rax widened to fill the site (three prefixes under
        // either budget): one instruction.
        assert_eq!(f.bytes(5), [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd8]);
        // call rel32 from the end of the call, then a NOP.
        let call = |i: usize, target: u64| {
            let rel = (target as i64 - (f.site(i) as i64 + 5)) as i32;
            let mut b = [0xe8, 0, 0, 0, 0, 0x90];
            b[1..5].copy_from_slice(&rel.to_le_bytes());
            b
        };
        assert_eq!(f.bytes(1), call(1, near + 0x10));
        assert_eq!(f.bytes(2), call(2, near + 0x20));
        assert_eq!(f.bytes(4), call(4, near + 0x30));
        // Out of range: untouched, still the indirect call of its slot.
        assert_eq!(f.bytes(3), encode::indirect(f.site(3), f.slot(Op::ReadCr2)));
        // Nothing outside the sites changed.
        let all = f.all();
        for i in 0..FAKE_SITES {
            assert!(all[i * 8 + SITE_LEN..i * 8 + 8].iter().all(|b| *b == 0xcc));
        }
        // One unprotect before the writes, one protect after, same span.
        let (lo, hi) = (f.site(0), f.site(FAKE_SITES - 1) + SITE_LEN as u64);
        assert_eq!(log.calls.first(), Some(&("unprotect", lo, hi)));
        assert_eq!(log.calls.last(), Some(&("protect", lo, hi)));
        let writes: std::vec::Vec<_> = log.calls[1..log.calls.len() - 1].to_vec();
        assert_eq!(writes.len(), 5);
        assert!(writes
            .iter()
            .all(|(k, a, n)| *k == "write" && *a >= lo && a + n <= hi && *n == SITE_LEN as u64));
    }

    #[test]
    fn rewrite_refuses_bad_records_and_writes_nothing() {
        let f = Fake::new();
        let bindings = Op::ALL.map(|_| Binding::Table { call: f.base() });
        let slot = |op| f.slot(op);
        let before = f.all();
        // A record whose site is not the indirect call of its op's slot.
        let mut sites = f.sites();
        sites[2].op = Some(Op::Enable);
        let mut log = Log::default();
        // SAFETY: as in `rewrite_fake_text`.
        let r = unsafe {
            rewrite(
                || sites.iter().copied(),
                slot,
                &bindings,
                SAFE_PREFIXES,
                &mut log,
            )
        };
        assert_eq!(r, Err(PatchError::BadSite { addr: f.site(2) }));
        // A record with an unknown op or a wrong length.
        let mut sites = f.sites();
        sites[1].op = None;
        // SAFETY: as above.
        let r = unsafe {
            rewrite(
                || sites.iter().copied(),
                slot,
                &bindings,
                SAFE_PREFIXES,
                &mut log,
            )
        };
        assert_eq!(r, Err(PatchError::BadSite { addr: f.site(1) }));
        let mut sites = f.sites();
        sites[4].len = 5;
        // SAFETY: as above.
        let r = unsafe {
            rewrite(
                || sites.iter().copied(),
                slot,
                &bindings,
                SAFE_PREFIXES,
                &mut log,
            )
        };
        assert_eq!(r, Err(PatchError::BadSite { addr: f.site(4) }));
        assert!(log.calls.is_empty());
        // Text that cannot be made writable.
        let sites = f.sites();
        let mut log = Log {
            refuse: true,
            ..Log::default()
        };
        // SAFETY: as above.
        let r = unsafe {
            rewrite(
                || sites.iter().copied(),
                slot,
                &bindings,
                SAFE_PREFIXES,
                &mut log,
            )
        };
        assert_eq!(r, Err(PatchError::Text("refused")));
        assert_eq!(log.calls.len(), 1);
        assert_eq!(f.all(), before);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "executes inline asm (cpuid, real call sites); runs natively in cargo test"
    )]
    fn this_image_has_sites() {
        // The unit-test binary itself contains sites (at least the two
        // below) and the sentinel, which `sites()` skips.
        let mut seen = [false; Op::COUNT];
        for s in sites() {
            assert_eq!(s.len as usize, SITE_LEN);
            let op = s.op.expect("known op");
            seen[op as usize] = true;
            // SAFETY: a recorded site of this image.
            let bytes = unsafe { read_site(s.addr) };
            assert_eq!(bytes, encode::indirect(s.addr, site::slot_addr(op)));
        }
        assert!(seen[Op::Disable as usize] && seen[Op::SchedClock as usize]);
        if std::hint::black_box(false) {
            // Never run: only makes sure these sites exist in this binary.
            crate::irq::disable();
            let _ = crate::time::sched_clock();
        }
    }
}
