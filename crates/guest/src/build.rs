//! `vserver G build`: make a guest from nothing.
//!
//! Methods: `skeleton` (directories, minimal `/dev`, `/etc/hosts`, `/etc/resolv.conf`, the
//! configuration), `yum`/`dnf` (skeleton, then the external rpm state, an empty database, the
//! distribution's keys, each `pkgs/NN` list and the extra packages through dnf), and `rpm`
//! (package files installed by rpm without a resolver). Everything the build creates is recorded;
//! a failure removes it again unless `--keep`. `--force` first moves an existing guest's root,
//! configuration and package state aside (`NAME.old-PID`) and puts them back if the build fails.

use std::path::{Path, PathBuf};

use vserver_pkgmgmt::{Family, PackageBackend, PkgLayout, RpmBackend, RpmSettings};
use vserver_sandbox::GuestRoot;

use crate::config::{GuestConfig, PackageManagement};
use crate::distribution::{Distribution, DistributionStore};
use crate::error::{Error, Result, check_name};
use crate::roots::HostRoots;

/// How to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMethod {
    /// Directories and configuration only.
    Skeleton,
    /// dnf from the distribution's repositories (`-m yum` and `-m dnf`).
    Yum,
    /// rpm from package files, no resolver.
    Rpm,
    /// Our Debian bootstrap with the host's apt and dpkg (`-m apt` and `-m debootstrap`), with
    /// its variant (`--variant`, default minbase).
    Apt(vserver_pkgmgmt::Variant),
}

impl std::str::FromStr for BuildMethod {
    type Err = String;
    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "skeleton" => Ok(BuildMethod::Skeleton),
            "yum" | "dnf" => Ok(BuildMethod::Yum),
            "rpm" => Ok(BuildMethod::Rpm),
            "apt" | "debootstrap" => Ok(BuildMethod::Apt(vserver_pkgmgmt::Variant::default())),
            other => Err(format!(
                "unknown build method `{other}` (expected skeleton, yum, dnf, rpm, apt or debootstrap)"
            )),
        }
    }
}

/// A build request.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The guest's name.
    pub guest: String,
    /// The method.
    pub method: BuildMethod,
    /// The distribution (required by yum and rpm).
    pub distribution: Option<String>,
    /// Overrides the distribution's release version.
    pub releasever: Option<String>,
    /// The host name (default: the guest's name).
    pub hostname: Option<String>,
    /// Move an existing guest aside first.
    pub force: bool,
    /// Keep a failed build's remains.
    pub keep: bool,
    /// Extra packages (yum) after the distribution's lists.
    pub packages: Vec<String>,
    /// Package files or manifests (rpm method).
    pub rpm_files: Vec<PathBuf>,
    /// Let the package manager's output through.
    pub verbose: bool,
    /// `-m apt`: build from this mirror instead of the distribution's sources.
    pub apt_mirror: Option<crate::AptMirror>,
}

/// Progress of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A phase starts.
    Phase(String),
    /// Something that did not stop the build.
    Warning(String),
}

/// Paths the build created or moved, for clean-up.
#[derive(Default)]
struct Undo {
    created: Vec<PathBuf>,
    moved: Vec<(PathBuf, PathBuf)>,
}

/// Builds a guest; see the module documentation.
pub fn build(
    roots: &HostRoots,
    request: &BuildRequest,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<GuestConfig> {
    check_name("guest", &request.guest)?;
    // `--releasever` replaces the distribution's (checked) one in dnf's URLs and the guest's
    // configuration: the same rule.
    if let Some(releasever) = &request.releasever {
        crate::distribution::check::releasever(releasever)
            .map_err(|r| r.into_guest_error(&request.guest, None))?;
    }
    let distribution = match (&request.distribution, request.method) {
        (Some(name), _) => Some(DistributionStore::new(roots.distributions_dir()).get(name)?),
        (None, BuildMethod::Skeleton) => None,
        (None, _) => {
            return Err(Error::BadRequest {
                guest: request.guest.clone(),
                problem: "this build method needs a distribution: `-- -d DIST`".into(),
            });
        }
    };
    if let Some(dist) = &distribution
        && request.method != BuildMethod::Skeleton
        && dist.family != method_family(request.method)
    {
        return Err(Error::BadRequest {
            guest: request.guest.clone(),
            problem: format!(
                "distribution `{}` is a {} distribution; build it with -m {}",
                dist.name,
                dist.family.as_str(),
                if dist.family == Family::Deb {
                    "apt"
                } else {
                    "yum"
                }
            ),
        });
    }
    if let (Some(dist), BuildMethod::Apt(_)) = (&distribution, request.method) {
        crate::build_apt::check_archive(&request.guest, dist, request.apt_mirror.as_ref())?;
    }
    let config_dir = roots.confdir.join(&request.guest);
    let root = roots.rootdir.join(&request.guest);
    let pkg = roots.pkgdir.join(&request.guest);
    let mut undo = Undo::default();
    for path in [&config_dir, &root, &pkg] {
        // A failed build leaves its operation logs in `.pkg/G/log`, and no guest.
        let only_logs = *path == pkg && vserver_pkgmgmt::holds_only_logs(path);
        if (path.exists() || path.is_symlink()) && !only_logs {
            if !request.force {
                return Err(Error::GuestExists {
                    name: request.guest.clone(),
                    path: path.clone(),
                });
            }
            let aside = PathBuf::from(format!("{}.old-{}", path.display(), std::process::id()));
            if let Err(e) = fs_err::rename(path, &aside) {
                restore(&mut undo);
                return Err(Error::io("move aside", path)(e));
            }
            undo.moved.push((path.clone(), aside));
        }
    }
    let mut phase = String::from("setup");
    let result = run_build(
        roots,
        request,
        distribution.as_ref(),
        &root,
        &mut undo,
        &mut phase,
        on_event,
    );
    match result {
        Ok(config) => {
            for (_, aside) in undo.moved.drain(..) {
                if let Err(e) = remove_tree(&aside) {
                    on_event(BuildEvent::Warning(format!(
                        "cannot remove the old guest moved aside to `{}`: {e}",
                        aside.display()
                    )));
                }
            }
            Ok(config)
        }
        Err(error) => {
            let cleanup = if request.keep {
                format!(
                    "kept what was built (--keep): `{}`, `{}`",
                    root.display(),
                    pkg.display()
                )
            } else {
                let mut left = Vec::new();
                for path in undo.created.iter().rev() {
                    // The operation logs the error names stay (`.pkg/G/log`).
                    let removed = if *path == pkg {
                        vserver_pkgmgmt::remove_all_but_logs(path).map_err(std::io::Error::other)
                    } else {
                        remove_tree(path)
                    };
                    if let Err(e) = removed {
                        left.push(format!("{} ({e})", path.display()));
                    }
                }
                restore(&mut undo);
                if left.is_empty() && vserver_pkgmgmt::holds_only_logs(&pkg) {
                    "removed everything it created but its log".to_owned()
                } else if left.is_empty() {
                    "removed everything it created".to_owned()
                } else {
                    format!("could not remove {}", left.join(", "))
                }
            };
            Err(Error::BuildFailed {
                guest: request.guest.clone(),
                phase,
                cleanup,
                source: Box::new(error),
            })
        }
    }
}

fn restore(undo: &mut Undo) {
    for (path, aside) in undo.moved.drain(..) {
        // A failed build's operation logs, all that is left of its `.pkg/G`, join the old ones.
        let _ = vserver_pkgmgmt::move_logs(&path, &aside);
        let _ = fs_err::rename(&aside, &path);
    }
}

fn remove_tree(path: &Path) -> std::io::Result<()> {
    // std's remove_dir_all does not follow symlinks (it opens each directory O_NOFOLLOW).
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn run_build(
    roots: &HostRoots,
    request: &BuildRequest,
    distribution: Option<&Distribution>,
    root: &Path,
    undo: &mut Undo,
    phase: &mut String,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<GuestConfig> {
    let guest = request.guest.clone();
    let set_phase = |phase: &mut String, name: &str, on_event: &mut dyn FnMut(BuildEvent)| {
        *phase = name.to_owned();
        on_event(BuildEvent::Phase(name.to_owned()));
    };
    set_phase(phase, "skeleton", on_event);
    fs_err::create_dir_all(&roots.rootdir).map_err(Error::io("create", &roots.rootdir))?;
    fs_err::create_dir(root).map_err(Error::io("create", root))?;
    undo.created.push(root.to_owned());
    let root = root.canonicalize().map_err(Error::io("resolve", root))?;
    make_skeleton(
        &guest,
        &root,
        request.hostname.as_deref().unwrap_or(&guest),
        method_family(request.method),
    )?;

    let family = match (request.method, distribution) {
        (BuildMethod::Skeleton, None) => String::new(),
        (_, Some(d)) => d.family.as_str().to_owned(),
        _ => String::new(),
    };
    let releasever = request
        .releasever
        .clone()
        .or_else(|| distribution.map(|d| d.releasever.clone()))
        .unwrap_or_default();
    let config = GuestConfig {
        name: guest.clone(),
        root: root.clone(),
        distribution: distribution.map(|d| d.name.clone()).unwrap_or_default(),
        family,
        releasever: releasever.clone(),
        arch: distribution.map(|d| d.arch.clone()).unwrap_or_default(),
        gpgcheck: distribution.is_none_or(|d| d.gpgcheck),
        hostname: request.hostname.clone().unwrap_or_else(|| guest.clone()),
        package_management: if request.method == BuildMethod::Skeleton {
            PackageManagement::None
        } else {
            PackageManagement::External
        },
        build_method: match request.method {
            BuildMethod::Skeleton => "skeleton",
            BuildMethod::Yum => "yum",
            BuildMethod::Rpm => "rpm",
            BuildMethod::Apt(_) => "apt",
        }
        .to_owned(),
        ..GuestConfig::default()
    };
    set_phase(phase, "configuration", on_event);
    undo.created.push(roots.confdir.join(&guest));
    config.save(roots)?;

    let Some(distribution) = distribution.filter(|_| request.method != BuildMethod::Skeleton)
    else {
        return Ok(config);
    };
    set_phase(phase, "package state", on_event);
    let layout = PkgLayout::new(&roots.pkgdir, &guest);
    undo.created.push(layout.dir().to_owned());
    if let BuildMethod::Apt(variant) = request.method {
        let deb = crate::build_apt::DebBuild {
            guest: &guest,
            root: &root,
            variant,
            packages: &request.packages,
            verbose: request.verbose,
            mirror: request.apt_mirror.as_ref(),
            time_limit: crate::config::operation_time_limit(&config)?,
        };
        let warnings = crate::build_apt::build_deb(layout, distribution, &deb, &mut |name| {
            set_phase(phase, name, on_event)
        })?;
        for warning in warnings {
            on_event(BuildEvent::Warning(warning));
        }
        return Ok(config);
    }
    let plugin = vserver_pkgmgmt::find_rpm_plugin()?;
    let backend = RpmBackend::new(
        layout,
        &root,
        RpmSettings {
            releasever,
            arch: distribution.arch.clone(),
            gpgcheck: distribution.gpgcheck,
            macros: distribution.macros.clone(),
            netshared: Vec::new(),
            repo_files: distribution.repo_files.clone(),
            verbose: request.verbose,
            time_limit: crate::config::operation_time_limit(&config)?,
        },
        plugin,
    )
    // rpm's sqlite database and dnf's history fdatasync several times per package, which is
    // most of a large build's time on disk. Skipping them is safe here: the sandbox and the
    // guest are private to this build (nothing runs in the guest yet); if the build fails or the
    // machine crashes mid-build, the guest is removed (the failed-build clean-up, or `build
    // --force` over a half-built guest) rather than used; and `backend.sync()` below, run by
    // vserver itself outside the filter, syncs the guest's file system and the one holding
    // `.pkg/G` (the database) before the build is reported done. vrpm and vyum on an existing
    // guest keep their syncs.
    .skip_fsync(true);
    backend.prepare()?;
    set_phase(phase, "database", on_event);
    backend.initialize_database()?;
    if !distribution.pubkeys.is_empty() {
        set_phase(phase, "keys", on_event);
        backend.import_keys(&distribution.pubkeys)?;
    }
    match request.method {
        BuildMethod::Yum => {
            for (list, entries) in &distribution.package_lists {
                set_phase(phase, &format!("package list {list}"), on_event);
                let required: Vec<String> = entries
                    .iter()
                    .filter(|e| !e.can_fail)
                    .map(|e| e.name.clone())
                    .collect();
                backend.install(&required)?;
                for entry in entries.iter().filter(|e| e.can_fail) {
                    if let Err(e) = backend.install(std::slice::from_ref(&entry.name)) {
                        on_event(BuildEvent::Warning(format!(
                            "optional package `{}` not installed: {e}",
                            entry.name
                        )));
                    }
                }
            }
            if !request.packages.is_empty() {
                set_phase(phase, "extra packages", on_event);
                backend.install(&request.packages)?;
            }
        }
        BuildMethod::Rpm => {
            set_phase(phase, "package files", on_event);
            let files = expand_manifests(&guest, &request.rpm_files)?;
            backend.install_files(&files)?;
        }
        BuildMethod::Skeleton | BuildMethod::Apt(_) => {}
    }
    set_phase(phase, "clean-up", on_event);
    backend.clean_cache()?;
    backend.sync()?;
    Ok(config)
}

/// `.rpm` arguments stay; any other file is a manifest: one package file per line, relative
/// paths taken from the manifest's directory.
fn expand_manifests(guest: &str, args: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        if arg.extension().is_some_and(|e| e == "rpm") {
            files.push(arg.clone());
            continue;
        }
        let text = fs_err::read_to_string(arg).map_err(Error::io("read", arg))?;
        let base = arg.parent().unwrap_or(Path::new("."));
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            files.push(base.join(line));
        }
    }
    if files.is_empty() {
        return Err(Error::BadRequest {
            guest: guest.to_owned(),
            problem: "no package files given (`-m rpm -- -d DIST FILE.rpm|MANIFEST…` or --empty)"
                .into(),
        });
    }
    Ok(files)
}

/// The directories and files every guest starts with (an RPM guest also gets `/.rpmdb`, the
/// mount point of its database).
fn make_skeleton(guest: &str, root: &Path, hostname: &str, family: Family) -> Result<()> {
    let err = |source| Error::Guest {
        guest: guest.to_owned(),
        source,
    };
    let fs = GuestRoot::open(root).map_err(err)?;
    for (dir, mode) in [
        ("/etc", 0o755),
        ("/proc", 0o555),
        ("/sys", 0o555),
        ("/root", 0o700),
        ("/tmp", 0o1777),
        ("/var/tmp", 0o1777),
        ("/.rpmdb", 0o755),
    ] {
        if dir == "/.rpmdb" && family != Family::Rpm {
            continue;
        }
        fs.mkdir_all(dir, 0o755).map_err(err)?;
        fs.set_permissions(dir, mode).map_err(err)?;
    }
    fs.create_standard_devices("/dev").map_err(err)?;
    fs.write_atomic(
        "/etc/hosts",
        format!("127.0.0.1\tlocalhost\n::1\tlocalhost\n127.0.1.1\t{hostname}\n").as_bytes(),
        0o644,
    )
    .map_err(err)?;
    fs.write_atomic("/etc/hostname", format!("{hostname}\n").as_bytes(), 0o644)
        .map_err(err)?;
    let resolv = fs_err::read("/etc/resolv.conf").unwrap_or_default();
    fs.write_atomic("/etc/resolv.conf", &resolv, 0o644)
        .map_err(err)?;
    Ok(())
}

/// The distribution family a build method installs.
fn method_family(method: BuildMethod) -> Family {
    match method {
        BuildMethod::Apt(_) => Family::Deb,
        _ => Family::Rpm,
    }
}
