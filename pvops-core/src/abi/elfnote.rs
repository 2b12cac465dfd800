//! ELF notes, and just enough of ELF64 to find them: how a PVH kernel tells
//! its loader (QEMU's `-kernel`, Xen) where to enter it.
//!
//! A loader looks for `PT_NOTE` program headers, walks the notes in each,
//! and takes Xen's `XEN_ELFNOTE_PHYS32_ENTRY` (name `"Xen"`, type 18,
//! a numeric descriptor of 4 or 8 bytes: the 32-bit physical entry point).
//! Each note is
//!
//! | field | size |
//! |---|---|
//! | `n_namesz` | `u32` (name length including its NUL) |
//! | `n_descsz` | `u32` |
//! | `n_type` | `u32` |
//! | name | `n_namesz` bytes |
//! | descriptor | `n_descsz` bytes, from the next aligned offset |
//!
//! and the next note at the next aligned offset, with 4-byte alignment (8
//! when the segment's `p_align` is 8). Everything
//! here works on a byte slice with every length and offset checked, so a
//! malformed image (or arbitrary bytes) gives an error, never a panic or a
//! read outside the slice; iteration always ends.

use core::fmt;

/// Xen's note name (`"Xen"`, NUL not included).
pub const XEN_NOTE_NAME: &[u8] = b"Xen";
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the physical 32-bit PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `XEN_ELFNOTE_ENTRY`: the classic PV entry's virtual address.
pub const XEN_ELFNOTE_ENTRY: u32 = 1;
/// `XEN_ELFNOTE_VIRT_BASE`: where Xen maps the PV image's lowest address.
pub const XEN_ELFNOTE_VIRT_BASE: u32 = 3;
/// `XEN_ELFNOTE_PADDR_OFFSET`.
pub const XEN_ELFNOTE_PADDR_OFFSET: u32 = 4;
/// `XEN_ELFNOTE_XEN_VERSION`: `"xen-3.0"` for every PV kernel.
pub const XEN_ELFNOTE_XEN_VERSION: u32 = 5;
/// `XEN_ELFNOTE_GUEST_OS`.
pub const XEN_ELFNOTE_GUEST_OS: u32 = 6;
/// `XEN_ELFNOTE_LOADER`: `"generic"` (Xen loads no other non-Linux PV image).
pub const XEN_ELFNOTE_LOADER: u32 = 8;
/// `XEN_ELFNOTE_FEATURES`: `|`-separated feature names.
pub const XEN_ELFNOTE_FEATURES: u32 = 10;

/// `PT_LOAD`.
pub const PT_LOAD: u32 = 1;
/// `PT_NOTE`.
pub const PT_NOTE: u32 = 4;
/// `PF_X`: the segment is executable.
pub const PF_X: u32 = 1;

const NOTE_HEADER: usize = 12;
const ELF64_HEADER: usize = 64;
const ELF64_PHDR: usize = 56;

/// What is wrong with an ELF image or a note segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF64 little-endian file (magic, class or data byte).
    NotElf64,
    /// The program header table is not inside the file, or its entries
    /// are smaller than an ELF64 program header.
    BadProgramHeaders,
    /// A note segment's alignment is neither 4 nor 8.
    BadNoteAlign(u64),
    /// A note header at this offset is cut short.
    TruncatedNote(usize),
    /// The name or descriptor of the note at this offset runs past the end.
    NoteOutOfBounds(usize),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf64 => write!(f, "not a little-endian ELF64 image"),
            ElfError::BadProgramHeaders => write!(f, "program headers out of bounds"),
            ElfError::BadNoteAlign(a) => write!(f, "note segment alignment {a} is not 4 or 8"),
            ElfError::TruncatedNote(o) => write!(f, "note header at offset {o:#x} is cut short"),
            ElfError::NoteOutOfBounds(o) => {
                write!(f, "note at offset {o:#x} runs past its segment")
            }
        }
    }
}

impl core::error::Error for ElfError {}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(off..off.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(off..off.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(off..off.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// One note.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Note<'a> {
    /// The name, without its terminating NUL.
    pub name: &'a [u8],
    /// `n_type`.
    pub kind: u32,
    /// The descriptor (unpadded).
    pub desc: &'a [u8],
    /// Where the note's header starts in the slice walked.
    pub offset: usize,
}

impl Note<'_> {
    /// The descriptor as a little-endian number when it is 4 or 8 bytes
    /// long (Xen's numeric notes), else `None`.
    pub fn numeric(&self) -> Option<u64> {
        match self.desc.len() {
            4 => u32_at(self.desc, 0).map(u64::from),
            8 => u64_at(self.desc, 0),
            _ => None,
        }
    }

    /// The PVH entry point, if this is Xen's `PHYS32_ENTRY` note with a
    /// numeric descriptor that fits 32 bits.
    pub fn phys32_entry(&self) -> Option<u32> {
        if self.name != XEN_NOTE_NAME || self.kind != XEN_ELFNOTE_PHYS32_ENTRY {
            return None;
        }
        self.numeric().and_then(|v| u32::try_from(v).ok())
    }
}

/// The notes of one note segment (or section), in order. After an error
/// the iterator yields nothing more.
#[derive(Debug, Clone)]
pub struct Notes<'a> {
    bytes: &'a [u8],
    pos: usize,
    align: usize,
    done: bool,
}

impl<'a> Notes<'a> {
    /// Walks `bytes`, a note segment whose `p_align` is `align` (0, 1 and
    /// 4 mean 4-byte padding, 8 means 8; anything else is an error).
    pub fn new(bytes: &'a [u8], align: u64) -> Result<Self, ElfError> {
        let align = match align {
            0 | 1 | 4 => 4,
            8 => 8,
            a => return Err(ElfError::BadNoteAlign(a)),
        };
        Ok(Self {
            bytes,
            pos: 0,
            align,
            done: false,
        })
    }

    fn pad(&self, n: usize) -> Option<usize> {
        n.checked_next_multiple_of(self.align)
    }

    fn next_note(&mut self) -> Result<Option<Note<'a>>, ElfError> {
        let start = self.pos;
        let rest = self.bytes.len() - start;
        if rest == 0 {
            return Ok(None);
        }
        // Trailing padding shorter than a header ends the segment.
        if rest < NOTE_HEADER {
            return if self.bytes[start..].iter().all(|b| *b == 0) {
                Ok(None)
            } else {
                Err(ElfError::TruncatedNote(start))
            };
        }
        let oob = ElfError::NoteOutOfBounds(start);
        let namesz = u32_at(self.bytes, start).ok_or(oob)? as usize;
        let descsz = u32_at(self.bytes, start + 4).ok_or(oob)? as usize;
        let kind = u32_at(self.bytes, start + 8).ok_or(oob)?;
        let name_at = start + NOTE_HEADER;
        let name_end = name_at.checked_add(namesz).ok_or(oob)?;
        // Name and descriptor start at aligned offsets of the segment.
        let desc_at = self.pad(name_end).ok_or(oob)?;
        let desc_end = desc_at.checked_add(descsz).ok_or(oob)?;
        if name_end > self.bytes.len() || desc_end > self.bytes.len() {
            return Err(oob);
        }
        let next = self.pad(desc_end).ok_or(oob)?;
        // The last note's padding may be cut off by the end of the segment.
        self.pos = next.min(self.bytes.len());
        let mut name = &self.bytes[name_at..name_end];
        if let [head @ .., 0] = name {
            name = head;
        }
        Ok(Some(Note {
            name,
            kind,
            desc: &self.bytes[desc_at..desc_end],
            offset: start,
        }))
    }
}

impl<'a> Iterator for Notes<'a> {
    type Item = Result<Note<'a>, ElfError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_note() {
            Ok(Some(n)) => Some(Ok(n)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// One ELF64 program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProgramHeader {
    /// `p_type` ([`PT_LOAD`], [`PT_NOTE`], ...).
    pub kind: u32,
    /// `p_flags` ([`PF_X`], ...).
    pub flags: u32,
    /// `p_offset`: where the segment's bytes are in the file.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`: the physical load address.
    pub paddr: u64,
    /// `p_filesz`.
    pub filesz: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_align`.
    pub align: u64,
}

impl ProgramHeader {
    /// Whether physical address `addr` lies in the bytes this segment
    /// loads from the file.
    pub fn contains_paddr(&self, addr: u64) -> bool {
        addr >= self.paddr && addr - self.paddr < self.filesz
    }
}

/// A little-endian ELF64 image in memory.
#[derive(Debug, Clone, Copy)]
pub struct Elf64<'a> {
    bytes: &'a [u8],
    /// `e_entry`.
    pub entry: u64,
    phoff: usize,
    phentsize: usize,
    phnum: usize,
}

impl<'a> Elf64<'a> {
    /// Checks the header and that the program header table lies inside
    /// `bytes`.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, ElfError> {
        if bytes.len() < ELF64_HEADER || bytes[..4] != *b"\x7fELF" || bytes[4] != 2 || bytes[5] != 1
        {
            return Err(ElfError::NotElf64);
        }
        let bad = ElfError::BadProgramHeaders;
        let entry = u64_at(bytes, 24).ok_or(ElfError::NotElf64)?;
        let phoff = usize::try_from(u64_at(bytes, 32).ok_or(bad)?).map_err(|_| bad)?;
        let phentsize = usize::from(u16_at(bytes, 54).ok_or(bad)?);
        let phnum = usize::from(u16_at(bytes, 56).ok_or(bad)?);
        if phnum > 0 && phentsize < ELF64_PHDR {
            return Err(bad);
        }
        let table = phentsize.checked_mul(phnum).ok_or(bad)?;
        if phoff.checked_add(table).is_none_or(|end| end > bytes.len()) {
            return Err(bad);
        }
        Ok(Self {
            bytes,
            entry,
            phoff,
            phentsize,
            phnum,
        })
    }

    /// The program headers, in order.
    pub fn program_headers(&self) -> impl Iterator<Item = ProgramHeader> + '_ {
        (0..self.phnum).filter_map(move |i| {
            // In bounds: `parse` checked the whole table.
            let at = self.phoff + i * self.phentsize;
            let b = self.bytes;
            Some(ProgramHeader {
                kind: u32_at(b, at)?,
                flags: u32_at(b, at + 4)?,
                offset: u64_at(b, at + 8)?,
                vaddr: u64_at(b, at + 16)?,
                paddr: u64_at(b, at + 24)?,
                filesz: u64_at(b, at + 32)?,
                memsz: u64_at(b, at + 40)?,
                align: u64_at(b, at + 48)?,
            })
        })
    }

    /// The file bytes of a segment, or `None` when they are not all inside
    /// the image.
    pub fn segment(&self, ph: &ProgramHeader) -> Option<&'a [u8]> {
        let start = usize::try_from(ph.offset).ok()?;
        let len = usize::try_from(ph.filesz).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }

    /// Every note of every `PT_NOTE` segment, in order; a segment outside
    /// the file or a malformed note is an error item (the walk of that
    /// segment stops there; later segments are still walked).
    pub fn notes(&self) -> impl Iterator<Item = Result<Note<'a>, ElfError>> + '_ {
        self.program_headers()
            .filter(|ph| ph.kind == PT_NOTE)
            .flat_map(move |ph| {
                let walk = self
                    .segment(&ph)
                    .ok_or(ElfError::BadProgramHeaders)
                    .and_then(|seg| Notes::new(seg, ph.align));
                let (notes, err) = match walk {
                    Ok(n) => (Some(n), None),
                    Err(e) => (None, Some(Err(e))),
                };
                err.into_iter().chain(notes.into_iter().flatten())
            })
    }

    /// Every PVH entry point the image's notes name (a loader uses the
    /// first; a well-formed PVH image has exactly one).
    pub fn phys32_entries(&self) -> impl Iterator<Item = u32> + '_ {
        self.notes()
            .filter_map(Result::ok)
            .filter_map(|n| n.phys32_entry())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn note(name: &[u8], kind: u32, desc: &[u8], align: usize) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32 + 1).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(name);
        v.push(0);
        while v.len() % align != 0 {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while v.len() % align != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn walks_notes_and_finds_the_pvh_entry() {
        let mut seg = note(b"GNU", 3, &[1, 2, 3, 4, 5], 4);
        seg.extend(note(b"Xen", 18, &0x10_0000u32.to_le_bytes(), 4));
        let notes: Vec<_> = Notes::new(&seg, 4).unwrap().collect();
        assert_eq!(notes.len(), 2);
        let gnu = notes[0].unwrap();
        assert_eq!(
            (gnu.name, gnu.kind, gnu.desc),
            (&b"GNU"[..], 3, &[1, 2, 3, 4, 5][..])
        );
        assert_eq!(gnu.phys32_entry(), None);
        let xen = notes[1].unwrap();
        assert_eq!(xen.offset, 24);
        assert_eq!(xen.phys32_entry(), Some(0x10_0000));
        // 8-byte descriptors are numeric too; values past 4 GiB are not an
        // entry a 32-bit start can use.
        let n8 = note(b"Xen", 18, &0x20_0000u64.to_le_bytes(), 8);
        let n = Notes::new(&n8, 8).unwrap().next().unwrap().unwrap();
        assert_eq!(n.phys32_entry(), Some(0x20_0000));
        let far = note(b"Xen", 18, &(1u64 << 32).to_le_bytes(), 4);
        let n = Notes::new(&far, 4).unwrap().next().unwrap().unwrap();
        assert_eq!((n.numeric(), n.phys32_entry()), (Some(1 << 32), None));
    }

    #[test]
    fn malformed_notes_are_errors_and_end_the_walk() {
        let good = note(b"Xen", 18, &[0; 4], 4);
        // Header cut short.
        let mut cut = good.clone();
        cut.extend_from_slice(&[1, 0, 0]);
        let items: Vec<_> = Notes::new(&cut, 4).unwrap().collect();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1], Err(ElfError::TruncatedNote(good.len())));
        // Zero padding at the end is fine.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 8]);
        assert_eq!(Notes::new(&padded, 4).unwrap().count(), 1);
        // Descriptor past the end, and sizes that overflow.
        let mut long = good.clone();
        long[4..8].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(
            Notes::new(&long, 4).unwrap().next(),
            Some(Err(ElfError::NoteOutOfBounds(0)))
        );
        let mut huge = good.clone();
        huge[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let items: Vec<_> = Notes::new(&huge, 8).unwrap().collect();
        assert_eq!(items, [Err(ElfError::NoteOutOfBounds(0))]);
        assert_eq!(
            Notes::new(&good, 16).unwrap_err(),
            ElfError::BadNoteAlign(16)
        );
        // A last note whose descriptor padding is missing still counts.
        let odd = note(b"Xen", 6, b"pvops", 4);
        let short = &odd[..odd.len() - 3];
        let n: Vec<_> = Notes::new(short, 4).unwrap().collect();
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].unwrap().desc, b"pvops");
    }

    /// A minimal ELF64 image: one PT_LOAD (R X) at 1 MiB holding `text`,
    /// one PT_NOTE holding `notes`.
    pub(crate) fn image(entry: u64, text: &[u8], notes: &[u8]) -> Vec<u8> {
        let mut v = std::vec![0u8; ELF64_HEADER];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[24..32].copy_from_slice(&entry.to_le_bytes());
        v[32..40].copy_from_slice(&(ELF64_HEADER as u64).to_le_bytes());
        v[54..56].copy_from_slice(&(ELF64_PHDR as u16).to_le_bytes());
        v[56..58].copy_from_slice(&2u16.to_le_bytes());
        let text_at = ELF64_HEADER + 2 * ELF64_PHDR;
        let notes_at = text_at + text.len();
        let ph = |kind: u32, flags: u32, off: usize, addr: u64, len: usize, align: u64| {
            let mut p = Vec::new();
            p.extend_from_slice(&kind.to_le_bytes());
            p.extend_from_slice(&flags.to_le_bytes());
            p.extend_from_slice(&(off as u64).to_le_bytes());
            p.extend_from_slice(&addr.to_le_bytes());
            p.extend_from_slice(&addr.to_le_bytes());
            p.extend_from_slice(&(len as u64).to_le_bytes());
            p.extend_from_slice(&(len as u64).to_le_bytes());
            p.extend_from_slice(&align.to_le_bytes());
            p
        };
        v.extend(ph(PT_LOAD, PF_X | 4, text_at, 0x10_0000, text.len(), 4096));
        v.extend(ph(PT_NOTE, 4, notes_at, 0, notes.len(), 4));
        v.extend_from_slice(text);
        v.extend_from_slice(notes);
        v
    }

    #[test]
    fn elf_image_notes_and_segments() {
        let notes = note(b"Xen", 18, &0x10_0010u32.to_le_bytes(), 4);
        let img = image(0x10_0010, &[0x90; 64], &notes);
        let elf = Elf64::parse(&img).unwrap();
        assert_eq!(elf.entry, 0x10_0010);
        let phs: Vec<_> = elf.program_headers().collect();
        assert_eq!(phs.len(), 2);
        assert!(phs[0].contains_paddr(0x10_0010));
        assert!(!phs[0].contains_paddr(0x10_0040));
        assert_eq!(elf.segment(&phs[0]), Some(&[0x90u8; 64][..]));
        assert_eq!(elf.phys32_entries().collect::<Vec<_>>(), [0x10_0010]);
        // Not ELF64 LE, or a program header table past the end.
        assert_eq!(Elf64::parse(&img[..63]).unwrap_err(), ElfError::NotElf64);
        let mut bad = img.clone();
        bad[4] = 1;
        assert_eq!(Elf64::parse(&bad).unwrap_err(), ElfError::NotElf64);
        let mut bad = img.clone();
        bad[56..58].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(Elf64::parse(&bad).unwrap_err(), ElfError::BadProgramHeaders);
        // A note segment pointing outside the file is an error item.
        let mut bad = img.clone();
        let note_ph = ELF64_HEADER + ELF64_PHDR;
        bad[note_ph + 8..note_ph + 16].copy_from_slice(&u64::MAX.to_le_bytes());
        let elf = Elf64::parse(&bad).unwrap();
        assert_eq!(
            elf.notes().collect::<Vec<_>>(),
            [Err(ElfError::BadProgramHeaders)]
        );
        assert_eq!(elf.phys32_entries().count(), 0);
    }
}
