//! Platform services: early console, shutdown with an exit code, and the
//! identity of the installed backend (platform, name, features).

use crate::abi::start_info::HvmMemmapEntry;
use crate::detect::HypervisorKind;
use crate::table::ops;
use core::fmt;

/// What the kernel runs on, as far as its privileged operations go.
///
/// Non-exhaustive: each new backend adds a platform, so a kernel that
/// matches on it keeps a catch-all arm.
#[repr(u8)]
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Bare hardware, or a hypervisor whose paravirtual interface is not used.
    Native,
    /// KVM with its paravirtual features.
    Kvm,
    /// Xen, as a PVH guest (hardware virtualisation, Xen's PV interfaces).
    XenPvh,
    /// Xen, as a classic PV guest (ring 3, everything through hypercalls).
    XenPv,
    /// Xen, as an HVM guest entered by firmware or a loader (emulated
    /// legacy devices beside Xen's PV interfaces).
    XenHvm,
    /// VMware (or an emulation of its interface): native ops, frequencies
    /// from the hypervisor.
    Vmware,
}

impl Platform {
    /// The name used on the console protocol's platform line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Platform::Native => "native",
            Platform::Kvm => "kvm",
            Platform::XenPvh => "xen-pvh",
            Platform::XenPv => "xen-pv",
            Platform::XenHvm => "xen-hvm",
            Platform::Vmware => "vmware",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// At most this many features can be listed in one [`Features`].
pub const MAX_FEATURES: usize = 32;

/// The paravirtual features a backend turned on, by their documented names.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Features {
    names: [&'static str; MAX_FEATURES],
    len: usize,
}

impl Features {
    /// No features.
    pub const fn new() -> Self {
        Self {
            names: [""; MAX_FEATURES],
            len: 0,
        }
    }

    /// Adds `name`. Returns `false` when the list is full (the name is
    /// dropped; [`MAX_FEATURES`] is far above what any backend has).
    pub fn push(&mut self, name: &'static str) -> bool {
        if self.len == MAX_FEATURES {
            return false;
        }
        self.names[self.len] = name;
        self.len += 1;
        true
    }

    /// Whether `name` is on.
    pub fn contains(&self, name: &str) -> bool {
        self.iter().any(|n| n == name)
    }

    /// The names, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.names[..self.len].iter().copied()
    }

    /// How many features are on.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no feature is on.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Default for Features {
    fn default() -> Self {
        Self::new()
    }
}

/// Comma-separated names, or `-` when there are none (the console protocol's
/// form).
impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, n) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(n)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Who the installed backend is and what it turned on.
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// The platform the backend drives.
    pub platform: Platform,
    /// The backend's name (`native`, `kvm`, `xen`, ...).
    pub backend: &'static str,
    /// The paravirtual features in use.
    pub features: Features,
    /// The hypervisor found by detection, even when no backend drives it
    /// (`None` on bare hardware).
    pub hypervisor: Option<HypervisorKind>,
}

/// `platform=<p> backend=<b> features=<list> hypervisor=<h>`: the body of
/// the console protocol's platform line.
impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "platform={} backend={} features={} hypervisor=",
            self.platform, self.backend, self.features
        )?;
        match &self.hypervisor {
            Some(h) => write!(f, "{h}"),
            None => f.write_str("none"),
        }
    }
}

/// The console operations a backend provides.
pub trait ConsoleOps {
    /// Writes `bytes` to the early console, synchronously. Must work with
    /// interrupts off and from any CPU; may drop output rather than block
    /// forever.
    fn write(bytes: &[u8]);
}

/// A shutdown that whoever runs the machine asked the kernel for (a Xen
/// toolstack's `xl shutdown` / `xl reboot`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownRequest {
    /// Power off (`xl shutdown`).
    PowerOff,
    /// Reboot (`xl reboot`).
    Reboot,
    /// Not a shutdown: the domain was asked to suspend (`xl save`), and
    /// the backend suspended it and brought itself back up once it ran
    /// again: in a restored domain (`cancelled` false; everything the
    /// hypervisor forgot is made again, a one-shot timer armed before is
    /// lost), or in the same one (`cancelled` true).
    Suspended {
        /// The suspend was cancelled.
        cancelled: bool,
    },
}

/// The shutdown operations a backend provides.
pub trait ShutdownOps {
    /// Powers the machine (or domain) off, reporting `code` to whoever
    /// started it where the platform can carry it (QEMU's debug-exit device,
    /// Xen's shutdown reason). Never returns. After an acknowledged
    /// [`requested`](Self::requested) shutdown, ends the way that request
    /// asked.
    fn shutdown(code: u8) -> !;

    /// Polls for a shutdown request from outside (never blocks for long):
    /// `Some` once, acknowledged to the requester, when one came. Default:
    /// the platform has no such channel.
    fn requested() -> Option<ShutdownRequest> {
        None
    }
}

/// Where the platform itself (rather than the boot loader) says what
/// physical memory the kernel has.
pub trait MemoryMapOps {
    /// Writes the platform's memory map into `out` and returns how many
    /// entries it wrote; 0 when the platform has no map of its own (bare
    /// hardware: the loader's map is the one). Xen gives a PVH dom0 its map
    /// only this way (`XENMEM_memory_map`), not in the start info.
    fn memory_map(out: &mut [HvmMemmapEntry]) -> usize;
}

/// What a backend counts about its use of the hypervisor, for benchmarks
/// and reports, and what it can check of its registrations (every method
/// has a default: nothing counted, nothing registered).
pub trait CounterOps {
    /// Hypercalls issued by the backend since boot (all CPUs; a batch such
    /// as a Xen multicall counts once), or `None` if it does not count.
    fn hypercalls() -> Option<u64> {
        None
    }

    /// Reads back, on the calling CPU, every shared area this backend
    /// registered with the hypervisor for it (KVM: kvmclock, steal time,
    /// PV EOI) and compares it with what it wrote. A kernel calls it after
    /// something that could make the hypervisor forget (a live migration,
    /// a restore). `Ok` lists what was checked (empty: nothing
    /// registered); the first registration found different is the error.
    fn check_registrations() -> Result<Features, RegistrationLost> {
        Ok(Features::new())
    }

    /// Whether the hypervisor stopped the calling CPU's vCPU (the whole
    /// machine paused: a live migration, a debugger, `stop`/`cont`) since
    /// the last call, and clears the sign; `None` where the platform does
    /// not say (default). A kernel uses it to forgive a long gap in its own
    /// lockup watchdogs. KVM: kvmclock's `PVCLOCK_GUEST_STOPPED` flag.
    fn take_paused() -> Option<bool> {
        None
    }
}

/// A registration the hypervisor no longer holds as the backend made it
/// ([`CounterOps::check_registrations`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistrationLost {
    /// The feature it belongs to (its name on the platform line).
    pub feature: &'static str,
    /// What the backend wrote (e.g. an MSR value: address and enable bit).
    pub written: u64,
    /// What the hypervisor reports now.
    pub found: u64,
}

impl fmt::Display for RegistrationLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} registration lost: wrote {:#x}, the hypervisor now holds {:#x}",
            self.feature, self.written, self.found
        )
    }
}

/// The console, shutdown and memory-map group of the ops table.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct PlatformOpsTable {
    pub console_write: fn(&[u8]),
    pub shutdown: fn(u8) -> !,
    pub shutdown_requested: fn() -> Option<ShutdownRequest>,
    pub memory_map: fn(&mut [HvmMemmapEntry]) -> usize,
    pub hypercalls: fn() -> Option<u64>,
    pub check_registrations: fn() -> Result<Features, RegistrationLost>,
    pub take_paused: fn() -> Option<bool>,
}

impl PlatformOpsTable {
    /// The table that forwards every op to `T`.
    pub const fn of<T: ConsoleOps + ShutdownOps + MemoryMapOps + CounterOps>() -> Self {
        Self {
            console_write: <T as ConsoleOps>::write,
            shutdown: <T as ShutdownOps>::shutdown,
            shutdown_requested: <T as ShutdownOps>::requested,
            memory_map: <T as MemoryMapOps>::memory_map,
            hypercalls: <T as CounterOps>::hypercalls,
            check_registrations: <T as CounterOps>::check_registrations,
            take_paused: <T as CounterOps>::take_paused,
        }
    }
}

impl fmt::Debug for PlatformOpsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlatformOpsTable { .. }")
    }
}

/// Writes `bytes` to the early console. Before install this does nothing
/// (so a panic handler may always call it).
#[inline]
pub fn console_write(bytes: &[u8]) {
    (ops().platform.console_write)(bytes)
}

/// Powers off, reporting `code`. Before install this panics.
#[inline]
pub fn shutdown(code: u8) -> ! {
    (ops().platform.shutdown)(code)
}

/// A shutdown request from outside, if one came since the last call
/// ([`ShutdownOps::requested`]); acknowledged to the requester. A kernel
/// that gets one ends with [`shutdown`], which then ends the way asked.
#[inline]
pub fn shutdown_requested() -> Option<ShutdownRequest> {
    (ops().platform.shutdown_requested)()
}

/// The platform's own memory map (see [`MemoryMapOps::memory_map`]).
#[inline]
pub fn memory_map(out: &mut [HvmMemmapEntry]) -> usize {
    (ops().platform.memory_map)(out)
}

/// The identity of the installed backend (the uninstalled table's identity
/// says `backend=none`).
#[inline]
pub fn identity() -> &'static Identity {
    &ops().identity
}

/// A [`fmt::Write`] sink over [`console_write`], for `write!`/`writeln!`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console_write(s.as_bytes());
        Ok(())
    }
}

/// Hypercalls the installed backend issued since boot, if it counts them
/// ([`CounterOps::hypercalls`]).
pub fn hypercalls() -> Option<u64> {
    (ops().platform.hypercalls)()
}

/// Checks, on the calling CPU, that the hypervisor still holds what the
/// installed backend registered for it
/// ([`CounterOps::check_registrations`]).
pub fn check_registrations() -> Result<Features, RegistrationLost> {
    (ops().platform.check_registrations)()
}

/// Whether the hypervisor paused this CPU since the last call, clearing
/// the sign ([`CounterOps::take_paused`]); `None`: the platform does not
/// say.
pub fn take_paused() -> Option<bool> {
    (ops().platform.take_paused)()
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn features_display() {
        let mut f = Features::new();
        assert_eq!(f.to_string(), "-");
        f.push("kvmclock");
        f.push("pv-eoi");
        assert_eq!(f.to_string(), "kvmclock,pv-eoi");
        assert!(f.contains("pv-eoi"));
        assert!(!f.contains("pv-ipi"));
    }

    #[test]
    fn features_full_list_drops_extra() {
        let mut f = Features::new();
        for _ in 0..MAX_FEATURES {
            assert!(f.push("x"));
        }
        assert!(!f.push("y"));
        assert_eq!(f.len(), MAX_FEATURES);
    }

    #[test]
    fn identity_line() {
        let id = Identity {
            platform: Platform::Native,
            backend: "native",
            features: Features::new(),
            hypervisor: Some(HypervisorKind::Tcg),
        };
        assert_eq!(
            id.to_string(),
            "platform=native backend=native features=- hypervisor=tcg"
        );
    }
}
