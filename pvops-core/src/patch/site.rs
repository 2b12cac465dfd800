//! The call sites: the asm every patchable wrapper expands to, the slots it
//! calls through, and the records the linker gathers in `pvops_sites`.

use super::Op;
use crate::table::PvOps;
use core::sync::atomic::{AtomicPtr, Ordering};

/// Emits one patchable call site for `$op` (an [`Op`] path), followed by
/// the asm operands of its signature (explicit registers only).
///
/// `site!(saved Op::X, ..)`: the callee-saved convention of every op with
/// inline bytes. The wrapper names `rax` (its result, or `out("rax") _`);
/// the other general registers, its arguments included, survive the site;
/// the flags, memory and the vector, x87 and tile registers do not (the C
/// function behind the stub may use them; targets without them ignore the
/// clobbers). `site!(c Op::X, ..)`: the plain C ABI (`clobber_abi("C")`).
///
/// The site is `call qword ptr [rip + SLOTS + 8*op]`; its record is
/// `.long site - .`, `.byte len`, `.byte op`, `.2byte 0` in `pvops_sites`.
/// Local labels 771/772 are numeric so that the compiler may duplicate the
/// asm (each copy gets its own record).
macro_rules! site {
    (saved $op:expr $(, $($operands:tt)*)?) => {{
        const { assert!($op.callee_saved(), "a `c` op used with `site!(saved ..)`") };
        $crate::patch::site::site!(@emit $op, $($($operands)*,)?
            out("xmm0") _, out("xmm1") _, out("xmm2") _, out("xmm3") _,
            out("xmm4") _, out("xmm5") _, out("xmm6") _, out("xmm7") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
            out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
            out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
            out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
            out("k0") _, out("k1") _, out("k2") _, out("k3") _,
            out("k4") _, out("k5") _, out("k6") _, out("k7") _,
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            out("tmm0") _, out("tmm1") _, out("tmm2") _, out("tmm3") _,
            out("tmm4") _, out("tmm5") _, out("tmm6") _, out("tmm7") _,
        )
    }};
    (c $op:expr $(, $($operands:tt)*)?) => {{
        const { assert!(!$op.callee_saved(), "a `saved` op used with `site!(c ..)`") };
        $crate::patch::site::site!(@emit $op, $($($operands)*,)? clobber_abi("C"))
    }};
    // The site and its record, then the operands and clobbers given.
    (@emit $op:expr, $($operands:tt)*) => {
        ::core::arch::asm!(
            "771:",
            "call qword ptr [rip + {slots} + {offset}]",
            "772:",
            ".pushsection pvops_sites, \"aR\"",
            ".balign 4",
            ".long 771b - .",
            ".byte 772b - 771b",
            ".byte {op}",
            ".2byte 0",
            ".popsection",
            slots = sym $crate::patch::site::SLOTS,
            offset = const ($op as usize) * 8,
            op = const ($op as u8),
            $($operands)*
        )
    };
}
pub(crate) use site;

/// The per-op call targets of unpatched sites.
#[doc(hidden)]
#[repr(C, align(8))]
#[derive(Debug)]
pub struct Slots([AtomicPtr<()>; Op::COUNT]);

const fn initial(op: Op) -> AtomicPtr<()> {
    AtomicPtr::new(PvOps::NOT_INSTALLED.patch.entries[op as usize].call.0 as *mut ())
}

/// Read by every unpatched site; written by `install` (one CPU, before any
/// other starts).
#[doc(hidden)]
pub static SLOTS: Slots = {
    let mut slots = [const { AtomicPtr::new(core::ptr::null_mut()) }; Op::COUNT];
    let mut i = 0;
    while i < Op::COUNT {
        slots[i] = initial(Op::ALL[i]);
        i += 1;
    }
    Slots(slots)
};

pub(crate) fn set_slot(op: Op, target: *mut ()) {
    // Sites read the slot with a plain load; x86 stores are seen in order.
    SLOTS.0[op as usize].store(target, Ordering::Release);
}

pub(crate) fn slot(op: Op) -> *mut () {
    SLOTS.0[op as usize].load(Ordering::Acquire)
}

/// The address of `op`'s slot, as a site's `rel32` reaches it.
pub(crate) fn slot_addr(op: Op) -> u64 {
    &SLOTS.0[op as usize] as *const AtomicPtr<()> as u64
}

/// One entry of `pvops_sites`, as the site asm lays it out.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Record {
    /// The site's address minus this field's.
    rel: i32,
    len: u8,
    op: u8,
    _reserved: u16,
}

/// The op id of the sentinel record, which points at nothing.
const SENTINEL: u8 = 0xff;

impl Record {
    /// The site this record describes, `None` for the sentinel.
    pub(crate) fn site(&self) -> Option<Site> {
        if self.op == SENTINEL {
            return None;
        }
        Some(Site {
            addr: (self as *const Record as u64).wrapping_add(self.rel as i64 as u64),
            len: self.len,
            op: Op::from_id(self.op),
        })
    }
}

extern "C" {
    // Defined by the linker around the output section `pvops_sites`.
    static __start_pvops_sites: Record;
    static __stop_pvops_sites: Record;
}

/// Every record of this image.
#[inline(never)]
pub(crate) fn records() -> &'static [Record] {
    // SAFETY: emits data only: a sentinel record, so that `pvops_sites` and
    // its bounds exist even in an image without sites, and in the same
    // object as the references below.
    unsafe {
        core::arch::asm!(
            ".pushsection pvops_sites, \"aR\"",
            ".balign 4",
            ".long 0",
            ".byte 0",
            ".byte {sentinel}",
            ".2byte 0",
            ".popsection",
            sentinel = const SENTINEL,
            options(nomem, nostack, preserves_flags),
        )
    };
    let start = &raw const __start_pvops_sites;
    let stop = &raw const __stop_pvops_sites;
    let len = (stop as usize - start as usize) / core::mem::size_of::<Record>();
    // SAFETY: the linker brackets exactly the records of every object in
    // `pvops_sites`, each a 4-aligned `Record`, read-only for the life of
    // the image.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// One recorded call site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// Address of its first byte.
    pub addr: u64,
    /// Its length (always [`SITE_LEN`](super::SITE_LEN) for sites this crate emits).
    pub len: u8,
    /// Which op (`None` for an id this crate does not know).
    pub op: Option<Op>,
}

/// Every call site recorded in this image (the linker's
/// `__start_pvops_sites..__stop_pvops_sites`).
pub fn sites() -> impl Iterator<Item = Site> {
    records().iter().filter_map(Record::site)
}
