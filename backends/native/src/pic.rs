//! The legacy 8259 PIC pair: remapped away from the exception vectors and
//! fully masked, since pvops takes interrupts from the local APIC only.
//! Firmware leaves it at vectors 0x08-0x0f, where the PIT's IRQ 0 would
//! arrive looking like a double fault.

use x86_64::instructions::port::Port;

const MASTER_CMD: u16 = 0x20;
const MASTER_DATA: u16 = 0x21;
const SLAVE_CMD: u16 = 0xa0;
const SLAVE_DATA: u16 = 0xa1;
/// Where the PICs' 16 vectors are parked (masked, but a spurious IRQ 7 or
/// 15 can still arrive there).
pub const PIC_VECTOR_BASE: u8 = 0x20;

/// Remaps both PICs to [`PIC_VECTOR_BASE`].. and masks every line.
pub fn disable() {
    let mut mc = Port::<u8>::new(MASTER_CMD);
    let mut md = Port::<u8>::new(MASTER_DATA);
    let mut sc = Port::<u8>::new(SLAVE_CMD);
    let mut sd = Port::<u8>::new(SLAVE_DATA);
    let delay = || crate::cpu_io_delay();
    // SAFETY: the standard ICW1-ICW4 initialisation of the two 8259s at
    // their fixed ports, then OCW1 masking every line; this touches no memory.
    unsafe {
        mc.write(0x11);
        delay();
        sc.write(0x11);
        delay();
        md.write(PIC_VECTOR_BASE);
        delay();
        sd.write(PIC_VECTOR_BASE + 8);
        delay();
        md.write(0x04); // slave on IRQ 2
        delay();
        sd.write(0x02);
        delay();
        md.write(0x01); // 8086 mode
        delay();
        sd.write(0x01);
        delay();
        md.write(0xff);
        sd.write(0xff);
    }
}
