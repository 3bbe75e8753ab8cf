//! Package-management back ends (rpm/dnf and dpkg/apt) driving the host's real tools against a guest.

#![forbid(unsafe_code)]
