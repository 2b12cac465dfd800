//! The kernel images as a PVH loader (QEMU's `-kernel`, Xen) sees them,
//! read with pvops' own ELF-note parser (`pvops_core::abi::elfnote`):
//! every note well-formed, exactly one `XEN_ELFNOTE_PHYS32_ENTRY`, and its
//! entry inside an executable loaded segment, equal to the ELF entry, at
//! the first instructions of the PVH entry (`cli; cld`). And as Xen's PV
//! domain builder sees them: the notes it requires (`LOADER` "generic",
//! `XEN_VERSION` "xen-3.0"), `VIRT_BASE` and `PADDR_OFFSET` 0, one
//! `ENTRY` inside the text, at the PV entry's first instructions.

use std::path::Path;

use pvops_core::abi::elfnote::{
    Elf64, Note, PF_X, PT_LOAD, XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_LOADER, XEN_ELFNOTE_PADDR_OFFSET,
    XEN_ELFNOTE_PHYS32_ENTRY, XEN_ELFNOTE_VIRT_BASE, XEN_ELFNOTE_XEN_VERSION, XEN_NOTE_NAME,
};

/// The image's ELF header and every note, each well-formed.
fn read_notes<'a>(path: &Path, bytes: &'a [u8]) -> (Elf64<'a>, Vec<Note<'a>>) {
    let elf = Elf64::parse(bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let notes: Vec<Note<'_>> = elf
        .notes()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: malformed note: {e}", path.display()));
    (elf, notes)
}

fn check_pvh_image(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (elf, notes) = read_notes(path, &bytes);
    let pvh: Vec<&Note<'_>> = notes
        .iter()
        .filter(|n| n.name == XEN_NOTE_NAME && n.kind == XEN_ELFNOTE_PHYS32_ENTRY)
        .collect();
    assert_eq!(pvh.len(), 1, "{}: PVH notes {pvh:?}", path.display());
    let entry = u64::from(
        pvh[0]
            .phys32_entry()
            .unwrap_or_else(|| panic!("{}: PVH note not numeric: {:?}", path.display(), pvh[0])),
    );
    assert_eq!(
        elf.entry,
        entry,
        "{}: ELF entry vs PVH entry",
        path.display()
    );
    let text = elf
        .program_headers()
        .find(|ph| ph.kind == PT_LOAD && ph.flags & PF_X != 0 && ph.contains_paddr(entry))
        .unwrap_or_else(|| {
            panic!(
                "{}: entry {entry:#x} is in no executable segment",
                path.display()
            )
        });
    let code = elf.segment(&text).expect("text segment inside the file");
    let at = (entry - text.paddr) as usize;
    assert_eq!(
        &code[at..at + 2],
        [0xfa, 0xfc],
        "{}: the entry does not start with the PVH entry's `cli; cld`",
        path.display()
    );
}

#[test]
fn example_kernel_has_one_pvh_entry_in_its_text() {
    let kernel = pvops_tests::kernel_image().unwrap_or_else(|e| panic!("building the kernel: {e}"));
    check_pvh_image(kernel);
}

#[test]
fn minimal_kernel_has_one_pvh_entry_in_its_text() {
    let kernel = xtask::kernel::build_package("minimal-kernel")
        .unwrap_or_else(|e| panic!("building minimal-kernel: {e:#}"));
    check_pvh_image(&kernel);
}

fn check_pv_notes(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (elf, notes) = read_notes(path, &bytes);
    let one = |kind: u32| -> &Note<'_> {
        let found: Vec<&Note<'_>> = notes
            .iter()
            .filter(|n| n.name == XEN_NOTE_NAME && n.kind == kind)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{}: notes of type {kind}: {found:?}",
            path.display()
        );
        found[0]
    };
    assert_eq!(one(XEN_ELFNOTE_LOADER).desc, b"generic\0");
    assert_eq!(one(XEN_ELFNOTE_XEN_VERSION).desc, b"xen-3.0\0");
    assert_eq!(one(XEN_ELFNOTE_VIRT_BASE).numeric(), Some(0));
    assert_eq!(one(XEN_ELFNOTE_PADDR_OFFSET).numeric(), Some(0));
    let entry = one(XEN_ELFNOTE_ENTRY)
        .numeric()
        .unwrap_or_else(|| panic!("{}: ENTRY not numeric", path.display()));
    let text = elf
        .program_headers()
        .find(|ph| ph.kind == PT_LOAD && ph.flags & PF_X != 0 && ph.contains_paddr(entry))
        .unwrap_or_else(|| {
            panic!(
                "{}: PV entry {entry:#x} in no executable segment",
                path.display()
            )
        });
    let code = elf.segment(&text).expect("text segment inside the file");
    let at = (entry - text.paddr) as usize;
    // cld; mov %rsi, %rbx: the PV entry keeps start_info and zeroes .bss.
    assert_eq!(
        &code[at..at + 4],
        [0xfc, 0x48, 0x89, 0xf3],
        "{}: the ENTRY note does not point at the PV entry",
        path.display()
    );
}

#[test]
fn example_kernel_has_the_xen_pv_notes() {
    let kernel = pvops_tests::kernel_image().unwrap_or_else(|e| panic!("building the kernel: {e}"));
    check_pv_notes(kernel);
}

#[test]
fn minimal_kernel_has_the_xen_pv_notes() {
    let kernel = xtask::kernel::build_package("minimal-kernel")
        .unwrap_or_else(|e| panic!("building minimal-kernel: {e:#}"));
    check_pv_notes(&kernel);
}
