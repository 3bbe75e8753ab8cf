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
use crate::distribution::{Distribution, DistributionSource};
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
}

/// The distribution's `sources.list` and keyrings.
fn apt_sources(distribution: &Distribution) -> Result<(String, Vec<PathBuf>)> {
    let DistributionSource::Registered(dir) = &distribution.source else {
        return Err(Error::BadRequest {
            guest: String::new(),
            problem: format!(
                "distribution `{}` has no apt sources; register one with apt/sources.list",
                distribution.name
            ),
        });
    };
    let sources_path = dir.join("apt/sources.list");
    let sources =
        fs_err::read_to_string(&sources_path).map_err(Error::io("read", &sources_path))?;
    let mut keyrings = distribution.pubkeys.clone();
    let keys_dir = dir.join("apt/trusted.gpg.d");
    match fs_err::read_dir(&keys_dir) {
        Ok(entries) => {
            for entry in entries {
                let path = entry.map_err(Error::io("read", &keys_dir))?.path();
                if path.is_file() {
                    keyrings.push(path);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("read", &keys_dir)(e)),
    }
    keyrings.sort();
    Ok((sources, keyrings))
}

/// Builds the package side of a Debian guest whose skeleton and configuration exist; `on_phase`
/// names each step (for progress and for the failure message).
pub(crate) fn build_deb(
    layout: PkgLayout,
    distribution: &Distribution,
    request: &DebBuild<'_>,
    on_phase: &mut dyn FnMut(&str),
) -> Result<()> {
    let (sources_list, keyrings) = apt_sources(distribution).map_err(|e| match e {
        Error::BadRequest { problem, .. } => Error::BadRequest {
            guest: request.guest.to_owned(),
            problem,
        },
        other => other,
    })?;
    let backend = DebBackend::new(
        layout,
        request.root,
        DebSettings {
            arch: distribution.arch.clone(),
            sources_list,
            keyrings,
            merged_usr: true,
            verbose: request.verbose,
        },
    );
    backend.prepare()?;
    on_phase("database");
    backend.initialize_database()?;
    backend.bootstrap(request.variant, &mut |step| on_phase(step))?;
    for (list, entries) in &distribution.package_lists {
        on_phase(&format!("package list {list}"));
        let names: Vec<String> = entries.iter().map(|e| e.name.clone()).collect();
        backend.install(&names)?;
    }
    if !request.packages.is_empty() {
        on_phase("extra packages");
        backend.install(request.packages)?;
    }
    on_phase("clean-up");
    backend.clean_cache()?;
    backend.sync()?;
    Ok(())
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
    Ok(DebBackend::new(
        PkgLayout::new(&roots.pkgdir, &config.name),
        &config.root,
        DebSettings {
            arch: config.arch.clone(),
            merged_usr: true,
            verbose,
            ..DebSettings::default()
        },
    ))
}
