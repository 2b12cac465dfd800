//! The local APIC, in x2APIC mode (MSRs) when the CPU has it, else xAPIC
//! (memory-mapped registers through the kernel's direct map).

use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::detect::{CpuidSource, HardwareCpuid};
use pvops_core::irq::IpiTarget;
use x86_64::registers::model_specific::Msr;

/// IA32_APIC_BASE.
const MSR_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// First x2APIC MSR; register at MMIO offset `o` is MSR `X2APIC_MSR_BASE + o / 16`.
const X2APIC_MSR_BASE: u32 = 0x800;

/// Register offsets (xAPIC MMIO layout).
pub(crate) mod reg {
    pub const ID: u32 = 0x20;
    pub const TPR: u32 = 0x80;
    pub const EOI: u32 = 0xb0;
    pub const SVR: u32 = 0xf0;
    pub const ICR_LOW: u32 = 0x300;
    pub const ICR_HIGH: u32 = 0x310;
    pub const LVT_TIMER: u32 = 0x320;
    pub const TIMER_INITIAL: u32 = 0x380;
    pub const TIMER_CURRENT: u32 = 0x390;
    pub const TIMER_DIVIDE: u32 = 0x3e0;
}

/// SVR: software enable.
const SVR_ENABLE: u32 = 1 << 8;
/// The spurious-interrupt vector pvops programs; the kernel should give it an
/// IDT entry that simply returns (no EOI for spurious interrupts).
pub const SPURIOUS_VECTOR: u8 = 0xff;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;
const ICR_LEVEL_ASSERT: u32 = 1 << 14;
const ICR_SHORTHAND_SELF: u32 = 0b01 << 18;
const ICR_SHORTHAND_ALL: u32 = 0b10 << 18;
const ICR_SHORTHAND_OTHERS: u32 = 0b11 << 18;
/// Timer LVT: masked.
pub(crate) const LVT_MASKED: u32 = 1 << 16;

const MODE_NONE: u8 = 0;
const MODE_XAPIC: u8 = 1;
const MODE_X2APIC: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(MODE_NONE);
/// Virtual address of the xAPIC register page.
static XAPIC_VIRT: AtomicU64 = AtomicU64::new(0);

/// Which register interface is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicMode {
    /// Memory-mapped registers.
    XApic,
    /// MSR registers.
    X2Apic,
}

/// Whether CPUID says the CPU has x2APIC.
pub fn cpu_has_x2apic() -> bool {
    HardwareCpuid.cpuid(1, 0).ecx & (1 << 21) != 0
}

/// Enables this CPU's local APIC in `want` mode (x2APIC only if the CPU has
/// it), maps nothing (xAPIC registers are reached at `phys + phys_offset`),
/// and sets the spurious vector and TPR.
///
/// # Safety
/// `phys_offset` must map the APIC register page (uncached) when xAPIC mode
/// is chosen, and the caller must be the only code touching the APIC now.
pub unsafe fn init(want_x2apic: bool, phys_offset: u64) -> ApicMode {
    let mut base_msr = Msr::new(MSR_APIC_BASE);
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU.
    let base = unsafe { base_msr.read() };
    let already_x2 = base & APIC_BASE_X2APIC != 0;
    let mode = if want_x2apic && cpu_has_x2apic() || already_x2 {
        if !already_x2 {
            // Enable first, then switch: xAPIC -> x2APIC must go through
            // the enabled xAPIC state.
            // SAFETY: setting the enable and x2APIC bits of IA32_APIC_BASE
            // on a CPU that reports x2APIC is the architected switch.
            unsafe {
                base_msr.write(base | APIC_BASE_ENABLE);
                base_msr.write(base | APIC_BASE_ENABLE | APIC_BASE_X2APIC);
            }
        }
        MODE.store(MODE_X2APIC, Ordering::Relaxed);
        ApicMode::X2Apic
    } else {
        if base & APIC_BASE_ENABLE == 0 {
            // SAFETY: enabling the APIC in xAPIC mode keeps its base address.
            unsafe { base_msr.write(base | APIC_BASE_ENABLE) };
        }
        XAPIC_VIRT.store(
            (base & APIC_BASE_ADDR_MASK) + phys_offset,
            Ordering::Relaxed,
        );
        MODE.store(MODE_XAPIC, Ordering::Relaxed);
        ApicMode::XApic
    };
    write(reg::TPR, 0);
    write(reg::SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
    mode
}

/// Brings up the APIC of a secondary CPU in the mode the boot CPU chose.
///
/// # Safety
/// As for [`init`]; call it once on each secondary CPU.
pub unsafe fn init_secondary(phys_offset: u64) {
    let want_x2 = MODE.load(Ordering::Relaxed) == MODE_X2APIC;
    // SAFETY: forwarded from the caller.
    unsafe { init(want_x2, phys_offset) };
}

/// Reads register `offset`.
pub(crate) fn read(offset: u32) -> u32 {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: init found x2APIC enabled; register MSRs exist then.
        MODE_X2APIC => unsafe { Msr::new(X2APIC_MSR_BASE + offset / 16).read() as u32 },
        MODE_XAPIC => {
            let p = (XAPIC_VIRT.load(Ordering::Relaxed) + u64::from(offset)) as *const u32;
            // SAFETY: init's caller guaranteed the register page is mapped at
            // XAPIC_VIRT; offsets used are APIC registers inside that page.
            unsafe { core::ptr::read_volatile(p) }
        }
        _ => 0,
    }
}

/// Writes register `offset`.
pub(crate) fn write(offset: u32, value: u32) {
    match MODE.load(Ordering::Relaxed) {
        // SAFETY: as in `read`.
        MODE_X2APIC => unsafe { Msr::new(X2APIC_MSR_BASE + offset / 16).write(value.into()) },
        MODE_XAPIC => {
            let p = (XAPIC_VIRT.load(Ordering::Relaxed) + u64::from(offset)) as *mut u32;
            // SAFETY: as in `read`.
            unsafe { core::ptr::write_volatile(p, value) }
        }
        _ => {}
    }
}

/// This CPU's APIC ID.
#[inline]
pub fn id() -> u32 {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => read(reg::ID),
        MODE_XAPIC => read(reg::ID) >> 24,
        // Before init: the initial APIC ID from CPUID.
        _ => HardwareCpuid.cpuid(1, 0).ebx >> 24,
    }
}

/// End of interrupt.
#[inline]
pub fn eoi() {
    write(reg::EOI, 0)
}

/// Writes the ICR: `low` (vector, mode, shorthand) to APIC `dest`.
pub(crate) fn write_icr(dest: u32, low: u32) {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => {
            // One 64-bit MSR write sends it; no delivery status to poll.
            let v = (u64::from(dest) << 32) | u64::from(low);
            // SAFETY: the x2APIC ICR MSR exists in x2APIC mode.
            unsafe { Msr::new(X2APIC_MSR_BASE + reg::ICR_LOW / 16).write(v) }
        }
        MODE_XAPIC => {
            wait_icr_idle();
            write(reg::ICR_HIGH, dest << 24);
            write(reg::ICR_LOW, low);
            wait_icr_idle();
        }
        _ => {}
    }
}

fn wait_icr_idle() {
    // Bounded: a wedged APIC must not hang the kernel forever.
    for _ in 0..1_000_000 {
        if read(reg::ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
            return;
        }
        core::hint::spin_loop();
    }
}

/// Sends fixed interrupt `vector` to `target`.
pub fn send_ipi(target: IpiTarget, vector: u8) {
    let fixed = ICR_LEVEL_ASSERT | u32::from(vector);
    match target {
        IpiTarget::Cpu(CpuId(dest)) => write_icr(dest, fixed),
        IpiTarget::Mask(mask) => {
            for CpuId(dest) in mask.iter() {
                write_icr(dest, fixed);
            }
        }
        IpiTarget::ThisCpu => write_icr(0, fixed | ICR_SHORTHAND_SELF),
        IpiTarget::AllButSelf => write_icr(0, fixed | ICR_SHORTHAND_OTHERS),
        IpiTarget::All => write_icr(0, fixed | ICR_SHORTHAND_ALL),
    }
}

/// The mode chosen by [`init`], if it ran.
pub fn mode() -> Option<ApicMode> {
    match MODE.load(Ordering::Relaxed) {
        MODE_X2APIC => Some(ApicMode::X2Apic),
        MODE_XAPIC => Some(ApicMode::XApic),
        _ => None,
    }
}
