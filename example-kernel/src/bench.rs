//! Bench mode (`pvops.mode=bench`): each op in a loop, printed as
//! `bench op=<op> path=<path> cycles_median=.. cycles_min=.. iters=..`, where
//! path is `native` (the raw instruction, where one exists), `patched` (the
//! pvops wrapper, whose call site `pvops::patch::apply` rewrote) or `pvops`
//! (a call through the installed table, as an unpatched kernel pays).
//!
//! Where the backend counts its hypercalls (Xen), each line also carries
//! `hypercalls=<n>` for the whole loop; `map_512` maps 512 pages of one
//! PTE table once one hypercall per entry and once in a lazy MMU batch.
//! Where the kernel is not in ring 0 (Xen PV) the `native` paths do not
//! exist and are skipped.
//!
//! Cycles inside a virtual machine are not hardware timings (the
//! environments here all emulate), so lines are labelled `timing=emulated`
//! whenever CPUID says a hypervisor is present. What a hypervisor costs is
//! counted by the host instead: with `pvops.bench.sync=<ms>` the kernel
//! brackets every loop with `bench-sync <n>` and `bench-sync <n>.end` lines
//! and idles `<ms>` after each, so the harness can read QEMU's per-vCPU exit
//! counters around exactly that loop (see `xtask`).

use crate::interrupts;
use crate::paging::{AddressSpace, FrameAllocator, TEST_VA};
use crate::smp;
use core::sync::atomic::{AtomicU64, Ordering};
use pvops::irq::{self, CpuMask, IpiTarget};
use pvops::mmu::{self, TlbRange};
use pvops::{cpu, lock, time};
use x86_64::VirtAddr;

/// Iterations of every op, unless `pvops.bench.iters=<n>` says otherwise.
const DEFAULT_ITERS: u64 = 512;
/// Iterations per timed batch (cycles are per op, median over batches).
const BATCH: u64 = 32;
/// Most batches kept (so `iters` is capped at `MAX_BATCHES * BATCH`).
const MAX_BATCHES: usize = 256;

struct Bench<'a> {
    sync_ns: u64,
    iters: u64,
    emulated: bool,
    ring0: bool,
    seq: u32,
    frames: &'a mut FrameAllocator,
    aspace: &'a AddressSpace,
}

#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: rdtsc only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

fn idle(ns: u64) {
    let t = time::sched_clock();
    while time::sched_clock() - t < ns {
        core::hint::spin_loop();
    }
}

impl Bench<'_> {
    /// Runs `op` ITERS times in batches and prints its line.
    fn run(&mut self, op: &str, path: &str, f: impl FnMut()) {
        let iters = self.iters;
        self.run_n(op, path, iters, BATCH, f)
    }

    /// Runs `op` `iters` times in batches of `batch` and prints its line;
    /// a `native` path only where the kernel runs in ring 0.
    fn run_n(&mut self, op: &str, path: &str, iters: u64, batch: u64, mut f: impl FnMut()) {
        if path == "native" && !self.ring0 {
            return;
        }
        self.seq += 1;
        let n = self.seq;
        if self.sync_ns > 0 {
            crate::kprintln!("bench-sync {n}");
            idle(self.sync_ns);
        }
        let mut all = [0u64; MAX_BATCHES];
        let samples = &mut all[..(iters / batch) as usize];
        let calls_before = pvops::platform::hypercalls();
        for s in samples.iter_mut() {
            let t0 = rdtsc();
            for _ in 0..batch {
                f();
            }
            *s = (rdtsc() - t0) / batch;
        }
        let calls = pvops::platform::hypercalls()
            .zip(calls_before)
            .map(|(a, b)| a - b);
        if self.sync_ns > 0 {
            idle(self.sync_ns);
            crate::kprintln!("bench-sync {n}.end");
        }
        samples.sort_unstable();
        let median = samples[samples.len() / 2];
        let min = samples[0];
        let timing = if self.emulated {
            " timing=emulated"
        } else {
            ""
        };
        match calls {
            Some(h) => crate::kprintln!(
                "bench op={op} path={path} cycles_median={median} cycles_min={min} iters={iters}{timing} hypercalls={h} seq={n}"
            ),
            None => crate::kprintln!(
                "bench op={op} path={path} cycles_median={median} cycles_min={min} iters={iters}{timing} seq={n}"
            ),
        }
    }
}

/// Parses `pvops.bench.<key>=<n>`.
fn number(cmdline: &str, key: &str) -> Option<u64> {
    pvops::cmdline::option(cmdline, key).and_then(|v| v.parse().ok())
}

static IPI_ACKS: AtomicU64 = AtomicU64::new(0);

/// Runs the bench suite.
pub fn run_all(cmdline: &str, frames: &mut FrameAllocator, aspace: &AddressSpace) {
    let emulated = pvops::detect::scan(&pvops::detect::HardwareCpuid).hypervisor_bit;
    let mut b = Bench {
        sync_ns: number(cmdline, "bench.sync").unwrap_or(0) * 1_000_000,
        iters: number(cmdline, "bench.iters")
            .unwrap_or(DEFAULT_ITERS)
            .clamp(BATCH, MAX_BATCHES as u64 * BATCH)
            / BATCH
            * BATCH,
        emulated,
        ring0: cpu::ring0(),
        seq: 0,
        frames,
        aspace,
    };
    if !b.ring0 {
        crate::kprintln!("pvops: info: bench: the kernel is not in ring 0: no native paths");
    }
    // The baseline: what the bracketing itself costs (the harness subtracts it).
    b.run("noop", "native", || core::hint::black_box(()));

    b.run("irq_save_restore", "native", || {
        let f = x86_64::registers::rflags::read_raw();
        x86_64::instructions::interrupts::disable();
        if f & (1 << 9) != 0 {
            x86_64::instructions::interrupts::enable();
        }
    });
    b.run("irq_save_restore", "patched", || {
        let f = irq::save_and_disable();
        irq::restore_flags(f);
    });
    b.run("irq_save_restore", "pvops", || {
        let t = &pvops::table::ops().irq;
        let f = (t.save_flags)();
        (t.disable)();
        (t.restore_flags)(f);
    });
    b.run("irq_disable_enable", "native", || {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::interrupts::enable();
    });
    b.run("irq_disable_enable", "patched", || {
        irq::disable();
        irq::enable();
    });
    b.run("irq_disable_enable", "pvops", || {
        let t = &pvops::table::ops().irq;
        (t.disable)();
        (t.enable)();
    });
    b.run("read_cr2", "native", || {
        core::hint::black_box(x86_64::registers::control::Cr2::read_raw());
    });
    b.run("read_cr2", "patched", || {
        core::hint::black_box(mmu::read_cr2());
    });
    b.run("read_cr2", "pvops", || {
        core::hint::black_box((pvops::table::ops().mmu.read_cr2)());
    });
    b.run("read_cr3", "native", || {
        core::hint::black_box(x86_64::registers::control::Cr3::read_raw());
    });
    b.run("read_cr3", "patched", || {
        core::hint::black_box(mmu::read_cr3());
    });
    b.run("read_cr3", "pvops", || {
        core::hint::black_box((pvops::table::ops().mmu.read_cr3)());
    });
    let cr3 = mmu::read_cr3();
    b.run("write_cr3", "pvops", || {
        // SAFETY: reloading the current CR3 keeps every mapping.
        unsafe { mmu::write_cr3(cr3) }
    });
    b.run("sched_clock", "native", || {
        core::hint::black_box(rdtsc());
    });
    b.run("sched_clock", "patched", || {
        core::hint::black_box(time::sched_clock());
    });
    b.run("sched_clock", "pvops", || {
        core::hint::black_box((pvops::table::ops().time.sched_clock)());
    });

    // Page-table ops on a test page.
    let va = TEST_VA + 64 * 4096;
    if let (Some(frame), Some(pte)) = (b.frames.alloc(), b.aspace.pte(b.frames, va)) {
        let value = frame | 0x3;
        b.run("set_pte", "native", || {
            // SAFETY: `pte` is the live PTE for the test page `va`, which
            // nothing else uses; the value maps a test frame.
            unsafe { core::ptr::write_volatile(pte, value) }
        });
        b.run("set_pte", "patched", || {
            // SAFETY: as above.
            unsafe { mmu::set_pte(pte, value, VirtAddr::new(va)) }.ignore()
        });
        b.run("set_pte", "pvops", || {
            let set = pvops::table::ops().mmu.set_entry;
            // SAFETY: as above.
            unsafe { set(mmu::PtLevel::Pte, pte, value) }
        });
        b.run("set_pte_flush", "pvops", || {
            // SAFETY: as above.
            unsafe { mmu::set_pte_flush(pte, value, VirtAddr::new(va)) }
        });
        b.run("flush_tlb_single", "native", || {
            x86_64::instructions::tlb::flush(VirtAddr::new(va))
        });
        b.run("flush_tlb_single", "patched", || {
            mmu::flush_tlb_single(VirtAddr::new(va))
        });
        b.run("flush_tlb_single", "pvops", || {
            (pvops::table::ops().mmu.flush_tlb_single)(VirtAddr::new(va))
        });
        {
            let batch = mmu::lazy();
            b.run("set_pte_lazy", "patched", || {
                // SAFETY: as above.
                unsafe { mmu::set_pte(pte, value, VirtAddr::new(va)) }.ignore()
            });
            batch.commit();
        }
        map_512(&mut b, frame);
    } else {
        crate::kprintln!("pvops: warning: bench: no frame for the page-table ops");
    }

    // Interrupt round trip on this CPU: IPI to self, handler EOIs.
    b.run("ipi_self_eoi", "pvops", || {
        let before = interrupts::TEST_IPIS.load(Ordering::Relaxed);
        irq::send_ipi(IpiTarget::ThisCpu, interrupts::TEST_IPI_VECTOR);
        while interrupts::TEST_IPIS.load(Ordering::Relaxed) == before {
            core::hint::spin_loop();
        }
    });
    b.run("timer_arm_cancel", "pvops", || {
        time::timer_arm(1_000_000_000);
        time::timer_cancel();
    });
    b.run("lock_kick", "pvops", || lock::kick(cpu::current_cpu()));

    if smp::online() > 1 {
        let other = smp::cpu_id(1);
        b.run("send_ipi_one", "pvops", || {
            let before = smp::IPIS[1].load(Ordering::Relaxed);
            irq::send_ipi(IpiTarget::Cpu(other), interrupts::TEST_IPI_VECTOR);
            while smp::IPIS[1].load(Ordering::Relaxed) == before {
                core::hint::spin_loop();
            }
            IPI_ACKS.fetch_add(1, Ordering::Relaxed);
        });
        b.run("send_ipi_all", "pvops", || {
            let before: [u64; smp::MAX_SMP] =
                core::array::from_fn(|i| smp::IPIS[i].load(Ordering::Relaxed));
            irq::send_ipi(IpiTarget::AllButSelf, interrupts::TEST_IPI_VECTOR);
            for (i, seen) in before.iter().enumerate().take(smp::online()).skip(1) {
                while smp::IPIS[i].load(Ordering::Relaxed) == *seen {
                    core::hint::spin_loop();
                }
            }
        });
        let mut others = CpuMask::new();
        for i in 1..smp::online() {
            others.insert(smp::cpu_id(i));
        }
        b.run("flush_tlb_others", "pvops", || {
            mmu::flush_tlb_others(
                &others,
                TlbRange::Pages {
                    start: VirtAddr::new(va),
                    pages: 1,
                },
            )
        });
    } else {
        crate::kprintln!("pvops: info: bench: one CPU online, cross-CPU ops not measured");
    }
}

/// Where `map_512` maps: a PTE table of its own, 2 MiB past `TEST_VA`.
const MAP_512_VA: u64 = TEST_VA + (2 << 20);

/// Maps the 512 pages of one PTE table to `frame`, one update at a time
/// (`path=unbatched`) and in one lazy MMU batch (`path=lazy`), each once
/// (`iters=1`: the cycles are for all 512): the line's `hypercalls=` is
/// what 512 updates cost each way where updates are hypercalls.
fn map_512(b: &mut Bench<'_>, frame: u64) {
    let Some(first) = b.aspace.pte(b.frames, MAP_512_VA) else {
        crate::kprintln!("pvops: warning: bench: no PTE table for map_512");
        return;
    };
    let map_all = || {
        for i in 0..512u64 {
            let va = MAP_512_VA + i * 4096;
            // SAFETY: `first` starts the PTE table that maps MAP_512_VA's
            // 2 MiB (so entry i is inside it), which nothing else uses; the
            // value maps the bench's own test frame.
            unsafe { mmu::set_pte(first.add(i as usize), frame | 0x3, VirtAddr::new(va)) }.ignore();
        }
    };
    // One op = 512 updates; the lazy batch ends inside the measured op.
    b.run_n("map_512", "unbatched", 1, 1, map_all);
    b.run_n("map_512", "lazy", 1, 1, || {
        let lazy = mmu::lazy();
        map_all();
        lazy.commit();
    });
    // The same with each page's TLB entry flushed (set_pte_flush).
    let remap_all = || {
        for i in 0..512u64 {
            let va = MAP_512_VA + i * 4096;
            // SAFETY: as in `map_all`.
            unsafe { mmu::set_pte_flush(first.add(i as usize), frame | 0x3, VirtAddr::new(va)) };
        }
    };
    b.run_n("remap_flush_512", "unbatched", 1, 1, remap_all);
    b.run_n("remap_flush_512", "lazy", 1, 1, || {
        let lazy = mmu::lazy();
        remap_all();
        lazy.commit();
    });
    mmu::flush_tlb_local();
}
