//! An rpm guest built and updated from a signed repository with every check on: the packages
//! signed by their builder (`rpmsign`), the metadata by `vrepo index --sign`, the distribution
//! registered with `vdistro add --gpgcheck --pubkey` (its repository file gets `gpgcheck=1`,
//! `repo_gpgcheck=1` and `gpgkey=`; nothing anywhere says `gpgcheck=0` or `--nogpgcheck`).
//! dnf in the guest accepts the repository, and refuses it once one byte of `primary.xml` or of
//! `repomd.xml.asc` is changed.
//!
//! Also the seed's way of registering a distribution (only `yum.repos.d/*.repo` below
//! `.distributions/NAME`, no `distribution.toml`): the release version comes from the name
//! where it is obvious (`fc3`), said in one line, and the build stops with a clear error where
//! it is not; `vdistro show` says what dnf really checks, per repository.
//!
//! Needs root, rpm, dnf, rpmsign and gpg; skips with a reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestHost, available, checked, rpm_guest_prerequisites};
use vserver_fixtures::{RpmSetOptions, Scriptlets};

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Changes one byte of `path` in place: in the middle of the first base64 line of an armored
/// signature, else in the middle of the file.
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = match text.find("-----BEGIN PGP SIGNATURE-----") {
        Some(start) => start + text[start..].find("\n\n").unwrap() + 2 + 20,
        None => bytes.len() / 2,
    };
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::write(path, bytes).unwrap();
}

fn primary(repo: &Path) -> PathBuf {
    std::fs::read_dir(repo.join("repodata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("primary.xml"))
        .unwrap()
}

fn text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn dnf_in_a_guest_checks_package_and_metadata_signatures() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let (Some(gpg), Some(_)) = (which("gpg"), which("rpmsign")) else {
        available(false, "needs gpg and rpmsign");
        return;
    };
    let host = TestHost::new("vserver-signed-rpm");
    let key = common::gpg::TestKey::new(
        &host.dir.join("gnupg"),
        "rpm repository",
        "rpm@example.invalid",
    );
    let repo = host.dir.join("repo");
    let options = RpmSetOptions {
        seed: 17,
        count: 6,
        scriptlets: Scriptlets::Shell,
        ..RpmSetOptions::default()
    };
    vserver_fixtures::write_rpm_set_with_busybox(&repo, &options, Path::new("/bin/busybox"))
        .unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rpm"))
        .collect();
    // gpgcheck=1 checks the packages' own signatures, which their builder makes.
    checked(
        Command::new("rpmsign")
            .arg("--addsign")
            .arg("--define")
            .arg(format!("_gpg_name {}", key.email))
            .arg("--define")
            .arg(format!("_gpg_path {}", key.home.display()))
            .arg("--define")
            .arg(format!("__gpg {}", gpg.display()))
            .arg("--define")
            .arg("_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback --passphrase ''")
            .args(&files)
            .env("HOME", &host.dir)
            .stdin(std::process::Stdio::null()),
    );
    let mut index = vec!["vrepo", "index", "-q"];
    let sign = key.sign_args();
    index.extend(sign.iter().map(String::as_str));
    let repo_arg = repo.display().to_string();
    index.push(&repo_arg);
    host.ok(&index);
    assert!(repo.join("repodata/repomd.xml.asc").is_file());
    let pubkey = host.dir.join("rpm-repository.asc");
    checked(
        host.command(&["vrepo", "key", "export", "rpm@example.invalid"])
            .arg("--gpg-homedir")
            .arg(&key.home)
            .arg("-o")
            .arg(&pubkey),
    );
    host.ok(&[
        "vdistro",
        "add",
        "signed",
        "--releasever",
        "1",
        "--repo",
        &format!("fx=file://{}/", repo.display()),
        "--gpgcheck",
        "--pubkey",
        pubkey.to_str().unwrap(),
        "--pkgs",
        "fx-shell fx-00002",
    ]);
    let repo_file = std::fs::read_to_string(
        host.dir
            .join("etc/.distributions/signed/yum.repos.d/fx.repo"),
    )
    .unwrap();
    assert!(repo_file.contains("\ngpgcheck=1\n"), "{repo_file}");
    assert!(repo_file.contains("\nrepo_gpgcheck=1\n"), "{repo_file}");
    assert!(repo_file.contains("\ngpgkey=file:///"), "{repo_file}");
    let shown = host.ok(&["vdistro", "show", "signed"]);
    assert!(shown.contains("gpgcheck:    true\n"), "{shown}");
    assert!(
        shown.contains("repo fx: packages checked, metadata checked, keys file:///"),
        "{shown}"
    );

    host.ok(&["t", "build", "-m", "yum", "--", "-d", "signed"]);
    let pkg = host.dir.join("vservers/.pkg/t");
    for (dir, name) in [("yum/etc/yum.repos.d", "fx.repo"), ("yum/etc", "dnf.conf")] {
        let text = std::fs::read_to_string(pkg.join(dir).join(name)).unwrap();
        assert!(!text.contains("gpgcheck=0"), "{name}: {text}");
    }
    host.ok(&["vyum", "t", "--", "-q", "-y", "install", "fx-00003"]);
    assert_eq!(
        host.ok(&["vrpm", "t", "--", "-q", "--qf", "%{NAME}\n", "fx-00003"]),
        "fx-00003\n"
    );

    // One byte of primary.xml, then one of the metadata's signature: dnf refuses the
    // repository (a fresh copy of it each time, so the other change is not what it sees).
    let pristine = host.dir.join("repo-pristine");
    checked(Command::new("cp").arg("-a").arg(&repo).arg(&pristine));
    type Tamper = fn(&Path);
    let trials: [(&str, Tamper, &str); 2] = [
        ("primary.xml", |r: &Path| flip_byte(&primary(r)), "checksum"),
        (
            "repomd.xml.asc",
            |r: &Path| flip_byte(&r.join("repodata/repomd.xml.asc")),
            "signature",
        ),
    ];
    for (what, tamper, why) in trials {
        std::fs::remove_dir_all(&repo).unwrap();
        checked(Command::new("cp").arg("-a").arg(&pristine).arg(&repo));
        tamper(&repo);
        // dnf keeps metadata whose checksum repomd.xml still names: start from none.
        host.ok(&["vyum", "t", "--", "-q", "clean", "all"]);
        let refused = host.vserver(&["vyum", "t", "--", "-y", "--refresh", "install", "fx-00004"]);
        assert!(
            !refused.status.success(),
            "dnf accepted a changed {what}:\n{}",
            text(&refused)
        );
        assert!(text(&refused).contains(why), "{what}: {}", text(&refused));
        assert_eq!(
            host.vserver(&["vrpm", "t", "--", "-q", "fx-00004"])
                .status
                .code(),
            Some(1),
            "{what}"
        );
    }
    // The pristine repository is accepted again.
    std::fs::remove_dir_all(&repo).unwrap();
    checked(Command::new("cp").arg("-a").arg(&pristine).arg(&repo));
    host.ok(&[
        "vyum",
        "t",
        "--",
        "-q",
        "-y",
        "--refresh",
        "install",
        "fx-00004",
    ]);
}

#[test]
fn a_seed_style_distribution_gets_its_release_version_from_its_name_or_an_error() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let host = TestHost::new("vserver-seed-dist");
    let repo = host.dir.join("repo");
    vserver_fixtures::write_rpm_set_with_busybox(
        &repo,
        &RpmSetOptions {
            seed: 18,
            count: 4,
            scriptlets: Scriptlets::Shell,
            ..RpmSetOptions::default()
        },
        Path::new("/bin/busybox"),
    )
    .unwrap();
    host.ok(&["vrepo", "index", "-q", repo.to_str().unwrap()]);
    // The seed's registration: a repository file and a package list, nothing else.
    for name in ["fc3", "local"] {
        let dir = host.dir.join("etc/.distributions").join(name);
        std::fs::create_dir_all(dir.join("yum.repos.d")).unwrap();
        std::fs::create_dir_all(dir.join("pkgs")).unwrap();
        std::fs::write(
            dir.join("yum.repos.d/base.repo"),
            format!(
                "[base]\nname=base $releasever\nbaseurl=file://{}/\nenabled=1\ngpgcheck=0\n",
                repo.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.join("pkgs/01"), "fx-shell\nfx-00001\n").unwrap();
    }
    // What dnf really checks: nothing (the repository file says gpgcheck=0).
    let shown = host.ok(&["vdistro", "show", "fc3"]);
    assert!(shown.contains("\ngpgcheck:    false"), "{shown}");
    assert!(
        shown.contains("\nreleasever:  3 (from its name; not set in distribution.toml)"),
        "{shown}"
    );
    assert!(
        shown.contains("repo base: packages not checked, metadata not checked, keys - (base.repo)"),
        "{shown}"
    );
    let json = host.ok(&["vdistro", "show", "--json", "fc3"]);
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["repos"][0]["id"], "base");
    assert_eq!(value["repos"][0]["gpgcheck"], false);

    let built = host.vserver(&["a", "build", "-m", "yum", "--", "-d", "fc3"]);
    let stderr = String::from_utf8_lossy(&built.stderr);
    assert!(built.status.success(), "{stderr}");
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("release version"))
        .collect();
    assert_eq!(said.len(), 1, "{stderr}");
    assert!(
        said[0].contains("`3`") && said[0].contains("--releasever"),
        "{stderr}"
    );
    let config = std::fs::read_to_string(host.dir.join("etc/a/config.toml")).unwrap();
    assert!(config.contains("releasever = \"3\""), "{config}");
    // The first vyum works: dnf gets the release version.
    host.ok(&["vyum", "a", "--", "-q", "-y", "install", "fx-00002"]);

    // A name that shows no version: the build stops before it creates anything.
    let refused = host.vserver(&["b", "build", "-m", "yum", "--", "-d", "local"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--releasever") && stderr.contains("distribution.toml"),
        "{stderr}"
    );
    assert!(!host.dir.join("vservers/b").exists());
    // With --releasever it builds.
    host.ok(&[
        "b",
        "build",
        "-m",
        "yum",
        "--",
        "-d",
        "local",
        "--releasever",
        "1",
    ]);
}
