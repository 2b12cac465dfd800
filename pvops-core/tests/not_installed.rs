//! What a call before `install` does, as documented in `table`: it panics
//! with a message naming the op (a patchable op's panic cannot unwind
//! through its `extern "C"` site, so the process aborts with the same
//! message), except the console write, which drops its bytes.
//!
//! Each case runs in a child process (this test binary run again with
//! `PVOPS_NOT_INSTALLED_CASE` set), since an abort ends the process.

use std::process::Command;

const CASE: &str = "PVOPS_NOT_INSTALLED_CASE";

fn run_case(name: &str) {
    match name {
        "cpu.read_cr0" => {
            let _ = pvops_core::cpu::read_cr0();
        }
        "irq.disable" => pvops_core::irq::disable(),
        "time.sched_clock" => {
            let _ = pvops_core::time::sched_clock();
        }
        "platform.console_write" => {
            pvops_core::platform::console_write(b"dropped\n");
            println!("console_write returned");
        }
        other => panic!("unknown case {other}"),
    }
}

/// Runs `name` in a child; returns (success, stderr + stdout).
fn child(name: &str) -> (bool, String) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(CASE, name)
        .output()
        .expect("spawn child");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

/// The child's side: does nothing unless run as a child.
#[test]
fn child_entry() {
    if let Ok(name) = std::env::var(CASE) {
        run_case(&name);
    }
}

#[test]
fn ops_before_install_fail_naming_the_op() {
    for op in ["cpu.read_cr0", "irq.disable", "time.sched_clock"] {
        let (ok, text) = child(op);
        assert!(!ok, "{op} before install did not fail:\n{text}");
        let want = format!("pvops: {op} called before pvops_core::table::install()");
        assert!(text.contains(&want), "{op}: no `{want}` in:\n{text}");
    }
}

#[test]
fn console_write_before_install_is_dropped() {
    let (ok, text) = child("platform.console_write");
    assert!(ok, "console_write before install failed:\n{text}");
    assert!(text.contains("console_write returned"), "{text}");
    assert!(
        !text.contains("dropped"),
        "the bytes went somewhere:\n{text}"
    );
}

#[test]
fn identity_before_install_says_none() {
    let id = pvops_core::platform::identity();
    assert_eq!(id.backend, "none");
    assert!(!pvops_core::table::is_installed());
}
