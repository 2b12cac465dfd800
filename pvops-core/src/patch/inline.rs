//! Inline bytes: what a backend offers in place of a call to one op, and
//! the promise ([`InlineOps`]) that they do what the call would.

use super::{encode, Op, SITE_LEN};
use crate::irq::IrqOps;
use crate::mmu::MmuOps;
use crate::time::TimeOps;

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
    pub(super) starts: u8,
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

    /// The [`SITE_LEN`] bytes [`apply`](super::apply) writes to a site for this code on a
    /// CPU whose prefix budget is `prefix_budget` ([`PatchStats`](super::PatchStats) says
    /// which one it used): its full-site form where it has one within that
    /// many prefixes per instruction, else the code and one NOP.
    pub fn site_bytes(&self, prefix_budget: u8) -> [u8; SITE_LEN] {
        encode::inline_site(self, prefix_budget)
    }
}

/// A backend's inline bytes, per op (none by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InlineSet {
    pub(super) ops: [Option<InlineBytes>; Op::COUNT],
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
