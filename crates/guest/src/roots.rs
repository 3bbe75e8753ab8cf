//! The three host state roots, each overridable by flag and environment variable.

use std::path::PathBuf;

/// Where vserver keeps host state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoots {
    /// Configuration: guests and `.distributions` (`/etc/vservers`, `VSERVER_CONFDIR`).
    pub confdir: PathBuf,
    /// Guest roots (`/vservers`, `VSERVER_ROOTDIR`).
    pub rootdir: PathBuf,
    /// External package state (`/vservers/.pkg`, `VSERVER_PKGDIR`).
    pub pkgdir: PathBuf,
}

impl HostRoots {
    /// Flags win over environment variables, which win over the defaults.
    pub fn resolve(
        confdir: Option<PathBuf>,
        rootdir: Option<PathBuf>,
        pkgdir: Option<PathBuf>,
    ) -> Self {
        let pick = |flag: Option<PathBuf>, var: &str, default: &str| {
            flag.or_else(|| {
                std::env::var_os(var)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(default))
        };
        HostRoots {
            confdir: pick(confdir, "VSERVER_CONFDIR", "/etc/vservers"),
            rootdir: pick(rootdir, "VSERVER_ROOTDIR", "/vservers"),
            pkgdir: pick(pkgdir, "VSERVER_PKGDIR", "/vservers/.pkg"),
        }
    }

    /// `confdir/.distributions`.
    pub fn distributions_dir(&self) -> PathBuf {
        self.confdir.join(".distributions")
    }
}
