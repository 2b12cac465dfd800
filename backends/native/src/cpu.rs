//! CPU ops as the instructions themselves.

use crate::{apic, Native};
use core::arch::asm;
use pvops_core::cpu::{
    CpuId, CpuOps, CpuidResult, DescriptorTablePointer, PortWidth, SecondaryStart, StartCpuError,
};
use pvops_core::detect::{CpuidSource, HardwareCpuid};
use pvops_core::irq::CpuMask;
use x86_64::instructions::port::Port;
use x86_64::registers::control::{Cr0, Cr4};
use x86_64::registers::model_specific::Msr;

impl CpuOps for Native {
    #[inline]
    fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
        HardwareCpuid.cpuid(leaf, subleaf)
    }

    #[inline]
    fn read_cr0() -> u64 {
        Cr0::read_raw()
    }

    #[inline]
    unsafe fn write_cr0(value: u64) {
        // SAFETY: the caller upholds `CpuOps::write_cr0`'s contract.
        unsafe { Cr0::write_raw(value) }
    }

    #[inline]
    fn read_cr4() -> u64 {
        Cr4::read_raw()
    }

    #[inline]
    unsafe fn write_cr4(value: u64) {
        // SAFETY: the caller upholds `CpuOps::write_cr4`'s contract.
        unsafe { Cr4::write_raw(value) }
    }

    #[inline]
    unsafe fn read_msr(msr: u32) -> u64 {
        // SAFETY: the caller guarantees the MSR exists.
        unsafe { Msr::new(msr).read() }
    }

    #[inline]
    unsafe fn write_msr(msr: u32, value: u64) {
        // SAFETY: the caller guarantees the MSR exists and takes `value`.
        unsafe { Msr::new(msr).write(value) }
    }

    #[inline]
    unsafe fn load_gdt(gdt: &DescriptorTablePointer) {
        // SAFETY: the caller keeps the table valid while it is loaded.
        unsafe { x86_64::instructions::tables::lgdt(gdt) }
    }

    #[inline]
    unsafe fn load_idt(idt: &DescriptorTablePointer) {
        // SAFETY: the caller keeps the table and its handlers valid.
        unsafe { x86_64::instructions::tables::lidt(idt) }
    }

    #[inline]
    unsafe fn load_tr(selector: u16) {
        // SAFETY: the caller guarantees `selector` names an available TSS.
        unsafe { asm!("ltr {0:x}", in(reg) selector, options(nostack, preserves_flags)) }
    }

    #[inline]
    unsafe fn port_read(port: u16, width: PortWidth) -> u32 {
        // SAFETY: the caller accepts the device side effects of the read.
        unsafe {
            match width {
                PortWidth::Byte => Port::<u8>::new(port).read().into(),
                PortWidth::Word => Port::<u16>::new(port).read().into(),
                PortWidth::Dword => Port::<u32>::new(port).read(),
            }
        }
    }

    #[inline]
    unsafe fn port_write(port: u16, width: PortWidth, value: u32) {
        // SAFETY: the caller guarantees the write is valid for the device.
        // Narrow widths take the low bits, as `out` itself does.
        unsafe {
            match width {
                PortWidth::Byte => Port::<u8>::new(port).write(value as u8),
                PortWidth::Word => Port::<u16>::new(port).write(value as u16),
                PortWidth::Dword => Port::<u32>::new(port).write(value),
            }
        }
    }

    #[inline]
    fn io_delay() {
        // Port 0x80 is the POST diagnostic port: writing it is harmless and
        // takes about a microsecond on an ISA bus, as Linux relies on.
        // SAFETY: nothing decodes port 0x80 but POST-code displays.
        unsafe { Port::<u8>::new(0x80).write(0) }
    }

    #[inline]
    fn current_cpu() -> CpuId {
        CpuId(apic::id())
    }

    fn possible_cpus() -> CpuMask {
        crate::smp::possible()
    }

    fn start_cpu(cpu: CpuId, how: &SecondaryStart) -> Result<(), StartCpuError> {
        crate::smp::start(cpu, how)
    }

    fn init_secondary() {
        // SAFETY: the APIC page stays mapped as at boot (the kernel's
        // contract); this runs once on the new CPU before interrupts.
        unsafe { apic::init_secondary(crate::phys_offset()) };
        crate::smp::ONLINE.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    }
}
