//! The benchmark report: `target/bench/report.md`, `report.json` and
//! `report.svg`, from the guest runs and (if present) the host benchmark's
//! `target/bench/host.json`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::bench::{GuestRun, Row};

/// Where reports go.
pub fn bench_dir(root: &Path) -> PathBuf {
    root.join("target").join("bench")
}

fn machine() -> Value {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({ "cpu": cpu, "cores": cores, "host_kernel": kernel.trim(), "date": date })
}

fn row_json(r: &Row) -> Value {
    json!({
        "op": r.op, "path": r.path, "cycles_median": r.cycles_median,
        "cycles_min": r.cycles_min, "iters": r.iters,
        "timing": if r.emulated { "emulated" } else { "hardware" },
        "per_op": r.per_op,
    })
}

/// The median cycles of `op` on the native path in the same run.
fn native_cycles(run: &GuestRun, op: &str) -> Option<u64> {
    run.rows
        .iter()
        .find(|r| r.op == op && r.path == "native")
        .map(|r| r.cycles_median)
}

/// Counts are differences of two readings minus a baseline: noise can
/// leave them a hair below zero, which says nothing but "none".
fn tidy(v: f64) -> f64 {
    if v.abs() < 0.005 {
        0.0
    } else {
        v
    }
}

/// One `bench` protocol line per row, with per-op counters appended.
pub fn bench_lines(run: &GuestRun) -> Vec<String> {
    run.rows
        .iter()
        .map(|r| {
            let mut line = format!(
                "bench op={} path={} cycles_median={} cycles_min={} iters={}",
                r.op, r.path, r.cycles_median, r.cycles_min, r.iters
            );
            if r.emulated {
                line.push_str(" timing=emulated");
            }
            for key in ["exits", "hypercalls"] {
                if let Some(v) = r.per_op.get(key) {
                    let _ = write!(line, " {key}={:.2}", tidy(*v));
                }
            }
            let _ = write!(line, " env={} variant={}", run.env, run.variant);
            line
        })
        .collect()
}

/// Writes the three report files and returns the Markdown.
pub fn write(root: &Path, guests: &[GuestRun], host: Option<&Value>) -> Result<String> {
    let dir = bench_dir(root);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let machine = machine();
    let json = json!({
        "machine": machine,
        "host": host.cloned().unwrap_or(Value::Null),
        "guests": guests.iter().map(|g| json!({
            "env": g.env.name(), "variant": g.variant, "features": g.features,
            "rows": g.rows.iter().map(row_json).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let md = markdown(&machine, guests, host);
    fs::write(dir.join("report.md"), &md)?;
    fs::write(dir.join("report.svg"), svg(guests))?;
    Ok(md)
}

fn markdown(machine: &Value, guests: &[GuestRun], host: Option<&Value>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# pvops benchmark report\n");
    let _ = writeln!(
        md,
        "Machine: {} ({} cores), host kernel {}, {}.\n",
        machine["cpu"].as_str().unwrap_or("?"),
        machine["cores"],
        machine["host_kernel"].as_str().unwrap_or("?"),
        machine["date"].as_str().unwrap_or("?")
    );
    if let Some(h) = host {
        let _ = writeln!(md, "## Host process (hardware cycles)\n");
        let _ = writeln!(md, "{}\n", host_table(h));
    }
    for g in guests {
        let _ = writeln!(
            md,
            "## {} ({}) — features `{}`\n",
            g.env, g.variant, g.features
        );
        let counters = g.rows.iter().any(|r| !r.per_op.is_empty());
        if counters {
            let _ = writeln!(
                md,
                "| op | path | exits/op | hypercalls/op | cycles (emulated) | × native |"
            );
            let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: | ---: |");
        } else {
            let _ = writeln!(md, "| op | path | cycles (emulated) | × native |");
            let _ = writeln!(md, "| --- | --- | ---: | ---: |");
        }
        for r in &g.rows {
            let ratio = native_cycles(g, &r.op)
                .filter(|n| *n > 0)
                .map(|n| format!("{:.2}", r.cycles_median as f64 / n as f64))
                .unwrap_or_else(|| "-".into());
            if counters {
                let c = |k: &str| {
                    r.per_op
                        .get(k)
                        .map(|v| format!("{:.2}", tidy(*v)))
                        .unwrap_or_else(|| "-".into())
                };
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    r.op,
                    r.path,
                    c("exits"),
                    c("hypercalls"),
                    r.cycles_median,
                    ratio
                );
            } else {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} |",
                    r.op, r.path, r.cycles_median, ratio
                );
            }
        }
        let _ = writeln!(md);
    }
    md
}

fn host_table(h: &Value) -> String {
    let mut out = String::from("| op | path | cycles median | cycles min | × native |\n| --- | --- | ---: | ---: | ---: |\n");
    let rows = h
        .get("rows")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r["op"].as_str().unwrap_or("?"),
            r["path"].as_str().unwrap_or("?"),
            r["cycles_median"],
            r["cycles_min"],
            r.get("ratio_to_native")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    out
}

/// Picks the charted value of one op in one run.
type ValueOf = Box<dyn Fn(&GuestRun, &str) -> Option<f64>>;

/// A bar chart: exits per op on the pvops path, one group per op, one bar
/// per guest run that has counters; falls back to emulated cycles relative
/// to native when no run has counters.
fn svg(guests: &[GuestRun]) -> String {
    let with_counters: Vec<&GuestRun> = guests
        .iter()
        .filter(|g| g.rows.iter().any(|r| !r.per_op.is_empty()))
        .collect();
    let (title, runs, value): (&str, Vec<&GuestRun>, ValueOf) = if with_counters.is_empty() {
        (
            "pvops path cycles / native cycles (emulated)",
            guests.iter().collect(),
            Box::new(|g: &GuestRun, op: &str| {
                let p = g.rows.iter().find(|r| r.op == op && r.path == "pvops")?;
                let n = native_cycles(g, op)? as f64;
                (n > 0.0).then(|| p.cycles_median as f64 / n)
            }),
        )
    } else {
        (
            "VM exits per op (pvops path)",
            with_counters,
            Box::new(|g: &GuestRun, op: &str| {
                g.rows
                    .iter()
                    .find(|r| r.op == op && r.path == "pvops")?
                    .per_op
                    .get("exits")
                    .copied()
            }),
        )
    };
    let mut ops: Vec<String> = Vec::new();
    for g in &runs {
        for r in g.rows.iter().filter(|r| r.path == "pvops") {
            if !ops.contains(&r.op) {
                ops.push(r.op.clone());
            }
        }
    }
    let max = ops
        .iter()
        .flat_map(|op| runs.iter().filter_map(|g| value(g, op)))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let bar_w = 12.0;
    let group_w = bar_w * runs.len().max(1) as f64 + 16.0;
    let (left, top, height) = (60.0, 40.0, 240.0);
    let width = left + group_w * ops.len() as f64 + 220.0;
    let colors = [
        "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
        "#9c755f", "#bab0ac",
    ];
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{:.0}" font-family="sans-serif" font-size="11">"#,
        top + height + 140.0
    );
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="20" font-size="14">{title}</text>"#
    );
    let _ = writeln!(
        s,
        r#"<line x1="{left}" y1="{:.0}" x2="{:.0}" y2="{:.0}" stroke="black"/>"#,
        top + height,
        left + group_w * ops.len() as f64,
        top + height
    );
    let _ = writeln!(s, r#"<text x="5" y="{:.0}">{max:.2}</text>"#, top + 4.0);
    let _ = writeln!(s, r#"<text x="5" y="{:.0}">0</text>"#, top + height);
    for (i, op) in ops.iter().enumerate() {
        let x0 = left + group_w * i as f64 + 8.0;
        for (j, g) in runs.iter().enumerate() {
            if let Some(v) = value(g, op) {
                let h = (v.max(0.0) / max) * height;
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{:.1}" width="{bar_w}" height="{h:.1}" fill="{}"><title>{op} {} {}: {v:.2}</title></rect>"#,
                    x0 + bar_w * j as f64,
                    top + height - h,
                    colors[j % colors.len()],
                    g.env,
                    g.variant
                );
            }
        }
        let _ = writeln!(
            s,
            r#"<text transform="translate({:.1},{:.0}) rotate(60)">{op}</text>"#,
            x0,
            top + height + 12.0
        );
    }
    for (j, g) in runs.iter().enumerate() {
        let y = top + 14.0 * j as f64;
        let x = left + group_w * ops.len() as f64 + 20.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x:.0}" y="{:.0}" width="10" height="10" fill="{}"/><text x="{:.0}" y="{:.0}">{} {}</text>"#,
            y - 9.0,
            colors[j % colors.len()],
            x + 14.0,
            y,
            g.env,
            g.variant
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::Env;

    fn run(env: Env, exits: Option<f64>) -> GuestRun {
        let row = |path: &str, cycles: u64| Row {
            op: "eoi".into(),
            path: path.into(),
            cycles_median: cycles,
            cycles_min: cycles,
            iters: 100,
            emulated: true,
            per_op: exits
                .map(|e| [("exits".to_owned(), e)].into_iter().collect())
                .unwrap_or_default(),
        };
        GuestRun {
            env,
            variant: "default".into(),
            features: "-".into(),
            rows: vec![row("native", 10), row("pvops", 15)],
        }
    }

    #[test]
    fn lines_tables_and_chart() {
        let g = run(Env::KvmHidden, Some(1.0));
        let lines = bench_lines(&g);
        assert_eq!(lines[1], "bench op=eoi path=pvops cycles_median=15 cycles_min=15 iters=100 timing=emulated exits=1.00 env=kvm-hidden variant=default");
        let md = markdown(&machine(), &[g.clone(), run(Env::Tcg, None)], None);
        assert!(
            md.contains("| eoi | pvops | 1.00 | - | 15 | 1.50 |"),
            "{md}"
        );
        assert!(md.contains("| eoi | pvops | 15 | 1.50 |"), "{md}");
        let chart = svg(&[g]);
        assert!(
            chart.starts_with("<svg")
                && chart.contains("VM exits per op")
                && chart.contains("<rect")
        );
        let chart = svg(&[run(Env::Tcg, None)]);
        assert!(chart.contains("native cycles"));
    }
}
