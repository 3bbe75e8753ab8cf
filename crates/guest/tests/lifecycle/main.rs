//! Integration tests for the guest lifecycle: `start`, `status`, `exec` (inside a running guest
//! and `--transient`), `stop`, `list`, `delete`, with real namespaces, cgroups and mounts.
//!
//! One binary with its own runner (`harness = false`): the lifecycle forks guest processes and
//! refuses to from a multi-threaded process, and the default test harness runs tests on threads.
//! Guests are skeletons with a static busybox copied in. Needs root and `/bin/busybox`; without
//! them each test skips with a reason, or fails when `VSERVER_TEST_REQUIRE_ALL=1` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vserver_guest::{
    BuildMethod, BuildRequest, HostRoots, LifecycleError, StartOptions, StopOptions,
};

enum Outcome {
    Passed,
    Skipped(String),
}

fn require(ok: bool, reason: &str) -> Result<(), Outcome> {
    if ok {
        return Ok(());
    }
    if std::env::var_os("VSERVER_TEST_REQUIRE_ALL").is_some_and(|v| v == "1") {
        panic!("required by VSERVER_TEST_REQUIRE_ALL=1 but unavailable: {reason}");
    }
    Err(Outcome::Skipped(reason.to_string()))
}

fn require_root_and_busybox() -> Result<(), Outcome> {
    require(rustix::process::geteuid().is_root(), "needs root")?;
    require(
        Path::new("/bin/busybox").exists(),
        "needs /bin/busybox (busybox-static)",
    )
}

/// Host roots and a run directory in a temporary directory.
struct World {
    _temp: tempfile::TempDir,
    base: PathBuf,
    roots: HostRoots,
    run_dir: PathBuf,
}

impl Drop for World {
    /// A test that fails half-way must not leave guests running once their roots are deleted
    /// (seen: an init loop spinning on a vanished `sleep`, a core busy for half an hour).
    fn drop(&mut self) {
        for name in vserver_guest::list_guests(&self.roots).unwrap_or_default() {
            let _ = vserver_guest::stop(
                &self.roots,
                &self.run_dir,
                &name,
                StopOptions {
                    timeout: Some(Duration::from_secs(1)),
                    ..StopOptions::default()
                },
            );
        }
    }
}

impl World {
    fn new() -> World {
        let temp = tempfile::tempdir().unwrap();
        let base = temp.path().to_path_buf();
        let roots = HostRoots {
            confdir: base.join("etc"),
            rootdir: base.join("vservers"),
            pkgdir: base.join("vservers/.pkg"),
        };
        World {
            run_dir: base.join("run"),
            base,
            roots,
            _temp: temp,
        }
    }

    /// A skeleton guest with a static busybox as `/bin/busybox` and `/bin/sh`.
    fn guest(&self, name: &str) -> PathBuf {
        let request = BuildRequest {
            guest: name.to_string(),
            method: BuildMethod::Skeleton,
            distribution: None,
            releasever: None,
            hostname: Some(format!("{name}.test")),
            force: false,
            keep: false,
            packages: Vec::new(),
            rpm_files: Vec::new(),
            verbose: false,
            apt_mirror: None,
            source: None,
        };
        let config = vserver_guest::build(&self.roots, &request, &mut |_| {}).unwrap();
        let bin = config.root.join("bin");
        let bin = if bin.is_symlink() {
            config.root.join("usr/bin")
        } else {
            bin
        };
        fs::create_dir_all(&bin).unwrap();
        fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
        fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        for applet in [
            "sh", "sleep", "hostname", "cat", "ls", "readlink", "echo", "dd", "touch", "grep",
            "tr", "ip", "wc", "date", "kill",
        ] {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
        config.root
    }

    /// Starts the guest with [`sleeper`] and waits until its init has set its trap (it has then
    /// started its first `sleep`): a SIGTERM before that would be discarded, as pid 1 gets only
    /// the signals it handles, and `stop` would wait for its timeout.
    fn start(&self, name: &str) -> vserver_guest::Started {
        let started = vserver_guest::start(&self.roots, &self.run_dir, name, &sleeper()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let status = vserver_guest::status(&self.roots, &self.run_dir, name).unwrap();
            if status.running.is_some_and(|r| r.processes >= 2) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        started
    }

    fn exec(&self, name: &str, script: &str, transient: bool) -> i32 {
        vserver_guest::exec(&self.roots, &self.run_dir, name, &sh(script), transient).unwrap()
    }

    fn stop(&self, name: &str) -> bool {
        vserver_guest::stop(
            &self.roots,
            &self.run_dir,
            name,
            StopOptions {
                timeout: Some(Duration::from_secs(5)),
                ..StopOptions::default()
            },
        )
        .unwrap()
    }

    /// Changes guest `name`'s `config.toml` through `change`.
    fn configure(&self, name: &str, change: impl FnOnce(&mut vserver_guest::GuestConfig)) {
        let mut config = vserver_guest::load_guest(&self.roots, name).unwrap();
        change(&mut config);
        config.save(&self.roots).unwrap();
        // It reads back the same (the new settings survive a round trip through the file).
        assert_eq!(
            vserver_guest::load_guest(&self.roots, name).unwrap(),
            config
        );
    }
}

fn sh(script: &str) -> Vec<OsString> {
    ["/bin/sh", "-c", script].map(OsString::from).to_vec()
}

/// An init that ends on SIGTERM (as pid 1 it gets only the signals it handles).
fn sleeper() -> StartOptions {
    StartOptions {
        init: sh("trap 'exit 0' TERM; while :; do sleep 1 & wait; done"),
        ..StartOptions::default()
    }
}

fn ns_link(pid: &str, kind: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

/// Mounts on the host whose mount point lies below `dir`.
fn host_mounts_below(dir: &Path) -> Vec<String> {
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.starts_with(&dir)))
        .map(str::to_string)
        .collect()
}

/// Waits until `/proc/PID` is gone or a zombie.
fn process_gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    false
}

fn transient_exec() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    let root = world.guest("tr");
    let code = world.exec(
        "tr",
        "{ hostname; echo $$; ls /; cat /proc/self/status | grep CapEff; } > /out; exit 7",
        true,
    );
    assert_eq!(code, 7);
    let out = fs::read_to_string(root.join("out")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "tr.test", "{out}");
    // The command is the child of the transient init, pid 1 of a fresh pid namespace.
    assert_eq!(lines[1], "2", "{out}");
    assert!(out.contains("out"), "sees the guest root as /: {out}");
    assert!(!out.contains(world.base.file_name().unwrap().to_str().unwrap()));
    let caps = lines.iter().find(|l| l.starts_with("CapEff")).unwrap();
    let caps = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(caps & (1 << 21), 0, "no CAP_SYS_ADMIN: {out}");
    // A missing program is the command's failure (127, as in a shell), not vserver's.
    let missing = vserver_guest::exec(
        &world.roots,
        &world.run_dir,
        "tr",
        &[OsString::from("/no/such/program")],
        true,
    )
    .unwrap();
    assert_eq!(missing, 127);
    // Exit by signal: 128 + signal number.
    assert_eq!(world.exec("tr", "kill -KILL $$", true), 128 + 9);
    // Nothing was left mounted on the host, and the host's hostname is untouched.
    assert!(host_mounts_below(&world.base).is_empty());
    assert_ne!(
        fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim(),
        "tr.test"
    );
    // A running guest refuses --transient; a stopped one refuses a plain exec.
    let err =
        vserver_guest::exec(&world.roots, &world.run_dir, "tr", &sh("true"), false).unwrap_err();
    assert!(matches!(err, LifecycleError::NotRunning { .. }), "{err}");
    Ok(())
}

fn start_exec_stop() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    let root = world.guest("web");
    let started = world.start("web");
    let pid = started.record.pid.to_string();

    // Separate namespaces, seen from the host.
    for kind in ["mnt", "pid", "uts", "ipc", "cgroup"] {
        assert_ne!(ns_link(&pid, kind), ns_link("self", kind), "{kind}");
    }
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroups.contains("/vserver/web"), "{cgroups}");
    for dir in &started.record.cgroups {
        assert!(dir.is_dir(), "{}", dir.display());
    }
    // Its mounts are in its own namespace only.
    assert!(host_mounts_below(&world.base).is_empty());
    let guest_mounts = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    for (mount_point, fstype) in [
        (" / ", ""),
        (" /proc ", " - proc "),
        (" /sys ", " - sysfs "),
        (" /dev ", " - tmpfs "),
        (" /dev/pts ", " - devpts "),
        (" /tmp ", " - tmpfs "),
    ] {
        let line = guest_mounts
            .lines()
            .find(|l| l.contains(mount_point) && l.contains(fstype))
            .unwrap_or_else(|| panic!("{mount_point}: {guest_mounts}"));
        let options = line.split(' ').nth(5).unwrap();
        if matches!(mount_point, " /proc " | " /sys ") {
            assert!(options.starts_with("ro,"), "{line}");
        }
        if mount_point != " / " {
            assert!(options.contains("nosuid"), "{line}");
        }
    }
    // /sys is read-only for the guest, and no kernel tunable can be written through it.
    assert_ne!(
        world.exec("web", "echo 1 > /sys/kernel/uevent_helper", false),
        0
    );
    assert!(!guest_mounts.contains(" /sys/fs/cgroup "), "{guest_mounts}");

    // Nothing the test binary inherited (cargo's jobserver pipes…) reaches the guest.
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"]);
    assert_eq!(world.exec("web", "ls /proc/self/fd > /fds", false), 0);
    let fds = fs::read_to_string(root.join("fds")).unwrap();
    assert!(
        fds.split_whitespace()
            .all(|fd| ["0", "1", "2", "3"].contains(&fd)),
        "{fds}"
    );

    let status = vserver_guest::status(&world.roots, &world.run_dir, "web").unwrap();
    assert_eq!(status.state, "running");
    let running = status.running.unwrap();
    assert_eq!(running.pid, started.record.pid);
    assert!(running.processes >= 1);

    // exec: output, exit status, and the command runs in the guest's namespaces and cgroup.
    let code = world.exec(
        "web",
        "{ hostname; readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt; cat /proc/1/cmdline | tr '\\0' ' '; echo; cat /proc/self/cgroup; } > /out; exit 3",
        false,
    );
    assert_eq!(code, 3);
    let out = fs::read_to_string(root.join("out")).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "web.test", "{out}");
    assert_eq!(Path::new(lines[1]), ns_link(&pid, "pid"), "{out}");
    assert_eq!(Path::new(lines[2]), ns_link(&pid, "mnt"), "{out}");
    assert!(
        lines[3].contains("trap"),
        "pid 1 is the guest's init: {out}"
    );
    // Inside its cgroup namespace the guest's cgroup is the root.
    assert!(
        out.contains("0::/\n") || out.lines().any(|l| l.ends_with(":/")),
        "{out}"
    );

    let err = vserver_guest::start(&world.roots, &world.run_dir, "web", &sleeper()).unwrap_err();
    assert!(
        matches!(err, LifecycleError::AlreadyRunning { .. }),
        "{err}"
    );

    assert!(world.stop("web"));
    assert!(process_gone(started.record.pid), "init still there");
    for dir in &started.record.cgroups {
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
    }
    assert!(host_mounts_below(&world.base).is_empty());
    assert!(!world.run_dir.join("web.toml").exists());
    let status = vserver_guest::status(&world.roots, &world.run_dir, "web").unwrap();
    assert_eq!(status.state, "stopped");
    assert!(!world.stop("web"), "a second stop has nothing to do");
    Ok(())
}

/// An init that ignores the stop signal is killed after the timeout, with everything it started.
fn stop_kills_stubborn_guest() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    world.guest("stubborn");
    let options = StartOptions {
        init: sh("trap '' TERM; sleep 1000 & sleep 1000 & while :; do sleep 1; done"),
        ..StartOptions::default()
    };
    let started = vserver_guest::start(&world.roots, &world.run_dir, "stubborn", &options).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = vserver_guest::status(&world.roots, &world.run_dir, "stubborn").unwrap();
    assert!(before.running.unwrap().processes >= 3);
    let begun = Instant::now();
    let stopped = vserver_guest::stop(
        &world.roots,
        &world.run_dir,
        "stubborn",
        StopOptions {
            timeout: Some(Duration::from_millis(300)),
            ..StopOptions::default()
        },
    )
    .unwrap();
    assert!(stopped);
    assert!(begun.elapsed() < Duration::from_secs(5));
    assert!(process_gone(started.record.pid));
    for dir in &started.record.cgroups {
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
    }
    Ok(())
}

/// A record whose pid now belongs to another process (here: this test) is stale: status says
/// stopped and stop signals nothing.
fn stale_record_is_never_signalled() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    world.guest("old");
    fs::create_dir_all(&world.run_dir).unwrap();
    let record = vserver_guest::RunRecord {
        guest: "old".into(),
        pid: std::process::id(),
        start_time: 1,
        started_at: 0,
        root: world.roots.rootdir.join("old"),
        cgroups: Vec::new(),
        unified_cgroup: None,
        init: None,
    };
    fs::write(
        world.run_dir.join("old.toml"),
        toml::to_string(&record).unwrap(),
    )
    .unwrap();
    let status = vserver_guest::status(&world.roots, &world.run_dir, "old").unwrap();
    assert_eq!(status.state, "stopped");
    // We are still alive after this (a signal to our pid would have ended the test binary).
    assert!(!world.stop("old"));
    assert!(
        !world.run_dir.join("old.toml").exists(),
        "stale record removed"
    );
    // And the guest starts normally afterwards.
    let started = world.start("old");
    assert!(world.stop("old"));
    assert!(process_gone(started.record.pid));
    Ok(())
}

fn list_guests() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    world.guest("a");
    world.guest("b");
    let started = world.start("b");
    let list = vserver_guest::list(&world.roots, &world.run_dir).unwrap();
    let states: Vec<(&str, &str)> = list.iter().map(|s| (s.guest.as_str(), s.state)).collect();
    assert_eq!(states, [("a", "stopped"), ("b", "running")]);
    assert_eq!(list[1].running.as_ref().unwrap().pid, started.record.pid);
    assert!(world.stop("b"));
    Ok(())
}

/// Snapshot of a host tree: path → content (or link target).
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let value = if meta.is_symlink() {
            format!("link {}", fs::read_link(&path).unwrap().display())
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            "dir".to_string()
        } else if meta.is_file() {
            fs::read_to_string(&path).unwrap_or_default()
        } else {
            // Device nodes (the skeleton's /dev) are never read: /dev/zero has no end.
            format!("special {:o}", meta.permissions().mode())
        };
        out.insert(path, value);
    }
    out
}

fn delete_with_planted_symlinks() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    let canary = world.base.join("canary");
    fs::create_dir_all(canary.join("sub")).unwrap();
    fs::write(canary.join("file"), "precious").unwrap();
    fs::write(canary.join("sub/deep"), "precious too").unwrap();
    let root = world.guest("evil");
    world.guest("neighbour");
    // What a hostile guest plants: links to the host everywhere delete walks.
    std::os::unix::fs::symlink(&canary, root.join("etc/host")).unwrap();
    std::os::unix::fs::symlink(canary.join("file"), root.join("file-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../", root.join("up")).unwrap();
    let pkg = world.roots.pkgdir.join("evil");
    fs::create_dir_all(&pkg).unwrap();
    std::os::unix::fs::symlink(&canary, pkg.join("state")).unwrap();
    // It is running when deleted.
    let started = world.start("evil");
    let canary_before = snapshot(&canary);
    let neighbour_before = snapshot(&world.roots.rootdir.join("neighbour"));

    vserver_guest::delete(&world.roots, &world.run_dir, "evil").unwrap();

    assert!(process_gone(started.record.pid));
    assert_eq!(snapshot(&canary), canary_before);
    assert_eq!(
        snapshot(&world.roots.rootdir.join("neighbour")),
        neighbour_before
    );
    assert!(!root.exists());
    assert!(!pkg.exists());
    assert!(!world.roots.confdir.join("evil").exists());
    assert!(world.roots.confdir.join("neighbour/config.toml").exists());
    for dir in &started.record.cgroups {
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
    }
    let err = vserver_guest::status(&world.roots, &world.run_dir, "evil").unwrap_err();
    assert!(err.to_string().contains("unknown guest"), "{err}");
    Ok(())
}

/// Memory and pids limits, enforced where the controllers exist (v2, or v1 on a hybrid host).
fn limits_enforced() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let support = vserver_sandbox::CgroupSupport::detect().unwrap();
    for controller in ["memory", "pids"] {
        require(
            support.unified_has(controller) || support.v1_hierarchy(controller).is_some(),
            &format!("no {controller} controller in the v2 tree or a v1 hierarchy"),
        )?;
    }
    let world = World::new();
    let root = world.guest("small");
    let options = StartOptions {
        init: sh("trap 'exit 0' TERM; while :; do sleep 1 & wait; done"),
        limits: vserver_guest::GuestLimits {
            memory: Some(16 << 20),
            pids: Some(8),
            cpu_millis: None,
        },
    };
    let started = vserver_guest::start(&world.roots, &world.run_dir, "small", &options).unwrap();
    assert!(started.notes.is_empty(), "{:?}", started.notes);
    // A 64 MiB buffer in a 16 MiB guest: the OOM killer ends it (SIGKILL: 128 + 9).
    assert_eq!(
        world.exec(
            "small",
            "dd if=/dev/zero of=/dev/null bs=64M count=1 2>/dev/null",
            false
        ),
        137
    );
    assert_eq!(
        world.exec(
            "small",
            "dd if=/dev/zero of=/dev/null bs=1M count=1 2>/dev/null",
            false
        ),
        0
    );
    // Twenty background sleeps under a limit of eight processes: forks fail, the shell says so.
    let code = world.exec(
        "small",
        "i=0; while [ $i -lt 20 ]; do sleep 2 & i=$((i+1)); done 2>/fork-errors; echo done",
        false,
    );
    assert_ne!(code, 0);
    let errors = fs::read_to_string(root.join("fork-errors")).unwrap_or_default();
    assert!(errors.contains("can't fork"), "{errors}");
    assert!(world.stop("small"));
    Ok(())
}

/// `enter` through a pseudo-terminal, driven by a script: the shell sees a terminal, runs the
/// lines, and its exit status comes back.
fn enter_through_pty() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    world.guest("tty");
    world.start("tty");
    let (reader, mut writer) = std::io::pipe().unwrap();
    std::io::Write::write_all(
        &mut writer,
        b"[ -t 0 ] && echo interactive-$((6*7)); hostname; exit 3\n",
    )
    .unwrap();
    drop(writer);
    let output = tempfile::tempfile().unwrap();
    use std::os::fd::AsFd;
    let code = vserver_guest::enter(
        &world.roots,
        &world.run_dir,
        "tty",
        &[OsString::from("/bin/sh")],
        reader.as_fd(),
        output.as_fd(),
    )
    .unwrap();
    assert_eq!(code, 3);
    let mut output = output;
    std::io::Seek::seek(&mut output, std::io::SeekFrom::Start(0)).unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut output, &mut text).unwrap();
    assert!(text.contains("interactive-42"), "{text:?}");
    assert!(text.contains("tty.test"), "{text:?}");
    assert!(world.stop("tty"));
    Ok(())
}

/// Interface names in the network namespace of `pid`, with their flags.
fn interfaces_of(pid: &str) -> BTreeMap<String, u32> {
    // /proc/PID/net/dev lists the interfaces of that process's network namespace.
    let dev = fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap();
    dev.lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(|name| (name.trim().to_string(), 0))
        .collect()
}

/// `net = "none"` (the default): a network namespace of its own with only loopback, up;
/// `net = "host"`: the host's.
fn network_none_and_host() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    let root = world.guest("net");
    let started = world.start("net");
    let pid = started.record.pid.to_string();
    assert_ne!(ns_link(&pid, "net"), ns_link("self", "net"));
    let interfaces: Vec<String> = interfaces_of(&pid).into_keys().collect();
    assert_eq!(interfaces, ["lo"]);
    // Up (IFF_UP), seen from inside through the guest's own /sys.
    assert_eq!(
        world.exec("net", "cat /sys/class/net/lo/flags > /flags", false),
        0
    );
    let flags = fs::read_to_string(root.join("flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "lo is up: {flags:#x}");
    // A command joining the guest is in that namespace too.
    assert_eq!(
        world.exec("net", "readlink /proc/self/ns/net > /netns", false),
        0
    );
    assert_eq!(
        Path::new(fs::read_to_string(root.join("netns")).unwrap().trim()),
        ns_link(&pid, "net")
    );
    assert!(world.stop("net"));

    world.configure("net", |c| c.net = vserver_guest::NetConfig::Host);
    let started = world.start("net");
    let pid = started.record.pid.to_string();
    assert_eq!(ns_link(&pid, "net"), ns_link("self", "net"));
    assert!(world.stop("net"));
    Ok(())
}

/// `net = { bridge = "…" }`: a veth pair, the guest's end `eth0` (up) in its namespace, the
/// host's end a port of the bridge; both gone after stop.
fn network_bridge() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    require(
        Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists(),
        "needs ip(8) from iproute2",
    )?;
    let bridge = format!("vstbr{}", std::process::id() % 100_000);
    let made = std::process::Command::new("ip")
        .args(["link", "add", &bridge, "type", "bridge"])
        .status()
        .is_ok_and(|s| s.success());
    require(
        made,
        &format!("cannot create bridge `{bridge}` (ip link add … type bridge)"),
    )?;
    struct Bridge(String);
    impl Drop for Bridge {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["link", "del", &self.0])
                .status();
        }
    }
    let _bridge = Bridge(bridge.clone());
    // The bridge is the guest's gateway, on a documentation-only network.
    let bridge_up = std::process::Command::new("ip")
        .args(["address", "add", "192.0.2.1/24", "dev", &bridge])
        .status()
        .is_ok_and(|s| s.success())
        && std::process::Command::new("ip")
            .args(["link", "set", &bridge, "up"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(bridge_up);
    let world = World::new();
    let root = world.guest("br");
    world.configure("br", |c| {
        c.net = vserver_guest::NetConfig::Bridge {
            bridge: bridge.clone(),
            interface: None,
            address: Some("192.0.2.2/24".into()),
            gateway: Some("192.0.2.1".into()),
        }
    });
    let started = world.start("br");
    let pid = started.record.pid.to_string();
    let interfaces: Vec<String> = interfaces_of(&pid).into_keys().collect();
    assert_eq!(interfaces, ["eth0", "lo"]);
    assert_eq!(
        world.exec("br", "cat /sys/class/net/eth0/flags > /flags", false),
        0
    );
    let flags = fs::read_to_string(root.join("flags")).unwrap();
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap();
    assert_eq!(flags & 1, 1, "eth0 is up: {flags:#x}");
    // Its address and default route, set by the host, seen from inside.
    let route = fs::read_to_string(format!("/proc/{pid}/net/route")).unwrap();
    // Destination 00000000 via gateway 192.0.2.1 (little-endian hex: 010200C0).
    assert!(
        route
            .lines()
            .any(|l| l.starts_with("eth0\t00000000\t010200C0")),
        "{route}"
    );
    let fib = fs::read_to_string(format!("/proc/{pid}/net/fib_trie")).unwrap();
    assert!(fib.contains("192.0.2.2"), "{fib}");
    // And the host reaches it through the bridge (the guest's kernel answers the ping).
    let ping = std::process::Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", "192.0.2.2"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let ports: Vec<String> = fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert!(ports[0].starts_with("vs"), "{ports:?}");
    assert!(world.stop("br"));
    // The kernel removes the pair with the namespace; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Path::new(&format!("/sys/class/net/{}", ports[0])).exists() {
        assert!(Instant::now() < deadline, "host end {} left", ports[0]);
        std::thread::sleep(Duration::from_millis(20));
    }
    // A bridge that does not exist: start fails, and nothing is left running.
    world.configure("br", |c| {
        c.net = vserver_guest::NetConfig::Bridge {
            bridge: "vsnosuchbr0".into(),
            interface: None,
            address: None,
            gateway: None,
        }
    });
    let err = vserver_guest::start(&world.roots, &world.run_dir, "br", &sleeper()).unwrap_err();
    assert!(format!("{err:?}").contains("vsnosuchbr0"), "{err:?}");
    let status = vserver_guest::status(&world.roots, &world.run_dir, "br").unwrap();
    assert_eq!(status.state, "stopped");
    Ok(())
}

/// `[limits]` from config.toml: memory, pids and cpu are written to the guest's cgroups, and
/// the cpu quota is enforced (the cgroup is throttled under a busy loop).
fn configured_limits() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let support = vserver_sandbox::CgroupSupport::detect().unwrap();
    require(
        support.unified_has("cpu") || support.v1_hierarchy("cpu").is_some(),
        "no cpu controller in the v2 tree or a v1 hierarchy",
    )?;
    let world = World::new();
    world.guest("lim");
    let text = fs::read_to_string(world.roots.confdir.join("lim/config.toml")).unwrap();
    fs::write(
        world.roots.confdir.join("lim/config.toml"),
        format!("{text}\n[limits]\nmemory = \"64M\"\npids = 50\ncpu = \"0.2\"\n"),
    )
    .unwrap();
    let config = vserver_guest::load_guest(&world.roots, "lim").unwrap();
    assert_eq!(config.limits.memory, Some(64 << 20));
    assert_eq!(config.limits.cpu_millis, Some(200));
    let started = world.start("lim");
    assert!(started.notes.is_empty(), "{:?}", started.notes);
    let read = |controller: &str, v1: &str, v2: &str| -> Option<String> {
        if support.unified_has(controller) {
            let dir = started.record.unified_cgroup.as_ref()?;
            return fs::read_to_string(dir.join(v2)).ok();
        }
        let hierarchy = support.v1_hierarchy(controller)?;
        let dir = started
            .record
            .cgroups
            .iter()
            .find(|d| d.starts_with(hierarchy))?;
        fs::read_to_string(dir.join(v1)).ok()
    };
    if support.unified_has("memory") || support.v1_hierarchy("memory").is_some() {
        let memory = read("memory", "memory.limit_in_bytes", "memory.max").unwrap();
        assert_eq!(memory.trim(), (64u64 << 20).to_string());
    } else {
        println!("  (no memory controller: memory limit not checked)");
    }
    if support.unified_has("pids") || support.v1_hierarchy("pids").is_some() {
        assert_eq!(read("pids", "pids.max", "pids.max").unwrap().trim(), "50");
    } else {
        println!("  (no pids controller: pids limit not checked)");
    }
    let quota = read("cpu", "cpu.cfs_quota_us", "cpu.max").unwrap();
    assert!(
        quota.trim() == "20000" || quota.trim() == "20000 100000",
        "{quota}"
    );
    // A busy loop for a second: the guest is throttled, and gets about 0.2 s of CPU time.
    assert_eq!(
        world.exec(
            "lim",
            "( while :; do :; done ) & p=$!; sleep 1; kill $p",
            false
        ),
        0
    );
    let stat = read("cpu", "cpu.stat", "cpu.stat").unwrap();
    let throttled: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(throttled > 0, "never throttled: {stat}");
    assert!(world.stop("lim"));
    Ok(())
}

/// `init = "sysv"`: the guest's rc script runs with the runlevel at start and with 0 at stop.
fn sysv_init() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    let root = world.guest("sysv");
    fs::create_dir_all(root.join("etc/rc.d")).unwrap();
    fs::create_dir_all(root.join("var/log")).unwrap();
    fs::write(
        root.join("etc/rc.d/rc"),
        "#!/bin/sh\necho \"rc $1 pid $$ ppid $PPID\" >> /var/log/rc.log\n",
    )
    .unwrap();
    fs::set_permissions(root.join("etc/rc.d/rc"), fs::Permissions::from_mode(0o755)).unwrap();
    world.configure("sysv", |c| {
        c.init = vserver_guest::InitConfig::Sysv;
        c.runlevel = Some(4);
    });
    vserver_guest::start(
        &world.roots,
        &world.run_dir,
        "sysv",
        &StartOptions::default(),
    )
    .unwrap();
    let log = root.join("var/log/rc.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("rc 4")
    {
        assert!(Instant::now() < deadline, "rc 4 never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Run by the guest's pid 1.
    assert!(fs::read_to_string(&log).unwrap().contains("ppid 1"));
    assert!(world.stop("sysv"));
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines()
            .map(|l| l.split(' ').nth(1).unwrap())
            .collect::<Vec<_>>(),
        ["4", "0"],
        "{text}"
    );
    Ok(())
}

/// `init = "sysv"` on a guest without an rc script is refused before anything starts; an init
/// that exits during start is a failed start that names the init's last log lines and leaves
/// no cgroup, record or process behind.
fn failed_starts_leave_nothing() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    world.guest("norc");
    world.configure("norc", |c| c.init = vserver_guest::InitConfig::Sysv);
    let error = vserver_guest::start(
        &world.roots,
        &world.run_dir,
        "norc",
        &StartOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("/etc/init.d/rc") && error.contains("sysv-rc"),
        "{error}"
    );
    assert!(!world.run_dir.join("norc.toml").exists());
    assert!(
        !world.run_dir.join("norc.log").exists(),
        "the init was started"
    );

    world.guest("dies");
    world.configure("dies", |c| {
        c.init = vserver_guest::InitConfig::Command(
            [
                "/bin/sh",
                "-c",
                "echo first words; echo last words >&2; sleep 0.1; exit 3",
            ]
            .map(String::from)
            .to_vec(),
        );
    });
    let error = vserver_guest::start(
        &world.roots,
        &world.run_dir,
        "dies",
        &StartOptions::default(),
    )
    .unwrap_err();
    let hint = error.hint().unwrap_or_default();
    assert!(error.to_string().contains("exited during start"), "{error}");
    assert!(
        hint.contains("first words") && hint.contains("last words"),
        "{hint}"
    );
    assert!(!world.run_dir.join("dies.toml").exists());
    let support = vserver_sandbox::CgroupSupport::detect().unwrap();
    if let Some(dir) = &support.unified {
        let left = fs::read_dir(dir.join("vserver"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("dies."))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(left, 0, "a cgroup of the failed start is left");
    }
    assert_eq!(
        vserver_guest::status(&world.roots, &world.run_dir, "dies")
            .unwrap()
            .state,
        "stopped"
    );
    Ok(())
}

/// `init = "plain"` boots as systemd only when the guest's `/sbin/init`, resolved inside the
/// guest root, is its systemd binary. Links planted to send the detection to the host's systemd
/// (absolute, `..` past the root) resolve inside the guest, where no systemd is: plain init. A
/// guest whose `/sbin/init` leads (through its own links) to its `/usr/lib/systemd/systemd` gets
/// the container interface; this "systemd" never says READY=1, so the start fails at
/// `start_timeout` and leaves nothing.
fn systemd_detected_inside_the_guest_only() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    require(
        Path::new("/usr/lib/systemd/systemd").exists(),
        "needs the host's /usr/lib/systemd/systemd (to plant links to it)",
    )?;
    let world = World::new();
    let root = world.guest("lure");
    fs::create_dir_all(root.join("sbin")).unwrap();
    for target in [
        "/usr/lib/systemd/systemd",
        "../../../../../usr/lib/systemd/systemd",
    ] {
        let _ = fs::remove_file(root.join("sbin/init"));
        std::os::unix::fs::symlink(target, root.join("sbin/init")).unwrap();
        let error = vserver_guest::start(
            &world.roots,
            &world.run_dir,
            "lure",
            &StartOptions::default(),
        )
        .unwrap_err()
        .to_string();
        // Plain: /sbin/init is executed in the guest, where its target does not exist.
        assert!(
            error.contains("start the guest's init"),
            "{target}: {error}"
        );
        assert!(!root.join("run/systemd").exists());
    }

    let fake = root.join("usr/lib/systemd");
    fs::create_dir_all(&fake).unwrap();
    fs::write(
        fake.join("systemd"),
        "#!/bin/sh\necho \"container=$container notify=$NOTIFY_SOCKET\"\ncat /run/systemd/container\nls /sys/fs/cgroup/cgroup.procs /run/lock /dev/shm\nexec sleep 100\n",
    )
    .unwrap();
    fs::set_permissions(fake.join("systemd"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(root.join("sbin/init")).unwrap();
    std::os::unix::fs::symlink("../usr/lib/systemd/systemd", root.join("sbin/init")).unwrap();
    world.configure("lure", |c| c.start_timeout = Some(2));
    let begun = Instant::now();
    let error = vserver_guest::start(
        &world.roots,
        &world.run_dir,
        "lure",
        &StartOptions::default(),
    )
    .unwrap_err();
    assert!(begun.elapsed() >= Duration::from_secs(2));
    let hint = error.hint().unwrap_or_default();
    assert!(error.to_string().contains("not up within 2 s"), "{error}");
    assert!(
        hint.contains("container=vserver notify=/run/host/notify/notify")
            && hint.contains("/sys/fs/cgroup/cgroup.procs")
            && hint.lines().any(|l| l == "vserver"),
        "{hint}"
    );
    assert!(!world.run_dir.join("lure.toml").exists());
    assert!(!world.run_dir.join("lure.notify").exists());
    assert_eq!(
        vserver_guest::status(&world.roots, &world.run_dir, "lure")
            .unwrap()
            .state,
        "stopped"
    );
    Ok(())
}

/// `init = [command]` from the configuration, and `stop_signal`/`stop_timeout`: the configured
/// signal reaches the init; an init that ignores it is killed after the configured timeout.
fn configured_init_and_stop_sequence() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    let root = world.guest("seq");
    world.configure("seq", |c| {
        c.init = vserver_guest::InitConfig::Command(
            [
                "/bin/sh",
                "-c",
                "trap 'echo got-usr1 > /stopped; exit 0' USR1; echo configured > /init; while :; do sleep 1 & wait; done",
            ]
            .map(String::from)
            .to_vec(),
        );
        c.stop_signal = Some("USR1".into());
        c.stop_timeout = Some(5);
    });
    vserver_guest::start(
        &world.roots,
        &world.run_dir,
        "seq",
        &StartOptions::default(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !root.join("init").exists() {
        assert!(Instant::now() < deadline, "configured init never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let begun = Instant::now();
    assert!(
        vserver_guest::stop(&world.roots, &world.run_dir, "seq", StopOptions::default()).unwrap()
    );
    assert!(
        begun.elapsed() < Duration::from_secs(4),
        "{:?}",
        begun.elapsed()
    );
    assert_eq!(
        fs::read_to_string(root.join("stopped")).unwrap(),
        "got-usr1\n"
    );

    // The same init, but the configured signal is one it ignores: killed after stop_timeout.
    world.configure("seq", |c| {
        c.stop_signal = Some("HUP".into());
        c.stop_timeout = Some(1);
        c.init = vserver_guest::InitConfig::Command(
            [
                "/bin/sh",
                "-c",
                "trap '' HUP TERM; while :; do sleep 1; done",
            ]
            .map(String::from)
            .to_vec(),
        );
    });
    let started = vserver_guest::start(
        &world.roots,
        &world.run_dir,
        "seq",
        &StartOptions::default(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let begun = Instant::now();
    assert!(
        vserver_guest::stop(&world.roots, &world.run_dir, "seq", StopOptions::default()).unwrap()
    );
    let took = begun.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(process_gone(started.record.pid));
    for dir in &started.record.cgroups {
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
    }

    // A bad setting is refused when the file is read, naming it.
    let path = world.roots.confdir.join("seq/config.toml");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(
        &path,
        text.replace("stop_signal = \"HUP\"", "stop_signal = \"NOPE\""),
    )
    .unwrap();
    let err = vserver_guest::load_guest(&world.roots, "seq").unwrap_err();
    assert!(format!("{err:?}").contains("stop_signal"), "{err:?}");
    Ok(())
}

/// `vrpm G -- -i PKG` on a running guest: the guest is frozen during the transaction (its
/// counter does not advance while the scriptlet watches it) and thawed after (it advances
/// again), and the scriptlet runs in the guest's pid namespace.
fn package_operation_on_running_guest() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    require(
        Path::new("/usr/bin/rpm").exists() && Path::new("/usr/bin/createrepo_c").exists(),
        "needs rpm and createrepo_c",
    )?;
    let support = vserver_sandbox::CgroupSupport::detect().unwrap();
    require(
        support.unified.is_some(),
        "no cgroup v2 tree (the guest's freezer)",
    )?;
    let world = World::new();
    // A distribution whose repository holds the busybox shell package.
    let repo = world.base.join("repo");
    let shell = vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    let status = std::process::Command::new("createrepo_c")
        .args(["--quiet", "--no-database"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    vserver_guest::DistributionStore::new(world.roots.distributions_dir())
        .add(&vserver_guest::NewDistribution {
            name: "fixture".into(),
            description: "generated packages".into(),
            releasever: "1".into(),
            repos: vec![("fx".into(), format!("file://{}", repo.display()))],
            gpgcheck: false,
            package_lists: vec![vec!["fx-shell".into()]],
            ..vserver_guest::NewDistribution::default()
        })
        .unwrap();
    let request = BuildRequest {
        guest: "pkg".into(),
        method: BuildMethod::Rpm,
        distribution: Some("fixture".into()),
        releasever: None,
        hostname: None,
        force: false,
        keep: false,
        packages: Vec::new(),
        rpm_files: vec![shell],
        verbose: false,
        apt_mirror: None,
        source: None,
    };
    let config = vserver_guest::build(&world.roots, &request, &mut |_| {}).unwrap();
    let root = config.root.clone();
    fs::create_dir_all(root.join("var/tmp")).unwrap();
    // The package: its %post records the counter, waits, records it again, and its pid
    // namespace. Put inside the guest root, which the sandbox shows at its host path.
    let mut probe = vserver_fixtures::RpmPackage::new("frozen-probe", "1.0");
    probe
        .release("1")
        .file("/usr/share/frozen-probe/README", b"probe\n".to_vec(), 0o644)
        .post_install(
            "cat /counter > /var/tmp/counter-before\n\
             sleep 1\n\
             cat /counter > /var/tmp/counter-after\n\
             readlink /proc/self/ns/pid > /var/tmp/scriptlet-pidns\n\
             hostname > /var/tmp/scriptlet-hostname\n",
        );
    let package = probe.write_to(&root.join("var/tmp")).unwrap();

    let options = StartOptions {
        init: sh(
            "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo $i > /counter; sleep 0.05 & wait; done",
        ),
        ..StartOptions::default()
    };
    let started = vserver_guest::start(&world.roots, &world.run_dir, "pkg", &options).unwrap();
    let counter = || -> u64 {
        fs::read_to_string(root.join("counter"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter() < 3 {
        assert!(Instant::now() < deadline, "the guest's counter never ran");
        std::thread::sleep(Duration::from_millis(20));
    }

    let running = vserver_guest::running_guest(&world.run_dir, "pkg")
        .unwrap()
        .expect("running");
    assert_eq!(running.pid, started.record.pid);
    let freezer = running.freezer.clone().expect("a freezer");
    // `--freeze`: the old behaviour (by default the guest keeps running: CLI `lifecycle_cli`).
    let backend = vserver_guest::open_backend(&world.roots, &config, false)
        .unwrap()
        .running_guest(Some(running))
        .freeze(true);
    let args: Vec<OsString> = vec!["-i".into(), package.into_os_string()];
    let (status, _out, err) = backend
        .run_tool_captured(vserver_pkgmgmt::Tool::Low, &args)
        .unwrap();
    assert!(status.success(), "{}", String::from_utf8_lossy(&err));

    let read = |name: &str| fs::read_to_string(root.join("var/tmp").join(name)).unwrap();
    // Compared as written: the freeze may have caught the guest between its `>` truncating the
    // counter and its `echo` filling it, and then both reads are empty.
    let (before, after) = (read("counter-before"), read("counter-after"));
    assert_eq!(before, after, "the guest ran during the transaction");
    assert_eq!(
        Path::new(read("scriptlet-pidns").trim()),
        ns_link(&started.record.pid.to_string(), "pid"),
        "scriptlet outside the guest's pid namespace"
    );
    assert_eq!(read("scriptlet-hostname").trim(), "pkg");
    // Thawed: it goes on counting.
    assert!(!freezer.is_frozen().unwrap());
    let thawed_at = counter();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter() <= thawed_at {
        assert!(Instant::now() < deadline, "the guest stayed frozen");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(world.stop("pkg"));

    // A stopped guest is not joined: the back end runs as for any stopped guest.
    assert!(
        vserver_guest::running_guest(&world.run_dir, "pkg")
            .unwrap()
            .is_none()
    );
    // A stale record (its pid now another process's, with another start time): the operation
    // fails instead of joining a stranger's namespaces.
    let stale = vserver_sandbox::RunningGuest {
        pid: std::process::id(),
        start_time: 1,
        freezer: None,
    };
    // Frozen and joined, or with its scripts started in it: either way.
    for freeze in [true, false] {
        let backend = vserver_guest::open_backend(&world.roots, &config, false)
            .unwrap()
            .running_guest(Some(stale.clone()))
            .freeze(freeze);
        let args: Vec<OsString> = vec!["-q".into(), "frozen-probe".into()];
        let err = backend
            .run_tool_captured(vserver_pkgmgmt::Tool::Low, &args)
            .unwrap_err();
        assert!(format!("{err:?}").contains("is gone"), "{err:?}");
    }
    Ok(())
}

/// `init = "plain"` (the default): the guest's own `/sbin/init` is pid 1.
fn plain_init() -> Result<(), Outcome> {
    require_root_and_busybox()?;
    let world = World::new();
    let root = world.guest("plain");
    let sbin = root.join("sbin");
    fs::create_dir_all(&sbin).unwrap();
    fs::write(
        sbin.join("init"),
        "#!/bin/sh\ntrap 'exit 0' TERM\necho \"plain $$\" > /init-ran\nwhile :; do sleep 1 & wait; done\n",
    )
    .unwrap();
    fs::set_permissions(sbin.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
    let started = vserver_guest::start(
        &world.roots,
        &world.run_dir,
        "plain",
        &StartOptions::default(),
    )
    .unwrap();
    // The shell creates the file before it writes the line: wait for the whole line.
    let deadline = Instant::now() + Duration::from_secs(5);
    let ran = loop {
        let text = fs::read_to_string(root.join("init-ran")).unwrap_or_default();
        if text.ends_with('\n') {
            break text;
        }
        assert!(Instant::now() < deadline, "/sbin/init never ran");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(ran, "plain 1\n");
    let cmdline = fs::read_to_string(format!("/proc/{}/cmdline", started.record.pid)).unwrap();
    assert!(cmdline.contains("/sbin/init"), "{cmdline:?}");
    assert!(world.stop("plain"));
    Ok(())
}

type NamedTest = (&'static str, fn() -> Result<(), Outcome>);

fn main() {
    vserver_sandbox::run_if_sandbox_child();
    let tests: &[NamedTest] = &[
        ("transient_exec", transient_exec),
        ("start_exec_stop", start_exec_stop),
        ("stop_kills_stubborn_guest", stop_kills_stubborn_guest),
        (
            "stale_record_is_never_signalled",
            stale_record_is_never_signalled,
        ),
        ("list_guests", list_guests),
        ("limits_enforced", limits_enforced),
        ("network_none_and_host", network_none_and_host),
        ("network_bridge", network_bridge),
        ("configured_limits", configured_limits),
        ("plain_init", plain_init),
        ("sysv_init", sysv_init),
        ("failed_starts_leave_nothing", failed_starts_leave_nothing),
        (
            "systemd_detected_inside_the_guest_only",
            systemd_detected_inside_the_guest_only,
        ),
        (
            "configured_init_and_stop_sequence",
            configured_init_and_stop_sequence,
        ),
        ("enter_through_pty", enter_through_pty),
        (
            "package_operation_on_running_guest",
            package_operation_on_running_guest,
        ),
        ("delete_with_planted_symlinks", delete_with_planted_symlinks),
    ];
    if std::env::args().any(|arg| arg == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (name, run) in tests
        .iter()
        .filter(|(n, _)| filters.is_empty() || filters.iter().any(|f| n.contains(f.as_str())))
    {
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| match run() {
            Ok(()) => Outcome::Passed,
            Err(outcome) => outcome,
        }));
        let elapsed = started.elapsed().as_secs_f32();
        match outcome {
            Ok(Outcome::Passed) => {
                passed += 1;
                println!("test {name} ... ok ({elapsed:.2}s)");
            }
            Ok(Outcome::Skipped(reason)) => {
                skipped += 1;
                println!("test {name} ... skipped: {reason}");
            }
            Err(_) => {
                failed += 1;
                println!("test {name} ... FAILED ({elapsed:.2}s)");
            }
        }
    }
    println!("\n{passed} passed, {failed} failed, {skipped} skipped");
    if failed > 0 {
        std::process::exit(101);
    }
}
