//! Virtual processors (`hv-vpindex`): each CPU's VP index, read from
//! `HV_X64_MSR_VP_INDEX` on that CPU as it starts and kept by APIC ID,
//! and VP sets made from CPU masks (the targets of IPIs and flushes).
//! Also the per-CPU input buffers of memory-input hypercalls.
//!
//! A VP index at or beyond [`MAX_VP`] (or the host's own limit) is
//! [`HvError::VpIndexOutOfRange`]: that CPU is left out of VP sets, and
//! any op aimed at it falls back to the base op for that call.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};
use pvops_core::cpu::CpuId;
use pvops_core::irq::{CpuMask, MAX_CPUS};

use crate::abi::{self, vpset};
use crate::hypercall::{refuse, HvError, Hypervisor};

/// VP indices a sparse set can name: 64 banks of 64.
pub const MAX_VP: u32 = (vpset::MAX_BANKS * 64) as u32;

/// No VP index known.
const UNKNOWN: u32 = u32::MAX;

static VP_OF: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(UNKNOWN) }; MAX_CPUS];

/// The VP index of `cpu`, if it registered one.
pub fn vp_of(cpu: CpuId) -> Option<u32> {
    let v = VP_OF.get(cpu.0 as usize)?.load(Ordering::Relaxed);
    (v != UNKNOWN).then_some(v)
}

/// Reads this CPU's VP index and records it for `cpu`; `limit` is the
/// host's VP limit (leaf 0x40000005 EAX; 0: not given).
pub fn register<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId, limit: u32) -> Result<u32, HvError> {
    let slot = VP_OF
        .get(cpu.0 as usize)
        .ok_or(HvError::CpuOutOfRange(cpu.0))?;
    refuse(h, crate::fault_points::VP_INDEX, abi::msr::VP_INDEX)?;
    // SAFETY: VP_INDEX's privilege bit was checked; reading has no effect.
    let index = unsafe { h.read_msr(abi::msr::VP_INDEX) };
    let limit = match limit {
        0 => MAX_VP,
        l => l.min(MAX_VP),
    };
    if index >= u64::from(limit) {
        return Err(HvError::VpIndexOutOfRange {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            limit,
        });
    }
    slot.store(index as u32, Ordering::Relaxed);
    Ok(index as u32)
}

/// A VP set: a 64-bit bank per 64 VPs, the banks in use in `valid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VpSet {
    /// Bit n: bank n is in use.
    pub valid: u64,
    /// The banks.
    pub banks: [u64; vpset::MAX_BANKS],
}

impl VpSet {
    /// The empty set.
    pub const fn new() -> Self {
        VpSet {
            valid: 0,
            banks: [0; vpset::MAX_BANKS],
        }
    }

    /// Adds VP `vp` (below [`MAX_VP`]).
    pub fn insert(&mut self, vp: u32) {
        let bank = (vp / 64) as usize;
        if bank < vpset::MAX_BANKS {
            self.banks[bank] |= 1 << (vp % 64);
            self.valid |= 1 << bank;
        }
    }

    /// Whether no VP is in it.
    pub fn is_empty(&self) -> bool {
        self.valid == 0
    }

    /// The set as one 64-bit mask, when every VP is below 64.
    pub fn as_mask(&self) -> Option<u64> {
        match self.valid {
            0 => Some(0),
            1 => Some(self.banks[0]),
            _ => None,
        }
    }

    /// The banks in use, in order (what a sparse set carries).
    pub fn used_banks(&self) -> impl Iterator<Item = u64> + '_ {
        (0..vpset::MAX_BANKS)
            .filter(move |b| self.valid & (1 << b) != 0)
            .map(move |b| self.banks[b])
    }
}

impl Default for VpSet {
    fn default() -> Self {
        Self::new()
    }
}

/// The VP set of `cpus` through `vp_of`; the first CPU without a VP index
/// is an error (the caller falls back for that call).
pub fn set_of(cpus: &CpuMask, vp_of: impl Fn(CpuId) -> Option<u32>) -> Result<VpSet, HvError> {
    let mut set = VpSet::new();
    for cpu in cpus.iter() {
        set.insert(vp_of(cpu).ok_or(HvError::NoVpIndex(cpu.0))?);
    }
    Ok(set)
}

/// Bytes of one CPU's hypercall input buffer: the largest input (an Ex
/// flush with 64 banks and a few GVAs) fits; aligned to its size so it
/// never crosses a page, as the TLFS requires.
pub const INPUT_BYTES: usize = 1024;

/// One CPU's input buffer.
#[repr(C, align(1024))]
pub(crate) struct Input(UnsafeCell<[u64; INPUT_BYTES / 8]>);

// SAFETY: each buffer is used only by its own CPU with interrupts off
// (see `with_input`), and read by the host during that CPU's hypercall.
unsafe impl Sync for Input {}

static INPUTS: [Input; MAX_CPUS] =
    [const { Input(UnsafeCell::new([0; INPUT_BYTES / 8])) }; MAX_CPUS];

/// Fills `cpu`'s input buffer with `fill`, then runs `call` with what
/// `fill` returned and the buffer's physical address (interrupts masked
/// throughout, so a handler on this CPU cannot reuse the buffer); `None`
/// when the buffer was never registered. No Rust reference to the buffer
/// lives while `call` runs: the host reads it then.
pub fn with_input<T, R>(
    cpu: CpuId,
    mask_irqs: bool,
    fill: impl FnOnce(&mut [u64; INPUT_BYTES / 8]) -> T,
    call: impl FnOnce(T, u64) -> R,
) -> Option<R> {
    let input = INPUTS.get(cpu.0 as usize)?;
    let pa = input_pa(cpu)?;
    let run = || {
        let ptr = input.0.get();
        // SAFETY: only this CPU uses its buffer, and interrupts are off (or,
        // in host tests, nothing runs beside), so nothing else holds a
        // reference to it now; this one ends before `call`.
        let t = fill(unsafe { &mut *ptr });
        call(t, pa)
    };
    Some(if mask_irqs {
        pvops_core::irq::without_interrupts(run)
    } else {
        run()
    })
}

/// The physical address of a buffer at `vaddr`, cached per CPU at setup.
static INPUT_PA: [core::sync::atomic::AtomicU64; MAX_CPUS] =
    [const { core::sync::atomic::AtomicU64::new(0) }; MAX_CPUS];

/// Finds and records the physical address of `cpu`'s input buffer.
pub fn register_input<H: Hypervisor + ?Sized>(h: &H, cpu: CpuId) -> Result<(), HvError> {
    let input = INPUTS
        .get(cpu.0 as usize)
        .ok_or(HvError::CpuOutOfRange(cpu.0))?;
    let pa = h
        .phys_of_range(input.0.get() as u64, INPUT_BYTES)
        .map_err(|cause| HvError::Untranslatable { msr: 0, cause })?;
    INPUT_PA[cpu.0 as usize].store(pa, Ordering::Relaxed);
    Ok(())
}

/// The physical address of `cpu`'s input buffer, if registered.
pub fn input_pa(cpu: CpuId) -> Option<u64> {
    let pa = INPUT_PA.get(cpu.0 as usize)?.load(Ordering::Relaxed);
    (pa != 0).then_some(pa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::tests::FakeHv;

    #[test]
    fn vp_index_is_bounded() {
        let h = FakeHv::default();
        h.reads.borrow_mut().insert(abi::msr::VP_INDEX, 5);
        assert_eq!(register(&h, CpuId(2), 8), Ok(5));
        assert_eq!(vp_of(CpuId(2)), Some(5));
        h.reads.borrow_mut().insert(abi::msr::VP_INDEX, 8);
        assert_eq!(
            register(&h, CpuId(3), 8),
            Err(HvError::VpIndexOutOfRange { index: 8, limit: 8 })
        );
        assert_eq!(vp_of(CpuId(3)), None);
        h.reads.borrow_mut().insert(abi::msr::VP_INDEX, 1 << 40);
        assert!(matches!(
            register(&h, CpuId(3), 0),
            Err(HvError::VpIndexOutOfRange { limit: MAX_VP, .. })
        ));
        assert_eq!(
            register(&h, CpuId(300), 0),
            Err(HvError::CpuOutOfRange(300))
        );
    }

    #[test]
    fn sets_and_masks() {
        let mut cpus = CpuMask::new();
        cpus.insert(CpuId(1));
        cpus.insert(CpuId(4));
        let s = set_of(&cpus, |c| Some(c.0 * 2)).unwrap();
        assert_eq!(s.as_mask(), Some((1 << 2) | (1 << 8)));
        let s = set_of(&cpus, |c| Some(c.0 * 100)).unwrap();
        assert_eq!(s.as_mask(), None);
        assert_eq!(s.valid, (1 << 1) | (1 << 6));
        assert_eq!(
            s.used_banks().collect::<std::vec::Vec<_>>(),
            [1 << 36, 1 << 16]
        );
        assert_eq!(
            set_of(&cpus, |c| (c.0 == 1).then_some(0)),
            Err(HvError::NoVpIndex(4))
        );
    }
}
