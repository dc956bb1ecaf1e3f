//! Writes an archive's entries into a fresh staging directory, refusing every entry that
//! could reach outside it: each path is checked component by component (no `..`, no
//! absolute path), every directory on the way is opened relative to its parent with
//! `O_NOFOLLOW | O_DIRECTORY` (so nothing is ever written through a symbolic link, not even
//! one the archive itself made), files are created with `O_EXCL` (an entry never replaces
//! another), symbolic links may only point inside the tree, hard links only to a regular
//! file extracted before, and devices and FIFOs are refused. Limits bound the unpacked
//! total and the number of entries, counted as the bytes come, never trusting a header.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use super::format::{self, Format};
use super::{Filters, RESERVED};
use crate::exit::Error;
use crate::reason;
use crate::size::ByteSize;

/// What an entry is, as far as extract is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink(Vec<u8>),
    /// A hard link to the path of an earlier entry (as stored: before stripping).
    HardLink(Vec<u8>),
    /// A device node, FIFO, socket or a type extract does not know: refused.
    Refused(&'static str),
}

/// One entry's metadata, from a tar header or a zip directory record.
pub struct Header {
    /// The path as stored in the archive.
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits (07777); `None` when the archive has none (zip from Windows).
    pub mode: Option<u32>,
    pub mtime: Option<i64>,
    pub owner: Option<(u32, u32)>,
}

/// What an unpack did.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: u64,
    pub directories: u64,
    pub links: u64,
    pub skipped: u64,
    pub bytes: u64,
}

/// A directory whose mode and time are set once everything below it is written (a
/// read-only directory in the archive must not stop its own entries).
struct Deferred {
    components: Vec<Vec<u8>>,
    mode: u32,
    mtime: Option<i64>,
    owner: Option<(u32, u32)>,
}

/// What each path written so far is, to refuse duplicates and check hard links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    File,
    Directory,
    /// Created on the way to an entry, not named by one.
    Implicit,
    Link,
}

pub struct Unpacker<'a> {
    root: OwnedFd,
    filters: &'a Filters,
    max_size: ByteSize,
    /// Whether owners from the archive are applied (--same-owner, as root).
    same_owner: bool,
    written: HashMap<Vec<u8>, Written>,
    deferred: Vec<Deferred>,
    /// The last parent directory opened, by its components: archives list a directory's
    /// entries together, so most entries need no walk from the root.
    last_parent: Option<(Vec<Vec<u8>>, OwnedFd)>,
    entries: u64,
    buffer: Vec<u8>,
    pub summary: Summary,
}

/// How much of a file's data is copied at a time.
const COPY_BUFFER: usize = 256 * 1024;

impl<'a> Unpacker<'a> {
    pub fn new(staging: &Path, filters: &'a Filters, max_size: ByteSize) -> Result<Self, Error> {
        let root = rustix::fs::open(
            staging,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open the staging directory", staging, e))?;
        Ok(Unpacker {
            root,
            filters,
            max_size,
            same_owner: filters.same_owner,
            written: HashMap::new(),
            deferred: Vec::new(),
            last_parent: None,
            entries: 0,
            buffer: vec![0; COPY_BUFFER],
            summary: Summary::default(),
        })
    }

    /// Unpacks the archive in `file` (of `format`).
    pub fn unpack(&mut self, format: Format, file: File) -> Result<(), Error> {
        match format {
            Format::Zip => self.unpack_zip(file)?,
            _ => self.unpack_tar(format::tar_stream(format, file).map_err(unreadable)?)?,
        }
        self.finish()
    }

    fn unpack_tar(&mut self, stream: Box<dyn Read>) -> Result<(), Error> {
        let mut archive = tar::Archive::new(stream);
        for entry in archive.entries().map_err(unreadable)? {
            crate::volume::stop_if_abandoned()?;
            let mut entry = entry.map_err(unreadable)?;
            let header = entry.header();
            let kind = match header.entry_type() {
                // `git archive` (and so every GitHub release tarball) starts with a global
                // PAX header holding the commit id: metadata, not an entry.
                tar::EntryType::XGlobalHeader => continue,
                tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
                tar::EntryType::Directory => Kind::Directory,
                tar::EntryType::Symlink => Kind::Symlink(link_name(&entry)?),
                tar::EntryType::Link => Kind::HardLink(link_name(&entry)?),
                tar::EntryType::Char => Kind::Refused("a character device"),
                tar::EntryType::Block => Kind::Refused("a block device"),
                tar::EntryType::Fifo => Kind::Refused("a FIFO"),
                tar::EntryType::GNUSparse => Kind::Refused("a sparse file"),
                _ => Kind::Refused("an entry of an unknown type"),
            };
            let path = entry.path_bytes().into_owned();
            let header = Header {
                mode: header.mode().ok().map(|m| m & 0o7777),
                mtime: header.mtime().ok().and_then(|t| i64::try_from(t).ok()),
                owner: match (header.uid(), header.gid()) {
                    (Ok(uid), Ok(gid)) => u32::try_from(uid).ok().zip(u32::try_from(gid).ok()),
                    _ => None,
                },
                path,
                kind,
            };
            let declared = entry.size();
            self.entry(&header, Some(declared), &mut entry)?;
        }
        Ok(())
    }

    fn unpack_zip(&mut self, file: File) -> Result<(), Error> {
        let directory = file.try_clone().map_err(unreadable)?;
        let mut archive = zip::ZipArchive::new(io::BufReader::with_capacity(COPY_BUFFER, file))
            .map_err(|e| unreadable(io::Error::other(e)))?;
        // The zip crate indexes entries by name, so a second entry of the same name would
        // vanish unseen: the central directory is read here too, and compared.
        let start = archive.central_directory_start();
        let names = central_directory_names(&directory, start, self.filters.max_entries + 1)
            .or_else(|_| {
                central_directory_names(
                    &directory,
                    start + archive.offset(),
                    self.filters.max_entries + 1,
                )
            })
            .map_err(unreadable)?;
        if names.len() != archive.len() {
            let mut seen = std::collections::HashSet::new();
            if let Some(name) = names.iter().find(|name| !seen.insert(name.as_slice())) {
                return Err(entry_error(
                    name,
                    "a duplicate entry: the archive holds this path more than once",
                ));
            }
        }
        if names.len() as u64 > self.filters.max_entries {
            return Err(Error::Failed(format!(
                "the archive has more than --max-entries {} entries; nothing was extracted",
                self.filters.max_entries
            )));
        }
        // The central directory says how many entries there are: a bomb of entries is
        // refused before the first one is written.
        if archive.len() as u64 > self.filters.max_entries {
            return Err(Error::Failed(format!(
                "the archive has {} entries, more than --max-entries {}; nothing was extracted",
                archive.len(),
                self.filters.max_entries
            )));
        }
        for index in 0..archive.len() {
            crate::volume::stop_if_abandoned()?;
            let mut entry = archive
                .by_index(index)
                .map_err(|e| unreadable(io::Error::other(e)))?;
            let path = entry.name_raw().to_vec();
            let unix = entry.unix_mode();
            let kind = match unix.map(|m| m & 0o170000) {
                _ if entry.is_dir() => Kind::Directory,
                Some(0o120000) => {
                    let mut target = Vec::new();
                    // A link target is a path: a few KiB at most.
                    (&mut entry)
                        .take(4096)
                        .read_to_end(&mut target)
                        .map_err(|e| {
                            entry_error(&path, &format!("cannot read: {}", describe_damage(&e)))
                        })?;
                    Kind::Symlink(target)
                }
                Some(0o020000) => Kind::Refused("a character device"),
                Some(0o060000) => Kind::Refused("a block device"),
                Some(0o010000) => Kind::Refused("a FIFO"),
                Some(0o140000) => Kind::Refused("a socket"),
                _ => Kind::File,
            };
            let header = Header {
                path,
                kind,
                mode: unix.map(|m| m & 0o7777).filter(|m| *m != 0),
                mtime: None,
                owner: None,
            };
            self.entry(&header, None, &mut entry)?;
        }
        Ok(())
    }

    /// Checks one entry against every rule and writes it.
    fn entry(
        &mut self,
        header: &Header,
        declared: Option<u64>,
        data: &mut dyn Read,
    ) -> Result<(), Error> {
        self.entries += 1;
        if self.entries > self.filters.max_entries {
            return Err(entry_error(
                &header.path,
                &format!(
                    "more than --max-entries {} entries",
                    self.filters.max_entries
                ),
            ));
        }
        if let Kind::Refused(what) = header.kind {
            return Err(entry_error(
                &header.path,
                &format!("{what} is never extracted"),
            ));
        }
        let components = components(&header.path).map_err(|why| entry_error(&header.path, why))?;
        let Some(components) = self.filters.strip(components) else {
            self.summary.skipped += 1;
            return Ok(());
        };
        if !self.filters.selects(&components) {
            self.summary.skipped += 1;
            return Ok(());
        }
        if RESERVED.iter().any(|r| components[0] == r.as_bytes()) {
            return Err(entry_error(
                &header.path,
                &format!(
                    "the name {} is initbox's own",
                    String::from_utf8_lossy(&components[0])
                ),
            ));
        }
        let key = components.join(&b'/');
        match (self.written.get(&key), &header.kind) {
            (None, _) => {}
            (Some(Written::Directory | Written::Implicit), Kind::Directory) => {}
            (Some(_), _) => {
                return Err(entry_error(
                    &header.path,
                    "a duplicate entry: the archive holds this path more than once",
                ));
            }
        }
        let dirs = &components[..components.len() - 1];
        let parent_fd = self.parent(dirs, &header.path)?;
        let result = self.write_entry(header, declared, data, &components, parent_fd.as_fd());
        self.last_parent = Some((dirs.to_vec(), parent_fd));
        result
    }

    fn write_entry(
        &mut self,
        header: &Header,
        declared: Option<u64>,
        data: &mut dyn Read,
        components: &[Vec<u8>],
        parent: BorrowedFd<'_>,
    ) -> Result<(), Error> {
        let shown = String::from_utf8_lossy(&header.path).into_owned();
        let key = components.join(&b'/');
        let (name, dirs) = components.split_last().expect("at least one component");
        let mode = header.mode;
        match &header.kind {
            Kind::Directory => {
                if !self.written.contains_key(&key) {
                    match rustix::fs::mkdirat(parent, name.as_slice(), Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(write_error(&shown, e)),
                    }
                    self.summary.directories += 1;
                }
                self.written.insert(key, Written::Directory);
                self.deferred.push(Deferred {
                    components: components.to_vec(),
                    mode: self.filters.mode(mode.unwrap_or(0o755)),
                    mtime: header.mtime,
                    owner: header.owner,
                });
            }
            Kind::File => {
                if let Some(size) = declared {
                    self.charge(size, &header.path)?;
                }
                let fd = rustix::fs::openat(
                    parent,
                    name.as_slice(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| write_error(&shown, e))?;
                let mut file = File::from(fd);
                let copied = self.copy(data, &mut file, declared, &header.path)?;
                self.summary.bytes += copied;
                let fd = file.as_fd();
                self.set_owner(fd, None, header.owner, &shown)?;
                rustix::fs::fchmod(
                    fd,
                    Mode::from_raw_mode(self.filters.mode(mode.unwrap_or(0o644))),
                )
                .map_err(|e| write_error(&shown, e))?;
                if let Some(mtime) = header.mtime {
                    rustix::fs::futimens(fd, &times(mtime)).map_err(|e| write_error(&shown, e))?;
                }
                self.written.insert(key, Written::File);
                self.summary.files += 1;
            }
            Kind::Symlink(target) => {
                check_link_target(dirs, target).map_err(|why| entry_error(&header.path, &why))?;
                rustix::fs::symlinkat(target.as_slice(), parent, name.as_slice())
                    .map_err(|e| write_error(&shown, e))?;
                self.set_owner(parent, Some(name), header.owner, &shown)?;
                self.written.insert(key, Written::Link);
                self.summary.links += 1;
            }
            Kind::HardLink(target) => {
                let target_components = components_of_link(target)
                    .and_then(|c| self.filters.strip(c).ok_or("its target is stripped away"))
                    .map_err(|why| entry_error(&header.path, &format!("a hard link: {why}")))?;
                if self.written.get(&target_components.join(&b'/')) != Some(&Written::File) {
                    return Err(entry_error(
                        &header.path,
                        &format!(
                            "a hard link to {}, which is not a file extracted before it",
                            String::from_utf8_lossy(target)
                        ),
                    ));
                }
                let (target_name, target_dirs) = target_components.split_last().expect("one");
                let target_parent = self.open_dirs(target_dirs, &header.path)?;
                // The parent may be the cached one: open again (a walk, no follow) for the new name.
                let parent = self.open_dirs(dirs, &header.path)?;
                rustix::fs::linkat(
                    &target_parent,
                    target_name.as_slice(),
                    &parent,
                    name.as_slice(),
                    AtFlags::empty(),
                )
                .map_err(|e| write_error(&shown, e))?;
                self.written.insert(key, Written::Link);
                self.summary.links += 1;
            }
            Kind::Refused(_) => unreachable!("refused above"),
        }
        Ok(())
    }

    /// Counts `size` bytes against --max-size.
    fn charge(&mut self, size: u64, path: &[u8]) -> Result<(), Error> {
        if self.summary.bytes.saturating_add(size) > self.max_size.0 {
            return Err(entry_error(
                path,
                &format!(
                    "the unpacked total would exceed --max-size {}",
                    self.max_size
                ),
            ));
        }
        Ok(())
    }

    /// Copies an entry's data, never more than --max-size allows in total, whatever its
    /// header said.
    fn copy(
        &mut self,
        data: &mut dyn Read,
        file: &mut File,
        declared: Option<u64>,
        path: &[u8],
    ) -> Result<u64, Error> {
        let room = self.max_size.0 - self.summary.bytes.min(self.max_size.0);
        let mut copied: u64 = 0;
        loop {
            let read = match data.read(&mut self.buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(entry_error(
                        path,
                        &format!("cannot read: {}", describe_damage(&e)),
                    ));
                }
            };
            copied += read as u64;
            if copied > room {
                return Err(entry_error(
                    path,
                    &format!("the unpacked total exceeds --max-size {}", self.max_size),
                ));
            }
            file.write_all(&self.buffer[..read])
                .map_err(|e| entry_error(path, &format!("cannot write: {}", reason::io(&e))))?;
        }
        if let Some(size) = declared
            && copied != size
        {
            return Err(entry_error(path, "the archive ends inside this entry"));
        }
        Ok(copied)
    }

    fn set_owner(
        &self,
        fd: BorrowedFd<'_>,
        name: Option<&Vec<u8>>,
        owner: Option<(u32, u32)>,
        shown: &str,
    ) -> Result<(), Error> {
        let (true, Some((uid, gid))) = (self.same_owner, owner) else {
            return Ok(());
        };
        let (uid, gid) = unsafe_free_ids(uid, gid);
        match name {
            Some(name) => rustix::fs::chownat(
                fd,
                name.as_slice(),
                Some(uid),
                Some(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            ),
            None => rustix::fs::fchown(fd, Some(uid), Some(gid)),
        }
        .map_err(|e| write_error(shown, e))
    }

    /// The directory `dirs` below the root, created as needed, taken from the cache when
    /// it is the last one used (the caller puts it back).
    fn parent(&mut self, dirs: &[Vec<u8>], path: &[u8]) -> Result<OwnedFd, Error> {
        match self.last_parent.take() {
            Some((components, fd)) if components == dirs => Ok(fd),
            _ => self.open_dirs(dirs, path),
        }
    }

    /// Walks `dirs` from the root, one `O_NOFOLLOW` open per component, creating missing
    /// directories: a symbolic link (or file) on the way is refused, never followed.
    fn open_dirs(&mut self, dirs: &[Vec<u8>], path: &[u8]) -> Result<OwnedFd, Error> {
        let mut fd =
            rustix::io::dup(&self.root).map_err(|e| write_error("the staging directory", e))?;
        for (depth, name) in dirs.iter().enumerate() {
            let open = |at: &OwnedFd| {
                rustix::fs::openat(
                    at,
                    name.as_slice(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            let next = match open(&fd) {
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&fd, name.as_slice(), Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(write_error(&String::from_utf8_lossy(path), e)),
                    }
                    let key = dirs[..=depth].join(&b'/');
                    self.written.entry(key).or_insert(Written::Implicit);
                    open(&fd)
                }
                other => other,
            };
            fd = match next {
                Ok(next) => next,
                Err(Errno::LOOP | Errno::NOTDIR) => {
                    return Err(entry_error(
                        path,
                        &format!(
                            "it would be written through {}, which is a symbolic link or a file",
                            String::from_utf8_lossy(&dirs[..=depth].join(&b'/'))
                        ),
                    ));
                }
                Err(e) => return Err(write_error(&String::from_utf8_lossy(path), e)),
            };
        }
        Ok(fd)
    }

    /// Gives directories their modes and times, deepest first.
    fn finish(&mut self) -> Result<(), Error> {
        self.last_parent = None;
        let mut deferred = std::mem::take(&mut self.deferred);
        deferred.sort_by_key(|d| std::cmp::Reverse(d.components.len()));
        for dir in deferred {
            let shown = String::from_utf8_lossy(&dir.components.join(&b'/')).into_owned();
            let fd = self.open_dirs(&dir.components, shown.as_bytes())?;
            self.set_owner(fd.as_fd(), None, dir.owner, &shown)?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(dir.mode))
                .map_err(|e| write_error(&shown, e))?;
            if let Some(mtime) = dir.mtime {
                rustix::fs::futimens(&fd, &times(mtime)).map_err(|e| write_error(&shown, e))?;
            }
        }
        Ok(())
    }
}

/// The names of a zip's central directory records, in order (at most `limit`), read with
/// positioned reads from `start`.
fn central_directory_names(file: &File, start: u64, limit: u64) -> io::Result<Vec<Vec<u8>>> {
    use std::os::unix::fs::FileExt;
    let mut names = Vec::new();
    let mut at = start;
    let mut fixed = [0u8; 46];
    while (names.len() as u64) < limit {
        match file.read_exact_at(&mut fixed, at) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && !names.is_empty() => break,
            Err(e) => return Err(e),
        }
        if fixed[..4] != *b"PK\x01\x02" {
            if names.is_empty() && &fixed[..4] != b"PK\x05\x06" && &fixed[..4] != b"PK\x06\x06" {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no central directory where the zip says it starts",
                ));
            }
            break;
        }
        let field = |i: usize| u16::from_le_bytes([fixed[i], fixed[i + 1]]) as u64;
        let (name_len, extra_len, comment_len) = (field(28), field(30), field(32));
        let mut name = vec![0; name_len as usize];
        file.read_exact_at(&mut name, at + 46)?;
        names.push(name);
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(names)
}

/// Owner ids as rustix takes them.
fn unsafe_free_ids(uid: u32, gid: u32) -> (rustix::fs::Uid, rustix::fs::Gid) {
    (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    )
}

fn times(mtime: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

fn link_name<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Vec<u8>, Error> {
    let path = entry.path_bytes().into_owned();
    match entry.link_name_bytes() {
        Some(target) if !target.is_empty() => Ok(target.into_owned()),
        _ => Err(entry_error(&path, "a link without a target")),
    }
}

/// An entry's path as its components: `.` and empty ones dropped; an absolute path or a
/// `..` refused.
pub fn components(path: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    if path.first() == Some(&b'/') {
        return Err("an absolute path");
    }
    if path.contains(&0) {
        return Err("a path with a NUL byte");
    }
    let mut parts = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("a path with '..'"),
            // Windows separators in a zip name would be one odd file name on Linux; refused
            // rather than guessed.
            part if part.contains(&b'\\') => return Err("a path with a backslash"),
            part => parts.push(part.to_vec()),
        }
    }
    if parts.is_empty() {
        return Err("an empty path");
    }
    Ok(parts)
}

fn components_of_link(target: &[u8]) -> Result<Vec<Vec<u8>>, &'static str> {
    components(target)
}

/// A symbolic link may point only inside the tree: relative, climbing with `..` only at its
/// start (so that no link inside the tree can make a later `..` leave it) and never above
/// the root.
fn check_link_target(dirs: &[Vec<u8>], target: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(target);
    if target.first() == Some(&b'/') {
        return Err(format!(
            "a symbolic link to the absolute path {shown}, outside the destination"
        ));
    }
    let mut depth = dirs.len();
    let mut descended = false;
    for part in target.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if descended => {
                return Err(format!(
                    "a symbolic link to {shown}, with '..' after a name (it could leave the destination through another link)"
                ));
            }
            b".." if depth == 0 => {
                return Err(format!(
                    "a symbolic link to {shown}, outside the destination"
                ));
            }
            b".." => depth -= 1,
            _ => descended = true,
        }
    }
    Ok(())
}

fn unreadable(error: io::Error) -> Error {
    Error::Failed(format!(
        "cannot read the archive: {}",
        describe_damage(&error)
    ))
}

/// What a decoder's complaint means for the user, in initbox's words: the decoders' own
/// texts (`Could not find EOCD`, `Specified window_size is too big; Requested: …`) are
/// written for their developers. The original goes to the `-v` log.
pub fn describe_damage(error: &io::Error) -> String {
    if !matches!(
        error.kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof | io::ErrorKind::Other
    ) {
        return reason::io(error);
    }
    let text = error.to_string();
    crate::report::debug("extract.decoder", format!("the decoder said: {text}"));
    let lower = text.to_ascii_lowercase();
    if lower.contains("eocd") || lower.contains("central directory") {
        "it is not a zip archive, or one cut short (its central directory is missing)".into()
    } else if lower.contains("window") {
        "a zstd frame asks for a decoding window larger than initbox allows (128 MiB): made with --long or --ultra?"
            .into()
    } else if lower.contains("crc") || lower.contains("checksum") || lower.contains("hash") {
        "it is damaged: a checksum does not match (a corrupt or incomplete download?)".into()
    } else if error.kind() == io::ErrorKind::UnexpectedEof
        || lower.contains("unexpected end")
        || lower.contains("eof")
        || lower.contains("truncated")
    {
        "it ends before its end (a download cut short?)".into()
    } else {
        "it is damaged: its compressed data cannot be decoded (a corrupt download?)".into()
    }
}

fn fail(action: &str, path: &Path, errno: Errno) -> Error {
    crate::volume::walk::error(errno, action, path, None)
}

fn write_error(shown: &str, errno: Errno) -> Error {
    let path = PathBuf::from(OsStr::from_bytes(shown.as_bytes()));
    crate::volume::walk::error(errno, "writing the archive entry", &path, None)
}

/// A refused entry: the message names it, and says nothing was installed.
pub fn entry_error(path: &[u8], why: &str) -> Error {
    Error::Failed(format!(
        "refused archive entry '{}': {why}; nothing was extracted",
        String::from_utf8_lossy(path)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_split_and_escapes_refused() {
        assert_eq!(
            components(b"./a//b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"..").is_err());
        assert!(components(b"./").is_err());
    }

    #[test]
    fn link_targets_stay_inside() {
        let dirs = vec![b"lib".to_vec()];
        assert!(check_link_target(&dirs, b"libfoo.so.1").is_ok());
        assert!(check_link_target(&dirs, b"../bin/tool").is_ok());
        assert!(check_link_target(&dirs, b"../../etc").is_err());
        assert!(check_link_target(&dirs, b"/etc/passwd").is_err());
        // `here -> .` then `x -> here/..` would leave the tree at run time.
        assert!(check_link_target(&[], b"here/..").is_err());
        assert!(check_link_target(&[], b"..").is_err());
    }
}
