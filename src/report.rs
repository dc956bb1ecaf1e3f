//! Log lines on stderr, as text for people or JSON for log pipelines.
//!
//! initbox speaks rarely: when something starts, when its state changes, every ~10 s while
//! it waits, and when it ends. The reporter is process-wide (set once in `run`) so that a
//! probe deep inside a check can add a `-v` detail without threading a handle through.

use std::io::Write;
use std::sync::OnceLock;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::redact;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Reporter {
    pub format: LogFormat,
    /// The most detailed level printed: Error with `-q`, Info by default, Debug with `-v`.
    pub max_level: Level,
}

static REPORTER: OnceLock<Reporter> = OnceLock::new();

impl Reporter {
    pub fn new(format: LogFormat, quiet: bool, verbose: bool) -> Self {
        let max_level = if quiet {
            Level::Error
        } else if verbose {
            Level::Debug
        } else {
            Level::Info
        };
        Reporter { format, max_level }
    }

    /// Makes this the process-wide reporter. The first call wins.
    pub fn install(self) {
        let _ = REPORTER.set(self);
    }
}

fn current() -> Reporter {
    REPORTER.get().copied().unwrap_or(Reporter {
        format: LogFormat::Text,
        max_level: Level::Info,
    })
}

/// One log event: a stable machine-readable name, a human message and optional fields.
pub struct Event<'a> {
    level: Level,
    event: &'a str,
    message: String,
    fields: Map<String, Value>,
}

impl<'a> Event<'a> {
    pub fn new(level: Level, event: &'a str, message: impl Into<String>) -> Self {
        Event {
            level,
            event,
            message: message.into(),
            fields: Map::new(),
        }
    }

    /// Adds a field shown in JSON output only; the text line says it in the message.
    pub fn field(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.fields.insert(key.to_owned(), value.into());
        self
    }

    /// Prints the event, with every concealed secret masked (see `redact`).
    pub fn emit(self) {
        let reporter = current();
        if self.level > reporter.max_level {
            return;
        }
        let line = redact::scrub(&self.render(reporter.format)).into_owned();
        // A closed stderr must not turn into a panic: logging is best effort.
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{line}");
    }

    fn render(mut self, format: LogFormat) -> String {
        let step = step_name();
        match format {
            LogFormat::Text => {
                let step = step.map(|s| format!("[{s}] ")).unwrap_or_default();
                match self.level {
                    Level::Error => format!("initbox: {step}error: {}", self.message),
                    Level::Warn => format!("initbox: {step}warning: {}", self.message),
                    Level::Info | Level::Debug => format!("initbox: {step}{}", self.message),
                }
            }
            LogFormat::Json => {
                let mut object = Map::new();
                object.insert(
                    "time".into(),
                    humantime::format_rfc3339_millis(SystemTime::now())
                        .to_string()
                        .into(),
                );
                object.insert("level".into(), self.level.name().into());
                object.insert("event".into(), self.event.into());
                object.insert("message".into(), self.message.into());
                if let Some(step) = step {
                    self.fields
                        .entry("step")
                        .or_insert_with(|| step.to_string().into());
                }
                object.extend(self.fields);
                scrub_strings(&mut object);
                Value::Object(object).to_string()
            }
        }
    }
}

/// The name of the pipeline step whose work is logging, if any.
fn step_name() -> Option<std::sync::Arc<str>> {
    crate::step::current().map(|step| step.name)
}

/// The plural ending of a count in a log line: `1 step`, `3 steps`.
pub fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

pub fn error(event: &str, message: impl Into<String>) {
    Event::new(Level::Error, event, message).emit();
}

pub fn warn(event: &str, message: impl Into<String>) {
    Event::new(Level::Warn, event, message).emit();
}

pub fn info(event: &str, message: impl Into<String>) {
    Event::new(Level::Info, event, message).emit();
}

pub fn debug(event: &str, message: impl Into<String>) {
    Event::new(Level::Debug, event, message).emit();
}

/// Masks concealed secrets in every string of a JSON object before it is serialized, so
/// escaping cannot hide a secret from the mask.
fn scrub_strings(object: &mut Map<String, Value>) {
    fn scrub_value(value: &mut Value) {
        match value {
            Value::String(text) => {
                if let std::borrow::Cow::Owned(masked) = redact::scrub(text) {
                    *text = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(scrub_value),
            Value::Object(map) => map.values_mut().for_each(scrub_value),
            _ => {}
        }
    }
    object.values_mut().for_each(scrub_value);
}
