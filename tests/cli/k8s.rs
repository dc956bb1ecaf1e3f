//! wait-for-k8s against a real kube-apiserver: Jobs that complete or fail, objects that
//! appear, go away, roll out or gain endpoints, as the controllers and the kubelet would
//! write their status; RBAC refusals, token rotation and signals.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::kube_api::{self, KubeApi, ServiceAccount};
use crate::support::{Cmd, Sandbox};

/// Long enough for a loaded machine; a wait that should end at once must not get near it.
const LIMIT: &str = "45s";

fn reader_rules() -> Value {
    json!([
        { "apiGroups": [""], "resources": ["pods", "services", "configmaps"], "verbs": ["get", "list", "watch"] },
        { "apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch"] },
        { "apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": ["get", "list", "watch"] },
        { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"] },
    ])
}

/// A namespace with a service account that may read what the waits read.
fn setup() -> Option<(&'static KubeApi, String, ServiceAccount)> {
    setup_with("waiter", reader_rules())
}

/// A namespace with a service account `name` that may do what `rules` allow.
fn setup_with(name: &str, rules: Value) -> Option<(&'static KubeApi, String, ServiceAccount)> {
    kube_api::namespace_with_account(name, rules)
}

/// initbox as the pod of `account` runs it.
fn initbox_as(sandbox: &Sandbox, account: &ServiceAccount) -> Cmd {
    account.initbox(sandbox)
}

fn job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": name },
        "spec": { "backoffLimit": 0, "template": { "spec": {
            "restartPolicy": "Never", "nodeName": "node-1",
            "containers": [{ "name": "migrate", "image": "registry.invalid/migrate:1" }]
        }}}
    })
}

fn pod(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name, "labels": labels },
        "spec": { "nodeName": "node-1", "containers": [{ "name": "app", "image": "registry.invalid/app:1" }] }
    })
}

fn now() -> String {
    // RFC 3339 in UTC, seconds precision, as the API writes times.
    let output = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn complete_job(api: &KubeApi, namespace: &str, name: &str) {
    let now = now();
    api.patch_status(
        namespace,
        "jobs",
        name,
        json!({ "startTime": now, "active": 1 }),
    );
    api.patch_status(
        namespace,
        "jobs",
        name,
        json!({
            "active": 0, "succeeded": 1, "completionTime": now,
            "conditions": [
                { "type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now },
                { "type": "Complete", "status": "True", "lastTransitionTime": now },
            ],
        }),
    );
}

/// The Job's status as the Job controller writes it when the backoff limit is reached.
fn fail_job(api: &KubeApi, namespace: &str, name: &str) {
    let now = now();
    api.patch_status(
        namespace,
        "jobs",
        name,
        json!({ "startTime": now, "active": 1 }),
    );
    let failure = |kind: &str| {
        json!({ "type": kind, "status": "True", "reason": "BackoffLimitExceeded",
                "message": "Job has reached the specified backoff limit", "lastTransitionTime": now })
    };
    api.patch_status(
        namespace,
        "jobs",
        name,
        json!({ "active": 0, "failed": 1,
                "conditions": [failure("FailureTarget"), failure("Failed")] }),
    );
}

fn mark_pod_ready(api: &KubeApi, namespace: &str, name: &str, ready: bool) {
    let flag = if ready { "True" } else { "False" };
    api.patch_status(
        namespace,
        "pods",
        name,
        json!({
            "phase": "Running", "startTime": now(),
            "conditions": [
                { "type": "Ready", "status": flag },
                { "type": "ContainersReady", "status": flag },
            ],
            "containerStatuses": [{
                "name": "app", "ready": ready, "restartCount": 0, "image": "registry.invalid/app:1",
                "imageID": "", "started": true, "state": { "running": { "startedAt": now() } },
            }],
        }),
    );
}

#[test]
fn a_job_that_completes_after_the_wait_began_ends_it_with_0() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(&namespace, job("migrate"));
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "job/migrate", "--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("waiting for job/migrate", Duration::from_secs(30));
    complete_job(api, &namespace, "migrate");
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains(&format!("job/migrate in namespace {namespace} is ready"))
        .assert_stderr_contains("complete");
}

#[test]
fn a_job_that_failed_ends_the_wait_at_once_with_1_and_its_reason() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(&namespace, job("migrate"));
    fail_job(api, &namespace, "migrate");
    let sandbox = Sandbox::new();
    let output = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "job/migrate", "--timeout", LIMIT])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("the job failed")
        .assert_stderr_contains(
            "BackoffLimitExceeded: Job has reached the specified backoff limit",
        );
    assert!(
        output.elapsed < Duration::from_secs(20),
        "a failed Job must end the wait at once, not at the timeout: {:?}",
        output.elapsed
    );
}

#[test]
fn an_object_created_after_the_wait_began_is_seen() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args([
            "wait-for-k8s",
            "configmap/settings",
            "--for",
            "created",
            "--timeout",
            LIMIT,
        ])
        .spawn();
    waiting.wait_for_stderr("does not exist yet", Duration::from_secs(30));
    api.create(
        &namespace,
        json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": "settings" }, "data": { "a": "1" } }),
    );
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains("configmap/settings");
}

#[test]
fn a_deleted_wait_ends_when_the_object_is_gone() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(&namespace, pod("old", json!({ "app": "old" })));
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args([
            "wait-for-k8s",
            "pod/old",
            "--for",
            "deleted",
            "--timeout",
            LIMIT,
        ])
        .spawn();
    waiting.wait_for_stderr("still exists", Duration::from_secs(30));
    api.must(
        "DELETE",
        &format!("/api/v1/namespaces/{namespace}/pods/old?gracePeriodSeconds=0"),
        None,
    );
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains("deleted");
}

#[test]
fn pods_by_label_are_ready_once_min_of_them_are() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    for name in ["web-0", "web-1", "web-2"] {
        api.create(&namespace, pod(name, json!({ "app": "web" })));
    }
    api.create(&namespace, pod("other", json!({ "app": "other" })));
    mark_pod_ready(api, &namespace, "web-0", true);
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args([
            "wait-for-k8s",
            "pods",
            "-l",
            "app=web",
            "--min",
            "2",
            "--timeout",
            LIMIT,
        ])
        .spawn();
    waiting.wait_for_stderr("1 of 2 ready", Duration::from_secs(30));
    mark_pod_ready(api, &namespace, "web-2", true);
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains("2 of 3 ready");
}

#[test]
fn a_deployment_is_ready_when_its_rollout_is_complete() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(
        &namespace,
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "api" },
            "spec": { "replicas": 2, "selector": { "matchLabels": { "app": "api" } },
                "template": { "metadata": { "labels": { "app": "api" } }, "spec": {
                    "containers": [{ "name": "api", "image": "registry.invalid/api:2" }] } } }
        }),
    );
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "deploy/api", "--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("0 of 2 replicas updated", Duration::from_secs(30));
    let status = |updated: u64, available: u64| {
        json!({ "observedGeneration": 1, "replicas": 2, "updatedReplicas": updated,
                "readyReplicas": available, "availableReplicas": available })
    };
    api.patch_status(&namespace, "deployments", "api", status(2, 1));
    waiting.wait_for_stderr("1 of 2 updated replicas available", Duration::from_secs(30));
    api.patch_status(&namespace, "deployments", "api", status(2, 2));
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains("deployment/api");
}

#[test]
fn a_service_is_ready_when_its_endpoint_slices_hold_a_ready_endpoint() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(
        &namespace,
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": { "name": "db" },
                "spec": { "selector": { "app": "db" }, "ports": [{ "port": 5432 }] } }),
    );
    let slice = |ready: bool| {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": "db-abc", "labels": { "kubernetes.io/service-name": "db" } },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": ["10.244.0.7"], "conditions": { "ready": ready } }],
            "ports": [{ "port": 5432, "protocol": "TCP" }],
        })
    };
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "svc/db", "--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("no endpoints yet", Duration::from_secs(30));
    api.create(&namespace, slice(false));
    waiting.wait_for_stderr(
        "none of its 1 endpoint(s) is ready",
        Duration::from_secs(30),
    );
    api.must(
        "PATCH",
        &format!("/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices/db-abc"),
        Some(json!({ "endpoints": [{ "addresses": ["10.244.0.7"], "conditions": { "ready": true } }] })),
    );
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains("1 ready endpoint(s)");
}

#[test]
fn a_role_without_get_jobs_is_fatal_at_once_and_names_the_rule_to_add() {
    let rules = json!([{ "apiGroups": [""], "resources": ["pods"], "verbs": ["get"] }]);
    let Some((api, namespace, account)) = setup_with("pods-only", rules) else {
        return;
    };
    api.create(&namespace, job("migrate"));
    let sandbox = Sandbox::new();
    let output = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "job/migrate", "--timeout", LIMIT])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains(&format!("system:serviceaccount:{namespace}:pods-only"))
        .assert_stderr_contains(&format!("may not get jobs.batch in namespace {namespace}"))
        .assert_stderr_contains(r#"{apiGroups: ["batch"], resources: ["jobs"], verbs: ["get"]}"#);
    assert!(
        output.elapsed < Duration::from_secs(20),
        "{:?}",
        output.elapsed
    );
    let token = std::fs::read_to_string(account.path().join("token")).unwrap();
    assert!(
        !output.stderr.contains(token.trim()),
        "the token was printed"
    );
}

#[test]
fn a_token_rotated_during_the_wait_is_read_again() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    // The first token is bound to a Secret: deleting it revokes the token, as the expiry of
    // a projected token would.
    let secret = api.create(
        &namespace,
        json!({ "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "binding" } }),
    );
    let uid = secret["metadata"]["uid"].as_str().unwrap().to_owned();
    let ca = std::fs::read_to_string(api.ca()).unwrap();
    let old_token = api.token(&namespace, "waiter", Some(("binding", &uid)));
    account.mount(&old_token, &ca);
    api.create(&namespace, job("migrate"));
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "job/migrate", "--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("0 active", Duration::from_secs(30));
    // The kubelet writes the new token, then the old one stops being valid.
    account.mount(&api.token(&namespace, "waiter", None), &ca);
    api.must(
        "DELETE",
        &format!("/api/v1/namespaces/{namespace}/secrets/binding"),
        None,
    );
    // Once the API server refuses the old token (it caches a token's review for a few
    // seconds), a waiter that kept it would be refused at its next look and end with 1.
    let client = kube_api::client_trusting(&api.ca());
    let job_path = api.url(&format!(
        "/apis/batch/v1/namespaces/{namespace}/jobs/migrate"
    ));
    let refused = crate::support::eventually(Duration::from_secs(60), || {
        client
            .get(&job_path)
            .bearer_auth(old_token.trim())
            .send()
            .is_ok_and(|answer| answer.status() == 401)
    });
    assert!(refused, "the revoked token is still accepted");
    complete_job(api, &namespace, "migrate");
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains("complete");
}

#[test]
fn sigterm_while_waiting_ends_with_143() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(&namespace, job("forever"));
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "job/forever", "--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("0 active", Duration::from_secs(30));
    waiting.signal("TERM");
    let output = waiting.wait();
    assert_eq!(output.code, 143, "{}", output.stderr);
}

#[test]
fn outside_a_pod_a_kubeconfig_with_a_token_is_used() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(&namespace, job("migrate"));
    complete_job(api, &namespace, "migrate");
    let sandbox = Sandbox::new();
    let token = std::fs::read_to_string(account.path().join("token")).unwrap();
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(std::fs::read(api.ca()).unwrap());
    let kubeconfig = sandbox.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\n\
             contexts:\n- name: test\n  context:\n    cluster: c\n    user: u\n    namespace: {namespace}\n\
             users:\n- name: u\n  user:\n    token: {}\n",
            api.url(""),
            token.trim()
        ),
    );
    let output = sandbox
        .initbox()
        .env("KUBECONFIG", &kubeconfig)
        .args(["wait-for-k8s", "job/migrate", "--timeout", LIMIT])
        .run();
    output.assert_code(0).assert_stderr_contains("complete");
    assert!(!output.stderr.contains(token.trim()));
}

#[test]
fn no_api_server_to_talk_to_is_a_configuration_error() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .env("HOME", sandbox.path("home"))
        .args(["wait-for-k8s", "job/migrate"])
        .run()
        .assert_code(78)
        .assert_stderr_contains(
            "not in a pod (KUBERNETES_SERVICE_HOST is not set) and no kubeconfig",
        );
    let kubeconfig = sandbox.write(
        "kubeconfig",
        "apiVersion: v1\nkind: Config\ncurrent-context: eks\n\
         clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
         contexts:\n- name: eks\n  context:\n    cluster: c\n    user: u\n\
         users:\n- name: u\n  user:\n    exec:\n      command: aws\n",
    );
    sandbox
        .initbox()
        .env("KUBECONFIG", &kubeconfig)
        .args(["wait-for-k8s", "job/migrate"])
        .run()
        .assert_code(78)
        .assert_stderr_contains("logs in with an exec plugin, which initbox does not run");
}

/// The objects of an example manifest, as JSON (read by the YAML 1.2 reference parser).
fn example_objects(name: &str) -> Vec<Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/kubernetes")
        .join(name);
    let python = crate::template::python_with("ruamel.yaml", "python3-ruamel.yaml");
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, ruamel.yaml; \
             print(json.dumps(list(ruamel.yaml.YAML(typ='safe').load_all(open(sys.argv[1])))))",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The example's objects applied to a fresh namespace, and its init container's arguments
/// run as the example's service account, with the migration Job complete or failed.
fn run_migration_example(job_status: impl Fn(&KubeApi, &str)) -> crate::support::Output {
    let api = kube_api::shared().expect("checked by the caller");
    let namespace = api.namespace();
    let objects = example_objects("wait-for-migration-job.yaml");
    let mut args: Vec<String> = Vec::new();
    let mut account = String::new();
    for object in objects {
        if object["kind"] == "Deployment" {
            let spec = &object["spec"]["template"]["spec"];
            account = spec["serviceAccountName"].as_str().unwrap().to_owned();
            args = serde_json::from_value(spec["initContainers"][0]["args"].clone()).unwrap();
            continue;
        }
        api.create(&namespace, object);
    }
    job_status(api, &namespace);
    // The example's own ServiceAccount, Role and RoleBinding: only a token and the files.
    let files = ServiceAccount::for_existing(api, &namespace, &account);
    let sandbox = Sandbox::new();
    initbox_as(&sandbox, &files).args(&args).run()
}

#[test]
fn the_migration_example_starts_the_app_after_its_job_completed() {
    if kube_api::shared().is_none() {
        return;
    }
    run_migration_example(|api, namespace| complete_job(api, namespace, "orders-migrate"))
        .assert_code(0)
        .assert_stderr_contains("job/orders-migrate");
}

#[test]
fn the_migration_example_fails_its_init_container_when_the_job_failed() {
    if kube_api::shared().is_none() {
        return;
    }
    run_migration_example(|api, namespace| fail_job(api, namespace, "orders-migrate"))
        .assert_code(1)
        .assert_stderr_contains("the job failed: BackoffLimitExceeded");
}

#[test]
fn an_account_that_may_get_but_not_watch_is_polled() {
    let rules = json!([{ "apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get"] }]);
    let Some((api, namespace, account)) = setup_with("get-only", rules) else {
        return;
    };
    api.create(&namespace, job("migrate"));
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "job/migrate", "-v", "--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("polling instead", Duration::from_secs(30));
    complete_job(api, &namespace, "migrate");
    waiting
        .wait()
        .assert_code(0)
        .assert_stderr_contains("complete");
}

#[test]
fn a_pod_that_cannot_pull_its_image_ends_the_wait_at_once() {
    let Some((api, namespace, account)) = setup() else {
        return;
    };
    api.create(&namespace, pod("web", json!({ "app": "web" })));
    let sandbox = Sandbox::new();
    let waiting = initbox_as(&sandbox, &account)
        .args(["wait-for-k8s", "pod/web", "--timeout", LIMIT])
        .spawn();
    waiting.wait_for_stderr("phase Pending", Duration::from_secs(30));
    api.patch_status(
        &namespace,
        "pods",
        "web",
        json!({ "phase": "Pending", "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 0, "image": "registry.invalid/app:1",
            "imageID": "", "state": { "waiting": { "reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"registry.invalid/app:1\"" } } }] }),
    );
    waiting
        .wait()
        .assert_code(1)
        .assert_stderr_contains(
            "container app cannot start: ImagePullBackOff: Back-off pulling image \"registry.invalid/app:1\"",
        );
}

#[test]
fn a_kubeconfig_with_a_client_certificate_logs_in_with_it() {
    let Some((api, namespace, _account)) = setup() else {
        return;
    };
    api.create(&namespace, job("migrate"));
    complete_job(api, &namespace, "migrate");
    let sandbox = Sandbox::new();
    let (cert, key) = api.client_certificate();
    // Files named relative to the kubeconfig, as kubectl resolves them.
    std::fs::copy(&cert, sandbox.path("client.pem")).unwrap();
    std::fs::copy(&key, sandbox.path("client.key")).unwrap();
    std::fs::copy(api.ca(), sandbox.path("ca.pem")).unwrap();
    let kubeconfig = sandbox.write(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority: ca.pem\n\
             contexts:\n- name: test\n  context:\n    cluster: c\n    user: u\n\
             users:\n- name: u\n  user:\n    client-certificate: client.pem\n    client-key: client.key\n",
            api.url(""),
        ),
    );
    sandbox
        .initbox()
        .args([
            "wait-for-k8s",
            "job/migrate",
            "-n",
            &namespace,
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .args(["--timeout", LIMIT])
        .run()
        .assert_code(0)
        .assert_stderr_contains("complete");
    // Without the certificate the same server refuses the request: it is what logged in.
    let anonymous = sandbox.write(
        "anonymous",
        &std::fs::read_to_string(&kubeconfig).unwrap().replace(
            "    client-certificate: client.pem\n    client-key: client.key\n",
            "    {}\n",
        ),
    );
    sandbox
        .initbox()
        .args([
            "wait-for-k8s",
            "job/migrate",
            "-n",
            &namespace,
            "--kubeconfig",
        ])
        .arg(&anonymous)
        .args(["--timeout", LIMIT])
        .run()
        .assert_code(1)
        .assert_stderr_contains("401 Unauthorized");
}
