//! CPU operations: identification, control registers, MSRs, descriptor tables,
//! I/O ports.
//!
//! Under a classic Xen PV guest none of these may run as raw instructions
//! (the kernel is in ring 3), which is why they go through the table.

use crate::table::ops;
pub use x86_64::structures::DescriptorTablePointer;

/// What `cpuid` returned for one leaf and subleaf.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CpuidResult {
    /// EAX.
    pub eax: u32,
    /// EBX.
    pub ebx: u32,
    /// ECX.
    pub ecx: u32,
    /// EDX.
    pub edx: u32,
}

/// A platform CPU number: the local APIC ID on bare hardware and KVM, the
/// vCPU id under Xen. This is the number IPIs, TLB flushes and lock kicks
/// take.
#[repr(transparent)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct CpuId(pub u32);

/// Who owns the per-CPU registers a CPU number can be kept in
/// (`IA32_TSC_AUX`, read by `rdtscp`/`rdpid`; and, under Xen PV, the
/// kernel GS base), and so how a backend learns, without a VM exit, which
/// CPU it runs on.
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub enum CpuNumber {
    /// pvops may write them: the kvm and Xen PVH backends tag
    /// `IA32_TSC_AUX` with the CPU number (bit 31 set) where the CPU has
    /// `rdtscp`/`rdpid`; Xen PV points the kernel GS base at its own
    /// per-vCPU record. The kernel must not write them.
    #[default]
    Pvops,
    /// The kernel owns them and pvops never writes either. The function
    /// returns this CPU's platform number ([`CpuId`]: what
    /// [`current_cpu`] returned on it), kept by the kernel where reading
    /// it costs no exit (its own per-CPU area), or `None` before the
    /// kernel has recorded it (then pvops asks the platform, e.g. the APIC
    /// ID). A kernel records `current_cpu()` right after `init` and
    /// `init_secondary` on each CPU. Xen PV needs the GS base and declines.
    Kernel(fn() -> Option<CpuId>),
}

/// The kernel's CPU-number function, as [`record_cpu_number`] stored it
/// (0: none, pvops owns the registers).
static KERNEL_CPU_NUMBER: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

/// Records who owns the CPU-number registers, for the backends; called
/// once at boot with `BootContext::cpu_number` (by `pvops::init` and by
/// the backends' `init`).
pub fn record_cpu_number(owner: CpuNumber) {
    let raw = match owner {
        CpuNumber::Pvops => 0,
        CpuNumber::Kernel(f) => f as usize,
    };
    KERNEL_CPU_NUMBER.store(raw, core::sync::atomic::Ordering::Release);
}

/// Whether the kernel owns the CPU-number registers (pvops must not write
/// `IA32_TSC_AUX` or the kernel GS base).
pub fn kernel_owns_cpu_number() -> bool {
    KERNEL_CPU_NUMBER.load(core::sync::atomic::Ordering::Acquire) != 0
}

/// This CPU's number as the kernel keeps it, when it owns the registers
/// and has recorded it (and it is below [`crate::irq::MAX_CPUS`]; a larger
/// one is reported once and not used).
#[inline]
pub fn kernel_cpu_number() -> Option<CpuId> {
    let raw = KERNEL_CPU_NUMBER.load(core::sync::atomic::Ordering::Acquire);
    if raw == 0 {
        return None;
    }
    // SAFETY: a non-zero value is only ever stored by `record_cpu_number`,
    // from a `fn() -> Option<CpuId>`.
    let f = unsafe { core::mem::transmute::<usize, fn() -> Option<CpuId>>(raw) };
    f().filter(|cpu| {
        let holdable = (cpu.0 as usize) < crate::irq::MAX_CPUS;
        if !holdable {
            out_of_range(*cpu);
        }
        holdable
    })
}

/// A kernel CPU number pvops cannot hold: said once, and the platform is
/// asked instead (`pvops::init` refuses one it sees at boot; this catches
/// one recorded later).
#[cold]
fn out_of_range(cpu: CpuId) {
    static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, core::sync::atomic::Ordering::Relaxed) {
        crate::report::line(
            "pvops: warning: ",
            format_args!(
                "BootContext::cpu_number: the kernel's function says CPU {}, beyond the {} \
                 pvops holds; asking the platform instead",
                cpu.0,
                crate::irq::MAX_CPUS
            ),
            crate::platform::console_write,
        );
    }
}

/// Width of one I/O port access.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortWidth {
    /// `inb`/`outb`.
    Byte = 1,
    /// `inw`/`outw`.
    Word = 2,
    /// `inl`/`outl`.
    Dword = 4,
}

/// How a secondary CPU should start: the backend gets it from reset (or
/// from the hypervisor's idea of a fresh vCPU) into 64-bit mode on the
/// kernel's page tables and stack, then calls `entry(arg)`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct SecondaryStart {
    /// Called on the new CPU in 64-bit mode, interrupts off, with the GDT,
    /// IDT and TSS not yet loaded (the kernel loads its own first thing).
    pub entry: extern "C" fn(arg: u64) -> !,
    /// Passed to `entry`.
    pub arg: u64,
    /// Top of the stack `entry` runs on (16-byte aligned).
    pub stack_top: u64,
    /// CR3 the new CPU runs with (any physical address; it needs no
    /// identity map): it must map `entry` and the stack.
    pub cr3: u64,
    /// Physical address of [`TRAMPOLINE_SIZE`] free bytes, page-aligned,
    /// below 1 MiB, that the backend may overwrite with start-up code and
    /// temporary page tables (native/KVM start CPUs in real mode there;
    /// it is written through the direct map at `BootContext::phys_offset`).
    /// It must stay untouched until `entry` runs.
    pub trampoline: u64,
}

/// How much memory below 1 MiB [`SecondaryStart::trampoline`] names: the
/// start-up code and a temporary root table with an identity map of the
/// code (a higher-half kernel has none), for 4- or 5-level paging.
pub const TRAMPOLINE_SIZE: usize = 5 * 4096;

/// Why a secondary CPU did not start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartCpuError {
    /// The trampoline page is not a page-aligned address below 1 MiB.
    BadTrampoline(u64),
    /// The CPU did not reach the kernel's entry within the backend's time
    /// bound.
    Timeout(CpuId),
    /// The platform refused (hypervisor error code attached).
    Refused(CpuId, i64),
    /// The CPU is not one the platform has.
    NoSuchCpu(CpuId),
}

impl core::fmt::Display for StartCpuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartCpuError::BadTrampoline(a) => {
                write!(f, "trampoline {a:#x} is not a page below 1 MiB")
            }
            StartCpuError::Timeout(c) => write!(f, "cpu {} did not start in time", c.0),
            StartCpuError::Refused(c, e) => write!(f, "cpu {} start refused (error {e})", c.0),
            StartCpuError::NoSuchCpu(c) => write!(f, "cpu {} does not exist", c.0),
        }
    }
}

impl core::error::Error for StartCpuError {}

/// The CPU operations a backend provides.
///
/// Methods take no `self`: a backend is a set of functions over global
/// state it set up before [`crate::table::install`]. A kernel that fixes its
/// backend at build time calls them directly (`Native::read_cr0()`), which
/// costs exactly the inlined instruction.
pub trait CpuOps {
    /// `cpuid` for `leaf`/`subleaf`.
    fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult;
    /// Reads CR0.
    fn read_cr0() -> u64;
    /// Writes CR0.
    ///
    /// # Safety
    /// The new value must keep the machine in a state the kernel can run in
    /// (paging and protection stay on, caches as the kernel expects).
    unsafe fn write_cr0(value: u64);
    /// Reads CR4.
    fn read_cr4() -> u64;
    /// Writes CR4.
    ///
    /// # Safety
    /// As for [`CpuOps::write_cr0`]: the kernel must be able to run with it.
    unsafe fn write_cr4(value: u64);
    /// Reads a model-specific register.
    ///
    /// # Safety
    /// The MSR must exist on this CPU; reading one that does not raises #GP.
    unsafe fn read_msr(msr: u32) -> u64;
    /// Writes a model-specific register.
    ///
    /// # Safety
    /// The MSR must exist and accept the value, and the write must not break
    /// an invariant the kernel relies on (EFER, segment bases, ...).
    unsafe fn write_msr(msr: u32, value: u64);
    /// Loads the GDT register.
    ///
    /// # Safety
    /// The table must stay valid and mapped for as long as it is loaded, and
    /// the selectors currently in use must stay valid in it.
    unsafe fn load_gdt(gdt: &DescriptorTablePointer);
    /// Loads the IDT register.
    ///
    /// # Safety
    /// The table and every handler it names must stay valid while loaded.
    unsafe fn load_idt(idt: &DescriptorTablePointer);
    /// Loads the task register.
    ///
    /// # Safety
    /// `selector` must name an available 64-bit TSS in the current GDT.
    unsafe fn load_tr(selector: u16);
    /// Makes `rsp` the stack this CPU switches to when an interrupt,
    /// exception or system call enters the kernel from user mode (Linux's
    /// `load_sp0`). The default writes RSP0 of the TSS in the task
    /// register (found with `str` and `sgdt`; nothing if none is loaded);
    /// under Xen PV it is `HYPERVISOR_stack_switch`.
    ///
    /// # Safety
    /// `rsp` must be the top of a stack that stays valid while it is the
    /// kernel stack.
    unsafe fn set_kernel_stack(rsp: u64) {
        // SAFETY: forwarded to the caller.
        unsafe { native_set_kernel_stack(rsp) }
    }
    /// Whether the kernel runs in ring 0, where privileged instructions
    /// execute directly (false under Xen classic PV). For code that
    /// measures or tests raw instructions beside the ops; kernel logic
    /// should only need the ops.
    fn ring0() -> bool {
        true
    }
    /// The IDT last loaded on this CPU, as the kernel gave it to
    /// [`CpuOps::load_idt`]. The default reads IDTR (`sidt`); where Xen
    /// keeps the real table (classic PV), the backend remembers the
    /// kernel's.
    fn store_idt() -> DescriptorTablePointer {
        x86_64::instructions::tables::sidt()
    }
    /// The GDT last loaded on this CPU ([`CpuOps::store_idt`]'s twin;
    /// default `sgdt`).
    fn store_gdt() -> DescriptorTablePointer {
        x86_64::instructions::tables::sgdt()
    }
    /// Makes `code` and `data` (selectors of the GDT just loaded) the
    /// segments the kernel runs on: CS, and DS, ES and SS.
    ///
    /// The default reloads the four registers (a far return for CS).
    /// Where the kernel does not run in ring 0 (Xen classic PV), the
    /// backend keeps the platform's own kernel selectors instead, so a
    /// kernel never hard-codes a selector's privilege level.
    ///
    /// # Safety
    /// Both must name present descriptors of the current GDT, a 64-bit code
    /// segment and a writable data segment.
    unsafe fn load_kernel_segments(code: u16, data: u16) {
        // SAFETY: forwarded to the caller.
        unsafe { native_load_segments(code, data) }
    }
    /// Where the kernel's interrupt and exception stubs go to return: they
    /// jump (not call) to [`interrupt_return`] with the stack exactly as
    /// the CPU left it on entry, error code popped (`rip, cs, rflags, rsp,
    /// ss`, lowest first) and every register restored; the entry named
    /// here then returns from the interrupt. The default is `iretq`.
    const INTERRUPT_RETURN: unsafe extern "C" fn() = native_interrupt_return;
    /// Reads an I/O port.
    ///
    /// # Safety
    /// Reading a device register can change device state.
    unsafe fn port_read(port: u16, width: PortWidth) -> u32;
    /// Writes an I/O port.
    ///
    /// # Safety
    /// The write must be valid for the device behind the port.
    unsafe fn port_write(port: u16, width: PortWidth, value: u32);
    /// Waits about a microsecond, as legacy devices want between accesses.
    fn io_delay();
    /// The platform number of the CPU this runs on.
    fn current_cpu() -> CpuId;
    /// The CPUs the platform has (started or not), by platform number.
    fn possible_cpus() -> crate::irq::CpuMask;
    /// Starts secondary CPU `cpu` as `how` says; returns once it runs the
    /// backend's start-up code (the kernel waits for its own entry itself).
    fn start_cpu(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError>;
    /// Sets up the backend's per-CPU state on a secondary CPU (local APIC,
    /// per-CPU shared pages, ...). The kernel calls it first thing on every
    /// CPU but the boot CPU, before it enables interrupts there, whoever
    /// started the CPU: [`CpuOps::start_cpu`], or a loader that started it
    /// before the kernel ran (an MP protocol such as Limine's). It must
    /// therefore rely on nothing `start_cpu` left behind: the CPU finds
    /// out who it is by itself.
    fn init_secondary();
}

/// The CPU group of the ops table.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct CpuOpsTable {
    pub cpuid: fn(u32, u32) -> CpuidResult,
    pub read_cr0: fn() -> u64,
    pub write_cr0: unsafe fn(u64),
    pub read_cr4: fn() -> u64,
    pub write_cr4: unsafe fn(u64),
    pub read_msr: unsafe fn(u32) -> u64,
    pub write_msr: unsafe fn(u32, u64),
    pub load_gdt: unsafe fn(&DescriptorTablePointer),
    pub load_idt: unsafe fn(&DescriptorTablePointer),
    pub load_tr: unsafe fn(u16),
    pub set_kernel_stack: unsafe fn(u64),
    pub ring0: fn() -> bool,
    pub store_idt: fn() -> DescriptorTablePointer,
    pub store_gdt: fn() -> DescriptorTablePointer,
    pub load_kernel_segments: unsafe fn(u16, u16),
    pub interrupt_return: unsafe extern "C" fn(),
    pub port_read: unsafe fn(u16, PortWidth) -> u32,
    pub port_write: unsafe fn(u16, PortWidth, u32),
    pub io_delay: fn(),
    pub current_cpu: fn() -> CpuId,
    pub possible_cpus: fn() -> crate::irq::CpuMask,
    pub start_cpu: fn(CpuId, &SecondaryStart) -> Result<(), StartCpuError>,
    pub init_secondary: fn(),
}

impl CpuOpsTable {
    /// The table that forwards every op to `T`.
    pub const fn of<T: CpuOps>() -> Self {
        Self {
            cpuid: T::cpuid,
            read_cr0: T::read_cr0,
            write_cr0: T::write_cr0,
            read_cr4: T::read_cr4,
            write_cr4: T::write_cr4,
            read_msr: T::read_msr,
            write_msr: T::write_msr,
            load_gdt: T::load_gdt,
            load_idt: T::load_idt,
            load_tr: T::load_tr,
            set_kernel_stack: T::set_kernel_stack,
            ring0: T::ring0,
            store_idt: T::store_idt,
            store_gdt: T::store_gdt,
            load_kernel_segments: T::load_kernel_segments,
            interrupt_return: T::INTERRUPT_RETURN,
            port_read: T::port_read,
            port_write: T::port_write,
            io_delay: T::io_delay,
            current_cpu: T::current_cpu,
            possible_cpus: T::possible_cpus,
            start_cpu: T::start_cpu,
            init_secondary: T::init_secondary,
        }
    }
}

impl core::fmt::Debug for CpuOpsTable {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CpuOpsTable { .. }")
    }
}

/// `cpuid` through the installed backend.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    (ops().cpu.cpuid)(leaf, subleaf)
}

/// Reads CR0.
#[inline]
pub fn read_cr0() -> u64 {
    (ops().cpu.read_cr0)()
}

/// Writes CR0.
///
/// # Safety
/// See [`CpuOps::write_cr0`].
#[inline]
pub unsafe fn write_cr0(value: u64) {
    // SAFETY: the caller upholds `CpuOps::write_cr0`'s contract.
    unsafe { (ops().cpu.write_cr0)(value) }
}

/// Reads CR4.
#[inline]
pub fn read_cr4() -> u64 {
    (ops().cpu.read_cr4)()
}

/// Writes CR4.
///
/// # Safety
/// See [`CpuOps::write_cr4`].
#[inline]
pub unsafe fn write_cr4(value: u64) {
    // SAFETY: the caller upholds `CpuOps::write_cr4`'s contract.
    unsafe { (ops().cpu.write_cr4)(value) }
}

/// Reads an MSR.
///
/// # Safety
/// See [`CpuOps::read_msr`].
#[inline]
pub unsafe fn read_msr(msr: u32) -> u64 {
    // SAFETY: the caller upholds `CpuOps::read_msr`'s contract.
    unsafe { (ops().cpu.read_msr)(msr) }
}

/// Writes an MSR.
///
/// # Safety
/// See [`CpuOps::write_msr`].
#[inline]
pub unsafe fn write_msr(msr: u32, value: u64) {
    // SAFETY: the caller upholds `CpuOps::write_msr`'s contract.
    unsafe { (ops().cpu.write_msr)(msr, value) }
}

/// Loads the GDT register.
///
/// # Safety
/// See [`CpuOps::load_gdt`].
#[inline]
pub unsafe fn load_gdt(gdt: &DescriptorTablePointer) {
    // SAFETY: the caller upholds `CpuOps::load_gdt`'s contract.
    unsafe { (ops().cpu.load_gdt)(gdt) }
}

/// Loads the IDT register.
///
/// # Safety
/// See [`CpuOps::load_idt`].
#[inline]
pub unsafe fn load_idt(idt: &DescriptorTablePointer) {
    // SAFETY: the caller upholds `CpuOps::load_idt`'s contract.
    unsafe { (ops().cpu.load_idt)(idt) }
}

/// Loads the task register.
///
/// # Safety
/// See [`CpuOps::load_tr`].
#[inline]
pub unsafe fn load_tr(selector: u16) {
    // SAFETY: the caller upholds `CpuOps::load_tr`'s contract.
    unsafe { (ops().cpu.load_tr)(selector) }
}

/// Makes `rsp` the kernel stack for entries from user mode (see
/// [`CpuOps::set_kernel_stack`]).
///
/// # Safety
/// See [`CpuOps::set_kernel_stack`].
#[inline]
pub unsafe fn set_kernel_stack(rsp: u64) {
    // SAFETY: the caller upholds `CpuOps::set_kernel_stack`'s contract.
    unsafe { (ops().cpu.set_kernel_stack)(rsp) }
}

/// Writes RSP0 of the TSS the task register names, if any.
///
/// # Safety
/// As [`CpuOps::set_kernel_stack`]; ring 0 with the loaded GDT and TSS
/// mapped writable where their descriptors say.
pub unsafe fn native_set_kernel_stack(rsp: u64) {
    let tr: u16;
    // SAFETY: `str` only reads the task register.
    unsafe { core::arch::asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    if tr & !7 == 0 {
        return;
    }
    let gdt = x86_64::instructions::tables::sgdt();
    let at = gdt.base.as_u64() + u64::from(tr & !7);
    // SAFETY: TR names a 16-byte TSS descriptor inside the loaded GDT
    // (`ltr` checked it); the caller vouches the GDT is mapped.
    let (lo, hi) = unsafe {
        (
            core::ptr::read_unaligned(at as *const u64),
            core::ptr::read_unaligned((at + 8) as *const u64),
        )
    };
    let base = ((lo >> 16) & 0xff_ffff) | (((lo >> 56) & 0xff) << 24) | ((hi & 0xffff_ffff) << 32);
    // SAFETY: RSP0 is the 8 bytes at offset 4 of the 64-bit TSS at `base`,
    // which the caller vouches is mapped writable; unaligned by layout.
    unsafe { core::ptr::write_unaligned((base + 4) as *mut u64, rsp) };
}

/// Whether the kernel runs in ring 0 (see [`CpuOps::ring0`]).
#[inline]
pub fn ring0() -> bool {
    (ops().cpu.ring0)()
}

/// The IDT last loaded on this CPU (see [`CpuOps::store_idt`]).
#[inline]
pub fn store_idt() -> DescriptorTablePointer {
    (ops().cpu.store_idt)()
}

/// The GDT last loaded on this CPU (see [`CpuOps::store_gdt`]).
#[inline]
pub fn store_gdt() -> DescriptorTablePointer {
    (ops().cpu.store_gdt)()
}

/// Makes `code` and `data` the kernel's segments (CS; DS, ES, SS).
///
/// # Safety
/// See [`CpuOps::load_kernel_segments`].
#[inline]
pub unsafe fn load_kernel_segments(code: u16, data: u16) {
    // SAFETY: the caller upholds `CpuOps::load_kernel_segments`' contract.
    unsafe { (ops().cpu.load_kernel_segments)(code, data) }
}

/// Reloads CS (by a far return) and DS, ES and SS.
///
/// # Safety
/// As [`CpuOps::load_kernel_segments`]; ring 0 (or a ring whose privilege
/// level the selectors' RPL and DPL match).
pub unsafe fn native_load_segments(code: u16, data: u16) {
    // SAFETY: the caller vouches for both selectors; the far return pops
    // exactly what was pushed and lands on the next instruction.
    unsafe {
        core::arch::asm!(
            "push {code}",
            "lea 2f(%rip), {tmp}",
            "push {tmp}",
            "lretq",
            "2:",
            "mov {data:e}, %ds",
            "mov {data:e}, %es",
            "mov {data:e}, %ss",
            code = in(reg) u64::from(code),
            data = in(reg) u32::from(data),
            tmp = lateout(reg) _,
            options(att_syntax, preserves_flags),
        )
    }
}

core::arch::global_asm!(
    r#"
    .section .text.pvops_iret, "ax"
    .global pvops_interrupt_return
    .global pvops_native_interrupt_return
    pvops_interrupt_return:
        jmp *pvops_interrupt_return_target(%rip)
    pvops_native_interrupt_return:
        iretq

    .section .data.pvops_iret, "aw"
    .balign 8
    .global pvops_interrupt_return_target
    pvops_interrupt_return_target:
        .quad pvops_native_interrupt_return
    "#,
    options(att_syntax)
);

extern "C" {
    /// The kernel's interrupt stubs jump here to return (see
    /// [`CpuOps::INTERRUPT_RETURN`]): it goes on to the installed
    /// backend's return, `iretq` before install.
    ///
    /// Assembly symbol: `pvops_interrupt_return`. Never call it from Rust.
    #[link_name = "pvops_interrupt_return"]
    pub fn interrupt_return();
    /// `iretq`: the default [`CpuOps::INTERRUPT_RETURN`].
    #[link_name = "pvops_native_interrupt_return"]
    pub fn native_interrupt_return();
    #[link_name = "pvops_interrupt_return_target"]
    static mut INTERRUPT_RETURN_TARGET: u64;
}

/// Points [`interrupt_return`] at the installed table's entry. Called by
/// [`crate::table::install`] once.
pub(crate) fn bind_interrupt_return(entry: unsafe extern "C" fn()) {
    // SAFETY: one aligned 8-byte store by the single installer, before any
    // other CPU runs; readers are interrupt exits on this CPU, which see
    // the old or the new entry, both valid returns.
    unsafe {
        core::ptr::write_volatile(
            core::ptr::addr_of_mut!(INTERRUPT_RETURN_TARGET),
            entry as usize as u64,
        )
    };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// See [`CpuOps::port_read`].
#[inline]
pub unsafe fn inb(port: u16) -> u8 {
    // SAFETY: the caller upholds `CpuOps::port_read`'s contract.
    unsafe { (ops().cpu.port_read)(port, PortWidth::Byte) as u8 }
}

/// Reads a 16-bit word from an I/O port.
///
/// # Safety
/// See [`CpuOps::port_read`].
#[inline]
pub unsafe fn inw(port: u16) -> u16 {
    // SAFETY: the caller upholds `CpuOps::port_read`'s contract.
    unsafe { (ops().cpu.port_read)(port, PortWidth::Word) as u16 }
}

/// Reads a 32-bit word from an I/O port.
///
/// # Safety
/// See [`CpuOps::port_read`].
#[inline]
pub unsafe fn inl(port: u16) -> u32 {
    // SAFETY: the caller upholds `CpuOps::port_read`'s contract.
    unsafe { (ops().cpu.port_read)(port, PortWidth::Dword) }
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// See [`CpuOps::port_write`].
#[inline]
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller upholds `CpuOps::port_write`'s contract.
    unsafe { (ops().cpu.port_write)(port, PortWidth::Byte, value.into()) }
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// See [`CpuOps::port_write`].
#[inline]
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller upholds `CpuOps::port_write`'s contract.
    unsafe { (ops().cpu.port_write)(port, PortWidth::Word, value.into()) }
}

/// Writes a 32-bit word to an I/O port.
///
/// # Safety
/// See [`CpuOps::port_write`].
#[inline]
pub unsafe fn outl(port: u16, value: u32) {
    // SAFETY: the caller upholds `CpuOps::port_write`'s contract.
    unsafe { (ops().cpu.port_write)(port, PortWidth::Dword, value) }
}

/// Waits about a microsecond for a legacy device.
#[inline]
pub fn io_delay() {
    (ops().cpu.io_delay)()
}

/// The platform number of the CPU this runs on.
#[inline]
pub fn current_cpu() -> CpuId {
    (ops().cpu.current_cpu)()
}

/// The CPUs the platform has.
#[inline]
pub fn possible_cpus() -> crate::irq::CpuMask {
    (ops().cpu.possible_cpus)()
}

/// Starts secondary CPU `cpu`.
#[inline]
pub fn start_cpu(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
    (ops().cpu.start_cpu)(cpu, how)
}

/// Sets up the backend's per-CPU state; call first thing on each
/// secondary CPU, whether [`start_cpu`] or a loader started it (on the
/// kernel's page tables, interrupts off; see [`CpuOps::init_secondary`]).
#[inline]
pub fn init_secondary() {
    (ops().cpu.init_secondary)()
}
