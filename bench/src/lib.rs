//! # pvops-bench
//!
//! Runs pvops' dispatch machinery (the ops table, patched call sites,
//! static dispatch) at hardware speed in an ordinary Linux process, where
//! privileged instructions are not allowed: [`Host`] is a backend whose ops
//! are unprivileged stand-ins for the real ones, chosen so that what they
//! cost and, where possible, what they do stays observable:
//!
//! | op | stand-in (inline bytes, where declared) |
//! | --- | --- |
//! | `irq.save_flags` | `pushf; pop %rax` (the real instruction pair) |
//! | `irq.restore_flags` | `push %rdi; popf` (real; ring 3 may change ID, not IF) |
//! | `irq.disable`, `irq.enable` | `nop` (nothing unprivileged does what `cli`/`sti` do; 1 byte, like them) |
//! | `mmu.read_cr2` | `mov $0xc2c2c2, %eax` |
//! | `mmu.read_cr3` | returns `0xc3c3c3` after writing every scratch register; no inline bytes (a direct call) |
//! | `mmu.set_entry` | the store `mov %rdx, (%rsi)` |
//! | `mmu.flush_tlb_single` | counts the call in [`FLUSHES`]; no inline bytes |
//! | `time.sched_clock` | `rdtsc` (a direct call, as for every clock) |
//!
//! [`Mprotect`] makes the process's text writable around
//! `pvops_core::patch::apply`, which widens inline code within the prefix
//! budget of the CPU this runs on (read through [`Host`]'s `cpuid`, the
//! real instruction). The benchmark is `benches/host.rs`
//! (`cargo bench -p pvops-bench`); `tests/patch_host.rs` patches this
//! process's own sites and checks the bytes and the behaviour.

use core::arch::asm;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use pvops_core::cpu::{
    CpuId, CpuOps, CpuidResult, DescriptorTablePointer, PortWidth, SecondaryStart, StartCpuError,
};
use pvops_core::irq::{CpuMask, IpiTarget, IrqFlags, IrqOps};
use pvops_core::lock::LockOps;
use pvops_core::mmu::{MmuOps, PtLevel, TlbRange};
use pvops_core::patch::{InlineOps, InlineSet, Op, TextPoke};
use pvops_core::platform::{ConsoleOps, Features, Identity, Platform, ShutdownOps};
use pvops_core::time::{TimeOps, WallClock};
use x86_64::VirtAddr;

/// What the `read_cr2` stand-in returns.
pub const CR2: u64 = 0x00c2_c2c2;
/// What the `read_cr3` stand-in returns.
pub const CR3: u64 = 0x00c3_c3c3;

/// Calls of the `flush_tlb_single` stand-in.
pub static FLUSHES: AtomicU64 = AtomicU64::new(0);
/// The last address given to `flush_tlb_single`.
pub static LAST_FLUSH: AtomicU64 = AtomicU64::new(0);

/// The host stand-in backend (see the crate docs).
#[derive(Debug)]
pub enum Host {}

/// The identity [`Host`] tables carry.
pub const IDENTITY: Identity = Identity {
    platform: Platform::Native,
    backend: "host",
    features: Features::new(),
    hypervisor: None,
};

#[cold]
#[track_caller]
fn unavailable(op: &str) -> ! {
    panic!("pvops-bench: {op} has no stand-in in a host process")
}

/// Writes `-1` into every caller-saved general register, as any larger C
/// function may: the `read_cr3` stand-in does it so that tests see the
/// register-saving stubs of the sites' convention at work.
#[inline(always)]
pub fn scribble() {
    // SAFETY: only writes registers declared as outputs.
    unsafe {
        asm!(
            "mov rcx, -1",
            "mov rdx, -1",
            "mov rsi, -1",
            "mov rdi, -1",
            "mov r8, -1",
            "mov r9, -1",
            "mov r10, -1",
            "mov r11, -1",
            out("rcx") _,
            out("rdx") _,
            out("rsi") _,
            out("rdi") _,
            out("r8") _,
            out("r9") _,
            out("r10") _,
            out("r11") _,
            options(nomem, nostack, preserves_flags),
        )
    }
}

#[inline(always)]
fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the time-stamp counter (allowed in ring 3
    // unless CR4.TSD, which Linux leaves clear).
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

impl IrqOps for Host {
    #[inline]
    fn save_flags() -> IrqFlags {
        let v: u64;
        // SAFETY: pushf/pop only read RFLAGS through the stack.
        unsafe { asm!("pushfq", "pop {}", out(reg) v, options(preserves_flags)) };
        IrqFlags(v)
    }

    #[inline]
    fn restore_flags(flags: IrqFlags) {
        // SAFETY: popf in ring 3 can change only the arithmetic flags, DF,
        // TF, NT, AC and ID (not IF or IOPL); callers pass what save_flags
        // returned (the wrapper also clears DF, TF and NT).
        unsafe { asm!("push {}", "popfq", in(reg) flags.0) };
    }

    #[inline]
    fn disable() {
        // SAFETY: a nop.
        unsafe { asm!("nop", options(nomem, nostack, preserves_flags)) };
    }

    #[inline]
    fn enable() {
        // SAFETY: a nop.
        unsafe { asm!("nop", options(nomem, nostack, preserves_flags)) };
    }

    fn safe_halt() {
        unavailable("irq.safe_halt")
    }

    fn halt() {
        unavailable("irq.halt")
    }

    fn eoi() {
        unavailable("irq.eoi")
    }

    fn send_ipi(_: IpiTarget, _: u8) {
        unavailable("irq.send_ipi")
    }
}

impl MmuOps for Host {
    #[inline]
    fn read_cr2() -> u64 {
        let v: u32;
        // SAFETY: loads a constant into a register.
        unsafe { asm!("mov {:e}, 0xc2c2c2", out(reg) v, options(nomem, nostack, preserves_flags)) };
        u64::from(v)
    }

    unsafe fn write_cr2(_: u64) {
        unavailable("mmu.write_cr2")
    }

    #[inline]
    fn read_cr3() -> u64 {
        scribble();
        CR3
    }

    unsafe fn write_cr3(_: u64) {
        unavailable("mmu.write_cr3")
    }

    #[inline]
    unsafe fn set_entry(_level: PtLevel, entry: *mut u64, value: u64) {
        // SAFETY: the caller guarantees `entry` is valid for writes.
        unsafe { core::ptr::write_volatile(entry, value) }
    }

    #[inline]
    unsafe fn read_entry(_level: PtLevel, entry: *const u64) -> u64 {
        // SAFETY: the caller guarantees `entry` is valid for reads.
        unsafe { core::ptr::read_volatile(entry) }
    }

    fn flush_tlb_single(addr: VirtAddr) {
        FLUSHES.fetch_add(1, Ordering::Relaxed);
        LAST_FLUSH.store(addr.as_u64(), Ordering::Relaxed);
    }

    fn flush_tlb_local() {
        unavailable("mmu.flush_tlb_local")
    }

    fn flush_tlb_others(_: &CpuMask, _: TlbRange) {
        unavailable("mmu.flush_tlb_others")
    }

    /// A process has no page tables of its own to announce.
    fn pt_alloc(_: PtLevel, _: u64) {}

    /// A process has no page tables of its own to announce.
    fn pt_release(_: PtLevel, _: u64) {}

    /// Stores take effect at once: nothing to batch.
    fn enter_lazy() {}

    /// Stores take effect at once: nothing to issue.
    fn leave_lazy() {}

    /// Stores take effect at once: nothing to issue.
    fn flush_lazy() {}
}

impl TimeOps for Host {
    #[inline]
    fn sched_clock() -> u64 {
        rdtsc()
    }

    fn wall_clock() -> WallClock {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        WallClock {
            secs: d.as_secs(),
            nsecs: d.subsec_nanos(),
        }
    }

    /// Nothing is measured as stolen in a process.
    fn steal_clock(_: CpuId) -> u64 {
        0
    }

    fn timer_setup(_: u8) {
        unavailable("time.timer_setup")
    }

    fn timer_arm(_: u64) {
        unavailable("time.timer_arm")
    }

    fn timer_cancel() {
        unavailable("time.timer_cancel")
    }
}

impl CpuOps for Host {
    fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
        let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
        CpuidResult {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        }
    }
    fn read_cr0() -> u64 {
        unavailable("cpu.read_cr0")
    }
    unsafe fn write_cr0(_: u64) {
        unavailable("cpu.write_cr0")
    }
    fn read_cr4() -> u64 {
        unavailable("cpu.read_cr4")
    }
    unsafe fn write_cr4(_: u64) {
        unavailable("cpu.write_cr4")
    }
    unsafe fn read_msr(_: u32) -> u64 {
        unavailable("cpu.read_msr")
    }
    unsafe fn write_msr(_: u32, _: u64) {
        unavailable("cpu.write_msr")
    }
    unsafe fn load_gdt(_: &DescriptorTablePointer) {
        unavailable("cpu.load_gdt")
    }
    unsafe fn load_idt(_: &DescriptorTablePointer) {
        unavailable("cpu.load_idt")
    }
    unsafe fn load_tr(_: u16) {
        unavailable("cpu.load_tr")
    }
    unsafe fn port_read(_: u16, _: PortWidth) -> u32 {
        unavailable("cpu.port_read")
    }
    unsafe fn port_write(_: u16, _: PortWidth, _: u32) {
        unavailable("cpu.port_write")
    }
    /// A process has no bus to wait for.
    fn io_delay() {}
    fn current_cpu() -> CpuId {
        CpuId(0)
    }
    fn possible_cpus() -> CpuMask {
        let mut m = CpuMask::new();
        m.insert(CpuId(0));
        m
    }
    fn start_cpu(cpu: CpuId, _: &SecondaryStart) -> Result<(), StartCpuError> {
        Err(StartCpuError::NoSuchCpu(cpu))
    }
    fn init_secondary() {
        unavailable("cpu.init_secondary")
    }
}

impl LockOps for Host {
    /// Returns at once: the caller re-checks the byte and spins.
    fn wait(_: &AtomicU8, _: u8) {
        core::hint::spin_loop()
    }
    /// Waiters never sleep ([`LockOps::wait`] returns at once).
    fn kick(_: CpuId) {}
}

/// Issues no hypercalls.
impl pvops_core::platform::CounterOps for Host {}

impl ConsoleOps for Host {
    fn write(bytes: &[u8]) {
        use std::io::Write;
        let _ = std::io::stderr().write_all(bytes);
    }
}

impl ShutdownOps for Host {
    fn shutdown(code: u8) -> ! {
        std::process::exit(i32::from(code))
    }
}

/// A process has no platform memory map.
impl pvops_core::platform::MemoryMapOps for Host {
    fn memory_map(_out: &mut [pvops_core::abi::start_info::HvmMemmapEntry]) -> usize {
        0
    }
}

// SAFETY: each declaration is the instruction(s) the matching op above
// executes, with the site's C registers (result in rax, flags in rdi, entry
// in rsi and value in rdx); none leaves rsp moved or DF set, or uses
// rip-relative memory. Every slice given to `with_prefixable` is exactly
// one legacy-encoded, non-branch instruction, which redundant DS prefixes
// leave unchanged in 64-bit mode. `read_cr3`, `flush_tlb_single` and the
// clock declare no bytes.
//
// The declarations mirror the native backend's shape, so that a patched
// site here has as many instructions as the real one: two for the flag
// ops, one for the register read and the store, and for `cli`/`sti` a
// 1-byte instruction that fills its site alone with five prefixes where
// this CPU's prefix budget allows, else is followed by one NOP (see
// `pvops_core::patch`, "The prefix budget").
unsafe impl InlineOps for Host {
    const INLINE: InlineSet = InlineSet::NONE
        // pushf; pop %rax (site: ds ds pushf; ds ds pop %rax)
        .with_prefixable(Op::SaveFlags, &[&[0x9c], &[0x58]])
        // push %rdi; popf (site: ds ds push %rdi; ds ds popf)
        .with_prefixable(Op::RestoreFlags, &[&[0x57], &[0x9d]])
        // nop, the cli stand-in (site: ds ds ds ds ds nop, or under a
        // budget of three nop; nopl 0x0(%rax,%rax,1))
        .with_prefixable(Op::Disable, &[&[0x90]])
        // nop, the sti stand-in (likewise)
        .with_prefixable(Op::Enable, &[&[0x90]])
        // mov $0xc2c2c2, %eax (site: ds mov $0xc2c2c2, %eax)
        .with_prefixable(Op::ReadCr2, &[&[0xb8, 0xc2, 0xc2, 0xc2, 0x00]])
        // ds mov %rdx, 0x0(%rsi,%riz,1): the store in the full-site form
        // the native backend patches in (no padding NOP).
        .with(Op::SetEntry, &[0x3e, 0x48, 0x89, 0x54, 0x26, 0x00]);
}

/// A [`TextPoke`] for a Linux process: `mprotect` the pages read, write and
/// execute around the rewrite, then back to read and execute.
#[derive(Debug, Default)]
pub struct Mprotect;

fn pages(start: u64, end: u64) -> (usize, usize) {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let lo = start & !(page - 1);
    let hi = end.div_ceil(page) * page;
    (lo as usize, (hi - lo) as usize)
}

impl TextPoke for Mprotect {
    fn unprotect(&mut self, start: u64, end: u64) -> Result<(), &'static str> {
        let (addr, len) = pages(start, end);
        // SAFETY: the range is this process's own mapped text (it holds
        // the recorded sites); adding write access changes no content.
        let r = unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err("mprotect(PROT_READ | PROT_WRITE | PROT_EXEC) failed")
        }
    }

    fn protect(&mut self, start: u64, end: u64) {
        let (addr, len) = pages(start, end);
        // SAFETY: as in unprotect; text goes back to read and execute.
        let r = unsafe {
            libc::mprotect(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_EXEC,
            )
        };
        assert_eq!(r, 0, "mprotect(PROT_READ | PROT_EXEC) failed");
    }
}
