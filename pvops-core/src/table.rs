//! The ops table: one `#[repr(C)]` record of function pointers per op
//! group, installed once at boot and read-only afterwards.
//!
//! Before [`install`] the active table is [`PvOps::NOT_INSTALLED`]: every op
//! panics with a message naming the op, except
//! [`crate::platform::console_write`], which drops its bytes so that a panic
//! handler can always call it, and [`crate::platform::identity`], which
//! reports `backend=none`. A panic handler that wants to power off should
//! check [`is_installed`] first.

use crate::cpu::{
    CpuId, CpuOps, CpuOpsTable, CpuidResult, DescriptorTablePointer, PortWidth, SecondaryStart,
    StartCpuError,
};
use crate::irq::{CpuMask, IpiTarget, IrqFlags, IrqOps, IrqOpsTable};
use crate::lock::{LockOps, LockOpsTable};
use crate::mmu::{MmuOps, MmuOpsTable, PtLevel, TlbRange};
use crate::once::{WriteOnce, WriteOnceError};
use crate::patch::{InlineOps, Op, PatchTable};
use crate::platform::{
    ConsoleOps, CounterOps, Features, Identity, MemoryMapOps, Platform, PlatformOpsTable,
    ShutdownOps,
};
use crate::time::{TimeOps, TimeOpsTable, WallClock};
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use x86_64::VirtAddr;

/// Every op group a backend implements, for code that is generic over one
/// backend fixed at build time (static dispatch: `B::disable()` inlines to
/// the backend's own code, no table involved).
pub trait Backend:
    CpuOps + IrqOps + MmuOps + TimeOps + LockOps + ConsoleOps + ShutdownOps + MemoryMapOps + CounterOps
{
}

impl<T> Backend for T where
    T: CpuOps
        + IrqOps
        + MmuOps
        + TimeOps
        + LockOps
        + ConsoleOps
        + ShutdownOps
        + MemoryMapOps
        + CounterOps
{
}

/// The ops table.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct PvOps {
    /// Who provides these ops.
    pub identity: Identity,
    /// CPU ops.
    pub cpu: CpuOpsTable,
    /// Interrupt ops.
    pub irq: IrqOpsTable,
    /// MMU ops.
    pub mmu: MmuOpsTable,
    /// Time ops.
    pub time: TimeOpsTable,
    /// Lock ops.
    pub lock: LockOpsTable,
    /// Console and shutdown.
    pub platform: PlatformOpsTable,
    /// What call-site patching needs to know about the patchable entries
    /// above (see [`crate::patch`]); kept right by [`PvOps::of`] and
    /// [`PvOps::of_inline`], and by replacing entries as usual.
    pub patch: PatchTable,
}

impl PvOps {
    /// The table that forwards every group to `B`. Backends with per-feature
    /// choices start from it and replace single entries.
    ///
    /// Call sites of patchable ops are later patched into direct calls to
    /// `B`'s functions (as long as their entries are not replaced).
    pub const fn of<B: Backend>(identity: Identity) -> Self {
        let mut t = Self {
            identity,
            cpu: CpuOpsTable::of::<B>(),
            irq: IrqOpsTable::of::<B>(),
            mmu: MmuOpsTable::of::<B>(),
            time: TimeOpsTable::of::<B>(),
            lock: LockOpsTable::of::<B>(),
            platform: PlatformOpsTable::of::<B>(),
            patch: PatchTable::UNBOUND,
        };
        // Copies the pointers just stored, so untouched entries match.
        t.patch = PatchTable::of::<B>(&t);
        t
    }

    /// [`PvOps::of`], plus `B`'s inline bytes for call sites
    /// ([`crate::patch::InlineOps`]): a site of an op whose entry is still
    /// `B`'s is patched into those bytes. Replacing an entry afterwards
    /// drops that op's bytes (see [`crate::patch`]).
    pub const fn of_inline<B: Backend + InlineOps>(identity: Identity) -> Self {
        let mut t = Self::of::<B>(identity);
        t.patch = t.patch.with_inline(&B::INLINE);
        t
    }

    /// Replaces `time.sched_clock` with `clock` and binds its call sites
    /// to `c_entry`, so that [`crate::patch::apply`] makes each a direct
    /// call to it (a replaced entry otherwise goes through the table thunk,
    /// an indirect call, as Linux's paravirt sites never do).
    ///
    /// # Safety
    /// `c_entry` must return what `clock` returns (it is `clock` behind the
    /// C ABI, which `sched_clock`'s sites use).
    pub const unsafe fn with_sched_clock(
        mut self,
        clock: fn() -> u64,
        c_entry: extern "C" fn() -> u64,
    ) -> Self {
        self.time.sched_clock = clock;
        self.patch = self
            .patch
            .rebind(Op::SchedClock, clock as *const (), c_entry as *const ());
        self
    }

    /// Makes `entry` what `op`'s call sites call (patched into a direct
    /// call, or through the slot), instead of the register-saving stub in
    /// front of the table's function: for a backend with an assembly
    /// version of a hot op that needs no stub (Linux's `PV_CALLEE_SAVE`
    /// functions). The table entry itself stays, for table calls.
    ///
    /// # Safety
    /// `entry` must do what the table's function for `op` does, for every
    /// argument the op allows, with the sites' convention: arguments in
    /// `rdi`, `rsi`, `rdx`, the result in `rax`, and nothing changed but
    /// `rax`, the arithmetic flags and vector registers (see
    /// [`crate::patch::InlineOps`]); it is called, so it returns with `ret`.
    /// Not for [`crate::patch::Op::SchedClock`], whose sites use the plain
    /// C ABI.
    pub const unsafe fn with_direct_call(mut self, op: Op, entry: unsafe extern "C" fn()) -> Self {
        self.patch = self.patch.with_call(op, entry);
        self
    }

    /// The table in force before [`install`].
    pub const NOT_INSTALLED: PvOps = PvOps::of::<NotInstalled>(Identity {
        platform: Platform::Native,
        backend: "none",
        features: Features::new(),
        hypervisor: None,
    });
}

/// Why [`install`] refused a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallError {
    /// A table is already installed; it stays in force.
    AlreadyInstalled {
        /// The installed backend's name.
        backend: &'static str,
    },
    /// Another CPU is installing a table right now.
    InstallInProgress,
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::AlreadyInstalled { backend } => {
                write!(f, "pvops ops table already installed (backend {backend})")
            }
            InstallError::InstallInProgress => {
                f.write_str("pvops ops table is being installed by another CPU")
            }
        }
    }
}

impl core::error::Error for InstallError {}

/// The installed table, written once by [`install`].
static TABLE: WriteOnce<PvOps> = WriteOnce::new();
/// Set once [`install`] has also bound the slots: the table is in force.
static INSTALLED: AtomicBool = AtomicBool::new(false);
static ACTIVE: AtomicPtr<PvOps> =
    AtomicPtr::new(&PvOps::NOT_INSTALLED as *const PvOps as *mut PvOps);

/// Installs `table` as the ops every wrapper calls from now on.
///
/// Call it once, on the boot CPU, before starting other CPUs. A second call
/// is refused and changes nothing.
///
/// It also points the call-site slots at the new table's functions (no code
/// is written: [`crate::patch::apply`] does that, when the kernel asks).
pub fn install(table: PvOps) -> Result<&'static PvOps, InstallError> {
    let installed = TABLE.set(table).map_err(|e| match e {
        WriteOnceError::Full if INSTALLED.load(Ordering::Acquire) => {
            InstallError::AlreadyInstalled {
                backend: ops().identity.backend,
            }
        }
        _ => InstallError::InstallInProgress,
    })?;
    ACTIVE.store(installed as *const PvOps as *mut PvOps, Ordering::Release);
    // After ACTIVE: a slot may point at a thunk that reads the table.
    crate::patch::bind_slots(installed);
    crate::cpu::bind_interrupt_return(installed.cpu.interrupt_return);
    INSTALLED.store(true, Ordering::Release);
    Ok(installed)
}

/// Whether a table has been installed.
pub fn is_installed() -> bool {
    INSTALLED.load(Ordering::Acquire)
}

/// The table in force: the installed one, or [`PvOps::NOT_INSTALLED`].
#[inline(always)]
pub fn ops() -> &'static PvOps {
    // SAFETY: ACTIVE only ever points at NOT_INSTALLED (a constant promoted
    // to a static) or at TABLE's value after it was fully written, and
    // neither is written again.
    unsafe { &*ACTIVE.load(Ordering::Acquire) }
}

/// The backend in force before install: every op panics naming itself.
#[derive(Debug)]
pub enum NotInstalled {}

#[cold]
#[inline(never)]
#[track_caller]
fn not_installed(op: &str) -> ! {
    panic!("pvops: {op} called before pvops_core::table::install()")
}

impl CpuOps for NotInstalled {
    fn cpuid(_: u32, _: u32) -> CpuidResult {
        not_installed("cpu.cpuid")
    }
    unsafe fn load_kernel_segments(_: u16, _: u16) {
        not_installed("cpu.load_kernel_segments")
    }
    fn store_idt() -> DescriptorTablePointer {
        not_installed("cpu.store_idt")
    }
    unsafe fn set_kernel_stack(_: u64) {
        not_installed("cpu.set_kernel_stack")
    }
    fn store_gdt() -> DescriptorTablePointer {
        not_installed("cpu.store_gdt")
    }
    fn read_cr0() -> u64 {
        not_installed("cpu.read_cr0")
    }
    unsafe fn write_cr0(_: u64) {
        not_installed("cpu.write_cr0")
    }
    fn read_cr4() -> u64 {
        not_installed("cpu.read_cr4")
    }
    unsafe fn write_cr4(_: u64) {
        not_installed("cpu.write_cr4")
    }
    unsafe fn read_msr(_: u32) -> u64 {
        not_installed("cpu.read_msr")
    }
    unsafe fn write_msr(_: u32, _: u64) {
        not_installed("cpu.write_msr")
    }
    unsafe fn load_gdt(_: &DescriptorTablePointer) {
        not_installed("cpu.load_gdt")
    }
    unsafe fn load_idt(_: &DescriptorTablePointer) {
        not_installed("cpu.load_idt")
    }
    unsafe fn load_tr(_: u16) {
        not_installed("cpu.load_tr")
    }
    unsafe fn port_read(_: u16, _: PortWidth) -> u32 {
        not_installed("cpu.port_read")
    }
    unsafe fn port_write(_: u16, _: PortWidth, _: u32) {
        not_installed("cpu.port_write")
    }
    fn io_delay() {
        not_installed("cpu.io_delay")
    }
    fn current_cpu() -> CpuId {
        not_installed("cpu.current_cpu")
    }
    fn possible_cpus() -> CpuMask {
        not_installed("cpu.possible_cpus")
    }
    fn start_cpu(_: CpuId, _: &SecondaryStart) -> Result<(), StartCpuError> {
        not_installed("cpu.start_cpu")
    }
    fn init_secondary() {
        not_installed("cpu.init_secondary")
    }
}

impl IrqOps for NotInstalled {
    fn save_flags() -> IrqFlags {
        not_installed("irq.save_flags")
    }
    fn restore_flags(_: IrqFlags) {
        not_installed("irq.restore_flags")
    }
    fn disable() {
        not_installed("irq.disable")
    }
    fn enable() {
        not_installed("irq.enable")
    }
    fn safe_halt() {
        not_installed("irq.safe_halt")
    }
    fn halt() {
        not_installed("irq.halt")
    }
    fn eoi() {
        not_installed("irq.eoi")
    }
    fn send_ipi(_: IpiTarget, _: u8) {
        not_installed("irq.send_ipi")
    }
}

impl MmuOps for NotInstalled {
    fn read_cr2() -> u64 {
        not_installed("mmu.read_cr2")
    }
    unsafe fn write_cr2(_: u64) {
        not_installed("mmu.write_cr2")
    }
    fn read_cr3() -> u64 {
        not_installed("mmu.read_cr3")
    }
    unsafe fn write_cr3(_: u64) {
        not_installed("mmu.write_cr3")
    }
    unsafe fn set_entry(_: PtLevel, _: *mut u64, _: u64) {
        not_installed("mmu.set_entry")
    }
    unsafe fn read_entry(_: PtLevel, _: *const u64) -> u64 {
        not_installed("mmu.read_entry")
    }
    fn flush_tlb_single(_: VirtAddr) {
        not_installed("mmu.flush_tlb_single")
    }
    fn flush_tlb_local() {
        not_installed("mmu.flush_tlb_local")
    }
    fn flush_tlb_others(_: &CpuMask, _: TlbRange) {
        not_installed("mmu.flush_tlb_others")
    }
    fn pt_alloc(_: PtLevel, _: u64) {
        not_installed("mmu.pt_alloc")
    }
    fn pt_release(_: PtLevel, _: u64) {
        not_installed("mmu.pt_release")
    }
    fn enter_lazy() {
        not_installed("mmu.enter_lazy")
    }
    fn leave_lazy() {
        not_installed("mmu.leave_lazy")
    }
    fn flush_lazy() {
        not_installed("mmu.flush_lazy")
    }
    fn large_pages() -> bool {
        not_installed("mmu.large_pages")
    }
    unsafe fn set_pte_flush(_: *mut u64, _: u64, _: VirtAddr) {
        not_installed("mmu.set_pte_flush")
    }
    unsafe fn try_set_entry(
        _: PtLevel,
        _: *mut u64,
        _: u64,
    ) -> Result<(), crate::mmu::EntryRefused> {
        not_installed("mmu.try_set_entry")
    }
}

impl TimeOps for NotInstalled {
    fn sched_clock() -> u64 {
        not_installed("time.sched_clock")
    }
    fn wall_clock() -> WallClock {
        not_installed("time.wall_clock")
    }
    fn steal_clock(_: CpuId) -> u64 {
        not_installed("time.steal_clock")
    }
    fn timer_setup(_: u8) {
        not_installed("time.timer_setup")
    }
    fn timer_arm(_: u64) {
        not_installed("time.timer_arm")
    }
    fn timer_cancel() {
        not_installed("time.timer_cancel")
    }
}

impl LockOps for NotInstalled {
    fn wait(_: &AtomicU8, _: u8) {
        not_installed("lock.wait")
    }
    fn kick(_: CpuId) {
        not_installed("lock.kick")
    }
}

impl CounterOps for NotInstalled {}

impl ConsoleOps for NotInstalled {
    /// Drops the bytes: a panic handler must be able to print before install.
    fn write(_: &[u8]) {}
}

impl ShutdownOps for NotInstalled {
    fn shutdown(_: u8) -> ! {
        not_installed("platform.shutdown")
    }
    /// Drops the report, as the console drops bytes: a panic handler must
    /// be able to call it before install.
    fn report_panic(_: &[u8]) {}
}

impl MemoryMapOps for NotInstalled {
    fn memory_map(_: &mut [crate::abi::start_info::HvmMemmapEntry]) -> usize {
        not_installed("platform.memory_map")
    }
}
