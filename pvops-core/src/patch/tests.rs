//! Host tests of the patcher: bindings, inline bytes, the rewrite of a
//! fake text.

use super::apply::{read_site, rewrite};
use super::binding::binding;
use super::*;
use crate::irq::IrqOps;
use crate::platform::{Features, Identity, Platform};
use crate::table::PvOps;

const ID: Identity = Identity {
    platform: Platform::Native,
    backend: "test",
    features: Features::new(),
    hypervisor: None,
};

#[test]
fn op_ids_and_names() {
    for (i, op) in Op::ALL.iter().enumerate() {
        assert_eq!(*op as usize, i);
        assert_eq!(Op::from_id(i as u8), Some(*op));
    }
    assert_eq!(Op::from_id(Op::COUNT as u8), None);
    assert_eq!(Op::Disable.name(), "irq.disable");
    assert!(!Op::SchedClock.inline_allowed());
}

#[test]
fn names_are_the_table_fields() {
    assert_eq!(
        Op::ALL.map(Op::name),
        [
            "irq.save_flags",
            "irq.restore_flags",
            "irq.disable",
            "irq.enable",
            "mmu.read_cr2",
            "mmu.read_cr3",
            "mmu.set_entry",
            "mmu.flush_tlb_single",
            "time.sched_clock",
        ]
    );
    let saved = Op::ALL.map(Op::inline_allowed);
    assert_eq!(saved.iter().filter(|s| !**s).count(), 1);
    assert!(!Op::SchedClock.inline_allowed());
}

/// An interrupt group of its own, for `with_irq`.
enum OtherIrq {}

impl IrqOps for OtherIrq {
    fn save_flags() -> crate::irq::IrqFlags {
        crate::irq::IrqFlags(0x202)
    }
    fn restore_flags(_: crate::irq::IrqFlags) {}
    fn disable() {}
    fn enable() {}
    fn safe_halt() {}
    fn halt() {}
    fn eoi() {}
    fn send_ipi(_: crate::irq::IpiTarget, _: u8) {}
}

/// A group taken whole from another backend binds that backend's
/// functions (direct calls, no table thunk, no inline bytes of the
/// table it replaced), and leaves the other groups as they were.
#[test]
#[cfg_attr(
    miri,
    ignore = "compares function addresses, which Miri makes different per use"
)]
fn a_group_taken_whole_binds_its_backend() {
    const SET: InlineSet = InlineSet::NONE
        .with(Op::Disable, &[0xfa])
        .with(Op::ReadCr2, &[0x0f, 0x20, 0xd0]);
    let base = PvOps::of::<crate::table::NotInstalled>(ID);
    let base = PvOps {
        patch: base.patch.with_inline(&SET),
        ..base
    };
    let t = base.with_irq::<OtherIrq>();
    assert_eq!((t.irq.save_flags)().0, 0x202);
    for op in [Op::SaveFlags, Op::RestoreFlags, Op::Disable, Op::Enable] {
        let Binding::Backend { call, inline } = binding(&t, op) else {
            panic!("{} goes through the table", op.name());
        };
        assert_eq!(inline, None);
        assert_ne!(call, binding(&base, op).call());
    }
    assert_eq!(
        binding(&t, Op::Disable).call(),
        ops::disable::call::<OtherIrq>() as u64
    );
    for op in [Op::ReadCr2, Op::ReadCr3, Op::SetEntry, Op::SchedClock] {
        assert_eq!(binding(&t, op), binding(&base, op));
    }
    assert!(matches!(
        binding(&t, Op::ReadCr2),
        Binding::Backend {
            inline: Some(_),
            ..
        }
    ));
    // Replacing one of its entries afterwards still routes it through
    // the table.
    let mut replaced = t;
    replaced.irq.enable = replacement;
    assert!(matches!(
        binding(&replaced, Op::Enable),
        Binding::Table { .. }
    ));
}

#[test]
fn untouched_table_binds_its_backend() {
    let t = PvOps::NOT_INSTALLED;
    for op in Op::ALL {
        assert!(matches!(
            binding(&t, op),
            Binding::Backend { inline: None, .. }
        ));
    }
}

fn replacement() {}

#[test]
fn replaced_entry_binds_the_table() {
    let mut t = PvOps::of::<crate::table::NotInstalled>(ID);
    t.irq.disable = replacement;
    assert_eq!(
        binding(&t, Op::Disable),
        Binding::Table {
            call: ops::via_table(Op::Disable) as u64
        }
    );
    assert!(matches!(binding(&t, Op::Enable), Binding::Backend { .. }));
}

fn other_clock() -> u64 {
    7
}
extern "C" fn other_clock_c() -> u64 {
    other_clock()
}

/// A backend's own clock (kvmclock) binds its sites to its C entry, a
/// direct call after patching, not the table thunk; replacing it again
/// afterwards routes through the table once more.
#[test]
#[cfg_attr(
    miri,
    ignore = "compares function addresses, which Miri makes different per use"
)]
fn replaced_sched_clock_binds_its_own_entry() {
    let base = PvOps::of::<crate::table::NotInstalled>(ID);
    // SAFETY: other_clock_c is other_clock behind the C ABI.
    let t = unsafe { base.with_sched_clock(other_clock, other_clock_c) };
    assert_eq!(
        binding(&t, Op::SchedClock),
        Binding::Backend {
            call: other_clock_c as *const () as u64,
            inline: None
        }
    );
    assert_eq!((t.time.sched_clock)(), 7);
    let mut again = t;
    again.time.sched_clock = || 8;
    assert!(matches!(
        binding(&again, Op::SchedClock),
        Binding::Table { .. }
    ));
}

extern "C" fn direct_disable() {}

/// A direct call entry replaces the stub sites call, not the table's
/// function (table calls stay), and a later replacement of the table
/// entry still routes the op through the table.
#[test]
#[cfg_attr(
    miri,
    ignore = "compares function addresses, which Miri makes different per use"
)]
fn direct_call_entries_bind_where_the_table_is_untouched() {
    let base = PvOps::of::<crate::table::NotInstalled>(ID);
    // SAFETY: never called; only the binding is inspected.
    let t = unsafe { base.with_direct_call(Op::Disable, direct_disable) };
    assert_eq!(
        binding(&t, Op::Disable),
        Binding::Backend {
            call: direct_disable as *const () as u64,
            inline: None
        }
    );
    assert_eq!(t.irq.disable as usize, base.irq.disable as usize);
    assert_eq!(binding(&t, Op::Enable), binding(&base, Op::Enable));
    let mut replaced = t;
    replaced.irq.disable = replacement;
    assert!(matches!(
        binding(&replaced, Op::Disable),
        Binding::Table { .. }
    ));
}

#[test]
fn replaced_entry_loses_its_inline_bytes() {
    const SET: InlineSet = InlineSet::NONE.with(Op::Disable, &[0xfa]);
    let t = PvOps::of::<crate::table::NotInstalled>(ID);
    let with = PvOps {
        patch: t.patch.with_inline(&SET),
        ..t
    };
    assert!(matches!(
        binding(&with, Op::Disable),
        Binding::Backend {
            inline: Some(b), ..
        } if b.as_slice() == [0xfa]
    ));
    let mut replaced = with;
    replaced.irq.disable = replacement;
    assert!(matches!(
        binding(&replaced, Op::Disable),
        Binding::Table { .. }
    ));
    // Moving the companion to another table does not move the bytes to
    // that table's functions either.
    let mut other = PvOps::of::<crate::table::NotInstalled>(ID);
    other.irq.disable = replacement;
    other.patch = with.patch;
    assert!(matches!(
        binding(&other, Op::Disable),
        Binding::Table { .. }
    ));
}

#[test]
fn inline_set_rejects_nothing_it_should_accept() {
    const S: InlineSet = InlineSet::NONE
        .with(Op::SaveFlags, &[0x9c, 0x58])
        .with(Op::Enable, &[])
        .with_prefixable(Op::ReadCr2, &[&[0x0f, 0x20, 0xd0]])
        .with_prefixable(Op::RestoreFlags, &[&[0x57], &[0x9d]]);
    let s = S;
    assert_eq!(
        s.get(Op::SaveFlags).map(|b| b.as_slice()),
        Some(&[0x9c, 0x58][..])
    );
    assert_eq!(s.get(Op::Enable).map(|b| b.as_slice()), Some(&[][..]));
    assert_eq!(s.get(Op::Disable), None);
    // Declared code is kept as declared; the widening is the site's,
    // and the same under both budgets for these.
    for budget in [SAFE_PREFIXES, FULL_SITE_PREFIXES] {
        let cr2 = s.get(Op::ReadCr2).unwrap();
        assert_eq!(cr2.as_slice(), [0x0f, 0x20, 0xd0]);
        assert_eq!(cr2.site_bytes(budget), [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd0]);
        let restore = s.get(Op::RestoreFlags).unwrap();
        assert_eq!(restore.as_slice(), [0x57, 0x9d]);
        assert_eq!(
            restore.site_bytes(budget),
            [0x3e, 0x3e, 0x57, 0x3e, 0x3e, 0x9d]
        );
        // `with` bytes are never widened.
        assert_eq!(
            s.get(Op::SaveFlags).unwrap().site_bytes(budget),
            [0x9c, 0x58, 0x0f, 0x1f, 0x40, 0x00]
        );
    }
}

#[test]
fn a_1_byte_op_per_budget() {
    const S: InlineSet = InlineSet::NONE
        .with_prefixable(Op::Disable, &[&[0xfa]])
        .with(Op::Enable, &[0xfb]);
    let cli = S.get(Op::Disable).unwrap();
    // Three prefixes: cli; nopl 0x0(%rax,%rax,1).
    assert_eq!(
        cli.site_bytes(SAFE_PREFIXES),
        [0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]
    );
    // The full site: ds ds ds ds ds cli, one instruction.
    assert_eq!(
        cli.site_bytes(FULL_SITE_PREFIXES),
        [0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0xfa]
    );
    // Exact bytes stay exact under any budget.
    let sti = S.get(Op::Enable).unwrap();
    assert_eq!(
        sti.site_bytes(FULL_SITE_PREFIXES),
        [0xfb, 0x0f, 0x1f, 0x44, 0x00, 0x00]
    );
}

/// Answers leaf 0 with `vendor` and leaf 1 with `eax`.
struct FakeCpu {
    vendor: &'static [u8; 12],
    eax: u32,
}

impl crate::detect::CpuidSource for FakeCpu {
    fn cpuid(&self, leaf: u32, _: u32) -> crate::cpu::CpuidResult {
        let w = |i: usize| u32::from_le_bytes(self.vendor[i..i + 4].try_into().unwrap());
        match leaf {
            0 => crate::cpu::CpuidResult {
                eax: 1,
                ebx: w(0),
                edx: w(4),
                ecx: w(8),
            },
            1 => crate::cpu::CpuidResult {
                eax: self.eax,
                ..Default::default()
            },
            _ => Default::default(),
        }
    }
}

#[test]
fn options_follow_the_cpu() {
    let skylake_x = FakeCpu {
        vendor: b"GenuineIntel",
        eax: 0x0005_0654,
    };
    let bulldozer = FakeCpu {
        vendor: b"AuthenticAMD",
        eax: 0x0060_0f12,
    };
    let zen4 = FakeCpu {
        vendor: b"AuthenticAMD",
        eax: 0x00a1_0f11,
    };
    let via = FakeCpu {
        vendor: b"CentaurHauls",
        eax: 0x0000_06f2,
    };
    let budget = |c: &FakeCpu| PatchOptions::for_cpu(c).prefix_budget;
    assert_eq!(budget(&skylake_x), FULL_SITE_PREFIXES);
    assert_eq!(budget(&zen4), FULL_SITE_PREFIXES);
    assert_eq!(budget(&bulldozer), SAFE_PREFIXES);
    assert_eq!(budget(&via), SAFE_PREFIXES);
    assert_eq!(PatchOptions::default(), PatchOptions::SAFE);
    assert_eq!(PatchOptions::SAFE.prefix_budget, 3);
}

#[test]
fn stats_name_the_budget() {
    let s = PatchStats {
        sites: 3,
        inline: 1,
        direct: 1,
        via_table: 1,
        prefix_budget: 5,
        ..PatchStats::default()
    };
    assert_eq!(
        std::format!("{s}"),
        "sites=3 inline=1 direct=1 via_table=1 out_of_range=0 duplicates=0 prefix_budget=5"
    );
}

#[test]
#[should_panic(expected = "control transfer")]
fn inline_set_refuses_a_prefixable_branch() {
    let _ = InlineSet::NONE.with_prefixable(Op::Disable, &[&[0xc3]]);
}

#[test]
#[should_panic(expected = "longer than a site")]
fn inline_bytes_too_long() {
    let _ = InlineBytes::new(&[0x90; SITE_LEN + 1]);
}

#[test]
#[should_panic(expected = "direct call only")]
fn no_inline_clock() {
    let _ = InlineSet::NONE.with(Op::SchedClock, &[0x0f, 0x31]);
}

/// A [`TextPoke`] over a buffer: logs its calls, writes directly.
#[derive(Default)]
struct Log {
    calls: std::vec::Vec<(&'static str, u64, u64)>,
    refuse: bool,
}

impl TextPoke for Log {
    fn unprotect(&mut self, start: u64, end: u64) -> Result<(), &'static str> {
        self.calls.push(("unprotect", start, end));
        if self.refuse {
            Err("refused")
        } else {
            Ok(())
        }
    }
    fn protect(&mut self, start: u64, end: u64) {
        self.calls.push(("protect", start, end));
    }
    unsafe fn write(&mut self, addr: u64, bytes: &[u8]) {
        self.calls.push(("write", addr, bytes.len() as u64));
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: the test's buffer, as `rewrite` promises.
            unsafe { ((addr as usize + i) as *mut u8).write(*b) };
        }
    }
}

/// A fake text: six sites 8 bytes apart (one recorded twice), each
/// the indirect call of its op's fake slot. Only ever touched through
/// its raw pointer, as `rewrite` touches text.
struct Fake {
    ptr: *mut u8,
    ops: [Op; FAKE_SITES],
}

const FAKE_SITES: usize = 6;

const FAKE_SLOTS: u64 = 0x10_0000;
const FAKE_LEN: usize = 64;

impl Fake {
    fn new() -> Self {
        // Owned through a raw pointer (`rewrite` writes text behind
        // Rust's back); freed in Drop.
        let buf = std::boxed::Box::into_raw(std::boxed::Box::new([0xccu8; FAKE_LEN]));
        let f = Fake {
            ptr: buf.cast::<u8>(),
            ops: [
                Op::Disable,
                Op::Enable,
                Op::SaveFlags,
                Op::ReadCr2,
                Op::SchedClock,
                Op::ReadCr3,
            ],
        };
        for i in 0..FAKE_SITES {
            let b = encode::indirect(f.site(i), f.slot(f.ops[i]));
            // SAFETY: inside the FAKE_LEN-byte buffer allocated above.
            unsafe {
                f.ptr
                    .add(i * 8)
                    .copy_from_nonoverlapping(b.as_ptr(), SITE_LEN)
            };
        }
        f
    }
    fn base(&self) -> u64 {
        self.ptr as u64
    }
    fn site(&self, i: usize) -> u64 {
        self.base() + 8 * i as u64
    }
    fn slot(&self, op: Op) -> u64 {
        self.base() + FAKE_SLOTS + 8 * op as u64
    }
    fn sites(&self) -> std::vec::Vec<Site> {
        let mut v: std::vec::Vec<Site> = (0..FAKE_SITES)
            .map(|i| Site {
                addr: self.site(i),
                len: SITE_LEN as u8,
                op: Some(self.ops[i]),
            })
            .collect();
        v.push(v[0]);
        v
    }
    fn all(&self) -> [u8; FAKE_LEN] {
        // SAFETY: the FAKE_LEN-byte buffer owned by this Fake.
        unsafe { self.ptr.cast::<[u8; FAKE_LEN]>().read() }
    }
    fn bytes(&self, i: usize) -> [u8; SITE_LEN] {
        self.all()[i * 8..i * 8 + SITE_LEN].try_into().unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from Box::into_raw of a [u8; FAKE_LEN] in
        // `new` and is freed only here.
        drop(unsafe { std::boxed::Box::from_raw(self.ptr.cast::<[u8; FAKE_LEN]>()) });
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "executes inline asm (cpuid, real call sites); runs natively in cargo test"
)]
fn rewrite_fake_text() {
    // cli and one five-byte NOP.
    rewrite_fake_text_with(SAFE_PREFIXES, [0xfa, 0x0f, 0x1f, 0x44, 0x00, 0x00]);
    // cli with five DS prefixes: one instruction.
    rewrite_fake_text_with(FULL_SITE_PREFIXES, [0x3e, 0x3e, 0x3e, 0x3e, 0x3e, 0xfa]);
}

/// Rewrites a fresh fake text within `budget`; `cli` is what the
/// prefixable `cli` of `irq.disable` must become.
fn rewrite_fake_text_with(budget: u8, cli: [u8; SITE_LEN]) {
    let f = Fake::new();
    let near = f.base() + 0x4000;
    let far = f.base().wrapping_add(1 << 40);
    let mut bindings = Op::ALL.map(|_| Binding::Table { call: near });
    bindings[Op::Disable as usize] = Binding::Backend {
        call: near,
        inline: Some(InlineBytes::prefixable(&[&[0xfa]])),
    };
    bindings[Op::Enable as usize] = Binding::Backend {
        call: near + 0x10,
        inline: None,
    };
    bindings[Op::SaveFlags as usize] = Binding::Table { call: near + 0x20 };
    bindings[Op::ReadCr2 as usize] = Binding::Backend {
        call: far,
        inline: None,
    };
    bindings[Op::SchedClock as usize] = Binding::Backend {
        call: near + 0x30,
        inline: None,
    };
    bindings[Op::ReadCr3 as usize] = Binding::Backend {
        call: near + 0x40,
        inline: Some(InlineBytes::prefixable(&[&[0x0f, 0x20, 0xd8]])),
    };
    let sites = f.sites();
    let mut log = Log::default();
    let slot = |op| f.slot(op);
    // SAFETY: every site is in `f.buf`, which nothing executes.
    let stats = unsafe { rewrite(|| sites.iter().copied(), slot, &bindings, budget, &mut log) };
    let stats = stats.unwrap();
    assert_eq!(
        stats,
        PatchStats {
            sites: 7,
            inline: 2,
            direct: 2,
            via_table: 1,
            out_of_range: 1,
            duplicates: 1,
            prefix_budget: budget,
        }
    );
    assert_eq!(f.bytes(0), cli);
    // mov %cr3, %rax widened to fill the site (three prefixes under
    // either budget): one instruction.
    assert_eq!(f.bytes(5), [0x3e, 0x3e, 0x3e, 0x0f, 0x20, 0xd8]);
    // call rel32 from the end of the call, then a NOP.
    let call = |i: usize, target: u64| {
        let rel = (target as i64 - (f.site(i) as i64 + 5)) as i32;
        let mut b = [0xe8, 0, 0, 0, 0, 0x90];
        b[1..5].copy_from_slice(&rel.to_le_bytes());
        b
    };
    assert_eq!(f.bytes(1), call(1, near + 0x10));
    assert_eq!(f.bytes(2), call(2, near + 0x20));
    assert_eq!(f.bytes(4), call(4, near + 0x30));
    // Out of range: untouched, still the indirect call of its slot.
    assert_eq!(f.bytes(3), encode::indirect(f.site(3), f.slot(Op::ReadCr2)));
    // Nothing outside the sites changed.
    let all = f.all();
    for i in 0..FAKE_SITES {
        assert!(all[i * 8 + SITE_LEN..i * 8 + 8].iter().all(|b| *b == 0xcc));
    }
    // One unprotect before the writes, one protect after, same span.
    let (lo, hi) = (f.site(0), f.site(FAKE_SITES - 1) + SITE_LEN as u64);
    assert_eq!(log.calls.first(), Some(&("unprotect", lo, hi)));
    assert_eq!(log.calls.last(), Some(&("protect", lo, hi)));
    let writes: std::vec::Vec<_> = log.calls[1..log.calls.len() - 1].to_vec();
    assert_eq!(writes.len(), 5);
    assert!(writes
        .iter()
        .all(|(k, a, n)| *k == "write" && *a >= lo && a + n <= hi && *n == SITE_LEN as u64));
}

#[test]
fn rewrite_refuses_bad_records_and_writes_nothing() {
    let f = Fake::new();
    let bindings = Op::ALL.map(|_| Binding::Table { call: f.base() });
    let before = f.all();
    let attempt = |sites: std::vec::Vec<Site>, log: &mut Log| {
        // SAFETY: as in `rewrite_fake_text`.
        unsafe {
            rewrite(
                || sites.iter().copied(),
                |op| f.slot(op),
                &bindings,
                SAFE_PREFIXES,
                log,
            )
        }
    };
    let mut log = Log::default();
    // A record whose site is not the indirect call of its op's slot.
    let mut sites = f.sites();
    sites[2].op = Some(Op::Enable);
    let r = attempt(sites, &mut log);
    assert_eq!(r, Err(PatchError::BadSite { addr: f.site(2) }));
    // A record with an unknown op or a wrong length.
    let mut sites = f.sites();
    sites[1].op = None;
    let r = attempt(sites, &mut log);
    assert_eq!(r, Err(PatchError::BadSite { addr: f.site(1) }));
    let mut sites = f.sites();
    sites[4].len = 5;
    let r = attempt(sites, &mut log);
    assert_eq!(r, Err(PatchError::BadSite { addr: f.site(4) }));
    assert!(log.calls.is_empty());
    // Text that cannot be made writable.
    let mut log = Log {
        refuse: true,
        ..Log::default()
    };
    let r = attempt(f.sites(), &mut log);
    assert_eq!(r, Err(PatchError::Text("refused")));
    assert_eq!(log.calls.len(), 1);
    assert_eq!(f.all(), before);
}

#[test]
#[cfg_attr(
    miri,
    ignore = "executes inline asm (cpuid, real call sites); runs natively in cargo test"
)]
fn this_image_has_sites() {
    // The unit-test binary itself contains sites (at least the two
    // below) and the sentinel, which `sites()` skips.
    let mut seen = [false; Op::COUNT];
    for s in sites() {
        assert_eq!(s.len as usize, SITE_LEN);
        let op = s.op.expect("known op");
        seen[op as usize] = true;
        // SAFETY: a recorded site of this image.
        let bytes = unsafe { read_site(s.addr) };
        assert_eq!(bytes, encode::indirect(s.addr, site::slot_addr(op)));
    }
    assert!(seen[Op::Disable as usize] && seen[Op::SchedClock as usize]);
    if std::hint::black_box(false) {
        // Never run: only makes sure these sites exist in this binary.
        crate::irq::disable();
        let _ = crate::time::sched_clock();
    }
}
