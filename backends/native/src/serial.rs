//! A 16550 UART as the early console.

use core::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use x86_64::instructions::port::Port;

/// COM1.
pub const COM1: u16 = 0x3f8;

const DATA: u16 = 0;
const INT_ENABLE: u16 = 1;
const FIFO_CTRL: u16 = 2;
const LINE_CTRL: u16 = 3;
const MODEM_CTRL: u16 = 4;
const LINE_STATUS: u16 = 5;
const SCRATCH: u16 = 7;
const LSR_THR_EMPTY: u8 = 0x20;

/// 0 while no UART was found.
static BASE: AtomicU16 = AtomicU16::new(0);
static LOCK: AtomicBool = AtomicBool::new(false);

fn outb(base: u16, reg: u16, v: u8) {
    // SAFETY: `base` is a 16550 found by `init`; its registers are ports.
    unsafe { Port::<u8>::new(base + reg).write(v) }
}

fn inb(base: u16, reg: u16) -> u8 {
    // SAFETY: as in `outb`; reading these registers has no side effect we
    // rely on not happening.
    unsafe { Port::<u8>::new(base + reg).read() }
}

/// Finds and programs the UART at `base` (115200 8N1, FIFOs on, no
/// interrupts). Returns whether one answered: the scratch register must hold
/// what was written to it.
pub fn init(base: u16) -> bool {
    outb(base, SCRATCH, 0x5a);
    if inb(base, SCRATCH) != 0x5a {
        return false;
    }
    outb(base, INT_ENABLE, 0x00);
    outb(base, LINE_CTRL, 0x80); // divisor latch
    outb(base, DATA, 0x01); // 115200 baud
    outb(base, INT_ENABLE, 0x00);
    outb(base, LINE_CTRL, 0x03); // 8N1
    outb(base, FIFO_CTRL, 0xc7);
    outb(base, MODEM_CTRL, 0x03); // DTR, RTS
    BASE.store(base, Ordering::Release);
    true
}

/// Whether a UART is in use.
pub fn present() -> bool {
    BASE.load(Ordering::Acquire) != 0
}

fn put(base: u16, b: u8) {
    // Bounded wait: a stuck UART drops output rather than hanging.
    for _ in 0..100_000 {
        if inb(base, LINE_STATUS) & LSR_THR_EMPTY != 0 {
            break;
        }
        core::hint::spin_loop();
    }
    outb(base, DATA, b);
}

/// Writes `bytes`, turning `\n` into `\r\n`. Output from several CPUs is
/// kept whole per call; a call that cannot get the lock in time (say, an
/// interrupt handler on the CPU that holds it) writes anyway rather than
/// deadlock.
pub fn write(bytes: &[u8]) {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let mut locked = false;
    for _ in 0..1_000_000 {
        if LOCK
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            locked = true;
            break;
        }
        core::hint::spin_loop();
    }
    for &b in bytes {
        if b == b'\n' {
            put(base, b'\r');
        }
        put(base, b);
    }
    if locked {
        LOCK.store(false, Ordering::Release);
    }
}
