//! install: puts this very binary into a shared volume (an emptyDir), so that a later init
//! container of any image — the application's own, distroless included — can run
//! `/tools/initbox copy /opt/app/conf /work/conf` from its own filesystem, with no shell and
//! no busybox in that image.
//!
//! The copy is atomic (a temp file renamed into place, mode 0755), so a container starting
//! from the volume never executes half a binary; an identical binary already there is left
//! alone, so a pod restart rewrites nothing.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::atomic_file::AtomicFile;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;

/// The running binary, as the kernel knows it (whatever name it was started by).
const SELF_EXE: &str = "/proc/self/exe";
const MODE: u32 = 0o755;

/// Copy initbox itself into DIR (atomic, mode 0755) and print the installed path.
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The directory to install into, such as an emptyDir mounted at /tools; made if
    /// missing.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// The installed file's name in DIR.
    #[arg(long, env = "INITBOX_NAME", default_value = "initbox", value_parser = parse_name)]
    pub name: String,
    #[command(flatten)]
    pub then: Then,
}

fn parse_name(text: &str) -> Result<String, String> {
    if text.is_empty() || text == "." || text == ".." || text.contains('/') {
        return Err(format!("'{text}' is not a file name (no '/', not empty)"));
    }
    Ok(text.to_owned())
}

impl crate::cli::Task for InstallArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        crate::volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[OsString] {
        &self.then.command
    }
}

/// The running binary: `/proc/self/exe`, or where no /proc is mounted (a bare chroot; a
/// Kubernetes container always has one) the path it was started by, when that names a file.
fn open_running_binary() -> Result<File> {
    let proc_error = match File::open(SELF_EXE) {
        Ok(file) => return Ok(file),
        Err(error) => error,
    };
    let started_as = std::env::args_os().next().map(PathBuf::from);
    if proc_error.kind() == io::ErrorKind::NotFound
        && let Some(path) = started_as.filter(|path| path.components().count() > 1)
        && let Ok(file) = File::open(&path)
    {
        return Ok(file);
    }
    Err(Error::Failed(format!(
        "cannot read the running binary ({SELF_EXE}): {}",
        reason::io(&proc_error)
    )))
}

fn run(args: &InstallArgs) -> Result<()> {
    let dest = args.dir.join(&args.name);
    let fail = |error: io::Error| {
        Error::Failed(format!(
            "cannot install initbox as {}: {}",
            dest.display(),
            reason::io(&error)
        ))
    };
    let mut source = open_running_binary()?;
    let unchanged = same_binary(&mut source, &dest).map_err(fail)?;
    if unchanged {
        report::info(
            "install.unchanged",
            format!("{}: already this initbox", dest.display()),
        );
    } else {
        let mut file = AtomicFile::create(&dest, Some(MODE)).map_err(fail)?;
        io::copy(&mut source, &mut file).map_err(fail)?;
        file.commit().map_err(fail)?;
        report::info("install.done", format!("installed {}", dest.display()));
    }
    println!("{}", dest.display());
    Ok(())
}

/// Whether `dest` is a regular file (not a link) of mode 0755 with the same bytes as
/// `source`; `source` is left at its start either way.
fn same_binary(source: &mut File, dest: &Path) -> io::Result<bool> {
    use std::io::Seek;
    let meta = match fs::symlink_metadata(dest) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(error) => return Err(error),
    };
    let own = source.metadata()?;
    if !meta.is_file() || meta.len() != own.len() || meta.permissions().mode() & 0o7777 != MODE {
        return Ok(false);
    }
    let mut installed = File::open(dest)?;
    let same = same_bytes(source, &mut installed)?;
    source.rewind()?;
    Ok(same)
}

fn same_bytes(a: &mut impl Read, b: &mut impl Read) -> io::Result<bool> {
    let mut left = vec![0u8; 256 * 1024];
    let mut right = vec![0u8; 256 * 1024];
    loop {
        let n = read_full(a, &mut left)?;
        let m = read_full(b, &mut right)?;
        if n != m || left[..n] != right[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}
