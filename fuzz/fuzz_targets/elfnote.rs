//! The ELF-note layout (`pvops_core::abi::elfnote`): arbitrary bytes as a
//! note segment and as an ELF64 image, and a note the fuzzer describes,
//! laid out by an independent encoder here and parsed back.
//!
//! Asserts: every name and descriptor returned lies inside the input, at
//! increasing offsets; the walk ends (at most one item per 12 bytes, plus
//! one error) and yields nothing after an error; every segment returned
//! lies inside the image; every PVH entry found comes from a well-formed
//! Xen PHYS32_ENTRY note; and an encoded note parses back to exactly what
//! was encoded, at either alignment.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pvops_core::abi::elfnote::{Elf64, Notes, XEN_ELFNOTE_PHYS32_ENTRY, XEN_NOTE_NAME};

fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let o = outer.as_ptr() as usize;
    let i = inner.as_ptr() as usize;
    i >= o && i + inner.len() <= o + outer.len()
}

fn walk(seg: &[u8], align: u64) {
    let Ok(notes) = Notes::new(seg, align) else {
        return;
    };
    let mut last = None;
    let mut count = 0usize;
    let mut errored = false;
    for item in notes {
        assert!(!errored, "an item after an error");
        count += 1;
        assert!(count <= seg.len() / 12 + 1, "the walk does not end");
        match item {
            Ok(n) => {
                assert!(inside(seg, n.name) && inside(seg, n.desc));
                assert!(last.is_none_or(|l| n.offset > l), "offsets go back");
                last = Some(n.offset);
                if let Some(e) = n.phys32_entry() {
                    assert_eq!(n.name, XEN_NOTE_NAME);
                    assert_eq!(n.kind, XEN_ELFNOTE_PHYS32_ENTRY);
                    assert_eq!(n.numeric(), Some(u64::from(e)));
                }
            }
            Err(_) => errored = true,
        }
    }
}

fn encode(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
    v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    v.extend_from_slice(&kind.to_le_bytes());
    v.extend_from_slice(name);
    v.push(0);
    v.resize(v.len().next_multiple_of(align), 0);
    v.extend_from_slice(desc);
    v.resize(v.len().next_multiple_of(align), 0);
    v
}

/// An ELF64 header and `n` program headers whose fields come from `words`
/// (types mostly PT_NOTE/PT_LOAD, offsets mostly inside the file), then
/// `payload`: images that get past the header check.
fn image(words: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut w = pvops_fuzz::Bytes(words);
    let n = usize::from(w.u8() % 5);
    let mut v = vec![0u8; 64];
    v[..6].copy_from_slice(b"\x7fELF\x02\x01");
    v[24..32].copy_from_slice(&w.u64().to_le_bytes());
    v[32..40].copy_from_slice(&64u64.to_le_bytes());
    v[54..56].copy_from_slice(&56u16.to_le_bytes());
    v[56..58].copy_from_slice(&(n as u16).to_le_bytes());
    let total = (64 + 56 * n + payload.len()) as u64;
    for _ in 0..n {
        let kind: u32 = match w.u8() % 4 {
            0 | 1 => 4,
            2 => 1,
            _ => w.u32(),
        };
        let off = u64::from(w.u32()) % (total + 8);
        let len = u64::from(w.u32()) % (total + 8);
        let align = [0u64, 1, 4, 8, 16][usize::from(w.u8() % 5)];
        for x in [
            u64::from(kind) | u64::from(w.u32()) << 32,
            off,
            w.u64(),
            w.u64(),
            len,
            len,
            align,
        ] {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.extend_from_slice(payload);
    v
}

fn check_image(bytes: &[u8]) {
    if let Ok(elf) = Elf64::parse(bytes) {
        for ph in elf.program_headers() {
            if let Some(seg) = elf.segment(&ph) {
                assert!(inside(bytes, seg));
            }
        }
        let notes = elf.notes().count();
        let phnum = elf.program_headers().count();
        assert!(notes <= phnum * (bytes.len() / 12 + 2));
        for n in elf.notes().flatten() {
            assert!(inside(bytes, n.name) && inside(bytes, n.desc));
        }
        let entries = elf.phys32_entries().count();
        assert!(entries <= notes);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // As a note segment, at the alignments a loader accepts (and not).
    walk(rest, u64::from(sel % 10));
    // As an image, raw and with a header that parses.
    check_image(rest);
    let split = rest.len().min(64);
    check_image(&image(&rest[..split], &rest[split..]));
    // Round trip of a described note.
    if rest.len() >= 5 {
        let name_len = usize::from(rest[0] % 16).min(rest.len() - 5);
        let kind = u32::from(rest[1]) | u32::from(rest[2]) << 8;
        let name: Vec<u8> = rest[5..5 + name_len].iter().map(|b| b | 1).collect();
        let desc = &rest[5 + name_len..];
        let align = if rest[3] & 1 == 0 { 4 } else { 8 };
        let seg = encode(&name, kind, desc, align);
        let got: Vec<_> = Notes::new(&seg, align as u64).unwrap().collect();
        assert_eq!(got.len(), 1, "{got:?}");
        let n = got[0].unwrap();
        assert_eq!(
            (n.name, n.kind, n.desc, n.offset),
            (&name[..], kind, desc, 0)
        );
    }
});
