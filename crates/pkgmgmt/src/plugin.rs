//! Finding the `vserver-rpm-plugin` library at run time.
//!
//! It is built with the workspace and lies next to the running executable
//! (`target/debug/libvserver_rpm_plugin.so`, or beside an installed `vserver`); a test binary
//! runs from `target/debug/deps/`, so the parent directory is tried too. `VSERVER_RPM_PLUGIN`
//! names it explicitly and wins.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The environment variable naming the plugin library.
pub const PLUGIN_ENV: &str = "VSERVER_RPM_PLUGIN";
/// The library's file name as cargo builds it.
pub const PLUGIN_FILE_NAME: &str = "libvserver_rpm_plugin.so";

/// The plugin library: `$VSERVER_RPM_PLUGIN`, else next to the executable or one level up.
pub fn find_rpm_plugin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(PLUGIN_ENV).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let candidates = [
        dir.join(PLUGIN_FILE_NAME),
        dir.join("..").join(PLUGIN_FILE_NAME),
        dir.join("../lib/vserver").join(PLUGIN_FILE_NAME),
    ];
    candidates
        .into_iter()
        .find(|candidate| candidate.is_file())
        .and_then(|found| found.canonicalize().ok())
        .ok_or(Error::PluginMissing { exe: dir })
}
