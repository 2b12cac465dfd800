//! The physical address of the kernel's own memory: what pvops hands a
//! hypervisor (kvmclock and steal-time records, PV EOI words, Xen's
//! `vcpu_info` and shared-info page).
//!
//! A hypervisor writes to the *physical* address it is given, behind the
//! program's back, for as long as a registration lasts. A wrong address
//! corrupts whatever the kernel keeps there (a loader that gives `.bss`
//! pages frames of their own, as the `bootloader` crate does, breaks any
//! "virtual minus one offset" rule). So pvops never guesses: the kernel says
//! how its image is mapped ([`KernelMap`], in
//! [`BootContext::kernel_map`](crate::backend::BootContext::kernel_map)), and
//! every address handed out is checked to be physically contiguous for the
//! whole object ([`phys_of_range`]).
//!
//! [`KernelMap::PageTables`] works for any layout: pvops walks the page
//! tables that CR3 names (4- or 5-level, 4 KiB, 2 MiB and 1 GiB pages),
//! reading them through the direct map at `BootContext::phys_offset`.
//!
//! The mapping is recorded once at boot, by [`configure`] (which
//! `pvops::init` calls before any backend runs), and read by backends on any
//! CPU afterwards.

use core::fmt;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};

use crate::phys::{DirectMap, PhysRead, PhysReadError};

/// How the kernel image (where pvops' statics live) is mapped.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum KernelMap {
    /// pvops walks the live page tables (CR3, and CR4.LA57 for 5-level
    /// paging), reading them through the direct map at
    /// `BootContext::phys_offset`. Right for every layout, including images
    /// whose pages lie in scattered frames. Needs ring 0 (not Xen PV).
    PageTables,
    /// The whole image is one physically contiguous block mapped at virtual
    /// `paddr + offset` (0: identity-mapped). What pvops' own PVH and Xen PV
    /// entries set up.
    Linear {
        /// Virtual minus physical, for every byte of the image.
        offset: u64,
    },
    /// The kernel's own translation: the physical address of a virtual
    /// one, or `None` when it is not mapped.
    Function(fn(u64) -> Option<u64>),
}

impl KernelMap {
    /// An identity-mapped image.
    pub const IDENTITY: KernelMap = KernelMap::Linear { offset: 0 };
}

/// The root of the live page tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PagingRoot {
    /// CR3 as read (flags and PCID bits included; they are masked off).
    pub cr3: u64,
    /// CR4.LA57: 5-level paging.
    pub five_level: bool,
}

/// Why no physical address could be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TranslateError {
    /// [`configure`] was never called: nothing says how the image is mapped.
    NotConfigured,
    /// The address is not mapped (the page-table entry at `level`, 1 for a
    /// PTE up to 4 or 5 for the root, is not present; or the kernel's
    /// function said `None`, `level` 0).
    NotMapped {
        /// The virtual address.
        vaddr: u64,
        /// The level whose entry is not present.
        level: u8,
    },
    /// The address is not canonical for the paging mode.
    NonCanonical {
        /// The virtual address.
        vaddr: u64,
    },
    /// A page table could not be read through the direct map.
    Unreadable(PhysReadError),
    /// The object's bytes do not lie in one physically contiguous range (a
    /// hypervisor writes it as one).
    NotContiguous {
        /// The object's virtual address.
        vaddr: u64,
        /// Its length.
        len: usize,
    },
    /// [`KernelMap::PageTables`] needs ring 0 (CR3 and direct-map reads);
    /// a Xen PV kernel uses its entry's [`KernelMap::Linear`] mapping.
    NeedsRing0,
    /// `vaddr` is mapped, but not to the frame it should be (a direct map
    /// that is not at the `phys_offset` the kernel gave).
    WrongFrame {
        /// The virtual address.
        vaddr: u64,
        /// The physical address it should map.
        expected: u64,
        /// The one it maps.
        found: u64,
    },
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TranslateError::NotConfigured => {
                f.write_str("BootContext::kernel_map was never recorded (pvops::init not called)")
            }
            TranslateError::NotMapped { vaddr, level: 0 } => {
                write!(f, "the kernel's translation has no mapping for {vaddr:#x}")
            }
            TranslateError::NotMapped { vaddr, level } => write!(
                f,
                "{vaddr:#x} is not mapped (level-{level} page-table entry not present)"
            ),
            TranslateError::NonCanonical { vaddr } => {
                write!(f, "{vaddr:#x} is not a canonical address")
            }
            TranslateError::Unreadable(e) => write!(f, "page tables not readable: {e}"),
            TranslateError::NotContiguous { vaddr, len } => write!(
                f,
                "{vaddr:#x}+{len:#x} is not physically contiguous (a hypervisor writes it as one block)"
            ),
            TranslateError::NeedsRing0 => {
                f.write_str("KernelMap::PageTables needs ring 0 (under Xen PV use the entry's map)")
            }
            TranslateError::WrongFrame {
                vaddr,
                expected,
                found,
            } => write!(
                f,
                "{vaddr:#x} maps {found:#x}, not {expected:#x} (is phys_offset right?)"
            ),
        }
    }
}

impl core::error::Error for TranslateError {}

impl From<PhysReadError> for TranslateError {
    fn from(e: PhysReadError) -> Self {
        TranslateError::Unreadable(e)
    }
}

/// Physical address bits 12..52 of a page-table entry.
const ENTRY_ADDR: u64 = 0x000f_ffff_ffff_f000;
const PRESENT: u64 = 1;
/// PS: this entry maps a large page (levels 2 and 3).
const HUGE: u64 = 1 << 7;

/// The physical address `vaddr` maps to under `root`, reading page tables
/// through `mem`.
pub fn walk(root: PagingRoot, vaddr: u64, mem: &impl PhysRead) -> Result<u64, TranslateError> {
    let levels: u8 = if root.five_level { 5 } else { 4 };
    let va_bits = 12 + 9 * u32::from(levels);
    // Canonical: bits va_bits-1..63 all equal.
    let top = (vaddr as i64) >> (va_bits - 1);
    if top != 0 && top != -1 {
        return Err(TranslateError::NonCanonical { vaddr });
    }
    let mut table = root.cr3 & ENTRY_ADDR;
    for level in (1..=levels).rev() {
        let shift = 12 + 9 * u32::from(level - 1);
        let index = (vaddr >> shift) & 0x1ff;
        let mut raw = [0u8; 8];
        mem.read_phys(table + index * 8, &mut raw)?;
        let entry = u64::from_le_bytes(raw);
        if entry & PRESENT == 0 {
            return Err(TranslateError::NotMapped { vaddr, level });
        }
        let frame = entry & ENTRY_ADDR;
        if level == 1 || (level <= 3 && entry & HUGE != 0) {
            let page_mask = (1u64 << shift) - 1;
            return Ok((frame & !page_mask) | (vaddr & page_mask));
        }
        table = frame;
    }
    unreachable!("level 1 always returns")
}

/// [`walk`] for a whole object: its physical address, if every byte of
/// `vaddr..vaddr + len` maps to one contiguous physical range.
pub fn walk_range(
    root: PagingRoot,
    vaddr: u64,
    len: usize,
    mem: &impl PhysRead,
) -> Result<u64, TranslateError> {
    contiguous(vaddr, len, |v| walk(root, v, mem))
}

/// The physical address of `vaddr..vaddr + len` under a per-address
/// translation `one`: each 4 KiB page of the object is translated and must
/// follow the previous one physically (a hypervisor writes the object as
/// one block).
pub fn contiguous(
    vaddr: u64,
    len: usize,
    mut one: impl FnMut(u64) -> Result<u64, TranslateError>,
) -> Result<u64, TranslateError> {
    let first = one(vaddr)?;
    if len <= 1 {
        return Ok(first);
    }
    let last = vaddr
        .checked_add(len as u64 - 1)
        .ok_or(TranslateError::NonCanonical { vaddr })?;
    let mut page = (vaddr & !0xfff) + 0x1000;
    while page <= last {
        if one(page)? != first + (page - vaddr) {
            return Err(TranslateError::NotContiguous { vaddr, len });
        }
        page += 0x1000;
    }
    Ok(first)
}

// The recorded map: kind, its value (offset or function), the direct map's
// offset and the CR3 reader. Written once before any other CPU starts.
const KIND_NONE: u8 = 0;
const KIND_PAGE_TABLES: u8 = 1;
const KIND_LINEAR: u8 = 2;
const KIND_FUNCTION: u8 = 3;
static KIND: AtomicU8 = AtomicU8::new(KIND_NONE);
static VALUE: AtomicU64 = AtomicU64::new(0);
static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);
static ROOT_READER: AtomicUsize = AtomicUsize::new(0);

/// Records how the image is mapped, for [`phys_of_range`]. `phys_offset`
/// is `BootContext::phys_offset`; `root` reads the live page-table root
/// (the native backend's `paging_root`), used by
/// [`KernelMap::PageTables`] only.
///
/// Called once at boot by `pvops::init`, on the boot CPU, before any backend
/// runs; a kernel that calls [`crate::backend::select_and_install`] itself
/// calls this first.
pub fn configure(map: KernelMap, phys_offset: u64, root: fn() -> PagingRoot) {
    let (kind, value) = match map {
        KernelMap::PageTables => (KIND_PAGE_TABLES, 0),
        KernelMap::Linear { offset } => (KIND_LINEAR, offset),
        KernelMap::Function(f) => (KIND_FUNCTION, f as usize as u64),
    };
    VALUE.store(value, Ordering::Relaxed);
    PHYS_OFFSET.store(phys_offset, Ordering::Relaxed);
    ROOT_READER.store(root as usize, Ordering::Relaxed);
    KIND.store(kind, Ordering::Release);
}

/// The map [`configure`] recorded.
pub fn configured() -> Option<KernelMap> {
    let value = VALUE.load(Ordering::Relaxed);
    match KIND.load(Ordering::Acquire) {
        KIND_PAGE_TABLES => Some(KernelMap::PageTables),
        KIND_LINEAR => Some(KernelMap::Linear { offset: value }),
        KIND_FUNCTION => Some(KernelMap::Function(
            // SAFETY: KIND_FUNCTION is stored only by `configure`, after
            // VALUE was set from a `fn(u64) -> Option<u64>` (Release/Acquire
            // on KIND orders the two).
            unsafe { core::mem::transmute::<usize, fn(u64) -> Option<u64>>(value as usize) },
        )),
        _ => None,
    }
}

fn root_reader() -> fn() -> PagingRoot {
    let raw = ROOT_READER.load(Ordering::Relaxed);
    // SAFETY: ROOT_READER is only ever stored by `configure`, from a
    // `fn() -> PagingRoot`, before KIND says a map is configured (callers
    // check KIND first with Acquire).
    unsafe { core::mem::transmute::<usize, fn() -> PagingRoot>(raw) }
}

/// The physical address of `vaddr..vaddr + len`, which must be one
/// physically contiguous range, under the recorded [`KernelMap`].
pub fn phys_of_range(vaddr: u64, len: usize) -> Result<u64, TranslateError> {
    match configured().ok_or(TranslateError::NotConfigured)? {
        KernelMap::Linear { offset } => Ok(vaddr.wrapping_sub(offset)),
        KernelMap::Function(f) => contiguous(vaddr, len, |v| {
            f(v).ok_or(TranslateError::NotMapped { vaddr: v, level: 0 })
        }),
        KernelMap::PageTables => {
            let root = root_reader()();
            // SAFETY: the BootContext contract maps all RAM readable at
            // phys + phys_offset, and page tables are RAM; the limit is the
            // largest physical address x86_64 paging can name.
            let mem = unsafe { DirectMap::new(PHYS_OFFSET.load(Ordering::Relaxed), 1 << 52) };
            walk_range(root, vaddr, len, &mem)
        }
    }
}

/// The physical address of the object `p` points at (its whole size).
pub fn phys_of<T>(p: *const T) -> Result<u64, TranslateError> {
    phys_of_range(p as u64, core::mem::size_of::<T>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phys::fake::FakeMem;

    /// Page tables in fake memory: tables are allocated from `next`.
    struct Tables {
        mem: FakeMem,
        root: u64,
        next: u64,
        five: bool,
    }

    impl Tables {
        fn new(five: bool) -> Self {
            // 64 tables' worth of memory at 16 MiB.
            let mem = FakeMem::new().region(0x100_0000, 64 * 4096);
            Self {
                mem,
                root: 0x100_0000,
                next: 0x100_1000,
                five,
            }
        }

        fn read(&self, at: u64) -> u64 {
            let mut b = [0; 8];
            self.mem.read_phys(at, &mut b).unwrap();
            u64::from_le_bytes(b)
        }

        /// Maps `va` to `pa` with a page of `level` (1: 4 KiB, 2: 2 MiB, 3: 1 GiB).
        fn map(&mut self, va: u64, pa: u64, level: u8) {
            let levels = if self.five { 5 } else { 4 };
            let mut table = self.root;
            for l in (level + 1..=levels).rev() {
                let idx = (va >> (12 + 9 * (l as u32 - 1))) & 0x1ff;
                let e = self.read(table + idx * 8);
                table = if e & PRESENT != 0 {
                    e & ENTRY_ADDR
                } else {
                    let t = self.next;
                    self.next += 0x1000;
                    self.mem.write(table + idx * 8, &(t | 3).to_le_bytes());
                    t
                };
            }
            let idx = (va >> (12 + 9 * (level as u32 - 1))) & 0x1ff;
            let huge = if level > 1 { HUGE } else { 0 };
            // NX and a high software bit set: they must not leak into the address.
            let e = pa | 3 | huge | (1 << 63) | (1 << 52);
            self.mem.write(table + idx * 8, &e.to_le_bytes());
        }

        fn root(&self) -> PagingRoot {
            // PCID bits in CR3 must be ignored.
            PagingRoot {
                cr3: self.root | 0x5,
                five_level: self.five,
            }
        }
    }

    const HIGH: u64 = 0xffff_ffff_8000_0000;

    /// `BootContext::rsdp` is checked against the direct map the kernel
    /// really has (issue 14: an RSDP outside it faulted in native's ACPI
    /// reader).
    #[test]
    fn rsdp_outside_the_direct_map_is_refused_by_name() {
        use crate::backend::{check_rsdp_mapped, ContextError};
        const DIRECT: u64 = 0xffff_8000_0000_0000;
        let mut t = Tables::new(false);
        // The direct map covers 0..2 MiB with one large page, and maps the
        // page at 4 MiB to a wrong frame.
        t.map(DIRECT, 0, 2);
        t.map(DIRECT + 0x40_0000, 0x80_0000, 1);
        let r = t.root();
        assert_eq!(check_rsdp_mapped(0xf_5a00, DIRECT, r, &t.mem), Ok(()));
        let unmapped = check_rsdp_mapped(0x7fe_0000, DIRECT, r, &t.mem);
        assert!(
            matches!(
                unmapped,
                Err(ContextError::Rsdp {
                    paddr: 0x7fe_0000,
                    error: TranslateError::NotMapped { .. }
                })
            ),
            "{unmapped:?}"
        );
        let text = std::string::ToString::to_string(&unmapped.unwrap_err());
        assert!(text.contains("BootContext::rsdp 0x7fe0000"), "{text}");
        assert_eq!(
            check_rsdp_mapped(0x40_0010, DIRECT, r, &t.mem),
            Err(ContextError::Rsdp {
                paddr: 0x40_0010,
                error: TranslateError::WrongFrame {
                    vaddr: DIRECT + 0x40_0010,
                    expected: 0x40_0010,
                    found: 0x80_0010
                }
            })
        );
        // The last of its 36 bytes on an unmapped page.
        assert!(check_rsdp_mapped(0x1f_fff0, DIRECT, r, &t.mem).is_err());
        // phys_offset + rsdp past the end of the address space.
        assert!(matches!(
            check_rsdp_mapped(u64::MAX - 8, DIRECT, r, &t.mem),
            Err(ContextError::Rsdp {
                error: TranslateError::NonCanonical { .. },
                ..
            })
        ));
    }

    #[test]
    fn a_kernel_cpu_number_beyond_max_cpus_is_refused() {
        use crate::backend::{check_cpu_number, ContextError};
        use crate::cpu::{CpuId, CpuNumber};
        fn huge() -> Option<CpuId> {
            Some(CpuId(crate::irq::MAX_CPUS as u32))
        }
        fn fine() -> Option<CpuId> {
            Some(CpuId(3))
        }
        fn not_yet() -> Option<CpuId> {
            None
        }
        assert_eq!(
            check_cpu_number(CpuNumber::Kernel(huge)),
            Err(ContextError::CpuNumber(CpuId(256)))
        );
        assert_eq!(check_cpu_number(CpuNumber::Kernel(fine)), Ok(()));
        assert_eq!(check_cpu_number(CpuNumber::Kernel(not_yet)), Ok(()));
        assert_eq!(check_cpu_number(CpuNumber::Pvops), Ok(()));
    }

    #[test]
    fn four_kib_pages_of_a_scattered_image() {
        // A higher-half image whose pages lie in frames out of order, as
        // the bootloader crate gives .bss: virtual minus one offset is
        // wrong for all but the first page.
        let mut t = Tables::new(false);
        t.map(HIGH, 0x20_0000, 1);
        t.map(HIGH + 0x1000, 0x7_3000, 1);
        t.map(HIGH + 0x2000, 0x7_4000, 1);
        let r = t.root();
        assert_eq!(walk(r, HIGH + 0x10, &t.mem), Ok(0x20_0010));
        assert_eq!(walk(r, HIGH + 0x1040, &t.mem), Ok(0x7_3040));
        // An object inside one page.
        assert_eq!(walk_range(r, HIGH + 0x1fc0, 64, &t.mem), Ok(0x7_3fc0));
        // Across two frames that happen to follow each other: fine.
        assert_eq!(walk_range(r, HIGH + 0x1ff0, 32, &t.mem), Ok(0x7_3ff0));
        // Across two frames that do not: refused, never half-right.
        assert_eq!(
            walk_range(r, HIGH + 0xff0, 32, &t.mem),
            Err(TranslateError::NotContiguous {
                vaddr: HIGH + 0xff0,
                len: 32
            })
        );
        assert_eq!(
            walk(r, HIGH + 0x3000, &t.mem),
            Err(TranslateError::NotMapped {
                vaddr: HIGH + 0x3000,
                level: 1
            })
        );
    }

    #[test]
    fn large_pages() {
        let mut t = Tables::new(false);
        t.map(0xffff_8000_0000_0000, 0, 3); // 1 GiB direct map
        t.map(HIGH, 0x4000_0000, 2); // 2 MiB
        let r = t.root();
        assert_eq!(
            walk(r, 0xffff_8000_1234_5678, &t.mem),
            Ok(0x1234_5678),
            "1 GiB page"
        );
        assert_eq!(
            walk(r, HIGH + 0x1_2345, &t.mem),
            Ok(0x4001_2345),
            "2 MiB page"
        );
        assert_eq!(
            walk_range(r, HIGH + 0xff000, 0x3000, &t.mem),
            Ok(0x400f_f000)
        );
    }

    #[test]
    fn five_level_paging() {
        let mut t = Tables::new(true);
        let va = 0xff00_1234_5678_9000; // canonical for 57 bits
        t.map(va, 0x9_9000, 1);
        assert_eq!(walk(t.root(), va + 7, &t.mem), Ok(0x9_9007));
        // Not canonical under 4-level paging.
        let four = PagingRoot {
            five_level: false,
            ..t.root()
        };
        assert_eq!(
            walk(four, va, &t.mem),
            Err(TranslateError::NonCanonical { vaddr: va })
        );
    }

    #[test]
    fn unreadable_tables_are_an_error_not_a_fault() {
        let mut t = Tables::new(false);
        t.map(HIGH, 0x1000, 1);
        let bad = PagingRoot {
            cr3: 0xdead_0000,
            five_level: false,
        };
        assert!(matches!(
            walk(bad, HIGH, &t.mem),
            Err(TranslateError::Unreadable(_))
        ));
    }

    #[test]
    fn function_maps_are_checked_for_contiguity() {
        fn scattered(v: u64) -> Option<u64> {
            // Even pages at 1 MiB, odd pages at 3 MiB.
            let page = v >> 12;
            let base = if page.is_multiple_of(2) {
                0x10_0000
            } else {
                0x30_0000
            };
            Some(base + (page << 12) % 0x8000 + (v & 0xfff))
        }
        let f = |v| scattered(v).ok_or(TranslateError::NotMapped { vaddr: v, level: 0 });
        assert_eq!(contiguous(0x2010, 16, f), Ok(0x10_2010));
        assert_eq!(
            contiguous(0x2ff8, 16, f),
            Err(TranslateError::NotContiguous {
                vaddr: 0x2ff8,
                len: 16
            })
        );
    }
}
