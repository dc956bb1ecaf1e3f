//! Writing a file so that readers (and a re-run after `kill -9`) see the old file or the
//! new one, never half of one: a temp file in the destination directory, renamed into
//! place once complete and flushed to disk.
//!
//! The temp file is `.NAME.initbox-RANDOM.tmp` beside `NAME`. No error path leaves it
//! behind: dropping an uncommitted [`AtomicFile`] (an error, a signal) removes it, and so
//! does a commit that fails (a rename onto a directory, a full disk); only a killed process
//! can leave one, and the next write to the same destination removes it.
//!
//! A destination that is a directory (`out/`, `.`, an existing directory) is refused before
//! anything is created, naming it as a directory. [`check_destination`] (and, for a
//! directory to fill, [`check_directory`]) is the one check every command makes to find an
//! unusable destination before it does anything that cannot be undone (a registration, a
//! download, a clone, the first file of a rendered tree).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const TEMP_MARK: &str = ".initbox-";
const TEMP_SUFFIX: &str = ".tmp";

/// A file being written; it appears at its destination only on [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
    mode: Option<u32>,
}

impl AtomicFile {
    /// Starts writing `dest`, creating its parent directories. With `mode`, the file gets
    /// exactly that mode; without, 0666 minus the umask, like any new file.
    pub fn create(dest: &Path, mode: Option<u32>) -> io::Result<Self> {
        refuse_directory(dest)?;
        let name = dest
            .file_name()
            .ok_or_else(is_a_directory)?
            .to_string_lossy()
            .into_owned();
        let dir = parent_dir(dest);
        fs::create_dir_all(dir).map_err(|error| name_the_blocker(dir, error))?;
        remove_leftovers(dir, &name);
        // Created no more permissive than the final mode, so a secret is never readable
        // by others while it is being written.
        let create_mode = mode.map(|m| m & 0o777).unwrap_or(0o666);
        loop {
            let temp = dir.join(format!(
                ".{name}{TEMP_MARK}{:08x}{TEMP_SUFFIX}",
                fastrand::u32(..)
            ));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(create_mode)
                .open(&temp)
            {
                Ok(file) => {
                    return Ok(AtomicFile {
                        file: Some(file),
                        temp,
                        dest: dest.to_owned(),
                        mode,
                    });
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error),
            }
        }
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The temp file, for what a caller sets on it before the commit (an owner, times).
    pub fn as_file(&self) -> &File {
        self.file.as_ref().expect("an uncommitted file")
    }

    /// Flushes the data to disk, sets the mode and renames the file into place: the new
    /// content survives a power loss too, not only a killed process.
    pub fn commit(self) -> io::Result<()> {
        self.finish(true)
    }

    /// Sets the mode and renames the file into place without waiting for the disk, as curl
    /// and wget do: still all-or-nothing for readers and for a killed process (the rename is
    /// atomic), but after a power loss the file may be empty on some filesystems.
    pub fn commit_without_sync(self) -> io::Result<()> {
        self.finish(false)
    }

    fn finish(mut self, durable: bool) -> io::Result<()> {
        // On any error below `self` is dropped with its file, which removes the temp file.
        let file = self.file.as_ref().expect("an uncommitted file");
        if let Some(mode) = self.mode {
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        if durable {
            file.sync_all()?;
        }
        // Something may have taken the destination's place since `create` looked.
        refuse_directory(&self.dest)?;
        fs::rename(&self.temp, &self.dest)?;
        self.file = None;
        if durable {
            // The rename itself must survive a crash too.
            if let Ok(dir) = File::open(parent_dir(&self.dest)) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.as_mut().expect("an uncommitted file").write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("an uncommitted file").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Writes `contents` to `dest` atomically.
pub fn write(dest: &Path, contents: &[u8], mode: Option<u32>) -> io::Result<()> {
    let mut file = AtomicFile::create(dest, mode)?;
    file.write_all(contents)?;
    file.commit()
}

/// Finds out, before the first side effect, whether a file can be written at `dest` as
/// [`write`] or [`AtomicFile::create`] would write it: `dest` is not a directory (see
/// [`AtomicFile::create`]), and its directory takes a new file (see [`check_directory`]).
/// Leaves nothing behind: no file, and no directory either, where missing parents would
/// be created by the write itself.
///
/// Every command that writes a file calls this before its first side effect, so that a
/// read-only volume, a missing permission or a volume out of inodes is reported at once,
/// naming the file, not after a download, a registration or half of a rendered tree.
/// Errors are the OS's (`reason::io` phrases them); a file standing where a directory is
/// needed is [`io::ErrorKind::NotADirectory`], naming that file.
pub fn check_destination(dest: &Path) -> io::Result<()> {
    refuse_directory(dest)?;
    let name = dest.file_name().ok_or_else(is_a_directory)?;
    probe(parent_dir(dest), &name.to_string_lossy())?;
    Ok(())
}

/// Why a directory cannot take new entries, from [`check_directory`].
#[derive(Debug)]
pub struct Unwritable {
    /// The directory that refused: the one asked about or, when that one does not exist
    /// yet, the nearest existing directory it would be created in (or the file standing
    /// in its way, with [`io::ErrorKind::NotADirectory`]).
    pub refused_by: PathBuf,
    pub error: io::Error,
}

impl From<Unwritable> for io::Error {
    fn from(unwritable: Unwritable) -> io::Error {
        unwritable.error
    }
}

/// Finds out, without leaving anything behind, whether new files and directories can be
/// made in `dir`, or `dir` be created with its missing parents: a real file is created in
/// `dir` (or in its nearest existing ancestor) and removed at once. Unlike asking the
/// kernel for permission (`access(2)`), this also catches what only an actual write meets:
/// a volume out of inodes, an ACL or security module that refuses, a filesystem that
/// answers permission questions wrongly (NFS with root squashing, FUSE).
///
/// For a command that fills a directory (a tree of files, a clone); for one file, use
/// [`check_destination`].
pub fn check_directory(dir: &Path) -> Result<(), Unwritable> {
    probe(dir, "check")
}

/// Creates a file in `dir`, or in its nearest existing ancestor, and removes it. The file
/// is unnamed (`O_TMPFILE`), so even a kill during the probe leaves nothing behind. Where
/// the filesystem has no unnamed files (some network and FUSE filesystems), it is
/// `.NAME.initbox-RANDOM.tmp`, the temp-file name a writer of NAME uses, and probe
/// leftovers of earlier killed runs are removed first.
fn probe(dir: &Path, name: &str) -> Result<(), Unwritable> {
    use rustix::fs::{Mode, OFlags};
    let existing = nearest_directory(dir)?;
    let refused = |error| Unwritable {
        refused_by: existing.to_owned(),
        error,
    };
    let unnamed = rustix::fs::open(
        existing,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    );
    match unnamed {
        Ok(_file) => return Ok(()),
        Err(errno)
            if errno != rustix::io::Errno::OPNOTSUPP
                && errno != rustix::io::Errno::ISDIR
                && errno != rustix::io::Errno::INVAL =>
        {
            return Err(refused(errno.into()));
        }
        Err(_no_unnamed_files_here) => {}
    }
    remove_leftovers(existing, name);
    loop {
        let temp = existing.join(format!(
            ".{name}{TEMP_MARK}{:08x}{TEMP_SUFFIX}",
            fastrand::u32(..)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => {
                drop(file);
                return fs::remove_file(&temp).map_err(refused);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(refused(error)),
        }
    }
}

/// `dir` if it exists, else its nearest existing ancestor; a file (or a symbolic link to
/// nothing) in the way is an error naming it.
fn nearest_directory(dir: &Path) -> Result<&Path, Unwritable> {
    let mut path = dir;
    loop {
        let blocked = || Unwritable {
            refused_by: path.to_owned(),
            error: io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", path.display()),
            ),
        };
        match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => return Ok(path),
            Ok(_) => return Err(blocked()),
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(blocked());
                }
            }
            Err(error) => {
                return Err(Unwritable {
                    refused_by: path.to_owned(),
                    error,
                });
            }
        }
        path = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            Some(_) => Path::new("."),
            None => {
                return Err(Unwritable {
                    refused_by: path.to_owned(),
                    error: io::Error::from(io::ErrorKind::NotFound),
                });
            }
        };
    }
}

/// "File exists" from creating a directory means a file stands where a directory should:
/// name that file.
fn name_the_blocker(dir: &Path, error: io::Error) -> io::Error {
    if error.kind() != io::ErrorKind::AlreadyExists {
        return error;
    }
    let blocker = dir
        .ancestors()
        .find(|path| fs::metadata(path).is_ok_and(|m| !m.is_dir()));
    match blocker {
        Some(path) => io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", path.display()),
        ),
        None => error,
    }
}

/// The error for a destination that is (or, ending in `/`, names) a directory.
fn is_a_directory() -> io::Error {
    io::Error::new(io::ErrorKind::IsADirectory, "is a directory")
}

/// A destination must name a file: an existing directory (or a link to one), `.`, `..`
/// and a path ending in `/` are refused before any temp file is made, so the message names
/// the directory instead of a rename failing with "not a directory" afterwards.
fn refuse_directory(dest: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = dest.as_os_str().as_bytes();
    if fs::metadata(dest).is_ok_and(|m| m.is_dir()) {
        return Err(is_a_directory());
    }
    if bytes.ends_with(b"/") || bytes.ends_with(b"/.") || bytes.ends_with(b"/..") {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "names a directory (it ends in '/'); give a file name",
        ));
    }
    if dest.file_name().is_none() {
        return Err(is_a_directory());
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Removes temp files of `name` left behind by a killed writer.
fn remove_leftovers(dir: &Path, name: &str) {
    let prefix = format!(".{name}{TEMP_MARK}");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        if let Some(random) = file_name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(TEMP_SUFFIX))
            && random.len() == 8
            && random.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Parses a file mode written in octal: `0644`, `644`, `0o600`.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.trim();
    let digits = digits.strip_prefix("0o").unwrap_or(digits);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(mode),
        _ => Err(format!(
            "'{text}' is not a file mode (octal, such as 0644 or 0600)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("sub/dir/index.html");
        let mut file = AtomicFile::create(&dest, Some(0o640)).unwrap();
        file.write_all(b"<h1>hi</h1>").unwrap();
        assert!(!dest.exists());
        file.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"<h1>hi</h1>");
        let mode = fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(names(dest.parent().unwrap()), ["index.html"]);
    }

    #[test]
    fn dropped_leaves_the_old_file_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("app.conf");
        fs::write(&dest, "old").unwrap();
        let mut file = AtomicFile::create(&dest, None).unwrap();
        file.write_all(b"half of the ne").unwrap();
        drop(file);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "old");
        assert_eq!(names(dir.path()), ["app.conf"]);
    }

    #[test]
    fn leftovers_of_a_killed_writer_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("app.conf");
        fs::write(dir.path().join(".app.conf.initbox-0123abcd.tmp"), "stale").unwrap();
        fs::write(dir.path().join(".other.initbox-0123abcd.tmp"), "not ours").unwrap();
        write(&dest, b"new", None).unwrap();
        assert_eq!(
            names(dir.path()),
            [".other.initbox-0123abcd.tmp", "app.conf"]
        );
    }

    #[test]
    fn a_failed_commit_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let mut file = AtomicFile::create(&dest, None).unwrap();
        file.write_all(b"body").unwrap();
        // The destination becomes a directory before the rename.
        fs::create_dir(&dest).unwrap();
        let error = file.commit().unwrap_err();
        assert_eq!(error.to_string(), "is a directory");
        assert_eq!(names(dir.path()), ["out"]);
        assert!(names(&dest).is_empty());
    }

    #[test]
    fn a_directory_is_named_as_one_and_nothing_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        for dest in [
            sub.clone(),
            dir.path().join("sub/"),
            dir.path().join("new/"),
            dir.path().join("."),
            dir.path().join("sub/.."),
        ] {
            let error = write(&dest, b"x", None).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::IsADirectory, "{dest:?}");
            assert!(error.to_string().contains("directory"), "{error}");
        }
        assert_eq!(names(dir.path()), ["sub"]);
        assert!(names(&sub).is_empty());
    }

    #[test]
    fn checking_a_destination_leaves_nothing_not_even_its_missing_directories() {
        let dir = tempfile::tempdir().unwrap();
        check_destination(&dir.path().join("a/b/file")).unwrap();
        check_destination(&dir.path().join("file")).unwrap();
        check_directory(&dir.path().join("c/d")).unwrap();
        check_directory(dir.path()).unwrap();
        assert!(names(dir.path()).is_empty());
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        let error = check_destination(&sub).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::IsADirectory);
        assert_eq!(names(dir.path()), ["sub"]);
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "x").unwrap();
        let error = check_destination(&blocker.join("a/below")).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotADirectory);
        assert_eq!(
            error.to_string(),
            format!("{} is not a directory", blocker.display())
        );
        let unwritable = check_directory(&blocker.join("a")).unwrap_err();
        assert_eq!(unwritable.refused_by, blocker);
        std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("link")).unwrap();
        let unwritable = check_directory(&dir.path().join("link/a")).unwrap_err();
        assert_eq!(unwritable.refused_by, dir.path().join("link"));
        assert_eq!(names(dir.path()), ["file", "link"]);
    }

    #[test]
    fn a_missing_directory_is_checked_where_it_would_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let locked = dir.path().join("locked");
        fs::create_dir(&locked).unwrap();
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o500)).unwrap();
        // Root may write anywhere: the probe then succeeds, which is also what the write
        // would do.
        let euid_is_root = fs::metadata("/proc/self").is_ok_and(|m| {
            use std::os::unix::fs::MetadataExt;
            m.uid() == 0
        });
        match check_directory(&locked.join("new/deeper")) {
            Ok(()) => assert!(euid_is_root),
            Err(unwritable) => {
                assert_eq!(unwritable.refused_by, locked);
                assert_eq!(unwritable.error.kind(), io::ErrorKind::PermissionDenied);
            }
        }
        assert!(names(&locked).is_empty());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert_eq!(parse_mode("0o755"), Ok(0o755));
        for bad in ["", "0999", "rw-r--r--", "77777", "-1"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
    }
}
