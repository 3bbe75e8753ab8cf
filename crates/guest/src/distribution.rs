//! Distributions: what a guest is built from.
//!
//! A registered distribution is a directory `/etc/vservers/.distributions/D/` (util-vserver's
//! layout, extended):
//!
//! ```text
//! distribution.toml     family = "rpm", releasever = "41", arch = "x86_64", gpgcheck = false
//! yum.repos.d/*.repo    dnf repository files ($releasever, $basearch work)
//! pkgs/NN               package lists, installed in order; a line `--can-fail NAME` may fail
//! rpm/macros            extra rpm macros for the guest
//! pubkeys/*             public keys imported into the guest's database
//! ```
//!
//! `distribution.toml` is optional (a directory written by hand as in the seed: family rpm when
//! `yum.repos.d` exists). Built-in distributions ship in the binary; a registered directory of
//! the same name replaces the built-in one.
//!
//! Every value `vdistro add` writes, and every file read back from a registered directory, is
//! checked first (module `check`): builds copy these files into each guest's package state, and
//! a line break in a value would add repositories, sources or macros nobody registered.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vserver_pkgmgmt::Family;

use crate::error::{Error, Result, check_name};

pub(crate) mod check;

/// One line of a package list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageEntry {
    /// The package (or capability) name.
    pub name: String,
    /// Whether the build goes on when it cannot be installed.
    pub can_fail: bool,
}

impl PackageEntry {
    /// Parses `NAME` or `--can-fail NAME`.
    pub fn parse(line: &str) -> PackageEntry {
        let line = line.trim();
        match line.strip_prefix("--can-fail") {
            Some(rest) => PackageEntry {
                name: rest.trim().to_owned(),
                can_fail: true,
            },
            None => PackageEntry {
                name: line.to_owned(),
                can_fail: false,
            },
        }
    }
}

/// Where a distribution comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DistributionSource {
    /// Shipped in the binary.
    Builtin,
    /// A registered directory.
    Registered(PathBuf),
}

/// A distribution, built-in or registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Its name (`fedora-41`).
    pub name: String,
    /// One line for `vdistro list`.
    pub description: String,
    /// rpm or deb.
    pub family: Family,
    /// The release version (`$releasever`).
    pub releasever: String,
    /// The architecture (`$basearch`); empty: the host's.
    pub arch: String,
    /// Whether package signatures are checked.
    pub gpgcheck: bool,
    /// Repository files: file name and content (rpm family).
    pub repo_files: Vec<(String, String)>,
    /// apt's `sources.list` (deb family): one-line sources.
    pub apt_sources: String,
    /// A built-in Debian-family distribution whose release suite the host's apt sources serve
    /// from no archive: its `apt_sources` is empty, and a build needs `--mirror`.
    pub missing_archive: Option<MissingArchive>,
    /// Package lists `pkgs/NN`, in order.
    pub package_lists: Vec<(String, Vec<PackageEntry>)>,
    /// Extra rpm macros.
    pub macros: String,
    /// Public key files (host paths): rpm keys, or the keyrings apt verifies Release files with.
    pub pubkeys: Vec<PathBuf>,
    /// Built-in or registered.
    pub source: DistributionSource,
}

/// The release a built-in Debian-family distribution found no archive for in the host's apt
/// sources (see [`HostAptSources`](crate::HostAptSources)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingArchive {
    /// The release suite (`bookworm`).
    pub suite: String,
    /// Its components (`main`).
    pub components: Vec<String>,
    /// The apt configuration directory searched (`/etc/apt`).
    pub apt_dir: PathBuf,
}

/// The release version the seed's naming makes obvious: a known vendor prefix, an optional
/// `-`, then the version (`fc3` → `3`, `f39` → `39`, `centos7` → `7`, `el9` → `9`,
/// `rocky-9.4` → `9.4`). `None` for any other name.
pub fn releasever_from_name(name: &str) -> Option<String> {
    const PREFIXES: &[&str] = &[
        "almalinux",
        "fedora",
        "centos",
        "rocky",
        "alma",
        "rhel",
        "fc",
        "el",
        "ol",
        "sl",
        "f",
    ];
    let lower = name.to_ascii_lowercase();
    let prefix = PREFIXES.iter().find(|p| lower.starts_with(*p))?;
    let rest = &lower[prefix.len()..];
    let version = rest.strip_prefix('-').unwrap_or(rest);
    let well_formed = version.starts_with(|c: char| c.is_ascii_digit())
        && version.ends_with(|c: char| c.is_ascii_digit())
        && version.chars().all(|c| c.is_ascii_digit() || c == '.')
        && !version.contains("..");
    well_formed.then(|| version.to_owned())
}

/// What dnf will really check for one repository of an rpm distribution: the repository file's
/// own `gpgcheck`/`repo_gpgcheck` over the generated `dnf.conf`'s (`gpgcheck` = the
/// distribution's), and nothing at all when the distribution's `gpgcheck` is off (every
/// operation then passes `--nogpgcheck`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoCheck {
    /// The repository id (`[ID]`).
    pub id: String,
    /// The file it is defined in.
    pub file: String,
    /// Package signatures are checked.
    pub gpgcheck: bool,
    /// The metadata's signature (`repomd.xml.asc`) is checked.
    pub repo_gpgcheck: bool,
    /// Where the keys come from (`gpgkey=`), as written.
    pub gpgkeys: Vec<String>,
}

/// dnf's boolean spellings.
fn dnf_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

impl Distribution {
    /// Per repository, what dnf will really check ([`RepoCheck`]); empty for a deb one.
    pub fn repo_checks(&self) -> Vec<RepoCheck> {
        let mut checks: Vec<RepoCheck> = Vec::new();
        for (file, text) in &self.repo_files {
            let mut current: Option<RepoCheck> = None;
            let mut last_key = String::new();
            for line in text.lines() {
                let trimmed = line.trim();
                if trimmed.is_empty() || trimmed.starts_with(['#', ';']) {
                    continue;
                }
                if line.starts_with([' ', '\t']) {
                    // A continuation: more keys of `gpgkey`.
                    if let (Some(repo), "gpgkey") = (current.as_mut(), last_key.as_str()) {
                        repo.gpgkeys.extend(
                            trimmed
                                .split([' ', ','])
                                .filter(|w| !w.is_empty())
                                .map(str::to_owned),
                        );
                    }
                    continue;
                }
                if let Some(id) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                    checks.extend(current.take());
                    current = Some(RepoCheck {
                        id: id.to_owned(),
                        file: file.clone(),
                        gpgcheck: self.gpgcheck,
                        repo_gpgcheck: false,
                        gpgkeys: Vec::new(),
                    });
                    continue;
                }
                let (Some(repo), Some((key, value))) = (current.as_mut(), trimmed.split_once('='))
                else {
                    continue;
                };
                last_key = key.trim().to_owned();
                match last_key.as_str() {
                    "gpgcheck" => repo.gpgcheck = dnf_bool(value).unwrap_or(repo.gpgcheck),
                    "repo_gpgcheck" => {
                        repo.repo_gpgcheck = dnf_bool(value).unwrap_or(repo.repo_gpgcheck)
                    }
                    "gpgkey" => repo.gpgkeys.extend(
                        value
                            .split([' ', ','])
                            .filter(|w| !w.is_empty())
                            .map(str::to_owned),
                    ),
                    _ => {}
                }
            }
            checks.extend(current);
        }
        if !self.gpgcheck {
            for check in &mut checks {
                check.gpgcheck = false;
                check.repo_gpgcheck = false;
            }
        }
        checks
    }
}

/// `distribution.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DistributionToml {
    #[serde(default)]
    description: String,
    #[serde(default)]
    family: Option<String>,
    #[serde(default)]
    releasever: String,
    #[serde(default)]
    arch: String,
    #[serde(default = "yes")]
    gpgcheck: bool,
}

fn yes() -> bool {
    true
}

/// What `vdistro add` registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDistribution {
    /// The name.
    pub name: String,
    /// One line of description.
    pub description: String,
    /// The release version.
    pub releasever: String,
    /// The architecture (empty: the host's).
    pub arch: String,
    /// rpm or deb.
    pub family: Family,
    /// Repositories: id and base URL (rpm family).
    pub repos: Vec<(String, String)>,
    /// apt sources (deb family): `URL SUITE [COMPONENT…]`, `main` when no component is given.
    pub apt_sources: Vec<String>,
    /// Mark the apt sources `[trusted=yes]`: an unsigned repository, trusted explicitly.
    pub trusted: bool,
    /// Whether signatures are checked.
    pub gpgcheck: bool,
    /// Package lists (each a list of lines: `NAME`, `--can-fail NAME` or `?NAME`).
    pub package_lists: Vec<Vec<String>>,
    /// Extra rpm macros.
    pub macros: String,
    /// Public key files to copy in.
    pub pubkeys: Vec<PathBuf>,
    /// Replace an existing registration.
    pub force: bool,
}

impl Default for NewDistribution {
    fn default() -> Self {
        NewDistribution {
            name: String::new(),
            description: String::new(),
            releasever: String::new(),
            arch: String::new(),
            family: Family::Rpm,
            repos: Vec::new(),
            apt_sources: Vec::new(),
            trusted: false,
            gpgcheck: false,
            package_lists: Vec::new(),
            macros: String::new(),
            pubkeys: Vec::new(),
            force: false,
        }
    }
}

/// Built-in plus registered distributions.
#[derive(Debug, Clone)]
pub struct DistributionStore {
    dir: PathBuf,
    apt_dir: PathBuf,
}

impl DistributionStore {
    /// The store whose registered distributions live in `dir` (`confdir/.distributions`); the
    /// built-in Debian-family ones take their archives from the host's apt sources in
    /// [`HostAptSources::default_dir`](crate::HostAptSources::default_dir).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DistributionStore {
            dir: dir.into(),
            apt_dir: crate::HostAptSources::default_dir(),
        }
    }

    /// Reads the host's apt sources from `apt_dir` instead (`/etc/apt` by default).
    pub fn with_apt_dir(mut self, apt_dir: impl Into<PathBuf>) -> Self {
        self.apt_dir = apt_dir.into();
        self
    }

    /// Every distribution, registered ones replacing built-ins of the same name, sorted.
    pub fn list(&self) -> Result<Vec<Distribution>> {
        let host = crate::HostAptSources::read(&self.apt_dir);
        let mut all = crate::builtin::builtins(&host);
        for name in self.registered_names()? {
            let registered = self.load_registered(&name)?;
            all.retain(|d| d.name != name);
            all.push(registered);
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(all)
    }

    /// The distribution `name`, with a "did you mean" suggestion when there is none.
    pub fn get(&self, name: &str) -> Result<Distribution> {
        if check_name("distribution", name).is_ok() && self.dir.join(name).is_dir() {
            return self.load_registered(name);
        }
        let all = self.list()?;
        if let Some(found) = all.iter().find(|d| d.name == name) {
            return Ok(found.clone());
        }
        Err(Error::UnknownDistribution {
            name: name.to_owned(),
            suggestion: crate::closest(name, all.iter().map(|d| d.name.as_str())),
        })
    }

    fn registered_names(&self) -> Result<Vec<String>> {
        let entries = match fs_err::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &self.dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Error::io("read", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() && check_name("distribution", &name).is_ok() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    fn load_registered(&self, name: &str) -> Result<Distribution> {
        let dir = self.dir.join(name);
        let bad = |path: &Path, problem: String| Error::BadDistribution {
            name: name.to_owned(),
            path: path.to_owned(),
            problem,
        };
        let toml_path = dir.join("distribution.toml");
        let meta: DistributionToml = match fs_err::read_to_string(&toml_path) {
            Ok(text) => toml::from_str(&text).map_err(|source| Error::Parse {
                path: toml_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DistributionToml {
                gpgcheck: true,
                ..DistributionToml::default()
            },
            Err(e) => return Err(Error::io("read", &toml_path)(e)),
        };
        let checked = |path: &Path, result: check::Checked| {
            result.map_err(|refusal| refusal.into_error(name, Some(path)))
        };
        let family = match meta.family.as_deref() {
            Some("rpm") => Family::Rpm,
            Some("deb") => Family::Deb,
            Some(other) => {
                return Err(bad(
                    &toml_path,
                    format!("unknown family `{other}` (expected rpm or deb)"),
                ));
            }
            None if dir.join("apt").is_dir() => Family::Deb,
            None => Family::Rpm,
        };
        checked(&toml_path, check::description(&meta.description))?;
        checked(&toml_path, check::releasever(&meta.releasever))?;
        checked(&toml_path, check::arch(family, &meta.arch))?;
        let mut repo_files = Vec::new();
        for (file, path) in read_files(&dir.join("yum.repos.d"), Some("repo"))? {
            checked(&path, check::repo_file_name(&file))?;
            let text = fs_err::read_to_string(&path).map_err(Error::io("read", &path))?;
            checked(&path, check::repo_file(&text))?;
            repo_files.push((file, text));
        }
        let mut package_lists = Vec::new();
        for (file, path) in read_files(&dir.join("pkgs"), None)? {
            checked(&path, check::file_name("package list name", &file))?;
            let text = fs_err::read_to_string(&path).map_err(Error::io("read", &path))?;
            let entries = check::package_list_file(family, &text)
                .map_err(|refusal| refusal.into_error(name, Some(&path)))?;
            package_lists.push((file, entries));
        }
        let macros_path = dir.join("rpm/macros");
        let macros = match fs_err::read_to_string(&macros_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("read", &macros_path)(e)),
        };
        checked(&macros_path, check::macros(&macros))?;
        let apt_sources_path = dir.join("apt/sources.list");
        let apt_sources = match fs_err::read_to_string(&apt_sources_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(Error::io("read", &apt_sources_path)(e)),
        };
        checked(&apt_sources_path, check::sources_list(&apt_sources))?;
        let mut pubkeys = Vec::new();
        for keys_dir in [dir.join("pubkeys"), dir.join("apt/trusted.gpg.d")] {
            for (file, path) in read_files(&keys_dir, None)? {
                checked(&path, check::file_name("public key file name", &file))?;
                pubkeys.push(path);
            }
        }
        Ok(Distribution {
            name: name.to_owned(),
            description: meta.description,
            family,
            releasever: meta.releasever,
            arch: meta.arch,
            gpgcheck: meta.gpgcheck,
            repo_files,
            apt_sources,
            missing_archive: None,
            package_lists,
            macros,
            pubkeys,
            source: DistributionSource::Registered(dir),
        })
    }

    /// Registers a distribution (`vdistro add`): writes its directory beside the final one and
    /// renames it into place, so a failure leaves nothing half-written.
    pub fn add(&self, new: &NewDistribution) -> Result<PathBuf> {
        check_name("distribution", &new.name)?;
        let target = self.dir.join(&new.name);
        // The keys' path as the operation sandbox sees it: the host's, read-only.
        let keys_dir = std::path::absolute(&target)
            .map_err(Error::io("resolve", &target))?
            .join("pubkeys");
        let files = new.checked_files(&keys_dir)?;
        if target.exists() && !new.force {
            return Err(Error::DistributionExists {
                name: new.name.clone(),
                path: target,
            });
        }
        let missing = match new.family {
            Family::Rpm if new.repos.is_empty() => Some("no repository given (--repo ID=URL)"),
            Family::Deb if new.apt_sources.is_empty() => {
                Some("no apt source given (--apt-source 'URL SUITE [COMPONENT...]')")
            }
            _ => None,
        };
        if let Some(problem) = missing {
            return Err(Error::BadDistribution {
                name: new.name.clone(),
                path: target,
                problem: problem.into(),
            });
        }
        fs_err::create_dir_all(&self.dir).map_err(Error::io("create", &self.dir))?;
        let staging = self
            .dir
            .join(format!(".{}.new-{}", new.name, std::process::id()));
        let _ = fs_err::remove_dir_all(&staging);
        let result = write_distribution(&staging, new, &files);
        if let Err(e) = result {
            let _ = fs_err::remove_dir_all(&staging);
            return Err(e);
        }
        if target.exists() {
            let old = self
                .dir
                .join(format!(".{}.old-{}", new.name, std::process::id()));
            fs_err::rename(&target, &old).map_err(Error::io("move aside", &target))?;
            fs_err::rename(&staging, &target).map_err(Error::io("rename into", &target))?;
            let _ = fs_err::remove_dir_all(&old);
        } else {
            fs_err::rename(&staging, &target).map_err(Error::io("rename into", &target))?;
        }
        Ok(target)
    }
}

/// What a new registration writes besides `distribution.toml`, the macros and the keys: the
/// file contents built from the checked values.
struct NewFiles {
    /// `yum.repos.d/ID.repo`: file name and content.
    repo_files: Vec<(String, String)>,
    /// `pkgs/NN`, in order: one `NAME` or `--can-fail NAME` per line.
    package_lists: Vec<String>,
    /// `apt/sources.list` (deb family).
    apt_sources: Option<String>,
}

impl NewDistribution {
    /// Checks every value that lands in a file (module `check`) and builds the files from
    /// them; nothing is written before all of them pass.
    ///
    /// An rpm repository with `gpgcheck` and keys also gets `repo_gpgcheck=1` (dnf checks the
    /// signature of its metadata, `repomd.xml.asc`) and `gpgkey=` naming the keys where they
    /// are registered, below `keys_dir` (a host path: the operation sandbox shows the host
    /// read-only).
    fn checked_files(&self, keys_dir: &Path) -> Result<NewFiles> {
        let given = |result: check::Checked| result.map_err(|r| r.into_error(&self.name, None));
        given(check::description(&self.description))?;
        given(check::releasever(&self.releasever))?;
        given(check::arch(self.family, &self.arch))?;
        let mut key_urls = Vec::new();
        for key in &self.pubkeys {
            let file = key.file_name().map(|f| f.to_string_lossy().into_owned());
            let file = file.unwrap_or_default();
            given(check::file_name("public key file name", &file))?;
            key_urls.push(format!("file://{}", keys_dir.join(&file).display()));
        }
        let signed = self.gpgcheck && !key_urls.is_empty();
        if signed {
            for url in &key_urls {
                given(check::url("public key path", url))?;
            }
        }
        let mut repo_files = Vec::new();
        for (id, url) in &self.repos {
            given(check::repo_id(id))?;
            given(check::url("repository URL", url))?;
            let mut text = format!(
                "[{id}]\nname={} $releasever - {id}\nbaseurl={url}\nenabled=1\ngpgcheck={}\n",
                self.name,
                u8::from(self.gpgcheck)
            );
            if signed {
                text.push_str(&format!("repo_gpgcheck=1\ngpgkey={}\n", key_urls.join(" ")));
            }
            repo_files.push((format!("{id}.repo"), text));
        }
        let mut package_lists = Vec::new();
        for list in &self.package_lists {
            let mut text = String::new();
            for line in list {
                given(check::one_line("package list", line))?;
                let entries = check::package_line(self.family, line)
                    .map_err(|r| r.into_error(&self.name, None))?;
                for entry in entries {
                    let prefix = if entry.can_fail { "--can-fail " } else { "" };
                    text.push_str(&format!("{prefix}{}\n", entry.name));
                }
            }
            package_lists.push(text);
        }
        given(check::macros(&self.macros))?;
        let apt_sources = match self.family {
            Family::Rpm => None,
            Family::Deb => Some(
                self.apt_sources
                    .iter()
                    .map(|source| apt_source_line(&self.name, source, self.trusted))
                    .collect::<Result<Vec<_>>>()?
                    .concat(),
            ),
        };
        Ok(NewFiles {
            repo_files,
            package_lists,
            apt_sources,
        })
    }
}

/// Writes a new registration's directory `dir` from checked values.
fn write_distribution(dir: &Path, new: &NewDistribution, files: &NewFiles) -> Result<()> {
    let write = |path: PathBuf, text: &str| -> Result<()> {
        if let Some(parent) = path.parent() {
            fs_err::create_dir_all(parent).map_err(Error::io("create", parent))?;
        }
        fs_err::write(&path, text).map_err(Error::io("write", &path))
    };
    let meta = DistributionToml {
        description: new.description.clone(),
        family: Some(new.family.as_str().into()),
        releasever: new.releasever.clone(),
        arch: new.arch.clone(),
        gpgcheck: new.gpgcheck,
    };
    let text = toml::to_string(&meta).map_err(|e| Error::BadDistribution {
        name: new.name.clone(),
        path: dir.join("distribution.toml"),
        problem: e.to_string(),
    })?;
    write(dir.join("distribution.toml"), &text)?;
    for (file, text) in &files.repo_files {
        write(dir.join("yum.repos.d").join(file), text)?;
    }
    for (i, text) in files.package_lists.iter().enumerate() {
        write(dir.join("pkgs").join(format!("{:02}", i + 1)), text)?;
    }
    if !new.macros.is_empty() {
        write(dir.join("rpm/macros"), &new.macros)?;
    }
    if let Some(sources) = &files.apt_sources {
        write(dir.join("apt/sources.list"), sources)?;
    }
    // apt reads keyrings from trusted.gpg.d; rpm keys stay in pubkeys/.
    let keys_dir = match new.family {
        Family::Rpm => dir.join("pubkeys"),
        Family::Deb => dir.join("apt/trusted.gpg.d"),
    };
    for key in &new.pubkeys {
        // Checked: every key has a plain file name.
        let Some(name) = key.file_name() else {
            continue;
        };
        fs_err::create_dir_all(&keys_dir).map_err(Error::io("create", &keys_dir))?;
        fs_err::copy(key, keys_dir.join(name)).map_err(Error::io("copy", key))?;
    }
    Ok(())
}

/// One `sources.list` line from `URL SUITE [COMPONENT…]` (module `check`: one line of plain
/// words, the URL with a scheme).
pub(crate) fn apt_source_line(name: &str, source: &str, trusted: bool) -> Result<String> {
    let source = check::apt_source(source).map_err(|r| r.into_error(name, None))?;
    let (url, suite) = (source.url, source.suite);
    let components = if source.components.is_empty() {
        "main".to_owned()
    } else {
        source.components.join(" ")
    };
    let options = if trusted { "[trusted=yes] " } else { "" };
    Ok(format!("deb {options}{url} {suite} {components}\n"))
}

/// The regular files of `dir` (sorted by name), optionally only those with `extension`;
/// an absent directory is empty.
fn read_files(dir: &Path, extension: Option<&str>) -> Result<Vec<(String, PathBuf)>> {
    let entries = match fs_err::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", dir)(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("read", dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        if extension.is_some_and(|ext| path.extension().and_then(|e| e.to_str()) != Some(ext)) {
            continue;
        }
        files.push((name, path));
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_version_from_the_seeds_names() {
        for (name, version) in [
            ("fc3", Some("3")),
            ("f39", Some("39")),
            ("centos7", Some("7")),
            ("el9", Some("9")),
            ("rocky-9.4", Some("9.4")),
            ("fedora-41", Some("41")),
            ("local", None),
            ("fc", None),
            ("f39x", None),
            ("el9.", None),
            ("debian12", None),
        ] {
            assert_eq!(releasever_from_name(name).as_deref(), version, "{name}");
        }
    }
}
