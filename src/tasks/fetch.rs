//! fetch: the `wget -O /work-dir/index.html http://…` init container, safe for a volume
//! that a main container reads: the download streams into a temp file beside the
//! destination and is renamed into place only when complete, within `--max-size` and
//! matching `--sha256`, so a reader (or a restarted pod) never sees half a file. With
//! `-o -` and `--sha256`, the download is held in memory (at most `--max-size`) and
//! written to stdout only once its digest matched: only verified bytes leave initbox.
//! With `--extract`, the download is spooled to a temp file beside the destination
//! directory, verified, and only then unpacked by `extract`'s code (see
//! [`crate::tasks::extract::install`]); with `--sha256` and a destination that already
//! holds that archive, nothing is downloaded.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use ring::digest;
use tokio::time::Instant;

use crate::atomic_file::{self, AtomicFile};
use crate::duration::Elapsed;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::{
    self, Header, MAX_REDIRECTS, Redirects, RequestArgs, StatusRanges, Unechoed, check_url,
    parse_url,
};
use crate::reason;
use crate::report;
use crate::resolve::ResolverArgs;
use crate::size::ByteSize;
use crate::tasks::extract::{self, Filters};
use crate::wait::RetryArgs;
use crate::wait::{self, Attempt, PROGRESS_EVERY, Probe};

/// Download a URL into a file, atomically.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("attempt_timeout", |arg| arg
    .default_value("10s")
    .help("Give up on an attempt when connecting, or waiting for the next byte, takes this long")))]
#[command(
    mut_arg("strip_components", |arg| arg.requires("extract")),
    mut_arg("include", |arg| arg.requires("extract")),
    mut_arg("exclude", |arg| arg.requires("extract")),
    mut_arg("max_entries", |arg| arg.requires("extract")),
    mut_arg("keep_setuid", |arg| arg.requires("extract")),
    mut_arg("same_owner", |arg| arg.requires("extract")),
    mut_arg("force", |arg| arg.requires("extract")),
)]
pub struct FetchArgs {
    /// What to download; $(VAR) is expanded from the environment.
    #[arg(value_name = "URL", value_parser = Unechoed(check_url))]
    pub url: String,
    /// Where to save it ('-' for stdout); missing parent directories are created. Checked
    /// before the first request.
    #[arg(short, long, env = "INITBOX_OUTPUT", value_name = "FILE")]
    pub output: PathBuf,
    /// Keep the file only if its SHA-256 is this (64 hex digits); otherwise exit 1 and leave
    /// nothing at the destination. With '-o -' the download is held in memory (up to
    /// --max-size) and written to stdout only once it matched.
    #[arg(long, env = "INITBOX_SHA256", value_name = "HEX", value_parser = parse_sha256)]
    pub sha256: Option<String>,
    /// The file's mode, in octal (default: 0666 minus the umask).
    #[arg(long, env = "INITBOX_MODE", value_name = "MODE", value_parser = atomic_file::parse_mode)]
    pub mode: Option<u32>,
    /// Flush the file to disk before renaming it into place, so it survives a power loss
    /// (slower; like curl and wget, fetch does not by default — a killed run never leaves
    /// half a file either way).
    #[arg(long, env = "INITBOX_FSYNC")]
    pub fsync: bool,
    /// Unpack the download (tar, tar.gz, tar.xz, tar.zst, tar.bz2 or zip, told by its
    /// content) into the directory -o, as `extract` does; with --sha256 it is verified
    /// before the first entry is unpacked.
    #[arg(long, env = "INITBOX_EXTRACT", conflicts_with = "mode")]
    pub extract: bool,
    #[command(flatten)]
    pub unpack: Filters,
    /// Refuse a download larger than this (1048576, 512k, 100M, 1GiB); with --extract, also
    /// an archive whose unpacked files add up to more.
    #[arg(
        long,
        env = "INITBOX_MAX_SIZE",
        default_value = "1GiB",
        value_name = "SIZE"
    )]
    pub max_size: ByteSize,
    #[command(flatten)]
    pub request: RequestArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

fn parse_sha256(text: &str) -> Result<String, String> {
    let hex = text.trim().to_ascii_lowercase();
    let hex = hex.strip_prefix("sha256:").unwrap_or(&hex).to_owned();
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(format!("'{text}' is not a SHA-256 (64 hexadecimal digits)"))
    }
}

/// Where the bytes go.
enum Sink {
    /// Buffered: a network chunk is a few KiB, and a write per chunk costs time.
    File(std::io::BufWriter<AtomicFile>),
    Stdout(std::io::Stdout),
    /// `-o -` with `--sha256`: held until the digest is known, bounded by `--max-size`.
    Spool(Vec<u8>),
    /// `--extract`: the archive, in a temp file beside the destination directory.
    Archive(Spooled),
}

/// The spooled archive of `--extract`, removed however the attempt ends.
struct Spooled {
    writer: std::io::BufWriter<File>,
    path: PathBuf,
}

impl Drop for Spooled {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How much a file write gathers before it goes to the kernel.
const WRITE_BUFFER: usize = 256 * 1024;

impl Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::File(file) => file.write_all(bytes),
            Sink::Stdout(stdout) => stdout.write_all(bytes),
            Sink::Spool(held) => {
                held.extend_from_slice(bytes);
                Ok(())
            }
            Sink::Archive(spooled) => spooled.writer.write_all(bytes),
        }
    }
}

struct FetchProbe {
    label: String,
    client: reqwest::Client,
    url: Url,
    headers: Vec<Header>,
    output: PathBuf,
    sha256: Option<String>,
    mode: Option<u32>,
    fsync: bool,
    max_size: ByteSize,
    /// `--extract`'s filters.
    extract: Option<Filters>,
    pause: Duration,
    /// `--attempt-timeout`, which the client applies to connecting and to each read.
    attempt_timeout: Duration,
}

impl FetchProbe {
    fn to_stdout(&self) -> bool {
        self.output == Path::new("-")
    }

    fn open_sink(&self) -> std::result::Result<Sink, Error> {
        if self.extract.is_some() {
            let spool = spool_path(&self.output);
            // What a killed run left, or the previous attempt's partial download.
            let _ = std::fs::remove_file(&spool);
            if let Some(parent) = spool.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            return std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&spool)
                .map(|file| {
                    Sink::Archive(Spooled {
                        writer: std::io::BufWriter::with_capacity(WRITE_BUFFER, file),
                        path: spool.clone(),
                    })
                })
                .map_err(|e| {
                    Error::Failed(format!(
                        "cannot write {}: {}",
                        spool.display(),
                        reason::io(&e)
                    ))
                });
        }
        if self.to_stdout() {
            return Ok(match self.sha256 {
                Some(_) => Sink::Spool(Vec::new()),
                None => Sink::Stdout(std::io::stdout()),
            });
        }
        AtomicFile::create(&self.output, self.mode)
            .map(|file| Sink::File(std::io::BufWriter::with_capacity(WRITE_BUFFER, file)))
            .map_err(|e| self.write_error(&e))
    }

    fn write_error(&self, error: &std::io::Error) -> Error {
        Error::Failed(format!(
            "cannot write {}: {}",
            self.output.display(),
            reason::io(error)
        ))
    }

    fn too_big(&self, size: u64) -> Attempt {
        Attempt::Fatal(Error::Failed(format!(
            "the download is larger than --max-size {} ({} or more)",
            self.max_size,
            ByteSize(size)
        )))
    }
}

impl Probe for FetchProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn ready_phrase(&self) -> String {
        format!("fetched {}", self.label)
    }

    async fn attempt(&self) -> Attempt {
        let request = http_client::request(
            &self.client,
            &reqwest::Method::GET,
            &self.url,
            &self.headers,
            None,
        );
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return http_client::classify_within(&error, self.attempt_timeout).into();
            }
        };
        if !response.status().is_success() {
            return http_client::unexpected_answer(response, &StatusRanges::success(), self.pause)
                .await;
        }
        let announced = response.content_length();
        if let Some(size) = announced
            && size > self.max_size.0
        {
            return self.too_big(size);
        }
        let mut sink = match self.open_sink() {
            Ok(sink) => sink,
            Err(error) => return Attempt::Fatal(error),
        };
        // Hashing costs as much as the transfer on a fast link: only when asked to check,
        // or to record what was extracted.
        let mut hash = (self.sha256.is_some() || self.extract.is_some())
            .then(|| digest::Context::new(&digest::SHA256));
        let mut received: u64 = 0;
        let start = Instant::now();
        let mut last_progress = start;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                // Bytes already on stdout cannot be taken back: no retry there.
                Err(error) if matches!(sink, Sink::Stdout(_)) && received > 0 => {
                    return Attempt::Fatal(Error::Failed(format!(
                        "the download broke off after {} written to stdout: {}",
                        ByteSize(received),
                        describe_failure(&error, self.attempt_timeout)
                    )));
                }
                Err(error) => {
                    return Attempt::NotYet(format!(
                        "the download broke off after {}: {}",
                        ByteSize(received),
                        describe_failure(&error, self.attempt_timeout)
                    ));
                }
            };
            received += chunk.len() as u64;
            if received > self.max_size.0 {
                return self.too_big(received);
            }
            if let Some(hash) = &mut hash {
                hash.update(&chunk);
            }
            if let Err(error) = sink.write(&chunk) {
                return Attempt::Fatal(self.write_error(&error));
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                last_progress = Instant::now();
                report_progress(&self.label, received, announced, start.elapsed());
            }
        }
        let actual = hash.map(|hash| hex(hash.finish().as_ref()));
        if let (Some(expected), Some(actual)) = (&self.sha256, &actual)
            && expected != actual
        {
            let kept = if self.extract.is_some() {
                "nothing was extracted"
            } else if self.to_stdout() {
                "nothing was written to stdout"
            } else {
                "nothing was saved"
            };
            return Attempt::Fatal(Error::Failed(format!(
                "SHA-256 mismatch: expected {expected}, got {actual} ({}); {kept}",
                ByteSize(received)
            )));
        }
        let saved = match sink {
            Sink::File(buffered) => {
                let file = match buffered.into_inner() {
                    Ok(file) => file,
                    Err(error) => return Attempt::Fatal(self.write_error(error.error())),
                };
                let committed = if self.fsync {
                    file.commit()
                } else {
                    file.commit_without_sync()
                };
                match committed {
                    Ok(()) => format!("saved {} to {}", ByteSize(received), self.output.display()),
                    Err(error) => return Attempt::Fatal(self.write_error(&error)),
                }
            }
            Sink::Stdout(mut stdout) => {
                if let Err(error) = stdout.flush() {
                    return Attempt::Fatal(self.write_error(&error));
                }
                format!("wrote {} to stdout", ByteSize(received))
            }
            Sink::Spool(held) => {
                let mut stdout = std::io::stdout().lock();
                if let Err(error) = stdout.write_all(&held).and_then(|()| stdout.flush()) {
                    return Attempt::Fatal(self.write_error(&error));
                }
                format!("wrote {} to stdout", ByteSize(received))
            }
            Sink::Archive(mut spooled) => {
                let filters = self.extract.clone().expect("--extract");
                let unpacked = match spooled
                    .writer
                    .flush()
                    .and_then(|()| spooled.writer.get_ref().try_clone())
                {
                    Ok(file) => {
                        let dest = self.output.clone();
                        let label = self.label.clone();
                        let max_size = self.max_size;
                        let sha256 = actual.clone();
                        crate::volume::blocking(move || {
                            let mut file = file;
                            file.rewind().map_err(|e| {
                                Error::Failed(format!(
                                    "cannot read the download: {}",
                                    reason::io(&e)
                                ))
                            })?;
                            extract::install(file, &label, &dest, &filters, max_size, sha256)
                        })
                        .await
                    }
                    Err(error) => Err(self.write_error(&error)),
                };
                drop(spooled);
                if let Err(error) = unpacked {
                    return Attempt::Fatal(error);
                }
                format!(
                    "downloaded {} and extracted it into {}",
                    ByteSize(received),
                    self.output.display()
                )
            }
        };
        let checked = if actual.is_some() {
            ", SHA-256 verified"
        } else {
            ""
        };
        // A rate says something only about a transfer that took a while.
        let speed = if start.elapsed() >= Duration::from_secs(1) {
            format!(" at {}/s", ByteSize(rate(received, start.elapsed())))
        } else {
            String::new()
        };
        Attempt::ready(format!("{saved}{speed}{checked}"))
    }
}

/// Where `--extract` spools the archive: beside the destination directory, so that it is
/// on a filesystem the pod can write to, and never inside what is being replaced.
fn spool_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let parent = match dest.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    parent.join(format!(".{name}.initbox-download"))
}

fn describe_failure(error: &reqwest::Error, attempt_timeout: Duration) -> String {
    http_client::classify_within(error, attempt_timeout).to_string()
}

fn report_progress(label: &str, received: u64, announced: Option<u64>, elapsed: Duration) {
    let of = match announced {
        Some(total) => format!(" of {}", ByteSize(total)),
        None => String::new(),
    };
    report::Event::new(
        report::Level::Info,
        "fetch.progress",
        format!(
            "downloading {label}: {}{of} after {} ({}/s)",
            ByteSize(received),
            Elapsed(elapsed),
            ByteSize(rate(received, elapsed))
        ),
    )
    .field("bytes", received)
    .field("total_bytes", announced)
    .emit();
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    (bytes as f64 / elapsed.as_secs_f64().max(0.001)) as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl crate::cli::Task for FetchArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        if self.extract && self.output == Path::new("-") {
            return Err(crate::cli::Invalid {
                arg: "--output <FILE>".into(),
                value: "-".into(),
                reason: "--extract needs a directory for -o, not '-'".into(),
            });
        }
        Ok(())
    }
}

pub async fn run(args: FetchArgs) -> Result<()> {
    // The client bounds connecting and each read: a download may take minutes as long as
    // bytes keep coming, so the engine must not cut the attempt.
    let options = args.retry.options().bounded_by_probe();
    let attempt_timeout = options.attempt.limit();
    let url = parse_url(&crate::expand::flag(&args.url, "URL")?).map_err(Error::Usage)?;
    let headers = args.request.headers()?;
    // The destination is checked before the first request, so a download that cannot be
    // saved is not made (and a directory is named as one, not found after the transfer).
    if args.extract {
        args.unpack.check_owner()?;
        // The same archive (by --sha256) already unpacked there: nothing to download.
        if let Some(sha256) = &args.sha256 {
            let (dest, sha, filters) = (args.output.clone(), sha256.clone(), args.unpack.clone());
            if crate::volume::blocking(move || extract::up_to_date(&dest, &sha, &filters)).await? {
                report::info(
                    "fetch.unchanged",
                    format!(
                        "fetch {}: {} already holds it (SHA-256 {sha256}); nothing downloaded",
                        crate::redact::url(&url),
                        args.output.display()
                    ),
                );
                return Ok(());
            }
        }
        extract::check_destination(&args.output)?;
    } else if args.output != Path::new("-") {
        atomic_file::check_destination(&args.output).map_err(|e| {
            Error::Failed(format!(
                "cannot write {}: {}",
                args.output.display(),
                reason::io(&e)
            ))
        })?;
    }
    let resolver = args.resolver.resolver(attempt_timeout);
    let client = http_client::build_client(
        &args.request.tls,
        resolver,
        Redirects::Follow(MAX_REDIRECTS),
        Some(attempt_timeout),
    )?;
    report::debug(
        "fetch.request",
        http_client::describe_request(&reqwest::Method::GET, &url, &headers),
    );
    let probe = FetchProbe {
        label: crate::redact::url(&url),
        client,
        url,
        headers,
        output: args.output,
        sha256: args.sha256,
        mode: args.mode,
        fsync: args.fsync,
        max_size: args.max_size,
        extract: args.extract.then_some(args.unpack),
        pause: options.interval,
        attempt_timeout,
    };
    wait::wait_for_all("fetch", vec![probe], options)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_values() {
        let digest = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        assert_eq!(parse_sha256(digest).unwrap(), digest.to_ascii_lowercase());
        assert!(parse_sha256(&format!("sha256:{digest}")).is_ok());
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"g".repeat(64)).is_err());
        let empty = digest::digest(&digest::SHA256, b"");
        assert_eq!(hex(empty.as_ref()), digest.to_ascii_lowercase());
    }
}
