//! Applying: rewriting every recorded site for the installed table, once,
//! through a [`TextPoke`] that makes the text writable.

use super::binding::{binding, Binding};
use super::budget::{self, prefix_budget_of, SAFE_PREFIXES};
use super::encode::{self, Action};
use super::site::{self, sites, Site};
use super::{Op, SITE_LEN};
use crate::table;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

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
pub(super) unsafe fn read_site(addr: u64) -> [u8; SITE_LEN] {
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
pub(super) unsafe fn rewrite<I: Iterator<Item = Site>>(
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
