//! A fleet's mirror without `--trusted` anywhere: an origin of real Debian bookworm packages
//! (the cache the Debian guest tests fill, indexed with the archive's priorities) is signed
//! with a key made in the test; `vrepo mirror --keyring … --packages @minbase,hello --sign KEY`
//! makes a bootstrap-complete subset signed with our key; `vrepo serve` serves it; a
//! distribution registered with only the public key (`vdistro add --pubkey`, no `--trusted`)
//! builds a minbase guest from it, and the guest is updated from it (`vapt-get update`,
//! `install hello`). The guest's roots lie below `/tmp` (where apt's signature check makes its
//! temporary files): the sandbox's private `/tmp` must work there.
//!
//! Needs root, gpg, apt, the host's bookworm apt lists (for the archive's priorities) and the
//! cached minbase packages in /var/tmp/vserver-test-debs (fetched through the host's apt when missing, as the `deb_guest` tests do);
//! skips with a reason otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{WORK_BASE, built_plugin, checked, run, serve};

use common::debian_cache::CACHE_LIST;

fn vserver() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vserver"))
}

use common::debian_cache::host_sources;

/// `apt-cache show` of the host's lists, isolated from the host's own sources and status.
fn archive_stanzas(work: &Path, names: &BTreeSet<String>) -> String {
    std::fs::create_dir_all(work.join("cache/archives/partial")).unwrap();
    std::fs::create_dir_all(work.join("empty")).unwrap();
    std::fs::write(work.join("sources.list"), host_sources().unwrap()).unwrap();
    std::fs::write(work.join("status"), "").unwrap();
    let mut command = Command::new("apt-cache");
    for (key, value) in [
        ("Dir::Etc::SourceList", work.join("sources.list")),
        ("Dir::Etc::SourceParts", work.join("empty")),
        ("Dir::State::status", work.join("status")),
        ("Dir::Cache", work.join("cache")),
    ] {
        command.arg(format!("-o{key}={}", value.display()));
    }
    checked(command.args(["show", "--no-all-versions"]).args(names))
}

/// The origin: the cached .debs in `pool/`, indexed as `bookworm main` with the archive's
/// Priority and Section, signed with the test key.
fn make_origin(work: &Path, origin: &Path, sign: &[String]) {
    let names = common::debian_cache::link_cache_into(&origin.join("pool"));
    let mut overrides = String::new();
    let mut seen = BTreeSet::new();
    for stanza in archive_stanzas(work, &names).split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .map(str::to_owned)
        };
        if let Some(name) = field("Package")
            && seen.insert(name.clone())
        {
            overrides.push_str(&format!(
                "{name} {} {}\n",
                field("Priority").unwrap_or_else(|| "optional".into()),
                field("Section").unwrap_or_else(|| "misc".into())
            ));
        }
    }
    let override_file = work.join("override");
    std::fs::write(&override_file, overrides).unwrap();
    checked(
        vserver()
            .args(["vrepo", "index", "-q", "--suite", "bookworm"])
            .arg("--override")
            .arg(&override_file)
            .args(sign)
            .arg(origin),
    );
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

#[test]
fn a_guest_is_built_and_updated_from_a_signed_minbase_subset_without_trusted() {
    if !common::debian_cache::signed_guest_prerequisites() {
        return;
    }
    std::fs::create_dir_all(WORK_BASE).unwrap();
    let top = tempfile::Builder::new()
        .prefix("signed-subset")
        .tempdir_in(WORK_BASE)
        .unwrap();
    let top = top.path();

    // The key, made here; its public half as an apt keyring.
    let key =
        common::gpg::TestKey::new(&top.join("gnupg"), "fleet mirror", "mirror@example.invalid");
    let home = key.home.clone();
    let sign = key.sign_args();
    // Written by a bare file name, as an administrator types it (relative to the cwd).
    let keyring = top.join("fleet-mirror.gpg");
    checked(
        vserver()
            .args([
                "vrepo",
                "key",
                "export",
                "--binary",
                "mirror@example.invalid",
            ])
            .arg("--gpg-homedir")
            .arg(&home)
            .args(["-o", "fleet-mirror.gpg"])
            .current_dir(top),
    );

    let origin = top.join("origin");
    make_origin(&top.join("apt-work"), &origin, &sign);
    let (_origin_server, origin_url) = serve(&origin);

    // The subset, verified against the origin's key and signed again with ours.
    let subset = top.join("subset");
    let mirrored = run(vserver()
        .args(["vrepo", "mirror", "--json", "--suite", "bookworm"])
        .arg("--keyring")
        .arg(&keyring)
        .args(["--packages", "@minbase,hello"])
        .args(&sign)
        .arg(&origin_url)
        .arg(&subset));
    assert_eq!(
        mirrored.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&mirrored.stderr)
    );
    let minbase: BTreeSet<String> = std::fs::read_to_string(CACHE_LIST)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let held: BTreeSet<String> = std::fs::read_dir(subset.join("pool"))
        .unwrap()
        .map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split('_').next().unwrap().to_owned()
        })
        .collect();
    let lacking: Vec<&String> = minbase.difference(&held).collect();
    assert!(
        lacking.is_empty(),
        "the subset lacks minbase packages: {lacking:?}"
    );
    assert!(held.contains("hello"));
    for name in ["InRelease", "Release.gpg"] {
        assert!(subset.join("dists/bookworm").join(name).is_file(), "{name}");
    }
    // Unchanged: exit 4, nothing published.
    let again = run(vserver()
        .args(["vrepo", "mirror", "-q", "--suite", "bookworm"])
        .arg("--keyring")
        .arg(&keyring)
        .args(["--packages", "@minbase,hello"])
        .args(&sign)
        .arg(&origin_url)
        .arg(&subset));
    assert_eq!(again.status.code(), Some(4));

    let (_subset_server, subset_url) = serve(&subset);
    // The host roots lie below /tmp on purpose: apt makes temporary files in /tmp when it checks
    // a signature, which the per-operation sandbox's private /tmp must allow there too.
    let below_tmp = tempfile::Builder::new()
        .prefix("signed-subset-roots")
        .tempdir_in("/tmp")
        .unwrap();
    let host = Host {
        conf: below_tmp.path().join("etc"),
        roots: below_tmp.path().join("vservers"),
        pkg: below_tmp.path().join("vservers/.pkg"),
    };
    checked(
        host.command("vdistro")
            .args(["add", "fleet", "--family", "deb", "--releasever", "12"])
            .args(["--apt-source", &format!("{subset_url} bookworm main")])
            .arg("--pubkey")
            .arg(&keyring),
    );
    let sources =
        std::fs::read_to_string(host.conf.join(".distributions/fleet/apt/sources.list")).unwrap();
    assert!(!sources.contains("trusted"), "{sources}");

    let built = run(host.command("d").args([
        "build",
        "-m",
        "apt",
        "--",
        "-d",
        "fleet",
        "--variant",
        "minbase",
    ]));
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    checked(host.command("vapt-get").args(["d", "--", "update"]));
    checked(
        host.command("vapt-get")
            .args(["d", "--", "install", "-y", "hello"]),
    );
    let hello = checked(
        Command::new("/usr/sbin/chroot")
            .arg(host.roots.join("d"))
            .arg("/usr/bin/hello")
            .env_clear()
            .env("PATH", "/usr/bin:/bin"),
    );
    assert_eq!(hello, "Hello, world!\n");

    // A signature made by another key: the guest's apt refuses the update.
    let other_key =
        common::gpg::TestKey::new(&top.join("other-gnupg"), "intruder", "x@example.invalid");
    let other = other_key.home.clone();
    checked(
        vserver()
            .args(["vrepo", "index", "-q", "--suite", "bookworm"])
            .args(["--sign", "x@example.invalid", "--gpg-homedir"])
            .arg(&other)
            .arg(&subset),
    );
    let refused = run(host.command("vapt-get").args(["d", "--", "update"]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        !refused.status.success() || text.contains("NO_PUBKEY") || text.contains("W: "),
        "apt accepted metadata signed by an unknown key:\n{text}"
    );
    assert!(
        text.contains("NO_PUBKEY") || text.contains("not signed"),
        "{text}"
    );
}
