//! Guests: host roots, distributions, guest configuration and build methods.
//!
//! # Overview
//!
//! - [`HostRoots`] (module `roots`): `/etc/vservers`, `/vservers`, `/vservers/.pkg`, each
//!   overridable (`--confdir`/`VSERVER_CONFDIR` …) so that tests run in a temporary directory.
//! - [`Distribution`], [`DistributionStore`] (module `distribution`): built-in distributions
//!   (Fedora, Rocky, Alma, Debian, Ubuntu) and registered ones in `/etc/vservers/.distributions/D/` — repository
//!   files, package lists `pkgs/NN`, extra rpm macros, public keys, `distribution.toml`.
//! - [`HostAptSources`] (module `host_apt`): the host's `/etc/apt` sources, where the built-in
//!   Debian and Ubuntu distributions find their archives.
//! - [`GuestConfig`] (module `config`): `/etc/vservers/G/config.toml`.
//! - [`build`] (modules `build`, `build_apt`): `vserver G build -m skeleton|yum|dnf|rpm|apt`,
//!   with clean-up on failure, `--force` and `--keep`.
//! - [`open_backend`]: the package back end of an existing guest, for `vrpm`/`vyum`.
//! - [`start`], [`stop`], [`status`], [`exec`], [`list`], [`delete`] (module `lifecycle`): running
//!   guests, recorded in the run directory by init pid and start time.
//! - module `pkgmode`: `vserver G pkgmgmt internalize|externalize` around
//!   [`vserver_pkgmgmt::mode`]: refuses a running guest unless forced (then freezes it), records
//!   the mode in the configuration.
//! - [`recover`], [`recover_all`] (modules `transaction`, `recovery`, `identity`): build, delete
//!   and package-management moves are journaled in host-only state; the next command finishes or
//!   undoes one that was killed. `delete` checks the guest's recorded identity first.
//! - [`NetConfig`], [`InitConfig`], [`LimitsConfig`] (module `runtime`): how a guest runs — its
//!   network, init, cgroup limits and stop sequence, from `config.toml`.
//!
//! Package operations go through `vserver-pkgmgmt`; guest-side file writes through
//! `vserver-sandbox`'s [`vserver_sandbox::GuestRoot`].

#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod build;
mod build_apt;
mod builtin;
mod clone;
mod config;
mod distribution;
mod error;
mod host_apt;
mod identity;
mod init;
mod lifecycle;
mod pkgmode;
mod recovery;
mod roots;
mod runtime;
mod suggest;
mod template;
mod transaction;
mod unify;
mod verify;

pub use build::{BuildEvent, BuildMethod, BuildRequest, build, build_with_progress};
pub use build_apt::{AptMirror, open_deb_backend};
pub use config::{GuestConfig, PackageManagement, list_guests, load_guest, open_backend};
pub use distribution::{
    Distribution, DistributionSource, DistributionStore, MissingArchive, NewDistribution,
    PackageEntry, RepoCheck, releasever_from_name,
};
pub use error::{Error, FieldError, Result};
pub use host_apt::{APT_SOURCES_DIR_VAR, HostAptSources};
pub use init::InitKind;
pub use lifecycle::{
    GuestLimits, GuestStatus, LifecycleError, LifecycleResult, RunRecord, RunningInfo,
    StartOptions, Started, StopOptions, default_run_dir, delete, enter, exec, list, marked_guests,
    running_guest, running_record, set_start_at_boot, start, status, stop,
};
pub use pkgmode::{
    ExternalizeReport, PkgModeDirection, PkgModeError, PkgModeOutcome, PkgModeRequest,
    change_package_management, run_guest_tool,
};
pub use recovery::{recover, recover_all};
pub use roots::HostRoots;
pub use runtime::{
    DEFAULT_RUNLEVEL, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, InitConfig, LimitsConfig,
    NetConfig, TIME_LIMIT_VAR, format_duration, parse_cpus, parse_duration, parse_signal,
    parse_size,
};
pub use suggest::closest;
pub use template::{ExportReport, export};
pub use unify::{UnifyOptions, UnifyReport, unify};
pub use verify::{FileClass, Finding, VerifyReport, verify};
