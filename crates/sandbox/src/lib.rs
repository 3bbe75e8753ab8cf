//! All contact with the kernel: safe paths inside an untrusted guest root, secure mounts,
//! namespaces, capabilities, cgroups and the per-operation sandbox.
//!
//! # Overview
//!
//! - [`GuestRoot`] (module `safe_path`): a pinned guest root directory; every file operation on a
//!   guest resolves inside it with `openat2(RESOLVE_IN_ROOT)`, so symlinks the guest planted
//!   cannot lead to the host.
//! - [`bind_into`], [`mount_into`] (module `mount`): mounts onto a target pinned inside the guest
//!   root with the new mount API, verified after attaching.
//! - [`SandboxCommand`] (module `process`): runs a host program (rpm, dnf, dpkg, apt-get) against a
//!   guest in fresh namespaces with the host read-only, the guest's database bound in for this
//!   operation only, reduced capabilities, `no_new_privs`; on a running guest, the program's
//!   scripts start inside the guest through the guest spawner (module `guest_spawn`,
//!   [`exec_in_running_guest`]), or the guest is frozen. Every binary that
//!   uses it calls [`run_if_sandbox_child`] first thing in `main`. For building a new guest,
//!   [`SandboxCommand::skip_fsync`] turns the program's fsyncs into no-ops (module `seccomp`);
//!   [`SandboxCommand::time_limit`] kills a run that takes too long and names what hung
//!   (module `time_limit`).
//! - [`confine_scriptlet`], [`enter_guest_context`] (module `guest_context`): what a package
//!   script's process does before it runs guest code.
//! - [`Freezer`], [`SandboxCgroup`], [`CgroupSupport`] (module `cgroup`).
//!
//! The package-management crate builds on these; nothing else in the workspace talks to the
//! kernel directly. This is the only crate with `unsafe` code: raw system calls live in the
//! private `sys` module and every `unsafe` block says why it is sound.
//!
//! ```no_run
//! use vserver_sandbox::{Access, SandboxCommand};
//!
//! fn main() -> Result<(), vserver_sandbox::Error> {
//!     vserver_sandbox::run_if_sandbox_child();
//!     let finished = SandboxCommand::new("rpm")
//!         .args(["--root", "/vservers/web", "--dbpath", "/.rpmdb", "-qa"])
//!         .guest_root("/vservers/web")
//!         .bind("/vservers/.pkg/web/rpm/state", "/.rpmdb", Access::ReadWrite)
//!         .status()?;
//!     std::process::exit(finished.status.code().unwrap_or(1));
//! }
//! ```
#![deny(missing_docs)]
#![allow(unsafe_code)]

mod caps;
mod cgroup;
mod dedupe;
mod entry;
mod error;
mod extents;
mod guest_context;
mod guest_process;
mod guest_spawn;
mod hide;
mod landlock;
mod mount;
mod namespaces;
mod net;
mod process;
mod safe_path;
mod seccomp;
mod sys;
mod time_limit;
mod tree_copy;
mod tree_pack;
mod tree_unpack;

pub use caps::{CapabilityProfile, restrict_capabilities, set_no_new_privs};
pub use cgroup::{CPU_PERIOD_MICROS, GuestCgroup, GuestLimits};
pub use cgroup::{CgroupSupport, Freezer, FreezerKind, SandboxCgroup};
pub use dedupe::{Dedupe, MAX_DESTINATIONS, dedupe_file, dedupe_files};
pub use entry::{GATE_LOADED, GATE_OPEN, GATE_VAR, narrow_exec_env};
pub use error::{Error, Result};
pub use extents::{SharedExtents, shared_extents};
pub use guest_context::{
    ConfineError, SCRIPTLET_MOUNT_NS_VAR, SCRIPTLET_ROOT_VAR, confine_future_programs,
    confine_scriptlet, enter_guest_context,
};
pub use guest_process::{
    GuestInit, GuestLaunch, InitSetup, NOTIFY_DIR_IN_GUEST, RunningGuest, Wakeup, exec_in_guest,
    exec_in_guest_on_pty, open_guest_pidfd, process_start_time, run_transient, signal_by_name,
    signal_pidfd, start_guest_init, wait_pidfd_exit, wait_pidfd_or_readable,
};
pub use guest_spawn::{SPAWNER_FD, SPAWNER_VAR, exec_in_running_guest, spawner_from_environment};
pub use landlock::{OPT_OUT_VAR as LANDLOCK_OPT_OUT_VAR, write_boundary_available};
pub use mount::{
    Access, BindMount, FileSystem, bind_into, make_all_private, make_read_only_recursive, mount_at,
    mount_into,
};
pub use namespaces::{
    Namespace, chroot_into, enter_private_mount_namespace, join_namespaces, open_pidfd,
};
pub use net::{GuestNetwork, MAX_INTERFACE_NAME};
pub use process::{
    Finished, LineObserver, OPERATION_DIR, SandboxChild, SandboxCommand, StdioMode, operation_path,
    run_if_sandbox_child,
};
/// Capability sets as rustix defines them (used by [`restrict_capabilities`]).
pub use rustix::thread::CapabilitySet;
pub use safe_path::{DeviceNode, DirEntry, FileInfo, FileKind, GuestRoot};
pub use tree_copy::CopyStats;
pub use tree_pack::PackStats;
pub use tree_unpack::{TreeUnpacker, UnpackReport};
