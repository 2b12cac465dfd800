//! # pvops-ffi: pvops for kernels written in C
//!
//! A static library exporting pvops' ops as `extern "C"` functions (every
//! backend compiled in: native, kvm, xen, vmware; `pvops_init` picks one), with
//! the header `include/pvops.h` (kept equal to what cbindgen generates from
//! this file by a test, so the two cannot drift).
//!
//! Every function returns a status: `PVOPS_OK` (0) or a negative
//! `PVOPS_E*` code; values come back through pointers. Before
//! `pvops_init` (or `pvops_init_pvh`) succeeds every op returns `PVOPS_ENOTINSTALLED` and does
//! nothing, except `pvops_console_write`, which drops its bytes and returns
//! `PVOPS_ENOTINSTALLED` (so a panic path may always call it).
//!
//! The library also contains pvops' two entry points with their ELF notes
//! (`pvops::boot_entry!`): the PVH entry `pvops_pvh_start` and the classic
//! Xen PV entry. Link it into an ELF loaded at 1 MiB and either calls your
//! `void pvops_kernel_main(uint64_t protocol, uint64_t info)` in 64-bit
//! mode; hand both words to `pvops_init` (see `examples/c-kernel`).
#![cfg_attr(target_os = "none", no_std)]
#![warn(missing_docs)]

use core::fmt::Write as _;
use pvops::cpu::CpuId;
use pvops::irq::{IpiTarget, IrqFlags};

/// Success.
pub const PVOPS_OK: i32 = 0;
/// No backend is installed yet (call `pvops_init` first).
pub const PVOPS_ENOTINSTALLED: i32 = -1;
/// A backend is installed already; the call changed nothing.
pub const PVOPS_EALREADY: i32 = -2;
/// No backend could start on this machine.
pub const PVOPS_ENOBACKEND: i32 = -3;
/// The boot information was malformed (a backend was still installed, so
/// the console works to say so).
pub const PVOPS_EBOOTINFO: i32 = -4;
/// A pointer argument was null or a buffer too small.
pub const PVOPS_EINVAL: i32 = -5;

fn installed() -> bool {
    pvops::is_installed()
}

/// Brings pvops up for a kernel entered through the library's entries:
/// `protocol` and `info` are the two words `pvops_kernel_main` received
/// (PVH: `hvm_start_info`; Xen classic PV, in ring 3: `start_info`).
///
/// Returns `PVOPS_OK`, `PVOPS_EALREADY`, `PVOPS_ENOBACKEND` or
/// `PVOPS_EBOOTINFO` (the boot information was refused; a failsafe
/// console may still print).
#[no_mangle]
pub extern "C" fn pvops_init(protocol: u64, info: u64) -> i32 {
    if installed() {
        return PVOPS_EALREADY;
    }
    let handoff = pvops::entry::BootHandoff::from_raw(protocol, info);
    match pvops::entry::init(handoff, |_| {}) {
        Ok(_) => PVOPS_OK,
        Err(pvops::entry::BootError::NoBackend(_)) => PVOPS_ENOBACKEND,
        Err(_) => PVOPS_EBOOTINFO,
    }
}

/// Brings pvops up for a kernel entered through the PVH entry (first
/// 4 GiB identity-mapped): parses `hvm_start_info` at `start_info_paddr`,
/// detects the platform and installs the best backend.
///
/// Returns `PVOPS_OK`, `PVOPS_EALREADY`, `PVOPS_ENOBACKEND` or
/// `PVOPS_EBOOTINFO`.
#[no_mangle]
pub extern "C" fn pvops_init_pvh(start_info_paddr: u64) -> i32 {
    if installed() {
        return PVOPS_EALREADY;
    }
    match pvops::entry::init_pvh(start_info_paddr, |_| {}) {
        Ok(_) => PVOPS_OK,
        Err(pvops::entry::BootError::BadStartInfo { .. }) => PVOPS_EBOOTINFO,
        Err(pvops::entry::BootError::NoBackend(_)) => PVOPS_ENOBACKEND,
        Err(_) => PVOPS_EBOOTINFO,
    }
}

/// Whether a backend is installed: 1 or 0.
#[no_mangle]
pub extern "C" fn pvops_is_installed() -> i32 {
    i32::from(installed())
}

struct Buf<'a> {
    out: &'a mut [u8],
    len: usize,
    overflow: bool,
}

impl core::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for &b in s.as_bytes() {
            // Keep one byte for the terminating NUL.
            if self.len + 1 < self.out.len() {
                self.out[self.len] = b;
                self.len += 1;
            } else {
                self.overflow = true;
            }
        }
        Ok(())
    }
}

/// Writes the platform line's body (`platform=.. backend=.. features=..
/// hypervisor=..`), NUL-terminated, into `buf` of `len` bytes. Returns the
/// string's length, `PVOPS_EINVAL` if `buf` is null or too small, or
/// `PVOPS_ENOTINSTALLED`.
///
/// # Safety
/// `buf` must be null or point to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn pvops_identity(buf: *mut u8, len: usize) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if buf.is_null() || len == 0 {
        return PVOPS_EINVAL;
    }
    // SAFETY: the caller guarantees `buf` points to `len` writable bytes.
    let out = unsafe { core::slice::from_raw_parts_mut(buf, len) };
    let mut w = Buf {
        out,
        len: 0,
        overflow: false,
    };
    let _ = write!(w, "{}", pvops::platform::identity());
    let n = w.len;
    w.out[n] = 0;
    if w.overflow {
        return PVOPS_EINVAL;
    }
    n as i32
}

/// Writes `len` bytes at `bytes` to the console.
///
/// # Safety
/// `bytes` must be null (with `len` 0) or point to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn pvops_console_write(bytes: *const u8, len: usize) -> i32 {
    if bytes.is_null() {
        return if len == 0 { PVOPS_OK } else { PVOPS_EINVAL };
    }
    // SAFETY: the caller guarantees `bytes` points to `len` readable bytes.
    let s = unsafe { core::slice::from_raw_parts(bytes, len) };
    pvops::platform::console_write(s);
    if installed() {
        PVOPS_OK
    } else {
        PVOPS_ENOTINSTALLED
    }
}

/// Powers off with `code`. Returns only if no backend is installed
/// (`PVOPS_ENOTINSTALLED`).
#[no_mangle]
pub extern "C" fn pvops_shutdown(code: u8) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::platform::shutdown(code)
}

/// Stores the interrupt flags in `*flags` and masks interrupts.
///
/// # Safety
/// `flags` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn pvops_irq_save(flags: *mut u64) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if flags.is_null() {
        return PVOPS_EINVAL;
    }
    let f = pvops::irq::save_and_disable();
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { flags.write(f.0) };
    PVOPS_OK
}

/// Restores interrupt flags saved by `pvops_irq_save`.
#[no_mangle]
pub extern "C" fn pvops_irq_restore(flags: u64) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::irq::restore_flags(IrqFlags(flags));
    PVOPS_OK
}

/// Masks interrupts.
#[no_mangle]
pub extern "C" fn pvops_irq_disable() -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::irq::disable();
    PVOPS_OK
}

/// Unmasks interrupts.
#[no_mangle]
pub extern "C" fn pvops_irq_enable() -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::irq::enable();
    PVOPS_OK
}

/// Signals end of interrupt.
#[no_mangle]
pub extern "C" fn pvops_eoi() -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::irq::eoi();
    PVOPS_OK
}

/// Sends interrupt `vector` to platform CPU `cpu`.
#[no_mangle]
pub extern "C" fn pvops_send_ipi(cpu: u32, vector: u8) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::irq::send_ipi(IpiTarget::Cpu(CpuId(cpu)), vector);
    PVOPS_OK
}

/// Stores this CPU's platform number in `*cpu`.
///
/// # Safety
/// `cpu` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn pvops_current_cpu(cpu: *mut u32) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if cpu.is_null() {
        return PVOPS_EINVAL;
    }
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { cpu.write(pvops::cpu::current_cpu().0) };
    PVOPS_OK
}

/// Stores nanoseconds since boot (monotonic) in `*ns`.
///
/// # Safety
/// `ns` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn pvops_sched_clock(ns: *mut u64) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if ns.is_null() {
        return PVOPS_EINVAL;
    }
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { ns.write(pvops::time::sched_clock()) };
    PVOPS_OK
}

/// Stores the wall-clock time (Unix seconds and nanoseconds).
///
/// # Safety
/// `secs` and `nsecs` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn pvops_wall_clock(secs: *mut u64, nsecs: *mut u32) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if secs.is_null() || nsecs.is_null() {
        return PVOPS_EINVAL;
    }
    let w = pvops::time::wall_clock();
    // SAFETY: checked non-null; the caller guarantees they are writable.
    unsafe {
        secs.write(w.secs);
        nsecs.write(w.nsecs);
    }
    PVOPS_OK
}

/// Prepares this CPU's one-shot timer to raise `vector`.
#[no_mangle]
pub extern "C" fn pvops_timer_setup(vector: u8) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::time::timer_setup(vector);
    PVOPS_OK
}

/// Arms this CPU's one-shot timer `delta_ns` from now.
#[no_mangle]
pub extern "C" fn pvops_timer_arm(delta_ns: u64) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    pvops::time::timer_arm(delta_ns);
    PVOPS_OK
}

/// Stores CR3 in `*value`.
///
/// # Safety
/// `value` must be null or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn pvops_read_cr3(value: *mut u64) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if value.is_null() {
        return PVOPS_EINVAL;
    }
    // SAFETY: checked non-null; the caller guarantees it is writable.
    unsafe { value.write(pvops::mmu::read_cr3()) };
    PVOPS_OK
}

/// Switches address space.
///
/// # Safety
/// As `pvops::mmu::write_cr3`: the new tables must map everything in use.
#[no_mangle]
pub unsafe extern "C" fn pvops_write_cr3(value: u64) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    // SAFETY: the caller upholds write_cr3's contract.
    unsafe { pvops::mmu::write_cr3(value) };
    PVOPS_OK
}

/// Writes the PTE at `entry` (which maps virtual address `va`) and flushes
/// `va` from this CPU's TLB.
///
/// # Safety
/// As `pvops::mmu::set_pte`: `entry` points into a live page table.
#[no_mangle]
pub unsafe extern "C" fn pvops_set_pte(entry: *mut u64, value: u64, va: u64) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if entry.is_null() {
        return PVOPS_EINVAL;
    }
    let Some(addr) = pvops_va(va) else {
        return PVOPS_EINVAL;
    };
    // SAFETY: the caller upholds set_pte's contract.
    unsafe { pvops::mmu::set_pte(entry, value, addr) }.flush();
    PVOPS_OK
}

fn pvops_va(va: u64) -> Option<x86_64::VirtAddr> {
    x86_64::VirtAddr::try_new(va).ok()
}

/// Runs CPUID `leaf`/`subleaf`, storing EAX, EBX, ECX, EDX in `out[0..4]`.
///
/// # Safety
/// `out` must be null or point to 4 writable `uint32_t`.
#[no_mangle]
pub unsafe extern "C" fn pvops_cpuid(leaf: u32, subleaf: u32, out: *mut u32) -> i32 {
    if !installed() {
        return PVOPS_ENOTINSTALLED;
    }
    if out.is_null() {
        return PVOPS_EINVAL;
    }
    let r = pvops::cpu::cpuid(leaf, subleaf);
    // SAFETY: checked non-null; the caller guarantees 4 writable words.
    unsafe {
        out.write(r.eax);
        out.add(1).write(r.ebx);
        out.add(2).write(r.ecx);
        out.add(3).write(r.edx);
    }
    PVOPS_OK
}

#[cfg(target_os = "none")]
mod entry {
    extern "C" {
        /// The C kernel's entry, called by either entry in 64-bit mode
        /// with the words to give `pvops_init`.
        fn pvops_kernel_main(protocol: u64, info: u64);
    }

    extern "C" fn enter_c(handoff: pvops::entry::BootHandoff) -> ! {
        let (protocol, info) = handoff.into_raw();
        // SAFETY: the C kernel defines pvops_kernel_main with this
        // signature (pvops.h declares it).
        unsafe { pvops_kernel_main(protocol, info) };
        // The kernel returned: power off with a distinct code if we can.
        let _ = super::pvops_shutdown(100);
        loop {
            core::hint::spin_loop();
        }
    }

    pvops::boot_entry!(enter_c);

    #[panic_handler]
    fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
        use core::fmt::Write as _;
        let _ = writeln!(pvops::platform::Console, "pvops: error: panic: {info}");
        let _ = super::pvops_shutdown(101);
        loop {
            core::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_refuses_before_install() {
        let mut v = 0u64;
        let mut c = 0u32;
        let mut w = [0u32; 4];
        let mut buf = [0u8; 64];
        // SAFETY: every pointer passed is a valid local of the right size.
        unsafe {
            assert_eq!(pvops_is_installed(), 0);
            assert_eq!(pvops_irq_save(&mut v), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_irq_restore(0), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_irq_disable(), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_irq_enable(), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_eoi(), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_send_ipi(1, 0x30), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_current_cpu(&mut c), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_sched_clock(&mut v), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_wall_clock(&mut v, &mut c), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_timer_setup(0x30), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_timer_arm(1), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_read_cr3(&mut v), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_write_cr3(0), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_set_pte(&mut v, 0, 0), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_cpuid(0, 0, w.as_mut_ptr()), PVOPS_ENOTINSTALLED);
            assert_eq!(
                pvops_identity(buf.as_mut_ptr(), buf.len()),
                PVOPS_ENOTINSTALLED
            );
            assert_eq!(pvops_shutdown(0), PVOPS_ENOTINSTALLED);
            // The console drops bytes before install, and says so.
            assert_eq!(pvops_console_write(b"x".as_ptr(), 1), PVOPS_ENOTINSTALLED);
            assert_eq!(pvops_console_write(core::ptr::null(), 0), PVOPS_OK);
            assert_eq!(pvops_console_write(core::ptr::null(), 3), PVOPS_EINVAL);
        }
    }

    #[test]
    fn header_matches_the_rust_side() {
        let dir = env!("CARGO_MANIFEST_DIR");
        let config =
            cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
        let mut generated = Vec::new();
        cbindgen::Builder::new()
            .with_crate(dir)
            .with_config(config)
            .generate()
            .expect("cbindgen could not read the crate")
            .write(&mut generated);
        let generated = String::from_utf8(generated).expect("utf-8");
        let path = format!("{dir}/include/pvops.h");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            if std::env::var_os("PVOPS_BLESS").is_some() {
                std::fs::write(&path, &generated).expect("writing the header");
            } else {
                panic!(
                    "include/pvops.h is stale: rerun with PVOPS_BLESS=1 to regenerate it.\n--- generated ---\n{generated}"
                );
            }
        }
    }
}
