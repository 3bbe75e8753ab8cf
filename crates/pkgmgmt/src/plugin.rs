//! Finding the `vserver-rpm-plugin` library at run time.
//!
//! It is built with the workspace and lies next to the running executable
//! (`target/debug/libvserver_rpm_plugin.so`, or beside an installed `vserver`); a test binary
//! runs from `target/debug/deps/`, so the parent directory is tried too, and `cargo test` alone
//! leaves the library only in `target/debug/deps/`, so that is tried last. `VSERVER_RPM_PLUGIN`
//! names it explicitly and wins.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::host_fs;
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
        .find(|candidate| host_fs::is_file(candidate))
        .and_then(|found| host_fs::canonicalize(found).ok())
        .ok_or(Error::PluginMissing { exe: dir })
}

/// Copies the plugin library into the trusted directory `rel` of the guest's package state
/// (`.pkg/G/REL/vserver.so`), unless the copy there was made from this very library, and returns
/// the copy's name relative to `.pkg/G`. A copy, not a link: the library must be readable inside
/// the sandbox, where the host's `/tmp` (say, a build tree below it), `/root` and `/home` are
/// hidden. Written through the safe-path layer, temporary name then rename, so nothing planted in
/// the directory (before vserver 0.2 `apt/hook` was writable to maintainer scripts) can redirect
/// the write; a stamp beside the copy records which library it was made from.
pub(crate) fn install_copy(
    layout: &PkgLayout,
    state: &vserver_sandbox::GuestRoot,
    plugin: &Path,
    rel: &str,
) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let installed = PathBuf::from(rel).join("vserver.so");
    let stamp_path = PathBuf::from(rel).join("vserver.so.stamp");
    let source = host_fs::metadata(plugin).map_err(|e| layout.host_err("inspect", plugin, e))?;
    let stamp = format!(
        "{} {} {} {}.{}\n",
        source.dev(),
        source.ino(),
        source.size(),
        source.mtime(),
        source.mtime_nsec()
    );
    let current = state.read(&stamp_path).ok();
    let copy_intact = matches!(
        state.symlink_metadata(&installed),
        Ok(info) if info.kind == vserver_sandbox::FileKind::File && info.size == source.size()
    );
    if current.as_deref() != Some(stamp.as_bytes()) || !copy_intact {
        let mut library = host_fs::open(plugin).map_err(|e| layout.host_err("read", plugin, e))?;
        state
            .write_atomic_with(&installed, 0o755, |file| {
                std::io::copy(&mut library, file).map(drop)
            })
            .map_err(|source| layout.state_err(source))?;
        layout.write_trusted(state, &stamp_path, stamp.as_bytes())?;
    }
    Ok(installed)
}
