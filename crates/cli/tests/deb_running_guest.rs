//! Maintainer scripts on a running Debian guest: a minbase bookworm guest (the cached archive
//! packages, as `deb_guest` uses them) runs a plain init with a tiny service that counts SIGHUPs
//! (its pid file in the guest's own `/tmp`, a tmpfs of the guest's mount namespace). `vdpkg -i`
//! and `vapt-get install` of generated packages whose `postinst` signals the service: the
//! service counts both, the scripts saw the guest's init as pid 1, its pid namespace and its
//! cgroup, and dpkg's database at `/var/lib/dpkg`, which the guest itself, root inside, finds
//! empty meanwhile; it cannot reach the script's `/proc` entries either. `--freeze` keeps the old
//! behaviour (the service is not reached). On the stopped guest, `invoke-rc.d` is told by a
//! `policy-rc.d` that the guest is not running (101), and the policy is gone afterwards.
//!
//! Needs root, the host's apt and bookworm sources (or the cache); skips with a reason
//! otherwise, fails instead when VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::debian_cache::{CACHE, host_apt, host_sources, minbase as minbase_set};
use common::{WORK_BASE, available, built_plugin, checked, is_root, run, serve};
use vserver_fixtures::DebPackage;

fn stanzas(text: &str) -> Vec<Vec<(String, String)>> {
    text.split("\n\n")
        .map(|stanza| {
            stanza
                .lines()
                .filter(|l| !l.starts_with(' '))
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect::<Vec<_>>()
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn field<'a>(stanza: &'a [(String, String)], name: &str) -> Option<&'a str> {
    stanza
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A flat `pool/` of the cached .debs, indexed as `bookworm main` with the archive's priorities.
fn make_mirror(work: &Path, mirror: &Path) {
    let pool = mirror.join("pool");
    fs::create_dir_all(&pool).unwrap();
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(CACHE).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "deb") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            names.insert(name.split('_').next().unwrap().to_owned());
            fs::hard_link(&path, pool.join(&name))
                .or_else(|_| fs::copy(&path, pool.join(&name)).map(drop))
                .unwrap();
        }
    }
    let shown = checked(
        host_apt("apt-cache", work)
            .args(["show", "--no-all-versions"])
            .args(&names),
    );
    let mut overrides = String::new();
    let mut seen = BTreeSet::new();
    for stanza in stanzas(&shown) {
        let name = field(&stanza, "Package").unwrap();
        if seen.insert(name.to_owned()) {
            overrides.push_str(&format!(
                "{name} {} {}\n",
                field(&stanza, "Priority").unwrap_or("optional"),
                field(&stanza, "Section").unwrap_or("misc")
            ));
        }
    }
    let override_file = work.join("override");
    fs::write(&override_file, overrides).unwrap();
    checked(
        Command::new(env!("CARGO_BIN_EXE_vserver"))
            .args([
                "vrepo",
                "index",
                "--suite",
                "bookworm",
                "--component",
                "main",
            ])
            .arg("--override")
            .arg(&override_file)
            .arg(mirror),
    );
}

struct Host {
    top: PathBuf,
}

impl Host {
    fn command(&self, applet: &str) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_vserver"));
        command
            .arg(applet)
            .env("VSERVER_CONFDIR", self.top.join("etc"))
            .env("VSERVER_ROOTDIR", self.top.join("vservers"))
            .env("VSERVER_PKGDIR", self.top.join("vservers/.pkg"))
            .env("VSERVER_RUNDIR", self.top.join("run"))
            .stdin(Stdio::null());
        if let Some(plugin) = built_plugin() {
            command.env("VSERVER_RPM_PLUGIN", plugin);
        }
        command
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self
            .command("d")
            .args(["stop", "--timeout", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn maintainer_scripts_act_on_a_running_debian_guest() {
    if !available(is_root(), "needs root") {
        return;
    }
    for tool in ["/usr/bin/apt-get", "/usr/bin/dpkg"] {
        if !available(Path::new(tool).exists(), &format!("needs {tool}")) {
            return;
        }
    }
    if !available(
        host_sources().is_some(),
        "the host's apt sources name no archive for bookworm",
    ) {
        return;
    }
    fs::create_dir_all(WORK_BASE).unwrap();
    let top = tempfile::Builder::new()
        .prefix("deb-running")
        .tempdir_in(WORK_BASE)
        .unwrap();
    let host = Host {
        top: top.path().to_path_buf(),
    };
    let top = &host.top;
    let work = top.join("apt-work");
    if minbase_set(&work).is_none() {
        return;
    }
    let mirror = top.join("mirror");
    make_mirror(&work, &mirror);
    let (_server, url) = serve(&mirror);
    checked(host.command("vdistro").args([
        "add",
        "localdeb",
        "--family",
        "deb",
        "--releasever",
        "12",
        "--apt-source",
        &format!("{url} bookworm main"),
        "--trusted",
    ]));
    checked(host.command("d").args([
        "build",
        "-m",
        "apt",
        "--",
        "-d",
        "localdeb",
        "--variant",
        "minbase",
    ]));
    let root = top.join("vservers/d");
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "the build left its policy"
    );
    fs::write(
        root.join("sbin/svc-init"),
        "/bin/sh -c 'n=0; trap \"n=\\$((n+1)); echo \\$n > /tmp/svc.count\" HUP; echo $$ > /tmp/svc.pid; \
         while :; do sleep 0.05 & wait $!; done' &\n\
         trap 'exit 0' TERM\n\
         while :; do sleep 0.05 & wait $!; done\n",
    )
    .unwrap();
    let config = top.join("etc/d/config.toml");
    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("init = [\"/bin/sh\", \"/sbin/svc-init\"]\nstop_timeout = 5\n{text}"),
    )
    .unwrap();
    let probe = |name: &str| {
        let mut package = DebPackage::new(name, "1.0");
        package
            .file(
                format!("/usr/share/{name}/README"),
                b"probe\n".to_vec(),
                0o644,
            )
            .postinst(format!(
                "#!/bin/sh\n\
                 [ \"$1\" = configure ] || exit 0\n\
                 kill -HUP $(cat /tmp/svc.pid) || echo no-service > /var/tmp/{name}-nosvc\n\
                 tr '\\0' ' ' < /proc/1/cmdline > /var/tmp/{name}-init\n\
                 readlink /proc/self/ns/pid > /var/tmp/{name}-pidns\n\
                 cat /proc/self/cgroup > /var/tmp/{name}-cgroup\n\
                 dpkg-query -W -f '${{Package}}\\n' base-files > /var/tmp/{name}-query\n\
                 touch /tmp/{name}-started; sleep 2\n\
                 exit 0\n"
            ));
        package.write_to(top).unwrap()
    };
    let first = probe("probe-one");
    let second = probe("probe-two");
    let frozen = probe("probe-frozen");

    checked(host.command("d").arg("start"));
    let status = checked(host.command("d").args(["status", "--json"]));
    let pid: u32 = status
        .split("\"pid\":")
        .nth(1)
        .and_then(|r| {
            r.split(|c: char| !c.is_ascii_digit())
                .find(|s| !s.is_empty())
        })
        .unwrap()
        .parse()
        .unwrap();
    let guest_tmp = PathBuf::from(format!("/proc/{pid}/root/tmp"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !guest_tmp.join("svc.pid").exists() {
        assert!(
            Instant::now() < deadline,
            "the guest's service never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let count = || {
        fs::read_to_string(guest_tmp.join("svc.count"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };

    // vdpkg -i, with the guest probing while the postinst sleeps.
    let attack = "for d in /proc/[0-9]*; do \
           c=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null); \
           case \"$c\" in \
             *info/probe-one.postins[t]*) echo script; \
               cat $d/environ > /dev/null 2>&1 && echo environ-read; \
               ls $d/root/ > /dev/null 2>&1 && echo root-read; \
               readlink $d/fd/1 > /dev/null 2>&1 && echo fd-read; \
               ls $d/root/var/lib/dpkg/ 2>/dev/null | grep -q . && echo db-seen;; \
             *--roo[t]=*|*apt-ge[t]*) echo dpkg-visible: $c;; \
           esac; \
         done; ls -A /var/lib/dpkg; true";
    let dpkg = host
        .command("vdpkg")
        .args(["d", "--", "-i"])
        .arg(&first)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !guest_tmp.join("probe-one-started").exists() {
        assert!(Instant::now() < deadline, "the postinst never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    let seen = checked(host.command("d").args(["exec", "/bin/sh", "-c", attack]));
    let out = dpkg.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(seen.lines().any(|l| l == "script"), "{seen}");
    assert_eq!(
        seen.lines().filter(|l| *l != "script").collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "the guest reached the operation"
    );
    assert_eq!(count(), "1", "the service was not signalled");
    let read = |name: &str| fs::read_to_string(root.join("var/tmp").join(name)).unwrap();
    assert_eq!(read("probe-one-init"), "/bin/sh /sbin/svc-init ");
    assert_eq!(
        Path::new(read("probe-one-pidns").trim()),
        fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap()
    );
    assert_eq!(read("probe-one-cgroup").lines().last(), Some("0::/"));
    assert_eq!(
        read("probe-one-query"),
        "base-files\n",
        "the script had no database"
    );

    // vapt-get install of a local .deb: apt keeps the spawner for dpkg.
    let out = run(host
        .command("vapt-get")
        .args(["d", "--", "install", "-y"])
        .arg(&second));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count(),
        "2",
        "vapt-get's postinst did not reach the service"
    );
    assert_eq!(read("probe-two-init"), "/bin/sh /sbin/svc-init ");

    // --freeze: the old behaviour; the scripts do not see the guest's /tmp.
    let out = run(host
        .command("vdpkg")
        .args(["d", "--freeze", "--", "-i"])
        .arg(&frozen));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(count(), "2");
    assert!(root.join("var/tmp/probe-frozen-nosvc").exists());

    // A stopped guest: invoke-rc.d is told not to act.
    checked(host.command("d").arg("stop"));
    fs::write(
        root.join("etc/init.d/fake"),
        "#!/bin/sh\necho \"$1\" > /var/tmp/fake-ran\n",
    )
    .unwrap();
    let mut mode = fs::metadata(root.join("etc/init.d/fake"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    fs::set_permissions(root.join("etc/init.d/fake"), mode).unwrap();
    let mut offline = DebPackage::new("probe-offline", "1.0");
    offline
        .file("/usr/share/probe-offline/README", b"probe\n".to_vec(), 0o644)
        .postinst(
            "#!/bin/sh\n[ \"$1\" = configure ] || exit 0\n\
             invoke-rc.d fake restart > /var/tmp/offline-out 2>&1; echo $? >> /var/tmp/offline-out\n\
             exit 0\n",
        );
    let offline = offline.write_to(top).unwrap();
    let out = run(host.command("vdpkg").args(["d", "--", "-i"]).arg(&offline));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = read("offline-out");
    assert!(
        said.contains("policy-rc.d denied execution of restart"),
        "{said}"
    );
    assert!(
        !root.join("var/tmp/fake-ran").exists(),
        "the init script ran"
    );
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "the policy was left behind"
    );
}
