//! The one duration type for flags, environment variables and (later) pipeline files.
//!
//! Users write what they would write for `sleep` or in a Kubernetes manifest: a bare number
//! of seconds (`60`, `0.5`) or a humantime string (`90s`, `2m30s`, `1h`). Both forms are
//! accepted everywhere so that a value copied from one place works in every other.

use std::fmt;
use std::str::FromStr;
use std::time::Duration as StdDuration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration(pub StdDuration);

impl Duration {
    pub const ZERO: Duration = Duration(StdDuration::ZERO);

    pub const fn from_secs(secs: u64) -> Self {
        Duration(StdDuration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        Duration(StdDuration::from_millis(millis))
    }

    pub fn get(self) -> StdDuration {
        self.0
    }

    /// `0` means "no limit" for timeouts and deadlines.
    pub fn as_limit(self) -> Option<StdDuration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Err("empty duration (expected e.g. 30s, 2m30s or 1.5)".into());
        }
        if text.starts_with("--") {
            return Err(format!(
                "'{text}' is not a duration (a flag in the wrong place?)"
            ));
        }
        if text.starts_with('-') {
            return Err(format!("negative duration '{text}'"));
        }
        if let Ok(secs) = text.parse::<f64>() {
            return StdDuration::try_from_secs_f64(secs)
                .map(Duration)
                .map_err(|_| format!("invalid duration '{text}'"));
        }
        humantime::parse_duration(text).map(Duration).map_err(|e| {
            format!("invalid duration '{text}': {e} (expected e.g. 30s, 2m30s or 1.5)")
        })
    }
}

impl Duration {
    /// Parses a duration that must be greater than zero (`--interval`, `--attempt-timeout`):
    /// a clap value parser, so the command line and `run --check` refuse `0` alike.
    pub fn positive(text: &str) -> Result<Self, String> {
        let duration: Duration = text.parse()?;
        if duration.0.is_zero() {
            return Err("must be greater than 0".into());
        }
        Ok(duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Elapsed(self.0))
    }
}

/// Short human form of a measured time: `42ms`, `1.3s`, `2m5s`. Used in every log line.
pub struct Elapsed(pub StdDuration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d < StdDuration::from_secs(1) {
            let millis = d.as_millis();
            if millis == 0 && !d.is_zero() {
                // Never "0µs" for a non-zero time: it would read back as zero ("no limit").
                return match d.as_micros() {
                    0 => write!(f, "{}ns", d.as_nanos()),
                    micros => write!(f, "{micros}µs"),
                };
            }
            return write!(f, "{millis}ms");
        }
        if d < StdDuration::from_secs(60) {
            let tenths = ((d.as_millis() + 50) / 100).min(599) as u64;
            return if tenths.is_multiple_of(10) {
                write!(f, "{}s", tenths / 10)
            } else {
                write!(f, "{}.{}s", tenths / 10, tenths % 10)
            };
        }
        let secs = d.as_secs();
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || (h == 0 && m == 0) {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> StdDuration {
        text.parse::<Duration>().unwrap().0
    }

    #[test]
    fn accepts_seconds_and_humantime() {
        assert_eq!(parse("60"), StdDuration::from_secs(60));
        assert_eq!(parse("0.5"), StdDuration::from_millis(500));
        assert_eq!(parse("1.5"), StdDuration::from_millis(1500));
        assert_eq!(parse("90s"), StdDuration::from_secs(90));
        assert_eq!(parse("2m30s"), StdDuration::from_secs(150));
        assert_eq!(parse("2m 30s"), StdDuration::from_secs(150));
        assert_eq!(parse("50ms"), StdDuration::from_millis(50));
        assert_eq!(parse("0"), StdDuration::ZERO);
    }

    #[test]
    fn rejects_nonsense_with_the_value_named() {
        for bad in ["", "-1", "-5s", "abc", "5 parsecs", "1e999", "NaN"] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(!err.is_empty(), "{bad}");
        }
        assert!("-5s".parse::<Duration>().unwrap_err().contains("-5s"));
        assert!("soon".parse::<Duration>().unwrap_err().contains("soon"));
    }

    #[test]
    fn zero_means_no_limit() {
        assert_eq!(Duration::ZERO.as_limit(), None);
        assert_eq!(
            Duration::from_secs(3).as_limit(),
            Some(StdDuration::from_secs(3))
        );
    }

    #[test]
    fn elapsed_reads_well() {
        let show = |d: StdDuration| Elapsed(d).to_string();
        assert_eq!(show(StdDuration::from_millis(42)), "42ms");
        assert_eq!(show(StdDuration::from_millis(1300)), "1.3s");
        assert_eq!(show(StdDuration::from_secs(30)), "30s");
        assert_eq!(show(StdDuration::from_secs(125)), "2m5s");
        assert_eq!(show(StdDuration::from_secs(300)), "5m");
        assert_eq!(show(StdDuration::from_secs(3600)), "1h");
        assert_eq!(show(StdDuration::from_micros(250)), "250µs");
        // Found by fuzzing: a sub-microsecond time once showed as "0µs", which reads back
        // as zero, the "no limit" of a timeout.
        assert_eq!(show(StdDuration::from_nanos(284)), "284ns");
        assert_eq!(
            "284ns".parse::<Duration>().unwrap().get(),
            StdDuration::from_nanos(284)
        );
    }
}
