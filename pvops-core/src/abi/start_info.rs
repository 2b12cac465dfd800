//! `hvm_start_info`: what a PVH loader hands the kernel in EBX.
//!
//! A PVH loader (Xen, QEMU's `-kernel` PVH path, cloud-hypervisor,
//! Firecracker) enters the kernel in 32-bit protected mode with EBX holding
//! the physical address of a start-of-day structure. Its layout is fixed by
//! Xen's public header `arch-x86/hvm/start_info.h`:
//!
//! | offset | field            | since   |
//! |-------:|------------------|---------|
//! |      0 | `magic`          | v0      |
//! |      4 | `version`        | v0      |
//! |      8 | `flags`          | v0      |
//! |     12 | `nr_modules`     | v0      |
//! |     16 | `modlist_paddr`  | v0      |
//! |     24 | `cmdline_paddr`  | v0      |
//! |     32 | `rsdp_paddr`     | v0      |
//! |     40 | `memmap_paddr`   | v1      |
//! |     48 | `memmap_entries` | v1      |
//! |     52 | `reserved`       | v1      |
//!
//! Every integer is little endian; a physical address of 0 means "not
//! present". A version 0 structure is only 40 bytes long, and a version 1
//! structure may still carry no memory map (`memmap_entries == 0`).
//!
//! [`parse`] copies the structure and everything it points to out of
//! guest-physical memory once, through a [`PhysRead`], and checks the copy:
//! nothing the loader wrote is read twice, and nothing is used before it is
//! checked. The result, [`StartInfo`], owns its data (fixed-capacity
//! buffers, no allocation).

use core::fmt;

use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use crate::phys::{PhysRead, PhysReadError};

/// `XEN_HVM_START_MAGIC_VALUE`: "xEn3" with the 0x80 bit of the "E" set.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// The newest structure version this parser understands.
pub const HVM_START_MAX_VERSION: u32 = 1;

/// Size of a version 0 [`HvmStartInfo`] (everything before `memmap_paddr`).
pub const HVM_START_INFO_V0_SIZE: usize = 40;

/// Size of a version 1 [`HvmStartInfo`].
pub const HVM_START_INFO_V1_SIZE: usize = 56;

/// Most memory-map entries [`parse`] accepts; more is an error.
pub const MAX_MEMMAP_ENTRIES: usize = 128;

/// Most modules [`parse`] accepts; more is an error.
pub const MAX_MODULES: usize = 16;

/// Size of the command-line buffer, terminating NUL included: the longest
/// accepted command line is `MAX_CMDLINE - 1` bytes.
pub const MAX_CMDLINE: usize = 1024;

/// The command line is read in pieces that never cross a multiple of this
/// many bytes, so a short string at the end of readable memory never makes
/// the reader touch what lies beyond the page it ends in.
const CMDLINE_CHUNK: usize = 64;

/// `struct hvm_start_info`, as laid out in memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// Structure version: 0 or 1.
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Number of [`HvmModlistEntry`] at `modlist_paddr`.
    pub nr_modules: u32,
    /// Physical address of the module list.
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP.
    pub rsdp_paddr: u64,
    /// Physical address of the memory map (version 1 and later).
    pub memmap_paddr: u64,
    /// Number of [`HvmMemmapEntry`] at `memmap_paddr`; 0 if there is no map
    /// (version 1 and later).
    pub memmap_entries: u32,
    /// Must be zero (version 1 and later).
    pub reserved: u32,
}

const_assert_eq!(core::mem::size_of::<HvmStartInfo>(), HVM_START_INFO_V1_SIZE);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, magic), 0);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, version), 4);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, flags), 8);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, nr_modules), 12);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, modlist_paddr), 16);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, cmdline_paddr), 24);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, rsdp_paddr), 32);
const_assert_eq!(
    core::mem::offset_of!(HvmStartInfo, memmap_paddr),
    HVM_START_INFO_V0_SIZE
);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, memmap_entries), 48);
const_assert_eq!(core::mem::offset_of!(HvmStartInfo, reserved), 52);

/// `struct hvm_modlist_entry`: one module the loader placed in memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size of the module in bytes.
    pub size: u64,
    /// Physical address of the module's NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Reserved.
    pub reserved: u64,
}

const_assert_eq!(core::mem::size_of::<HvmModlistEntry>(), 32);
const_assert_eq!(core::mem::offset_of!(HvmModlistEntry, paddr), 0);
const_assert_eq!(core::mem::offset_of!(HvmModlistEntry, size), 8);
const_assert_eq!(core::mem::offset_of!(HvmModlistEntry, cmdline_paddr), 16);
const_assert_eq!(core::mem::offset_of!(HvmModlistEntry, reserved), 24);

/// The type of a memory-map entry. The values are ACPI's address range
/// types; Xen adds its own in the OEM range (0xF0000000 and up).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct MemmapType(pub u32);

impl MemmapType {
    /// Usable RAM.
    pub const RAM: Self = Self(1);
    /// Reserved: do not use.
    pub const RESERVED: Self = Self(2);
    /// ACPI tables, reclaimable once they are read.
    pub const ACPI: Self = Self(3);
    /// ACPI non-volatile storage: keep.
    pub const NVS: Self = Self(4);
    /// Memory with detected errors.
    pub const UNUSABLE: Self = Self(5);
    /// Memory that is disabled.
    pub const DISABLED: Self = Self(6);
    /// Persistent memory.
    pub const PMEM: Self = Self(7);
    /// Xen: the shared-info page.
    pub const XEN_SHARED_INFO: Self = Self(0xF000_0001);
    /// Xen: grant-table frames.
    pub const XEN_GRANT_TABLE: Self = Self(0xF000_0002);
    /// Xen: grant-table status frames (v2).
    pub const XEN_GNTTAB_STATUS: Self = Self(0xF000_0003);
    /// Xen: a range suitable for grant and foreign mappings.
    pub const XEN_FOREIGN_REG: Self = Self(0xF000_0004);

    /// A short lowercase name, or `None` for a type pvops does not know.
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "ram",
            2 => "reserved",
            3 => "acpi",
            4 => "nvs",
            5 => "unusable",
            6 => "disabled",
            7 => "pmem",
            0xF000_0001 => "xen-shared-info",
            0xF000_0002 => "xen-grant-table",
            0xF000_0003 => "xen-gnttab-status",
            0xF000_0004 => "xen-foreign",
            _ => return None,
        })
    }
}

/// The short name, or `type:0x...` for an unknown value.
impl fmt::Display for MemmapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "type:{:#x}", self.0),
        }
    }
}

impl fmt::Debug for MemmapType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `struct hvm_memmap_table_entry`: one range of the memory map.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct HvmMemmapEntry {
    /// First byte of the range.
    pub addr: u64,
    /// Length of the range in bytes.
    pub size: u64,
    /// What the range is (`type` in the C header).
    pub kind: MemmapType,
    /// Must be zero.
    pub reserved: u32,
}

const_assert_eq!(core::mem::size_of::<HvmMemmapEntry>(), 24);
const_assert_eq!(core::mem::offset_of!(HvmMemmapEntry, addr), 0);
const_assert_eq!(core::mem::offset_of!(HvmMemmapEntry, size), 8);
const_assert_eq!(core::mem::offset_of!(HvmMemmapEntry, kind), 16);
const_assert_eq!(core::mem::offset_of!(HvmMemmapEntry, reserved), 20);

impl HvmMemmapEntry {
    /// One past the last byte, or `None` if `addr + size` overflows (never
    /// for an entry of a parsed [`StartInfo`]).
    pub const fn end(&self) -> Option<u64> {
        self.addr.checked_add(self.size)
    }

    /// Whether this is a non-empty RAM range.
    pub fn is_ram(&self) -> bool {
        self.kind == MemmapType::RAM && self.size != 0
    }
}

/// Which part of the structure a read failed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartInfoError {
    /// The structure itself could not be read.
    HeaderUnreadable {
        /// Where the structure was said to be.
        paddr: u64,
        /// The reader's error.
        err: PhysReadError,
    },
    /// `magic` is not [`HVM_START_MAGIC`].
    BadMagic {
        /// The value found.
        found: u32,
    },
    /// `version` is newer than [`HVM_START_MAX_VERSION`].
    UnsupportedVersion {
        /// The value found.
        version: u32,
    },
    /// `memmap_entries` exceeds [`MAX_MEMMAP_ENTRIES`].
    TooManyMemmapEntries {
        /// The value found.
        entries: u32,
    },
    /// The memory map's address is 0 or its end overflows.
    MemmapOutOfRange {
        /// `memmap_paddr`.
        paddr: u64,
        /// `memmap_entries`.
        entries: u32,
    },
    /// The memory map could not be read.
    MemmapUnreadable {
        /// `memmap_paddr`.
        paddr: u64,
        /// `memmap_entries`.
        entries: u32,
        /// The reader's error.
        err: PhysReadError,
    },
    /// A memory-map entry's `addr + size` overflows.
    MemmapEntryOverflow {
        /// Index of the entry.
        index: usize,
        /// Its `addr`.
        addr: u64,
        /// Its `size`.
        size: u64,
    },
    /// The memory map has no non-empty RAM entry.
    NoRam {
        /// How many entries it has.
        entries: u32,
    },
    /// The command line does not start inside a RAM range of the map.
    CmdlineNotInRam {
        /// `cmdline_paddr`.
        paddr: u64,
    },
    /// The command line runs past the end of the RAM it starts in.
    CmdlineLeavesRam {
        /// `cmdline_paddr`.
        paddr: u64,
        /// End of that RAM.
        ram_end: u64,
    },
    /// The command line could not be read.
    CmdlineUnreadable {
        /// `cmdline_paddr`.
        paddr: u64,
        /// The reader's error.
        err: PhysReadError,
    },
    /// No NUL within the first [`MAX_CMDLINE`] bytes.
    CmdlineUnterminated {
        /// `cmdline_paddr`.
        paddr: u64,
    },
    /// The command line is not UTF-8.
    CmdlineNotUtf8 {
        /// `cmdline_paddr`.
        paddr: u64,
        /// Length of the valid prefix.
        valid_up_to: usize,
    },
    /// `nr_modules` exceeds [`MAX_MODULES`].
    TooManyModules {
        /// The value found.
        nr_modules: u32,
    },
    /// The module list's address is 0 or its end overflows.
    ModlistOutOfRange {
        /// `modlist_paddr`.
        paddr: u64,
        /// `nr_modules`.
        nr_modules: u32,
    },
    /// The module list could not be read.
    ModlistUnreadable {
        /// `modlist_paddr`.
        paddr: u64,
        /// `nr_modules`.
        nr_modules: u32,
        /// The reader's error.
        err: PhysReadError,
    },
}

impl fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use StartInfoError as E;
        match *self {
            E::HeaderUnreadable { paddr, err } => {
                write!(f, "structure at {paddr:#x} unreadable: {err}")
            }
            E::BadMagic { found } => {
                write!(f, "bad magic {found:#010x} (expected {HVM_START_MAGIC:#010x})")
            }
            E::UnsupportedVersion { version } => write!(
                f,
                "unsupported version {version} (this kernel knows 0..={HVM_START_MAX_VERSION})"
            ),
            E::TooManyMemmapEntries { entries } => write!(
                f,
                "memory map has {entries} entries (at most {MAX_MEMMAP_ENTRIES} supported)"
            ),
            E::MemmapOutOfRange { paddr, entries } => write!(
                f,
                "memory map at {paddr:#x} with {entries} entries is not a valid range"
            ),
            E::MemmapUnreadable {
                paddr,
                entries,
                err,
            } => write!(
                f,
                "memory map at {paddr:#x} ({entries} entries) unreadable: {err}"
            ),
            E::MemmapEntryOverflow { index, addr, size } => write!(
                f,
                "memory map entry {index} ({addr:#x}+{size:#x}) wraps past the end of the address space"
            ),
            E::NoRam { entries } => {
                write!(f, "memory map ({entries} entries) has no RAM")
            }
            E::CmdlineNotInRam { paddr } => {
                write!(f, "command line at {paddr:#x} is not in RAM")
            }
            E::CmdlineLeavesRam { paddr, ram_end } => write!(
                f,
                "command line at {paddr:#x} runs past the end of RAM at {ram_end:#x}"
            ),
            E::CmdlineUnreadable { paddr, err } => {
                write!(f, "command line at {paddr:#x} unreadable: {err}")
            }
            E::CmdlineUnterminated { paddr } => write!(
                f,
                "command line at {paddr:#x} has no NUL within {MAX_CMDLINE} bytes"
            ),
            E::CmdlineNotUtf8 { paddr, valid_up_to } => write!(
                f,
                "command line at {paddr:#x} is not UTF-8 (bad byte at offset {valid_up_to})"
            ),
            E::TooManyModules { nr_modules } => write!(
                f,
                "{nr_modules} modules (at most {MAX_MODULES} supported)"
            ),
            E::ModlistOutOfRange { paddr, nr_modules } => write!(
                f,
                "module list at {paddr:#x} with {nr_modules} entries is not a valid range"
            ),
            E::ModlistUnreadable {
                paddr,
                nr_modules,
                err,
            } => write!(
                f,
                "module list at {paddr:#x} ({nr_modules} entries) unreadable: {err}"
            ),
        }
    }
}

impl core::error::Error for StartInfoError {}

/// A checked, owned copy of an `hvm_start_info` and what it points to.
///
/// The scalar header fields are public; the memory map, module list and
/// command line are reached through methods.
#[derive(Clone)]
pub struct StartInfo {
    /// Structure version (0 or 1).
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Number of modules (at most [`MAX_MODULES`]).
    pub nr_modules: u32,
    /// Physical address of the module list (0 when there are no modules).
    pub modlist_paddr: u64,
    /// Physical address of the command line, if one was given.
    pub cmdline_paddr: Option<u64>,
    /// Physical address of the ACPI RSDP, if one was given.
    pub rsdp: Option<u64>,
    /// Physical address of the memory map, if one was given.
    pub memmap_paddr: Option<u64>,
    memmap: [HvmMemmapEntry; MAX_MEMMAP_ENTRIES],
    memmap_len: usize,
    modules: [HvmModlistEntry; MAX_MODULES],
    cmdline: [u8; MAX_CMDLINE],
    cmdline_len: usize,
}

impl StartInfo {
    /// Builds boot information that did not come from an
    /// `hvm_start_info` (a PV `start_info`, see
    /// [`PvStartInfo::to_start_info`](super::pv_start_info::PvStartInfo::to_start_info)):
    /// version 0, no RSDP and no memory map (supply one with
    /// [`set_memmap`](Self::set_memmap)), at most one module and no module
    /// list in memory (`modlist_paddr` 0). A command line longer than
    /// `MAX_CMDLINE - 1` bytes is cut at the last character boundary that
    /// fits.
    pub(crate) fn synthesized(
        flags: u32,
        cmdline_paddr: Option<u64>,
        cmdline: &str,
        module: Option<HvmModlistEntry>,
    ) -> Self {
        let mut len = cmdline.len().min(MAX_CMDLINE - 1);
        while !cmdline.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0u8; MAX_CMDLINE];
        buf[..len].copy_from_slice(&cmdline.as_bytes()[..len]);
        let mut modules = [HvmModlistEntry::new_zeroed(); MAX_MODULES];
        let nr_modules = match module {
            Some(m) => {
                modules[0] = m;
                1
            }
            None => 0,
        };
        StartInfo {
            version: 0,
            flags,
            nr_modules,
            modlist_paddr: 0,
            cmdline_paddr,
            rsdp: None,
            memmap_paddr: None,
            memmap: [HvmMemmapEntry::new_zeroed(); MAX_MEMMAP_ENTRIES],
            memmap_len: 0,
            modules,
            cmdline: buf,
            cmdline_len: len,
        }
    }

    /// Whether the loader passed a memory map. A version 0 structure never
    /// does; a version 1 structure may not either (`memmap_entries == 0`).
    /// Without one the kernel needs another source (E820 through the
    /// firmware or the hypervisor) for its RAM layout.
    pub fn has_memmap(&self) -> bool {
        self.memmap_len != 0
    }

    /// Supplies the memory map from another source when the loader passed
    /// none (Xen gives a PVH dom0 a version 0 structure and the map through
    /// `XENMEM_memory_map`). Keeps the first [`MAX_MEMMAP_ENTRIES`] entries
    /// whose end does not overflow; returns how many were kept. Does
    /// nothing and returns 0 when the structure already has a map.
    pub fn set_memmap(&mut self, entries: &[HvmMemmapEntry]) -> usize {
        if self.has_memmap() {
            return 0;
        }
        let mut n = 0;
        for e in entries.iter().filter(|e| e.end().is_some()) {
            if n == MAX_MEMMAP_ENTRIES {
                break;
            }
            self.memmap[n] = *e;
            n += 1;
        }
        self.memmap_len = n;
        n
    }

    /// The memory map, in the loader's order; empty if there is none.
    pub fn memmap(&self) -> &[HvmMemmapEntry] {
        &self.memmap[..self.memmap_len.min(MAX_MEMMAP_ENTRIES)]
    }

    /// Every non-empty RAM range of the memory map as `(addr, size)`.
    pub fn ram_regions(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.memmap()
            .iter()
            .filter(|e| e.is_ram())
            .map(|e| (e.addr, e.size))
    }

    /// The modules the loader passed.
    pub fn modules(&self) -> &[HvmModlistEntry] {
        let n = usize::try_from(self.nr_modules).unwrap_or(MAX_MODULES);
        &self.modules[..n.min(MAX_MODULES)]
    }

    /// The command line (empty if none was given).
    pub fn cmdline(&self) -> &str {
        let bytes = &self.cmdline[..self.cmdline_len.min(MAX_CMDLINE)];
        // `parse` checked that these bytes are UTF-8; the fallback is never
        // taken.
        core::str::from_utf8(bytes).unwrap_or("")
    }
}

impl fmt::Debug for StartInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StartInfo")
            .field("version", &self.version)
            .field("flags", &format_args!("{:#x}", self.flags))
            .field("modules", &self.modules())
            .field("cmdline", &self.cmdline())
            .field("rsdp", &self.rsdp)
            .field("memmap", &self.memmap())
            .finish()
    }
}

/// Reads and checks the `hvm_start_info` at `paddr`.
///
/// Checks, in order: the magic; the version (0 or 1; a version 0 structure
/// is read as 40 bytes and yields no memory map); the memory map (at most
/// [`MAX_MEMMAP_ENTRIES`] entries, a non-overflowing readable range, no
/// entry wrapping past 2^64, at least one non-empty RAM entry); the command
/// line (inside RAM when there is a map, readable, NUL-terminated within
/// [`MAX_CMDLINE`] bytes, UTF-8); the module list (at most [`MAX_MODULES`]
/// entries, readable).
pub fn parse(mem: &impl PhysRead, paddr: u64) -> Result<StartInfo, StartInfoError> {
    let mut hdr = HvmStartInfo::new_zeroed();
    let raw = hdr.as_mut_bytes();
    let (v0, v1_tail) = raw.split_at_mut(HVM_START_INFO_V0_SIZE);
    mem.read_phys(paddr, v0)
        .map_err(|err| StartInfoError::HeaderUnreadable { paddr, err })?;
    let magic = u32::from_le_bytes([v0[0], v0[1], v0[2], v0[3]]);
    if magic != HVM_START_MAGIC {
        return Err(StartInfoError::BadMagic { found: magic });
    }
    let version = u32::from_le_bytes([v0[4], v0[5], v0[6], v0[7]]);
    if version > HVM_START_MAX_VERSION {
        return Err(StartInfoError::UnsupportedVersion { version });
    }
    if version >= 1 {
        // The v1 tail follows the 40 bytes already copied; read only it.
        let tail_paddr = paddr.checked_add(HVM_START_INFO_V0_SIZE as u64).ok_or(
            StartInfoError::HeaderUnreadable {
                paddr,
                err: PhysReadError::OutOfRange {
                    paddr,
                    len: HVM_START_INFO_V1_SIZE,
                },
            },
        )?;
        mem.read_phys(tail_paddr, v1_tail)
            .map_err(|err| StartInfoError::HeaderUnreadable { paddr, err })?;
    }
    // From here on only the local copy `hdr` is looked at. For version 0 its
    // v1 fields are still zero: no memory map.

    let mut info = StartInfo {
        version: hdr.version,
        flags: hdr.flags,
        nr_modules: 0,
        modlist_paddr: 0,
        cmdline_paddr: nonzero(hdr.cmdline_paddr),
        rsdp: nonzero(hdr.rsdp_paddr),
        memmap_paddr: None,
        memmap: [HvmMemmapEntry::new_zeroed(); MAX_MEMMAP_ENTRIES],
        memmap_len: 0,
        modules: [HvmModlistEntry::new_zeroed(); MAX_MODULES],
        cmdline: [0; MAX_CMDLINE],
        cmdline_len: 0,
    };

    read_memmap(mem, &hdr, &mut info)?;
    read_cmdline(mem, &hdr, &mut info)?;
    read_modlist(mem, &hdr, &mut info)?;
    Ok(info)
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

/// `paddr + count * size` must not overflow and `paddr` must not be 0.
fn array_len(paddr: u64, count: u32, size: usize) -> Option<usize> {
    let len = usize::try_from(count).ok()?.checked_mul(size)?;
    paddr.checked_add(u64::try_from(len).ok()?)?;
    (paddr != 0).then_some(len)
}

fn read_memmap(
    mem: &impl PhysRead,
    hdr: &HvmStartInfo,
    info: &mut StartInfo,
) -> Result<(), StartInfoError> {
    let (paddr, entries) = (hdr.memmap_paddr, hdr.memmap_entries);
    if entries == 0 {
        return Ok(());
    }
    let n = match usize::try_from(entries) {
        Ok(n) if n <= MAX_MEMMAP_ENTRIES => n,
        _ => return Err(StartInfoError::TooManyMemmapEntries { entries }),
    };
    let len = array_len(paddr, entries, core::mem::size_of::<HvmMemmapEntry>())
        .ok_or(StartInfoError::MemmapOutOfRange { paddr, entries })?;
    let slots = &mut info.memmap[..n];
    let bytes = slots.as_mut_bytes();
    mem.read_phys(paddr, &mut bytes[..len])
        .map_err(|err| StartInfoError::MemmapUnreadable {
            paddr,
            entries,
            err,
        })?;
    for (index, e) in slots.iter().enumerate() {
        if e.end().is_none() {
            return Err(StartInfoError::MemmapEntryOverflow {
                index,
                addr: e.addr,
                size: e.size,
            });
        }
    }
    if !slots.iter().any(HvmMemmapEntry::is_ram) {
        return Err(StartInfoError::NoRam { entries });
    }
    info.memmap_len = n;
    info.memmap_paddr = Some(paddr);
    Ok(())
}

/// The end of the run of RAM that `p` lies in, following RAM entries that
/// touch or overlap one another; `None` if `p` is not in RAM.
fn ram_end_from(map: &[HvmMemmapEntry], p: u64) -> Option<u64> {
    // The furthest end of a RAM entry with `addr <= x < end`.
    let covering = |x: u64| {
        map.iter()
            .filter(|e| e.is_ram() && e.addr <= x)
            .filter_map(HvmMemmapEntry::end)
            .filter(|&end| end > x)
            .max()
    };
    let mut end = covering(p)?;
    // An entry starting at or before `end` and reaching beyond it continues
    // the run. Each pass strictly grows `end` or stops, so `map.len()`
    // passes are enough.
    for _ in 0..map.len() {
        match covering(end) {
            Some(e) => end = e,
            None => break,
        }
    }
    Some(end)
}

/// The system BIOS area below 1 MiB.
const BIOS_AREA: core::ops::Range<u64> = 0xe_0000..0x10_0000;

fn read_cmdline(
    mem: &impl PhysRead,
    hdr: &HvmStartInfo,
    info: &mut StartInfo,
) -> Result<(), StartInfoError> {
    let paddr = hdr.cmdline_paddr;
    if paddr == 0 {
        return Ok(());
    }
    let ram_end = if !info.has_memmap() {
        None
    } else if BIOS_AREA.contains(&paddr) {
        // Firmware-based loaders (QEMU microvm's qboot) leave it in the
        // system BIOS area, which maps memory (ROM or its shadow), never
        // device registers, even where the map calls it reserved.
        Some(BIOS_AREA.end)
    } else {
        Some(ram_end_from(info.memmap(), paddr).ok_or(StartInfoError::CmdlineNotInRam { paddr })?)
    };
    let buf = &mut info.cmdline;
    let mut len = 0usize;
    let nul = loop {
        if len >= MAX_CMDLINE {
            return Err(StartInfoError::CmdlineUnterminated { paddr });
        }
        let cur = paddr
            .checked_add(len as u64)
            .ok_or(StartInfoError::CmdlineUnreadable {
                paddr,
                err: PhysReadError::OutOfRange {
                    paddr,
                    len: MAX_CMDLINE,
                },
            })?;
        let mut n = CMDLINE_CHUNK - (cur % CMDLINE_CHUNK as u64) as usize;
        n = n.min(MAX_CMDLINE - len);
        if let Some(end) = ram_end {
            if cur >= end {
                return Err(StartInfoError::CmdlineLeavesRam {
                    paddr,
                    ram_end: end,
                });
            }
            n = n.min(usize::try_from(end - cur).unwrap_or(usize::MAX));
        }
        let piece = &mut buf[len..len + n];
        mem.read_phys(cur, piece)
            .map_err(|err| StartInfoError::CmdlineUnreadable { paddr, err })?;
        if let Some(i) = piece.iter().position(|&b| b == 0) {
            break len + i;
        }
        len += n;
    };
    if let Err(e) = core::str::from_utf8(&buf[..nul]) {
        return Err(StartInfoError::CmdlineNotUtf8 {
            paddr,
            valid_up_to: e.valid_up_to(),
        });
    }
    // Whatever followed the NUL in the last piece is not part of it.
    buf[nul..].fill(0);
    info.cmdline_len = nul;
    Ok(())
}

fn read_modlist(
    mem: &impl PhysRead,
    hdr: &HvmStartInfo,
    info: &mut StartInfo,
) -> Result<(), StartInfoError> {
    let (paddr, nr_modules) = (hdr.modlist_paddr, hdr.nr_modules);
    if nr_modules == 0 {
        return Ok(());
    }
    let n = match usize::try_from(nr_modules) {
        Ok(n) if n <= MAX_MODULES => n,
        _ => return Err(StartInfoError::TooManyModules { nr_modules }),
    };
    let len = array_len(paddr, nr_modules, core::mem::size_of::<HvmModlistEntry>())
        .ok_or(StartInfoError::ModlistOutOfRange { paddr, nr_modules })?;
    let bytes = info.modules[..n].as_mut_bytes();
    mem.read_phys(paddr, &mut bytes[..len])
        .map_err(|err| StartInfoError::ModlistUnreadable {
            paddr,
            nr_modules,
            err,
        })?;
    info.nr_modules = nr_modules;
    info.modlist_paddr = paddr;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    use crate::phys::fake::FakeMem;

    const SI: u64 = 0x1000;
    const MAP: u64 = 0x1100;
    const CMD: u64 = 0x2000;
    const MODS: u64 = 0x3000;

    fn entry(addr: u64, size: u64, kind: MemmapType) -> HvmMemmapEntry {
        HvmMemmapEntry {
            addr,
            size,
            kind,
            reserved: 0,
        }
    }

    fn good_map() -> Vec<HvmMemmapEntry> {
        vec![
            entry(0, 0x9_f000, MemmapType::RAM),
            entry(0x9_f000, 0x6_1000, MemmapType::RESERVED),
            entry(0x10_0000, 0x7ff0_0000, MemmapType::RAM),
            entry(0xfee0_0000, 0x1000, MemmapType::RESERVED),
        ]
    }

    fn header(version: u32) -> HvmStartInfo {
        HvmStartInfo {
            magic: HVM_START_MAGIC,
            version,
            flags: 0,
            nr_modules: 0,
            modlist_paddr: 0,
            cmdline_paddr: CMD,
            rsdp_paddr: 0xf_5a00,
            memmap_paddr: MAP,
            memmap_entries: 4,
            reserved: 0,
        }
    }

    /// Memory with room for everything, nothing written yet.
    fn blank() -> FakeMem {
        FakeMem::new().region(0, 0x4000)
    }

    /// A complete image: header, map, command line.
    fn image(hdr: &HvmStartInfo, map: &[HvmMemmapEntry], cmdline: &[u8]) -> FakeMem {
        let mut m = blank();
        m.write(SI, hdr.as_bytes());
        m.write(MAP, map.as_bytes());
        m.write(CMD, cmdline);
        m
    }

    fn good() -> FakeMem {
        image(&header(1), &good_map(), b"console=com1 pvops.mode=test\0")
    }

    #[test]
    fn good_v1() {
        let info = parse(&good(), SI).unwrap();
        assert_eq!(info.version, 1);
        assert!(info.has_memmap());
        assert_eq!(info.memmap(), &good_map()[..]);
        assert_eq!(info.memmap_paddr, Some(MAP));
        assert_eq!(info.cmdline(), "console=com1 pvops.mode=test");
        assert_eq!(info.cmdline_paddr, Some(CMD));
        assert_eq!(info.rsdp, Some(0xf_5a00));
        assert!(info.modules().is_empty());
        let ram: Vec<_> = info.ram_regions().collect();
        assert_eq!(ram, vec![(0, 0x9_f000), (0x10_0000, 0x7ff0_0000)]);
        // Debug prints without panicking and mentions the command line.
        assert!(std::format!("{info:?}").contains("pvops.mode=test"));
    }

    #[test]
    fn v0_has_no_memmap_and_is_read_as_40_bytes() {
        // Only 40 bytes of the structure are readable: a v0 parse must not
        // touch the v1 tail.
        let mut m = FakeMem::new()
            .region(SI, HVM_START_INFO_V0_SIZE)
            .region(CMD, 0x100);
        let mut hdr = header(0);
        hdr.rsdp_paddr = 0;
        m.write(SI, &hdr.as_bytes()[..HVM_START_INFO_V0_SIZE]);
        m.write(CMD, b"quiet\0");
        let info = parse(&m, SI).unwrap();
        assert_eq!(info.version, 0);
        assert!(!info.has_memmap());
        assert!(info.memmap().is_empty());
        assert_eq!(info.ram_regions().count(), 0);
        assert_eq!(info.memmap_paddr, None);
        assert_eq!(info.rsdp, None);
        assert_eq!(info.cmdline(), "quiet");
    }

    #[test]
    fn memmap_from_elsewhere_fills_only_an_empty_map() {
        let mut hdr = header(1);
        hdr.memmap_entries = 0;
        hdr.memmap_paddr = 0;
        let mut info = parse(&image(&hdr, &[], b"x\0"), SI).unwrap();
        let mut map = good_map().to_vec();
        // An entry whose end overflows is dropped.
        map.push(HvmMemmapEntry {
            addr: u64::MAX,
            size: 2,
            kind: MemmapType::RAM,
            reserved: 0,
        });
        assert_eq!(info.set_memmap(&map), good_map().len());
        assert_eq!(info.memmap(), &good_map()[..]);
        assert_eq!(info.ram_regions().count(), 2);
        // A map already there is kept.
        assert_eq!(info.set_memmap(&[]), 0);
        assert_eq!(info.memmap(), &good_map()[..]);
        // At most MAX_MEMMAP_ENTRIES are kept.
        let mut info = parse(&image(&hdr, &[], b"x\0"), SI).unwrap();
        let many = std::vec![good_map()[0]; MAX_MEMMAP_ENTRIES + 5];
        assert_eq!(info.set_memmap(&many), MAX_MEMMAP_ENTRIES);
    }

    #[test]
    fn v1_without_memmap() {
        let mut hdr = header(1);
        hdr.memmap_entries = 0;
        hdr.memmap_paddr = 0;
        let info = parse(&image(&hdr, &[], b"x\0"), SI).unwrap();
        assert!(!info.has_memmap());
        assert_eq!(info.cmdline(), "x");
    }

    #[test]
    fn no_cmdline_is_empty() {
        let mut hdr = header(1);
        hdr.cmdline_paddr = 0;
        let info = parse(&image(&hdr, &good_map(), b""), SI).unwrap();
        assert_eq!(info.cmdline(), "");
        assert_eq!(info.cmdline_paddr, None);
    }

    #[test]
    fn modules_are_copied() {
        let mut hdr = header(1);
        hdr.nr_modules = 2;
        hdr.modlist_paddr = MODS;
        let mut m = image(&hdr, &good_map(), b"\0");
        let mods = [
            HvmModlistEntry {
                paddr: 0x20_0000,
                size: 0x1234,
                cmdline_paddr: 0,
                reserved: 0,
            },
            HvmModlistEntry {
                paddr: 0x30_0000,
                size: 0x10,
                cmdline_paddr: CMD,
                reserved: 0,
            },
        ];
        m.write(MODS, mods.as_bytes());
        let info = parse(&m, SI).unwrap();
        assert_eq!(info.nr_modules, 2);
        assert_eq!(info.modlist_paddr, MODS);
        assert_eq!(info.modules(), &mods[..]);
    }

    #[test]
    fn bad_magic() {
        let mut hdr = header(1);
        hdr.magic = 0x1bad_b002;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert_eq!(e, StartInfoError::BadMagic { found: 0x1bad_b002 });
        assert_eq!(
            std::format!("{e}"),
            "bad magic 0x1badb002 (expected 0x336ec578)"
        );
    }

    #[test]
    fn bad_version() {
        let e = parse(&image(&header(2), &good_map(), b"\0"), SI).unwrap_err();
        assert_eq!(e, StartInfoError::UnsupportedVersion { version: 2 });
        assert!(std::format!("{e}").contains("version 2"));
    }

    #[test]
    fn memmap_out_of_range() {
        // Unreadable.
        let mut hdr = header(1);
        hdr.memmap_paddr = 0x10_0000;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert!(matches!(
            e,
            StartInfoError::MemmapUnreadable {
                paddr: 0x10_0000,
                entries: 4,
                ..
            }
        ));
        // Partly readable: the last entry runs off the region.
        hdr.memmap_paddr = 0x4000 - 3 * 24;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert!(matches!(e, StartInfoError::MemmapUnreadable { .. }));
        // End overflows.
        hdr.memmap_paddr = u64::MAX - 10;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert_eq!(
            e,
            StartInfoError::MemmapOutOfRange {
                paddr: u64::MAX - 10,
                entries: 4
            }
        );
        // Null with entries.
        hdr.memmap_paddr = 0;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert!(matches!(
            e,
            StartInfoError::MemmapOutOfRange { paddr: 0, .. }
        ));
    }

    #[test]
    fn too_many_entries() {
        let mut hdr = header(1);
        hdr.memmap_entries = MAX_MEMMAP_ENTRIES as u32 + 1;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert_eq!(e, StartInfoError::TooManyMemmapEntries { entries: 129 });
        hdr.memmap_entries = u32::MAX;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert_eq!(
            e,
            StartInfoError::TooManyMemmapEntries { entries: u32::MAX }
        );
    }

    #[test]
    fn exactly_max_entries() {
        let mut map = vec![entry(0x10_0000, 0x10_0000, MemmapType::RAM)];
        map.extend(
            (1..MAX_MEMMAP_ENTRIES as u64).map(|i| entry(i << 32, 0x1000, MemmapType::RESERVED)),
        );
        let mut hdr = header(1);
        hdr.memmap_entries = MAX_MEMMAP_ENTRIES as u32;
        hdr.cmdline_paddr = 0;
        let info = parse(&image(&hdr, &map, b""), SI).unwrap();
        assert_eq!(info.memmap().len(), MAX_MEMMAP_ENTRIES);
    }

    #[test]
    fn overflowing_entry() {
        let mut map = good_map();
        map[3] = entry(u64::MAX - 0xfff, 0x1000, MemmapType::RESERVED);
        let e = parse(&image(&header(1), &map, b"\0"), SI).unwrap_err();
        assert_eq!(
            e,
            StartInfoError::MemmapEntryOverflow {
                index: 3,
                addr: u64::MAX - 0xfff,
                size: 0x1000
            }
        );
        // One byte less is fine.
        map[3].size = 0xfff;
        parse(&image(&header(1), &map, b"\0"), SI).unwrap();
    }

    #[test]
    fn no_ram() {
        let mut map = good_map();
        map[0].kind = MemmapType::ACPI;
        map[2].kind = MemmapType::PMEM;
        let e = parse(&image(&header(1), &map, b"\0"), SI).unwrap_err();
        assert_eq!(e, StartInfoError::NoRam { entries: 4 });
        // An empty RAM entry does not count.
        map[0] = entry(0x1000, 0, MemmapType::RAM);
        let e = parse(&image(&header(1), &map, b"\0"), SI).unwrap_err();
        assert_eq!(e, StartInfoError::NoRam { entries: 4 });
    }

    #[test]
    fn cmdline_outside_ram() {
        let mut map = good_map();
        map[0].kind = MemmapType::RESERVED;
        let e = parse(&image(&header(1), &map, b"abc\0"), SI).unwrap_err();
        assert_eq!(e, StartInfoError::CmdlineNotInRam { paddr: CMD });
        assert_eq!(std::format!("{e}"), "command line at 0x2000 is not in RAM");
    }

    #[test]
    fn cmdline_in_the_bios_area_is_read() {
        // QEMU microvm (qboot) puts it at 0xefc60, in what its map calls
        // reserved.
        let mut hdr = header(1);
        hdr.cmdline_paddr = 0xe_fc60;
        let mut m = blank().region(0xe_0000, 0x2_0000);
        m.write(SI, hdr.as_bytes());
        m.write(MAP, good_map().as_bytes());
        m.write(0xe_fc60, b"pvops.mode=test\0");
        let si = parse(&m, SI).unwrap();
        assert_eq!(si.cmdline(), "pvops.mode=test");
        // Unterminated up to the end of the area: refused, not read beyond.
        let mut m = blank().region(0xe_0000, 0x2_0000).region(0x10_0000, 0x1000);
        hdr.cmdline_paddr = 0xf_fff0;
        m.write(SI, hdr.as_bytes());
        m.write(MAP, good_map().as_bytes());
        m.write(0xf_fff0, &[b'a'; 16]);
        m.write(0x10_0000, b"b\0");
        assert!(parse(&m, SI).is_err());
    }

    #[test]
    fn cmdline_running_off_ram() {
        // RAM ends 4 bytes into the command line, before its NUL.
        let mut map = good_map();
        map[0].size = CMD + 4;
        map[1].addr = CMD + 4;
        let e = parse(&image(&header(1), &map, b"abcdefgh\0"), SI).unwrap_err();
        assert_eq!(
            e,
            StartInfoError::CmdlineLeavesRam {
                paddr: CMD,
                ram_end: CMD + 4
            }
        );
        // Two touching RAM entries make one run: fine.
        map[1].kind = MemmapType::RAM;
        let info = parse(&image(&header(1), &map, b"abcdefgh\0"), SI).unwrap();
        assert_eq!(info.cmdline(), "abcdefgh");
    }

    #[test]
    fn cmdline_unterminated() {
        let long = vec![b'a'; MAX_CMDLINE];
        let e = parse(&image(&header(1), &good_map(), &long), SI).unwrap_err();
        assert_eq!(e, StartInfoError::CmdlineUnterminated { paddr: CMD });
        // The longest accepted: MAX_CMDLINE - 1 bytes and the NUL.
        let mut ok = vec![b'b'; MAX_CMDLINE - 1];
        ok.push(0);
        let info = parse(&image(&header(1), &good_map(), &ok), SI).unwrap();
        assert_eq!(info.cmdline().len(), MAX_CMDLINE - 1);
    }

    #[test]
    fn cmdline_at_end_of_readable_memory() {
        // A short string in the last bytes of memory, at an odd address:
        // the reader must not ask for bytes past it.
        let mut hdr = header(0);
        hdr.cmdline_paddr = 0x3ffa;
        let mut m = blank();
        m.write(SI, &hdr.as_bytes()[..HVM_START_INFO_V0_SIZE]);
        m.write(0x3ffa, b"hello\0");
        assert_eq!(parse(&m, SI).unwrap().cmdline(), "hello");
        // Without the NUL, the next read fails.
        m.write(0x3fff, b"!");
        let e = parse(&m, SI).unwrap_err();
        assert!(matches!(
            e,
            StartInfoError::CmdlineUnreadable { paddr: 0x3ffa, .. }
        ));
    }

    #[test]
    fn cmdline_invalid_utf8() {
        let e = parse(&image(&header(1), &good_map(), b"ok \xff\xfe\0"), SI).unwrap_err();
        assert_eq!(
            e,
            StartInfoError::CmdlineNotUtf8 {
                paddr: CMD,
                valid_up_to: 3
            }
        );
        // Multi-byte UTF-8 is fine.
        let info = parse(
            &image(&header(1), &good_map(), "caf\u{e9}\0".as_bytes()),
            SI,
        )
        .unwrap();
        assert_eq!(info.cmdline(), "caf\u{e9}");
    }

    #[test]
    fn read_errors() {
        // Header.
        let e = parse(&blank(), 0x10_0000).unwrap_err();
        assert_eq!(
            e,
            StartInfoError::HeaderUnreadable {
                paddr: 0x10_0000,
                err: PhysReadError::OutOfRange {
                    paddr: 0x10_0000,
                    len: 40
                }
            }
        );
        // The v1 tail alone.
        let mut m = FakeMem::new().region(SI, HVM_START_INFO_V0_SIZE);
        m.write(SI, &header(1).as_bytes()[..HVM_START_INFO_V0_SIZE]);
        let e = parse(&m, SI).unwrap_err();
        assert!(matches!(
            e,
            StartInfoError::HeaderUnreadable { paddr: SI, .. }
        ));
        // Header at the top of the address space.
        let e = parse(&blank(), u64::MAX - 4).unwrap_err();
        assert!(matches!(e, StartInfoError::HeaderUnreadable { .. }));
        // Command line with no map (v0): not in memory at all.
        let mut hdr = header(0);
        hdr.cmdline_paddr = 0x9000;
        let mut m = blank();
        m.write(SI, &hdr.as_bytes()[..HVM_START_INFO_V0_SIZE]);
        let e = parse(&m, SI).unwrap_err();
        assert!(matches!(
            e,
            StartInfoError::CmdlineUnreadable { paddr: 0x9000, .. }
        ));
        // Command line in RAM per the map but not readable.
        let mut map = good_map();
        map[0].size = 0x10_0000;
        hdr = header(1);
        hdr.cmdline_paddr = 0x8000;
        let e = parse(&image(&hdr, &map, b""), SI).unwrap_err();
        assert!(matches!(
            e,
            StartInfoError::CmdlineUnreadable { paddr: 0x8000, .. }
        ));
        // Module list.
        hdr = header(1);
        hdr.nr_modules = 1;
        hdr.modlist_paddr = 0x8000;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert!(matches!(
            e,
            StartInfoError::ModlistUnreadable {
                paddr: 0x8000,
                nr_modules: 1,
                ..
            }
        ));
        assert!(std::format!("{e}")
            .starts_with("module list at 0x8000 (1 entries) unreadable: physical range"));
    }

    #[test]
    fn bad_modlist() {
        let mut hdr = header(1);
        hdr.nr_modules = MAX_MODULES as u32 + 1;
        hdr.modlist_paddr = MODS;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert_eq!(e, StartInfoError::TooManyModules { nr_modules: 17 });
        hdr.nr_modules = 1;
        hdr.modlist_paddr = 0;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert_eq!(
            e,
            StartInfoError::ModlistOutOfRange {
                paddr: 0,
                nr_modules: 1
            }
        );
        hdr.modlist_paddr = u64::MAX - 8;
        let e = parse(&image(&hdr, &good_map(), b"\0"), SI).unwrap_err();
        assert!(matches!(e, StartInfoError::ModlistOutOfRange { .. }));
    }

    #[test]
    fn every_error_displays_on_one_line() {
        let err = PhysReadError::OutOfRange { paddr: 1, len: 2 };
        let all = [
            StartInfoError::HeaderUnreadable { paddr: 1, err },
            StartInfoError::BadMagic { found: 1 },
            StartInfoError::UnsupportedVersion { version: 9 },
            StartInfoError::TooManyMemmapEntries { entries: 999 },
            StartInfoError::MemmapOutOfRange {
                paddr: 1,
                entries: 2,
            },
            StartInfoError::MemmapUnreadable {
                paddr: 1,
                entries: 2,
                err,
            },
            StartInfoError::MemmapEntryOverflow {
                index: 1,
                addr: 2,
                size: 3,
            },
            StartInfoError::NoRam { entries: 3 },
            StartInfoError::CmdlineNotInRam { paddr: 1 },
            StartInfoError::CmdlineLeavesRam {
                paddr: 1,
                ram_end: 2,
            },
            StartInfoError::CmdlineUnreadable { paddr: 1, err },
            StartInfoError::CmdlineUnterminated { paddr: 1 },
            StartInfoError::CmdlineNotUtf8 {
                paddr: 1,
                valid_up_to: 0,
            },
            StartInfoError::TooManyModules { nr_modules: 99 },
            StartInfoError::ModlistOutOfRange {
                paddr: 1,
                nr_modules: 2,
            },
            StartInfoError::ModlistUnreadable {
                paddr: 1,
                nr_modules: 2,
                err,
            },
        ];
        for e in all {
            let s = std::format!("{e}");
            assert!(!s.is_empty() && !s.contains('\n'), "{s:?}");
        }
    }

    #[test]
    fn memmap_type_display() {
        assert_eq!(std::format!("{}", MemmapType::RAM), "ram");
        assert_eq!(std::format!("{}", MemmapType::PMEM), "pmem");
        assert_eq!(
            std::format!("{}", MemmapType::XEN_GRANT_TABLE),
            "xen-grant-table"
        );
        assert_eq!(std::format!("{}", MemmapType(42)), "type:0x2a");
        assert_eq!(std::format!("{:?}", MemmapType::NVS), "nvs");
    }

    use crate::phys::fake::Logged;

    #[test]
    fn no_byte_is_read_twice() {
        let mut hdr = header(1);
        hdr.nr_modules = 1;
        hdr.modlist_paddr = MODS;
        let mut long = vec![b'x'; 300];
        long.push(0);
        let mut m = image(&hdr, &good_map(), &long);
        m.write(MODS, &[0x22; 32]);
        let logged = Logged {
            mem: &m,
            log: Default::default(),
        };
        let info = parse(&logged, SI).unwrap();
        assert_eq!(info.cmdline().len(), 300);
        let mut log = logged.log.into_inner();
        log.sort();
        for w in log.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:#x?} overlaps {:#x?}", w[0], w[1]);
        }
    }

    use crate::phys::fake::Rng;

    #[test]
    fn mutated_input_never_panics() {
        let mut hdr = header(1);
        hdr.nr_modules = 1;
        hdr.modlist_paddr = MODS;
        let mut base = image(&hdr, &good_map(), b"console=com1 pvops.mode=test\0");
        base.write(MODS, &[0x11; 32]);
        // Mutate the interesting bytes: header, map, command line, modules.
        let spans: [(u64, usize); 4] = [(SI, 56), (MAP, 4 * 24), (CMD, 32), (MODS, 32)];
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let (mut ok, mut err) = (0, 0);
        // Miri interprets every step: fewer rounds there, same coverage kind.
        let rounds = if cfg!(miri) { 200 } else { 4000 };
        for _ in 0..rounds {
            let mut m = FakeMem {
                regions: base.regions.clone(),
            };
            for _ in 0..1 + rng.below(6) {
                let (start, len) = spans[rng.below(spans.len())];
                let at = start + rng.below(len) as u64;
                let byte = match rng.below(4) {
                    0 => 0,
                    1 => 0xff,
                    2 => 1 << rng.below(8),
                    _ => rng.next_u64() as u8,
                };
                m.write(at, &[byte]);
            }
            match parse(&m, SI) {
                Ok(info) => {
                    ok += 1;
                    assert!(info.memmap().len() <= MAX_MEMMAP_ENTRIES);
                    assert!(info.modules().len() <= MAX_MODULES);
                    assert!(info.cmdline().len() < MAX_CMDLINE);
                    assert!(info.version <= HVM_START_MAX_VERSION);
                    assert!(info.memmap().iter().all(|e| e.end().is_some()));
                }
                Err(e) => {
                    err += 1;
                    assert!(!std::format!("{e}").is_empty());
                }
            }
        }
        // Both outcomes are exercised.
        let enough = rounds / 40;
        assert!(ok > enough && err > enough, "ok={ok} err={err}");
    }
}
