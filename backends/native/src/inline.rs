//! The native instructions pvops patches into call sites in place of a
//! call (`pvops_core::patch`), as Linux's `native_patch` does. Used when
//! the table is made with `PvOps::of_inline::<Native>`; an entry another
//! backend replaces afterwards loses its bytes.
//!
//! Most ops are declared instruction by instruction, so that the patcher
//! can widen them with redundant DS prefixes into a full-site form (no
//! padding NOP: see `pvops_core::patch`, "Full-site forms"). The 1-byte
//! `cli` and `sti` need five prefixes: on CPUs whose prefix budget is the
//! full site (`pvops_core::patch::budget`) they become one instruction,
//! elsewhere (a budget of three) their sites keep one NOP. The two memory
//! ops are given in a full-site form of their own (a longer SIB/disp8
//! encoding, which prefixes cannot make).

use crate::Native;
use pvops_core::patch::{InlineOps, InlineSet, Op};

// SAFETY: each declaration is the instruction(s) this backend's op
// executes, with the site's C registers: `save_flags` reads RFLAGS into
// rax like `rflags::read_raw`; `restore_flags` is Linux's `push %rdi;
// popf`, which sets IF as `Native::restore_flags` does and otherwise
// restores the other flags `save_flags` saved (the wrapper clears TF, DF,
// NT and IOPL); `cli`/`sti` are `interrupts::disable`/`enable`; the CR
// reads are the `mov` the asm in mmu.rs emits; `set_entry` is its volatile
// store of rdx at rsi (the level in rdi is ignored there too); `invlpg
// (%rdi)` is `tlb::flush` (both in their full-site encodings, checked
// against objdump). Every slice given to `with_prefixable` is exactly one
// legacy-encoded, non-branch instruction, which DS prefixes leave
// unchanged in 64-bit mode (the push/pop stack accesses always use SS).
// None touches rsp at its end, DF, or rip-relative memory.
unsafe impl InlineOps for Native {
    const INLINE: InlineSet = InlineSet::NONE
        // pushf; pop %rax (site: ds ds pushf; ds ds pop %rax)
        .with_prefixable(Op::SaveFlags, &[&[0x9c], &[0x58]])
        // push %rdi; popf (site: ds ds push %rdi; ds ds popf)
        .with_prefixable(Op::RestoreFlags, &[&[0x57], &[0x9d]])
        // cli (site: ds ds ds ds ds cli, or under a budget of three
        // cli; nopl 0x0(%rax,%rax,1))
        .with_prefixable(Op::Disable, &[&[0xfa]])
        // sti (likewise); its interrupt shadow covers the instruction
        // after the site, or the NOP where one pads it.
        .with_prefixable(Op::Enable, &[&[0xfb]])
        // mov %cr2, %rax (site: ds ds ds mov %cr2, %rax)
        .with_prefixable(Op::ReadCr2, &[&[0x0f, 0x20, 0xd0]])
        // mov %cr3, %rax (site: ds ds ds mov %cr3, %rax)
        .with_prefixable(Op::ReadCr3, &[&[0x0f, 0x20, 0xd8]])
        // ds mov %rdx, 0x0(%rsi,%riz,1): the same store, encoded to fill
        // the whole 6-byte site (SIB + disp8 + a redundant DS prefix, two
        // prefixes with REX.W), so no padding NOP follows it.
        .with(Op::SetEntry, &[0x3e, 0x48, 0x89, 0x54, 0x26, 0x00])
        // ds invlpg 0x0(%rdi,%riz,1): likewise, 6 bytes.
        .with(Op::FlushTlbSingle, &[0x3e, 0x0f, 0x01, 0x7c, 0x27, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::patch::{FULL_SITE_PREFIXES, SAFE_PREFIXES};

    /// Every op but the clock has bytes, and they fit a site.
    #[test]
    fn native_bytes() {
        let s = <Native as InlineOps>::INLINE;
        let b = |op| s.get(op).map(|b| b.as_slice());
        assert_eq!(b(Op::Disable), Some(&[0xfa][..]));
        assert_eq!(b(Op::Enable), Some(&[0xfb][..]));
        assert_eq!(b(Op::SaveFlags), Some(&[0x9c, 0x58][..]));
        assert_eq!(b(Op::SchedClock), None);
        for op in Op::ALL {
            assert_eq!(s.get(op).is_some(), op != Op::SchedClock, "{op:?}");
        }
    }

    /// The exact bytes each site gets under either budget (checked against
    /// objdump): one instruction per op where the prefixes can fill the
    /// site, the op's own two where it has two; `cli`/`sti` are one
    /// instruction under the full-site budget, plus one NOP under three.
    #[test]
    fn native_site_forms() {
        let s = <Native as InlineOps>::INLINE;
        for budget in [SAFE_PREFIXES, FULL_SITE_PREFIXES] {
            let site = |op| s.get(op).unwrap().site_bytes(budget);
            // ds ds pushf; ds ds pop %rax
            assert_eq!(site(Op::SaveFlags), [0x3e, 0x3e, 0x9c, 0x3e, 0x3e, 0x58]);
            // ds ds push %rdi; ds ds popf
            assert_eq!(site(Op::RestoreFlags), [0x3e, 0x3e, 0x57, 0x3e, 0x3e, 0x9d]);
            // ds ds ds mov %cr2 / %cr3, %rax
            assert_eq!(site(Op::ReadCr2), [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd0]);
            assert_eq!(site(Op::ReadCr3), [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd8]);
            // As declared.
            assert_eq!(site(Op::SetEntry), [0x3e, 0x48, 0x89, 0x54, 0x26, 0x00]);
            assert_eq!(
                site(Op::FlushTlbSingle),
                [0x3e, 0x0f, 0x01, 0x7c, 0x27, 0x00]
            );
        }
        let cli = s.get(Op::Disable).unwrap();
        let sti = s.get(Op::Enable).unwrap();
        // cli / sti; nopl 0x0(%rax,%rax,1)
        assert_eq!(
            cli.site_bytes(SAFE_PREFIXES),
            [0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]
        );
        assert_eq!(
            sti.site_bytes(SAFE_PREFIXES),
            [0xfb, 0x0f, 0x1f, 0x44, 0x00, 0x00]
        );
        // ds ds ds ds ds cli / sti
        assert_eq!(
            cli.site_bytes(FULL_SITE_PREFIXES),
            [0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0xfa]
        );
        assert_eq!(
            sti.site_bytes(FULL_SITE_PREFIXES),
            [0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0xfb]
        );
    }
}
