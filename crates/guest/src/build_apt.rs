//! `vserver G build -m apt|debootstrap`: a Debian-family guest from a distribution's apt
//! sources, bootstrapped with the host's apt and dpkg ([`vserver_pkgmgmt::DebBackend`]), the
//! dpkg database in `.pkg/G/dpkg/state`.
//!
//! A registered Debian-family distribution is a directory `.distributions/D/` with
//!
//! ```text
//! distribution.toml          family = "deb", releasever = "12", arch = "amd64" (empty: the host's)
//! apt/sources.list           one-line sources; `deb [trusted=yes] URL SUITE COMPONENT…` marks an
//!                            unsigned repository as trusted, explicitly
//! apt/trusted.gpg.d/*.gpg|asc   keyrings apt verifies Release files with (also pubkeys/*)
//! pkgs/NN                    extra package lists, installed after the variant
//! ```
//!
//! `-m debootstrap` is the same method under util-vserver's name: nothing calls debootstrap.

use std::path::{Path, PathBuf};

use vserver_pkgmgmt::{DebBackend, DebSettings, PackageBackend, PkgLayout, Variant};

use crate::config::{GuestConfig, PackageManagement};
use crate::distribution::Distribution;
use crate::error::{Error, Result};
use crate::roots::HostRoots;

/// What a Debian build needs besides the distribution.
pub(crate) struct DebBuild<'a> {
    /// The guest's name.
    pub guest: &'a str,
    /// The guest root (canonical host path).
    pub root: &'a Path,
    /// The variant.
    pub variant: Variant,
    /// Extra packages after the variant and the distribution's lists.
    pub packages: &'a [String],
    /// Let apt's and dpkg's output through.
    pub verbose: bool,
    /// Build from this mirror instead of the distribution's sources.
    pub mirror: Option<&'a AptMirror>,
    /// The time limit of each run of apt or dpkg (`None`: the back end's default).
    pub time_limit: Option<std::time::Duration>,
    /// Where the package transactions' progress goes.
    pub progress: Option<vserver_pkgmgmt::ProgressSink>,
}

/// The distribution's `sources.list` and keyrings, or the one mirror that replaces its sources.
fn apt_sources(
    distribution: &Distribution,
    mirror: Option<&AptMirror>,
) -> Result<(String, Vec<PathBuf>)> {
    let refuse = |problem: String| Error::BadRequest {
        guest: String::new(),
        problem,
    };
    check_archive("", distribution, mirror)?;
    let sources = match mirror {
        Some(mirror) => mirror.sources_line(distribution)?,
        None => distribution.apt_sources.clone(),
    };
    if sources.trim().is_empty() {
        return Err(refuse(format!(
            "distribution `{}` has no apt sources; register one with `vdistro add --family deb \
             --apt-source 'URL SUITE COMPONENT'`",
            distribution.name
        )));
    }
    let trusts_all = mirror.is_some_and(|m| m.trusted);
    for keyring in &distribution.pubkeys {
        if !trusts_all && !keyring.is_file() {
            return Err(refuse(format!(
                "keyring `{}` of distribution `{}` is missing (install the distribution's \
                 keyring package, e.g. debian-archive-keyring or ubuntu-keyring)",
                keyring.display(),
                distribution.name
            )));
        }
    }
    let mut keyrings = distribution.pubkeys.clone();
    keyrings.retain(|k| k.is_file());
    keyrings.sort();
    Ok((sources, keyrings))
}

/// Refuses, before anything is built, a built-in distribution whose archive the host's apt
/// sources do not name when no `--mirror` replaces it.
pub(crate) fn check_archive(
    guest: &str,
    distribution: &Distribution,
    mirror: Option<&AptMirror>,
) -> Result<()> {
    match (&distribution.missing_archive, mirror) {
        (Some(missing), None) => Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: format!(
                "no archive for suite `{suite}` of distribution `{name}` found in the host's apt \
                 sources (`{dir}`); give one with `vserver {shown} build -m apt -- -d {name} \
                 --mirror URL` or register one with `vdistro add {name} --family deb \
                 --apt-source 'URL {suite} {components}'`",
                suite = missing.suite,
                name = distribution.name,
                dir = missing.apt_dir.display(),
                shown = if guest.is_empty() { "GUEST" } else { guest },
                components = missing.components.join(" "),
            ),
        }),
        _ => Ok(()),
    }
}

/// `--mirror URL [--trusted]`: build from one mirror of the distribution's release suite instead
/// of its sources, as debootstrap and mmdebstrap do with their mirror argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptMirror {
    /// The mirror's base URL (`http://…/debian`, `file:/srv/mirror`).
    pub url: String,
    /// The mirror is unsigned and trusted explicitly (`[trusted=yes]`).
    pub trusted: bool,
}

impl AptMirror {
    /// The one `sources.list` line: the distribution's release suite and components at this
    /// mirror.
    fn sources_line(&self, distribution: &Distribution) -> Result<String> {
        // A built-in distribution without the host's archive still knows its suite.
        let missing = distribution
            .missing_archive
            .as_ref()
            .map(|m| format!("deb - {} {}", m.suite, m.components.join(" ")));
        let first = distribution
            .apt_sources
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("deb "))
            .or(missing.as_deref())
            .unwrap_or_default();
        // `deb [options] URL SUITE COMPONENT…`: keep SUITE and the components.
        let words: Vec<&str> = first.split_whitespace().skip(1).collect();
        let words = match words.first() {
            Some(w) if w.starts_with('[') => {
                let end = words.iter().position(|w| w.ends_with(']')).unwrap_or(0);
                &words[end + 1..]
            }
            _ => &words[..],
        };
        let refuse = |problem: String| Error::BadRequest {
            guest: String::new(),
            problem,
        };
        let [_url, suite, components @ ..] = words else {
            return Err(refuse(format!(
                "distribution `{}` names no release suite to take from a mirror",
                distribution.name
            )));
        };
        if self.url.is_empty() || self.url.contains(char::is_whitespace) {
            return Err(refuse(format!(
                "mirror `{}`: expected one URL",
                self.url.escape_debug()
            )));
        }
        // The same checks and format as a registered source.
        let source = format!("{} {suite} {}", self.url, components.join(" "));
        crate::distribution::apt_source_line(&distribution.name, &source, self.trusted)
    }
}

/// The dpkg/apt back end of a new guest of `distribution` (its sources, or the mirror of
/// `request`).
pub(crate) fn deb_backend(
    layout: PkgLayout,
    distribution: &Distribution,
    request: &DebBuild<'_>,
    skip_fsync: bool,
) -> Result<DebBackend> {
    let (sources_list, keyrings) =
        apt_sources(distribution, request.mirror).map_err(|e| match e {
            Error::BadRequest { problem, .. } => Error::BadRequest {
                guest: request.guest.to_owned(),
                problem,
            },
            other => other,
        })?;
    Ok(DebBackend::new(
        layout,
        request.root,
        DebSettings {
            arch: distribution.arch.clone(),
            sources_list,
            keyrings,
            merged_usr: true,
            verbose: request.verbose,
            skip_fsync,
            time_limit: request.time_limit,
        },
    ))
}

/// Builds the package side of a Debian guest whose skeleton and configuration exist; `on_phase`
/// names each step (for progress and for the failure message). Returns the warnings: optional
/// (`--can-fail`) packages that could not be installed.
pub(crate) fn build_deb(
    layout: PkgLayout,
    distribution: &Distribution,
    request: &DebBuild<'_>,
    on_phase: &mut dyn FnMut(&str),
) -> Result<Vec<String>> {
    // A new guest: synced once at the end, removed if the build fails.
    let backend =
        deb_backend(layout, distribution, request, true)?.progress(request.progress.clone());
    backend.prepare()?;
    on_phase("database");
    backend.initialize_database()?;
    backend.bootstrap(request.variant, &mut |step| on_phase(step))?;
    let mut warnings = Vec::new();
    for (list, entries) in &distribution.package_lists {
        on_phase(&format!("package list {list}"));
        let required: Vec<String> = entries
            .iter()
            .filter(|e| !e.can_fail)
            .map(|e| e.name.clone())
            .collect();
        if !required.is_empty() {
            backend.install(&required)?;
        }
        for entry in entries.iter().filter(|e| e.can_fail) {
            if let Err(e) = backend.install(std::slice::from_ref(&entry.name)) {
                warnings.push(format!(
                    "optional package `{}` not installed: {e}",
                    entry.name
                ));
            }
        }
    }
    if !request.packages.is_empty() {
        on_phase("extra packages");
        backend.install(request.packages)?;
    }
    on_phase("clean-up");
    backend.clean_cache()?;
    backend.sync()?;
    Ok(warnings)
}

/// The dpkg/apt back end of an existing Debian-family guest with external package management
/// (for `vapt-get`, `vdpkg`, `vapt-cache`).
pub fn open_deb_backend(
    roots: &HostRoots,
    config: &GuestConfig,
    verbose: bool,
) -> Result<DebBackend> {
    if config.family != "deb" {
        return Err(Error::BadRequest {
            guest: config.name.clone(),
            problem: format!(
                "not a Debian-family guest (family `{}`); use vrpm or vyum",
                if config.family.is_empty() {
                    "none"
                } else {
                    &config.family
                }
            ),
        });
    }
    if config.package_management != PackageManagement::External {
        return Err(Error::BadRequest {
            guest: config.name.clone(),
            problem: "package management is not external; run the guest's own tools inside it"
                .into(),
        });
    }
    crate::config::check_package_settings(roots, config)?;
    crate::transaction::refuse_if_not_whole(roots, &config.name)?;
    Ok(DebBackend::new(
        PkgLayout::new(&roots.pkgdir, &config.name),
        &config.root,
        DebSettings {
            arch: config.arch.clone(),
            merged_usr: true,
            verbose,
            time_limit: crate::config::operation_time_limit(config)?,
            ..DebSettings::default()
        },
    )
    .running_guest(crate::lifecycle::running_guest_for_backend(&config.name)?))
}
