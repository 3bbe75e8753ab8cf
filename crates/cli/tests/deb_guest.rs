//! Debian guests as a new user makes them: a local mirror of real Debian bookworm packages
//! (fetched through the host's apt, cached in /var/tmp/vserver-test-debs), indexed with
//! `vrepo index --suite --override`, mirrored with `vrepo mirror` and served by `vrepo serve` over
//! HTTP, registered with `vdistro add`, then `vserver d build -m apt`, `vapt-get`,
//! `vdpkg`; the guest works, its dpkg database is outside it, and the host does not change.
//! Then a hostile guest: symlinks planted at `/var/lib/dpkg` and `/var/lib`, and a maintainer
//! script that tries to write to the host.
//!
//! Needs root, host apt sources that name a bookworm archive and the host's apt lists (or the
//! cache); skips with a reason otherwise, fails instead when VSERVER_TEST_REQUIRE_ALL=1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{WORK_BASE, available, built_plugin, checked, is_root, run, serve, snapshot};
use vserver_fixtures::DebPackage;

// The minbase cache, its selection and the isolated host apt are shared with the other Debian
// guest tests (`common::debian_cache`).
use common::debian_cache::{host_sources, local_mirror, minbase as minbase_set};

/// Parses stanzas of `apt-cache dumpavail`/`show` output into (Package, fields).
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
fn vserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vserver"))
}

struct Host {
    conf: PathBuf,
    roots: PathBuf,
    pkg: PathBuf,
}

impl Host {
    fn command(&self, applet: &str) -> Command {
        let mut command = vserver();
        command
            .arg(applet)
            .env("VSERVER_CONFDIR", &self.conf)
            .env("VSERVER_ROOTDIR", &self.roots)
            .env("VSERVER_PKGDIR", &self.pkg);
        if let Some(plugin) = built_plugin() {
            command.env("VSERVER_RPM_PLUGIN", plugin);
        }
        command
    }
}

/// Installed package names per the dpkg database file.
fn installed(status: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(status).unwrap();
    stanzas(&text)
        .iter()
        .filter(|s| field(s, "Status") == Some("install ok installed"))
        .map(|s| field(s, "Package").unwrap().to_owned())
        .collect()
}

fn host_files() -> Vec<(PathBuf, Vec<u8>)> {
    ["/etc/passwd", "/var/lib/dpkg/status", "/etc/hostname"]
        .iter()
        .map(|p| (PathBuf::from(p), std::fs::read(p).unwrap_or_default()))
        .collect()
}

fn in_guest(root: &Path, args: &[&str]) -> String {
    checked(
        Command::new("/usr/sbin/chroot")
            .arg(root)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    )
}

#[test]
fn debian_guest_from_a_local_bookworm_mirror() {
    if !available(is_root(), "needs root") {
        return;
    }
    for tool in ["/usr/bin/apt-get", "/usr/bin/dpkg", "/usr/sbin/chroot"] {
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
    // Never below /tmp, wherever the checkout is: the per-operation sandbox cannot give apt a
    // private /tmp when the guest lies below it, and /tmp then stays read-only.
    std::fs::create_dir_all(WORK_BASE).unwrap();
    let top = tempfile::Builder::new()
        .prefix("deb-guest")
        .tempdir_in(WORK_BASE)
        .unwrap();
    let top = top.path();
    let work = top.join("apt-work");
    let Some(expected) = minbase_set(&work) else {
        return;
    };
    let mirror = top.join("mirror");
    local_mirror(&work, &mirror);

    let host = Host {
        conf: top.join("etc"),
        roots: top.join("vservers"),
        pkg: top.join("vservers/.pkg"),
    };
    // The archive copy is mirrored and served over HTTP by `vrepo serve`, and the guest is
    // built from the served mirror. Unsigned: trusted only because the registration says so.
    let (_origin, origin_url) = serve(&mirror);
    let served = top.join("served-mirror");
    checked(
        vserver()
            .args([
                "vrepo",
                "mirror",
                "-q",
                "--suite",
                "bookworm",
                "--no-verify-signature",
            ])
            .arg(&origin_url)
            .arg(&served),
    );
    let (_mirror_server, mirror_url) = serve(&served);
    checked(host.command("vdistro").args([
        "add",
        "localdeb",
        "--family",
        "deb",
        "--releasever",
        "12",
        "--description",
        "bookworm, local mirror",
        "--apt-source",
        &format!("{mirror_url} bookworm main"),
        "--trusted",
        "--pkgs",
        "?vserver-no-such-package",
    ]));
    let sources =
        std::fs::read_to_string(host.conf.join(".distributions/localdeb/apt/sources.list"))
            .unwrap();
    assert_eq!(
        sources,
        format!("deb [trusted=yes] {mirror_url} bookworm main\n")
    );
    // A source line cannot smuggle in options or more lines.
    let smuggled = run(host.command("vdistro").args([
        "add",
        "evil",
        "--family",
        "deb",
        "--releasever",
        "12",
        "--apt-source",
        "[trusted=yes] http://example.org/ x main",
    ]));
    assert!(!smuggled.status.success());
    assert!(!host.conf.join(".distributions/evil").exists());

    // A host whose apt sources name no bookworm archive: the built-in debian-12 still lists,
    // and a build without `--mirror` stops in one line before it creates anything.
    let no_apt = top.join("no-apt");
    std::fs::create_dir_all(no_apt.join("sources.list.d")).unwrap();
    let listed = checked(
        host.command("vdistro")
            .arg("list")
            .env(vserver_guest::APT_SOURCES_DIR_VAR, &no_apt),
    );
    assert!(
        listed.lines().any(|l| l.starts_with("debian-12 ")),
        "{listed}"
    );
    let no_archive = run(host
        .command("u")
        .args(["build", "-m", "apt", "--", "-d", "debian-12"])
        .env(vserver_guest::APT_SOURCES_DIR_VAR, &no_apt));
    let stderr = String::from_utf8_lossy(&no_archive.stderr);
    assert!(!no_archive.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("no archive for suite `bookworm`")
            && stderr.contains("--mirror URL")
            && stderr.contains("vdistro add"),
        "{stderr}"
    );
    assert!(!host.roots.join("u").exists() && !host.pkg.join("u").exists());
    assert!(!host.conf.join("u").exists());

    // The built-in debian-12 built from the same mirror without `--trusted` (its suite known
    // without the host's archive): apt verifies the unsigned Release against Debian's keyring
    // and refuses it; the failed build leaves nothing.
    let refused = run(host
        .command("u")
        .args([
            "build",
            "-m",
            "apt",
            "--",
            "-d",
            "debian-12",
            "--mirror",
            &mirror_url,
        ])
        .env(vserver_guest::APT_SOURCES_DIR_VAR, &no_apt));
    assert!(!refused.status.success());
    println!("{}", String::from_utf8_lossy(&refused.stderr));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is not signed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Nothing of the guest is left but the operation log of the apt run its error names.
    assert!(!host.roots.join("u").exists());
    assert!(!host.pkg.join("u").exists() || vserver_pkgmgmt::holds_only_logs(&host.pkg.join("u")));

    let canary = top.join("host-canary");
    std::fs::create_dir_all(canary.join("dpkg")).unwrap();
    std::fs::write(canary.join("dpkg/status"), "host data\n").unwrap();
    std::fs::write(canary.join("file"), "host data\n").unwrap();
    let canary_before = snapshot(&canary);
    let host_before = host_files();

    let started = std::time::Instant::now();
    let built = run(host.command("d").args([
        "build",
        "-m",
        "apt",
        "--",
        "-d",
        "localdeb",
        "--variant",
        "minbase",
    ]));
    assert!(built.status.success(), "{built:?}");
    // An optional (`?NAME`) package that does not exist is a warning, not a failed build.
    assert!(
        String::from_utf8_lossy(&built.stderr)
            .contains("optional package `vserver-no-such-package` not installed"),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    eprintln!("build: {:.1} s", started.elapsed().as_secs_f64());
    let root = host.roots.join("d");
    let admin = host.pkg.join("d/dpkg/state");
    let guest_dpkg = root.join("var/lib/dpkg");
    let empty = |what: &str| {
        let left: Vec<_> = std::fs::read_dir(&guest_dpkg).unwrap().collect();
        assert!(
            left.is_empty(),
            "guest /var/lib/dpkg not empty after {what}"
        );
    };
    empty("the build");
    assert_eq!(installed(&admin.join("status")), expected, "minbase set");
    assert!(admin.join("info/dash.list").is_file());
    // The bootstrap's decompressed copies are gone; an RPM guest's mount point was never made.
    assert!(!host.pkg.join("d/apt/cache/bootstrap").exists());
    assert!(!root.join(".rpmdb").exists());
    // Maintainer-script side effects: base-passwd's users, alternatives, ldconfig's cache.
    assert!(
        std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .starts_with("root:")
    );
    assert!(std::fs::symlink_metadata(root.join("etc/alternatives/awk")).is_ok());
    assert!(root.join("etc/ld.so.cache").is_file());
    assert_eq!(in_guest(&root, &["/bin/sh", "-c", "echo ok"]), "ok\n");

    checked(
        host.command("vapt-get")
            .args(["d", "--", "install", "-y", "hello"]),
    );
    empty("vapt-get install");
    assert!(installed(&admin.join("status")).contains("hello"));
    assert_eq!(in_guest(&root, &["/usr/bin/hello"]), "Hello, world!\n");
    let listing = checked(host.command("vdpkg").args(["d", "--", "-l"]));
    assert!(
        listing.lines().any(|l| l.starts_with("ii  hello ")),
        "{listing}"
    );
    checked(host.command("vdpkg").args(["d", "--", "--verify"]));
    let policy = checked(
        host.command("vapt-cache")
            .args(["d", "--", "policy", "hello"]),
    );
    assert!(policy.contains("Installed: 2.10"), "{policy}");
    checked(
        host.command("vapt-get")
            .args(["d", "--", "purge", "-y", "hello"]),
    );
    empty("vapt-get purge");
    assert!(!installed(&admin.join("status")).contains("hello"));
    assert!(!root.join("usr/bin/hello").exists());
    // The tool's exit status comes through.
    let missing = run(host
        .command("vdpkg")
        .args(["d", "--", "-s", "no-such-package"]));
    assert_eq!(missing.status.code(), Some(1));

    // A template of the guest (`export`, `build -m template`): the same package set, taken in
    // as untrusted input and verified, nothing of it left in the new guest's /var/lib/dpkg.
    let template = top.join("d.tar.zst");
    let started = std::time::Instant::now();
    checked(
        host.command("d")
            .args(["export", template.to_str().unwrap()]),
    );
    eprintln!("export: {:.1} s", started.elapsed().as_secs_f64());
    let started = std::time::Instant::now();
    checked(host.command("dt").args([
        "build",
        "-m",
        "template",
        "--",
        "--source",
        template.to_str().unwrap(),
    ]));
    eprintln!("import: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(
        installed(&host.pkg.join("dt/dpkg/state/status")),
        installed(&admin.join("status"))
    );
    assert_eq!(
        std::fs::read_dir(host.roots.join("dt/var/lib/dpkg"))
            .unwrap()
            .count(),
        0
    );
    checked(host.command("vdpkg").args(["dt", "--", "--verify"]));
    checked(host.command("dt").args(["verify"]));
    checked(host.command("dt").args(["delete", "--yes"]));
    std::fs::remove_file(&template).unwrap();

    // Hostile guest 1: /var/lib/dpkg is a symlink to a host directory.
    std::fs::remove_dir(&guest_dpkg).unwrap();
    std::os::unix::fs::symlink(canary.join("dpkg"), &guest_dpkg).unwrap();
    let refused = run(host.command("vdpkg").args(["d", "--", "-l"]));
    assert!(
        !refused.status.success(),
        "vdpkg followed a planted symlink"
    );
    let refused = run(host
        .command("vapt-get")
        .args(["d", "--", "install", "-y", "hello"]));
    assert!(!refused.status.success());
    std::fs::remove_file(&guest_dpkg).unwrap();
    std::fs::create_dir(&guest_dpkg).unwrap();
    // Hostile guest 2: /var/lib is a symlink to a host directory holding a `dpkg/`.
    let var_lib = root.join("var/lib");
    let moved = root.join("var/lib.real");
    std::fs::rename(&var_lib, &moved).unwrap();
    std::os::unix::fs::symlink(&canary, &var_lib).unwrap();
    let refused = run(host
        .command("vapt-get")
        .args(["d", "--", "install", "-y", "hello"]));
    assert!(
        !refused.status.success(),
        "vapt-get followed a planted /var/lib"
    );
    std::fs::remove_file(&var_lib).unwrap();
    std::fs::rename(&moved, &var_lib).unwrap();
    // Hostile guest 3: a maintainer script that tries to reach the host: write the canary, and
    // (after leaving dpkg's chroot, which it can) copy the host's password hashes and a
    // neighbouring guest's file into its own root.
    let canary_file = canary.join("file");
    let neighbour = host.roots.join("neighbour");
    std::fs::create_dir_all(&neighbour).unwrap();
    std::fs::write(neighbour.join("secret"), "neighbour secret\n").unwrap();
    let neighbour_state = host.pkg.join("neighbour");
    std::fs::create_dir_all(&neighbour_state).unwrap();
    std::fs::write(neighbour_state.join("secret"), "neighbour state\n").unwrap();
    let script = format!(
        "#!/bin/sh\necho ran > /evil-ran\n\
         echo pwned > /proc/1/root{0} 2>/dev/null\n\
         echo pwned > /proc/self/root/../../..{0} 2>/dev/null\n\
         echo pwned > {0} 2>/dev/null\n\
         mkdir -p /x && chroot /x /bin/sh -c 'cd ../../../../../../..; echo pwned > .{0}' 2>/dev/null\n\
         grep CapEff /proc/self/status > /script-caps\n\
         cd / && perl -e 'chroot(\"/x\") or die; chdir(\"..\") for 1..64; chroot(\".\") or die; \
         exec(\"/bin/cat\", \"/etc/shadow\", \"{1}/secret\", \"{2}/secret\")' > /leaked 2>&1\n\
         exit 0\n",
        canary_file.display(),
        neighbour.display(),
        neighbour_state.display()
    );
    let mut evil = DebPackage::new("evil", "1.0");
    evil.postinst(script)
        .file("/usr/share/evil/README", b"evil".to_vec(), 0o644);
    let evil = evil.write_to(top).unwrap();
    checked(host.command("vdpkg").args(["d", "--", "-i"]).arg(&evil));
    assert!(
        root.join("evil-ran").is_file(),
        "the maintainer script did not run in the guest"
    );
    empty("vdpkg -i");
    // The preloaded hook confines the script: its chroot is refused (before the hook, the escape
    // worked; the host's secrets and the neighbours are hidden as well, and without both this
    // copied the host's /etc/shadow and both neighbour files into the guest: measured).
    let leaked = std::fs::read_to_string(root.join("leaked")).unwrap_or_default();
    assert!(
        leaked.contains("Died"),
        "the script's chroot was not refused: {leaked:?}"
    );
    // The script ran without CAP_SYS_CHROOT and CAP_SYS_ADMIN (bits 18 and 21).
    let caps = std::fs::read_to_string(root.join("script-caps")).unwrap();
    let effective = u64::from_str_radix(caps.trim().trim_start_matches("CapEff:").trim(), 16)
        .unwrap_or_else(|e| panic!("{caps:?}: {e}"));
    assert_eq!(effective & (1 << 18 | 1 << 21), 0, "{caps}");
    assert!(
        !leaked.contains("root:")
            && !leaked.contains("neighbour secret")
            && !leaked.contains("neighbour state"),
        "a maintainer script read host or neighbour secrets: {leaked:?}"
    );

    // Hostile guest 4 (issue 13, chain 1): dpkg does not chroot while it unpacks, so it follows
    // the guest's absolute symlinks. A maintainer script learns the host path of the package
    // state from /proc/self/mountinfo and plants links to it (and to the neutral paths, and
    // through /proc/1/root); the package's own files then land below those links: a fake exec
    // hook and a symlink the host once copied the plugin through. In the realistic form the
    // compromised guest plants a link itself and the administrator installs an ordinary package.
    let victim = top.join("victim");
    std::fs::write(&victim, "host data\n").unwrap();
    let state = host.pkg.join("d");
    let hook_before = snapshot(&state.join("apt/hook"));
    let trusted_before = snapshot(&state.join("apt/etc"));
    let targets = [
        ("vsa", state.join("apt/hook")),
        ("vsb", PathBuf::from("/run/vserver-op/apt/hook")),
        ("vsc", PathBuf::from("/run/vserver-op/apt/state")),
        (
            "vsd",
            PathBuf::from("/proc/1/root").join(state.join("apt/state").strip_prefix("/").unwrap()),
        ),
        ("vse", state.join("apt/etc")),
    ];
    let mut links = String::new();
    for (name, target) in &targets {
        links.push_str(&format!("ln -sfn {} /usr/share/{name}\n", target.display()));
    }
    let mut learner = DebPackage::new("learner", "1.0");
    learner.preinst(format!(
        "#!/bin/sh\ncat /proc/self/mountinfo > /mountinfo-seen\n{links}exit 0\n"
    ));
    for (name, _) in &targets {
        learner
            .file(
                format!("/usr/share/{name}/vserver.so"),
                b"not a library".to_vec(),
                0o755,
            )
            .symlink(
                format!("/usr/share/{name}/.vserver.so.tmp"),
                victim.display().to_string(),
            )
            .file(
                format!("/usr/share/{name}/lists/evil_Packages"),
                b"Package: evil\n".to_vec(),
                0o644,
            );
    }
    let learner = learner.write_to(top).unwrap();
    let _ = run(host.command("vdpkg").args(["d", "--", "-i"]).arg(&learner));
    assert!(
        std::fs::read_to_string(root.join("mountinfo-seen"))
            .unwrap()
            .contains(&state.display().to_string()),
        "the script did not learn the host path"
    );
    // The realistic form: links planted by the guest, an ordinary package.
    std::fs::create_dir_all(root.join("usr/share")).unwrap();
    let _ = std::fs::remove_file(root.join("usr/share/vsf"));
    std::os::unix::fs::symlink(state.join("apt/hook"), root.join("usr/share/vsf")).unwrap();
    let mut plain = DebPackage::new("plain", "1.0");
    plain
        .file(
            "/usr/share/vsf/vserver.so",
            b"not a library".to_vec(),
            0o755,
        )
        .symlink(
            "/usr/share/vsf/.vserver.so.tmp",
            victim.display().to_string(),
        );
    let plain = plain.write_to(top).unwrap();
    let _ = run(host.command("vdpkg").args(["d", "--", "-i"]).arg(&plain));
    // The next harmless operation, which used to copy the plugin through the planted link.
    checked(host.command("vdpkg").args(["d", "--", "-l"]));
    assert_eq!(std::fs::read(&victim).unwrap(), b"host data\n");
    assert_eq!(snapshot(&state.join("apt/hook")), hook_before);
    assert_eq!(snapshot(&state.join("apt/etc")), trusted_before);
    assert!(
        snapshot(&state.join("apt/state"))
            .iter()
            .all(|(path, _)| !path.ends_with("evil_Packages")),
        "dpkg wrote into apt's state"
    );

    assert_eq!(snapshot(&canary), canary_before, "the host canary changed");
    assert_eq!(host_files(), host_before, "host files changed");
}

/// An Essential package whose data member is damaged (its index entry matches the damaged file,
/// so apt downloads it) among good ones: the build stops at the decompression step with one line
/// naming that file, and leaves neither the guest nor its `.pkg` state behind. The damaged
/// package is the largest, so it is copied first and the copying stops before the smaller ones
/// that sort before it.
#[test]
fn a_damaged_essential_package_stops_the_build() {
    if !available(is_root(), "needs root")
        || !available(Path::new("/usr/bin/apt-get").exists(), "needs apt-get")
    {
        return;
    }
    std::fs::create_dir_all(WORK_BASE).unwrap();
    let top = tempfile::Builder::new()
        .prefix("deb-damaged")
        .tempdir_in(WORK_BASE)
        .unwrap();
    let top = top.path();
    let pool = top.join("mirror/pool");
    std::fs::create_dir_all(&pool).unwrap();
    for n in 0..40 {
        DebPackage::new(format!("aaa-good-{n:02}"), "1.0-1")
            .essential(true)
            .file(format!("/usr/bin/good-{n}"), b"#!/bin/sh\n".to_vec(), 0o755)
            .write_to(&pool)
            .unwrap();
    }
    let mut bytes = DebPackage::new("damaged-essential", "1.0-1")
        .essential(true)
        .compression(vserver_fixtures::Compression::Xz)
        // Incompressible content keeps this package the largest file.
        .file(
            "/usr/bin/damaged",
            vserver_fixtures::noise(1, 200_000),
            0o755,
        )
        .to_bytes()
        .unwrap();
    // The data member is last and nearly all of the file: damage it early, so that the copy
    // fails at once, while the other thread is still busy with the small packages.
    let early = bytes.len() * 3 / 10;
    bytes[early..early + 50].fill(0x55);
    std::fs::write(pool.join("damaged-essential_1.0-1_amd64.deb"), &bytes).unwrap();
    checked(
        vserver()
            .args([
                "vrepo",
                "index",
                "-q",
                "--suite",
                "bookworm",
                "--component",
                "main",
            ])
            .arg(top.join("mirror")),
    );
    let host = Host {
        conf: top.join("etc"),
        roots: top.join("vservers"),
        pkg: top.join("vservers/.pkg"),
    };
    let source = format!("file://{} bookworm main", top.join("mirror").display());
    checked(host.command("vdistro").args([
        "add",
        "damaged",
        "--family",
        "deb",
        "--releasever",
        "12",
        "--apt-source",
        &source,
        "--trusted",
    ]));
    let build = run(host.command("g").args([
        "build",
        "-m",
        "apt",
        "-q",
        "--",
        "-d",
        "damaged",
        "--variant",
        "essential",
    ]));
    let stderr = String::from_utf8_lossy(&build.stderr);
    eprintln!("the build said: {stderr}");
    assert!(!build.status.success(), "{stderr}");
    assert!(
        stderr.contains("damaged-essential_1.0-1_amd64.deb")
            && stderr.contains("corrupt `data.tar.xz`"),
        "{stderr}"
    );
    assert!(
        stderr.contains("decompress 41 Essential packages"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!host.roots.join("g").exists() && !host.pkg.join("g").exists());
}
