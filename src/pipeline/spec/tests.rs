//! The pipeline reader against the CLI: every task read from a file gives the command the
//! command line gives, and every mistake is reported where it stands.

use super::*;
use crate::cli;

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_ok(text: &str) -> Pipeline {
    load("p.yaml", text, no_env).unwrap_or_else(|e| panic!("{e}"))
}

fn load_err(text: &str) -> String {
    match load("p.yaml", text, no_env) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(error) => {
            assert!(matches!(error, Error::Config(_)), "{error:?}");
            error.to_string()
        }
    }
}

fn cli(argv: &[&str]) -> Command {
    cli::parse_from(argv).expect("a valid command line").command
}

#[test]
fn the_cli_and_the_file_give_identical_commands_for_every_task() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("wait-for-dns", &["mydb"], "{names: [mydb]}"),
        (
            "wait-for-tcp",
            &["mydb:5432"],
            r#"{targets: ["mydb:5432"]}"#,
        ),
        (
            "wait-for-postgres",
            &["postgres://app@db/orders", "--tls", "require"],
            r#"{targets: ["postgres://app@db/orders"], tls: require}"#,
        ),
        (
            "wait-for-http",
            &["http://api/healthz"],
            r#"{urls: ["http://api/healthz"]}"#,
        ),
        (
            "wait-for-redis",
            &["redis://app@cache/1", "--role", "replica", "--tls"],
            r#"{targets: ["redis://app@cache/1"], role: replica, tls: true}"#,
        ),
        (
            "wait-for-mysql",
            &["db", "--user", "app", "--tls", "require"],
            r#"{targets: [db], user: app, tls: require}"#,
        ),
        ("ping", &["10.0.0.1"], "{hosts: [10.0.0.1]}"),
        // Checks of issue 15: gRPC health, files, unix sockets, a command.
        (
            "wait-for-grpc",
            &[
                "api:50051",
                "--service",
                "app",
                "--tls",
                "--cacert",
                "/ca.pem",
            ],
            r#"{targets: ["api:50051"], service: [app], tls: true, cacert: [/ca.pem]}"#,
        ),
        (
            "wait-for-k8s",
            &[
                "pods",
                "-l",
                "app=web",
                "--for",
                "condition=Ready",
                "--min",
                "2",
                "-n",
                "shop",
            ],
            r#"{targets: [pods], selector: app=web, for: condition=Ready, min: 2, namespace: shop}"#,
        ),
        (
            "wait-for-file",
            &[
                "/w/ready",
                "--type",
                "file",
                "--non-empty",
                "--contains",
                "^ok$",
            ],
            r#"{paths: [/w/ready], type: file, non-empty: true, contains: "^ok$"}"#,
        ),
        (
            "wait-for-socket",
            &["/run/app.sock"],
            "{paths: [/run/app.sock]}",
        ),
        (
            "wait-for-command",
            &["pg_isready", "-h", "db", "--timeout", "1s"],
            "{command: [pg_isready, -h, db, --timeout, 1s]}",
        ),
        (
            "register",
            &["http://mgmt/register"],
            r#"{url: "http://mgmt/register"}"#,
        ),
        (
            "fetch",
            &["http://web/index.html", "-o", "/w/index.html"],
            r#"{url: "http://web/index.html", output: /w/index.html}"#,
        ),
        (
            "git-clone",
            &["https://git.example/app.git", "/w/app"],
            r#"{repo: "https://git.example/app.git", dest: /w/app}"#,
        ),
        (
            "template",
            &[
                "/t/app.conf.j2",
                "/w/app.conf",
                "--syntax",
                "jinja",
                "--templates",
                "/t/lib",
                "--templates",
                "/t/more",
            ],
            "{src: /t/app.conf.j2, dest: /w/app.conf, syntax: jinja, templates: [/t/lib, /t/more]}",
        ),
        ("sleep", &["5"], "{duration: 5}"),
        // Volume content: link, sysctl, install, write, copy.
        (
            "link",
            &["v2", "/w/current"],
            "{target: v2, link: /w/current}",
        ),
        (
            "sysctl",
            &["vm.max_map_count=262144", "--if-lower"],
            r#"{settings: ["vm.max_map_count=262144"], if-lower: true}"#,
        ),
        ("install", &["/tools"], "{dir: /tools}"),
        (
            "write",
            &["/w/app.conf", "--content", "port=1", "--mode", "0640"],
            r#"{file: /w/app.conf, content: "port=1", mode: "0640"}"#,
        ),
        (
            "copy",
            &["/opt/conf", "/w/", "--exclude", "*.tmp", "--if-absent"],
            r#"{paths: [/opt/conf, /w/], exclude: ["*.tmp"], if-absent: true}"#,
        ),
        (
            "extract",
            &[
                "/dl/app.tgz",
                "/opt/app",
                "--strip-components",
                "1",
                "--include",
                "bin/*",
                "--max-size",
                "100M",
            ],
            r#"{archive: /dl/app.tgz, dest: /opt/app, strip-components: 1, include: ["bin/*"], max-size: 100M}"#,
        ),
        (
            "k8s-copy",
            &[
                "cm/app",
                "secret/db",
                "/w/conf",
                "--items",
                "app.conf=conf/app.conf",
                "--mode",
                "0640",
                "-n",
                "prod",
            ],
            r#"{operands: [cm/app, secret/db, /w/conf], items: ["app.conf=conf/app.conf"], mode: "0640", namespace: prod}"#,
        ),
        // Brokers: NATS, ZooKeeper, Kafka, AMQP.
        (
            "wait-for-nats",
            &["nats://app@bus:4222", "--password-file", "/s/pw", "--tls"],
            r#"{servers: ["nats://app@bus:4222"], password-file: /s/pw, tls: true}"#,
        ),
        (
            "wait-for-zookeeper",
            &["zk-0.zk:2181", "zk-1.zk", "--mode", "leader"],
            r#"{servers: ["zk-0.zk:2181", zk-1.zk], mode: leader}"#,
        ),
        (
            "wait-for-kafka",
            &[
                "kafka-0.kafka:9092,kafka-1.kafka",
                "--min-brokers",
                "2",
                "--user",
                "app",
                "--sasl-mechanism",
                "PLAIN",
                "--tls",
            ],
            r#"{brokers: ["kafka-0.kafka:9092,kafka-1.kafka"], min-brokers: 2, user: app,
                sasl-mechanism: PLAIN, tls: true}"#,
        ),
        (
            "wait-for-amqp",
            &["amqps://mq/orders", "--user", "app", "--vhost", "/"],
            r#"{servers: ["amqps://mq/orders"], user: app, vhost: /}"#,
        ),
        // Volume preparation: chown, chmod, mkdir, remove.
        (
            "chown",
            &["-R", "--exclude", "lost+found", "1001:1001", "/data"],
            "{owner: '1001:1001', paths: [/data], recursive: true, exclude: [lost+found]}",
        ),
        (
            "chmod",
            &["-R", "--if-root-differs", "g+rwX", "/data"],
            "{mode: g+rwX, paths: [/data], recursive: true, if-root-differs: true}",
        ),
        (
            "mkdir",
            &["--mode", "0750", "--owner", "1001:", "/data/db"],
            "{paths: [/data/db], mode: '0750', owner: '1001:'}",
        ),
        (
            "remove",
            &["--contents", "--one-file-system", "/data"],
            "{paths: [/data], contents: true, one-file-system: true}",
        ),
        (
            "replace",
            &[
                "--literal",
                "__HOST__",
                "db",
                "--regex",
                "^port=.*",
                "port=5432",
                "--expect-count",
                "2",
                "/config/app.conf",
            ],
            "{files: [/config/app.conf], literal: {__HOST__: db}, regex: [['^port=.*', port=5432]], expect-count: 2}",
        ),
    ];
    let mut covered: Vec<&str> = cases.iter().map(|(task, ..)| *task).collect();
    covered.sort();
    let mut all = task_names();
    all.sort();
    assert_eq!(covered, all, "every task needs a case here");
    for (task, args, body) in cases {
        let mut argv = vec!["initbox", *task];
        argv.extend_from_slice(args);
        let from_cli = cli(&argv);
        let pipeline = load_ok(&format!("steps:\n  - name: s\n    {task}: {body}\n"));
        assert_eq!(
            format!("{:?}", pipeline.steps[0].command),
            format!("{from_cli:?}"),
            "{task}"
        );
    }
}

/// The `pipeline` fuzz target mutates with `fuzz/pipeline.dict`: a task or key missing there
/// is fuzzed blind, so a new command's names must be added to it.
#[test]
fn the_fuzz_dictionary_knows_every_task_and_key() {
    let dictionary = include_str!("../../../fuzz/pipeline.dict");
    let cli = cli::command();
    let mut missing = Vec::new();
    for task in task_names() {
        let command = cli.find_subcommand(&task).expect("a task is a subcommand");
        let keys = command
            .get_arguments()
            .filter(|arg| arg.get_id() != "help")
            .map(|arg| {
                arg.get_long()
                    .map_or_else(|| arg.get_id().to_string(), str::to_owned)
            });
        for word in std::iter::once(task.clone()).chain(keys) {
            if !dictionary.contains(&format!("\"{word}\"")) {
                missing.push(format!("\"{word}\" (of {task})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fuzz/pipeline.dict lacks: {}",
        missing.join(", ")
    );
}

#[test]
fn keys_map_to_flags_lists_maps_and_switches() {
    let pipeline = load_ok(
        r#"steps:
  - name: s
    wait-for-tcp: {targets: ["a:1", "b:2"], timeout: 2m, invert: true, nameserver: [10.0.0.10]}
  - name: r
    register:
      url: http://mgmt/register
      form: {instance: web-1, ip: 10.1.2.3}
      header: {X-Team: platform}
"#,
    );
    let expected = cli(&[
        "initbox",
        "wait-for-tcp",
        "a:1",
        "b:2",
        "--timeout",
        "2m",
        "--invert",
        "--nameserver",
        "10.0.0.10",
    ]);
    assert_eq!(
        format!("{:?}", pipeline.steps[0].command),
        format!("{expected:?}")
    );
    let expected = cli(&[
        "initbox",
        "register",
        "http://mgmt/register",
        "--form",
        "instance=web-1",
        "--form",
        "ip=10.1.2.3",
        "--header",
        "X-Team: platform",
    ]);
    assert_eq!(
        format!("{:?}", pipeline.steps[1].command),
        format!("{expected:?}")
    );
}

#[test]
fn order_needs_and_step_settings() {
    let pipeline = load_ok(
        "restartPolicy: Always
backoff: {initial: 2s, max: 30s}
activeDeadline: 10m
steps:
  - name: a
    sleep: {duration: 0}
  - name: b
    sleep: {duration: 0}
    retries: 3
    timeout: 1m
  - name: c
    sleep: {duration: 0}
    needs: []
  - name: d
    sleep: {duration: 0}
    needs: [a, c]
",
    );
    assert_eq!(pipeline.restart_policy, RestartPolicy::OnFailure);
    assert_eq!(pipeline.backoff.initial, StdDuration::from_secs(2));
    assert_eq!(pipeline.active_deadline, Some(StdDuration::from_secs(600)));
    let needs: Vec<Vec<usize>> = pipeline.steps.iter().map(|s| s.needs.clone()).collect();
    assert_eq!(needs, [vec![], vec![0], vec![], vec![0, 2]]);
    assert_eq!(pipeline.steps[1].retries, Some(3));
    assert_eq!(pipeline.steps[1].timeout, Some(StdDuration::from_secs(60)));
}

#[test]
fn variables_expand_from_the_environment_and_the_env_map() {
    let text = r#"env:
  HOST: mgmt.$(DOMAIN)
steps:
  - name: r
    register: {url: "http://$(HOST)/r", form: {note: "$$(LITERAL)"}}
"#;
    let pipeline = load("p.yaml", text, |var| {
        (var == "DOMAIN").then(|| "svc".to_owned())
    })
    .unwrap();
    let expected = cli(&[
        "initbox",
        "register",
        "http://mgmt.svc/r",
        "--form",
        "note=$(LITERAL)",
    ]);
    assert_eq!(
        format!("{:?}", pipeline.steps[0].command),
        format!("{expected:?}")
    );
    let error = load_err("steps:\n  - name: r\n    register: {url: \"http://$(MGMT_HOST)/r\"}\n");
    assert_eq!(
        error,
        "p.yaml:3:21: step 'r', register.url: undefined variable $(MGMT_HOST)"
    );
}

#[test]
fn every_mistake_is_reported_with_its_position() {
    let cases: &[(&str, &str)] = &[
        (
            "steps:\n  - name: a\n    sleep: {duration: 1\n",
            "p.yaml:3:12: unclosed",
        ),
        ("step:\n  - name: a\n", "p.yaml:1:"),
        (
            "steps:\n  - name: a\n    slep: {duration: 1}\n",
            "p.yaml:3:11: step 'a': unknown task or key 'slep'",
        ),
        (
            "steps:\n  - name: a\n    sleep: {duration: 1, colour: red}\n",
            "p.yaml:3:34: sleep: unknown key 'colour'",
        ),
        (
            "steps:\n  - name: a\n    sleep: {duration: 1}\n    wait-for-dns: {names: [x]}\n",
            "p.yaml:4:19: step 'a' has two tasks",
        ),
        (
            "steps:\n  - name: a\n    sleep: {duration: 1}\n  - name: a\n    sleep: {duration: 1}\n",
            "p.yaml:4:5: two steps are named 'a'",
        ),
        (
            "steps:\n  - name: a\n    sleep: {duration: 1}\n    needs: [b]\n",
            "p.yaml:4:13: step 'a' needs 'b', and there is no step of that name",
        ),
        (
            "steps:\n  - name: a\n    sleep: {duration: 1}\n    needs: [b]\n  - name: b\n    sleep: {duration: 1}\n",
            "the steps' needs form a cycle: a → b → a",
        ),
        (
            "steps:\n  - name: a\n    sleep: {duration: soon}\n",
            "p.yaml:3:23: step 'a', sleep.duration",
        ),
        (
            "steps:\n  - name: a\n    wait-for-tcp: {targets: [\"db:5432\"], timeout: soonish}\n",
            "p.yaml:3:51: step 'a', wait-for-tcp.timeout",
        ),
        (
            "steps:\n  - name: a\n    sleep: {duration: 1}\n    timeout: later\n",
            "p.yaml:4:14: timeout:",
        ),
        (
            "restartPolicy: Sometimes\nsteps:\n  - name: a\n    sleep: {duration: 1}\n",
            "p.yaml:1:16: restartPolicy: expected Never, OnFailure or Always",
        ),
        (
            "activeDeadline: -1s\nsteps:\n  - name: a\n    sleep: {duration: 1}\n",
            "p.yaml:1:17: activeDeadline",
        ),
        (
            "steps:\n  - name: a\n    git-clone: {repo: \"https://h/r\"}\n",
            "p.yaml:3:16: step 'a': git-clone needs 'dest'",
        ),
        (
            "steps:\n  - name: a\n    run: {file: x.yaml}\n",
            "a step cannot run a pipeline",
        ),
        (
            "steps:\n  - name: a\n    wait-for-tcp: {targets: [\"db:5432\"], invert: maybe}\n",
            "wait-for-tcp.invert: expected true or false",
        ),
        (
            "colour: red\nsteps:\n  - name: a\n    sleep: {duration: 1}\n",
            "p.yaml:1:9: unknown key 'colour'",
        ),
        ("steps: []\n", "steps: the list is empty"),
    ];
    for (text, expected) in cases {
        let error = load_err(text);
        assert!(
            error.contains(expected),
            "expected {expected:?} in {error:?}"
        );
    }
    // All problems at once.
    let error =
        load_err("steps:\n  - name: a\n    slep: {}\n  - name: b\n    sleep: {duration: x}\n");
    assert!(error.starts_with("2 problems in the pipeline:"), "{error}");
}
