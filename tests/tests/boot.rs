//! Boots the example kernel in every implemented environment.
//!
//! One test per environment (the domU ones share one dom0 boot), the KVM feature-off matrix, bench mode under
//! KVM (exits counted by the host) and under Xen PV (hypercalls counted by
//! the guest).

use pvops_tests::{assert_boots, images_booted, kernel_image, skip};
use xtask::boot::BootImage;
use xtask::env::Env;

#[test]
fn boot_tcg() {
    assert_boots(Env::Tcg);
}

#[test]
fn boot_kvm_hidden() {
    assert_boots(Env::KvmHidden);
}

#[test]
fn boot_xen_pvh() {
    assert_boots(Env::XenPvh);
}

#[test]
fn boot_xen_pv() {
    assert_boots(Env::XenPv);
}

/// The kernel as a PVH domU made by `xl` in a Linux dom0 (one dom0 boot
/// runs this and the other domU kinds): its own console ring from the
/// first line, 2 vCPUs, and a shutdown the toolstack sees as a reboot.
#[test]
fn boot_xen_pvh_domu() {
    assert_boots(Env::XenPvhDomu);
}

/// The kernel as a classic PV domU made by `xl` (same dom0 boot as above).
#[test]
fn boot_xen_pv_domu() {
    assert_boots(Env::XenPvDomu);
}

/// An HVM domU booted as people's are (same dom0 boot as above):
/// hvmloader and SeaBIOS boot a GRUB CD, GRUB enters the higher-half
/// multiboot2 example kernel, and the xen backend's HVM mode runs it
/// (`platform=xen-hvm`, console ring, 2 vCPUs started through the APIC).
#[test]
fn boot_xen_hvm_domu() {
    assert_boots(Env::XenHvmDomu);
}

/// The same HVM domU with Xen's Hyper-V emulation on (`viridian = 1`,
/// same dom0 boot): Hyper-V's leaves come first and the hyperv backend
/// bids too, but Xen's HVM mode must be what runs, and the platform line
/// must say it saw Hyper-V first (`hypervisor=hyperv`).
#[test]
fn boot_xen_hvm_viridian_domu() {
    assert_boots(Env::XenHvmViridianDomu);
}

/// The example kernel in an HVM domU, loaded by libxl as
/// `firmware_override` (same dom0 boot as above): it enters through its
/// PVH entry with no command line, so it reports `platform=xen-pvh` and
/// skips `start_info_parsed`.
#[test]
fn boot_xen_hvm_fw_domu() {
    assert_boots(Env::XenHvmFwDomu);
}

/// The higher-half PVH example kernel as a PVH domU: `pvh_entry!`'s
/// higher-half form loaded by xl (libxc's ELF loader wants the entry inside
/// the image's physical range), every loader test ok on the console ring.
#[test]
fn boot_xen_pvh_high_domu() {
    assert_boots(Env::XenPvhHighDomu);
}

/// Every environment boots the very same ELF: same path, same bytes.
#[test]
fn same_image_in_every_env() {
    let images = images_booted();
    if images.is_empty() {
        skip("no environment could boot here, so there is no image to compare");
        return;
    }
    let kernel = kernel_image().expect("the kernel image was built for the boots");
    let on_disk = BootImage::read(kernel).expect("reading the kernel image");
    for (env, image) in &images {
        assert_eq!(
            image,
            &on_disk,
            "{env} booted another image than {}",
            kernel.display()
        );
    }
    eprintln!(
        "{} environment(s) booted {} (sha256 {})",
        images.len(),
        on_disk.path.display(),
        on_disk.sha256
    );
}

/// Bench mode under KVM: every op gets a bench line, the QMP counters are
/// read around each loop, and an IPI to this CPU (send + interrupt + EOI)
/// costs about one VM exit (at least 0.5 per op, leaving room for counter
/// noise) — a count that only a real hypervisor can produce — while
/// cli/sti cost less than half of that.
#[test]
fn bench_mode_counts_exits_under_kvm() {
    if let Some(why) = xtask::provision::unavailable(Env::KvmHidden) {
        skip(&why);
        return;
    }
    let kernel = kernel_image().expect("kernel image");
    let (run, boot) = xtask::bench::run_guest(
        Env::KvmHidden,
        kernel,
        2,
        &xtask::bench::Variant::default_variant(),
    )
    .unwrap_or_else(|e| panic!("bench boot failed: {e:#}"));
    assert!(boot.passed(), "{}", boot.report());
    let row = |op: &str, path: &str| {
        run.rows
            .iter()
            .find(|r| r.op == op && r.path == path)
            .unwrap_or_else(|| panic!("no bench line for {op} {path}: {:?}", run.rows))
    };
    for (op, path) in [
        ("irq_save_restore", "native"),
        ("irq_save_restore", "pvops"),
        ("sched_clock", "pvops"),
        ("set_pte", "pvops"),
        ("flush_tlb_single", "pvops"),
        ("send_ipi_one", "pvops"),
    ] {
        let r = row(op, path);
        assert!(r.emulated, "{op} {path} not labelled timing=emulated");
        assert!(r.cycles_median > 0, "{op} {path}: no cycles");
    }
    let exits = row("ipi_self_eoi", "pvops").per_op["exits"];
    assert!(
        exits >= 0.5,
        "IPI to self cost {exits} exits per op under KVM"
    );
    // The counter windows are right: cli/sti (no exit of their own) cost
    // well under what an IPI costs. Not an absolute bound: on a loaded
    // machine a window can catch some of the idle time around its loop.
    let counters = &row("irq_disable_enable", "native").per_op;
    let quiet = counters["exits"];
    assert!(
        quiet < exits / 2.0,
        "cli/sti cost {quiet} exits per op against {exits} for an IPI: the counter windows are off ({counters:?})"
    );
}

/// Bench mode under Xen classic PV: the guest counts its hypercalls. A
/// PTE update is one `mmu_update` each (512 for 512), a lazy MMU batch
/// sends 512 in a handful (the queue holds 128), and the ops that need no
/// hypercall under PV (the interrupt flag in `vcpu_info`, CR2 from
/// `vcpu_info`) make none.
#[test]
fn bench_mode_counts_hypercalls_under_xen_pv() {
    if let Some(why) = xtask::provision::unavailable(Env::XenPv) {
        skip(&why);
        return;
    }
    let kernel = kernel_image().expect("kernel image");
    let (run, boot) = xtask::bench::run_guest(
        Env::XenPv,
        kernel,
        1,
        &xtask::bench::Variant::default_variant(),
    )
    .unwrap_or_else(|e| panic!("bench boot failed: {e:#}"));
    assert!(boot.passed(), "{}", boot.report());
    let calls = |op: &str, path: &str| {
        run.rows
            .iter()
            .find(|r| r.op == op && r.path == path)
            .unwrap_or_else(|| panic!("no bench line for {op} {path}: {:?}", run.rows))
            .per_op
            .get("hypercalls")
            .copied()
            .unwrap_or_else(|| panic!("{op} {path}: no hypercall count"))
    };
    assert!(
        !run.rows.iter().any(|r| r.path == "native"),
        "native paths ran in ring 3"
    );
    assert_eq!(calls("map_512", "unbatched"), 512.0);
    let lazy = calls("map_512", "lazy");
    assert!(
        (1.0..=8.0).contains(&lazy),
        "512 updates in a lazy batch took {lazy} hypercalls"
    );
    assert_eq!(calls("set_pte", "patched"), 1.0);
    // Update and flush of one page: one hypercall (update_va_mapping).
    assert_eq!(calls("set_pte_flush", "pvops"), 1.0);
    assert_eq!(calls("remap_flush_512", "unbatched"), 512.0);
    let lazy_flush = calls("remap_flush_512", "lazy");
    assert!(
        (1.0..=8.0).contains(&lazy_flush),
        "512 updates and flushes in a lazy batch took {lazy_flush} hypercalls"
    );
    assert_eq!(calls("irq_disable_enable", "patched"), 0.0);
    assert_eq!(calls("read_cr2", "patched"), 0.0);
    eprintln!("xen-pv: 512 PTE updates: 512 hypercalls unbatched, {lazy} in a lazy batch");
}

#[test]
fn boot_kvm() {
    assert_boots(Env::Kvm);
}

/// A VMM without PIT, PIC or RTC: the kvm backend must install with the
/// TSC frequency from kvmclock (native alone finds none there), and the
/// CMOS round trip is skipped, as the harness expects.
#[test]
fn boot_microvm() {
    assert_tsc_source(Env::Microvm);
}

/// kvm-nested in one outer boot: the default configuration (every KVM
/// feature on, hypercalls completing), then each feature switched off in
/// the inner QEMU (`-cpu host,-<flag>`), then the KVM signature hidden
/// (`kvm=off`, the native backend), then a live migration of the default
/// configuration to a second inner QEMU (`xtask::migrate`); each inner
/// run judged on its own. hyperv and hyperv-kvm share an outer boot of
/// their own ([`xtask::nested::OUTER_BOOTS`], tests below).
#[test]
fn boot_kvm_nested() {
    nested_env_passes(Env::KvmNested, "features off, kvm=off, live migration");
}

/// microvm-nested, in kvm-nested's outer boot: the inner QEMU as a microvm
/// machine (no PIT, PIC or RTC) on Linux's real KVM, where hypercalls
/// complete: the kvm backend must take the TSC frequency from kvmclock and
/// start the second CPU without the legacy devices.
#[test]
fn boot_microvm_nested() {
    assert_tsc_source(Env::MicrovmNested);
    nested_env_passes(Env::MicrovmNested, "variants");
}

/// hyperv, in the Hyper-V outer boot: the inner QEMU with every Hyper-V
/// enlightenment and `kvm=off` (the hyperv backend alone), then each
/// `hv-*` flag off with what QEMU makes depend on it; each inner run
/// judged on its own (features present and absent, only ok tests, exit 0).
#[test]
fn boot_hyperv() {
    nested_env_passes(Env::HyperV, "hv-* flags off");
}

/// hyperv-kvm, in the same outer boot as hyperv: Hyper-V's leaves beside KVM's;
/// the hyperv backend on the kvm backend's table, choosing per op.
#[test]
fn boot_hyperv_kvm() {
    nested_env_passes(Env::HyperVKvm, "variants");
}

/// The inner runs of `env` in its group's one outer boot (its default
/// configuration first, then its matrix; for kvm-nested, the live
/// migration last) all pass; records the result.
fn nested_env_passes(env: Env, matrix: &str) {
    use pvops_tests::{nested_matrix_once, NestedBooted};
    use xtask::record::{self, Record};
    let run = match nested_matrix_once(env) {
        NestedBooted::Skipped(why) => {
            record::write(env, &Record::Skipped(why.clone()));
            skip(why);
            return;
        }
        NestedBooted::Error(e) => {
            record::write(env, &Record::Failed(e.clone()));
            panic!("the outer boot of {env} failed: {e}");
        }
        NestedBooted::Ran(run) => run,
    };
    // Every environment of this outer boot: its default and matrix, and
    // kvm-nested's migration.
    let group = xtask::nested::OUTER_BOOTS[xtask::nested::outer_boot_of(env).expect("nested")];
    let total: usize = group
        .iter()
        .map(|e| 1 + e.matrix_variants().len() + usize::from(*e == Env::KvmNested))
        .sum::<usize>();
    assert_eq!(run.boots.len(), total, "inner runs missing");
    let migrates = env == Env::KvmNested;
    let migration = run.migration.as_ref();
    if migrates {
        let m = migration.expect("the outer boot ran no live migration");
        eprintln!("kvm-nested live migration: {}", m.verdict());
    }
    let boots: Vec<_> = run.boots.iter().filter(|b| b.plan.env == env).collect();
    assert_eq!(
        boots.len(),
        1 + env.matrix_variants().len() + usize::from(migrates),
        "{env}: inner runs missing"
    );
    let mut failures = Vec::new();
    for b in &boots {
        let name = b
            .plan
            .args
            .iter()
            .position(|a| a == "-cpu")
            .map(|i| b.plan.args[i + 1].to_string_lossy().into_owned())
            .unwrap_or_default();
        eprintln!("{env} -cpu {name}: {}", b.verdict());
        if !b.passed() {
            let report = match migration {
                Some(m) if xtask::migrate::is_migration(&b.plan) => xtask::migrate::report(m),
                _ => b.report(),
            };
            failures.push(format!("{env} -cpu {name}:\n{report}"));
        }
    }
    eprintln!("kvm-nested: {}", run.timings.summary());
    let spent: f64 = run
        .timings
        .inner
        .iter()
        .zip(&run.boots)
        .filter(|(_, b)| b.plan.env == env)
        .map(|((_, d), _)| d.as_secs_f64())
        .sum();
    let summary = format!(
        "{}; {}/{} inner runs passed (default, {} {matrix}) in {spent:.1} s of one outer boot of {:.1} s",
        boots[0].verdict(),
        boots.len() - failures.len(),
        boots.len(),
        boots.len() - 1,
        run.timings.total.as_secs_f64()
    );
    if failures.is_empty() {
        record::write(env, &Record::Passed(summary));
    } else {
        record::write(env, &Record::Failed(summary));
        panic!("{}", failures.join("\n"));
    }
}

/// Each KVM feature switched off in QEMU in turn: the backend falls back to
/// the native path for just that feature (the features line says so) and
/// every self-test still passes.
#[test]
fn kvm_feature_off_matrix() {
    use xtask::boot::{BootOptions, Plan};
    if let Some(why) = xtask::provision::unavailable(Env::Kvm) {
        skip(&why);
        return;
    }
    let kernel = kernel_image().expect("kernel image");
    let variants = Env::Kvm.bench_variants();
    assert!(
        variants.len() >= 9,
        "the matrix lost features: {variants:?}"
    );
    let mut failures = Vec::new();
    for variant in &variants {
        let options = BootOptions {
            smp: Env::Kvm.test_smp(),
            ..BootOptions::default()
        };
        let mut plan = Plan::new(Env::Kvm, kernel, &options).expect("plan");
        variant.apply(&mut plan).expect("variant");
        match xtask::boot::run_plan(plan, false) {
            Ok(b) if b.passed() => eprintln!("{}: {}", variant.name, b.verdict()),
            Ok(b) => failures.push(format!("{}:\n{}", variant.name, b.report())),
            Err(e) => failures.push(format!("{}: {e:#}", variant.name)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A PV dom0 with 320 MiB: its frames need 160 PTE tables (640 KiB) to be
/// identity-mapped at boot, more than the 512 KiB of padding Xen
/// guarantees after its boot layout, so the backend must take the later
/// tables from memory it has just mapped itself; then the kernel maps all
/// of it again, in a lazy batch, and passes its tests.
#[test]
fn xen_pv_dom0_bigger_than_the_boot_padding_maps() {
    use xtask::boot::{BootOptions, Plan};
    let env = Env::XenPv;
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let kernel = kernel_image().expect("kernel image");
    let options = BootOptions {
        smp: 1,
        ..BootOptions::default()
    };
    let mut plan = Plan::new(env, kernel, &options).expect("plan");
    let i = plan
        .args
        .iter()
        .position(|a| a == "-append")
        .expect("the plan has -append");
    let line = plan.args[i + 1]
        .to_str()
        .expect("Xen's command line is text")
        .replace("dom0_mem=64M,max:64M", "dom0_mem=320M,max:320M");
    assert!(line.contains("dom0_mem=320M"), "{line}");
    plan.args[i + 1] = line.into();
    let b = xtask::boot::run_plan(plan, false).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(b.passed(), "{}", b.report());
}

/// The kernel's `tsc_source=` in `env`'s boot, asserted to be the one the
/// environment decides ([`Env::expected_tsc_source`]): which of VMware's
/// sources gave the TSC frequency (or, under TCG, that none could), and
/// kvmclock on the microvm machines (the only source they have).
fn assert_tsc_source(env: Env) {
    assert_boots(env);
    let pvops_tests::Booted::Ran(b) = pvops_tests::boot_once(env) else {
        return; // skipped, loudly, by assert_boots
    };
    let expected = env
        .expected_tsc_source()
        .expect("an environment that decides the TSC source");
    let line = b
        .run
        .console
        .iter()
        .find(|l| l.starts_with("pvops: info: tsc_hz="))
        .unwrap_or_else(|| panic!("{env}: no `pvops: info: tsc_hz=` line\n{}", b.report()));
    let source = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("tsc_source="))
        .unwrap_or_else(|| panic!("{env}: no tsc_source= in {line:?}"));
    assert_eq!(source, expected, "{env}: {line}");
}

/// QEMU/KVM as VMware with KVM's leaves hidden: the vmware backend by
/// SMBIOS and the backdoor, TSC and APIC bus frequencies from GETHZ.
#[test]
fn boot_vmware_qemu() {
    assert_tsc_source(Env::VmwareQemu);
}

/// QEMU/KVM as VMware with `vmware-cpuid-freq`: the frequencies from
/// CPUID 0x40000010 (the backend forced: KVM's leaves outbid it there).
#[test]
fn boot_vmware_qemu_leaf() {
    assert_tsc_source(Env::VmwareQemuLeaf);
}

/// QEMU TCG as VMware: the backdoor answers, GETHZ has no frequency (QEMU
/// sets the APIC bus frequency only under KVM) and there is no timing
/// leaf, so native measures against the PIT, after warnings.
#[test]
fn boot_vmware_qemu_tcg() {
    assert_tsc_source(Env::VmwareQemuTcg);
}
