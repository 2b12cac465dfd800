//! `pvops.migrate_wait=<s>`: the kernel is live-migrated from one QEMU to
//! another in the middle of its self-tests (the harness drives it,
//! `xtask/src/migrate.rs`), then checks what a move can break for pvops
//! and runs the rest of its tests on the destination.
//!
//! How the kernel learns it has moved: the harness writes a marker into a
//! CMOS NVRAM byte through the *destination* QEMU's monitor once the
//! migration completed (`o` port writes to 0x70/0x71). CMOS is device
//! state QEMU migrates, so a byte written on the destination only after
//! the move cannot have been seen on the source, and it works the same
//! under every accelerator (under TCG nothing else tells a guest it moved:
//! QEMU carries the TSC over seamlessly). The kernel clears the byte
//! before it says it is ready, so a marker left from an earlier boot
//! does not count.

use super::{ipi_to_self, smp_ipi_every_cpu, timer_oneshot_window, Context, TestResult};
use crate::console::Message;
use crate::smp;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops::{cpu, time};

/// The CMOS NVRAM byte the harness writes (free in QEMU's and SeaBIOS's
/// CMOS layout; the harness has the same numbers in
/// `xtask::migrate::CMOS_MARKER_INDEX`).
pub const MARKER_INDEX: u8 = 0x6f;
/// The value that says "you are on the destination".
pub const MARKER_VALUE: u8 = 0x4d;

/// How long the other CPUs get to answer the registration check.
const REMOTE_LIMIT_NS: u64 = 2_000_000_000;

fn cmos_read(index: u8) -> u8 {
    // SAFETY: CMOS index/data ports; MARKER_INDEX is a scratch NVRAM byte
    // and bit 7 (NMI off) stays clear.
    unsafe {
        cpu::outb(0x70, index);
        cpu::inb(0x71)
    }
}

fn cmos_write(index: u8, value: u8) {
    // SAFETY: as in cmos_read; the byte is this test's own.
    unsafe {
        cpu::outb(0x70, index);
        cpu::outb(0x71, value);
    }
}

pub(super) fn live_migration(ctx: &mut Context<'_>) -> TestResult {
    let secs = pvops::cmdline::option(ctx.start_info.cmdline(), "migrate_wait")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(60);
    let me = pvops::cpu::current_cpu();
    cmos_write(MARKER_INDEX, 0);
    ensure!(
        cmos_read(MARKER_INDEX) == 0,
        "CMOS byte {MARKER_INDEX:#x} does not hold a value: no CMOS to carry the marker"
    );
    let steal_before = time::steal_clock(me);
    // A pause sign left from before (there should be none) is not the move's.
    let paused_before = pvops::platform::take_paused();
    let start = time::sched_clock();
    crate::kprintln!(
        "pvops: info: live migration: ready, waiting up to {secs} s for CMOS byte \
         {MARKER_INDEX:#x} = {MARKER_VALUE:#x} from the destination"
    );
    // Keep running (this is a live migration) and watch the clock across
    // the move: every read at least the one before; the longest gap
    // between two reads is the pause the guest saw.
    let deadline = start.saturating_add(secs.saturating_mul(1_000_000_000));
    let (mut last, mut gap, mut reads) = (start, 0u64, 0u64);
    loop {
        let now = time::sched_clock();
        reads += 1;
        ensure!(
            now >= last,
            "sched_clock went back across the move: {last} -> {now} ns (read {reads})"
        );
        gap = gap.max(now - last);
        last = now;
        if cmos_read(MARKER_INDEX) == MARKER_VALUE {
            break;
        }
        ensure!(
            now < deadline,
            "no migration within {secs} s ({reads} clock reads, longest gap {} us)",
            gap / 1000
        );
    }
    let steal_after = time::steal_clock(me);
    let paused = pvops::platform::take_paused();
    crate::kprintln!(
        "pvops: info: live migration: on the destination after {} ms; clock {start} -> {last} ns \
         monotonic over {reads} reads, longest gap {} us (the stop-and-copy pause, or host preemption); steal {steal_before} -> \
         {steal_after} ns",
        (last - start) / 1_000_000,
        gap / 1000
    );
    ensure!(
        steal_after >= steal_before,
        "steal clock went back across the move: {steal_before} -> {steal_after}"
    );
    // The machine was stopped for the move's last step: where the platform
    // can say so, every CPU must have been told (and the sign is taken).
    let mut told = 0;
    for i in 1..smp::online() {
        let r = smp::run_on(i, paused_on_this_cpu, 0, REMOTE_LIMIT_NS);
        ensure!(r.is_some(), "cpu index {i}: no answer to the pause check");
        let r = decode_paused(r.unwrap_or_default());
        ensure!(
            r != Some(false),
            "cpu index {i}: the platform says this CPU was not paused by the move"
        );
        told += u32::from(r == Some(true));
    }
    crate::kprintln!(
        "pvops: info: live migration: paused sign {} on cpu index 0 (before the move: {}), on {told} other cpu(s)",
        describe_paused(paused),
        describe_paused(paused_before)
    );
    ensure!(
        paused != Some(false),
        "the platform says this CPU was not paused by the move"
    );
    // What the backend registered per CPU must still be held by the
    // destination's hypervisor, on every CPU.
    let held = pvops::platform::check_registrations().map_err(|e| {
        let mut m = Message::new();
        let _ = core::fmt::Write::write_fmt(&mut m, format_args!("cpu index 0: {e}"));
        m
    })?;
    for i in 1..smp::online() {
        let r = smp::run_on(i, check_on_this_cpu, 0, REMOTE_LIMIT_NS);
        ensure!(
            r.is_some(),
            "cpu index {i}: no answer to the registration check"
        );
        let r = r.unwrap_or_default();
        ensure!(
            r & LOST == 0,
            "cpu index {i}: {} registration lost: wrote {:#x}, now {:#x}",
            pvops::platform::identity()
                .features
                .iter()
                .nth((r & !LOST) as usize)
                .unwrap_or("?"),
            REMOTE_WRITTEN.load(Ordering::Acquire),
            REMOTE_FOUND.load(Ordering::Acquire)
        );
        ensure!(
            r == held.len() as u64,
            "cpu index {i} holds {r} registrations, cpu index 0 {}",
            held.len()
        );
    }
    crate::kprintln!(
        "pvops: info: live migration: registrations held on {} cpu(s): {held}",
        smp::online()
    );
    // The timer and IPIs on the destination (the remaining self-tests
    // test them again, at length).
    timer_oneshot_window(ctx)?;
    ipi_to_self(ctx)?;
    if smp::online() > 1 {
        smp_ipi_every_cpu(ctx)?;
    }
    Ok(())
}

fn describe_paused(p: Option<bool>) -> &'static str {
    match p {
        Some(true) => "set (taken)",
        Some(false) => "clear",
        None => "not offered",
    }
}

/// Runs on another CPU: [`pvops::platform::take_paused`], encoded.
fn paused_on_this_cpu(_: u64) -> u64 {
    match pvops::platform::take_paused() {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    }
}

fn decode_paused(v: u64) -> Option<bool> {
    match v {
        1 => Some(false),
        2 => Some(true),
        _ => None,
    }
}

/// Set in [`check_on_this_cpu`]'s answer when a registration was lost;
/// the rest is the feature's place on the platform line.
const LOST: u64 = 1 << 63;
static REMOTE_WRITTEN: AtomicU64 = AtomicU64::new(0);
static REMOTE_FOUND: AtomicU64 = AtomicU64::new(0);

/// Runs on another CPU: how many registrations it holds, or [`LOST`].
fn check_on_this_cpu(_: u64) -> u64 {
    match pvops::platform::check_registrations() {
        Ok(held) => held.len() as u64,
        Err(e) => {
            REMOTE_WRITTEN.store(e.written, Ordering::Release);
            REMOTE_FOUND.store(e.found, Ordering::Release);
            let place = pvops::platform::identity()
                .features
                .iter()
                .position(|f| f == e.feature)
                .unwrap_or(usize::MAX >> 1);
            LOST | place as u64
        }
    }
}
