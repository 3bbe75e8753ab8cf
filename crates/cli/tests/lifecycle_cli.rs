//! The guest lifecycle through the `vserver` binary, as a user drives it: `start`, `status`
//! (`--json`), `vserver --list`, `exec` (exit status, stdin, stdout and stderr pass through),
//! `enter` on a terminal (a pseudo-terminal made by `script(1)`, driven by a script), `stop` (no
//! process, mount or cgroup left), and `delete` (refused without confirmation, then `--yes`)
//! of a guest that planted symlinks to a host canary, which must stay unchanged.
//!
//! The guest is a skeleton with a static busybox copied in. Needs root, `/bin/busybox` and
//! `script`; skips with a reason otherwise, fails instead when VSERVER_TEST_REQUIRE_ALL=1.
//!
//! A second test runs `vrpm G --freeze -- -i PKG` on a running rpm guest (built with `-m yum`;
//! needs rpm, dnf and createrepo_c too): the guest is frozen during the transaction and the
//! scriptlet runs in its pid namespace; a scriptlet that stops rpm is killed at the time limit,
//! and the guest thawed.
//!
//! A third runs `vrpm G -- -i PKG` on a running guest without `--freeze`: the `%post` signals
//! the guest's service through its pid file in the guest's own `/tmp` (a tmpfs of the guest's
//! mount namespace) and the service counts the signal; the scriptlet saw the guest's init as
//! pid 1, its pid namespace and its cgroup (the root of the guest's cgroup namespace), and the
//! guest kept running. Meanwhile the guest, root inside, goes for the scriptlet (its `/proc`
//! root, descriptors, environment and memory: refused), looks for rpm (not in its pid
//! namespace) and its database (nowhere in its view); host mounts are unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestHost, available, built_plugin, is_root};

/// A [`TestHost`] whose guest `g` is stopped when the test ends.
struct Host(TestHost);

impl std::ops::Deref for Host {
    type Target = TestHost;

    fn deref(&self) -> &TestHost {
        &self.0
    }
}

impl Drop for Host {
    /// A test that fails half-way must not leave its guest running once its root is deleted
    /// (seen: an init loop spinning on a vanished `sleep`, a core busy for half an hour).
    fn drop(&mut self) {
        let _ = self
            .command(&["g", "stop", "--timeout", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Host {
    fn vserver(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// `vserver g enter` under `script(1)`, which runs it on a new pseudo-terminal (`-e`: its
    /// exit status is passed on; `-q`: no banners; the typescript goes to /dev/null, the
    /// output to script's standard output).
    fn enter_under_script(&self) -> std::process::Child {
        let enter = format!("{} g enter", env!("CARGO_BIN_EXE_vserver"));
        Command::new("/usr/bin/script")
            .args(["-qec", &enter, "/dev/null"])
            .env("VSERVER_CONFDIR", self.dir.join("etc"))
            .env("VSERVER_ROOTDIR", self.dir.join("vservers"))
            .env("VSERVER_PKGDIR", self.dir.join("vservers/.pkg"))
            .env("VSERVER_RUNDIR", self.dir.join("run"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.vserver(args);
        assert!(
            out.status.success(),
            "vserver {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
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

/// Path → content (or link target) of every entry below `dir`.
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
        } else {
            fs::read_to_string(&path).unwrap_or_default()
        };
        out.insert(path, value);
    }
    out
}

/// The value of `"key":` in a flat JSON text (digits or a quoted string), without a JSON
/// library.
fn json_field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start();
    if let Some(quoted) = rest.strip_prefix('"') {
        return quoted.split('"').next();
    }
    rest.split([',', '}']).next().map(str::trim)
}

#[test]
fn guest_lifecycle_through_the_binary() {
    let tools = ["/bin/busybox", "/usr/bin/script"]
        .iter()
        .all(|t| Path::new(t).exists());
    if !available(is_root(), "needs root")
        || !available(tools, "needs busybox-static and script (util-linux)")
    {
        return;
    }
    let host = Host(TestHost::new("vserver-cli-life"));

    // A skeleton guest with busybox, and an init that ends on SIGTERM.
    host.ok(&["g", "build", "-m", "skeleton", "--hostname", "g.example"]);
    let root = host.dir.join("vservers/g");
    let bin = if root.join("bin").is_symlink() {
        root.join("usr/bin")
    } else {
        root.join("bin")
    };
    fs::create_dir_all(&bin).unwrap();
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    fs::set_permissions(bin.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
    for applet in ["sh", "sleep", "hostname", "cat", "echo", "tty"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let config = host.dir.join("etc/g/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!(
            "init = [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; echo up > /up; while :; do sleep 1 & wait; done\"]\nstop_timeout = 5\n{text}"
        ),
    )
    .unwrap();

    // Stopped: status says so with exit code 3.
    let out = host.vserver(&["g", "status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped"));

    host.ok(&["g", "start"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !root.join("up").exists() {
        assert!(Instant::now() < deadline, "the init never ran");
        std::thread::sleep(Duration::from_millis(20));
    }
    let json = host.ok(&["g", "status", "--json"]);
    assert_eq!(json_field(&json, "state"), Some("running"), "{json}");
    let pid: u32 = json_field(&json, "pid").unwrap().parse().unwrap();
    let in_cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(in_cgroups.contains("/vserver/g"), "{in_cgroups}");
    let cgroups: Vec<PathBuf> = json
        .split("\"cgroups\":[")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .unwrap()
        .split(',')
        .map(|c| PathBuf::from(c.trim().trim_matches('"')))
        .collect();
    assert!(cgroups.iter().all(|c| c.is_dir()), "{cgroups:?}");
    // The stable script form, as before the table; the table for people; JSON.
    let list = host.ok(&["--list", "--porcelain"]);
    assert!(list.starts_with("g\trunning\tpid "), "{list}");
    assert!(list.ends_with("\t-\tnone\n"), "{list}");
    let table = host.ok(&["--list"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "NAME",
            "STATE",
            "DISTRIBUTION",
            "PKGMGMT",
            "ADDRESS",
            "UPTIME",
            "MEMORY"
        ],
        "{table}"
    );
    assert_eq!(lines[1][..5], ["g", "running", "-", "none", "-"], "{table}");
    assert!(lines[1][5].ends_with('s'), "{table}");
    let json: serde_json::Value = serde_json::from_str(&host.ok(&["--list", "--json"])).unwrap();
    assert_eq!(json[0]["guest"], "g");
    assert_eq!(json[0]["state"], "running");
    assert!(json[0]["address"].is_null());
    assert!(json[0]["uptime"].is_u64());

    // exec: exit status, standard output and error, standard input.
    let out = host.vserver(&[
        "g",
        "exec",
        "/bin/sh",
        "-c",
        "hostname; echo to-stderr >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "g.example\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));
    let mut child = host
        .command(&["g", "exec", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    let out = host.vserver(&["g", "exec", "/no/such/program"]);
    assert_eq!(out.status.code(), Some(127));

    // enter on a terminal: script(1) gives vserver a pseudo-terminal; the lines are typed into
    // it, the guest's shell sees a terminal of its own and its exit status comes back.
    // The line is typed once the guest's shell shows its prompt, and the input stays open until
    // the shell has exited: typed earlier, or followed at once by script's end-of-file, it could
    // be lost under load.
    let mut child = host.enter_under_script();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut stdout, &mut buf) {
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
            if all.windows(2).any(|w| w == b"# ") {
                let _ = seen_tx.send(());
            }
        }
        all
    });
    let _ = seen_rx.recv_timeout(Duration::from_secs(20));
    stdin
        .write_all(b"tty && echo on-a-terminal-$((6*7)); hostname; exit 5\n")
        .unwrap();
    let status = child.wait().unwrap();
    drop(stdin);
    let out = std::process::Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: Vec::new(),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("on-a-terminal-42"), "{text:?}");
    assert!(text.contains("/dev/pts/"), "{text:?}");
    assert!(text.contains("g.example"), "{text:?}");
    assert_eq!(out.status.code(), Some(5), "{text:?}");

    // stop: nothing left.
    host.ok(&["g", "stop"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap().trim_start().starts_with('Z'))
    {
        assert!(Instant::now() < deadline, "init {pid} still there");
        std::thread::sleep(Duration::from_millis(20));
    }
    for dir in &cgroups {
        assert!(!dir.exists(), "cgroup left: {}", dir.display());
    }
    assert_eq!(host_mounts_below(&host.dir), Vec::<String>::new());
    assert_eq!(host.vserver(&["g", "status"]).status.code(), Some(3));
    let out = host.vserver(&["g", "exec", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));

    // delete: a guest that planted symlinks to a host canary, running when deleted.
    let canary = host.dir.join("canary");
    fs::create_dir_all(canary.join("sub")).unwrap();
    fs::write(canary.join("file"), "precious").unwrap();
    fs::write(canary.join("sub/deep"), "precious too").unwrap();
    std::os::unix::fs::symlink(&canary, root.join("etc/host")).unwrap();
    std::os::unix::fs::symlink(canary.join("file"), root.join("file-link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../..", root.join("up-link")).unwrap();
    let pkg = host.dir.join("vservers/.pkg/g");
    fs::create_dir_all(&pkg).unwrap();
    std::os::unix::fs::symlink(&canary, pkg.join("state")).unwrap();
    host.ok(&["g", "start"]);
    let before = snapshot(&canary);
    let out = host.vserver(&["g", "delete"]);
    assert_eq!(out.status.code(), Some(2), "delete without --yes on a pipe");
    assert!(root.exists());
    host.ok(&["g", "delete", "--yes"]);
    assert_eq!(snapshot(&canary), before);
    assert!(!root.exists());
    assert!(!pkg.exists());
    assert!(!host.dir.join("etc/g").exists());
    assert_eq!(host_mounts_below(&host.dir), Vec::<String>::new());
    let out = host.vserver(&["g", "status"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown guest"));
}

#[test]
fn vrpm_freeze_on_a_running_guest_freezes_it() {
    let tools = ["/bin/busybox", "/usr/bin/rpm", "/usr/bin/dnf"]
        .iter()
        .all(|t| Path::new(t).exists());
    if !available(is_root(), "needs root")
        || !available(tools, "needs busybox-static, rpm and dnf")
        || !available(
            built_plugin().is_some(),
            "the rpm plugin library was not built",
        )
    {
        return;
    }
    let host = Host(TestHost::new("vserver-cli-vrpm"));
    let repo = host.dir.join("repo");
    vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    host.register_fixture(&repo, "fx-shell");
    host.ok(&["g", "build", "-m", "yum", "--", "-d", "fixture"]);
    let root = host.dir.join("vservers/g");
    for applet in ["sleep", "readlink", "hostname"] {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    let config = host.dir.join("etc/g/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!(
            "init = [\"/bin/sh\", \"-c\", \"trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo $i > /counter; sleep 0.05 & wait; done\"]\nstop_timeout = 5\n{text}"
        ),
    )
    .unwrap();
    fs::create_dir_all(root.join("var/tmp")).unwrap();
    let mut probe = vserver_fixtures::RpmPackage::new("frozen-probe", "1.0");
    probe
        .release("1")
        .file("/usr/share/frozen-probe/README", b"probe\n".to_vec(), 0o644)
        .post_install(
            "cat /counter > /var/tmp/counter-before\n\
             sleep 1\n\
             cat /counter > /var/tmp/counter-after\n\
             readlink /proc/self/ns/pid > /var/tmp/scriptlet-pidns\n\
             echo ${SYSTEMD_OFFLINE-unset} > /var/tmp/scriptlet-offline\n",
        );
    let package = probe.write_to(&root.join("var/tmp")).unwrap();

    host.ok(&["g", "start"]);
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
    let json = host.ok(&["g", "status", "--json"]);
    let pid: u32 = json_field(&json, "pid").unwrap().parse().unwrap();

    host.ok(&[
        "vrpm",
        "g",
        "--freeze",
        "--",
        "-i",
        package.to_str().unwrap(),
    ]);

    let read = |name: &str| fs::read_to_string(root.join("var/tmp").join(name)).unwrap();
    assert_eq!(
        read("counter-before"),
        read("counter-after"),
        "the guest ran during the transaction"
    );
    assert_eq!(
        Path::new(read("scriptlet-pidns").trim()),
        fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        "the scriptlet ran outside the guest's pid namespace"
    );
    // Frozen, the guest's init cannot act: systemctl is told to work offline.
    assert_eq!(read("scriptlet-offline"), "1\n");
    let thawed_at = counter();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter() <= thawed_at {
        assert!(Instant::now() < deadline, "the guest stayed frozen");
        std::thread::sleep(Duration::from_millis(20));
    }
    let query = host.ok(&["vrpm", "g", "--", "-q", "--qf", "%{NAME}\n", "frozen-probe"]);
    assert_eq!(query, "frozen-probe\n");

    // A %post that stops rpm and sleeps, in the guest's pid namespace (which does not die with
    // the sandbox): killed at the time limit, nothing of it left, the guest thawed and running.
    let sleep_arg = format!("{}", 200_000 + std::process::id());
    let mut hung = vserver_fixtures::RpmPackage::new("hung-post", "1.0");
    hung.release("1")
        .file("/usr/share/hung-post/README", b"hung\n".to_vec(), 0o644)
        .post_install(format!(
            "kill -STOP $PPID\n/bin/busybox sleep {sleep_arg}\n"
        ));
    let hung = hung.write_to(&root.join("var/tmp")).unwrap();
    let started = Instant::now();
    let out = host
        .command(&["vrpm", "g", "--freeze", "--", "-i", hung.to_str().unwrap()])
        .env("VSERVER_OPERATION_TIME_LIMIT", "2s")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "did not finish within 2s; killed it while it ran `/bin/sh /var/tmp/rpm-tmp."
        ) && stderr.contains(&format!(", which ran `/bin/busybox sleep {sleep_arg}`\n")),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(7), "{elapsed:?}");
    let leftovers: Vec<String> = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&format!("sleep\0{sleep_arg}")))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
    let thawed_at = counter();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter() <= thawed_at {
        assert!(
            Instant::now() < deadline,
            "the guest stayed frozen after the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let query = host.ok(&["vrpm", "g", "--", "-q", "--qf", "%{NAME}\n", "hung-post"]);
    assert_eq!(query, "hung-post\n");
    host.ok(&["g", "stop"]);
    host.ok(&["g", "delete", "--yes"]);
}

#[test]
fn vrpm_on_a_running_guest_acts_on_it() {
    let tools = ["/bin/busybox", "/usr/bin/rpm", "/usr/bin/dnf"]
        .iter()
        .all(|t| Path::new(t).exists());
    if !available(is_root(), "needs root")
        || !available(tools, "needs busybox-static, rpm and dnf")
        || !available(
            built_plugin().is_some(),
            "the rpm plugin library was not built",
        )
    {
        return;
    }
    let host = Host(TestHost::new("vserver-cli-vrpm-running"));
    let repo = host.dir.join("repo");
    vserver_fixtures::busybox_shell_rpm(&repo, Path::new("/bin/busybox")).unwrap();
    host.register_fixture(&repo, "fx-shell");
    host.ok(&["g", "build", "-m", "yum", "--", "-d", "fixture"]);
    let root = host.dir.join("vservers/g");
    for applet in ["sleep", "readlink", "tr", "dd", "head"] {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", link).unwrap();
        }
    }
    // The init: a tiny service that counts SIGHUPs (its pid file and counter in the guest's
    // /tmp, a tmpfs of the guest's own mount namespace), and a loop that ticks /counter.
    fs::create_dir_all(root.join("sbin")).unwrap();
    fs::write(
        root.join("sbin/svc-init"),
        "/bin/sh -c 'n=0; trap \"n=\\$((n+1)); echo \\$n > /tmp/svc.count\" HUP; echo $$ > /tmp/svc.pid; \
         while :; do sleep 0.05 & wait; done' &\n\
         trap 'exit 0' TERM\n\
         i=0; while :; do i=$((i+1)); echo $i > /counter; sleep 0.05 & wait $!; done\n",
    )
    .unwrap();
    let config = host.dir.join("etc/g/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("init = [\"/bin/sh\", \"/sbin/svc-init\"]\nstop_timeout = 5\n{text}"),
    )
    .unwrap();
    fs::create_dir_all(root.join("var/tmp")).unwrap();
    // A host canary and a neighbour's root, which the scriptlet goes for by their host paths,
    // directly and through every /proc/PID/root it can see.
    let canary = host.dir.join("canary");
    fs::write(&canary, "host data\n").unwrap();
    let neighbour = host.dir.join("vservers/neighbour");
    fs::create_dir_all(&neighbour).unwrap();
    fs::write(neighbour.join("file"), "neighbour data\n").unwrap();
    let attack_host = format!(
        "for t in {c} {n}/file {n}/new; do echo pwned > $t 2>/dev/null && echo wrote $t; \
         for p in /proc/[0-9]*; do echo pwned > $p/root$t 2>/dev/null && echo wrote $p $t; done; \
         cat $t 2>/dev/null | grep -q data && echo read $t; done > /var/tmp/post-host\n\
         ls -A /run/vserver-op >> /var/tmp/post-host 2>/dev/null\n",
        c = canary.display(),
        n = neighbour.display()
    );
    let mut probe = vserver_fixtures::RpmPackage::new("restart-probe", "1.0");
    probe
        .release("1")
        .file(
            "/usr/share/restart-probe/README",
            b"probe\n".to_vec(),
            0o644,
        )
        .post_install(
            "kill -HUP $(cat /tmp/svc.pid)\n\
             tr '\\0' ' ' < /proc/1/cmdline > /var/tmp/post-init\n\
             readlink /proc/self/ns/pid > /var/tmp/post-pidns\n\
             echo ${SYSTEMD_OFFLINE-unset} > /var/tmp/post-offline\n\
             cat /proc/self/cgroup > /var/tmp/post-cgroup\n\
             a=$(cat /counter); touch /tmp/post-started; sleep 2; b=$(cat /counter)\n\
             echo \"$a $b\" > /var/tmp/post-counter\n\
             [ \"$a\" != \"$b\" ] && echo running > /var/tmp/post-guest\n\
             ls -a /.rpmdb > /var/tmp/post-rpmdb\n"
                .to_owned()
                + &attack_host,
        );
    let package = probe.write_to(&root.join("var/tmp")).unwrap();

    let mounts_before = fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    host.ok(&["g", "start"]);
    let json = host.ok(&["g", "status", "--json"]);
    let pid: u32 = json_field(&json, "pid").unwrap().parse().unwrap();
    let guest_tmp = PathBuf::from(format!("/proc/{pid}/root/tmp"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !guest_tmp.join("svc.pid").exists() {
        assert!(
            Instant::now() < deadline,
            "the guest's service never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let vrpm = host
        .command(&["vrpm", "g", "--", "-i", package.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The guest, root inside, goes for the scriptlet while it runs, and for rpm and its database.
    // (The patterns are written so that the attacking shell's own command line does not match.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while !guest_tmp.join("post-started").exists() {
        assert!(Instant::now() < deadline, "the %post never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let attack = host.ok(&[
        "g",
        "exec",
        "/bin/sh",
        "-c",
        "for d in /proc/[0-9]*; do \
           c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); \
           case \"$c\" in \
             *rpm-tm[p]*) echo script; \
               cat $d/environ > /dev/null 2>&1 && echo environ-read; \
               ls $d/root/ > /dev/null 2>&1 && echo root-read; \
               readlink $d/fd/1 > /dev/null 2>&1 && echo fd-read; \
               dd if=$d/mem of=/dev/null bs=1 count=1 2>/dev/null && echo mem-read; \
               ls $d/ns/ > /dev/null 2>&1 && readlink $d/ns/mnt > /dev/null 2>&1 && echo ns-read;; \
             *dbpat[h]*|*--roo[t]*) echo rpm-visible: $c;; \
           esac; \
           ls $d/root/.rpmdb/ 2>/dev/null | grep -q . && echo db-seen; \
         done; ls -a /.rpmdb | grep -v '^\\.' ; true",
    ]);
    let out = vrpm.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(attack.lines().any(|l| l == "script"), "{attack}");
    assert_eq!(
        attack
            .lines()
            .filter(|l| *l != "script")
            .collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "the guest reached the operation"
    );

    let read = |name: &str| {
        fs::read_to_string(root.join("var/tmp").join(name)).unwrap_or_else(|e| {
            panic!(
                "{name}: {e}: {} {:?}",
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(root.join("var/tmp/post-counter"))
            )
        })
    };
    assert_eq!(
        fs::read_to_string(guest_tmp.join("svc.count"))
            .unwrap()
            .trim(),
        "1",
        "the service was not signalled"
    );
    assert_eq!(read("post-init"), "/bin/sh /sbin/svc-init ");
    assert_eq!(
        Path::new(read("post-pidns").trim()),
        fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        "the scriptlet ran outside the guest's pid namespace"
    );
    assert_eq!(
        read("post-cgroup").lines().last(),
        Some("0::/"),
        "{}",
        read("post-cgroup")
    );
    assert_eq!(read("post-guest"), "running\n", "the guest was frozen");
    assert_eq!(read("post-offline"), "unset\n");
    assert_eq!(
        read("post-rpmdb").split_whitespace().count(),
        2,
        "{}",
        read("post-rpmdb")
    );
    assert_eq!(
        read("post-host"),
        "",
        "the scriptlet reached the host or a neighbour"
    );
    assert_eq!(fs::read_to_string(&canary).unwrap(), "host data\n");
    assert_eq!(
        fs::read_to_string(neighbour.join("file")).unwrap(),
        "neighbour data\n"
    );
    assert!(!neighbour.join("new").exists());
    let query = host.ok(&[
        "vrpm",
        "g",
        "--",
        "-q",
        "--qf",
        "%{NAME}\n",
        "restart-probe",
    ]);
    assert_eq!(query, "restart-probe\n");
    host.ok(&["g", "stop"]);
    assert_eq!(
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .count(),
        mounts_before,
        "host mounts changed"
    );
}
