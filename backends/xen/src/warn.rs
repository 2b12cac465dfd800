//! Warning and error lines, `pvops: warning: <text>` and
//! `pvops: error: <text>`, written whole to this backend's console (so
//! they appear even before the ops table is installed).

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

/// A line buffer that truncates instead of failing.
struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len() - self.len;
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

fn line(prefix: &str, args: fmt::Arguments<'_>) {
    let mut line = Line {
        buf: [0; 192],
        len: 0,
    };
    let _ = line.write_str(prefix);
    let _ = line.write_fmt(args);
    line.len = line.len.min(line.buf.len() - 1);
    line.buf[line.len] = b'\n';
    line.len += 1;
    emit(&line.buf[..line.len]);
}

/// Prints `pvops: warning: <args>`.
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    line("pvops: warning: ", args)
}

/// Prints `pvops: error: <args>`.
pub(crate) fn error(args: fmt::Arguments<'_>) {
    line("pvops: error: ", args)
}

/// Prints the warning unless `once` says it was printed already.
pub(crate) fn warn_once(once: &AtomicBool, args: fmt::Arguments<'_>) {
    if !once.swap(true, Ordering::Relaxed) {
        warn(args);
    }
}

#[cfg(not(test))]
fn emit(bytes: &[u8]) {
    crate::console::write(bytes)
}

#[cfg(test)]
std::thread_local! {
    static LOG: core::cell::RefCell<std::vec::Vec<std::string::String>> =
        const { core::cell::RefCell::new(std::vec::Vec::new()) };
}

#[cfg(test)]
fn emit(bytes: &[u8]) {
    let s = std::string::String::from_utf8_lossy(bytes).into_owned();
    LOG.with(|l| l.borrow_mut().push(s));
}

/// The lines this test thread printed, cleared.
#[cfg(test)]
pub(crate) fn take_log() -> std::vec::Vec<std::string::String> {
    LOG.with(|l| core::mem::take(&mut *l.borrow_mut()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_whole_and_truncated() {
        take_log();
        warn(format_args!("x={}", 5));
        error(format_args!("{}", "y".repeat(500)));
        let once = AtomicBool::new(false);
        warn_once(&once, format_args!("a"));
        warn_once(&once, format_args!("b"));
        let log = take_log();
        assert_eq!(log[0], "pvops: warning: x=5\n");
        assert!(log[1].starts_with("pvops: error: yyy"));
        assert_eq!(log[1].len(), 192);
        assert!(log[1].ends_with("y\n"));
        assert_eq!(log[2], "pvops: warning: a\n");
        assert_eq!(log.len(), 3);
    }
}
