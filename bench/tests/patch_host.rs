//! Patches this test process's own call sites (text made writable with
//! `mprotect`) and checks the bytes written and the behaviour after.
//!
//! One test, because a process installs one table and patches once, and no
//! other test thread may run a site while it is rewritten.

use pvops_bench::{Host, Mprotect, CR2, CR3, FLUSHES, IDENTITY, LAST_FLUSH};
use pvops_core::detect::HardwareCpuid;
use pvops_core::irq::{self, IrqFlags};
use pvops_core::mmu::{self, PtLevel};
use pvops_core::patch::{
    self, Binding, Op, PatchError, FULL_SITE_PREFIXES, SAFE_PREFIXES, SITE_LEN,
};
use pvops_core::table::{self, PvOps};
use pvops_core::time;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use x86_64::VirtAddr;

/// RFLAGS.ID: writable in ring 3 and otherwise inert, so it shows whether
/// `restore_flags` really ran `popf`.
const ID: u64 = 1 << 21;
/// RFLAGS.DF, which the wrapper must never pass on.
const DF: u64 = 1 << 10;

static DISABLES: AtomicU64 = AtomicU64::new(0);

/// Replaces `irq.disable` after the table was made: its sites must call
/// this, never `Host`'s declared inline `nop`.
fn counting_disable() {
    pvops_bench::scribble();
    DISABLES.fetch_add(1, Ordering::Relaxed);
}

fn site_bytes(addr: u64) -> [u8; SITE_LEN] {
    // SAFETY: `addr` is a recorded site in this process's readable text.
    unsafe { core::ptr::read_volatile(addr as *const [u8; SITE_LEN]) }
}

fn call_target(site: u64, bytes: &[u8; SITE_LEN]) -> u64 {
    assert_eq!(bytes[0], 0xe8, "not a direct call: {bytes:02x?}");
    assert_eq!(bytes[5], 0x90, "call not padded with a nop: {bytes:02x?}");
    let rel = i32::from_le_bytes(bytes[1..5].try_into().unwrap());
    (site + 5).wrapping_add(rel as i64 as u64)
}

/// Calls `target` (a slot's function) the way a site of the callee-saved
/// convention does, with `rdi`, `rsi`, `rdx` = `args` and markers in the
/// other caller-saved registers; returns `rax` and `rcx, rdx, rsi, rdi,
/// r8, r9, r10, r11` as they came back.
///
/// # Safety
/// `target` runs an op whose contract `args` satisfies.
unsafe fn call_saved(target: u64, args: [u64; 3]) -> (u64, [u64; 8]) {
    let mut regs = [0u64; 8];
    let rax: u64;
    // SAFETY: `r12` points at `regs`; the call follows the stub's
    // convention (aligned stack: the asm is not `nostack`); everything the
    // callee may change is declared.
    unsafe {
        core::arch::asm!(
            "mov rcx, 0x1111",
            "mov r8, 0x8888",
            "mov r9, 0x9999",
            "mov r10, 0xaaaa",
            "mov r11, 0xbbbb",
            "call r13",
            "mov [r12], rcx",
            "mov [r12 + 8], rdx",
            "mov [r12 + 16], rsi",
            "mov [r12 + 24], rdi",
            "mov [r12 + 32], r8",
            "mov [r12 + 40], r9",
            "mov [r12 + 48], r10",
            "mov [r12 + 56], r11",
            in("r12") regs.as_mut_ptr(),
            in("r13") target,
            inout("rdi") args[0] => _,
            inout("rsi") args[1] => _,
            inout("rdx") args[2] => _,
            lateout("rax") rax,
            clobber_abi("C"),
        )
    };
    (rax, regs)
}

/// Every stub keeps the registers the sites' convention says it keeps
/// (`Host`'s `read_cr3` and the replacement `disable` overwrite them all).
fn stubs_keep_registers(round: &str) {
    let mut entry = 0u64;
    let cases = [
        (Op::SaveFlags, [0xd1, 0x51, 0xd2]),
        (Op::RestoreFlags, [irq::save_flags().0, 0x51, 0xd2]),
        (Op::Disable, [0xd1, 0x51, 0xd2]),
        (Op::Enable, [0xd1, 0x51, 0xd2]),
        (Op::ReadCr2, [0xd1, 0x51, 0xd2]),
        (Op::ReadCr3, [0xd1, 0x51, 0xd2]),
        (Op::SetEntry, [1, &raw mut entry as u64, 0x5003]),
        (Op::FlushTlbSingle, [0xf000, 0x51, 0xd2]),
    ];
    for (op, args) in cases {
        // SAFETY: the arguments satisfy every op's contract (a valid entry
        // pointer for set_entry, flags from save_flags for restore).
        let (rax, regs) = unsafe { call_saved(patch::slot_target(op), args) };
        assert_eq!(
            regs,
            [0x1111, args[2], args[1], args[0], 0x8888, 0x9999, 0xaaaa, 0xbbbb],
            "{round}: {op:?}"
        );
        match op {
            Op::ReadCr2 => assert_eq!(rax, CR2),
            Op::ReadCr3 => assert_eq!(rax, CR3),
            Op::SaveFlags => assert_ne!(rax & 2, 0),
            _ => {}
        }
    }
    assert_eq!(entry, 0x5003, "{round}: set_entry through the stub");
}

/// Runs every patchable wrapper once and checks what it did.
fn exercise(round: &str) {
    let f = irq::save_flags();
    assert_ne!(f.0 & 0x2, 0, "{round}: RFLAGS bit 1 always reads 1");
    // popf really runs: toggling ID shows in the next save.
    irq::restore_flags(IrqFlags(f.0 ^ ID));
    assert_eq!(irq::save_flags().0 & ID, (f.0 ^ ID) & ID, "{round}: ID");
    irq::restore_flags(f);
    assert_eq!(irq::save_flags().0 & ID, f.0 & ID, "{round}: ID back");
    // DF never gets through (it would break the asm and ABI rules).
    irq::restore_flags(IrqFlags(f.0 | DF));
    assert_eq!(irq::save_flags().0 & DF, 0, "{round}: DF");
    irq::restore_flags(f);

    let before = DISABLES.load(Ordering::Relaxed);
    irq::disable();
    irq::enable();
    let flags = irq::save_and_disable();
    irq::restore_flags(flags);
    assert_eq!(
        DISABLES.load(Ordering::Relaxed),
        before + 2,
        "{round}: disable"
    );

    assert_eq!(mmu::read_cr2(), CR2, "{round}: read_cr2");
    assert_eq!(mmu::read_cr3(), CR3, "{round}: read_cr3");

    let mut entry = 0u64;
    // SAFETY: `entry` is a local the stand-in stores to.
    unsafe { mmu::set_entry(PtLevel::Pte, &mut entry, 0x1234_5003) };
    assert_eq!(entry, 0x1234_5003, "{round}: set_entry");
    // SAFETY: as above.
    unsafe { mmu::set_pte(&mut entry, 0x6003, VirtAddr::new(0x7000)) }.ignore();
    assert_eq!(entry, 0x6003, "{round}: set_pte");

    let flushes = FLUSHES.load(Ordering::Relaxed);
    mmu::flush_tlb_single(VirtAddr::new(0xdead_b000));
    assert_eq!(
        FLUSHES.load(Ordering::Relaxed),
        flushes + 1,
        "{round}: flush"
    );
    assert_eq!(
        LAST_FLUSH.load(Ordering::Relaxed),
        0xdead_b000,
        "{round}: flush addr"
    );

    let t0 = time::sched_clock();
    let t1 = time::sched_clock();
    assert!(t0 > 0 && t1 >= t0, "{round}: sched_clock {t0} {t1}");
}

#[test]
fn patches_this_process() {
    // Before install: every site is the indirect call of its op's slot.
    let sites: Vec<_> = patch::sites().collect();
    let mut per_op: BTreeMap<Op, usize> = BTreeMap::new();
    for s in &sites {
        let op = s.op.expect("known op");
        assert_eq!(s.len as usize, SITE_LEN);
        let b = site_bytes(s.addr);
        assert_eq!(&b[..2], &[0xff, 0x15], "{op:?} at {:#x}", s.addr);
        *per_op.entry(op).or_default() += 1;
    }
    for op in Op::ALL {
        assert!(per_op.contains_key(&op), "no site of {op:?} in this binary");
    }
    // SAFETY: this is the only test thread; nothing else runs sites.
    let before_install = unsafe { patch::apply(&mut Mprotect) };
    assert_eq!(before_install, Err(PatchError::NotInstalled));

    let mut t = PvOps::of_inline::<Host>(IDENTITY);
    t.irq.disable = counting_disable;
    let installed = table::install(t).expect("first install");
    assert!(matches!(
        patch::binding(installed, Op::Disable),
        Binding::Table { .. }
    ));
    assert!(matches!(
        patch::binding(installed, Op::SaveFlags),
        Binding::Backend {
            inline: Some(_),
            ..
        }
    ));
    // Installed, not patched: sites go through the slots.
    exercise("through the slots");
    let disables = DISABLES.load(Ordering::Relaxed);
    stubs_keep_registers("installed");
    assert_eq!(DISABLES.load(Ordering::Relaxed), disables + 1);
    for s in &sites {
        assert_eq!(&site_bytes(s.addr)[..2], &[0xff, 0x15]);
    }

    // SAFETY: as above: one thread, no site runs while it is rewritten.
    let stats = unsafe { patch::apply(&mut Mprotect) }.expect("patching");
    eprintln!("patched: {stats}");
    // The budget is this CPU's, read through the installed cpuid op.
    let cpu = patch::CpuSignature::read(&HardwareCpuid);
    eprintln!("cpu: {cpu:?}");
    assert_eq!(stats.prefix_budget, cpu.prefix_budget());
    assert!([SAFE_PREFIXES, FULL_SITE_PREFIXES].contains(&stats.prefix_budget));
    let n = |op| per_op.get(&op).copied().unwrap_or(0);
    assert_eq!(stats.sites, sites.len());
    assert_eq!(
        stats.inline,
        n(Op::SaveFlags) + n(Op::RestoreFlags) + n(Op::Enable) + n(Op::ReadCr2) + n(Op::SetEntry)
    );
    assert_eq!(stats.via_table, n(Op::Disable));
    assert_eq!(
        stats.direct,
        n(Op::ReadCr3) + n(Op::FlushTlbSingle) + n(Op::SchedClock)
    );
    assert_eq!((stats.out_of_range, stats.duplicates), (0, 0));

    // The exact bytes at every site.
    for s in &sites {
        let op = s.op.unwrap();
        let b = site_bytes(s.addr);
        let expect_inline: Option<[u8; SITE_LEN]> = match op {
            // ds ds pushf; ds ds pop %rax: the pair, no padding NOP.
            Op::SaveFlags => Some([0x3e, 0x3e, 0x9c, 0x3e, 0x3e, 0x58]),
            // ds ds push %rdi; ds ds popf
            Op::RestoreFlags => Some([0x3e, 0x3e, 0x57, 0x3e, 0x3e, 0x9d]),
            // ds ds ds ds ds nop where this CPU's budget is the full site;
            // under three, nop; nopl 0x0(%rax,%rax,1).
            Op::Enable if stats.prefix_budget == FULL_SITE_PREFIXES => {
                Some([0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0x90])
            }
            Op::Enable => Some([0x90, 0x0f, 0x1f, 0x44, 0x00, 0x00]),
            // ds mov $0xc2c2c2, %eax: one instruction.
            Op::ReadCr2 => Some([0x3e, 0xb8, 0xc2, 0xc2, 0xc2, 0x00]),
            // ds mov %rdx, 0x0(%rsi,%riz,1), as declared.
            Op::SetEntry => Some([0x3e, 0x48, 0x89, 0x54, 0x26, 0x00]),
            _ => None,
        };
        match expect_inline {
            Some(e) => {
                assert_eq!(b, e, "{op:?} at {:#x}", s.addr);
                // What `apply` wrote is what the declaration says a site
                // gets.
                let Binding::Backend {
                    inline: Some(code), ..
                } = patch::binding(installed, op)
                else {
                    panic!("{op:?} is not inline");
                };
                assert_eq!(b, code.site_bytes(stats.prefix_budget), "{op:?}");
            }
            // Direct calls go where the slot goes: Host's C entry, or for
            // the replaced disable, the thunk into the table.
            None => assert_eq!(
                call_target(s.addr, &b),
                patch::slot_target(op),
                "{op:?} at {:#x}",
                s.addr
            ),
        }
    }
    assert_eq!(
        patch::slot_target(Op::Disable),
        patch::binding(installed, Op::Disable).call()
    );

    // Behaviour after patching, then once more for good measure.
    exercise("patched");
    exercise("patched, again");

    // SAFETY: as above.
    let again = unsafe { patch::apply(&mut Mprotect) };
    assert_eq!(again, Err(PatchError::AlreadyApplied));
}
