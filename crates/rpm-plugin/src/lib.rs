//! The `vserver` rpm plugin: confines rpm scriptlets run on a guest from the host.
//!
//! rpm (4.18 here) discovers plugins by globbing `%{__plugindir}/*.so`; for a file `NAME.so` it
//! expands `%{?__transaction_NAME}`, `dlopen()`s the path found there and resolves the symbol
//! `NAME_hooks`, a `struct rpmPluginHooks_s`. vserver's per-operation macros point
//! `%__plugindir` at `.pkg/G/rpm/plugins/` (which holds `vserver.so`) and
//! `%__transaction_vserver` at this library, so the table is [`vserver_hooks`].
//!
//! Two hooks are set:
//!
//! - `init`, when rpm loads the plugin for a transaction, in rpm's (or dnf's) own process: it
//!   lowers the capability bounding set to the confined set and sets `no_new_privs`
//!   ([`vserver_sandbox::confine_future_programs`]). rpm keeps the capabilities it holds, but
//!   every program executed in its process tree from then on — the children of Lua scriptlets,
//!   which never reach the next hook, included — starts without `CAP_SYS_CHROOT`,
//!   `CAP_SYS_ADMIN` and the rest beyond file ownership.
//! - `scriptlet_fork_post`, which rpm calls in the forked child of a scriptlet, after it chrooted
//!   into the guest and just before `exec`. It calls [`vserver_sandbox::confine_scriptlet`],
//!   which leaves the database mounted at `/.rpmdb` behind (by entering the sandbox's scriptlet
//!   mount namespace, which never had it), drops capabilities and sets `no_new_privs`.
//!
//! If either fails the hook returns `RPMRC_FAIL`: rpm refuses the transaction, or ends the
//! scriptlet's child with status 126 before the scriptlet runs (fail closed). Lua scriptlets
//! themselves run inside rpm's process, with the database mounted; the sandbox's write boundary
//! around rpm holds them (see docs/security.md).
//!
//! The same library, preloaded into the host's apt and dpkg (`LD_PRELOAD`), confines dpkg's
//! maintainer scripts the same way just before dpkg executes them (`exec_hook`): dpkg has no
//! plugin interface, so the hook replaces `execv`, `execvp` and `execve`.
//!
//! Preloaded into dpkg by vserver's dpkg entry point, the library's constructor (`gate`) also
//! reports in before dpkg's `main` runs; until it does, the entry point holds the dpkg database's
//! lock, so a dpkg that runs without the library (`ld.so` skips a preload it cannot load) cannot
//! run a maintainer script.
//!
//! The C ABI lives in the `ffi`, `exec_hook` and `gate` modules, the only files with `unsafe` outside
//! the sandbox crate.

mod exec_hook;
mod ffi;
mod gate;

pub use exec_hook::CONFINE_VAR;
pub use ffi::{RpmPluginHooks, RpmRc, vserver_hooks};

/// Where the guest's database is mounted while rpm runs (after rpm's chroot into the guest).
pub const DATABASE_MOUNT_POINT: &std::ffi::CStr = c"/.rpmdb";

/// What the init hook does in rpm's process; `false` means "refuse the transaction".
pub fn confine_future_programs() -> bool {
    let confined = vserver_sandbox::confine_future_programs().is_ok();
    exec_hook::prepare_rpm_proxy();
    confined
}

/// What the hook does in the scriptlet's process; `false` means "do not run the scriptlet".
/// On a running guest the script then runs in the guest, started by the sandbox's guest
/// spawner (the library's `execv` hands it over; see `exec_hook`).
pub fn confine_current_scriptlet() -> bool {
    vserver_sandbox::confine_scriptlet(Some(DATABASE_MOUNT_POINT)).is_ok()
        && exec_hook::proxy_rpm_scriptlet()
}
