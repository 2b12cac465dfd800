//! `start_info`: what Xen hands a classic 64-bit PV guest in RSI.
//!
//! A PV guest starts in 64-bit long mode, already on page tables Xen built,
//! with RSI holding the *virtual* address of a start-of-day structure whose
//! layout is fixed by Xen's public header `xen.h` (`struct start_info`; on
//! x86_64 `unsigned long` and `xen_pfn_t` are 8 bytes):
//!
//! | offset | field                                         | size |
//! |-------:|-----------------------------------------------|-----:|
//! |      0 | `magic` (`"xen-3.0-x86_64"`, NUL padded)      |   32 |
//! |     32 | `nr_pages`                                    |    8 |
//! |     40 | `shared_info` (machine address)               |    8 |
//! |     48 | `flags` (`SIF_*`)                             |    4 |
//! |     52 | (padding)                                     |    4 |
//! |     56 | `store_mfn`                                   |    8 |
//! |     64 | `store_evtchn`                                |    4 |
//! |     68 | (padding)                                     |    4 |
//! |     72 | `console` union: domU `mfn` (8) + `evtchn` (4) + padding (4), or dom0 `info_off` (4) + `info_size` (4) | 16 |
//! |     88 | `pt_base` (virtual)                           |    8 |
//! |     96 | `nr_pt_frames`                                |    8 |
//! |    104 | `mfn_list` (virtual)                          |    8 |
//! |    112 | `mod_start` (virtual, or a PFN)               |    8 |
//! |    120 | `mod_len`                                     |    8 |
//! |    128 | `cmd_line` (`MAX_GUEST_CMDLINE` = 1024 bytes) | 1024 |
//! |   1152 | `first_p2m_pfn`                               |    8 |
//! |   1160 | `nr_p2m_frames`                               |    8 |
//!
//! 1168 bytes in all. Every integer is little endian.
//!
//! Xen lays the guest's first virtual region out in this order, each
//! element 4 KiB aligned and packed against the previous one: the kernel
//! image, the initial module (if any), the pfn→mfn list (`nr_pages` u64s),
//! the `start_info` page (for dom0 also holding the console information),
//! for a domU the xenstore and console ring pages, the boot page tables
//! (`nr_pt_frames` frames from `pt_base`), and one page of boot stack. At
//! least 512 KiB after the stack are mapped too. The region maps the first
//! pseudo-physical frames 1:1, so with the kernel linked at virtual address
//! 0 (pvops' PV layout) a virtual address there equals its pseudo-physical
//! one and a [`PhysRead`] can read it as is.
//!
//! [`parse`] copies the structure out once, through a [`PhysRead`], and
//! checks the copy: nothing Xen wrote is read twice, and nothing is used
//! before it is checked. Every range it accepts lies inside the boot layout
//! `[image.start, boot_layout_end())` and after the kernel image. The
//! result, [`PvStartInfo`], owns its data (no allocation).

use core::fmt;
use core::ops::Range;

use bitflags::bitflags;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::abi::start_info::{HvmMemmapEntry, HvmModlistEntry, MemmapType, StartInfo};
use crate::phys::{PhysRead, PhysReadError};

/// What `magic` must start with: a 64-bit PV guest of a Xen with the 3.0
/// interface (every Xen since writes "3.0" there). A 32-bit PAE guest's
/// structure says `"xen-3.0-x86_32p"` and has another layout.
pub const PV_START_MAGIC_PREFIX: &[u8] = b"xen-3.0-x86_64";

/// Size of [`XenStartInfo`] on x86_64.
pub const PV_START_INFO_SIZE: usize = 1168;

/// `MAX_GUEST_CMDLINE`: size of the command-line field, terminating NUL
/// included.
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// Most pages [`parse`] accepts: 2^28 4 KiB pages, 1 TiB.
pub const MAX_NR_PAGES: u64 = 1 << 28;

/// Most boot page-table frames [`parse`] accepts (16 MiB of tables).
pub const MAX_PT_FRAMES: u64 = 4096;

/// Size of a page.
const PAGE_SIZE: u64 = 4096;

/// Size of one pfn→mfn list entry.
const MFN_ENTRY_SIZE: u64 = 8;

/// The 16-byte `console` union of [`XenStartInfo`], as raw words. For a
/// domU `first` is the console ring's machine frame and `evtchn` its event
/// channel; for dom0 the low 32 bits of `first` are `info_off` and the high
/// 32 bits `info_size` (little endian), and the rest is unused.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct RawConsole {
    /// domU: `mfn`; dom0: `info_off | info_size << 32`.
    pub first: u64,
    /// domU: `evtchn`; dom0: unused.
    pub evtchn: u32,
    /// Padding of the union.
    pub pad: u32,
}

const_assert_eq!(core::mem::size_of::<RawConsole>(), 16);

/// `struct start_info` of a 64-bit PV guest, as laid out in memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct XenStartInfo {
    /// `"xen-<version>-<platform>"`, NUL padded.
    pub magic: [u8; 32],
    /// Pages allocated to the domain.
    pub nr_pages: u64,
    /// Machine address of the shared-info page.
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Padding before the next 8-byte field.
    pub pad0: u32,
    /// Machine frame of the xenstore ring.
    pub store_mfn: u64,
    /// Event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// Padding before the console union.
    pub pad1: u32,
    /// The console union (domU ring or dom0 console information).
    pub console: RawConsole,
    /// Virtual address of the boot L4 table.
    pub pt_base: u64,
    /// Number of boot page-table frames.
    pub nr_pt_frames: u64,
    /// Virtual address of the pfn→mfn list.
    pub mfn_list: u64,
    /// Virtual address of the module, or its PFN with `SIF_MOD_START_PFN`.
    pub mod_start: u64,
    /// Size of the module in bytes (0: none).
    pub mod_len: u64,
    /// NUL-terminated command line (`int8_t` in C).
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// First PFN of the initial P→M table frames (for the toolstack).
    pub first_p2m_pfn: u64,
    /// Number of those frames.
    pub nr_p2m_frames: u64,
}

const_assert_eq!(core::mem::size_of::<XenStartInfo>(), PV_START_INFO_SIZE);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, magic), 0);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, nr_pages), 32);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, shared_info), 40);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, flags), 48);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, store_mfn), 56);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, store_evtchn), 64);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, console), 72);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, pt_base), 88);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, nr_pt_frames), 96);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, mfn_list), 104);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, mod_start), 112);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, mod_len), 120);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, cmd_line), 128);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, first_p2m_pfn), 1152);
const_assert_eq!(core::mem::offset_of!(XenStartInfo, nr_p2m_frames), 1160);

bitflags! {
    /// `SIF_*`: bits of [`XenStartInfo::flags`]. Bits Xen sets that are not
    /// named here are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct SifFlags: u32 {
        /// `SIF_PRIVILEGED`: the domain is privileged.
        const PRIVILEGED = 1 << 0;
        /// `SIF_INITDOMAIN`: the initial control domain (dom0); selects the
        /// dom0 variant of the console union.
        const INITDOMAIN = 1 << 1;
        /// `SIF_MULTIBOOT_MOD`: the module is a multiboot module package
        /// (a descriptor array at its start, addresses relative to it).
        const MULTIBOOT_MOD = 1 << 2;
        /// `SIF_MOD_START_PFN`: `mod_start` is a PFN, not a virtual address.
        const MOD_START_PFN = 1 << 3;
        /// `SIF_VIRT_P2M_4TOOLS`: the toolstack understands a virtually
        /// mapped P→M list.
        const VIRT_P2M_4TOOLS = 1 << 4;
        /// `SIF_PM_MASK`: a byte reserved for power-management options.
        const PM_MASK = 0xff << 8;
    }
}

/// The console, per [`SifFlags::INITDOMAIN`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvConsole {
    /// dom0: a `dom0_vga_console_info` at `info_off` bytes from the
    /// `start_info` (Xen puts it right after the structure, in its page).
    Dom0 {
        /// Offset of the console information from the `start_info`.
        info_off: u32,
        /// Its size in bytes (0: none).
        info_size: u32,
    },
    /// domU: a console ring page shared with the console backend.
    DomU {
        /// Machine frame of the ring page.
        mfn: u64,
        /// Event channel of the ring.
        evtchn: u32,
    },
}

/// A range of the boot layout that [`parse`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvRegion {
    /// The `start_info` structure itself.
    StartInfo,
    /// The pfn→mfn list (`nr_pages` u64s at `mfn_list`).
    MfnList,
    /// The initial module at a virtual address.
    Module,
    /// The boot page tables (`nr_pt_frames` frames at `pt_base`).
    PageTables,
    /// dom0's console information.
    ConsoleInfo,
}

impl fmt::Display for PvRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PvRegion::StartInfo => "start_info",
            PvRegion::MfnList => "pfn->mfn list (mfn_list)",
            PvRegion::Module => "module (mod_start)",
            PvRegion::PageTables => "boot page tables (pt_base)",
            PvRegion::ConsoleInfo => "dom0 console info (console.dom0)",
        })
    }
}

/// Why a `start_info` was rejected (or, for [`PvStartInfo::mfn_of`], why a
/// list entry could not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PvStartInfoError {
    /// The structure's address is not 8-byte aligned.
    Misaligned {
        /// Where the structure was said to be.
        va: u64,
    },
    /// The structure could not be read.
    Unreadable {
        /// Where the structure was said to be.
        va: u64,
        /// The reader's error.
        err: PhysReadError,
    },
    /// `magic` does not start with [`PV_START_MAGIC_PREFIX`].
    BadMagic {
        /// The 32 bytes found.
        found: [u8; 32],
    },
    /// `nr_pages` is 0.
    NoPages,
    /// `nr_pages` exceeds [`MAX_NR_PAGES`].
    TooManyPages {
        /// The value found.
        nr_pages: u64,
    },
    /// `shared_info` is 0.
    SharedInfoMissing,
    /// `shared_info` is not page aligned.
    SharedInfoMisaligned {
        /// The value found.
        maddr: u64,
    },
    /// `pt_base` is not page aligned.
    PtBaseMisaligned {
        /// The value found.
        pt_base: u64,
    },
    /// `nr_pt_frames` is 0 or exceeds [`MAX_PT_FRAMES`].
    BadPtFrames {
        /// The value found.
        nr_pt_frames: u64,
    },
    /// The end of the boot layout (`pt_base + nr_pt_frames * 4096 + 4096`)
    /// wraps past the end of the address space.
    LayoutOverflow {
        /// `pt_base`.
        pt_base: u64,
        /// `nr_pt_frames`.
        nr_pt_frames: u64,
    },
    /// `mfn_list` is not 8-byte aligned.
    MfnListMisaligned {
        /// The value found.
        mfn_list: u64,
    },
    /// `start + len` of a range wraps past the end of the address space.
    RangeOverflow {
        /// Which range.
        region: PvRegion,
        /// Its start.
        start: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// A range is not inside the boot layout.
    OutsideLayout {
        /// Which range.
        region: PvRegion,
        /// Its start.
        start: u64,
        /// Its length in bytes.
        len: u64,
        /// The layout: the kernel image's start up to
        /// [`PvStartInfo::boot_layout_end`].
        layout: (u64, u64),
    },
    /// A range starts inside the kernel image.
    OverlapsImage {
        /// Which range.
        region: PvRegion,
        /// Its start.
        start: u64,
        /// Its length in bytes.
        len: u64,
        /// The image's end.
        image_end: u64,
    },
    /// With `SIF_MOD_START_PFN`, the module's frames run past `nr_pages`.
    ModuleBeyondMemory {
        /// `mod_start` (a PFN).
        pfn: u64,
        /// `mod_len`.
        len: u64,
        /// `nr_pages`.
        nr_pages: u64,
    },
    /// No NUL within the [`MAX_GUEST_CMDLINE`] bytes of `cmd_line`.
    CmdlineUnterminated,
    /// The command line is not UTF-8.
    CmdlineNotUtf8 {
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// [`PvStartInfo::mfn_of`]: the PFN is not below `nr_pages`.
    PfnOutOfRange {
        /// The PFN asked for.
        pfn: u64,
        /// `nr_pages`.
        nr_pages: u64,
    },
    /// [`PvStartInfo::mfn_of`]: the list entry could not be read.
    MfnUnreadable {
        /// The PFN asked for.
        pfn: u64,
        /// The entry's virtual address.
        va: u64,
        /// The reader's error.
        err: PhysReadError,
    },
}

/// Writes `bytes` up to the first NUL as a quoted string, escaping
/// anything but printable ASCII.
fn write_escaped(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    f.write_str("\"")?;
    for &b in bytes.iter().take_while(|&&b| b != 0) {
        match b {
            b'"' | b'\\' => write!(f, "\\{}", b as char)?,
            0x20..=0x7e => write!(f, "{}", b as char)?,
            _ => write!(f, "\\x{b:02x}")?,
        }
    }
    f.write_str("\"")
}

impl fmt::Display for PvStartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PvStartInfoError as E;
        match *self {
            E::Misaligned { va } => {
                write!(f, "start_info at {va:#x} is not 8-byte aligned")
            }
            E::Unreadable { va, err } => {
                write!(f, "start_info at {va:#x} unreadable: {err}")
            }
            E::BadMagic { found } => {
                f.write_str("bad magic ")?;
                write_escaped(f, &found)?;
                f.write_str(" (expected ")?;
                write_escaped(f, PV_START_MAGIC_PREFIX)?;
                f.write_str(": a 64-bit PV guest)")
            }
            E::NoPages => f.write_str("nr_pages is 0"),
            E::TooManyPages { nr_pages } => write!(
                f,
                "nr_pages {nr_pages:#x} exceeds {MAX_NR_PAGES:#x} (1 TiB)"
            ),
            E::SharedInfoMissing => f.write_str("shared_info machine address is 0"),
            E::SharedInfoMisaligned { maddr } => write!(
                f,
                "shared_info machine address {maddr:#x} is not page aligned"
            ),
            E::PtBaseMisaligned { pt_base } => {
                write!(f, "pt_base {pt_base:#x} is not page aligned")
            }
            E::BadPtFrames { nr_pt_frames } => write!(
                f,
                "nr_pt_frames {nr_pt_frames} is not in 1..={MAX_PT_FRAMES}"
            ),
            E::LayoutOverflow {
                pt_base,
                nr_pt_frames,
            } => write!(
                f,
                "boot layout end (pt_base {pt_base:#x} + {nr_pt_frames} page-table frames + a stack page) wraps past the end of the address space"
            ),
            E::MfnListMisaligned { mfn_list } => {
                write!(f, "mfn_list {mfn_list:#x} is not 8-byte aligned")
            }
            E::RangeOverflow { region, start, len } => {
                write!(f, "{region} at {start:#x}")?;
                write_nr_pages(f, region, len)?;
                write!(
                    f,
                    " with length {len:#x} wraps past the end of the address space"
                )
            }
            E::OutsideLayout {
                region,
                start,
                len,
                layout: (lo, hi),
            } => {
                write!(f, "{region} [{start:#x}, +{len:#x})")?;
                write_nr_pages(f, region, len)?;
                write!(f, " is not inside the boot layout [{lo:#x}, {hi:#x})")
            }
            E::OverlapsImage {
                region,
                start,
                len,
                image_end,
            } => {
                write!(f, "{region} [{start:#x}, +{len:#x})")?;
                write_nr_pages(f, region, len)?;
                write!(f, " overlaps the kernel image (ends at {image_end:#x})")
            }
            E::ModuleBeyondMemory { pfn, len, nr_pages } => write!(
                f,
                "module at pfn {pfn:#x} with length {len:#x} runs past nr_pages {nr_pages:#x}"
            ),
            E::CmdlineUnterminated => write!(
                f,
                "command line has no NUL within {MAX_GUEST_CMDLINE} bytes"
            ),
            E::CmdlineNotUtf8 { valid_up_to } => write!(
                f,
                "command line is not UTF-8 (bad byte at offset {valid_up_to})"
            ),
            E::PfnOutOfRange { pfn, nr_pages } => {
                write!(f, "pfn {pfn:#x} is not below nr_pages {nr_pages:#x}")
            }
            E::MfnUnreadable { pfn, va, err } => write!(
                f,
                "pfn->mfn entry of pfn {pfn:#x} at {va:#x} unreadable: {err}"
            ),
        }
    }
}

impl core::error::Error for PvStartInfoError {}

/// For the pfn→mfn list, names the `nr_pages` its length comes from.
fn write_nr_pages(f: &mut fmt::Formatter<'_>, region: PvRegion, len: u64) -> fmt::Result {
    if region == PvRegion::MfnList {
        write!(f, " (nr_pages {:#x})", len / MFN_ENTRY_SIZE)?;
    }
    Ok(())
}

/// A checked, owned copy of a 64-bit PV `start_info`.
///
/// Built only by [`parse`]; the command line is reached through
/// [`cmdline`](Self::cmdline) and the magic through
/// [`magic`](Self::magic).
#[derive(Clone)]
pub struct PvStartInfo {
    /// Virtual address the structure was read from.
    pub va: u64,
    /// Pages allocated to the domain (1..=[`MAX_NR_PAGES`]).
    pub nr_pages: u64,
    /// Machine address of the shared-info page (page aligned, nonzero).
    pub shared_info_maddr: u64,
    /// `SIF_*` flags, unknown bits kept.
    pub flags: SifFlags,
    /// Machine frame of the xenstore ring.
    pub store_mfn: u64,
    /// Event channel of the xenstore ring.
    pub store_evtchn: u32,
    /// The console, chosen by [`SifFlags::INITDOMAIN`].
    pub console: PvConsole,
    /// Virtual address of the boot L4 table (page aligned).
    pub pt_base: u64,
    /// Number of boot page-table frames (1..=[`MAX_PT_FRAMES`]).
    pub nr_pt_frames: u64,
    /// Virtual address of the pfn→mfn list: `nr_pages` u64s (8-byte
    /// aligned, inside the boot layout).
    pub mfn_list: u64,
    /// Virtual address of the module, or its PFN with
    /// [`SifFlags::MOD_START_PFN`].
    pub mod_start: u64,
    /// Size of the module in bytes (0: no module).
    pub mod_len: u64,
    /// First PFN of the initial P→M table frames (for the toolstack; not
    /// checked).
    pub first_p2m_pfn: u64,
    /// Number of those frames (not checked).
    pub nr_p2m_frames: u64,
    magic: [u8; 32],
    cmdline: [u8; MAX_GUEST_CMDLINE],
    cmdline_len: usize,
}

impl PvStartInfo {
    /// Bytes after [`boot_layout_end`](Self::boot_layout_end) that Xen
    /// guarantees mapped: "at least 512kB padding after the final bootstrap
    /// element".
    pub const GUARANTEED_PADDING: u64 = 512 * 1024;

    /// The magic up to its first NUL: `"xen-3.0-x86_64"` (anything after
    /// the checked prefix that is not UTF-8 is left out).
    pub fn magic(&self) -> &str {
        let n = self.magic.iter().position(|&b| b == 0).unwrap_or(32);
        let bytes = &self.magic[..n];
        match core::str::from_utf8(bytes) {
            Ok(s) => s,
            // The prefix is ASCII, so the valid part is at least that.
            Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }

    /// The command line (empty if none was given).
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len.min(MAX_GUEST_CMDLINE)];
        // `parse` checked that these bytes are UTF-8; the fallback is never
        // taken.
        core::str::from_utf8(bytes).unwrap_or("")
    }

    /// First virtual address after Xen's boot-time layout: the page after
    /// the boot stack, `pt_base + nr_pt_frames * 4096 + 4096`. (`parse`
    /// checked that this does not overflow; it saturates if the public
    /// fields were changed since.)
    pub fn boot_layout_end(&self) -> u64 {
        self.pt_base
            .saturating_add(self.nr_pt_frames.saturating_mul(PAGE_SIZE))
            .saturating_add(PAGE_SIZE)
    }

    /// The machine frame of pseudo-physical frame `pfn`: entry `pfn` of the
    /// pfn→mfn list, read through `mem` (once; the value is not checked).
    /// An error if `pfn >= nr_pages` or the entry cannot be read.
    pub fn mfn_of(&self, mem: &impl PhysRead, pfn: u64) -> Result<u64, PvStartInfoError> {
        if pfn >= self.nr_pages {
            return Err(PvStartInfoError::PfnOutOfRange {
                pfn,
                nr_pages: self.nr_pages,
            });
        }
        let unreadable = |va| PvStartInfoError::MfnUnreadable {
            pfn,
            va,
            err: PhysReadError::OutOfRange { paddr: va, len: 8 },
        };
        let va = pfn
            .checked_mul(MFN_ENTRY_SIZE)
            .and_then(|off| self.mfn_list.checked_add(off))
            .ok_or(unreadable(self.mfn_list))?;
        let mut word = [0u8; 8];
        mem.read_phys(va, &mut word)
            .map_err(|err| PvStartInfoError::MfnUnreadable { pfn, va, err })?;
        Ok(u64::from_le_bytes(word))
    }

    /// The module as a PVH-style entry: at `mod_start` (or `mod_start *
    /// 4096` with [`SifFlags::MOD_START_PFN`]; with the kernel at virtual 0
    /// both are pseudo-physical addresses), `mod_len` bytes, no command
    /// line. `None` when `mod_len` is 0.
    pub fn module(&self) -> Option<HvmModlistEntry> {
        if self.mod_len == 0 {
            return None;
        }
        let paddr = if self.flags.contains(SifFlags::MOD_START_PFN) {
            self.mod_start.saturating_mul(PAGE_SIZE)
        } else {
            self.mod_start
        };
        Some(HvmModlistEntry {
            paddr,
            size: self.mod_len,
            cmdline_paddr: 0,
            reserved: 0,
        })
    }

    /// Converts to the boot information a PVH boot yields: the `SIF_*`
    /// flags, the command line (its address is the `cmd_line` field's
    /// virtual address, which equals its pseudo-physical one in pvops' PV
    /// layout), the [`module`](Self::module) if any, no RSDP and no memory
    /// map (the backend supplies one through [`StartInfo::set_memmap`], e.g.
    /// from [`pv_memmap`]).
    pub fn to_start_info(&self) -> StartInfo {
        let cmdline_va = self
            .va
            .checked_add(core::mem::offset_of!(XenStartInfo, cmd_line) as u64);
        StartInfo::synthesized(self.flags.bits(), cmdline_va, self.cmdline(), self.module())
    }
}

impl fmt::Debug for PvStartInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PvStartInfo")
            .field("va", &format_args!("{:#x}", self.va))
            .field("magic", &self.magic())
            .field("nr_pages", &format_args!("{:#x}", self.nr_pages))
            .field(
                "shared_info_maddr",
                &format_args!("{:#x}", self.shared_info_maddr),
            )
            .field("flags", &self.flags)
            .field("store_mfn", &format_args!("{:#x}", self.store_mfn))
            .field("store_evtchn", &self.store_evtchn)
            .field("console", &self.console)
            .field("pt_base", &format_args!("{:#x}", self.pt_base))
            .field("nr_pt_frames", &self.nr_pt_frames)
            .field("mfn_list", &format_args!("{:#x}", self.mfn_list))
            .field("mod_start", &format_args!("{:#x}", self.mod_start))
            .field("mod_len", &format_args!("{:#x}", self.mod_len))
            .field("first_p2m_pfn", &format_args!("{:#x}", self.first_p2m_pfn))
            .field("nr_p2m_frames", &self.nr_p2m_frames)
            .field("cmdline", &self.cmdline())
            .finish()
    }
}

/// The boot layout and the kernel image, for range checks.
struct Layout {
    start: u64,
    end: u64,
    image_end: u64,
}

impl Layout {
    /// `[start, start + len)` must not wrap, must lie inside
    /// `[self.start, self.end)` and must not start before the image's end.
    fn check(&self, region: PvRegion, start: u64, len: u64) -> Result<(), PvStartInfoError> {
        let end = start
            .checked_add(len)
            .ok_or(PvStartInfoError::RangeOverflow { region, start, len })?;
        if start < self.start || end > self.end {
            return Err(PvStartInfoError::OutsideLayout {
                region,
                start,
                len,
                layout: (self.start, self.end),
            });
        }
        if start < self.image_end {
            return Err(PvStartInfoError::OverlapsImage {
                region,
                start,
                len,
                image_end: self.image_end,
            });
        }
        Ok(())
    }
}

/// Reads and checks the 64-bit PV `start_info` at virtual address `va`,
/// for a kernel image occupying the virtual range `image`.
///
/// `mem` reads virtual addresses of Xen's boot mapping (with the kernel at
/// virtual 0 these equal pseudo-physical addresses, so a [`PhysRead`] over
/// them works as is).
///
/// Checks, in order: `va` is 8-byte aligned and the 1168 bytes there are
/// readable; the magic starts with [`PV_START_MAGIC_PREFIX`]; `nr_pages` is
/// in 1..=[`MAX_NR_PAGES`]; `shared_info` is nonzero and page aligned;
/// `pt_base` is page aligned, `nr_pt_frames` in 1..=[`MAX_PT_FRAMES`] and
/// the layout end (`pt_base` + the tables + a stack page) does not wrap.
/// Then, inside the boot layout `[image.start, boot_layout_end())` and not
/// starting before `image.end`, each without wrapping: the page tables,
/// the structure itself, the pfn→mfn list (8-byte aligned, `nr_pages *
/// 8` bytes), the module when `mod_len != 0` and `mod_start` is a virtual
/// address (with [`SifFlags::MOD_START_PFN`] its frames must lie below
/// `nr_pages` instead), and for dom0 the console information when its size
/// is nonzero. Last, the command line: a NUL within [`MAX_GUEST_CMDLINE`]
/// bytes, UTF-8 before it.
///
/// A kernel that asks Xen to put the pfn→mfn list elsewhere
/// (`XEN_ELFNOTE_INIT_P2M`) gets a list outside the boot layout, which this
/// rejects; pvops' PV layout does not ask for that. The ranges are not
/// checked against one another (Xen packs them in order; an overlap can
/// only make `mfn_of` read other boot data).
pub fn parse(
    mem: &impl PhysRead,
    va: u64,
    image: Range<u64>,
) -> Result<PvStartInfo, PvStartInfoError> {
    if !va.is_multiple_of(8) {
        return Err(PvStartInfoError::Misaligned { va });
    }
    let mut si = XenStartInfo::new_zeroed();
    if va.checked_add(PV_START_INFO_SIZE as u64).is_none() {
        return Err(PvStartInfoError::Unreadable {
            va,
            err: PhysReadError::OutOfRange {
                paddr: va,
                len: PV_START_INFO_SIZE,
            },
        });
    }
    mem.read_phys(va, si.as_mut_bytes())
        .map_err(|err| PvStartInfoError::Unreadable { va, err })?;
    // From here on only the local copy `si` is looked at.

    if !si.magic.starts_with(PV_START_MAGIC_PREFIX) {
        return Err(PvStartInfoError::BadMagic { found: si.magic });
    }
    if si.nr_pages == 0 {
        return Err(PvStartInfoError::NoPages);
    }
    if si.nr_pages > MAX_NR_PAGES {
        return Err(PvStartInfoError::TooManyPages {
            nr_pages: si.nr_pages,
        });
    }
    if si.shared_info == 0 {
        return Err(PvStartInfoError::SharedInfoMissing);
    }
    if !si.shared_info.is_multiple_of(PAGE_SIZE) {
        return Err(PvStartInfoError::SharedInfoMisaligned {
            maddr: si.shared_info,
        });
    }

    let (pt_base, nr_pt_frames) = (si.pt_base, si.nr_pt_frames);
    if !pt_base.is_multiple_of(PAGE_SIZE) {
        return Err(PvStartInfoError::PtBaseMisaligned { pt_base });
    }
    if nr_pt_frames == 0 || nr_pt_frames > MAX_PT_FRAMES {
        return Err(PvStartInfoError::BadPtFrames { nr_pt_frames });
    }
    // At most MAX_PT_FRAMES pages: the product cannot overflow.
    let pt_len = nr_pt_frames * PAGE_SIZE;
    let layout_end = pt_base
        .checked_add(pt_len)
        .and_then(|e| e.checked_add(PAGE_SIZE))
        .ok_or(PvStartInfoError::LayoutOverflow {
            pt_base,
            nr_pt_frames,
        })?;
    let layout = Layout {
        start: image.start,
        end: layout_end,
        image_end: image.end,
    };

    layout.check(PvRegion::PageTables, pt_base, pt_len)?;
    layout.check(PvRegion::StartInfo, va, PV_START_INFO_SIZE as u64)?;

    if !si.mfn_list.is_multiple_of(MFN_ENTRY_SIZE) {
        return Err(PvStartInfoError::MfnListMisaligned {
            mfn_list: si.mfn_list,
        });
    }
    // At most MAX_NR_PAGES entries: the product cannot overflow.
    layout.check(PvRegion::MfnList, si.mfn_list, si.nr_pages * MFN_ENTRY_SIZE)?;

    let flags = SifFlags::from_bits_retain(si.flags);
    if si.mod_len != 0 {
        if flags.contains(SifFlags::MOD_START_PFN) {
            let beyond = PvStartInfoError::ModuleBeyondMemory {
                pfn: si.mod_start,
                len: si.mod_len,
                nr_pages: si.nr_pages,
            };
            let pages = si.mod_len.div_ceil(PAGE_SIZE);
            let end_pfn = si.mod_start.checked_add(pages).ok_or(beyond)?;
            if end_pfn > si.nr_pages {
                return Err(beyond);
            }
        } else {
            layout.check(PvRegion::Module, si.mod_start, si.mod_len)?;
        }
    }

    let console = if flags.contains(SifFlags::INITDOMAIN) {
        let info_off = si.console.first as u32;
        let info_size = (si.console.first >> 32) as u32;
        if info_size != 0 {
            // `va` plus a u32 offset: can wrap only near the top, reported
            // as a range overflow.
            let start =
                va.checked_add(u64::from(info_off))
                    .ok_or(PvStartInfoError::RangeOverflow {
                        region: PvRegion::ConsoleInfo,
                        start: va,
                        len: u64::from(info_off) + u64::from(info_size),
                    })?;
            layout.check(PvRegion::ConsoleInfo, start, u64::from(info_size))?;
        }
        PvConsole::Dom0 {
            info_off,
            info_size,
        }
    } else {
        PvConsole::DomU {
            mfn: si.console.first,
            evtchn: si.console.evtchn,
        }
    };

    let nul = si
        .cmd_line
        .iter()
        .position(|&b| b == 0)
        .ok_or(PvStartInfoError::CmdlineUnterminated)?;
    if let Err(e) = core::str::from_utf8(&si.cmd_line[..nul]) {
        return Err(PvStartInfoError::CmdlineNotUtf8 {
            valid_up_to: e.valid_up_to(),
        });
    }
    let mut cmdline = si.cmd_line;
    // Whatever followed the NUL is not part of it.
    cmdline[nul..].fill(0);

    Ok(PvStartInfo {
        va,
        nr_pages: si.nr_pages,
        shared_info_maddr: si.shared_info,
        flags,
        store_mfn: si.store_mfn,
        store_evtchn: si.store_evtchn,
        console,
        pt_base,
        nr_pt_frames,
        mfn_list: si.mfn_list,
        mod_start: si.mod_start,
        mod_len: si.mod_len,
        first_p2m_pfn: si.first_p2m_pfn,
        nr_p2m_frames: si.nr_p2m_frames,
        magic: si.magic,
        cmdline,
        cmdline_len: nul,
    })
}

/// The memory map of a PV guest in pvops' layout: RAM `[0,
/// reserved.start)`, `reserved` as [`MemmapType::RESERVED`], RAM
/// `[reserved.end, nr_pages * 4096)`, in that order, empty ranges left out
/// (an empty or reversed `reserved` gives one RAM range; RAM ranges are
/// clipped to `nr_pages * 4096`, which saturates at 2^64 - 1 for absurd
/// `nr_pages`). Writes at most 3 entries into `out`, as many as fit, and
/// returns how many it wrote.
pub fn pv_memmap(nr_pages: u64, reserved: Range<u64>, out: &mut [HvmMemmapEntry]) -> usize {
    let mem_end = nr_pages.saturating_mul(PAGE_SIZE);
    let entry = |r: Range<u64>, kind| HvmMemmapEntry {
        addr: r.start,
        size: r.end - r.start,
        kind,
        reserved: 0,
    };
    let mut all: [Option<HvmMemmapEntry>; 3] = [None; 3];
    if reserved.start >= reserved.end {
        all[0] = Some(entry(0..mem_end, MemmapType::RAM));
    } else {
        all[0] = Some(entry(0..reserved.start.min(mem_end), MemmapType::RAM));
        all[1] = Some(entry(reserved.clone(), MemmapType::RESERVED));
        let hi = reserved.end.min(mem_end);
        all[2] = Some(entry(hi..mem_end, MemmapType::RAM));
    }
    let mut n = 0;
    for e in all.into_iter().flatten().filter(|e| e.size != 0) {
        let Some(slot) = out.get_mut(n) else { break };
        *slot = e;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    use crate::phys::fake::FakeMem;

    // Xen's order, kernel at 0x10_0000: image, module, mfn list,
    // start_info (+ dom0 console info), page tables, stack.
    const IMAGE: Range<u64> = 0x10_0000..0x18_0000;
    const MOD: u64 = 0x18_0000;
    const MOD_LEN: u64 = 0x1234;
    const MFNS: u64 = 0x18_2000;
    const NR_PAGES: u64 = 0x800;
    const SI: u64 = 0x18_6000;
    const PT: u64 = 0x18_7000;
    const NR_PT: u64 = 4;
    const END: u64 = 0x18_c000;
    const SHARED: u64 = 0xdead_b000;

    fn magic(s: &[u8]) -> [u8; 32] {
        let mut m = [0u8; 32];
        m[..s.len()].copy_from_slice(s);
        m
    }

    fn cmd(s: &[u8]) -> [u8; MAX_GUEST_CMDLINE] {
        let mut c = [0u8; MAX_GUEST_CMDLINE];
        c[..s.len()].copy_from_slice(s);
        c
    }

    /// A dom0 start_info: console info right after the structure.
    fn dom0() -> XenStartInfo {
        XenStartInfo {
            magic: magic(b"xen-3.0-x86_64"),
            nr_pages: NR_PAGES,
            shared_info: SHARED,
            flags: (SifFlags::PRIVILEGED | SifFlags::INITDOMAIN).bits(),
            pad0: 0,
            store_mfn: 0,
            store_evtchn: 0,
            pad1: 0,
            console: RawConsole {
                first: PV_START_INFO_SIZE as u64 | 36 << 32,
                evtchn: 0,
                pad: 0,
            },
            pt_base: PT,
            nr_pt_frames: NR_PT,
            mfn_list: MFNS,
            mod_start: MOD,
            mod_len: MOD_LEN,
            cmd_line: cmd(b"console=hvc0 pvops.mode=test"),
            first_p2m_pfn: 0,
            nr_p2m_frames: 0,
        }
    }

    fn domu() -> XenStartInfo {
        XenStartInfo {
            flags: 0,
            store_mfn: 0x12_3456,
            store_evtchn: 1,
            console: RawConsole {
                first: 0x12_3457,
                evtchn: 2,
                pad: 0,
            },
            mod_start: 0,
            mod_len: 0,
            first_p2m_pfn: 0x186,
            nr_p2m_frames: 5,
            ..dom0()
        }
    }

    /// The boot layout after the image, with `si` and a pfn→mfn list where
    /// pfn `p` maps to mfn `0x10_0000 + p`.
    fn mem(si: &XenStartInfo) -> FakeMem {
        let mut m = FakeMem::new().region(MOD, (END - MOD) as usize);
        m.write(SI, si.as_bytes());
        let list: Vec<u64> = (0..NR_PAGES).map(|p| 0x10_0000 + p).collect();
        m.write(MFNS, list.as_bytes());
        m
    }

    fn parse_si(si: &XenStartInfo) -> Result<PvStartInfo, PvStartInfoError> {
        parse(&mem(si), SI, IMAGE)
    }

    #[test]
    fn good_dom0() {
        let m = mem(&dom0());
        let info = parse(&m, SI, IMAGE).unwrap();
        assert_eq!(info.va, SI);
        assert_eq!(info.magic(), "xen-3.0-x86_64");
        assert_eq!(info.nr_pages, NR_PAGES);
        assert_eq!(info.shared_info_maddr, SHARED);
        assert_eq!(info.flags, SifFlags::PRIVILEGED | SifFlags::INITDOMAIN);
        assert_eq!(info.store_mfn, 0);
        assert_eq!(info.store_evtchn, 0);
        assert_eq!(
            info.console,
            PvConsole::Dom0 {
                info_off: 1168,
                info_size: 36
            }
        );
        assert_eq!(info.pt_base, PT);
        assert_eq!(info.nr_pt_frames, NR_PT);
        assert_eq!(info.mfn_list, MFNS);
        assert_eq!(info.mod_start, MOD);
        assert_eq!(info.mod_len, MOD_LEN);
        assert_eq!(info.first_p2m_pfn, 0);
        assert_eq!(info.nr_p2m_frames, 0);
        assert_eq!(info.cmdline(), "console=hvc0 pvops.mode=test");
        assert_eq!(info.boot_layout_end(), END);
        assert_eq!(PvStartInfo::GUARANTEED_PADDING, 0x8_0000);

        let si = info.to_start_info();
        assert_eq!(si.cmdline(), "console=hvc0 pvops.mode=test");
        assert_eq!(si.cmdline_paddr, Some(SI + 128));
        assert_eq!(si.flags, 0b11);
        assert_eq!(
            si.modules(),
            &[HvmModlistEntry {
                paddr: MOD,
                size: MOD_LEN,
                cmdline_paddr: 0,
                reserved: 0
            }]
        );
        assert!(!si.has_memmap());
        assert_eq!(si.rsdp, None);

        // Debug prints without panicking and mentions the command line.
        let dbg = std::format!("{info:?}");
        assert!(dbg.contains("pvops.mode=test") && dbg.contains("xen-3.0-x86_64"));
    }

    #[test]
    fn good_domu() {
        let info = parse_si(&domu()).unwrap();
        assert_eq!(info.flags, SifFlags::empty());
        assert_eq!(
            info.console,
            PvConsole::DomU {
                mfn: 0x12_3457,
                evtchn: 2
            }
        );
        assert_eq!(info.store_mfn, 0x12_3456);
        assert_eq!(info.store_evtchn, 1);
        assert_eq!(info.first_p2m_pfn, 0x186);
        assert_eq!(info.nr_p2m_frames, 5);
        assert!(info.module().is_none());
        assert!(info.to_start_info().modules().is_empty());
    }

    #[test]
    fn to_start_info_then_memmap() {
        let info = parse_si(&dom0()).unwrap();
        let mut si = info.to_start_info();
        let mut map = [HvmMemmapEntry::new_zeroed(); 3];
        let n = pv_memmap(info.nr_pages, IMAGE.start..info.boot_layout_end(), &mut map);
        assert_eq!(si.set_memmap(&map[..n]), 3);
        let ram: Vec<_> = si.ram_regions().collect();
        assert_eq!(ram, vec![(0, 0x10_0000), (END, NR_PAGES * 4096 - END)]);
    }

    #[test]
    fn unknown_flags_are_kept() {
        let mut si = domu();
        si.flags = 0x8000_0310;
        let info = parse_si(&si).unwrap();
        assert_eq!(info.flags.bits(), 0x8000_0310);
        assert!(info.flags.contains(SifFlags::VIRT_P2M_4TOOLS));
        assert!(info.flags.intersects(SifFlags::PM_MASK));
    }

    #[test]
    fn module_by_pfn() {
        let mut si = domu();
        si.flags = SifFlags::MOD_START_PFN.bits();
        si.mod_start = 0x400;
        si.mod_len = 0x2001; // three pages
        let info = parse_si(&si).unwrap();
        assert_eq!(info.module().unwrap().paddr, 0x40_0000);
        // The last three frames: fine; one more is not.
        si.mod_start = NR_PAGES - 3;
        parse_si(&si).unwrap();
        si.mod_start = NR_PAGES - 2;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::ModuleBeyondMemory {
                pfn: NR_PAGES - 2,
                len: 0x2001,
                nr_pages: NR_PAGES
            }
        );
        assert_eq!(
            std::format!("{e}"),
            "module at pfn 0x7fe with length 0x2001 runs past nr_pages 0x800"
        );
        si.mod_start = u64::MAX;
        assert!(matches!(
            parse_si(&si),
            Err(PvStartInfoError::ModuleBeyondMemory { .. })
        ));
    }

    #[test]
    fn mfn_of_in_and_out_of_range() {
        let m = mem(&dom0());
        let info = parse(&m, SI, IMAGE).unwrap();
        assert_eq!(info.mfn_of(&m, 0), Ok(0x10_0000));
        assert_eq!(info.mfn_of(&m, NR_PAGES - 1), Ok(0x10_07ff));
        let e = info.mfn_of(&m, NR_PAGES).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::PfnOutOfRange {
                pfn: NR_PAGES,
                nr_pages: NR_PAGES
            }
        );
        assert_eq!(std::format!("{e}"), "pfn 0x800 is not below nr_pages 0x800");
        assert!(info.mfn_of(&m, u64::MAX).is_err());
        // The list is in the layout but the reader cannot reach it.
        let e = info.mfn_of(&FakeMem::new(), 5).unwrap_err();
        assert!(matches!(
            e,
            PvStartInfoError::MfnUnreadable {
                pfn: 5,
                va: 0x18_2028,
                ..
            }
        ));
        // Fields changed after parsing cannot make it overflow.
        let mut bad = info.clone();
        bad.nr_pages = u64::MAX;
        bad.mfn_list = u64::MAX - 7;
        assert!(matches!(
            bad.mfn_of(&m, 1 << 62),
            Err(PvStartInfoError::MfnUnreadable { .. })
        ));
    }

    #[test]
    fn misaligned_va() {
        let e = parse(&mem(&dom0()), SI + 4, IMAGE).unwrap_err();
        assert_eq!(e, PvStartInfoError::Misaligned { va: SI + 4 });
        assert_eq!(
            std::format!("{e}"),
            "start_info at 0x186004 is not 8-byte aligned"
        );
    }

    #[test]
    fn unreadable() {
        let e = parse(&FakeMem::new(), SI, IMAGE).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::Unreadable {
                va: SI,
                err: PhysReadError::OutOfRange {
                    paddr: SI,
                    len: PV_START_INFO_SIZE
                }
            }
        );
        assert!(std::format!("{e}").starts_with("start_info at 0x186000 unreadable: "));
        // At the top of the address space.
        let e = parse(&FakeMem::new(), u64::MAX - 7, IMAGE).unwrap_err();
        assert!(matches!(
            e,
            PvStartInfoError::Unreadable {
                va: 0xffff_ffff_ffff_fff8,
                ..
            }
        ));
        // Only part of the structure readable.
        let mut m = FakeMem::new().region(SI, 1160);
        m.write(SI, &dom0().as_bytes()[..1160]);
        assert!(matches!(
            parse(&m, SI, IMAGE),
            Err(PvStartInfoError::Unreadable { va: SI, .. })
        ));
    }

    #[test]
    fn bad_magic() {
        let mut si = dom0();
        si.magic = magic(b"xen-3.0-x86_32p");
        let e = parse_si(&si).unwrap_err();
        assert_eq!(e, PvStartInfoError::BadMagic { found: si.magic });
        assert_eq!(
            std::format!("{e}"),
            r#"bad magic "xen-3.0-x86_32p" (expected "xen-3.0-x86_64": a 64-bit PV guest)"#
        );
        // Non-printables are escaped; a magic with no NUL shows all 32.
        si.magic = [0xff; 32];
        si.magic[0] = b'"';
        si.magic[1] = b'\n';
        let s = std::format!("{}", parse_si(&si).unwrap_err());
        assert!(s.starts_with(r#"bad magic "\"\x0a\xff\xff"#), "{s}");
        assert_eq!(s.matches("\\xff").count(), 30);
        // A magic that is longer than the prefix is accepted.
        si.magic = magic(b"xen-3.0-x86_64-extra");
        assert_eq!(parse_si(&si).unwrap().magic(), "xen-3.0-x86_64-extra");
        si.magic = magic(b"xen-3.0-x86_64\xffz");
        assert_eq!(parse_si(&si).unwrap().magic(), "xen-3.0-x86_64");
    }

    #[test]
    fn nr_pages_bounds() {
        let mut si = dom0();
        si.nr_pages = 0;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(e, PvStartInfoError::NoPages);
        assert_eq!(std::format!("{e}"), "nr_pages is 0");
        si.nr_pages = MAX_NR_PAGES + 1;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::TooManyPages {
                nr_pages: MAX_NR_PAGES + 1
            }
        );
        assert_eq!(
            std::format!("{e}"),
            "nr_pages 0x10000001 exceeds 0x10000000 (1 TiB)"
        );
        si.nr_pages = u64::MAX;
        assert!(matches!(
            parse_si(&si),
            Err(PvStartInfoError::TooManyPages { .. })
        ));
    }

    #[test]
    fn nr_pages_beyond_the_mfn_list() {
        // More pages than the list has room for before the layout ends.
        let mut si = dom0();
        si.nr_pages = NR_PAGES + 0x200;
        si.mfn_list = END - NR_PAGES * 8;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::OutsideLayout {
                region: PvRegion::MfnList,
                start: END - NR_PAGES * 8,
                len: (NR_PAGES + 0x200) * 8,
                layout: (IMAGE.start, END)
            }
        );
        assert_eq!(
            std::format!("{e}"),
            "pfn->mfn list (mfn_list) [0x188000, +0x5000) (nr_pages 0xa00) is not inside the boot layout [0x100000, 0x18c000)"
        );
        // Exactly up to the layout end: accepted.
        si.mfn_list = END - (NR_PAGES + 0x200) * 8;
        parse_si(&si).unwrap();
        // mfn_list + nr_pages * 8 wraps.
        si.mfn_list = u64::MAX - 7;
        let e = parse_si(&si).unwrap_err();
        assert!(matches!(
            e,
            PvStartInfoError::RangeOverflow {
                region: PvRegion::MfnList,
                start: 0xffff_ffff_ffff_fff8,
                ..
            }
        ));
        assert!(std::format!("{e}").ends_with("wraps past the end of the address space"));
    }

    #[test]
    fn mfn_list_misaligned_or_in_image() {
        let mut si = dom0();
        si.mfn_list = MFNS + 4;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::MfnListMisaligned { mfn_list: MFNS + 4 }
        );
        assert_eq!(
            std::format!("{e}"),
            "mfn_list 0x182004 is not 8-byte aligned"
        );
        si.mfn_list = IMAGE.end - 8;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::OverlapsImage {
                region: PvRegion::MfnList,
                start: IMAGE.end - 8,
                len: NR_PAGES * 8,
                image_end: IMAGE.end
            }
        );
        assert!(std::format!("{e}").contains("overlaps the kernel image (ends at 0x180000)"));
        // Before the image: outside the layout.
        si.mfn_list = 0x1000;
        assert!(matches!(
            parse_si(&si),
            Err(PvStartInfoError::OutsideLayout {
                region: PvRegion::MfnList,
                ..
            })
        ));
    }

    #[test]
    fn shared_info() {
        let mut si = dom0();
        si.shared_info = 0;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(e, PvStartInfoError::SharedInfoMissing);
        assert_eq!(std::format!("{e}"), "shared_info machine address is 0");
        si.shared_info = SHARED + 8;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::SharedInfoMisaligned { maddr: SHARED + 8 }
        );
        assert_eq!(
            std::format!("{e}"),
            "shared_info machine address 0xdeadb008 is not page aligned"
        );
    }

    #[test]
    fn page_tables() {
        let mut si = dom0();
        si.pt_base = PT + 0x10;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(e, PvStartInfoError::PtBaseMisaligned { pt_base: PT + 0x10 });
        assert_eq!(std::format!("{e}"), "pt_base 0x187010 is not page aligned");

        si = dom0();
        si.nr_pt_frames = 0;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(e, PvStartInfoError::BadPtFrames { nr_pt_frames: 0 });
        assert_eq!(std::format!("{e}"), "nr_pt_frames 0 is not in 1..=4096");
        si.nr_pt_frames = MAX_PT_FRAMES + 1;
        assert_eq!(
            parse_si(&si).unwrap_err(),
            PvStartInfoError::BadPtFrames { nr_pt_frames: 4097 }
        );

        // pt_base + tables + stack wraps.
        si = dom0();
        si.pt_base = u64::MAX - 0xfff - 3 * PAGE_SIZE;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::LayoutOverflow {
                pt_base: si.pt_base,
                nr_pt_frames: NR_PT
            }
        );
        assert!(std::format!("{e}").contains("wraps past the end"));
        // One page lower, the stack page ends exactly at 2^64: still a
        // wrap.
        si.pt_base = u64::MAX - 0xfff - 4 * PAGE_SIZE;
        assert!(matches!(
            parse_si(&si),
            Err(PvStartInfoError::LayoutOverflow { .. })
        ));

        // Tables inside the image.
        si = dom0();
        si.pt_base = IMAGE.end - PAGE_SIZE;
        let e = parse_si(&si).unwrap_err();
        assert!(
            matches!(
                e,
                PvStartInfoError::OverlapsImage {
                    region: PvRegion::PageTables,
                    ..
                }
            ),
            "{e:?}"
        );
        // Tables before the image.
        si.pt_base = 0;
        assert!(matches!(
            parse_si(&si),
            Err(PvStartInfoError::OutsideLayout {
                region: PvRegion::PageTables,
                ..
            })
        ));
    }

    #[test]
    fn start_info_outside_layout() {
        // Tables moved down: the structure lies past the layout end.
        let mut si = dom0();
        si.pt_base = MFNS + 0x1000;
        si.nr_pt_frames = 1;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::OutsideLayout {
                region: PvRegion::StartInfo,
                start: SI,
                len: 1168,
                layout: (IMAGE.start, MFNS + 0x3000)
            }
        );
        assert_eq!(
            std::format!("{e}"),
            "start_info [0x186000, +0x490) is not inside the boot layout [0x100000, 0x185000)"
        );
        // The structure inside the kernel image.
        let mut m = FakeMem::new().region(IMAGE.start, (END - IMAGE.start) as usize);
        m.write(IMAGE.end - 0x1000, dom0().as_bytes());
        assert!(matches!(
            parse(&m, IMAGE.end - 0x1000, IMAGE),
            Err(PvStartInfoError::OverlapsImage {
                region: PvRegion::StartInfo,
                ..
            })
        ));
    }

    #[test]
    fn module_outside_layout() {
        let mut si = dom0();
        si.mod_start = END - 0x100;
        let e = parse_si(&si).unwrap_err();
        assert_eq!(
            e,
            PvStartInfoError::OutsideLayout {
                region: PvRegion::Module,
                start: END - 0x100,
                len: MOD_LEN,
                layout: (IMAGE.start, END)
            }
        );
        si.mod_start = u64::MAX - 0x10;
        assert!(matches!(
            parse_si(&si),
            Err(PvStartInfoError::RangeOverflow {
                region: PvRegion::Module,
                ..
            })
        ));
        si.mod_start = IMAGE.start;
        assert!(matches!(
            parse_si(&si),
            Err(PvStartInfoError::OverlapsImage {
                region: PvRegion::Module,
                ..
            })
        ));
        // No module: mod_start is not looked at.
        si.mod_len = 0;
        si.mod_start = u64::MAX;
        assert!(parse_si(&si).unwrap().module().is_none());
    }

    #[test]
    fn dom0_console_info_outside_layout() {
        let mut si = dom0();
        si.console.first = u64::from(u32::MAX - 4) | 16 << 32;
        let e = parse_si(&si).unwrap_err();
        assert!(matches!(
            e,
            PvStartInfoError::OutsideLayout {
                region: PvRegion::ConsoleInfo,
                ..
            }
        ));
        assert!(std::format!("{e}").starts_with("dom0 console info (console.dom0) [0x100185ffb"));
        // A zero size is not looked at.
        si.console.first = u64::from(u32::MAX);
        assert_eq!(
            parse_si(&si).unwrap().console,
            PvConsole::Dom0 {
                info_off: u32::MAX,
                info_size: 0
            }
        );
        // The same words in a domU are a ring frame and need no check.
        si.flags = 0;
        si.console.first = u64::from(u32::MAX - 4) | 16 << 32;
        assert!(matches!(
            parse_si(&si).unwrap().console,
            PvConsole::DomU { .. }
        ));
    }

    #[test]
    fn cmdline() {
        let mut si = dom0();
        si.cmd_line = [b'a'; MAX_GUEST_CMDLINE];
        let e = parse_si(&si).unwrap_err();
        assert_eq!(e, PvStartInfoError::CmdlineUnterminated);
        assert_eq!(
            std::format!("{e}"),
            "command line has no NUL within 1024 bytes"
        );
        // The longest: 1023 bytes and the NUL.
        si.cmd_line[MAX_GUEST_CMDLINE - 1] = 0;
        let info = parse_si(&si).unwrap();
        assert_eq!(info.cmdline().len(), MAX_GUEST_CMDLINE - 1);
        assert_eq!(info.to_start_info().cmdline().len(), MAX_GUEST_CMDLINE - 1);
        // Not UTF-8.
        si.cmd_line = cmd(b"ok \xff\xfe");
        let e = parse_si(&si).unwrap_err();
        assert_eq!(e, PvStartInfoError::CmdlineNotUtf8 { valid_up_to: 3 });
        assert_eq!(
            std::format!("{e}"),
            "command line is not UTF-8 (bad byte at offset 3)"
        );
        // Bytes after the NUL are ignored, even if not UTF-8.
        si.cmd_line = cmd("caf\u{e9}\0\u{ff}junk".as_bytes());
        si.cmd_line[10] = 0xff;
        assert_eq!(parse_si(&si).unwrap().cmdline(), "caf\u{e9}");
        // Empty.
        si.cmd_line = [0; MAX_GUEST_CMDLINE];
        let info = parse_si(&si).unwrap();
        assert_eq!(info.cmdline(), "");
        assert_eq!(info.to_start_info().cmdline(), "");
    }

    #[test]
    fn memmap_edges() {
        let mut out = [HvmMemmapEntry::new_zeroed(); 4];
        let ram = |a, s| HvmMemmapEntry {
            addr: a,
            size: s,
            kind: MemmapType::RAM,
            reserved: 0,
        };
        let res = |a, s| HvmMemmapEntry {
            addr: a,
            size: s,
            kind: MemmapType::RESERVED,
            reserved: 0,
        };
        // The usual case.
        let n = pv_memmap(0x800, 0x10_0000..END, &mut out);
        assert_eq!(
            &out[..n],
            &[
                ram(0, 0x10_0000),
                res(0x10_0000, END - 0x10_0000),
                ram(END, 0x80_0000 - END)
            ]
        );
        // Reserved at 0.
        let n = pv_memmap(0x800, 0..0x2000, &mut out);
        assert_eq!(&out[..n], &[res(0, 0x2000), ram(0x2000, 0x7f_e000)]);
        // Reserved up to the end, and past it.
        let n = pv_memmap(0x800, 0x1000..0x80_0000, &mut out);
        assert_eq!(&out[..n], &[ram(0, 0x1000), res(0x1000, 0x7f_f000)]);
        let n = pv_memmap(0x800, 0x1000..0x90_0000, &mut out);
        assert_eq!(&out[..n], &[ram(0, 0x1000), res(0x1000, 0x8f_f000)]);
        // Reserved entirely past the end of RAM.
        let n = pv_memmap(0x800, 0x90_0000..0x91_0000, &mut out);
        assert_eq!(&out[..n], &[ram(0, 0x80_0000), res(0x90_0000, 0x1_0000)]);
        // Reserved covering everything.
        let n = pv_memmap(0x800, 0..0x80_0000, &mut out);
        assert_eq!(&out[..n], &[res(0, 0x80_0000)]);
        // Empty or reversed reserved range: all RAM, one entry.
        let n = pv_memmap(0x800, 0x5000..0x5000, &mut out);
        assert_eq!(&out[..n], &[ram(0, 0x80_0000)]);
        #[allow(clippy::reversed_empty_ranges)]
        let n = pv_memmap(0x800, 0x6000..0x5000, &mut out);
        assert_eq!(&out[..n], &[ram(0, 0x80_0000)]);
        // No pages and nothing reserved: nothing.
        assert_eq!(pv_memmap(0, 0..0, &mut out), 0);
        // Too small an output: as many as fit.
        assert_eq!(pv_memmap(0x800, 0x10_0000..END, &mut out[..2]), 2);
        assert_eq!(pv_memmap(0x800, 0x10_0000..END, &mut []), 0);
        // Absurd nr_pages saturates instead of wrapping.
        let n = pv_memmap(u64::MAX, 0..0x1000, &mut out);
        assert_eq!(&out[..n], &[res(0, 0x1000), ram(0x1000, u64::MAX - 0x1000)]);
        assert!(out[..n].iter().all(|e| e.end().is_some()));
    }

    #[test]
    fn every_error_displays_on_one_line() {
        let err = PhysReadError::OutOfRange { paddr: 1, len: 2 };
        let r = PvRegion::MfnList;
        let all = [
            PvStartInfoError::Misaligned { va: 1 },
            PvStartInfoError::Unreadable { va: 1, err },
            PvStartInfoError::BadMagic { found: [b'\n'; 32] },
            PvStartInfoError::NoPages,
            PvStartInfoError::TooManyPages { nr_pages: 1 },
            PvStartInfoError::SharedInfoMissing,
            PvStartInfoError::SharedInfoMisaligned { maddr: 1 },
            PvStartInfoError::PtBaseMisaligned { pt_base: 1 },
            PvStartInfoError::BadPtFrames { nr_pt_frames: 0 },
            PvStartInfoError::LayoutOverflow {
                pt_base: 1,
                nr_pt_frames: 2,
            },
            PvStartInfoError::MfnListMisaligned { mfn_list: 1 },
            PvStartInfoError::RangeOverflow {
                region: r,
                start: 1,
                len: 2,
            },
            PvStartInfoError::OutsideLayout {
                region: PvRegion::StartInfo,
                start: 1,
                len: 2,
                layout: (3, 4),
            },
            PvStartInfoError::OverlapsImage {
                region: PvRegion::Module,
                start: 1,
                len: 2,
                image_end: 3,
            },
            PvStartInfoError::ModuleBeyondMemory {
                pfn: 1,
                len: 2,
                nr_pages: 3,
            },
            PvStartInfoError::CmdlineUnterminated,
            PvStartInfoError::CmdlineNotUtf8 { valid_up_to: 0 },
            PvStartInfoError::PfnOutOfRange {
                pfn: 1,
                nr_pages: 1,
            },
            PvStartInfoError::MfnUnreadable { pfn: 1, va: 2, err },
        ];
        for e in all {
            let s = std::format!("{e}");
            assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
        }
        for r in [
            PvRegion::StartInfo,
            PvRegion::MfnList,
            PvRegion::Module,
            PvRegion::PageTables,
            PvRegion::ConsoleInfo,
        ] {
            assert!(!std::format!("{r}").is_empty());
        }
    }

    use crate::phys::fake::Logged;

    #[test]
    fn read_once() {
        let m = mem(&dom0());
        let logged = Logged {
            mem: &m,
            log: Default::default(),
        };
        parse(&logged, SI, IMAGE).unwrap();
        assert_eq!(
            logged.log.into_inner(),
            vec![(SI, SI + PV_START_INFO_SIZE as u64)]
        );
    }

    use crate::phys::fake::Rng;

    #[test]
    fn mutated_input_never_panics() {
        // Only the structure is readable: small enough to clone under Miri.
        let mut base = FakeMem::new().region(SI, PV_START_INFO_SIZE);
        base.write(SI, dom0().as_bytes());
        // The fields before the command line, and its first bytes.
        let span = 128 + 16;
        let mut rng = Rng(0x5eed_9abc_0123_0002);
        let (mut ok, mut err) = (0, 0);
        let rounds = if cfg!(miri) { 200 } else { 4000 };
        for _ in 0..rounds {
            let mut m = FakeMem {
                regions: base.regions.clone(),
            };
            for _ in 0..1 + rng.below(3) {
                let at = SI + rng.below(span) as u64;
                let byte = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => 1 << rng.below(8),
                    _ => rng.next_u64() as u8,
                };
                m.write(at, &[byte]);
            }
            match parse(&m, SI, IMAGE) {
                Ok(info) => {
                    ok += 1;
                    let end = info.boot_layout_end();
                    assert!(info.nr_pages >= 1 && info.nr_pages <= MAX_NR_PAGES);
                    assert!(info.mfn_list >= IMAGE.end);
                    assert!(info.mfn_list + info.nr_pages * 8 <= end);
                    assert!(info.pt_base >= IMAGE.end);
                    assert!(info.cmdline().len() < MAX_GUEST_CMDLINE);
                    assert!(info.magic().starts_with("xen-3.0-x86_64"));
                    let _ = info.to_start_info();
                    let _ = info.mfn_of(&m, info.nr_pages - 1);
                }
                Err(e) => {
                    err += 1;
                    assert!(!std::format!("{e}").is_empty());
                }
            }
        }
        let enough = rounds / 40;
        assert!(ok > enough && err > enough, "ok={ok} err={err}");
    }
}
