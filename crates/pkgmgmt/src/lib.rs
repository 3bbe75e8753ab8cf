//! Package-management back ends: the host's real `rpm`/`dnf` and `dpkg`/`apt-get` driven
//! against a guest whose package database lives outside it.
//!
//! # Overview
//!
//! - [`PkgLayout`] (module `layout`): the guest's external package state under
//!   `/vservers/.pkg/G/` — `rpm/etc/macros`, `rpm/state/` (the database), `yum/etc/yum.repos.d/`,
//!   `yum/cache`, `yum/lib`, `yum/log`.
//! - [`generate_macros`] (module `macros`): the per-guest rpm macros (`%_dbpath /.rpmdb`,
//!   `%_netsharedpath`, the distribution's own).
//! - [`PackageBackend`] (module `backend`): what a guest build and the `vrpm`/`vyum` commands
//!   need from a package manager; [`RpmBackend`] (module `rpm`) implements it with the host's rpm
//!   and dnf, each call inside a [`vserver_sandbox::SandboxCommand`] with the database
//!   bind-mounted at `/.rpmdb` for that call only, and scriptlets confined by the
//!   `vserver-rpm-plugin` library ([`find_rpm_plugin`], module `plugin`).
//! - [`DebBackend`] (module `deb`): the same for dpkg and apt, with our own Debian bootstrap; the
//!   dpkg admin directory `.pkg/G/dpkg/state` is bind-mounted on the guest's `/var/lib/dpkg` per
//!   operation, and the plugin library, preloaded, confines the maintainer scripts.
//! - Every run of a package tool has a time limit ([`DEFAULT_TIME_LIMIT`], or the settings'
//!   `time_limit`): at the limit the sandbox and everything in it are killed, the guest's lock
//!   is released with the error, and [`Error::TimedOut`] names the script that was running.
//! - A failed run of a package tool gives [`Error::ToolFailure`]: the cause first, then the
//!   operation log in `.pkg/G/log/` (host-only) holding the command line and the full output
//!   (module `oplog`; bounded: the last 20 per guest).
//! - [`mode`]: `pkgmgmt internalize|externalize`, moving the database into the guest and back as
//!   reversible steps, the guest's database treated as untrusted input on the way back.
//!
//! The guest crate builds on this; this crate builds on the sandbox crate and talks to the
//! kernel only through it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
// Files below `.pkg/G` are hostile input: host code reaches them through the safe-path layer,
// or through `host_fs` for the few paths no sandbox can write (see that module).
#![warn(clippy::disallowed_methods)]

mod backend;
mod checkpoint;
mod deb;
mod error;
mod host_fs;
mod layout;
mod macros;
pub mod mode;
mod oplog;
mod plugin;
mod progress;
mod rpm;

pub use backend::{DEFAULT_TIME_LIMIT, Family, PackageBackend, Tool};
pub use checkpoint::{KILL_AT_VAR, checkpoint};
pub use deb::{DPKG_MOUNT_POINT, DebBackend, DebSettings, DebTool, Variant};
pub use error::{Error, Result};
pub use layout::{PkgLayout, PkgLock};
pub use macros::{DEFAULT_NETSHARED_PATHS, generate_macros};
pub use oplog::{holds_only_logs, move_logs, remove_all_but_logs};
pub use plugin::{PLUGIN_ENV, PLUGIN_FILE_NAME, find_rpm_plugin};
pub use progress::{PackageProgress, ProgressSink};
pub use rpm::{RpmBackend, RpmSettings};
