//! Fault injection: the README's promises about atomicity, signals and timeouts, held when
//! things go wrong, against real processes and servers.
//!
//! - `kill -9` at random moments of a clone, a download, a directory render and a pipeline:
//!   what a reader or a restarted pod finds is the old state or the complete new one (each
//!   file whole), and the next run always finishes cleanly, with no temp files left.
//! - SIGTERM to initbox as PID 1 of a pid namespace during every command that waits: exit
//!   143 within a second.
//! - Servers that misbehave (a nameserver that goes silent, HTTP that never answers, SYNs
//!   dropped by nft, a git server that dies mid-pack): a clear message, the documented exit
//!   code, and no hang past `--timeout`.
//!
//! Everything stays on loopback or in namespaces the tests create. Kill moments are random
//! but seeded: a failing trial names its seed, and `INITBOX_FAULT_SEED=N` replays it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::dns_server::DnsServer;
use crate::support::git_server::{
    GitDaemon, SmartHttp, StallingProxy, git, incompressible_repo, tree_listing,
};
use crate::support::http_server::{HttpServer, reply, reply_bytes, silent_server};
use crate::support::{
    COMMANDS, Cmd, Mount, Output, Running, Sandbox, entries, free_port, is_root, kill, need_root,
    path_str, pid_one_of, skip, tree,
};

/// The seed of the kill moments; set it to replay a failure.
const SEED_VAR: &str = "INITBOX_FAULT_SEED";
/// Kills per scenario.
pub(crate) const TRIALS: u32 = 20;
/// How far past `--timeout` an exit may come before it counts as a hang: generous, for a
/// loaded CI machine.
const HANG_MARGIN: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// kill -9 at random moments
// ---------------------------------------------------------------------------------------

/// Kill moments spread over an unkilled run: trial `i` of `n` falls at a random point of the
/// `i`-th `n`-th of it, so every part of the run is hit and none twice as often.
pub(crate) struct KillMoments {
    rng: fastrand::Rng,
    seed: u64,
    span: Duration,
    trials: u32,
    /// Trials whose kill landed while the work was under way (a temp file, a staging
    /// directory or a half-done state was left): proof the workload is big enough.
    pub(crate) mid_work: u32,
}

impl KillMoments {
    pub(crate) fn new(span: Duration, trials: u32) -> Self {
        let test = crate::support::test_name();
        let seed = std::env::var(SEED_VAR)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| fastrand::u64(..));
        eprintln!(
            "{test}: seed {seed} ({SEED_VAR}={seed} replays it); an unkilled run takes {span:?}"
        );
        KillMoments {
            rng: fastrand::Rng::with_seed(seed),
            seed,
            span,
            trials,
            mid_work: 0,
        }
    }

    pub(crate) fn moment(&mut self, trial: u32) -> Duration {
        let fraction = (f64::from(trial) + self.rng.f64()) / f64::from(self.trials);
        self.span.mul_f64(fraction)
    }

    /// What every assertion message of a trial starts with.
    pub(crate) fn context(&self, trial: u32, at: Duration) -> String {
        format!(
            "seed {} ({SEED_VAR}), trial {trial}, killed {at:?} into a {:?} run",
            self.seed, self.span
        )
    }

    /// At the end: enough kills landed mid-work to mean something.
    pub(crate) fn assert_enough_mid_work(&self, what: &str) {
        eprintln!(
            "{} of {} kills landed while {what} was under way",
            self.mid_work, self.trials
        );
        assert!(
            self.mid_work >= self.trials / 4,
            "seed {}: only {} of {} kills landed while {what} was under way; the workload is \
             too small for this machine",
            self.seed,
            self.mid_work,
            self.trials
        );
    }
}

/// How long the work takes unkilled: the quickest of three runs, so that runs slowed down
/// by a busy machine do not push the kill moments past the end of the work (two were not
/// enough: once, after the servers of an earlier test stopped, both took three times as
/// long as the trials, and too few kills landed mid-work).
pub(crate) fn unkilled_run(mut run: impl FnMut() -> Duration) -> Duration {
    (0..3).map(|_| run()).min().expect("three runs")
}

/// Sends SIGKILL `at` after the process started (at once if that has passed) and reaps it.
pub(crate) fn kill_at(running: Running, at: Duration) -> Output {
    let when = running.started + at;
    let now = Instant::now();
    if when > now {
        thread::sleep(when - now);
    }
    // A process that already exited is a zombie until reaped: kill(2) still succeeds.
    kill(running.pid(), libc::SIGKILL);
    running.wait()
}

/// `.NAME.initbox-XXXXXXXX.tmp`, the temp file of an atomic write of NAME.
pub(crate) fn is_temp_file(name: &str) -> bool {
    name.starts_with('.')
        && name
            .rsplit_once(".initbox-")
            .and_then(|(_, rest)| rest.strip_suffix(".tmp"))
            .is_some_and(|random| random.len() == 8)
}

fn empty_dir(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).unwrap();
        } else {
            std::fs::remove_file(&path).unwrap();
        }
    }
}

/// `cp -a FROM/. TO/`: a pristine earlier state, put back in a moment.
pub(crate) fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()
        .expect("running cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Incompressible text: what a repository or a download holds, not runs of one byte.
pub(crate) fn noise(rng: &mut fastrand::Rng, lines: usize) -> String {
    (0..lines)
        .map(|_| format!("{:016x} {:016x}\n", rng.u64(..), rng.u64(..)))
        .collect()
}

/// A repository with a few hundred files at two tags: `old` (the first commit) and `new`
/// (every file changed), on branch main.
struct BigRepo {
    old: String,
    new: String,
}

fn big_repo(base: &Path, name: &str) -> BigRepo {
    let path = base.join(name);
    std::fs::create_dir_all(&path).unwrap();
    git(&path, &["init", "-q", "-b", "main"]);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut commits = Vec::new();
    for (round, tag) in ["old", "new"].into_iter().enumerate() {
        for dir in 0..6 {
            let dir_path = path.join(format!("dir{dir}"));
            std::fs::create_dir_all(&dir_path).unwrap();
            for file in 0..40 {
                let text = format!("{tag} {dir} {file}\n{}", noise(&mut rng, 100));
                std::fs::write(dir_path.join(format!("file{file}.txt")), text).unwrap();
            }
        }
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", &format!("round {round}")]);
        git(&path, &["tag", tag]);
        commits.push(git(&path, &["rev-parse", "HEAD"]));
    }
    BigRepo {
        new: commits.pop().unwrap(),
        old: commits.pop().unwrap(),
    }
}

/// The marker a complete checkout made by initbox carries: its commit.
fn marked_commit(checkout: &Path) -> Option<String> {
    let text = std::fs::read(checkout.join(".git/initbox-checkout.json")).ok()?;
    let marker: serde_json::Value = serde_json::from_slice(&text).ok()?;
    marker["commit"].as_str().map(str::to_owned)
}

/// A checkout git itself calls clean, at `commit`.
fn assert_clean_checkout(dir: &Path, commit: &str, context: &str) {
    assert_eq!(git(dir, &["rev-parse", "HEAD"]), commit, "{context}");
    assert_eq!(
        git(dir, &["status", "--porcelain", "--untracked-files=all"]),
        "",
        "{context}: git status must be clean"
    );
}

/// DEST's entries as a user sees them: without the hidden staging directory of a clone.
fn visible_entries(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|n| n != ".initbox-clone")
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CloneStart {
    /// DEST does not exist: the clone is staged beside it and renamed into place.
    Missing,
    /// DEST is an empty volume (a tmpfs mount, which cannot be renamed).
    EmptyVolume,
    /// DEST is a volume holding a complete checkout of another ref.
    OtherRef,
}

#[test]
fn sigkill_during_git_clone_leaves_dest_as_before_or_complete() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = big_repo(&base, "big");
    let daemon = GitDaemon::start(&base);
    sigkill_during_clone(&sandbox, &repo, &daemon.url("big"), &[], TRIALS);
}

#[test]
fn sigkill_during_git_clone_over_ssh_leaves_dest_as_before_or_complete() {
    use crate::support::sshd::{self, SshFiles, Sshd, USER};
    let _serial = crate::support::one_at_a_time();
    if !need_root() || !sshd::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = Sshd::start();
    let served = server.dir().join("srv");
    let repo = big_repo(&served, "big");
    // git-upload-pack runs as the server's user, which must own what it serves.
    let status = Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(served.join("big"))
        .status()
        .unwrap();
    assert!(status.success());
    let known_hosts = server.write_known_hosts(
        &sandbox.path("known_hosts"),
        &server.known_hosts_line(&server.host_key("ed25519")),
        false,
    );
    let key = server.key("ed25519");
    let ssh = [
        "--ssh-key-file",
        key.to_str().unwrap(),
        "--ssh-known-hosts-file",
        known_hosts.to_str().unwrap(),
    ];
    // Fewer trials than over git:// (the code under test after the transfer is the same;
    // each trial is a login as well).
    sigkill_during_clone(&sandbox, &repo, &server.url("big"), &ssh, TRIALS / 4);
}

/// kill -9 at seeded random moments of clones of `repo`'s tag `new` from `url` into a
/// missing DEST, an empty volume and a volume holding the tag `old`: DEST is always as it
/// was or the complete new checkout, and the next run always ends with the new one.
fn sigkill_during_clone(
    sandbox: &Sandbox,
    repo: &BigRepo,
    url: &str,
    args: &[&str],
    per_start: u32,
) {
    let clone = |dest: &Path, reference: &str| {
        sandbox
            .initbox()
            .args(["git-clone", url, "--ref", reference])
            .args(args)
            .arg(dest)
    };
    // A pristine checkout of the other ref, copied into the volume when a trial needs it
    // (much quicker than cloning it each time).
    let pristine_old = sandbox.path("pristine-old");
    clone(&pristine_old, "old").run().assert_code(0);
    let volume = sandbox.path("volume");
    let _mount = Mount::tmpfs(&volume);
    let missing = sandbox.path("parent/checkout");
    let sibling_staging = sandbox.path("parent/.checkout.initbox-clone");
    let took = unkilled_run(|| {
        copy_tree(&pristine_old, &volume);
        let elapsed = clone(&volume, "new").run().assert_code(0).elapsed;
        empty_dir(&volume);
        elapsed
    });

    // TRIALS each into an empty volume and over the other ref; half as many into a missing
    // DEST, whose install is a single rename.
    let starts = [
        CloneStart::EmptyVolume,
        CloneStart::OtherRef,
        CloneStart::EmptyVolume,
        CloneStart::OtherRef,
        CloneStart::Missing,
    ];
    let trials = per_start / 2 * starts.len() as u32;
    let mut moments = KillMoments::new(took, trials);
    let mut installs_cut_short = 0;
    for trial in 0..trials {
        let start = starts[trial as usize % starts.len()];
        let dest = if start == CloneStart::Missing {
            &missing
        } else {
            &volume
        };
        if start == CloneStart::OtherRef {
            copy_tree(&pristine_old, &volume);
        }
        let before = visible_entries(dest);
        let before_commit = marked_commit(dest);
        let at = moments.moment(trial);
        let context = format!("{} ({start:?})", moments.context(trial, at));
        kill_at(clone(dest, "new").spawn(), at);

        let inner_staging = dest.join(".initbox-clone");
        if inner_staging.exists() || sibling_staging.exists() {
            moments.mid_work += 1;
        }
        // A staged clone marked complete is being installed: the next run finishes it
        // before anything else, so DEST may be anywhere between the two checkouts.
        let installing = marked_commit(&inner_staging).is_some();
        if installing {
            installs_cut_short += 1;
            // Old entries going, new ones coming in, `.git` last: never a checkout of the
            // new ref before it is whole.
            let marked = marked_commit(dest);
            assert!(
                marked.is_none() || marked == before_commit,
                "{context}: a half-installed DEST looks complete"
            );
        } else {
            match marked_commit(dest) {
                Some(commit) if commit == repo.new => {
                    assert_clean_checkout(dest, &repo.new, &context);
                }
                Some(commit) => {
                    assert_eq!(Some(&commit), before_commit.as_ref(), "{context}");
                    assert_clean_checkout(dest, &commit, &context);
                    assert_eq!(visible_entries(dest), before, "{context}");
                }
                None => assert_eq!(
                    visible_entries(dest),
                    before,
                    "{context}: DEST changed without becoming a complete checkout"
                ),
            }
        }

        // The pod's restart always ends with a complete, clean checkout.
        let rerun = clone(dest, "new").run();
        rerun.assert_code(0);
        if installing {
            rerun.assert_stderr_contains("finished installing the checkout a stopped run left");
        }
        assert_clean_checkout(dest, &repo.new, &context);
        assert!(!inner_staging.exists(), "{context}: staging left in DEST");
        assert!(
            !sibling_staging.exists(),
            "{context}: staging left beside DEST"
        );
        if start == CloneStart::Missing {
            assert_eq!(entries(&sandbox.path("parent")), ["checkout"], "{context}");
            std::fs::remove_dir_all(dest).unwrap();
        } else {
            empty_dir(&volume);
        }
    }
    eprintln!("{installs_cut_short} kills landed while a complete clone was being installed");
    moments.assert_enough_mid_work("a clone");
}

#[test]
fn sigkill_during_fetch_leaves_the_old_file_or_the_new_one() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let body = noise(&mut fastrand::Rng::with_seed(11), 64 * 1024).into_bytes();
    // 2 MiB in 64 KiB pieces 10 ms apart: a third of a second, most of it mid-download.
    let server = HttpServer::start(vec![
        reply_bytes(200, body.clone()).paced(64 * 1024, Duration::from_millis(10)),
    ]);
    let dir = sandbox.path("volume");
    let dest = dir.join("data.bin");
    let old = b"the previous download\n";
    let fetch = || {
        sandbox
            .initbox()
            .args(["fetch", &server.url("/data.bin"), "-o"])
            .arg(&dest)
    };
    let took = unkilled_run(|| fetch().run().assert_code(0).elapsed);
    let mut moments = KillMoments::new(took, TRIALS);
    for trial in 0..TRIALS {
        let had_old = trial % 2 == 0;
        if had_old {
            std::fs::write(&dest, old).unwrap();
        } else {
            std::fs::remove_file(&dest).unwrap();
        }
        let at = moments.moment(trial);
        let context = moments.context(trial, at);
        kill_at(fetch().spawn(), at);

        match std::fs::read(&dest) {
            Ok(bytes) => assert!(
                bytes == body || (had_old && bytes == old),
                "{context}: {} holds {} bytes, neither the old file nor the download",
                dest.display(),
                bytes.len()
            ),
            Err(error) => assert!(
                !had_old && error.kind() == std::io::ErrorKind::NotFound,
                "{context}: {error}"
            ),
        }
        let names = entries(&dir);
        assert!(
            names.iter().all(|n| n == "data.bin" || is_temp_file(n)),
            "{context}: {names:?}"
        );
        if names.iter().any(|n| is_temp_file(n)) {
            moments.mid_work += 1;
        }

        fetch().run().assert_code(0);
        assert!(std::fs::read(&dest).unwrap() == body, "{context}");
        assert_eq!(
            entries(&dir),
            ["data.bin"],
            "{context}: the killed run's temp file is removed"
        );
    }
    moments.assert_enough_mid_work("a download");
}

/// The templates of the directory tests: three directories of rendered files, a few KiB
/// each, so that writing them all (each flushed to disk) takes a while.
fn template_tree(src: &Path) {
    for dir in ["conf", "conf/nested", "scripts"] {
        std::fs::create_dir_all(src.join(dir)).unwrap();
        for file in 0..40 {
            let text = format!(
                "# {dir}/{file}\nrelease = {{{{ release }}}}\n\
                 {{% for i in range(60) %}}line {{{{ i }}}} of {{{{ release }}}} in {dir}/{file}\n{{% endfor %}}"
            );
            std::fs::write(src.join(dir).join(format!("file{file}.conf.j2")), text).unwrap();
        }
    }
}

#[test]
fn sigkill_during_a_directory_render_leaves_each_file_old_or_new() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let src = sandbox.path("templates");
    template_tree(&src);
    let render = |dest: &Path, release: &str| {
        sandbox
            .initbox()
            .arg("template")
            .arg(&src)
            .arg(dest)
            .args(["--set", &format!("release={release}")])
    };
    // What DEST holds before (release 1) and after (release 2), rendered unkilled.
    let old = sandbox.path("pristine-old");
    let new = sandbox.path("pristine-new");
    render(&old, "1").run().assert_code(0);
    render(&new, "2").run().assert_code(0);
    let new_tree = tree(&new);
    let dest = sandbox.path("dest");
    let took = unkilled_run(|| {
        copy_tree(&old, &dest);
        render(&dest, "2").run().assert_code(0).elapsed
    });

    let mut moments = KillMoments::new(took, TRIALS);
    for trial in 0..TRIALS {
        // Even trials render over the previous release, odd ones into an empty DEST.
        let had_old = trial % 2 == 0;
        std::fs::remove_dir_all(&dest).unwrap();
        if had_old {
            copy_tree(&old, &dest);
        }
        let at = moments.moment(trial);
        let context = moments.context(trial, at);
        kill_at(render(&dest, "2").spawn(), at);

        // README: "a reader or a restarted pod sees the old file or the new one" — some
        // files may be new and others old, each of them whole.
        let (mut olds, mut news, mut temps) = (0, 0, 0);
        for name in tree(&dest) {
            let file_name = name.rsplit('/').next().unwrap();
            if is_temp_file(file_name) {
                temps += 1;
                continue;
            }
            assert!(
                new_tree.contains(&name),
                "{context}: {name} is not a file of the render"
            );
            if name.ends_with('/') {
                continue;
            }
            let bytes = std::fs::read(dest.join(&name)).unwrap();
            if bytes == std::fs::read(new.join(&name)).unwrap() {
                news += 1;
            } else if had_old && bytes == std::fs::read(old.join(&name)).unwrap() {
                olds += 1;
            } else {
                panic!("{context}: {name} is neither the old file nor the new one, whole");
            }
        }
        let files = new_tree.iter().filter(|n| !n.ends_with('/')).count();
        if had_old {
            assert_eq!(olds + news, files, "{context}: a file went missing");
        }
        if temps > 0 || (news > 0 && news < files) {
            moments.mid_work += 1;
        }

        let rerun = render(&dest, "2").run();
        rerun.assert_code(0);
        assert_eq!(
            tree(&dest),
            new_tree,
            "{context}: the re-run leaves exactly the rendered files"
        );
        for name in new_tree.iter().filter(|n| !n.ends_with('/')) {
            assert!(
                std::fs::read(dest.join(name)).unwrap() == std::fs::read(new.join(name)).unwrap(),
                "{context}: {name}"
            );
        }
    }
    moments.assert_enough_mid_work("a directory render");
}

#[test]
fn sigkill_during_a_pipeline_leaves_a_valid_status_file() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    // Eight short steps: two status transitions each, the file rewritten every time.
    let steps: String = (0..8)
        .map(|i| format!("  - name: step{i}\n    sleep: {{duration: 40ms}}\n"))
        .collect();
    let pipeline = sandbox.write("pipeline.yaml", &format!("steps:\n{steps}"));
    let dir = sandbox.path("status");
    let status_file = dir.join("status.json");
    let run = || {
        sandbox
            .initbox()
            .args(["run", "-f"])
            .arg(&pipeline)
            .arg("--status-file")
            .arg(&status_file)
    };
    let read_status = |context: &str| -> Option<serde_json::Value> {
        let text = match std::fs::read_to_string(&status_file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
            Err(error) => panic!("{context}: {error}"),
        };
        let status: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{context}: the status file is not JSON ({e}):\n{text}"));
        let steps = status["initContainerStatuses"].as_array();
        assert_eq!(steps.map(Vec::len), Some(8), "{context}: {status}");
        assert!(
            ["Pending", "Running", "Succeeded", "Failed"]
                .contains(&status["phase"].as_str().unwrap_or("")),
            "{context}: {status}"
        );
        Some(status)
    };
    let took = unkilled_run(|| run().run().assert_code(0).elapsed);
    let mut moments = KillMoments::new(took, TRIALS);
    for trial in 0..TRIALS {
        // Odd trials start without a status file, even ones with the last run's.
        if trial % 2 == 1 {
            std::fs::remove_file(&status_file).unwrap();
        }
        let at = moments.moment(trial);
        let context = moments.context(trial, at);
        kill_at(run().spawn(), at);

        let names = entries(&dir);
        assert!(
            names.iter().all(|n| n == "status.json" || is_temp_file(n)),
            "{context}: {names:?}"
        );
        let status = read_status(&context);
        let unfinished = status.as_ref().is_some_and(|s| s["phase"] != "Succeeded");
        if unfinished || names.iter().any(|n| is_temp_file(n)) {
            moments.mid_work += 1;
        }

        run().run().assert_code(0);
        let status = read_status(&context).expect("a status file after the re-run");
        assert_eq!(status["phase"], "Succeeded", "{context}");
        assert_eq!(status["status"], "Completed", "{context}");
        assert_eq!(entries(&dir), ["status.json"], "{context}");
    }
    moments.assert_enough_mid_work("a pipeline");
}

// ---------------------------------------------------------------------------------------
// SIGTERM to PID 1
// ---------------------------------------------------------------------------------------

/// What kubelet waits for before it sends SIGKILL is 30 s; initbox promises "at once".
const SIGTERM_TO_EXIT: Duration = Duration::from_secs(1);

/// One waiting command, run as PID 1 of a new pid namespace.
struct WaitingCommand {
    name: &'static str,
    args: Vec<String>,
    /// The stderr line that shows it is waiting (or retrying) rather than starting up.
    waiting: &'static str,
    /// Also in a new network namespace whose loopback ignores pings.
    no_echo_replies: bool,
}

fn waiting(name: &'static str, args: &[&str], waiting: &'static str) -> WaitingCommand {
    WaitingCommand {
        name,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        waiting,
        no_echo_replies: false,
    }
}

#[test]
fn sigterm_to_pid_1_ends_every_waiting_command_within_a_second() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let unavailable = HttpServer::start(vec![reply(503, "not yet")]);
    let refused = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let missing_path = path_str(&sandbox.path("missing")).to_owned();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: first\n    sleep: {{duration: 0}}\n  - name: db\n    \
             wait-for-tcp: {{targets: [\"{refused}\"]}}\n"
        ),
    );
    let refused_kubeconfig = kubeconfig(&sandbox, "refused", &format!("https://{refused}"), None);
    let refused_url = format!("http://{refused}/data");
    let refused_git = format!("git://{refused}/app");
    let fetched = sandbox.path("fetched/data");
    let cloned = sandbox.path("cloned");
    let copied = sandbox.path("copied");
    let commands = vec![
        waiting(
            "wait-for-dns",
            &[
                "wait-for-dns",
                "missing.test",
                "--nameserver",
                &dns.nameserver(),
            ],
            "NXDOMAIN",
        ),
        waiting("wait-for-tcp", &["wait-for-tcp", &refused], "is not ready"),
        waiting(
            "wait-for-k8s",
            &[
                "wait-for-k8s",
                "job/never",
                "--kubeconfig",
                &refused_kubeconfig,
            ],
            "is not ready",
        ),
        waiting(
            "wait-for-postgres",
            &["wait-for-postgres", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-grpc",
            &["wait-for-grpc", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-file",
            &["wait-for-file", &missing_path],
            "is not ready",
        ),
        waiting(
            "wait-for-socket",
            &["wait-for-socket", &missing_path],
            "is not ready",
        ),
        waiting(
            "wait-for-command",
            &[
                "wait-for-command",
                "--attempt-timeout",
                "5m",
                "sleep",
                "300",
            ],
            "waiting for sleep 300",
        ),
        waiting(
            "wait-for-redis",
            &["wait-for-redis", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-mysql",
            &["wait-for-mysql", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-nats",
            &["wait-for-nats", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-zookeeper",
            &["wait-for-zookeeper", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-kafka",
            &["wait-for-kafka", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-amqp",
            &["wait-for-amqp", &refused],
            "is not ready",
        ),
        waiting(
            "wait-for-http",
            &["wait-for-http", &unavailable.url("/healthz")],
            "is not ready",
        ),
        WaitingCommand {
            no_echo_replies: true,
            ..waiting(
                "ping",
                &["ping", "127.0.0.1", "--attempt-timeout", "200ms"],
                "is not ready",
            )
        },
        waiting("sleep", &["sleep", "5m"], "sleeping for 5m"),
        waiting(
            "register",
            &["register", &unavailable.url("/register")],
            "HTTP 503",
        ),
        waiting(
            "fetch",
            &["fetch", &refused_url, "-o", path_str(&fetched)],
            "connection refused",
        ),
        waiting(
            "git-clone",
            &["git-clone", &refused_git, path_str(&cloned)],
            "is not ready",
        ),
        waiting(
            "k8s-copy",
            &[
                "k8s-copy",
                "configmap/app",
                path_str(&copied),
                "--kubeconfig",
                &refused_kubeconfig,
            ],
            "connection refused",
        ),
        waiting("run", &["run", "-f", path_str(&pipeline)], "is not ready"),
    ];
    // Every command of the registry that waits has a case here; the others never wait.
    for command in COMMANDS.iter() {
        let covered = commands.iter().any(|c| c.name == *command);
        let never_waits = NO_DEADLINE.iter().any(|(name, _)| name == command);
        assert!(
            covered || never_waits,
            "{command} has no SIGTERM case: add one here, or to NO_DEADLINE with the reason"
        );
    }
    for command in commands {
        let name = command.name;
        let mut wrapper = vec!["unshare"];
        if command.no_echo_replies {
            wrapper.push("--net");
        }
        wrapper.extend(["--pid", "--fork", "--kill-child"]);
        let script = "ip link set lo up && echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all \
                      && exec \"$0\" \"$@\"";
        if command.no_echo_replies {
            wrapper.extend(["sh", "-c", script]);
        }
        let running = sandbox
            .initbox()
            .args(&command.args)
            .wrapped_in(&wrapper)
            .spawn();
        let init = pid_one_of(running.pid());
        running.wait_for_stderr(command.waiting, Duration::from_secs(30));
        let status = std::fs::read_to_string(format!("/proc/{init}/status")).unwrap();
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("NSpid:") && l.ends_with("\t1")),
            "{name}: not PID 1 in its namespace:\n{status}"
        );
        assert!(
            std::fs::read_link(format!("/proc/{init}/exe"))
                .is_ok_and(|exe| exe.ends_with("initbox")),
            "{name}: PID 1 is not initbox"
        );
        let sent = Instant::now();
        kill(init, libc::SIGTERM);
        let output = running.wait();
        let took = sent.elapsed();
        eprintln!("{name}: exit {} {took:?} after SIGTERM", output.code);
        output
            .assert_code(143)
            .assert_stderr_contains("interrupted by SIGTERM");
        assert!(
            took < SIGTERM_TO_EXIT,
            "{name}: exited {took:?} after SIGTERM; stderr:\n{}",
            output.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------------------

/// How long after its deadline a command may still be running.
const DEADLINE_SLACK: Duration = Duration::from_millis(50);
/// Tries per case: a case passes when one of them ends within the slack.
const DEADLINE_TRIES: usize = 3;

/// The commands of COMMANDS that have no deadline to keep, and why.
const NO_DEADLINE: &[(&str, &str)] = &[
    ("template", "renders once and never waits"),
    ("chown", "changes a tree once and never waits"),
    ("chmod", "changes a tree once and never waits"),
    ("mkdir", "creates directories once and never waits"),
    ("remove", "removes once and never waits"),
    (
        "sleep",
        "its duration is what it is asked for, not a deadline",
    ),
    ("link", "one rename, never waits"),
    ("sysctl", "writes and reads /proc/sys once, never waits"),
    ("install", "copies one file once, never waits"),
    ("write", "writes one file once, never waits"),
    ("replace", "edits files once, never waits"),
    ("copy", "copies a tree once, never waits"),
    ("extract", "unpacks one archive once, never waits"),
];

/// One way a command reaches its deadline.
struct DeadlineCase {
    /// The entry of COMMANDS it covers.
    command: &'static str,
    what: &'static str,
    args: Vec<String>,
    deadline: Duration,
    code: i32,
    /// In a new network namespace whose loopback ignores pings.
    no_echo_replies: bool,
}

fn deadline_case(
    command: &'static str,
    what: &'static str,
    args: &[&str],
    deadline_ms: u64,
) -> DeadlineCase {
    DeadlineCase {
        command,
        what,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        deadline: Duration::from_millis(deadline_ms),
        code: 124,
        no_echo_replies: false,
    }
}

/// `cmd` inside a network namespace of its own where echo requests go unanswered.
fn without_echo_replies(cmd: Cmd) -> Cmd {
    cmd.in_network_namespace("echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all")
}

/// Every waiting command ends within 50 ms of its deadline: `--timeout`, a pipeline step's
/// `timeout` and `activeDeadline`, also with an attempt in flight when the deadline comes.
///
/// How it is measured, so that a loaded 2-core machine does not break it: the test sees the
/// time from spawn to exit, which also holds starting the process (exec, the runtime,
/// parsing) and ending it, costs that have nothing to do with the deadline and vary with
/// the load. So each try first times `initbox sleep 0` (the same start and end, no work),
/// spawned the same way (namespace wrapper included), and takes that off: what is left past
/// the deadline is the overshoot. A busy machine can still delay one run more than the
/// other, so a case gets up to three tries and passes when one of them is within the slack:
/// a real overshoot (an echo interval, a transfer that is not cancelled) is there every time,
/// a scheduling hiccup is not. A command may never end before its deadline: that holds
/// without any correction, as the deadline's clock starts after the spawn.
#[test]
fn every_waiting_command_ends_within_50ms_of_its_deadline() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let silent_dns = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let unavailable = HttpServer::start(vec![reply(503, "not yet")]);
    let (silent_port, _silent) = silent_server();
    let refused = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let silent_http = format!("http://127.0.0.1:{silent_port}/data");
    let silent_tcp = format!("127.0.0.1:{silent_port}");
    let fetched = sandbox.path("fetched/data");
    let cloned = sandbox.path("cloned");
    let copied = sandbox.path("copied");
    // An API server address that accepts connections and never answers them.
    let silent_kubeconfig = sandbox.write(
        "silent.kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: silent\n\
             clusters: [{{name: silent, cluster: {{server: \"https://127.0.0.1:{silent_port}\", insecure-skip-tls-verify: true}}}}]\n\
             users: [{{name: silent, user: {{token: not-a-real-token}}}}]\n\
             contexts: [{{name: silent, context: {{cluster: silent, user: silent, namespace: default}}}}]\n"
        ),
    );
    let step_timeout = sandbox.write(
        "step-timeout.yaml",
        &format!(
            "restartPolicy: Never\nsteps:\n  - name: db\n    \
             wait-for-tcp: {{targets: [\"{refused}\"], timeout: 1s}}\n"
        ),
    );
    let active_deadline = sandbox.write(
        "active-deadline.yaml",
        &format!(
            "activeDeadline: 1s\nsteps:\n  - name: db\n    \
             wait-for-tcp: {{targets: [\"{refused}\"]}}\n"
        ),
    );
    let nameserver = dns.nameserver();
    let silent_nameserver = silent_dns.local_addr().unwrap().to_string();
    let missing_path = path_str(&sandbox.path("missing")).to_owned();
    let refused_kubeconfig = kubeconfig(&sandbox, "refused", &format!("https://{refused}"), None);
    // A Job nobody completes, on the real API server: the deadline passes while the wait
    // holds a watch open.
    let watching_kubeconfig = crate::support::kube_api::shared().map(|api| {
        let namespace = api.namespace();
        api.create(
            &namespace,
            serde_json::json!({
                "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "never" },
                "spec": { "template": { "spec": { "restartPolicy": "Never", "nodeName": "n",
                    "containers": [{ "name": "c", "image": "registry.invalid/c:1" }] } } }
            }),
        );
        let account = api.service_account(
            &namespace,
            "waiter",
            serde_json::json!([{ "apiGroups": ["batch"], "resources": ["jobs"],
                                 "verbs": ["get", "watch"] }]),
        );
        let token = std::fs::read_to_string(account.path().join("token")).unwrap();
        kubeconfig(
            &sandbox,
            "watching",
            &api.url(""),
            Some((&namespace, token.trim(), &api.ca())),
        )
    });
    let mut cases = vec![
        deadline_case(
            "wait-for-k8s",
            "API server refused",
            &[
                "wait-for-k8s",
                "job/never",
                "--kubeconfig",
                &refused_kubeconfig,
                "--timeout",
                "1s",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-dns",
            "NXDOMAIN",
            &[
                "wait-for-dns",
                "missing.test",
                "--nameserver",
                &nameserver,
                "--timeout",
                "1s",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-dns",
            "a query in flight",
            &[
                "wait-for-dns",
                "missing.test",
                "--nameserver",
                &silent_nameserver,
                "--timeout",
                "1s",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-tcp",
            "refused",
            &["wait-for-tcp", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-postgres",
            "refused",
            &["wait-for-postgres", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-postgres",
            "an answer awaited",
            &["wait-for-postgres", &silent_tcp, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-grpc",
            "refused",
            &["wait-for-grpc", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-file",
            "missing",
            &["wait-for-file", &missing_path, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-socket",
            "missing",
            &["wait-for-socket", &missing_path, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-command",
            "a command still running",
            &[
                "wait-for-command",
                "--timeout",
                "1s",
                "--attempt-timeout",
                "30s",
                "sleep",
                "60",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-redis",
            "refused",
            &["wait-for-redis", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-redis",
            "a PING in flight",
            &["wait-for-redis", &silent_tcp, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-mysql",
            "refused",
            &["wait-for-mysql", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-mysql",
            "a greeting awaited",
            &["wait-for-mysql", &silent_tcp, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-http",
            "HTTP 503",
            &[
                "wait-for-http",
                &unavailable.url("/healthz"),
                "--timeout",
                "1s",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-http",
            "a request in flight",
            &["wait-for-http", &silent_http, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "register",
            "HTTP 503",
            &["register", &unavailable.url("/register"), "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "fetch",
            "a request in flight",
            &[
                "fetch",
                &silent_http,
                "-o",
                path_str(&fetched),
                "--timeout",
                "1s",
            ],
            1000,
        ),
        deadline_case(
            "git-clone",
            "a transfer in flight",
            &[
                "git-clone",
                &format!("git://127.0.0.1:{silent_port}/app"),
                path_str(&cloned),
                "--timeout",
                "1s",
            ],
            1000,
        ),
        deadline_case(
            "k8s-copy",
            "a request in flight",
            &[
                "k8s-copy",
                "configmap/app",
                path_str(&copied),
                "--kubeconfig",
                path_str(&silent_kubeconfig),
                "--timeout",
                "1s",
            ],
            1000,
        ),
        // The broker checks: nothing listening, and a server that accepts and never speaks
        // (an attempt in flight when the deadline comes).
        deadline_case(
            "wait-for-nats",
            "refused",
            &["wait-for-nats", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-nats",
            "an attempt in flight",
            &[
                "wait-for-nats",
                &silent_tcp,
                "--timeout",
                "1s",
                "--attempt-timeout",
                "5s",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-zookeeper",
            "refused",
            &["wait-for-zookeeper", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-zookeeper",
            "an attempt in flight",
            &[
                "wait-for-zookeeper",
                &silent_tcp,
                "--timeout",
                "1s",
                "--attempt-timeout",
                "5s",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-kafka",
            "refused",
            &["wait-for-kafka", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-kafka",
            "an attempt in flight",
            &[
                "wait-for-kafka",
                &silent_tcp,
                "--timeout",
                "1s",
                "--attempt-timeout",
                "5s",
            ],
            1000,
        ),
        deadline_case(
            "wait-for-amqp",
            "refused",
            &["wait-for-amqp", &refused, "--timeout", "1s"],
            1000,
        ),
        deadline_case(
            "wait-for-amqp",
            "an attempt in flight",
            &[
                "wait-for-amqp",
                &silent_tcp,
                "--timeout",
                "1s",
                "--attempt-timeout",
                "5s",
            ],
            1000,
        ),
        deadline_case(
            "run",
            "a step timeout",
            &["run", "-f", path_str(&step_timeout)],
            1000,
        ),
        deadline_case(
            "run",
            "activeDeadline",
            &["run", "-f", path_str(&active_deadline)],
            1000,
        ),
    ];
    if is_root() {
        cases.extend([
            DeadlineCase {
                no_echo_replies: true,
                ..deadline_case(
                    "ping",
                    "wait mode",
                    &["ping", "127.0.0.1", "--timeout", "1s"],
                    1000,
                )
            },
            // The deadline falls between two echoes, which used to end the run at the next.
            DeadlineCase {
                no_echo_replies: true,
                ..deadline_case(
                    "ping",
                    "count mode, no reply",
                    &[
                        "ping",
                        "127.0.0.1",
                        "-c",
                        "5",
                        "--interval",
                        "1s",
                        "--timeout",
                        "1500ms",
                    ],
                    1500,
                )
            },
            DeadlineCase {
                code: 0,
                ..deadline_case(
                    "ping",
                    "count mode, replies",
                    &[
                        "ping",
                        "127.0.0.1",
                        "-c",
                        "5",
                        "--interval",
                        "1s",
                        "--timeout",
                        "1500ms",
                    ],
                    1500,
                )
            },
        ]);
    } else {
        skip("needs root for a network namespace");
    }

    if let Some(watching) = &watching_kubeconfig {
        cases.push(deadline_case(
            "wait-for-k8s",
            "a watch open",
            &[
                "wait-for-k8s",
                "job/never",
                "--kubeconfig",
                watching,
                "--timeout",
                "1s",
            ],
            1000,
        ));
    }

    // Every command of the registry is covered, or says why it has no deadline.
    for command in COMMANDS.iter() {
        let covered =
            cases.iter().any(|c| c.command == *command) || !is_root() && *command == "ping";
        let exempt = NO_DEADLINE.iter().any(|(name, _)| name == command);
        assert!(
            covered || exempt,
            "{command} has no deadline case: add one here, or to NO_DEADLINE with the reason"
        );
    }

    let mut failures = Vec::new();
    for case in &cases {
        let spawn = |args: &[String]| {
            let cmd = sandbox.initbox().args(args);
            if case.no_echo_replies {
                without_echo_replies(cmd).run()
            } else {
                cmd.run()
            }
        };
        let mut best: Option<(Duration, Duration, Duration)> = None;
        for _ in 0..DEADLINE_TRIES {
            let startup = spawn(&["sleep".to_owned(), "0".to_owned()])
                .assert_code(0)
                .elapsed;
            let output = spawn(&case.args);
            output.assert_code(case.code);
            assert!(
                output.elapsed >= case.deadline,
                "{} ({}): ended {:?} after the spawn, before its deadline of {:?}",
                case.command,
                case.what,
                output.elapsed,
                case.deadline
            );
            let overshoot = output
                .elapsed
                .saturating_sub(startup)
                .saturating_sub(case.deadline);
            if best.is_none_or(|(least, _, _)| overshoot < least) {
                best = Some((overshoot, output.elapsed, startup));
            }
            if overshoot <= DEADLINE_SLACK {
                break;
            }
        }
        let (overshoot, elapsed, startup) = best.unwrap();
        eprintln!(
            "{} ({}): {overshoot:?} past a deadline of {:?} (ran {elapsed:?}, start and end {startup:?})",
            case.command, case.what, case.deadline
        );
        if overshoot > DEADLINE_SLACK {
            failures.push(format!(
                "{} ({}): ended {overshoot:?} after its deadline of {:?} in the best of {DEADLINE_TRIES} tries \
                 (ran {elapsed:?}; starting and ending initbox took {startup:?})",
                case.command, case.what, case.deadline
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "past the deadline:\n{}",
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------
// Servers that misbehave
// ---------------------------------------------------------------------------------------

/// Exit 124 with the timeout's message, and no later than `timeout` plus a margin.
#[track_caller]
fn assert_gave_up(output: &Output, timeout: &str, limit: Duration) {
    output
        .assert_code(124)
        .assert_stderr_contains(&format!("timed out after {timeout} waiting for"));
    assert!(
        output.elapsed < limit + HANG_MARGIN,
        "still running {:?} after a --timeout of {timeout}:\n{}",
        output.elapsed,
        output.stderr
    );
}

#[test]
fn a_nameserver_that_stops_answering_mid_wait() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let running = sandbox
        .initbox()
        .args(["wait-for-dns", "db.test", "--nameserver", &dns.nameserver()])
        .args(["--timeout", "4s", "--attempt-timeout", "500ms"])
        .spawn();
    running.wait_for_stderr("NXDOMAIN", Duration::from_secs(20));
    dns.set_silent(true);
    let asked = dns.queries();
    let output = running.wait();
    assert_gave_up(&output, "4s", Duration::from_secs(4));
    output.assert_stderr_contains("no answer");
    assert!(dns.queries() > asked, "initbox stopped asking");
}

#[test]
fn http_that_accepts_and_never_answers_hits_the_attempt_timeout() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let (port, _server) = silent_server();
    let url = format!("http://127.0.0.1:{port}/");
    let output_file = sandbox.path("out/data");
    for command in [
        vec!["wait-for-http", &url],
        vec!["register", &url],
        vec!["fetch", &url, "-o", path_str(&output_file)],
    ] {
        let output = sandbox
            .initbox()
            .args(&command)
            .args(["--timeout", "3s", "--attempt-timeout", "500ms"])
            .run();
        assert_gave_up(&output, "3s", Duration::from_secs(3));
        output.assert_stderr_contains("no answer within 500ms (--attempt-timeout)");
    }
    assert!(
        !output_file.exists() && entries(output_file.parent().unwrap()).is_empty(),
        "fetch left {:?}",
        entries(output_file.parent().unwrap())
    );
}

/// A network namespace made for one test, removed when dropped.
struct NetNs(String);

impl NetNs {
    fn new(purpose: &str) -> NetNs {
        let name = format!("initbox-{purpose}-{}", std::process::id());
        // A namespace of an earlier run of this process id that was not cleaned up.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let ns = NetNs(name);
        ns.run(&["ip", "netns", "add", &ns.0]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn run(&self, command: &[&str]) {
        let output = Command::new(command[0])
            .args(&command[1..])
            .output()
            .expect("running a command");
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Runs a command inside the namespace.
    fn exec(&self, command: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend(command);
        self.run(&full);
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn a_tcp_target_that_drops_syns_hits_the_connect_timeout() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        skip("nft is not installed");
        return;
    }
    let sandbox = Sandbox::new();
    let ns = NetNs::new("syn-drop");
    let wait = |timeout: &str| {
        sandbox
            .initbox()
            .args(["wait-for-tcp", "127.0.0.1:5432", "--timeout", timeout])
            .args(["--attempt-timeout", "500ms"])
            .wrapped_in(&["ip", "netns", "exec", &ns.0])
            .run()
    };
    // Nothing listens: refused at once, as a closed port is.
    let refused = wait("1s");
    assert_gave_up(&refused, "1s", Duration::from_secs(1));
    refused.assert_stderr_contains("connection refused");
    // Now every SYN to the port vanishes: only the attempt timeout ends each connect.
    ns.exec(&[
        "nft",
        "add table inet faults; \
         add chain inet faults input { type filter hook input priority 0; policy accept; }; \
         add rule inet faults input tcp dport 5432 drop",
    ]);
    let dropped = wait("3s");
    assert_gave_up(&dropped, "3s", Duration::from_secs(3));
    dropped.assert_stderr_contains("no answer within 500ms (--attempt-timeout)");
}

/// Two `tree_listing`s are equal; if not, says which entries differ (names and the start of
/// their contents only: a listing holds whole files).
#[track_caller]
fn assert_same_listing(before: &[String], after: &[String], what: &str) {
    if before == after {
        return;
    }
    let short = |line: &&String| line.chars().take(100).collect::<String>();
    let gone: Vec<String> = before
        .iter()
        .filter(|l| !after.contains(l))
        .map(|l| short(&l))
        .take(8)
        .collect();
    let added: Vec<String> = after
        .iter()
        .filter(|l| !before.contains(l))
        .map(|l| short(&l))
        .take(8)
        .collect();
    panic!("{what} changed:\n  gone: {gone:#?}\n  new: {added:#?}");
}

/// A TCP proxy in front of a server that, for the next `cuts` connections, forwards only
/// the first `limit` bytes of the server's answer and then closes both sides: a server that
/// dies mid-transfer.
struct CuttingProxy {
    port: u16,
    cuts: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, limit: usize) -> CuttingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cuts = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (cuts_left, count) = (cuts.clone(), connections.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                count.fetch_add(1, Ordering::SeqCst);
                let cut = cuts_left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                thread::spawn(move || relay(client, server, cut.then_some(limit)));
            }
        });
        CuttingProxy {
            port,
            cuts,
            connections,
        }
    }

    /// Cut the next `n` connections (`usize::MAX`: all of them).
    fn cut_next(&self, n: usize) {
        self.cuts.store(n, Ordering::SeqCst);
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn relay(client: TcpStream, server: TcpStream, limit: Option<usize>) {
    let (mut client_in, mut server_out) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut from, mut to) = (server, client);
    let mut forwarded = 0;
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let wanted = match limit {
            Some(limit) if forwarded >= limit => break,
            Some(limit) => buffer.len().min(limit - forwarded),
            None => buffer.len(),
        };
        match from.read(&mut buffer[..wanted]) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buffer[..n]).is_err() {
                    break;
                }
                forwarded += n;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Over HTTP the same: an answer cut short in the middle of the pack (the connection
/// closed before the length it announced) is a transfer that broke off, retried on a new
/// connection until the clone completes.
#[test]
fn an_http_answer_cut_mid_pack_is_retried_on_a_new_connection() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = big_repo(&base, "big");
    let server = SmartHttp::start(&base, None);
    let proxy = CuttingProxy::start(server.port, 48 * 1024);
    let url = format!("http://127.0.0.1:{}/big", proxy.port);
    let dest = sandbox.path("checkout");
    proxy.cut_next(2);
    let recovered = sandbox
        .initbox()
        .args(["git-clone", &url, path_str(&dest), "--ref", "old"])
        .args(["--timeout", "60s"])
        .run();
    recovered
        .assert_code(0)
        .assert_stderr_contains("the transfer of the pack from the server broke off");
    assert!(proxy.connections() >= 3, "{}", recovered.stderr);
    assert_clean_checkout(&dest, &repo.old, "after the server recovered");
}

#[test]
fn a_git_server_that_dies_mid_pack() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = big_repo(&base, "big");
    let daemon = GitDaemon::start(&base);
    // The refs and the start of the pack get through; the pack (hundreds of KiB) never
    // does.
    let proxy = CuttingProxy::start(daemon.port, 48 * 1024);
    let url = format!("git://127.0.0.1:{}/big", proxy.port);
    let dest = sandbox.path("checkout");
    let clone = |reference: &str, timeout: &str| {
        sandbox
            .initbox()
            .args(["git-clone", &url, path_str(&dest), "--ref", reference])
            .args(["--timeout", timeout])
            .run()
    };

    // A server that recovers: two transfers cut short, then the clone completes.
    proxy.cut_next(2);
    let recovered = clone("old", "60s");
    recovered
        .assert_code(0)
        .assert_stderr_contains("is not ready");
    assert!(proxy.connections() >= 3, "{}", recovered.stderr);
    assert_clean_checkout(&dest, &repo.old, "after the server recovered");

    // A server that stays broken: retried until --timeout, and DEST keeps the old ref.
    let before = tree_listing(&dest);
    let connections = proxy.connections();
    proxy.cut_next(usize::MAX);
    let broken = clone("new", "4s");
    assert_gave_up(&broken, "4s", Duration::from_secs(4));
    let last_error = broken
        .stderr
        .lines()
        .find(|line| line.contains("(last error: "))
        .unwrap_or_default();
    assert!(
        last_error.to_lowercase().contains("pack"),
        "the last error names the transfer that broke off:\n{}",
        broken.stderr
    );
    assert!(
        proxy.connections() >= connections + 2,
        "retried: {}",
        broken.stderr
    );
    assert_same_listing(
        &before,
        &tree_listing(&dest),
        "DEST after the broken server",
    );
    assert_clean_checkout(&dest, &repo.old, "after the broken server");
    assert_eq!(
        visible_entries(&dest).len(),
        entries(&dest).len(),
        "a staging directory is left in DEST: {:?}",
        entries(&dest)
    );
    assert!(!sandbox.path(".checkout.initbox-clone").exists());

    // Back to health: the switch completes.
    proxy.cut_next(0);
    clone("new", "60s").assert_code(0);
    assert_clean_checkout(&dest, &repo.new, "after the server came back");
    assert!(!dest.join(".initbox-clone").exists());
}

/// Timed, so it runs here, alone: on a machine busy with the parallel tests of `cli` the
/// 50 ms allowance measured a neighbour's load, not the clone.
#[test]
fn a_stalled_clone_ends_within_50ms_of_its_deadline_and_leaves_no_staging() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    incompressible_repo(&base, "big", 2 << 20);
    let daemon = GitDaemon::start(&base);
    // The refs and the start of the pack get through, then nothing: gix is blocked in a
    // read that never returns, which is what the deadline must not wait for.
    let proxy = StallingProxy::start(daemon.port, 64 * 1024);
    let url = format!("git://127.0.0.1:{}/big", proxy.port);
    // The allowance: 50 ms more than the same binary takes to give up at the same
    // --timeout where nothing blocks (wait-for-tcp on a refused port, whose attempts the
    // engine drops at the deadline), run just before and just after each clone. Both runs
    // pay the same start, exit and machine load, so only what the clone adds at its
    // deadline (stopping the transfer, removing the staging directory) is compared.
    let refused = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let reference = || {
        let output = sandbox
            .initbox()
            .args(["wait-for-tcp", &refused, "--timeout", "2s"])
            .run();
        output.assert_code(124);
        output.elapsed
    };
    let timeout = Duration::from_secs(2);
    let volume = sandbox.path("volume");
    std::fs::create_dir(&volume).unwrap();
    // DEST missing (staging beside it) and DEST an existing empty volume (staging inside).
    for dest in [sandbox.path("checkout"), volume.clone()] {
        let passed_before = *proxy.passed.lock().unwrap();
        let before = reference();
        let output = sandbox
            .initbox()
            .args(["git-clone", &url, "--timeout", "2s"])
            .arg(&dest)
            .run();
        output
            .assert_code(124)
            .assert_stderr_contains("timed out after 2s");
        assert!(
            *proxy.passed.lock().unwrap() > passed_before,
            "the transfer had begun"
        );
        let limit = before.max(reference()) + Duration::from_millis(50);
        eprintln!("ended after {:?}; allowed {limit:?}", output.elapsed);
        assert!(
            output.elapsed >= timeout && output.elapsed < limit,
            "ended {:?} after start, not within 50 ms of a plain wait's {:?}:\n{}",
            output.elapsed,
            limit - Duration::from_millis(50),
            output.stderr
        );
        assert!(
            entries(sandbox.dir.path())
                .iter()
                .all(|name| !name.contains("initbox-clone")),
            "a staging directory is left beside DEST: {:?}",
            entries(sandbox.dir.path())
        );
        assert!(
            entries(&volume).is_empty(),
            "left in the volume: {:?}",
            entries(&volume)
        );
    }
}

/// Every file under `dir` with its content, sorted: what a reader of DEST sees (a staging
/// directory named `staging` left out).
fn files_below(dir: &Path, staging: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = tree(dir)
        .into_iter()
        .filter(|name| !name.ends_with('/') && !name.starts_with(staging))
        .map(|name| {
            let data = std::fs::read(dir.join(&name)).unwrap_or_default();
            (name, data)
        })
        .collect();
    files.sort();
    files
}

/// A command that installs a tree it records (extract, k8s-copy) through the staged
/// install, by the names its layout gives.
struct RecordedInstall<'a> {
    /// For messages: `an extract`.
    what: &'a str,
    /// The staging directory inside an existing DEST.
    inner_staging: &'a str,
    /// `PARENT/.NAME.{suffix}`: the staging directory beside a missing DEST.
    sibling_suffix: &'a str,
    /// The record inside DEST, written last into the staged tree.
    record: &'a str,
    trials: u32,
}

/// kill -9 at seeded random moments of `run("v2", DEST)` over what `run("v1", DEST)` left
/// in a volume, into an empty volume and into a missing DEST: DEST is always as it was or
/// the complete new tree, never carries a record while half installed, and the next run
/// always ends with the new tree and no staging left. Returns the new tree's files.
fn sigkill_during_recorded_install(
    sandbox: &Sandbox,
    install: &RecordedInstall<'_>,
    run: impl Fn(&str, &Path) -> crate::support::Cmd,
) -> Vec<(String, Vec<u8>)> {
    let files = |dir: &Path| files_below(dir, install.inner_staging);
    let volume = sandbox.path("volume");
    let _mount = Mount::tmpfs(&volume);
    let missing = sandbox.path("parent/dest");
    let sibling_staging = sandbox.path(&format!("parent/.dest.{}", install.sibling_suffix));
    let inner_staging = volume.join(install.inner_staging);
    let reference = sandbox.path("reference");
    run("v2", &reference).run().assert_code(0);
    let new_files = files(&reference);
    let pristine_old = sandbox.path("pristine-old");
    run("v1", &pristine_old).run().assert_code(0);
    let old_files = files(&pristine_old);
    let took = unkilled_run(|| {
        copy_tree(&pristine_old, &volume);
        let elapsed = run("v2", &volume).run().assert_code(0).elapsed;
        empty_dir(&volume);
        elapsed
    });
    let mut moments = KillMoments::new(took, install.trials);
    for trial in 0..install.trials {
        // Over an older tree in a volume, into an empty volume, into a missing DEST.
        let (dest, before) = match trial % 3 {
            0 => {
                copy_tree(&pristine_old, &volume);
                (&volume, old_files.clone())
            }
            1 => (&volume, Vec::new()),
            _ => (&missing, Vec::new()),
        };
        let at = moments.moment(trial);
        let context = moments.context(trial, at);
        kill_at(run("v2", dest).spawn(), at);

        if inner_staging.exists() || sibling_staging.exists() {
            moments.mid_work += 1;
        }
        // A staged tree with its record is being installed: the next run finishes it first,
        // and until then DEST carries no record of the new one.
        let installing = inner_staging.join(install.record).exists();
        let now = files(dest);
        if !installing {
            assert!(
                now == before || now == new_files,
                "{context}: DEST is neither the old content nor the complete new one ({} files)",
                now.len()
            );
        } else {
            assert!(
                now.iter().all(|(name, _)| name != install.record) || now == before,
                "{context}: a half-installed DEST carries a record"
            );
        }
        run("v2", dest).run().assert_code(0);
        assert_eq!(files(dest), new_files, "{context}");
        assert!(!inner_staging.exists(), "{context}: staging left in DEST");
        assert!(
            !sibling_staging.exists(),
            "{context}: staging left beside DEST"
        );
        if trial % 3 == 2 {
            std::fs::remove_dir_all(&missing).unwrap();
        } else {
            empty_dir(&volume);
        }
    }
    moments.assert_enough_mid_work(install.what);
    new_files
}

#[test]
fn sigkill_during_extract_leaves_dest_as_before_or_complete() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    // Two releases of a few hundred files each, as tar.gz: v1 is what DEST holds before.
    let mut rng = fastrand::Rng::with_seed(17);
    for version in ["v1", "v2"] {
        let top = sandbox.path(&format!("{version}/app"));
        for dir in 0..8 {
            std::fs::create_dir_all(top.join(format!("dir{dir}"))).unwrap();
            for file in 0..50 {
                let text = format!("{version} {dir} {file}\n{}", noise(&mut rng, 200));
                std::fs::write(top.join(format!("dir{dir}/file{file}.txt")), text).unwrap();
            }
        }
        let status = Command::new("tar")
            .args(["czf", &format!("../{version}.tgz"), "app"])
            .current_dir(sandbox.path(version))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let install = RecordedInstall {
        what: "an extract",
        inner_staging: ".initbox-extract.staging",
        sibling_suffix: "initbox-extract",
        record: ".initbox-extract/archive.json",
        trials: TRIALS * 3 / 2,
    };
    sigkill_during_recorded_install(&sandbox, &install, |version, dest| {
        sandbox
            .initbox()
            .arg("extract")
            .arg(sandbox.path(&format!("{version}.tgz")))
            .arg(dest)
    });
}

/// A kubeconfig for `server`; with a namespace, a token and the CA file of a real API
/// server, or nothing (for a server that refuses connections). Its path, as text.
fn kubeconfig(
    sandbox: &Sandbox,
    name: &str,
    server: &str,
    login: Option<(&str, &str, &std::path::Path)>,
) -> String {
    let (namespace, user, ca) = match login {
        Some((namespace, token, ca)) => (
            format!("    namespace: {namespace}\n"),
            format!("    token: {token}\n"),
            format!("    certificate-authority: {}\n", ca.display()),
        ),
        None => (
            String::new(),
            "    token: none-needed\n".to_owned(),
            String::new(),
        ),
    };
    let path = sandbox.write(
        &format!("{name}.kubeconfig"),
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters:\n- name: c\n  cluster:\n    server: {server}\n{ca}\
             contexts:\n- name: c\n  context:\n    cluster: c\n    user: u\n{namespace}\
             users:\n- name: u\n  user:\n{user}"
        ),
    );
    path_str(&path).to_owned()
}

#[test]
fn sigkill_during_k8s_copy_leaves_dest_as_before_or_complete() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let Some(api) = crate::support::kube_api::shared() else {
        return;
    };
    let namespace = api.namespace();
    let account = api.service_account(
        &namespace,
        "copier",
        serde_json::json!([{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"] }]),
    );
    // Two releases of the same keys, each a few ConfigMaps of a few hundred keys (each
    // ConfigMap under the API's 1 MiB): v1 is what DEST holds before. Thousands of files,
    // so that writing them is a good part of a run.
    let mut rng = fastrand::Rng::with_seed(18);
    for version in ["v1", "v2"] {
        for part in 0..8 {
            let data: serde_json::Map<String, serde_json::Value> = (0..600)
                .map(|key| {
                    let text = format!("{version} {part} {key}\n{}", noise(&mut rng, 2));
                    (format!("part{part}-key{key}.conf"), text.into())
                })
                .collect();
            api.create(
                &namespace,
                serde_json::json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": { "name": format!("{version}-{part}"), "labels": { "release": version } },
                    "data": data,
                }),
            );
        }
    }
    let sandbox = Sandbox::new();
    let install = RecordedInstall {
        what: "a k8s-copy",
        inner_staging: ".initbox-k8s-copy.staging",
        sibling_suffix: "initbox-k8s-copy",
        record: ".initbox-k8s-copy/copied.json",
        trials: TRIALS,
    };
    let new_files = sigkill_during_recorded_install(&sandbox, &install, |version, dest| {
        account
            .initbox(&sandbox)
            .args(["k8s-copy", "configmap", "-l"])
            .arg(format!("release={version}"))
            .arg(dest)
            .args(["--timeout", "30s"])
    });
    assert_eq!(new_files.len(), 4801);
}
