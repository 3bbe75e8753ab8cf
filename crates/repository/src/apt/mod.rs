//! apt repository metadata: `Packages` and `Release`, written like apt-ftparchive and read back.
//!
//! - [`write_packages_stanza`] turns a .deb's control stanza plus its file data into the
//!   `Packages` entry apt-ftparchive would write; [`read_packages`] reads such entries back.
//! - [`Overrides`] reads a Priority/Section override file.
//! - [`write_release`] renders a `Release` listing index files with their sizes and digests.
//! - [`index_apt`] is `vrepo index` for .debs: it finds the packages under a directory, reads
//!   them in parallel (or reuses cached entries with `--update`), streams the stanzas into
//!   `Packages`, `Packages.gz` and `Packages.xz`, writes `Release`, and publishes the result
//!   atomically, either as a flat repository (`deb [trusted=yes] file:DIR ./`) or as
//!   `dists/SUITE/COMPONENT/binary-ARCH/` (`deb [trusted=yes] file:DIR SUITE COMPONENT`).

mod chunks;
mod index;
mod overrides;
mod packages;
mod release;

pub use index::{AptError, AptIndexOptions, AptIndexReport, AptLayout, index_apt};
pub use overrides::{MaintainerRewrite, OverrideEntry, OverrideError, Overrides};
pub use packages::{PackageFile, read_packages, write_packages_stanza};
pub use release::{ReleaseEntry, ReleaseFields, format_rfc2822_utc, write_release};
