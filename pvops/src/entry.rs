//! The PVH entry point, for kernels that want pvops to bring them from the
//! loader to 64-bit Rust: QEMU's `-kernel` and Xen (PVH dom0 or domU) both
//! enter an ELF at the address in its `XEN_ELFNOTE_PHYS32_ENTRY` note, in
//! 32-bit protected mode with paging off and the physical address of
//! `hvm_start_info` in EBX.
//!
//! [`pvh_entry!`](crate::pvh_entry) emits that note and a small entry
//! routine: it zeroes `.bss`, identity-maps the first 4 GiB with 2 MiB
//! pages, enables long mode, switches to a boot stack and calls your
//! `extern "C" fn(start_info_paddr: u64) -> !`. Then [`init_pvh`] parses the
//! start info and installs the best backend.
//!
//! Your linker script must: link the kernel at its physical address (the
//! entry runs before paging; 1 MiB is the usual base), put `.note.Xen` in a
//! `PT_NOTE` segment, and define `__bss_start`/`__bss_end` around `.bss`.
//! `example-kernel/linker.ld` and `examples/minimal-kernel/linker.ld` are
//! two such scripts.
//!
//! [`boot_entry!`](crate::boot_entry) emits that entry and, beside it, the
//! classic Xen PV entry (Xen's PV notes, a 64-bit entry in ring 3 that
//! takes `start_info`); both call your `extern "C" fn(BootHandoff) -> !`,
//! and [`init`] parses whichever start info came. One ELF then boots under
//! QEMU, KVM, Xen PVH and Xen PV.
//!
//! # PVH entry in the higher half
//!
//! A kernel linked high (e.g. at `0xffffffff80000000 + paddr`, loaded at
//! its physical addresses with `AT(ADDR - KERNEL_VMA)`) uses
//! `pvh_entry!(main, higher_half(kernel_vma = K, phys_offset = P))`: the
//! 32-bit code runs at `symbol - K`, maps the first 4 GiB at `P` (the
//! direct map) and the first GiBs at `K` (the kernel window), removes the
//! identity map it needed for the switch, and calls
//! `main(`[`PvhHighHandoff`]`)`; [`init_pvh_high`] reads the start info
//! through the direct map and tells pvops `phys_offset = P`. See
//! [`HigherHalf`] for the layout's rules (checked at compile time) and
//! `examples/pvh-high-kernel` for a whole kernel. The linker script must
//! put `.note.Xen` in a `PT_NOTE` segment and define
//! `__bss_start`/`__bss_end` (their linked, high addresses); set the ELF
//! entry to the physical address of `pvops_pvh_start` (`ENTRY` of a symbol
//! `pvops_pvh_start - KERNEL_VMA`): QEMU and Xen enter through the note,
//! but Xen's ELF loader checks that the entry lies inside the image's
//! physical range.
//!
//! [`boot_entry!`](crate::boot_entry) has no higher-half form: Xen's PV
//! entry maps the image where its notes say and pvops' PV support reads
//! the boot layout at virtual = pseudo-physical addresses, so a PV kernel
//! of pvops is identity-linked.

mod higher_half;

pub use higher_half::{HigherHalf, LayoutError, PvhHighHandoff, DIRECT_MAPPED};

use crate::abi::pv_start_info::{self, PvStartInfoError};
use crate::abi::start_info::{
    self, HvmMemmapEntry, MemmapType, StartInfo, StartInfoError, MAX_MEMMAP_ENTRIES,
};
use crate::backend::{BackendError, BootContext, BootEntry, SelectError};
use crate::phys::DirectMap;
use crate::table::PvOps;
use core::fmt;

/// Xen's ELF note type for the PVH 32-bit entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// How much physical memory the entry identity-maps (and so what
/// [`init_pvh`] may read through).
pub const IDENTITY_MAPPED: u64 = 4 << 30;

/// Emits the PVH ELF note and entry routine, calling `$main` in 64-bit mode
/// with the `hvm_start_info` physical address as its only argument.
///
/// `$main` must be an `extern "C" fn(u64) -> !`. The boot stack is 64 KiB
/// unless `stack_size = N` says otherwise. Use it once per kernel.
///
/// ```text
/// pvops::pvh_entry!(kernel_main);
///
/// extern "C" fn kernel_main(start_info: u64) -> ! {
///     let boot = pvops::entry::init_pvh(start_info, |_| {}).expect("pvops");
///     // ...
/// #   loop {}
/// }
/// ```
///
/// For a kernel linked in the higher half, add
/// `higher_half(kernel_vma = K, phys_offset = P)` (see the module docs and
/// [`HigherHalf`](crate::entry::HigherHalf)); `$main` is then an
/// `extern "C" fn(pvops::entry::PvhHighHandoff) -> !` for
/// [`init_pvh_high`](crate::entry::init_pvh_high):
///
/// ```text
/// pvops::pvh_entry!(
///     kernel_main,
///     higher_half(kernel_vma = 0xffff_ffff_8000_0000, phys_offset = 0xffff_8000_0000_0000),
///     stack_size = 65536, // optional
/// );
///
/// extern "C" fn kernel_main(boot: pvops::entry::PvhHighHandoff) -> ! {
///     let booted = pvops::entry::init_pvh_high(boot, |_| {}).expect("pvops");
///     // ...
/// #   loop {}
/// }
/// ```
#[macro_export]
macro_rules! pvh_entry {
    ($main:path) => {
        $crate::pvh_entry!($main, stack_size = 65536);
    };
    ($main:path, higher_half(kernel_vma = $vma:expr, phys_offset = $offset:expr $(,)?) $(,)?) => {
        $crate::__pvh_entry_higher_half!($main, $vma, $offset, 65536);
    };
    ($main:path, higher_half(kernel_vma = $vma:expr, phys_offset = $offset:expr $(,)?),
     stack_size = $size:expr $(,)?) => {
        $crate::__pvh_entry_higher_half!($main, $vma, $offset, $size);
    };
    ($main:path, stack_size = $size:expr) => {
        const _: extern "C" fn(u64) -> ! = $main;
        ::core::arch::global_asm!(
            r#"
            .section .note.Xen, "a", @note
            .balign 4
            .long 4
            .long 4
            .long {phys32_entry}
            .asciz "Xen"
            .balign 4
            .long pvops_pvh_start
            .balign 4

            .section .bss.pvops_boot, "aw", @nobits
            .balign 4096
            pvops_boot_pml4: .skip 4096
            pvops_boot_pdpt: .skip 4096
            pvops_boot_pd:   .skip 4096 * 4
            .balign 16
            .skip {stack_size}
            .global pvops_boot_stack_top
            pvops_boot_stack_top:

            .section .rodata.pvops_boot, "a"
            .balign 8
            pvops_boot_gdt:
                .quad 0
                .quad 0x00af9a000000ffff
                .quad 0x00cf92000000ffff
            pvops_boot_gdt_end:
            pvops_boot_gdt_ptr:
                .word pvops_boot_gdt_end - pvops_boot_gdt - 1
                .long pvops_boot_gdt

            .section .text.boot, "ax"
            .code32
            .global pvops_pvh_start
            pvops_pvh_start:
                cli
                cld
                mov %ebx, %ebp
                mov $__bss_start, %edi
                mov $__bss_end, %ecx
                sub %edi, %ecx
                xor %eax, %eax
                rep stosb
                mov $pvops_boot_stack_top, %esp
                mov $pvops_boot_pdpt + 0x3, %eax
                mov %eax, pvops_boot_pml4
                mov $pvops_boot_pd + 0x3, %eax
                mov $pvops_boot_pdpt, %edi
                mov $4, %ecx
            1:  mov %eax, (%edi)
                add $0x1000, %eax
                add $8, %edi
                loop 1b
                mov $pvops_boot_pd, %edi
                mov $0x83, %eax
                mov $2048, %ecx
            2:  mov %eax, (%edi)
                add $0x200000, %eax
                add $8, %edi
                loop 2b
                mov $pvops_boot_pml4, %eax
                mov %eax, %cr3
                mov %cr4, %eax
                or $0x20, %eax
                mov %eax, %cr4
                mov $0xc0000080, %ecx
                rdmsr
                or $0x100, %eax
                wrmsr
                mov %cr0, %eax
                or $0x80010001, %eax                /* PG | WP | PE */
                mov %eax, %cr0
                lgdt pvops_boot_gdt_ptr
                ljmp $0x08, $3f
            .code64
            3:  mov $0x10, %eax
                mov %eax, %ds
                mov %eax, %es
                mov %eax, %ss
                xor %eax, %eax
                mov %eax, %fs
                mov %eax, %gs
                mov $pvops_boot_stack_top, %rsp
                mov %ebp, %edi
                xor %ebp, %ebp
                call {main}
            4:  cli
                hlt
                jmp 4b
            "#,
            phys32_entry = const $crate::entry::XEN_ELFNOTE_PHYS32_ENTRY,
            stack_size = const $size,
            main = sym $main,
            options(att_syntax)
        );
    };
}

/// Emits both entries pvops knows, so that one ELF boots wherever either
/// applies: the PVH entry of [`pvh_entry!`](crate::pvh_entry) (QEMU
/// `-kernel`, Xen PVH) and the classic Xen PV entry (the kernel as a
/// 64-bit PV guest, in ring 3). Both call `$main` with a [`BootHandoff`];
/// hand it to [`init`].
///
/// The PV entry adds Xen's PV ELF notes (`GUEST_OS`, `LOADER`,
/// `XEN_VERSION`, `ENTRY`, `VIRT_BASE = 0`, `PADDR_OFFSET = 0`,
/// `FEATURES`): Xen then maps the kernel and its boot layout at virtual =
/// pseudo-physical addresses, which the identity-linked image needs. The
/// entry zeroes `.bss`, moves to the boot stack and calls `$main`; it runs
/// in ring 3 and uses no privileged instruction.
///
/// There is no `HYPERCALL_PAGE` note: a 64-bit PV kernel enters Xen with
/// `syscall` from kernel mode, which is what Xen's stubs in such a page
/// would do, so the backend issues it directly (as Linux does since it
/// dropped the page) and no page of the image is written by Xen and then
/// executed.
///
/// ```text
/// pvops::boot_entry!(kernel_main);
///
/// extern "C" fn kernel_main(boot: pvops::entry::BootHandoff) -> ! {
///     let booted = pvops::entry::init(boot, |_| {}).expect("pvops");
///     // ...
/// #   loop {}
/// }
/// ```
#[macro_export]
macro_rules! boot_entry {
    ($main:path) => {
        $crate::boot_entry!($main, stack_size = 65536);
    };
    ($main:path, stack_size = $size:expr) => {
        const _: extern "C" fn($crate::entry::BootHandoff) -> ! = $main;
        extern "C" fn __pvops_from_pvh(start_info_paddr: u64) -> ! {
            $main($crate::entry::BootHandoff::pvh(start_info_paddr))
        }
        extern "C" fn __pvops_from_xen_pv(start_info_va: u64) -> ! {
            $main($crate::entry::BootHandoff::xen_pv(start_info_va))
        }
        $crate::pvh_entry!(__pvops_from_pvh, stack_size = $size);
        ::core::arch::global_asm!(
            r#"
            .section .note.Xen, "a", @note
            .balign 4
            .long 4, 2f - 1f, 6
            .asciz "Xen"
            .balign 4
            1: .asciz "pvops"
            2: .balign 4
            .long 4, 2f - 1f, 8
            .asciz "Xen"
            .balign 4
            1: .asciz "generic"
            2: .balign 4
            .long 4, 2f - 1f, 5
            .asciz "Xen"
            .balign 4
            1: .asciz "xen-3.0"
            2: .balign 4
            .long 4, 8, 1
            .asciz "Xen"
            .balign 4
            .quad pvops_xen_pv_start
            .long 4, 8, 3
            .asciz "Xen"
            .balign 4
            .quad 0
            .long 4, 8, 4
            .asciz "Xen"
            .balign 4
            .quad 0
            .long 4, 2f - 1f, 10
            .asciz "Xen"
            .balign 4
            1: .asciz "dom0"
            2: .balign 4

            .section .text.boot, "ax"
            .code64
            .global pvops_xen_pv_start
            pvops_xen_pv_start:
                cld
                mov %rsi, %rbx
                lea __bss_start(%rip), %rdi
                lea __bss_end(%rip), %rcx
                sub %rdi, %rcx
                xor %eax, %eax
                rep stosb
                lea pvops_boot_stack_top(%rip), %rsp
                mov %rbx, %rdi
                xor %ebp, %ebp
                call {main}
            3:  jmp 3b
            "#,
            main = sym __pvops_from_xen_pv,
            options(att_syntax)
        );
    };
}

/// How the kernel was entered: what [`boot_entry!`](crate::boot_entry)
/// gives the kernel's main, for [`init`].
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootHandoff {
    protocol: u64,
    info: u64,
}

const PROTOCOL_PVH: u64 = 1;
const PROTOCOL_XEN_PV: u64 = 2;

/// The entry protocol a [`BootHandoff`] names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// PVH: the physical address of `hvm_start_info`.
    Pvh {
        /// Where the start info is.
        start_info_paddr: u64,
    },
    /// Classic Xen PV: the virtual address of `start_info`.
    XenPv {
        /// Where the start info is.
        start_info_va: u64,
    },
}

impl BootHandoff {
    /// Entered through the PVH entry.
    pub const fn pvh(start_info_paddr: u64) -> Self {
        Self {
            protocol: PROTOCOL_PVH,
            info: start_info_paddr,
        }
    }

    /// Entered through the Xen PV entry.
    pub const fn xen_pv(start_info_va: u64) -> Self {
        Self {
            protocol: PROTOCOL_XEN_PV,
            info: start_info_va,
        }
    }

    /// The two words as the entry passed them (`extern "C"` by value:
    /// RDI, RSI), for a kernel that hands them on through another ABI
    /// (pvops-ffi); [`BootHandoff::from_raw`] takes them back.
    pub const fn into_raw(self) -> (u64, u64) {
        (self.protocol, self.info)
    }

    /// The handoff from [`BootHandoff::into_raw`]'s words; an unknown
    /// protocol is kept and refused by [`init`].
    pub const fn from_raw(protocol: u64, info: u64) -> Self {
        Self { protocol, info }
    }

    /// Which entry, with its argument; `None` for a value no pvops entry
    /// makes.
    pub const fn protocol(&self) -> Option<BootProtocol> {
        match self.protocol {
            PROTOCOL_PVH => Some(BootProtocol::Pvh {
                start_info_paddr: self.info,
            }),
            PROTOCOL_XEN_PV => Some(BootProtocol::XenPv {
                start_info_va: self.info,
            }),
            _ => None,
        }
    }
}

/// For a kernel entered through [`boot_entry!`](crate::boot_entry):
/// parses the start info of whichever entry ran, detects the platform and
/// installs the best backend (see [`init_pvh`] and [`init_xen_pv`]).
pub fn init(
    boot: BootHandoff,
    on_fallback: impl FnMut(&BackendError),
) -> Result<Booted, BootError> {
    match boot.protocol() {
        Some(BootProtocol::Pvh { start_info_paddr }) => init_pvh(start_info_paddr, on_fallback),
        Some(BootProtocol::XenPv { start_info_va }) => init_xen_pv(start_info_va, on_fallback),
        None => Err(BootError::UnknownEntry(boot.protocol)),
    }
}

extern "C" {
    static __bss_end: u8;
}

/// For a kernel entered through the Xen PV entry of
/// [`boot_entry!`](crate::boot_entry): parses and checks `start_info`
/// (against the boot layout Xen maps), then installs the Xen backend in
/// its classic-PV form. The start info's memory map is the backend's
/// (`platform.memory_map`): the domain's frames, less the kernel and
/// Xen's boot layout.
pub fn init_xen_pv(
    start_info_va: u64,
    on_fallback: impl FnMut(&BackendError),
) -> Result<Booted, BootError> {
    // SAFETY: Xen maps its boot layout at virtual = pseudo-physical
    // addresses (the PV notes ask for VIRT_BASE 0); the parser reads only
    // ranges it checked lie inside that layout.
    let mem = unsafe { DirectMap::new(0, 1 << 47) };
    // Address-of a linker symbol (no read).
    let image_end = core::ptr::addr_of!(__bss_end) as u64;
    let mut parsed = pv_start_info::parse(&mem, start_info_va, 0..image_end);
    if let Ok(si) = &parsed {
        if lie_requested(si.cmdline()) {
            parsed = pv_start_info::parse(&Lying::nr_pages(&mem, si), start_info_va, 0..image_end);
        }
    }
    let (cmdline, pv) = match &parsed {
        Ok(si) => (si.cmdline(), Some(si)),
        Err(_) => ("", None),
    };
    let mut ctx = BootContext::new(
        BootEntry::XenPv,
        cmdline,
        crate::detect::scan(&crate::detect::HardwareCpuid),
    );
    ctx.kernel_map = crate::KernelMap::IDENTITY;
    ctx.xen_pv = pv;
    let installed = crate::init(&ctx, on_fallback);
    match (parsed, installed) {
        (Ok(si), Ok(ops)) => {
            let mut start_info = si.to_start_info();
            complete_memmap(&mut start_info, ops);
            Ok(Booted { start_info, ops })
        }
        (Err(error), installed) => Err(BootError::BadPvStartInfo {
            error,
            installed: installed.is_ok(),
        }),
        (Ok(_), Err(e)) => Err(BootError::NoBackend(e)),
    }
}

/// The fault point of [`init_xen_pv`]: `pvops.fail=pv.start-info` makes
/// it parse the start info again with `nr_pages` a million frames larger
/// than Xen wrote (the pfn list then runs past Xen's boot layout), so that
/// a real boot shows how a lying start info is refused: the parser's error
/// on the console, nothing installed but the failsafe console and shutdown.
pub const FAULT_PV_START_INFO: &str = "pv.start-info";

fn lie_requested(cmdline: &str) -> bool {
    crate::cmdline::option(cmdline, "fail").is_some_and(|v| {
        v.split(',')
            .any(|p| p.split(':').next() == Some(FAULT_PV_START_INFO))
    })
}

/// A [`PhysRead`](crate::phys::PhysRead) that reads `mem` but sees `value`
/// at `at` (8 bytes).
struct Lying<'a> {
    mem: &'a DirectMap,
    at: u64,
    value: [u8; 8],
}

impl<'a> Lying<'a> {
    fn nr_pages(mem: &'a DirectMap, si: &pv_start_info::PvStartInfo) -> Self {
        Lying {
            mem,
            at: si.va + core::mem::offset_of!(pv_start_info::XenStartInfo, nr_pages) as u64,
            value: (si.nr_pages + 1_000_000).to_le_bytes(),
        }
    }
}

impl crate::phys::PhysRead for Lying<'_> {
    fn read_phys(&self, paddr: u64, buf: &mut [u8]) -> Result<(), crate::phys::PhysReadError> {
        self.mem.read_phys(paddr, buf)?;
        for (i, b) in buf.iter_mut().enumerate() {
            let a = paddr + i as u64;
            if (self.at..self.at + 8).contains(&a) {
                *b = self.value[(a - self.at) as usize];
            }
        }
        Ok(())
    }
}

/// What [`init`], [`init_pvh`] and [`init_xen_pv`] hand back.
#[derive(Debug)]
pub struct Booted {
    /// The validated start info (memory map, command line, RSDP, modules).
    pub start_info: StartInfo,
    /// The installed ops table.
    pub ops: &'static PvOps,
}

/// Why [`init`], [`init_pvh`] or [`init_xen_pv`] failed.
#[derive(Debug)]
pub enum BootError {
    /// The start info is malformed. pvops was still brought up (with an
    /// empty command line) if `installed` is true, so the kernel can print
    /// this error and power off.
    BadStartInfo {
        /// What was wrong.
        error: StartInfoError,
        /// Whether a backend was installed anyway.
        installed: bool,
    },
    /// The classic PV `start_info` is malformed; as for `BadStartInfo`.
    BadPvStartInfo {
        /// What was wrong.
        error: PvStartInfoError,
        /// Whether a backend was installed anyway.
        installed: bool,
    },
    /// The entry handed over a protocol number no pvops entry uses.
    UnknownEntry(u64),
    /// No backend could be installed.
    NoBackend(SelectError),
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::BadStartInfo { error, .. } => write!(f, "start_info: {error}"),
            BootError::BadPvStartInfo { error, .. } => write!(f, "start_info: {error}"),
            BootError::UnknownEntry(p) => write!(f, "unknown boot protocol {p}"),
            BootError::NoBackend(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for BootError {}

/// For a kernel entered through [`pvh_entry!`](crate::pvh_entry) (first
/// 4 GiB identity-mapped, image identity-mapped): parses the start info at
/// `start_info_paddr`, detects the platform and installs the best backend.
/// `on_fallback` hears about every backend that bid but failed.
pub fn init_pvh(
    start_info_paddr: u64,
    on_fallback: impl FnMut(&BackendError),
) -> Result<Booted, BootError> {
    // SAFETY: the PVH entry identity-maps the first 4 GiB; the start info
    // and what it points to are loader-written RAM there.
    let mem = unsafe { DirectMap::new(0, IDENTITY_MAPPED) };
    init_pvh_mapped(&mem, start_info_paddr, 0, on_fallback)
}

/// For a kernel entered through the higher-half form of
/// [`pvh_entry!`](crate::pvh_entry): as [`init_pvh`] (same checks, same
/// errors, the memory map completed the same way), but the start info is
/// read through the direct map the entry built, and pvops is told that
/// physical memory is at `boot.phys_offset()` (`BootContext::phys_offset`:
/// the native backend reaches the local APIC and ACPI tables there, the
/// SMP trampoline is written there).
///
/// The image is found by walking the page tables
/// (`KernelMap::PageTables`), as for the identity form: the entry maps it
/// linearly at `kernel_vma` (`Linear { offset: kernel_vma }` would be
/// right at first), but the walk stays right when the kernel rebuilds its
/// tables or remaps its image before its other CPUs register their
/// records, and it needs nothing the kernel does not keep anyway (the
/// direct map).
pub fn init_pvh_high(
    boot: PvhHighHandoff,
    on_fallback: impl FnMut(&BackendError),
) -> Result<Booted, BootError> {
    // SAFETY: a PvhHighHandoff names a direct map of the first
    // DIRECT_MAPPED bytes (its constructor's contract; the higher-half
    // entry builds exactly that); the start info is loader-written RAM.
    let mem = unsafe { DirectMap::new(boot.phys_offset(), DIRECT_MAPPED) };
    init_pvh_mapped(
        &mem,
        boot.start_info_paddr(),
        boot.phys_offset(),
        on_fallback,
    )
}

/// The PVH init of both entry forms: `mem` reaches physical memory the
/// way the entry mapped it, `phys_offset` is where the kernel keeps it.
fn init_pvh_mapped(
    mem: &impl crate::phys::PhysRead,
    start_info_paddr: u64,
    phys_offset: u64,
    on_fallback: impl FnMut(&BackendError),
) -> Result<Booted, BootError> {
    let parsed = start_info::parse(mem, start_info_paddr);
    let ctx = pvh_context(
        &parsed,
        phys_offset,
        crate::detect::scan(&crate::detect::HardwareCpuid),
    );
    let installed = crate::init(&ctx, on_fallback);
    match (parsed, installed) {
        (Ok(mut start_info), Ok(ops)) => {
            complete_memmap(&mut start_info, ops);
            Ok(Booted { start_info, ops })
        }
        (Err(error), installed) => Err(BootError::BadStartInfo {
            error,
            installed: installed.is_ok(),
        }),
        (Ok(_), Err(e)) => Err(BootError::NoBackend(e)),
    }
}

/// What a PVH entry tells `pvops::init`: the start info's command line and
/// RSDP (none if it was refused: pvops still comes up, for the error line),
/// memory at `phys_offset`, and the image found by walking the page tables
/// (the default kernel map: see [`init_pvh_high`]).
fn pvh_context(
    parsed: &Result<StartInfo, StartInfoError>,
    phys_offset: u64,
    cpuid: crate::detect::CpuidScan,
) -> BootContext<'_> {
    let (cmdline, rsdp) = match parsed {
        Ok(si) => (si.cmdline(), si.rsdp),
        Err(_) => ("", None),
    };
    let mut ctx = BootContext::new(BootEntry::Pvh, cmdline, cpuid);
    ctx.rsdp = rsdp;
    ctx.phys_offset = phys_offset;
    ctx.kernel_map = crate::KernelMap::PageTables;
    ctx
}

/// Supplies the memory map when the loader passed none, from the platform
/// itself (the `platform.memory_map` op: Xen gives a PVH dom0 a version 0
/// start info and the map through `XENMEM_memory_map`).
fn complete_memmap(start_info: &mut StartInfo, ops: &PvOps) {
    if start_info.has_memmap() {
        return;
    }
    let mut map = [HvmMemmapEntry {
        addr: 0,
        size: 0,
        kind: MemmapType::RESERVED,
        reserved: 0,
    }; MAX_MEMMAP_ENTRIES];
    let n = (ops.platform.memory_map)(&mut map);
    start_info.set_memmap(&map[..n.min(MAX_MEMMAP_ENTRIES)]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::start_info::HvmStartInfo;
    use crate::detect::CpuidScan;
    use std::vec;
    use zerocopy::IntoBytes;

    /// Guest memory `[BASE, BASE + len)` as a host buffer, and the offset
    /// at which a [`DirectMap`] finds physical address `p` in it: what the
    /// higher-half entry's direct map is to the kernel.
    struct Guest {
        bytes: vec::Vec<u8>,
    }

    const BASE: u64 = 0x10_0000;
    const INFO: u64 = BASE + 0x100;
    const MEMMAP: u64 = BASE + 0x200;
    const CMDLINE: u64 = BASE + 0x300;

    impl Guest {
        fn new() -> Self {
            Guest {
                bytes: vec![0; 0x1000],
            }
        }

        fn write(&mut self, paddr: u64, data: &[u8]) {
            let at = (paddr - BASE) as usize;
            self.bytes[at..at + data.len()].copy_from_slice(data);
        }

        /// A direct map over the buffer: `p` at `offset + p`.
        fn direct_map(&self) -> DirectMap {
            let offset = (self.bytes.as_ptr() as u64).wrapping_sub(BASE);
            // SAFETY: every physical address the parser may read below
            // the limit is either inside the buffer, which lives as long
            // as the map is used, or below BASE, which the start info
            // below never names.
            unsafe { DirectMap::new(offset, BASE + self.bytes.len() as u64) }
        }
    }

    fn pvh_info(cmdline: &[u8], rsdp: u64) -> Guest {
        let mut g = Guest::new();
        let info = HvmStartInfo {
            magic: start_info::HVM_START_MAGIC,
            version: 1,
            flags: 0,
            nr_modules: 0,
            modlist_paddr: 0,
            cmdline_paddr: CMDLINE,
            rsdp_paddr: rsdp,
            memmap_paddr: MEMMAP,
            memmap_entries: 1,
            reserved: 0,
        };
        g.write(INFO, info.as_bytes());
        let ram = HvmMemmapEntry {
            addr: 0,
            size: 256 << 20,
            kind: MemmapType::RAM,
            reserved: 0,
        };
        g.write(MEMMAP, ram.as_bytes());
        g.write(CMDLINE, cmdline);
        g
    }

    #[test]
    fn the_start_info_is_read_through_the_direct_map() {
        let g = pvh_info(b"pvops.mode=test x=1\0", 0xf_5a40);
        let mem = g.direct_map();
        let parsed = start_info::parse(&mem, INFO);
        let high = 0xffff_8000_0000_0000;
        let ctx = pvh_context(&parsed, high, CpuidScan::empty());
        assert_eq!(ctx.cmdline, "pvops.mode=test x=1");
        assert_eq!(ctx.option("mode"), Some("test"));
        assert_eq!(ctx.rsdp, Some(0xf_5a40));
        assert_eq!(ctx.phys_offset, high);
        assert!(matches!(ctx.kernel_map, crate::KernelMap::PageTables));
        assert_eq!(ctx.entry, BootEntry::Pvh);
        let si = parsed.as_ref().unwrap();
        assert_eq!(si.ram_regions().collect::<vec::Vec<_>>(), [(0, 256 << 20)]);
    }

    #[test]
    fn a_refused_start_info_leaves_an_empty_context() {
        let mut g = pvh_info(b"pvops.mode=test\0", 0);
        g.write(INFO, &0xdead_beefu32.to_le_bytes());
        let mem = g.direct_map();
        let parsed = start_info::parse(&mem, INFO);
        assert!(
            matches!(parsed, Err(StartInfoError::BadMagic { found: 0xdead_beef })),
            "{parsed:?}"
        );
        let ctx = pvh_context(&parsed, 0xffff_8000_0000_0000, CpuidScan::empty());
        assert_eq!((ctx.cmdline, ctx.rsdp), ("", None));
        assert_eq!(ctx.phys_offset, 0xffff_8000_0000_0000);
    }

    #[test]
    fn a_start_info_beyond_the_direct_map_is_refused() {
        let g = pvh_info(b"\0", 0);
        let mem = g.direct_map();
        let beyond = BASE + g.bytes.len() as u64;
        assert!(matches!(
            start_info::parse(&mem, beyond),
            Err(StartInfoError::HeaderUnreadable { paddr, .. }) if paddr == beyond
        ));
    }
}
