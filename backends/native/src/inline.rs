//! The native instructions pvops patches into call sites in place of a
//! call (`pvops_core::patch`), as Linux's `native_patch` does. Used when
//! the table is made with `PvOps::of_inline::<Native>`; an entry another
//! backend replaces afterwards loses its bytes.

use crate::Native;
use pvops_core::patch::{InlineOps, InlineSet, Op};

// SAFETY: each string is the instruction this backend's op executes, with
// the site's C registers: `save_flags` reads RFLAGS into rax like
// `rflags::read_raw`; `restore_flags` is Linux's `push %rdi; popf`, which
// sets IF as `Native::restore_flags` does and otherwise restores the other
// flags `save_flags` saved (the wrapper clears TF, DF, NT and IOPL);
// `cli`/`sti` are `interrupts::disable`/`enable`; the CR reads are the
// `mov` the asm in mmu.rs emits; `set_entry` is its volatile store of rdx
// at rsi (the level in rdi is ignored there too); `invlpg (%rdi)` is
// `tlb::flush` (both in their full-site encodings, checked against
// objdump). None touches rsp at its end, DF, or rip-relative memory.
unsafe impl InlineOps for Native {
    const INLINE: InlineSet = InlineSet::NONE
        // pushf; pop %rax
        .with(Op::SaveFlags, &[0x9c, 0x58])
        // push %rdi; popf
        .with(Op::RestoreFlags, &[0x57, 0x9d])
        // cli
        .with(Op::Disable, &[0xfa])
        // sti
        .with(Op::Enable, &[0xfb])
        // mov %cr2, %rax
        .with(Op::ReadCr2, &[0x0f, 0x20, 0xd0])
        // mov %cr3, %rax
        .with(Op::ReadCr3, &[0x0f, 0x20, 0xd8])
        // ds mov %rdx, 0x0(%rsi,%riz,1): the same store, encoded to fill
        // the whole 6-byte site (SIB + disp8 + a redundant DS prefix), so
        // no padding NOP follows it.
        .with(Op::SetEntry, &[0x3e, 0x48, 0x89, 0x54, 0x26, 0x00])
        // ds invlpg 0x0(%rdi,%riz,1): likewise, 6 bytes.
        .with(Op::FlushTlbSingle, &[0x3e, 0x0f, 0x01, 0x7c, 0x27, 0x00]);
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
