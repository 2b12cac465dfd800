//! Warning and error lines, `pvops: warning: <text>` and
//! `pvops: error: <text>`, written whole to this backend's console (so
//! they appear even before the ops table is installed), by
//! [`pvops_core::report::Reporter`].

pvops_core::reporter!(crate::console::write);
