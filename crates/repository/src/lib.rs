//! Package repositories: read packages, write and read the metadata that dnf and apt consume.
//!
//! # Overview
//!
//! This crate is pure: it needs no root, no namespaces and no other crate of vserver. It is the
//! `vrepo` back end.
//!
//! - [`rpm`] reads RPM headers safely (sizes are validated before the `rpm` crate parses them,
//!   and a parser panic is contained) into the model of [`rpmmd`].
//! - [`rpmmd`] writes `repodata/` (repomd.xml, primary, filelists, other) as createrepo_c does,
//!   and reads it back.
//! - [`deb`] reads .deb control data; [`apt`] writes and reads `Packages` and `Release`.
//! - [`scan`], [`publish`], [`cache`], [`compress`] and [`progress`] are the plumbing both
//!   indexers share: finding packages, atomic publication under a lock, the `--update` cache,
//!   compression, progress reporting.
//! - [`closure`] resolves the dependency closure of requested packages, for
//!   `vrepo mirror --packages`.
//! - [`mirror`] copies an rpm-md or apt repository (HTTP or local) incrementally, verified and
//!   published atomically; [`serve`] serves a repository tree over HTTP.
//! - [`sign`] signs the metadata roots we publish (`InRelease`, `Release.gpg`,
//!   `repomd.xml.asc`) with the host's GnuPG, inside the atomic publication; [`snapshot`]
//!   keeps immutable snapshots of a repository (metadata copied, packages hard-linked into a
//!   content-addressed pool) and publishes one under a stable name by an atomic switch.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod apt;
mod by_hash;
pub mod cache;
pub mod closure;
pub mod compress;
pub mod date;
pub mod deb;
pub mod mirror;
pub mod progress;
pub mod publish;
pub mod rpm_file;
pub mod rpmmd;
pub mod scan;
pub mod serve;
pub mod sign;
pub mod snapshot;
pub mod xz_blocks;

use std::path::PathBuf;

/// A package file that could not be indexed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPackage {
    /// The file.
    pub path: PathBuf,
    /// One line saying what is wrong with it.
    pub reason: String,
}
