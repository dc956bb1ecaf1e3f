//! Archives for the extract tests: normal ones made by GNU tar and zip from a real tree,
//! crafted (hostile) ones written entry by entry with Python's tarfile and zipfile, which
//! store whatever name, type and link they are given.

use std::path::Path;
use std::process::Command;

/// Runs a Python program with `out` (the archive to write) as `sys.argv[1]`. The program
/// starts with helpers: `tar(mode)` opens a tarfile, `add(t, name, data=b"", kind=REG,
/// link="", mode=0o644)` adds an entry; `zipped()` opens a zipfile, `zadd(z, name, data,
/// mode=0o100644)` adds one with a Unix mode.
pub fn python(out: &Path, program: &str) {
    let prelude = r#"
import io, sys, tarfile, zipfile
REG, DIR, SYM, LNK, CHR, BLK, FIFO = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
    tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE)
def tar(mode="w"):
    return tarfile.open(sys.argv[1], mode, format=tarfile.GNU_FORMAT)
def add(t, name, data=b"", kind=REG, link="", mode=0o644, uid=0, gid=0):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.uid, info.gid = kind, link, mode, uid, gid
    info.size = len(data) if kind == REG else 0
    t.addfile(info, io.BytesIO(data) if kind == REG else None)
def zipped():
    return zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED)
def zadd(z, name, data=b"", mode=0o100644):
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    z.writestr(info, data)
"#;
    let status = Command::new("python3")
        .arg("-c")
        .arg(format!("{prelude}\n{program}"))
        .arg(out)
        .status()
        .expect("python3");
    assert!(status.success(), "python3 failed on:\n{program}");
}

/// Runs a reference tool (tar, zip, unzip) in `dir` and expects success.
pub fn run_in(dir: &Path, program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A small tree like a release tarball's: a top directory, an executable, a library with
/// its version links, an empty directory, text and binary data.
pub fn release_tree(root: &Path) {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let top = root.join("app-1.2");
    std::fs::create_dir_all(top.join("bin")).unwrap();
    std::fs::create_dir_all(top.join("lib")).unwrap();
    std::fs::create_dir_all(top.join("share/doc")).unwrap();
    std::fs::create_dir_all(top.join("empty")).unwrap();
    std::fs::write(top.join("bin/app"), "#!/bin/sh\necho app\n").unwrap();
    std::fs::set_permissions(top.join("bin/app"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let binary: Vec<u8> = (0..70_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(top.join("lib/libfoo.so.1"), binary).unwrap();
    symlink("libfoo.so.1", top.join("lib/libfoo.so")).unwrap();
    symlink("../lib/libfoo.so", top.join("bin/libfoo-link")).unwrap();
    std::fs::write(top.join("share/doc/README.md"), "# app\n").unwrap();
    std::fs::write(top.join("config.yaml"), "port: 8080\n").unwrap();
    std::fs::set_permissions(
        top.join("config.yaml"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// Every entry under `dir` with what matters of it: kind, mode, content or link target,
/// sorted; `skip` names (at the top) left out.
pub fn describe(dir: &Path, skip: &[&str]) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if skip.contains(&relative.as_str()) {
                continue;
            }
            let meta = path.symlink_metadata().unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push(format!("{relative} -> {}", target.display()));
            } else if meta.is_dir() {
                out.push(format!("{relative}/ {mode:o}"));
                walk(root, &path, skip, out);
            } else {
                let data = std::fs::read(&path).unwrap();
                let sum: u64 = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (i as u64 + 1) * *b as u64)
                    .sum();
                out.push(format!("{relative} {mode:o} {} bytes {sum}", data.len()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, skip, &mut out);
    out.sort();
    out
}
