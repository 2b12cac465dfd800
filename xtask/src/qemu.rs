//! Running QEMU: spawn it so that it cannot outlive the harness, record
//! (and optionally echo) its console line by line, and enforce a time bound.
//!
//! A later QMP client (`-qmp unix:PATH,server=on,wait=off`, `query-stats`
//! for KVM exit counts) belongs in its own module; it would hook in here by
//! adding its socket to the arguments and talking to it while [`run`] waits.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::protocol::Termination;

/// How many console lines a time-out report shows.
pub const TAIL_LINES: usize = 40;

/// How long to keep reading QEMU's output after it exited, in case a pipe
/// is still held open by someone else.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// Longest console line kept whole; longer ones are split.
pub const MAX_LINE_BYTES: u64 = 16 * 1024;

/// Most lines recorded per stream; later ones are counted, not kept (a
/// passing kernel prints a few hundred).
pub const MAX_LINES: usize = 200_000;

/// A finished QEMU run.
#[derive(Debug, Clone)]
pub struct QemuRun {
    /// Console (QEMU's stdout, i.e. the guest's serial port), line by line.
    pub console: Vec<String>,
    /// QEMU's own stderr, line by line.
    pub stderr: Vec<String>,
    /// How QEMU ended.
    pub termination: Termination,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
    /// Lines not recorded because a stream passed [`MAX_LINES`].
    pub dropped_lines: usize,
}

/// Output after which QEMU keeps running with the machine stopped for
/// good instead of exiting, so waiting for the time bound would only waste
/// it: KVM failures make QEMU pause the VM (stderr), and Xen halts the
/// machine when dom0 powers off or halts instead of asking for a reboot
/// (console).
const STOPPED_FOR_GOOD: &[(Stream, &str)] = &[
    (Stream::Stderr, "KVM internal error"),
    (Stream::Stderr, "KVM: entry failed"),
    (Stream::Stdout, "Hardware Dom0 halted: halting machine"),
];

/// How long to keep collecting QEMU's report (a register dump) after one of
/// [`STOPPED_FOR_GOOD`] before killing it.
const STOPPED_GRACE: Duration = Duration::from_secs(1);

/// Why the harness killed QEMU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillReason {
    /// It did not finish within this bound.
    TimedOut(Duration),
    /// The machine stopped for good, as this output line said.
    GuestStopped(String),
    /// It printed nothing for this long (a machine that stopped without
    /// saying so: kvm-nested's outer Linux, seen frozen during an inner
    /// run, its own watchdog never firing).
    Silent(Duration),
}

/// QEMU did not end by itself and was killed.
#[derive(Debug, Clone)]
pub struct Killed {
    /// Why.
    pub reason: KillReason,
    /// The last [`TAIL_LINES`] console lines.
    pub last_lines: Vec<String>,
    /// QEMU's stderr.
    pub stderr: Vec<String>,
}

impl fmt::Display for Killed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            KillReason::TimedOut(after) => writeln!(
                f,
                "QEMU did not finish within {} s and was killed (a passing run always ends by \
                 itself: the kernel hung, or never reached its exit path)",
                after.as_secs_f64()
            )?,
            KillReason::GuestStopped(line) => writeln!(
                f,
                "the machine stopped for good without QEMU exiting ({line:?}), so QEMU was \
                 killed. Under KVM: the guest did something KVM could not run or emulate (here \
                 KVM emulates guest instructions, and e.g. int3 fails). Under Xen: dom0 halted \
                 or powered off instead of asking for a reboot"
            )?,
            KillReason::Silent(after) => writeln!(
                f,
                "QEMU printed nothing for {} s and was killed (the machine stopped without \
                 saying so; every inner run prints, or is killed by the outer /init, sooner)",
                after.as_secs_f64()
            )?,
        }
        writeln!(f, "last {} console line(s):", self.last_lines.len())?;
        for line in &self.last_lines {
            writeln!(f, "  | {line}")?;
        }
        if !self.stderr.is_empty() {
            writeln!(f, "QEMU stderr:")?;
            for line in &self.stderr {
                writeln!(f, "  ! {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Killed {}

/// Kills and reaps the child when dropped, so no early return (or panic)
/// leaves a QEMU running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

enum Event {
    Line(Stream, String),
    Closed,
}

/// Runs `program args`, returning its console once it exits by itself.
///
/// With `echo`, console lines go to this process's stdout (QEMU's stderr to
/// its stderr) as they arrive. After `timeout`, or once QEMU reports that it
/// stopped the guest for good, QEMU is killed and the result is a
/// [`Killed`] error (downcast the `anyhow::Error` to get it).
///
/// QEMU receives SIGKILL when the *thread* that called `run` dies (that is
/// how `PR_SET_PDEATHSIG` works), which is why this function spawns and
/// waits on the caller's thread.
pub fn run(program: &Path, args: &[OsString], timeout: Duration, echo: bool) -> Result<QemuRun> {
    run_observed(program, args, timeout, echo, &mut |_| {})
}

/// [`run`], calling `observer` with every console line as it arrives (on
/// this thread), e.g. to read QEMU's counters at a line the guest prints.
pub fn run_observed(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    echo: bool,
    observer: &mut dyn FnMut(&str),
) -> Result<QemuRun> {
    run_watched(program, args, timeout, echo, observer, &[])
}

/// [`run_observed`], also killing QEMU (a [`KillReason::GuestStopped`])
/// once a console line contains one of `stop_on`: what a machine prints
/// when it will not get anywhere any more (kvm-nested's outer Linux
/// reporting a CPU stuck).
pub fn run_watched(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    echo: bool,
    observer: &mut dyn FnMut(&str),
    stop_on: &[&str],
) -> Result<QemuRun> {
    run_bounded(program, args, timeout, echo, observer, stop_on, None)
}

/// [`run_watched`], also killing QEMU (a [`KillReason::Silent`]) when no
/// line came for `silence`.
pub fn run_watched_silent(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    echo: bool,
    observer: &mut dyn FnMut(&str),
    stop_on: &[&str],
    silence: Duration,
) -> Result<QemuRun> {
    run_bounded(
        program,
        args,
        timeout,
        echo,
        observer,
        stop_on,
        Some(silence),
    )
}

fn run_bounded(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
    echo: bool,
    observer: &mut dyn FnMut(&str),
    stop_on: &[&str],
    silence: Option<Duration>,
) -> Result<QemuRun> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let parent = std::process::id();
    // SAFETY: `pre_exec` requires the closure to be async-signal-safe, since
    // it runs in the forked child before exec: `die_with_parent` only makes
    // raw system calls and builds io::Errors from errno values, which
    // neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(die_with_parent(parent));
    }

    let start = Instant::now();
    let child = command.spawn().with_context(|| {
        format!(
            "could not start {}; is QEMU installed? (apt-get install -y qemu-system-x86)",
            program.display()
        )
    })?;
    let mut child = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.0.stdout.take() {
        spawn_reader(out, Stream::Stdout, tx.clone());
    }
    if let Some(err) = child.0.stderr.take() {
        spawn_reader(err, Stream::Stderr, tx);
    }

    let deadline = start + timeout;
    let mut recorder = Recorder {
        observer,
        stop_on,
        echo,
        console: Vec::new(),
        stderr: Vec::new(),
        stopped: None,
        dropped: 0,
        last_line: start,
        silence,
        silent: false,
    };
    let status = match wait(&mut child.0, &rx, deadline, &mut recorder)? {
        Some(status) => status,
        None => {
            let _ = child.0.kill();
            let _ = child.0.wait();
            // Lines still in flight are part of the story.
            while let Ok(Event::Line(stream, line)) = rx.try_recv() {
                recorder.record(stream, line);
            }
            let reason = match (recorder.stopped.take(), recorder.silence) {
                (Some((line, _)), _) => KillReason::GuestStopped(line),
                (None, Some(quiet)) if recorder.silent => KillReason::Silent(quiet),
                _ => KillReason::TimedOut(timeout),
            };
            return Err(Killed {
                reason,
                last_lines: tail(&recorder.console, TAIL_LINES)
                    .iter()
                    .map(|l| l.to_string())
                    .collect(),
                stderr: recorder.stderr,
            }
            .into());
        }
    };
    Ok(QemuRun {
        console: recorder.console,
        stderr: recorder.stderr,
        termination: termination(status),
        elapsed: start.elapsed(),
        dropped_lines: recorder.dropped,
    })
}

/// The child's half of "QEMU dies with the harness": asks the kernel for
/// SIGKILL when the parent thread dies, then checks that the parent did not
/// already die between fork and prctl (the signal would have been missed).
fn die_with_parent(parent: u32) -> impl FnMut() -> io::Result<()> + Send + Sync + 'static {
    move || {
        // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and no
        // pointers, so no memory is touched.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: getppid has no arguments and cannot fail.
        let ppid = unsafe { libc::getppid() };
        if u32::try_from(ppid).ok() != Some(parent) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    }
}

struct Recorder<'a> {
    observer: &'a mut dyn FnMut(&str),
    /// Console text after which the machine is stopped for good.
    stop_on: &'a [&'a str],
    echo: bool,
    console: Vec<String>,
    stderr: Vec<String>,
    /// The first [`STOPPED_FOR_GOOD`] line, and when it came.
    stopped: Option<(String, Instant)>,
    /// Lines past [`MAX_LINES`].
    dropped: usize,
    /// When the last line came (or QEMU started).
    last_line: Instant,
    /// The longest silence allowed, if bounded.
    silence: Option<Duration>,
    /// Whether the silence bound ended the run.
    silent: bool,
}

impl Recorder<'_> {
    fn record(&mut self, stream: Stream, line: String) {
        self.last_line = Instant::now();
        if self.stopped.is_none()
            && (STOPPED_FOR_GOOD
                .iter()
                .any(|&(s, p)| s == stream && line.contains(p))
                || (stream == Stream::Stdout && self.stop_on.iter().any(|p| line.contains(p))))
        {
            self.stopped = Some((line.clone(), Instant::now()));
        }
        match stream {
            Stream::Stdout => {
                (self.observer)(&line);
                if self.echo {
                    let mut out = io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                    let _ = out.flush();
                }
                if self.console.len() < MAX_LINES {
                    self.console.push(line);
                } else {
                    self.dropped += 1;
                }
            }
            Stream::Stderr => {
                if self.echo {
                    eprintln!("qemu: {line}");
                }
                if self.stderr.len() < MAX_LINES {
                    self.stderr.push(line);
                } else {
                    self.dropped += 1;
                }
            }
        }
    }
}

/// Records output until QEMU has exited and both pipes are drained.
/// `Ok(None)` means the deadline passed first, or QEMU stopped the guest
/// for good (then `recorder.stopped` says so).
fn wait(
    child: &mut Child,
    rx: &Receiver<Event>,
    deadline: Instant,
    recorder: &mut Recorder<'_>,
) -> Result<Option<ExitStatus>> {
    let mut open = 2;
    let mut exited: Option<(ExitStatus, Instant)> = None;
    loop {
        if exited.is_none() {
            if let Some(status) = child.try_wait().context("waiting for QEMU")? {
                exited = Some((status, Instant::now()));
            }
        }
        let now = Instant::now();
        if let Some((status, at)) = exited {
            if open == 0 || now >= at + DRAIN_GRACE {
                return Ok(Some(status));
            }
        } else {
            let stopped = recorder
                .stopped
                .as_ref()
                .is_some_and(|(_, at)| now >= *at + STOPPED_GRACE);
            if stopped || now >= deadline {
                return Ok(None);
            }
            if recorder
                .silence
                .is_some_and(|quiet| now >= recorder.last_line + quiet)
            {
                recorder.silent = true;
                return Ok(None);
            }
        }
        // Wake up now and then to notice the exit even while pipes stay open.
        let tick = Duration::from_millis(50).min(deadline.saturating_duration_since(now));
        match rx.recv_timeout(tick) {
            Ok(Event::Line(stream, line)) => recorder.record(stream, line),
            Ok(Event::Closed) => open -= 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = 0,
        }
        if open == 0 && exited.is_none() {
            // Both pipes closed: QEMU is exiting; block briefly for it.
            if let Some(status) = wait_until(child, deadline)? {
                return Ok(Some(status));
            }
            return Ok(None);
        }
    }
}

fn wait_until(child: &mut Child, deadline: Instant) -> Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `pipe` line by line (lossy UTF-8, without `\r\n`) into `tx`. A
/// line longer than [`MAX_LINE_BYTES`] is split, so a kernel spewing
/// without newlines cannot make one line eat the memory.
fn spawn_reader(pipe: impl Read + Send + 'static, stream: Stream, tx: Sender<Event>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader
                .by_ref()
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut buf)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if tx.send(Event::Line(stream, line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

fn termination(status: ExitStatus) -> Termination {
    match (status.code(), status.signal()) {
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Signaled(signal),
        // Neither is possible on Unix once the process has ended.
        (None, None) => Termination::Signaled(0),
    }
}

/// The last `n` items of `lines` (for reports).
pub fn tail<S: AsRef<str>>(lines: &[S], n: usize) -> Vec<&str> {
    let skip = lines.len().saturating_sub(n);
    lines[skip..].iter().map(AsRef::as_ref).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Result<QemuRun> {
        run(
            Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            timeout,
            false,
        )
    }

    #[test]
    fn records_lines_and_status() {
        let r = sh(
            "printf 'a\\r\\nb\\nlast'; echo oops >&2; exit 3",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(r.console, ["a", "b", "last"]);
        assert_eq!(r.stderr, ["oops"]);
        assert_eq!(r.termination, Termination::Exited(3));
    }

    #[test]
    fn long_lines_are_split() {
        let r = sh(
            "head -c 40000 /dev/zero | tr '\\0' x; echo; echo end",
            Duration::from_secs(10),
        )
        .unwrap();
        let lens: Vec<usize> = r.console.iter().map(String::len).collect();
        assert_eq!(lens, [16384, 16384, 40000 - 2 * 16384, 3]);
    }

    #[test]
    fn invalid_utf8_is_kept_lossily() {
        let r = sh("printf 'x\\377y\\n'", Duration::from_secs(10)).unwrap();
        assert_eq!(r.console, ["x\u{fffd}y"]);
    }

    #[test]
    fn time_out_kills_and_reports_the_tail() {
        let start = Instant::now();
        let err = sh(
            "i=0; while [ $i -lt 50 ]; do echo line$i; i=$((i+1)); done; exec sleep 30",
            Duration::from_millis(500),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        let t = err.downcast_ref::<Killed>().expect("a Killed error");
        assert_eq!(t.reason, KillReason::TimedOut(Duration::from_millis(500)));
        assert_eq!(t.last_lines.len(), TAIL_LINES);
        assert_eq!(t.last_lines.first().map(String::as_str), Some("line10"));
        assert_eq!(t.last_lines.last().map(String::as_str), Some("line49"));
        assert!(err.to_string().contains("line49"));
    }

    #[test]
    fn exit_is_noticed_while_a_grandchild_holds_the_pipe() {
        let start = Instant::now();
        let r = sh("echo hi; sleep 20 & exit 0", Duration::from_secs(15)).unwrap();
        assert_eq!(r.console, ["hi"]);
        assert_eq!(r.termination, Termination::Exited(0));
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn guest_stopped_for_good_is_killed_early() {
        let start = Instant::now();
        let err = sh(
            "echo booting; echo 'KVM internal error. Suberror: 1' >&2; echo 'EAX=0' >&2; \
             exec sleep 30",
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        let k = err.downcast_ref::<Killed>().expect("a Killed error");
        assert_eq!(
            k.reason,
            KillReason::GuestStopped("KVM internal error. Suberror: 1".into())
        );
        assert_eq!(k.last_lines, ["booting"]);
        assert_eq!(k.stderr, ["KVM internal error. Suberror: 1", "EAX=0"]);
    }

    #[test]
    fn xen_halting_the_machine_is_killed_early() {
        let start = Instant::now();
        let err = sh(
            "echo '(XEN) Hardware Dom0 halted: halting machine'; exec sleep 30",
            Duration::from_secs(20),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        let k = err.downcast_ref::<Killed>().expect("a Killed error");
        assert!(matches!(&k.reason, KillReason::GuestStopped(l) if l.contains("Dom0 halted")));
        // The same text on stderr is not Xen's console.
        let r = sh(
            "echo 'Hardware Dom0 halted: halting machine' >&2",
            Duration::from_secs(20),
        );
        assert!(r.is_ok());
    }

    #[test]
    fn a_silent_machine_is_killed_at_the_silence_bound() {
        let start = Instant::now();
        let err = run_watched_silent(
            Path::new("/bin/sh"),
            &["-c".into(), "echo booting; exec sleep 30".into()],
            Duration::from_secs(20),
            false,
            &mut |_| {},
            &[],
            Duration::from_millis(700),
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        let k = err.downcast_ref::<Killed>().expect("a Killed error");
        assert_eq!(k.reason, KillReason::Silent(Duration::from_millis(700)));
        assert_eq!(k.last_lines, ["booting"]);
        assert!(k.to_string().contains("printed nothing"), "{k}");
        // Lines keep it alive: one every 200 ms for 1.2 s, then exit 0.
        let r = run_watched_silent(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "for i in 1 2 3 4 5 6; do echo $i; sleep 0.2; done".into(),
            ],
            Duration::from_secs(20),
            false,
            &mut |_| {},
            &[],
            Duration::from_millis(700),
        )
        .expect("a talking machine is not silent");
        assert_eq!(r.console.len(), 6);
    }

    #[test]
    fn extra_stop_lines_are_killed_early() {
        let start = Instant::now();
        let err = run_watched(
            Path::new("/bin/sh"),
            &[
                "-c".into(),
                "echo 'watchdog: BUG: soft lockup - CPU#1 stuck'; exec sleep 30".into(),
            ],
            Duration::from_secs(20),
            false,
            &mut |_| {},
            &["soft lockup"],
        )
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(10));
        let k = err.downcast_ref::<Killed>().expect("a Killed error");
        assert!(matches!(&k.reason, KillReason::GuestStopped(l) if l.contains("CPU#1")));
    }

    #[test]
    fn signal_is_reported() {
        let r = sh("kill -9 $$", Duration::from_secs(10)).unwrap();
        assert_eq!(r.termination, Termination::Signaled(9));
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let err = run(
            Path::new("/nonexistent/qemu"),
            &[],
            Duration::from_secs(1),
            false,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/qemu"), "{err:#}");
    }

    #[test]
    fn tail_of_lines() {
        let lines = ["a", "b", "c"];
        assert_eq!(tail(&lines, 2), ["b", "c"]);
        assert_eq!(tail(&lines, 9), ["a", "b", "c"]);
    }
}
