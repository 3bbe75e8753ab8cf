//! A compromised RPM guest against every host-side command, through the `vserver` binary
//! (issue 13's chains 2, 3 and 4, in their realistic form, and the variants around them).
//!
//! The guest is root inside its root: it replaces a program that ordinary packages' scriptlets
//! run (`/usr/libexec/fx-helper`, run by a Lua `%post` through `os.execute`, `io.popen`,
//! `rpm.execute` and `posix.fork`+`exec`, and by a shell `%post`) with an attack program that
//! knows every host path, and plants symlinks (absolute, `..`, loops) wherever host code looks.
//! The package state is seeded with the links an earlier compromise could have left there before
//! the trusted part of `.pkg/G` became read-only in every sandbox. Then the administrator does
//! ordinary things: `vrpm -qa`, `vyum install` (as `SECRET=… vyum`), `vrpm -Va`, `vyum clean`,
//! `pkgmgmt internalize`, `pkgmgmt externalize`, `delete`. After each one a host canary (a
//! directory of secrets and a victim file) must be byte for byte unchanged, no host secret may
//! have reached the guest, and the trusted state must hold only what the host wrote.
//!
//! The attack program is a static C program compiled here (gcc); it reports, into the guest,
//! what each attempt got from the kernel.
//!
//! Needs root, rpm, dnf, busybox-static and gcc; skips with a reason otherwise, fails instead
//! when VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestHost, available, checked, rpm_guest_prerequisites, snapshot};
use vserver_fixtures::{RpmPackage, RpmSetOptions, Scriptlets};

/// What the attack program tries; each line of its report is `CHECK ERRNO` (0: it worked).
const ATTACK_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>
extern char **environ;
static FILE *out;
static void report(const char *check, const char *what, long rc) {
    fprintf(out, "%s:%s %d\n", check, what, rc < 0 ? errno : 0);
    fflush(out);
}
int main(int argc, char **argv) {
    if (argc < 2 || !(out = fopen(argv[1], "w"))) return 1;
    FILE *status = fopen("/proc/self/status", "r");
    char line[512];
    while (status && fgets(line, sizeof line, status))
        if (!strncmp(line, "CapEff:", 7) || !strncmp(line, "CapBnd:", 7))
            fprintf(out, "%s", line);
    for (char **e = environ; *e; e++) fprintf(out, "env %s\n", *e);
    mkdir("/.escape", 0755);
    long rc = chroot("/.escape");
    report("chroot", "/.escape", rc);
    if (rc == 0) {
        for (int i = 0; i < 64; i++) chdir("..");
        report("chroot", ".", chroot("."));
    }
    report("mount", "tmpfs", mount("none", "/.escape", "tmpfs", 0, NULL));
    report("umount", "/.rpmdb", umount2("/.rpmdb", MNT_DETACH));
    for (int i = 2; i < argc; i++) {
        char path[4096];
        int fd = open(argv[i], O_WRONLY | O_TRUNC);
        report("truncate", argv[i], fd);
        if (fd >= 0) { write(fd, "pwned\n", 6); close(fd); }
        snprintf(path, sizeof path, "%s/planted", argv[i]);
        fd = open(path, O_WRONLY | O_CREAT, 0644);
        report("create", argv[i], fd);
        if (fd >= 0) { write(fd, "pwned\n", 6); close(fd); }
        snprintf(path, sizeof path, "%s/planted.repo", argv[i]);
        report("symlink", argv[i], symlink("/etc/shadow", path));
    }
    return 0;
}
"#;

/// Every regular file below `dir` that contains `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    snapshot(dir)
        .into_iter()
        .filter(|(path, content)| {
            std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file())
                && content.windows(needle.len()).any(|w| w == needle)
        })
        .map(|(path, _)| path)
        .collect()
}

/// The attack program's report as `CHECK:TARGET` → errno, plus the capability lines.
fn read_report(path: &Path) -> (BTreeMap<String, i32>, Vec<String>) {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no attack report at {}: {e}", path.display()));
    let mut results = BTreeMap::new();
    let mut other = Vec::new();
    for line in text.lines() {
        match line.rsplit_once(' ') {
            Some((check, errno)) if !line.starts_with("env ") && !line.starts_with("Cap") => {
                results.insert(check.to_owned(), errno.parse().unwrap());
            }
            _ => other.push(line.to_owned()),
        }
    }
    (results, other)
}

/// The hexadecimal capability mask of a `CapEff:`/`CapBnd:` line.
fn mask(lines: &[String], name: &str) -> u64 {
    let line = lines
        .iter()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {lines:?}"));
    u64::from_str_radix(line[name.len()..].trim(), 16).unwrap()
}

const CAP_SYS_CHROOT: u64 = 1 << 18;
const CAP_SYS_PTRACE: u64 = 1 << 19;
const CAP_SYS_ADMIN: u64 = 1 << 21;

#[test]
fn a_compromised_rpm_guest_cannot_reach_the_host_through_any_command() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    let gcc = Path::new("/usr/bin/gcc").exists()
        && Path::new("/usr/lib/x86_64-linux-gnu/libc.a").exists();
    if !available(
        gcc,
        "needs gcc and libc6-dev (static libc) for the attack program",
    ) {
        return;
    }
    let host = TestHost::new("vserver-hostile-rpm");
    let pkg = host.dir.join("vservers/.pkg/t");
    let guest = host.dir.join("vservers/t");

    // The host's canary: secrets a guest must never read or change, and a file to overwrite.
    let canary = host.dir.join("canary");
    std::fs::create_dir_all(canary.join("etc")).unwrap();
    std::fs::write(canary.join("secret"), "HOST-SECRET-7d1f\n").unwrap();
    std::fs::write(canary.join("etc/shadow"), "root:HOST-SECRET-7d1f:1::::::\n").unwrap();
    let victim = host.dir.join("victim");
    std::fs::write(&victim, "HOST-SECRET-7d1f victim\n").unwrap();
    let canary_before = snapshot(&canary);
    let victim_before = std::fs::read(&victim).unwrap();

    // Everything a script could aim at, by every path it could know (rule 4: a host path a
    // script learns is worth nothing).
    let targets: Vec<String> = [
        canary.clone(),
        canary.join("secret"),
        victim.clone(),
        pkg.clone(),
        pkg.join("yum/etc/yum.repos.d"),
        pkg.join("rpm/home"),
        pkg.join("rpm/plugins"),
        pkg.join("rpm/state"),
        pkg.join("yum/lib"),
        PathBuf::from("/run/vserver-op/yum/etc/yum.repos.d"),
        PathBuf::from("/run/vserver-op/rpm/plugins"),
        PathBuf::from("/run/vserver-op/yum/lib"),
        PathBuf::from("/proc/1/root").join(canary.strip_prefix("/").unwrap()),
        PathBuf::from("/proc/1/root/run/vserver-op/yum/lib"),
        PathBuf::from("/proc/1/root/run/vserver-op/yum/etc/yum.repos.d"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .collect();
    let helper_args = targets.join(" ");

    let repo = host.dir.join("repo");
    vserver_fixtures::write_rpm_set_with_busybox(
        &repo,
        &RpmSetOptions {
            seed: 13,
            count: 2,
            scriptlets: Scriptlets::Shell,
            ..RpmSetOptions::default()
        },
        Path::new("/bin/busybox"),
    )
    .unwrap();
    // Ordinary packages whose scriptlets run a program of the guest's, as `ldconfig` or
    // `systemctl` would be run: every way rpm's Lua can start a program, and a shell scriptlet.
    let lua = format!(
        r#"os.execute("/usr/libexec/fx-helper /report-os-execute {helper_args}")
local p = io.popen("/usr/libexec/fx-helper /report-popen {helper_args}")
if p then p:read("*a"); p:close() end
if rpm.execute then rpm.execute("/bin/sh", "-c", "/usr/libexec/fx-helper /report-rpm-execute {helper_args}") end
local pid = posix.fork()
if pid == 0 then
  posix.exec("/bin/sh", "-c", "/usr/libexec/fx-helper /report-posix-exec {helper_args}")
elseif pid and pid > 0 then
  posix.wait(pid)
end"#
    );
    RpmPackage::new("fx-lua", "1")
        .arch("noarch")
        .requires("fx-shell")
        .file(
            "/usr/share/fx-lua/README",
            "a package with a Lua scriptlet\n",
            0o644,
        )
        .lua_post_install(lua)
        .write_to(&repo)
        .unwrap();
    RpmPackage::new("fx-sh", "1")
        .arch("noarch")
        .requires("fx-shell")
        .requires_pre("fx-shell")
        .file(
            "/usr/share/fx-sh/README",
            "a package with a shell scriptlet\n",
            0o644,
        )
        .post_install(format!(
            "/usr/libexec/fx-helper /report-shell {helper_args}\nenv > /scriptlet-env\n"
        ))
        .write_to(&repo)
        .unwrap();
    host.register_fixture(&repo, "fx-shell");
    host.ok(&["t", "build", "-m", "yum", "--", "-d", "fixture"]);

    // The compromise, as root inside the guest would do it between operations.
    let attack_c = host.dir.join("attack.c");
    std::fs::write(&attack_c, ATTACK_C).unwrap();
    std::fs::create_dir_all(guest.join("usr/libexec")).unwrap();
    let compiled = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(guest.join("usr/libexec/fx-helper"))
        .arg(&attack_c)
        .output()
        .unwrap();
    assert!(compiled.status.success(), "{compiled:?}");
    // What an earlier compromise (through the once writable `.pkg/G/yum`) could have left.
    for (link, target) in [
        ("yum/etc/yum.repos.d/zz.repo", canary.join("etc/shadow")),
        ("yum/etc/dnf.conf.d", canary.clone()),
        ("rpm/plugins/.vserver.so.tmp", victim.clone()),
        ("rpm/plugins/vserver.so.stamp", victim.clone()),
        ("rpm/home/.rpmmacros.new", victim.clone()),
        ("yum/lib/history", canary.clone()),
        ("yum/lib/evil.sqlite", canary.join("secret")),
        ("yum/cache/zz", canary.clone()),
    ] {
        let _ = std::fs::remove_file(pkg.join(link));
        std::os::unix::fs::symlink(&target, pkg.join(link)).unwrap();
    }
    std::os::unix::fs::symlink("loop", pkg.join("yum/cache/loop")).unwrap();

    let check_host = |after: &str| {
        assert_eq!(
            snapshot(&canary),
            canary_before,
            "canary changed after {after}"
        );
        assert_eq!(
            std::fs::read(&victim).unwrap(),
            victim_before,
            "victim changed after {after}"
        );
        let leaked = files_containing(&guest, b"HOST-SECRET");
        assert!(
            leaked.is_empty(),
            "after {after}, the guest holds {leaked:?}"
        );
        for dir in ["rpm/home", "rpm/plugins", "yum/etc", "rpm/etc"] {
            for (path, _) in snapshot(&pkg.join(dir)) {
                let meta = std::fs::symlink_metadata(&path).unwrap();
                assert!(
                    meta.is_file() || meta.is_dir(),
                    "after {after}, trusted state holds {}",
                    path.display()
                );
                assert!(
                    !path.ends_with("planted") && !path.ends_with("planted.repo"),
                    "after {after}: {}",
                    path.display()
                );
            }
        }
    };

    host.ok(&["vrpm", "t", "--", "-qa"]);
    check_host("vrpm -qa");
    checked(
        host.command(&["vyum", "t", "--", "-q", "-y", "install", "fx-lua", "fx-sh"])
            .env("SECRET", "HOST-SECRET-7d1f"),
    );
    check_host("vyum install");

    // Chain 3: what Lua starts gets no more than a confined scriptlet.
    for report in [
        "report-os-execute",
        "report-popen",
        "report-posix-exec",
        "report-shell",
    ] {
        let (results, lines) = read_report(&guest.join(report));
        for cap in ["CapEff:", "CapBnd:"] {
            let caps = mask(&lines, cap);
            assert_eq!(
                caps & (CAP_SYS_CHROOT | CAP_SYS_ADMIN | CAP_SYS_PTRACE),
                0,
                "{report}: {cap} {caps:x}"
            );
        }
        assert_eq!(
            results["chroot:/.escape"],
            libc::EPERM,
            "{report}: {results:?}"
        );
        assert_eq!(results["mount:tmpfs"], libc::EPERM, "{report}: {results:?}");
        for target in &targets {
            for check in ["truncate", "create", "symlink"] {
                let errno = results[&format!("{check}:{target}")];
                assert_ne!(errno, 0, "{report}: {check} {target} worked");
            }
        }
        // Chain 4: nothing of the administrator's or the operation's environment.
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("HOST-SECRET") || l.starts_with("env VSERVER_")),
            "{report}: {lines:?}"
        );
    }
    let env = std::fs::read_to_string(guest.join("scriptlet-env")).unwrap();
    assert!(
        !env.contains("SECRET") && !env.contains("VSERVER_"),
        "{env}"
    );
    // The state the scripts could have written (dnf's, through a path they learnt) got nothing.
    assert!(!pkg.join("yum/lib/planted").exists());

    host.ok(&["vrpm", "t", "--", "-Va"]);
    check_host("vrpm -Va");
    host.ok(&["vyum", "t", "--", "-q", "clean", "all"]);
    check_host("vyum clean all");
    // Chain 2: internalize copies the package state into the guest. The guest's planted links
    // at the places it writes make it refuse; without them it copies, and follows nothing.
    // Where internalize writes, links to the host: absolute, `..` and a loop.
    let depth = guest.components().count() - 1;
    let dotdots = "../".repeat(depth + 2);
    for (link, target) in [
        ("var/lib/rpm", canary.display().to_string()),
        ("var/lib/dnf", format!("{dotdots}{}", canary.display())),
        ("etc/yum.repos.d", canary.display().to_string()),
        ("etc/dnf", "../etc/dnf".to_owned()),
        ("etc/rpm", canary.join("etc").display().to_string()),
    ] {
        let path = guest.join(link);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, &path).unwrap();
    }
    let refused = host.vserver(&["t", "pkgmgmt", "internalize"]);
    assert!(!refused.status.success());
    check_host("refused internalize");
    for link in [
        "var/lib/rpm",
        "var/lib/dnf",
        "etc/yum.repos.d",
        "etc/dnf",
        "etc/rpm",
    ] {
        std::fs::remove_file(guest.join(link)).unwrap();
    }
    host.ok(&["t", "pkgmgmt", "internalize"]);
    check_host("pkgmgmt internalize");
    assert!(guest.join("var/lib/rpm").is_dir());
    host.ok(&["t", "pkgmgmt", "externalize"]);
    check_host("pkgmgmt externalize");
    host.ok(&["vrpm", "t", "--", "-q", "fx-lua"]);
    check_host("vrpm -q");
    // A rebuild over the compromised guest, its links planted again in the guest and the state.
    for (link, target) in [
        ("etc/dnf", canary.display().to_string()),
        ("var/lib/dnf", canary.display().to_string()),
    ] {
        let path = guest.join(link);
        let _ = std::fs::remove_dir_all(&path);
        std::os::unix::fs::symlink(target, &path).unwrap();
    }
    std::os::unix::fs::symlink(&victim, pkg.join("yum/etc/yum.repos.d/zz.repo")).unwrap();
    std::os::unix::fs::symlink(&canary, pkg.join("yum/cache/again")).unwrap();
    host.ok(&["t", "build", "--force", "-m", "yum", "--", "-d", "fixture"]);
    check_host("build --force");
    host.ok(&["t", "delete", "--yes"]);
    assert_eq!(
        snapshot(&canary),
        canary_before,
        "canary changed after delete"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), victim_before);
}
