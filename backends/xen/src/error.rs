//! [`XenError`]: a failed hypercall, carrying Xen's errno.

use crate::abi::errno;
use core::fmt;

/// A hypercall failed; Xen returned `-errno`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XenError {
    /// Xen's error number (positive), as in `errno.h`.
    pub errno: i32,
}

impl XenError {
    /// `-ENOSYS`: Xen does not know the operation.
    pub const NOSYS: XenError = XenError {
        errno: errno::ENOSYS,
    };

    /// Maps a raw hypercall result: negative values in Xen's errno range are
    /// errors, anything else is the value. A result below `-4095` cannot be
    /// an errno and is passed through as a value (no hypercall used here
    /// returns one).
    pub fn check(raw: i64) -> Result<u64, XenError> {
        if (-4095..0).contains(&raw) {
            Err(XenError {
                errno: (-raw) as i32,
            })
        } else {
            Ok(raw as u64)
        }
    }

    /// The symbolic name (`EINVAL`), if known.
    pub fn name(self) -> Option<&'static str> {
        errno::name(self.errno)
    }

    /// `-errno`, as [`pvops_core::backend::BackendError::detail`] carries it.
    pub fn detail(self) -> i64 {
        -i64::from(self.errno)
    }
}

/// `EINVAL (22)`, or `errno 1234` for one this table does not name.
impl fmt::Display for XenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.errno),
            None => write!(f, "errno {}", self.errno),
        }
    }
}

impl core::error::Error for XenError {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    #[test]
    fn raw_results_map_to_values_or_errno() {
        assert_eq!(XenError::check(0), Ok(0));
        assert_eq!(XenError::check(0x4_0011), Ok(0x4_0011));
        assert_eq!(XenError::check(-22), Err(XenError { errno: 22 }));
        assert_eq!(XenError::check(-1), Err(XenError { errno: 1 }));
        assert_eq!(XenError::check(-4095), Err(XenError { errno: 4095 }));
        // Not an errno: a (hypothetical) large negative value passes.
        assert_eq!(XenError::check(-4096), Ok((-4096i64) as u64));
    }

    #[test]
    fn errors_print_their_names() {
        assert_eq!(XenError { errno: 38 }.to_string(), "ENOSYS (38)");
        assert_eq!(XenError { errno: 2 }.to_string(), "ENOENT (2)");
        assert_eq!(XenError { errno: 999 }.to_string(), "errno 999");
        assert_eq!(XenError::NOSYS.detail(), -38);
    }
}
