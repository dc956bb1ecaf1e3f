//! k8s-copy against a real kube-apiserver: ConfigMaps (text and binaryData) and Secrets
//! into files, byte for byte; keys chosen with --items; objects chosen by label; objects
//! that appear later; links planted in DEST; re-runs that change nothing; RBAC refusals;
//! secrets in no output.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::kube_api::{self, KubeApi, ServiceAccount};
use crate::support::{Cmd, Sandbox, entries};

/// Long enough for a loaded machine; a copy that should end at once must not get near it.
const LIMIT: &str = "45s";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A namespace with a service account that may read ConfigMaps and Secrets.
fn setup() -> Option<(&'static KubeApi, String, ServiceAccount)> {
    kube_api::namespace_with_account(
        "copier",
        json!([{ "apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "list"] }]),
    )
}

/// initbox as the pod of `account` runs it.
fn initbox_as(sandbox: &Sandbox, account: &ServiceAccount) -> Cmd {
    account.initbox(sandbox)
}

fn configmap(name: &str, labels: Value, data: Value, binary: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "labels": labels },
        "data": data, "binaryData": binary,
    })
}

fn secret(name: &str, data: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": name }, "data": data })
}

fn mode_of(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn a_configmap_becomes_one_file_per_key_with_binary_data_byte_for_byte() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
    api.create(
        &namespace,
        configmap(
            "app",
            json!({}),
            json!({ "app.conf": "port=8080\nname=\"ünïcode\"\n", ".env": "A=1" }),
            json!({ "logo.bin": b64(&binary) }),
        ),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("conf");
    // Named twice (as a longer command line might): copied once, no key collides.
    initbox_as(&sandbox, &account)
        .args(["k8s-copy", "configmap/app", "cm/app"])
        .arg(&dest)
        .args(["--timeout", LIMIT])
        .run()
        .assert_code(0)
        .assert_stderr_contains(&format!("configmap/app in namespace {namespace} found"))
        .assert_stderr_contains("3 files");
    assert_eq!(
        std::fs::read(dest.join("app.conf")).unwrap(),
        "port=8080\nname=\"ünïcode\"\n".as_bytes()
    );
    assert_eq!(std::fs::read(dest.join(".env")).unwrap(), b"A=1");
    assert_eq!(std::fs::read(dest.join("logo.bin")).unwrap(), binary);
    for key in ["app.conf", ".env", "logo.bin"] {
        assert_eq!(mode_of(&dest.join(key)), 0o644, "{key}");
    }
    // DEST is the keys and the one record that makes the install safe.
    assert_eq!(
        entries(&dest),
        [".env", ".initbox-k8s-copy", "app.conf", "logo.bin"]
    );
}

#[test]
fn a_secret_is_decoded_into_files_of_mode_0600_and_no_value_appears_in_any_output() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    let password = "Tr0ub4dor&3-horse-battery";
    let key = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n";
    api.create(
        &namespace,
        secret(
            "db",
            json!({ "password": b64(password.as_bytes()), "tls.key": b64(key.as_bytes()) }),
        ),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("secrets");
    let mut outputs = Vec::new();
    for format in ["text", "json"] {
        let _ = std::fs::remove_dir_all(&dest);
        let output = initbox_as(&sandbox, &account)
            .args(["k8s-copy", "secret/db"])
            .arg(&dest)
            .args(["--timeout", LIMIT, "-v", "--log-format", format])
            .run();
        output.assert_code(0);
        outputs.push(output);
    }
    assert_eq!(
        std::fs::read_to_string(dest.join("password")).unwrap(),
        password
    );
    assert_eq!(std::fs::read_to_string(dest.join("tls.key")).unwrap(), key);
    assert_eq!(mode_of(&dest.join("password")), 0o600);
    assert_eq!(mode_of(&dest.join("tls.key")), 0o600);
    let secrets = [
        password.to_owned(),
        b64(password.as_bytes()),
        "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC".to_owned(),
        b64(key.as_bytes()),
    ];
    for output in &outputs {
        for secret in &secrets {
            assert!(
                !output.stderr.contains(secret.as_str())
                    && !output.stdout.contains(secret.as_str()),
                "a secret value was printed:\n{}{}",
                output.stdout,
                output.stderr
            );
        }
        // -v says what was written, by key.
        assert!(output.stderr.contains("password"), "{}", output.stderr);
    }
}

#[test]
fn items_copy_only_the_keys_named_to_their_paths_with_the_mode_asked_for() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(
        &namespace,
        configmap(
            "app",
            json!({}),
            json!({ "app.conf": "a", "other": "not copied" }),
            json!({}),
        ),
    );
    api.create(
        &namespace,
        secret("db", json!({ "password": b64(b"pw-1234") })),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("etc");
    initbox_as(&sandbox, &account)
        .args(["k8s-copy", "cm/app", "secret/db"])
        .arg(&dest)
        .args([
            "--items",
            "app.conf=conf.d/10-app.conf",
            "--items",
            "password=db/credentials/password",
            "--mode",
            "0440",
            "--dir-mode",
            "0750",
            "--timeout",
            LIMIT,
        ])
        .run()
        .assert_code(0);
    for dir in ["", "conf.d", "db", "db/credentials"] {
        assert_eq!(mode_of(&dest.join(dir)), 0o750, "{dir}");
    }
    assert_eq!(
        std::fs::read_to_string(dest.join("conf.d/10-app.conf")).unwrap(),
        "a"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("db/credentials/password")).unwrap(),
        "pw-1234"
    );
    assert_eq!(mode_of(&dest.join("conf.d/10-app.conf")), 0o440);
    assert_eq!(mode_of(&dest.join("db/credentials/password")), 0o440);
    assert_eq!(entries(&dest), [".initbox-k8s-copy", "conf.d", "db"]);

    // A key that the objects lack: the copy cannot be complete, as a volume with that
    // item would not mount.
    let output = initbox_as(&sandbox, &account)
        .args(["k8s-copy", "cm/app"])
        .arg(sandbox.path("other"))
        .args(["--items", "app.cfg=app.cfg", "--timeout", LIMIT])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("\"app.cfg\"")
        .assert_stderr_contains(&format!("configmap/app in namespace {namespace}"));
    assert!(!sandbox.path("other").exists());
}

#[test]
fn items_that_leave_dest_are_a_usage_error() {
    let sandbox = Sandbox::new();
    for path in ["/etc/passwd", "../x", "a/../../x"] {
        sandbox
            .initbox()
            .args(["k8s-copy", "cm/app", "/tmp/d", "--items"])
            .arg(format!("app.conf={path}"))
            .run()
            .assert_code(2)
            .assert_stderr_contains("must stay inside DEST");
    }
}

#[test]
fn a_selector_copies_every_configmap_it_matches_and_no_other() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    let labels = json!({ "grafana_dashboard": "1" });
    api.create(
        &namespace,
        configmap(
            "dash-a",
            labels.clone(),
            json!({ "a.json": "{}" }),
            json!({}),
        ),
    );
    api.create(
        &namespace,
        configmap("dash-b", labels, json!({ "b.json": "[]" }), json!({})),
    );
    api.create(
        &namespace,
        configmap("unrelated", json!({}), json!({ "c.json": "x" }), json!({})),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("dashboards");
    initbox_as(&sandbox, &account)
        .args(["k8s-copy", "configmap", "-l", "grafana_dashboard=1"])
        .arg(&dest)
        .args(["--timeout", LIMIT])
        .run()
        .assert_code(0)
        .assert_stderr_contains("dash-a (1 key), dash-b (1 key)");
    assert_eq!(entries(&dest), [".initbox-k8s-copy", "a.json", "b.json"]);
    assert_eq!(std::fs::read_to_string(dest.join("b.json")).unwrap(), "[]");
}

#[test]
fn secrets_chosen_by_a_selector_are_decoded_and_private_as_named_ones() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    // A LIST's items carry no kind: the kind comes from the OBJECT argument.
    for (name, key, value) in [
        ("tls-a", "a.key", "key-material-a"),
        ("tls-b", "b.key", "key-material-b"),
    ] {
        let mut object = secret(name, json!({ key: b64(value.as_bytes()) }));
        object["metadata"]["labels"] = json!({ "certs": "app" });
        api.create(&namespace, object);
    }
    let sandbox = Sandbox::new();
    let dest = sandbox.path("certs");
    let output = initbox_as(&sandbox, &account)
        .args(["k8s-copy", "secrets", "-l", "certs=app", "-v"])
        .arg(&dest)
        .args(["--timeout", LIMIT])
        .run();
    output.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(dest.join("a.key")).unwrap(),
        "key-material-a"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("b.key")).unwrap(),
        "key-material-b"
    );
    assert_eq!(mode_of(&dest.join("a.key")), 0o600);
    for value in ["key-material-a", "key-material-b"] {
        assert!(!output.stderr.contains(value), "{}", output.stderr);
    }
}

#[test]
fn the_same_key_in_two_objects_is_refused_naming_both_and_dest_is_left_alone() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(
        &namespace,
        configmap("one", json!({}), json!({ "app.conf": "1" }), json!({})),
    );
    api.create(
        &namespace,
        configmap("two", json!({}), json!({ "app.conf": "2" }), json!({})),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("conf");
    initbox_as(&sandbox, &account)
        .args(["k8s-copy", "cm/one", "cm/two"])
        .arg(&dest)
        .args(["--timeout", LIMIT])
        .run()
        .assert_code(1)
        .assert_stderr_contains("configmap/one and configmap/two")
        .assert_stderr_contains("\"app.conf\"");
    assert!(!dest.exists());
}

#[test]
fn an_object_created_after_the_wait_began_is_copied() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    let sandbox = Sandbox::new();
    let dest = sandbox.path("conf");
    let waiting = initbox_as(&sandbox, &account)
        .args(["k8s-copy", "configmap/late", "secret/late"])
        .arg(&dest)
        .args(["--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("does not exist yet", Duration::from_secs(30));
    api.create(
        &namespace,
        configmap("late", json!({}), json!({ "app.conf": "late" }), json!({})),
    );
    api.create(
        &namespace,
        secret("late", json!({ "token": b64(b"tok-5678") })),
    );
    waiting.wait().assert_code(0);
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "late"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("token")).unwrap(),
        "tok-5678"
    );
}

#[test]
fn a_selector_that_matches_nothing_yet_is_waited_for_until_the_deadline() {
    let Some((_api, _namespace, account)) = setup() else {
        return;
    };
    let sandbox = Sandbox::new();
    let dest = sandbox.path("conf");
    initbox_as(&sandbox, &account)
        .args(["k8s-copy", "secret", "-l", "app=none"])
        .arg(&dest)
        .args(["--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("no object matches yet");
    assert!(!dest.exists());
}

#[test]
fn a_key_named_dotdot_is_refused_by_the_api_server_and_never_reaches_dest() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    // The API server validates keys as file names; initbox checks them again (a unit test
    // feeds it such an object), so neither can write outside DEST.
    for key in ["..", "../etc", "..data"] {
        let (code, answer) = api.admin(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/configmaps"),
            Some(configmap("evil", json!({}), json!({ key: "x" }), json!({}))),
        );
        assert_eq!(code, 422, "{key}: {answer}");
    }
    let sandbox = Sandbox::new();
    initbox_as(&sandbox, &account)
        .args(["k8s-copy", "cm/evil"])
        .arg(sandbox.path("dest"))
        .args(["--timeout", "1s"])
        .run()
        .assert_code(124);
}

#[test]
fn links_planted_in_dest_are_replaced_and_never_written_through() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(
        &namespace,
        configmap("app", json!({}), json!({ "app.conf": "safe" }), json!({})),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("conf");
    let copy = || {
        initbox_as(&sandbox, &account)
            .args(["k8s-copy", "configmap/app"])
            .arg(&dest)
            .args(["--timeout", LIMIT])
            .run()
    };
    copy().assert_code(0);
    // Someone with write access to the volume points the file, the record and the
    // staging directory's name elsewhere.
    std::fs::create_dir(sandbox.path("outside")).unwrap();
    let outside = sandbox.write("outside/victim", "untouched");
    std::fs::remove_file(dest.join("app.conf")).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join("app.conf")).unwrap();
    std::os::unix::fs::symlink(
        outside.parent().unwrap(),
        dest.join(".initbox-k8s-copy.staging"),
    )
    .unwrap();
    copy().assert_code(0);
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched");
    assert_eq!(entries(&sandbox.path("outside")), ["victim"]);
    let meta = std::fs::symlink_metadata(dest.join("app.conf")).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "safe"
    );
    assert_eq!(entries(&dest), [".initbox-k8s-copy", "app.conf"]);
}

#[test]
fn a_rerun_with_unchanged_objects_leaves_dest_untouched_and_a_change_is_copied() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(
        &namespace,
        configmap("app", json!({}), json!({ "app.conf": "v1" }), json!({})),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("conf");
    let copy = || {
        initbox_as(&sandbox, &account)
            .args(["k8s-copy", "configmap/app"])
            .arg(&dest)
            .args(["--timeout", LIMIT])
            .run()
    };
    let stamp = |name: &str| {
        let meta = std::fs::symlink_metadata(dest.join(name)).unwrap();
        (
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime_nsec(),
        )
    };
    copy().assert_code(0);
    let before = (stamp("app.conf"), stamp(".initbox-k8s-copy"));
    copy()
        .assert_code(0)
        .assert_stderr_contains("nothing to do");
    assert_eq!((stamp("app.conf"), stamp(".initbox-k8s-copy")), before);

    api.must(
        "PATCH",
        &format!("/api/v1/namespaces/{namespace}/configmaps/app"),
        Some(json!({ "data": { "app.conf": "v2" } })),
    );
    copy().assert_code(0).assert_stderr_contains("1 file");
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "v2"
    );
}

#[test]
fn files_that_k8s_copy_did_not_write_are_kept_unless_forced() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(
        &namespace,
        configmap("app", json!({}), json!({ "app.conf": "new" }), json!({})),
    );
    let sandbox = Sandbox::new();
    let dest = sandbox.path("etc");
    std::fs::create_dir(&dest).unwrap();
    sandbox.write("etc/hosts", "user data");
    let copy = |force: bool| {
        let command = initbox_as(&sandbox, &account)
            .args(["k8s-copy", "configmap/app"])
            .arg(&dest)
            .args(["--timeout", LIMIT]);
        if force {
            command.arg("--force")
        } else {
            command
        }
        .run()
    };
    copy(false)
        .assert_code(1)
        .assert_stderr_contains("holds files that k8s-copy did not put there");
    assert_eq!(entries(&dest), ["hosts"]);
    copy(true).assert_code(0);
    assert_eq!(entries(&dest), [".initbox-k8s-copy", "app.conf"]);
}

#[test]
fn a_role_without_get_secrets_is_fatal_at_once_and_names_the_rule_to_add() {
    let Some(api) = kube_api::shared() else {
        return;
    };
    let namespace = api.namespace();
    let account = api.service_account(
        &namespace,
        "configmaps-only",
        json!([{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"] }]),
    );
    api.create(
        &namespace,
        secret("db", json!({ "password": b64(b"pw-forbidden") })),
    );
    let sandbox = Sandbox::new();
    let output = initbox_as(&sandbox, &account)
        .args(["k8s-copy", "secret/db"])
        .arg(sandbox.path("dest"))
        .args(["--timeout", LIMIT])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains(&format!("may not get secrets in namespace {namespace}"))
        .assert_stderr_contains(r#"{apiGroups: [""], resources: ["secrets"], verbs: ["get"]}"#);
    assert!(
        output.elapsed < Duration::from_secs(20),
        "{:?}",
        output.elapsed
    );
    assert!(!sandbox.path("dest").exists());

    // A selector needs list.
    let output = initbox_as(&sandbox, &account)
        .args(["k8s-copy", "secret", "-l", "app=db"])
        .arg(sandbox.path("dest"))
        .args(["--timeout", LIMIT])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains(r#"verbs: ["list"]"#);
}
