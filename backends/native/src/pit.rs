//! The 8254 PIT, used only as a known-frequency reference to measure the
//! TSC against (channel 2, gated through port 0x61, no interrupt needed).

use x86_64::instructions::port::Port;

/// The PIT's input clock.
pub const PIT_HZ: u64 = 1_193_182;

const PORT_CH2_DATA: u16 = 0x42;
const PORT_COMMAND: u16 = 0x43;
const PORT_GATE: u16 = 0x61;
const GATE_CH2: u8 = 0x01;
const SPEAKER: u8 = 0x02;
const CH2_OUT: u8 = 0x20;

/// Counts TSC ticks while PIT channel 2 counts down `pit_ticks`; `None`
/// when the PIT output never rises (no PIT, or it does not count).
pub fn tsc_ticks_during(pit_ticks: u16) -> Option<u64> {
    let mut gate = Port::<u8>::new(PORT_GATE);
    let mut cmd = Port::<u8>::new(PORT_COMMAND);
    let mut data = Port::<u8>::new(PORT_CH2_DATA);
    // SAFETY: ports 0x42/0x43/0x61 are the PIT channel 2 and its gate on
    // every PC-compatible machine; programming channel 2 touches neither
    // the system timer (channel 0) nor memory.
    unsafe {
        let g = gate.read();
        gate.write((g & !SPEAKER) | GATE_CH2);
        // Channel 2, lobyte/hibyte, mode 0 (interrupt on terminal count).
        cmd.write(0b1011_0000);
        data.write(pit_ticks as u8);
        data.write((pit_ticks >> 8) as u8);
    }
    let start = crate::tsc::read();
    // Bounded: ~1e7 port reads is far beyond any real countdown.
    for _ in 0..10_000_000u32 {
        // SAFETY: reading the gate port only reports state.
        if unsafe { gate.read() } & CH2_OUT != 0 {
            return Some(crate::tsc::read() - start);
        }
    }
    None
}

const PORT_CH0_DATA: u16 = 0x40;

/// Counts TSC ticks while PIT channel 0 counts down `pit_ticks`, polling its
/// latched count (needs no gate port, unlike [`tsc_ticks_during`]); `None`
/// when the count does not move (no PIT).
pub fn tsc_ticks_counting(pit_ticks: u16) -> Option<u64> {
    // SAFETY: channel 0, lobyte/hibyte, mode 2 (rate generator) from
    // 0xffff: the system timer, which nothing else uses this early; its
    // interrupt line is masked (PIC disabled, I/O APIC pins masked).
    unsafe {
        Port::<u8>::new(PORT_COMMAND).write(0b0011_0100);
        let mut d = Port::<u8>::new(PORT_CH0_DATA);
        d.write(0xff);
        d.write(0xff);
    }
    let mut cmd = Port::<u8>::new(PORT_COMMAND);
    let mut data = Port::<u8>::new(PORT_CH0_DATA);
    let mut read = || {
        // SAFETY: latching and reading channel 0's count only reports it.
        unsafe {
            cmd.write(0b0000_0000);
            let lo = data.read();
            let hi = data.read();
            u16::from(lo) | u16::from(hi) << 8
        }
    };
    let first = read();
    // Wait for the first change, so the window starts on a tick edge.
    let mut start_count = first;
    let mut moved = false;
    for _ in 0..1_000_000u32 {
        start_count = read();
        if start_count != first {
            moved = true;
            break;
        }
    }
    if !moved {
        return None;
    }
    let start = crate::tsc::read();
    // Bounded like the channel-2 loop; mode 2 counts down and reloads at 1,
    // so the window must stay below 0xffff ticks (10 ms is 11932).
    for _ in 0..10_000_000u32 {
        let now = read();
        if start_count.wrapping_sub(now) >= pit_ticks && now < start_count {
            return Some(crate::tsc::read() - start);
        }
    }
    None
}
