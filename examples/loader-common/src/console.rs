//! The console: pvops' once a backend is installed (COM1 natively, Xen's
//! console under Xen), before that the 16550 at COM1 directly, so that a
//! failure before or inside `pvops::init` is seen. (pvops' own console
//! drops bytes until a backend is installed.)

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

static EARLY: AtomicBool = AtomicBool::new(false);

/// Programs COM1 for the lines printed before `pvops::init`. Returns
/// whether a UART answered.
pub fn init_early() -> bool {
    let found = pvops::native::serial::init(pvops::native::serial::COM1);
    EARLY.store(found, Ordering::Release);
    found
}

/// A `fmt::Write` for the console.
#[derive(Debug, Clone, Copy)]
pub struct Out;

impl fmt::Write for Out {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if pvops::is_installed() {
            pvops::platform::console_write(s.as_bytes());
        } else if EARLY.load(Ordering::Acquire) {
            pvops::native::serial::write(s.as_bytes());
        }
        Ok(())
    }
}
