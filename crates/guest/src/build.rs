//! `vserver G build`: make a guest from nothing.
//!
//! Methods: `skeleton` (directories, minimal `/dev`, `/etc/hosts`, `/etc/resolv.conf`, the
//! configuration), `yum`/`dnf` (skeleton, then the external rpm state, an empty database, the
//! distribution's keys, each `pkgs/NN` list and the extra packages through dnf), and `rpm`
//! (package files installed by rpm without a resolver). The build is a transaction (module
//! `transaction`): each path is recorded in the guest's journal before it is created, so a
//! failure — or, through the next command, a kill — removes it again; `--keep` keeps a failed
//! build, listed as incomplete until a new build or a delete of that name undoes it. `--force`
//! first sets an existing guest's root, configuration and package state aside under hidden names
//! (`.NAME.vserver-replaced`, never a guest) and puts them back if the build does not complete.
//! Every guest gets an identity (module `identity`) that `delete` checks.

use std::path::{Path, PathBuf};

use vserver_pkgmgmt::{Family, PackageBackend, PkgLayout, RpmBackend, RpmSettings};
use vserver_sandbox::GuestRoot;

use crate::config::{GuestConfig, PackageManagement};
use crate::distribution::{Distribution, DistributionStore};
use crate::error::{Error, Result, check_name};
use crate::roots::HostRoots;
use crate::transaction::{Operation, Transaction};

/// How to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildMethod {
    /// Directories and configuration only.
    Skeleton,
    /// dnf from the distribution's repositories (`-m yum` and `-m dnf`).
    Yum,
    /// rpm from package files, no resolver.
    Rpm,
    /// A copy of another guest (`-- --source G`), with an identity of its own.
    Clone,
    /// A guest from an archive `vserver G export` wrote (`-- --source FILE`).
    Template,
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
            "clone" => Ok(BuildMethod::Clone),
            "template" => Ok(BuildMethod::Template),
            "apt" | "debootstrap" => Ok(BuildMethod::Apt(vserver_pkgmgmt::Variant::default())),
            other => Err(format!(
                "unknown build method `{other}` (expected skeleton, yum, dnf, rpm, apt, debootstrap, clone or template)"
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
    /// `-m clone`: the guest to copy; `-m template`: the archive.
    pub source: Option<String>,
}

/// Progress of a build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A phase starts.
    Phase(String),
    /// Something that did not stop the build.
    Warning(String),
    /// An earlier build of the same name was undone first (one line saying what was done).
    Recovered(String),
}

/// Builds a guest; see the module documentation.
pub fn build(
    roots: &HostRoots,
    request: &BuildRequest,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<GuestConfig> {
    build_with_progress(roots, request, on_event, None)
}

/// [`build`], reporting the packages done of each transaction's total to `progress` (from
/// another thread; a terminal's progress bar) while the package manager's output is captured.
pub fn build_with_progress(
    roots: &HostRoots,
    request: &BuildRequest,
    on_event: &mut dyn FnMut(BuildEvent),
    progress: Option<vserver_pkgmgmt::ProgressSink>,
) -> Result<GuestConfig> {
    check_name("guest", &request.guest)?;
    // `--releasever` replaces the distribution's (checked) one in dnf's URLs and the guest's
    // configuration: the same rule.
    if let Some(releasever) = &request.releasever {
        crate::distribution::check::releasever(releasever)
            .map_err(|r| r.into_guest_error(&request.guest, None))?;
    }
    let mut distribution = match (&request.distribution, request.method) {
        (Some(name), _) => Some(DistributionStore::new(roots.distributions_dir()).get(name)?),
        (None, BuildMethod::Skeleton | BuildMethod::Clone | BuildMethod::Template) => None,
        (None, _) => {
            return Err(Error::BadRequest {
                guest: request.guest.clone(),
                problem: "this build method needs a distribution: `-- -d DIST`".into(),
            });
        }
    };
    if let Some(dist) = &distribution
        && !matches!(
            request.method,
            BuildMethod::Skeleton | BuildMethod::Clone | BuildMethod::Template
        )
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
    if let Some(dist) = distribution.as_mut()
        && matches!(request.method, BuildMethod::Yum | BuildMethod::Rpm)
    {
        releasever_for_build(request, dist, on_event)?;
    }
    if let (Some(dist), BuildMethod::Apt(_)) = (&distribution, request.method) {
        crate::build_apt::check_archive(&request.guest, dist, request.apt_mirror.as_ref())?;
    }
    let clone_source = match request.method {
        BuildMethod::Clone => Some(crate::clone::source_of(roots, request)?),
        _ => None,
    };
    // An earlier build of this name that failed and was kept (`--keep`) is undone first: a
    // new build starts over.
    if let Some((_, message)) = crate::transaction::recover_journal(roots, &request.guest, true)? {
        on_event(BuildEvent::Recovered(message));
    }
    let mut transaction = Transaction::begin(roots, &request.guest, Operation::Build)?;
    let config_dir = roots.confdir.join(&request.guest);
    let root = roots.rootdir.join(&request.guest);
    let pkg = roots.pkgdir.join(&request.guest);
    let existing: Vec<&PathBuf> = [&config_dir, &root, &pkg]
        .into_iter()
        // A failed build leaves its operation logs in `.pkg/G/log`, and no guest.
        .filter(|path| {
            (path.exists() || path.is_symlink())
                && !(**path == pkg && vserver_pkgmgmt::holds_only_logs(path))
        })
        .collect();
    if let Some(path) = existing.first() {
        let refusal = if !request.force {
            Some(Error::GuestExists {
                name: request.guest.clone(),
                path: (*path).clone(),
            })
        } else if crate::lifecycle::running_guest_for_backend(&request.guest)?.is_some() {
            Some(Error::BadRequest {
                guest: request.guest.clone(),
                problem: "it is running; stop it before building a new guest in its place".into(),
            })
        } else {
            None
        };
        if let Some(refusal) = refusal {
            transaction.finish()?;
            return Err(refusal);
        }
    }
    for path in existing {
        if let Err(error) = transaction.move_aside(path) {
            transaction.undo()?;
            return Err(error);
        }
    }
    let mut phase = String::from("setup");
    let result = run_build(
        roots,
        request,
        Origin {
            distribution: distribution.as_ref(),
            clone_source: clone_source.as_ref(),
            progress,
        },
        &root,
        &mut transaction,
        &mut phase,
        on_event,
    )
    .and_then(|config| {
        settle_top_modes(&request.guest, &root)?;
        Ok(config)
    });
    let replaced = transaction.replaces();
    match result {
        Ok(config) => {
            for left in transaction.commit()? {
                on_event(BuildEvent::Warning(format!(
                    "cannot remove the guest this build replaced: {left}"
                )));
            }
            Ok(config)
        }
        Err(error) => {
            let cleanup = if request.keep {
                match transaction.keep() {
                    Ok(()) => format!(
                        "kept what was built (--keep): `{}`, `{}`; it is listed as incomplete until `vserver {} delete` or a new build removes it{}",
                        root.display(),
                        pkg.display(),
                        request.guest,
                        if replaced {
                            ", which puts the guest it replaces back"
                        } else {
                            ""
                        }
                    ),
                    Err(e) => format!("cannot mark the kept build incomplete: {e}"),
                }
            } else {
                match transaction.undo() {
                    Ok(_) if replaced => {
                        "removed everything it created but its log; the guest it was replacing is back"
                            .to_owned()
                    }
                    Ok(_) if vserver_pkgmgmt::holds_only_logs(&pkg) => {
                        "removed everything it created but its log".to_owned()
                    }
                    Ok(_) => "removed everything it created".to_owned(),
                    Err(e) => format!("{e}; the next command on the guest retries the clean-up"),
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

/// An rpm build needs a release version (dnf cannot detect one in an empty root, and the first
/// `vyum` would fail with "Unable to detect release version"): `--releasever`, the
/// distribution's `releasever`, or the one its name makes obvious (`fc3` → `3`, said in one
/// line); otherwise the build stops before it creates anything.
fn releasever_for_build(
    request: &BuildRequest,
    dist: &mut Distribution,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<()> {
    if request.releasever.is_some() || !dist.releasever.is_empty() {
        return Ok(());
    }
    let toml = match &dist.source {
        crate::distribution::DistributionSource::Registered(dir) => {
            dir.join("distribution.toml").display().to_string()
        }
        crate::distribution::DistributionSource::Builtin => "distribution.toml".to_owned(),
    };
    match crate::distribution::releasever_from_name(&dist.name) {
        Some(version) => {
            on_event(BuildEvent::Warning(format!(
                "distribution `{}` sets no release version: using `{version}` from its name \
                 (set `releasever = \"{version}\"` in `{toml}` or pass `--releasever` to choose)",
                dist.name
            )));
            dist.releasever = version;
            Ok(())
        }
        None => Err(Error::BadRequest {
            guest: request.guest.clone(),
            problem: format!(
                "distribution `{}` sets no release version and its name shows none: pass \
                 `--releasever N` (`build -m yum -- -d {} --releasever N`) or set \
                 `releasever = \"N\"` in `{toml}`",
                dist.name, dist.name
            ),
        }),
    }
}

/// What a build starts from: a distribution, or the guest a clone copies.
struct Origin<'a> {
    distribution: Option<&'a Distribution>,
    clone_source: Option<&'a GuestConfig>,
    /// Where the package transactions' progress goes.
    progress: Option<vserver_pkgmgmt::ProgressSink>,
}

fn run_build(
    roots: &HostRoots,
    request: &BuildRequest,
    origin: Origin<'_>,
    root: &Path,
    transaction: &mut Transaction,
    phase: &mut String,
    on_event: &mut dyn FnMut(BuildEvent),
) -> Result<GuestConfig> {
    let Origin {
        distribution,
        clone_source,
        progress,
    } = origin;
    let guest = request.guest.clone();
    let set_phase = enter_phase;
    set_phase(phase, transaction, "skeleton", on_event);
    fs_err::create_dir_all(&roots.rootdir).map_err(Error::io("create", &roots.rootdir))?;
    transaction.will_create(root)?;
    fs_err::create_dir(root).map_err(Error::io("create", root))?;
    let root = root.canonicalize().map_err(Error::io("resolve", root))?;
    if let Some(source) = clone_source {
        return crate::clone::clone_into(
            roots,
            request,
            source,
            &root,
            transaction,
            phase,
            on_event,
        );
    }

    if request.method == BuildMethod::Template {
        return crate::template::import_into(
            roots,
            request,
            distribution,
            &root,
            transaction,
            phase,
            on_event,
        );
    }

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
        id: crate::identity::new_id()?,
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
            BuildMethod::Clone => "clone",
            BuildMethod::Template => "template",
            BuildMethod::Yum => "yum",
            BuildMethod::Rpm => "rpm",
            BuildMethod::Apt(_) => "apt",
        }
        .to_owned(),
        ..GuestConfig::default()
    };
    transaction.will_create(&roots.pkgdir.join(&guest))?;
    crate::identity::record(roots, &config)?;
    make_skeleton(
        &guest,
        &root,
        request.hostname.as_deref().unwrap_or(&guest),
        method_family(request.method),
    )?;
    set_phase(phase, transaction, "configuration", on_event);
    transaction.will_create(&roots.confdir.join(&guest))?;
    config.save(roots)?;

    let Some(distribution) = distribution.filter(|_| request.method != BuildMethod::Skeleton)
    else {
        return Ok(config);
    };
    set_phase(phase, transaction, "package state", on_event);
    let layout = PkgLayout::new(&roots.pkgdir, &guest);
    if let BuildMethod::Apt(variant) = request.method {
        let deb = crate::build_apt::DebBuild {
            guest: &guest,
            root: &root,
            variant,
            packages: &request.packages,
            verbose: request.verbose,
            mirror: request.apt_mirror.as_ref(),
            time_limit: crate::config::operation_time_limit(&config)?,
            progress: progress.clone(),
        };
        let warnings = crate::build_apt::build_deb(layout, distribution, &deb, &mut |name| {
            set_phase(phase, transaction, name, on_event)
        })?;
        for warning in warnings {
            on_event(BuildEvent::Warning(warning));
        }
        return Ok(config);
    }
    let backend = rpm_backend(
        layout,
        &root,
        distribution,
        releasever,
        request.verbose,
        crate::config::operation_time_limit(&config)?,
    )?
    .progress(progress)
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
    set_phase(phase, transaction, "database", on_event);
    backend.initialize_database()?;
    if !distribution.pubkeys.is_empty() {
        set_phase(phase, transaction, "keys", on_event);
        backend.import_keys(&distribution.pubkeys)?;
    }
    match request.method {
        BuildMethod::Yum => {
            for (list, entries) in &distribution.package_lists {
                set_phase(
                    phase,
                    transaction,
                    &format!("package list {list}"),
                    on_event,
                );
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
                set_phase(phase, transaction, "extra packages", on_event);
                backend.install(&request.packages)?;
            }
        }
        BuildMethod::Rpm => {
            set_phase(phase, transaction, "package files", on_event);
            let files = expand_manifests(&guest, &request.rpm_files)?;
            backend.install_files(&files)?;
        }
        BuildMethod::Skeleton
        | BuildMethod::Clone
        | BuildMethod::Template
        | BuildMethod::Apt(_) => {}
    }
    set_phase(phase, transaction, "clean-up", on_event);
    backend.clean_cache()?;
    backend.sync()?;
    Ok(config)
}

/// The rpm/dnf back end of a guest of `distribution` whose root is `root`.
pub(crate) fn rpm_backend(
    layout: PkgLayout,
    root: &Path,
    distribution: &Distribution,
    releasever: String,
    verbose: bool,
    time_limit: Option<std::time::Duration>,
) -> Result<RpmBackend> {
    let plugin = vserver_pkgmgmt::find_rpm_plugin()?;
    Ok(RpmBackend::new(
        layout,
        root,
        RpmSettings {
            releasever,
            arch: distribution.arch.clone(),
            gpgcheck: distribution.gpgcheck,
            macros: distribution.macros.clone(),
            netshared: Vec::new(),
            repo_files: distribution.repo_files.clone(),
            verbose,
            time_limit,
        },
        plugin,
    ))
}

/// Enters build phase `name`: the caller's `phase`, the journal (for `--list` while the build
/// runs; failing to note it does not stop the build) and the event.
pub(crate) fn enter_phase(
    phase: &mut String,
    transaction: &mut Transaction,
    name: &str,
    on_event: &mut dyn FnMut(BuildEvent),
) {
    *phase = name.to_owned();
    let _ = transaction.set_phase(name);
    on_event(BuildEvent::Phase(name.to_owned()));
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

/// The owner and modes every guest ends its build with, whatever its method left: `/` root's
/// and 0755 (a package manager or unpacker may leave it 0700, and then no service user can
/// reach anything), `/tmp` and `/var/tmp` 1777, `/root` 0700. A path the guest made something
/// other than a directory (a symlink, say) is left alone: nothing here follows a link.
fn settle_top_modes(guest: &str, root: &Path) -> Result<()> {
    let err = |source| Error::Guest {
        guest: guest.to_owned(),
        source,
    };
    let fs = GuestRoot::open(root).map_err(err)?;
    let top = |op: &'static str| {
        move |e: rustix::io::Errno| Error::Io {
            op,
            path: root.to_path_buf(),
            source: e.into(),
        }
    };
    // The pinned root is an `O_PATH` descriptor: reopen the very directory it refers to.
    let proc_path = format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&fs))
    );
    let dir = rustix::fs::open(
        proc_path.as_str(),
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(top("open"))?;
    rustix::fs::fchown(
        &dir,
        Some(rustix::fs::Uid::ROOT),
        Some(rustix::fs::Gid::ROOT),
    )
    .map_err(top("change owner of"))?;
    rustix::fs::fchmod(&dir, rustix::fs::Mode::from_raw_mode(0o755))
        .map_err(top("change mode of"))?;
    for (dir, mode) in [("/tmp", 0o1777), ("/var/tmp", 0o1777), ("/root", 0o700)] {
        let is_dir = fs
            .symlink_metadata(dir)
            .is_ok_and(|info| info.kind == vserver_sandbox::FileKind::Dir);
        if is_dir {
            fs.set_permissions(dir, mode).map_err(err)?;
        }
    }
    Ok(())
}

/// The distribution family a build method installs.
fn method_family(method: BuildMethod) -> Family {
    match method {
        BuildMethod::Apt(_) => Family::Deb,
        _ => Family::Rpm,
    }
}
