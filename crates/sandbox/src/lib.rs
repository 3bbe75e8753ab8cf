//! All contact with the kernel: safe paths inside an untrusted guest root, secure mounts,
//! namespaces, capabilities and the per-operation sandbox.
//!
//! # Overview
//!
//! - [`GuestRoot`] (module `safe_path`): a pinned guest root directory; every file operation on a
//!   guest resolves inside it with `openat2(RESOLVE_IN_ROOT)`, so symlinks the guest planted
//!   cannot lead to the host.
//!
//! This is the only crate of the workspace with `unsafe` code; raw system calls live in the
//! private `sys` module and every `unsafe` block says why it is sound.
#![deny(missing_docs)]
#![allow(unsafe_code)]

#[allow(dead_code)]
mod error;
#[allow(dead_code)]
mod safe_path;
#[allow(dead_code)] // used by the modules that follow in the next commits
mod sys;

pub use error::{Error, Result};
pub use safe_path::{DeviceNode, DirEntry, FileInfo, FileKind, GuestRoot};
