//! The PVH table: native's, inline bytes included, with the entries Xen
//! does better replaced. A PVH guest runs in ring 0 with hardware
//! virtualisation, so the interrupt flag (an HVM guest's RFLAGS.IF gates
//! Xen's upcalls too), the control registers, MSRs, descriptor tables,
//! page tables and local TLB flushes are the instructions, and their call
//! sites are patched into them as on bare hardware. EOIs go to the
//! emulated local APIC (native's). What Xen replaces:
//!
//! | entries | how |
//! |---|---|
//! | time, locks, console, shutdown, memory map, hypercall count | [`crate::XenCommon`] ([`crate::common_table`]) |
//! | `cpu.current_cpu`, `possible_cpus`, `start_cpu`, `init_secondary` | Xen's vCPUs ([`crate::percpu`], [`crate::smp`]) |
//! | `cpu.io_delay` | nothing: no ISA bus behind a PVH guest needs a pause (Linux under Xen does the same) |
//! | `irq.send_ipi` | event channels ([`crate::ipi`]) |
//! | `irq.halt` | [`halt`] |
//! | `mmu.flush_tlb_others` | pvops' IPI flush ([`pvops_core::smp::flush_tlb_by_ipi`]), the IPIs over event channels |

use pvops_core::cpu::CpuId;
use pvops_core::platform::Identity;
use pvops_core::table::PvOps;

/// The PVH backend's table.
pub(crate) fn table(identity: Identity) -> PvOps {
    let mut t = crate::common_table(pvops_native::table(identity), identity);
    t.cpu.io_delay = io_delay;
    t.cpu.current_cpu = current_cpu;
    t.cpu.possible_cpus = crate::smp::possible;
    t.cpu.start_cpu = crate::smp::start;
    t.cpu.init_secondary = crate::smp::init_secondary;
    t.irq.send_ipi = crate::ipi::send_ipi;
    t.irq.halt = halt;
    t.mmu.flush_tlb_others = pvops_core::smp::flush_tlb_by_ipi;
    t
}

/// `cpu.io_delay`: nothing (see the module docs).
fn io_delay() {}

/// `cpu.current_cpu`: the vCPU id (`IA32_TSC_AUX` or the slow path, see
/// [`crate::percpu`]).
fn current_cpu() -> CpuId {
    CpuId(crate::percpu::current())
}

/// `irq.halt`.
///
/// ## `sti; hlt`, not `SCHEDOP_block`
/// For an HVM vCPU, Xen's `hlt` handler blocks the vCPU only after checking
/// for a deliverable interrupt or event, and `sti; hlt` (native's
/// `irq.safe_halt`) leaves no window between the two (`hlt` runs in
/// `sti`'s interrupt shadow; Xen clears the shadow when it steps past
/// `hlt`, so its check sees IF set). A `SCHEDOP_block` hypercall after
/// `sti` would run inside that shadow, where Xen's check counts a pending
/// upcall as blocked and the vCPU could sleep on a wake-up that already
/// arrived. `halt` with interrupts *off* must not execute `hlt` at all:
/// Xen takes an HVM vCPU that halts with IF clear as going down (and the
/// whole domain with its last vCPU); it blocks in `SCHEDOP_block`
/// instead, which returns on the next event.
fn halt() {
    if x86_64::instructions::interrupts::are_enabled() {
        x86_64::instructions::hlt();
    } else {
        let _ = crate::xen::XEN.block();
    }
}

#[cfg(test)]
mod tests {
    use pvops_core::patch::{binding, Binding, Op};
    use pvops_core::platform::{Features, Identity, Platform};

    const ID: Identity = Identity {
        platform: Platform::XenPvh,
        backend: crate::NAME,
        features: Features::new(),
        hypervisor: None,
    };

    /// Every site of an op PVH leaves to native keeps native's binding,
    /// inline bytes included; the clock's sites call Xen's clock directly;
    /// no site goes through the table.
    #[test]
    fn sites_stay_natives_or_call_xen_directly() {
        let t = super::table(ID);
        let native = pvops_native::table(ID);
        for op in Op::ALL {
            let b = binding(&t, op);
            assert!(matches!(b, Binding::Backend { .. }), "{}", op.name());
            // Miri gives a function a fresh address at each use, so two
            // builds of one table differ there; the addresses are compared
            // natively only.
            let comparable = |b: Binding| match b {
                Binding::Backend { call, inline } => (if cfg!(miri) { 0 } else { call }, inline),
                _ => (u64::MAX, None),
            };
            if op == Op::SchedClock {
                if !cfg!(miri) {
                    assert_ne!(b, binding(&native, op));
                }
            } else {
                assert_eq!(
                    comparable(b),
                    comparable(binding(&native, op)),
                    "{}",
                    op.name()
                );
                assert!(
                    matches!(
                        b,
                        Binding::Backend {
                            inline: Some(_),
                            ..
                        }
                    ),
                    "{} has no inline bytes",
                    op.name()
                );
            }
        }
        assert_eq!(t.identity.platform, Platform::XenPvh);
        if !cfg!(miri) {
            assert_eq!(
                t.platform.console_write as *const () as usize,
                <crate::XenCommon as pvops_core::platform::ConsoleOps>::write as *const () as usize
            );
        }
    }
}
