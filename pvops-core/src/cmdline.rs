//! The `pvops.*` options of a kernel command line.
//!
//! The command line is a space-separated list of words; pvops reads words
//! of the form `pvops.<key>=<value>` (or `pvops.<key>` alone, value "") and
//! ignores everything else. The last occurrence of a key wins.

/// The value of `pvops.<key>` in `cmdline`, if present.
pub fn option<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    let mut found = None;
    for word in cmdline.split_ascii_whitespace() {
        let Some(rest) = word.strip_prefix("pvops.") else {
            continue;
        };
        let (k, v) = match rest.split_once('=') {
            Some((k, v)) => (k, v),
            None => (rest, ""),
        };
        if k == key {
            found = Some(v);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::option;

    #[test]
    fn finds_options() {
        let c = "console=com1 pvops.mode=test pvops.backend=native pvops.quiet";
        assert_eq!(option(c, "mode"), Some("test"));
        assert_eq!(option(c, "backend"), Some("native"));
        assert_eq!(option(c, "quiet"), Some(""));
        assert_eq!(option(c, "console"), None);
        assert_eq!(option(c, "missing"), None);
    }

    #[test]
    fn last_wins_and_odd_input() {
        assert_eq!(option("pvops.a=1 pvops.a=2", "a"), Some("2"));
        assert_eq!(option("", "a"), None);
        assert_eq!(option("pvops.=x pvops.a==b", "a"), Some("=b"));
        assert_eq!(option("   \t pvops.a=x\n", "a"), Some("x"));
    }
}
