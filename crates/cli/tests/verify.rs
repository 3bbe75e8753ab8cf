//! `vserver G verify` and `vserver --all verify` on RPM guests built from generated fixtures
//! with the real rpm and dnf: after planted changes (a replaced binary, a changed config file, a
//! removed file, a touched file, a new setuid file, a file turned into a link to a host file, a
//! FIFO where a file was) the findings are exactly `rpm -Va`'s, classed, with the exit status
//! saying whether anything outside configuration files changed; a guest with internal package
//! management is listed as not verifiable; `--json` and `--format prometheus` carry the same
//! counts; nothing outside the guests is read or changed.
//!
//! Needs root, rpm, dnf and busybox; skips with a reason otherwise, fails instead when
//! VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;

use common::{TestHost, snapshot};

/// `rpm -Va`'s findings: path → the nine letters, or `missing`.
fn rpm_va(host: &TestHost, guest: &str) -> BTreeMap<String, String> {
    let out = host.vserver(&["vrpm", guest, "--", "-Va", "--noscripts"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = line.split_whitespace().last()?.to_owned();
            let what = if line.starts_with("missing") {
                "missing".to_owned()
            } else {
                line.get(..9)?.to_owned()
            };
            Some((path, what))
        })
        .collect()
}

fn report(out: &Output) -> serde_json::Value {
    let reports: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    reports
}

fn findings(report: &serde_json::Value) -> BTreeMap<String, String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                f["differs"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn verify_finds_what_rpm_va_finds_and_classes_it() {
    let Some(host) = TestHost::with_rpm_fixture(
        "vserver-verify",
        17,
        8,
        "fx-shell fx-00001 fx-00002 fx-00003",
    ) else {
        return;
    };
    for guest in ["a", "b", "i"] {
        host.ok(&[guest, "build", "-m", "yum", "--", "-d", "fixture"]);
    }
    host.ok(&["i", "pkgmgmt", "internalize"]);
    let out = host.vserver(&["a", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let clean = report(&out);
    assert!(clean[0]["verifiable"].as_bool().unwrap());
    assert!(clean[0]["files"].as_u64().unwrap() > 20, "{clean}");
    assert_eq!(findings(&clean[0]), rpm_va(&host, "a"));

    // Planted changes in `a`.
    let root = host.dir.join("vservers/a");
    let canary = host.dir.join("canary");
    std::fs::write(&canary, "host secret\n").unwrap();
    let before = snapshot(&host.dir.join("vservers/b"));
    let owned = host.ok(&["vrpm", "a", "--", "-ql", "fx-00001", "fx-00002", "fx-00003"]);
    let files: Vec<&str> = owned
        .lines()
        .filter(|p| std::fs::symlink_metadata(root.join(&p[1..])).is_ok_and(|m| m.is_file()))
        .collect();
    let tool = files.iter().find(|p| p.ends_with("-tool")).unwrap();
    let conf = files.iter().find(|p| p.ends_with(".conf")).unwrap();
    let data: Vec<&&str> = files
        .iter()
        .filter(|p| p.contains("/README") || p.contains(".so."))
        .collect();
    assert!(data.len() >= 4, "{files:?}");
    std::fs::write(root.join(&tool[1..]), "#!/bin/sh\necho evil\n").unwrap();
    std::fs::write(root.join(&conf[1..]), "edited = 1\n").unwrap();
    std::fs::remove_file(root.join(&data[0][1..])).unwrap();
    let touched = root.join(&data[1][1..]);
    let file = std::fs::File::options().write(true).open(&touched).unwrap();
    file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let linked = root.join(&data[2][1..]);
    std::fs::remove_file(&linked).unwrap();
    std::os::unix::fs::symlink(&canary, &linked).unwrap();
    let fifo = root.join(&data[3][1..]);
    std::fs::remove_file(&fifo).unwrap();
    common::checked(std::process::Command::new("mkfifo").arg("-m644").arg(&fifo));
    let setuid = root.join("usr/local/bin/helper");
    std::fs::create_dir_all(setuid.parent().unwrap()).unwrap();
    std::fs::write(&setuid, "x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let expected = rpm_va(&host, "a");
    assert_eq!(expected.len(), 6, "{expected:?}");
    let out = host.vserver(&["--all", "verify", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = report(&out);
    let a = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["guest"] == "a")
        .unwrap();
    assert_eq!(findings(a), expected, "vserver verify against rpm -Va");
    let class_of = |path: &str| {
        a["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == path)
            .map(|f| f["class"].as_str().unwrap().to_owned())
    };
    assert_eq!(class_of(tool).as_deref(), Some("binary"));
    assert_eq!(class_of(conf).as_deref(), Some("config"));
    assert_eq!(
        a["unexpected_setid"],
        serde_json::json!(["/usr/local/bin/helper"])
    );
    let b = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["guest"] == "b")
        .unwrap();
    assert!(findings(b).is_empty(), "{b}");
    let i = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["guest"] == "i")
        .unwrap();
    assert_eq!(i["verifiable"], false);
    assert!(i["note"].as_str().unwrap().contains("internal"), "{i}");
    assert_eq!(snapshot(&host.dir.join("vservers/b")), before);
    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "host secret\n");

    // Only a config file changed: exit 0, and the table says so.
    let out = host.vserver(&["b", "verify"]);
    assert_eq!(out.status.code(), Some(0));
    let root_b = host.dir.join("vservers/b");
    std::fs::write(root_b.join(&conf[1..]), "edited = 1\n").unwrap();
    let out = host.vserver(&["b", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("config changed"), "{table}");
    assert!(
        table.contains(&format!("b: S.5....T. config  {conf}")),
        "{table}"
    );

    // The monitoring form: one sample per guest and class, well formed.
    let out = host.vserver(&["--all", "verify", "--format", "prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vserver_verify_changed_files{guest=\"a\",class=\"binary\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vserver_verify_unowned_setid_files{guest=\"a\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vserver_verify_verifiable{guest=\"i\"} 0"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(
            name.starts_with("vserver_verify_") && name.ends_with('}'),
            "{line}"
        );
        value.parse::<f64>().unwrap();
    }
    // Without promtool only this test's own parser above checked the metrics.
    if common::available(
        Path::new("/usr/bin/promtool").exists(),
        "promtool (Debian package prometheus) is not installed",
    ) {
        let prom = host.dir.join("vserver.prom");
        std::fs::write(&prom, text.as_bytes()).unwrap();
        let out = std::process::Command::new("/usr/bin/promtool")
            .args(["check", "metrics"])
            .stdin(std::fs::File::open(&prom).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "promtool: {out:?}");
    }
}
