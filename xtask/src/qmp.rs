//! A minimal QMP client: enough to read KVM's per-vCPU counters with
//! `query-stats` (QEMU 7.1+), which is how the harness counts VM exits and
//! hypercalls per operation (guest cycle counts are not hardware timings on
//! these machines).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

/// The KVM vCPU counters the harness reads.
pub const VCPU_STATS: &[&str] = &[
    "exits",
    "hypercalls",
    "io_exits",
    "halt_exits",
    "irq_exits",
    "insn_emulation",
];

/// Counters summed over every vCPU, by name.
pub type Stats = BTreeMap<String, u64>;

/// A QMP connection after capability negotiation.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to QEMU's `-qmp unix:PATH,server=on,wait=off` socket,
    /// retrying until `patience` runs out (QEMU creates it while starting).
    pub fn connect(path: &Path, patience: Duration) -> Result<Qmp> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < patience => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP at {}", path.display()))
                }
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream),
            writer,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("QMP greeting missing: {greeting}");
        }
        qmp.execute("qmp_capabilities", json!({}))?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<Value> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("QMP connection closed");
            }
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("QMP sent something that is not JSON: {line:?}"))?;
            // Asynchronous events interleave with replies; skip them.
            if v.get("event").is_none() {
                return Ok(v);
            }
        }
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let msg = json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}")?;
        self.writer.flush()?;
        let reply = self.read_message()?;
        if let Some(err) = reply.get("error") {
            bail!("QMP {command} failed: {err}");
        }
        reply
            .get("return")
            .cloned()
            .ok_or_else(|| anyhow!("QMP {command}: reply without return: {reply}"))
    }

    /// KVM's vCPU counters, summed over all vCPUs.
    pub fn vcpu_stats(&mut self) -> Result<Stats> {
        let reply = self.execute("query-stats", vcpu_stats_request())?;
        sum_vcpu_stats(&reply)
    }
}

/// The `query-stats` arguments for [`VCPU_STATS`] (only those: a shorter
/// answer, which matters over a serial line).
fn vcpu_stats_request() -> Value {
    json!({ "target": "vcpu", "providers": [{ "provider": "kvm", "names": VCPU_STATS }] })
}

/// QMP reached through a serial line: kvm-nested's inner QEMU runs
/// `-qmp /dev/ttyS1`, the outer machine's second serial port, which the
/// outer QEMU offers on a unix socket. What that changes (all seen in the
/// shared recipe's measurements):
///
/// - One connection outlives many inner QEMUs, each with its own QMP
///   session: [`SerialQmp::new_session`] makes the next call negotiate
///   capabilities again. Greetings are not waited for (one sent while no
///   client was connected is lost).
/// - Until an inner QEMU puts the port in raw mode, the outer Linux's line
///   discipline echoes what arrives, so a command may come back as if it
///   were an answer: commands carry an `id`, and only a message with that
///   `id` and a `return` or `error` is taken as the answer.
/// - Bytes sent while nobody reads the port arrive later, cut: before a
///   handshake an ESC and a newline make QMP's JSON lexer start afresh
///   (QMP spec, "Forcing the JSON parser into known-good state").
/// - Lines may carry CRs, NULs and noise: what does not parse as JSON is
///   skipped.
#[derive(Debug)]
pub struct SerialQmp {
    writer: UnixStream,
    messages: Receiver<Value>,
    next_id: u64,
    negotiated: bool,
}

impl SerialQmp {
    /// Connects to the serial port's socket, retrying until `patience`
    /// runs out. No handshake yet.
    pub fn connect(path: &Path, patience: Duration) -> Result<SerialQmp> {
        let start = Instant::now();
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(_) if start.elapsed() < patience => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("connecting to the serial QMP at {}", path.display())
                    })
                }
            }
        };
        let reader = stream.try_clone()?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let text = String::from_utf8_lossy(&buf);
                let line = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Ok(SerialQmp {
            writer: stream,
            messages: rx,
            next_id: 0,
            negotiated: false,
        })
    }

    /// A new inner QEMU is starting: negotiate with it before the next call.
    pub fn new_session(&mut self) {
        self.negotiated = false;
    }

    /// Sends `command` and waits up to `patience` for its answer (the
    /// whole message: `return` or `error`).
    fn call(&mut self, command: &str, arguments: Value, patience: Duration) -> Result<Value> {
        self.next_id += 1;
        let id = format!("xtask-{}", self.next_id);
        let msg = json!({ "execute": command, "arguments": arguments, "id": id });
        // Whatever an earlier session left unread is stale now.
        while self.messages.try_recv().is_ok() {}
        self.writer.write_all(format!("\n{msg}\n").as_bytes())?;
        self.writer.flush()?;
        let deadline = Instant::now() + patience;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.messages.recv_timeout(left) {
                Ok(v) => {
                    if v.get("id").and_then(Value::as_str) == Some(id.as_str())
                        && (v.get("return").is_some() || v.get("error").is_some())
                    {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no answer to QMP {command} over the serial line within {patience:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("the serial QMP connection closed (QMP {command})")
                }
            }
        }
    }

    fn handshake(&mut self) -> Result<()> {
        self.writer.write_all(b"\x1b\n")?;
        let answer = self.call("qmp_capabilities", json!({}), Duration::from_secs(5))?;
        if answer.get("return").is_some() {
            self.negotiated = true;
            return Ok(());
        }
        let desc = answer["error"]["desc"].as_str().unwrap_or_default();
        // Negotiated before (by an earlier call of ours): fine.
        if desc.to_lowercase().contains("negotiation") {
            self.negotiated = true;
            return Ok(());
        }
        bail!("QMP qmp_capabilities over the serial line failed: {answer}")
    }

    /// Runs `command` with `arguments` (negotiating first if needed) and
    /// returns its `return` value; waits up to `patience` for the answer.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Value,
        patience: Duration,
    ) -> Result<Value> {
        if !self.negotiated {
            self.handshake()?;
        }
        let answer = self.call(command, arguments, patience)?;
        if let Some(err) = answer.get("error") {
            bail!("QMP {command} failed: {err}");
        }
        Ok(answer["return"].clone())
    }

    /// KVM's vCPU counters, summed over all vCPUs. A query that gets no
    /// answer (seen once in 374 reads, load average 12) is asked again
    /// after a lexer reset and a new handshake.
    pub fn vcpu_stats(&mut self) -> Result<Stats> {
        if !self.negotiated {
            self.handshake()?;
        }
        let patience = Duration::from_secs(5);
        let answer = match self.call("query-stats", vcpu_stats_request(), patience) {
            Ok(a) => a,
            Err(first) => {
                self.negotiated = false;
                self.handshake()
                    .and_then(|()| self.call("query-stats", vcpu_stats_request(), patience))
                    .map_err(|e| e.context(format!("and before: {first:#}")))?
            }
        };
        if let Some(err) = answer.get("error") {
            bail!("QMP query-stats failed: {err}");
        }
        sum_vcpu_stats(&answer["return"])
    }
}

/// Sums a `query-stats` reply's counters over its vCPUs.
pub fn sum_vcpu_stats(reply: &Value) -> Result<Stats> {
    let mut out = Stats::new();
    let vcpus = reply
        .as_array()
        .ok_or_else(|| anyhow!("query-stats did not return a list: {reply}"))?;
    for vcpu in vcpus {
        let stats = vcpu
            .get("stats")
            .and_then(Value::as_array)
            .ok_or_else(|| anyhow!("query-stats entry without stats: {vcpu}"))?;
        for s in stats {
            let (Some(name), Some(value)) = (
                s.get("name").and_then(Value::as_str),
                s.get("value").and_then(Value::as_u64),
            ) else {
                continue;
            };
            *out.entry(name.to_owned()).or_default() += value;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The serial line's habits, played by a socket server: its own
    /// command echoed first (the tty not yet raw), noise, an answer to
    /// someone else, then the answers; a second session negotiates again.
    #[test]
    fn serial_qmp_takes_only_its_own_answers() {
        use std::os::unix::net::UnixListener;
        let path =
            std::env::temp_dir().join(format!("xtask-serial-qmp-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut lines = BufReader::new(stream);
            let mut seen = Vec::new();
            let mut line = String::new();
            while lines.read_line(&mut line).unwrap() > 0 {
                let text = line.trim().to_owned();
                line.clear();
                let Ok(cmd) = serde_json::from_str::<Value>(&text) else {
                    continue; // the ESC reset, blank lines
                };
                let name = cmd["execute"].as_str().unwrap().to_owned();
                let id = cmd["id"].clone();
                seen.push(name.clone());
                // The echo, noise, a stranger's answer, then ours.
                writeln!(out, "{text}\r").unwrap();
                writeln!(out, "\0garbage{{").unwrap();
                writeln!(out, "{}", json!({"return": {}, "id": "other"})).unwrap();
                let answer = if name == "query-stats" {
                    json!({"return": [{"provider": "kvm", "qom-path": "/c0",
                        "stats": [{"name": "exits", "value": 7}]}], "id": id})
                } else {
                    json!({"return": {}, "id": id})
                };
                writeln!(out, "{answer}\r").unwrap();
                if seen.len() == 4 {
                    return seen;
                }
            }
            seen
        });
        let mut q = SerialQmp::connect(&path, Duration::from_secs(5)).unwrap();
        assert_eq!(q.vcpu_stats().unwrap().get("exits"), Some(&7));
        q.new_session();
        assert_eq!(q.vcpu_stats().unwrap().get("exits"), Some(&7));
        let seen = server.join().unwrap();
        assert_eq!(
            seen,
            [
                "qmp_capabilities",
                "query-stats",
                "qmp_capabilities",
                "query-stats"
            ]
        );
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn sums_over_vcpus_and_ignores_odd_entries() {
        let reply = json!([
            {"provider": "kvm", "qom-path": "/a", "stats": [
                {"name": "exits", "value": 10}, {"name": "hypercalls", "value": 1}]},
            {"provider": "kvm", "qom-path": "/b", "stats": [
                {"name": "exits", "value": 5}, {"name": "histogram", "value": [1, 2]}]}
        ]);
        let s = sum_vcpu_stats(&reply).unwrap();
        assert_eq!(s.get("exits"), Some(&15));
        assert_eq!(s.get("hypercalls"), Some(&1));
        assert_eq!(s.get("histogram"), None);
        assert!(sum_vcpu_stats(&json!({"x": 1})).is_err());
        assert!(sum_vcpu_stats(&json!([{"provider": "kvm"}])).is_err());
    }
}
