//! Package repositories: read RPM and .deb packages, write and read rpm-md and apt metadata.

#![forbid(unsafe_code)]
