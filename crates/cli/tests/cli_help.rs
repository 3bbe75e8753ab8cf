//! The command line as a new user meets it (issue 16): every command and subcommand, walked
//! from the clap definitions the binary parses with, has its own `--help` that names it and
//! shows an example; an unknown option exits 2 with one line; the generated man pages and
//! bash, zsh and fish completions list every option clap knows, so they cannot drift. Also: the
//! applets without arguments print their usage (exit 2), `--version` everywhere, `build` without
//! `-m`, "did you mean" for guests, the unknown-guest hint that fits the host, and the root
//! check as an unprivileged user.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::available;

const BIN: &str = env!("CARGO_BIN_EXE_vserver");

/// A temporary host: every root below one directory.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        Host {
            dir: tempfile::Builder::new()
                .prefix("vserver-cli-help")
                .tempdir()
                .unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("VSERVER_CONFDIR", self.dir.path().join("etc"))
            .env("VSERVER_ROOTDIR", self.dir.path().join("vservers"))
            .env("VSERVER_PKGDIR", self.dir.path().join("vservers/.pkg"))
            .env("VSERVER_RUNDIR", self.dir.path().join("run"))
            .stdin(std::process::Stdio::null());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
}

/// One command of the tree: the words that reach it and its definition.
struct Node {
    words: Vec<String>,
    cmd: clap::Command,
}

/// Every command and subcommand, as the binary is called for it (`vserver g start`,
/// `vserver --all unify`, `vserver vrepo snapshot create`).
fn walk() -> Vec<Node> {
    fn visit(cmd: &clap::Command, words: Vec<String>, out: &mut Vec<Node>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut next = words.clone();
            if cmd.get_name() == "vserver" {
                // The guest commands follow a guest; `unify` follows `--all`.
                next.push(
                    if sub.get_name() == "unify" {
                        "--all"
                    } else {
                        "g"
                    }
                    .into(),
                );
            }
            next.push(sub.get_name().to_owned());
            visit(sub, next, out);
        }
        out.push(Node {
            words,
            cmd: cmd.clone(),
        });
    }
    let mut out = Vec::new();
    for top in vserver::commands() {
        let top = vserver::prepared(top);
        let words = if top.get_name() == "vserver" {
            Vec::new()
        } else {
            vec![top.get_name().to_owned()]
        };
        visit(&top, words, &mut out);
    }
    out
}

/// The options of `cmd` as a user types them (`--json`, or `-q` when there is no long form).
fn options(cmd: &clap::Command) -> Vec<String> {
    cmd.get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
        .map(|a| match (a.get_long(), a.get_short()) {
            (Some(long), _) => format!("--{long}"),
            (None, Some(short)) => format!("-{short}"),
            (None, None) => unreachable!("an option without a flag"),
        })
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn every_command_has_its_own_help_with_an_example() {
    let host = Host::new();
    let nodes = walk();
    assert!(nodes.len() > 30, "only {} commands", nodes.len());
    for node in &nodes {
        let mut args: Vec<&str> = node.words.iter().map(String::as_str).collect();
        args.push("--help");
        let out = host.run(&args);
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let name = node.cmd.get_bin_name().unwrap_or(node.cmd.get_name());
        let usage = stdout
            .lines()
            .find(|l| l.starts_with("Usage: "))
            .unwrap_or_else(|| panic!("{args:?}: no usage line:\n{stdout}"));
        assert!(
            usage.contains(name),
            "{args:?}: `{usage}` does not name `{name}`"
        );
        assert!(
            stdout.contains("Example"),
            "{args:?}: no example in its help:\n{stdout}"
        );
    }
}

#[test]
fn an_unknown_option_is_one_line_and_exit_2_everywhere() {
    let host = Host::new();
    for node in walk() {
        let mut args: Vec<&str> = node.words.iter().map(String::as_str).collect();
        args.push("--no-such-option");
        let out = host.run(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: not one line:\n{stderr}"
        );
        assert!(stderr.contains("--no-such-option"), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // A missing argument names it, and a wrong value lists the possible ones, on the one line.
    let stderr = text(&host.run(&["g", "pkgmgmt"]).stderr);
    assert!(
        stderr.contains("<DIRECTION>") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let stderr = text(&host.run(&["g", "pkgmgmt", "frob"]).stderr);
    assert!(
        stderr.contains("internalize, externalize") && stderr.lines().count() == 1,
        "{stderr}"
    );
    // Stray arguments too, where the command takes none.
    for args in [
        &["g", "stop", "extra"][..],
        &["g", "status", "x"],
        &["vdistro", "list", "x"],
    ] {
        let out = host.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert_eq!(text(&out.stderr).lines().count(), 1, "{args:?}");
    }
}

#[test]
fn man_pages_and_completions_list_every_option() {
    let host = Host::new();
    let man = host.dir.path().join("man");
    let completions = host.dir.path().join("completions");
    for (option, dir) in [
        ("--generate-man", &man),
        ("--generate-completions", &completions),
    ] {
        let out = host.run(&[option, dir.to_str().unwrap()]);
        assert!(out.status.success(), "{option}: {}", text(&out.stderr));
    }
    let read = |path: PathBuf| {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            // roff escapes the hyphen.
            .replace("\\-", "-")
    };
    let mut checked = 0;
    for node in walk() {
        let page = node.cmd.get_display_name().unwrap_or(node.cmd.get_name());
        let page_text = read(man.join(format!("{page}.1")));
        for option in options(&node.cmd) {
            assert!(
                page_text.contains(&option),
                "man page {page} lacks {option}"
            );
            checked += 1;
        }
        for sub in node.cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(
                page_text.contains(sub.get_name()),
                "man page {page} lacks {}",
                sub.get_name()
            );
        }
    }
    for top in vserver::commands() {
        let top = vserver::prepared(top);
        let name = top.get_name().to_owned();
        for (shell, _) in vserver::SHELLS {
            let script = read(completions.join(vserver::completion_file(shell, &name)));
            let mut stack = vec![top.clone()];
            while let Some(cmd) = stack.pop() {
                for option in options(&cmd) {
                    let found = match (shell, option.strip_prefix("--")) {
                        (clap_complete::Shell::Fish, Some(long)) => {
                            script.contains(&format!("-l {long}"))
                        }
                        (clap_complete::Shell::Fish, None) => {
                            script.contains(&format!("-s {}", &option[1..]))
                        }
                        _ => script.contains(&option),
                    };
                    assert!(
                        found,
                        "{shell} completion of {name} lacks {option} ({})",
                        cmd.get_name()
                    );
                }
                for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
                    assert!(
                        script.contains(sub.get_name()),
                        "{shell} completion of {name} lacks {}",
                        sub.get_name()
                    );
                    stack.push(sub.clone());
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} options checked");
}

#[test]
fn usage_without_arguments_version_everywhere_and_build_needs_a_method() {
    let host = Host::new();
    for applet in vserver::APPLETS.iter().chain(&["vserver"]) {
        let args: Vec<&str> = if *applet == "vserver" {
            vec![]
        } else {
            vec![applet]
        };
        let out = host.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{applet}: {}",
            text(&out.stderr)
        );
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains("Usage: "),
            "{applet} prints no usage: {stderr}"
        );
        assert!(stderr.contains(applet), "{applet}: {stderr}");
        let mut args = args.clone();
        args.push("--version");
        let out = host.run(&args);
        assert_eq!(out.status.code(), Some(0), "{applet} --version");
        assert!(
            text(&out.stdout).starts_with(&format!("{applet} {}", env!("CARGO_PKG_VERSION"))),
            "{applet} --version: {}",
            text(&out.stdout)
        );
    }
    // A package applet with a guest but no tool arguments, and `build` without a method: one
    // line, exit 2, nothing made.
    for args in [&["vrpm", "g"][..], &["vapt-cache", "g"], &["g", "build"]] {
        let out = host.run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    assert!(
        text(&host.run(&["g", "build"]).stderr)
            .contains("-m skeleton|yum|dnf|rpm|apt|debootstrap|clone")
    );
    assert!(!host.dir.path().join("vservers/g").exists());
    // The `-m` help lists every method; `vserver --help` lists vapt-cache.
    let help = text(&host.run(&["g", "build", "--help"]).stdout);
    for method in [
        "skeleton",
        "yum",
        "dnf",
        "rpm",
        "apt",
        "debootstrap",
        "clone",
    ] {
        assert!(help.contains(method), "build --help lacks {method}");
    }
    assert!(text(&host.run(&["--help"]).stdout).contains("vapt-cache"));
}

#[test]
fn did_you_mean_for_guests_commands_and_options() {
    if !available(common::is_root(), "building a guest needs root") {
        return;
    }
    let host = Host::new();
    let out = host.run(&["test", "build", "-m", "skeleton"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&host.run(&["tset", "status"]).stderr);
    assert!(stderr.contains("did you mean `test`?"), "{stderr}");
    let out = host.run(&["test", "strat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("'start'"),
        "{}",
        text(&out.stderr)
    );
    let out = host.run(&["test", "stop", "--timout", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("'--timeout'"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_unknown_guest_hint_fits_the_host() {
    if !available(common::is_root(), "running guest commands needs root") {
        return;
    }
    for (family, source, method) in [
        (
            "deb",
            "--apt-source=file:///nonexistent stable main",
            "-m apt ",
        ),
        ("rpm", "--repo=base=file:///nonexistent", "-m yum "),
    ] {
        let host = Host::new();
        let out = host.run(&[
            "vdistro",
            "add",
            "site",
            "--family",
            family,
            "--releasever",
            "1",
            source,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let stderr = text(&host.run(&["nosuch", "status"]).stderr);
        assert!(stderr.contains(method), "{family}: {stderr}");
    }
}

/// Copies the binary where an unprivileged user can run it.
fn runnable_copy(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.join("vserver");
    std::fs::copy(BIN, &copy).unwrap();
    copy
}

#[test]
fn commands_that_need_root_say_so_in_one_line() {
    let setpriv = Path::new("/usr/bin/setpriv");
    if !available(
        common::is_root() && setpriv.exists(),
        "needs root and setpriv to run as nobody",
    ) {
        return;
    }
    let host = Host::new();
    let copy = runnable_copy(host.dir.path());
    let root = host.dir.path();
    let as_nobody = |args: &[&str]| {
        Command::new(setpriv)
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&copy)
            .args(args)
            .env("VSERVER_CONFDIR", root.join("etc"))
            .env("VSERVER_ROOTDIR", root.join("vservers"))
            .env("VSERVER_PKGDIR", root.join("vservers/.pkg"))
            .env("VSERVER_RUNDIR", root.join("run"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for args in [
        &["g", "start"][..],
        &["g", "build", "-m", "skeleton"],
        &["g", "delete", "--yes"],
        &["vrpm", "g", "--", "-qa"],
        &["vapt-get", "g", "--", "update"],
    ] {
        let out = as_nobody(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains("needs root"), "{args:?}: {stderr}");
    }
    // Help needs no root.
    let out = as_nobody(&["g", "start", "--help"]);
    assert_eq!(out.status.code(), Some(0));
}
