//! Killing a package command kills its whole operation (issue 14, item 4): `vyum` is SIGKILLed
//! while a `%post` scriptlet sleeps, on a stopped guest and on a running one whose init is
//! busybox `sleep` (an init that never reaps), and then its whole process group is (as
//! `kill -9 -PGID` or `timeout -s KILL` do). Afterwards no process of the operation may be
//! left — not the sandbox, not dnf, not the scriptlet, and not even a zombie in the guest's pid
//! namespace — its cgroup is gone, and the next `vyum` completes instead of waiting for ever on
//! the lock files dnf left behind ("Waiting for process with pid N to finish"), even lock files
//! that name a live process.
//!
//! A second test kills `vyum` at seeded random times (`VSERVER_TEST_SEED`), 20 trials, by
//! process or by process group, with the same checks after each.
//!
//! Needs root, rpm, dnf, a static busybox and a cgroup v2 tree; skips with a reason otherwise,
//! fails instead when VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestHost, available, rpm_guest_prerequisites};

/// How long the next `vyum` may take before the test calls it a hang.
const NEXT_OPERATION_LIMIT: Duration = Duration::from_secs(120);
/// How long the operation's processes may take to go after the kill.
const CLEAN_UP_LIMIT: Duration = Duration::from_secs(20);

/// One process as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Proc {
    pid: u32,
    parent: u32,
    state: char,
    start_time: u64,
    name: String,
}

fn process(pid: u32) -> Option<Proc> {
    let stat = fs::read(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let name = String::from_utf8_lossy(&stat[open + 1..close]).into_owned();
    let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Proc {
        pid,
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
        name,
    })
}

fn processes() -> Vec<Proc> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter_map(process)
        .collect()
}

/// `root` and every process below it, now.
fn tree(root: u32) -> BTreeSet<Proc> {
    let all = processes();
    let mut found = BTreeSet::new();
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        for p in all.iter().filter(|p| p.parent == pid || p.pid == root) {
            if found.insert(p.clone()) && p.pid != root {
                pending.push(p.pid);
            }
        }
    }
    found
}

/// Which of `before` still exist (the same pid with the same start time), zombies included.
fn still_there(before: &BTreeSet<Proc>) -> Vec<Proc> {
    before
        .iter()
        .filter_map(|p| process(p.pid).filter(|now| now.start_time == p.start_time))
        .collect()
}

/// Every process in the pid namespace `ns` (a `/proc/PID/ns/pid` link target), zombies
/// included, except `init`.
fn in_namespace(ns: &Path, init: u32) -> Vec<Proc> {
    processes()
        .into_iter()
        .filter(|p| p.pid != init)
        .filter(|p| fs::read_link(format!("/proc/{}/ns/pid", p.pid)).is_ok_and(|l| l == ns))
        .collect()
}

/// The sandbox cgroups below the v2 tree (`vserver-sandbox/*`).
fn sandbox_cgroups() -> Option<BTreeSet<PathBuf>> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let unified = mountinfo.lines().find_map(|l| {
        let fields: Vec<&str> = l.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        (fields.get(dash + 1) == Some(&"cgroup2")).then(|| PathBuf::from(fields[4]))
    })?;
    Some(
        fs::read_dir(unified.join("vserver-sandbox"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default(),
    )
}

/// Waits for `child` for at most `limit`; a hang is killed and fails the test.
fn wait_limited(mut child: Child, limit: Duration, what: &str) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what} hung for {limit:?}:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// How the test kills `vserver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kill {
    /// SIGKILL to the `vserver` process.
    Process,
    /// SIGKILL to its whole process group (`kill -9 -PGID`, `timeout -s KILL`).
    Group,
}

/// Starts `vyum g -- -y install PACKAGE` whose `%post` writes `marker` in the guest and then
/// sleeps; SIGKILLs `vserver` once the scriptlet runs. Returns what ran below `vserver` then.
fn kill_mid_scriptlet(host: &TestHost, package: &str, marker: &Path, how: Kill) -> BTreeSet<Proc> {
    let _ = fs::remove_file(marker);
    let mut child = host
        .command(&["vyum", "g", "--", "-y", "-q", "install", package])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !marker.exists() {
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "vyum ended ({}) before its scriptlet ran:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(Instant::now() < deadline, "the scriptlet never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let running = tree(child.id());
    match how {
        Kill::Process => child.kill().unwrap(),
        Kill::Group => {
            // kill(1): the test crate has no `unsafe` for kill(2).
            let status = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status()
                .unwrap();
            assert!(status.success());
        }
    }
    child.wait().unwrap();
    running
}

/// After a kill: nothing of `running` is left (zombies included), no sandbox cgroup of its
/// sandbox process (named after its pid), and nothing but `init` in the guest's pid namespace.
fn assert_nothing_survives(running: &BTreeSet<Proc>, guest: Option<(&Path, u32)>) {
    let deadline = Instant::now() + CLEAN_UP_LIMIT;
    let ours = |cgroup: &PathBuf| {
        let name = cgroup.file_name().unwrap_or_default().to_string_lossy();
        let pid = name.split('-').next().unwrap_or_default().to_owned();
        running.iter().any(|p| p.pid.to_string() == pid)
    };
    loop {
        let left = still_there(running);
        let cgroups: Vec<PathBuf> = sandbox_cgroups()
            .unwrap_or_default()
            .into_iter()
            .filter(ours)
            .collect();
        let in_guest = guest
            .map(|(ns, init)| in_namespace(ns, init))
            .unwrap_or_default();
        if left.is_empty() && cgroups.is_empty() && in_guest.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left after the kill: processes {left:#?}, cgroups {cgroups:?}, in the guest's pid \
             namespace {in_guest:#?} (the operation ran {running:#?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Plants dnf's lock files naming pid 1, which is alive wherever dnf looks (the sandbox's init,
/// or the guest's): as a dnf killed in the guest's pid namespace leaves them when its pid lives
/// on (a zombie under an init that does not reap, or a reused pid). Only our own clearing of
/// stale locks under the guest's operation lock lets the next dnf go on.
fn plant_stale_dnf_locks(host: &TestHost) {
    let state = host.dir.join("vservers/.pkg/g/yum");
    for (dir, name) in [
        ("lib", "rpmdb_lock.pid"),
        ("cache", "metadata_lock.pid"),
        ("cache", "download_lock.pid"),
    ] {
        fs::write(state.join(dir).join(name), "1").unwrap();
    }
}

/// The next `vyum` completes (within [`NEXT_OPERATION_LIMIT`]) and installs `package`.
fn next_vyum_completes(host: &TestHost, package: &str) {
    let child = host
        .command(&["vyum", "g", "--", "-y", "-q", "install", package])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_limited(child, NEXT_OPERATION_LIMIT, "the next vyum");
    assert!(
        out.status.success(),
        "the next vyum failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let query = host.ok(&["vrpm", "g", "--", "-q", "--qf", "%{NAME}\n", package]);
    assert_eq!(query, format!("{package}\n"));
}

/// Stops guest `g` when the test ends, however it ends.
struct StopOnDrop<'a>(&'a TestHost);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .command(&["g", "stop", "--timeout", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn killing_vyum_kills_its_whole_operation() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    if sandbox_cgroups().is_none() {
        available(false, "needs a cgroup v2 tree (the sandbox's own cgroup)");
        return;
    }
    let host = TestHost::new("vserver-cli-kill");
    let repo = host.dir.join("repo");
    vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    // A unique argument to find the scriptlet's sleep by, and packages whose %post sleeps.
    let sleep_arg = format!("{}", 300_000 + std::process::id());
    for name in [
        "slow-stopped",
        "slow-running",
        "slow-group",
        "after-stopped",
        "after-running",
        "after-group",
    ] {
        let mut package = vserver_fixtures::RpmPackage::new(name, "1.0");
        package
            .release("1")
            .file(format!("/usr/share/{name}/README"), b"x\n".to_vec(), 0o644);
        if name.starts_with("slow-") {
            package.post_install(format!(
                "echo started > /var/tmp/{name}\n/bin/busybox sleep {sleep_arg}\n"
            ));
        }
        package.write_to(&repo).unwrap();
    }
    host.register_fixture(&repo, "fx-shell");
    host.ok(&["g", "build", "-m", "yum", "--", "-d", "fixture"]);
    let root = host.dir.join("vservers/g");
    fs::create_dir_all(root.join("var/tmp")).unwrap();

    // A stopped guest: the operation has a pid namespace of its own.
    let running = kill_mid_scriptlet(
        &host,
        "slow-stopped",
        &root.join("var/tmp/slow-stopped"),
        Kill::Process,
    );
    assert_nothing_survives(&running, None);
    plant_stale_dnf_locks(&host);
    next_vyum_completes(&host, "after-stopped");

    // A running guest whose init never reaps: the operation runs in the guest's pid namespace.
    let config = host.dir.join("etc/g/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("init = [\"/bin/busybox\", \"sleep\", \"1000000\"]\nstop_timeout = 1\n{text}"),
    )
    .unwrap();
    host.ok(&["g", "start"]);
    let _stop = StopOnDrop(&host);
    let status = host.ok(&["g", "status", "--json"]);
    let init: u32 = status
        .split("\"pid\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {status}"));
    let ns = fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    let running = kill_mid_scriptlet(
        &host,
        "slow-running",
        &root.join("var/tmp/slow-running"),
        Kill::Process,
    );
    assert_nothing_survives(&running, Some((&ns, init)));
    plant_stale_dnf_locks(&host);
    next_vyum_completes(&host, "after-running");
    assert_eq!(in_namespace(&ns, init), Vec::new(), "left by the next vyum");

    // The whole process group killed at once: no process of ours is left to reap, but the
    // guardian (a process group of its own) still kills the cgroup, and the next vyum goes on.
    let running = kill_mid_scriptlet(
        &host,
        "slow-group",
        &root.join("var/tmp/slow-group"),
        Kill::Group,
    );
    assert_nothing_survives(&running, Some((&ns, init)));
    plant_stale_dnf_locks(&host);
    next_vyum_completes(&host, "after-group");
    host.ok(&["g", "stop"]);
    host.ok(&["g", "delete", "--yes"]);
}

/// The trials of [`vyum_killed_at_random_times_on_a_running_guest`].
const RANDOM_TRIALS: usize = 20;

/// A small deterministic generator (64-bit LCG) for the kill times.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}

/// `vyum install` killed at a random time (seeded: `VSERVER_TEST_SEED`, printed) on a running
/// guest whose init never reaps, [`RANDOM_TRIALS`] times, by process or by process group: each
/// time nothing of the operation is left, and the next `vyum` completes.
#[test]
fn vyum_killed_at_random_times_on_a_running_guest() {
    if rpm_guest_prerequisites().is_none() {
        return;
    }
    if sandbox_cgroups().is_none() {
        available(false, "needs a cgroup v2 tree (the sandbox's own cgroup)");
        return;
    }
    let seed = std::env::var("VSERVER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14_004);
    println!("seed {seed} (VSERVER_TEST_SEED)");
    let mut random = Lcg(seed);
    let host = TestHost::new("vserver-cli-kill-random");
    let repo = host.dir.join("repo");
    vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    for i in 0..RANDOM_TRIALS {
        for (name, post) in [
            (format!("killed-{i}"), Some("/bin/busybox sleep 1\n")),
            (format!("next-{i}"), None),
        ] {
            let mut package = vserver_fixtures::RpmPackage::new(name.as_str(), "1.0");
            package
                .release("1")
                .file(format!("/usr/share/{name}/README"), b"x\n".to_vec(), 0o644);
            if let Some(post) = post {
                package.post_install(post);
            }
            package.write_to(&repo).unwrap();
        }
    }
    host.register_fixture(&repo, "fx-shell");
    host.ok(&["g", "build", "-m", "yum", "--", "-d", "fixture"]);
    let config = host.dir.join("etc/g/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("init = [\"/bin/busybox\", \"sleep\", \"1000000\"]\nstop_timeout = 1\n{text}"),
    )
    .unwrap();
    host.ok(&["g", "start"]);
    let _stop = StopOnDrop(&host);
    let status = host.ok(&["g", "status", "--json"]);
    let init: u32 = status
        .split("\"pid\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {status}"));
    let ns = fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();

    let mut killed_running = 0;
    for i in 0..RANDOM_TRIALS {
        let delay = Duration::from_millis(random.below(1600));
        let how = if random.below(4) == 0 {
            Kill::Group
        } else {
            Kill::Process
        };
        let package = format!("killed-{i}");
        let mut child = host
            .command(&["vyum", "g", "--", "-y", "-q", "install", &package])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let running = tree(child.id());
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
            match how {
                Kill::Process => child.kill().unwrap(),
                Kill::Group => {
                    let status = std::process::Command::new("kill")
                        .args(["-KILL", "--", &format!("-{}", child.id())])
                        .status()
                        .unwrap();
                    assert!(status.success());
                }
            }
        }
        child.wait().unwrap();
        println!(
            "trial {i}: {how:?} after {delay:?}, {} processes then",
            running.len()
        );
        assert_nothing_survives(&running, Some((&ns, init)));
        next_vyum_completes(&host, &format!("next-{i}"));
    }
    println!("{killed_running} of {RANDOM_TRIALS} killed while running");
    assert_eq!(in_namespace(&ns, init), Vec::new());
}
