//! The C entry points rpm sees: the hook table `vserver_hooks` (rpm 4.18's
//! `struct rpmPluginHooks_s`, declared here because rpm installs its header only from 4.20) and
//! the `scriptlet_fork_post` function.
//!
//! Layout (rpm 4.18, `lib/rpmplugin.h`): twelve function pointers in this order — init, cleanup,
//! tsm_pre, tsm_post, psm_pre, psm_post, scriptlet_pre, scriptlet_fork_post, scriptlet_post,
//! fsm_file_pre, fsm_file_post, fsm_file_prepare. We fill two (init and scriptlet_fork_post), so
//! the other signatures are declared as opaque pointers: rpm checks each for NULL before calling
//! it.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

/// rpm's `rpmRC` (`rpm/rpmtypes.h`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpmRc {
    /// `RPMRC_OK`.
    Ok = 0,
    /// `RPMRC_NOTFOUND`.
    NotFound = 1,
    /// `RPMRC_FAIL`.
    Fail = 2,
}

/// `plugin_init_func`: `rpmRC (*)(rpmPlugin plugin, rpmts ts)`.
pub type Init = unsafe extern "C" fn(plugin: *mut c_void, ts: *mut c_void) -> RpmRc;

/// `plugin_scriptlet_fork_post_func`: `rpmRC (*)(rpmPlugin plugin, const char *path, int type)`.
pub type ScriptletForkPost =
    unsafe extern "C" fn(plugin: *mut c_void, path: *const c_char, kind: c_int) -> RpmRc;

/// rpm 4.18's `struct rpmPluginHooks_s`; unused hooks are null.
#[repr(C)]
#[derive(Debug)]
pub struct RpmPluginHooks {
    /// `init`: lowers the bounding set for everything rpm executes (see [`init`]).
    pub init: Option<Init>,
    /// `cleanup`.
    pub cleanup: *const c_void,
    /// `tsm_pre`.
    pub tsm_pre: *const c_void,
    /// `tsm_post`.
    pub tsm_post: *const c_void,
    /// `psm_pre`.
    pub psm_pre: *const c_void,
    /// `psm_post`.
    pub psm_post: *const c_void,
    /// `scriptlet_pre`.
    pub scriptlet_pre: *const c_void,
    /// `scriptlet_fork_post`: confines each external scriptlet.
    pub scriptlet_fork_post: Option<ScriptletForkPost>,
    /// `scriptlet_post`.
    pub scriptlet_post: *const c_void,
    /// `fsm_file_pre`.
    pub fsm_file_pre: *const c_void,
    /// `fsm_file_post`.
    pub fsm_file_post: *const c_void,
    /// `fsm_file_prepare` (gained an `int fd` argument in 4.18).
    pub fsm_file_prepare: *const c_void,
}

// SAFETY: the table is immutable after load and holds only null pointers and a function pointer;
// sharing it between threads is sound.
unsafe impl Sync for RpmPluginHooks {}

/// The hook table rpm resolves as `vserver_hooks` (plugin name `vserver` + `_hooks`).
#[unsafe(no_mangle)]
pub static vserver_hooks: RpmPluginHooks = RpmPluginHooks {
    init: Some(init),
    cleanup: std::ptr::null(),
    tsm_pre: std::ptr::null(),
    tsm_post: std::ptr::null(),
    psm_pre: std::ptr::null(),
    psm_post: std::ptr::null(),
    scriptlet_pre: std::ptr::null(),
    scriptlet_fork_post: Some(scriptlet_fork_post),
    scriptlet_post: std::ptr::null(),
    fsm_file_pre: std::ptr::null(),
    fsm_file_post: std::ptr::null(),
    fsm_file_prepare: std::ptr::null(),
};

/// Runs once in rpm's (or dnf's) own process when rpm loads the plugin for a transaction.
///
/// Lua scriptlets run inside that process, and what they execute (`os.execute`, `rpm.execute`,
/// `io.popen`, `posix.exec`) never reaches `scriptlet_fork_post`. So, from here on, every program
/// executed in this process tree starts with no more than the confined capabilities (the
/// bounding set is lowered; rpm keeps what it holds) and `no_new_privs`. Failure makes rpm refuse
/// the transaction (rpm treats a configured plugin that fails to load as a failed transaction).
///
/// # Safety
///
/// Called by rpm with its plugin and transaction handles, which are not dereferenced.
unsafe extern "C" fn init(_plugin: *mut c_void, _ts: *mut c_void) -> RpmRc {
    match std::panic::catch_unwind(crate::confine_future_programs) {
        Ok(true) => RpmRc::Ok,
        _ => RpmRc::Fail,
    }
}

/// Runs in the scriptlet's forked child, chrooted into the guest, just before `exec`.
///
/// # Safety
///
/// Called by rpm with its plugin handle, the interpreter path (a NUL-terminated string or null)
/// and the scriptlet type. Neither pointer is dereferenced: the confinement does not depend on
/// them, so a null or odd value cannot make it unsound.
unsafe extern "C" fn scriptlet_fork_post(
    _plugin: *mut c_void,
    _path: *const c_char,
    _kind: c_int,
) -> RpmRc {
    // A panic must not unwind into C; the confinement itself does not allocate or panic, but
    // fail closed if it ever did.
    match std::panic::catch_unwind(crate::confine_current_scriptlet) {
        Ok(true) => RpmRc::Ok,
        _ => RpmRc::Fail,
    }
}
