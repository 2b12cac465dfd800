//! The self-tests that fit a kernel booted by someone else's loader, each
//! printed as `test <name> ... ok` or `... FAILED: <reason>`.

use crate::idt::{TIMER_LAST_NS, TIMER_TICKS};
use crate::{kprintln, paging, smp, Machine};
use core::sync::atomic::Ordering;
use pvops::platform::Platform;
use pvops::x86_64::VirtAddr;

/// A named check; `Err` carries the reason.
pub type Test = (&'static str, fn(&Machine) -> Result<(), &'static str>);

/// 64 KiB of `.bss` filled with a pattern before `pvops::init` and checked
/// at the end: memory next to the second CPU's stack, where a hypervisor
/// given a wrong physical address for one of pvops' records would write.
const CANARY_WORDS: usize = 8192;
const CANARY: u64 = 0xca7a_7ca7_0000_0000;
#[repr(C, align(4096))]
struct Canary([u64; CANARY_WORDS]);
static mut CANARIES: Canary = Canary([0; CANARY_WORDS]);

/// Fills the canary area and the second CPU's stack. Call before
/// `pvops::init` (which [`crate::run`] does).
pub fn fill_canaries() {
    // SAFETY: runs once on the boot CPU before anything else uses the area.
    let area = unsafe { &mut *core::ptr::addr_of_mut!(CANARIES) };
    for (i, w) in area.0.iter_mut().enumerate() {
        *w = CANARY | i as u64;
    }
    smp::fill_stack();
}

fn canary_damage() -> usize {
    // SAFETY: read-only; nothing but a stray write changes the area.
    let area = unsafe { &*core::ptr::addr_of!(CANARIES) };
    area.0
        .iter()
        .enumerate()
        .filter(|(i, w)| **w != CANARY | *i as u64)
        .count()
}

fn irq_flags_roundtrip(_: &Machine) -> Result<(), &'static str> {
    let outer = pvops::irq::save_and_disable();
    let off = !pvops::irq::save_flags().interrupts_enabled();
    pvops::irq::enable();
    let on = pvops::irq::save_flags().interrupts_enabled();
    pvops::irq::disable();
    pvops::irq::restore_flags(outer);
    match (off, on, pvops::irq::save_flags() == outer) {
        (true, true, true) => Ok(()),
        (false, _, _) => Err("save_and_disable left interrupts on"),
        (_, false, _) => Err("enable left interrupts off"),
        _ => Err("restore_flags did not restore the saved flags"),
    }
}

fn sched_clock_monotonic(_: &Machine) -> Result<(), &'static str> {
    let first = pvops::time::sched_clock();
    let mut last = first;
    for _ in 0..2000 {
        let now = pvops::time::sched_clock();
        if now < last {
            return Err("sched_clock went backwards");
        }
        last = now;
    }
    // A busy wait of about 1 ms by the clock itself, bounded by a count.
    let mut spins = 0u64;
    while pvops::time::sched_clock() - first < 1_000_000 {
        spins += 1;
        if spins > 100_000_000 {
            return Err("sched_clock did not advance by 1 ms");
        }
    }
    Ok(())
}

fn page_table_update_flush(m: &Machine) -> Result<(), &'static str> {
    let base = paging::free_upper_half_slot(m.phys_offset).ok_or("no free top-level slot")?;
    let va = base + 0x1234_5000;
    let (a, pa) = paging::alloc_page()?;
    let (b, pb) = paging::alloc_page()?;
    const A: u64 = 0xaaaa_0000_1111_aaaa;
    const B: u64 = 0xbbbb_0000_2222_bbbb;
    // SAFETY: both pages are the pool's, ours alone; volatile accesses
    // because the same frames are reached through `va` too.
    unsafe {
        (a as *mut u64).write_volatile(A);
        (b as *mut u64).write_volatile(B);
    }
    let p = va as *mut u64;
    // SAFETY: `va` is in an empty top-level slot (nothing relies on it);
    // it aliases page A, which is only accessed volatilely here.
    unsafe { paging::map(m.phys_offset, va, pa)? };
    // SAFETY: mapped just above.
    if unsafe { p.read_volatile() } != A {
        return Err("the new mapping does not show its frame");
    }
    // SAFETY: as above, through the mapping: the write must reach page A.
    unsafe { p.add(1).write_volatile(A ^ 1) };
    // SAFETY: page A is ours.
    if unsafe { (a as *const u64).add(1).read_volatile() } != A ^ 1 {
        return Err("a write through the new mapping did not reach its frame");
    }
    // Remap to B: set_pte, then the flush it returns.
    let pte = paging::pte_for(m.phys_offset, va, false)?;
    // SAFETY: the PTE of `va`, which only this test uses.
    unsafe { pvops::mmu::set_pte(pte, pb | 0b11, VirtAddr::new(va)) }.flush();
    // SAFETY: `va` now maps page B, ours.
    let seen = unsafe { p.read_volatile() };
    // SAFETY: as in paging::map; nothing uses `va` afterwards.
    unsafe { paging::unmap(m.phys_offset, va)? };
    if seen != B {
        return Err("after set_pte + flush the old frame is still seen");
    }
    Ok(())
}

fn one_shot_timer_fires(_: &Machine) -> Result<(), &'static str> {
    const DELTA_NS: u64 = 2_000_000;
    let before = TIMER_TICKS.load(Ordering::Acquire);
    let t0 = pvops::time::sched_clock();
    pvops::time::timer_arm(DELTA_NS);
    pvops::irq::enable();
    while TIMER_TICKS.load(Ordering::Acquire) == before {
        if pvops::time::sched_clock() - t0 > 2_000_000_000 {
            pvops::irq::disable();
            return Err("no timer interrupt within 2 s");
        }
        core::hint::spin_loop();
    }
    pvops::irq::disable();
    let after = TIMER_LAST_NS.load(Ordering::Relaxed) - t0;
    if after < DELTA_NS / 2 {
        return Err("the timer fired well before its deadline");
    }
    kprintln!("pvops: info: timer armed for {DELTA_NS} ns fired after {after} ns");
    Ok(())
}

/// A second CPU pvops never started (the kernel's own INIT-SIPI, as a
/// loader's MP protocol) joins with `init_secondary` alone.
fn second_cpu_joins_without_start_cpu(m: &Machine) -> Result<(), &'static str> {
    let cpu = smp::start_second_without_pvops(m)?;
    kprintln!("pvops: info: cpu {} online", cpu.0);
    Ok(())
}

fn second_cpu_starts(m: &Machine) -> Result<(), &'static str> {
    let cpu = smp::start_second(m)?;
    kprintln!("pvops: info: cpu {} online", cpu.0);
    Ok(())
}

/// The platform line's features match the platform: under KVM the records
/// KVM writes into the kernel's memory (kvmclock, steal time) registered;
/// natively no paravirtual feature at all.
fn platform_features_consistent(_: &Machine) -> Result<(), &'static str> {
    let id = pvops::platform::identity();
    match id.platform {
        Platform::Kvm => {
            if !id.features.contains("kvmclock") {
                return Err("kvm backend without kvmclock");
            }
            if !id.features.contains("steal-time") {
                return Err("kvm backend without steal-time");
            }
            Ok(())
        }
        Platform::Native if id.features.is_empty() => Ok(()),
        Platform::Native => Err("native backend names paravirtual features"),
        // Xen's modes, and platforms added after this kernel was written.
        _ => Ok(()),
    }
}

fn memory_not_written_behind_our_back(_: &Machine) -> Result<(), &'static str> {
    let canaries = canary_damage();
    let stack = smp::stack_damage();
    if canaries + stack == 0 {
        return Ok(());
    }
    kprintln!(
        "pvops: info: {canaries} canary words and {stack} words of the second CPU's unused stack changed"
    );
    Err("memory changed behind the kernel's back (canaries or stack)")
}

/// Runs every test (the kernel's `extra` ones before the memory check,
/// which goes last), prints the result line, returns how many failed.
pub fn run_all(m: Machine, extra: &[Test]) -> usize {
    let common: [Test; 6] = [
        ("irq_flags_roundtrip", irq_flags_roundtrip),
        ("sched_clock_monotonic", sched_clock_monotonic),
        ("page_table_update_flush", page_table_update_flush),
        ("one_shot_timer_fires", one_shot_timer_fires),
        if smp::started_by_kernel() {
            (
                "second_cpu_joins_without_start_cpu",
                second_cpu_joins_without_start_cpu,
            )
        } else {
            ("second_cpu_starts", second_cpu_starts)
        },
        ("platform_features_consistent", platform_features_consistent),
    ];
    let last: Test = (
        "memory_not_written_behind_our_back",
        memory_not_written_behind_our_back,
    );
    let (mut passed, mut failed) = (0, 0);
    for (name, test) in common.iter().chain(extra).chain([&last]) {
        match test(&m) {
            Ok(()) => {
                passed += 1;
                kprintln!("test {name} ... ok");
            }
            Err(why) => {
                failed += 1;
                kprintln!("test {name} ... FAILED: {why}");
            }
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    kprintln!("test result: {verdict}. {passed} passed; {failed} failed");
    failed
}
