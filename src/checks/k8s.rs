//! wait-for-k8s: waits for Kubernetes objects by what their status says, the way their
//! controllers define it (a Job complete, a Deployment rolled out, a Service with ready
//! endpoints), with the pod's own service account. A Job that failed, a pod that cannot
//! pull its image or crash-loops past `--max-restarts`, a rollout past its deadline end the
//! wait at once with the reason from the object's status.
//!
//! One attempt is one look (a GET, or a LIST for a selector) and, while the answer is not
//! the one waited for, one watch window from the version that look saw: any change ends
//! the window and is looked at at once, so a Job's completion is seen within a round trip
//! instead of at the next poll. An account that may not watch is polled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::cli::Invalid;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::k8s::jsonpath::{self, JsonPath};
use crate::k8s::resource::{self, ENDPOINTSLICE, Kind, Target};
use crate::k8s::{Access, Api, KubeArgs, Watched, query_escape};
use crate::resolve::ResolverArgs;
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

/// How long one watch window lasts: as long as the engine's progress line is apart, so a
/// long wait still says every 10 s what it waits for.
const WATCH_WINDOW: Duration = wait::PROGRESS_EVERY;

/// Wait until Kubernetes objects are ready, complete, created or deleted.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sArgs {
    /// Objects to wait for: KIND/NAME, or KIND with --selector. Kinds: pod, job,
    /// deployment, statefulset, daemonset, replicaset, service, configmap, secret,
    /// persistentvolumeclaim (and kubectl's plurals and short names: po, deploy, sts, svc, …).
    #[arg(required = true, value_name = "KIND[/NAME]", value_parser = resource::parse_target)]
    pub targets: Vec<Target>,
    /// What to wait for: ready (a job: complete; a pvc: bound; a configmap or secret:
    /// exists), complete, created, deleted, condition=TYPE[=STATUS] (STATUS True by
    /// default) or jsonpath=EXPR[=VALUE] (without VALUE: the path selects something).
    #[arg(
        long = "for",
        env = "INITBOX_FOR",
        value_name = "GOAL",
        default_value = "ready",
        value_parser = Goal::parse
    )]
    pub goal: Goal,
    /// Label selector for a target given as a KIND alone (app=web,tier!=db).
    #[arg(short = 'l', long, env = "INITBOX_SELECTOR", value_name = "SELECTOR",
          value_parser = resource::parse_selector)]
    pub selector: Option<String>,
    /// With --selector: ready once at least N of the matching objects are [default: all
    /// of them, and at least one].
    #[arg(long, env = "INITBOX_MIN", value_name = "N")]
    pub min: Option<usize>,
    /// A pod whose container is crash-looping after more restarts than this ends the wait.
    #[arg(
        long,
        env = "INITBOX_MAX_RESTARTS",
        value_name = "N",
        default_value_t = 5
    )]
    pub max_restarts: u32,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

/// What `--for` waits for.
#[derive(Debug, Clone, PartialEq)]
pub enum Goal {
    Ready,
    Complete,
    Created,
    Deleted,
    Condition {
        kind: String,
        status: String,
    },
    JsonPath {
        path: JsonPath,
        value: Option<String>,
    },
}

impl Goal {
    pub fn parse(text: &str) -> std::result::Result<Goal, String> {
        let trimmed = text.trim();
        let lower = trimmed.to_ascii_lowercase();
        match lower.as_str() {
            "ready" => return Ok(Goal::Ready),
            "complete" | "completed" => return Ok(Goal::Complete),
            "created" | "exists" => return Ok(Goal::Created),
            "deleted" | "delete" => return Ok(Goal::Deleted),
            _ => {}
        }
        if lower.starts_with("condition=") {
            let rest = &trimmed["condition=".len()..];
            let (kind, status) = rest.split_once('=').unwrap_or((rest, "True"));
            if kind.trim().is_empty() {
                return Err("condition= needs a condition type: condition=Ready".into());
            }
            return Ok(Goal::Condition {
                kind: kind.trim().to_owned(),
                status: status.trim().to_owned(),
            });
        }
        if lower.starts_with("jsonpath=") {
            let rest = trimmed["jsonpath=".len()..].trim();
            let rest = rest
                .strip_prefix('\'')
                .and_then(|r| r.strip_suffix('\''))
                .unwrap_or(rest);
            // `{.status.phase}=Running`: the value follows the closing brace; without braces,
            // it follows the first `=` outside a filter's brackets.
            let split = if rest.starts_with('{') {
                rest.find('}').map(|end| end + 1)
            } else {
                let mut depth = 0;
                rest.char_indices()
                    .find(|&(_, c)| {
                        match c {
                            '[' => depth += 1,
                            ']' => depth -= 1,
                            _ => {}
                        }
                        c == '=' && depth == 0
                    })
                    .map(|(at, _)| at)
            };
            let (path, value) = match split {
                Some(at) if rest[at..].starts_with('=') => {
                    (&rest[..at], Some(rest[at + 1..].to_owned()))
                }
                Some(at) if at < rest.len() => {
                    return Err(format!("'{text}': after the path comes =VALUE or nothing"));
                }
                _ => (rest, None),
            };
            return Ok(Goal::JsonPath {
                path: JsonPath::parse(path)?,
                value,
            });
        }
        Err(format!(
            "'{text}' is not a goal (ready, complete, created, deleted, condition=TYPE[=STATUS], jsonpath=EXPR[=VALUE])"
        ))
    }
}

impl crate::cli::Task for K8sArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    fn validate(&self) -> std::result::Result<(), Invalid> {
        self.wait.validate()?;
        let invalid = |arg: &str, value: String, reason: &str| Invalid {
            arg: arg.into(),
            value,
            reason: reason.into(),
        };
        for target in &self.targets {
            target.check_selection(self.selector.as_ref(), "<KIND[/NAME]>")?;
            if target.name.is_none() && target.kind == &resource::SERVICE {
                return Err(invalid(
                    "<KIND[/NAME]>",
                    target.to_string(),
                    "a service is waited for by name (service/NAME)",
                ));
            }
            if self.goal == Goal::Complete && target.kind != &resource::JOB {
                return Err(invalid(
                    "--for <GOAL>",
                    "complete".into(),
                    "only a job completes; wait for other kinds with --for ready",
                ));
            }
        }
        if let Some(min) = self.min {
            if self.selector.is_none() {
                return Err(invalid(
                    "--min <N>",
                    min.to_string(),
                    "--min counts the objects --selector matches",
                ));
            }
            if min == 0 {
                return Err(invalid(
                    "--min <N>",
                    "0".into(),
                    "at least one object must be waited for",
                ));
            }
        }
        Ok(())
    }
}

pub async fn run(args: K8sArgs) -> Result<()> {
    // Each attempt bounds its own requests: a watch window outlasts --attempt-timeout.
    let options = args.wait.options().bounded_by_probe();
    let api = args
        .kube
        .connect(&args.resolver, args.wait.retry.attempt_timeout.get())?;
    let probes = args
        .targets
        .iter()
        .map(|target| K8sProbe {
            label: match &args.selector {
                Some(selector) if target.name.is_none() => {
                    format!("{target} -l {selector} in namespace {}", api.namespace())
                }
                _ => format!("{target} in namespace {}", api.namespace()),
            },
            api: api.clone(),
            target: target.clone(),
            goal: args.goal.clone(),
            selector: args.selector.clone(),
            min: args.min,
            max_restarts: args.max_restarts,
            wanted: !options.invert,
            may_watch: AtomicBool::new(true),
            last_reason: Default::default(),
        })
        .collect();
    wait::wait_for_all("k8s", probes, options).await.map(drop)
}

struct K8sProbe {
    api: Api,
    target: Target,
    label: String,
    goal: Goal,
    selector: Option<String>,
    min: Option<usize>,
    max_restarts: u32,
    /// Whether a ready verdict is what the wait wants (false under --invert): the watch
    /// window is opened only while the verdict is the other one.
    wanted: bool,
    /// Cleared when the account may get but not watch.
    may_watch: AtomicBool,
    /// The reason the last look gave for not being ready.
    last_reason: std::sync::Mutex<Option<String>>,
}

/// What one look found, and where to watch for the next change.
struct Look {
    outcome: Attempt,
    /// The watched collection (with its selector) and the version to watch from (none for
    /// an object that does not exist: the watch then reports its creation).
    watch: Option<(String, Option<String>)>,
}

impl Probe for K8sProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    async fn attempt(&self) -> Attempt {
        let look = match self.look().await {
            Ok(look) => look,
            Err(failure) => return failure.into(),
        };
        let settled = match &look.outcome {
            Attempt::Ready { .. } => self.wanted,
            Attempt::Fatal(_) => true,
            _ => !self.wanted,
        };
        // A new reason is reported at once (the engine logs a change of reason); only a
        // look that says what the last one said waits on the watch for the next change.
        let reason = match &look.outcome {
            Attempt::NotYet(reason) => Some(reason.clone()),
            _ => None,
        };
        let repeated = {
            let mut last = self.last_reason.lock().unwrap_or_else(|p| p.into_inner());
            let repeated = reason.is_some() && *last == reason;
            *last = reason;
            repeated
        };
        let Some((path, version)) = look.watch.as_ref().filter(|_| !settled && repeated) else {
            return look.outcome;
        };
        if !self.may_watch.load(Ordering::Relaxed) {
            return look.outcome;
        }
        let access = self.access("watch", self.watched_kind());
        match self
            .api
            .watch(path, version.as_deref(), WATCH_WINDOW, access)
            .await
        {
            // A named object's event carries its new state: judged as it is, no second
            // request. A list or a service is looked at again as a whole.
            Ok(Watched::Changed(object)) if self.is_single_object() => match object {
                Some(object) => self.judge_one(&object).into_attempt(),
                None if self.goal == Goal::Deleted => Attempt::ready("deleted"),
                None => Attempt::NotYet("was deleted".into()),
            },
            Ok(Watched::Changed(_) | Watched::Stale) => match self.look().await {
                Ok(again) => again.outcome,
                Err(failure) => failure.into(),
            },
            Ok(Watched::Quiet) => look.outcome,
            Ok(Watched::NotAllowed) => {
                self.may_watch.store(false, Ordering::Relaxed);
                crate::report::debug(
                    "k8s.watch",
                    format!(
                        "may not watch {}: polling instead (grant the verb watch to be told of changes at once)",
                        self.watched_kind().qualified()
                    ),
                );
                look.outcome
            }
            // The look's verdict stands; the next attempt shows a lasting problem.
            Err(Failure::Retry(_)) => look.outcome,
            Err(failure) => failure.into(),
        }
    }
}

impl K8sProbe {
    fn access(&self, verb: &'static str, kind: &'static Kind) -> Access<'_> {
        Access {
            verb,
            kind,
            namespace: self.api.namespace(),
        }
    }

    /// Watched by name, so that an event is about the object itself.
    fn is_single_object(&self) -> bool {
        self.target.name.is_some() && self.watched_kind() == self.target.kind
    }

    fn watched_kind(&self) -> &'static Kind {
        if self.target.kind == &resource::SERVICE && self.goal == Goal::Ready {
            &ENDPOINTSLICE
        } else {
            self.target.kind
        }
    }

    async fn look(&self) -> std::result::Result<Look, Failure> {
        let kind = self.target.kind;
        let collection = kind.collection(self.api.namespace());
        match &self.target.name {
            Some(name) if kind == &resource::SERVICE && self.goal == Goal::Ready => {
                self.look_at_service(name).await
            }
            Some(name) => {
                let object = self
                    .api
                    .get(&format!("{collection}/{name}"), self.access("get", kind))
                    .await?;
                let watch = format!(
                    "{collection}?fieldSelector={}",
                    query_escape(&format!("metadata.name={name}"))
                );
                let version = object
                    .as_ref()
                    .and_then(|o| o["metadata"]["resourceVersion"].as_str())
                    .map(str::to_owned);
                let outcome = match object {
                    None if self.goal == Goal::Deleted => Attempt::ready("deleted"),
                    None => Attempt::NotYet("does not exist yet".into()),
                    Some(object) => self.judge_one(&object).into_attempt(),
                };
                Ok(Look {
                    outcome,
                    watch: Some((watch, version)),
                })
            }
            None => {
                let selector = self.selector.as_deref().unwrap_or_default();
                let path = format!("{collection}?labelSelector={}", query_escape(selector));
                let list = self
                    .api
                    .get(&path, self.access("list", kind))
                    .await?
                    .unwrap_or_default();
                let version = list["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_owned);
                let items = list["items"].as_array().cloned().unwrap_or_default();
                Ok(Look {
                    outcome: self.judge_many(&items),
                    watch: Some((path, version)),
                })
            }
        }
    }

    /// A Service is ready when its EndpointSlices hold at least one ready endpoint (at
    /// least `--min`): the truest "it will answer" short of connecting.
    async fn look_at_service(&self, name: &str) -> std::result::Result<Look, Failure> {
        let namespace = self.api.namespace();
        let service = self
            .api
            .get(
                &format!("{}/{name}", resource::SERVICE.collection(namespace)),
                self.access("get", &resource::SERVICE),
            )
            .await?;
        let slices_path = format!(
            "{}?labelSelector={}",
            ENDPOINTSLICE.collection(namespace),
            query_escape(&format!("kubernetes.io/service-name={name}"))
        );
        let Some(service) = service else {
            return Ok(Look {
                outcome: Attempt::NotYet("the service does not exist yet".into()),
                watch: None,
            });
        };
        if service["spec"]["type"] == "ExternalName" {
            return Ok(Look {
                outcome: Attempt::ready("an ExternalName service, which has no endpoints"),
                watch: None,
            });
        }
        let slices = self
            .api
            .get(&slices_path, self.access("list", &ENDPOINTSLICE))
            .await?
            .unwrap_or_default();
        let version = slices["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        let (mut ready, mut total) = (0, 0);
        for slice in slices["items"].as_array().into_iter().flatten() {
            for endpoint in slice["endpoints"].as_array().into_iter().flatten() {
                total += 1;
                // A missing `ready` means ready (the API's rule for unknown state).
                if endpoint["conditions"]["ready"] != false {
                    ready += endpoint["addresses"].as_array().map_or(1, Vec::len).max(1);
                }
            }
        }
        let outcome = if ready > 0 {
            Attempt::ready(format!("{ready} ready endpoint(s)"))
        } else if total == 0 {
            Attempt::NotYet("no endpoints yet".into())
        } else {
            Attempt::NotYet(format!("none of its {total} endpoint(s) is ready"))
        };
        Ok(Look {
            outcome,
            watch: Some((slices_path, version)),
        })
    }

    fn judge_one(&self, object: &Value) -> Verdict {
        judge(self.target.kind, &self.goal, object, self.max_restarts)
    }

    /// The objects a selector matched: all ready (and at least one), or at least `--min`.
    fn judge_many(&self, items: &[Value]) -> Attempt {
        if self.goal == Goal::Deleted {
            return match items.len() {
                0 => Attempt::ready("none left"),
                n => Attempt::NotYet(format!("{n} still exist")),
            };
        }
        let verdicts: Vec<(String, Verdict)> = items
            .iter()
            .map(|item| {
                let name = item["metadata"]["name"].as_str().unwrap_or("?").to_owned();
                (name, self.judge_one(item))
            })
            .collect();
        let ready = verdicts
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Ready(_)))
            .count();
        let failed: Vec<String> = verdicts
            .iter()
            .filter_map(|(name, v)| match v {
                Verdict::Fatal(reason) => {
                    Some(format!("{}/{name}: {reason}", self.target.kind.name))
                }
                _ => None,
            })
            .collect();
        let needed = self.min.unwrap_or(items.len().max(1));
        if ready >= needed && (self.min.is_some() || ready == items.len()) {
            return Attempt::ready(format!("{ready} of {} ready", items.len()));
        }
        if !failed.is_empty() && items.len() - failed.len() < needed {
            return Attempt::Fatal(Error::Failed(failed.join("; ")));
        }
        if items.is_empty() {
            return Attempt::NotYet("no object matches the selector yet".into());
        }
        let waiting: Vec<String> = verdicts
            .iter()
            .filter_map(|(name, v)| match v {
                Verdict::NotYet(reason) => Some(format!("{name}: {reason}")),
                _ => None,
            })
            .take(3)
            .collect();
        Attempt::NotYet(format!(
            "{ready} of {needed} ready ({})",
            waiting.join("; ")
        ))
    }
}

/// What one object's status says about the goal.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Ready(String),
    NotYet(String),
    /// It will never get there (a failed Job, an image that cannot be pulled).
    Fatal(String),
}

impl Verdict {
    fn into_attempt(self) -> Attempt {
        match self {
            Verdict::Ready(detail) => Attempt::ready(detail),
            Verdict::NotYet(reason) => Attempt::NotYet(reason),
            Verdict::Fatal(reason) => Attempt::Fatal(Error::Failed(reason)),
        }
    }
}

/// The goal, judged on one object of `kind` as its controller defines it.
pub fn judge(kind: &Kind, goal: &Goal, object: &Value, max_restarts: u32) -> Verdict {
    match goal {
        Goal::Created => return Verdict::Ready("exists".into()),
        Goal::Deleted => return Verdict::NotYet("still exists".into()),
        Goal::JsonPath { path, value } => return judge_jsonpath(path, value.as_deref(), object),
        _ => {}
    }
    let asked_for_failure = matches!(goal, Goal::Condition { kind, .. }
        if kind.eq_ignore_ascii_case("Failed") || kind.eq_ignore_ascii_case("FailureTarget"));
    if !asked_for_failure && let Some(problem) = never_ready(kind, object, max_restarts) {
        return Verdict::Fatal(problem);
    }
    if let Goal::Condition {
        kind: wanted,
        status,
    } = goal
    {
        return match condition(object, wanted) {
            Some((found, _)) if found.eq_ignore_ascii_case(status) => {
                Verdict::Ready(format!("condition {wanted}={found}"))
            }
            Some((found, why)) => {
                Verdict::NotYet(format!("condition {wanted} is {found}{why}, not {status}"))
            }
            None => Verdict::NotYet(format!("no condition {wanted} yet")),
        };
    }
    let status = &object["status"];
    if let Some(pending) = unobserved(object) {
        return Verdict::NotYet(pending);
    }
    match kind.name {
        "pod" => pod_ready(object),
        "job" => match condition(object, "Complete") {
            Some((found, _)) if found == "True" => Verdict::Ready("complete".into()),
            _ => Verdict::NotYet(format!(
                "{} active, {} succeeded",
                number(status, "active"),
                number(status, "succeeded")
            )),
        },
        "deployment" => {
            let wanted = replicas(object);
            let updated = number(status, "updatedReplicas");
            let total = number(status, "replicas");
            let available = number(status, "availableReplicas");
            if updated < wanted {
                Verdict::NotYet(format!("{updated} of {wanted} replicas updated"))
            } else if total > updated {
                Verdict::NotYet(format!(
                    "{} old replica(s) pending termination",
                    total - updated
                ))
            } else if available < updated {
                Verdict::NotYet(format!(
                    "{available} of {updated} updated replicas available"
                ))
            } else {
                Verdict::Ready(format!("{wanted} replica(s) updated and available"))
            }
        }
        "statefulset" => {
            let wanted = replicas(object);
            let ready = number(status, "readyReplicas");
            let updated = number(status, "updatedReplicas");
            let revision_pending = status["updateRevision"].is_string()
                && status["updateRevision"] != status["currentRevision"];
            if ready < wanted {
                Verdict::NotYet(format!("{ready} of {wanted} replicas ready"))
            } else if revision_pending && updated < wanted {
                Verdict::NotYet(format!("{updated} of {wanted} replicas updated"))
            } else {
                Verdict::Ready(format!("{wanted} replica(s) ready"))
            }
        }
        "daemonset" => {
            let desired = number(status, "desiredNumberScheduled");
            let updated = number(status, "updatedNumberScheduled");
            let available = number(status, "numberAvailable");
            if updated < desired {
                Verdict::NotYet(format!("{updated} of {desired} pods updated"))
            } else if available < desired {
                Verdict::NotYet(format!("{available} of {desired} pods available"))
            } else {
                Verdict::Ready(format!("{desired} pod(s) updated and available"))
            }
        }
        "replicaset" => {
            let wanted = replicas(object);
            let ready = number(status, "readyReplicas");
            if ready < wanted {
                Verdict::NotYet(format!("{ready} of {wanted} replicas ready"))
            } else {
                Verdict::Ready(format!("{wanted} replica(s) ready"))
            }
        }
        "persistentvolumeclaim" => match status["phase"].as_str() {
            Some("Bound") => Verdict::Ready("bound".into()),
            phase => Verdict::NotYet(format!("phase {}", phase.unwrap_or("unknown"))),
        },
        _ => Verdict::Ready("exists".into()),
    }
}

/// Why an object can never reach its goal, from its status: a Job that failed, a pod
/// that failed or cannot start its containers, a rollout past its progress deadline.
fn never_ready(kind: &Kind, object: &Value, max_restarts: u32) -> Option<String> {
    match kind.name {
        "job" => ["Failed", "FailureTarget"].iter().find_map(|failure| {
            match condition(object, failure) {
                Some((status, why)) if status == "True" => Some(format!(
                    "the job failed{}",
                    if why.is_empty() { String::new() } else { why }
                )),
                _ => None,
            }
        }),
        "pod" => pod_problem(object, max_restarts),
        "deployment" => match condition(object, "Progressing") {
            Some((status, why))
                if status == "False"
                    && reason_of(object, "Progressing") == Some("ProgressDeadlineExceeded") =>
            {
                Some(format!("the rollout exceeded its progress deadline{why}"))
            }
            _ => None,
        },
        "persistentvolumeclaim" if object["status"]["phase"] == "Lost" => {
            Some("the claim lost its volume (phase Lost)".into())
        }
        _ => None,
    }
}

fn pod_problem(pod: &Value, max_restarts: u32) -> Option<String> {
    let status = &pod["status"];
    if status["phase"] == "Failed" {
        return Some(format!("the pod failed{}", reason_and_message(status)));
    }
    let containers = status["initContainerStatuses"]
        .as_array()
        .into_iter()
        .chain(status["containerStatuses"].as_array())
        .flatten();
    for container in containers {
        let name = container["name"].as_str().unwrap_or("?");
        let waiting = &container["state"]["waiting"];
        let reason = waiting["reason"].as_str().unwrap_or_default();
        if matches!(
            reason,
            "ImagePullBackOff" | "ErrImageNeverPull" | "InvalidImageName"
        ) {
            return Some(format!(
                "container {name} cannot start{}",
                reason_and_message(waiting)
            ));
        }
        let restarts = container["restartCount"].as_u64().unwrap_or(0);
        if reason == "CrashLoopBackOff" && restarts > u64::from(max_restarts) {
            let last = &container["lastState"]["terminated"];
            let exit = last["exitCode"]
                .as_i64()
                .map(|code| format!(", last exit code {code}"))
                .unwrap_or_default();
            let why = last["reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            return Some(format!(
                "container {name} is crash-looping: {restarts} restarts, more than --max-restarts {max_restarts}{exit}{why}"
            ));
        }
    }
    None
}

fn pod_ready(pod: &Value) -> Verdict {
    let status = &pod["status"];
    if status["phase"] == "Succeeded" {
        return Verdict::Fatal(
            "the pod has completed (phase Succeeded): it will never be ready".into(),
        );
    }
    match condition(pod, "Ready") {
        Some((found, _)) if found == "True" => Verdict::Ready("ready".into()),
        _ => {
            let phase = status["phase"].as_str().unwrap_or("Pending");
            let waiting: Vec<String> = status["containerStatuses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let reason = c["state"]["waiting"]["reason"].as_str()?;
                    Some(format!("{} {reason}", c["name"].as_str().unwrap_or("?")))
                })
                .collect();
            if waiting.is_empty() {
                Verdict::NotYet(format!("phase {phase}, not ready"))
            } else {
                Verdict::NotYet(format!("phase {phase}, not ready ({})", waiting.join(", ")))
            }
        }
    }
}

fn judge_jsonpath(path: &JsonPath, value: Option<&str>, object: &Value) -> Verdict {
    let found: Vec<String> = path
        .select(object)
        .into_iter()
        .filter_map(jsonpath::scalar_text)
        .collect();
    match value {
        None if !found.is_empty() => Verdict::Ready(format!("{path} is {}", found.join(" "))),
        None => Verdict::NotYet(format!("{path} selects nothing yet")),
        Some(wanted) if found.iter().any(|f| f == wanted) => {
            Verdict::Ready(format!("{path} is {wanted}"))
        }
        Some(wanted) if found.is_empty() => {
            Verdict::NotYet(format!("{path} selects nothing yet, not {wanted}"))
        }
        Some(wanted) => Verdict::NotYet(format!("{path} is {}, not {wanted}", found.join(" "))),
    }
}

/// A controller that has not yet seen the newest spec: its status is about the old one.
fn unobserved(object: &Value) -> Option<String> {
    let generation = object["metadata"]["generation"].as_u64()?;
    let observed = object["status"]["observedGeneration"].as_u64()?;
    (observed < generation)
        .then(|| format!("the controller has not seen generation {generation} yet (at {observed})"))
}

/// The status of condition `kind` (case-insensitive), and `: REASON: MESSAGE` when given.
fn condition(object: &Value, kind: &str) -> Option<(String, String)> {
    let found = object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| {
            c["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(kind))
        })?;
    Some((
        found["status"].as_str().unwrap_or("Unknown").to_owned(),
        reason_and_message(found),
    ))
}

fn reason_of<'a>(object: &'a Value, kind: &str) -> Option<&'a str> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["reason"]
        .as_str()
}

/// `: REASON: MESSAGE`, `: REASON` or nothing.
fn reason_and_message(value: &Value) -> String {
    let parts: Vec<&str> = [value["reason"].as_str(), value["message"].as_str()]
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join(": "))
    }
}

fn number(status: &Value, key: &str) -> u64 {
    status[key].as_u64().unwrap_or(0)
}

/// `spec.replicas`, 1 when unset (the API's default).
fn replicas(object: &Value) -> u64 {
    object["spec"]["replicas"].as_u64().unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::resource::{DEPLOYMENT, JOB, POD};
    use serde_json::json;

    #[test]
    fn goals_parse_as_kubectl_writes_them() {
        assert_eq!(Goal::parse("Ready").unwrap(), Goal::Ready);
        assert_eq!(
            Goal::parse("condition=Available").unwrap(),
            Goal::Condition {
                kind: "Available".into(),
                status: "True".into()
            }
        );
        assert_eq!(
            Goal::parse("condition=Ready=false").unwrap(),
            Goal::Condition {
                kind: "Ready".into(),
                status: "false".into()
            }
        );
        let Goal::JsonPath { path, value } =
            Goal::parse("jsonpath={.status.phase}=Running").unwrap()
        else {
            panic!("not a jsonpath goal")
        };
        assert_eq!(path.to_string(), "{.status.phase}");
        assert_eq!(value.as_deref(), Some("Running"));
        let Goal::JsonPath { value, .. } =
            Goal::parse(r#"jsonpath=.status.conditions[?(@.type=="Ready")].status=True"#).unwrap()
        else {
            panic!("not a jsonpath goal")
        };
        assert_eq!(value.as_deref(), Some("True"));
        assert!(Goal::parse("jsonpath={.status.phase}x").is_err());
        assert!(Goal::parse("finished").is_err());
        assert!(Goal::parse("condition=").is_err());
    }

    #[test]
    fn a_failed_job_is_fatal_with_its_reason_unless_failure_is_waited_for() {
        let job = json!({ "status": { "failed": 1, "conditions": [
            { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
              "message": "Job has reached the specified backoff limit" }]}});
        assert_eq!(
            judge(&JOB, &Goal::Ready, &job, 5),
            Verdict::Fatal(
                "the job failed: BackoffLimitExceeded: Job has reached the specified backoff limit"
                    .into()
            )
        );
        let failed = Goal::parse("condition=Failed").unwrap();
        assert!(matches!(judge(&JOB, &failed, &job, 5), Verdict::Ready(_)));
    }

    #[test]
    fn a_pod_that_cannot_pull_or_crash_loops_past_the_limit_is_fatal() {
        let pulling = json!({ "status": { "phase": "Pending", "containerStatuses": [
            { "name": "app", "restartCount": 0, "state": { "waiting": {
                "reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\"" }}}]}});
        assert_eq!(
            judge(&POD, &Goal::Ready, &pulling, 5),
            Verdict::Fatal(
                "container app cannot start: ImagePullBackOff: Back-off pulling image \"nope\""
                    .into()
            )
        );
        let looping = |restarts: u32| {
            json!({ "status": { "phase": "Running", "containerStatuses": [
            { "name": "app", "restartCount": restarts,
              "state": { "waiting": { "reason": "CrashLoopBackOff" }},
              "lastState": { "terminated": { "exitCode": 3, "reason": "Error" }}}]}})
        };
        assert!(matches!(
            judge(&POD, &Goal::Ready, &looping(5), 5),
            Verdict::NotYet(_)
        ));
        assert_eq!(
            judge(&POD, &Goal::Ready, &looping(6), 5),
            Verdict::Fatal(
                "container app is crash-looping: 6 restarts, more than --max-restarts 5, last exit code 3 (Error)".into()
            )
        );
    }

    #[test]
    fn a_deployment_is_ready_when_its_rollout_is_done() {
        let deployment = |observed: u64, updated: u64, total: u64, available: u64| {
            json!({ "metadata": { "generation": 2 }, "spec": { "replicas": 3 },
                    "status": { "observedGeneration": observed, "updatedReplicas": updated,
                                "replicas": total, "availableReplicas": available }})
        };
        let verdict = |d: Value| judge(&DEPLOYMENT, &Goal::Ready, &d, 5);
        assert!(
            matches!(verdict(deployment(1, 3, 3, 3)), Verdict::NotYet(r) if r.contains("generation 2"))
        );
        assert!(
            matches!(verdict(deployment(2, 2, 3, 3)), Verdict::NotYet(r) if r == "2 of 3 replicas updated")
        );
        assert!(
            matches!(verdict(deployment(2, 3, 4, 3)), Verdict::NotYet(r) if r.contains("old replica"))
        );
        assert!(
            matches!(verdict(deployment(2, 3, 3, 2)), Verdict::NotYet(r) if r.contains("available"))
        );
        assert!(matches!(verdict(deployment(2, 3, 3, 3)), Verdict::Ready(_)));
    }
}
