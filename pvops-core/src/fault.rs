//! Fault injection: `pvops.fail=<point>[:<n>][,<point>[:<n>]...]` on the
//! kernel command line makes named failure points of a backend fail, so
//! the fallbacks and error paths that a well-behaved hypervisor never
//! exercises can be booted and tested.
//!
//! A *point* is one call into the hypervisor that can fail: an MSR write
//! that registers a KVM feature, a Xen setup hypercall. Each backend lists
//! its points in one `const` (`pvops_kvm::fault_points::ALL`,
//! `pvops_xen::fault_points::ALL`), parses the option once at init with
//! [`configure`] and asks [`hit`] right before each of those calls: when
//! it answers `true` the backend skips the call and takes the error the
//! hypervisor would have returned, so everything after it runs exactly as
//! on a hypervisor that refused.
//!
//! - `<point>` alone fails every use of the point;
//! - `<point>:<n>` fails only its `n`-th use (1-based: `:1` the first,
//!   typically the boot CPU's, `:2` the next, typically the second CPU's).
//!
//! The same point may be named more than once (`kvm.kvmclock:1,kvm.kvmclock:3`).
//! Uses are counted per entry, atomically, whichever CPU makes them.
//!
//! Nothing is allocated: at most [`MAX_ENTRIES`] entries are kept. Bad
//! entries (empty, an unknown point, a count that is not a whole number
//! from 1 to `u32::MAX`, entries beyond the limit) are ignored; the
//! [`Report`] says which, and the backend prints each as a
//! `pvops: warning: pvops.fail: ...` line (with the valid point names when
//! a name was unknown). The good entries of the same option still apply.

use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// The most entries one `pvops.fail=` keeps.
pub const MAX_ENTRIES: usize = 8;

/// The most bad entries a [`Report`] describes one by one (the rest are
/// counted).
pub const MAX_PROBLEMS: usize = 4;

/// The longest piece of the command line a warning quotes.
const MAX_QUOTED: usize = 40;

/// One armed entry.
#[derive(Debug)]
struct Slot {
    /// An element of the backend's `&'static [&'static str]` list of
    /// points, or null when unused.
    point: AtomicPtr<&'static str>,
    /// The use that fails; 0: every use.
    nth: AtomicU32,
    /// Uses seen so far.
    uses: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            point: AtomicPtr::new(ptr::null_mut()),
            nth: AtomicU32::new(0),
            uses: AtomicU64::new(0),
        }
    }

    fn point(&self) -> Option<&'static str> {
        let p = self.point.load(Ordering::Acquire);
        if p.is_null() {
            return None;
        }
        // SAFETY: `configure` only ever stores null or a pointer to an
        // element of a `&'static [&'static str]`, which lives and stays
        // unchanged for the whole program.
        Some(unsafe { *p })
    }
}

/// A set of armed failure points with their use counters. The kernel has
/// one, [`active`]; tests make their own.
#[derive(Debug)]
pub struct Table {
    slots: [Slot; MAX_ENTRIES],
    /// How many slots are in use.
    armed: AtomicUsize,
    /// How many uses have been failed.
    fired: AtomicU64,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

/// One bad entry of `pvops.fail=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem<'a> {
    /// An empty entry (`pvops.fail=`, `a,,b`, a trailing comma).
    Empty,
    /// A point the backend does not have.
    Unknown(&'a str),
    /// A count that is not a whole number from 1 to `u32::MAX` (`:0`,
    /// `:x`, `:`, `:99999999999`); the whole entry.
    BadCount(&'a str),
}

/// What [`Table::configure`] made of the option.
#[derive(Debug, Clone, Copy)]
pub struct Report<'a> {
    problems: [Option<Problem<'a>>; MAX_PROBLEMS],
    /// Bad entries in all (also those not kept in `problems`).
    bad: usize,
    /// Good entries beyond [`MAX_ENTRIES`], ignored.
    over_limit: usize,
    /// Entries armed.
    armed: usize,
    /// Whether an unknown name was seen (the warning lists the valid ones).
    unknown: bool,
    points: &'static [&'static str],
}

impl<'a> Report<'a> {
    const fn empty(points: &'static [&'static str]) -> Self {
        Report {
            problems: [None; MAX_PROBLEMS],
            bad: 0,
            over_limit: 0,
            armed: 0,
            unknown: false,
            points,
        }
    }

    fn bad(&mut self, p: Problem<'a>) {
        if let Some(slot) = self.problems.get_mut(self.bad) {
            *slot = Some(p);
        }
        self.bad += 1;
        if matches!(p, Problem::Unknown(_)) {
            self.unknown = true;
        }
    }

    /// The bad entries described one by one (at most [`MAX_PROBLEMS`]).
    pub fn problems(&self) -> impl Iterator<Item = Problem<'a>> + '_ {
        self.problems.iter().flatten().copied()
    }

    /// How many entries were bad, in all.
    pub fn bad_entries(&self) -> usize {
        self.bad
    }

    /// How many good entries were ignored for lack of room.
    pub fn over_limit(&self) -> usize {
        self.over_limit
    }

    /// How many entries were armed.
    pub fn armed(&self) -> usize {
        self.armed
    }

    /// Whether every entry was taken.
    pub fn is_clean(&self) -> bool {
        self.bad == 0 && self.over_limit == 0
    }

    /// Calls `warn` with the text of each warning line the option calls
    /// for (without the `pvops: warning: ` prefix), in order: each bad
    /// entry, how many more there were, entries over the limit, and the
    /// valid point names if a name was unknown. Nothing when the option
    /// was clean.
    pub fn each_warning(&self, mut warn: impl FnMut(&dyn fmt::Display)) {
        for p in self.problems() {
            warn(&p);
        }
        if self.bad > MAX_PROBLEMS {
            warn(&format_args!(
                "pvops.fail: {} more bad entries ignored",
                self.bad - MAX_PROBLEMS
            ));
        }
        if self.over_limit > 0 {
            warn(&format_args!(
                "pvops.fail: only {MAX_ENTRIES} entries are kept; {} more ignored",
                self.over_limit
            ));
        }
        if self.unknown {
            warn(&format_args!(
                "pvops.fail: valid points here: {}",
                List(self.points)
            ));
        }
    }
}

/// Quotes at most [`MAX_QUOTED`] bytes of `s` (cut at a character
/// boundary, marked with `...`).
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.len() <= MAX_QUOTED {
            return write!(f, "`{}`", self.0);
        }
        let mut n = MAX_QUOTED;
        while !self.0.is_char_boundary(n) {
            n -= 1;
        }
        write!(f, "`{}...`", &self.0[..n])
    }
}

/// Names separated by `, `.
struct List(&'static [&'static str]);

impl fmt::Display for List {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(p)?;
        }
        if self.0.is_empty() {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Problem::Empty => f.write_str("pvops.fail: empty entry ignored"),
            Problem::Unknown(name) => {
                write!(f, "pvops.fail: unknown point {} ignored", Quoted(name))
            }
            Problem::BadCount(entry) => write!(
                f,
                "pvops.fail: {}: the count must be a whole number from 1 to {}; entry ignored",
                Quoted(entry),
                u32::MAX
            ),
        }
    }
}

/// A count: ASCII digits only, 1 to `u32::MAX`.
fn parse_count(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|n| *n >= 1)
}

/// The armed entries of a table, for a log line:
/// `kvm.pv-eoi (every use), kvm.kvmclock (use 2)`.
#[derive(Debug, Clone, Copy)]
pub struct Armed<'t>(&'t Table);

impl fmt::Display for Armed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (point, nth) in self.0.entries() {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            match nth {
                None => write!(f, "{point} (every use)")?,
                Some(n) => write!(f, "{point} (use {n})")?,
            }
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl Table {
    /// An empty table: no point fails.
    pub const fn new() -> Self {
        Table {
            slots: [const { Slot::new() }; MAX_ENTRIES],
            armed: AtomicUsize::new(0),
            fired: AtomicU64::new(0),
        }
    }

    /// Replaces the table's entries with those of `value` (the text after
    /// `pvops.fail=`; `None` when the option is absent), accepting only
    /// names in `points`. Counters start at 0. Meant to run once, at
    /// backend init, before any [`Table::hit`] on another CPU.
    pub fn configure<'a>(
        &self,
        value: Option<&'a str>,
        points: &'static [&'static str],
    ) -> Report<'a> {
        self.armed.store(0, Ordering::Release);
        for s in &self.slots {
            s.point.store(ptr::null_mut(), Ordering::Relaxed);
            s.nth.store(0, Ordering::Relaxed);
            s.uses.store(0, Ordering::Relaxed);
        }
        self.fired.store(0, Ordering::Relaxed);
        let mut report = Report::empty(points);
        let Some(value) = value else {
            return report;
        };
        let mut n = 0;
        for entry in value.split(',') {
            if entry.is_empty() {
                report.bad(Problem::Empty);
                continue;
            }
            let (name, count) = match entry.split_once(':') {
                Some((name, count)) => (name, Some(count)),
                None => (entry, None),
            };
            let Some(point) = points.iter().find(|p| **p == name) else {
                report.bad(Problem::Unknown(name));
                continue;
            };
            let nth = match count {
                None => 0,
                Some(c) => match parse_count(c) {
                    Some(nth) => nth,
                    None => {
                        report.bad(Problem::BadCount(entry));
                        continue;
                    }
                },
            };
            let Some(slot) = self.slots.get(n) else {
                report.over_limit += 1;
                continue;
            };
            slot.nth.store(nth, Ordering::Relaxed);
            slot.point.store(
                point as *const &'static str as *mut &'static str,
                Ordering::Release,
            );
            n += 1;
        }
        report.armed = n;
        self.armed.store(n, Ordering::Release);
        report
    }

    /// Counts one use of `point` and says whether it must fail.
    #[inline]
    pub fn hit(&self, point: &str) -> bool {
        let n = self.armed.load(Ordering::Acquire);
        if n == 0 {
            return false;
        }
        let mut fail = false;
        for s in self.slots.iter().take(n) {
            if s.point() != Some(point) {
                continue;
            }
            let used = s.uses.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
            let nth = s.nth.load(Ordering::Relaxed);
            if nth == 0 || used == u64::from(nth) {
                fail = true;
            }
        }
        if fail {
            self.fired.fetch_add(1, Ordering::Relaxed);
        }
        fail
    }

    /// Whether any entry is armed.
    pub fn is_armed(&self) -> bool {
        self.armed.load(Ordering::Acquire) != 0
    }

    /// The armed entries: each point and the use that fails (`None`: every
    /// use).
    pub fn entries(&self) -> impl Iterator<Item = (&'static str, Option<u32>)> + '_ {
        let n = self.armed.load(Ordering::Acquire);
        self.slots.iter().take(n).filter_map(|s| {
            let nth = s.nth.load(Ordering::Relaxed);
            s.point().map(|p| (p, (nth != 0).then_some(nth)))
        })
    }

    /// How many uses of `point` the table has counted (summed over its
    /// entries for that point; 0 when the point is not armed).
    pub fn uses(&self, point: &str) -> u64 {
        let n = self.armed.load(Ordering::Acquire);
        self.slots
            .iter()
            .take(n)
            .filter(|s| s.point() == Some(point))
            .map(|s| s.uses.load(Ordering::Relaxed))
            .sum()
    }

    /// How many uses have been made to fail.
    pub fn fired(&self) -> u64 {
        self.fired.load(Ordering::Relaxed)
    }

    /// The armed entries, displayable.
    pub fn armed(&self) -> Armed<'_> {
        Armed(self)
    }
}

/// The kernel's table: what `pvops.fail=` armed.
static ACTIVE: Table = Table::new();

/// The kernel's table.
pub fn active() -> &'static Table {
    &ACTIVE
}

/// Arms the kernel's table from `value` (the `pvops.fail=` option, e.g.
/// `ctx.option("fail")`) with the backend's `points`; see
/// [`Table::configure`].
pub fn configure<'a>(value: Option<&'a str>, points: &'static [&'static str]) -> Report<'a> {
    ACTIVE.configure(value, points)
}

/// Prints, through `warn`, what [`configure`] made of the option (its
/// `report`) and, when the kernel's table is armed, which points will
/// fail: what every backend says once its console works.
pub fn announce(report: &Report<'_>, mut warn: impl FnMut(&dyn fmt::Display)) {
    report.each_warning(&mut warn);
    let table = active();
    if table.is_armed() {
        warn(&format_args!(
            "pvops.fail: injecting faults at {}",
            table.armed()
        ));
    }
}

/// Counts one use of `point` in the kernel's table and says whether the
/// caller must fail it (skip the real call and take the hypervisor's
/// error). Costs one atomic load when nothing is armed.
#[inline]
pub fn hit(point: &str) -> bool {
    ACTIVE.hit(point)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::{String, ToString};
    use std::vec::Vec;

    const POINTS: &[&str] = &["x.alpha", "x.beta", "x.gamma"];

    fn warnings(r: &Report<'_>) -> Vec<String> {
        let mut out = Vec::new();
        r.each_warning(|w| out.push(w.to_string()));
        out
    }

    #[test]
    fn absent_option_arms_nothing() {
        let t = Table::new();
        let r = t.configure(None, POINTS);
        assert!(r.is_clean());
        assert_eq!(r.armed(), 0);
        assert!(warnings(&r).is_empty());
        assert!(!t.is_armed());
        assert!(!t.hit("x.alpha"));
        assert_eq!(t.armed().to_string(), "none");
    }

    #[test]
    fn every_use_and_nth_use() {
        let t = Table::new();
        let r = t.configure(Some("x.alpha,x.beta:2"), POINTS);
        assert!(r.is_clean(), "{:?}", warnings(&r));
        assert_eq!(r.armed(), 2);
        assert_eq!(t.armed().to_string(), "x.alpha (every use), x.beta (use 2)");
        assert!((0..5).all(|_| t.hit("x.alpha")));
        let beta: Vec<bool> = (0..4).map(|_| t.hit("x.beta")).collect();
        assert_eq!(beta, [false, true, false, false]);
        assert!(!t.hit("x.gamma"), "not armed");
        assert!(!t.hit("y.other"), "not even a point");
        assert_eq!(t.uses("x.beta"), 4);
        assert_eq!(t.uses("x.gamma"), 0);
        assert_eq!(t.fired(), 6);
    }

    #[test]
    fn a_point_named_twice_fails_at_each_count() {
        let t = Table::new();
        let r = t.configure(Some("x.gamma:1,x.gamma:3"), POINTS);
        assert!(r.is_clean());
        let got: Vec<bool> = (0..4).map(|_| t.hit("x.gamma")).collect();
        assert_eq!(got, [true, false, true, false]);
    }

    #[test]
    fn reconfiguring_resets_counters() {
        let t = Table::new();
        t.configure(Some("x.alpha:1"), POINTS);
        assert!(t.hit("x.alpha"));
        assert!(!t.hit("x.alpha"));
        t.configure(Some("x.alpha:1"), POINTS);
        assert!(t.hit("x.alpha"), "counting starts again");
        t.configure(None, POINTS);
        assert!(!t.hit("x.alpha"));
        assert_eq!(t.fired(), 0);
    }

    #[test]
    fn empty_entries_are_reported() {
        let t = Table::new();
        let r = t.configure(Some(""), POINTS);
        assert_eq!(r.problems().collect::<Vec<_>>(), [Problem::Empty]);
        assert_eq!(r.armed(), 0);
        assert_eq!(warnings(&r), ["pvops.fail: empty entry ignored"]);
        let r = t.configure(Some("x.alpha,,x.beta,"), POINTS);
        assert_eq!(r.bad_entries(), 2);
        assert_eq!(r.armed(), 2, "the good entries still apply");
        assert!(t.hit("x.alpha") && t.hit("x.beta"));
    }

    #[test]
    fn unknown_points_list_the_valid_ones() {
        let t = Table::new();
        let r = t.configure(Some("x.alpha,kvm.nope,X.ALPHA"), POINTS);
        assert_eq!(
            r.problems().collect::<Vec<_>>(),
            [Problem::Unknown("kvm.nope"), Problem::Unknown("X.ALPHA")]
        );
        assert_eq!(r.armed(), 1);
        assert_eq!(
            warnings(&r),
            [
                "pvops.fail: unknown point `kvm.nope` ignored",
                "pvops.fail: unknown point `X.ALPHA` ignored",
                "pvops.fail: valid points here: x.alpha, x.beta, x.gamma",
            ]
        );
        // A name with a count is still just a name.
        let r = t.configure(Some("x.delta:3"), POINTS);
        assert_eq!(r.problems().next(), Some(Problem::Unknown("x.delta")));
        // A backend without points.
        let r = t.configure(Some("x.alpha"), &[]);
        assert_eq!(
            warnings(&r)[1],
            "pvops.fail: valid points here: none",
            "{:?}",
            warnings(&r)
        );
    }

    #[test]
    fn bad_counts_are_refused() {
        let t = Table::new();
        for bad in [
            "x.alpha:0",
            "x.alpha:",
            "x.alpha:x",
            "x.alpha:-1",
            "x.alpha:+1",
            "x.alpha: 1",
            "x.alpha:1:2",
            "x.alpha:1.5",
            "x.alpha:4294967296",
            "x.alpha:99999999999999999999999999",
        ] {
            let r = t.configure(Some(bad), POINTS);
            assert_eq!(
                r.problems().collect::<Vec<_>>(),
                [Problem::BadCount(bad)],
                "{bad}"
            );
            assert_eq!(r.armed(), 0, "{bad}");
            assert!(!t.hit("x.alpha"), "{bad}");
        }
        let r = t.configure(Some("x.alpha:0"), POINTS);
        assert_eq!(
            warnings(&r),
            ["pvops.fail: `x.alpha:0`: the count must be a whole number from 1 to 4294967295; entry ignored"]
        );
        // The largest count is accepted (and, in practice, never reached);
        // leading zeros are just digits.
        let r = t.configure(Some("x.alpha:4294967295,x.beta:007"), POINTS);
        assert!(r.is_clean());
        assert_eq!(
            t.entries().collect::<Vec<_>>(),
            [("x.alpha", Some(u32::MAX)), ("x.beta", Some(7))]
        );
    }

    #[test]
    fn too_many_entries_keep_the_first() {
        let t = Table::new();
        let value = ["x.alpha:1"; MAX_ENTRIES + 3].join(",");
        let r = t.configure(Some(&value), POINTS);
        assert_eq!(r.armed(), MAX_ENTRIES);
        assert_eq!(r.over_limit(), 3);
        assert!(!r.is_clean());
        assert_eq!(
            warnings(&r),
            ["pvops.fail: only 8 entries are kept; 3 more ignored"]
        );
        assert_eq!(t.entries().count(), MAX_ENTRIES);
        // All eight entries count the same use: one failure, eight uses.
        assert!(t.hit("x.alpha"));
        assert_eq!(t.uses("x.alpha"), MAX_ENTRIES as u64);
        assert!(!t.hit("x.alpha"));
    }

    #[test]
    fn many_bad_entries_are_summed_up() {
        let t = Table::new();
        let r = t.configure(Some("a,b,c,d,e,f,x.beta"), POINTS);
        assert_eq!(r.bad_entries(), 6);
        assert_eq!(r.problems().count(), MAX_PROBLEMS);
        let w = warnings(&r);
        assert_eq!(w.len(), MAX_PROBLEMS + 2, "{w:?}");
        assert_eq!(w[MAX_PROBLEMS], "pvops.fail: 2 more bad entries ignored");
        assert_eq!(r.armed(), 1);
    }

    #[test]
    fn long_names_are_cut_in_warnings() {
        let t = Table::new();
        let long = "é".repeat(100);
        let r = t.configure(Some(&long), POINTS);
        let w = warnings(&r);
        assert!(w[0].len() < 120, "{}", w[0]);
        assert!(w[0].contains("...`"), "{}", w[0]);
    }

    #[test]
    fn counting_is_atomic_across_threads() {
        static T: Table = Table::new();
        T.configure(Some("x.alpha:1000,x.beta"), POINTS);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let mut fails = 0u32;
                    for _ in 0..500 {
                        fails += u32::from(T.hit("x.alpha"));
                        assert!(T.hit("x.beta"));
                    }
                    fails
                })
            })
            .collect();
        let fails: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(fails, 1, "exactly one thread saw the 1000th use");
        assert_eq!(T.uses("x.alpha"), 2_000);
        assert_eq!(T.fired(), 2_001);
    }

    #[test]
    fn the_global_table() {
        // The only test touching the global table.
        static P: &[&str] = &["g.one"];
        let r = configure(Some("g.one:2"), P);
        assert!(r.is_clean());
        assert!(active().is_armed());
        let mut said = std::vec::Vec::new();
        announce(&r, |w| said.push(std::format!("{w}")));
        assert_eq!(said, ["pvops.fail: injecting faults at g.one (use 2)"]);
        assert!(!hit("g.one"));
        assert!(hit("g.one"));
        configure(None, P);
        assert!(!hit("g.one"));
    }
}
