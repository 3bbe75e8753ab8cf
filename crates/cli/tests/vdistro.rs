//! `vdistro` through the real binary: a value with a line break in it (finding 7 of the
//! security review, issue 13) is refused with one error line and exit status 1, and nothing is
//! written; the built-in Debian-family distributions take their archives from the host's apt
//! sources, and without one a build stops in one line. Needs nothing but the binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};

fn vdistro(confdir: &Path, args: &[&str]) -> Output {
    vserver(confdir, "vdistro").args(args).output().unwrap()
}

fn vserver(confdir: &Path, applet: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vserver"));
    command
        .arg(applet)
        .env("VSERVER_CONFDIR", confdir)
        .env("VSERVER_ROOTDIR", confdir.join("vservers"))
        .env("VSERVER_PKGDIR", confdir.join("vservers/.pkg"));
    command
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

/// A temporary `/etc/apt` naming a bookworm archive (deb822, its security suite elsewhere) and
/// nothing for trixie: `debian-12` shows the host's archives, `debian-13` lists without sources
/// and its build stops, before it creates anything, with one line saying how to give one.
#[test]
fn builtins_take_their_archives_from_the_hosts_apt_sources() {
    let temp = tempfile::tempdir().unwrap();
    let confdir = temp.path().join("etc");
    let apt = temp.path().join("apt");
    std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
    std::fs::write(
        apt.join("sources.list.d/debian.sources"),
        "Types: deb\nURIs: http://archive.test/debian\nSuites: bookworm bookworm-updates\n\
         Components: main\n\n\
         Types: deb\nURIs: http://security.test/debian-security\nSuites: bookworm-security\n\
         Components: main\n",
    )
    .unwrap();
    let run = |applet: &str, args: &[&str]| {
        vserver(&confdir, applet)
            .args(args)
            .env("VSERVER_APT_SOURCES_DIR", &apt)
            .output()
            .unwrap()
    };
    let shown = run("vdistro", &["show", "debian-12"]);
    let stdout = String::from_utf8(shown.stdout).unwrap();
    assert!(shown.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "apt sources:\n    deb http://archive.test/debian bookworm main\n    \
             deb http://archive.test/debian bookworm-updates main\n    \
             deb http://security.test/debian-security bookworm-security main\n"
        ),
        "{stdout}"
    );

    let listed = String::from_utf8(run("vdistro", &["list"]).stdout).unwrap();
    assert!(
        listed.lines().any(|l| l.starts_with("debian-13 ")),
        "{listed}"
    );
    let shown = run("vdistro", &["show", "debian-13", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(value["apt_sources"], "");
    assert_eq!(value["missing_archive"]["suite"], "trixie");

    let build = run("g", &["build", "-m", "apt", "--", "-d", "debian-13"]);
    let stderr = String::from_utf8(build.stderr).unwrap();
    assert_eq!(build.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("guest `g`: no archive for suite `trixie` of distribution `debian-13`")
            && stderr.contains(&format!("(`{}`)", apt.display()))
            && stderr.contains("--mirror URL")
            && stderr.contains("vdistro add debian-13"),
        "{stderr}"
    );
    assert!(!confdir.join("g").exists() && !confdir.join("vservers/g").exists());
}
