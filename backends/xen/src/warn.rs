//! Warning and error lines, `pvops: warning: <text>` and
//! `pvops: error: <text>`, written whole to this backend's console (so
//! they appear even before the ops table is installed).

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

fn line(prefix: &str, args: fmt::Arguments<'_>) {
    pvops_core::report::line(prefix, args, emit)
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
