//! CPU ops: the hardware's (a PVH guest runs in ring 0 with hardware
//! virtualisation), except CPU numbering and start-up, which are Xen's
//! vCPUs ([`crate::smp`]), and `io_delay`, which is nothing: no ISA bus
//! behind a PVH guest needs a pause between accesses (Linux under Xen does
//! the same).

use crate::XenPvh;
use pvops_core::cpu::{
    CpuId, CpuOps, CpuidResult, DescriptorTablePointer, PortWidth, SecondaryStart, StartCpuError,
};
use pvops_core::irq::CpuMask;
use pvops_native::Native;

impl CpuOps for XenPvh {
    #[inline]
    fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
        Native::cpuid(leaf, subleaf)
    }

    #[inline]
    fn read_cr0() -> u64 {
        Native::read_cr0()
    }

    #[inline]
    unsafe fn write_cr0(value: u64) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::write_cr0(value) }
    }

    #[inline]
    fn read_cr4() -> u64 {
        Native::read_cr4()
    }

    #[inline]
    unsafe fn write_cr4(value: u64) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::write_cr4(value) }
    }

    #[inline]
    unsafe fn read_msr(msr: u32) -> u64 {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::read_msr(msr) }
    }

    #[inline]
    unsafe fn write_msr(msr: u32, value: u64) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::write_msr(msr, value) }
    }

    #[inline]
    unsafe fn load_gdt(gdt: &DescriptorTablePointer) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::load_gdt(gdt) }
    }

    #[inline]
    unsafe fn load_idt(idt: &DescriptorTablePointer) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::load_idt(idt) }
    }

    #[inline]
    unsafe fn load_tr(selector: u16) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::load_tr(selector) }
    }

    #[inline]
    unsafe fn port_read(port: u16, width: PortWidth) -> u32 {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::port_read(port, width) }
    }

    #[inline]
    unsafe fn port_write(port: u16, width: PortWidth, value: u32) {
        // SAFETY: forwarded; the caller upholds the op's contract.
        unsafe { Native::port_write(port, width, value) }
    }

    #[inline]
    fn io_delay() {}

    #[inline]
    fn current_cpu() -> CpuId {
        CpuId(crate::percpu::current())
    }

    fn possible_cpus() -> CpuMask {
        crate::smp::possible()
    }

    fn start_cpu(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
        crate::smp::start(cpu, how)
    }

    fn init_secondary() {
        crate::smp::init_secondary()
    }
}
