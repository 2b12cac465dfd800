//! Warning and error lines, `pvops: warning: <text>` and
//! `pvops: error: <text>`, written whole to this backend's console (so
//! they appear even before the ops table is installed), by
//! [`pvops_core::report::Reporter`].

use core::fmt;
use core::sync::atomic::AtomicBool;
use pvops_core::report::Reporter;

#[cfg(not(test))]
static REPORT: Reporter = Reporter::new(crate::console::write);
#[cfg(test)]
static REPORT: Reporter = Reporter::new(pvops_core::report::capture::emit);

/// Prints `pvops: warning: <args>`.
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    REPORT.warn(args)
}

/// Prints `pvops: error: <args>`.
pub(crate) fn error(args: fmt::Arguments<'_>) {
    REPORT.error(args)
}

/// Prints the warning unless `once` says it was printed already.
pub(crate) fn warn_once(once: &AtomicBool, args: fmt::Arguments<'_>) {
    REPORT.warn_once(once, args)
}
