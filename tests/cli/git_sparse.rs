//! git-clone `--sparse DIR...` (cone mode): the working tree git's own `sparse-checkout set
//! --cone` makes, recorded so that git sees the same sparse checkout; re-runs that find it
//! intact, restore it without the network, or clone again for another cone.

use std::path::Path;

use crate::support::Sandbox;
use crate::support::git_server::{GitDaemon, TestRepo, git, tree_listing};

/// A repository with a deploy tree to cut a cone from, on top of the shared test repository.
fn repo_with_tree(root: &Path) -> TestRepo {
    let repo = TestRepo::create(root, "app");
    for (path, text) in [
        ("deploy/prod/app.yaml", "replicas: 3\n"),
        ("deploy/prod/db/pg.yaml", "size: 10Gi\n"),
        ("deploy/base/app.yaml", "image: app\n"),
        ("deploy/kustomization.yaml", "resources: []\n"),
        ("docs/index.md", "# docs\n"),
    ] {
        let file = repo.path.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, text).unwrap();
    }
    git(&repo.path, &["add", "-A"]);
    git(&repo.path, &["commit", "-q", "-m", "deploy tree"]);
    repo
}

/// What git checks out for the cone `dirs`: a clone without checkout, `sparse-checkout set
/// --cone`, then the checkout.
fn git_sparse_reference(url: &str, dest: &Path, dirs: &[&str]) {
    let dest_text = dest.display().to_string();
    git(
        Path::new("/"),
        &["clone", "-q", "--no-checkout", url, &dest_text],
    );
    let mut set = vec!["sparse-checkout", "set", "--cone"];
    set.extend_from_slice(dirs);
    git(dest, &set);
    git(dest, &["checkout", "-q", "main"]);
}

#[test]
fn a_sparse_clone_checks_out_the_tree_git_sparse_checkout_makes() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = repo_with_tree(&base);
    let daemon = GitDaemon::start(&base);
    let dest = sandbox.path("checkout");
    sandbox
        .initbox()
        .args(["git-clone", &daemon.url("app")])
        .arg(&dest)
        .args([
            "--sparse",
            "deploy/prod",
            "--sparse",
            "conf/nested",
            "--timeout",
            "60s",
        ])
        .run()
        .assert_code(0);
    let reference = sandbox.path("reference");
    git_sparse_reference(
        &repo.file_url(),
        &reference,
        &["deploy/prod", "conf/nested"],
    );
    assert_eq!(tree_listing(&dest), tree_listing(&reference));
    assert!(!dest.join("docs").exists() && !dest.join("deploy/base").exists());
    assert!(
        dest.join("deploy/kustomization.yaml").exists(),
        "a parent's own files come too"
    );
    // git sees the same sparse checkout: the cone, a clean status.
    assert_eq!(
        git(&dest, &["sparse-checkout", "list"]),
        "conf/nested\ndeploy/prod"
    );
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
}

#[test]
fn a_sparse_checkout_is_verified_restored_and_recloned_for_another_cone() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    repo_with_tree(&base);
    let daemon = GitDaemon::start(&base);
    let url = daemon.url("app");
    let dest = sandbox.path("checkout");
    let clone = |dirs: &[&str]| {
        let mut command = sandbox
            .initbox()
            .args(["git-clone", &url])
            .arg(&dest)
            .args(["--timeout", "30s"]);
        for dir in dirs {
            command = command.args(["--sparse", dir]);
        }
        command.run()
    };
    clone(&["deploy/prod"]).assert_code(0);
    clone(&["deploy/prod"])
        .assert_code(0)
        .assert_stderr_contains("already a checkout");
    // A file inside the cone edited, one planted where the cone leaves nothing.
    std::fs::write(dest.join("deploy/prod/app.yaml"), "replicas: 0\n").unwrap();
    std::fs::create_dir_all(dest.join("docs")).unwrap();
    std::fs::write(dest.join("docs/planted.md"), "x\n").unwrap();
    clone(&["deploy/prod"])
        .assert_code(0)
        .assert_stderr_contains("deploy/prod/app.yaml was changed")
        .assert_stderr_contains("restoring it from its own objects");
    assert_eq!(
        std::fs::read_to_string(dest.join("deploy/prod/app.yaml")).unwrap(),
        "replicas: 3\n"
    );
    assert!(!dest.join("docs").exists());
    // Another cone: cloned again, with it.
    clone(&["docs"]).assert_code(0);
    assert!(dest.join("docs/index.md").exists() && !dest.join("deploy/prod").exists());
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
}
