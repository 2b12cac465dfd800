//! Choosing a backend at boot: each backend offers a detector with a
//! priority; the highest that says yes and initialises wins, and one that
//! fails to initialise gives way to the next (in the end, native).

use crate::cpu::CpuNumber;
use crate::detect::CpuidScan;
use crate::table::{install, InstallError, PvOps};
use crate::translate::KernelMap;
use core::fmt;

/// How the kernel was entered, which decides what a backend may assume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootEntry {
    /// The PVH entry: 32-bit protected mode, paging off, `hvm_start_info`
    /// in EBX (QEMU `-kernel`, Xen PVH).
    Pvh,
    /// Xen's classic PV entry: 64-bit, ring 3, `start_info` in RSI.
    XenPv,
    /// Some other loader (multiboot, UEFI, ...).
    Other,
}

/// What the kernel tells pvops about the machine at boot.
///
/// Made with [`BootContext::new`] (which fills every field it can
/// default), then its public fields set; new fields can then be added
/// without breaking kernels.
///
/// ```
/// use pvops_core::backend::{BootContext, BootEntry};
/// use pvops_core::translate::KernelMap;
/// # let scan = pvops_core::detect::CpuidScan::empty();
/// let mut ctx = BootContext::new(BootEntry::Other, "console=ttyS0", scan);
/// ctx.phys_offset = 0xffff_8000_0000_0000; // a direct map of all RAM
/// ctx.kernel_map = KernelMap::PageTables; // (the default)
/// ctx.rsdp = Some(0xf_5a00);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct BootContext<'a> {
    /// Physical memory (all RAM and the low 4 GiB of device memory) is
    /// mapped at virtual `paddr + phys_offset`; 0 for an identity map.
    pub phys_offset: u64,
    /// How the kernel image (where pvops' own statics live) is mapped:
    /// backends hand the hypervisor the physical address of per-CPU areas
    /// inside it. [`KernelMap::PageTables`] is right for any layout (pvops
    /// walks the live page tables through `phys_offset`);
    /// [`KernelMap::IDENTITY`] for an identity-mapped image. See
    /// [`crate::translate`].
    pub kernel_map: KernelMap,
    /// Who owns `IA32_TSC_AUX` and the kernel GS base, where a CPU number
    /// can be read without an exit: pvops ([`CpuNumber::Pvops`], the
    /// default) or the kernel ([`CpuNumber::Kernel`]).
    pub cpu_number: CpuNumber,
    /// Physical address of the ACPI RSDP if the loader gave one.
    pub rsdp: Option<u64>,
    /// The kernel command line (pvops reads `pvops.*` options from it).
    pub cmdline: &'a str,
    /// How the kernel was entered.
    pub entry: BootEntry,
    /// The hypervisor leaves found by [`crate::detect::scan`].
    pub cpuid: CpuidScan,
    /// The classic Xen PV start info, checked, when the kernel came in
    /// through the Xen PV entry (the backend needs its frame lists).
    pub xen_pv: Option<&'a crate::abi::pv_start_info::PvStartInfo>,
}

impl<'a> BootContext<'a> {
    /// A context for a kernel entered through `entry` with `cmdline`, whose
    /// hypervisor leaves `cpuid` found ([`crate::detect::scan`]): physical
    /// memory identity-mapped (`phys_offset` 0), the image found by walking
    /// the page tables ([`KernelMap::PageTables`]), pvops owning the
    /// CPU-number registers ([`CpuNumber::Pvops`]), no RSDP, no Xen PV
    /// start info. Set the fields that differ.
    pub fn new(entry: BootEntry, cmdline: &'a str, cpuid: CpuidScan) -> Self {
        BootContext {
            phys_offset: 0,
            kernel_map: KernelMap::PageTables,
            cpu_number: CpuNumber::Pvops,
            rsdp: None,
            cmdline,
            entry,
            cpuid,
            xen_pv: None,
        }
    }

    /// The value of `pvops.<key>=` on the command line, if present.
    pub fn option(&self, key: &str) -> Option<&str> {
        crate::cmdline::option(self.cmdline, key)
    }
}

/// A detector's bid: higher wins. Native bids [`Priority::FALLBACK`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority(pub u8);

/// Every backend's bid, in one place, so that the order among them is
/// read here and nowhere else. Higher wins; a backend that fails to
/// initialise gives way to the next. When one hypervisor offers another's
/// interface beside its own (Xen's Viridian leaves, KVM's Hyper-V
/// enlightenments), the native interface of the host should win: give it
/// the higher number.
impl Priority {
    /// The bid of a backend that works everywhere (native).
    pub const FALLBACK: Priority = Priority(0);
    /// KVM's paravirtual interface.
    pub const KVM: Priority = Priority(100);
    /// Hyper-V's enlightenments: above KVM, because where KVM offers both
    /// interfaces (QEMU's `hv-*` flags: Hyper-V's leaves at 0x40000000,
    /// KVM's at 0x40000100) the hyperv backend starts from the kvm
    /// backend's table and replaces only the ops where Hyper-V's costs
    /// fewer exits (see `pvops_hyperv`): it is KVM plus, never KVM minus.
    /// Below Xen, whose Viridian leaves sit beside its own and whose own
    /// interface must win there.
    pub const HYPERV: Priority = Priority(110);
    /// Xen (PVH, PV): above KVM, since Xen can present KVM-like leaves
    /// nowhere but its own range, and a Xen guest must never take KVM's
    /// path.
    pub const XEN: Priority = Priority(120);
    /// VMware's interface (CPUID timing leaf, backdoor port): below KVM,
    /// whose own leaves win where QEMU/KVM also emulates VMware's port.
    pub const VMWARE: Priority = Priority(90);
}

/// Why a backend could not be brought up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendError {
    /// The backend that failed.
    pub backend: &'static str,
    /// What failed, in words.
    pub reason: &'static str,
    /// A number that goes with it (an errno, an MSR, a version), if any.
    pub detail: Option<i64>,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "backend {}: {}", self.backend, self.reason)?;
        match self.detail {
            // Error numbers (negative) read best in decimal, addresses and
            // MSRs in hex.
            Some(d) if d < 0 => write!(f, " ({d})")?,
            Some(d) => write!(f, " ({d:#x})")?,
            None => {}
        }
        Ok(())
    }
}

impl core::error::Error for BackendError {}

/// One backend as detection sees it.
#[derive(Clone, Copy)]
pub struct Candidate {
    /// The backend's name, as `pvops.backend=` names it.
    pub name: &'static str,
    /// Says whether the backend can run here, and how much it wants to.
    pub detect: fn(&BootContext<'_>) -> Option<Priority>,
    /// Sets the backend up and returns its table.
    pub init: fn(&BootContext<'_>) -> Result<PvOps, BackendError>,
}

impl fmt::Debug for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Candidate")
            .field("name", &self.name)
            .finish()
    }
}

/// Why no backend was installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectError {
    /// No candidate said it can run here (or `pvops.backend=` named none
    /// that can).
    NoBackend,
    /// Every candidate that could run failed to initialise; the last error.
    AllFailed(BackendError),
    /// The table could not be installed.
    Install(InstallError),
    /// A [`BootContext`] field cannot be right; nothing was installed.
    BadContext(ContextError),
}

/// A [`BootContext`] field that cannot be right, found before any backend
/// ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    /// [`BootContext::kernel_map`] does not translate pvops' own statics.
    KernelMap(crate::translate::TranslateError),
    /// [`BootContext::rsdp`] is not mapped where pvops reads it (at
    /// `phys_offset + rsdp`, the direct map), or maps another frame there:
    /// reading it would fault or read the wrong memory.
    Rsdp {
        /// The RSDP's physical address as given.
        paddr: u64,
        /// What the walk of the live page tables found.
        error: crate::translate::TranslateError,
    },
    /// [`BootContext::cpu_number`]: the kernel's function named a CPU
    /// number pvops cannot hold (at least [`crate::irq::MAX_CPUS`]).
    CpuNumber(crate::cpu::CpuId),
}

impl fmt::Display for ContextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContextError::KernelMap(e) => write!(f, "BootContext::kernel_map: {e}"),
            ContextError::Rsdp { paddr, error } => write!(
                f,
                "BootContext::rsdp {paddr:#x} is not readable through the direct map: {error}"
            ),
            ContextError::CpuNumber(cpu) => write!(
                f,
                "BootContext::cpu_number: the kernel's function says CPU {}, but pvops holds \
                 CPUs 0..{}",
                cpu.0,
                crate::irq::MAX_CPUS
            ),
        }
    }
}

impl core::error::Error for ContextError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            ContextError::KernelMap(e) | ContextError::Rsdp { error: e, .. } => Some(e),
            ContextError::CpuNumber(_) => None,
        }
    }
}

/// How many bytes of the RSDP pvops reads (a revision 2 RSDP).
pub const RSDP_BYTES: usize = 36;

/// Checks that [`BootContext::rsdp`] (`paddr`) is mapped in the direct map
/// at `phys_offset + paddr`, at that very frame, for all of
/// [`RSDP_BYTES`]: `root` is the live page-table root and `mem` reads the
/// page tables (through the direct map). A kernel whose direct map leaves
/// the RSDP out gets this error at `init`, not a page fault later.
pub fn check_rsdp_mapped(
    paddr: u64,
    phys_offset: u64,
    root: crate::translate::PagingRoot,
    mem: &impl crate::phys::PhysRead,
) -> Result<(), ContextError> {
    use crate::translate::{walk_range, TranslateError};
    let bad = |error| ContextError::Rsdp { paddr, error };
    let vaddr = phys_offset
        .checked_add(paddr)
        .ok_or(bad(TranslateError::NonCanonical { vaddr: paddr }))?;
    match walk_range(root, vaddr, RSDP_BYTES, mem) {
        Ok(found) if found == paddr => Ok(()),
        Ok(found) => Err(bad(TranslateError::WrongFrame {
            vaddr,
            expected: paddr,
            found,
        })),
        Err(e) => Err(bad(e)),
    }
}

/// Checks [`BootContext::cpu_number`]: a kernel-owned number that is
/// already recorded must be one pvops can hold.
pub fn check_cpu_number(owner: CpuNumber) -> Result<(), ContextError> {
    match owner {
        CpuNumber::Kernel(f) => match f() {
            Some(cpu) if cpu.0 as usize >= crate::irq::MAX_CPUS => {
                Err(ContextError::CpuNumber(cpu))
            }
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

impl fmt::Display for SelectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SelectError::NoBackend => f.write_str("no pvops backend can run here"),
            SelectError::AllFailed(e) => write!(f, "every pvops backend failed; last: {e}"),
            SelectError::Install(e) => e.fmt(f),
            SelectError::BadContext(e) => write!(f, "bad boot context: {e}"),
        }
    }
}

impl core::error::Error for SelectError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            SelectError::NoBackend => None,
            SelectError::AllFailed(e) => Some(e),
            SelectError::Install(e) => Some(e),
            SelectError::BadContext(e) => Some(e),
        }
    }
}

/// Picks the highest-bidding candidate that initialises and installs its
/// table. `pvops.backend=<name>` on the command line restricts the choice
/// to that backend. Each backend that bid but failed is passed to
/// `on_fallback` before the next is tried, so the kernel can print it.
pub fn select_and_install(
    ctx: &BootContext<'_>,
    candidates: &[Candidate],
    mut on_fallback: impl FnMut(&BackendError),
) -> Result<&'static PvOps, SelectError> {
    let forced = ctx.option("backend");
    let mut bids: [Option<(Priority, usize)>; 8] = [None; 8];
    let mut n = 0;
    for (i, c) in candidates.iter().enumerate() {
        if forced.is_some_and(|f| f != c.name) {
            continue;
        }
        if let Some(p) = (c.detect)(ctx) {
            if n < bids.len() {
                bids[n] = Some((p, i));
                n += 1;
            }
        }
    }
    // Highest priority first; among equals, the earlier candidate.
    bids[..n].sort_unstable_by(|a, b| {
        let (pa, ia) = a.expect("filled");
        let (pb, ib) = b.expect("filled");
        pb.cmp(&pa).then(ia.cmp(&ib))
    });
    let mut last = None;
    for (_, i) in bids[..n].iter().flatten() {
        match (candidates[*i].init)(ctx) {
            Ok(table) => return install(table).map_err(SelectError::Install),
            Err(e) => {
                on_fallback(&e);
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e) => SelectError::AllFailed(e),
        None => SelectError::NoBackend,
    })
}
