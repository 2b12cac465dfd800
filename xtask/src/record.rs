//! What each boot test did, written for `cargo xtask test` to summarise:
//! the boot tests run inside `cargo test`, a separate process, so each one
//! leaves a small file in the directory named by [`RECORD_DIR_VAR`].

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::Path;

use crate::env::Env;

/// Environment variable naming the directory records go to; when unset,
/// nothing is recorded.
pub const RECORD_DIR_VAR: &str = "PVOPS_BOOT_RECORD";

/// What one boot test did in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Booted and passed; the verdict line.
    Passed(String),
    /// Booted (or tried to) and failed; why.
    Failed(String),
    /// Did not boot for want of a resource; why.
    Skipped(String),
}

impl Record {
    fn encode(&self) -> String {
        let (tag, text) = match self {
            Record::Passed(t) => ("passed", t),
            Record::Failed(t) => ("failed", t),
            Record::Skipped(t) => ("skipped", t),
        };
        // One line: the first line of the text is enough for a summary.
        format!("{tag} {}\n", text.lines().next().unwrap_or_default())
    }

    fn decode(text: &str) -> Option<Record> {
        let (tag, rest) = text
            .trim_end()
            .split_once(' ')
            .unwrap_or((text.trim_end(), ""));
        let rest = rest.to_owned();
        match tag {
            "passed" => Some(Record::Passed(rest)),
            "failed" => Some(Record::Failed(rest)),
            "skipped" => Some(Record::Skipped(rest)),
            _ => None,
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::Passed(t) => write!(f, "booted, passed ({t})"),
            Record::Failed(t) => write!(f, "booted, FAILED ({t})"),
            Record::Skipped(t) => write!(f, "SKIPPED ({t})"),
        }
    }
}

/// Writes `record` for `env` if [`RECORD_DIR_VAR`] is set. A failure to
/// write is reported on stderr but never fails the caller's test.
pub fn write(env: Env, record: &Record) {
    let Some(dir) = std::env::var_os(RECORD_DIR_VAR) else {
        return;
    };
    let dir = Path::new(&dir);
    if let Err(e) =
        fs::create_dir_all(dir).and_then(|()| fs::write(dir.join(env.name()), record.encode()))
    {
        eprintln!(
            "xtask: could not record the {env} boot in {}: {e}",
            dir.display()
        );
    }
}

/// Reads the records in `dir`, by environment.
pub fn read_all(dir: &Path) -> BTreeMap<Env, Record> {
    Env::ALL
        .into_iter()
        .filter_map(|env| {
            let text = fs::read_to_string(dir.join(env.name())).ok()?;
            Some((env, Record::decode(&text)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for r in [
            Record::Passed("PASS tcg: 5 ok".into()),
            Record::Skipped(String::new()),
        ] {
            assert_eq!(Record::decode(&r.encode()), Some(r));
        }
        // Only the first line of a long reason is kept.
        let r = Record::Failed("2 problems\nmore".into());
        assert_eq!(
            Record::decode(&r.encode()),
            Some(Record::Failed("2 problems".into()))
        );
        assert_eq!(Record::decode("bogus x"), None);
        assert_eq!(Record::decode(""), None);
    }

    #[test]
    fn read_from_directory() {
        let dir = std::env::temp_dir().join(format!("xtask-record-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("tcg"), Record::Passed("ok".into()).encode()).unwrap();
        fs::write(dir.join("kvm-hidden"), "garbage").unwrap();
        let records = read_all(&dir);
        assert_eq!(records.len(), 1);
        assert_eq!(records[&Env::Tcg], Record::Passed("ok".into()));
        fs::remove_dir_all(&dir).unwrap();
    }
}
