//! The `vserver` rpm plugin: confines rpm scriptlets run on a guest from the host.
//!
//! rpm (4.18 here) discovers plugins by globbing `%{__plugindir}/*.so`; for a file `NAME.so` it
//! expands `%{?__transaction_NAME}`, `dlopen()`s the path found there and resolves the symbol
//! `NAME_hooks`, a `struct rpmPluginHooks_s`. vserver's per-operation macros point
//! `%__plugindir` at `.pkg/G/rpm/plugins/` (which holds `vserver.so`) and
//! `%__transaction_vserver` at this library, so the table is [`vserver_hooks`].
//!
//! Only one hook is set: `scriptlet_fork_post`, which rpm calls in the forked child of a
//! scriptlet, after it chrooted into the guest and just before `exec`. It calls
//! [`vserver_sandbox::confine_scriptlet`], which unshares the mount namespace, detaches the
//! database mounted at `/.rpmdb`, drops capabilities and sets `no_new_privs`. If that fails the
//! hook returns `RPMRC_FAIL` and rpm ends the child with status 126: the scriptlet does not run
//! (fail closed). Lua scriptlets run inside rpm's own process and never reach this hook; the
//! per-operation sandbox around rpm holds them (see docs/security.md).
//!
//! The same library, preloaded into the host's apt and dpkg (`LD_PRELOAD`), confines dpkg's
//! maintainer scripts the same way just before dpkg executes them (`exec_hook`): dpkg has no
//! plugin interface, so the hook replaces `execv`, `execvp` and `execve`.
//!
//! The C ABI lives in the `ffi` and `exec_hook` modules, the only files with `unsafe` outside
//! the sandbox crate.

mod exec_hook;
mod ffi;

pub use exec_hook::CONFINE_VAR;
pub use ffi::{RpmPluginHooks, RpmRc, vserver_hooks};

/// Where the guest's database is mounted while rpm runs (after rpm's chroot into the guest).
pub const DATABASE_MOUNT_POINT: &std::ffi::CStr = c"/.rpmdb";

/// What the hook does in the scriptlet's process; `false` means "do not run the scriptlet".
pub fn confine_current_scriptlet() -> bool {
    vserver_sandbox::confine_scriptlet(Some(DATABASE_MOUNT_POINT)).is_ok()
}
