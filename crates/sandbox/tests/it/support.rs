//! Shared helpers: skipping, canary trees, mount tables.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// How a test ended without panicking.
pub enum Outcome {
    Passed,
    Skipped(String),
}

/// A registered test.
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> Outcome,
}

/// Declares a list of tests: `tests![a, b]` makes `pub fn tests() -> Vec<Test>`.
#[macro_export]
macro_rules! tests {
    ($($name:ident),* $(,)?) => {
        pub fn tests() -> Vec<$crate::support::Test> {
            vec![$($crate::support::Test {
                name: concat!(module_path!(), "::", stringify!($name)).trim_start_matches("it::"),
                run: $name,
            }),*]
        }
    };
}

/// Skips (or, with `VSERVER_TEST_REQUIRE_ALL=1`, fails) unless `ok`.
pub fn require(ok: bool, reason: &str) -> Result<(), Outcome> {
    if ok {
        return Ok(());
    }
    if std::env::var_os("VSERVER_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("required by VSERVER_TEST_REQUIRE_ALL=1 but unavailable: {reason}");
    }
    Err(Outcome::Skipped(reason.to_string()))
}

pub fn require_root() -> Result<(), Outcome> {
    require(rustix::process::geteuid().is_root(), "needs root")
}

/// Runs a test body that may skip early with `?`.
pub fn run(body: impl FnOnce() -> Result<(), Outcome>) -> Outcome {
    match body() {
        Ok(()) => Outcome::Passed,
        Err(outcome) => outcome,
    }
}

/// A host directory tree that must not change, plus a guest root beside it.
pub struct World {
    /// Keeps the directory alive; removed on drop.
    pub _temp: tempfile::TempDir,
    pub host: PathBuf,
    pub guest: PathBuf,
    canary_before: BTreeMap<PathBuf, String>,
    mounts_before: Vec<String>,
}

impl World {
    pub fn new() -> World {
        let temp = tempfile::Builder::new()
            .prefix("vserver-sandbox-it")
            .tempdir()
            .unwrap();
        let host = temp.path().join("host");
        let guest = temp.path().join("guest");
        fs::create_dir_all(host.join("etc")).unwrap();
        fs::create_dir_all(host.join("data/deep")).unwrap();
        fs::write(host.join("etc/passwd"), "root:x:0:0:host:/root:/bin/sh\n").unwrap();
        fs::write(host.join("secret"), "host secret\n").unwrap();
        fs::set_permissions(
            host.join("secret"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        fs::write(host.join("data/deep/file"), "deep\n").unwrap();
        std::os::unix::fs::symlink("../etc/passwd", host.join("data/link")).unwrap();
        fs::create_dir_all(guest.join("etc")).unwrap();
        fs::write(guest.join("etc/passwd"), "root:x:0:0:guest:/root:/bin/sh\n").unwrap();
        let canary_before = digest_tree(&host);
        World {
            _temp: temp,
            host,
            guest,
            canary_before,
            mounts_before: mount_table(),
        }
    }

    /// Asserts the host canary tree and the mount table are exactly as at the start.
    pub fn assert_host_unchanged(&self) {
        let now = digest_tree(&self.host);
        assert_eq!(self.canary_before, now, "host canary tree changed");
        assert_eq!(
            self.mounts_before,
            mount_table(),
            "host mount table changed"
        );
    }
}

/// Every entry under `root` with its type, mode, owner and content (or link target) hashed.
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
        out.insert(
            path.strip_prefix(root).unwrap().to_path_buf(),
            hex(&hasher.finalize()),
        );
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The host's mount table as mount point + options (IDs change and are left out).
pub fn mount_table() -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| line.split(' ').skip(3).collect::<Vec<_>>().join(" "))
        .collect();
    lines.sort();
    lines
}

/// Asserts that `result` failed with exactly `errno`.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(result: vserver_sandbox::Result<T>, errno: i32) {
    match result {
        Ok(value) => panic!("expected errno {errno}, got success: {value:?}"),
        Err(error) => assert_eq!(error.errno(), Some(errno), "wrong error: {error:?}"),
    }
}
