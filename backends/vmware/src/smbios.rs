//! Whether the firmware's SMBIOS tables name VMware: the evidence that
//! lets pvops knock on the backdoor port of a machine whose CPUID has no
//! VMware signature (older VMware, or a hypervisor that hides its leaves).
//!
//! Only the legacy BIOS area (0xF0000..0x100000) is searched for the entry
//! point (`_SM_` for SMBIOS 2.x, `_SM3_` for 3.x); UEFI firmware publishes
//! it in its configuration table, which [`BootContext`] does not carry
//! yet, so there the signature is the only evidence.
//!
//! [`BootContext`]: pvops_core::backend::BootContext

use core::fmt;
use pvops_core::phys::PhysRead;

/// Where the entry point is searched, on 16-byte boundaries.
pub const SEARCH: core::ops::Range<u64> = 0xF_0000..0x10_0000;
/// The longest structure table walked.
pub const MAX_TABLE: u32 = 0x1_0000;
/// SMBIOS structure type "System Information".
const TYPE_SYSTEM: u8 = 1;
/// SMBIOS structure type "End of Table".
const TYPE_END: u8 = 127;
/// What the strings must contain (VMware writes `VMware, Inc.`,
/// `VMware Virtual Platform`, `VMware-56 4d ...`).
const NEEDLE: &[u8] = b"VMware";

/// Why the tables could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SmbiosError {
    /// No entry point with a good checksum in the search area.
    NoEntryPoint,
    /// The entry point names a table that cannot be read.
    Unreadable {
        /// The table's physical address.
        paddr: u64,
    },
}

impl fmt::Display for SmbiosError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmbiosError::NoEntryPoint => f.write_str("no SMBIOS entry point in 0xf0000..0x100000"),
            SmbiosError::Unreadable { paddr } => {
                write!(f, "SMBIOS table at {paddr:#x} cannot be read")
            }
        }
    }
}

impl core::error::Error for SmbiosError {}

/// Where the structure table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLocation {
    /// Physical address.
    pub paddr: u64,
    /// Length in bytes (at most [`MAX_TABLE`]).
    pub len: u32,
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
}

/// Reads an entry point at `paddr`, if one is there.
fn entry_at(mem: &impl PhysRead, paddr: u64) -> Option<TableLocation> {
    let mut ep = [0u8; 0x20];
    mem.read_phys(paddr, &mut ep[..0x18]).ok()?;
    if &ep[..5] == b"_SM3_" {
        // 3.x: length at 6, table maximum size at 0x0C, address at 0x10.
        if ep[6] != 0x18 || !checksum_ok(&ep[..0x18]) {
            return None;
        }
        let max = u32::from_le_bytes(ep[0x0C..0x10].try_into().ok()?);
        let addr = u64::from_le_bytes(ep[0x10..0x18].try_into().ok()?);
        return Some(TableLocation {
            paddr: addr,
            len: max.min(MAX_TABLE),
        });
    }
    if &ep[..4] == b"_SM_" {
        // 2.x: length at 5 (0x1F), intermediate `_DMI_` at 0x10, table
        // length at 0x16, address at 0x18.
        mem.read_phys(paddr, &mut ep[..0x1F]).ok()?;
        let len = usize::from(ep[5]);
        if !(0x1E..=0x20).contains(&len) || !checksum_ok(&ep[..len.min(0x1F)]) {
            return None;
        }
        if &ep[0x10..0x15] != b"_DMI_" || !checksum_ok(&ep[0x10..0x1F]) {
            return None;
        }
        let tlen = u16::from_le_bytes([ep[0x16], ep[0x17]]);
        let addr = u32::from_le_bytes(ep[0x18..0x1C].try_into().ok()?);
        return Some(TableLocation {
            paddr: u64::from(addr),
            len: u32::from(tlen),
        });
    }
    None
}

/// Finds the entry point in [`SEARCH`].
pub fn find_table(mem: &impl PhysRead) -> Result<TableLocation, SmbiosError> {
    SEARCH
        .step_by(16)
        .find_map(|p| entry_at(mem, p))
        .ok_or(SmbiosError::NoEntryPoint)
}

/// Whether `s` contains [`NEEDLE`].
fn names_vmware(s: &[u8]) -> bool {
    s.windows(NEEDLE.len()).any(|w| w == NEEDLE)
}

/// Whether the System Information structure of the table at `loc` names
/// VMware in its manufacturer, product name or serial number.
pub fn table_says_vmware(mem: &impl PhysRead, loc: TableLocation) -> Result<bool, SmbiosError> {
    let end = loc.paddr.saturating_add(u64::from(loc.len.min(MAX_TABLE)));
    let unreadable = SmbiosError::Unreadable { paddr: loc.paddr };
    let byte = |p: u64| -> Result<u8, SmbiosError> {
        if p >= end {
            return Err(unreadable);
        }
        let mut b = [0u8];
        mem.read_phys(p, &mut b).map_err(|_| unreadable)?;
        Ok(b[0])
    };
    let mut p = loc.paddr;
    while p.saturating_add(4) <= end {
        let kind = byte(p)?;
        let formatted = u64::from(byte(p + 1)?);
        if formatted < 4 {
            // A header shorter than itself: the table is corrupt.
            return Err(unreadable);
        }
        // The formatted area, then strings (each NUL-ended), then a NUL.
        let strings = p + formatted;
        let mut wanted = [0u8; 3];
        if kind == TYPE_SYSTEM {
            // Manufacturer (4), product name (5), serial number (7).
            for (i, off) in [4u64, 5, 7].into_iter().enumerate() {
                if off < formatted {
                    wanted[i] = byte(p + off)?;
                }
            }
        }
        let mut q = strings;
        let mut index = 1u8;
        let mut found = false;
        // A structure with no strings ends in two NULs right away.
        if byte(q)? == 0 {
            q += 1;
        } else {
            loop {
                let start = q;
                let mut s = [0u8; 64];
                let mut n = 0;
                loop {
                    let b = byte(q)?;
                    q += 1;
                    if b == 0 {
                        break;
                    }
                    if n < s.len() {
                        s[n] = b;
                        n += 1;
                    }
                }
                if q - start > 1 && wanted.contains(&index) && names_vmware(&s[..n]) {
                    found = true;
                }
                index = index.wrapping_add(1);
                if byte(q)? == 0 {
                    break;
                }
            }
        }
        q += 1;
        if found {
            return Ok(true);
        }
        if kind == TYPE_END {
            break;
        }
        p = q;
    }
    Ok(false)
}

/// Whether the firmware's SMBIOS names VMware (see the module docs).
pub fn says_vmware(mem: &impl PhysRead) -> Result<bool, SmbiosError> {
    table_says_vmware(mem, find_table(mem)?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pvops_core::phys::PhysReadError;
    use std::vec::Vec;

    /// Physical memory holding `bytes` at `base`.
    pub(crate) struct Mem {
        pub base: u64,
        pub bytes: Vec<u8>,
    }

    impl PhysRead for Mem {
        fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), PhysReadError> {
            let err = PhysReadError::OutOfRange {
                paddr,
                len: buf.len(),
            };
            let off = usize::try_from(paddr.checked_sub(self.base).ok_or(err)?).map_err(|_| err)?;
            let src = self.bytes.get(off..off + buf.len()).ok_or(err)?;
            buf.copy_from_slice(src);
            Ok(())
        }
    }

    fn fix_checksum(bytes: &mut [u8], at: usize) {
        bytes[at] = 0;
        let s = bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
        bytes[at] = 0u8.wrapping_sub(s);
    }

    /// The F segment with a 2.x entry point at 0xF5A00 and a table at
    /// 0xF6000 whose type-1 manufacturer is `maker`.
    pub(crate) fn bios_with(maker: &str) -> Mem {
        let mut seg = std::vec![0u8; 0x1_0000];
        let mut table = Vec::new();
        // Type 0 (BIOS), strings "SeaBIOS".
        table.extend_from_slice(&[0, 0x12, 0, 0, 1]);
        table.extend_from_slice(&[0u8; 0x12 - 5]);
        table.extend_from_slice(b"SeaBIOS\0\0");
        // Type 1: manufacturer 1, product 2, version 0, serial 0.
        table.extend_from_slice(&[1, 0x1B, 1, 0, 1, 2, 0, 0]);
        table.extend_from_slice(&[0u8; 0x1B - 8]);
        table.extend_from_slice(maker.as_bytes());
        table.extend_from_slice(b"\0Standard PC\0\0");
        // End.
        table.extend_from_slice(&[127, 4, 2, 0, 0, 0]);
        let t = 0x6000;
        seg[t..t + table.len()].copy_from_slice(&table);
        let e = 0x5A00;
        let ep = &mut seg[e..e + 0x1F];
        ep[..4].copy_from_slice(b"_SM_");
        ep[5] = 0x1F;
        ep[0x10..0x15].copy_from_slice(b"_DMI_");
        ep[0x16..0x18].copy_from_slice(&(table.len() as u16).to_le_bytes());
        ep[0x18..0x1C].copy_from_slice(&(0xF_0000u32 + t as u32).to_le_bytes());
        fix_checksum(&mut ep[0x10..0x1F], 5);
        fix_checksum(&mut ep[..0x1F], 4);
        Mem {
            base: 0xF_0000,
            bytes: seg,
        }
    }

    #[test]
    fn finds_vmware_in_type_1() {
        assert_eq!(says_vmware(&bios_with("VMware, Inc.")), Ok(true));
        assert_eq!(says_vmware(&bios_with("QEMU")), Ok(false));
        // "VMware" in a string type 1 does not point at is no evidence:
        // the BIOS vendor string sits in type 0.
        assert_eq!(says_vmware(&bios_with("Other")), Ok(false));
    }

    #[test]
    fn bad_entry_points_and_tables() {
        let mut m = bios_with("VMware, Inc.");
        m.bytes[0x5A00 + 4] ^= 1; // checksum broken
        assert_eq!(says_vmware(&m), Err(SmbiosError::NoEntryPoint));
        let empty = Mem {
            base: 0xF_0000,
            bytes: std::vec![0u8; 0x1_0000],
        };
        assert_eq!(says_vmware(&empty), Err(SmbiosError::NoEntryPoint));
        // A table running off its stated length.
        let m = bios_with("VMware, Inc.");
        let loc = TableLocation {
            paddr: 0xF_6000,
            len: 10,
        };
        assert!(table_says_vmware(&m, loc).is_err());
    }
}
