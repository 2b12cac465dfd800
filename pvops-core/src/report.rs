//! Whole console lines for backends' `pvops: warning:` / `pvops: error:`
//! reports: formatted into a fixed buffer (there is no heap), cut rather
//! than failed when too long, and handed to the console in one write so
//! lines from several CPUs do not interleave.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

/// The longest line, newline included.
pub const LINE_MAX: usize = 192;

struct Line {
    buf: [u8; LINE_MAX],
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

/// Formats `<prefix><args>\n` (cut to [`LINE_MAX`] bytes, the newline
/// kept) and passes the bytes to `emit` in one call.
pub fn line(prefix: &str, args: fmt::Arguments<'_>, emit: impl FnOnce(&[u8])) {
    let mut line = Line {
        buf: [0; LINE_MAX],
        len: 0,
    };
    let _ = line.write_str(prefix);
    let _ = line.write_fmt(args);
    // Keep room for the newline even when the text was cut.
    line.len = line.len.min(LINE_MAX - 1);
    line.buf[line.len] = b'\n';
    line.len += 1;
    emit(&line.buf[..line.len]);
}

/// A backend's `pvops: warning:` and `pvops: error:` lines, written
/// whole through `emit`, its console that works before the table is
/// installed (native's UART, Xen's console hypercall or ring, ...). Each
/// backend keeps one in a `static`; in its host tests it passes
/// `capture::emit` instead, and reads the lines with
/// `capture::take` (feature `test-support`).
#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    emit: fn(&[u8]),
}

impl Reporter {
    /// Lines written through `emit`.
    pub const fn new(emit: fn(&[u8])) -> Self {
        Self { emit }
    }

    /// Prints `pvops: warning: <args>`.
    pub fn warn(&self, args: fmt::Arguments<'_>) {
        line("pvops: warning: ", args, self.emit)
    }

    /// Prints `pvops: error: <args>`.
    pub fn error(&self, args: fmt::Arguments<'_>) {
        line("pvops: error: ", args, self.emit)
    }

    /// Prints the warning unless `once` says it was printed already.
    pub fn warn_once(&self, once: &AtomicBool, args: fmt::Arguments<'_>) {
        if !once.swap(true, Ordering::Relaxed) {
            self.warn(args);
        }
    }
}

/// A backend's `warn` module in one line: a [`Reporter`] over `console`
/// (the crate's own host tests capture the lines instead, through
/// `capture`, feature `test-support`), and the crate-private functions
/// the backend calls: `warn`, `error`, `warn_once`, and in tests
/// `take_log` (this thread's lines, cleared).
///
/// ```text
/// // backends/<name>/src/warn.rs
/// pvops_core::reporter!(pvops_native::serial::write);
/// ```
#[macro_export]
macro_rules! reporter {
    ($console:path) => {
        #[cfg(not(test))]
        static REPORT: $crate::report::Reporter = $crate::report::Reporter::new($console);
        #[cfg(test)]
        static REPORT: $crate::report::Reporter =
            $crate::report::Reporter::new($crate::report::capture::emit);

        /// Prints `pvops: warning: <args>`.
        #[allow(dead_code)]
        pub(crate) fn warn(args: ::core::fmt::Arguments<'_>) {
            REPORT.warn(args)
        }

        /// Prints `pvops: error: <args>`.
        #[allow(dead_code)]
        pub(crate) fn error(args: ::core::fmt::Arguments<'_>) {
            REPORT.error(args)
        }

        /// Prints the warning unless `once` says it was printed already.
        #[allow(dead_code)]
        pub(crate) fn warn_once(
            once: &::core::sync::atomic::AtomicBool,
            args: ::core::fmt::Arguments<'_>,
        ) {
            REPORT.warn_once(once, args)
        }

        /// The lines this test thread printed, cleared.
        #[cfg(test)]
        #[allow(dead_code)]
        pub(crate) fn take_log() -> ::std::vec::Vec<::std::string::String> {
            $crate::report::capture::take()
        }
    };
}

/// Lines kept per test thread instead of printed, for host tests of the
/// crates that report (feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod capture {
    use std::string::String;
    use std::vec::Vec;

    std::thread_local! {
        static LOG: core::cell::RefCell<Vec<String>> = const { core::cell::RefCell::new(Vec::new()) };
    }

    /// Keeps `bytes` as one line of this thread's log.
    pub fn emit(bytes: &[u8]) {
        let s = String::from_utf8_lossy(bytes).into_owned();
        LOG.with(|l| l.borrow_mut().push(s));
    }

    /// The lines this thread's reporters printed, cleared.
    pub fn take() -> Vec<String> {
        LOG.with(|l| core::mem::take(&mut *l.borrow_mut()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::String;

    fn collect(prefix: &str, args: fmt::Arguments<'_>) -> String {
        let mut out = String::new();
        line(prefix, args, |b| {
            out = String::from_utf8_lossy(b).into_owned()
        });
        out
    }

    #[test]
    fn whole_and_cut_lines() {
        assert_eq!(
            collect("pvops: warning: ", format_args!("x={}", 5)),
            "pvops: warning: x=5\n"
        );
        let long = "y".repeat(500);
        let cut = collect("pvops: error: ", format_args!("{long}"));
        assert_eq!(cut.len(), LINE_MAX);
        assert!(cut.starts_with("pvops: error: yyy") && cut.ends_with("y\n"));
    }

    #[test]
    fn reporter_lines_are_whole_and_once() {
        let r = Reporter::new(capture::emit);
        capture::take();
        r.warn(format_args!("x={}", 5));
        r.error(format_args!("{}", "y".repeat(500)));
        let once = AtomicBool::new(false);
        r.warn_once(&once, format_args!("a"));
        r.warn_once(&once, format_args!("b"));
        let log = capture::take();
        assert_eq!(log[0], "pvops: warning: x=5\n");
        assert!(log[1].starts_with("pvops: error: yyy"));
        assert_eq!(log[1].len(), LINE_MAX);
        assert!(log[1].ends_with("y\n"));
        assert_eq!(log[2], "pvops: warning: a\n");
        assert_eq!(log.len(), 3);
    }
}
