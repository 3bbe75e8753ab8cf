//! What the CLI integration tests share: skipping with a reason, where guests are made, and a
//! `vrepo serve` child on an ephemeral loopback port.

// Each test binary uses its own subset of these.
#![allow(dead_code)]

pub mod debian_cache;
pub mod gpg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Where tests make their guests: on disk, outside /tmp and /var/tmp. Guests below /tmp work
/// too (the per-operation sandbox then shows the host's entries of /tmp again on its private
/// one); `guests_under_tmp.rs` and `signed_subset.rs` test that on purpose, with
/// [`TestHost::below_tmp`].
pub const WORK_BASE: &str = "/var/lib/vserver-tests";

/// Skips (returns false) with a printed reason, or panics under VSERVER_TEST_REQUIRE_ALL=1.
pub fn available(ok: bool, reason: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var_os("VSERVER_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("required by VSERVER_TEST_REQUIRE_ALL=1 but unavailable: {reason}");
    }
    eprintln!("skipped: {reason}");
    false
}

/// Whether we run as root (the owner of our own /proc entry is our effective uid).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Runs a command to completion.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn checked(command: &mut Command) -> String {
    let output = run(command);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Kills the child if the test ends (or fails) before it is stopped otherwise.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vrepo serve DIR` on an ephemeral loopback port; returns the child and its base URL.
pub fn serve(dir: &Path) -> (KillOnDrop, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vserver"))
        .args(["vrepo", "serve", "--quiet", "--listen", "127.0.0.1:0"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"))
        .trim_end_matches('/')
        .to_owned();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut rest = String::new();
        while stderr.read_line(&mut rest).is_ok_and(|n| n > 0) {
            rest.clear();
        }
    });
    (KillOnDrop(child), url)
}

/// The rpm plugin library cargo built for this test (a dev-dependency), if any.
pub fn built_plugin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let deps = exe.parent()?;
    [deps.to_path_buf(), deps.parent()?.to_path_buf()]
        .into_iter()
        .map(|dir| dir.join("libvserver_rpm_plugin.so"))
        .find(|p| p.is_file())
}

/// Every file below `dir` with its content (symlinks as their target), sorted: a canary to
/// compare before and after something hostile ran.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&current)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path.clone());
                out.push((path, b"<dir>".to_vec()));
            } else if meta.is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push((path, target.as_os_str().as_encoded_bytes().to_vec()));
            } else if meta.is_file() {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            } else {
                out.push((path, b"<other>".to_vec()));
            }
        }
    }
    out.sort();
    out
}

/// Asserts what every build method leaves: the guest root and its standard directories are
/// root's, with the usual modes.
pub fn assert_root_modes(root: &Path) {
    use std::os::unix::fs::MetadataExt;
    for (path, mode) in [
        ("", 0o755),
        ("tmp", 0o1777),
        ("var/tmp", 0o1777),
        ("root", 0o700),
    ] {
        let meta = std::fs::symlink_metadata(root.join(path)).unwrap();
        assert!(meta.is_dir(), "/{path}");
        assert_eq!((meta.uid(), meta.gid()), (0, 0), "owner of /{path}");
        assert_eq!(
            meta.mode() & 0o7777,
            mode,
            "mode of /{path}: {:o}",
            meta.mode()
        );
    }
}

/// What the RPM guest tests need — root, rpm, dnf, a static busybox and the built plugin — or
/// `None` after saying why the test is skipped (a failure under VSERVER_TEST_REQUIRE_ALL=1).
pub fn rpm_guest_prerequisites() -> Option<PathBuf> {
    let tools = ["/usr/bin/rpm", "/usr/bin/dnf", "/bin/busybox"]
        .iter()
        .all(|t| Path::new(t).exists());
    let plugin = built_plugin();
    let ready = available(is_root(), "needs root")
        && available(tools, "needs rpm, dnf and busybox-static")
        && available(plugin.is_some(), "the rpm plugin library was not built");
    plugin.filter(|_| ready)
}

/// A fresh directory for one test's host roots under [`WORK_BASE`] (on disk, wherever the
/// checkout is).
pub fn work_dir(prefix: &str) -> tempfile::TempDir {
    std::fs::create_dir_all(WORK_BASE).unwrap();
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(WORK_BASE)
        .unwrap()
}

/// Host roots (configuration, guest roots, package state, run records) below a fresh work
/// directory, and the `vserver` binary pointed at them with the built rpm plugin.
pub struct TestHost {
    _tmp: tempfile::TempDir,
    /// The work directory.
    pub dir: PathBuf,
}

impl TestHost {
    /// Roots below a new [`work_dir`] named after `prefix`.
    pub fn new(prefix: &str) -> TestHost {
        let tmp = work_dir(prefix);
        TestHost {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        }
    }

    /// Roots below a new directory in /tmp named after `prefix`: guests under /tmp.
    pub fn below_tmp(prefix: &str) -> TestHost {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .unwrap();
        TestHost {
            dir: tmp.path().to_path_buf(),
            _tmp: tmp,
        }
    }

    /// `vserver ARGS` with this host's roots.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vserver"));
        command
            .args(args)
            .env("VSERVER_CONFDIR", self.dir.join("etc"))
            .env("VSERVER_ROOTDIR", self.dir.join("vservers"))
            .env("VSERVER_PKGDIR", self.dir.join("vservers/.pkg"))
            .env("VSERVER_RUNDIR", self.dir.join("run"))
            .env_remove("VSERVER_OPERATION_TIME_LIMIT")
            .env_remove("VSERVER_TEST_FAIL_AT_STEP");
        if let Some(plugin) = built_plugin() {
            command.env("VSERVER_RPM_PLUGIN", plugin);
        }
        command
    }

    /// The packages of RPM guest `guest` (`NAME-VERSION-RELEASE.ARCH`), sorted.
    pub fn rpm_packages(&self, guest: &str) -> Vec<String> {
        let mut lines: Vec<String> = self
            .ok(&["vrpm", guest, "--", "-qa", "--qf", "%{NVRA}\n"])
            .lines()
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    /// Runs `vserver ARGS` to completion.
    pub fn vserver(&self, args: &[&str]) -> Output {
        run(&mut self.command(args))
    }

    /// Runs `vserver ARGS` with extra environment variables.
    pub fn vserver_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        run(self.command(args).envs(env.iter().copied()))
    }

    /// Runs `vserver ARGS`, which must succeed; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        checked(&mut self.command(args))
    }

    /// A host with the distribution `fixture` registered from a generated RPM repository of
    /// `count` packages (shell scriptlets, busybox as the shell package) whose guests get `pkgs`;
    /// `None` after saying why the test is skipped.
    pub fn with_rpm_fixture(prefix: &str, seed: u64, count: usize, pkgs: &str) -> Option<TestHost> {
        rpm_guest_prerequisites()?;
        let host = TestHost::new(prefix);
        let repo = host.dir.join("repo");
        vserver_fixtures::write_rpm_set_with_busybox(
            &repo,
            &vserver_fixtures::RpmSetOptions {
                seed,
                count,
                files_per_package: 4,
                scriptlets: vserver_fixtures::Scriptlets::Shell,
                ..vserver_fixtures::RpmSetOptions::default()
            },
            Path::new("/bin/busybox"),
        )
        .unwrap();
        host.register_fixture(&repo, pkgs);
        Some(host)
    }

    /// Indexes the RPM repository `repo` and registers it as the distribution `fixture`, whose
    /// guests get `pkgs` (a space-separated list).
    pub fn register_fixture(&self, repo: &Path, pkgs: &str) {
        self.ok(&["vrepo", "index", "-q", &repo.display().to_string()]);
        self.ok(&[
            "vdistro",
            "add",
            "fixture",
            "--releasever",
            "1",
            "--repo",
            &format!("fx=file://{}/", repo.display()),
            "--pkgs",
            pkgs,
        ]);
    }
}
