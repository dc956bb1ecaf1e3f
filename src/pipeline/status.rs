//! What a pipeline reports, in the words of `kubectl get pod` and `kubectl describe pod`:
//! the `Init:N/M` summary, a status file whose fields mirror `initContainerStatuses`
//! (rewritten atomically on every transition), and on failure one line for the container's
//! termination-message file.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::atomic_file;
use crate::report;

/// The most a termination message may hold (kubelet reads at most 4096 bytes).
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Where Kubernetes looks for a container's termination message.
pub const KUBERNETES_TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStatus {
    /// Pending, Running, Succeeded or Failed.
    pub phase: &'static str,
    /// What kubectl would print in STATUS: `Init:1/3`, `Init:CrashLoopBackOff`, …
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub started_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub init_container_statuses: Vec<StepStatus>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    pub name: String,
    pub task: String,
    pub ready: bool,
    pub restart_count: u32,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_state: Option<State>,
}

/// A container state as Kubernetes writes it: exactly one of waiting, running, terminated.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum State {
    Waiting {
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    Running {
        #[serde(rename = "startedAt")]
        started_at: String,
    },
    Terminated {
        #[serde(rename = "exitCode")]
        exit_code: i32,
        reason: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(rename = "startedAt")]
        started_at: String,
        #[serde(rename = "finishedAt")]
        finished_at: String,
    },
}

pub fn now() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

impl PipelineStatus {
    pub fn new(steps: &[(String, String)]) -> Self {
        PipelineStatus {
            phase: "Pending",
            status: format!("Init:0/{}", steps.len()),
            message: None,
            started_at: now(),
            finished_at: None,
            init_container_statuses: steps
                .iter()
                .map(|(name, task)| StepStatus {
                    name: name.clone(),
                    task: task.clone(),
                    ready: false,
                    restart_count: 0,
                    state: State::Waiting {
                        reason: "PodInitializing",
                        message: None,
                    },
                    last_state: None,
                })
                .collect(),
        }
    }

    /// How many steps have succeeded.
    pub fn done(&self) -> usize {
        self.init_container_statuses
            .iter()
            .filter(|s| s.ready)
            .count()
    }

    /// `Init:N/M`, or `Init:CrashLoopBackOff` while a step waits to be restarted.
    pub fn summarize(&mut self) {
        let backing_off = self.init_container_statuses.iter().any(|s| {
            matches!(
                s.state,
                State::Waiting {
                    reason: "CrashLoopBackOff",
                    ..
                }
            )
        });
        self.status = if backing_off {
            "Init:CrashLoopBackOff".into()
        } else {
            format!(
                "Init:{}/{}",
                self.done(),
                self.init_container_statuses.len()
            )
        };
    }
}

/// Writes the status file (when there is one) after every transition.
pub struct StatusFile {
    path: Option<PathBuf>,
}

impl StatusFile {
    pub fn new(path: Option<PathBuf>) -> Self {
        StatusFile { path }
    }

    /// Err carries a one-line reason: "cannot write the status file PATH: read-only file system".
    pub fn write(&self, status: &PipelineStatus) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut json = serde_json::to_vec_pretty(status)
            .map_err(|error| format!("encoding the status: {error}"))?;
        json.push(b'\n');
        // Error messages can quote a server that echoed a credential back.
        let json = crate::redact::scrub(&String::from_utf8_lossy(&json)).into_owned();
        atomic_file::write(path, json.as_bytes(), None).map_err(|error| {
            format!(
                "cannot write the status file {}: {}",
                path.display(),
                crate::reason::io(&error)
            )
        })
    }
}

/// Writes the one-line failure summary where kubelet (or the user) will look for it:
/// `explicit` when given, else `/dev/termination-log` when it exists.
pub fn write_termination_message(explicit: Option<&Path>, message: &str) {
    let path = match explicit {
        Some(path) => path.to_owned(),
        None if Path::new(KUBERNETES_TERMINATION_LOG).exists() => {
            PathBuf::from(KUBERNETES_TERMINATION_LOG)
        }
        None => return,
    };
    let line = truncate(
        &crate::redact::scrub(message),
        TERMINATION_MESSAGE_LIMIT - 1,
    );
    // Not atomic on purpose: /dev/termination-log is a bind-mounted file that cannot be
    // replaced by a rename; it is written once, at the end.
    if let Err(error) = std::fs::write(&path, format!("{line}\n")) {
        report::warn(
            "status.termination_log",
            format!(
                "cannot write the termination message to {}: {}",
                path.display(),
                crate::reason::io(&error)
            ),
        );
    }
}

/// Finds out, before the first step, whether an explicit `--termination-log PATH` can be
/// written, so a wrong path is said at the start instead of being found when the run has
/// failed and the message is lost. Nothing is left behind: an existing file is opened
/// without truncating it, a new one is created and removed again.
pub fn check_termination_log(explicit: Option<&Path>) -> Result<(), String> {
    let Some(path) = explicit else {
        return Ok(());
    };
    let opened = if path.exists() {
        std::fs::OpenOptions::new().write(true).open(path).map(drop)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|_| std::fs::remove_file(path))
    };
    opened.map_err(|error| {
        format!(
            "cannot write the termination message to {}: {}",
            path.display(),
            crate::reason::io(&error)
        )
    })
}

/// At most `limit` bytes, cut at a character boundary, on one line.
fn truncate(text: &str, limit: usize) -> String {
    let line = text.replace('\n', " ");
    if line.len() <= limit {
        return line;
    }
    let mut end = limit.saturating_sub(3);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_read_like_kubectl() {
        let mut status =
            PipelineStatus::new(&[("a".into(), "sleep".into()), ("b".into(), "sleep".into())]);
        status.summarize();
        assert_eq!(status.status, "Init:0/2");
        status.init_container_statuses[0].ready = true;
        status.summarize();
        assert_eq!(status.status, "Init:1/2");
        status.init_container_statuses[1].state = State::Waiting {
            reason: "CrashLoopBackOff",
            message: None,
        };
        status.summarize();
        assert_eq!(status.status, "Init:CrashLoopBackOff");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["initContainerStatuses"][1]["state"]["waiting"]["reason"],
            "CrashLoopBackOff"
        );
        assert_eq!(json["initContainerStatuses"][0]["restartCount"], 0);
    }

    #[test]
    fn termination_messages_fit_in_4_kib_on_one_line() {
        let long = "é".repeat(5000) + "\nsecond line";
        let cut = truncate(&long, TERMINATION_MESSAGE_LIMIT - 1);
        assert!(cut.len() < TERMINATION_MESSAGE_LIMIT);
        assert!(!cut.contains('\n'));
        assert!(cut.ends_with("..."));
    }
}
