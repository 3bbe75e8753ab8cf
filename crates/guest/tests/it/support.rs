//! Shared helpers: skipping, temporary host roots, the fixture repository, canaries.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use vserver_fixtures::{RpmPackage, RpmSetOptions, Scriptlets};
use vserver_guest::{BuildMethod, BuildRequest, HostRoots, NewDistribution};
use vserver_pkgmgmt::{RpmBackend, Tool};

pub enum Outcome {
    Passed,
    Skipped(String),
}

#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        pub fn tests() -> Vec<(&'static str, fn() -> $crate::support::Outcome)> {
            vec![$((concat!(module_path!(), "::", stringify!($name)).trim_start_matches("it::"),
                    $name as fn() -> $crate::support::Outcome)),*]
        }
    };
}

pub fn require(ok: bool, reason: &str) -> Result<(), Outcome> {
    if ok {
        return Ok(());
    }
    if std::env::var_os("VSERVER_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("required by VSERVER_TEST_REQUIRE_ALL=1 but unavailable: {reason}");
    }
    Err(Outcome::Skipped(reason.to_string()))
}

/// Root, rpm, dnf, createrepo_c, busybox and the plugin.
pub fn require_tools() -> Result<(), Outcome> {
    require(rustix::process::geteuid().is_root(), "needs root")?;
    for tool in [
        "/usr/bin/rpm",
        "/usr/bin/dnf",
        "/usr/bin/createrepo_c",
        "/bin/busybox",
    ] {
        require(Path::new(tool).exists(), &format!("needs {tool}"))?;
    }
    plugin();
    Ok(())
}

pub fn run(body: impl FnOnce() -> Result<(), Outcome>) -> Outcome {
    match body() {
        Ok(()) => Outcome::Passed,
        Err(outcome) => outcome,
    }
}

/// The plugin library: built as this test's dev-dependency (cargo builds both crate types), so
/// it lies in `target/debug/deps` beside this binary.
pub fn plugin() -> PathBuf {
    static PLUGIN: OnceLock<PathBuf> = OnceLock::new();
    PLUGIN
        .get_or_init(|| vserver_pkgmgmt::find_rpm_plugin().expect("the rpm plugin is built"))
        .clone()
}

/// A temporary world: host roots, a canary tree that must not change.
pub struct World {
    pub temp: tempfile::TempDir,
    pub roots: HostRoots,
    pub canary: PathBuf,
    canary_before: BTreeMap<PathBuf, String>,
}

impl World {
    pub fn new() -> World {
        let temp = tempfile::Builder::new()
            .prefix("vserver-guest-it")
            .tempdir()
            .unwrap();
        let base = temp.path().canonicalize().unwrap();
        let roots = HostRoots::resolve(
            Some(base.join("etc-vservers")),
            Some(base.join("vservers")),
            Some(base.join("vservers/.pkg")),
        );
        let canary = base.join("host-canary");
        fs::create_dir_all(canary.join("etc")).unwrap();
        fs::write(canary.join("etc/passwd"), "root:x:0:0:host:/root:/bin/sh\n").unwrap();
        fs::write(canary.join("secret"), "host secret\n").unwrap();
        let canary_before = digest_tree(&canary);
        World {
            temp,
            roots,
            canary,
            canary_before,
        }
    }

    pub fn assert_host_unchanged(&self) {
        assert_eq!(
            self.canary_before,
            digest_tree(&self.canary),
            "host canary changed"
        );
    }

    /// Registers the fixture repository as distribution `fixture` with `lists`.
    pub fn register_fixture(&self, lists: &[&str]) {
        let store = vserver_guest::DistributionStore::new(self.roots.distributions_dir());
        store
            .add(&NewDistribution {
                name: "fixture".into(),
                description: "generated packages".into(),
                releasever: "1".into(),
                arch: String::new(),
                repos: vec![("fx".into(), format!("file://{}", fixture_repo().display()))],
                gpgcheck: false,
                package_lists: lists
                    .iter()
                    .map(|l| l.split_whitespace().map(String::from).collect())
                    .collect(),
                macros: "%_install_langs C\n".into(),
                pubkeys: Vec::new(),
                force: false,
                ..NewDistribution::default()
            })
            .unwrap();
    }

    pub fn request(&self, guest: &str, method: BuildMethod) -> BuildRequest {
        BuildRequest {
            guest: guest.into(),
            method,
            distribution: Some("fixture".into()),
            releasever: None,
            hostname: None,
            force: false,
            keep: false,
            packages: Vec::new(),
            rpm_files: Vec::new(),
            verbose: false,
            apt_mirror: None,
            source: None,
        }
    }

    pub fn build(
        &self,
        request: &BuildRequest,
    ) -> vserver_guest::Result<vserver_guest::GuestConfig> {
        vserver_guest::build(&self.roots, request, &mut |_| {})
    }

    pub fn backend(&self, guest: &str) -> RpmBackend {
        let config = vserver_guest::load_guest(&self.roots, guest).unwrap();
        vserver_guest::open_backend(&self.roots, &config, false).unwrap()
    }

    pub fn root(&self, guest: &str) -> PathBuf {
        self.roots.rootdir.join(guest)
    }
}

/// Runs a tool on a guest and returns (exit code, stdout, stderr).
pub fn tool(backend: &RpmBackend, tool: Tool, args: &[&str]) -> (i32, String, String) {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let (status, out, err) = backend.run_tool_captured(tool, &args).unwrap();
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Host path the hostile scriptlets try to write to.
pub const HOST_TARGET_NAME: &str = "owned-by-guest";

/// The fixture repository, made once: a busybox shell, five generated packages with shell
/// scriptlets, a probe whose scriptlet records what it sees, a package with netshared files,
/// and one whose scriptlet tries to write to the host.
pub fn fixture_repo() -> PathBuf {
    static REPO: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    REPO.get_or_init(|| {
        let temp = tempfile::Builder::new()
            .prefix("vserver-guest-repo")
            .tempdir()
            .unwrap();
        let repo = temp.path().canonicalize().unwrap().join("repo");
        let options = RpmSetOptions {
            count: 5,
            scriptlets: Scriptlets::Shell,
            ..RpmSetOptions::default()
        };
        vserver_fixtures::write_rpm_set(&repo, &options).unwrap();
        let mut probe = RpmPackage::new("probe", "1.0");
        probe
            .release("1")
            .requires_pre("fx-shell")
            .file("/usr/share/probe/README", b"probe\n".to_vec(), 0o644)
            .post_install(
                "ls -A /.rpmdb > /var/tmp/probe-rpmdb.txt 2>&1\n\
                 grep -E '^(NoNewPrivs|CapEff)' /proc/self/status > /var/tmp/probe-status.txt\n\
                 touch /var/tmp/probe-post-ran\n",
            )
            .post_uninstall("touch /var/tmp/probe-postun-ran\n");
        probe.write_to(&repo).unwrap();
        let mut netshared = RpmPackage::new("netshared", "1.0");
        netshared
            .release("1")
            .file(
                "/etc/rc.d/init.d/halt",
                b"#!/bin/sh\nhalt the host\n".to_vec(),
                0o755,
            )
            .file("/sbin/new-kernel-pkg", b"#!/bin/sh\n".to_vec(), 0o755)
            .file("/usr/share/netshared/kept", b"kept\n".to_vec(), 0o644);
        netshared.write_to(&repo).unwrap();
        let host_target = std::env::temp_dir().join(HOST_TARGET_NAME);
        let mut escape = RpmPackage::new("escape", "1.0");
        escape
            .release("1")
            .requires_pre("fx-shell")
            .file("/usr/share/escape/README", b"escape\n".to_vec(), 0o644)
            .post_install(format!(
                "echo pwned > {0} 2>/dev/null\n\
                 echo pwned > /../../../../{0} 2>/dev/null\n\
                 mkdir /escape-dir; chroot /escape-dir 2>/dev/null\n\
                 touch /var/tmp/escape-post-ran\n",
                host_target.display()
            ));
        escape.write_to(&repo).unwrap();
        let status = std::process::Command::new("createrepo_c")
            .args(["--quiet", "--no-database"])
            .arg(&repo)
            .status()
            .unwrap();
        assert!(status.success());
        (temp, repo)
    })
    .1
    .clone()
}

/// Every entry under `root` with type, mode, owner and content hashed.
pub fn digest_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let mut hasher = Sha256::new();
        hasher.update(format!("{:o} {} {} ", meta.mode(), meta.uid(), meta.gid()));
        if meta.file_type().is_symlink() {
            hasher.update(fs::read_link(&path).unwrap().as_os_str().as_encoded_bytes());
        } else if meta.is_file() {
            hasher.update(fs::read(&path).unwrap());
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.insert(path.strip_prefix(root).unwrap().to_path_buf(), digest);
    }
    out
}

/// Asserts the guest holds no rpm database and no dnf state.
pub fn assert_no_package_state_in_guest(root: &Path) {
    assert_eq!(
        fs::read_dir(root.join(".rpmdb")).unwrap().count(),
        0,
        "/.rpmdb not empty"
    );
    for path in [
        "var/lib/rpm",
        "var/lib/dnf",
        "var/cache/dnf",
        "var/log/dnf.log",
        "var/log/dnf.rpm.log",
        "etc/dnf",
        "var/log/hawkey.log",
    ] {
        assert!(!root.join(path).exists(), "{path} exists in the guest");
    }
    // No stray copies of host paths (dnf prefixing its options with the install root).
    for entry in fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            ![
                "tmp",
                "var",
                "etc",
                "usr",
                "bin",
                "dev",
                "proc",
                "sys",
                "root",
                ".rpmdb",
                "sbin",
                "lib",
                "lib64",
                "escape-dir",
                "opt"
            ]
            .iter()
            .all(|n| *n != name),
            "unexpected top-level entry {name:?} in the guest"
        );
    }
    let tmp: Vec<_> = fs::read_dir(root.join("tmp"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(tmp.is_empty(), "guest /tmp holds {tmp:?}");
}

/// A test's name and body.
pub type NamedTest = (&'static str, fn() -> Outcome);

/// Makes sure the rpm plugin exists for the builds: cargo normally built it beside this binary
/// (it is a dev-dependency, and cargo builds every crate type of a dependency). If it is not
/// there, build it into a target directory of its own (the running `cargo test` holds the lock
/// of ours) and run this binary again with `VSERVER_RPM_PLUGIN` naming it — re-executing keeps
/// the environment change out of a running process.
pub fn ensure_plugin_then_reexec() {
    if std::env::var_os(vserver_pkgmgmt::PLUGIN_ENV).is_some()
        || vserver_pkgmgmt::find_rpm_plugin().is_ok()
    {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().join("rpm-plugin-for-tests");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let status = std::process::Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .args([
            "build",
            "--quiet",
            "-p",
            "vserver-rpm-plugin",
            "--manifest-path",
        ])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo to build the rpm plugin");
    assert!(status.success(), "cannot build the rpm plugin");
    let plugin = target.join("debug").join(vserver_pkgmgmt::PLUGIN_FILE_NAME);
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(vserver_pkgmgmt::PLUGIN_ENV, plugin)
        .status()
        .unwrap();
    std::process::exit(status.code().unwrap_or(101));
}
