//! Warning lines on the console: `pvops: warning: <text>`, written whole
//! through the native UART (usable before the table is installed), by
//! [`pvops_core::report::Reporter`].

use core::fmt;
use pvops_core::report::Reporter;

#[cfg(not(test))]
static REPORT: Reporter = Reporter::new(pvops_native::serial::write);
#[cfg(test)]
static REPORT: Reporter = Reporter::new(pvops_core::report::capture::emit);

/// Prints `pvops: warning: <args>`.
pub(crate) fn warn(args: fmt::Arguments<'_>) {
    REPORT.warn(args)
}
