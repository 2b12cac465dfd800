//! The bytes a site is rewritten with: pure functions of the site's
//! address and what it should do, so they are tested on fake addresses.

use super::{InlineBytes, SITE_LEN};

/// Opcode and ModRM of `call qword ptr [rip + rel32]`.
const CALL_INDIRECT: [u8; 2] = [0xff, 0x15];
/// Opcode of `call rel32`.
const CALL_REL32: u8 = 0xe8;

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

/// The bytes that make the site at `site` do `action`, or `None` when a
/// direct call cannot reach its target (the site then stays indirect).
pub(crate) fn site(site: u64, action: Action) -> Option<[u8; SITE_LEN]> {
    let mut b = [0u8; SITE_LEN];
    let used = match action {
        Action::Inline(code) => {
            let code = code.as_slice();
            b[..code.len()].copy_from_slice(code);
            code.len()
        }
        Action::Call(target) => {
            let rel = rel32(site + 5, target)?;
            b[0] = CALL_REL32;
            b[1..5].copy_from_slice(&rel.to_le_bytes());
            5
        }
    };
    // One NOP for the rest, so the padding is a single instruction.
    b[used..].copy_from_slice(NOPS[SITE_LEN - used]);
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: u64 = 0xffff_ffff_8010_0000;

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
        // cli
        assert_eq!(
            site(SITE, inline(&[0xfa])),
            Some([0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00])
        );
        // pushf; pop %rax
        assert_eq!(
            site(SITE, inline(&[0x9c, 0x58])),
            Some([0x9c, 0x58, 0x0f, 0x1f, 0x40, 0x00])
        );
        // mov %cr2, %rax
        assert_eq!(
            site(SITE, inline(&[0x0f, 0x20, 0xd0])),
            Some([0x0f, 0x20, 0xd0, 0x0f, 0x1f, 0x00])
        );
        // five bytes: a one-byte nop
        assert_eq!(
            site(SITE, inline(&[0xb8, 1, 2, 3, 4])),
            Some([0xb8, 1, 2, 3, 4, 0x90])
        );
        // six bytes: no padding; none: one six-byte nop
        assert_eq!(
            site(SITE, inline(&[1, 2, 3, 4, 5, 6])),
            Some([1, 2, 3, 4, 5, 6])
        );
        assert_eq!(
            site(SITE, inline(&[])),
            Some([0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00])
        );
        // Inline bytes do not depend on where the site is.
        assert_eq!(site(0x1000, inline(&[0xfb])), site(SITE, inline(&[0xfb])));
    }

    #[test]
    fn direct_call_rel32_is_from_the_end_of_the_call() {
        // Forward: target 0x100 past the call's end.
        let b = site(SITE, Action::Call(SITE + 5 + 0x100)).unwrap();
        assert_eq!(b, [0xe8, 0x00, 0x01, 0x00, 0x00, 0x90]);
        // Backward: target before the site.
        let b = site(SITE, Action::Call(SITE - 0x20)).unwrap();
        assert_eq!(&b[..1], &[0xe8]);
        assert_eq!(i32::from_le_bytes(b[1..5].try_into().unwrap()), -0x25);
        assert_eq!(b[5], 0x90);
    }

    #[test]
    fn direct_call_range_limits() {
        let next = SITE + 5;
        // Exactly at the limits of a rel32.
        let far_fwd = next.wrapping_add(i32::MAX as u64);
        let b = site(SITE, Action::Call(far_fwd)).unwrap();
        assert_eq!(i32::from_le_bytes(b[1..5].try_into().unwrap()), i32::MAX);
        let far_back = next - (1u64 << 31);
        let b = site(SITE, Action::Call(far_back)).unwrap();
        assert_eq!(i32::from_le_bytes(b[1..5].try_into().unwrap()), i32::MIN);
        // One past either limit: left alone.
        assert_eq!(site(SITE, Action::Call(far_fwd.wrapping_add(1))), None);
        assert_eq!(site(SITE, Action::Call(far_back - 1)), None);
        // A user-space target from a kernel site is far out of range.
        assert_eq!(site(SITE, Action::Call(0x40_0000)), None);
        // Inline bytes never are.
        assert!(site(SITE, inline(&[0xfa])).is_some());
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
