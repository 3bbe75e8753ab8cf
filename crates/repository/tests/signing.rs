//! Signed metadata against the real clients: apt (`signed-by`, no `trusted=yes`) and dnf
//! (`gpgcheck=1`, `repo_gpgcheck=1`) accept what `vrepo index` signs and refuse it once one
//! byte of an index, of the signed root or of the signature is changed; signing is part of
//! the atomic publication; a full mirror and a subset are re-signed with our key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use common::{IsolatedApt, require_tool};
use vserver_fixtures::{DebSetOptions, RpmSetOptions, write_deb_set, write_rpm_set};
use vserver_repository::apt::{AptIndexOptions, AptLayout, index_apt};
use vserver_repository::mirror::{MirrorOptions, SignaturePolicy, mirror};
use vserver_repository::progress::NoProgress;
use vserver_repository::rpmmd::{RpmIndexOptions, index_rpm};
use vserver_repository::sign::{SignOptions, Signer, SigningKey};

fn is_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        assert!(
            std::env::var_os("VSERVER_TEST_REQUIRE_ALL").is_none(),
            "root is required (VSERVER_TEST_REQUIRE_ALL is set)"
        );
        eprintln!("skipped: needs root");
    }
    root
}

/// A key made for the test in its own GnuPG home, and its public half as files.
struct TestKey {
    home: PathBuf,
    signer: Arc<Signer>,
    /// Binary keyring, for apt's `signed-by` and gpgv.
    keyring: PathBuf,
    /// ASCII armor, for dnf's `gpgkey=`.
    armored: PathBuf,
}

impl TestKey {
    fn generate(dir: &Path) -> TestKey {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let status = Command::new("gpg")
            .arg("--homedir")
            .arg(&home)
            .args(["--batch", "--quiet", "--passphrase", "", "--quick-gen-key"])
            .args([
                "vrepo test <repo@example.invalid>",
                "default",
                "default",
                "never",
            ])
            .status()
            .unwrap();
        assert!(status.success());
        let signer = Arc::new(
            Signer::new(&SignOptions {
                key: SigningKey::Id("repo@example.invalid".into()),
                homedir: Some(home.clone()),
                passphrase_file: None,
            })
            .unwrap(),
        );
        let keyring = dir.join("repo-key.gpg");
        std::fs::write(&keyring, signer.export_public(false).unwrap()).unwrap();
        let armored = dir.join("repo-key.asc");
        std::fs::write(&armored, signer.export_public(true).unwrap()).unwrap();
        TestKey {
            home,
            signer,
            keyring,
            armored,
        }
    }
}

impl Drop for TestKey {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.home)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn which(tool: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap()
}

fn have_tools(tools: &[&str]) -> bool {
    tools.iter().all(|t| require_tool(t)) && is_root()
}

/// Changes one byte of `path` in place (the same inode, so its by-hash links change too):
/// in a base64 armor line when the file is armored, else in the middle.
fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = match text.find("-----BEGIN PGP SIGNATURE-----") {
        // The middle of the first base64 line after the armor header and blank line.
        Some(start) => {
            let body = start + text[start..].find("\n\n").unwrap() + 2;
            body + 20
        }
        None => bytes.len() / 2,
    };
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
        .unwrap();
}

fn copy_tree(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

fn apt_update(work: &Path, name: &str, repo: &Path, key: &TestKey) -> std::process::Output {
    let line = format!(
        "deb [signed-by={}] file:{} stable main",
        key.keyring.display(),
        repo.display()
    );
    let apt = IsolatedApt::new(&work.join(name), &line, "amd64");
    apt.apt_get(&["update", "-q", "-o", "Debug::NoLocking=1"])
}

fn apt_output(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn apt_accepts_the_signed_suite_and_refuses_any_changed_byte() {
    if !have_tools(&["gpg", "apt-get"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = TestKey::generate(tmp.path());
    let repo = tmp.path().join("repo");
    write_deb_set(
        &repo,
        &DebSetOptions {
            seed: 17,
            count: 12,
            ..DebSetOptions::default()
        },
    )
    .unwrap();
    let layout = AptLayout::Dists {
        suite: "stable".into(),
        component: "main".into(),
    };
    // Unsigned first: apt refuses it without trusted=yes.
    index_apt(
        &repo,
        &AptIndexOptions {
            layout: layout.clone(),
            ..AptIndexOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    let output = apt_update(tmp.path(), "apt-unsigned", &repo, &key);
    assert!(!output.status.success(), "{}", apt_output(&output));
    assert!(
        apt_output(&output).contains("not signed"),
        "{}",
        apt_output(&output)
    );

    index_apt(
        &repo,
        &AptIndexOptions {
            layout,
            signer: Some(key.signer.clone()),
            ..AptIndexOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    let suite = repo.join("dists/stable");
    for name in ["InRelease", "Release.gpg", "Release"] {
        assert!(suite.join(name).is_file(), "{name}");
    }
    let output = apt_update(tmp.path(), "apt-good", &repo, &key);
    assert!(output.status.success(), "{}", apt_output(&output));
    assert!(
        !apt_output(&output).contains("W:"),
        "{}",
        apt_output(&output)
    );
    // gpgv agrees, on both forms.
    let gpgv = |args: &[&Path]| {
        Command::new("gpgv")
            .arg("--keyring")
            .arg(&key.keyring)
            .args(args)
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(gpgv(&[&suite.join("InRelease")]));
    assert!(gpgv(&[&suite.join("Release.gpg"), &suite.join("Release")]));

    // Each trial changes one byte of a pristine copy; apt must refuse every one.
    type Tamper = fn(&Path);
    let trials: [(&str, Tamper); 4] = [
        ("Packages", |s: &Path| {
            // Whichever variant apt picks, it has one byte changed.
            for name in ["Packages", "Packages.gz", "Packages.xz"] {
                flip_byte(&s.join("main/binary-amd64").join(name));
            }
        }),
        ("InRelease signature", |s: &Path| {
            flip_byte(&s.join("InRelease"))
        }),
        ("InRelease text", |s: &Path| {
            let path = s.join("InRelease");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replacen("Suite: stable", "Suite: stablf", 1)).unwrap();
        }),
        ("Release.gpg", |s: &Path| {
            // Without InRelease apt falls back to Release + Release.gpg.
            std::fs::remove_file(s.join("InRelease")).unwrap();
            flip_byte(&s.join("Release.gpg"));
        }),
    ];
    for (i, (what, tamper)) in trials.iter().enumerate() {
        let copy = tmp.path().join(format!("tampered-{i}"));
        copy_tree(&repo, &copy);
        tamper(&copy.join("dists/stable"));
        let output = apt_update(tmp.path(), &format!("apt-tampered-{i}"), &copy, &key);
        let text = apt_output(&output);
        assert!(
            !output.status.success() || text.contains("W: "),
            "apt accepted a changed {what}:\n{text}"
        );
        let lists = tmp.path().join(format!("apt-tampered-{i}/state/lists"));
        let indexed = std::fs::read_dir(&lists)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages"));
        assert!(!indexed, "apt kept the index of a changed {what}:\n{text}");
    }

    // The Release.gpg path on its own (no InRelease) is accepted when untouched.
    let copy = tmp.path().join("detached-only");
    copy_tree(&repo, &copy);
    std::fs::remove_file(copy.join("dists/stable/InRelease")).unwrap();
    let output = apt_update(tmp.path(), "apt-detached", &copy, &key);
    assert!(output.status.success(), "{}", apt_output(&output));
}

#[test]
fn a_wrong_key_fails_before_anything_is_published() {
    if !have_tools(&["gpg"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = TestKey::generate(tmp.path());
    let error = Signer::new(&SignOptions {
        key: SigningKey::Id("nobody@example.invalid".into()),
        homedir: Some(key.home.clone()),
        passphrase_file: None,
    })
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("no secret key `nobody@example.invalid`"),
        "{error}"
    );
    let error = Signer::new(&SignOptions {
        key: SigningKey::File(tmp.path().join("repo-key.asc")),
        homedir: None,
        passphrase_file: None,
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("holds no secret key"), "{error}");

    // A key file works like a key in a home, and signs with the same key.
    let exported = tmp.path().join("secret.asc");
    let output = Command::new("gpg")
        .arg("--homedir")
        .arg(&key.home)
        .args([
            "--batch",
            "--armor",
            "--export-secret-keys",
            key.signer.fingerprint(),
        ])
        .output()
        .unwrap();
    std::fs::write(&exported, &output.stdout).unwrap();
    let from_file = Signer::new(&SignOptions {
        key: SigningKey::File(exported),
        homedir: None,
        passphrase_file: None,
    })
    .unwrap();
    assert_eq!(from_file.fingerprint(), key.signer.fingerprint());

    // A signer whose key vanished: the index fails and the previous metadata stays.
    let repo = tmp.path().join("repo");
    write_rpm_set(
        &repo,
        &RpmSetOptions {
            seed: 3,
            count: 4,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index_rpm(&repo, &RpmIndexOptions::default(), &NoProgress).unwrap();
    let before = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();
    let status = Command::new("gpg")
        .arg("--homedir")
        .arg(&key.home)
        .args([
            "--batch",
            "--yes",
            "--delete-secret-keys",
            key.signer.fingerprint(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let result = index_rpm(
        &repo,
        &RpmIndexOptions {
            signer: Some(key.signer.clone()),
            ..RpmIndexOptions::default()
        },
        &NoProgress,
    );
    assert!(result.is_err());
    assert_eq!(
        std::fs::read(repo.join("repodata/repomd.xml")).unwrap(),
        before
    );
    assert!(!repo.join("repodata/repomd.xml.asc").exists());
}

/// dnf confined to `tmp` with one repository file.
fn dnf(tmp: &Path, name: &str, repo: &Path, key: &TestKey) -> Command {
    let work = tmp.join(name);
    let reposdir = work.join("repos");
    std::fs::create_dir_all(&reposdir).unwrap();
    std::fs::write(
        reposdir.join("fx.repo"),
        format!(
            "[fx]\nname=fx\nbaseurl=file://{}\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=1\ngpgkey=file://{}\n",
            repo.display(),
            key.armored.display()
        ),
    )
    .unwrap();
    let root = work.join("root");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(work.join(".rpmmacros"), "%_dbpath /var/lib/rpm\n").unwrap();
    let mut cmd = Command::new("dnf");
    cmd.arg(format!("--installroot={}", root.display()))
        .args(["--noplugins", "-y", "-q", "--repo=fx"])
        .arg(format!("--setopt=reposdir={}", reposdir.display()))
        .arg(format!(
            "--setopt=cachedir={}",
            work.join("cache").display()
        ))
        .arg(format!(
            "--setopt=persistdir={}",
            work.join("persist").display()
        ))
        .arg("--setopt=install_weak_deps=False")
        .env("HOME", &work)
        .env("LC_ALL", "C");
    cmd
}

#[test]
fn dnf_accepts_the_signed_repository_and_refuses_any_changed_byte() {
    if !have_tools(&["gpg", "dnf", "rpmsign"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = TestKey::generate(tmp.path());
    let repo = tmp.path().join("repo");
    let files = write_rpm_set(
        &repo,
        &RpmSetOptions {
            seed: 21,
            count: 8,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    // gpgcheck=1 checks the packages' own signatures, which their builder makes (rpmsign),
    // not the repository: sign them with the same key, as a small shop would.
    let status = Command::new("rpmsign")
        .arg("--addsign")
        .arg("--define")
        .arg(format!("_gpg_name {}", key.signer.fingerprint()))
        .arg("--define")
        .arg(format!("_gpg_path {}", key.home.display()))
        .arg("--define")
        // rpm execs it without a PATH search.
        .arg(format!("__gpg {}", which("gpg").display()))
        .arg("--define")
        .arg("_gpg_sign_cmd_extra_args --batch --pinentry-mode loopback --passphrase ''")
        .args(&files)
        .env("HOME", tmp.path())
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    index_rpm(
        &repo,
        &RpmIndexOptions {
            signer: Some(key.signer.clone()),
            ..RpmIndexOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(repo.join("repodata/repomd.xml.asc").is_file());
    let names: Vec<String> = vserver_fixtures::rpm_set_names(&RpmSetOptions {
        seed: 21,
        count: 8,
        ..RpmSetOptions::default()
    });
    let last = names.last().unwrap().clone();
    let output = dnf(tmp.path(), "dnf-good", &repo, &key)
        .args(["install", &last])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    type Tamper = fn(&Path);
    let trials: [(&str, Tamper); 3] = [
        ("primary.xml", |r: &Path| {
            let primary = std::fs::read_dir(r.join("repodata"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().contains("primary.xml"))
                .unwrap();
            flip_byte(&primary);
        }),
        ("repomd.xml.asc", |r: &Path| {
            flip_byte(&r.join("repodata/repomd.xml.asc"))
        }),
        ("repomd.xml", |r: &Path| {
            let path = r.join("repodata/repomd.xml");
            let text = std::fs::read_to_string(&path).unwrap();
            std::fs::write(&path, text.replacen("<revision>", "<revision>1", 1)).unwrap();
        }),
    ];
    for (i, (what, tamper)) in trials.iter().enumerate() {
        let copy = tmp.path().join(format!("tampered-{i}"));
        copy_tree(&repo, &copy);
        tamper(&copy);
        let output = dnf(tmp.path(), &format!("dnf-tampered-{i}"), &copy, &key)
            .args(["install", &last])
            .output()
            .unwrap();
        assert!(
            !output.status.success(),
            "dnf accepted a changed {what}:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn a_full_mirror_and_a_subset_are_re_signed_with_our_key() {
    if !have_tools(&["gpg", "gpgv"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = TestKey::generate(tmp.path());
    let src = tmp.path().join("src");
    write_rpm_set(
        &src,
        &RpmSetOptions {
            seed: 5,
            count: 30,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index_rpm(&src, &RpmIndexOptions::default(), &NoProgress).unwrap();
    let verify = |repodata: &Path| {
        Command::new("gpgv")
            .arg("--keyring")
            .arg(&key.keyring)
            .arg(repodata.join("repomd.xml.asc"))
            .arg(repodata.join("repomd.xml"))
            .output()
            .unwrap()
            .status
            .success()
    };
    for (name, subset) in [
        ("full", None),
        (
            "subset",
            Some(vserver_repository::closure::SubsetOptions {
                packages: vec!["fx-00029".into()],
                ..Default::default()
            }),
        ),
    ] {
        let dest = tmp.path().join(name);
        let options = MirrorOptions {
            signature: SignaturePolicy::Unverified,
            subset: subset.clone(),
            signer: Some(key.signer.clone()),
            ..MirrorOptions::default()
        };
        let report = mirror(src.to_str().unwrap(), &dest, &options, &NoProgress).unwrap();
        assert!(report.changed(), "{name}");
        assert!(
            verify(&dest.join("repodata")),
            "{name}: our signature verifies"
        );
        // Unchanged source, same key: nothing to publish (exit 4 for a timer).
        let report = mirror(src.to_str().unwrap(), &dest, &options, &NoProgress).unwrap();
        assert!(!report.changed(), "{name}: a second run is up to date");
        // Signing turned off: the signature goes, even though the source did not change.
        let unsigned = MirrorOptions {
            signer: None,
            ..options.clone()
        };
        let report = mirror(src.to_str().unwrap(), &dest, &unsigned, &NoProgress).unwrap();
        assert!(
            report.changed(),
            "{name}: dropping the signature is a change"
        );
        assert!(!dest.join("repodata/repomd.xml.asc").exists(), "{name}");
        // And on again.
        let report = mirror(src.to_str().unwrap(), &dest, &options, &NoProgress).unwrap();
        assert!(report.changed(), "{name}");
        assert!(verify(&dest.join("repodata")), "{name}");
    }
}

#[test]
fn a_flat_repository_is_signed_and_an_unsigned_run_drops_the_signatures() {
    if !have_tools(&["gpg", "apt-get"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = TestKey::generate(tmp.path());
    let repo = tmp.path().join("flat");
    write_deb_set(
        &repo,
        &DebSetOptions {
            seed: 2,
            count: 5,
            ..DebSetOptions::default()
        },
    )
    .unwrap();
    let signed = AptIndexOptions {
        signer: Some(key.signer.clone()),
        ..AptIndexOptions::default()
    };
    index_apt(&repo, &signed, &NoProgress).unwrap();
    let line = format!(
        "deb [signed-by={}] file:{} ./",
        key.keyring.display(),
        repo.display()
    );
    let apt = IsolatedApt::new(&tmp.path().join("apt"), &line, "amd64");
    let output = apt.apt_get(&["update", "-q"]);
    assert!(output.status.success(), "{}", apt_output(&output));

    // A mirror of it, re-signed with our key, is accepted too.
    let dest = tmp.path().join("mirror");
    let options = MirrorOptions {
        signature: SignaturePolicy::Keyring(key.keyring.clone()),
        signer: Some(key.signer.clone()),
        ..MirrorOptions::default()
    };
    mirror(repo.to_str().unwrap(), &dest, &options, &NoProgress).unwrap();
    let line = format!(
        "deb [signed-by={}] file:{} ./",
        key.keyring.display(),
        dest.display()
    );
    let apt = IsolatedApt::new(&tmp.path().join("apt-mirror"), &line, "amd64");
    let output = apt.apt_get(&["update", "-q"]);
    assert!(output.status.success(), "{}", apt_output(&output));

    // Unsigned again: no stale signature is left to vouch for the old Release.
    index_apt(&repo, &AptIndexOptions::default(), &NoProgress).unwrap();
    assert!(!repo.join("InRelease").exists() && !repo.join("Release.gpg").exists());
}

#[test]
fn a_protected_key_signs_with_its_passphrase_file_and_never_prompts_without() {
    if !have_tools(&["gpg", "gpgv"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("gnupg");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let status = Command::new("gpg")
        .arg("--homedir")
        .arg(&home)
        .args(["--batch", "--quiet", "--pinentry-mode", "loopback"])
        .args(["--passphrase", "sesame", "--quick-gen-key"])
        .args([
            "locked <locked@example.invalid>",
            "default",
            "default",
            "never",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let _agent = TestKeyHome(home.clone());
    let release = tmp.path().join("suite");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("Release"), "Suite: s\n").unwrap();
    let signer = |passphrase_file: Option<PathBuf>| {
        Signer::new(&SignOptions {
            key: SigningKey::Id("locked@example.invalid".into()),
            homedir: Some(home.clone()),
            passphrase_file,
        })
        .unwrap()
    };
    let started = std::time::Instant::now();
    let error = signer(None).sign_release(&release).unwrap_err().to_string();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "gpg waited for a passphrase"
    );
    assert!(error.contains("--passphrase-file"), "{error}");
    assert!(!release.join("InRelease").exists());
    let passphrase = tmp.path().join("passphrase");
    std::fs::write(&passphrase, "sesame\n").unwrap();
    signer(Some(passphrase)).sign_release(&release).unwrap();
    assert!(release.join("InRelease").is_file() && release.join("Release.gpg").is_file());
}

/// Stops the agent of a GnuPG home made by a test.
struct TestKeyHome(PathBuf);

impl Drop for TestKeyHome {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .arg("--homedir")
            .arg(&self.0)
            .args(["--kill", "gpg-agent"])
            .status();
    }
}
