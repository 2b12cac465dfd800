//! `kprint!`/`kprintln!` over pvops' console op.

/// Prints to the pvops console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!(pvops::platform::Console, $($arg)*);
    }};
}

/// Prints a line to the pvops console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!(pvops::platform::Console, $($arg)*);
    }};
}

/// A fixed-size message buffer for test failure reasons (no heap here).
pub struct Message {
    buf: [u8; 160],
    len: usize,
    skip: bool,
}

impl Message {
    pub const fn new() -> Self {
        Self {
            buf: [0; 160],
            len: 0,
            skip: false,
        }
    }

    /// A self-test's `skipped: <reason>` instead of a failure: the
    /// environment lacks what the test needs.
    pub const fn skip() -> Self {
        let mut m = Self::new();
        m.skip = true;
        m
    }

    /// Whether this is a skip, not a failure.
    pub const fn is_skip(&self) -> bool {
        self.skip
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<bad utf-8>")
    }
}

impl core::fmt::Write for Message {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = self.buf.len() - self.len;
        // Truncate at a char boundary rather than fail the whole message.
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

impl core::fmt::Debug for Message {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}
