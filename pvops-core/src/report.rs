//! Whole console lines for backends' `pvops: warning:` / `pvops: error:`
//! reports: formatted into a fixed buffer (there is no heap), cut rather
//! than failed when too long, and handed to the console in one write so
//! lines from several CPUs do not interleave.

use core::fmt::{self, Write};

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
}
