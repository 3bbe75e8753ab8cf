//! `vrepo mirror` and `vrepo serve` as processes: a mirror killed mid-download leaves DEST
//! valid and the next run resumes; exit codes say updated (0), up to date (4) or failed (1);
//! `vrepo serve` stops cleanly on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{KillOnDrop, serve};
use vserver_fixtures::{RpmSetOptions, write_rpm_set};

fn vrepo() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vserver"));
    command.arg("vrepo");
    command
}

fn json(output: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("null")).unwrap_or_else(|e| {
        panic!(
            "bad JSON {stdout:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn index(dir: &Path) {
    let status = vrepo()
        .args(["index", "--quiet"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn killed_mirror_leaves_dest_valid_and_the_next_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    write_rpm_set(
        &src,
        &RpmSetOptions {
            seed: 9,
            count: 40,
            files_per_package: 12,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index(&src);
    let (mut server, url) = serve(&src);

    // Slow on purpose (100 KiB/s), so that the kill lands mid-download.
    let mut slow = KillOnDrop(
        vrepo()
            .args(["mirror", "--no-verify-signature", "--json", "--jobs", "2"])
            .args(["--limit-rate", "100k"])
            .arg(&url)
            .arg(&dest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let parts = dest.join(".vrepo/mirror-parts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_dir(&parts).map_or(0, |d| d.count()) < 3 {
        assert!(
            Instant::now() < deadline,
            "the mirror never started downloading"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(300));
    // No metadata is published before every package is in place.
    assert!(!dest.join("repodata").exists());
    slow.0.kill().unwrap();
    slow.0.wait().unwrap();
    assert!(!dest.join("repodata").exists());

    let output = vrepo()
        .args(["mirror", "--no-verify-signature", "--json"])
        .arg(&url)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = json(&output);
    assert_eq!(summary["result"], "updated");
    assert_eq!(summary["packages"], 40);
    assert!(summary["resumed"].as_u64().unwrap() >= 1, "{summary}");
    assert!(
        summary["downloaded_bytes"].as_u64().unwrap() < summary["bytes"].as_u64().unwrap(),
        "{summary}"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SIGNATURE VERIFICATION IS OFF"), "{stderr}");
    for entry in std::fs::read_dir(src.join("repodata")).unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            std::fs::read(entry.path()).unwrap(),
            std::fs::read(dest.join("repodata").join(entry.file_name())).unwrap()
        );
    }

    // Again: nothing to do, exit code 4.
    let output = vrepo()
        .args(["mirror", "--no-verify-signature", "--json"])
        .arg(&url)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(json(&output)["result"], "up-to-date");

    // A corrupt package on the source: exit code 1, one clear line, previous state intact.
    let victim = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "rpm"))
        .unwrap();
    let name = victim.file_name().unwrap().to_owned();
    std::fs::remove_file(dest.join(&name)).unwrap();
    let mut bytes = std::fs::read(&victim).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&victim, &bytes).unwrap();
    let output = vrepo()
        .args(["mirror", "--no-verify-signature"])
        .arg(&url)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let error: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(error[0].contains("does not match its checksum"), "{stderr}");
    assert!(!dest.join(&name).exists());

    // Without a signature policy the command refuses to start.
    let output = vrepo().arg("mirror").arg(&url).arg(&dest).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--keyring"));

    // SIGTERM stops the server cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = server.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn packages_mirrors_a_dependency_closure_and_names_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let dest = tmp.path().join("dest");
    write_rpm_set(
        &src,
        &RpmSetOptions {
            seed: 4,
            count: 60,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index(&src);
    let (_server, url) = serve(&src);
    let rpms = |dir: &Path| {
        let mut names: Vec<String> = walk_files(dir)
            .into_iter()
            .filter(|n| n.ends_with(".rpm"))
            .collect();
        names.sort();
        names
    };

    // An unknown name: one clear line, exit 1, nothing published.
    let missing = vrepo()
        .args(["mirror", "-q", "--no-verify-signature", "--packages"])
        .arg("fx-00001,no-such-package")
        .arg(&url)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("no-such-package"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
    assert!(!dest.join("repodata").exists());

    let output = vrepo()
        .args(["mirror", "--no-verify-signature", "--json", "--packages"])
        .arg("fx-00001")
        .arg(&url)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mirrored = rpms(&dest);
    assert!(
        mirrored.iter().any(|n| n.starts_with("fx-00001-")),
        "{mirrored:?}"
    );
    assert!(
        !mirrored.is_empty() && mirrored.len() < rpms(&src).len(),
        "{} of {}",
        mirrored.len(),
        rpms(&src).len()
    );
    // The subset has metadata of its own, naming exactly the packages it holds.
    let primary = std::fs::read_dir(dest.join("repodata"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("primary.xml"))
        .unwrap();
    let text = String::from_utf8_lossy(
        &std::process::Command::new("zcat")
            .arg(&primary)
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert_eq!(
        text.matches("<package type=\"rpm\">").count(),
        mirrored.len(),
        "primary and the files disagree"
    );
}

/// The file names below `dir`, recursively, leaving out hidden ones (`.vrepo/` is state, not
/// what clients see).
fn walk_files(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).into_iter().flatten() {
            let entry = entry.unwrap();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names
}

#[test]
fn packages_takes_a_distributions_lists_and_refuses_debian_sets_on_rpm_md() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    write_rpm_set(
        &src,
        &RpmSetOptions {
            seed: 6,
            count: 30,
            ..RpmSetOptions::default()
        },
    )
    .unwrap();
    index(&src);
    let conf = tmp.path().join("etc");
    let added = Command::new(env!("CARGO_BIN_EXE_vserver"))
        .args(["vdistro", "add", "small", "--releasever", "41"])
        .args(["--repo", "base=file:///nonexistent"])
        .args(["--pkgs", "fx-00010 ?no-such-package"])
        .env("VSERVER_CONFDIR", &conf)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let dest = tmp.path().join("dest");
    let output = vrepo()
        .args([
            "mirror",
            "-q",
            "--no-verify-signature",
            "--packages",
            "@dist:small",
        ])
        .arg("--confdir")
        .arg(&conf)
        .arg(&src)
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The list's package is there; its optional missing one is no error.
    assert!(walk_files(&dest).iter().any(|n| n.starts_with("fx-00010-")));

    let output = vrepo()
        .args([
            "mirror",
            "-q",
            "--no-verify-signature",
            "--packages",
            "@minbase",
        ])
        .arg(&src)
        .arg(tmp.path().join("dest2"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("a Debian package set"), "{stderr}");
    let output = vrepo()
        .args([
            "mirror",
            "-q",
            "--no-verify-signature",
            "--packages",
            "@dist:nope",
        ])
        .arg("--confdir")
        .arg(&conf)
        .arg(&src)
        .arg(tmp.path().join("dest3"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("@dist:nope"), "{stderr}");
}
