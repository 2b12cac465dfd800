//! A minimal QMP client: enough to read KVM's per-vCPU counters with
//! `query-stats` (QEMU 7.1+), which is how the harness counts VM exits and
//! hypercalls per operation (guest cycle counts are not hardware timings on
//! these machines).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
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
        let reply = self.execute(
            "query-stats",
            json!({ "target": "vcpu", "providers": [{ "provider": "kvm", "names": VCPU_STATS }] }),
        )?;
        sum_vcpu_stats(&reply)
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
