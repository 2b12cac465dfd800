//! Warning lines on the console: `pvops: warning: <text>`, written whole
//! through the native UART (usable before the table is installed).

use core::fmt;

/// Prints `pvops: warning: <args>`.
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    pvops_core::report::line("pvops: warning: ", args, emit)
}

#[cfg(not(test))]
fn emit(bytes: &[u8]) {
    pvops_native::serial::write(bytes)
}

#[cfg(test)]
std::thread_local! {
    pub(crate) static LOG: core::cell::RefCell<std::vec::Vec<std::string::String>> =
        const { core::cell::RefCell::new(std::vec::Vec::new()) };
}

#[cfg(test)]
fn emit(bytes: &[u8]) {
    let s = std::string::String::from_utf8_lossy(bytes).into_owned();
    LOG.with(|l| l.borrow_mut().push(s));
}

/// The warnings this test thread printed, cleared.
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
        warn(format_args!("kvmclock x={}", 5));
        let long = "y".repeat(500);
        warn(format_args!("{long}"));
        let log = take_log();
        assert_eq!(log[0], "pvops: warning: kvmclock x=5\n");
        assert_eq!(log[1].len(), 192);
        assert!(log[1].ends_with("y\n"));
        assert_eq!(log.len(), 2);
    }
}
