//! replace: the `sed -i 's/__DB_HOST__/db/g' /config/app.conf` of charts, without a shell
//! and without sed's classic trap: an edit that no longer matches (a new image's default
//! config) fails instead of silently changing nothing. Every file is edited in memory first
//! and written only once every edit of every file matched as expected, each atomically with
//! its mode and owner; a file the edits leave as it was is not rewritten.
//!
//! The replacement text is never printed (it is often a secret from the environment); the
//! text looked for is, shortened, since it names the edit that failed.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use clap::{ArgMatches, Args, FromArgMatches};
use regex::{Regex, RegexBuilder};

use crate::atomic_file::AtomicFile;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;
use crate::volume;

// The flags as clap reads them; `ReplaceArgs` puts the edits back in the order they were
// given, which two separate lists of values would lose.
#[derive(Debug, Clone, clap::Args)]
struct ReplaceFlags {
    /// The files to edit (regular files: a symbolic link is refused, never followed).
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
    /// Replace every occurrence of OLD by NEW, byte for byte (repeatable; edits apply in
    /// the order given, each to the result of the one before).
    #[arg(
        long,
        num_args = 2,
        value_names = ["OLD", "NEW"],
        action = clap::ArgAction::Append,
        allow_hyphen_values = true,
        help_heading = "Edits"
    )]
    literal: Vec<String>,
    /// Replace every match of PATTERN (a regular expression; `^` and `$` match at every
    /// line, as in sed) by REPLACEMENT, where `$1` or `${name}` is a group and `$$` a
    /// dollar sign (repeatable, in order with the --literal edits).
    #[arg(
        long,
        num_args = 2,
        value_names = ["PATTERN", "REPLACEMENT"],
        action = clap::ArgAction::Append,
        allow_hyphen_values = true,
        help_heading = "Edits"
    )]
    regex: Vec<String>,
    /// How many times each edit must match in each file: N exactly, or N+ for at least N
    /// (0+ allows no match, as sed does). A file with an edit that does not is left as it
    /// is, and so is every other file: exit 1.
    #[arg(
        long,
        env = "INITBOX_EXPECT_COUNT",
        value_name = "N|N+",
        default_value = "1+",
        help_heading = "Edits"
    )]
    expect_count: ExpectCount,
    /// NEW and REPLACEMENT as given: no $(VAR) expansion.
    #[arg(long, env = "INITBOX_RAW", help_heading = "Edits")]
    raw: bool,
    #[command(flatten)]
    then: Then,
}

/// Replace text in files in place, atomically, failing when an edit does not match.
#[derive(Debug, Clone)]
pub struct ReplaceArgs {
    pub files: Vec<PathBuf>,
    /// In the order given on the command line.
    pub edits: Vec<Edit>,
    pub expect_count: ExpectCount,
    /// No `$(VAR)` expansion of the replacements.
    pub raw: bool,
    pub then: Then,
}

/// One edit, applied to every file.
#[derive(Clone)]
pub enum Edit {
    Literal { old: String, new: String },
    Regex { pattern: Regex, replacement: String },
}

impl fmt::Debug for Edit {
    // The replacement only by its length: it may be a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (Edit::Literal { new, .. }
        | Edit::Regex {
            replacement: new, ..
        }) = self;
        write!(f, "{self} → ({} bytes)", new.len())
    }
}

impl fmt::Display for Edit {
    /// `--literal '__DB_HOST__'` or `--regex '^port=.*'`, shortened.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (flag, text) = match self {
            Edit::Literal { old, .. } => ("--literal", old.as_str()),
            Edit::Regex { pattern, .. } => ("--regex", pattern.as_str()),
        };
        let mut shown: String = text.chars().take(60).collect();
        if shown.len() < text.len() {
            shown.push('…');
        }
        write!(f, "{flag} {shown:?}")
    }
}

/// `--expect-count`: how many matches each edit must have in each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpectCount {
    pub count: usize,
    pub or_more: bool,
}

impl ExpectCount {
    fn allows(self, matches: usize) -> bool {
        matches == self.count || (self.or_more && matches > self.count)
    }
}

impl fmt::Display for ExpectCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.or_more, self.count) {
            (true, n) => write!(f, "at least {n}"),
            (false, n) => write!(f, "exactly {n}"),
        }
    }
}

impl FromStr for ExpectCount {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let (digits, or_more) = match text.trim().strip_suffix('+') {
            Some(digits) => (digits, true),
            None => (text.trim(), false),
        };
        digits
            .parse()
            .map(|count| ExpectCount { count, or_more })
            .map_err(|_| format!("'{text}' is not a count: use N (exactly) or N+ (at least)"))
    }
}

impl Args for ReplaceArgs {
    fn augment_args(command: clap::Command) -> clap::Command {
        ReplaceFlags::augment_args(command)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        ReplaceFlags::augment_args_for_update(command)
    }
}

impl FromArgMatches for ReplaceArgs {
    fn from_arg_matches(matches: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let flags = ReplaceFlags::from_arg_matches(matches)?;
        let mut edits: Vec<(usize, Edit)> = Vec::new();
        for (id, values) in [("literal", &flags.literal), ("regex", &flags.regex)] {
            let indices: Vec<usize> = matches.indices_of(id).into_iter().flatten().collect();
            for (pair, at) in values.chunks(2).zip(indices.chunks(2)) {
                let [first, second] = pair else { continue };
                let edit = match id {
                    "literal" if first.is_empty() => {
                        return Err(invalid("--literal", first, "the text to replace is empty"));
                    }
                    "literal" => Edit::Literal {
                        old: first.clone(),
                        new: second.clone(),
                    },
                    _ => Edit::Regex {
                        pattern: RegexBuilder::new(first)
                            .multi_line(true)
                            .build()
                            .map_err(|error| invalid("--regex", first, &error.to_string()))?,
                        replacement: second.clone(),
                    },
                };
                edits.push((at[0], edit));
            }
        }
        if edits.is_empty() {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::MissingRequiredArgument,
                "the following required arguments were not provided:\n  --literal <OLD> <NEW> or --regex <PATTERN> <REPLACEMENT>\n",
            ));
        }
        edits.sort_by_key(|(at, _)| *at);
        Ok(ReplaceArgs {
            files: flags.files,
            edits: edits.into_iter().map(|(_, edit)| edit).collect(),
            expect_count: flags.expect_count,
            raw: flags.raw,
            then: flags.then,
        })
    }

    fn update_from_arg_matches(
        &mut self,
        matches: &ArgMatches,
    ) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

fn invalid(flag: &str, value: &str, reason: &str) -> clap::Error {
    clap::Error::raw(
        clap::error::ErrorKind::ValueValidation,
        format!("invalid value '{value}' for '{flag}': {reason}\n"),
    )
}

impl crate::cli::Task for ReplaceArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[OsString] {
        &self.then.command
    }
}

/// A file read and edited in memory, not yet written.
struct Edited {
    file: PathBuf,
    meta: fs::Metadata,
    content: Vec<u8>,
    replacements: usize,
}

fn run(args: &ReplaceArgs) -> Result<()> {
    let edits = expanded(&args.edits, args.raw)?;
    // Every file is read and edited before any is written: one edit that fails in one file
    // leaves them all as they were.
    let mut edited = Vec::with_capacity(args.files.len());
    let mut mismatches = Vec::new();
    for file in &args.files {
        let (meta, original) = read(file)?;
        let mut content = original;
        let mut replacements = 0;
        for edit in &edits {
            let (next, matches) = apply(edit, &content, file)?;
            if !args.expect_count.allows(matches) {
                mismatches.push(format!(
                    "{}: {edit} matched {matches} time{}, expected {}",
                    file.display(),
                    report::plural(matches),
                    args.expect_count
                ));
            }
            replacements += matches;
            if let Some(next) = next {
                content = next;
            }
        }
        edited.push(Edited {
            file: file.clone(),
            meta,
            content,
            replacements,
        });
    }
    if !mismatches.is_empty() {
        let hint = if args.expect_count
            == (ExpectCount {
                count: 1,
                or_more: true,
            }) {
            " (--expect-count 0+ allows an edit that matches nothing)"
        } else {
            ""
        };
        return Err(Error::Failed(format!(
            "{}; no file was changed{hint}",
            mismatches.join("; ")
        )));
    }
    for file in edited {
        if file.replacements == 0 || unchanged(&file)? {
            report::info(
                "replace.unchanged",
                format!("replace {}: unchanged", file.file.display()),
            );
            continue;
        }
        write(&file)?;
        report::info(
            "replace.done",
            format!(
                "replace {}: {} replacement{}",
                file.file.display(),
                file.replacements,
                report::plural(file.replacements)
            ),
        );
    }
    Ok(())
}

/// The edits with `$(VAR)` expanded in their replacements (not in the text looked for,
/// where `$(…)` is more often the placeholder itself), so a Secret can be written as
/// `$$(DB_PASSWORD)` in a manifest and reach the file without ever being on the command
/// line. A replacement that came from a variable is concealed like every secret.
fn expanded(edits: &[Edit], raw: bool) -> Result<Vec<Edit>> {
    edits
        .iter()
        .map(|edit| {
            if raw {
                return Ok(edit.clone());
            }
            let (flag, text) = match edit {
                Edit::Literal { new, .. } => ("--literal", new),
                Edit::Regex { replacement, .. } => ("--regex", replacement),
            };
            let value = crate::expand::flag(text, flag)?;
            if value != *text {
                crate::redact::conceal(&value);
            }
            Ok(match edit {
                Edit::Literal { old, .. } => Edit::Literal {
                    old: old.clone(),
                    new: value,
                },
                Edit::Regex { pattern, .. } => Edit::Regex {
                    pattern: pattern.clone(),
                    replacement: value,
                },
            })
        })
        .collect()
}

/// The file's metadata and bytes, opened without following a link.
fn read(file: &Path) -> Result<(fs::Metadata, Vec<u8>)> {
    let fail = |error: io::Error| {
        let why = if error.raw_os_error() == Some(libc::ELOOP) {
            "it is a symbolic link; replace edits regular files only, never through a link \
             (give the file it points to)"
                .to_owned()
        } else {
            reason::io(&error)
        };
        Error::Failed(format!("cannot edit {}: {why}", file.display()))
    };
    let mut opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(file)
        .map_err(fail)?;
    let meta = opened.metadata().map_err(fail)?;
    if !meta.is_file() {
        return Err(Error::Failed(format!(
            "cannot edit {}: not a regular file",
            file.display()
        )));
    }
    let mut content = Vec::with_capacity(meta.len() as usize);
    opened.read_to_end(&mut content).map_err(fail)?;
    Ok((meta, content))
}

/// One edit applied to the whole content: the new content (`None` when nothing matched)
/// and the number of matches.
fn apply(edit: &Edit, content: &[u8], file: &Path) -> Result<(Option<Vec<u8>>, usize)> {
    match edit {
        Edit::Literal { old, new } => {
            let finder = memchr::memmem::Finder::new(old.as_bytes());
            let mut out = Vec::new();
            let mut last = 0;
            let mut matches = 0;
            for at in finder.find_iter(content) {
                if matches == 0 {
                    out.reserve(content.len());
                }
                out.extend_from_slice(&content[last..at]);
                out.extend_from_slice(new.as_bytes());
                last = at + old.len();
                matches += 1;
            }
            if matches == 0 {
                return Ok((None, 0));
            }
            out.extend_from_slice(&content[last..]);
            Ok((Some(out), matches))
        }
        Edit::Regex {
            pattern,
            replacement,
        } => {
            let text = std::str::from_utf8(content).map_err(|_| {
                Error::Failed(format!(
                    "cannot edit {} with {edit}: it is not UTF-8 text (--literal edits any bytes)",
                    file.display()
                ))
            })?;
            let mut out = String::new();
            let mut last = 0;
            let mut matches = 0;
            let plain = !replacement.contains('$');
            for found in pattern.captures_iter(text) {
                let whole = found.get(0).expect("group 0 is the whole match");
                if matches == 0 {
                    out.reserve(text.len());
                }
                out.push_str(&text[last..whole.start()]);
                if plain {
                    out.push_str(replacement);
                } else {
                    found.expand(replacement, &mut out);
                }
                last = whole.end();
                matches += 1;
            }
            if matches == 0 {
                return Ok((None, 0));
            }
            out.push_str(&text[last..]);
            Ok((Some(out.into_bytes()), matches))
        }
    }
}

/// Whether the edited bytes are those already in the file (an edit that put back what it
/// found): then the file is not rewritten.
fn unchanged(file: &Edited) -> Result<bool> {
    if file.content.len() as u64 != file.meta.len() {
        return Ok(false);
    }
    let (_, current) = read(&file.file)?;
    Ok(current == file.content)
}

/// Writes the edited content in place of the file, with its mode, and its owner when root.
fn write(file: &Edited) -> Result<()> {
    let fail = |error: io::Error| {
        Error::Failed(format!(
            "cannot write {}: {}",
            file.file.display(),
            reason::io(&error)
        ))
    };
    let mode = file.meta.mode() & 0o7777;
    let mut atomic = AtomicFile::create(&file.file, Some(mode)).map_err(fail)?;
    atomic.write_all(&file.content).map_err(fail)?;
    if rustix::process::geteuid().is_root() {
        let written: &File = atomic.as_file();
        std::os::unix::fs::fchown(written, Some(file.meta.uid()), Some(file.meta.gid()))
            .map_err(fail)?;
        // chown clears the set-user-ID and set-group-ID bits.
        written
            .set_permissions(fs::Permissions::from_mode(mode))
            .map_err(fail)?;
    }
    atomic.commit().map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(old: &str, new: &str) -> Edit {
        Edit::Literal {
            old: old.into(),
            new: new.into(),
        }
    }

    fn regex(pattern: &str, replacement: &str) -> Edit {
        Edit::Regex {
            pattern: RegexBuilder::new(pattern).multi_line(true).build().unwrap(),
            replacement: replacement.into(),
        }
    }

    fn applied(edit: &Edit, text: &str) -> (String, usize) {
        let (out, matches) = apply(edit, text.as_bytes(), Path::new("f")).unwrap();
        let out = out.map_or_else(|| text.to_owned(), |o| String::from_utf8(o).unwrap());
        (out, matches)
    }

    #[test]
    fn literal_edits_replace_every_occurrence_left_to_right_without_overlap() {
        assert_eq!(applied(&literal("aa", "b"), "aaa aa"), ("ba b".into(), 2));
        assert_eq!(applied(&literal("x", "y"), "abc"), ("abc".into(), 0));
        assert_eq!(
            applied(&literal("$(A)", "$1"), "v=$(A)"),
            ("v=$1".into(), 1)
        );
    }

    #[test]
    fn regex_edits_anchor_at_lines_and_expand_groups() {
        let edit = regex(r"^port\s*=\s*(\d+)$", "port = 5432 # was $1");
        assert_eq!(
            applied(&edit, "host = a\nport = 80\nport=81\n"),
            (
                "host = a\nport = 5432 # was 80\nport = 5432 # was 81\n".into(),
                2
            )
        );
        assert_eq!(
            applied(&regex(r"(?P<k>\w+)=", "${k}: "), "a=1 b=2"),
            ("a: 1 b: 2".into(), 2)
        );
        assert_eq!(applied(&regex("x", "$$"), "axb"), ("a$b".into(), 1));
    }

    #[test]
    fn expect_count_reads_exact_and_at_least() {
        let exact: ExpectCount = "2".parse().unwrap();
        assert!(exact.allows(2) && !exact.allows(3) && !exact.allows(1));
        let at_least: ExpectCount = "1+".parse().unwrap();
        assert!(at_least.allows(1) && at_least.allows(9) && !at_least.allows(0));
        assert!("0+".parse::<ExpectCount>().unwrap().allows(0));
        assert!("many".parse::<ExpectCount>().is_err());
        assert!("-1".parse::<ExpectCount>().is_err());
    }

    #[test]
    fn an_edit_shows_what_it_looks_for_but_never_its_replacement() {
        let edit = literal("__PASSWORD__", "s3cret");
        assert_eq!(format!("{edit}"), "--literal \"__PASSWORD__\"");
        assert!(!format!("{edit:?}").contains("s3cret"));
        let long = literal(&"x".repeat(100), "y");
        assert!(format!("{long}").ends_with("…\""));
    }
}
