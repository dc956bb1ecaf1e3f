//! The malformed input users actually type, for every command, in one table: each must end
//! with the documented exit code (2 usage, 78 configuration, 1 a task that cannot succeed)
//! and one error message that names the culprit — never a hang, a panic or a retry loop.
//!
//! The unreadable-file, read-only and full-disk rows need root (a mount namespace with a
//! read-only tmpfs and a one-page tmpfs, and uid 65532 for unreadable files).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::support::git_server::TestRepo;
use crate::support::http_server::{HttpServer, reply_bytes};
use crate::support::{
    COMMANDS, Output, Sandbox, assert_covers, commands_taking, need_root, nonroot_copy, path_str,
};

/// One malformed invocation: the arguments, the exit code, the words the error must contain.
struct Bad {
    args: Vec<String>,
    code: i32,
    culprit: String,
}

fn bad(code: i32, args: &[&str], culprit: &str) -> Bad {
    Bad {
        args: args.iter().map(|s| s.to_string()).collect(),
        code,
        culprit: culprit.to_owned(),
    }
}

/// The error message: from the one line that says `error:` up to the next blank line (clap
/// lists missing arguments on indented lines below it).
fn error_message(output: &Output) -> String {
    let lines: Vec<&str> = output.stderr.lines().collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("error:") || lines[i].starts_with("initbox: error:"))
        .collect();
    assert_eq!(
        starts.len(),
        1,
        "expected exactly one error message; stderr:\n{}",
        output.stderr
    );
    lines[starts[0]..]
        .iter()
        .take_while(|line| !line.trim().is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

fn check(case: &Bad, output: &Output) {
    assert_eq!(
        output.code, case.code,
        "initbox {:?}: exit code; stderr:\n{}",
        case.args, output.stderr
    );
    let message = error_message(output);
    assert!(
        message.contains(&case.culprit),
        "initbox {:?}: the error does not name {:?}:\n{message}",
        case.args,
        case.culprit
    );
}

/// [`check_all`] for a table that has a row for every command (the registry's), which it
/// proves first.
fn check_all_commands(sandbox: &Sandbox, cases: &[Bad]) {
    let covered: Vec<&str> = cases
        .iter()
        .filter_map(|case| {
            case.args
                .iter()
                .find(|arg| COMMANDS.contains(&arg.as_str()))
                .map(String::as_str)
        })
        .collect();
    assert_covers(&covered, &COMMANDS, "the table of usage errors");
    check_all(sandbox, cases);
}

fn check_all(sandbox: &Sandbox, cases: &[Bad]) {
    for case in cases {
        check(case, &sandbox.initbox().args(&case.args).run());
    }
}

#[test]
fn usage_errors_exit_2_naming_the_bad_value() {
    let sandbox = Sandbox::new();
    check_all_commands(
        &sandbox,
        &[
            // wait-for-tcp
            bad(2, &["wait-for-tcp"], "<HOST:PORT>"),
            bad(2, &["wait-for-tcp", ""], "'' is not a valid HOST:PORT"),
            bad(
                2,
                &["wait-for-tcp", "mydb"],
                "'mydb' is not a valid HOST:PORT: missing :PORT",
            ),
            bad(
                2,
                &["wait-for-tcp", "mydb:"],
                "'mydb:' is not a valid HOST:PORT",
            ),
            bad(2, &["wait-for-tcp", "mydb:0"], "port 0"),
            bad(2, &["wait-for-tcp", "mydb:65536"], "'mydb:65536'"),
            bad(
                2,
                &["wait-for-tcp", "::1:80"],
                "IPv6 addresses need brackets",
            ),
            bad(
                2,
                &["wait-for-tcp", "[::1]"],
                "missing :PORT after the IPv6 address",
            ),
            bad(
                2,
                &["wait-for-tcp", "a:1", "--timeout", "soon"],
                "invalid duration 'soon'",
            ),
            bad(
                2,
                &["wait-for-tcp", "a:1", "--timeout=-5s"],
                "negative duration '-5s'",
            ),
            bad(
                2,
                &["wait-for-tcp", "a:1", "--timeout", "5x"],
                "unknown time unit \"x\"",
            ),
            bad(
                2,
                &["wait-for-tcp", "a:1", "--interval", "0"],
                "'--interval <DURATION>': must be greater than 0",
            ),
            bad(
                2,
                &["wait-for-tcp", "a:1", "--interval", "inf"],
                "invalid duration 'inf'",
            ),
            // wait-for-redis
            bad(2, &["wait-for-redis"], "<HOST[:PORT]|URL>"),
            bad(2, &["wait-for-redis", "cache:0"], "port 0"),
            bad(
                2,
                &["wait-for-redis", "http://cache/"],
                "redis:// or rediss://",
            ),
            bad(
                2,
                &["wait-for-redis", "redis://cache/x"],
                "not a Redis database number",
            ),
            bad(
                2,
                &["wait-for-redis", "cache", "--role", "leader"],
                "master, replica",
            ),
            // wait-for-mysql
            bad(2, &["wait-for-mysql"], "<HOST[:PORT]|URL>"),
            bad(2, &["wait-for-mysql", "db:0"], "port 0"),
            bad(
                2,
                &["wait-for-mysql", "postgres://db/x"],
                "mysql:// or mariadb://",
            ),
            bad(
                2,
                &["wait-for-mysql", "db", "--tls", "prefer"],
                "disable, require",
            ),
            bad(
                2,
                &["wait-for-mysql", "db", "--database", "x"],
                "needs a login",
            ),
            // wait-for-dns
            bad(2, &["wait-for-dns", ""], "the name is empty"),
            bad(
                2,
                &["wait-for-dns", "bad..name"],
                "'bad..name' cannot be a DNS name: it has an empty label",
            ),
            bad(
                2,
                &["wait-for-dns", "http://mydb"],
                "'http://mydb' is not a DNS name",
            ),
            bad(
                2,
                &["wait-for-dns", "mydb", "--type", "AXFR"],
                "invalid value 'AXFR'",
            ),
            bad(
                2,
                &["wait-for-dns", "mydb", "--nameserver", "1.2.3.4:99999"],
                "nameserver '1.2.3.4:99999'",
            ),
            // wait-for-postgres
            bad(2, &["wait-for-postgres"], "<HOST[:PORT]|URL>"),
            bad(
                2,
                &["wait-for-postgres", "postgres://app:hunter2@db/orders"],
                "--password-file (or PGPASSWORD)",
            ),
            bad(
                2,
                &["wait-for-postgres", "db", "--tls", "maybe"],
                "'maybe' is not a TLS mode",
            ),
            bad(
                2,
                &["wait-for-postgres", "postgres://db/x?sslmode=allow"],
                "'allow' is not supported",
            ),
            // wait-for-http
            bad(
                2,
                &["wait-for-http", "http//x"],
                "'http//x' is not a valid URL",
            ),
            bad(2, &["wait-for-http", ""], "'' is not a valid URL"),
            bad(
                2,
                &["wait-for-http", "ftp://x/"],
                "unsupported scheme 'ftp'",
            ),
            bad(
                2,
                &["wait-for-http", "http://x/", "--status", "600"],
                "'600' is not an HTTP status",
            ),
            bad(
                2,
                &["wait-for-http", "http://x/", "--status", "200,2yy"],
                "'2yy' is not an HTTP status",
            ),
            bad(
                2,
                &["wait-for-http", "http://x/", "--header", "NoColon"],
                "header 'NoColon'",
            ),
            bad(
                2,
                &["wait-for-http", "http://x/", "--body-regex", "("],
                "--body-regex",
            ),
            // wait-for-nats
            bad(2, &["wait-for-nats"], "<SERVER>"),
            bad(2, &["wait-for-nats", "nats://bus:0"], "port 0"),
            bad(
                2,
                &["wait-for-nats", "http://bus"],
                "must start with nats://",
            ),
            bad(
                2,
                &["wait-for-nats", "bus", "--password-file", "/p"],
                "invalid value '/p' for '--password-file <FILE>': needs --user",
            ),
            bad(
                2,
                &["wait-for-nats", "bus", "--user", "app"],
                "a login as 'app' needs a password",
            ),
            bad(
                2,
                &[
                    "wait-for-nats",
                    "bus",
                    "--token-file",
                    "/t",
                    "--password-file",
                    "/p",
                ],
                "cannot be used with",
            ),
            // wait-for-zookeeper
            bad(2, &["wait-for-zookeeper"], "<SERVER>"),
            bad(2, &["wait-for-zookeeper", "zk:0"], "port 0"),
            bad(
                2,
                &["wait-for-zookeeper", "zk", "--mode", "candidate"],
                "'candidate' is not a ZooKeeper mode",
            ),
            // wait-for-kafka
            bad(2, &["wait-for-kafka"], "<BROKER>"),
            bad(2, &["wait-for-kafka", "kafka:0"], "port 0"),
            bad(
                2,
                &["wait-for-kafka", "kafka", "--min-brokers", "0"],
                "--min-brokers",
            ),
            bad(
                2,
                &["wait-for-kafka", "kafka", "--password-file", "/p"],
                "invalid value '/p' for '--password-file <FILE>': needs --user",
            ),
            bad(
                2,
                &["wait-for-kafka", "kafka", "--user", "app"],
                "needs a password: use --password-file (or KAFKA_PASSWORD)",
            ),
            bad(
                2,
                &["wait-for-kafka", "kafka", "--sasl-mechanism", "GSSAPI"],
                "'GSSAPI' is not a SASL mechanism",
            ),
            bad(
                2,
                &["wait-for-kafka", "kafka://kafka:9092/orders"],
                "a Kafka broker is only HOST:PORT",
            ),
            bad(
                2,
                &["wait-for-kafka", "amqp://kafka"],
                "must start with kafka://",
            ),
            // wait-for-amqp
            bad(2, &["wait-for-amqp"], "<SERVER>"),
            bad(2, &["wait-for-amqp", "amqp://mq:0/"], "port 0"),
            bad(
                2,
                &["wait-for-amqp", "nats://mq"],
                "must start with amqp://",
            ),
            bad(
                2,
                &["wait-for-amqp", "mq", "--user", "app"],
                "a login as 'app' needs a password",
            ),
            // wait-for-k8s
            bad(2, &["wait-for-k8s"], "<KIND[/NAME]>"),
            bad(2, &["wait-for-k8s", "widget/x"], "unknown kind 'widget'"),
            bad(
                2,
                &["wait-for-k8s", "job/Migrate"],
                "not a valid object name",
            ),
            bad(
                2,
                &["wait-for-k8s", "pods"],
                "name the object (KIND/NAME) or select",
            ),
            bad(
                2,
                &["wait-for-k8s", "job/a", "-l", "app=x"],
                "a selector applies to targets given as a KIND alone",
            ),
            bad(2, &["wait-for-k8s", "job/a", "--min", "2"], "--min counts"),
            bad(
                2,
                &["wait-for-k8s", "job/a", "--for", "finished"],
                "is not a goal",
            ),
            bad(
                2,
                &["wait-for-k8s", "pod/a", "--for", "complete"],
                "only a job completes",
            ),
            bad(
                2,
                &["wait-for-k8s", "job/a", "-n", "Shop"],
                "not a valid namespace",
            ),
            bad(
                2,
                &["wait-for-k8s", "pods", "-l", "=web"],
                "is not a label selector",
            ),
            bad(
                2,
                &["wait-for-k8s", "pod/a", "--for", "jsonpath={.status"],
                "without its '}'",
            ),
            // wait-for-grpc, wait-for-file, wait-for-socket, wait-for-command
            bad(2, &["wait-for-grpc"], "<HOST:PORT>"),
            bad(2, &["wait-for-grpc", "api"], "missing :PORT"),
            bad(
                2,
                &["wait-for-grpc", "api:50051", "--insecure"],
                "'--insecure': only applies with --tls",
            ),
            bad(2, &["wait-for-file"], "<PATH>"),
            bad(2, &["wait-for-file", "/f", "--type", "pipe"], "'pipe'"),
            bad(
                2,
                &["wait-for-file", "/f", "--contains", "("],
                "not a regular expression",
            ),
            bad(2, &["wait-for-socket"], "<PATH>"),
            bad(2, &["wait-for-command"], "<CMD>"),
            bad(
                2,
                &["wait-for-command", "--timeout", "soon", "true"],
                "'soon'",
            ),
            // ping
            bad(2, &["ping"], "<HOST>"),
            bad(2, &["ping", ""], "the host is empty"),
            bad(2, &["ping", "-c", "0", "x"], "--count must be at least 1"),
            bad(
                2,
                &["ping", "--count", "many", "x"],
                "'many' is not a number",
            ),
            bad(2, &["ping", "db:5432"], "ping takes no port"),
            bad(
                2,
                &["ping", "-c", "2", "--invert", "x"],
                "'--count <N>' cannot be used with '--invert'",
            ),
            // register
            bad(2, &["register", "http//x"], "'http//x' is not a valid URL"),
            bad(
                2,
                &["register", "http://x/", "--form", "novalue"],
                "form field 'novalue' must look like KEY=VALUE",
            ),
            bad(
                2,
                &["register", "http://x/", "--json", "{oops"],
                "for '--json <JSON>': not valid JSON",
            ),
            bad(
                2,
                &["register", "http://x/", "--json", "{}", "--form", "a=b"],
                "cannot be used with",
            ),
            bad(
                2,
                &["register", "http://x/", "--expect-status", "2yy"],
                "not an HTTP status",
            ),
            // fetch
            bad(2, &["fetch", "http://x/"], "--output"),
            bad(
                2,
                &["fetch", "http://x/", "-o", "f", "--sha256", "abc"],
                "'abc' is not a SHA-256",
            ),
            bad(
                2,
                &["fetch", "http://x/", "-o", "f", "--mode", "rwx"],
                "'rwx' is not a file mode",
            ),
            bad(
                2,
                &["fetch", "http://x/", "-o", "f", "--mode", "999"],
                "'999' is not a file mode",
            ),
            bad(
                2,
                &["fetch", "http://x/", "-o", "f", "--max-size", "lots"],
                "'lots' is not a size",
            ),
            bad(
                2,
                &["fetch", "ftp://x/", "-o", "f"],
                "unsupported scheme 'ftp'",
            ),
            // git-clone
            bad(2, &["git-clone", "https://h/r.git"], "<DEST>"),
            bad(
                2,
                &["git-clone", "https://h/r.git", "d", "--sparse", "../etc"],
                "must name a directory inside the repository",
            ),
            bad(
                2,
                &["git-clone", "https://h/r.git", "d", "--submodules", "all"],
                "'all'",
            ),
            bad(
                2,
                &["git-clone", "https://h/r.git", "d", "--depth", "all"],
                "--depth",
            ),
            bad(
                2,
                &["git-clone", "https://h/r.git", "d", "--depth", "-1"],
                "'-1'",
            ),
            bad(
                2,
                &["git-clone", "https://h/r.git", "d", "--username", "u"],
                "--username needs --password-file",
            ),
            bad(
                2,
                &["git-clone", "https://h/r.git", "d", "--ref", "a..b"],
                "'a..b' is not a valid branch or tag name",
            ),
            bad(2, &["git-clone", "https://h:0/r.git", "d"], "port 0"),
            bad(
                2,
                &["git-clone", "git@git.example:team/app.git", "d"],
                "--ssh-key-file FILE",
            ),
            // template
            bad(2, &["template", "t.j2"], "<DEST>"),
            bad(
                2,
                &["template", "t.j2", "out", "--set", "novalue"],
                "novalue",
            ),
            bad(
                2,
                &["template", "t.j2", "out", "--data", "d=x.ini"],
                ".json, .yaml, .yml or .toml",
            ),
            bad(2, &["template", "t.j2", "-", "--check"], "--check"),
            bad(2, &["template", "/", "-"], "is a directory"),
            bad(2, &["template", "t", "out", "--syntax", "m4"], "--syntax"),
            bad(
                2,
                &[
                    "template", "t", "out", "--syntax", "envsubst", "--set", "a=1",
                ],
                "envsubst templates see the environment only",
            ),
            bad(
                2,
                &[
                    "template", "t", "out", "--syntax", "envsubst", "--allow", "1A",
                ],
                "'1A' is not a variable name",
            ),
            bad(
                2,
                &["template", "t.j2", "out", "--allow", "A"],
                "--allow chooses the variables of --syntax envsubst",
            ),
            // sleep
            bad(2, &["sleep"], "<DURATION>"),
            bad(2, &["sleep", ""], "empty duration"),
            bad(2, &["sleep", "-5s"], "negative duration '-5s'"),
            bad(2, &["sleep", "soon"], "invalid duration 'soon'"),
            bad(2, &["sleep", "NaN"], "invalid duration 'NaN'"),
            // chown, chmod, mkdir, remove: refused before anything is touched
            bad(2, &["chown"], "<OWNER>"),
            bad(2, &["chown", "1001"], "<PATH>"),
            bad(2, &["chown", "1:2:3", "/data"], "'1:2:3' is not an owner"),
            bad(
                2,
                &["chown", "app user", "/data"],
                "'app user' is not an owner",
            ),
            bad(2, &["chown", "4294967295", "/data"], "out of range"),
            bad(2, &["chmod", "u+q", "/data"], "'u+q' is not a file mode"),
            bad(2, &["chmod", "0758", "/data"], "'0758' is not a file mode"),
            bad(2, &["chmod", "755"], "<PATH>"),
            bad(
                2,
                &["mkdir", "--mode", "rwx", "/data"],
                "'rwx' is not a file mode",
            ),
            bad(
                2,
                &["mkdir", "--owner", ":", "/data"],
                "':' is not an owner",
            ),
            bad(2, &["remove", "/"], "refusing to remove '/'"),
            bad(2, &["remove", "/data/.."], "not '.' or '..'"),
            bad(
                2,
                &["copy", "/a"],
                "2 values required by '<PATH> <PATH>...'",
            ),
            bad(
                2,
                &["copy", "--mode", "999", "/a", "/b"],
                "'999' is not a file mode",
            ),
            bad(2, &["extract", "/a.tgz"], "<DEST>"),
            bad(
                2,
                &["extract", "/a.tgz", "/d", "--strip-components", "-1"],
                "--strip-components",
            ),
            bad(
                2,
                &["extract", "/a.tgz", "/d", "--max-size", "lots"],
                "'lots' is not a size",
            ),
            bad(
                2,
                &["extract", "/a.tgz", "/d", "--include", "["],
                "'[' is not a glob pattern",
            ),
            bad(
                2,
                &["extract", "/a.tgz", "/d", "--max-entries", "many"],
                "--max-entries",
            ),
            bad(
                2,
                &["fetch", "http://x/", "-o", "d", "--strip-components", "1"],
                "--extract",
            ),
            bad(
                2,
                &["fetch", "http://x/", "-o", "-", "--extract"],
                "--extract needs a directory for -o",
            ),
            bad(
                2,
                &[
                    "fetch",
                    "http://x/",
                    "-o",
                    "d",
                    "--extract",
                    "--mode",
                    "0644",
                ],
                "cannot be used with",
            ),
            bad(
                2,
                &["k8s-copy", "cm/app"],
                "name at least one OBJECT, then DEST",
            ),
            bad(
                2,
                &["k8s-copy", "deploy/web", "/d"],
                "k8s-copy copies configmaps and secrets",
            ),
            bad(2, &["k8s-copy", "secret", "/d"], "--selector"),
            bad(
                2,
                &["k8s-copy", "cm/App", "/d"],
                "'App' is not a valid object name",
            ),
            bad(
                2,
                &["k8s-copy", "cm/app", "/d", "--items", "app.conf=../x"],
                "the path must stay inside DEST",
            ),
            bad(
                2,
                &["k8s-copy", "cm/app", "/d", "--items", "../app=x"],
                "not a key that can be a file name",
            ),
            bad(
                2,
                &[
                    "k8s-copy", "cm/app", "/d", "--items", "a=x", "--items", "b=x",
                ],
                "another --items writes the same path",
            ),
            bad(
                2,
                &["k8s-copy", "cm/app", "/d", "--mode", "rw"],
                "'rw' is not a file mode",
            ),
            bad(2, &["install"], "<DIR>"),
            bad(2, &["link", "v2"], "<LINK>"),
            bad(2, &["sysctl", "vm.max_map_count"], "is not KEY=VALUE"),
            bad(2, &["sysctl", "=5"], "'' is not a sysctl key"),
            bad(
                2,
                &["write", "/f"],
                "--content <TEXT>|--from-env <VAR>|--from-file <FILE>",
            ),
            bad(
                2,
                &["write", "/f", "--content", "a", "--from-env", "B"],
                "'--content <TEXT>' cannot be used with '--from-env <VAR>'",
            ),
            bad(
                2,
                &["write", "/f", "--content", "a", "--owner", "x:y:z"],
                "'x:y:z' is not an owner",
            ),
            bad(2, &["replace", "/f"], "--literal <OLD> <NEW> or --regex"),
            bad(2, &["replace", "/f", "--literal", "a"], "--literal"),
            bad(
                2,
                &["replace", "/f", "--regex", "(", "x"],
                "invalid value '(' for '--regex'",
            ),
            bad(
                2,
                &[
                    "replace",
                    "/f",
                    "--literal",
                    "a",
                    "b",
                    "--expect-count",
                    "many",
                ],
                "'many' is not a count",
            ),
            bad(
                2,
                &["replace", "/f", "--literal", "", "b"],
                "the text to replace is empty",
            ),
            // run and the rest
            bad(2, &["run"], "--file"),
            bad(2, &["completions", "tcsh"], "'tcsh'"),
            bad(2, &["man", "no-such-command"], "no-such-command"),
            bad(
                2,
                &["no-such-command"],
                "unrecognized subcommand 'no-such-command'",
            ),
            bad(2, &["--log-format", "xml", "sleep", "0"], "'xml'"),
        ],
    );
}

#[test]
fn configuration_errors_exit_78_naming_the_file_or_variable() {
    let sandbox = Sandbox::new();
    let template = sandbox.write("t.j2", "{{ d }}\n");
    let undefined = sandbox.write("undefined.j2", "line one\nport = {{ port }}\n");
    let syntax = sandbox.write("syntax.j2", "{% if %}\n");
    sandbox.write("bad.yaml", "a: [1\n");
    sandbox.write("bad.json", "{\"a\": }");
    let cycle = sandbox.write(
        "cycle.yaml",
        "steps:\n  - name: a\n    sleep: {duration: 0s}\n    needs: [b]\n\
         \x20 - name: b\n    sleep: {duration: 0s}\n    needs: [a]\n",
    );
    let unknown_task = sandbox.write(
        "unknown.yaml",
        "steps:\n  - name: a\n    wait-for-xyzzy: {}\n",
    );
    let yaml_syntax = sandbox.write("syntax.yaml", "steps: [\n");
    let (t, u, s, c, k, y) = (
        path_str(&template),
        path_str(&undefined),
        path_str(&syntax),
        path_str(&cycle),
        path_str(&unknown_task),
        path_str(&yaml_syntax),
    );
    let out = path_str(sandbox.dir.path()).to_owned() + "/out.conf";
    let bad_yaml = format!("d={}", sandbox.path("bad.yaml").display());
    let bad_json = format!("d={}", sandbox.path("bad.json").display());
    check_all(
        &sandbox,
        &[
            bad(
                78,
                &["template", u, &out],
                &format!("{u}:2: `port` is undefined"),
            ),
            bad(78, &["template", s, &out], &format!("{s}:1:")),
            bad(
                78,
                &["template", "/nonexistent/t.j2", &out],
                "template /nonexistent/t.j2: no such file or directory",
            ),
            bad(
                78,
                &["template", t, &out, "--data", "d=/nonexistent/d.json"],
                "reading --data d=/nonexistent/d.json: no such file or directory",
            ),
            bad(
                78,
                &["template", t, &out, "--data", &bad_yaml],
                "invalid YAML",
            ),
            bad(
                78,
                &["template", t, &out, "--data", &bad_json],
                "invalid JSON",
            ),
            bad(
                78,
                &["run", "-f", c],
                &format!("{c}:2:3: the steps' needs form a cycle: a → b → a"),
            ),
            bad(
                78,
                &["run", "-f", k],
                &format!("{k}:3:21: step 'a': unknown task or key 'wait-for-xyzzy'"),
            ),
            bad(78, &["run", "-f", y], &format!("{y}:1:")),
            bad(
                78,
                &["run", "-f", "/nonexistent/p.yaml"],
                "reading the pipeline /nonexistent/p.yaml: no such file or directory",
            ),
            bad(78, &["wait-for-dns", "mydb"], "no nameserver to ask"),
            bad(
                78,
                &[
                    "wait-for-http",
                    "https://x/",
                    "--cacert",
                    "/nonexistent/ca.pem",
                ],
                "reading CA certificate /nonexistent/ca.pem: no such file or directory",
            ),
            bad(
                78,
                &["register", "http://x/$(NOPE)"],
                "URL: undefined variable $(NOPE)",
            ),
            bad(
                78,
                &[
                    "register",
                    "http://x/",
                    "--bearer-token-file",
                    "/nonexistent/token",
                ],
                "reading bearer token file /nonexistent/token",
            ),
            bad(
                78,
                &[
                    "register",
                    "http://x/",
                    "--data-file",
                    "/nonexistent/body.json",
                ],
                "reading --data-file /nonexistent/body.json",
            ),
            bad(
                78,
                &[
                    "git-clone",
                    "https://h/r.git",
                    "d",
                    "--token-file",
                    "/nonexistent/token",
                ],
                "reading token file /nonexistent/token",
            ),
        ],
    );
    assert!(
        !Path::new(&out).exists(),
        "nothing written on a configuration error"
    );
    // git-clone over ssh: a deploy key that cannot be read (in a scratch image too).
    check(
        &bad(
            78,
            &[
                "git-clone",
                "git@git.example:team/app.git",
                "d",
                "--ssh-key-file",
                "/nonexistent/deploy-key",
                "--ssh-insecure-accept-any-host-key",
            ],
            "reading ssh key file /nonexistent/deploy-key",
        ),
        &sandbox
            .initbox()
            .env("PATH", sandbox.path("empty-bin"))
            .args([
                "git-clone",
                "git@git.example:team/app.git",
                "d",
                "--ssh-key-file",
                "/nonexistent/deploy-key",
                "--ssh-insecure-accept-any-host-key",
            ])
            .run(),
    );
}

#[test]
fn a_missing_local_repository_fails_at_once() {
    let sandbox = Sandbox::new();
    check_all(
        &sandbox,
        &[
            bad(
                1,
                &["git-clone", "file:///nonexistent/repo", "d"],
                "no repository at /nonexistent/repo",
            ),
            bad(
                1,
                &["git-clone", "/nonexistent/repo", "d"],
                "no repository at /nonexistent/repo",
            ),
        ],
    );
}

/// `initbox ARGS` in a private mount namespace where `ro` is a read-only tmpfs and `full` a
/// one-page tmpfs already filled up, both under the sandbox.
fn with_small_mounts(sandbox: &Sandbox, args: &[String]) -> Output {
    let script = format!(
        "mount -t tmpfs -o size=4k tmpfs {ro} && mount -o remount,ro {ro} && \
         mount -t tmpfs -o size=4k tmpfs {full} && \
         {{ head -c 4096 /dev/zero > {full}/filler 2>/dev/null || true; }} && exec \"$@\"",
        ro = sandbox.path("ro").display(),
        full = sandbox.path("full").display(),
    );
    sandbox
        .initbox()
        .args(args)
        .wrapped_in(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .run()
}

#[test]
fn a_read_only_or_full_destination_fails_at_once_naming_it() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    for dir in ["ro", "full"] {
        std::fs::create_dir(sandbox.path(dir)).unwrap();
    }
    let server = HttpServer::start(vec![reply_bytes(200, vec![b'x'; 64 * 1024])]);
    let template = sandbox.write("big.j2", &"{{ 'x' }}".repeat(20_000));
    let pipeline = sandbox.write("p.yaml", "steps:\n  - name: a\n    sleep: {duration: 0s}\n");
    let repos = tempfile::tempdir().unwrap();
    let repo = TestRepo::create(repos.path(), "config");
    // Large enough not to fit one page once checked out.
    std::fs::write(repo.path.join("big.txt"), vec![b'y'; 64 * 1024]).unwrap();
    crate::support::git_server::git(&repo.path, &["add", "big.txt"]);
    crate::support::git_server::git(&repo.path, &["commit", "-q", "-m", "big"]);
    let (url, t, p, r) = (
        server.url("/file"),
        path_str(&template).to_owned(),
        path_str(&pipeline).to_owned(),
        repo.file_url(),
    );
    for (dir, reason) in [
        ("ro", "read-only file system"),
        ("full", "no space left on device"),
    ] {
        let dest = |name: &str| format!("{}/{name}", sandbox.path(dir).display());
        let cases = [
            bad(
                1,
                &["fetch", &url, "-o", &dest("file")],
                &format!("cannot write {}: {reason}", dest("file")),
            ),
            bad(
                1,
                &["register", &url, "-o", &dest("answer")],
                &format!("{}: {reason}", dest("answer")),
            ),
            bad(
                1,
                &["template", &t, &dest("out")],
                &format!("cannot write {}: {reason}", dest("out")),
            ),
            bad(1, &["git-clone", &r, &dest("repo")], reason),
            bad(
                1,
                &["run", "-f", &p, "--status-file", &dest("status.json")],
                &format!(
                    "cannot write the status file {}: {reason}",
                    dest("status.json")
                ),
            ),
        ];
        for case in &cases {
            let output = with_small_mounts(&sandbox, &case.args);
            check(case, &output);
            assert!(
                !output.stderr.contains("not ready"),
                "{:?} retried a local disk error:\n{}",
                case.args,
                output.stderr
            );
        }
    }
    // The run with an unwritable status file stopped before its first step.
    let output = with_small_mounts(
        &sandbox,
        &[
            "run",
            "-f",
            &p,
            "--status-file",
            &format!("{}/s.json", sandbox.path("ro").display()),
        ]
        .map(String::from),
    );
    assert!(!output.stderr.contains("step a"), "{}", output.stderr);
    // extract and fetch --extract find a read-only DEST before unpacking or downloading.
    let archive = sandbox.path("a.tar");
    let packed = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(sandbox.dir.path())
        .arg("big.j2")
        .status()
        .unwrap();
    assert!(packed.success());
    let unpack_into = format!("{}/unpacked", sandbox.path("ro").display());
    for args in [
        vec![
            "extract".to_owned(),
            path_str(&archive).to_owned(),
            unpack_into.clone(),
        ],
        vec![
            "fetch".to_owned(),
            url.clone(),
            "-o".to_owned(),
            unpack_into.clone(),
            "--extract".to_owned(),
        ],
    ] {
        let output = with_small_mounts(&sandbox, &args);
        let shown: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&bad(1, &shown, "read-only file system"), &output);
        assert!(
            output.stderr.contains(&unpack_into),
            "{args:?} does not name DEST:\n{}",
            output.stderr
        );
    }
    // A read-only destination is found before the request; a full one only when written.
    assert_eq!(
        server.requests().len(),
        2,
        "fetch and register asked only for the full destination"
    );
}

#[test]
fn unreadable_files_are_named() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    std::fs::set_permissions(sandbox.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = |name: &str, contents: &str| {
        let path = sandbox.write(name, contents);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        path_str(&path).to_owned()
    };
    let template = secret("t.j2", "{{ 1 }}\n");
    let pipeline = secret("p.yaml", "steps: []\n");
    let token = secret("token", "s3cret\n");
    let ca = secret("ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let out = format!("{}/out", sandbox.dir.path().display());
    // uid 65532 must be able to reach and run the binary.
    let (_dir, binary) = nonroot_copy();
    let cases = [
        bad(
            78,
            &["template", &template, &out],
            &format!("template {template}: permission denied"),
        ),
        bad(
            78,
            &["run", "-f", &pipeline],
            &format!("reading the pipeline {pipeline}: permission denied"),
        ),
        bad(
            78,
            &["register", "http://x/", "--bearer-token-file", &token],
            &format!("reading bearer token file {token}: permission denied"),
        ),
        bad(
            78,
            &["wait-for-http", "https://x/", "--cacert", &ca],
            &format!("reading CA certificate {ca}: permission denied"),
        ),
    ];
    for case in &cases {
        let output = sandbox
            .initbox_at(&binary)
            .args(&case.args)
            .wrapped_in(&[
                "setpriv",
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
            ])
            .run();
        check(case, &output);
    }
}

/// The value names of the positional arguments that name something to connect to: every
/// command with one takes part in the tables of hosts and ports that cannot be.
const CONNECTING: &[&str] = &[
    "NAME",
    "HOST",
    "HOST:PORT",
    "HOST[:PORT]|URL",
    "SERVER",
    "BROKER",
    "URL",
    "REPO",
];

#[test]
fn a_host_that_cannot_be_a_dns_name_is_a_usage_error_for_every_command_with_a_host() {
    let sandbox = Sandbox::new();
    let long = format!("{}.example", "a".repeat(64));
    let dest = sandbox.path("dest");
    let dest = dest.to_str().unwrap();
    let cases = [
        vec!["wait-for-dns".to_owned(), long.clone()],
        vec!["wait-for-tcp".to_owned(), format!("{long}:80")],
        vec!["wait-for-grpc".to_owned(), format!("{long}:50051")],
        vec!["ping".to_owned(), long.clone()],
        vec!["wait-for-http".to_owned(), format!("http://{long}/")],
        vec!["register".to_owned(), format!("http://{long}/register")],
        vec![
            "fetch".to_owned(),
            format!("http://{long}/f"),
            "-o".into(),
            dest.into(),
        ],
        vec![
            "git-clone".to_owned(),
            format!("https://{long}/repo.git"),
            dest.into(),
        ],
        vec![
            "git-clone".to_owned(),
            format!("git@{long}:org/repo.git"),
            dest.into(),
        ],
        // The protocol checks, as HOST:PORT and as their URLs.
        vec!["wait-for-postgres".to_owned(), format!("{long}:5432")],
        vec![
            "wait-for-postgres".to_owned(),
            format!("postgres://{long}/db"),
        ],
        vec!["wait-for-redis".to_owned(), format!("{long}:6379")],
        vec!["wait-for-redis".to_owned(), format!("rediss://{long}")],
        vec!["wait-for-mysql".to_owned(), format!("{long}:3306")],
        vec!["wait-for-mysql".to_owned(), format!("mysql://{long}/db")],
        vec!["wait-for-nats".to_owned(), format!("{long}:4222")],
        vec!["wait-for-nats".to_owned(), format!("nats://{long}")],
        vec!["wait-for-zookeeper".to_owned(), format!("{long}:2181")],
        vec!["wait-for-kafka".to_owned(), format!("{long}:9092")],
        vec![
            "wait-for-kafka".to_owned(),
            format!("kafka:9092,{long}:9092"),
        ],
        vec!["wait-for-amqp".to_owned(), format!("{long}:5672")],
        vec!["wait-for-amqp".to_owned(), format!("amqps://{long}/")],
    ];
    let covered: Vec<&str> = cases.iter().map(|args| args[0].as_str()).collect();
    assert_covers(
        &covered,
        &commands_taking(CONNECTING),
        "a host that cannot be a DNS name",
    );
    let cases: Vec<Bad> = cases
        .iter()
        .map(|args| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bad(2, &args, "a label holds at most 63")
        })
        .collect();
    check_all(&sandbox, &cases);
    assert!(!sandbox.path("dest").exists());
}

/// Port 0 names nothing to connect to: a usage error before any attempt, for every command
/// that connects to a port, in each way it takes one (HOST:PORT, a URL, a list).
#[test]
fn port_0_is_a_usage_error_for_every_command_that_connects_to_a_port() {
    let sandbox = Sandbox::new();
    let dest = sandbox.path("dest");
    let dest = dest.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec!["wait-for-tcp", "mydb:0"],
        vec!["wait-for-grpc", "mydb:0"],
        vec!["wait-for-postgres", "mydb:0"],
        vec!["wait-for-postgres", "postgres://mydb:0/db"],
        vec!["wait-for-redis", "mydb:0"],
        vec!["wait-for-redis", "redis://mydb:0"],
        vec!["wait-for-mysql", "mydb:0"],
        vec!["wait-for-mysql", "mysql://mydb:0/db"],
        vec!["wait-for-nats", "mydb:0"],
        vec!["wait-for-nats", "nats://mydb:0"],
        vec!["wait-for-zookeeper", "mydb:0"],
        vec!["wait-for-kafka", "mydb:0"],
        vec!["wait-for-kafka", "kafka:9092,mydb:0"],
        vec!["wait-for-amqp", "mydb:0"],
        vec!["wait-for-amqp", "amqp://mydb:0/"],
        vec!["wait-for-http", "http://mydb:0/"],
        vec!["register", "http://mydb:0/r"],
        vec!["fetch", "http://mydb:0/f", "-o", dest],
        vec!["git-clone", "https://mydb:0/r.git", dest],
        vec!["git-clone", "git://mydb:0/r", dest],
        vec!["git-clone", "ssh://git@mydb:0/r", dest],
    ];
    let covered: Vec<&str> = cases.iter().map(|args| args[0]).collect();
    // wait-for-dns and ping take names, which have no port at all.
    let with_ports: Vec<&str> = commands_taking(CONNECTING)
        .into_iter()
        .filter(|command| !["wait-for-dns", "ping"].contains(command))
        .collect();
    assert_covers(&covered, &with_ports, "port 0");
    let cases: Vec<Bad> = cases
        .iter()
        .map(|args| bad(2, args, "port 0 cannot be connected to"))
        .collect();
    check_all(&sandbox, &cases);
    assert!(!sandbox.path("dest").exists());
}

/// A `--stable-for` as long as `--timeout` can never be met: every check that takes it
/// refuses it when the flags are parsed (exit 2), and `run --check` refuses it too (78),
/// before a pipeline could crash-loop on it.
#[test]
fn a_stable_for_that_cannot_fit_in_the_timeout_is_refused_by_every_check_and_by_run_check() {
    let sandbox = Sandbox::new();
    let targets: &[(&str, &[&str])] = &[
        ("wait-for-dns", &["mydb"]),
        ("wait-for-tcp", &["mydb:5432"]),
        ("wait-for-http", &["http://mydb/"]),
        ("wait-for-postgres", &["mydb"]),
        ("wait-for-redis", &["mydb"]),
        ("wait-for-mysql", &["mydb"]),
        ("wait-for-nats", &["mydb"]),
        ("wait-for-zookeeper", &["mydb"]),
        ("wait-for-kafka", &["mydb"]),
        ("wait-for-amqp", &["mydb"]),
        ("wait-for-grpc", &["mydb:50051"]),
        ("wait-for-file", &["/ready"]),
        ("wait-for-socket", &["/run/app.sock"]),
        ("wait-for-command", &["true"]),
        ("wait-for-k8s", &["job/migrate"]),
        ("ping", &["mydb"]),
    ];
    let root = initbox::cli::command();
    let with_stable_for: Vec<&str> = COMMANDS
        .iter()
        .copied()
        .filter(|name| {
            root.find_subcommand(name).is_some_and(|c| {
                c.get_arguments()
                    .any(|a| a.get_long() == Some("stable-for"))
            })
        })
        .collect();
    let covered: Vec<&str> = targets.iter().map(|(command, _)| *command).collect();
    assert_covers(
        &covered,
        &with_stable_for,
        "--stable-for longer than --timeout",
    );
    let cases: Vec<Bad> = targets
        .iter()
        .map(|(command, target)| {
            // The flags first: wait-for-command takes everything after its CMD as its own.
            let mut args = vec![*command, "--stable-for", "1m", "--timeout", "1m"];
            args.extend(target.iter());
            bad(
                2,
                &args,
                "invalid value '1m' for '--stable-for <DURATION>': can never be met within the timeout of 1m",
            )
        })
        .collect();
    check_all(&sandbox, &cases);
    let pipeline = sandbox.write(
        "p.yaml",
        "steps:\n  - name: db\n    wait-for-tcp: {targets: [\"mydb:5432\"], stable-for: 1m, timeout: 30s}\n",
    );
    sandbox
        .check_pipeline(&pipeline)
        .assert_code(78)
        .assert_stderr_contains("can never be met within the timeout of 30s");
}
