//! Warning lines on the console: `pvops: warning: <text>`, written whole
//! through the native UART (usable before the table is installed), by
//! [`pvops_core::report::Reporter`] (tests read them back through its
//! capture log).

use core::fmt;
use core::sync::atomic::AtomicBool;
use pvops_core::report::Reporter;

#[cfg(not(test))]
static REPORT: Reporter = Reporter::new(pvops_native::serial::write);
#[cfg(test)]
static REPORT: Reporter = Reporter::new(pvops_core::report::capture::emit);

/// Prints `pvops: warning: <args>`.
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    REPORT.warn(args)
}

/// Prints the warning unless `once` says it was printed already.
pub(crate) fn warn_once(once: &AtomicBool, args: fmt::Arguments<'_>) {
    REPORT.warn_once(once, args)
}

/// The lines this test thread printed, cleared.
#[cfg(test)]
pub(crate) fn take_log() -> std::vec::Vec<std::string::String> {
    pvops_core::report::capture::take()
}
