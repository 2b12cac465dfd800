//! The bytes a site is rewritten with: pure functions of the site's
//! address and what it should do, so they are tested on fake addresses.
//!
//! # Full-site forms
//! A site is one instruction long when its inline code fills all
//! [`SITE_LEN`] bytes; shorter code is followed by one NOP, which costs an
//! issue slot like any instruction (measured by the host benchmark: `nop`
//! then a 5-byte NOP takes twice the time of `nop` alone, while `nop` with
//! five redundant prefixes takes the time of `nop`). Code declared
//! instruction by instruction ([`super::InlineBytes::prefixable`]) is
//! therefore widened with redundant DS prefixes (`3e`) when they can take up
//! *all* the room, so that no NOP is left; when they cannot, the code is
//! written as declared and one NOP fills the rest (a shorter NOP saves
//! nothing).
//!
//! How many prefixes: at most a *budget* per instruction, counting the
//! ones it already has (REX included), which the caller passes in: the
//! budget of the CPU the kernel runs on, chosen once from CPUID
//! ([`super::budget`], where the table and its sources are). Three is free
//! on every x86-64 decoder; more decode slowly on some CPUs still in use:
//! AMD's Bulldozer family takes 14 to 15 extra cycles to decode an
//! instruction with 4 to 7 prefixes (Agner Fog, "The microarchitecture of
//! Intel, AMD and VIA CPUs", AMD Bulldozer chapter, "Instruction
//! decoding"), the Atom line stalls too, and Linux and GNU as stop their
//! NOPs at 11 bytes, three prefixes, "because a number of uarchs have
//! severe decode penalties for more than 3 prefixes" (Linux commit
//! df25edbac31e). Sandy Bridge's descendants and AMD's Bobcat, Jaguar and
//! Zen decode any number at full speed, and get five: a site's length
//! less the opcode byte, so that even a 1-byte instruction (`cli`, `sti`)
//! fills its site alone. Under three, such an instruction keeps one NOP.
//!
//! Why DS: in 64-bit mode the CS, DS, ES and SS overrides are ignored
//! (Intel SDM vol. 1, "Segment Registers in 64-Bit Mode"), and DS is the
//! default segment of every memory operand they could apply to (stack
//! accesses of `push`/`pop` use SS whatever the prefix). Segment overrides
//! on branches are reserved (Intel SDM vol. 2, 2.1.1 "Instruction
//! Prefixes"), `2e`/`3e` on `Jcc` are branch hints and `3e` on an indirect
//! branch is CET's NOTRACK, so [`check_prefixable`] refuses control
//! transfers. Other prefixes change instructions (`f3 90` is `pause`,
//! `66 9c` pushes 16 bits, `41 90` is `xchg %eax, %r8d`, `f0 0f 20` reads
//! CR8 on AMD) and are never added.

use super::{InlineBytes, SITE_LEN};

/// Opcode and ModRM of `call qword ptr [rip + rel32]`.
const CALL_INDIRECT: [u8; 2] = [0xff, 0x15];
/// Opcode of `call rel32`.
const CALL_REL32: u8 = 0xe8;

/// The redundant prefix full-site forms add: DS segment override.
pub(crate) const PAD_PREFIX: u8 = 0x3e;

/// The multi-byte NOPs Intel's optimisation manual recommends, by length.
const NOPS: [&[u8]; SITE_LEN + 1] = [
    &[],
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
];

/// Whether `b` is a legacy prefix (groups 1 to 4).
const fn is_legacy_prefix(b: u8) -> bool {
    matches!(
        b,
        0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3
    )
}

/// How many prefixes (legacy, then at most one REX) `insn` starts with:
/// what the decoders count against the budget.
pub(crate) const fn prefix_count(insn: &[u8]) -> usize {
    let mut n = 0;
    while n < insn.len() && is_legacy_prefix(insn[n]) {
        n += 1;
    }
    if n < insn.len() && insn[n] & 0xf0 == 0x40 {
        n += 1;
    }
    n
}

/// Why `insn` may not take DS prefixes, or `None` when it may: it must be
/// legacy-encoded, carry no segment override but DS, and be no control
/// transfer (branch, call, return, software interrupt, system call,
/// hypercall or trap), where prefixes are reserved or change the
/// instruction. Whether `insn` is exactly one instruction it cannot tell:
/// that is the declaring backend's promise ([`super::InlineOps`]).
pub(crate) const fn why_not_prefixable(insn: &[u8]) -> Option<&'static str> {
    if insn.is_empty() {
        return Some("an empty instruction");
    }
    let mut i = 0;
    while i < insn.len() && (is_legacy_prefix(insn[i]) || insn[i] & 0xf0 == 0x40) {
        if matches!(insn[i], 0x26 | 0x2e | 0x36 | 0x64 | 0x65) {
            return Some("already has a segment override other than DS");
        }
        i += 1;
    }
    if i == insn.len() {
        return Some("prefixes without an opcode");
    }
    let op = insn[i];
    let next = if i + 1 < insn.len() { insn[i + 1] } else { 0 };
    let modrm = if i + 2 < insn.len() { insn[i + 2] } else { 0 };
    if matches!(op, 0xc4 | 0xc5 | 0x62 | 0x8f | 0xd5) {
        return Some("not legacy-encoded (VEX, EVEX, XOP or REX2)");
    }
    let transfer = match op {
        // Jcc, CALL/JMP far and near, RET, INT3/INT/INTO, IRET, LOOP, JrCXZ.
        0x70..=0x7f | 0x9a | 0xc2 | 0xc3 | 0xca..=0xcf | 0xe0..=0xe3 | 0xe8..=0xeb => true,
        // CALL/JMP indirect (FF /2 to /5).
        0xff => i + 1 == insn.len() || matches!((next >> 3) & 7, 2..=5),
        0x0f => {
            matches!(
                next,
                // Jcc rel32, SYSCALL, SYSRET, SYSENTER, SYSEXIT, UD0/1/2.
                0x80..=0x8f | 0x05 | 0x07 | 0x34 | 0x35 | 0x0b | 0xb9 | 0xff
            ) || (next == 0x01 && (i + 2 >= insn.len() || modrm >= 0xc0))
        }
        _ => false,
    };
    if transfer {
        return Some("a control transfer or 0f 01 system instruction");
    }
    None
}

/// Fails to compile (a const panic) unless `insn` may take DS prefixes
/// ([`why_not_prefixable`]).
pub(crate) const fn check_prefixable(insn: &[u8]) {
    if let Some(why) = why_not_prefixable(insn) {
        panic!("{}", why);
    }
}

/// `code` (declared instruction by instruction) widened to fill a whole
/// site with [`PAD_PREFIX`]es, so that no instruction carries more than
/// `budget` prefixes (its own included); `None` when that many cannot fill
/// it (or it is not prefixable at all). Prefixes are dealt one per
/// instruction in turn, so they spread evenly.
pub(crate) fn full_site(code: &InlineBytes, budget: u8) -> Option<[u8; SITE_LEN]> {
    let bytes = code.as_slice();
    let room = SITE_LEN - bytes.len();
    if code.starts == 0 || room == 0 {
        return None;
    }
    // Each instruction's [start, end) and its room for prefixes.
    let mut insns = [(0usize, 0usize, 0usize); SITE_LEN];
    let mut n = 0;
    for start in 0..bytes.len() {
        if code.starts & (1 << start) != 0 {
            insns[n] = (start, 0, 0);
            n += 1;
        }
    }
    for k in 0..n {
        let end = if k + 1 < n {
            insns[k + 1].0
        } else {
            bytes.len()
        };
        let spare = usize::from(budget).saturating_sub(prefix_count(&bytes[insns[k].0..end]));
        insns[k].1 = end;
        insns[k].2 = spare;
    }
    let mut add = [0usize; SITE_LEN];
    let mut left = room;
    while left > 0 {
        let before = left;
        for k in 0..n {
            if left > 0 && add[k] < insns[k].2 {
                add[k] += 1;
                left -= 1;
            }
        }
        if left == before {
            // The prefixes cannot fill the site: a NOP must follow anyway.
            return None;
        }
    }
    let mut out = [0u8; SITE_LEN];
    let mut at = 0;
    for k in 0..n {
        let (start, end, _) = insns[k];
        out[at..at + add[k]].fill(PAD_PREFIX);
        at += add[k];
        out[at..at + end - start].copy_from_slice(&bytes[start..end]);
        at += end - start;
    }
    debug_assert_eq!(at, SITE_LEN);
    Some(out)
}

/// The site bytes for inline `code` under `budget`: its full-site form if
/// it has one, else the code and one NOP.
pub(crate) fn inline_site(code: &InlineBytes, budget: u8) -> [u8; SITE_LEN] {
    if let Some(b) = full_site(code, budget) {
        return b;
    }
    let code = code.as_slice();
    let mut b = [0u8; SITE_LEN];
    b[..code.len()].copy_from_slice(code);
    b[code.len()..].copy_from_slice(NOPS[SITE_LEN - code.len()]);
    b
}

/// What a site is to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Run these bytes in place.
    Inline(InlineBytes),
    /// Call this C-ABI function directly.
    Call(u64),
}

/// `target - next` as a `rel32`, if it fits.
fn rel32(next: u64, target: u64) -> Option<i32> {
    i32::try_from(target.wrapping_sub(next) as i64).ok()
}

/// The bytes of an unpatched site at `site` calling through `slot`.
pub(crate) fn indirect(site: u64, slot: u64) -> [u8; SITE_LEN] {
    // A real site always reaches its slot (the linker checked); a record
    // that does not gives bytes no real site has, which is what callers
    // compare for.
    let rel = slot.wrapping_sub(site + SITE_LEN as u64) as i64;
    let rel = i32::try_from(rel).map_or([0; 4], i32::to_le_bytes);
    let mut b = [0u8; SITE_LEN];
    b[..2].copy_from_slice(&CALL_INDIRECT);
    b[2..].copy_from_slice(&rel);
    b
}

/// The bytes that make the site at `site` do `action` (inline code widened
/// within `budget` prefixes per instruction), or `None` when a direct call
/// cannot reach its target (the site then stays indirect).
pub(crate) fn site(site: u64, action: Action, budget: u8) -> Option<[u8; SITE_LEN]> {
    match action {
        Action::Inline(code) => Some(inline_site(&code, budget)),
        Action::Call(target) => {
            let rel = rel32(site + 5, target)?;
            let mut b = [0u8; SITE_LEN];
            b[0] = CALL_REL32;
            b[1..5].copy_from_slice(&rel.to_le_bytes());
            // One NOP for the rest, so the padding is a single instruction.
            b[5..].copy_from_slice(NOPS[SITE_LEN - 5]);
            Some(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::budget::{FULL_SITE_PREFIXES, SAFE_PREFIXES};

    const SITE: u64 = 0xffff_ffff_8010_0000;
    /// The two budgets CPUs get.
    const BUDGETS: [u8; 2] = [SAFE_PREFIXES, FULL_SITE_PREFIXES];

    fn inline(code: &[u8]) -> Action {
        Action::Inline(InlineBytes::new(code))
    }

    #[test]
    fn nops_have_their_length() {
        for (n, nop) in NOPS.iter().enumerate() {
            assert_eq!(nop.len(), n);
        }
    }

    #[test]
    fn inline_bytes_are_padded_with_one_nop() {
        // `with` bytes are written as given under any budget.
        for budget in [0, SAFE_PREFIXES, FULL_SITE_PREFIXES, 15] {
            let site = |code: &[u8]| site(SITE, inline(code), budget);
            // cli
            assert_eq!(site(&[0xfa]), Some([0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]));
            // pushf; pop %rax
            assert_eq!(
                site(&[0x9c, 0x58]),
                Some([0x9c, 0x58, 0x0f, 0x1f, 0x40, 0x00])
            );
            // mov %cr2, %rax
            assert_eq!(
                site(&[0x0f, 0x20, 0xd0]),
                Some([0x0f, 0x20, 0xd0, 0x0f, 0x1f, 0x00])
            );
            // five bytes: a one-byte nop
            assert_eq!(site(&[0xb8, 1, 2, 3, 4]), Some([0xb8, 1, 2, 3, 4, 0x90]));
            // six bytes: no padding; none: one six-byte nop
            assert_eq!(site(&[1, 2, 3, 4, 5, 6]), Some([1, 2, 3, 4, 5, 6]));
            assert_eq!(site(&[]), Some([0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00]));
            // Inline bytes do not depend on where the site is.
            assert_eq!(super::site(0x1000, inline(&[0xfb]), budget), site(&[0xfb]));
        }
    }

    fn prefixable(insns: &[&[u8]], budget: u8) -> [u8; SITE_LEN] {
        site(SITE, Action::Inline(InlineBytes::prefixable(insns)), budget).unwrap()
    }

    #[test]
    fn prefix_counts() {
        assert_eq!(prefix_count(&[0xfa]), 0);
        assert_eq!(prefix_count(&[0x3e, 0x48, 0x89, 0x54, 0x26, 0x00]), 2);
        assert_eq!(prefix_count(&[0x66, 0x66, 0x66, 0x90]), 3);
        assert_eq!(prefix_count(&[0xf3, 0x48, 0xab]), 2);
        // A REX byte counts once, and only right before the opcode.
        assert_eq!(prefix_count(&[0x48, 0x48]), 1);
    }

    /// Forms that three prefixes per instruction already make: the same
    /// under the full-site budget.
    #[test]
    fn prefixes_fill_the_site_when_they_can() {
        for budget in BUDGETS {
            let p = |insns: &[&[u8]]| prefixable(insns, budget);
            // mov %cr2, %rax: three DS prefixes, one instruction.
            assert_eq!(
                p(&[&[0x0f, 0x20, 0xd0]]),
                [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd0]
            );
            // pushf; pop %rax: two each, no NOP.
            assert_eq!(p(&[&[0x9c], &[0x58]]), [0x3e, 0x3e, 0x9c, 0x3e, 0x3e, 0x58]);
            // push %rdi; popf.
            assert_eq!(p(&[&[0x57], &[0x9d]]), [0x3e, 0x3e, 0x57, 0x3e, 0x3e, 0x9d]);
            // mov $imm32, %eax: one.
            assert_eq!(
                p(&[&[0xb8, 0xc2, 0xc2, 0xc2, 0x00]]),
                [0x3e, 0xb8, 0xc2, 0xc2, 0xc2, 0x00]
            );
            // Dealt one per instruction in turn.
            assert_eq!(
                p(&[&[0x9c], &[0x0f, 0x20, 0xd0]]),
                [0x3e, 0x9c, 0x3e, 0x0f, 0x20, 0xd0]
            );
            assert_eq!(
                p(&[&[0x9c], &[0x58], &[0x90]]),
                [0x3e, 0x9c, 0x3e, 0x58, 0x3e, 0x90]
            );
            // Prefixes already there count: a REX leaves two (mov (%rsp), %rax).
            assert_eq!(
                p(&[&[0x48, 0x8b, 0x04, 0x24]]),
                [0x3e, 0x3e, 0x48, 0x8b, 0x04, 0x24]
            );
            assert_eq!(
                p(&[&[0x3e, 0x3e, 0x0f, 0x20, 0xd0]]),
                [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd0]
            );
            // Six bytes already: as given.
            assert_eq!(
                p(&[&[0x3e, 0x48, 0x89, 0x54, 0x26, 0x00]]),
                [0x3e, 0x48, 0x89, 0x54, 0x26, 0x00]
            );
            // No code: one six-byte NOP, as for `with`.
            assert_eq!(p(&[]), [0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        }
    }

    #[test]
    fn a_nop_when_three_prefixes_cannot_fill_the_site() {
        let p = |insns: &[&[u8]]| prefixable(insns, SAFE_PREFIXES);
        // cli, sti, nop: five prefixes needed, three allowed. Written as
        // given with one NOP: fewer prefixes than a 4-byte cli and a
        // 2-byte NOP would have, and the same two instructions.
        for op in [0xfa, 0xfb, 0x90] {
            assert_eq!(p(&[&[op]]), [op, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
        }
        // mov %rdx, (%rsi): REX.W leaves room for two of the three needed.
        assert_eq!(
            p(&[&[0x48, 0x89, 0x16]]),
            [0x48, 0x89, 0x16, 0x0f, 0x1f, 0x00]
        );
        // Already at the budget.
        assert_eq!(
            p(&[&[0x66, 0x66, 0x66, 0x90]]),
            [0x66, 0x66, 0x66, 0x90, 0x66, 0x90]
        );
        // Exact bytes are never widened.
        assert_eq!(
            site(SITE, inline(&[0x0f, 0x20, 0xd0]), SAFE_PREFIXES),
            Some([0x0f, 0x20, 0xd0, 0x0f, 0x1f, 0x00])
        );
    }

    #[test]
    fn the_full_site_budget_makes_one_instruction_of_a_1_byte_op() {
        let p = |insns: &[&[u8]]| prefixable(insns, FULL_SITE_PREFIXES);
        // cli, sti, nop: five DS prefixes, one instruction, no NOP.
        for op in [0xfa, 0xfb, 0x90] {
            assert_eq!(p(&[&[op]]), [0x3e, 0x3e, 0x3e, 0x3e, 0x3e, op]);
        }
        // mov %rdx, (%rsi): three DS, then REX.W: four prefixes.
        assert_eq!(
            p(&[&[0x48, 0x89, 0x16]]),
            [0x3e, 0x3e, 0x3e, 0x48, 0x89, 0x16]
        );
        // Three of its own: two more.
        assert_eq!(
            p(&[&[0x66, 0x66, 0x66, 0x90]]),
            [0x3e, 0x3e, 0x66, 0x66, 0x66, 0x90]
        );
        // Exact bytes are never widened, whatever the budget.
        assert_eq!(
            site(SITE, inline(&[0xfa]), FULL_SITE_PREFIXES),
            Some([0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00])
        );
        // A larger budget changes nothing more: a site holds at most five.
        assert_eq!(prefixable(&[&[0xfa]], 14), p(&[&[0xfa]]));
    }

    #[test]
    fn smaller_budgets() {
        // Four: still not enough for a 1-byte op, enough for a 2-byte one.
        assert_eq!(
            prefixable(&[&[0xfa]], 4),
            [0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]
        );
        assert_eq!(
            prefixable(&[&[0x0f, 0x31]], 4),
            [0x3e, 0x3e, 0x3e, 0x3e, 0x0f, 0x31]
        );
        assert_eq!(
            prefixable(&[&[0x0f, 0x31]], SAFE_PREFIXES),
            [0x0f, 0x31, 0x0f, 0x1f, 0x40, 0x00]
        );
        // None: nothing is ever widened.
        assert_eq!(
            prefixable(&[&[0xb8, 0xc2, 0xc2, 0xc2, 0x00]], 0),
            [0xb8, 0xc2, 0xc2, 0xc2, 0x00, 0x90]
        );
    }

    /// Every split of up to a site's bytes into one to three instructions
    /// carrying 0..=5 prefixes of their own, under every budget up to one
    /// past the full site: a full-site form adds DS prefixes only in front
    /// of instructions it keeps within the budget, and fills the
    /// site exactly; otherwise the code is written as given, followed by
    /// one NOP. Under the full-site budget every code shorter than a site
    /// fills it.
    #[test]
    fn full_site_forms_keep_the_budget() {
        fn insn(len: usize, own: usize) -> std::vec::Vec<u8> {
            // `own` operand-size prefixes, then `nop` or `nopl` with
            // ModRM/displacement filler.
            let mut v = std::vec![0x66; own];
            if len - own == 1 {
                v.push(0x90);
            } else {
                v.extend([0x0f, 0x1f]);
                v.resize(len, 0x00);
            }
            v
        }
        let mut shapes = std::vec::Vec::new();
        for own in 0..SITE_LEN {
            for len in own + 1..=SITE_LEN {
                shapes.push(insn(len, own));
            }
        }
        // Every sequence of one to three shapes that fits a site.
        let mut codes: std::vec::Vec<std::vec::Vec<&[u8]>> = std::vec::Vec::new();
        let mut stack: std::vec::Vec<std::vec::Vec<&[u8]>> = std::vec![std::vec::Vec::new()];
        while let Some(code) = stack.pop() {
            let used: usize = code.iter().map(|i| i.len()).sum();
            for shape in &shapes {
                if used + shape.len() <= SITE_LEN && code.len() < 3 {
                    let mut longer = code.clone();
                    longer.push(&shape[..]);
                    stack.push(longer.clone());
                    codes.push(longer);
                }
            }
        }
        let mut last_full = 0;
        for budget in 0..=FULL_SITE_PREFIXES + 1 {
            let (mut full, mut nop) = (0, 0);
            for insns in &codes {
                let total: usize = insns.iter().map(|i| i.len()).sum();
                let code = InlineBytes::prefixable(insns);
                let spare: usize = insns
                    .iter()
                    .map(|i| usize::from(budget).saturating_sub(prefix_count(i)))
                    .sum();
                let out = inline_site(&code, budget);
                if let Some(form) = full_site(&code, budget) {
                    assert_eq!(out, form);
                    assert!(total < SITE_LEN && spare >= SITE_LEN - total);
                    // Walk the instructions: DS prefixes, then the
                    // instruction unchanged, within the budget.
                    let mut at = 0;
                    for i in insns {
                        let mut added = 0;
                        while out[at] == PAD_PREFIX {
                            added += 1;
                            at += 1;
                        }
                        assert_eq!(&out[at..at + i.len()], *i, "{insns:02x?}");
                        // None added to one already at or over it.
                        assert!(
                            added == 0 || added + prefix_count(i) <= usize::from(budget),
                            "{budget} {insns:02x?}"
                        );
                        at += i.len();
                    }
                    assert_eq!(at, SITE_LEN);
                    full += 1;
                } else {
                    assert!(
                        total == SITE_LEN || spare < SITE_LEN - total,
                        "{budget} {insns:02x?}"
                    );
                    // Under the full-site budget only code that already
                    // fills the site keeps its bytes as they are.
                    assert!(
                        budget < FULL_SITE_PREFIXES || total == SITE_LEN,
                        "{budget} {insns:02x?}"
                    );
                    assert_eq!(&out[..total], code.as_slice());
                    assert_eq!(&out[total..], NOPS[SITE_LEN - total]);
                    nop += 1;
                }
            }
            // Both outcomes are well exercised; a larger budget fills more
            // sites.
            match budget {
                0 => assert_eq!(full, 0),
                _ => assert!(full > 40 && nop > 40, "{budget}: {full} {nop}"),
            }
            assert!(full >= last_full, "{budget}: {full} < {last_full}");
            last_full = full;
        }
    }

    #[test]
    fn prefixable_accepts_ordinary_instructions() {
        // push (%rax) (ff /6), invlpg (%rax) (0f 01 /7, memory form),
        // pause (f3 90), a DS-prefixed store, cpuid.
        let _ = InlineBytes::prefixable(&[&[0xff, 0x30], &[0x0f, 0x01, 0x38]]);
        let _ = InlineBytes::prefixable(&[&[0xf3, 0x90], &[0x3e, 0x48, 0x89, 0x16]]);
        let _ = InlineBytes::prefixable(&[&[0x0f, 0xa2]]);
    }

    #[test]
    fn prefixable_refuses_what_prefixes_would_change() {
        let refused: [&[u8]; 16] = [
            &[0xe8, 0, 0, 0, 0],       // call rel32
            &[0xeb, 0x00],             // jmp rel8
            &[0x74, 0x00],             // je rel8
            &[0x0f, 0x85, 0, 0, 0, 0], // jne rel32
            &[0xc3],                   // ret
            &[0xff, 0xd0],             // call *%rax
            &[0x41, 0xff, 0xe3],       // jmp *%r11
            &[0xcc],                   // int3
            &[0x0f, 0x05],             // syscall
            &[0x0f, 0x0b],             // ud2
            &[0x0f, 0x01, 0xc1],       // vmcall
            &[0x0f, 0x01, 0xd9],       // vmmcall
            &[0x65, 0x8b, 0x00],       // mov %gs:(%rax), %eax
            &[0xc5, 0xf8, 0x77],       // vzeroupper (VEX)
            &[0x3e],                   // a prefix without an opcode
            &[],                       // nothing
        ];
        for insn in refused {
            assert!(why_not_prefixable(insn).is_some(), "accepted {insn:02x?}");
        }
    }

    #[test]
    #[should_panic(expected = "control transfer")]
    fn prefixable_refuses_a_call() {
        let _ = InlineBytes::prefixable(&[&[0x90], &[0xe8, 0, 0, 0, 0]]);
    }

    #[test]
    #[should_panic(expected = "longer than a site")]
    fn prefixable_too_long() {
        let _ = InlineBytes::prefixable(&[&[0x90; 4], &[0x90; 3]]);
    }

    #[test]
    fn direct_call_rel32_is_from_the_end_of_the_call() {
        for budget in BUDGETS {
            // Forward: target 0x100 past the call's end.
            let b = site(SITE, Action::Call(SITE + 5 + 0x100), budget).unwrap();
            assert_eq!(b, [0xe8, 0x00, 0x01, 0x00, 0x00, 0x90]);
            // Backward: target before the site.
            let b = site(SITE, Action::Call(SITE - 0x20), budget).unwrap();
            assert_eq!(&b[..1], &[0xe8]);
            assert_eq!(i32::from_le_bytes(b[1..5].try_into().unwrap()), -0x25);
            assert_eq!(b[5], 0x90);
        }
    }

    #[test]
    fn direct_call_range_limits() {
        let site = |target| site(SITE, Action::Call(target), SAFE_PREFIXES);
        let next = SITE + 5;
        // Exactly at the limits of a rel32.
        let far_fwd = next.wrapping_add(i32::MAX as u64);
        let b = site(far_fwd).unwrap();
        assert_eq!(i32::from_le_bytes(b[1..5].try_into().unwrap()), i32::MAX);
        let far_back = next - (1u64 << 31);
        let b = site(far_back).unwrap();
        assert_eq!(i32::from_le_bytes(b[1..5].try_into().unwrap()), i32::MIN);
        // One past either limit: left alone.
        assert_eq!(site(far_fwd.wrapping_add(1)), None);
        assert_eq!(site(far_back - 1), None);
        // A user-space target from a kernel site is far out of range.
        assert_eq!(site(0x40_0000), None);
        // Inline bytes never are.
        assert!(super::site(SITE, inline(&[0xfa]), SAFE_PREFIXES).is_some());
    }

    #[test]
    fn indirect_site_bytes() {
        let slot = SITE + 0x2000;
        let b = indirect(SITE, slot);
        assert_eq!(&b[..2], &[0xff, 0x15]);
        assert_eq!(
            i32::from_le_bytes(b[2..].try_into().unwrap()) as i64,
            0x2000 - 6
        );
        // A slot out of reach gives bytes that match no site. (Addresses
        // wrap: the low 2 GiB are within reach of the top 2 GiB.)
        assert_eq!(indirect(SITE, SITE - (1 << 40)), [0xff, 0x15, 0, 0, 0, 0]);
        let wrapped = indirect(SITE, 0x1000);
        assert_eq!(
            SITE.wrapping_add(6)
                .wrapping_add(i32::from_le_bytes(wrapped[2..].try_into().unwrap()) as i64 as u64),
            0x1000
        );
    }
}
