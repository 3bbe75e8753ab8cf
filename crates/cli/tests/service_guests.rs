//! Guests that run real services: bookworm guests built from real Debian packages (the shared
//! minbase cache plus the service packages, fetched once through the host's apt into
//! /var/tmp/vserver-test-debs-services), one booting systemd (`systemd-sysv`), one sysv-rc
//! (`sysvinit-core`), both with `nginx-light` and `openssh-server`, on a host bridge. `start`
//! returns once the init is up; from the host, HTTP to the guest's address gets nginx's page and
//! port 22 its banner; `vapt-get -- install --reinstall nginx` on the running guest restarts
//! nginx (its master pid changes) and `remove --purge` stops it, on both; the sysv guest's
//! `runlevel` answers as under sysvinit; `stop` shuts the init down in order, well within the
//! stop timeout, and leaves no cgroup or record. The systemd guest is up (`running`; `degraded`
//! is accepted) with journald running. Also: guest roots are root-owned 0755 with the usual modes
//! of `/tmp`, `/var/tmp` and `/root`; `init = "sysv"` without an rc script is refused before
//! anything starts; an init that dies during start is a failed start with its last log lines.
//!
//! Needs root, ip(8), the host's apt sources for bookworm (or the caches); skips with a reason
//! otherwise, fails instead when VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::debian_cache::{CACHE, host_apt, host_sources, minbase};
use common::{WORK_BASE, assert_root_modes, available, built_plugin, checked, is_root, run};

/// The service packages' cache (the minbase closure plus what the services pull in).
const SERVICES_CACHE: &str = "/var/tmp/vserver-test-debs-services";
const SYSTEMD_GUEST: &[&str] = &["systemd-sysv", "nginx-light", "openssh-server"];
const SYSV_GUEST: &[&str] = &[
    "sysvinit-core",
    "sysv-rc",
    "initscripts",
    "nginx-light",
    "openssh-server",
];

/// Fills the services cache (once); false after saying why when the archive is out of reach.
fn services_cache(work: &Path) -> bool {
    let Some(minbase) = minbase(work) else {
        return false;
    };
    let done = Path::new(SERVICES_CACHE).join("complete");
    if done.exists() {
        return true;
    }
    std::fs::create_dir_all(format!("{SERVICES_CACHE}/partial")).unwrap();
    for extras in [SYSTEMD_GUEST, SYSV_GUEST] {
        let download = run(host_apt("apt-get", work)
            .arg(format!("-oDir::Cache::archives={SERVICES_CACHE}/"))
            .args(["-qq", "-y", "--download-only", "install"])
            .args(&minbase)
            .args(extras));
        if !available(
            download.status.success(),
            &format!(
                "cannot download {extras:?} from the Debian archive: {}",
                String::from_utf8_lossy(&download.stderr)
            ),
        ) {
            return false;
        }
    }
    std::fs::write(done, "").unwrap();
    true
}

fn vserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vserver"))
}

struct Host {
    top: PathBuf,
}

impl Host {
    fn command(&self, applet: &str) -> Command {
        let mut command = vserver();
        command
            .arg(applet)
            .env("VSERVER_CONFDIR", self.top.join("etc"))
            .env("VSERVER_ROOTDIR", self.top.join("vservers"))
            .env("VSERVER_PKGDIR", self.top.join("vservers/.pkg"))
            .env("VSERVER_RUNDIR", self.top.join("run"));
        if let Some(plugin) = built_plugin() {
            command.env("VSERVER_RPM_PLUGIN", plugin);
        }
        command
    }

    fn guest(&self, guest: &str, args: &[&str]) -> std::process::Output {
        run(self.command(guest).args(args))
    }

    fn config(&self, guest: &str) -> PathBuf {
        self.top.join("etc").join(guest).join("config.toml")
    }

    fn set(&self, guest: &str, lines: &str) {
        let path = self.config(guest);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, format!("{text}\n{lines}\n")).unwrap();
    }
}

struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

fn http_get(address: &str) -> String {
    let mut stream = TcpStream::connect_timeout(
        &format!("{address}:80").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: guest\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    let _ = stream.read_to_string(&mut page);
    page
}

fn ssh_banner(address: &str) -> String {
    let mut stream = TcpStream::connect_timeout(
        &format!("{address}:22").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut banner = [0u8; 64];
    let n = stream.read(&mut banner).unwrap_or(0);
    String::from_utf8_lossy(&banner[..n]).into_owned()
}

/// Waits for a TCP port: a guest's service may still be binding when its init says ready
/// (sysv's scripts background daemons).
fn wait_port(address: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let target = format!("{address}:{port}").parse().unwrap();
    while TcpStream::connect_timeout(&target, Duration::from_millis(500)).is_err() {
        assert!(Instant::now() < deadline, "{address}:{port} never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The pid of nginx's master process in the running `guest` (its pid file, read inside).
fn nginx_pid(host: &Host, guest: &str) -> String {
    let out = host.guest(guest, &["exec", "cat", "/run/nginx.pid"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What broke on frozen guests: the package scripts of an update restart the running daemon
/// (its master pid changes, the page is still served) and those of a purge stop it, both
/// through the guest's own init (`invoke-rc.d`, `deb-systemd-invoke`).
fn update_and_remove_nginx(host: &Host, guest: &str, address: &str) {
    let vapt = |args: &[&str]| {
        let out = run(host.command("vapt-get").arg(guest).arg("--").args(args));
        assert!(
            out.status.success(),
            "vapt-get {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let before = nginx_pid(host, guest);
    // nginx-light is a metapackage in bookworm: `nginx` holds the daemon and its scripts.
    vapt(&["install", "-y", "--reinstall", "nginx"]);
    wait_port(address, 80);
    let after = nginx_pid(host, guest);
    assert_ne!(before, after, "{guest}: nginx was not restarted");
    let page = http_get(address);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    vapt(&["remove", "-y", "--purge", "nginx-light", "nginx"]);
    assert!(
        TcpStream::connect_timeout(
            &format!("{address}:80").parse().unwrap(),
            Duration::from_millis(500)
        )
        .is_err(),
        "{guest}: nginx still answers after its removal"
    );
    let alive = host.guest(guest, &["exec", "sh", "-c", &format!("kill -0 {after}")]);
    assert!(!alive.status.success(), "{guest}: nginx still runs");
    // Back for the next start.
    vapt(&["install", "-y", "nginx-light"]);
    wait_port(address, 80);
}

/// Starts `guest` with its services, checks them from the host, stops it; returns (time to
/// start, time to stop).
fn serve_and_stop(host: &Host, guest: &str, address: &str) -> (Duration, Duration) {
    let begun = Instant::now();
    let started = host.guest(guest, &["start"]);
    let start_time = begun.elapsed();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    wait_port(address, 80);
    wait_port(address, 22);
    let page = http_get(address);
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("Welcome to nginx"),
        "{page}"
    );
    let banner = ssh_banner(address);
    assert!(banner.starts_with("SSH-2.0-OpenSSH"), "{banner}");
    if guest == "sv" {
        // The runlevel is recorded as sysvinit records it; invoke-rc.d starts services by it.
        let level = host.guest(guest, &["exec", "/sbin/runlevel"]);
        assert_eq!(String::from_utf8_lossy(&level.stdout).trim(), "N 2");
    }
    update_and_remove_nginx(host, guest, address);
    let begun = Instant::now();
    let stopped = host.guest(guest, &["stop"]);
    let stop_time = begun.elapsed();
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    // In order: the init ended by itself, well before the stop timeout (10 s) ran out.
    assert!(
        stop_time < Duration::from_secs(8),
        "stop took {stop_time:?}"
    );
    let status = host.guest(guest, &["status"]);
    assert_eq!(status.status.code(), Some(3));
    assert!(!host.top.join("run").join(format!("{guest}.toml")).exists());
    assert!(
        TcpStream::connect_timeout(
            &format!("{address}:80").parse().unwrap(),
            Duration::from_millis(500)
        )
        .is_err()
    );
    (start_time, stop_time)
}

#[test]
fn systemd_and_sysv_guests_serve_and_stop() {
    if !available(is_root(), "needs root") {
        return;
    }
    for tool in ["/usr/bin/apt-get", "/usr/bin/dpkg"] {
        if !available(Path::new(tool).exists(), &format!("needs {tool}")) {
            return;
        }
    }
    if !available(
        Path::new("/usr/sbin/ip").exists() || Path::new("/sbin/ip").exists(),
        "needs ip(8) from iproute2",
    ) {
        return;
    }
    if !available(
        host_sources().is_some() || Path::new(SERVICES_CACHE).join("complete").exists(),
        "the host's apt sources name no archive for bookworm",
    ) {
        return;
    }
    std::fs::create_dir_all(WORK_BASE).unwrap();
    let top = tempfile::Builder::new()
        .prefix("service-guests")
        .tempdir_in(WORK_BASE)
        .unwrap();
    let host = Host {
        top: top.path().to_path_buf(),
    };
    if !services_cache(&host.top.join("apt-work")) {
        return;
    }
    let bridge = format!("vssvc{}", std::process::id() % 100_000);
    let made = Command::new("ip")
        .args(["link", "add", &bridge, "type", "bridge"])
        .status()
        .is_ok_and(|s| s.success());
    if !available(made, &format!("cannot create bridge `{bridge}`")) {
        return;
    }
    let _bridge = Bridge(bridge.clone());
    // TEST-NET-2: TEST-NET-1 (192.0.2.0/24) is some build machines' own network.
    checked(Command::new("ip").args(["address", "add", "198.51.100.1/24", "dev", &bridge]));
    checked(Command::new("ip").args(["link", "set", &bridge, "up"]));

    // A flat mirror of both caches, registered as a trusted local distribution.
    let mirror = host.top.join("mirror");
    std::fs::create_dir_all(mirror.join("pool")).unwrap();
    for dir in [CACHE, SERVICES_CACHE] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let target = mirror.join("pool").join(path.file_name().unwrap());
            if path.extension().is_some_and(|e| e == "deb") && !target.exists() {
                std::fs::hard_link(&path, &target)
                    .or_else(|_| std::fs::copy(&path, &target).map(drop))
                    .unwrap();
            }
        }
    }
    checked(
        vserver()
            .args([
                "vrepo",
                "index",
                "--suite",
                "bookworm",
                "--component",
                "main",
            ])
            .arg(&mirror),
    );
    checked(host.command("vdistro").args([
        "add",
        "svcdeb",
        "--family",
        "deb",
        "--releasever",
        "12",
        "--apt-source",
        &format!("file://{} bookworm main", mirror.display()),
        "--trusted",
        "--pkgs",
        "?vserver-no-such-package",
    ]));
    let mut timings = Vec::new();
    for (guest, packages, address) in [
        ("sd", SYSTEMD_GUEST, "198.51.100.2"),
        ("sv", SYSV_GUEST, "198.51.100.3"),
    ] {
        let mut build = host.command(guest);
        build.args(["build", "-m", "apt", "--", "-d", "svcdeb", "--"]);
        build.args(packages);
        checked(&mut build);
        assert_root_modes(&host.top.join("vservers").join(guest));
        host.set(
            guest,
            &format!(
                "net = {{ bridge = \"{bridge}\", address = \"{address}/24\", gateway = \"198.51.100.1\" }}"
            ),
        );
        if guest == "sv" {
            host.set(guest, "init = \"sysv\"\nrunlevel = 2");
        }
        timings.push((guest, serve_and_stop(&host, guest, address)));
    }
    for (guest, (start, stop)) in &timings {
        println!("{guest}: start (until up) {start:?}, stop {stop:?}");
    }

    // The systemd guest, started again: systemd says it is up; it reached READY=1 and
    // `is-system-running` is `running` or `degraded` (a unit that needs what a container
    // lacks may fail).
    let started = host.guest("sd", &["start"]);
    assert!(started.status.success());
    let state = host.guest("sd", &["exec", "systemctl", "is-system-running"]);
    let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
    let failed = host.guest("sd", &["exec", "systemctl", "--failed", "--no-legend"]);
    let failed = String::from_utf8_lossy(&failed.stdout).into_owned();
    println!("sd: {state}; failed units: {failed}");
    assert!(state == "running" || state == "degraded", "{state}");
    // journald runs: its OOMScoreAdjust= cannot apply on the guest's read-only /proc, and the
    // runtime drop-in vserver writes lets it start without.
    assert!(!failed.contains("journald"), "{failed}");
    let journal = host.guest(
        "sd",
        &["exec", "journalctl", "-b", "--no-pager", "-q", "-n", "1"],
    );
    assert!(journal.status.success(), "{journal:?}");
    // Its cgroup delegation: systemd made its cgroups below the guest's payload cgroup, the
    // root of what the guest sees; the guest's own cgroup (its freezer, its caps) and the v1
    // hierarchies holding its limits are out of reach, and it cannot mount another view.
    let record = std::fs::read_to_string(host.top.join("run/sd.toml")).unwrap();
    let unified: PathBuf = record
        .lines()
        .find_map(|l| l.strip_prefix("unified_cgroup = "))
        .map(|v| v.trim_matches('"').into())
        .expect("a v2 cgroup");
    assert!(unified.join("payload/init.scope").is_dir(), "{record}");
    assert_eq!(
        std::fs::read_to_string(unified.join("cgroup.max.descendants"))
            .unwrap()
            .trim(),
        "4096"
    );
    let inside = host.guest(
        "sd",
        &[
            "exec",
            "sh",
            "-c",
            "grep '^0::' /proc/self/cgroup; ls /sys/fs/cgroup/.. | head -1; \
             mkdir -p /tmp/m && mount -t cgroup -o memory none /tmp/m && echo MOUNTED; \
             echo 1 > /sys/fs/cgroup/../cgroup.freeze && echo WROTE; true",
        ],
    );
    let seen = String::from_utf8_lossy(&inside.stdout);
    assert!(seen.starts_with("0::/\n"), "{seen}");
    assert!(
        !seen.contains("MOUNTED") && !seen.contains("WROTE"),
        "{seen}"
    );
    assert_eq!(
        std::fs::read_to_string(unified.join("cgroup.freeze"))
            .unwrap()
            .trim(),
        "0"
    );
    assert!(host.guest("sd", &["stop"]).status.success());
    assert!(!unified.exists(), "the guest's cgroup tree is left");

    // `init = "sysv"` where no rc script exists (the systemd guest): refused before anything
    // starts, in one line that says what is missing.
    let config = std::fs::read_to_string(host.config("sd")).unwrap();
    host.set("sd", "init = \"sysv\"");
    let refused = host.guest("sd", &["start"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("/etc/init.d/rc") && stderr.contains("sysv-rc"),
        "{stderr}"
    );
    assert!(!host.top.join("run/sd.toml").exists());

    // An init that dies during start: a failed start, its last log lines on stderr, nothing
    // left running or recorded.
    std::fs::write(
        host.config("sd"),
        format!("{config}\ninit = [\"/bin/sh\", \"-c\", \"echo famous last words; exit 7\"]\n"),
    )
    .unwrap();
    let failed = host.guest("sd", &["start"]);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(!failed.status.success());
    assert!(
        stderr.contains("exited during start") && stderr.contains("famous last words"),
        "{stderr}"
    );
    assert!(!host.top.join("run/sd.toml").exists());
    assert_eq!(host.guest("sd", &["status"]).status.code(), Some(3));
}
