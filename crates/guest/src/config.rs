//! A guest's configuration, `/etc/vservers/G/config.toml`, and opening its package back end.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vserver_pkgmgmt::{Family, PkgLayout, RpmBackend, RpmSettings};

use crate::distribution::check;
use crate::error::{Error, Result, check_name};
use crate::roots::HostRoots;
use crate::runtime::{InitConfig, LimitsConfig, NetConfig};

/// Where the guest's package database lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PackageManagement {
    /// Outside the guest, in `.pkg/G` (the default).
    #[default]
    External,
    /// Inside the guest (after `pkgmgmt internalize`).
    Internal,
    /// No package database (a skeleton).
    None,
}

/// `/etc/vservers/G/config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestConfig {
    /// The guest's name.
    pub name: String,
    /// Its identity, given at build (empty for guests built before identities existed); see
    /// module `identity`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Its root directory on the host.
    pub root: PathBuf,
    /// The distribution it was built from (empty for a bare skeleton).
    #[serde(default)]
    pub distribution: String,
    /// `rpm` or `deb` (empty: none).
    #[serde(default)]
    pub family: String,
    /// The release version pinned at build time.
    #[serde(default)]
    pub releasever: String,
    /// The architecture (empty: the host's).
    #[serde(default)]
    pub arch: String,
    /// Whether dnf checks package signatures.
    #[serde(default = "yes")]
    pub gpgcheck: bool,
    /// The guest's host name.
    #[serde(default)]
    pub hostname: String,
    /// Where its package database is.
    #[serde(default)]
    pub package_management: PackageManagement,
    /// The build method that made it.
    #[serde(default)]
    pub build_method: String,
    /// `net`: its network (default: its own namespace with only loopback); see [`NetConfig`].
    #[serde(default, skip_serializing_if = "is_default")]
    pub net: NetConfig,
    /// `init`: what runs as its pid 1 (default: its `/sbin/init`); see [`InitConfig`].
    #[serde(default, skip_serializing_if = "is_default")]
    pub init: InitConfig,
    /// `runlevel`: for `init = "sysv"` (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runlevel: Option<u8>,
    /// `stop_signal`: what asks its init to stop (default `TERM`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::runtime::deserialize_signal"
    )]
    pub stop_signal: Option<String>,
    /// `stop_timeout`: seconds its init may take to stop before everything is killed (default
    /// 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// `start_timeout`: seconds `start` waits for the init to be up (default 90).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_timeout: Option<u64>,
    /// `start_at_boot`: whether `vserver --marked start` (and the `vservers.service` unit) starts
    /// it; set by `vserver G enable`, cleared by `disable`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub start_at_boot: bool,
    /// `operation_time_limit`: how long one run of its package manager (`vrpm`, `vyum`,
    /// `vapt-get`…) may take before it is killed (default
    /// [`vserver_pkgmgmt::DEFAULT_TIME_LIMIT`]); `VSERVER_OPERATION_TIME_LIMIT` overrides it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::runtime::time_limit_field"
    )]
    pub operation_time_limit: Option<Duration>,
    /// `[limits]`: its cgroup's limits; see [`LimitsConfig`].
    #[serde(default, skip_serializing_if = "LimitsConfig::is_empty")]
    pub limits: LimitsConfig,
}

fn yes() -> bool {
    true
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    value == &T::default()
}

impl Default for GuestConfig {
    /// An empty configuration with the same defaults as a file that sets nothing.
    fn default() -> Self {
        GuestConfig {
            name: String::new(),
            id: String::new(),
            root: PathBuf::new(),
            distribution: String::new(),
            family: String::new(),
            releasever: String::new(),
            arch: String::new(),
            gpgcheck: true,
            hostname: String::new(),
            package_management: PackageManagement::default(),
            build_method: String::new(),
            net: NetConfig::default(),
            init: InitConfig::default(),
            runlevel: None,
            stop_signal: None,
            stop_timeout: None,
            start_timeout: None,
            start_at_boot: false,
            operation_time_limit: None,
            limits: LimitsConfig::default(),
        }
    }
}

impl GuestConfig {
    /// `confdir/G/config.toml`.
    pub fn path(roots: &HostRoots, name: &str) -> PathBuf {
        roots.confdir.join(name).join("config.toml")
    }

    /// Writes the file (temporary file + rename).
    pub fn save(&self, roots: &HostRoots) -> Result<()> {
        let path = Self::path(roots, &self.name);
        let dir = path.parent().unwrap_or(Path::new("."));
        fs_err::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let text = toml::to_string(self).map_err(|e| Error::BadRequest {
            guest: self.name.clone(),
            problem: format!("cannot serialise the configuration: {e}"),
        })?;
        let temp = dir.join(".config.toml.new");
        fs_err::write(&temp, text).map_err(Error::io("write", &temp))?;
        fs_err::rename(&temp, &path).map_err(Error::io("rename into", &path))
    }
}

/// The guests configured under `confdir`, sorted.
pub fn list_guests(roots: &HostRoots) -> Result<Vec<String>> {
    let entries = match fs_err::read_dir(&roots.confdir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", &roots.confdir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("read", &roots.confdir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if check_name("guest", &name).is_ok() && entry.path().join("config.toml").is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The build method that fits this host, for the hint of an unknown guest: the family of its
/// guests, else of its registered distributions, else of the package tools it has.
fn build_method_hint(roots: &HostRoots, guests: &[String]) -> &'static str {
    let mut rpm = false;
    let mut deb = false;
    for guest in guests {
        let path = GuestConfig::path(roots, guest);
        let family = fs_err::read_to_string(&path)
            .ok()
            .and_then(|text| toml::from_str::<GuestConfig>(&text).ok())
            .map(|config| config.family);
        match family.as_deref() {
            Some("rpm") => rpm = true,
            Some("deb") => deb = true,
            _ => {}
        }
    }
    if !rpm && !deb {
        let store = crate::DistributionStore::new(roots.distributions_dir());
        for distribution in store.list().unwrap_or_default() {
            if matches!(
                distribution.source,
                crate::DistributionSource::Registered(_)
            ) {
                match distribution.family {
                    Family::Rpm => rpm = true,
                    Family::Deb => deb = true,
                }
            }
        }
    }
    if !rpm && !deb {
        let has = |tool: &str| {
            std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| dir.join(tool).is_file())
            })
        };
        rpm = has("dnf");
        deb = has("apt-get");
    }
    match (rpm, deb) {
        (true, false) => "yum",
        (false, true) => "apt",
        _ => "yum|apt",
    }
}

/// Reads guest `name`'s configuration, with a "did you mean" suggestion when it does not exist.
pub fn load_guest(roots: &HostRoots, name: &str) -> Result<GuestConfig> {
    check_name("guest", name)?;
    let path = GuestConfig::path(roots, name);
    let text = match fs_err::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let guests = list_guests(roots)?;
            return Err(Error::UnknownGuest {
                name: name.to_owned(),
                config: path,
                suggestion: crate::closest(name, guests.iter().map(String::as_str)),
                method: build_method_hint(roots, &guests),
            });
        }
        Err(e) => return Err(Error::io("read", &path)(e)),
    };
    toml::from_str(&text).map_err(|source| Error::Parse { path, source })
}

/// Checks what of a guest's configuration reaches its package manager's configuration: the
/// architecture (`APT::Architecture "…";` in the guest's `apt.conf`, dnf's `$basearch`) and the
/// release version (dnf's `$releasever`, in repository URLs). A build copies them from a
/// checked distribution; a hand-edited `config.toml` is held to the same rules.
pub(crate) fn check_package_settings(roots: &HostRoots, config: &GuestConfig) -> Result<()> {
    let family = if config.family == "deb" {
        Family::Deb
    } else {
        Family::Rpm
    };
    check::arch(family, &config.arch)
        .and_then(|()| check::releasever(&config.releasever))
        .map_err(|r| {
            r.into_guest_error(&config.name, Some(&GuestConfig::path(roots, &config.name)))
        })
}

/// The time limit of package operations on the guest: `VSERVER_OPERATION_TIME_LIMIT` when it
/// is set, else the guest's `operation_time_limit`; `None` leaves the back end's default.
pub(crate) fn operation_time_limit(config: &GuestConfig) -> Result<Option<Duration>> {
    let Some(value) = std::env::var_os(crate::runtime::TIME_LIMIT_VAR).filter(|v| !v.is_empty())
    else {
        return Ok(config.operation_time_limit);
    };
    let text = value.to_string_lossy();
    crate::runtime::parse_duration(&text)
        .map(Some)
        .ok_or_else(|| Error::BadRequest {
            guest: config.name.clone(),
            problem: format!(
                "bad {} `{}`: {}",
                crate::runtime::TIME_LIMIT_VAR,
                text.escape_debug(),
                crate::runtime::DURATION_FORMAT
            ),
        })
}

/// The rpm back end of an existing guest with external package management.
pub fn open_backend(roots: &HostRoots, config: &GuestConfig, verbose: bool) -> Result<RpmBackend> {
    if config.family != "rpm" {
        return Err(Error::BadRequest {
            guest: config.name.clone(),
            problem: format!(
                "not an rpm guest (family `{}`); use the tools of its family",
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
    check_package_settings(roots, config)?;
    crate::transaction::refuse_if_not_whole(roots, &config.name)?;
    let plugin = vserver_pkgmgmt::find_rpm_plugin()?;
    Ok(RpmBackend::new(
        PkgLayout::new(&roots.pkgdir, &config.name),
        &config.root,
        RpmSettings {
            releasever: config.releasever.clone(),
            arch: config.arch.clone(),
            gpgcheck: config.gpgcheck,
            verbose,
            time_limit: operation_time_limit(config)?,
            ..RpmSettings::default()
        },
        plugin,
    )
    .running_guest(crate::lifecycle::running_guest_for_backend(&config.name)?))
}
