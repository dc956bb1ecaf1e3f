//! extract and fetch --extract: archives made by GNU tar and zip unpack as tar and unzip
//! unpack them; hostile ones crafted with Python's tarfile/zipfile are refused naming the
//! entry, with nothing written outside the staging directory and DEST as it was.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::archives::{describe, python, release_tree, run_in};
use crate::support::http_server::{HttpServer, reply_bytes};
use crate::support::{Output, Sandbox, entries, is_root, need_root, tree};

/// The record extract keeps in DEST (left out when comparing with tar's output).
const RECORD: &str = ".initbox-extract";

fn extract(sandbox: &Sandbox, archive: &Path, dest: &Path, flags: &[&str]) -> Output {
    sandbox
        .initbox()
        .arg("extract")
        .arg(archive)
        .arg(dest)
        .args(flags)
        .run()
}

/// A release tree under `src/` and a GNU tar reference unpacking of it under `ref/`.
fn release(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let src = sandbox.path("src");
    std::fs::create_dir(&src).unwrap();
    release_tree(&src);
    (src, sandbox.path("ref"))
}

/// A hostile archive's refusal: exit 1 naming the entry, DEST not there, nothing left beside
/// it, and the directory outside untouched.
fn assert_refused(sandbox: &Sandbox, output: &Output, entry: &str, why: &str) {
    output
        .assert_code(1)
        .assert_stderr_contains(&format!("refused archive entry '{entry}'"))
        .assert_stderr_contains(why)
        .assert_stderr_contains("nothing was extracted");
    assert_eq!(
        entries(&sandbox.path("work")),
        Vec::<String>::new(),
        "{}",
        output.stderr
    );
    assert_eq!(
        tree(&sandbox.path("outside")),
        ["secret"],
        "{}",
        output.stderr
    );
}

/// A directory `outside/` with one file an attack would like to reach, and `work/` where
/// DEST goes.
fn attack_ground(sandbox: &Sandbox) -> PathBuf {
    std::fs::create_dir(sandbox.path("outside")).unwrap();
    std::fs::write(sandbox.path("outside/secret"), "keep").unwrap();
    std::fs::create_dir(sandbox.path("work")).unwrap();
    sandbox.path("work/dest")
}

#[test]
fn gnu_tar_archives_of_every_compression_unpack_as_tar_does_whatever_their_name() {
    let sandbox = Sandbox::new();
    let (src, reference) = release(&sandbox);
    std::fs::create_dir(&reference).unwrap();
    run_in(&src, "tar", &["cf", "../plain.tar", "app-1.2"]);
    run_in(&reference, "tar", &["xf", "../plain.tar"]);
    let expected = describe(&reference, &[]);
    assert!(expected.contains(&"app-1.2/lib/libfoo.so -> libfoo.so.1".to_owned()));
    // Names that lie: the format is told by content.
    for (flag, name) in [
        ("-cf", "a.tar"),
        ("-czf", "a.zip"),
        ("-cJf", "a.tar.gz"),
        ("--zstd -cf", "a.bin"),
        ("-cjf", "download"),
    ] {
        let mut args: Vec<&str> = flag.split(' ').collect();
        let out = format!("../{name}");
        args.extend([out.as_str(), "app-1.2"]);
        run_in(&src, "tar", &args);
        let dest = sandbox.path(&format!("dest-{name}"));
        extract(&sandbox, &sandbox.path(name), &dest, &[])
            .assert_code(0)
            .assert_stderr_contains("extract ")
            .assert_stderr_contains("4 files, 6 directories, 2 links");
        assert_eq!(describe(&dest, &[RECORD]), expected, "{flag}");
    }
    // Concatenated compressed streams are one archive, as for gzip -d, xz -d and zstd -d.
    for (tool, name) in [
        ("gzip", "cat.tar.gz"),
        ("xz", "cat.tar.xz"),
        ("zstd", "cat.tar.zst"),
    ] {
        let script = format!(
            "head -c 30000 plain.tar | {tool} -c > {name} && tail -c +30001 plain.tar | {tool} -c >> {name}"
        );
        run_in(sandbox.dir.path(), "sh", &["-c", &script]);
        let dest = sandbox.path(&format!("dest-{name}"));
        extract(&sandbox, &sandbox.path(name), &dest, &[]).assert_code(0);
        assert_eq!(describe(&dest, &[RECORD]), expected, "{name}");
    }
}

#[test]
fn a_git_archive_tarball_with_its_global_pax_header_unpacks() {
    // GitHub's release tarballs are `git archive` output: a PAX global header first.
    let sandbox = Sandbox::new();
    let repo = sandbox.path("repo");
    std::fs::create_dir(&repo).unwrap();
    std::fs::write(repo.join("README"), "hello\n").unwrap();
    let git = |args: &[&str]| run_in(&repo, "git", args);
    git(&["init", "-q"]);
    git(&["add", "README"]);
    git(&[
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "-q",
        "-m",
        "one",
    ]);
    git(&[
        "archive",
        "--format=tar.gz",
        "--prefix=app-1.0/",
        "-o",
        "../release.tgz",
        "HEAD",
    ]);
    let dest = sandbox.path("dest");
    extract(
        &sandbox,
        &sandbox.path("release.tgz"),
        &dest,
        &["--strip-components", "1"],
    )
    .assert_code(0);
    assert_eq!(
        std::fs::read_to_string(dest.join("README")).unwrap(),
        "hello\n"
    );
}

#[test]
fn zip_archives_unpack_as_unzip_does() {
    let sandbox = Sandbox::new();
    let (src, reference) = release(&sandbox);
    // -y stores the symbolic links as links, as release zips of Unix tools do.
    run_in(&src, "zip", &["-q", "-r", "-y", "../plugin.zip", "app-1.2"]);
    std::fs::create_dir(&reference).unwrap();
    run_in(&reference, "unzip", &["-q", "../plugin.zip"]);
    let dest = sandbox.path("plugins");
    extract(&sandbox, &sandbox.path("plugin.zip"), &dest, &[]).assert_code(0);
    assert_eq!(describe(&dest, &[RECORD]), describe(&reference, &[]));
}

#[test]
fn strip_components_include_and_exclude_pick_the_entries() {
    let sandbox = Sandbox::new();
    let (src, _) = release(&sandbox);
    run_in(&src, "tar", &["czf", "../app.tgz", "app-1.2"]);
    let dest = sandbox.path("opt");
    extract(
        &sandbox,
        &sandbox.path("app.tgz"),
        &dest,
        &[
            "--strip-components",
            "1",
            "--include",
            "bin",
            "--include",
            "lib/*.so.1",
            "--exclude",
            "libfoo-link",
        ],
    )
    .assert_code(0);
    assert_eq!(
        tree(&dest),
        [
            ".initbox-extract/",
            ".initbox-extract/archive.json",
            "bin/",
            "bin/app",
            "lib/",
            "lib/libfoo.so.1"
        ]
    );
    // The same tree as GNU tar's --strip-components.
    let reference = sandbox.path("ref");
    std::fs::create_dir(&reference).unwrap();
    run_in(
        &reference,
        "tar",
        &["xzf", "../app.tgz", "--strip-components", "1"],
    );
    let everything = sandbox.path("all");
    extract(
        &sandbox,
        &sandbox.path("app.tgz"),
        &everything,
        &["--strip-components=1"],
    )
    .assert_code(0);
    assert_eq!(describe(&everything, &[RECORD]), describe(&reference, &[]));
}

#[test]
fn a_rerun_with_the_same_archive_changes_nothing_and_another_replaces_the_content() {
    let sandbox = Sandbox::new();
    let (src, _) = release(&sandbox);
    run_in(&src, "tar", &["czf", "../v1.tgz", "app-1.2"]);
    let dest = sandbox.path("volume");
    std::fs::create_dir(&dest).unwrap();
    std::fs::create_dir(dest.join("lost+found")).unwrap();
    let archive = sandbox.path("v1.tgz");
    extract(&sandbox, &archive, &dest, &["--strip-components", "1"]).assert_code(0);
    let inode = std::fs::metadata(dest.join("bin/app")).unwrap().ino();
    let record = std::fs::read_to_string(dest.join(".initbox-extract/archive.json")).unwrap();
    assert!(record.contains("\"sha256\""), "{record}");

    extract(&sandbox, &archive, &dest, &["--strip-components", "1"])
        .assert_code(0)
        .assert_stderr_contains("already holds it")
        .assert_stderr_contains("nothing to do");
    assert_eq!(
        std::fs::metadata(dest.join("bin/app")).unwrap().ino(),
        inode
    );

    // Another archive (or the same one unpacked differently) replaces the old content
    // entirely: nothing of v1 stays behind; lost+found is kept.
    std::fs::create_dir(sandbox.path("v2")).unwrap();
    std::fs::write(sandbox.path("v2/only-in-v2"), "2").unwrap();
    run_in(
        &sandbox.path("v2"),
        "tar",
        &["czf", "../v2.tgz", "only-in-v2"],
    );
    extract(&sandbox, &sandbox.path("v2.tgz"), &dest, &[]).assert_code(0);
    assert_eq!(
        entries(&dest),
        [".initbox-extract", "lost+found", "only-in-v2"]
    );
}

#[test]
fn content_not_extracted_by_initbox_is_replaced_only_with_force() {
    let sandbox = Sandbox::new();
    let (src, _) = release(&sandbox);
    run_in(&src, "tar", &["cf", "../a.tar", "app-1.2"]);
    let dest = sandbox.path("data");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("user-file"), "precious").unwrap();
    extract(&sandbox, &sandbox.path("a.tar"), &dest, &[])
        .assert_code(1)
        .assert_stderr_contains("holds files that extract did not put there; --force");
    assert_eq!(entries(&dest), ["user-file"]);
    extract(&sandbox, &sandbox.path("a.tar"), &dest, &["--force"]).assert_code(0);
    assert_eq!(entries(&dest), [".initbox-extract", "app-1.2"]);
}

#[test]
fn a_file_that_is_no_archive_is_refused_by_its_content() {
    let sandbox = Sandbox::new();
    let page = sandbox.write("release.tar.gz", "<html>404 Not Found</html>\n");
    extract(&sandbox, &page, &sandbox.path("dest"), &[])
        .assert_code(1)
        .assert_stderr_contains("is not a tar, tar.gz, tar.xz, tar.zst, tar.bz2 or zip archive");
    assert!(!sandbox.path("dest").exists());
    // A gzip file that holds no tar is refused as unreadable, and leaves nothing either.
    let gz = sandbox.path("notes.gz");
    run_in(
        sandbox.dir.path(),
        "sh",
        &["-c", "echo hello | gzip > notes.gz"],
    );
    extract(&sandbox, &gz, &sandbox.path("dest"), &[])
        .assert_code(1)
        .assert_stderr_contains("cannot read the archive");
    assert!(!sandbox.path("dest").exists());
    assert!(
        !entries(sandbox.dir.path())
            .iter()
            .any(|n| n.contains("initbox-extract")),
        "{:?}",
        entries(sandbox.dir.path())
    );
}

#[test]
fn a_dotdot_path_is_refused_naming_the_entry() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    let archive = sandbox.path("evil.tar");
    python(
        &archive,
        "t = tar(); add(t, 'ok.txt', b'fine'); add(t, '../../outside/secret', b'owned'); t.close()",
    );
    let output = extract(&sandbox, &archive, &dest, &[]);
    assert_refused(
        &sandbox,
        &output,
        "../../outside/secret",
        "a path with '..'",
    );
    assert_eq!(
        std::fs::read_to_string(sandbox.path("outside/secret")).unwrap(),
        "keep"
    );
}

#[test]
fn an_absolute_path_is_refused_naming_the_entry() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    let target = sandbox.path("outside/planted");
    let archive = sandbox.path("evil.zip");
    python(
        &archive,
        &format!(
            "z = zipped(); zadd(z, {:?}, b'owned'); z.close()",
            target.display().to_string()
        ),
    );
    let output = extract(&sandbox, &archive, &dest, &[]);
    assert_refused(
        &sandbox,
        &output,
        &target.display().to_string(),
        "an absolute path",
    );
}

#[test]
fn a_symlink_pointing_outside_is_refused_before_a_file_is_written_through_it() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    let archive = sandbox.path("evil.tgz");
    python(
        &archive,
        "t = tar('w:gz'); add(t, 'escape', kind=SYM, link='../../outside'); \
         add(t, 'escape/secret', b'owned'); t.close()",
    );
    let output = extract(&sandbox, &archive, &dest, &[]);
    assert_refused(
        &sandbox,
        &output,
        "escape",
        "a symbolic link to ../../outside, outside the destination",
    );
    // Absolute targets too, from a zip.
    let zip = sandbox.path("evil.zip");
    python(
        &zip,
        "z = zipped(); zadd(z, 'etc', b'/etc', mode=0o120777); zadd(z, 'etc/passwd', b'x'); z.close()",
    );
    let output = extract(&sandbox, &zip, &dest, &[]);
    assert_refused(
        &sandbox,
        &output,
        "etc",
        "a symbolic link to the absolute path /etc",
    );
}

#[test]
fn nothing_is_written_through_a_symlink_even_one_pointing_inside() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    let archive = sandbox.path("evil.tar");
    // `here -> .` is harmless alone; `up -> here/..` would reach the parent of DEST at run
    // time, and a file written through `lib -> real` would be one a reader never expected.
    python(
        &archive,
        "t = tar(); add(t, 'real/', kind=DIR, mode=0o755); add(t, 'lib', kind=SYM, link='real'); \
         add(t, 'lib/evil.so', b'x'); t.close()",
    );
    let output = extract(&sandbox, &archive, &dest, &[]);
    assert_refused(
        &sandbox,
        &output,
        "lib/evil.so",
        "written through lib, which is a symbolic link",
    );
    let archive = sandbox.path("up.tar");
    python(
        &archive,
        "t = tar(); add(t, 'here', kind=SYM, link='.'); add(t, 'up', kind=SYM, link='here/..'); t.close()",
    );
    let output = extract(&sandbox, &archive, &dest, &[]);
    assert_refused(&sandbox, &output, "up", "with '..' after a name");
}

#[test]
fn a_hard_link_to_an_outside_path_is_refused() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    for (name, link) in [
        (
            "abs.tar",
            sandbox.path("outside/secret").display().to_string(),
        ),
        ("rel.tar", "../outside/secret".to_owned()),
        ("later.tar", "not-yet-extracted".to_owned()),
    ] {
        let archive = sandbox.path(name);
        python(
            &archive,
            &format!(
                "t = tar(); add(t, 'grab', kind=LNK, link={link:?}); add(t, 'not-yet-extracted', b'x'); t.close()"
            ),
        );
        let output = extract(&sandbox, &archive, &dest, &[]);
        assert_refused(&sandbox, &output, "grab", "a hard link");
    }
    // A hard link to a file of the archive itself is fine.
    let archive = sandbox.path("ok.tar");
    python(
        &archive,
        "t = tar(); add(t, 'a', b'data'); add(t, 'b', kind=LNK, link='a'); t.close()",
    );
    extract(&sandbox, &archive, &dest, &[]).assert_code(0);
    let (a, b) = (
        std::fs::metadata(dest.join("a")).unwrap(),
        std::fs::metadata(dest.join("b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
}

#[test]
fn device_nodes_and_fifos_are_refused() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    for (kind, why) in [
        ("CHR", "a character device"),
        ("BLK", "a block device"),
        ("FIFO", "a FIFO"),
    ] {
        let archive = sandbox.path(&format!("{kind}.tar"));
        python(
            &archive,
            &format!("t = tar(); add(t, 'ok', b'x'); add(t, 'dev/node', kind={kind}); t.close()"),
        );
        let output = extract(&sandbox, &archive, &dest, &[]);
        assert_refused(&sandbox, &output, "dev/node", why);
    }
    let zip = sandbox.path("fifo.zip");
    python(
        &zip,
        "z = zipped(); zadd(z, 'pipe', b'', mode=0o010644); z.close()",
    );
    let output = extract(&sandbox, &zip, &dest, &[]);
    assert_refused(&sandbox, &output, "pipe", "a FIFO");
}

#[test]
fn duplicate_entries_are_refused() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    let archive = sandbox.path("dup.tar");
    // The second copy would replace the first after a reader (or a check) saw it.
    python(
        &archive,
        "t = tar(); add(t, 'bin/tool', b'checked'); add(t, './bin//tool', b'swapped', mode=0o755); t.close()",
    );
    let output = extract(&sandbox, &archive, &dest, &[]);
    assert_refused(&sandbox, &output, "./bin//tool", "a duplicate entry");
    // A file then a link of the same name (the classic link swap).
    let archive = sandbox.path("swap.tar");
    python(
        &archive,
        "t = tar(); add(t, 'conf', b'x'); add(t, 'conf', kind=SYM, link='other'); t.close()",
    );
    let output = extract(&sandbox, &archive, &dest, &[]);
    assert_refused(&sandbox, &output, "conf", "a duplicate entry");
    // In a zip, where a reader that indexes entries by name would see only one of them.
    let zip = sandbox.path("dup.zip");
    python(
        &zip,
        "import warnings\nwarnings.simplefilter('ignore')\n\
         z = zipped(); zadd(z, 'run.sh', b'checked'); zadd(z, 'run.sh', b'swapped'); z.close()",
    );
    let output = extract(&sandbox, &zip, &dest, &[]);
    assert_refused(&sandbox, &output, "run.sh", "a duplicate entry");
}

#[test]
fn a_zip_bomb_is_stopped_by_max_size_on_the_unpacked_total() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    let archive = sandbox.path("bomb.zip");
    // 3 × 20 MiB of zeros: a few dozen KiB compressed.
    python(
        &archive,
        "z = zipped()\nfor i in range(3): zadd(z, f'zeros{i}', bytes(20 << 20))\nz.close()",
    );
    assert!(std::fs::metadata(&archive).unwrap().len() < 1 << 20);
    let output = extract(&sandbox, &archive, &dest, &["--max-size", "50M"]);
    assert_refused(
        &sandbox,
        &output,
        "zeros2",
        "the unpacked total exceeds --max-size 50 MiB",
    );
}

#[test]
fn a_tar_bomb_is_stopped_by_max_size_and_by_the_entry_count() {
    let sandbox = Sandbox::new();
    let dest = attack_ground(&sandbox);
    let archive = sandbox.path("bomb.tar.gz");
    python(
        &archive,
        "t = tar('w:gz'); add(t, 'big', bytes(8 << 20)); add(t, 'bigger', bytes(8 << 20)); t.close()",
    );
    let output = extract(&sandbox, &archive, &dest, &["--max-size", "10M"]);
    assert_refused(
        &sandbox,
        &output,
        "bigger",
        "the unpacked total would exceed --max-size 10 MiB",
    );
    let many = sandbox.path("many.tar.gz");
    python(
        &many,
        "t = tar('w:gz')\nfor i in range(300): add(t, f'f{i}')\nt.close()",
    );
    let output = extract(&sandbox, &many, &dest, &["--max-entries", "200"]);
    assert_refused(
        &sandbox,
        &output,
        "f200",
        "more than --max-entries 200 entries",
    );
}

#[test]
fn setuid_and_setgid_bits_are_dropped_unless_kept() {
    let sandbox = Sandbox::new();
    let archive = sandbox.path("suid.tar");
    python(
        &archive,
        "t = tar(); add(t, 'su', b'x', mode=0o4755); add(t, 'sg', b'x', mode=0o2750); \
         add(t, 'ro/', kind=DIR, mode=0o555); add(t, 'ro/inside', b'y', mode=0o444); t.close()",
    );
    let mode = |dest: &Path, name: &str| {
        std::fs::metadata(dest.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let dest = sandbox.path("plain");
    extract(&sandbox, &archive, &dest, &[]).assert_code(0);
    assert_eq!((mode(&dest, "su"), mode(&dest, "sg")), (0o755, 0o750));
    // A read-only directory of the archive still gets its own entries.
    assert_eq!(
        (mode(&dest, "ro"), mode(&dest, "ro/inside")),
        (0o555, 0o444)
    );
    let kept = sandbox.path("kept");
    extract(&sandbox, &archive, &kept, &["--keep-setuid"]).assert_code(0);
    assert_eq!((mode(&kept, "su"), mode(&kept, "sg")), (0o4755, 0o2750));
}

#[test]
fn owners_are_kept_only_with_same_owner_as_root() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let archive = sandbox.path("owned.tar");
    python(
        &archive,
        "t = tar(); add(t, 'data', b'x', uid=1001, gid=2002); add(t, 'link', kind=SYM, link='data', uid=1001, gid=2002); t.close()",
    );
    let plain = sandbox.path("plain");
    extract(&sandbox, &archive, &plain, &[]).assert_code(0);
    let meta = std::fs::metadata(plain.join("data")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let owned = sandbox.path("owned");
    extract(&sandbox, &archive, &owned, &["--same-owner"]).assert_code(0);
    let meta = std::fs::metadata(owned.join("data")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1001, 2002));
    let link = std::fs::symlink_metadata(owned.join("link")).unwrap();
    assert_eq!((link.uid(), link.gid()), (1001, 2002));
}

#[test]
fn same_owner_without_root_is_a_usage_error() {
    if !is_root() {
        // Not root already: the plain binary shows it.
        let sandbox = Sandbox::new();
        let archive = sandbox.write("a.tar", "");
        extract(&sandbox, &archive, &sandbox.path("d"), &["--same-owner"])
            .assert_code(2)
            .assert_stderr_contains("--same-owner: only root");
        return;
    }
    let sandbox = Sandbox::new();
    let (_dir, copy) = crate::support::nonroot_copy();
    let archive = sandbox.write("a.tar", "");
    let dest = sandbox.path("d");
    let output = sandbox
        .initbox_at(&copy)
        .wrapped_in(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .arg("extract")
        .arg(&archive)
        .arg(&dest)
        .arg("--same-owner")
        .run();
    output
        .assert_code(2)
        .assert_stderr_contains("--same-owner: only root");
}

/// An archive served by the test server, and its SHA-256.
fn served_archive(sandbox: &Sandbox) -> (Vec<u8>, String) {
    let (src, _) = release(sandbox);
    run_in(&src, "tar", &["czf", "../served.tgz", "app-1.2"]);
    let bytes = std::fs::read(sandbox.path("served.tgz")).unwrap();
    let output = std::process::Command::new("sha256sum")
        .arg(sandbox.path("served.tgz"))
        .output()
        .unwrap();
    (
        bytes,
        String::from_utf8_lossy(&output.stdout)[..64].to_owned(),
    )
}

#[test]
fn fetch_extract_unpacks_the_download_and_a_rerun_with_its_sha256_downloads_nothing() {
    let sandbox = Sandbox::new();
    let (bytes, sha) = served_archive(&sandbox);
    let server = HttpServer::start(vec![reply_bytes(200, bytes.clone())]);
    let dest = sandbox.path("volume/plugins");
    let fetch = || {
        sandbox
            .initbox()
            .args([
                "fetch",
                &server.url("/release"),
                "--extract",
                "--strip-components",
                "1",
            ])
            .arg("-o")
            .arg(&dest)
            .args(["--sha256", &sha])
            .run()
    };
    fetch()
        .assert_code(0)
        .assert_stderr_contains("SHA-256 verified")
        .assert_stderr_contains(&format!("extracted it into {}", dest.display()));
    let reference = sandbox.path("ref");
    std::fs::create_dir(&reference).unwrap();
    run_in(
        &reference,
        "tar",
        &["xzf", "../served.tgz", "--strip-components=1"],
    );
    assert_eq!(describe(&dest, &[RECORD]), describe(&reference, &[]));
    // No spool file left beside DEST.
    assert_eq!(entries(&sandbox.path("volume")), ["plugins"]);
    fetch()
        .assert_code(0)
        .assert_stderr_contains("nothing downloaded");
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn fetch_extract_verifies_the_sha256_before_a_single_entry_is_unpacked() {
    let sandbox = Sandbox::new();
    let (mut bytes, sha) = served_archive(&sandbox);
    // The last byte changed: every entry still reads, only the digest says no.
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let server = HttpServer::start(vec![reply_bytes(200, bytes)]);
    let dest = sandbox.path("volume/plugins");
    sandbox
        .initbox()
        .args(["fetch", &server.url("/release"), "--extract"])
        .arg("-o")
        .arg(&dest)
        .args(["--sha256", &sha])
        .run()
        .assert_code(1)
        .assert_stderr_contains("SHA-256 mismatch")
        .assert_stderr_contains("nothing was extracted");
    assert_eq!(tree(&sandbox.path("volume")), Vec::<String>::new());
}

#[test]
fn fetch_extract_refuses_a_hostile_archive_like_extract() {
    let sandbox = Sandbox::new();
    let archive = sandbox.path("evil.tar");
    python(&archive, "t = tar(); add(t, '../escape', b'x'); t.close()");
    let server = HttpServer::start(vec![reply_bytes(200, std::fs::read(&archive).unwrap())]);
    let dest = sandbox.path("volume/dest");
    sandbox
        .initbox()
        .args(["fetch", &server.url("/evil"), "--extract", "-o"])
        .arg(&dest)
        .run()
        .assert_code(1)
        .assert_stderr_contains("refused archive entry '../escape'");
    assert_eq!(tree(&sandbox.path("volume")), Vec::<String>::new());
}

#[test]
fn a_pipeline_fetches_with_extract_and_extracts_with_the_same_keys() {
    let sandbox = Sandbox::new();
    let (bytes, sha) = served_archive(&sandbox);
    let server = HttpServer::start(vec![reply_bytes(200, bytes)]);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n\
             \x20 - name: plugin\n\
             \x20   fetch: {{url: '{url}', output: {out}, extract: true, strip-components: 1, include: [bin], sha256: {sha}}}\n\
             \x20 - name: unpack\n\
             \x20   extract: {{archive: {archive}, dest: {dest}, exclude: ['*.md'], max-entries: 50}}\n",
            url = server.url("/release"),
            out = sandbox.path("plugin").display(),
            archive = sandbox.path("served.tgz").display(),
            dest = sandbox.path("unpacked").display(),
        ),
    );
    sandbox.check_pipeline(&pipeline).assert_code(0);
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0);
    assert_eq!(
        entries(&sandbox.path("plugin")),
        [".initbox-extract", "bin"]
    );
    assert!(sandbox.path("unpacked/app-1.2/bin/app").exists());
    assert!(
        !sandbox
            .path("unpacked/app-1.2/share/doc/README.md")
            .exists()
    );
}

#[test]
fn the_plugin_download_example_parses() {
    crate::support::assert_example_args_parse("plugin-download.yaml", "fetch");
}

#[test]
fn a_damaged_archive_is_refused_in_initbox_words_not_the_decoders() {
    let sandbox = Sandbox::new();
    let (src, _) = release(&sandbox);
    let dir = sandbox.dir.path();
    let name = src.file_name().unwrap().to_str().unwrap();
    run_in(dir, "tar", &["-cf", "plain.tar", name]);
    run_in(dir, "sh", &["-c", "xz -k -c plain.tar > app.tar.xz"]);
    run_in(dir, "zip", &["-qr", "app.zip", name]);
    // The xz file with a byte of its compressed data flipped; the zip cut in half.
    let mut xz = std::fs::read(dir.join("app.tar.xz")).unwrap();
    let middle = xz.len() / 2;
    xz[middle] ^= 0x55;
    std::fs::write(dir.join("flipped.tar.xz"), &xz).unwrap();
    let zip = std::fs::read(dir.join("app.zip")).unwrap();
    std::fs::write(dir.join("cut.zip"), &zip[..zip.len() / 2]).unwrap();
    // A zstd frame header asking for a 2 GiB window (zstd --long=31 writes one only for
    // large inputs, so the header is written here: magic, descriptor, window byte 0xA8).
    let mut wide = vec![0x28, 0xB5, 0x2F, 0xFD, 0x00, 0xA8];
    wide.extend_from_slice(&[0u8; 64]);
    std::fs::write(dir.join("wide.tar.zst"), &wide).unwrap();
    let cases = [
        ("flipped.tar.xz", "it is damaged"),
        ("cut.zip", "cut short"),
        ("wide.tar.zst", "decoding window larger than initbox allows"),
    ];
    for (archive, words) in cases {
        let output = extract(&sandbox, &dir.join(archive), &sandbox.path("dest"), &[]);
        output.assert_code(1).assert_stderr_contains(words);
        for library in ["EOCD", "window_size", "Requested:", "CRC32", "mismatch"] {
            assert!(
                !output.stderr.contains(library),
                "{archive}: the decoder's own words reached the user:\n{}",
                output.stderr
            );
        }
        assert!(!sandbox.path("dest").exists());
    }
}
