//! # pvops-native
//!
//! The bare-hardware backend of pvops: every op as the instruction itself
//! (`cli`, `mov cr3`, `wrmsr`, ...), the local APIC (x2APIC when present,
//! else xAPIC) for EOI, IPIs and the one-shot timer, the TSC for the
//! scheduler clock (frequency from CPUID 0x15/0x16 or measured against the
//! PIT), the CMOS RTC for the wall clock, a 16550 UART for the console, and
//! QEMU's isa-debug-exit or ACPI S5 to power off.
//!
//! It is also what every other backend falls back to, op by op.
//!
//! What it needs from the kernel: ring 0; all RAM and the low 4 GiB of
//! device memory mapped at `phys + BootContext::phys_offset` (the APIC page
//! uncached); the IDT routing [`apic::SPURIOUS_VECTOR`] to a handler that
//! just returns.
//!
//! ## Example
//! A kernel for bare hardware only can skip detection entirely:
//! ```no_run
//! use pvops_core::backend::{BootContext, BootEntry};
//! use pvops_core::detect::{scan, HardwareCpuid};
//!
//! fn early_boot(cmdline: &str, rsdp: Option<u64>) {
//!     let mut ctx = BootContext::new(BootEntry::Pvh, cmdline, scan(&HardwareCpuid));
//!     ctx.rsdp = rsdp;
//!     let table = pvops_native::init(&ctx).expect("no TSC or APIC timer");
//!     pvops_core::table::install(table).expect("installed once");
//!     // Or call the instructions directly (static dispatch):
//!     use pvops_core::irq::IrqOps;
//!     pvops_native::Native::disable();
//! }
//! ```
#![no_std]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod acpi;
pub mod apic;
mod cpu;
mod inline;
mod irq;
mod lock;
mod mmu;
pub use mmu::{paging_root, record_boot_context};
pub mod pic;
pub mod pit;
pub mod rtc;
pub mod serial;
pub mod shutdown;
pub mod smp;
mod time;
pub mod tsc;
pub mod tsc_aux;

use pvops_core::backend::{BackendError, BootContext, Candidate, Priority};
use pvops_core::phys::DirectMap;
use pvops_core::platform::{ConsoleOps, Features, Identity, Platform, ShutdownOps};
use pvops_core::table::PvOps;
use pvops_core::time::ClockScale;

/// The native backend. Its op-group trait impls are the raw instructions;
/// use it directly (`Native::disable()`) for static dispatch.
#[derive(Debug)]
pub enum Native {}

/// Issues no hypercalls.
impl pvops_core::platform::CounterOps for Native {}

impl ConsoleOps for Native {
    fn write(bytes: &[u8]) {
        serial::write(bytes)
    }
}

/// Bare hardware has no memory map of its own to offer: the loader's (or
/// firmware's) is the one.
impl pvops_core::platform::MemoryMapOps for Native {
    fn memory_map(_out: &mut [pvops_core::abi::start_info::HvmMemmapEntry]) -> usize {
        0
    }
}

impl ShutdownOps for Native {
    fn shutdown(code: u8) -> ! {
        shutdown::shutdown(code)
    }
}

fn cpu_io_delay() {
    <Native as pvops_core::cpu::CpuOps>::io_delay()
}

/// `BootContext::phys_offset`, kept for secondary CPUs.
static PHYS_OFFSET: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// `BootContext::phys_offset`, as recorded at init.
pub(crate) fn phys_offset() -> u64 {
    PHYS_OFFSET.load(core::sync::atomic::Ordering::Relaxed)
}

pub(crate) fn set_phys_offset(offset: u64) {
    PHYS_OFFSET.store(offset, core::sync::atomic::Ordering::Relaxed);
}

/// The backend's name, as `pvops.backend=` names it.
pub const NAME: &str = "native";

/// What native init found, for the kernel's boot log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NativeInfo {
    /// TSC frequency in Hz.
    pub tsc_hz: u64,
    /// Where it came from.
    pub tsc_source: tsc::TscSource,
    /// Local APIC register interface.
    pub apic: apic::ApicMode,
    /// APIC timer ticks per millisecond (divide by 16).
    pub apic_timer_per_ms: u64,
    /// Whether that rate came from the backend underneath
    /// ([`NativeHints::apic_bus_hz`]) rather than from a measurement
    /// against the TSC clock.
    pub apic_timer_given: bool,
    /// Whether a UART console answered.
    pub serial: bool,
    /// ACPI S5 as a shutdown path, or why it is not available.
    pub acpi_s5: Result<(), acpi::AcpiError>,
    /// The MADT's CPU list, or why it could not be read (then only the
    /// boot CPU is known).
    pub madt: Result<(), acpi::AcpiError>,
    /// How many CPUs the platform has.
    pub cpus: u32,
    /// Whether the wall clock came from the RTC (else it starts at 0).
    pub rtc: bool,
}

static INFO: core::sync::atomic::AtomicPtr<NativeInfo> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

/// What [`init`] found, once it has run.
pub fn info() -> Option<NativeInfo> {
    let p = INFO.load(core::sync::atomic::Ordering::Acquire);
    // SAFETY: INFO only ever points at INFO_SLOT after init filled it.
    (!p.is_null()).then(|| unsafe { *p })
}

struct InfoSlot(core::cell::UnsafeCell<NativeInfo>);
// SAFETY: written only by `init`, on the boot CPU before other CPUs run
// (see there), and read by copy.
unsafe impl Sync for InfoSlot {}
static INFO_SLOT: InfoSlot = InfoSlot(core::cell::UnsafeCell::new(NativeInfo {
    tsc_hz: 0,
    tsc_source: tsc::TscSource::Pit,
    apic: apic::ApicMode::XApic,
    apic_timer_per_ms: 0,
    apic_timer_given: false,
    serial: false,
    acpi_s5: Ok(()),
    madt: Ok(()),
    cpus: 0,
    rtc: false,
}));

/// Native runs anywhere but in a Xen PVH domain: it bids the fallback
/// priority. A kernel entered through the PVH entry with Xen's signature
/// in CPUID is a PVH guest (dom0 or domU), which has no UART, PIT, PIC or
/// RTC (Xen keeps those it uses from dom0 too): this backend could neither
/// come up nor print why, and after a failed Xen backend it would run over
/// the half-made Xen set-up. There the Xen backend leaves a failsafe
/// console and shutdown instead (see `pvops_xen::init`). Xen's signature
/// counts even when CPUID's hypervisor bit is clear (Xen can hide it,
/// `dom0-cpuid=no-hypervisor`), as for `pvops_xen::detect`.
pub fn detect(ctx: &BootContext<'_>) -> Option<Priority> {
    bid(ctx, &pvops_core::detect::HardwareCpuid)
}

fn bid(ctx: &BootContext<'_>, src: &impl pvops_core::detect::CpuidSource) -> Option<Priority> {
    use pvops_core::detect::{signature_of, HypervisorKind};
    let xen_signature = || {
        // Xen's two bases; at least its version and hypercall leaves.
        [0x4000_0000u32, 0x4000_0100].into_iter().any(|base| {
            let r = src.cpuid(base, 0);
            HypervisorKind::from_signature(signature_of(&r)) == HypervisorKind::Xen
                && (base + 2..base + 0x100).contains(&r.eax)
        })
    };
    let xen_pvh = ctx.entry == pvops_core::backend::BootEntry::Pvh
        && (ctx.cpuid.find(HypervisorKind::Xen).is_some()
            || (!ctx.cpuid.hypervisor_bit && xen_signature()));
    // A kernel entered through Xen's PV entry runs in ring 3: nothing
    // native can run there.
    let xen_pv = ctx.entry == pvops_core::backend::BootEntry::XenPv;
    (!xen_pvh && !xen_pv).then_some(Priority::FALLBACK)
}

fn err(reason: &'static str) -> BackendError {
    BackendError {
        backend: NAME,
        reason,
        detail: None,
    }
}

/// What a backend that runs native underneath (kvm, xen, vmware) already
/// knows better than native could measure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct NativeHints {
    /// The TSC frequency in Hz, from a paravirtual clock (kvmclock's or
    /// Xen's pvclock scale) or the hypervisor's word for it (VMware's
    /// timing leaf or backdoor): used before CPUID or the PIT are asked, so
    /// a machine without a PIT (QEMU `microvm`, Firecracker-like VMMs)
    /// needs none. Ignored when implausible (native then finds its own).
    pub tsc_hz: Option<u64>,
    /// Where [`NativeHints::tsc_hz`] came from, for the info line
    /// ([`tsc::TscSource::Backend`]); `None` reads as `pvclock`.
    pub tsc_source: Option<&'static str>,
    /// The local APIC timer's input clock in Hz (the APIC bus), when the
    /// hypervisor says it: the timer is then not measured against the TSC
    /// clock. Ignored when implausible.
    pub apic_bus_hz: Option<u64>,
}

impl NativeHints {
    /// No hints: native finds everything itself.
    pub const NONE: NativeHints = NativeHints {
        tsc_hz: None,
        tsc_source: None,
        apic_bus_hz: None,
    };

    /// Hints with the TSC frequency known from a paravirtual clock.
    pub const fn with_tsc_hz(hz: u64) -> Self {
        NativeHints {
            tsc_hz: Some(hz),
            ..Self::NONE
        }
    }

    /// These hints with the TSC frequency `hz`, read from `source` (a short
    /// name for the info line, e.g. `vmware-gethz`).
    pub const fn tsc(self, hz: u64, source: &'static str) -> Self {
        NativeHints {
            tsc_hz: Some(hz),
            tsc_source: Some(source),
            ..self
        }
    }

    /// These hints with the APIC bus (timer input) frequency `hz`.
    pub const fn apic_bus(self, hz: u64) -> Self {
        NativeHints {
            apic_bus_hz: Some(hz),
            ..self
        }
    }
}

/// Brings up the hardware the native ops use and returns the table.
///
/// `pvops.apic=xapic` on the command line keeps the APIC in xAPIC mode even
/// when x2APIC is available.
pub fn init(ctx: &BootContext<'_>) -> Result<PvOps, BackendError> {
    init_with(ctx, NativeHints::NONE)
}

/// [`init`], with what the backend running native underneath knows.
pub fn init_with(ctx: &BootContext<'_>, hints: NativeHints) -> Result<PvOps, BackendError> {
    set_phys_offset(ctx.phys_offset);
    let serial = serial::init(serial::COM1);
    pic::disable();
    let want_x2 = ctx.option("apic") != Some("xapic");
    // SAFETY: the BootContext contract says device memory in the low 4 GiB
    // is mapped at phys + phys_offset; init runs once, on the boot CPU.
    let apic_mode = unsafe { apic::init(want_x2, ctx.phys_offset) };
    let (tsc_hz, tsc_source) = tsc::frequency(
        hints.tsc_hz,
        hints.tsc_source,
        ctx.cpuid.primary().map(|l| l.base),
    )
    .ok_or(err(
        "TSC frequency unknown: no paravirtual clock, no CPUID 0x15/0x16 or 0x40000010, \
             and the PIT did not count",
    ))?;
    time::init_clock(ClockScale::from_hz(tsc_hz).ok_or(err("TSC frequency out of range"))?);
    let given_timer = hints.apic_bus_hz.and_then(time::apic_ticks_per_ms_of_bus);
    let apic_timer_per_ms = match given_timer {
        Some(per_ms) => per_ms,
        None => time::calibrate_apic_timer().ok_or(err("local APIC timer does not count"))?,
    };
    let rtc = match rtc::read() {
        Some(t) => {
            time::init_wall(rtc::unix_seconds(&t));
            true
        }
        None => false,
    };
    // SAFETY: the same BootContext contract: the low 4 GiB (where firmware
    // puts ACPI tables) is mapped readable at phys + phys_offset.
    let mem = unsafe { DirectMap::new(ctx.phys_offset, 1 << 32) };
    let acpi_s5 = match acpi::find_s5(&mem, ctx.rsdp) {
        Ok(s5) => {
            shutdown::set_acpi(&s5);
            Ok(())
        }
        Err(e) => Err(e),
    };
    // Without a MADT the platform is taken to have just this CPU.
    let mut cpus = pvops_core::irq::CpuMask::new();
    cpus.insert(pvops_core::cpu::CpuId(apic::id()));
    let madt = match acpi::find_cpus(&mem, ctx.rsdp) {
        Ok((found, _)) if !found.is_empty() => {
            cpus = found;
            cpus.insert(pvops_core::cpu::CpuId(apic::id()));
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e),
    };
    smp::set_possible(&cpus);
    // SAFETY: init runs on the boot CPU before any other CPU starts, so no
    // reader runs meanwhile. It may run twice (a backend composed on native
    // failed after native's init, then native is installed alone): the
    // second run rewrites the slot, which is why this is not a WriteOnce.
    unsafe {
        *INFO_SLOT.0.get() = NativeInfo {
            tsc_hz,
            tsc_source,
            apic: apic_mode,
            apic_timer_per_ms,
            apic_timer_given: given_timer.is_some(),
            serial,
            acpi_s5,
            madt,
            cpus: cpus.iter().count() as u32,
            rtc,
        };
    }
    INFO.store(INFO_SLOT.0.get(), core::sync::atomic::Ordering::Release);
    Ok(table(Identity {
        platform: Platform::Native,
        backend: NAME,
        features: Features::new(),
        hypervisor: ctx.cpuid.primary().map(|l| l.kind),
    }))
}

/// Native's table, inline bytes included, without bringing up native's
/// devices: for a backend that runs native's instructions but has its own
/// time, console and CPU bring-up (Xen PVH: no PIT, UART or RTC there) to
/// start from and replace entries, as ADDING.md describes. [`init_with`]
/// returns the same table once the devices are up; the entries that use
/// them (clock, timer, console, shutdown, CPU start) must be replaced by
/// a backend that does not call it.
pub const fn table(identity: Identity) -> PvOps {
    PvOps::of_inline::<Native>(identity)
}

/// When no backend could start in ring 0, installs a table with just this
/// backend's serial console (COM1, if it answers) and power-off, so the
/// kernel can say why and end cleanly instead of halting in silence; every
/// other op still panics naming itself. Returns whether it installed.
/// `pvops::init` calls it; a kernel that lists candidates itself may.
pub fn install_failsafe(ctx: &BootContext<'_>) -> bool {
    if ctx.entry == pvops_core::backend::BootEntry::XenPv || pvops_core::table::is_installed() {
        // Ring 3 has no ports; an installed table has its own console.
        return false;
    }
    serial::init(serial::COM1);
    let mut features = Features::new();
    features.push("failsafe");
    let mut t = PvOps::NOT_INSTALLED;
    t.identity = Identity {
        platform: Platform::Native,
        backend: NAME,
        features,
        hypervisor: ctx.cpuid.primary().map(|l| l.kind),
    };
    t.platform.console_write = serial::write;
    t.platform.shutdown = shutdown::shutdown;
    pvops_core::table::install(t).is_ok()
}

/// The native backend as a detection candidate.
pub const CANDIDATE: Candidate = Candidate {
    name: NAME,
    detect,
    init,
};

#[cfg(test)]
mod tests {
    use super::*;
    use pvops_core::backend::BootEntry;
    use pvops_core::cpu::CpuidResult;
    use pvops_core::detect::{scan, CpuidSource};

    /// A CPU with the hypervisor bit and `sig` at 0x40000000.
    struct Hv(&'static [u8; 12]);
    impl CpuidSource for Hv {
        fn cpuid(&self, leaf: u32, _: u32) -> CpuidResult {
            let w = |i: usize| u32::from_le_bytes(self.0[i..i + 4].try_into().unwrap());
            match leaf {
                1 => CpuidResult {
                    ecx: 1 << 31,
                    ..Default::default()
                },
                0x4000_0000 => CpuidResult {
                    eax: 0x4000_0005,
                    ebx: w(0),
                    ecx: w(4),
                    edx: w(8),
                },
                _ => CpuidResult::default(),
            }
        }
    }

    fn ctx(cpuid: pvops_core::detect::CpuidScan, entry: BootEntry) -> BootContext<'static> {
        BootContext::new(entry, "", cpuid)
    }

    fn bid(sig: &'static [u8; 12], entry: BootEntry) -> Option<Priority> {
        super::bid(&ctx(scan(&Hv(sig)), entry), &Hv(sig))
    }

    #[test]
    fn declines_only_in_a_xen_pvh_domain() {
        assert_eq!(bid(b"XenVMMXenVMM", BootEntry::Pvh), None);
        assert_eq!(
            bid(b"XenVMMXenVMM", BootEntry::Other),
            Some(Priority::FALLBACK)
        );
        assert_eq!(
            bid(b"KVMKVMKVM\0\0\0", BootEntry::Pvh),
            Some(Priority::FALLBACK)
        );
        assert_eq!(
            bid(b"TCGTCGTCGTCG", BootEntry::Pvh),
            Some(Priority::FALLBACK)
        );
        // Xen with the hypervisor bit hidden: the scan sees nothing, the
        // signature is still there.
        let hidden = ctx(pvops_core::detect::CpuidScan::empty(), BootEntry::Pvh);
        assert_eq!(super::bid(&hidden, &Hv(b"XenVMMXenVMM")), None);
        assert_eq!(
            super::bid(&hidden, &Hv(b"KVMKVMKVM\0\0\0")),
            Some(Priority::FALLBACK)
        );
    }
}
