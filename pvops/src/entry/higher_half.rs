//! The higher-half form of the PVH entry: for a kernel linked at
//! `kernel_vma + paddr` (e.g. `0xffffffff80000000` + 1 MiB, loaded by
//! `AT(ADDR - KERNEL_VMA)` at its physical address), with all memory below
//! 4 GiB at `phys_offset + paddr`.
//!
//! [`pvh_entry!`](crate::pvh_entry)`(main, higher_half(kernel_vma = K,
//! phys_offset = P))` emits the note and a 32-bit entry that runs at
//! physical addresses with paging off (every absolute reference is
//! `symbol - K`). It zeroes `.bss`, builds page tables from four page
//! directories of 2 MiB pages (the first 4 GiB; the top GiB, where the
//! PCI hole and the local APIC are, uncached), used three times: at 0
//! (identity, only for the switch), at `P` (the direct map), and at `K`
//! (the kernel window: as many of the first GiBs as the top-level slot
//! holds above `K`, at most 4). It enables long mode, jumps to the high
//! address, reloads the GDT through its high address, removes the identity
//! map, and calls `main` on the boot stack with a [`PvhHighHandoff`]: the
//! kernel starts in a clean higher-half address space.
//!
//! [`HigherHalf::new`] checks the layout at compile time (the macro
//! evaluates it in a `const`): `K` 1 GiB aligned in the upper half, `P`
//! 512 GiB aligned in the upper half, and the two in different top-level
//! slots. At run time the entry halts (before paging is on) if the image's
//! end (`__bss_end`) lies beyond the kernel window.

/// How much physical memory the higher-half entry maps at `phys_offset`
/// (and so what [`init_pvh_high`](super::init_pvh_high) may read through):
/// the first 4 GiB, like the identity form.
pub const DIRECT_MAPPED: u64 = 4 << 30;

const GIB: u64 = 1 << 30;
/// What one top-level (PML4) entry maps.
const TOP_LEVEL_SPAN: u64 = 1 << 39;
/// The lowest canonical upper-half address (4-level paging).
const UPPER_HALF: u64 = 0xffff_8000_0000_0000;
/// Page directories the entry fills (one per GiB of [`DIRECT_MAPPED`]).
const PAGE_DIRECTORIES: u64 = DIRECT_MAPPED / GIB;

/// Why a higher-half layout cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayoutError {
    /// `kernel_vma` is not a multiple of 1 GiB (the window is built from
    /// whole page directories).
    KernelVmaNotGibAligned,
    /// `kernel_vma` is not a canonical upper-half address
    /// (`>= 0xffff800000000000`).
    KernelVmaNotUpperHalf,
    /// `phys_offset` is not a multiple of 512 GiB (the direct map is one
    /// top-level entry of its own).
    PhysOffsetNotAligned,
    /// `phys_offset` is not a canonical upper-half address.
    PhysOffsetNotUpperHalf,
    /// Both lie in the same 512 GiB top-level slot.
    SameTopLevelSlot,
}

impl LayoutError {
    /// What is wrong, in words (also the compile-time panic's message).
    pub const fn message(self) -> &'static str {
        match self {
            LayoutError::KernelVmaNotGibAligned => "kernel_vma must be a multiple of 1 GiB",
            LayoutError::KernelVmaNotUpperHalf => {
                "kernel_vma must be a canonical upper-half address (>= 0xffff800000000000)"
            }
            LayoutError::PhysOffsetNotAligned => "phys_offset must be a multiple of 512 GiB",
            LayoutError::PhysOffsetNotUpperHalf => {
                "phys_offset must be a canonical upper-half address (>= 0xffff800000000000)"
            }
            LayoutError::SameTopLevelSlot => {
                "kernel_vma and phys_offset must lie in different 512 GiB top-level slots"
            }
        }
    }
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

impl core::error::Error for LayoutError {}

/// A checked higher-half layout, and the page-table indices the entry
/// writes (the macro passes them to its assembly as constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HigherHalf {
    kernel_vma: u64,
    phys_offset: u64,
}

impl HigherHalf {
    /// The layout, or why it cannot be built.
    pub const fn check(kernel_vma: u64, phys_offset: u64) -> Result<Self, LayoutError> {
        if !kernel_vma.is_multiple_of(GIB) {
            return Err(LayoutError::KernelVmaNotGibAligned);
        }
        if kernel_vma < UPPER_HALF {
            return Err(LayoutError::KernelVmaNotUpperHalf);
        }
        if !phys_offset.is_multiple_of(TOP_LEVEL_SPAN) {
            return Err(LayoutError::PhysOffsetNotAligned);
        }
        if phys_offset < UPPER_HALF {
            return Err(LayoutError::PhysOffsetNotUpperHalf);
        }
        if kernel_vma / TOP_LEVEL_SPAN == phys_offset / TOP_LEVEL_SPAN {
            return Err(LayoutError::SameTopLevelSlot);
        }
        Ok(HigherHalf {
            kernel_vma,
            phys_offset,
        })
    }

    /// The layout; panics (at compile time, in a `const`) with the
    /// [`LayoutError`]'s message when [`check`](Self::check) refuses it.
    ///
    /// ```
    /// const LAYOUT: pvops::entry::HigherHalf =
    ///     pvops::entry::HigherHalf::new(0xffff_ffff_8000_0000, 0xffff_8000_0000_0000);
    /// assert_eq!(LAYOUT.kernel_window_gib(), 2);
    /// ```
    ///
    /// A kernel base 2 MiB past a GiB does not build:
    ///
    /// ```compile_fail
    /// const LAYOUT: pvops::entry::HigherHalf =
    ///     pvops::entry::HigherHalf::new(0xffff_ffff_8020_0000, 0xffff_8000_0000_0000);
    /// ```
    pub const fn new(kernel_vma: u64, phys_offset: u64) -> Self {
        match Self::check(kernel_vma, phys_offset) {
            Ok(layout) => layout,
            Err(e) => panic!("{}", e.message()),
        }
    }

    /// Where physical address 0 of the image is linked.
    pub const fn kernel_vma(&self) -> u64 {
        self.kernel_vma
    }

    /// Where physical address 0 is in the direct map.
    pub const fn phys_offset(&self) -> u64 {
        self.phys_offset
    }

    /// The top-level (PML4) entry of the direct map.
    pub const fn direct_map_slot(&self) -> u64 {
        (self.phys_offset >> 39) & 511
    }

    /// The top-level (PML4) entry of the kernel window.
    pub const fn kernel_slot(&self) -> u64 {
        (self.kernel_vma >> 39) & 511
    }

    /// The first PDPT entry of the kernel window.
    pub const fn kernel_pdpt_index(&self) -> u64 {
        (self.kernel_vma >> 30) & 511
    }

    /// How many GiB of physical memory, from 0, the kernel window maps:
    /// what fits in the top-level slot above `kernel_vma`, at most 4.
    pub const fn kernel_window_gib(&self) -> u64 {
        let room = 512 - self.kernel_pdpt_index();
        if room < PAGE_DIRECTORIES {
            room
        } else {
            PAGE_DIRECTORIES
        }
    }

    /// The kernel window's size in bytes: the image (up to `__bss_end`)
    /// must end below `kernel_vma` plus this.
    pub const fn kernel_window_bytes(&self) -> u64 {
        self.kernel_window_gib() * GIB
    }
}

/// What the higher-half PVH entry hands `main`, for
/// [`init_pvh_high`](super::init_pvh_high): the physical address of
/// `hvm_start_info` and the direct map the entry built. Passed by value in
/// two registers (`extern "C"`: RDI, RSI).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PvhHighHandoff {
    start_info_paddr: u64,
    phys_offset: u64,
}

impl PvhHighHandoff {
    /// A handoff naming a start info and a direct map.
    ///
    /// # Safety
    /// The first [`DIRECT_MAPPED`] bytes of physical memory must be mapped
    /// readable at `phys_offset + paddr`, as the higher-half entry maps
    /// them, for as long as [`init_pvh_high`](super::init_pvh_high) runs
    /// (it reads the start info through them, and pvops keeps reading
    /// ACPI tables and its records there afterwards).
    pub const unsafe fn new(start_info_paddr: u64, phys_offset: u64) -> Self {
        Self {
            start_info_paddr,
            phys_offset,
        }
    }

    /// The physical address of `hvm_start_info`.
    pub const fn start_info_paddr(&self) -> u64 {
        self.start_info_paddr
    }

    /// Where the entry mapped physical memory (the kernel's direct map).
    pub const fn phys_offset(&self) -> u64 {
        self.phys_offset
    }
}

/// The higher-half arm of [`pvh_entry!`](crate::pvh_entry); not for direct
/// use.
#[doc(hidden)]
#[macro_export]
macro_rules! __pvh_entry_higher_half {
    ($main:path, $vma:expr, $offset:expr, $size:expr) => {
        const _: extern "C" fn($crate::entry::PvhHighHandoff) -> ! = $main;
        /// The layout, checked at compile time.
        const __PVOPS_HIGHER_HALF: $crate::entry::HigherHalf =
            $crate::entry::HigherHalf::new($vma, $offset);
        ::core::arch::global_asm!(
            r#"
            .section .note.Xen, "a", @note
            .balign 4
            .long 4
            .long 4
            .long {phys32_entry}
            .asciz "Xen"
            .balign 4
            .long pvops_pvh_start - {vma}
            .balign 4

            .section .bss.pvops_boot, "aw", @nobits
            .balign 4096
            pvops_boot_pml4:      .skip 4096
            pvops_boot_pdpt_low:  .skip 4096
            pvops_boot_pdpt_high: .skip 4096
            pvops_boot_pd:        .skip 4096 * 4
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
            /* Loaded with paging off: the GDT's physical address. */
            pvops_boot_gdt_ptr32:
                .word pvops_boot_gdt_end - pvops_boot_gdt - 1
                .long pvops_boot_gdt - {vma}
            .balign 8
            /* Loaded in the higher half: its linked address. */
            pvops_boot_gdt_ptr64:
                .word pvops_boot_gdt_end - pvops_boot_gdt - 1
                .quad pvops_boot_gdt

            .section .text.boot, "ax"
            .code32
            .global pvops_pvh_start
            pvops_pvh_start:
                cli
                cld
                mov %ebx, %ebp
                mov $__bss_start - {vma}, %edi
                mov $__bss_end - {vma}, %ecx
                sub %edi, %ecx
                xor %eax, %eax
                rep stosb
                /* The image must end inside the kernel window. */
                mov $__bss_end - {vma}, %eax
                cmp ${window_last}, %eax
                ja 9f
                mov $pvops_boot_stack_top - {vma}, %esp

                /* Four page directories of 2 MiB pages, the first 4 GiB;
                 * the top GiB (PCI hole, local APIC) uncached. */
                mov $pvops_boot_pd - {vma}, %edi
                xor %ecx, %ecx
            1:  mov %ecx, %eax
                shl $21, %eax
                or $0x83, %eax                  /* present, writable, 2 MiB */
                cmp $1536, %ecx
                jb 2f
                or $0x18, %eax                  /* PCD | PWT above 3 GiB */
            2:  mov %eax, (%edi,%ecx,8)
                inc %ecx
                cmp $2048, %ecx
                jb 1b

                /* One PDPT for the identity and direct maps. */
                mov $pvops_boot_pdpt_low - {vma}, %edi
                mov $pvops_boot_pd - {vma} + 3, %eax
                xor %ecx, %ecx
            3:  mov %eax, (%edi,%ecx,8)
                add $4096, %eax
                inc %ecx
                cmp $4, %ecx
                jb 3b

                /* The kernel window: the first GiBs from kernel_vma on. */
                mov $pvops_boot_pdpt_high - {vma} + {kernel_pdpt} * 8, %edi
                mov $pvops_boot_pd - {vma} + 3, %eax
                xor %ecx, %ecx
            4:  mov %eax, (%edi,%ecx,8)
                add $4096, %eax
                inc %ecx
                cmp ${window_gib}, %ecx
                jb 4b

                movl $pvops_boot_pdpt_low - {vma} + 3, pvops_boot_pml4 - {vma}
                movl $pvops_boot_pdpt_low - {vma} + 3, pvops_boot_pml4 - {vma} + {direct_slot} * 8
                movl $pvops_boot_pdpt_high - {vma} + 3, pvops_boot_pml4 - {vma} + {kernel_slot} * 8

                mov $pvops_boot_pml4 - {vma}, %eax
                mov %eax, %cr3
                mov %cr4, %eax
                or $0x20, %eax                  /* PAE */
                mov %eax, %cr4
                mov $0xc0000080, %ecx           /* EFER.LME */
                rdmsr
                or $0x100, %eax
                wrmsr
                mov %cr0, %eax
                or $0x80010001, %eax            /* PG | WP | PE */
                mov %eax, %cr0
                lgdt pvops_boot_gdt_ptr32 - {vma}
                ljmp $0x08, $pvops_pvh_low64 - {vma}
            9:  hlt
                jmp 9b

            .code64
            pvops_pvh_low64:
                movabs $pvops_pvh_high64, %rax
                jmp *%rax
            pvops_pvh_high64:
                lgdt pvops_boot_gdt_ptr64(%rip)
                mov $0x10, %eax
                mov %eax, %ds
                mov %eax, %es
                mov %eax, %ss
                xor %eax, %eax
                mov %eax, %fs
                mov %eax, %gs
                lea pvops_boot_stack_top(%rip), %rsp
                /* No identity map from here on. */
                movq $0, pvops_boot_pml4(%rip)
                mov %cr3, %rax
                mov %rax, %cr3
                mov %ebp, %edi                  /* zero-extends */
                movabs ${phys_offset}, %rsi
                xor %ebp, %ebp
                call {main}
            5:  cli
                hlt
                jmp 5b
            "#,
            phys32_entry = const $crate::entry::XEN_ELFNOTE_PHYS32_ENTRY,
            vma = const __PVOPS_HIGHER_HALF.kernel_vma(),
            phys_offset = const __PVOPS_HIGHER_HALF.phys_offset(),
            window_last = const __PVOPS_HIGHER_HALF.kernel_window_bytes() - 1,
            window_gib = const __PVOPS_HIGHER_HALF.kernel_window_gib(),
            kernel_pdpt = const __PVOPS_HIGHER_HALF.kernel_pdpt_index(),
            direct_slot = const __PVOPS_HIGHER_HALF.direct_map_slot(),
            kernel_slot = const __PVOPS_HIGHER_HALF.kernel_slot(),
            stack_size = const $size,
            main = sym $main,
            options(att_syntax)
        );
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_usual_layout() {
        let l = HigherHalf::new(0xffff_ffff_8000_0000, 0xffff_8000_0000_0000);
        assert_eq!(l.kernel_slot(), 511);
        assert_eq!(l.kernel_pdpt_index(), 510);
        assert_eq!(l.direct_map_slot(), 256);
        // Two PDPT entries left above 0xffffffff80000000.
        assert_eq!(l.kernel_window_gib(), 2);
        assert_eq!(l.kernel_window_bytes(), 2 << 30);
    }

    #[test]
    fn the_window_is_at_most_what_the_direct_map_has() {
        let l = HigherHalf::new(0xffff_ffff_0000_0000, 0xffff_8880_0000_0000);
        assert_eq!(l.kernel_pdpt_index(), 508);
        assert_eq!(l.kernel_window_gib(), 4);
        assert_eq!(l.direct_map_slot(), 273);
        let l = HigherHalf::new(0xffff_c000_0000_0000, 0xffff_8000_0000_0000);
        assert_eq!((l.kernel_slot(), l.kernel_pdpt_index()), (384, 0));
        assert_eq!(l.kernel_window_gib(), 4);
        let l = HigherHalf::new(0xffff_ffff_c000_0000, 0xffff_8000_0000_0000);
        assert_eq!(l.kernel_window_gib(), 1);
    }

    #[test]
    fn bad_layouts_are_refused_with_their_reason() {
        let ok_vma = 0xffff_ffff_8000_0000;
        let ok_offset = 0xffff_8000_0000_0000;
        let cases = [
            (
                0xffff_ffff_8020_0000,
                ok_offset,
                LayoutError::KernelVmaNotGibAligned,
            ),
            (0x4000_0000, ok_offset, LayoutError::KernelVmaNotUpperHalf),
            // Non-canonical: bit 47 clear with the top bits set.
            (
                0xffff_7fff_c000_0000,
                ok_offset,
                LayoutError::KernelVmaNotUpperHalf,
            ),
            (
                ok_vma,
                0xffff_8000_4000_0000,
                LayoutError::PhysOffsetNotAligned,
            ),
            (ok_vma, 0, LayoutError::PhysOffsetNotUpperHalf),
            (
                ok_vma,
                0x0000_7f80_0000_0000,
                LayoutError::PhysOffsetNotUpperHalf,
            ),
            (ok_vma, 0xffff_ff80_0000_0000, LayoutError::SameTopLevelSlot),
        ];
        for (vma, offset, want) in cases {
            assert_eq!(
                HigherHalf::check(vma, offset),
                Err(want),
                "{vma:#x} {offset:#x}"
            );
            assert!(!want.message().is_empty());
        }
    }

    #[test]
    #[should_panic(expected = "kernel_vma must be a multiple of 1 GiB")]
    fn new_panics_with_the_reason() {
        let _ = HigherHalf::new(0xffff_ffff_8000_1000, 0xffff_8000_0000_0000);
    }

    #[test]
    fn the_handoff_is_two_words() {
        assert_eq!(core::mem::size_of::<PvhHighHandoff>(), 16);
        // SAFETY: only read back, never used to reach memory.
        let h = unsafe { PvhHighHandoff::new(0x1234, 0xffff_8000_0000_0000) };
        assert_eq!(h.start_info_paddr(), 0x1234);
        assert_eq!(h.phys_offset(), 0xffff_8000_0000_0000);
    }
}
