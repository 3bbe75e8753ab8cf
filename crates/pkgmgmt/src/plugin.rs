//! Finding the `vserver-rpm-plugin` library at run time.
//!
//! It is built with the workspace and lies next to the running executable
//! (`target/debug/libvserver_rpm_plugin.so`, or beside an installed `vserver`); a test binary
//! runs from `target/debug/deps/`, so the parent directory is tried too, and `cargo test` alone
//! leaves the library only in `target/debug/deps/`, so that is tried last. `VSERVER_RPM_PLUGIN`
//! names it explicitly and wins.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::layout::PkgLayout;

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
        // `cargo test` builds the library as a dependency only, into `target/debug/deps`.
        dir.join("deps").join(PLUGIN_FILE_NAME),
    ];
    candidates
        .into_iter()
        .find(|candidate| candidate.is_file())
        .and_then(|found| found.canonicalize().ok())
        .ok_or(Error::PluginMissing { exe: dir })
}

/// Copies the plugin library into `dir` (host state of the guest) as `vserver.so`, unless an
/// up-to-date copy is there, and returns the copy's path. A copy, not a link: the library must
/// be readable inside the sandbox, where the host's `/tmp` (say, a build tree below it) is
/// replaced by a private one and `/root` and `/home` are hidden.
pub(crate) fn install_copy(layout: &PkgLayout, plugin: &Path, dir: &Path) -> Result<PathBuf> {
    let installed = dir.join("vserver.so");
    let up_to_date = match (
        fs_err::metadata(plugin),
        fs_err::symlink_metadata(&installed),
    ) {
        (Ok(source), Ok(copy)) => {
            copy.is_file()
                && copy.len() == source.len()
                && copy.modified().ok() >= source.modified().ok()
        }
        _ => false,
    };
    if !up_to_date {
        fs_err::create_dir_all(dir).map_err(|e| layout.host_err("create", dir, e))?;
        let tmp = dir.join(".vserver.so.tmp");
        fs_err::copy(plugin, &tmp).map_err(|e| layout.host_err("copy", plugin, e))?;
        fs_err::rename(&tmp, &installed).map_err(|e| layout.host_err("create", &installed, e))?;
    }
    Ok(installed)
}
