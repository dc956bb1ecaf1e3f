//! `initbox run`: pipelines end to end against real servers — order, concurrency, restarts,
//! deadlines, the status file, the termination message, signals and the hand-off.

use std::time::Duration;

use crate::support::http_server::{HttpServer, reply};
use crate::support::{Sandbox, listen_later};

fn status(sandbox: &Sandbox) -> serde_json::Value {
    let text = std::fs::read_to_string(sandbox.path("status.json")).expect("a status file");
    serde_json::from_str(&text).expect("the status file is JSON")
}

fn step_status<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["initContainerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no status for {name}: {status}"))
}

#[test]
fn steps_run_in_order_each_after_the_previous_succeeded() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "ok")]);
    let addr = format!("127.0.0.1:{}", crate::support::free_port("127.0.0.1"));
    let _later = listen_later(addr.clone(), Duration::from_millis(800));
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            r#"statusFile: {status}
steps:
  - name: first
    register: {{url: "{url}/1"}}
  - name: wait-for-db
    wait-for-tcp: {{targets: ["{addr}"]}}
  - name: third
    register: {{url: "{url}/3"}}
"#,
            status = sandbox.path("status.json").display(),
            url = server.url(""),
        ),
    );
    let output = sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run();
    output
        .assert_code(0)
        .assert_stderr_contains("running 3 steps [Init:0/3]")
        .assert_stderr_contains("step first completed in")
        .assert_stderr_contains("[Init:1/3]")
        .assert_stderr_contains("[wait-for-db] waiting for")
        .assert_stderr_contains("all 3 steps completed in")
        .assert_stderr_contains("[Completed]");
    // The server saw /1 before /3, and /3 only after the port (opened later) was ready.
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/1", "/3"]);
    let stderr = &output.stderr;
    let ready = stderr.find("is ready after").unwrap();
    let third = stderr.find("step third (register) started").unwrap();
    assert!(ready < third, "{stderr}");

    let status = status(&sandbox);
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["status"], "Completed");
    for name in ["first", "wait-for-db", "third"] {
        let step = step_status(&status, name);
        assert_eq!(step["ready"], true);
        assert_eq!(step["state"]["terminated"]["exitCode"], 0);
        assert_eq!(step["state"]["terminated"]["reason"], "Completed");
    }
}

#[test]
fn steps_without_mutual_needs_run_at_the_same_time() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        r#"steps:
  - name: a
    sleep: {duration: 1}
    needs: []
  - name: b
    sleep: {duration: 1}
    needs: []
  - name: after-both
    sleep: {duration: 0}
    needs: [a, b]
"#,
    );
    let output = sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run();
    output.assert_code(0);
    let stderr = &output.stderr;
    let b_started = stderr.find("step b (sleep) started").unwrap();
    let a_done = stderr.find("step a completed").unwrap();
    let last_started = stderr.find("step after-both (sleep) started").unwrap();
    let b_done = stderr.find("step b completed").unwrap();
    assert!(b_started < a_done, "b must start before a ends:\n{stderr}");
    assert!(last_started > a_done && last_started > b_done, "{stderr}");
}

#[test]
fn on_failure_restarts_a_failing_step_until_it_succeeds() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply(404, "not yet"),
        reply(404, "not yet"),
        reply(201, "registered"),
    ]);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            r#"restartPolicy: OnFailure
backoff: {{initial: 100ms, max: 200ms}}
statusFile: {status}
steps:
  - name: register
    register: {{url: "{url}"}}
"#,
            status = sandbox.path("status.json").display(),
            url = server.url("/register"),
        ),
    );
    let output = sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run();
    output
        .assert_code(0)
        .assert_stderr_contains("restart 1 in 0ms [Init:CrashLoopBackOff]")
        .assert_stderr_contains("restart 2 in")
        .assert_stderr_contains("started (restart 2)");
    assert_eq!(server.requests().len(), 3);
    let status = status(&sandbox);
    let step = step_status(&status, "register");
    assert_eq!(step["restartCount"], 2);
    assert_eq!(step["lastState"]["terminated"]["exitCode"], 1);
    assert_eq!(step["lastState"]["terminated"]["reason"], "Error");
    assert_eq!(step["state"]["terminated"]["reason"], "Completed");
}

#[test]
fn never_stops_at_the_first_failure_with_its_exit_code_and_message() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(404, "no such route")]);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            r#"restartPolicy: Never
statusFile: {status}
steps:
  - name: register
    register: {{url: "{url}"}}
  - name: never-runs
    sleep: {{duration: 0}}
"#,
            status = sandbox.path("status.json").display(),
            url = server.url("/register"),
        ),
    );
    let log = sandbox.path("termination-log");
    let output = sandbox
        .initbox()
        .arg("run")
        .arg("-f")
        .arg(&pipeline)
        .arg("--termination-log")
        .arg(&log)
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("[Init:Error]")
        .assert_stderr_contains("error: step register (register): ")
        .assert_stderr_contains("HTTP 404 Not Found: no such route");
    assert_eq!(server.requests().len(), 1);
    assert!(!output.stderr.contains("never-runs (sleep) started"));
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(
        message.starts_with("Init:Error: step register (register): "),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1);
    let status = status(&sandbox);
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["status"], "Init:Error");
    let failed = step_status(&status, "register");
    assert_eq!(failed["state"]["terminated"]["exitCode"], 1);
    let pending = step_status(&status, "never-runs");
    assert_eq!(pending["state"]["waiting"]["reason"], "PodInitializing");
}

#[test]
fn a_failure_cancels_running_siblings() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            r#"restartPolicy: Never
statusFile: {status}
steps:
  - name: slow
    sleep: {{duration: 60}}
    needs: []
  - name: broken
    wait-for-tcp: {{targets: ["127.0.0.1:1"], timeout: 200ms}}
    needs: []
"#,
            status = sandbox.path("status.json").display(),
        ),
    );
    let output = sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run();
    output.assert_code(124);
    assert!(
        output.elapsed < Duration::from_secs(30),
        "{:?}",
        output.elapsed
    );
    let status = status(&sandbox);
    let slow = step_status(&status, "slow");
    assert_eq!(slow["state"]["terminated"]["reason"], "Cancelled");
    let broken = step_status(&status, "broken");
    assert_eq!(broken["state"]["terminated"]["exitCode"], 124);
}

#[test]
fn the_active_deadline_ends_everything_with_124() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "activeDeadline: 1s\nstatusFile: {}\nsteps:\n  - name: long\n    sleep: {{duration: 60}}\n",
            sandbox.path("status.json").display()
        ),
    );
    let output = sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run();
    output
        .assert_code(124)
        .assert_stderr_contains("the pipeline's activeDeadline of 1s passed");
    assert!(output.elapsed < Duration::from_secs(30));
    let status = status(&sandbox);
    assert_eq!(
        step_status(&status, "long")["state"]["terminated"]["reason"],
        "DeadlineExceeded"
    );
}

#[test]
fn a_step_timeout_bounds_one_step() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "restartPolicy: Never\nsteps:\n  - name: long\n    sleep: {duration: 60}\n    timeout: 300ms\n",
    );
    sandbox
        .initbox()
        .arg("run")
        .arg("-f")
        .arg(&pipeline)
        .run()
        .assert_code(124)
        .assert_stderr_contains("the step's timeout of 300ms passed");
}

#[test]
fn validation_errors_are_78_with_file_line_and_column_and_nothing_runs() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "ok")]).never_called();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: register\n    register: {{url: \"{}\"}}\n  - name: typo\n    wait-for-tcp: {{targets: [\"db:5432\"], timeot: 2m}}\n",
            server.url("/r")
        ),
    );
    let output = sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run();
    output.assert_code(78).assert_stderr_contains(&format!(
        "{}:5:50: wait-for-tcp: unknown key 'timeot'",
        pipeline.display()
    ));
    assert!(
        server.requests().is_empty(),
        "nothing runs before validation passes"
    );
    let check = sandbox.check_pipeline(&pipeline);
    check.assert_code(78);

    let valid = sandbox.write(
        "valid.yaml",
        &format!(
            "steps:\n  - name: r\n    register: {{url: \"{}\"}}\n",
            server.url("/r")
        ),
    );
    sandbox
        .check_pipeline(&valid)
        .assert_code(0)
        .assert_stderr_contains("is valid: 1 step");
    assert!(server.requests().is_empty(), "--check runs nothing");
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(sandbox.path("missing.yaml"))
        .run()
        .assert_code(78)
        .assert_stderr_contains("reading the pipeline");
}

#[test]
fn sigterm_ends_the_run_with_143_and_a_final_status() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "statusFile: {}\nsteps:\n  - name: long\n    sleep: {{duration: 60}}\n",
            sandbox.path("status.json").display()
        ),
    );
    let log = sandbox.path("termination-log");
    let running = sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .arg("--termination-log")
        .arg(&log)
        .spawn();
    running.wait_for_stderr("step long (sleep) started", Duration::from_secs(30));
    running.signal("TERM");
    let output = running.wait();
    output.assert_code(143);
    let status = status(&sandbox);
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["message"], "interrupted by SIGTERM");
    let step = step_status(&status, "long");
    assert_eq!(step["state"]["terminated"]["exitCode"], 143);
    assert_eq!(step["state"]["terminated"]["reason"], "Interrupted");
    let message = std::fs::read_to_string(&log).unwrap();
    assert!(message.contains("interrupted by SIGTERM"), "{message}");
}

#[test]
fn hands_over_to_the_command_after_success_and_reads_stdin() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "steps:\n  - name: nap\n    sleep: {duration: 0}\n",
    );
    let output = sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .args(["--", "echo", "app started"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("[PodInitializing]");
    assert_eq!(output.stdout, "app started\n");

    let mut child = std::process::Command::new(crate::support::binary())
        .args(["run", "-f", "-"])
        .env("INITBOX_HOSTS_FILE", sandbox.path("hosts"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(b"steps:\n  - name: from-stdin\n    sleep: {duration: 0}\n")
            .unwrap();
    }
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
}

#[test]
fn variables_come_from_the_environment_and_the_env_map_once() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "ok")]);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            r#"env:
  BASE: "{url}"
steps:
  - name: register
    register:
      url: "$(BASE)/register"
      form: {{instance: "$(POD_NAME)", literal: "$$(POD_NAME)"}}
"#,
            url = server.url("")
        ),
    );
    sandbox
        .initbox()
        .env("POD_NAME", "web-7d9f")
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0);
    let request = server.requests().pop().unwrap();
    assert_eq!(request.path, "/register");
    assert_eq!(
        request.body_text(),
        "instance=web-7d9f&literal=%24%28POD_NAME%29"
    );
}

#[test]
fn a_whole_init_sequence_against_real_servers() {
    use crate::support::dns_server::DnsServer;
    use crate::support::git_server::{TestRepo, git};
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let repo = TestRepo::create(&sandbox.path("src"), "config");
    // The repository carries a template; the pipeline clones it, then renders it.
    std::fs::write(
        repo.path.join("app.conf.j2"),
        "db = {{ db_host }}:{{ env.DB_PORT }}\n",
    )
    .unwrap();
    git(&repo.path, &["add", "app.conf.j2"]);
    git(&repo.path, &["commit", "-q", "-m", "template"]);
    let server = HttpServer::start(vec![reply(200, "ok")]);
    let port = crate::support::free_port("127.0.0.1");
    let _db = listen_later(format!("127.0.0.1:{port}"), Duration::from_millis(500));
    let dns_clone = std::sync::Arc::new(dns);
    let adder = {
        let dns = dns_clone.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            dns.add_a("mydb.test", "127.0.0.1");
        })
    };
    let work = sandbox.path("work");
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            r#"env:
  DB_PORT: "{port}"
statusFile: {status}
steps:
  - name: init-mydb-dns
    wait-for-dns: {{names: [mydb.test], nameserver: ["{ns}"]}}
  - name: init-mydb-port
    wait-for-tcp: {{targets: ["127.0.0.1:$(DB_PORT)"]}}
  - name: clone
    git-clone: {{repo: "{repo}", dest: {work}/config}}
    needs: []
  - name: render
    template: {{src: {work}/config/app.conf.j2, dest: {work}/app.conf, set: {{db_host: mydb.test}}}}
    needs: [clone, init-mydb-port]
  - name: register
    register: {{url: "{url}", form: {{instance: "$(POD_NAME)"}}}}
"#,
            ns = dns_clone.nameserver(),
            status = sandbox.path("status.json").display(),
            repo = repo.file_url(),
            work = work.display(),
            url = server.url("/register"),
        ),
    );
    let output = sandbox
        .initbox()
        .env("POD_NAME", "web-0")
        .args(["run", "-f"])
        .arg(&pipeline)
        .run();
    adder.join().unwrap();
    output
        .assert_code(0)
        .assert_stderr_contains("all 5 steps completed");
    assert_eq!(
        std::fs::read_to_string(work.join("app.conf")).unwrap(),
        format!("db = mydb.test:{port}\n")
    );
    assert_eq!(git(&work.join("config"), &["status", "--porcelain"]), "");
    assert_eq!(server.requests()[0].body_text(), "instance=web-0");
    let status = status(&sandbox);
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["initContainerStatuses"].as_array().unwrap().len(), 5);
}

#[test]
fn every_example_pipeline_is_valid() {
    let sandbox = Sandbox::new();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipelines");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        sandbox
            .initbox()
            // What the Downward API and the Service environment give a pod.
            .env("POD_NAME", "web-0")
            .env("POD_IP", "10.1.2.3")
            .env("MANAGEMENT_SERVICE_HOST", "10.96.0.20")
            .env("MANAGEMENT_SERVICE_PORT", "80")
            .args(["run", "--check", "-f"])
            .arg(&path)
            .run()
            .assert_code(0);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} example pipelines");

    // The pipeline inside the ConfigMap example, too.
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/kubernetes/pipeline-configmap.yaml"),
    )
    .unwrap();
    let embedded: String = manifest
        .split("pipeline.yaml: |\n")
        .nth(1)
        .and_then(|rest| rest.split("\n---").next())
        .expect("the ConfigMap holds pipeline.yaml")
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    let path = sandbox.write("configmap-pipeline.yaml", &embedded);
    sandbox
        .initbox()
        .env("POD_NAME", "web-0")
        .env("POD_IP", "10.1.2.3")
        .env("MANAGEMENT_SERVICE_HOST", "10.96.0.20")
        .env("MANAGEMENT_SERVICE_PORT", "80")
        .args(["run", "--check", "-f"])
        .arg(&path)
        .run()
        .assert_code(0)
        .assert_stderr_contains("is valid: 5 steps");
}

#[test]
fn secrets_stay_out_of_the_status_file_and_the_termination_message() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(403, "token tok-5ecret-42 is not allowed")]);
    let token = sandbox.write("token", "tok-5ecret-42\n");
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "restartPolicy: Never\nstatusFile: {}\nsteps:\n  - name: register\n    register: {{url: \"{}\", bearer-token-file: {}}}\n",
            sandbox.path("status.json").display(),
            server.url("/r"),
            token.display()
        ),
    );
    let log = sandbox.path("termination-log");
    let output = sandbox
        .initbox()
        .args(["run", "-v", "-f"])
        .arg(&pipeline)
        .arg("--termination-log")
        .arg(&log)
        .run();
    output.assert_code(1);
    let status_text = std::fs::read_to_string(sandbox.path("status.json")).unwrap();
    let message = std::fs::read_to_string(&log).unwrap();
    for (what, text) in [
        ("stderr", &output.stderr),
        ("status file", &status_text),
        ("termination message", &message),
    ] {
        assert!(
            !text.contains("tok-5ecret-42"),
            "the token leaked in the {what}:\n{text}"
        );
    }
    assert!(
        message.contains("HTTP 403 Forbidden: token *** is not allowed"),
        "{message}"
    );
}

/// A pipeline (`top` keys, then one step `db` with `step` keys) that waits for a port where
/// nothing listens.
fn wait_on_a_refused_port(top: &str, step: &str) -> crate::support::Output {
    let sandbox = Sandbox::new();
    let port = crate::support::free_port("127.0.0.1");
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "{top}steps:\n  - name: db\n    wait-for-tcp: {{targets: [\"127.0.0.1:{port}\"]}}\n{step}"
        ),
    );
    sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run()
}

#[test]
fn a_step_timeout_is_the_limit_its_task_announces_and_keeps_with_its_last_error() {
    let output = wait_on_a_refused_port("restartPolicy: Never\n", "    timeout: 700ms\n");
    output
        .assert_code(124)
        .assert_stderr_contains("(tcp, timeout 700ms)")
        .assert_stderr_contains("last error: connection refused");
    assert!(!output.stderr.contains("timeout 5m"), "{}", output.stderr);
}

#[test]
fn the_active_deadline_names_the_running_step_and_its_last_error_without_a_restart() {
    let output = wait_on_a_refused_port("activeDeadline: 800ms\n", "");
    output
        .assert_code(124)
        .assert_stderr_contains(
            "the pipeline's activeDeadline of 800ms passed while step db (wait-for-tcp) was running",
        )
        .assert_stderr_contains("last error: connection refused");
    assert!(!output.stderr.contains("restart 1"), "{}", output.stderr);
    // The step starts a moment after the pipeline: what is left of the deadline, not 5m.
    assert!(!output.stderr.contains("timeout 5m"), "{}", output.stderr);
    assert!(
        output.stderr.contains("(tcp, timeout 7") || output.stderr.contains("(tcp, timeout 800ms)"),
        "{}",
        output.stderr
    );
}

#[test]
fn one_step_is_reported_as_one_step() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "steps:\n  - name: nap\n    sleep: {duration: 0}\n",
    );
    let output = sandbox.initbox().arg("run").arg("-f").arg(&pipeline).run();
    output
        .assert_code(0)
        .assert_stderr_contains("the step completed in");
    assert!(!output.stderr.contains("1 steps"), "{}", output.stderr);
}

#[test]
fn check_warns_about_variables_only_the_pod_has_and_can_be_made_strict() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "env:\n  BASE: \"http://$(MANAGEMENT_SERVICE_HOST):$(MANAGEMENT_SERVICE_PORT)\"\nsteps:\n  - name: db\n    wait-for-tcp: {targets: [\"$(DB_HOST):5432\"]}\n  - name: register\n    register: {url: \"$(BASE)/register\", form: {ip: \"$(POD_IP)\"}}\n",
    );
    let output = sandbox.check_pipeline(&pipeline);
    output
        .assert_code(0)
        .assert_stderr_contains("is valid: 2 steps")
        .assert_stderr_contains(
            "$(DB_HOST), $(MANAGEMENT_SERVICE_HOST), $(MANAGEMENT_SERVICE_PORT), $(POD_IP)",
        );
    // Structure is still checked in full: a real mistake next to an unset variable is 78.
    let broken = sandbox.write(
        "broken.yaml",
        "steps:\n  - name: db\n    wait-for-tcp: {targets: [\"$(DB_HOST):5432\", \"nocolon\"]}\n  - name: x\n    sleep: {duration: soon}\n",
    );
    sandbox
        .check_pipeline(&broken)
        .assert_code(78)
        .assert_stderr_contains("sleep.duration");
    // A value that cannot be checked without the variable is a warning naming its place.
    let whole = sandbox.write(
        "whole.yaml",
        "steps:\n  - name: db\n    wait-for-tcp: {targets: [\"$(DB_ADDRESS)\"]}\n",
    );
    sandbox
        .check_pipeline(&whole)
        .assert_code(0)
        .assert_stderr_contains("whole.yaml:3:29: step 'db', wait-for-tcp.targets: not checked");
    sandbox
        .initbox()
        .args(["run", "--check", "--require-vars", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(78)
        .assert_stderr_contains("undefined variable $(MANAGEMENT_SERVICE_HOST)");
    // Running is never lenient.
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(78)
        .assert_stderr_contains("undefined variable $(DB_HOST)");
}

#[test]
fn an_unwritable_termination_log_stops_the_run_before_its_first_step() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "steps:\n  - name: nap\n    sleep: {duration: 0}\n",
    );
    let output = sandbox
        .initbox()
        .args(["run", "--termination-log"])
        .arg(sandbox.path("missing-dir/termination-log"))
        .arg("-f")
        .arg(&pipeline)
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("cannot write the termination message to")
        .assert_stderr_contains("missing-dir/termination-log: no such file or directory");
    assert!(!output.stderr.contains("started"), "{}", output.stderr);
    // A writable one is checked without leaving a file behind when the run succeeds.
    let log = sandbox.path("termination-log");
    sandbox
        .initbox()
        .args(["run", "--termination-log"])
        .arg(&log)
        .arg("-f")
        .arg(&pipeline)
        .run()
        .assert_code(0);
    assert!(!log.exists());
}

#[test]
fn check_refuses_what_the_run_would_refuse_flag_combinations_and_json_included() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "steps:\n  - name: gone\n    ping: {hosts: [db], count: 1, invert: true}\n  - name: bad-json\n    register: {url: \"http://api/r\", json: \"{a\"}\n  - name: half-credentials\n    git-clone: {repo: \"https://git.example/r.git\", dest: /tmp/r, password-file: /p}\n  - name: never\n    wait-for-tcp: {targets: [\"db:1\"], interval: 0}\n",
    );
    sandbox
        .check_pipeline(&pipeline)
        .assert_code(78)
        .assert_stderr_contains("4 problems in the pipeline")
        .assert_stderr_contains("cannot be used with '--invert'")
        .assert_stderr_contains("not valid JSON")
        .assert_stderr_contains("--username")
        .assert_stderr_contains("must be greater than 0");
}

/// A password file without a user to log in as needs no I/O to be refused: the command line
/// and `run --check` refuse it alike, for every check that logs in with --user.
#[test]
fn a_password_file_without_a_user_is_refused_by_the_cli_and_by_run_check() {
    let sandbox = Sandbox::new();
    let password = sandbox.write("pw", "s3cret");
    let p = password.to_str().unwrap();
    let message = format!("invalid value '{p}' for '--password-file <FILE>': needs --user");
    for (task, key, target, scheme) in [
        ("wait-for-nats", "servers", "bus:4222", "nats"),
        ("wait-for-kafka", "brokers", "kafka:9092", "kafka"),
        ("wait-for-amqp", "servers", "mq:5672", "amqp"),
    ] {
        let output = sandbox
            .initbox()
            .args([task, target, "--password-file", p])
            .run();
        output
            .assert_code(2)
            .assert_stderr_contains(&message)
            .assert_stderr_contains(&format!("a user in the {scheme}:// URL"));
        let pipeline = sandbox.write(
            "p.yaml",
            &format!(
                "steps:\n  - name: login\n    {task}: {{{key}: [\"{target}\"], password-file: {p}}}\n"
            ),
        );
        sandbox
            .check_pipeline(&pipeline)
            .assert_code(78)
            .assert_stderr_contains(&format!("step 'login', {task}.password-file: {message}"));
        // With a user in the URL, the file is the password for that user.
        let pipeline = sandbox.write(
            "p.yaml",
            &format!(
                "steps:\n  - name: login\n    {task}: {{{key}: [\"{scheme}://app@{target}\"], password-file: {p}}}\n"
            ),
        );
        sandbox.check_pipeline(&pipeline).assert_code(0);
    }
}
