//! The PV start_info parser (`pvops_core::abi::pv_start_info`), two ways:
//! arbitrary bytes as the boot mapping with a fuzzer-chosen structure
//! address and kernel image, and a boot layout the fuzzer describes, laid
//! out here in Xen's order (module, pfn->mfn list, start_info, domU rings,
//! page tables, stack) with at most one field then overwritten.
//!
//! Asserts: parse never panics; whatever it accepts has every range
//! inside the boot layout `[image.start, boot_layout_end())`, after the
//! image and without wrapping, a nonzero page-aligned shared info, an
//! 8-byte-aligned list, a NUL-free command line shorter than 1024 bytes
//! and the 64-bit magic; `mfn_of` refuses `nr_pages`; `to_start_info`
//! keeps the command line and the module; `pv_memmap` yields ordered,
//! non-empty, non-wrapping entries. A described layout left untouched
//! parses, and anything that parses gives back exactly the fields written.
#![no_main]
use core::ops::Range;

use libfuzzer_sys::fuzz_target;
use pvops_core::abi::pv_start_info::{
    parse, pv_memmap, PvConsole, PvStartInfo, PvStartInfoError, RawConsole, SifFlags, XenStartInfo,
    MAX_GUEST_CMDLINE, MAX_NR_PAGES, MAX_PT_FRAMES, PV_START_INFO_SIZE, PV_START_MAGIC_PREFIX,
};
use pvops_core::abi::start_info::{HvmMemmapEntry, MemmapType};
use pvops_core::phys::PhysRead;
use pvops_fuzz::{Bytes, Window};
use zerocopy::{FromZeros, IntoBytes};

const PAGE: u64 = 4096;
const SIZE: u64 = PV_START_INFO_SIZE as u64;

/// What must hold for anything `parse` accepted.
fn check(info: &PvStartInfo, mem: &impl PhysRead, va: u64, image: &Range<u64>) {
    let end = info.boot_layout_end();
    let inside = |start: u64, len: u64| {
        let e = start.checked_add(len).expect("an accepted range wraps");
        start >= image.start && start >= image.end && e <= end
    };
    assert_eq!(info.va, va);
    assert_eq!(va % 8, 0);
    assert!(inside(va, SIZE), "start_info outside the layout");
    assert!((1..=MAX_NR_PAGES).contains(&info.nr_pages));
    assert!(info.shared_info_maddr != 0 && info.shared_info_maddr.is_multiple_of(PAGE));
    assert_eq!(info.pt_base % PAGE, 0);
    assert!((1..=MAX_PT_FRAMES).contains(&info.nr_pt_frames));
    assert_eq!(
        Some(end),
        (info.nr_pt_frames * PAGE)
            .checked_add(PAGE)
            .and_then(|l| info.pt_base.checked_add(l))
    );
    assert!(inside(info.pt_base, info.nr_pt_frames * PAGE));
    assert_eq!(info.mfn_list % 8, 0);
    assert!(inside(info.mfn_list, info.nr_pages * 8), "mfn list outside");
    if info.mod_len != 0 {
        if info.flags.contains(SifFlags::MOD_START_PFN) {
            let pages = info.mod_len.div_ceil(PAGE);
            assert!(info.mod_start.checked_add(pages).unwrap() <= info.nr_pages);
        } else {
            assert!(inside(info.mod_start, info.mod_len), "module outside");
        }
    }
    match info.console {
        PvConsole::Dom0 {
            info_off,
            info_size,
        } => {
            assert!(info.flags.contains(SifFlags::INITDOMAIN));
            if info_size != 0 {
                assert!(inside(va + u64::from(info_off), u64::from(info_size)));
            }
        }
        PvConsole::DomU { .. } => assert!(!info.flags.contains(SifFlags::INITDOMAIN)),
    }
    assert!(info.cmdline().len() < MAX_GUEST_CMDLINE);
    assert!(!info.cmdline().contains('\0'));
    assert!(info.magic().as_bytes().starts_with(PV_START_MAGIC_PREFIX));

    let si = info.to_start_info();
    assert_eq!(si.cmdline(), info.cmdline());
    assert_eq!(si.modules().len(), usize::from(info.mod_len != 0));
    assert!(!si.has_memmap());

    assert_eq!(
        info.mfn_of(mem, info.nr_pages),
        Err(PvStartInfoError::PfnOutOfRange {
            pfn: info.nr_pages,
            nr_pages: info.nr_pages
        })
    );
    let _ = info.mfn_of(mem, 0);
    let _ = info.mfn_of(mem, info.nr_pages - 1);
    let _ = format!("{info:?}");

    memmap(info.nr_pages, image.start..end);
}

/// `pv_memmap` yields at most 3 ordered, non-empty, non-wrapping entries.
fn memmap(nr_pages: u64, reserved: Range<u64>) {
    let mut out = [HvmMemmapEntry::new_zeroed(); 4];
    let n = pv_memmap(nr_pages, reserved.clone(), &mut out);
    assert!(n <= 3);
    let map = &out[..n];
    let mut last_end = 0;
    for e in map {
        assert!(e.size != 0);
        let end = e.end().expect("a memmap entry wraps");
        assert!(e.addr >= last_end, "entries out of order: {map:x?}");
        last_end = end;
        if e.kind == MemmapType::RAM {
            assert!(end <= nr_pages.saturating_mul(PAGE));
            assert!(end <= reserved.start || e.addr >= reserved.end || reserved.is_empty());
        } else {
            assert_eq!(e.kind, MemmapType::RESERVED);
            assert_eq!((e.addr, end), (reserved.start, reserved.end));
        }
    }
}

/// Arbitrary bytes as the boot mapping.
fn raw(b: &mut Bytes<'_>, mode: u8) {
    const BASE: u64 = 0x40_0000;
    let va_sel = b.u64();
    let (img_a, img_b) = (b.u64(), b.u64());
    // At least two pages, zero beyond the input: room for a structure
    // without the fuzzer having to grow its inputs that far.
    let mut bytes = b.0.to_vec();
    bytes.resize(bytes.len().max(2 * PAGE as usize), 0);
    let len = bytes.len() as u64;
    let mut va = if va_sel & 1 == 0 {
        BASE + (va_sel >> 1) % (len + 1)
    } else {
        va_sel
    };
    if mode & 2 != 0 {
        va &= !7;
    }
    let image = if mode & 4 == 0 {
        BASE.saturating_sub(img_a % 0x10_0000)..BASE + img_b % (len + 1)
    } else {
        img_a..img_b
    };
    // Help past the magic: write it where the structure is said to be.
    if mode & 8 != 0 {
        if let Some(off) = va.checked_sub(BASE) {
            let off = off as usize;
            if let Some(dst) = bytes.get_mut(off..off.saturating_add(PV_START_MAGIC_PREFIX.len())) {
                dst.copy_from_slice(PV_START_MAGIC_PREFIX);
            }
        }
    }
    let mem = Window {
        base: BASE,
        bytes: &bytes,
    };
    match parse(&mem, va, image.clone()) {
        Ok(info) => check(&info, &mem, va, &image),
        Err(e) => assert!(!format!("{e}").is_empty()),
    }
    memmap(img_a, img_b..va_sel);
}

/// A layout in Xen's order, perhaps with one field overwritten.
fn described(b: &mut Bytes<'_>) {
    let image = 0x1_0000..0x1_0000 + (u64::from(b.u8() % 16) + 1) * PAGE;
    let flags = b.u32();
    let dom0 = flags & SifFlags::INITDOMAIN.bits() != 0;
    let mod_len = u64::from(b.u32() % (4 * PAGE as u32));
    let mod_va = image.end;
    let mfn_list = mod_va + mod_len.div_ceil(PAGE) * PAGE;
    let nr_pages = u64::from(b.u32() % 0x400) + 1;
    let si_va = mfn_list + (nr_pages * 8).div_ceil(PAGE) * PAGE;
    let pt_base = si_va + PAGE + if dom0 { 0 } else { 2 * PAGE };
    let nr_pt_frames = u64::from(b.u8() % 8) + 1;
    let layout_end = pt_base + nr_pt_frames * PAGE + PAGE;
    let mod_start = if flags & SifFlags::MOD_START_PFN.bits() != 0 {
        mod_va / PAGE
    } else {
        mod_va
    };
    let console = if dom0 {
        RawConsole {
            first: SIZE | u64::from(b.u8()) << 32,
            evtchn: 0,
            pad: 0,
        }
    } else {
        RawConsole {
            first: b.u64(),
            evtchn: b.u32(),
            pad: 0,
        }
    };
    let mut si = XenStartInfo::new_zeroed();
    si.magic[..PV_START_MAGIC_PREFIX.len()].copy_from_slice(PV_START_MAGIC_PREFIX);
    si.nr_pages = nr_pages;
    si.shared_info = (u64::from(b.u32()) | 1) * PAGE;
    si.flags = flags;
    si.store_mfn = b.u64();
    si.store_evtchn = b.u32();
    si.console = console;
    si.pt_base = pt_base;
    si.nr_pt_frames = nr_pt_frames;
    si.mfn_list = mfn_list;
    si.mod_start = mod_start;
    si.mod_len = mod_len;
    si.first_p2m_pfn = b.u64();
    si.nr_p2m_frames = b.u64();
    let mut text = [0u8; 96];
    let n = usize::from(b.u8()) % text.len();
    b.fill(&mut text[..n]);
    let cmdline = String::from_utf8_lossy(&text[..n]).replace('\0', " ");
    si.cmd_line[..cmdline.len()].copy_from_slice(cmdline.as_bytes());

    // Overwrite at most one field (half the time none).
    let which = b.u8() % 16;
    let v = b.u64();
    match which {
        8 => si.nr_pages = v,
        9 => si.shared_info = v,
        10 => si.pt_base = v,
        11 => si.nr_pt_frames = v,
        12 => si.mfn_list = v,
        13 => si.mod_start = v,
        14 => si.mod_len = v,
        15 => si.console.first = v,
        _ => {}
    }
    let pristine = which < 8;

    // Memory: the list (pfn p -> mfn p ^ 0x5a5a) through the structure's
    // page.
    let mut bytes = vec![0u8; (si_va + PAGE - mfn_list) as usize];
    for p in 0..nr_pages {
        let at = (p * 8) as usize;
        bytes[at..at + 8].copy_from_slice(&(p ^ 0x5a5a).to_le_bytes());
    }
    let at = (si_va - mfn_list) as usize;
    bytes[at..at + PV_START_INFO_SIZE].copy_from_slice(si.as_bytes());
    let mem = Window {
        base: mfn_list,
        bytes: &bytes,
    };

    let module_fits = flags & SifFlags::MOD_START_PFN.bits() == 0
        || mod_len == 0
        || mod_start + mod_len.div_ceil(PAGE) <= nr_pages;
    match parse(&mem, si_va, image.clone()) {
        Ok(info) => {
            check(&info, &mem, si_va, &image);
            assert_eq!(info.nr_pages, si.nr_pages);
            assert_eq!(info.shared_info_maddr, si.shared_info);
            assert_eq!(info.flags.bits(), si.flags);
            assert_eq!(info.store_mfn, si.store_mfn);
            assert_eq!(info.store_evtchn, si.store_evtchn);
            assert_eq!(info.pt_base, si.pt_base);
            assert_eq!(info.nr_pt_frames, si.nr_pt_frames);
            assert_eq!(info.mfn_list, si.mfn_list);
            assert_eq!(info.mod_start, si.mod_start);
            assert_eq!(info.mod_len, si.mod_len);
            assert_eq!(info.first_p2m_pfn, si.first_p2m_pfn);
            assert_eq!(info.nr_p2m_frames, si.nr_p2m_frames);
            assert_eq!(info.cmdline(), cmdline);
            let expect = if dom0 {
                PvConsole::Dom0 {
                    info_off: si.console.first as u32,
                    info_size: (si.console.first >> 32) as u32,
                }
            } else {
                PvConsole::DomU {
                    mfn: si.console.first,
                    evtchn: si.console.evtchn,
                }
            };
            assert_eq!(info.console, expect);
            if pristine {
                assert_eq!(info.boot_layout_end(), layout_end);
                let last = nr_pages - 1;
                assert_eq!(info.mfn_of(&mem, last), Ok(last ^ 0x5a5a));
            }
        }
        Err(e) => {
            assert!(
                !(pristine && module_fits),
                "a well-formed layout was rejected: {e}"
            );
            assert!(!format!("{e}").is_empty());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let mode = b.u8();
    if mode & 1 == 0 {
        raw(&mut b, mode);
    } else {
        described(&mut b);
    }
});
