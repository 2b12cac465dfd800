//! Finding ACPI's S5 (soft-off) sequence: RSDP -> RSDT/XSDT -> FADT -> DSDT
//! `\_S5` package.
//!
//! Everything is copied out of physical memory through a [`PhysRead`] once
//! and checked in the copy before any of it is used; nothing is read twice.
//! No allocation: the RSDT/XSDT is held in a fixed buffer of
//! [`MAX_ROOT_LEN`] bytes and the FADT in a [`Fadt`] (a longer FADT is
//! summed for its checksum but only its known part is kept). The DSDT is
//! not held at all: it is read in [`CHUNK`]-byte pieces into a small window
//! that keeps the last [`S5_LOOKAHEAD`] bytes of the previous piece, so an
//! `_S5_` object straddling two pieces is still seen, while every byte is
//! read from memory exactly once. The checksum is summed along the way and
//! a result is only returned once the whole table is read and sums to zero.
//! A DSDT longer than [`MAX_DSDT_LEN`] is refused.
//!
//! The `_S5_` search is the usual pattern match rather than an AML
//! interpreter: a `NameOp` (optionally with a `\` or `^` prefix) naming
//! `_S5_`, a `PackageOp`, and the package's first two elements as integer
//! constants. Malformed encodings are reported, never guessed at; if the
//! pattern occurs more than once, the first well-formed one wins.

use core::fmt;

use pvops_core::cpu::CpuId;
use pvops_core::irq::CpuMask;
use pvops_core::phys::{PhysRead, PhysReadError};
use static_assertions::const_assert_eq;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// How to enter S5: write `SLP_TYPx << 10 | SLP_EN` to each PM1 control port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcpiShutdown {
    /// PM1a control block I/O port.
    pub pm1a_cnt: u16,
    /// PM1b control block I/O port, if the FADT names one.
    pub pm1b_cnt: Option<u16>,
    /// SLP_TYPa for S5.
    pub slp_typ_a: u8,
    /// SLP_TYPb for S5.
    pub slp_typ_b: u8,
}

/// The RSDP's signature.
pub const RSDP_SIGNATURE: [u8; 8] = *b"RSD PTR ";
/// Size of the ACPI 1.0 RSDP, covered by its first checksum.
pub const RSDP_V1_LEN: usize = 20;
/// Size of the ACPI 2.0+ RSDP.
pub const RSDP_V2_LEN: usize = 36;
/// Longest RSDP `length` accepted.
pub const MAX_RSDP_LEN: usize = 64;
/// Size of a system description table header.
pub const SDT_HEADER_LEN: usize = 36;
/// Longest RSDT/XSDT accepted (room for 507 XSDT entries).
pub const MAX_ROOT_LEN: usize = 4096;
/// Shortest FADT accepted: the ACPI 1.0 layout, through `Flags`.
pub const MIN_FADT_LEN: usize = 116;
/// Longest FADT accepted.
pub const MAX_FADT_LEN: usize = 4096;
/// Longest DSDT accepted.
pub const MAX_DSDT_LEN: usize = 4 << 20;
/// Piece size for reading the BIOS area and the DSDT.
pub const CHUNK: usize = 1024;
/// Bytes of one piece kept for the next: more than the longest `_S5_`
/// encoding parsed (1 + 4 + 4 + 1 + 4 + 1 + 9 + 9 = 33 bytes).
pub const S5_LOOKAHEAD: usize = 64;

/// Physical address of the BIOS data area word holding the EBDA segment.
const EBDA_SEGMENT_PTR: u64 = 0x40e;
/// How much of the EBDA is searched.
const EBDA_SEARCH_LEN: usize = 1024;
/// The BIOS read-only area searched for the RSDP.
const BIOS_AREA: (u64, usize) = (0xe_0000, 0x2_0000);
/// FADT `Flags` bit: hardware-reduced ACPI (no PM1 blocks).
const FADT_HW_REDUCED_ACPI: u32 = 1 << 20;
/// Generic address structure space: system I/O.
const GAS_SYSTEM_IO: u8 = 1;
/// At most this many `^` prefixes are accepted before `_S5_`.
const MAX_PARENT_PREFIXES: usize = 4;

const AML_NAME_OP: u8 = 0x08;
const AML_ROOT_CHAR: u8 = b'\\';
const AML_PARENT_PREFIX: u8 = b'^';
const AML_PACKAGE_OP: u8 = 0x12;
const AML_ZERO_OP: u8 = 0x00;
const AML_ONE_OP: u8 = 0x01;
const AML_ONES_OP: u8 = 0xff;
const AML_BYTE_PREFIX: u8 = 0x0a;
const AML_WORD_PREFIX: u8 = 0x0b;
const AML_DWORD_PREFIX: u8 = 0x0c;
const AML_QWORD_PREFIX: u8 = 0x0e;

/// The Root System Description Pointer (ACPI 2.0+ layout; ACPI 1.0 stops
/// after `rsdt_address`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Rsdp {
    /// [`RSDP_SIGNATURE`].
    pub signature: [u8; 8],
    /// Makes the first 20 bytes sum to zero.
    pub checksum: u8,
    /// OEM identifier.
    pub oem_id: [u8; 6],
    /// 0 for ACPI 1.0, 2 for ACPI 2.0 and later.
    pub revision: u8,
    /// Physical address of the RSDT.
    pub rsdt_address: U32,
    /// Length of the whole structure (revision 2+).
    pub length: U32,
    /// Physical address of the XSDT (revision 2+).
    pub xsdt_address: U64,
    /// Makes all `length` bytes sum to zero (revision 2+).
    pub extended_checksum: u8,
    /// Reserved.
    pub reserved: [u8; 3],
}

const_assert_eq!(core::mem::size_of::<Rsdp>(), RSDP_V2_LEN);
const_assert_eq!(core::mem::offset_of!(Rsdp, checksum), 8);
const_assert_eq!(core::mem::offset_of!(Rsdp, revision), 15);
const_assert_eq!(core::mem::offset_of!(Rsdp, rsdt_address), 16);
const_assert_eq!(core::mem::offset_of!(Rsdp, length), RSDP_V1_LEN);
const_assert_eq!(core::mem::offset_of!(Rsdp, xsdt_address), 24);
const_assert_eq!(core::mem::offset_of!(Rsdp, extended_checksum), 32);

/// The header every system description table starts with.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct SdtHeader {
    /// Four ASCII characters naming the table.
    pub signature: [u8; 4],
    /// Length of the whole table, header included.
    pub length: U32,
    /// Table revision.
    pub revision: u8,
    /// Makes the whole table sum to zero.
    pub checksum: u8,
    /// OEM identifier.
    pub oem_id: [u8; 6],
    /// OEM table identifier.
    pub oem_table_id: [u8; 8],
    /// OEM revision.
    pub oem_revision: U32,
    /// Vendor of the tool that made the table.
    pub creator_id: U32,
    /// Revision of that tool.
    pub creator_revision: U32,
}

const_assert_eq!(core::mem::size_of::<SdtHeader>(), SDT_HEADER_LEN);
const_assert_eq!(core::mem::offset_of!(SdtHeader, length), 4);
const_assert_eq!(core::mem::offset_of!(SdtHeader, checksum), 9);
const_assert_eq!(core::mem::offset_of!(SdtHeader, oem_table_id), 16);
const_assert_eq!(core::mem::offset_of!(SdtHeader, creator_revision), 32);

/// A Generic Address Structure.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Gas {
    /// Address space: 0 system memory, 1 system I/O, ...
    pub space_id: u8,
    /// Register width in bits.
    pub bit_width: u8,
    /// Register offset in bits.
    pub bit_offset: u8,
    /// Access size (0 undefined, 1 byte, 2 word, 3 dword, 4 qword).
    pub access_size: u8,
    /// Address in the given space.
    pub address: U64,
}

const_assert_eq!(core::mem::size_of::<Gas>(), 12);
const_assert_eq!(core::mem::offset_of!(Gas, address), 4);

impl Gas {
    /// The port, if this names a non-zero 16-bit system I/O address.
    pub fn io_port(&self) -> Option<u16> {
        if self.space_id != GAS_SYSTEM_IO {
            return None;
        }
        u16::try_from(self.address.get()).ok().filter(|&p| p != 0)
    }
}

/// The Fixed ACPI Description Table (signature `FACP`), through ACPI 6.x.
/// Older, shorter FADTs leave the later fields zero when copied into it.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Fadt {
    /// Table header.
    pub header: SdtHeader,
    /// Physical address of the FACS.
    pub firmware_ctrl: U32,
    /// Physical address of the DSDT.
    pub dsdt: U32,
    /// Reserved (ACPI 1.0 `INT_MODEL`).
    pub reserved0: u8,
    /// Preferred power-management profile.
    pub preferred_pm_profile: u8,
    /// SCI interrupt.
    pub sci_int: U16,
    /// SMI command port.
    pub smi_cmd: U32,
    /// Value written to `smi_cmd` to enable ACPI.
    pub acpi_enable: u8,
    /// Value written to `smi_cmd` to disable ACPI.
    pub acpi_disable: u8,
    /// Value written to `smi_cmd` to enter S4BIOS.
    pub s4bios_req: u8,
    /// Value written to `smi_cmd` to take over P-states.
    pub pstate_cnt: u8,
    /// PM1a event block port.
    pub pm1a_evt_blk: U32,
    /// PM1b event block port.
    pub pm1b_evt_blk: U32,
    /// PM1a control block port.
    pub pm1a_cnt_blk: U32,
    /// PM1b control block port.
    pub pm1b_cnt_blk: U32,
    /// PM2 control block port.
    pub pm2_cnt_blk: U32,
    /// PM timer block port.
    pub pm_tmr_blk: U32,
    /// GPE0 block port.
    pub gpe0_blk: U32,
    /// GPE1 block port.
    pub gpe1_blk: U32,
    /// Bytes decoded by the PM1 event blocks.
    pub pm1_evt_len: u8,
    /// Bytes decoded by the PM1 control blocks.
    pub pm1_cnt_len: u8,
    /// Bytes decoded by the PM2 control block.
    pub pm2_cnt_len: u8,
    /// Bytes decoded by the PM timer block.
    pub pm_tmr_len: u8,
    /// Length of the GPE0 block.
    pub gpe0_blk_len: u8,
    /// Length of the GPE1 block.
    pub gpe1_blk_len: u8,
    /// First GPE number of the GPE1 block.
    pub gpe1_base: u8,
    /// Value written to `smi_cmd` for _CST support.
    pub cst_cnt: u8,
    /// C2 latency in microseconds.
    pub p_lvl2_lat: U16,
    /// C3 latency in microseconds.
    pub p_lvl3_lat: U16,
    /// Cache flush size.
    pub flush_size: U16,
    /// Cache flush stride.
    pub flush_stride: U16,
    /// Duty cycle offset.
    pub duty_offset: u8,
    /// Duty cycle width.
    pub duty_width: u8,
    /// RTC day-alarm index.
    pub day_alrm: u8,
    /// RTC month-alarm index.
    pub mon_alrm: u8,
    /// RTC century index.
    pub century: u8,
    /// IA-PC boot architecture flags.
    pub iapc_boot_arch: U16,
    /// Reserved.
    pub reserved1: u8,
    /// Fixed feature flags.
    pub flags: U32,
    /// Reset register.
    pub reset_reg: Gas,
    /// Value written to the reset register.
    pub reset_value: u8,
    /// ARM boot architecture flags.
    pub arm_boot_arch: U16,
    /// FADT minor version.
    pub fadt_minor_version: u8,
    /// 64-bit physical address of the FACS.
    pub x_firmware_ctrl: U64,
    /// 64-bit physical address of the DSDT.
    pub x_dsdt: U64,
    /// PM1a event block.
    pub x_pm1a_evt_blk: Gas,
    /// PM1b event block.
    pub x_pm1b_evt_blk: Gas,
    /// PM1a control block.
    pub x_pm1a_cnt_blk: Gas,
    /// PM1b control block.
    pub x_pm1b_cnt_blk: Gas,
    /// PM2 control block.
    pub x_pm2_cnt_blk: Gas,
    /// PM timer block.
    pub x_pm_tmr_blk: Gas,
    /// GPE0 block.
    pub x_gpe0_blk: Gas,
    /// GPE1 block.
    pub x_gpe1_blk: Gas,
    /// Sleep control register (hardware-reduced ACPI).
    pub sleep_control_reg: Gas,
    /// Sleep status register (hardware-reduced ACPI).
    pub sleep_status_reg: Gas,
    /// Hypervisor vendor identity.
    pub hypervisor_vendor_identity: U64,
}

const_assert_eq!(core::mem::size_of::<Fadt>(), 276);
const_assert_eq!(core::mem::offset_of!(Fadt, firmware_ctrl), 36);
const_assert_eq!(core::mem::offset_of!(Fadt, dsdt), 40);
const_assert_eq!(core::mem::offset_of!(Fadt, smi_cmd), 48);
const_assert_eq!(core::mem::offset_of!(Fadt, pm1a_evt_blk), 56);
const_assert_eq!(core::mem::offset_of!(Fadt, pm1a_cnt_blk), 64);
const_assert_eq!(core::mem::offset_of!(Fadt, pm1b_cnt_blk), 68);
const_assert_eq!(core::mem::offset_of!(Fadt, pm1_evt_len), 88);
const_assert_eq!(core::mem::offset_of!(Fadt, p_lvl2_lat), 96);
const_assert_eq!(core::mem::offset_of!(Fadt, iapc_boot_arch), 109);
const_assert_eq!(core::mem::offset_of!(Fadt, flags), 112);
const_assert_eq!(core::mem::offset_of!(Fadt, reset_reg), MIN_FADT_LEN);
const_assert_eq!(core::mem::offset_of!(Fadt, x_firmware_ctrl), 132);
const_assert_eq!(core::mem::offset_of!(Fadt, x_dsdt), 140);
const_assert_eq!(core::mem::offset_of!(Fadt, x_pm1a_evt_blk), 148);
const_assert_eq!(core::mem::offset_of!(Fadt, x_pm1a_cnt_blk), 172);
const_assert_eq!(core::mem::offset_of!(Fadt, x_pm1b_cnt_blk), 184);
const_assert_eq!(core::mem::offset_of!(Fadt, sleep_control_reg), 244);
const_assert_eq!(core::mem::offset_of!(Fadt, hypervisor_vendor_identity), 268);

/// Offsets into [`Fadt`] that a table must reach for a field to be present.
const FADT_X_DSDT_END: usize = core::mem::offset_of!(Fadt, x_dsdt) + 8;
const FADT_X_PM1A_CNT_END: usize = core::mem::offset_of!(Fadt, x_pm1a_cnt_blk) + 12;
const FADT_X_PM1B_CNT_END: usize = core::mem::offset_of!(Fadt, x_pm1b_cnt_blk) + 12;

/// A table signature, printed as text with anything unprintable escaped.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 4]);

impl Signature {
    const RSDT: Self = Self(*b"RSDT");
    const XSDT: Self = Self(*b"XSDT");
    const FACP: Self = Self(*b"FACP");
    const DSDT: Self = Self(*b"DSDT");
    const MADT: Self = Self(*b"APIC");
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

/// Why no S5 sequence was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiError {
    /// No hint was given and no valid RSDP is in the EBDA or the BIOS area.
    RsdpNotFound,
    /// The RSDP (or the BIOS area searched for it) could not be read.
    RsdpUnreadable {
        /// Where the read was.
        paddr: u64,
        /// The reader's error.
        err: PhysReadError,
    },
    /// The hinted RSDP does not start with `RSD PTR `.
    RsdpBadSignature {
        /// Where it was looked for.
        paddr: u64,
    },
    /// The RSDP's first 20 bytes do not sum to zero.
    RsdpBadChecksum {
        /// Where it is.
        paddr: u64,
    },
    /// A revision 2+ RSDP's `length` is out of bounds.
    RsdpBadLength {
        /// Where it is.
        paddr: u64,
        /// The length it gives.
        length: u32,
    },
    /// A revision 2+ RSDP's whole length does not sum to zero.
    RsdpBadExtendedChecksum {
        /// Where it is.
        paddr: u64,
    },
    /// The RSDP names neither an RSDT nor an XSDT.
    NoRootTable {
        /// The RSDP's revision.
        revision: u8,
    },
    /// A table could not be read.
    TableUnreadable {
        /// The table being read.
        table: Signature,
        /// Where the read was.
        paddr: u64,
        /// The reader's error.
        err: PhysReadError,
    },
    /// A table does not carry the expected signature.
    TableBadSignature {
        /// What was expected.
        expected: Signature,
        /// What was found.
        found: Signature,
        /// Where the table is.
        paddr: u64,
    },
    /// A table's length is below its minimum or above what is accepted.
    TableBadLength {
        /// The table.
        table: Signature,
        /// Where it is.
        paddr: u64,
        /// Its length.
        length: u32,
        /// Smallest accepted.
        min: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A table does not sum to zero.
    TableBadChecksum {
        /// The table.
        table: Signature,
        /// Where it is.
        paddr: u64,
        /// What it sums to.
        sum: u8,
    },
    /// No entry of the RSDT/XSDT has the signature looked for.
    TableNotFound {
        /// The signature looked for.
        table: Signature,
        /// The root table searched.
        root: Signature,
        /// Its number of entries.
        entries: usize,
        /// How many entries' headers could not be read.
        unreadable: usize,
    },
    /// The FADT says hardware-reduced ACPI: there are no PM1 blocks.
    HardwareReduced,
    /// The FADT names no PM1a control block.
    NoPm1aCnt,
    /// A PM1 control block is not a 16-bit I/O port.
    PmPortOutOfRange {
        /// The FADT field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The FADT names no DSDT.
    NoDsdt,
    /// The DSDT has no `_S5_` name object.
    S5NotFound {
        /// Where the DSDT is.
        dsdt: u64,
    },
    /// `_S5_` names something other than a package.
    S5NotPackage {
        /// Offset of its `NameOp` in the DSDT.
        offset: u32,
        /// The opcode found instead of `PackageOp`.
        opcode: u8,
    },
    /// The `_S5_` package ends before its first two elements do, or runs
    /// past the end of the DSDT.
    S5Truncated {
        /// Offset of its `NameOp` in the DSDT.
        offset: u32,
    },
    /// The `_S5_` package's PkgLength lead byte sets reserved bits.
    S5BadPkgLength {
        /// Offset of its `NameOp` in the DSDT.
        offset: u32,
        /// The lead byte.
        lead: u8,
    },
    /// The `_S5_` package has fewer than two elements.
    S5TooFewElements {
        /// Offset of its `NameOp` in the DSDT.
        offset: u32,
        /// Its `NumElements`.
        count: u8,
    },
    /// An `_S5_` element is not an integer constant.
    S5BadElement {
        /// Offset of its `NameOp` in the DSDT.
        offset: u32,
        /// The element's opcode.
        opcode: u8,
    },
}

impl fmt::Display for AcpiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use AcpiError as E;
        match *self {
            E::RsdpNotFound => f.write_str("no RSDP in the EBDA or at 0xe0000..0x100000"),
            E::RsdpUnreadable { paddr, err } => {
                write!(f, "RSDP search at {paddr:#x} failed: {err}")
            }
            E::RsdpBadSignature { paddr } => {
                write!(f, "no RSDP signature at {paddr:#x}")
            }
            E::RsdpBadChecksum { paddr } => write!(f, "RSDP at {paddr:#x}: bad checksum"),
            E::RsdpBadLength { paddr, length } => write!(
                f,
                "RSDP at {paddr:#x}: length {length} not in {RSDP_V2_LEN}..={MAX_RSDP_LEN}"
            ),
            E::RsdpBadExtendedChecksum { paddr } => {
                write!(f, "RSDP at {paddr:#x}: bad extended checksum")
            }
            E::NoRootTable { revision } => {
                write!(f, "RSDP (revision {revision}) names no RSDT or XSDT")
            }
            E::TableUnreadable { table, paddr, err } => {
                write!(f, "{table} at {paddr:#x} unreadable: {err}")
            }
            E::TableBadSignature {
                expected,
                found,
                paddr,
            } => write!(f, "expected {expected} at {paddr:#x}, found {found}"),
            E::TableBadLength {
                table,
                paddr,
                length,
                min,
                max,
            } => write!(
                f,
                "{table} at {paddr:#x}: length {length} not in {min}..={max}"
            ),
            E::TableBadChecksum { table, paddr, sum } => write!(
                f,
                "{table} at {paddr:#x}: bad checksum (sums to {sum:#04x})"
            ),
            E::TableNotFound {
                table,
                root,
                entries,
                unreadable,
            } => write!(
                f,
                "no {table} among the {entries} {root} entries ({unreadable} unreadable)"
            ),
            E::HardwareReduced => f.write_str("hardware-reduced ACPI: no PM1 control block for S5"),
            E::NoPm1aCnt => f.write_str("FADT names no PM1a control block"),
            E::PmPortOutOfRange { field, value } => {
                write!(f, "FADT {field} {value:#x} is not an I/O port")
            }
            E::NoDsdt => f.write_str("FADT names no DSDT"),
            E::S5NotFound { dsdt } => write!(f, "DSDT at {dsdt:#x} has no _S5_ object"),
            E::S5NotPackage { offset, opcode } => write!(
                f,
                "DSDT+{offset:#x}: _S5_ is opcode {opcode:#04x}, not a package"
            ),
            E::S5Truncated { offset } => {
                write!(f, "DSDT+{offset:#x}: _S5_ package is truncated")
            }
            E::S5BadPkgLength { offset, lead } => write!(
                f,
                "DSDT+{offset:#x}: _S5_ package length byte {lead:#04x} is malformed"
            ),
            E::S5TooFewElements { offset, count } => write!(
                f,
                "DSDT+{offset:#x}: _S5_ package has {count} elements, needs 2"
            ),
            E::S5BadElement { offset, opcode } => write!(
                f,
                "DSDT+{offset:#x}: _S5_ element opcode {opcode:#04x} is not an integer constant"
            ),
        }
    }
}

impl core::error::Error for AcpiError {}

/// Finds the S5 sequence.
///
/// `rsdp_hint` is where the loader said the RSDP is (PVH's `rsdp_paddr`,
/// multiboot's copy); it is used as given, without falling back to a
/// search. Without it (or with `Some(0)`), the first KiB of the EBDA and
/// then 0xE0000..0x100000 are searched on 16-byte boundaries.
pub fn find_s5(mem: &impl PhysRead, rsdp_hint: Option<u64>) -> Result<AcpiShutdown, AcpiError> {
    let rsdp = match rsdp_hint {
        Some(paddr) if paddr != 0 => read_rsdp(mem, paddr, &[])?,
        _ => scan_rsdp(mem)?,
    };
    let (fadt_paddr, fadt_hdr) = find_table(mem, &rsdp, Signature::FACP)?;
    let fadt = read_fadt(mem, fadt_paddr, &fadt_hdr)?;
    let (slp_typ_a, slp_typ_b) = find_s5_in_dsdt(mem, fadt.dsdt)?;
    Ok(AcpiShutdown {
        pm1a_cnt: fadt.pm1a_cnt,
        pm1b_cnt: fadt.pm1b_cnt,
        slp_typ_a,
        slp_typ_b,
    })
}

/// Largest MADT read (a few thousand CPUs' worth of entries).
pub const MAX_MADT_LEN: usize = 64 * 1024;
/// MADT entry: processor local APIC.
const MADT_LOCAL_APIC: u8 = 0;
/// MADT entry: processor local x2APIC.
const MADT_LOCAL_X2APIC: u8 = 9;
/// Local APIC flags: enabled, or online-capable (may be hot-added).
const MADT_CPU_ENABLED: u32 = 1;
const MADT_CPU_ONLINE_CAPABLE: u32 = 2;

/// The CPUs the MADT lists as enabled or online-capable, by APIC ID. IDs at
/// or above [`pvops_core::irq::MAX_CPUS`] are counted in the second value, not stored.
pub fn find_cpus(
    mem: &impl PhysRead,
    rsdp_hint: Option<u64>,
) -> Result<(CpuMask, usize), AcpiError> {
    let rsdp = match rsdp_hint {
        Some(paddr) if paddr != 0 => read_rsdp(mem, paddr, &[])?,
        _ => scan_rsdp(mem)?,
    };
    let (paddr, hdr) = find_table(mem, &rsdp, Signature::MADT)?;
    let mut cpus = CpuMask::new();
    let mut too_high = 0;
    // Entries are (type, length, ...) records after the 8-byte MADT fields;
    // they may straddle read chunks, so carry a partial record over.
    let mut carry = [0u8; 256];
    let mut carried = 0usize;
    let mut fixed = [0u8; 8];
    let mut malformed = false;
    read_body(
        mem,
        paddr,
        &hdr,
        (SDT_HEADER_LEN + 8, MAX_MADT_LEN),
        &mut fixed,
        |_, piece| {
            for &b in piece {
                if malformed {
                    // A record shorter than its own header: the rest cannot
                    // be framed; keep what was found before it.
                    return;
                }
                carry[carried] = b;
                carried += 1;
                if carried >= 2 {
                    let len = usize::from(carry[1]);
                    if len < 2 {
                        malformed = true;
                        continue;
                    }
                    if carried == len {
                        let rec = &carry[..len];
                        let (id, flags) = match (rec[0], len) {
                            (MADT_LOCAL_APIC, 8..) => (
                                u32::from(rec[3]),
                                u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]),
                            ),
                            (MADT_LOCAL_X2APIC, 16..) => (
                                u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]),
                                u32::from_le_bytes([rec[8], rec[9], rec[10], rec[11]]),
                            ),
                            _ => (u32::MAX, 0),
                        };
                        if flags & (MADT_CPU_ENABLED | MADT_CPU_ONLINE_CAPABLE) != 0
                            && !cpus.insert(CpuId(id))
                        {
                            too_high += 1;
                        }
                        carried = 0;
                    }
                }
            }
        },
    )?;
    Ok((cpus, too_high))
}

fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, &b| s.wrapping_add(b))
}

fn add(paddr: u64, offset: usize) -> Option<u64> {
    paddr.checked_add(u64::try_from(offset).ok()?)
}

/// What the root pointer says, checked.
struct RootPointer {
    revision: u8,
    rsdt: u32,
    xsdt: u64,
}

/// Fills `buf[from..to]`, the bytes at `paddr + from..paddr + to`: those
/// below `have.len()` from `have` (bytes of the same place already copied
/// out), the rest from memory. Nothing is read twice.
fn fill(
    mem: &impl PhysRead,
    paddr: u64,
    buf: &mut [u8],
    (from, to): (usize, usize),
    have: &[u8],
) -> Result<(), PhysReadError> {
    let split = have.len().clamp(from, to);
    if let Some(known) = have.get(from..split) {
        buf[from..split].copy_from_slice(known);
    }
    if split < to {
        let at = add(paddr, split).ok_or(PhysReadError::OutOfRange { paddr, len: to })?;
        mem.read_phys(at, &mut buf[split..to])?;
    }
    Ok(())
}

/// Reads and checks the RSDP at `paddr`: 20 bytes first, and for revision
/// 2+ the rest. `have` holds its first bytes if the caller already copied
/// them out (a search); only what is missing is read.
fn read_rsdp(mem: &impl PhysRead, paddr: u64, have: &[u8]) -> Result<RootPointer, AcpiError> {
    let unreadable = |err| AcpiError::RsdpUnreadable { paddr, err };
    let mut buf = [0u8; MAX_RSDP_LEN];
    fill(mem, paddr, &mut buf, (0, RSDP_V1_LEN), have).map_err(unreadable)?;
    if buf[..8] != RSDP_SIGNATURE {
        return Err(AcpiError::RsdpBadSignature { paddr });
    }
    if sum(&buf[..RSDP_V1_LEN]) != 0 {
        return Err(AcpiError::RsdpBadChecksum { paddr });
    }
    let mut rsdp = Rsdp::new_zeroed();
    rsdp.as_mut_bytes()[..RSDP_V1_LEN].copy_from_slice(&buf[..RSDP_V1_LEN]);
    if rsdp.revision >= 2 {
        fill(mem, paddr, &mut buf, (RSDP_V1_LEN, RSDP_V2_LEN), have).map_err(unreadable)?;
        rsdp.as_mut_bytes()[RSDP_V1_LEN..].copy_from_slice(&buf[RSDP_V1_LEN..RSDP_V2_LEN]);
        let length = rsdp.length.get();
        let len = match usize::try_from(length) {
            Ok(l) if (RSDP_V2_LEN..=MAX_RSDP_LEN).contains(&l) => l,
            _ => return Err(AcpiError::RsdpBadLength { paddr, length }),
        };
        fill(mem, paddr, &mut buf, (RSDP_V2_LEN, len), have).map_err(unreadable)?;
        if sum(&buf[..len]) != 0 {
            return Err(AcpiError::RsdpBadExtendedChecksum { paddr });
        }
    }
    Ok(RootPointer {
        revision: rsdp.revision,
        rsdt: rsdp.rsdt_address.get(),
        xsdt: if rsdp.revision >= 2 {
            rsdp.xsdt_address.get()
        } else {
            0
        },
    })
}

/// Searches `len` bytes at `start` for a valid RSDP on 16-byte boundaries.
/// A signature whose structure does not check out is remembered in
/// `rejected` and the search goes on.
fn scan_area(
    mem: &impl PhysRead,
    start: u64,
    len: usize,
    rejected: &mut Option<AcpiError>,
) -> Result<Option<RootPointer>, AcpiError> {
    let mut chunk = [0u8; CHUNK];
    let mut off = 0;
    while off < len {
        let n = CHUNK.min(len - off);
        let at = add(start, off).ok_or(AcpiError::RsdpNotFound)?;
        mem.read_phys(at, &mut chunk[..n])
            .map_err(|err| AcpiError::RsdpUnreadable { paddr: at, err })?;
        for i in (0..n).step_by(16) {
            let have = &chunk[i..n];
            if have.starts_with(&RSDP_SIGNATURE) {
                let cand = at + i as u64;
                match read_rsdp(mem, cand, have) {
                    Ok(r) => return Ok(Some(r)),
                    Err(e) => *rejected = Some(e),
                }
            }
        }
        off += n;
    }
    Ok(None)
}

fn scan_rsdp(mem: &impl PhysRead) -> Result<RootPointer, AcpiError> {
    let mut rejected = None;
    // The EBDA is optional: a missing or unreadable one is skipped.
    let mut seg = [0u8; 2];
    if mem.read_phys(EBDA_SEGMENT_PTR, &mut seg).is_ok() {
        let ebda = u64::from(u16::from_le_bytes(seg)) << 4;
        if (0x400..0xa_0000).contains(&ebda) {
            if let Ok(Some(r)) = scan_area(mem, ebda, EBDA_SEARCH_LEN, &mut rejected) {
                return Ok(r);
            }
        }
    }
    if let Some(r) = scan_area(mem, BIOS_AREA.0, BIOS_AREA.1, &mut rejected)? {
        return Ok(r);
    }
    Err(rejected.unwrap_or(AcpiError::RsdpNotFound))
}

/// Reads a table header.
fn read_header(mem: &impl PhysRead, table: Signature, paddr: u64) -> Result<SdtHeader, AcpiError> {
    let mut hdr = SdtHeader::new_zeroed();
    mem.read_phys(paddr, hdr.as_mut_bytes())
        .map_err(|err| AcpiError::TableUnreadable { table, paddr, err })?;
    Ok(hdr)
}

/// Reads the rest of the table whose header `hdr` was read from `paddr`
/// and checks its length (`min..=max`) and checksum. Body bytes
/// `0..keep.len()` (table offsets 36..) are copied into `keep`; the rest
/// are read in [`CHUNK`]-byte pieces and handed to `rest` with their table
/// offset. Returns the table length.
fn read_body(
    mem: &impl PhysRead,
    paddr: u64,
    hdr: &SdtHeader,
    (min, max): (usize, usize),
    keep: &mut [u8],
    mut rest: impl FnMut(usize, &[u8]),
) -> Result<usize, AcpiError> {
    let table = Signature(hdr.signature);
    let length = hdr.length.get();
    let len = match usize::try_from(length) {
        Ok(l) if (min..=max).contains(&l) => l,
        _ => {
            return Err(AcpiError::TableBadLength {
                table,
                paddr,
                length,
                min: u32::try_from(min).unwrap_or(u32::MAX),
                max: u32::try_from(max).unwrap_or(u32::MAX),
            })
        }
    };
    let unreadable = |at: u64, err| AcpiError::TableUnreadable {
        table,
        paddr: at,
        err,
    };
    let out_of_range = unreadable(paddr, PhysReadError::OutOfRange { paddr, len });
    let mut total = sum(hdr.as_bytes());
    let body_len = len - SDT_HEADER_LEN;
    let kept = body_len.min(keep.len());
    let mut off = SDT_HEADER_LEN;
    if kept > 0 {
        let at = add(paddr, off).ok_or(out_of_range)?;
        let dst = &mut keep[..kept];
        mem.read_phys(at, dst).map_err(|e| unreadable(at, e))?;
        total = total.wrapping_add(sum(dst));
        off += kept;
    }
    let mut chunk = [0u8; CHUNK];
    while off < len {
        let n = CHUNK.min(len - off);
        let at = add(paddr, off).ok_or(out_of_range)?;
        let piece = &mut chunk[..n];
        mem.read_phys(at, piece).map_err(|e| unreadable(at, e))?;
        total = total.wrapping_add(sum(piece));
        rest(off, piece);
        off += n;
    }
    if total != 0 {
        return Err(AcpiError::TableBadChecksum {
            table,
            paddr,
            sum: total,
        });
    }
    Ok(len)
}

/// Reads the root table and returns the address and header of the first
/// table with signature `want` it lists.
fn find_table(
    mem: &impl PhysRead,
    rsdp: &RootPointer,
    want: Signature,
) -> Result<(u64, SdtHeader), AcpiError> {
    let (root, paddr, entry_len) = if rsdp.revision >= 2 && rsdp.xsdt != 0 {
        (Signature::XSDT, rsdp.xsdt, 8)
    } else if rsdp.rsdt != 0 {
        (Signature::RSDT, u64::from(rsdp.rsdt), 4)
    } else {
        return Err(AcpiError::NoRootTable {
            revision: rsdp.revision,
        });
    };
    let hdr = read_header(mem, root, paddr)?;
    if hdr.signature != root.0 {
        return Err(AcpiError::TableBadSignature {
            expected: root,
            found: Signature(hdr.signature),
            paddr,
        });
    }
    let mut body = [0u8; MAX_ROOT_LEN - SDT_HEADER_LEN];
    let len = read_body(
        mem,
        paddr,
        &hdr,
        (SDT_HEADER_LEN, MAX_ROOT_LEN),
        &mut body,
        |_, _| {},
    )?;
    // A trailing partial entry (a malformed length) is ignored.
    let entries = &body[..len - SDT_HEADER_LEN];
    let mut unreadable = 0;
    let mut count = 0;
    for e in entries.chunks_exact(entry_len) {
        count += 1;
        let addr = e.iter().rev().fold(0u64, |acc, &b| acc << 8 | u64::from(b));
        if addr == 0 {
            continue;
        }
        match read_header(mem, want, addr) {
            Ok(h) if h.signature == want.0 => return Ok((addr, h)),
            Ok(_) => {}
            Err(_) => unreadable += 1,
        }
    }
    Err(AcpiError::TableNotFound {
        table: want,
        root,
        entries: count,
        unreadable,
    })
}

/// What the FADT says about S5.
struct FadtInfo {
    pm1a_cnt: u16,
    pm1b_cnt: Option<u16>,
    dsdt: u64,
}

fn port(field: &'static str, value: u32) -> Result<Option<u16>, AcpiError> {
    if value == 0 {
        return Ok(None);
    }
    u16::try_from(value)
        .map(Some)
        .map_err(|_| AcpiError::PmPortOutOfRange {
            field,
            value: u64::from(value),
        })
}

/// Reads the rest of the FADT whose header `hdr` (signature already
/// matched) was read from `paddr`.
fn read_fadt(mem: &impl PhysRead, paddr: u64, hdr: &SdtHeader) -> Result<FadtInfo, AcpiError> {
    let mut fadt = Fadt::new_zeroed();
    let len = read_body(
        mem,
        paddr,
        hdr,
        (MIN_FADT_LEN, MAX_FADT_LEN),
        &mut fadt.as_mut_bytes()[SDT_HEADER_LEN..],
        |_, _| {},
    )?;
    fadt.header = *hdr;
    if fadt.flags.get() & FADT_HW_REDUCED_ACPI != 0 {
        return Err(AcpiError::HardwareReduced);
    }
    let x_pm1a = (len >= FADT_X_PM1A_CNT_END)
        .then(|| fadt.x_pm1a_cnt_blk.io_port())
        .flatten();
    let pm1a_cnt = match x_pm1a {
        Some(p) => p,
        None => port("PM1a_CNT_BLK", fadt.pm1a_cnt_blk.get())?.ok_or(AcpiError::NoPm1aCnt)?,
    };
    let x_pm1b = (len >= FADT_X_PM1B_CNT_END)
        .then(|| fadt.x_pm1b_cnt_blk.io_port())
        .flatten();
    let pm1b_cnt = match x_pm1b {
        Some(p) => Some(p),
        None => port("PM1b_CNT_BLK", fadt.pm1b_cnt_blk.get())?,
    };
    let x_dsdt = if len >= FADT_X_DSDT_END {
        fadt.x_dsdt.get()
    } else {
        0
    };
    let dsdt = match x_dsdt {
        0 => u64::from(fadt.dsdt.get()),
        x => x,
    };
    if dsdt == 0 {
        return Err(AcpiError::NoDsdt);
    }
    Ok(FadtInfo {
        pm1a_cnt,
        pm1b_cnt,
        dsdt,
    })
}

/// Scans the AML body piece by piece. `window[..len]` holds table bytes
/// `base..base + len`; after each piece all but the last
/// [`S5_LOOKAHEAD`] bytes have been examined as candidate starts.
struct S5Scanner {
    window: [u8; CHUNK + S5_LOOKAHEAD],
    len: usize,
    base: usize,
    table_len: usize,
    found: Option<(u8, u8)>,
    first_error: Option<AcpiError>,
}

impl S5Scanner {
    fn feed(&mut self, offset: usize, piece: &[u8]) {
        let Some(dst) = self.window.get_mut(self.len..self.len + piece.len()) else {
            // Pieces are at most CHUNK bytes and at most S5_LOOKAHEAD are
            // carried over, so this is never reached.
            return;
        };
        dst.copy_from_slice(piece);
        self.len += piece.len();
        let last = offset + piece.len() >= self.table_len;
        let limit = if last {
            self.len
        } else {
            self.len.saturating_sub(S5_LOOKAHEAD)
        };
        if self.found.is_none() {
            for i in 0..limit {
                if self.window[i] != AML_NAME_OP {
                    continue;
                }
                let at = self.base + i;
                let room = self.table_len - at;
                let bytes = &self.window[i..self.len];
                match parse_s5(bytes, room, at) {
                    None => {}
                    Some(Ok(v)) => {
                        self.found = Some(v);
                        break;
                    }
                    Some(Err(e)) => {
                        self.first_error.get_or_insert(e);
                    }
                }
            }
        }
        self.window.copy_within(limit..self.len, 0);
        self.base += limit;
        self.len -= limit;
    }
}

/// Tries to read an `_S5_` name object at the start of `bytes` (a `NameOp`).
/// `room` is how many table bytes there are from that point on (at least
/// `bytes.len()`); `at` is its offset in the table, for errors.
///
/// `None` if this is not an `_S5_` name object at all; an error if it is
/// one but malformed.
fn parse_s5(bytes: &[u8], room: usize, at: usize) -> Option<Result<(u8, u8), AcpiError>> {
    let offset = u32::try_from(at).unwrap_or(u32::MAX);
    let truncated = AcpiError::S5Truncated { offset };
    let mut i = 1;
    match bytes.get(i) {
        Some(&AML_ROOT_CHAR) => i += 1,
        Some(&AML_PARENT_PREFIX) => {
            while i <= MAX_PARENT_PREFIXES && bytes.get(i) == Some(&AML_PARENT_PREFIX) {
                i += 1;
            }
        }
        _ => {}
    }
    if bytes.get(i..i + 4) != Some(b"_S5_".as_slice()) {
        return None;
    }
    i += 4;
    let Some(&op) = bytes.get(i) else {
        return Some(Err(truncated));
    };
    if op != AML_PACKAGE_OP {
        return Some(Err(AcpiError::S5NotPackage { offset, opcode: op }));
    }
    i += 1;
    Some(parse_package(bytes, room, i, offset))
}

/// Parses the package whose PkgLength starts at `bytes[i]`.
fn parse_package(
    bytes: &[u8],
    room: usize,
    mut i: usize,
    offset: u32,
) -> Result<(u8, u8), AcpiError> {
    let truncated = AcpiError::S5Truncated { offset };
    let byte = |k: usize| bytes.get(k).copied().ok_or(truncated);
    let pkg_start = i;
    let lead = byte(i)?;
    let follow = usize::from(lead >> 6);
    let mut pkg_len = if follow == 0 {
        usize::from(lead & 0x3f)
    } else {
        if lead & 0x30 != 0 {
            return Err(AcpiError::S5BadPkgLength { offset, lead });
        }
        usize::from(lead & 0x0f)
    };
    for k in 0..follow {
        pkg_len |= usize::from(byte(i + 1 + k)?) << (4 + 8 * k);
    }
    // The package (which counts its own PkgLength bytes) must fit in the
    // table.
    let pkg_end = pkg_start + pkg_len;
    if pkg_end > room {
        return Err(truncated);
    }
    // Every byte parsed below must lie inside the package.
    let in_pkg = |k: usize| if k < pkg_end { byte(k) } else { Err(truncated) };
    i += 1 + follow;
    let count = in_pkg(i)?;
    if count < 2 {
        return Err(AcpiError::S5TooFewElements { offset, count });
    }
    i += 1;
    let mut values = [0u8; 2];
    for v in &mut values {
        let opcode = in_pkg(i)?;
        let width = match opcode {
            AML_ZERO_OP | AML_ONE_OP | AML_ONES_OP => 0,
            AML_BYTE_PREFIX => 1,
            AML_WORD_PREFIX => 2,
            AML_DWORD_PREFIX => 4,
            AML_QWORD_PREFIX => 8,
            _ => return Err(AcpiError::S5BadElement { offset, opcode }),
        };
        // Little endian: the low byte comes first; SLP_TYP is its low 3
        // bits. The other bytes must still be inside the package.
        let low = if width == 0 { opcode } else { in_pkg(i + 1)? };
        if width > 0 {
            in_pkg(i + width)?;
        }
        *v = low & 0x7;
        i += 1 + width;
    }
    Ok((values[0], values[1]))
}

fn find_s5_in_dsdt(mem: &impl PhysRead, paddr: u64) -> Result<(u8, u8), AcpiError> {
    let hdr = read_header(mem, Signature::DSDT, paddr)?;
    if hdr.signature != Signature::DSDT.0 {
        return Err(AcpiError::TableBadSignature {
            expected: Signature::DSDT,
            found: Signature(hdr.signature),
            paddr,
        });
    }
    let table_len = usize::try_from(hdr.length.get()).unwrap_or(usize::MAX);
    let mut scan = S5Scanner {
        window: [0; CHUNK + S5_LOOKAHEAD],
        len: 0,
        base: SDT_HEADER_LEN,
        table_len,
        found: None,
        first_error: None,
    };
    read_body(
        mem,
        paddr,
        &hdr,
        (SDT_HEADER_LEN, MAX_DSDT_LEN),
        &mut [],
        |off, piece| scan.feed(off, piece),
    )?;
    // Only now, with the checksum verified, is the scan's result used.
    match (scan.found, scan.first_error) {
        (Some(v), _) => Ok(v),
        (None, Some(e)) => Err(e),
        (None, None) => Err(AcpiError::S5NotFound { dsdt: paddr }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec;
    use std::vec::Vec;

    use pvops_core::phys::fake::FakeMem;

    const RSDP_AT: u64 = 0xf_5a00;
    const RSDT_AT: u64 = 0x7fe_0000;
    const XSDT_AT: u64 = 0x7fe_0100;
    const OTHER_AT: u64 = 0x7fe_0200;
    const FADT_AT: u64 = 0x7fe_0400;
    const DSDT_AT: u64 = 0x7fe_1000;
    const TABLES: (u64, usize) = (0x7fe_0000, 0x2_0000);

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        bytes[at] = 0u8.wrapping_sub(sum(bytes));
    }

    fn rsdp_v1(rsdt: u32) -> Vec<u8> {
        let mut r = Rsdp::new_zeroed();
        r.signature = RSDP_SIGNATURE;
        r.oem_id = *b"PVOPS ";
        r.rsdt_address.set(rsdt);
        let mut v = r.as_bytes()[..RSDP_V1_LEN].to_vec();
        fix_checksum(&mut v, 8);
        v
    }

    fn rsdp_v2(rsdt: u32, xsdt: u64) -> Vec<u8> {
        let mut r = Rsdp::new_zeroed();
        r.signature = RSDP_SIGNATURE;
        r.oem_id = *b"PVOPS ";
        r.revision = 2;
        r.rsdt_address.set(rsdt);
        r.length.set(RSDP_V2_LEN as u32);
        r.xsdt_address.set(xsdt);
        let mut v = r.as_bytes().to_vec();
        fix_checksum(&mut v[..RSDP_V1_LEN], 8);
        fix_checksum(&mut v, 32);
        v
    }

    fn table(sig: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut h = SdtHeader::new_zeroed();
        h.signature = *sig;
        h.length.set((SDT_HEADER_LEN + body.len()) as u32);
        h.revision = 1;
        h.oem_id = *b"PVOPS ";
        let mut v = h.as_bytes().to_vec();
        v.extend_from_slice(body);
        fix_checksum(&mut v, 9);
        v
    }

    fn rsdt(entries: &[u32]) -> Vec<u8> {
        let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        table(b"RSDT", &body)
    }

    fn xsdt(entries: &[u64]) -> Vec<u8> {
        let body: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
        table(b"XSDT", &body)
    }

    fn io_gas(port: u64) -> Gas {
        Gas {
            space_id: GAS_SYSTEM_IO,
            bit_width: 16,
            bit_offset: 0,
            access_size: 2,
            address: U64::new(port),
        }
    }

    /// A FADT of `len` bytes with the given fields; `edit` changes more.
    fn fadt_with(len: usize, edit: impl FnOnce(&mut Fadt)) -> Vec<u8> {
        let mut f = Fadt::new_zeroed();
        f.dsdt.set(DSDT_AT as u32);
        f.pm1a_cnt_blk.set(0x604);
        edit(&mut f);
        f.header.signature = *b"FACP";
        f.header.length.set(len as u32);
        let mut v = f.as_bytes()[..len.min(276)].to_vec();
        v.resize(len, 0);
        fix_checksum(&mut v, 9);
        v
    }

    fn fadt() -> Vec<u8> {
        fadt_with(276, |_| {})
    }

    const S5_PLAIN: &[u8] = &[
        0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x06, 0x00, 0x00,
    ];

    /// Some AML around the object: a scope opener, noops, another name.
    fn aml_around(s5: &[u8]) -> Vec<u8> {
        let mut v = vec![
            0x08, b'_', b'S', b'3', b'_', 0x12, 0x06, 0x04, 0x01, 0x01, 0, 0,
        ];
        v.extend_from_slice(&[0xa3; 10]);
        v.extend_from_slice(s5);
        v.extend_from_slice(&[0xa3; 7]);
        v
    }

    fn dsdt(aml: &[u8]) -> Vec<u8> {
        table(b"DSDT", aml)
    }

    /// A machine: low memory (with the BIOS area) and a table region, with
    /// an RSDP v2 in the BIOS area pointing at an XSDT (and an RSDT) that
    /// list an unrelated table and the FADT.
    fn machine(aml: &[u8]) -> FakeMem {
        let mut m = FakeMem {
            regions: vec![(0, vec![0; 0x10_0000]), (TABLES.0, vec![0; TABLES.1])],
        };
        m.write(RSDP_AT, &rsdp_v2(RSDT_AT as u32, XSDT_AT));
        m.write(RSDT_AT, &rsdt(&[OTHER_AT as u32, FADT_AT as u32]));
        m.write(XSDT_AT, &xsdt(&[OTHER_AT, FADT_AT]));
        m.write(OTHER_AT, &table(b"APIC", &[1, 2, 3, 4]));
        m.write(FADT_AT, &fadt());
        m.write(DSDT_AT, &dsdt(&aml_around(aml)));
        m
    }

    fn expect(m: &FakeMem, hint: Option<u64>) -> AcpiShutdown {
        find_s5(m, hint).unwrap_or_else(|e| panic!("find_s5 failed: {e}"))
    }

    const QEMU_LIKE: AcpiShutdown = AcpiShutdown {
        pm1a_cnt: 0x604,
        pm1b_cnt: None,
        slp_typ_a: 5,
        slp_typ_b: 6,
    };

    #[test]
    fn rsdp_v2_xsdt_with_hint_and_by_scan() {
        let m = machine(S5_PLAIN);
        assert_eq!(expect(&m, Some(RSDP_AT)), QEMU_LIKE);
        assert_eq!(expect(&m, None), QEMU_LIKE);
        assert_eq!(expect(&m, Some(0)), QEMU_LIKE);
    }

    #[test]
    fn xsdt_is_preferred_over_rsdt() {
        // The RSDT lists no FADT; the XSDT does.
        let mut m = machine(S5_PLAIN);
        m.write(RSDT_AT, &rsdt(&[OTHER_AT as u32]));
        assert_eq!(expect(&m, None), QEMU_LIKE);
    }

    #[test]
    fn rsdp_v1_uses_rsdt() {
        let mut m = machine(S5_PLAIN);
        m.write(RSDP_AT, &[0; 36]);
        m.write(RSDP_AT, &rsdp_v1(RSDT_AT as u32));
        // The XSDT would not work: a v1 RSDP never uses it.
        m.write(XSDT_AT, &xsdt(&[OTHER_AT]));
        assert_eq!(expect(&m, None), QEMU_LIKE);
        assert_eq!(expect(&m, Some(RSDP_AT)), QEMU_LIKE);
    }

    #[test]
    fn rsdp_v2_without_xsdt_uses_rsdt() {
        let mut m = machine(S5_PLAIN);
        m.write(RSDP_AT, &rsdp_v2(RSDT_AT as u32, 0));
        m.write(XSDT_AT, &[0; 36]);
        assert_eq!(expect(&m, None), QEMU_LIKE);
    }

    #[test]
    fn rsdp_in_ebda() {
        let mut m = machine(S5_PLAIN);
        m.write(RSDP_AT, &[0; 36]);
        m.write(EBDA_SEGMENT_PTR, &0x9fc0u16.to_le_bytes());
        m.write(0x9_fc00 + 0x30, &rsdp_v2(RSDT_AT as u32, XSDT_AT));
        assert_eq!(expect(&m, None), QEMU_LIKE);
    }

    #[test]
    fn scan_skips_bad_candidates_and_unaligned_signatures() {
        let mut m = machine(S5_PLAIN);
        m.write(RSDP_AT, &[0; 36]);
        // A signature with a bad checksum first, an unaligned good one,
        // then the real one near the very end of the area.
        let mut bad = rsdp_v1(RSDT_AT as u32);
        bad[8] ^= 1;
        m.write(0xe_0000, &bad);
        m.write(0xe_1008, &rsdp_v1(RSDT_AT as u32));
        m.write(0xf_ffe0, &rsdp_v1(RSDT_AT as u32));
        assert_eq!(expect(&m, None), QEMU_LIKE);
        // Without the good one, the rejected candidate is the reason.
        m.write(0xf_ffe0, &[0; 20]);
        assert_eq!(
            find_s5(&m, None),
            Err(AcpiError::RsdpBadChecksum { paddr: 0xe_0000 })
        );
    }

    #[test]
    fn rsdp_not_found() {
        let mut m = machine(S5_PLAIN);
        m.write(RSDP_AT, &[0; 36]);
        assert_eq!(find_s5(&m, None), Err(AcpiError::RsdpNotFound));
    }

    #[test]
    fn rsdp_hint_errors() {
        let mut m = machine(S5_PLAIN);
        assert_eq!(
            find_s5(&m, Some(0x1000)),
            Err(AcpiError::RsdpBadSignature { paddr: 0x1000 })
        );
        let mut r = rsdp_v2(RSDT_AT as u32, XSDT_AT);
        r[9] ^= 0x20; // an OEM byte: both checksums break
        m.write(RSDP_AT, &r);
        assert_eq!(
            find_s5(&m, Some(RSDP_AT)),
            Err(AcpiError::RsdpBadChecksum { paddr: RSDP_AT })
        );
        let mut r = rsdp_v2(RSDT_AT as u32, XSDT_AT);
        r[24] ^= 0x10; // the XSDT address: only the extended one breaks
        m.write(RSDP_AT, &r);
        assert_eq!(
            find_s5(&m, Some(RSDP_AT)),
            Err(AcpiError::RsdpBadExtendedChecksum { paddr: RSDP_AT })
        );
        let mut r = rsdp_v2(RSDT_AT as u32, XSDT_AT);
        r[20] = 20;
        fix_checksum(&mut r, 32);
        m.write(RSDP_AT, &r);
        assert_eq!(
            find_s5(&m, Some(RSDP_AT)),
            Err(AcpiError::RsdpBadLength {
                paddr: RSDP_AT,
                length: 20
            })
        );
        let mut r = rsdp_v2(0, 0);
        r[15] = 2;
        m.write(RSDP_AT, &r);
        assert_eq!(
            find_s5(&m, Some(RSDP_AT)),
            Err(AcpiError::NoRootTable { revision: 2 })
        );
    }

    #[test]
    fn longer_rsdp_is_summed_whole() {
        let mut m = machine(S5_PLAIN);
        let mut r = rsdp_v2(RSDT_AT as u32, XSDT_AT);
        r[20] = 40;
        r.extend_from_slice(&[0x11, 0, 0, 0]);
        fix_checksum(&mut r, 32);
        m.write(RSDP_AT, &r);
        assert_eq!(expect(&m, Some(RSDP_AT)), QEMU_LIKE);
        r[37] = 1;
        m.write(RSDP_AT, &r);
        assert_eq!(
            find_s5(&m, Some(RSDP_AT)),
            Err(AcpiError::RsdpBadExtendedChecksum { paddr: RSDP_AT })
        );
    }

    #[test]
    fn s5_encodings() {
        let cases: &[(&[u8], (u8, u8))] = &[
            (S5_PLAIN, (5, 6)),
            // \_S5_ with ZeroOp/OneOp.
            (
                &[
                    0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x01, 0x00,
                ],
                (1, 0),
            ),
            // ^_S5_ with OnesOp and BytePrefix above 7 (masked).
            (
                &[
                    0x08, b'^', b'_', b'S', b'5', b'_', 0x12, 0x05, 0x02, 0xff, 0x0a, 0x0d,
                ],
                (7, 5),
            ),
            // Word and DWord constants.
            (
                &[
                    0x08, b'_', b'S', b'5', b'_', 0x12, 0x0a, 0x02, 0x0b, 0x07, 0x00, 0x0c, 0x0e,
                    0x00, 0x00, 0x00,
                ],
                (7, 6),
            ),
            // QWord constant.
            (
                &[
                    0x08, b'_', b'S', b'5', b'_', 0x12, 0x0c, 0x02, 0x0e, 0x03, 0, 0, 0, 0, 0, 0,
                    0, 0x00,
                ],
                (3, 0),
            ),
            // Two-byte PkgLength (0x10 bytes) and eleven elements.
            (
                &[
                    0x08, b'_', b'S', b'5', b'_', 0x12, 0x40, 0x01, 0x0b, 0x0a, 0x03, 0x0a, 0x04,
                    0, 0, 0, 0, 0, 0, 0, 0, 0,
                ],
                (3, 4),
            ),
        ];
        for (aml, (a, b)) in cases {
            let s = expect(&machine(aml), None);
            assert_eq!((s.slp_typ_a, s.slp_typ_b), (*a, *b), "{aml:02x?}");
        }
    }

    #[test]
    fn s5_across_chunk_boundaries() {
        // The object at every position around the first two piece
        // boundaries of the body, in a DSDT several pieces long.
        for pos in (CHUNK - 40..CHUNK + 8).chain(2 * CHUNK - 20..2 * CHUNK + 2) {
            let mut aml = vec![0xa3; 3 * CHUNK + 100];
            aml[pos..pos + S5_PLAIN.len()].copy_from_slice(S5_PLAIN);
            let mut m = machine(S5_PLAIN);
            m.write(DSDT_AT, &dsdt(&aml));
            assert_eq!(expect(&m, None), QEMU_LIKE, "at body offset {pos}");
        }
    }

    #[test]
    fn s5_at_very_end_of_dsdt() {
        let mut m = machine(S5_PLAIN);
        m.write(DSDT_AT, &dsdt(S5_PLAIN));
        assert_eq!(expect(&m, None), QEMU_LIKE);
        // Exactly a piece long, ending with the object.
        let mut aml = vec![0xa3; CHUNK - SDT_HEADER_LEN];
        let n = aml.len();
        aml[n - S5_PLAIN.len()..].copy_from_slice(S5_PLAIN);
        m.write(DSDT_AT, &dsdt(&aml));
        assert_eq!(expect(&m, None), QEMU_LIKE);
    }

    #[test]
    fn malformed_first_then_good() {
        let mut aml = vec![0x08, b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x70, 0x00];
        aml.extend_from_slice(S5_PLAIN);
        assert_eq!(expect(&machine(&aml), None), QEMU_LIKE);
    }

    fn s5_error(aml: &[u8]) -> AcpiError {
        let mut m = machine(S5_PLAIN);
        m.write(DSDT_AT, &dsdt(aml));
        find_s5(&m, None).unwrap_err()
    }

    #[test]
    fn malformed_s5() {
        let name = [0x08, b'_', b'S', b'5', b'_'];
        let with = |rest: &[u8]| {
            let mut v = vec![0xa3, 0xa3];
            v.extend_from_slice(&name);
            v.extend_from_slice(rest);
            v
        };
        let offset = SDT_HEADER_LEN as u32 + 2;
        // Cut off at the end of the table, at every point.
        let full = [0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x06];
        for cut in 0..full.len() {
            assert_eq!(
                s5_error(&with(&full[..cut])),
                AcpiError::S5Truncated { offset },
                "cut at {cut}"
            );
        }
        // PkgLength shorter than the elements.
        assert_eq!(
            s5_error(&with(&[0x12, 0x04, 0x02, 0x0a, 0x05, 0x0a, 0x06, 0xa3])),
            AcpiError::S5Truncated { offset }
        );
        // PkgLength longer than the table.
        assert_eq!(
            s5_error(&with(&[0x12, 0x30, 0x02, 0x0a, 0x05, 0x0a, 0x06])),
            AcpiError::S5Truncated { offset }
        );
        assert_eq!(
            s5_error(&with(&[0x12, 0x50, 0x00, 0x02, 0x01, 0x01])),
            AcpiError::S5BadPkgLength { offset, lead: 0x50 }
        );
        assert_eq!(
            s5_error(&with(&[0x12, 0x03, 0x01, 0x01, 0xa3])),
            AcpiError::S5TooFewElements { offset, count: 1 }
        );
        assert_eq!(
            s5_error(&with(&[0x12, 0x05, 0x02, 0x0a, 0x05, 0x70])),
            AcpiError::S5BadElement {
                offset,
                opcode: 0x70
            }
        );
        assert_eq!(
            s5_error(&with(&[0x0a, 0x05])),
            AcpiError::S5NotPackage {
                offset,
                opcode: 0x0a
            }
        );
    }

    #[test]
    fn no_s5() {
        // `_S5_` inside a longer name path or without NameOp is not it.
        let aml = [
            0x2e, b'_', b'S', b'B', b'_', b'_', b'S', b'5', b'_', 0x12, 0x04, 0x02, 0x01, 0x01,
            0x08, b'_', b'S', b'4', b'_', 0x12, 0x04, 0x02, 0x01, 0x01,
        ];
        assert_eq!(s5_error(&aml), AcpiError::S5NotFound { dsdt: DSDT_AT });
        assert_eq!(s5_error(&[]), AcpiError::S5NotFound { dsdt: DSDT_AT });
    }

    #[test]
    fn bad_checksums() {
        let mut m = machine(S5_PLAIN);
        let mut t = dsdt(&aml_around(S5_PLAIN));
        t[40] ^= 0xff;
        m.write(DSDT_AT, &t);
        assert!(matches!(
            find_s5(&m, None),
            Err(AcpiError::TableBadChecksum {
                table: Signature::DSDT,
                paddr: DSDT_AT,
                ..
            })
        ));
        let mut m = machine(S5_PLAIN);
        let mut t = fadt();
        t[64] ^= 1;
        m.write(FADT_AT, &t);
        assert!(matches!(
            find_s5(&m, None),
            Err(AcpiError::TableBadChecksum {
                table: Signature::FACP,
                ..
            })
        ));
        let mut m = machine(S5_PLAIN);
        let mut t = xsdt(&[OTHER_AT, FADT_AT]);
        t[9] ^= 1;
        m.write(XSDT_AT, &t);
        let e = find_s5(&m, None).unwrap_err();
        assert!(matches!(
            e,
            AcpiError::TableBadChecksum {
                table: Signature::XSDT,
                paddr: XSDT_AT,
                ..
            }
        ));
        assert!(std::format!("{e}").starts_with("XSDT at 0x7fe0100: bad checksum"));
    }

    #[test]
    fn bad_lengths_and_signatures() {
        let mut m = machine(S5_PLAIN);
        m.write(FADT_AT, &fadt_with(100, |_| {}));
        assert_eq!(
            find_s5(&m, None),
            Err(AcpiError::TableBadLength {
                table: Signature::FACP,
                paddr: FADT_AT,
                length: 100,
                min: MIN_FADT_LEN as u32,
                max: MAX_FADT_LEN as u32
            })
        );
        let mut m = machine(S5_PLAIN);
        let mut t = xsdt(&[FADT_AT]);
        t[4..8].copy_from_slice(&(MAX_ROOT_LEN as u32 + 8).to_le_bytes());
        m.write(XSDT_AT, &t);
        assert!(matches!(
            find_s5(&m, None),
            Err(AcpiError::TableBadLength {
                table: Signature::XSDT,
                ..
            })
        ));
        let mut m = machine(S5_PLAIN);
        m.write(XSDT_AT, &table(b"XSDX", &[]));
        assert_eq!(
            find_s5(&m, None),
            Err(AcpiError::TableBadSignature {
                expected: Signature::XSDT,
                found: Signature(*b"XSDX"),
                paddr: XSDT_AT
            })
        );
        let mut m = machine(S5_PLAIN);
        m.write(DSDT_AT, &table(b"SSDT", S5_PLAIN));
        assert!(matches!(
            find_s5(&m, None),
            Err(AcpiError::TableBadSignature {
                expected: Signature::DSDT,
                ..
            })
        ));
        // A DSDT claiming 8 MiB.
        let mut m = machine(S5_PLAIN);
        let mut t = dsdt(S5_PLAIN);
        t[4..8].copy_from_slice(&(8u32 << 20).to_le_bytes());
        m.write(DSDT_AT, &t);
        assert!(matches!(
            find_s5(&m, None),
            Err(AcpiError::TableBadLength {
                table: Signature::DSDT,
                length: 0x80_0000,
                ..
            })
        ));
    }

    #[test]
    fn missing_facp() {
        let mut m = machine(S5_PLAIN);
        // Entries: an unrelated table, a null, an unreadable address.
        m.write(XSDT_AT, &xsdt(&[OTHER_AT, 0, 0x1_0000_0000]));
        assert_eq!(
            find_s5(&m, None),
            Err(AcpiError::TableNotFound {
                table: Signature::FACP,
                root: Signature::XSDT,
                entries: 3,
                unreadable: 1
            })
        );
        m.write(XSDT_AT, &xsdt(&[]));
        let e = find_s5(&m, None).unwrap_err();
        assert_eq!(
            std::format!("{e}"),
            "no FACP among the 0 XSDT entries (0 unreadable)"
        );
    }

    #[test]
    fn fadt_fields() {
        let with = |edit: &dyn Fn(&mut Fadt), len: usize| {
            let mut m = machine(S5_PLAIN);
            m.write(FADT_AT, &fadt_with(len, edit));
            find_s5(&m, None)
        };
        // X_ fields win when they are system-I/O.
        let s = with(
            &|f| {
                f.x_pm1a_cnt_blk = io_gas(0xb004);
                f.pm1b_cnt_blk.set(0x605);
                f.x_pm1b_cnt_blk = io_gas(0xb005);
            },
            276,
        )
        .unwrap();
        assert_eq!((s.pm1a_cnt, s.pm1b_cnt), (0xb004, Some(0xb005)));
        // ... but only if the table reaches them.
        let s = with(&|f| f.x_pm1a_cnt_blk = io_gas(0xb004), 180).unwrap();
        assert_eq!((s.pm1a_cnt, s.pm1b_cnt), (0x604, None));
        // A memory-space X_ block falls back to the 32-bit field.
        let s = with(
            &|f| {
                f.x_pm1a_cnt_blk = io_gas(0xfed0_0000);
                f.x_pm1a_cnt_blk.space_id = 0;
            },
            276,
        )
        .unwrap();
        assert_eq!(s.pm1a_cnt, 0x604);
        // A 32-bit PM1b.
        let s = with(&|f| f.pm1b_cnt_blk.set(0x704), 116).unwrap();
        assert_eq!(s.pm1b_cnt, Some(0x704));
        assert_eq!(
            with(&|f| f.pm1a_cnt_blk.set(0), 276),
            Err(AcpiError::NoPm1aCnt)
        );
        assert_eq!(
            with(&|f| f.pm1a_cnt_blk.set(0x1_0000), 276),
            Err(AcpiError::PmPortOutOfRange {
                field: "PM1a_CNT_BLK",
                value: 0x1_0000
            })
        );
        assert_eq!(
            with(&|f| f.flags.set(FADT_HW_REDUCED_ACPI), 276),
            Err(AcpiError::HardwareReduced)
        );
        assert_eq!(with(&|f| f.dsdt.set(0), 276), Err(AcpiError::NoDsdt));
        // X_DSDT wins over DSDT (which here points at garbage).
        let s = with(
            &|f| {
                f.dsdt.set(OTHER_AT as u32);
                f.x_dsdt.set(DSDT_AT);
            },
            276,
        );
        assert_eq!(s, Ok(QEMU_LIKE));
        // A FADT longer than the struct is summed whole.
        assert_eq!(with(&|_| {}, 300), Ok(QEMU_LIKE));
    }

    #[test]
    fn read_errors() {
        let m = machine(S5_PLAIN);
        assert!(matches!(
            find_s5(&m, Some(0x4000_0000)),
            Err(AcpiError::RsdpUnreadable {
                paddr: 0x4000_0000,
                ..
            })
        ));
        // No low memory at all (PVH without a hint).
        let mut m = machine(S5_PLAIN);
        m.regions.remove(0);
        assert!(matches!(
            find_s5(&m, None),
            Err(AcpiError::RsdpUnreadable {
                paddr: 0xe_0000,
                ..
            })
        ));
        // Root table unreadable.
        let mut m = machine(S5_PLAIN);
        m.write(0x9_0000, &rsdp_v2(0, 0x2_0000_0000));
        assert!(matches!(
            find_s5(&m, Some(0x9_0000)),
            Err(AcpiError::TableUnreadable {
                table: Signature::XSDT,
                paddr: 0x2_0000_0000,
                ..
            })
        ));
        // DSDT body running off readable memory.
        let mut m = machine(S5_PLAIN);
        let end = TABLES.0 + TABLES.1 as u64;
        let t = dsdt(&[0xa3; 100]);
        let at = end - 50;
        m.write(at, &t[..50]);
        m.write(FADT_AT, &fadt_with(276, |f| f.dsdt.set(at as u32)));
        assert!(matches!(
            find_s5(&m, None),
            Err(AcpiError::TableUnreadable {
                table: Signature::DSDT,
                ..
            })
        ));
    }

    #[test]
    fn every_error_displays_on_one_line() {
        let err = PhysReadError::OutOfRange { paddr: 1, len: 2 };
        let s = Signature(*b"A\0=\n");
        let all = [
            AcpiError::RsdpNotFound,
            AcpiError::RsdpUnreadable { paddr: 1, err },
            AcpiError::RsdpBadSignature { paddr: 1 },
            AcpiError::RsdpBadChecksum { paddr: 1 },
            AcpiError::RsdpBadLength {
                paddr: 1,
                length: 2,
            },
            AcpiError::RsdpBadExtendedChecksum { paddr: 1 },
            AcpiError::NoRootTable { revision: 0 },
            AcpiError::TableUnreadable {
                table: s,
                paddr: 1,
                err,
            },
            AcpiError::TableBadSignature {
                expected: s,
                found: s,
                paddr: 1,
            },
            AcpiError::TableBadLength {
                table: s,
                paddr: 1,
                length: 2,
                min: 3,
                max: 4,
            },
            AcpiError::TableBadChecksum {
                table: s,
                paddr: 1,
                sum: 2,
            },
            AcpiError::TableNotFound {
                table: s,
                root: s,
                entries: 1,
                unreadable: 0,
            },
            AcpiError::HardwareReduced,
            AcpiError::NoPm1aCnt,
            AcpiError::PmPortOutOfRange {
                field: "x",
                value: 1,
            },
            AcpiError::NoDsdt,
            AcpiError::S5NotFound { dsdt: 1 },
            AcpiError::S5NotPackage {
                offset: 1,
                opcode: 2,
            },
            AcpiError::S5Truncated { offset: 1 },
            AcpiError::S5BadPkgLength { offset: 1, lead: 2 },
            AcpiError::S5TooFewElements {
                offset: 1,
                count: 1,
            },
            AcpiError::S5BadElement {
                offset: 1,
                opcode: 2,
            },
        ];
        for e in all {
            let t = std::format!("{e}");
            assert!(!t.is_empty() && !t.contains('\n'), "{t:?}");
        }
        assert_eq!(std::format!("{s}"), "A\\x00=\\x0a");
        assert_eq!(std::format!("{:?}", Signature::FACP), "\"FACP\"");
    }

    use pvops_core::phys::fake::Logged;

    fn assert_each_byte_read_once(m: &FakeMem, hint: Option<u64>) {
        let logged = Logged {
            mem: m,
            log: Default::default(),
        };
        assert_eq!(find_s5(&logged, hint), Ok(QEMU_LIKE));
        let mut log = logged.log.into_inner();
        log.sort();
        for w in log.windows(2) {
            assert!(w[0].1 <= w[1].0, "{:#x?} overlaps {:#x?}", w[0], w[1]);
        }
    }

    #[test]
    fn no_byte_is_read_twice() {
        // A DSDT of several pieces with the object across a boundary.
        let mut aml = vec![0xa3; 3 * CHUNK];
        aml[CHUNK - 40..CHUNK - 40 + S5_PLAIN.len()].copy_from_slice(S5_PLAIN);
        let mut m = machine(S5_PLAIN);
        m.write(DSDT_AT, &dsdt(&aml));
        assert_each_byte_read_once(&m, Some(RSDP_AT));
        assert_each_byte_read_once(&m, None);
        // A v2 RSDP straddling a search piece: its first 16 bytes come from
        // the piece, the rest from a read of its own.
        m.write(RSDP_AT, &[0; 36]);
        m.write(0xe_03f0, &rsdp_v2(RSDT_AT as u32, XSDT_AT));
        assert_each_byte_read_once(&m, None);
        // And one in the EBDA.
        m.write(0xe_03f0, &[0; 36]);
        m.write(EBDA_SEGMENT_PTR, &0x9fc0u16.to_le_bytes());
        m.write(0x9_fc00 + 0x3f0, &rsdp_v2(RSDT_AT as u32, XSDT_AT));
        assert_each_byte_read_once(&m, None);
    }

    use pvops_core::phys::fake::Rng;

    #[test]
    fn mutated_tables_never_panic() {
        let base = machine(S5_PLAIN);
        let dsdt_len = dsdt(&aml_around(S5_PLAIN)).len();
        let spans: [(u64, usize); 5] = [
            (RSDP_AT, RSDP_V2_LEN),
            (XSDT_AT, SDT_HEADER_LEN + 16),
            (RSDT_AT, SDT_HEADER_LEN + 8),
            (FADT_AT, 276),
            (DSDT_AT, dsdt_len),
        ];
        let mut rng = Rng(0xac91_5eed_0000_0005);
        let (mut ok, mut err) = (0, 0);
        for round in 0..3000 {
            let mut m = base.clone();
            for _ in 0..1 + rng.below(4) {
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
            // Half the time, repair the DSDT checksum so the AML parser,
            // not the checksum, sees the damage.
            if round % 2 == 0 {
                let mut t = std::vec![0u8; dsdt_len];
                m.read_phys(DSDT_AT, &mut t).unwrap();
                let len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize;
                if (SDT_HEADER_LEN..=dsdt_len).contains(&len) {
                    fix_checksum(&mut t[..len], 9);
                    m.write(DSDT_AT, &t);
                }
            }
            let hint = if round % 3 == 0 { None } else { Some(RSDP_AT) };
            match find_s5(&m, hint) {
                Ok(s) => {
                    ok += 1;
                    assert!(s.slp_typ_a <= 7 && s.slp_typ_b <= 7);
                }
                Err(e) => {
                    err += 1;
                    assert!(!std::format!("{e}").is_empty());
                }
            }
        }
        assert!(ok > 100 && err > 100, "ok={ok} err={err}");
    }
}
