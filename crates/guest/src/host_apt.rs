//! The host's apt sources, read to find the archive a built-in Debian-family distribution is
//! built from.
//!
//! The built-in distributions name no archive host of their own: a host that runs apt already
//! says, in `/etc/apt`, which archive (or mirror, or proxy) it may reach. [`HostAptSources`]
//! reads the entries apt itself would read — `sources.list` (one-line format), then
//! `sources.list.d/*.list` (one-line) and `sources.list.d/*.sources` (deb822), in name order
//! (apt's `sources.list(5)` man page) — and keeps the `deb` entries:
//!
//! - a commented-out line, a stanza with `Enabled: no`, a file apt ignores (another extension,
//!   such as `.list.disabled`, or a name with other characters than letters, digits, `_`, `-`
//!   and `.`) and a `deb-src` entry are skipped;
//! - an archive serves a suite with components when the enabled `deb` entries for that URI and
//!   suite, together, list all the components (the classic Ubuntu `sources.list` names `main
//!   restricted` and `universe` on two lines). A third-party repository therefore does not
//!   count: its suite is its own (`nodistro`, `bookworm-pgdg`) or its components are (`bookworm
//!   stable`);
//! - the first such URI, in apt's reading order, is the archive; a URI that is not one plain
//!   URL with a scheme (a `cdrom:` entry included) is passed over.
//!
//! Options of the host's entries (`signed-by`, `arch`, `trusted`) are not carried over: a
//! built-in distribution verifies with its own keyring. Unreadable files are passed over as apt
//! would fail on them; the build's error then names the directory searched.
//!
//! The directory is `/etc/apt`, or `VSERVER_APT_SOURCES_DIR` when set (tests point it at a
//! temporary tree).

use std::path::{Path, PathBuf};

/// The environment variable that replaces `/etc/apt` as the host's apt configuration directory.
pub const APT_SOURCES_DIR_VAR: &str = "VSERVER_APT_SOURCES_DIR";

/// The `deb` entries of the host's apt sources, in apt's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAptSources {
    dir: PathBuf,
    entries: Vec<Entry>,
}

/// One URI and suite of an enabled `deb` entry, with its components.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uri: String,
    suite: String,
    components: Vec<String>,
}

impl HostAptSources {
    /// The host's apt configuration directory: `VSERVER_APT_SOURCES_DIR` if set, else
    /// `/etc/apt`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os(APT_SOURCES_DIR_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/apt"))
    }

    /// Reads `DIR/sources.list` and `DIR/sources.list.d/`; missing or unreadable files hold no
    /// entries.
    pub fn read(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let mut entries = Vec::new();
        if let Ok(text) = fs_err::read_to_string(dir.join("sources.list")) {
            entries.extend(one_line_entries(&text));
        }
        let parts = dir.join("sources.list.d");
        let mut files: Vec<(String, PathBuf)> = fs_err::read_dir(&parts)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                Some((name, entry.path()))
            })
            .filter(|(name, path)| apt_reads(name) && path.is_file())
            .collect();
        files.sort();
        for (name, path) in files {
            let Ok(text) = fs_err::read_to_string(&path) else {
                continue;
            };
            if name.ends_with(".sources") {
                entries.extend(deb822_entries(&text));
            } else {
                entries.extend(one_line_entries(&text));
            }
        }
        HostAptSources { dir, entries }
    }

    /// The directory read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The archive that serves `suite` with all of `components`: the first such URI in apt's
    /// order (see the module documentation).
    pub fn archive(&self, suite: &str, components: &[&str]) -> Option<&str> {
        self.entries
            .iter()
            .filter(|e| e.suite == suite)
            .map(|e| e.uri.as_str())
            .find(|uri| {
                components.iter().all(|wanted| {
                    self.entries.iter().any(|e| {
                        e.suite == suite
                            && same_uri(&e.uri, uri)
                            && e.components.iter().any(|c| c == wanted)
                    })
                })
            })
    }

    /// A release's `sources.list`: `CODENAME` from its archive, then `CODENAME-updates` and
    /// `CODENAME-security` from the archives that serve them, each only when the host's sources
    /// name one (a guest gets the suites its host gets). `None` when no archive serves the
    /// release suite itself.
    pub fn release_sources(&self, codename: &str, components: &[&str]) -> Option<String> {
        let release = self.archive(codename, components)?;
        let mut text = format!("deb {release} {codename} {}\n", components.join(" "));
        for suffix in ["updates", "security"] {
            let suite = format!("{codename}-{suffix}");
            if let Some(uri) = self.archive(&suite, components) {
                text.push_str(&format!("deb {uri} {suite} {}\n", components.join(" ")));
            }
        }
        Some(text)
    }
}

/// Whether apt reads a file of `sources.list.d/` with this name.
fn apt_reads(name: &str) -> bool {
    (name.ends_with(".list") || name.ends_with(".sources"))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

/// URIs that differ only by a trailing `/` name the same archive.
fn same_uri(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

/// A URI a guest's `sources.list` can carry: one plain URL with a scheme, not a CD-ROM.
fn usable_uri(uri: &str) -> bool {
    crate::distribution::check::url("archive", uri).is_ok() && !uri.starts_with("cdrom:")
}

/// `deb [OPTIONS] URI SUITE [COMPONENT…]` lines; `#` starts a comment anywhere on a line.
fn one_line_entries(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let Some(rest) = line.strip_prefix("deb") else {
            continue;
        };
        if !rest.starts_with(char::is_whitespace) {
            continue; // `deb-src`, or no entry at all
        }
        let mut rest = rest.trim_start();
        if let Some(options) = rest.strip_prefix('[') {
            let Some((_, after)) = options.split_once(']') else {
                continue;
            };
            rest = after;
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        if usable_uri(uri) {
            entries.push(Entry {
                uri: uri.to_owned(),
                suite: suite.to_owned(),
                components: words.map(str::to_owned).collect(),
            });
        }
    }
    entries
}

/// deb822 stanzas: `Types`, `URIs`, `Suites`, `Components`, `Enabled`. Field names are
/// case-insensitive, values continue on lines that start with white space, `#` starts a
/// comment line, and blank lines separate stanzas.
fn deb822_entries(text: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut stanza: Vec<(String, String)> = Vec::new();
    let mut flush = |stanza: &mut Vec<(String, String)>| {
        let field = |name: &str| {
            stanza
                .iter()
                .rev()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.as_str())
                .unwrap_or_default()
        };
        let words = |name: &str| field(name).split_whitespace().collect::<Vec<_>>();
        let disabled = matches!(
            field("Enabled").trim().to_ascii_lowercase().as_str(),
            "no" | "false" | "off" | "without" | "disable" | "0"
        );
        if !disabled && words("Types").contains(&"deb") {
            let components = words("Components");
            for uri in words("URIs").into_iter().filter(|uri| usable_uri(uri)) {
                for suite in words("Suites") {
                    entries.push(Entry {
                        uri: uri.to_owned(),
                        suite: suite.to_owned(),
                        components: components.iter().map(|c| (*c).to_owned()).collect(),
                    });
                }
            }
        }
        stanza.clear();
    };
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if line.trim().is_empty() {
            flush(&mut stanza);
        } else if line.starts_with([' ', '\t']) {
            if let Some((_, value)) = stanza.last_mut() {
                value.push('\n');
                value.push_str(line);
            }
        } else if let Some((key, value)) = line.split_once(':') {
            stanza.push((key.trim().to_owned(), value.trim().to_owned()));
        }
    }
    flush(&mut stanza);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temporary `/etc/apt` with these files (paths relative to it).
    fn apt_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sources.list.d")).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn sources(files: &[(&str, &str)]) -> (tempfile::TempDir, HostAptSources) {
        let dir = apt_dir(files);
        let sources = HostAptSources::read(dir.path());
        (dir, sources)
    }

    #[test]
    fn one_line_sources_list() {
        let (_dir, host) = sources(&[(
            "sources.list",
            "# deb http://commented.test/debian bookworm main\n\
             deb-src http://src.test/debian bookworm main\n\
             deb [arch=amd64 signed-by=/usr/share/keyrings/k.gpg] http://archive.test/debian/ bookworm main contrib # note\n\
             deb [ trusted=yes ] http://archive.test/debian/ bookworm-updates main\n\
             deb http://security.test/debian-security bookworm-security main\n",
        )]);
        assert_eq!(
            host.archive("bookworm", &["main"]),
            Some("http://archive.test/debian/")
        );
        assert_eq!(
            host.release_sources("bookworm", &["main"]).unwrap(),
            "deb http://archive.test/debian/ bookworm main\n\
             deb http://archive.test/debian/ bookworm-updates main\n\
             deb http://security.test/debian-security bookworm-security main\n"
        );
        assert_eq!(host.archive("trixie", &["main"]), None);
        assert_eq!(host.release_sources("trixie", &["main"]), None);
    }

    #[test]
    fn deb822_sources_and_disabled_entries() {
        let (_dir, host) = sources(&[
            (
                "sources.list.d/debian.sources",
                "Types: deb\n\
                 # URIs: http://commented.test/debian\n\
                 URIs: http://archive.test/debian\n\
                 Suites: bookworm bookworm-updates\n\
                 Components: main\n\
                 Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n xyz\n -----END PGP PUBLIC KEY BLOCK-----\n\
                 \n\
                 types: deb deb-src\n\
                 uris: http://security.test/debian-security\n\
                 suites: bookworm-security\n\
                 components:\n  main\n  contrib\n",
            ),
            // Read before `debian.sources`, but disabled.
            (
                "sources.list.d/a-old.sources",
                "Types: deb\nURIs: http://old.test/debian\nSuites: bookworm\n\
                 Components: main\nEnabled: no\n",
            ),
            // Files apt does not read.
            (
                "sources.list.d/b.list.disabled",
                "deb http://disabled.test/debian bookworm main\n",
            ),
            (
                "sources.list.d/b~.list",
                "deb http://backup.test/debian bookworm main\n",
            ),
            // A source-only stanza.
            (
                "sources.list.d/c.sources",
                "Types: deb-src\nURIs: http://src.test/debian\nSuites: bookworm\nComponents: main\n",
            ),
        ]);
        assert_eq!(
            host.release_sources("bookworm", &["main"]).unwrap(),
            "deb http://archive.test/debian bookworm main\n\
             deb http://archive.test/debian bookworm-updates main\n\
             deb http://security.test/debian-security bookworm-security main\n"
        );
    }

    #[test]
    fn third_party_repositories_do_not_count() {
        let (_dir, host) = sources(&[
            (
                "sources.list.d/nodesource.sources",
                "Types: deb\nURIs: https://node.test/node_20.x\nSuites: nodistro\nComponents: main\n",
            ),
            (
                "sources.list.d/docker.list",
                "deb [arch=amd64] https://docker.test/linux/debian bookworm stable\n",
            ),
            (
                "sources.list.d/pgdg.list",
                "deb http://pg.test/pub/repos/apt bookworm-pgdg main\n",
            ),
            (
                "sources.list.d/cd.list",
                "deb cdrom:[Debian 12]/ bookworm main\n",
            ),
        ]);
        assert_eq!(host.archive("bookworm", &["main"]), None);
        assert_eq!(host.release_sources("bookworm", &["main"]), None);

        // The same beside the Debian archive: the archive is chosen, whatever the order.
        let (_dir, host) = sources(&[
            (
                "sources.list",
                "deb [arch=amd64] https://docker.test/linux/debian bookworm stable\n",
            ),
            (
                "sources.list.d/zz-debian.list",
                "deb http://archive.test/debian bookworm main\n",
            ),
        ]);
        assert_eq!(
            host.release_sources("bookworm", &["main"]).unwrap(),
            "deb http://archive.test/debian bookworm main\n"
        );
    }

    #[test]
    fn components_may_be_spread_over_entries() {
        let (_dir, host) = sources(&[(
            "sources.list",
            "deb http://archive.test/ubuntu/ jammy main restricted\n\
             deb http://archive.test/ubuntu/ jammy universe\n\
             deb http://archive.test/ubuntu/ jammy-updates main\n\
             deb http://security.test/ubuntu/ jammy-security main restricted universe\n",
        )]);
        assert_eq!(
            host.release_sources("jammy", &["main", "universe"])
                .unwrap(),
            "deb http://archive.test/ubuntu/ jammy main universe\n\
             deb http://security.test/ubuntu/ jammy-security main universe\n"
        );
        // Another archive with only `main` for `jammy` does not serve `universe`.
        assert_eq!(host.archive("jammy-updates", &["main", "universe"]), None);
    }

    #[test]
    fn missing_or_empty_directory() {
        let host = HostAptSources::read("/nonexistent/vserver-test/apt");
        assert_eq!(host.release_sources("bookworm", &["main"]), None);
        let (_dir, host) = sources(&[]);
        assert_eq!(host.archive("bookworm", &["main"]), None);
    }
}
