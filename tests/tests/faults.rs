//! Fault injection and lying platforms (issue 8).
//!
//! Fault injection: `pvops.fail=<point>[:<n>]` makes a backend's failure
//! point fail as the hypervisor would (a refused MSR write under KVM,
//! `-EINVAL` from a Xen hypercall). Each boot checks the documented
//! outcome: the warning line, the feature gone from the features line and
//! every self-test passing where there is a fallback; the error lines and
//! a clean, prompt end where there is none.
//!
//! Lying platforms: QEMU `-cpu` and Xen command-line options that hide or
//! empty the CPUID hypervisor leaves; each boot checks the platform line
//! (platform, backend, features, `hypervisor=`) and that the self-tests
//! pass.
//!
//! Each boot takes about 2.5 s under KVM and 2 s under Xen here; the boots
//! of one test run one after another.

use std::time::Duration;

use pvops_tests::{kernel_image, skip};
use xtask::boot::{run_plan, Boot, BootOptions, Plan};
use xtask::env::Env;
use xtask::protocol::{NoteKind, Problem, Termination};
use xtask::qemu::{KillReason, Killed};

/// Time bound of one boot: a hang fails well before the environments'
/// own (generous) bounds, yet a loaded machine has room.
const BOUND: Duration = Duration::from_secs(90);

/// Which kernel a case boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// The example kernel (self-tests).
    Example,
    /// `examples/minimal-kernel`: prints `init`'s error and shuts down
    /// with exit code 2 when no backend comes up, as the README tells
    /// kernels to.
    Minimal,
}

fn image(kernel: Kernel) -> std::path::PathBuf {
    match kernel {
        Kernel::Example => kernel_image().expect("kernel image").to_owned(),
        Kernel::Minimal => xtask::kernel::build_package("minimal-kernel")
            .unwrap_or_else(|e| panic!("building minimal-kernel: {e:#}")),
    }
}

/// The plan of one boot in `env` with `words` added to the kernel's
/// command line.
fn plan(env: Env, kernel: Kernel, words: &[&str]) -> Plan {
    let options = BootOptions {
        smp: match kernel {
            Kernel::Example => env.test_smp(),
            Kernel::Minimal => 1,
        },
        extra_cmdline: words.iter().map(|w| w.to_string()).collect(),
        timeout: Some(BOUND),
        ..BootOptions::default()
    };
    Plan::new(env, &image(kernel), &options).expect("plan")
}

/// Replaces QEMU's `-cpu` value.
fn set_cpu(plan: &mut Plan, cpu: &str) {
    let i = plan
        .args
        .iter()
        .position(|a| a == "-cpu")
        .expect("the plan has -cpu");
    plan.args[i + 1] = cpu.into();
}

/// Adds `words` to Xen's own command line (the first `-append` of a Xen
/// environment; the kernel's travels in `-initrd`).
fn add_xen_cmdline(plan: &mut Plan, words: &str) {
    assert!(plan.env.is_xen());
    let i = plan
        .args
        .iter()
        .position(|a| a == "-append")
        .expect("the plan has -append");
    let mut line = plan.args[i + 1].clone();
    line.push(" ");
    line.push(words);
    plan.args[i + 1] = line;
}

fn notes(b: &Boot, kind: NoteKind) -> Vec<&str> {
    b.outcome
        .console
        .notes
        .iter()
        .filter(|n| n.kind == kind)
        .map(|n| n.text.as_str())
        .collect()
}

/// Every `needle` must be part of some note of `kind`.
fn missing_notes(b: &Boot, kind: NoteKind, needles: &[&str]) -> Vec<String> {
    let have = notes(b, kind);
    needles
        .iter()
        .filter(|n| !have.iter().any(|h| h.contains(*n)))
        .map(|n| format!("no {kind:?} line containing {n:?}"))
        .collect()
}

/// A `key=value` of the platform line besides platform/backend/features.
fn platform_value<'b>(b: &'b Boot, key: &str) -> Option<&'b str> {
    let p = b.outcome.console.platforms.first()?;
    p.extra
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Problems of `b` other than those `allowed` says are the documented
/// outcome.
fn unexpected(b: &Boot, allowed: impl Fn(&Problem) -> bool) -> Vec<String> {
    b.problems
        .iter()
        .filter(|p| !allowed(p))
        .map(|p| p.to_string())
        .collect()
}

/// A boot whose injected fault has a fallback: it passes as a normal boot
/// of `env` would, minus the features in `absent`, and prints `warnings`.
struct Fallback {
    /// The `pvops.fail=` value.
    fail: &'static str,
    /// Further kernel command-line words.
    extra: &'static [&'static str],
    /// Features that must be off.
    absent: &'static [&'static str],
    /// Features that must be on (besides the environment's own list).
    present: &'static [&'static str],
    /// Parts of warning lines that must appear.
    warnings: &'static [&'static str],
}

fn run_fallbacks(env: Env, cases: &[Fallback]) {
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let mut failures = Vec::new();
    for case in cases {
        let fail = format!("pvops.fail={}", case.fail);
        let mut words = vec![fail.as_str()];
        words.extend_from_slice(case.extra);
        let mut p = plan(env, Kernel::Example, &words);
        let e = &mut p.expectation;
        e.features_present
            .retain(|f| !case.absent.contains(&f.as_str()));
        e.features_absent
            .extend(case.absent.iter().map(|f| f.to_string()));
        e.features_absent
            .retain(|f| !case.present.contains(&f.as_str()));
        e.features_present
            .extend(case.present.iter().map(|f| f.to_string()));
        let b = match run_plan(p, false) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{}: {e:#}", case.fail));
                continue;
            }
        };
        let mut wrong: Vec<String> = b.problems.iter().map(|p| p.to_string()).collect();
        wrong.extend(missing_notes(&b, NoteKind::Warning, case.warnings));
        if wrong.is_empty() {
            eprintln!("pvops.fail={}: {}", case.fail, b.verdict());
        } else {
            failures.push(format!(
                "pvops.fail={}: {}\n{}",
                case.fail,
                wrong.join("; "),
                b.report()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Every KVM feature's enabling MSR write refused: that feature alone
/// falls back to native, with a warning; on a second CPU only that CPU
/// does.
#[test]
fn kvm_refused_msr_writes_fall_back_per_feature() {
    run_fallbacks(
        Env::Kvm,
        &[
            Fallback {
                fail: "kvm.kvmclock",
                extra: &[],
                absent: &["kvmclock"],
                present: &[],
                warnings: &[
                    "pvops.fail: injecting faults at kvm.kvmclock (every use)",
                    "kvmclock write of MSR 0x4b564d01 refused (pvops.fail): using the TSC clock",
                ],
            },
            Fallback {
                fail: "kvm.kvmclock-unsettled",
                extra: &[],
                absent: &["kvmclock"],
                present: &[],
                warnings: &["kvmclock area of MSR 0x4b564d01 never filled or settled"],
            },
            // Kept at boot, lost at the 5th read: the TSC clock from then
            // on. Bad entries of the same option are reported and ignored.
            Fallback {
                fail: "kvm.kvmclock-unsettled:5,kvm.nope,,kvm.pv-eoi:0",
                extra: &[],
                absent: &[],
                present: &["kvmclock", "pv-eoi"],
                warnings: &[
                    "falling back to the TSC clock for good",
                    "pvops.fail: unknown point `kvm.nope` ignored",
                    "pvops.fail: empty entry ignored",
                    "pvops.fail: `kvm.pv-eoi:0`: the count must be a whole number",
                    "pvops.fail: valid points here: kvm.kvmclock, kvm.kvmclock-unsettled, \
                     kvm.steal-time, kvm.pv-eoi, kvm.poll-control",
                ],
            },
            // PV TLB flush needs steal time's preempted flag.
            Fallback {
                fail: "kvm.steal-time",
                extra: &[],
                absent: &["steal-time", "pv-tlb-flush"],
                present: &[],
                warnings: &[
                    "kvm steal-time on cpu 0: write of MSR 0x4b564d03 refused (pvops.fail)",
                ],
            },
            Fallback {
                fail: "kvm.pv-eoi,kvm.poll-control",
                extra: &[],
                absent: &["pv-eoi", "poll-control"],
                present: &[],
                warnings: &[
                    "kvm pv-eoi on cpu 0: write of MSR 0x4b564d04 refused (pvops.fail): APIC EOI",
                    "kvm poll-control on cpu 0: write of MSR 0x4b564d05 refused (pvops.fail)",
                ],
            },
            // The second CPU's registrations only: the features stay.
            Fallback {
                fail: "kvm.kvmclock:2,kvm.steal-time:2,kvm.pv-eoi:2,kvm.poll-control:2",
                extra: &[],
                absent: &[],
                present: &[],
                warnings: &[
                    "kvmclock on cpu 1: write of MSR 0x4b564d01 refused (pvops.fail): reading \
                     the boot CPU's record",
                    "kvm steal-time on cpu 1: write of MSR 0x4b564d03 refused",
                    "kvm pv-eoi on cpu 1: write of MSR 0x4b564d04 refused",
                    "kvm poll-control on cpu 1: write of MSR 0x4b564d05 refused",
                ],
            },
        ],
    );
}

/// VMware's frequency sources refused one at a time: the timing leaf
/// gives way to GETHZ, GETHZ to native's own (the PIT), each with a
/// warning. (GETVERSION refused where only SMBIOS speaks makes the backend
/// fail for native: host-tested in pvops-vmware, as the platform changes.)
#[test]
fn vmware_refused_sources_fall_back_in_order() {
    run_fallbacks(
        Env::VmwareQemuLeaf,
        &[Fallback {
            fail: "vmware.cpuid-freq",
            extra: &[],
            absent: &["cpuid-freq"],
            present: &["gethz"],
            warnings: &[
                "pvops.fail: injecting faults at vmware.cpuid-freq (every use)",
                "vmware: vmware.cpuid-freq refused (pvops.fail)",
            ],
        }],
    );
    run_fallbacks(
        Env::VmwareQemu,
        &[Fallback {
            fail: "vmware.gethz",
            extra: &[],
            absent: &["gethz", "apic-freq"],
            present: &[],
            warnings: &[
                "vmware: vmware.gethz refused (pvops.fail)",
                "vmware: no TSC frequency from the hypervisor: native's own",
            ],
        }],
    );
}

/// Xen setup hypercalls that have a fallback.
#[test]
fn xen_refused_hypercalls_with_a_fallback() {
    run_fallbacks(
        Env::XenPvh,
        &[
            Fallback {
                fail: "xen.vcpu-info",
                extra: &[],
                absent: &[],
                present: &["callback-vector"],
                warnings: &[
                    "xen: VCPUOP_register_vcpu_info on cpu 0: EINVAL (22); using its vcpu_info \
                     in shared info",
                    "xen: VCPUOP_register_vcpu_info on cpu 1: EINVAL (22)",
                ],
            },
            Fallback {
                fail: "xen.callback",
                extra: &[],
                absent: &["callback-vector"],
                present: &["upcall-vector"],
                warnings: &[
                    "xen: HVMOP_set_param(HVM_PARAM_CALLBACK_IRQ) failed: EINVAL (22); using \
                     the per-vCPU upcall vector",
                ],
            },
            Fallback {
                fail: "xen.runstate",
                extra: &[],
                absent: &["runstate"],
                present: &[],
                warnings: &[
                    "xen: VCPUOP_register_runstate_memory_area on cpu 0: EINVAL (22); steal \
                     clock reads 0 there",
                ],
            },
            // The second vCPU stays down; the kernel runs on one (the smp_*
            // self-tests need two and are left out).
            Fallback {
                fail: "xen.vcpu-up",
                extra: &[],
                absent: &[],
                present: &[],
                warnings: &["cpu 1 start refused (error -22)"],
            },
        ],
    );
}

/// Xen faults with no fallback but a documented, clean end.
#[test]
fn xen_refused_hypercalls_without_a_fallback_end_cleanly() {
    let env = Env::XenPvh;
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let mut failures: Vec<String> = Vec::new();
    let mut check = |name: &str, b: Result<Boot, String>, judge: &dyn Fn(&Boot) -> Vec<String>| {
        if let Err(e) = judged(name, b, judge) {
            failures.push(e);
        }
    };
    let boot = |kernel, words: &[&str]| run_plan(plan(env, kernel, words), false);

    // A failed timer arm: the tick comes at once instead of never, so
    // nothing waits for good; the one-shot window test fails, the rest pass.
    check(
        "xen.singleshot-timer:1",
        boot(Kernel::Example, &["pvops.fail=xen.singleshot-timer:1"]).map_err(|e| format!("{e:#}")),
        &|b| {
            let mut w = unexpected(b, |p| {
                matches!(p, Problem::TestFailed { name, .. } if name == "timer_oneshot_window")
                    || *p == Problem::NonZeroExitCode(1)
            });
            if !b.problems.iter().any(
                |p| matches!(p, Problem::TestFailed { name, .. } if name == "timer_oneshot_window"),
            ) {
                w.push("timer_oneshot_window did not fail".into());
            }
            w.extend(missing_notes(
                b,
                NoteKind::Warning,
                &["xen: VCPUOP_set_singleshot_timer on cpu 0: EINVAL (22); the timer fires at once"],
            ));
            w
        },
    );

    // No memory map: the kernel finds no RAM and says so (exit code 4).
    check(
        "xen.memory-map",
        boot(Kernel::Example, &["pvops.fail=xen.memory-map"]).map_err(|e| format!("{e:#}")),
        &|b| {
            let mut w = unexpected(b, |p| {
                matches!(
                    p,
                    Problem::TooFewTests { .. }
                        | Problem::MissingSummary
                        | Problem::NonZeroExitCode(4)
                )
            });
            w.extend(missing_notes(
                b,
                NoteKind::Warning,
                &["xen: XENMEM_memory_map failed: EINVAL (22); no memory map"],
            ));
            w.extend(missing_notes(
                b,
                NoteKind::Error,
                &["out of memory building page tables"],
            ));
            if b.outcome.console.exit_codes != [4] {
                w.push(format!(
                    "exit codes {:?}, expected [4]",
                    b.outcome.console.exit_codes
                ));
            }
            w
        },
    );

    // Mandatory steps of the boot vCPU: the backend prints the step, leaves
    // the failsafe console and shutdown, and init fails; a kernel that
    // prints init's error and shuts down (the minimal kernel, exit code 2)
    // ends with Xen rebooting the machine, i.e. QEMU's clean exit.
    for (fail, extra, error) in [
        (
            "xen.shared-info",
            "",
            "xen: XENMEM_add_to_physmap(shared_info) failed: EINVAL (22)",
        ),
        (
            "xen.bind-virq",
            "",
            "xen: boot cpu 0: EVTCHNOP_bind_virq(VIRQ_TIMER): EINVAL (22)",
        ),
        (
            "xen.bind-ipi",
            "",
            "xen: boot cpu 0: EVTCHNOP_bind_ipi: EINVAL (22)",
        ),
        (
            "xen.callback,xen.upcall-vector",
            "",
            "xen: HVMOP_set_evtchn_upcall_vector failed: EINVAL (22)",
        ),
        (
            "xen.upcall-vector",
            "pvops.xen.upcall=percpu",
            "xen: boot cpu 0: HVMOP_set_evtchn_upcall_vector: EINVAL (22)",
        ),
    ] {
        let arg = format!("pvops.fail={fail}");
        let mut words = vec![arg.as_str()];
        if !extra.is_empty() {
            words.push(extra);
        }
        check(
            &format!("{} (minimal kernel)", words.join(" ")),
            boot(Kernel::Minimal, &words).map_err(|e| format!("{e:#}")),
            &|b| {
                let mut w = unexpected(b, |p| {
                    matches!(
                        p,
                        Problem::MissingPlatform
                            | Problem::TooFewTests { .. }
                            | Problem::MissingSummary
                            | Problem::NonZeroExitCode(2)
                    )
                });
                w.extend(missing_notes(
                    b,
                    NoteKind::Error,
                    &[
                        error,
                        "xen: backend not usable; only the console and shutdown ops are installed",
                        "every pvops backend failed; last: backend xen",
                    ],
                ));
                if b.outcome.console.exit_codes != [2] {
                    w.push(format!(
                        "exit codes {:?}, expected [2]",
                        b.outcome.console.exit_codes
                    ));
                }
                if b.outcome.termination != Termination::Exited(0) {
                    w.push(format!("QEMU ended with {}", b.outcome.termination));
                }
                w
            },
        );
    }

    // The example kernel halts when init fails; with the error printed
    // and Xen halting the machine, the run still ends at once. (Should it
    // print the error and shut down like the minimal kernel, it ends with
    // its exit code instead: also fine.)
    let name = "pvops.fail=xen.shared-info (example kernel)";
    let outcome = match boot(Kernel::Example, &["pvops.fail=xen.shared-info"]) {
        Ok(b) => judged(name, Ok(b), &|b| {
            let mut w = missing_notes(
                b,
                NoteKind::Error,
                &["xen: XENMEM_add_to_physmap(shared_info) failed: EINVAL (22)"],
            );
            if b.outcome.console.exit_codes.len() != 1 || !b.outcome.console.platforms.is_empty() {
                w.push("expected one exit line and no platform line".into());
            }
            w
        }),
        Err(e) => match e.downcast_ref::<Killed>() {
            Some(k) if matches!(k.reason, KillReason::GuestStopped(_)) => {
                let printed = k.last_lines.iter().any(|l| {
                    l.contains("pvops: error: xen: XENMEM_add_to_physmap(shared_info) failed")
                });
                if printed {
                    eprintln!("{name}: error printed, machine halted at once");
                    Ok(())
                } else {
                    Err(format!("{name}: no error line before the halt:\n{k}"))
                }
            }
            _ => Err(format!("{name}: {e:#}")),
        },
    };
    failures.extend(outcome.err());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Judges one boot: `Ok` when it ran and `judge` found nothing wrong.
fn judged(
    name: &str,
    b: Result<Boot, String>,
    judge: &dyn Fn(&Boot) -> Vec<String>,
) -> Result<(), String> {
    let b = b.map_err(|e| format!("{name}: {e}"))?;
    let wrong = judge(&b);
    if wrong.is_empty() {
        eprintln!(
            "{name}: documented outcome, exit code {:?}, {:.1} s",
            b.outcome.console.exit_codes,
            b.run.elapsed.as_secs_f64()
        );
        Ok(())
    } else {
        Err(format!("{name}: {}\n{}", wrong.join("; "), b.report()))
    }
}

/// A boot under a platform that hides or empties its hypervisor leaves.
struct Lie {
    /// For reports.
    name: &'static str,
    env: Env,
    /// QEMU `-cpu` instead of the environment's.
    cpu: Option<&'static str>,
    /// Added to Xen's command line.
    xen: Option<&'static str>,
    platform: &'static str,
    backend: &'static str,
    /// The whole features list (`None`: not checked beyond the
    /// environment's expectation).
    features: Option<&'static [&'static str]>,
    hypervisor: &'static str,
    warnings: &'static [&'static str],
}

/// Every KVM paravirtual flag QEMU 7.2 has, off.
const KVM_ALL_PV_OFF: &str = "qemu64,kvm=on,-kvmclock,-kvm-nopiodelay,-kvm-mmu,-kvm-asyncpf,\
     -kvm-steal-time,-kvm-pv-eoi,-kvm-pv-unhalt,-kvm-pv-tlb-flush,-kvm-pv-ipi,-kvm-poll-control,\
     -kvm-pv-sched-yield,-kvm-asyncpf-int,-kvm-msi-ext-dest-id,-kvmclock-stable-bit";

#[test]
fn lying_platforms_pick_the_right_fallback() {
    let cases = [
        // The default TCG boot says hypervisor=tcg.
        Lie {
            name: "tcg, no hypervisor bit",
            env: Env::Tcg,
            cpu: Some("max,hypervisor=off"),
            xen: None,
            platform: "native",
            backend: "native",
            features: Some(&[]),
            hypervisor: "none",
            warnings: &[],
        },
        // KVM's leaves are still there, but a kernel that honours the bit
        // (as Linux does for KVM) does not look: native.
        Lie {
            name: "kvm, KVM leaves without the hypervisor bit",
            env: Env::Kvm,
            cpu: Some("qemu64,kvm=on,-hypervisor"),
            xen: None,
            platform: "native",
            backend: "native",
            features: Some(&[]),
            hypervisor: "none",
            warnings: &[],
        },
        // The KVM signature with an empty features leaf: the kvm backend,
        // every op native.
        Lie {
            name: "kvm, signature without features",
            env: Env::Kvm,
            cpu: Some(KVM_ALL_PV_OFF),
            xen: None,
            platform: "kvm",
            backend: "kvm",
            features: Some(&[]),
            hypervisor: "kvm",
            warnings: &[],
        },
        // Xen hides the bit from its PVH dom0: Xen is still found by its
        // signature (the native backend could not run there at all).
        Lie {
            name: "xen-pvh, dom0-cpuid=no-hypervisor",
            env: Env::XenPvh,
            cpu: None,
            xen: Some("dom0-cpuid=no-hypervisor"),
            platform: "xen-pvh",
            backend: "xen",
            features: None,
            hypervisor: "none",
            warnings: &[
                "xen: CPUID.1:ECX.hypervisor is clear; Xen found by its signature at 0x40000000",
            ],
        },
    ];
    let mut failures = Vec::new();
    let mut ran = 0;
    for case in &cases {
        if let Some(why) = xtask::provision::unavailable(case.env) {
            skip(&format!("{}: {why}", case.name));
            continue;
        }
        let mut p = plan(case.env, Kernel::Example, &[]);
        if let Some(cpu) = case.cpu {
            set_cpu(&mut p, cpu);
        }
        if let Some(xen) = case.xen {
            add_xen_cmdline(&mut p, xen);
        }
        let e = &mut p.expectation;
        e.platform = case.platform.into();
        e.backend = case.backend.into();
        if case.features.is_some() {
            e.features_present.clear();
        }
        let b = match run_plan(p, false) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{}: {e:#}", case.name));
                continue;
            }
        };
        ran += 1;
        let mut wrong: Vec<String> = b.problems.iter().map(|p| p.to_string()).collect();
        if let (Some(want), Some(p)) = (case.features, b.outcome.console.platforms.first()) {
            if p.features != want {
                wrong.push(format!("features {:?}, expected {want:?}", p.features));
            }
        }
        if platform_value(&b, "hypervisor") != Some(case.hypervisor) {
            wrong.push(format!(
                "hypervisor={:?}, expected {}",
                platform_value(&b, "hypervisor"),
                case.hypervisor
            ));
        }
        wrong.extend(missing_notes(&b, NoteKind::Warning, case.warnings));
        if wrong.is_empty() {
            eprintln!("{}: {}", case.name, b.verdict());
        } else {
            failures.push(format!(
                "{}: {}\n{}",
                case.name,
                wrong.join("; "),
                b.report()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    if ran == 0 {
        skip("no environment for the lying-platform boots");
    }
}

/// Claims of VMware that do not hold, and KVM beside VMware's emulation:
/// the backend that can really run wins, and the backdoor is only asked
/// where SMBIOS named VMware.
#[test]
fn vmware_claims_that_do_not_hold() {
    struct Case {
        name: &'static str,
        env: Env,
        /// QEMU `-machine` and `-cpu` instead of the environment's.
        machine: Option<&'static str>,
        cpu: Option<&'static str>,
        /// Added to QEMU's arguments.
        qemu: &'static [&'static str],
        /// Added to the kernel's command line.
        words: &'static [&'static str],
        platform: &'static str,
        backend: &'static str,
        warnings: &'static [&'static str],
    }
    let cases = [
        // SMBIOS says VMware, but nothing answers the port: no bid.
        Case {
            name: "SMBIOS VMware, vmport off",
            env: Env::VmwareQemu,
            machine: Some("pc,vmport=off"),
            cpu: None,
            qemu: &[],
            words: &[],
            platform: "native",
            backend: "native",
            warnings: &[],
        },
        // The port answered detection, then GETVERSION is refused at init:
        // the backend fails by name and native takes over.
        Case {
            name: "GETVERSION refused at init",
            env: Env::VmwareQemu,
            machine: None,
            cpu: None,
            qemu: &[],
            words: &["pvops.fail=vmware.backdoor"],
            platform: "native",
            backend: "native",
            warnings: &[
                "backend vmware: SMBIOS names VMware but the backdoor port does not answer; \
                 falling back",
            ],
        },
        // vmport, SMBIOS and the timing leaf beside KVM's own leaves: KVM
        // outbids VMware's emulated interface.
        Case {
            name: "KVM beside VMware's emulation",
            env: Env::Kvm,
            machine: Some("pc,vmport=on"),
            cpu: Some(xtask::env::VMWARE_LEAF_CPU),
            qemu: &["-smbios", xtask::env::VMWARE_SMBIOS],
            words: &[],
            platform: "kvm",
            backend: "kvm",
            warnings: &[],
        },
    ];
    let mut failures = Vec::new();
    for case in &cases {
        if let Some(why) = xtask::provision::unavailable(case.env) {
            skip(&format!("{}: {why}", case.name));
            continue;
        }
        let mut p = plan(case.env, Kernel::Example, case.words);
        if let Some(machine) = case.machine {
            let i = p
                .args
                .iter()
                .position(|a| a == "-machine")
                .expect("-machine");
            p.args[i + 1] = machine.into();
        }
        if let Some(cpu) = case.cpu {
            set_cpu(&mut p, cpu);
        }
        p.args.extend(case.qemu.iter().map(Into::into));
        let e = &mut p.expectation;
        e.platform = case.platform.into();
        e.backend = case.backend.into();
        // Which backend runs is the point here, not its features.
        e.features_present.clear();
        e.features_absent.clear();
        let b = match run_plan(p, false) {
            Ok(b) => b,
            Err(e) => {
                failures.push(format!("{}: {e:#}", case.name));
                continue;
            }
        };
        let mut wrong: Vec<String> = b.problems.iter().map(|p| p.to_string()).collect();
        wrong.extend(missing_notes(&b, NoteKind::Warning, case.warnings));
        if case.warnings.is_empty() {
            // No bid, so no failed bring-up to report.
            wrong.extend(
                notes(&b, NoteKind::Warning)
                    .into_iter()
                    .filter(|w| w.contains("vmware"))
                    .map(|w| format!("unexpected warning {w:?}")),
            );
        }
        if wrong.is_empty() {
            eprintln!("{}: {}", case.name, b.verdict());
        } else {
            failures.push(format!(
                "{}: {}\n{}",
                case.name,
                wrong.join("; "),
                b.report()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Under Xen classic PV the same setup hypercalls fall back the same way
/// (the ABI is shared with PVH).
#[test]
fn xen_pv_refused_hypercalls_with_a_fallback() {
    run_fallbacks(
        Env::XenPv,
        &[
            Fallback {
                fail: "xen.vcpu-info",
                extra: &[],
                absent: &[],
                present: &[],
                warnings: &[
                    "xen: VCPUOP_register_vcpu_info on cpu 0: EINVAL (22); using its vcpu_info \
                     in shared info",
                ],
            },
            Fallback {
                fail: "xen.runstate",
                extra: &[],
                absent: &["runstate"],
                present: &[],
                warnings: &[
                    "xen: VCPUOP_register_runstate_memory_area on cpu 0: EINVAL (22); steal \
                     clock reads 0 there",
                ],
            },
            // The second vCPU stays down; the kernel runs on one.
            Fallback {
                fail: "xen.vcpu-up",
                extra: &[],
                absent: &[],
                present: &[],
                warnings: &["cpu 1 start refused (error -22)"],
            },
        ],
    );
}

/// Under Xen classic PV, what has no fallback ends cleanly: a refused
/// boot-vCPU port (the failsafe console says why, exit code 5) and a
/// start_info that lies (`pvops.fail=pv.start-info`: nr_pages a million
/// frames past the pfn list Xen mapped), refused with the parser's line
/// and exit code 2 instead of a read past Xen's boot layout.
#[test]
fn xen_pv_faults_without_a_fallback_end_cleanly() {
    let env = Env::XenPv;
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let mut failures: Vec<String> = Vec::new();
    let cases: [(&str, &[&str], u32); 2] = [
        (
            "xen.bind-virq",
            &[
                "xen: boot cpu 0: EVTCHNOP_bind_virq(VIRQ_TIMER): EINVAL (22)",
                "xen: backend not usable; only the console and shutdown ops are installed",
            ],
            5,
        ),
        (
            "pv.start-info",
            &[
                "start_info: pfn->mfn list (mfn_list)",
                "is not inside the boot layout",
            ],
            2,
        ),
    ];
    for (fail, errors, code) in cases {
        let arg = format!("pvops.fail={fail}");
        let b = run_plan(plan(env, Kernel::Example, &[&arg]), false).map_err(|e| format!("{e:#}"));
        let r = judged(&arg, b, &|b| {
            let mut w = unexpected(b, |p| {
                matches!(
                    p,
                    Problem::MissingPlatform
                        | Problem::WrongPlatform { .. }
                        | Problem::MissingFeature(_)
                        | Problem::TooFewTests { .. }
                        | Problem::MissingSummary
                        | Problem::NonZeroExitCode(_)
                )
            });
            w.extend(missing_notes(b, NoteKind::Error, errors));
            if b.outcome.console.exit_codes != [code] {
                w.push(format!(
                    "exit codes {:?}, expected [{code}]",
                    b.outcome.console.exit_codes
                ));
            }
            if b.outcome.termination != Termination::Exited(0) {
                w.push(format!("QEMU ended with {}", b.outcome.termination));
            }
            w
        });
        failures.extend(r.err());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Under Xen classic PV, I/O instructions work only where Xen agreed to
/// emulate them (`PHYSDEVOP_set_iopl`). Refused: the port ops refuse too
/// (reads all ones, writes dropped, one warning) instead of faulting, so
/// the port self-test finds no device behind the CMOS ports and reports
/// `skipped`, which the harness refuses in xen-pv (a dom0 has a CMOS).
#[test]
fn xen_pv_refused_iopl_refuses_ports_cleanly() {
    let env = Env::XenPv;
    if let Some(why) = xtask::provision::unavailable(env) {
        skip(&why);
        return;
    }
    let mut p = plan(env, Kernel::Example, &["pvops.fail=xen.iopl"]);
    p.expectation.features_absent.push("iopl".into());
    let b = run_plan(p, false).map_err(|e| format!("{e:#}"));
    let r = judged("pvops.fail=xen.iopl", b, &|b| {
        let mut w = unexpected(
            b,
            |p| matches!(p, Problem::UnexpectedSkip { name, .. } if name == "io_port_roundtrip"),
        );
        if !b.problems.iter().any(
            |p| matches!(p, Problem::UnexpectedSkip { name, .. } if name == "io_port_roundtrip"),
        ) {
            w.push("io_port_roundtrip was not refused as an unexpected skip".into());
        }
        w.extend(missing_notes(
            b,
            NoteKind::Warning,
            &[
                "xen-pv: PHYSDEVOP_set_iopl refused (EINVAL (22)): I/O port accesses are refused",
                "Xen did not allow I/O (set_iopl): refused (reads give all ones)",
            ],
        ));
        w
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}
