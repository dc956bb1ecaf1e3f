//! The volume-content commands where the test needs root, namespaces or kill -9: sysctl on
//! per-network-namespace keys inside a namespace the test makes (the host's values are
//! never changed), a read-only /proc/sys, an unprivileged user; and kill -9 at seeded
//! random moments of `copy` and `write`, after which every file is old or new, never half.

use std::fs;

use crate::support::{Cmd, Sandbox, need_root, nonroot_copy};

/// A key of every network namespace: a fresh namespace starts from the kernel's default,
/// whatever the host has.
const SOMAXCONN: &str = "/proc/sys/net/core/somaxconn";

fn host_value(path: &str) -> String {
    fs::read_to_string(path).unwrap()
}

/// `cmd`, then (on success) `cat FILES` by the hand-off, all inside one new network
/// namespace: the values can only be read back from inside it.
fn in_own_network(cmd: Cmd) -> Cmd {
    cmd.in_network_namespace("")
}

/// Inside a private mount namespace whose /proc/sys is a read-only bind mount.
fn with_read_only_proc_sys(cmd: Cmd) -> Cmd {
    cmd.wrapped_in(&[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        "mount --bind -o ro /proc/sys /proc/sys && exec \"$@\"",
        "sh",
    ])
}

#[test]
fn sysctl_sets_namespaced_keys_and_reads_them_back() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let host_before = (
        host_value(SOMAXCONN),
        host_value("/proc/sys/net/ipv4/ping_group_range"),
    );
    let output = in_own_network(sandbox.initbox().args([
        "sysctl",
        "net.core.somaxconn=2048",
        "net/ipv4/ping_group_range=0 65532",
        "--",
        "cat",
        SOMAXCONN,
        "/proc/sys/net/ipv4/ping_group_range",
    ]))
    .run();
    output
        .assert_code(0)
        .assert_stderr_contains("net.core.somaxconn = 2048 (was ")
        .assert_stderr_contains("net/ipv4/ping_group_range = 0 65532");
    let values: Vec<&str> = output.stdout.lines().map(str::trim).collect();
    assert_eq!(values.len(), 2, "{}", output.stdout);
    assert_eq!(values[0], "2048");
    assert_eq!(
        values[1].split_whitespace().collect::<Vec<_>>(),
        ["0", "65532"]
    );
    let host_after = (
        host_value(SOMAXCONN),
        host_value("/proc/sys/net/ipv4/ping_group_range"),
    );
    assert_eq!(host_before, host_after, "the host's values changed");
}

#[test]
fn sysctl_if_lower_only_raises_and_a_set_value_needs_no_write() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    // Lower than the namespace's default (4096 on current kernels): left alone.
    let output = in_own_network(sandbox.initbox().args([
        "sysctl",
        "--if-lower",
        "net.core.somaxconn=16",
        "--",
        "cat",
        SOMAXCONN,
    ]))
    .run();
    output
        .assert_code(0)
        .assert_stderr_contains("already at least 16 (--if-lower)");
    let default: u64 = output.stdout.trim().parse().unwrap();
    assert!(default > 16, "{default}");
    // Higher: raised.
    let higher = (default + 1).to_string();
    let output = in_own_network(sandbox.initbox().args([
        "sysctl",
        "--if-lower",
        &format!("net.core.somaxconn={higher}"),
        "--",
        "cat",
        SOMAXCONN,
    ]))
    .run();
    output.assert_code(0);
    assert_eq!(output.stdout.trim(), higher);
    // A value already there is not written: it succeeds even on a read-only /proc/sys,
    // as on a node that was set up before the pod came.
    with_read_only_proc_sys(in_own_network(
        sandbox
            .initbox()
            .args(["sysctl", &format!("net.core.somaxconn={default}")]),
    ))
    .run()
    .assert_code(0)
    .assert_stderr_contains("already set");
    // Several fields with --if-lower: refused before anything is read.
    sandbox
        .initbox()
        .args([
            "sysctl",
            "--if-lower",
            "net.ipv4.ip_local_port_range=1024 65000",
        ])
        .run()
        .assert_code(2)
        .assert_stderr_contains("--if-lower compares one number");
}

#[test]
fn sysctl_a_value_the_kernel_refuses_or_changes_fails_naming_it() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    in_own_network(sandbox.initbox().args(["sysctl", "net.core.somaxconn=-1"]))
        .run()
        .assert_code(1)
        .assert_stderr_contains("cannot set net.core.somaxconn=-1: the kernel refused the value");
    // The kernel takes a reversed range without an error and keeps the old one.
    in_own_network(
        sandbox
            .initbox()
            .args(["sysctl", "net.ipv4.ping_group_range=5 1"]),
    )
    .run()
    .assert_code(1)
    .assert_stderr_contains("the kernel kept 1 0 instead of 5 1");
}

#[test]
fn sysctl_on_a_read_only_proc_sys_names_privileged_and_the_pod_sysctls() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let output = with_read_only_proc_sys(in_own_network(sandbox.initbox().args([
        "sysctl",
        "net.core.somaxconn=1000",
        "--",
        "cat",
        SOMAXCONN,
    ])))
    .run();
    output
        .assert_code(1)
        .assert_stderr_contains(
            "cannot set net.core.somaxconn=1000: /proc/sys is mounted read-only",
        )
        .assert_stderr_contains("securityContext.privileged: true")
        .assert_stderr_contains("net.core.somaxconn in the pod's securityContext.sysctls");
    assert!(
        output.stdout.is_empty(),
        "the hand-off ran: {}",
        output.stdout
    );
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
}

#[test]
fn sysctl_as_an_unprivileged_user_names_the_remedy() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let (_dir, binary) = nonroot_copy();
    let as_nonroot = [
        "setpriv",
        "--reuid",
        "65532",
        "--regid",
        "65532",
        "--clear-groups",
    ];
    in_own_network(
        sandbox
            .initbox_at(&binary)
            .args(["sysctl", "net.core.somaxconn=1000"])
            .wrapped_in(&as_nonroot),
    )
    .run()
    .assert_code(1)
    .assert_stderr_contains("cannot set net.core.somaxconn=1000: permission denied")
    .assert_stderr_contains("securityContext.sysctls");
    // A key of the whole node: only the privileged remedy applies. The value asked differs
    // from the host's, so a write is attempted (and refused: the host is never changed).
    let current: u64 = host_value("/proc/sys/vm/max_map_count")
        .trim()
        .parse()
        .unwrap();
    let output = sandbox
        .initbox_at(&binary)
        .args(["sysctl", &format!("vm.max_map_count={}", current + 1)])
        .wrapped_in(&as_nonroot)
        .run();
    output.assert_code(1).assert_stderr_contains(
        "permission denied; run this container with securityContext.privileged: true",
    );
    assert!(
        !output.stderr.contains("securityContext.sysctls"),
        "{}",
        output.stderr
    );
    assert_eq!(
        host_value("/proc/sys/vm/max_map_count").trim(),
        current.to_string()
    );
}

// ---------------------------------------------------------------------------------------
// kill -9 at seeded random moments
// ---------------------------------------------------------------------------------------

use std::path::Path;

use crate::faults::{KillMoments, TRIALS, copy_tree, is_temp_file, kill_at, noise, unkilled_run};
use crate::support::tree;

/// A tree of `files` files of about 64 KiB each, in a few directories, content by `seed`.
fn release_tree(dir: &Path, files: usize, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for i in 0..files {
        let sub = dir.join(format!("d{}", i % 8));
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join(format!("f{i}.dat")), noise(&mut rng, 2000)).unwrap();
    }
}

#[test]
fn sigkill_during_copy_leaves_each_file_old_or_new() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let old = sandbox.path("old");
    let new = sandbox.path("new");
    release_tree(&old, 400, 1);
    release_tree(&new, 400, 2);
    let new_tree = tree(&new);
    let dest = sandbox.path("dest");
    let copy = || sandbox.initbox().arg("copy").arg(new.join(".")).arg(&dest);
    let took = unkilled_run(|| {
        let _ = fs::remove_dir_all(&dest);
        copy_tree(&old, &dest);
        copy().run().assert_code(0).elapsed
    });
    let mut moments = KillMoments::new(took, TRIALS);
    for trial in 0..TRIALS {
        fs::remove_dir_all(&dest).unwrap();
        copy_tree(&old, &dest);
        let at = moments.moment(trial);
        let context = moments.context(trial, at);
        kill_at(copy().spawn(), at);
        let (mut olds, mut news, mut temps) = (0, 0, 0);
        for name in tree(&dest) {
            if is_temp_file(name.rsplit('/').next().unwrap()) {
                temps += 1;
                continue;
            }
            assert!(
                new_tree.contains(&name),
                "{context}: {name} was never in a release"
            );
            if name.ends_with('/') {
                continue;
            }
            let bytes = fs::read(dest.join(&name)).unwrap();
            if bytes == fs::read(new.join(&name)).unwrap() {
                news += 1;
            } else if bytes == fs::read(old.join(&name)).unwrap() {
                olds += 1;
            } else {
                panic!("{context}: {name} is neither the old file nor the new one, whole");
            }
        }
        let files = new_tree.iter().filter(|n| !n.ends_with('/')).count();
        assert_eq!(olds + news, files, "{context}: a file went missing");
        if temps > 0 || (news > 0 && news < files) {
            moments.mid_work += 1;
        }
        // The restarted pod's copy completes it and leaves no temp file behind.
        copy().run().assert_code(0);
        assert_eq!(tree(&dest), new_tree, "{context}: after the re-run");
    }
    moments.assert_enough_mid_work("a copy");
}

#[test]
fn sigkill_during_write_leaves_the_old_file_or_the_new_one() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let mut rng = fastrand::Rng::with_seed(3);
    // A short old file and a long new one: the run is mostly the writing of the new
    // content, so most kills land while its temp file exists.
    let old = noise(&mut rng, 1_000);
    let new = noise(&mut rng, 3_000_000);
    let source = sandbox.write("new.conf", &new);
    let dest = sandbox.path("volume/app.conf");
    fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let write = || {
        sandbox
            .initbox()
            .arg("write")
            .arg(&dest)
            .arg("--from-file")
            .arg(&source)
            .arg("--raw")
    };
    let took = unkilled_run(|| {
        fs::write(&dest, &old).unwrap();
        write().run().assert_code(0).elapsed
    });
    let mut moments = KillMoments::new(took, TRIALS);
    for trial in 0..TRIALS {
        fs::write(&dest, &old).unwrap();
        let at = moments.moment(trial);
        let context = moments.context(trial, at);
        kill_at(write().spawn(), at);
        let now = fs::read_to_string(&dest).unwrap();
        assert!(
            now == old || now == new,
            "{context}: half a file ({} bytes)",
            now.len()
        );
        let temps = crate::support::entries(dest.parent().unwrap())
            .iter()
            .filter(|n| is_temp_file(n))
            .count();
        if temps > 0 {
            moments.mid_work += 1;
        }
        write().run().assert_code(0);
        assert_eq!(fs::read_to_string(&dest).unwrap(), new, "{context}");
        assert_eq!(
            crate::support::entries(dest.parent().unwrap()),
            ["app.conf"],
            "{context}"
        );
    }
    moments.assert_enough_mid_work("a write");
}

/// Every name under `dir` that a temp file or staging directory of initbox has.
fn scratch_left(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        let Ok(entries) = fs::read_dir(&at) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.contains(".initbox-") || name.contains("initbox-extract") {
                found.push(entry.path().display().to_string());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(entry.path());
            }
        }
    }
    found
}

/// `count` files of `size` random bytes in `dir`: a copy of them takes long enough to be
/// interrupted midway on any machine.
fn random_files(dir: &std::path::Path, count: usize, size: usize) {
    fs::create_dir_all(dir).unwrap();
    let mut bytes = vec![0u8; size];
    for index in 0..count {
        for (at, byte) in bytes.iter_mut().enumerate() {
            *byte = (at as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(index as u32) as u8;
        }
        fs::write(dir.join(format!("part-{index:03}.bin")), &bytes).unwrap();
    }
}

#[test]
fn sigterm_during_a_copy_leaves_no_temp_file_behind() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    random_files(&src, 60, 8 << 20);
    let dest = sandbox.path("dest");
    let copying = sandbox
        .initbox()
        .args(["copy"])
        .arg(&src)
        .arg(&dest)
        .spawn();
    let started = crate::support::eventually(std::time::Duration::from_secs(30), || {
        fs::read_dir(&dest).is_ok_and(|mut entries| entries.next().is_some())
    });
    assert!(started, "the copy never started");
    copying.signal("TERM");
    let output = copying.wait();
    assert_eq!(output.code, 143, "{}", output.stderr);
    let copied = fs::read_dir(&dest).unwrap().count();
    assert!(copied < 60, "the copy was not interrupted ({copied} files)");
    assert_eq!(scratch_left(&sandbox.path("")), Vec::<String>::new());
}

#[test]
fn a_copy_step_that_times_out_stops_copying_and_leaves_no_temp_file() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    random_files(&src, 240, 4 << 20);
    let dest = sandbox.path("dest");
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "restartPolicy: Never\nsteps:\n  - name: seed\n    timeout: 100ms\n    copy: {{paths: [\"{}\", \"{}\"]}}\n",
            src.display(),
            dest.display()
        ),
    );
    let output = sandbox.initbox().args(["run", "-f"]).arg(&pipeline).run();
    assert_eq!(output.code, 124, "{}", output.stderr);
    let count = || fs::read_dir(&dest).map_or(0, |entries| entries.count());
    let at_exit = count();
    assert!(
        at_exit < 240,
        "the copy was not cut short ({at_exit} files)"
    );
    assert_eq!(scratch_left(&sandbox.path("")), Vec::<String>::new());
}

#[test]
fn sigterm_while_extract_stages_leaves_no_staging_behind() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let src = sandbox.path("tree");
    random_files(&src, 60, 8 << 20);
    let archive = sandbox.path("big.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(sandbox.path(""))
        .arg("tree")
        .status()
        .unwrap();
    assert!(status.success());
    let dest = sandbox.path("out");
    let extracting = sandbox
        .initbox()
        .args(["extract"])
        .arg(&archive)
        .arg(&dest)
        .args(["--max-size", "2GiB"])
        .spawn();
    let staging = sandbox.path(".out.initbox-extract");
    let staged = crate::support::eventually(std::time::Duration::from_secs(30), || {
        fs::read_dir(&staging).is_ok_and(|mut entries| entries.next().is_some())
    });
    assert!(
        staged,
        "extract never staged: {}",
        extracting.stderr_so_far()
    );
    extracting.signal("TERM");
    let output = extracting.wait();
    assert_eq!(output.code, 143, "{}", output.stderr);
    assert!(!dest.exists(), "a half-extracted tree was installed");
    assert_eq!(scratch_left(&sandbox.path("")), Vec::<String>::new());
}
