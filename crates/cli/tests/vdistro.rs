//! `vdistro add` through the real binary: a value with a line break in it (finding 7 of the
//! security review, issue 13) is refused with one error line and exit status 1, and nothing is
//! written. Needs nothing but the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn vdistro(confdir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vserver"))
        .arg("vdistro")
        .args(args)
        .env("VSERVER_CONFDIR", confdir)
        .env("VSERVER_ROOTDIR", confdir.join("vservers"))
        .env("VSERVER_PKGDIR", confdir.join("vservers/.pkg"))
        .output()
        .unwrap()
}

/// The refusal: exit status 1 (a failure, as for any other bad value of `add`), nothing on
/// stdout, exactly one line on stderr naming `field` and showing the value escaped, and no
/// distribution directory.
fn assert_refused(confdir: &Path, args: &[&str], field: &str, escaped: &str) {
    let output = vdistro(confdir, args);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with(&format!(
            "vdistro: error: distribution `local`: invalid {field} "
        )),
        "{stderr:?}"
    );
    assert!(stderr.contains(escaped), "{stderr:?} lacks {escaped}");
    assert!(!confdir.join(".distributions/local").exists(), "{args:?}");
    assert!(!confdir.join(".distributions").exists(), "{args:?}");
}

#[test]
fn add_refuses_a_line_break_in_a_value_and_writes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let confdir = temp.path().join("etc");
    let add = ["add", "local", "--releasever", "41"];
    let with = |extra: &[&'static str]| [&add[..], extra].concat();

    assert_refused(
        &confdir,
        &with(&["--repo", "base=file:///x\n[evil]\nbaseurl=file:///etc"]),
        "repository URL",
        r#""file:///x\n[evil]\nbaseurl=file:///etc""#,
    );
    assert_refused(
        &confdir,
        &with(&["--repo", "base\n[evil]=file:///x"]),
        "repository id",
        r#""base\n[evil]""#,
    );
    assert_refused(
        &confdir,
        &with(&["--repo", "base=file:///x", "--arch", "../x"]),
        "architecture",
        r#""../x""#,
    );
    assert_refused(
        &confdir,
        &with(&["--repo", "base=file:///x", "--pkgs", "bash\nvim"]),
        "package list",
        r#""bash\nvim""#,
    );
    assert_refused(
        &confdir,
        &with(&["--repo", "base=file:///x", "--description", "a\rb"]),
        "description",
        r#""a\rb""#,
    );
    assert_refused(
        &confdir,
        &[
            "add",
            "local",
            "--family",
            "deb",
            "--releasever",
            "12",
            "--apt-source",
            "file:/m bookworm main\ndeb http://evil/ x main",
        ],
        "apt source",
        r#""file:/m bookworm main\ndeb http://evil/ x main""#,
    );

    // The same values without the line breaks register.
    let output = vdistro(
        &confdir,
        &with(&[
            "--repo",
            "base=file:///x",
            "--arch",
            "x86_64",
            "--pkgs",
            "bash ?vim",
        ]),
    );
    assert!(output.status.success(), "{output:?}");
    let repo = std::fs::read_to_string(confdir.join(".distributions/local/yum.repos.d/base.repo"))
        .unwrap();
    assert_eq!(
        repo,
        "[base]\nname=local $releasever - base\nbaseurl=file:///x\nenabled=1\ngpgcheck=0\n"
    );
}
