//! The cached real Debian bookworm minbase packages (plus `hello`) in /var/tmp, fetched once
//! through the host's apt and shared by every test that builds a Debian guest. The same cache
//! and the same selection as `deb_guest.rs`, so whichever test runs first fills it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{available, checked, run};

/// Where the .debs are kept between runs.
pub const CACHE: &str = "/var/tmp/vserver-test-debs";
/// The minbase package names, written once every file is in the cache.
pub const CACHE_LIST: &str = "/var/tmp/vserver-test-debs/minbase.list";
const EXTRAS: &[&str] = &["hello"];

/// bookworm's sources as the host's apt names them; `None` when it names no bookworm archive.
pub fn host_sources() -> Option<String> {
    let host = vserver_guest::HostAptSources::read(vserver_guest::HostAptSources::default_dir());
    host.release_sources("bookworm", &["main"])
}

/// The host's apt with Debian's sources only, an empty status and its own cache under `work`.
pub fn host_apt(program: &str, work: &Path) -> Command {
    std::fs::create_dir_all(work.join("cache/archives/partial")).unwrap();
    std::fs::create_dir_all(work.join("empty")).unwrap();
    let sources = host_sources().expect("checked before the first use");
    std::fs::write(work.join("sources.list"), sources).unwrap();
    if !work.join("status").exists() {
        std::fs::write(work.join("status"), "").unwrap();
    }
    let mut command = Command::new(program);
    for (key, value) in [
        ("Dir::Etc::SourceList", work.join("sources.list")),
        ("Dir::Etc::SourceParts", work.join("empty")),
        ("Dir::State::status", work.join("status")),
        ("Dir::Cache", work.join("cache")),
        ("Debug::NoLocking", PathBuf::from("1")),
        ("APT::Install-Recommends", PathBuf::from("false")),
    ] {
        command.arg(format!("-o{key}={}", value.display()));
    }
    command
}

fn field<'a>(stanza: &'a str, name: &str) -> Option<&'a str> {
    stanza
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
}

/// The minbase names, filling the cache first when it is empty; `None` (after saying why)
/// when the host cannot reach the archive.
pub fn minbase(work: &Path) -> Option<BTreeSet<String>> {
    if let Ok(list) = std::fs::read_to_string(CACHE_LIST)
        && !list.trim().is_empty()
    {
        return Some(list.lines().map(str::to_owned).collect());
    }
    if !available(
        host_sources().is_some(),
        "the host's apt sources name no archive for bookworm",
    ) {
        return None;
    }
    std::fs::create_dir_all(format!("{CACHE}/partial")).unwrap();
    let update = run(Command::new("apt-get").args(["-qq", "update"]));
    if !available(
        update.status.success(),
        "apt-get update failed (no access to the Debian archive)",
    ) {
        return None;
    }
    let dump = checked(host_apt("apt-cache", work).arg("dumpavail"));
    let mut seeds = BTreeSet::from(["apt".to_owned()]);
    for stanza in dump.split("\n\n") {
        let seed = field(stanza, "Essential") == Some("yes")
            || field(stanza, "Priority") == Some("required");
        if seed && let Some(name) = field(stanza, "Package") {
            seeds.insert(name.to_owned());
        }
    }
    let uris = checked(
        host_apt("apt-get", work)
            .args(["--print-uris", "-qq", "-y", "install"])
            .args(&seeds),
    );
    let names: BTreeSet<String> = uris
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|file| file.split('_').next())
        .map(str::to_owned)
        .collect();
    let download = run(host_apt("apt-get", work)
        .arg(format!("-oDir::Cache::archives={CACHE}/"))
        .args(["-qq", "-y", "--download-only", "install"])
        .args(&seeds)
        .args(EXTRAS));
    if !available(
        download.status.success(),
        "cannot download from the Debian archive",
    ) {
        return None;
    }
    assert!(
        names.len() > 50,
        "apt computed too small a minbase: {names:?}"
    );
    let list: String = names.iter().map(|n| format!("{n}\n")).collect();
    std::fs::write(CACHE_LIST, list).unwrap();
    Some(names)
}

/// What the signed Debian guest tests need — root, apt, dpkg, gpg, the host's bookworm sources
/// and the minbase cache (filled when empty) — or false after saying why they are skipped.
pub fn signed_guest_prerequisites() -> bool {
    if !available(super::is_root(), "needs root") {
        return false;
    }
    for tool in ["/usr/bin/apt-get", "/usr/bin/dpkg", "/usr/bin/gpg"] {
        if !available(Path::new(tool).exists(), &format!("needs {tool}")) {
            return false;
        }
    }
    available(
        host_sources().is_some(),
        "the host's apt sources name no archive for bookworm",
    ) && minbase(&std::env::temp_dir().join(format!("vserver-test-apt-{}", std::process::id())))
        .is_some()
}

/// A flat copy of the cache in `mirror/pool`, indexed by `vrepo index` as a bookworm `main`
/// suite with the archive's priorities and sections (from the host's apt lists: a .deb's own
/// `Priority` can differ), so that a minbase guest can be built from `file://MIRROR`.
pub fn local_mirror(work: &Path, mirror: &Path) {
    let names = link_cache_into(&mirror.join("pool"));
    let shown = checked(
        host_apt("apt-cache", work)
            .args(["show", "--no-all-versions"])
            .args(&names),
    );
    let mut overrides = String::new();
    let mut seen = BTreeSet::new();
    for stanza in shown.split("\n\n") {
        let Some(name) = field(stanza, "Package") else {
            continue;
        };
        if seen.insert(name.to_owned()) {
            overrides.push_str(&format!(
                "{name} {} {}\n",
                field(stanza, "Priority").unwrap_or("optional"),
                field(stanza, "Section").unwrap_or("misc")
            ));
        }
    }
    let override_file = work.join("override");
    std::fs::write(&override_file, overrides).unwrap();
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

/// Hard-links (or copies, across file systems) every cached .deb into `pool`, made if needed;
/// returns their package names.
pub fn link_cache_into(pool: &Path) -> BTreeSet<String> {
    std::fs::create_dir_all(pool).unwrap();
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(CACHE).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "deb") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            names.insert(name.split('_').next().unwrap().to_owned());
            std::fs::hard_link(&path, pool.join(&name))
                .or_else(|_| std::fs::copy(&path, pool.join(&name)).map(drop))
                .unwrap();
        }
    }
    names
}
