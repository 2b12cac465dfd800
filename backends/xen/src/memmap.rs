//! The memory map of a PVH domain that was not given one in its start
//! info. Xen 4.17 hands a PVH dom0 a version 0 `hvm_start_info` (no
//! memory map); the map is this domain's pseudo-physical E820, from
//! `XENMEM_memory_map` (Linux does the same in its PVH entry).

use crate::abi::memory::E820Entry;
use crate::error::XenError;
use crate::hypercall::Hypercall;
use crate::xen::Xen;
use pvops_core::abi::start_info::{HvmMemmapEntry, MemmapType, MAX_MEMMAP_ENTRIES};

/// Entries read at most.
pub const MAX_ENTRIES: usize = MAX_MEMMAP_ENTRIES;

/// The entries of `raw` as start-info memory-map entries (E820 and
/// `hvm_memmap_table_entry` types share their numbers).
pub fn convert(raw: &[E820Entry]) -> impl Iterator<Item = HvmMemmapEntry> + '_ {
    raw.iter().map(|e| HvmMemmapEntry {
        addr: e.addr,
        size: e.size,
        kind: MemmapType(e.kind),
        reserved: 0,
    })
}

/// Reads the domain's memory map into `out`; returns how many entries.
pub fn read<H: Hypercall>(xen: &Xen<H>, out: &mut [HvmMemmapEntry]) -> Result<usize, XenError> {
    let mut raw = [E820Entry::default(); MAX_ENTRIES];
    let n = xen.memory_map(&mut raw)?;
    let mut k = 0;
    for (slot, e) in out.iter_mut().zip(convert(&raw[..n])) {
        *slot = e;
        k += 1;
    }
    Ok(k)
}

/// The `platform.memory_map` op: [`read`] with the real hypercalls; a
/// failure is printed as a warning line and gives no entries.
pub fn platform_map(out: &mut [HvmMemmapEntry]) -> usize {
    match read(&crate::xen::XEN, out) {
        Ok(n) => n,
        Err(e) => {
            crate::warn::warn(format_args!(
                "xen: XENMEM_memory_map failed: {e}; no memory map"
            ));
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{memory, nr};
    use crate::hypercall::tests::FakeXen;

    #[test]
    fn e820_entries_become_memmap_entries() {
        let x = Xen(FakeXen::new(|op, a| {
            assert_eq!((op, a[0]), (nr::MEMORY_OP, memory::XENMEM_MEMORY_MAP));
            // SAFETY: the typed layer passed a live MemoryMap.
            let m = unsafe { &mut *(a[1] as *mut memory::MemoryMap) };
            assert_eq!(m.nr_entries as usize, MAX_ENTRIES);
            let buf = m.buffer as *mut E820Entry;
            let map = [
                E820Entry {
                    addr: 0,
                    size: 0x9_f000,
                    kind: 1,
                },
                E820Entry {
                    addr: 0x10_0000,
                    size: 0x1000_0000,
                    kind: 1,
                },
                E820Entry {
                    addr: 0xfee0_0000,
                    size: 0x1000,
                    kind: 2,
                },
            ];
            for (i, e) in map.iter().enumerate() {
                // SAFETY: the buffer holds MAX_ENTRIES entries.
                unsafe { buf.add(i).write_unaligned(*e) };
            }
            m.nr_entries = 3;
            0
        }));
        let mut raw = [E820Entry::default(); 4];
        let mut buf = [E820Entry::default(); MAX_ENTRIES];
        let n = x.memory_map(&mut buf).unwrap();
        assert_eq!(n, 3);
        raw[..3].copy_from_slice(&buf[..3]);
        let got: std::vec::Vec<_> = convert(&raw[..n]).collect();
        assert_eq!(got[1].addr, 0x10_0000);
        assert!(got[1].is_ram());
        assert_eq!(got[2].kind, MemmapType::RESERVED);
    }

    #[test]
    fn xen_overreporting_is_capped() {
        let x = Xen(FakeXen::new(|_, a| {
            // SAFETY: a live MemoryMap.
            let m = unsafe { &mut *(a[1] as *mut memory::MemoryMap) };
            m.nr_entries = 1_000;
            0
        }));
        let mut buf = [E820Entry::default(); 2];
        assert_eq!(x.memory_map(&mut buf), Ok(2));
        let x = Xen(FakeXen::new(|_, _| -38));
        assert_eq!(x.memory_map(&mut buf), Err(XenError::NOSYS));
    }
}
