//! Xen's error numbers (`errno.h`): hypercalls return their negation.

/// `EPERM`.
pub const EPERM: i32 = 1;
/// `ENOENT`.
pub const ENOENT: i32 = 2;
/// `ESRCH`.
pub const ESRCH: i32 = 3;
/// `EINTR`.
pub const EINTR: i32 = 4;
/// `EIO`.
pub const EIO: i32 = 5;
/// `ENXIO`.
pub const ENXIO: i32 = 6;
/// `E2BIG`.
pub const E2BIG: i32 = 7;
/// `EBADF`.
pub const EBADF: i32 = 9;
/// `EAGAIN`.
pub const EAGAIN: i32 = 11;
/// `ENOMEM`.
pub const ENOMEM: i32 = 12;
/// `EACCES`.
pub const EACCES: i32 = 13;
/// `EFAULT`.
pub const EFAULT: i32 = 14;
/// `EBUSY`.
pub const EBUSY: i32 = 16;
/// `EEXIST`.
pub const EEXIST: i32 = 17;
/// `ENODEV`.
pub const ENODEV: i32 = 19;
/// `EINVAL`.
pub const EINVAL: i32 = 22;
/// `ENOSPC`.
pub const ENOSPC: i32 = 28;
/// `ERANGE`.
pub const ERANGE: i32 = 34;
/// `ENOSYS`.
pub const ENOSYS: i32 = 38;
/// `ETIME`.
pub const ETIME: i32 = 62;
/// `EOVERFLOW`.
pub const EOVERFLOW: i32 = 75;
/// `ERESTART`.
pub const ERESTART: i32 = 85;
/// `EOPNOTSUPP`.
pub const EOPNOTSUPP: i32 = 95;
/// `ETIMEDOUT`.
pub const ETIMEDOUT: i32 = 110;

/// The symbolic name of `errno`, if it is one Xen defines and this table
/// lists.
pub const fn name(errno: i32) -> Option<&'static str> {
    Some(match errno {
        EPERM => "EPERM",
        ENOENT => "ENOENT",
        ESRCH => "ESRCH",
        EINTR => "EINTR",
        EIO => "EIO",
        ENXIO => "ENXIO",
        E2BIG => "E2BIG",
        EBADF => "EBADF",
        EAGAIN => "EAGAIN",
        ENOMEM => "ENOMEM",
        EACCES => "EACCES",
        EFAULT => "EFAULT",
        EBUSY => "EBUSY",
        EEXIST => "EEXIST",
        ENODEV => "ENODEV",
        EINVAL => "EINVAL",
        ENOSPC => "ENOSPC",
        ERANGE => "ERANGE",
        ENOSYS => "ENOSYS",
        ETIME => "ETIME",
        EOVERFLOW => "EOVERFLOW",
        ERESTART => "ERESTART",
        EOPNOTSUPP => "EOPNOTSUPP",
        ETIMEDOUT => "ETIMEDOUT",
        _ => return None,
    })
}
