//! The kernel's own GDT and TSS, loaded through pvops.

use core::ptr::addr_of;
use pvops::cpu::DescriptorTablePointer;
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// The selectors the kernel runs with.
#[derive(Debug, Clone, Copy)]
pub struct Selectors {
    pub code: SegmentSelector,
}

static mut TSS: TaskStateSegment = TaskStateSegment::new();
static mut GDT: GlobalDescriptorTable = GlobalDescriptorTable::new();

/// RSP0 of the boot CPU's TSS (the kernel stack for entries from user
/// mode, set through `pvops::cpu::set_kernel_stack`).
pub fn tss_rsp0() -> u64 {
    // SAFETY: a read of a plain field of the static TSS; the kernel writes
    // it only through pvops on this CPU.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(TSS.privilege_stack_table[0])).as_u64() }
}

/// Loads the GDT built by [`init`] on a secondary CPU and reloads its
/// segment registers. Secondary CPUs run without a task register: the
/// kernel never changes privilege level or uses IST stacks, so the CPU never
/// consults a TSS.
pub fn load_shared() {
    // SAFETY: GDT was filled once by `init` on the boot CPU before any
    // secondary CPU started, and is never changed again.
    unsafe {
        let gdt = &*addr_of!(GDT);
        let ptr = DescriptorTablePointer {
            limit: gdt.limit(),
            base: VirtAddr::new(gdt.entries().as_ptr() as u64),
        };
        pvops::cpu::load_gdt(&ptr);
        pvops::cpu::load_kernel_segments(0x08, 0x10);
    }
}

/// Builds the GDT (null, code, data, TSS), loads it and the task register
/// through pvops and makes its code and data segments the kernel's (the
/// platform may keep its own: Xen PV runs the kernel on Xen's selectors).
pub fn init() -> Selectors {
    // SAFETY: runs once on the boot CPU before any other user of GDT/TSS;
    // both are statics that live forever, as a loaded GDT and TSS must.
    unsafe {
        let gdt = &mut *core::ptr::addr_of_mut!(GDT);
        let code = gdt.append(Descriptor::kernel_code_segment());
        let data = gdt.append(Descriptor::kernel_data_segment());
        let tss = gdt.append(Descriptor::tss_segment(&*addr_of!(TSS)));
        let ptr = DescriptorTablePointer {
            limit: gdt.limit(),
            base: VirtAddr::new(gdt.entries().as_ptr() as u64),
        };
        pvops::cpu::load_gdt(&ptr);
        pvops::cpu::load_kernel_segments(code.0, data.0);
        pvops::cpu::load_tr(tss.0);
        // load_shared relies on this layout.
        debug_assert!(code.0 == 0x08 && data.0 == 0x10);
        Selectors { code }
    }
}
