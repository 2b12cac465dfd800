//! A flat 64-bit GDT (null, kernel code 0x08, kernel data 0x10) the kernel
//! owns: the loader's GDT may live in memory the kernel reuses, and a CPU
//! started through pvops' trampoline arrives on a GDT in the trampoline
//! page, which the kernel unmaps afterwards.

use pvops::cpu::DescriptorTablePointer;
use pvops::x86_64::VirtAddr;

/// The kernel code selector.
pub const CODE: u16 = 0x08;
/// The kernel data selector.
pub const DATA: u16 = 0x10;

#[repr(C, align(16))]
struct Gdt([u64; 3]);

// The accessed bits are set: a loader may map `.rodata` read-only (the
// bootloader crate does), and loading a selector whose descriptor has the
// bit clear makes the CPU write it.
static GDT: Gdt = Gdt([0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff]);

/// Loads the GDT on this CPU through pvops (after `pvops::init`) and makes
/// its selectors the kernel's.
pub fn load() {
    let ptr = DescriptorTablePointer {
        limit: (core::mem::size_of::<Gdt>() - 1) as u16,
        base: VirtAddr::new(core::ptr::addr_of!(GDT) as u64),
    };
    // SAFETY: GDT is a static that lives (and stays mapped) forever; its
    // code and data descriptors are the flat 64-bit ones the selectors name.
    unsafe {
        pvops::cpu::load_gdt(&ptr);
        pvops::cpu::load_kernel_segments(CODE, DATA);
    }
}
