//! CPU ops of a classic PV guest, which runs in ring 3:
//!
//! | op | how |
//! |---|---|
//! | `cpuid` | Xen's forced-emulation prefix (`ud2; "xen"; cpuid`): Xen's view of the CPU for this guest, its own leaves included |
//! | CR0 | a copy (Xen owns CR0); TS through `fpu_taskswitch` |
//! | CR4, MSRs | the instructions, which fault and Xen emulates for PV guests (there is no hypercall for them) |
//! | GDT | copied into a page of this backend, system descriptors (a TSS) dropped, page write-protected, `set_gdt` |
//! | IDT | turned into Xen's trap table (`set_trap_table`) over the entries of [`super::traps`] |
//! | task register, kernel segments | nothing: Xen's flat ring-3 selectors stay, and a PV kernel has no TSS |
//! | I/O ports | the instructions, which Xen emulates once `PHYSDEVOP_set_iopl` allowed them ([`super::setup`]) |
//! | interrupt return | [`super::traps`]' `pvops_xen_pv_iret` |

use super::traps::{self, HANDLERS, KERNEL_CS};
use super::XenPv;
use crate::abi::pv::{pte, TrapInfo, GDT_ENTRIES_PER_PAGE, TI_MASK_EVENTS};
use crate::shared::Page;
use crate::warn::warn;
use crate::xen::XEN;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use pvops_core::cpu::{
    CpuId, CpuOps, CpuidResult, DescriptorTablePointer, PortWidth, SecondaryStart, StartCpuError,
};
use pvops_core::irq::CpuMask;
use pvops_native::Native;

const CR0_TS: u64 = 1 << 3;
static CR0: AtomicU64 = AtomicU64::new(0);

/// Reads CR0 once (Xen emulates the instruction) to seed the copy.
pub fn init_cr0() {
    CR0.store(Native::read_cr0(), Ordering::Relaxed);
}

/// CPUID through Xen's forced-emulation prefix.
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    let (eax, ebx, ecx, edx): (u32, u32, u32, u32);
    // SAFETY: in a PV guest Xen decodes `ud2; "xen"` followed by `cpuid`
    // as an emulated CPUID and resumes after it; only the four result
    // registers change (RBX is saved around it for LLVM).
    unsafe {
        core::arch::asm!(
            "mov {t:r}, rbx",
            ".byte 0x0f, 0x0b, 0x78, 0x65, 0x6e",
            "cpuid",
            "xchg {t:r}, rbx",
            t = out(reg) ebx,
            inout("eax") leaf => eax,
            inout("ecx") subleaf => ecx,
            out("edx") edx,
            options(nostack, preserves_flags),
        )
    };
    CpuidResult { eax, ebx, ecx, edx }
}

/// CPUID as Xen answers a PV guest ([`cpuid`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct FepCpuid;

impl pvops_core::detect::CpuidSource for FepCpuid {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> CpuidResult {
        cpuid(leaf, subleaf)
    }
}

static GDT: Page<[u64; GDT_ENTRIES_PER_PAGE]> = Page::new([0; GDT_ENTRIES_PER_PAGE]);
static GDT_LOADED: AtomicBool = AtomicBool::new(false);
static GDT_ENTRIES: AtomicU64 = AtomicU64::new(0);

/// The descriptors Xen accepts from `src`: code and data segments stay,
/// system descriptors (TSS, LDT: 16 bytes in long mode) become null.
fn filter_gdt(src: &[u64], out: &mut [u64]) {
    let mut i = 0;
    while i < src.len() && i < out.len() {
        let d = src[i];
        let system = d != 0 && d & (1 << 44) == 0;
        out[i] = if system { 0 } else { d };
        if system && i + 1 < out.len() {
            out[i + 1] = 0;
            i += 1;
        }
        i += 1;
    }
}

/// The tables as the kernel last gave them (base, limit), for
/// `store_idt`/`store_gdt`.
static IDT_BASE: AtomicU64 = AtomicU64::new(0);
static IDT_LIMIT: AtomicU64 = AtomicU64::new(0);
static GDT_BASE: AtomicU64 = AtomicU64::new(0);
static GDT_LIMIT: AtomicU64 = AtomicU64::new(0);

fn pointer(base: &AtomicU64, limit: &AtomicU64) -> DescriptorTablePointer {
    DescriptorTablePointer {
        limit: limit.load(Ordering::Relaxed) as u16,
        base: x86_64::VirtAddr::new_truncate(base.load(Ordering::Relaxed)),
    }
}

unsafe fn load_gdt(ptr: &DescriptorTablePointer) {
    GDT_BASE.store(ptr.base.as_u64(), Ordering::Relaxed);
    GDT_LIMIT.store(u64::from(ptr.limit), Ordering::Relaxed);
    let n = ((usize::from(ptr.limit) + 1) / 8).min(GDT_ENTRIES_PER_PAGE);
    // SAFETY: the caller of load_gdt guarantees a live table of `limit + 1`
    // bytes at `base`.
    let src = unsafe { core::slice::from_raw_parts(ptr.base.as_u64() as *const u64, n) };
    let mut want = [0u64; GDT_ENTRIES_PER_PAGE];
    filter_gdt(src, &mut want);
    let page = GDT.as_ptr();
    if !GDT_LOADED.load(Ordering::Acquire) {
        // SAFETY: the page is this backend's and not yet given to Xen, so
        // still writable and used by nobody else.
        unsafe { *page = want };
        let pfn = super::mmu_pfn_of(page as u64);
        let Some(mfn) = super::p2m::mfn(pfn) else {
            return;
        };
        let ro = (mfn << 12) | pte::PRESENT | pte::ACCESSED | pte::DIRTY;
        if let Err(e) = XEN.update_va_mapping(page as u64, ro, crate::abi::pv::UVMF_INVLPG) {
            warn(format_args!("xen-pv: write-protecting the GDT page: {e}"));
            return;
        }
        super::mmu::mark_table(pfn);
        GDT_LOADED.store(true, Ordering::Release);
    } else {
        // SAFETY: a read of the page Xen holds read-only as our GDT.
        let have = unsafe { page.read_volatile() };
        if have[..n] != want[..n] {
            warn(format_args!(
                "xen-pv: a different GDT than the first: kept the first (the GDT is copied at load)"
            ));
        }
    }
    let pfn = super::mmu_pfn_of(page as u64);
    let Some(mfn) = super::p2m::mfn(pfn) else {
        return;
    };
    GDT_ENTRIES.store(n as u64, Ordering::Relaxed);
    if let Err(e) = XEN.set_gdt(&[mfn], n as u64) {
        warn(format_args!("xen-pv: set_gdt refused the GDT: {e}"));
    }
}

struct TrapTable(UnsafeCell<[TrapInfo; 257]>);
// SAFETY: written only by load_idt, which runs on one vCPU at a time
// (the kernel loads its IDT on the boot CPU, then per CPU in turn).
unsafe impl Sync for TrapTable {}
static TRAP_TABLE: TrapTable = TrapTable(UnsafeCell::new(
    [TrapInfo {
        vector: 0,
        flags: 0,
        cs: 0,
        pad: 0,
        address: 0,
    }; 257],
));

/// A 64-bit IDT gate as Xen's trap table wants it: the handler, and the
/// flags (the gate's DPL; events masked on entry for an interrupt gate).
/// `None` for a gate that is not present.
fn decode_gate(lo: u64, hi: u64) -> Option<(u64, u8)> {
    let attr = (lo >> 40) as u8;
    if attr & 0x80 == 0 {
        return None;
    }
    let handler = (lo & 0xffff) | ((lo >> 32) & 0xffff_0000) | ((hi & 0xffff_ffff) << 32);
    let interrupt_gate = attr & 0x0f == 0x0e;
    let flags = ((attr >> 5) & 3) | if interrupt_gate { TI_MASK_EVENTS } else { 0 };
    Some((handler, flags))
}

unsafe fn load_idt(ptr: &DescriptorTablePointer) {
    IDT_BASE.store(ptr.base.as_u64(), Ordering::Relaxed);
    IDT_LIMIT.store(u64::from(ptr.limit), Ordering::Relaxed);
    let n = ((usize::from(ptr.limit) + 1) / 16).min(256);
    let gates = ptr.base.as_u64() as *const [u64; 2];
    // SAFETY: see TrapTable.
    let table = unsafe { &mut *TRAP_TABLE.0.get() };
    let mut out = 0;
    for (v, slot) in HANDLERS.iter().enumerate().take(n) {
        // SAFETY: the caller of load_idt guarantees `n` live gates there.
        let [lo, hi] = unsafe { gates.add(v).read() };
        let Some((handler, flags)) = decode_gate(lo, hi) else {
            slot.store(0, Ordering::Release);
            continue;
        };
        slot.store(handler, Ordering::Release);
        table[out] = TrapInfo {
            vector: v as u8,
            flags,
            cs: KERNEL_CS,
            pad: 0,
            address: traps::trap_entry(v as u8),
        };
        out += 1;
    }
    table[out] = TrapInfo::default();
    if let Err(e) = XEN.set_trap_table(&table[..=out]) {
        crate::warn::error(format_args!("xen-pv: set_trap_table refused the IDT: {e}"));
    }
}

impl CpuOps for XenPv {
    fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
        cpuid(leaf, subleaf)
    }

    fn read_cr0() -> u64 {
        CR0.load(Ordering::Relaxed)
    }

    unsafe fn write_cr0(value: u64) {
        let old = CR0.load(Ordering::Relaxed);
        if (old ^ value) & CR0_TS != 0 {
            if let Err(e) = XEN.fpu_taskswitch(value & CR0_TS != 0) {
                warn(format_args!("xen-pv: fpu_taskswitch: {e}"));
                return;
            }
        }
        // Only TS is the guest's to change; the copy keeps Xen's others.
        CR0.store((old & !CR0_TS) | (value & CR0_TS), Ordering::Relaxed);
    }

    fn read_cr4() -> u64 {
        Native::read_cr4()
    }

    unsafe fn write_cr4(value: u64) {
        // SAFETY: forwarded; Xen emulates the write and keeps what it owns.
        unsafe { Native::write_cr4(value) }
    }

    unsafe fn read_msr(msr: u32) -> u64 {
        // SAFETY: forwarded; Xen emulates the read.
        unsafe { Native::read_msr(msr) }
    }

    unsafe fn write_msr(msr: u32, value: u64) {
        // SAFETY: forwarded; Xen emulates the write.
        unsafe { Native::write_msr(msr, value) }
    }

    unsafe fn load_gdt(gdt: &DescriptorTablePointer) {
        // SAFETY: forwarded to the caller.
        unsafe { load_gdt(gdt) }
    }

    unsafe fn load_idt(idt: &DescriptorTablePointer) {
        // SAFETY: forwarded to the caller.
        unsafe { load_idt(idt) }
    }

    unsafe fn load_tr(_selector: u16) {}

    fn ring0() -> bool {
        false
    }

    fn store_idt() -> DescriptorTablePointer {
        pointer(&IDT_BASE, &IDT_LIMIT)
    }

    fn store_gdt() -> DescriptorTablePointer {
        pointer(&GDT_BASE, &GDT_LIMIT)
    }

    unsafe fn load_kernel_segments(_code: u16, _data: u16) {}

    const INTERRUPT_RETURN: unsafe extern "C" fn() = traps::iret_entry;

    unsafe fn port_read(port: u16, width: PortWidth) -> u32 {
        // SAFETY: forwarded; Xen emulates the access (set_iopl at init).
        unsafe { Native::port_read(port, width) }
    }

    unsafe fn port_write(port: u16, width: PortWidth, value: u32) {
        // SAFETY: forwarded; Xen emulates the access.
        unsafe { Native::port_write(port, width, value) }
    }

    fn io_delay() {}

    fn current_cpu() -> CpuId {
        CpuId(crate::percpu::current())
    }

    fn possible_cpus() -> CpuMask {
        crate::smp::possible()
    }

    fn start_cpu(cpu: CpuId, _how: &SecondaryStart) -> Result<(), StartCpuError> {
        Err(StartCpuError::NoSuchCpu(cpu))
    }

    fn init_secondary() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gates as the example kernel builds them (and a trap gate with DPL 3).
    #[test]
    fn gates_decode_to_handler_and_flags() {
        let handler: u64 = 0xffff_8123_4567_89ab;
        let gate = |attr: u64| {
            let lo =
                (handler & 0xffff) | (0x08 << 16) | (attr << 40) | ((handler & 0xffff_0000) << 32);
            (lo, handler >> 32)
        };
        let (lo, hi) = gate(0x8e);
        assert_eq!(decode_gate(lo, hi), Some((handler, TI_MASK_EVENTS)));
        let (lo, hi) = gate(0xef);
        assert_eq!(decode_gate(lo, hi), Some((handler, 3)));
        let (lo, hi) = gate(0x0e);
        assert_eq!(decode_gate(lo, hi), None, "not present");
    }

    #[test]
    fn system_descriptors_are_dropped_with_their_upper_half() {
        let code = 0x00af_9a00_0000_ffff;
        let data = 0x00cf_9200_0000_ffff;
        let tss_lo = 0x0000_8900_0000_0067; // S clear, type 9
        let tss_hi = 0x0000_0000_ffff_ffff;
        let mut out = [0xdead; 6];
        filter_gdt(&[0, code, data, tss_lo, tss_hi], &mut out);
        assert_eq!(out[..5], [0, code, data, 0, 0]);
    }
}
