//! CPU ops of a classic PV guest, which runs in ring 3:
//!
//! | op | how |
//! |---|---|
//! | `cpuid` | Xen's forced-emulation prefix (`ud2; "xen"; cpuid`): Xen's view of the CPU for this guest, its own leaves included |
//! | CR0 | a copy (Xen owns CR0), with TS per vCPU; TS through `fpu_taskswitch` |
//! | CR4, MSRs | the instructions, which fault and Xen emulates for PV guests (there is no hypercall for them); `IA32_GS_BASE` is refused: it names the vCPU ([`crate::percpu`]) |
//! | GDT | copied into a page of this backend, system descriptors (a TSS) dropped, page write-protected, `set_gdt` |
//! | IDT | turned into Xen's trap table (`set_trap_table`) over the entries of [`super::traps`] |
//! | secondary CPUs | [`super::smp`]: `VCPUOP_initialise` with a PV context, `VCPUOP_up` |
//! | task register, kernel segments | nothing: Xen's flat ring-3 selectors stay, and a PV kernel has no TSS |
//! | kernel stack for entries from user mode | `stack_switch` (what a TSS's RSP0 is natively) |
//! | I/O ports | the instructions, which Xen emulates once `PHYSDEVOP_set_iopl` allowed them ([`super::setup`]) |
//! | interrupt return | [`super::traps`]' `pvops_xen_pv_iret` |
//!
//! ## Several vCPUs
//! The GDT page, the trap table and the handler table
//! ([`super::traps::HANDLERS`]) are one for all vCPUs: the kernel loads
//! the same GDT and IDT on each (as the example kernel does); `load_gdt`
//! and `load_idt` on each vCPU give Xen that vCPU's copy (Xen keeps a
//! GDT and trap table per vCPU, and lets one GDT frame serve several).
//! A different GDT than the first is refused with a warning (the
//! comparison allows for the DPLs Xen rewrites in the page it holds); a
//! different IDT replaces the handlers of every vCPU.

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

/// vCPUs whose I/O instructions Xen emulates (`PHYSDEVOP_set_iopl`
/// accepted), one bit per vCPU id below 64.
static IO_ALLOWED: AtomicU64 = AtomicU64::new(0);
static WARNED_IO: AtomicBool = AtomicBool::new(false);

/// Asks Xen to emulate this vCPU's I/O instructions (IOPL 1 for the
/// kernel). Without it they would fault; the port ops then refuse
/// instead (reads give all ones, writes are dropped, one warning).
pub fn enable_io(vcpu: u32) -> Result<(), crate::XenError> {
    XEN.set_iopl(1)?;
    if vcpu < 64 {
        IO_ALLOWED.fetch_or(1 << vcpu, Ordering::Relaxed);
    }
    Ok(())
}

fn io_allowed() -> bool {
    let me = crate::percpu::current();
    me < 64 && IO_ALLOWED.load(Ordering::Relaxed) & (1 << me) != 0
}

fn refuse_io(port: u16) {
    crate::warn::warn_once(
        &WARNED_IO,
        format_args!(
            "xen-pv: I/O port {port:#x} on cpu {}: Xen did not allow I/O (set_iopl): refused (reads give all ones)",
            crate::percpu::current()
        ),
    );
}

fn all_ones(width: PortWidth) -> u32 {
    match width {
        PortWidth::Byte => 0xff,
        PortWidth::Word => 0xffff,
        PortWidth::Dword => 0xffff_ffff,
    }
}

const CR0_TS: u64 = 1 << 3;
/// CR0 as Xen gives it, without TS.
static CR0: AtomicU64 = AtomicU64::new(0);
/// CR0.TS of each vCPU (bit = vCPU id); every vCPU starts with it clear.
static CR0_TS_SET: AtomicU64 = AtomicU64::new(0);

/// `IA32_GS_BASE`, which this backend owns under PV.
const MSR_GS_BASE: u32 = 0xc000_0101;
static WARNED_GS_BASE: AtomicBool = AtomicBool::new(false);

/// Reads CR0 once (Xen emulates the instruction) to seed the copy.
pub fn init_cr0() {
    let cr0 = Native::read_cr0();
    CR0.store(cr0 & !CR0_TS, Ordering::Relaxed);
    if cr0 & CR0_TS != 0 {
        CR0_TS_SET.fetch_or(ts_bit(), Ordering::Relaxed);
    }
}

/// This vCPU's bit in [`CR0_TS_SET`] (0 beyond 64 vCPUs).
fn ts_bit() -> u64 {
    crate::percpu::slot(crate::percpu::current()).map_or(0, |i| 1 << i)
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

/// Descriptor bits Xen or the CPU may change in a GDT page Xen holds:
/// the DPL (Xen raises a code or data segment's to the guest kernel's
/// ring, 3, when it validates the page) and the accessed bit.
const GDT_REWRITTEN: u64 = (3 << 45) | (1 << 40);

/// Whether the GDT page's contents `have` are the kernel's `want`, but
/// for what Xen and the CPU rewrite ([`GDT_REWRITTEN`]).
fn same_gdt(have: &[u64], want: &[u64]) -> bool {
    have.len() == want.len()
        && have
            .iter()
            .zip(want)
            .all(|(h, w)| (h ^ w) & !GDT_REWRITTEN == 0)
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

/// The PV `load_gdt`: copies the table (system descriptors dropped) into
/// the backend's GDT page, write-protects it and gives it to Xen.
///
/// # Safety
/// `ptr` must describe a live GDT of `limit + 1` readable bytes
/// ([`CpuOps::load_gdt`]'s contract).
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
        if !same_gdt(&have[..n], &want[..n]) {
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
// SAFETY: reached only with TRAP_TABLE_LOCK held (`with_trap_table`).
unsafe impl Sync for TrapTable {}
static TRAP_TABLE_LOCK: AtomicBool = AtomicBool::new(false);

/// Runs `f` on the trap table with its lock held (vCPUs may load their
/// IDT, or one start another, at the same time).
fn with_trap_table<R>(f: impl FnOnce(&mut [TrapInfo; 257]) -> R) -> R {
    while TRAP_TABLE_LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        core::hint::spin_loop();
    }
    // SAFETY: the lock is held: nothing else reaches the table meanwhile.
    let r = f(unsafe { &mut *TRAP_TABLE.0.get() });
    TRAP_TABLE_LOCK.store(false, Ordering::Release);
    r
}

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

/// The trap table the kernel last loaded, as a `vcpu_guest_context`
/// holds it (indexed by vector; vectors without a handler stay zero).
pub fn trap_context(out: &mut [TrapInfo; 256]) {
    with_trap_table(|table| {
        for t in table.iter().take_while(|t| t.address != 0) {
            out[usize::from(t.vector)] = *t;
        }
    });
}

/// The PV `load_idt`: records the gates' handlers and gives Xen a trap
/// table over this backend's entries.
///
/// # Safety
/// `ptr` must describe a live IDT of `limit + 1` readable bytes whose
/// present gates name handlers that stay valid while it is loaded
/// ([`CpuOps::load_idt`]'s contract).
unsafe fn load_idt(ptr: &DescriptorTablePointer) {
    IDT_BASE.store(ptr.base.as_u64(), Ordering::Relaxed);
    IDT_LIMIT.store(u64::from(ptr.limit), Ordering::Relaxed);
    let n = ((usize::from(ptr.limit) + 1) / 16).min(256);
    let gates = ptr.base.as_u64() as *const [u64; 2];
    with_trap_table(|table| {
        // SAFETY: forwarded from load_idt's caller.
        unsafe { fill_trap_table(table, gates, n) }
    });
}

/// Fills `table` from the `n` gates at `gates` and gives it to Xen.
///
/// # Safety
/// `gates` must point at `n` live IDT gates.
unsafe fn fill_trap_table(table: &mut [TrapInfo; 257], gates: *const [u64; 2], n: usize) {
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
        let ts = CR0_TS_SET.load(Ordering::Relaxed) & ts_bit() != 0;
        CR0.load(Ordering::Relaxed) | if ts { CR0_TS } else { 0 }
    }

    unsafe fn write_cr0(value: u64) {
        let want = value & CR0_TS != 0;
        let bit = ts_bit();
        if (CR0_TS_SET.load(Ordering::Relaxed) & bit != 0) != want {
            if let Err(e) = XEN.fpu_taskswitch(want) {
                warn(format_args!("xen-pv: fpu_taskswitch: {e}"));
                return;
            }
            // Only TS is the guest's to change; the copy keeps Xen's others.
            if want {
                CR0_TS_SET.fetch_or(bit, Ordering::Relaxed);
            } else {
                CR0_TS_SET.fetch_and(!bit, Ordering::Relaxed);
            }
        }
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
        if msr == MSR_GS_BASE && crate::percpu::uses_gs() {
            crate::warn::warn_once(
                &WARNED_GS_BASE,
                format_args!(
                    "xen-pv: write of IA32_GS_BASE ({value:#x}) ignored: the kernel GS base names the vCPU"
                ),
            );
            return;
        }
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

    unsafe fn set_kernel_stack(rsp: u64) {
        if let Err(e) = XEN.stack_switch(crate::abi::pv::FLAT_KERNEL_SS, rsp) {
            warn(format_args!(
                "xen-pv: stack_switch to {rsp:#x} refused: {e}"
            ));
        }
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
        if !io_allowed() {
            refuse_io(port);
            return all_ones(width);
        }
        // SAFETY: forwarded; Xen emulates the access (set_iopl at init).
        unsafe { Native::port_read(port, width) }
    }

    unsafe fn port_write(port: u16, width: PortWidth, value: u32) {
        if !io_allowed() {
            refuse_io(port);
            return;
        }
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

    fn start_cpu(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
        super::smp::start(cpu, how)
    }

    fn init_secondary() {
        super::smp::init_secondary()
    }
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

    #[test]
    fn a_gdt_xen_validated_is_the_same_gdt() {
        let code = 0x00af_9a00_0000_ffff;
        let data = 0x00cf_9200_0000_ffff;
        // As Xen leaves them: DPL 3; the CPU may have set "accessed".
        let code_xen = code | (3 << 45) | (1 << 40);
        let data_xen = data | (3 << 45);
        assert!(same_gdt(&[0, code_xen, data_xen], &[0, code, data]));
        assert!(!same_gdt(&[0, code_xen, data_xen], &[0, data, code]));
        assert!(!same_gdt(&[0, code_xen], &[0, code, data]));
        let long_mode_cleared = code & !(1 << 53);
        assert!(!same_gdt(&[0, code_xen], &[0, long_mode_cleared]));
    }
}
