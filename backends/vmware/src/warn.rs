//! Warning lines on the console: `pvops: warning: <text>`, written whole
//! through the native UART (usable before the table is installed), by
//! [`pvops_core::report::Reporter`].

pvops_core::reporter!(pvops_native::serial::write);
