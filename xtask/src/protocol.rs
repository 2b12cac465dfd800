//! The console protocol of the example kernel (its home is the README's
//! "Console protocol" section): parsing its lines out of a console capture, and judging a
//! finished run against what its environment expects.
//!
//! Protocol lines may be mixed with other output (Xen's log, firmware) and
//! may carry prefixes such as `(XEN) ` or `(d0) `. The parser never panics:
//! a line that starts like a protocol line but does not parse is recorded
//! as [`Malformed`], and [`check`] reports it.

use std::fmt;

/// Everything the protocol lines of one console capture said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Console {
    /// `pvops: platform=...` lines (a good run has exactly one).
    pub platforms: Vec<Platform>,
    /// `test <name> ... ok|FAILED` lines, in order.
    pub tests: Vec<TestCase>,
    /// `bench op=... path=...` lines, in order.
    pub benches: Vec<Bench>,
    /// `test result: ...` lines (a good run has exactly one).
    pub summaries: Vec<Summary>,
    /// Codes of `pvops: exit code=<n>` lines (a good run has exactly one).
    pub exit_codes: Vec<u32>,
    /// `pvops: warning:` and `pvops: error:` lines.
    pub notes: Vec<Note>,
    /// Lines that looked like protocol lines but did not parse.
    pub malformed: Vec<Malformed>,
}

/// The platform line: where the kernel found itself and what it installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `platform=` value (native, kvm, xen-pvh, xen-pv).
    pub platform: String,
    /// `backend=` value.
    pub backend: String,
    /// `features=` list; `-` is the empty list.
    pub features: Vec<String>,
    /// Further `key=value` pairs, in order, kept for reports.
    pub extra: Vec<(String, String)>,
}

/// One self-test's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    /// Test name (one word).
    pub name: String,
    /// Its verdict.
    pub verdict: Verdict,
}

/// Verdict of one self-test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// `... ok`
    Ok,
    /// `... FAILED: <reason>`
    Failed {
        /// The reason the kernel gave (may be empty).
        reason: String,
    },
    /// `... skipped: <reason>`: the environment lacks what the test
    /// needs (which tests each environment skips is fixed:
    /// [`Expectation::skipped`]).
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One benchmark line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bench {
    /// `op=` value.
    pub op: String,
    /// `path=` value (native, pvops, patched, static).
    pub path: String,
    /// Every other `key=value` pair, in order (cycles_median, iters, exits, ...).
    pub values: Vec<(String, String)>,
}

impl Bench {
    /// The value of `key`, if the line carried it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The `test result:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// `ok` (true) or `FAILED` (false).
    pub ok: bool,
    /// `<N> passed`
    pub passed: u64,
    /// `<M> failed`
    pub failed: u64,
    /// `; <K> skipped` (0 when the line has no such part).
    pub skipped: u64,
}

/// Kind of a [`Note`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteKind {
    /// `pvops: warning: ...`
    Warning,
    /// `pvops: error: ...`
    Error,
}

/// A warning or error the kernel printed, kept for reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning or error.
    pub kind: NoteKind,
    /// The text after `warning:` / `error:`.
    pub text: String,
}

/// A line that started like a protocol line but did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// 1-based line number in the console capture.
    pub line_no: usize,
    /// The line as captured.
    pub line: String,
    /// What was wrong with it.
    pub why: String,
}

/// One parsed protocol line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// `pvops: platform=...`
    Platform(Platform),
    /// `test <name> ... <verdict>`
    Test(TestCase),
    /// `bench op=... path=...`
    Bench(Bench),
    /// `test result: ...`
    Summary(Summary),
    /// `pvops: exit code=<n>`
    Exit(u32),
    /// `pvops: warning:` / `pvops: error:`
    Note(Note),
}

/// How the harness expects the run to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The kernel writes its exit code to QEMU's isa-debug-exit device;
    /// QEMU then exits with status `(code << 1) | 1`.
    DebugExit,
    /// The kernel asks its hypervisor (Xen) for a reboot; with -no-reboot
    /// QEMU exits with status 0, and the exit-code line is the verdict.
    GuestReboot,
}

/// How the QEMU process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Exited by itself with this status.
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited(s) => write!(f, "exit status {s}"),
            Termination::Signaled(s) => write!(f, "signal {s}"),
        }
    }
}

/// What a run must show to pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Expected `platform=`.
    pub platform: String,
    /// Expected `backend=`.
    pub backend: String,
    /// Fewest `ok` tests.
    pub min_ok: usize,
    /// Features the platform line must name.
    pub features_present: Vec<String>,
    /// Features the platform line must not name (switched off on purpose).
    pub features_absent: Vec<String>,
    /// The tests that must report `skipped`, exactly these (any other
    /// skip, or one of these not skipped, is a problem).
    pub skipped: Vec<String>,
    /// Tests that must be reported (ok), besides any number of others.
    pub required: Vec<String>,
    /// How the run must end.
    pub ending: Ending,
}

/// A finished run: its parsed console and how QEMU ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Parsed console.
    pub console: Console,
    /// How QEMU ended.
    pub termination: Termination,
}

/// One reason a run did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// No platform line.
    MissingPlatform,
    /// More than one platform line.
    DuplicatePlatform(usize),
    /// `platform=` differs.
    WrongPlatform {
        /// Expected value.
        expected: String,
        /// Reported value.
        found: String,
    },
    /// `backend=` differs.
    WrongBackend {
        /// Expected value.
        expected: String,
        /// Reported value.
        found: String,
    },
    /// A feature that must be on is not named.
    MissingFeature(String),
    /// A feature that was switched off is named anyway.
    UnexpectedFeature(String),
    /// Fewer ok tests than required.
    TooFewTests {
        /// Required.
        min: usize,
        /// Seen.
        found: usize,
    },
    /// A test reported FAILED.
    TestFailed {
        /// Test name.
        name: String,
        /// Its reason.
        reason: String,
    },
    /// A test reported `skipped` where the environment does not expect it.
    UnexpectedSkip {
        /// Test name.
        name: String,
        /// Its reason.
        reason: String,
    },
    /// A test the environment must skip did not report `skipped`.
    SkipMissing(String),
    /// A test the environment must run was not reported.
    TestMissing(String),
    /// A test name reported more than once.
    DuplicateTest(String),
    /// No `test result:` line.
    MissingSummary,
    /// More than one `test result:` line.
    DuplicateSummary(usize),
    /// The summary's counts differ from the test lines.
    SummaryMismatch {
        /// The summary line.
        summary: Summary,
        /// ok lines seen.
        ok_seen: usize,
        /// FAILED lines seen.
        failed_seen: usize,
        /// skipped lines seen.
        skipped_seen: usize,
    },
    /// The summary says ok with failures, or FAILED with none.
    SummaryVerdictInconsistent(Summary),
    /// No `pvops: exit code=` line.
    MissingExitCode,
    /// More than one exit-code line.
    DuplicateExitCode(Vec<u32>),
    /// The exit code is not 0.
    NonZeroExitCode(u32),
    /// A protocol line that did not parse.
    Malformed(Malformed),
    /// The domU did not end the way a finished kernel ends it (a
    /// shutdown with reason reboot), as dom0's toolstack saw it.
    DomainEnd(String),
    /// A live migration run did not show the guest moving and going on
    /// ([`crate::migrate`]).
    Migration(String),
    /// QEMU did not end the way the environment ends.
    WrongTermination {
        /// What happened.
        found: Termination,
        /// What that means and what was expected.
        why: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::MissingPlatform => f.write_str("no `pvops: platform=` line"),
            Problem::DuplicatePlatform(n) => {
                write!(f, "{n} `pvops: platform=` lines (expected one)")
            }
            Problem::WrongPlatform { expected, found } => {
                write!(f, "platform={found}, expected platform={expected}")
            }
            Problem::WrongBackend { expected, found } => {
                write!(f, "backend={found}, expected backend={expected}")
            }
            Problem::MissingFeature(name) => {
                write!(f, "feature {name} is not on (features= does not name it)")
            }
            Problem::UnexpectedFeature(name) => {
                write!(
                    f,
                    "feature {name} is on although the platform was told to hide it"
                )
            }
            Problem::TooFewTests { min, found } => {
                write!(f, "only {found} test(s) ok, at least {min} required")
            }
            Problem::TestFailed { name, reason } => write!(f, "test {name} FAILED: {reason}"),
            Problem::UnexpectedSkip { name, reason } => write!(
                f,
                "test {name} skipped ({reason}), but this environment skips no such test"
            ),
            Problem::SkipMissing(name) => write!(
                f,
                "test {name} must report `skipped` in this environment (it lacks what the \
                 test needs), but did not"
            ),
            Problem::DuplicateTest(name) => write!(f, "test {name} reported more than once"),
            Problem::TestMissing(name) => {
                write!(
                    f,
                    "test {name} must run in this environment, but was not reported"
                )
            }
            Problem::DomainEnd(why) => write!(f, "the domU did not end cleanly: {why}"),
            Problem::Migration(why) => write!(f, "live migration: {why}"),
            Problem::MissingSummary => f.write_str("no `test result:` summary line"),
            Problem::DuplicateSummary(n) => write!(f, "{n} `test result:` lines (expected one)"),
            Problem::SummaryMismatch {
                summary,
                ok_seen,
                failed_seen,
                skipped_seen,
            } => write!(
                f,
                "summary says {} passed; {} failed; {} skipped, but the console shows {ok_seen} \
                 ok, {failed_seen} FAILED and {skipped_seen} skipped test line(s)",
                summary.passed, summary.failed, summary.skipped
            ),
            Problem::SummaryVerdictInconsistent(s) => write!(
                f,
                "summary verdict `{}` contradicts its own count of {} failed",
                if s.ok { "ok" } else { "FAILED" },
                s.failed
            ),
            Problem::MissingExitCode => f.write_str("no `pvops: exit code=` line"),
            Problem::DuplicateExitCode(codes) => {
                write!(f, "{} `pvops: exit code=` lines: {codes:?}", codes.len())
            }
            Problem::NonZeroExitCode(code) => write!(f, "kernel exit code={code}, expected 0"),
            Problem::Malformed(m) => {
                write!(
                    f,
                    "malformed protocol line {}: {} ({:?})",
                    m.line_no, m.why, m.line
                )
            }
            Problem::WrongTermination { found, why } => write!(f, "QEMU ended with {found}: {why}"),
        }
    }
}

/// Parses every protocol line of a console capture.
pub fn parse<S: AsRef<str>>(lines: &[S]) -> Console {
    let mut console = Console::default();
    for (i, line) in lines.iter().enumerate() {
        let line = line.as_ref();
        match parse_line(line) {
            None => {}
            Some(Err(why)) => console.malformed.push(Malformed {
                line_no: i + 1,
                line: line.to_owned(),
                why,
            }),
            Some(Ok(item)) => match item {
                Item::Platform(p) => console.platforms.push(p),
                Item::Test(t) => console.tests.push(t),
                Item::Bench(b) => console.benches.push(b),
                Item::Summary(s) => console.summaries.push(s),
                Item::Exit(code) => console.exit_codes.push(code),
                Item::Note(n) => console.notes.push(n),
            },
        }
    }
    console
}

/// Parses one console line: `None` if it is not a protocol line,
/// `Some(Err(why))` if it starts like one but does not parse.
pub fn parse_line(line: &str) -> Option<Result<Item, String>> {
    let body = strip_prefixes(line);
    if let Some(rest) = body.strip_prefix("pvops:") {
        return parse_pvops(rest);
    }
    if let Some(rest) = body.strip_prefix("test result:") {
        return Some(parse_summary(rest));
    }
    if let Some(rest) = body.strip_prefix("test ") {
        return Some(parse_test(rest));
    }
    if let Some(rest) = body.strip_prefix("bench ") {
        return Some(parse_bench(rest));
    }
    // Another writer (Xen's log) may have left a partial line in front of
    // ours; `pvops:` is distinctive enough to be looked for anywhere.
    let at = body.find("pvops: ")?;
    parse_pvops(&body[at + "pvops:".len()..])
}

/// Strips white space, carriage returns, and log prefixes such as
/// `(XEN) `, `(d0) `, `(d0v1) ` or a `[  12.345678]` time stamp.
fn strip_prefixes(line: &str) -> &str {
    let mut rest = line.trim_start_matches(|c: char| c.is_whitespace() || c == '\0');
    loop {
        let next = strip_bracketed(rest, '(', ')', |c| c.is_ascii_alphanumeric() || c == '_')
            .or_else(|| {
                strip_bracketed(rest, '[', ']', |c| {
                    c.is_ascii_digit() || c == '.' || c == ':' || c == ' '
                })
            });
        match next {
            Some(r) => rest = r.trim_start(),
            None => return rest.trim_end_matches(['\r', '\n']),
        }
    }
}

/// `rest` without a leading `open word close` whose word is short and made
/// of `allowed` characters, and which is followed by white space or the end.
fn strip_bracketed(
    rest: &str,
    open: char,
    close: char,
    allowed: impl Fn(char) -> bool,
) -> Option<&str> {
    let inner = rest.strip_prefix(open)?;
    let end = inner.find(close)?;
    let word = &inner[..end];
    if word.is_empty() || word.len() > 24 || !word.chars().all(allowed) {
        return None;
    }
    let after = &inner[end + close.len_utf8()..];
    (after.is_empty() || after.starts_with(char::is_whitespace)).then_some(after)
}

fn parse_pvops(rest: &str) -> Option<Result<Item, String>> {
    let rest = rest.trim();
    if rest.starts_with("platform=") {
        return Some(parse_platform(rest));
    }
    if let Some(text) = rest.strip_prefix("warning:") {
        let text = text.trim().to_owned();
        return Some(Ok(Item::Note(Note {
            kind: NoteKind::Warning,
            text,
        })));
    }
    if let Some(text) = rest.strip_prefix("error:") {
        let text = text.trim().to_owned();
        return Some(Ok(Item::Note(Note {
            kind: NoteKind::Error,
            text,
        })));
    }
    if rest == "exit" || rest.starts_with("exit ") {
        return Some(parse_exit(&rest["exit".len()..]));
    }
    // Any other `pvops:` line is the kernel's informational output.
    None
}

fn parse_exit(rest: &str) -> Result<Item, String> {
    let mut words = rest.split_whitespace();
    let (Some(word), None) = (words.next(), words.next()) else {
        return Err("expected `pvops: exit code=<n>`".into());
    };
    let Some(value) = word.strip_prefix("code=") else {
        return Err("expected `pvops: exit code=<n>`".into());
    };
    value
        .parse::<u32>()
        .map(Item::Exit)
        .map_err(|_| format!("exit code `{value}` is not a non-negative integer"))
}

/// Splits `key=value` words; keys must be non-empty and unique.
fn key_values(rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for word in rest.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else {
            return Err(format!("`{word}` is not key=value"));
        };
        if key.is_empty() {
            return Err(format!("`{word}` has an empty key"));
        }
        if pairs.iter().any(|(k, _)| k == key) {
            return Err(format!("key `{key}` appears twice"));
        }
        pairs.push((key.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

/// Removes `key` from `pairs`, requiring a non-empty value.
fn take(pairs: &mut Vec<(String, String)>, key: &str) -> Result<String, String> {
    let Some(at) = pairs.iter().position(|(k, _)| k == key) else {
        return Err(format!("missing `{key}=`"));
    };
    let (_, value) = pairs.remove(at);
    if value.is_empty() {
        return Err(format!("empty `{key}=`"));
    }
    Ok(value)
}

fn parse_platform(rest: &str) -> Result<Item, String> {
    let mut pairs = key_values(rest)?;
    let platform = take(&mut pairs, "platform")?;
    let backend = take(&mut pairs, "backend")?;
    let features = take(&mut pairs, "features")?;
    let features = if features == "-" {
        Vec::new()
    } else {
        let list: Vec<String> = features.split(',').map(str::to_owned).collect();
        if list.iter().any(String::is_empty) {
            return Err(format!("feature list `{features}` has an empty entry"));
        }
        list
    };
    Ok(Item::Platform(Platform {
        platform,
        backend,
        features,
        extra: pairs,
    }))
}

fn parse_test(rest: &str) -> Result<Item, String> {
    let Some((name, verdict)) = rest.split_once(" ...") else {
        return Err("expected `test <name> ... ok` or `test <name> ... FAILED: <reason>`".into());
    };
    let name = name.trim();
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("test name `{name}` is empty or not one word"));
    }
    let verdict = verdict.trim();
    let verdict = if verdict == "ok" {
        Verdict::Ok
    } else if let Some(after) = verdict.strip_prefix("skipped:") {
        Verdict::Skipped {
            reason: after.trim().to_owned(),
        }
    } else if let Some(after) = verdict.strip_prefix("FAILED") {
        // A FAILED without a well-formed reason is still a failure: it
        // must never be lost as merely malformed.
        let reason = after.strip_prefix(':').unwrap_or(after).trim().to_owned();
        Verdict::Failed { reason }
    } else {
        return Err(format!(
            "verdict `{verdict}` is neither `ok` nor `FAILED: <reason>`"
        ));
    };
    Ok(Item::Test(TestCase {
        name: name.to_owned(),
        verdict,
    }))
}

fn parse_bench(rest: &str) -> Result<Item, String> {
    let mut values = key_values(rest)?;
    let op = take(&mut values, "op")?;
    let path = take(&mut values, "path")?;
    Ok(Item::Bench(Bench { op, path, values }))
}

fn parse_summary(rest: &str) -> Result<Item, String> {
    const SHAPE: &str = "expected `test result: <ok|FAILED>. <N> passed; <M> failed`";
    let Some((verdict, counts)) = rest.trim_start().split_once('.') else {
        return Err(SHAPE.into());
    };
    let ok = match verdict {
        "ok" => true,
        "FAILED" => false,
        _ => {
            return Err(format!(
                "verdict `{verdict}` is neither `ok` nor `FAILED`; {SHAPE}"
            ))
        }
    };
    // `; <K> skipped` may follow; anything else after `<M> failed`
    // (`; 2 ignored`, ...) is tolerated.
    let mut parts = counts.split(';').map(str::trim);
    let passed = count(parts.next(), "passed").ok_or(SHAPE)?;
    let failed = count(parts.next(), "failed").ok_or(SHAPE)?;
    let skipped = count(parts.next(), "skipped").unwrap_or(0);
    Ok(Item::Summary(Summary {
        ok,
        passed,
        failed,
        skipped,
    }))
}

/// Parses `"<n> <word>"`.
fn count(part: Option<&str>, word: &str) -> Option<u64> {
    let (n, w) = part?.split_once(' ')?;
    (w.trim() == word).then_some(())?;
    n.parse().ok()
}

/// Judges a finished run; returns every problem found (empty: it passed).
pub fn check(outcome: &Outcome, expect: &Expectation) -> Vec<Problem> {
    let console = &outcome.console;
    let mut problems = Vec::new();

    match console.platforms.as_slice() {
        [] => problems.push(Problem::MissingPlatform),
        [first, rest @ ..] => {
            if !rest.is_empty() {
                problems.push(Problem::DuplicatePlatform(console.platforms.len()));
            }
            if first.platform != expect.platform {
                problems.push(Problem::WrongPlatform {
                    expected: expect.platform.clone(),
                    found: first.platform.clone(),
                });
            }
            if first.backend != expect.backend {
                problems.push(Problem::WrongBackend {
                    expected: expect.backend.clone(),
                    found: first.backend.clone(),
                });
            }
            for f in &expect.features_present {
                if !first.features.contains(f) {
                    problems.push(Problem::MissingFeature(f.clone()));
                }
            }
            for f in &expect.features_absent {
                if first.features.contains(f) {
                    problems.push(Problem::UnexpectedFeature(f.clone()));
                }
            }
        }
    }

    let mut ok_seen = 0;
    let mut failed_seen = 0;
    let mut skipped_seen = 0;
    let mut names_seen: Vec<&str> = Vec::new();
    for test in &console.tests {
        match &test.verdict {
            Verdict::Ok => ok_seen += 1,
            Verdict::Skipped { reason } => {
                skipped_seen += 1;
                if !expect.skipped.contains(&test.name) {
                    problems.push(Problem::UnexpectedSkip {
                        name: test.name.clone(),
                        reason: reason.clone(),
                    });
                }
            }
            Verdict::Failed { reason } => {
                failed_seen += 1;
                problems.push(Problem::TestFailed {
                    name: test.name.clone(),
                    reason: reason.clone(),
                });
            }
        }
        if names_seen.contains(&test.name.as_str()) {
            if !problems.contains(&Problem::DuplicateTest(test.name.clone())) {
                problems.push(Problem::DuplicateTest(test.name.clone()));
            }
        } else {
            names_seen.push(&test.name);
        }
    }
    for name in &expect.required {
        if !console.tests.iter().any(|t| &t.name == name) {
            problems.push(Problem::TestMissing(name.clone()));
        }
    }
    for name in &expect.skipped {
        let skipped = console
            .tests
            .iter()
            .any(|t| &t.name == name && matches!(t.verdict, Verdict::Skipped { .. }));
        if !skipped {
            problems.push(Problem::SkipMissing(name.clone()));
        }
    }
    if ok_seen < expect.min_ok {
        problems.push(Problem::TooFewTests {
            min: expect.min_ok,
            found: ok_seen,
        });
    }

    match console.summaries.as_slice() {
        [] => problems.push(Problem::MissingSummary),
        [summary, rest @ ..] => {
            if !rest.is_empty() {
                problems.push(Problem::DuplicateSummary(console.summaries.len()));
            }
            if summary.passed != ok_seen as u64
                || summary.failed != failed_seen as u64
                || summary.skipped != skipped_seen as u64
            {
                problems.push(Problem::SummaryMismatch {
                    summary: *summary,
                    ok_seen,
                    failed_seen,
                    skipped_seen,
                });
            }
            if summary.ok != (summary.failed == 0) {
                problems.push(Problem::SummaryVerdictInconsistent(*summary));
            }
        }
    }

    let code = match console.exit_codes.as_slice() {
        [] => {
            problems.push(Problem::MissingExitCode);
            None
        }
        [code] => Some(*code),
        codes => {
            problems.push(Problem::DuplicateExitCode(codes.to_vec()));
            codes.last().copied()
        }
    };
    if let Some(code) = code.filter(|&c| c != 0) {
        problems.push(Problem::NonZeroExitCode(code));
    }

    problems.extend(console.malformed.iter().cloned().map(Problem::Malformed));

    if let Some(why) = termination_problem(outcome.termination, expect.ending, code) {
        problems.push(Problem::WrongTermination {
            found: outcome.termination,
            why,
        });
    }
    problems
}

/// QEMU's exit status for a guest that wrote `code` to isa-debug-exit
/// (only the low 8 bits of a process status survive).
pub const fn debug_exit_status(code: u32) -> i32 {
    (((code << 1) | 1) & 0xff) as i32
}

fn termination_problem(found: Termination, ending: Ending, code: Option<u32>) -> Option<String> {
    let status = match found {
        Termination::Signaled(_) => {
            return Some("QEMU was killed instead of exiting by itself".into());
        }
        Termination::Exited(status) => status,
    };
    match ending {
        Ending::DebugExit => {
            if status == 0 {
                return Some(
                    "the guest reset (a triple fault, or a reboot) instead of exiting through \
                     isa-debug-exit; -no-reboot turns a reset into status 0"
                        .into(),
                );
            }
            if status % 2 == 0 {
                return Some(
                    "QEMU itself failed (isa-debug-exit statuses are odd); see its stderr".into(),
                );
            }
            // Without an exit-code line (reported on its own) the guest
            // should still have exited with code 0.
            let expected = debug_exit_status(code.unwrap_or(0));
            (status != expected).then(|| {
                format!(
                    "the guest wrote {} to isa-debug-exit, which does not match the console's \
                     exit code (expected status {expected})",
                    status >> 1
                )
            })
        }
        Ending::GuestReboot => (status != 0).then(|| {
            "expected status 0 (the guest asked for a reboot, which -no-reboot turns into \
             QEMU's exit)"
                .into()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[&str] = &[
        "SeaBIOS (version 1.16)",
        "pvops: booting",
        "pvops: platform=native backend=native features=- cpus=1",
        "test cpuid ... ok",
        "test irq_flags ... ok",
        "test cr3 ... ok",
        "test tlb ... ok",
        "test clock ... ok",
        "bench op=irq_disable path=pvops cycles_median=12 cycles_min=10 iters=1000 timing=emulated",
        "test result: ok. 5 passed; 0 failed",
        "pvops: exit code=0",
    ];

    fn native() -> Expectation {
        Expectation {
            features_present: Vec::new(),
            features_absent: Vec::new(),
            skipped: Vec::new(),
            required: Vec::new(),
            platform: "native".into(),
            backend: "native".into(),
            min_ok: 5,
            ending: Ending::DebugExit,
        }
    }

    fn xen() -> Expectation {
        Expectation {
            features_present: Vec::new(),
            features_absent: Vec::new(),
            skipped: Vec::new(),
            required: Vec::new(),
            platform: "xen-pv".into(),
            backend: "xen".into(),
            min_ok: 5,
            ending: Ending::GuestReboot,
        }
    }

    fn outcome(lines: &[&str], status: i32) -> Outcome {
        Outcome {
            console: parse(lines),
            termination: Termination::Exited(status),
        }
    }

    fn replaced(from: &str, to: &str) -> Vec<&'static str> {
        GOOD.iter()
            .map(|l| {
                if *l == from {
                    Box::leak(to.to_owned().into_boxed_str()) as &str
                } else {
                    l
                }
            })
            .collect()
    }

    fn without(line: &str) -> Vec<&'static str> {
        GOOD.iter().copied().filter(|l| *l != line).collect()
    }

    #[test]
    fn good_run_parses_fully() {
        let c = parse(GOOD);
        assert_eq!(
            c.platforms,
            [Platform {
                platform: "native".into(),
                backend: "native".into(),
                features: vec![],
                extra: vec![("cpus".into(), "1".into())],
            }]
        );
        assert_eq!(c.tests.len(), 5);
        assert!(c.tests.iter().all(|t| t.verdict == Verdict::Ok));
        assert_eq!(c.tests[0].name, "cpuid");
        assert_eq!(
            c.summaries,
            [Summary {
                ok: true,
                passed: 5,
                failed: 0,
                skipped: 0
            }]
        );
        assert_eq!(c.exit_codes, [0]);
        assert_eq!(c.benches.len(), 1);
        let b = &c.benches[0];
        assert_eq!((b.op.as_str(), b.path.as_str()), ("irq_disable", "pvops"));
        assert_eq!(b.get("cycles_median"), Some("12"));
        assert_eq!(b.get("timing"), Some("emulated"));
        assert_eq!(b.get("exits"), None);
        assert!(c.malformed.is_empty(), "{:?}", c.malformed);
        assert!(c.notes.is_empty());
    }

    #[test]
    fn good_run_passes() {
        assert_eq!(check(&outcome(GOOD, 1), &native()), []);
    }

    #[test]
    fn features_list() {
        let Some(Ok(Item::Platform(p))) =
            parse_line("pvops: platform=kvm backend=kvm features=pv-eoi,steal-time,pv-ipi")
        else {
            panic!("did not parse");
        };
        assert_eq!(p.features, ["pv-eoi", "steal-time", "pv-ipi"]);
        assert!(p.extra.is_empty());
    }

    #[test]
    fn prefixes_are_stripped() {
        for line in [
            "(XEN) pvops: exit code=0",
            "(d0) pvops: exit code=0",
            "(XEN) (d0v0) pvops: exit code=0",
            "(XEN) [   12.345678] pvops: exit code=0",
            "  pvops: exit code=0\r",
            "\0\0pvops: exit code=0",
            "garbage from someone else pvops: exit code=0",
        ] {
            assert_eq!(parse_line(line), Some(Ok(Item::Exit(0))), "{line:?}");
        }
        assert!(matches!(
            parse_line("(d0) test a ... ok"),
            Some(Ok(Item::Test(_)))
        ));
        assert!(matches!(
            parse_line("(XEN) test result: ok. 1 passed; 0 failed"),
            Some(Ok(Item::Summary(_)))
        ));
    }

    #[test]
    fn other_output_is_ignored() {
        for line in [
            "",
            "(XEN) Xen version 4.17.7",
            "(XEN) Hardware Dom0 halted: halting machine",
            "pvops: booting on 1 cpu",
            "pvops:",
            "testing something",
            "benchmarks follow",
            "(not a prefix pvops:exit code=0",
            "a test b ... ok",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[test]
    fn malformed_lines_are_reported_not_panicked() {
        for line in [
            "pvops: platform=native",
            "pvops: platform=native backend=native",
            "pvops: platform= backend=native features=-",
            "pvops: platform=native backend=native features=a,,b",
            "pvops: platform=native backend=native features=- junk",
            "pvops: platform=native backend=x backend=y features=-",
            "pvops: platform=native backend=native features=- =v",
            "pvops: exit",
            "pvops: exit code=",
            "pvops: exit code=-1",
            "pvops: exit code=x",
            "pvops: exit code=0 extra",
            "pvops: exit status=0",
            "pvops: exit code=99999999999999999999",
            "test ... ok",
            "test two words ... ok",
            "test a",
            "test a ... okay",
            "test a ... ",
            "test result: ok",
            "test result: maybe. 1 passed; 0 failed",
            "test result: ok. 1 passed",
            "test result: ok. x passed; 0 failed",
            "test result: ok. 1 passed; 0 broken",
            "test result: ok. 1 passed; -1 failed",
            "test result:",
            "bench op=x",
            "bench path=native",
            "bench op=x path=native cycles",
            "bench op= path=native",
            "test é ... \u{fffd}",
        ] {
            match parse_line(line) {
                Some(Err(why)) => assert!(!why.is_empty(), "{line:?}"),
                other => panic!("{line:?} gave {other:?}"),
            }
        }
    }

    /// Lines glued from protocol fragments and awkward characters, from a
    /// fixed pseudo-random sequence: the parser must never panic.
    #[test]
    fn never_panics_on_glued_fragments() {
        const PIECES: &[&str] = &[
            "pvops:",
            " ",
            "platform=",
            "backend=",
            "features=",
            "-",
            ",",
            "=",
            "test ",
            " ... ",
            "ok",
            "FAILED",
            ":",
            "test result:",
            ".",
            ";",
            " passed",
            " failed",
            "bench ",
            "op=",
            "path=",
            "exit",
            " code=",
            "(XEN) ",
            "(d0)",
            "[ 1.0]",
            "(",
            ")",
            "[",
            "]",
            "é",
            "\u{fffd}",
            "\0",
            "\r",
            "\t",
            "99999999999999999999",
            "0",
            "-1",
            "warning:",
            "error:",
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut lines = Vec::new();
        for _ in 0..20_000 {
            let n = next() % 12;
            let line: String = (0..n)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let _ = parse_line(&line);
            lines.push(line);
        }
        let console = parse(&lines);
        let outcome = Outcome {
            console,
            termination: Termination::Exited(1),
        };
        let _ = check(&outcome, &native());
    }

    #[test]
    fn failed_without_reason_still_fails() {
        assert_eq!(
            parse_line("test a ... FAILED"),
            Some(Ok(Item::Test(TestCase {
                name: "a".into(),
                verdict: Verdict::Failed {
                    reason: String::new()
                }
            })))
        );
        assert_eq!(
            parse_line("test a ... FAILED: cr3 mismatch: 0x1000 != 0x2000"),
            Some(Ok(Item::Test(TestCase {
                name: "a".into(),
                verdict: Verdict::Failed {
                    reason: "cr3 mismatch: 0x1000 != 0x2000".into()
                }
            })))
        );
    }

    #[test]
    fn summary_tolerates_trailing_counts() {
        assert_eq!(
            parse_line("test result: FAILED. 3 passed; 2 failed; 1 ignored"),
            Some(Ok(Item::Summary(Summary {
                ok: false,
                passed: 3,
                failed: 2,
                skipped: 0
            })))
        );
    }

    #[test]
    fn notes_are_kept() {
        let c = parse(&[
            "pvops: warning: no x2apic",
            "(XEN) pvops: error: bad thing: 3",
        ]);
        assert_eq!(
            c.notes,
            [
                Note {
                    kind: NoteKind::Warning,
                    text: "no x2apic".into()
                },
                Note {
                    kind: NoteKind::Error,
                    text: "bad thing: 3".into()
                },
            ]
        );
    }

    #[test]
    fn malformed_lines_fail_the_check_with_their_line_number() {
        let mut lines = GOOD.to_vec();
        lines.insert(4, "test weird ... maybe");
        let problems = check(&outcome(&lines, 1), &native());
        assert_eq!(problems.len(), 1, "{problems:?}");
        let Problem::Malformed(m) = &problems[0] else {
            panic!("{problems:?}")
        };
        assert_eq!(m.line_no, 5);
        assert_eq!(m.line, "test weird ... maybe");
    }

    #[test]
    fn wrong_platform_and_backend_both_reported() {
        let lines = replaced(
            "pvops: platform=native backend=native features=- cpus=1",
            "pvops: platform=kvm backend=kvm features=pv-eoi",
        );
        let problems = check(&outcome(&lines, 1), &native());
        assert_eq!(
            problems,
            [
                Problem::WrongPlatform {
                    expected: "native".into(),
                    found: "kvm".into()
                },
                Problem::WrongBackend {
                    expected: "native".into(),
                    found: "kvm".into()
                },
            ]
        );
    }

    #[test]
    fn missing_platform() {
        let lines = without("pvops: platform=native backend=native features=- cpus=1");
        assert_eq!(
            check(&outcome(&lines, 1), &native()),
            [Problem::MissingPlatform]
        );
    }

    #[test]
    fn duplicate_platform() {
        let mut lines = GOOD.to_vec();
        lines.insert(3, "pvops: platform=native backend=native features=-");
        assert_eq!(
            check(&outcome(&lines, 1), &native()),
            [Problem::DuplicatePlatform(2)]
        );
    }

    #[test]
    fn failed_test_reports_every_problem() {
        let lines = replaced("test cr3 ... ok", "test cr3 ... FAILED: wrong value");
        let problems = check(&outcome(&lines, 1), &native());
        assert_eq!(
            problems,
            [
                Problem::TestFailed {
                    name: "cr3".into(),
                    reason: "wrong value".into()
                },
                Problem::TooFewTests { min: 5, found: 4 },
                Problem::SummaryMismatch {
                    summary: Summary {
                        ok: true,
                        passed: 5,
                        failed: 0,
                        skipped: 0
                    },
                    ok_seen: 4,
                    failed_seen: 1,
                    skipped_seen: 0
                },
            ]
        );
    }

    #[test]
    fn honest_failing_run() {
        let lines = [
            "pvops: platform=native backend=native features=-",
            "test a ... ok",
            "test b ... FAILED: no",
            "test result: FAILED. 1 passed; 1 failed",
            "pvops: exit code=1",
        ];
        let problems = check(&outcome(&lines, 3), &native());
        assert_eq!(
            problems,
            [
                Problem::TestFailed {
                    name: "b".into(),
                    reason: "no".into()
                },
                Problem::TooFewTests { min: 5, found: 1 },
                Problem::NonZeroExitCode(1),
            ]
        );
    }

    #[test]
    fn missing_summary() {
        let lines = without("test result: ok. 5 passed; 0 failed");
        assert_eq!(
            check(&outcome(&lines, 1), &native()),
            [Problem::MissingSummary]
        );
    }

    #[test]
    fn summary_count_mismatch() {
        let lines = replaced(
            "test result: ok. 5 passed; 0 failed",
            "test result: ok. 6 passed; 0 failed",
        );
        assert!(matches!(
            check(&outcome(&lines, 1), &native()).as_slice(),
            [Problem::SummaryMismatch {
                ok_seen: 5,
                failed_seen: 0,
                ..
            }]
        ));
    }

    #[test]
    fn summary_verdict_inconsistent() {
        let lines = replaced(
            "test result: ok. 5 passed; 0 failed",
            "test result: FAILED. 5 passed; 0 failed",
        );
        assert!(matches!(
            check(&outcome(&lines, 1), &native()).as_slice(),
            [Problem::SummaryVerdictInconsistent(Summary {
                ok: false,
                ..
            })]
        ));
    }

    #[test]
    fn duplicate_summary_and_test() {
        let mut lines = GOOD.to_vec();
        lines.insert(4, "test cpuid ... ok");
        lines.push("test result: ok. 6 passed; 0 failed");
        let problems = check(&outcome(&lines, 1), &native());
        assert_eq!(
            problems,
            [
                Problem::DuplicateTest("cpuid".into()),
                Problem::DuplicateSummary(2),
                Problem::SummaryMismatch {
                    summary: Summary {
                        ok: true,
                        passed: 5,
                        failed: 0,
                        skipped: 0
                    },
                    ok_seen: 6,
                    failed_seen: 0,
                    skipped_seen: 0
                },
            ]
        );
    }

    #[test]
    fn too_few_tests() {
        let lines = [
            "pvops: platform=native backend=native features=-",
            "test a ... ok",
            "test result: ok. 1 passed; 0 failed",
            "pvops: exit code=0",
        ];
        assert_eq!(
            check(&outcome(&lines, 1), &native()),
            [Problem::TooFewTests { min: 5, found: 1 }]
        );
    }

    #[test]
    fn missing_exit_code() {
        let lines = without("pvops: exit code=0");
        assert_eq!(
            check(&outcome(&lines, 1), &native()),
            [Problem::MissingExitCode]
        );
    }

    #[test]
    fn duplicate_exit_code() {
        let mut lines = GOOD.to_vec();
        lines.push("pvops: exit code=0");
        assert_eq!(
            check(&outcome(&lines, 1), &native()),
            [Problem::DuplicateExitCode(vec![0, 0])]
        );
    }

    #[test]
    fn nonzero_exit_code_with_matching_status() {
        let lines = replaced("pvops: exit code=0", "pvops: exit code=3");
        assert_eq!(
            check(&outcome(&lines, 7), &native()),
            [Problem::NonZeroExitCode(3)]
        );
    }

    #[test]
    fn triple_fault_status_zero_fails() {
        let problems = check(&outcome(GOOD, 0), &native());
        assert!(
            matches!(problems.as_slice(), [Problem::WrongTermination { found: Termination::Exited(0), why }] if why.contains("triple fault")),
            "{problems:?}"
        );
    }

    #[test]
    fn status_not_matching_exit_code_fails() {
        let problems = check(&outcome(GOOD, 5), &native());
        assert!(
            matches!(problems.as_slice(), [Problem::WrongTermination { found: Termination::Exited(5), why }] if why.contains("wrote 2")),
            "{problems:?}"
        );
    }

    #[test]
    fn qemu_error_status_fails() {
        let problems = check(&outcome(GOOD, 2), &native());
        assert!(
            matches!(problems.as_slice(), [Problem::WrongTermination { why, .. }] if why.contains("QEMU itself failed")),
            "{problems:?}"
        );
    }

    #[test]
    fn killed_qemu_fails() {
        let o = Outcome {
            console: parse(GOOD),
            termination: Termination::Signaled(9),
        };
        assert!(matches!(
            check(&o, &native()).as_slice(),
            [Problem::WrongTermination { .. }]
        ));
    }

    #[test]
    fn debug_exit_status_values() {
        assert_eq!(debug_exit_status(0), 1);
        assert_eq!(debug_exit_status(1), 3);
        assert_eq!(debug_exit_status(3), 7);
        // Only 8 bits of a process status survive.
        assert_eq!(debug_exit_status(0x80), 1);
    }

    #[test]
    fn xen_run_ends_by_reboot() {
        let mut lines = vec!["(XEN) Xen version 4.17.7", "(XEN) *** LOADING DOMAIN 0 ***"];
        lines.extend(
            GOOD.iter()
                .map(|l| {
                    l.replace(
                        "platform=native backend=native",
                        "platform=xen-pv backend=xen",
                    )
                })
                .map(|l| &*Box::leak(l.into_boxed_str())),
        );
        lines.push("(XEN) Hardware Dom0 shutdown: rebooting machine");
        assert_eq!(check(&outcome(&lines, 0), &xen()), []);
        // An isa-debug-exit status is wrong under Xen.
        assert!(matches!(
            check(&outcome(&lines, 1), &xen()).as_slice(),
            [Problem::WrongTermination { .. }]
        ));
    }

    #[test]
    fn xen_exit_code_is_the_verdict() {
        let lines: Vec<String> = GOOD
            .iter()
            .map(|l| {
                l.replace(
                    "platform=native backend=native",
                    "platform=xen-pv backend=xen",
                )
            })
            .map(|l| l.replace("exit code=0", "exit code=1"))
            .collect();
        assert_eq!(
            check(&outcome_owned(&lines, 0), &xen()),
            [Problem::NonZeroExitCode(1)]
        );
    }

    fn outcome_owned(lines: &[String], status: i32) -> Outcome {
        Outcome {
            console: parse(lines),
            termination: Termination::Exited(status),
        }
    }

    #[test]
    fn empty_console_reports_everything() {
        let problems = check(&outcome(&[], 0), &native());
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert_eq!(problems[0], Problem::MissingPlatform);
        assert_eq!(problems[1], Problem::TooFewTests { min: 5, found: 0 });
        assert_eq!(problems[2], Problem::MissingSummary);
        assert_eq!(problems[3], Problem::MissingExitCode);
        assert!(matches!(problems[4], Problem::WrongTermination { .. }));
    }

    #[test]
    fn problems_display() {
        let problems = check(&outcome(&["test x ... bad"], 0), &native());
        for p in &problems {
            assert!(!p.to_string().is_empty());
        }
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(
            text.iter().any(|t| t.contains("malformed protocol line 1")),
            "{text:?}"
        );
    }
}

#[cfg(test)]
mod skip_tests {
    use super::*;

    fn expect(skipped: &[&str]) -> Expectation {
        Expectation {
            platform: "xen-pv".into(),
            backend: "xen".into(),
            min_ok: 1,
            features_present: Vec::new(),
            features_absent: Vec::new(),
            skipped: skipped.iter().map(|s| s.to_string()).collect(),
            required: vec!["a".into()],
            ending: Ending::GuestReboot,
        }
    }

    fn outcome(text: &str) -> Outcome {
        let lines: Vec<&str> = text.lines().collect();
        Outcome {
            console: parse(&lines),
            termination: Termination::Exited(0),
        }
    }

    const SKIPPING: &str = "pvops: platform=xen-pv backend=xen features=-\n\
        test a ... ok\n\
        test io_port_roundtrip ... skipped: no CMOS behind ports 0x70/0x71\n\
        test result: ok. 1 passed; 0 failed; 1 skipped\n\
        pvops: exit code=0\n";

    #[test]
    fn skipped_lines_parse() {
        assert_eq!(
            parse_line("test x ... skipped: no device"),
            Some(Ok(Item::Test(TestCase {
                name: "x".into(),
                verdict: Verdict::Skipped {
                    reason: "no device".into()
                }
            })))
        );
        assert_eq!(
            parse_line("test result: ok. 3 passed; 0 failed; 2 skipped"),
            Some(Ok(Item::Summary(Summary {
                ok: true,
                passed: 3,
                failed: 0,
                skipped: 2
            })))
        );
    }

    #[test]
    fn the_expected_skip_set_passes_exactly() {
        assert_eq!(
            check(&outcome(SKIPPING), &expect(&["io_port_roundtrip"])),
            []
        );
    }

    #[test]
    fn a_skip_where_none_is_expected_fails() {
        let problems = check(&outcome(SKIPPING), &expect(&[]));
        assert_eq!(
            problems,
            [Problem::UnexpectedSkip {
                name: "io_port_roundtrip".into(),
                reason: "no CMOS behind ports 0x70/0x71".into()
            }]
        );
    }

    #[test]
    fn an_expected_skip_that_ran_fails() {
        let text = SKIPPING
            .replace(
                "io_port_roundtrip ... skipped: no CMOS behind ports 0x70/0x71",
                "io_port_roundtrip ... ok",
            )
            .replace("1 passed; 0 failed; 1 skipped", "2 passed; 0 failed");
        let problems = check(&outcome(&text), &expect(&["io_port_roundtrip"]));
        assert_eq!(problems, [Problem::SkipMissing("io_port_roundtrip".into())]);
    }

    #[test]
    fn a_required_test_must_be_reported() {
        let text = SKIPPING.replace("test a ... ok\n", "test b ... ok\n");
        let problems = check(&outcome(&text), &expect(&["io_port_roundtrip"]));
        assert_eq!(problems, [Problem::TestMissing("a".into())]);
    }

    #[test]
    fn the_summary_must_count_the_skips() {
        let text = SKIPPING.replace("; 1 skipped", "");
        let problems = check(&outcome(&text), &expect(&["io_port_roundtrip"]));
        assert!(
            matches!(
                problems.as_slice(),
                [Problem::SummaryMismatch {
                    skipped_seen: 1,
                    ..
                }]
            ),
            "{problems:?}"
        );
    }
}
