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
//! anything is created, naming it as a directory; [`check_destination`] lets a command find
//! an unusable destination before it does anything that cannot be undone (a registration,
//! a download).

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

/// Finds out, before the first side effect, whether `dest` can be written: not a
/// directory, its directory creatable and writable (a temp file is made there and removed
/// at once). Missing parent directories are created, as the write would create them.
pub fn check_destination(dest: &Path, mode: Option<u32>) -> io::Result<()> {
    AtomicFile::create(dest, mode).map(drop)
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
    fn checking_a_destination_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        check_destination(&dir.path().join("a/b/file"), Some(0o600)).unwrap();
        assert!(names(&dir.path().join("a/b")).is_empty());
        let blocker = dir.path().join("file");
        fs::write(&blocker, "x").unwrap();
        assert!(check_destination(&blocker.join("below"), None).is_err());
        assert_eq!(names(dir.path()), ["a", "file"]);
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
