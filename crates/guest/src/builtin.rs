//! Distributions shipped inside the binary: current Fedora, Rocky Linux and AlmaLinux releases
//! with their public mirrors and base package lists, and current Debian and Ubuntu releases with
//! their release, updates and security suites, verified with the host's archive keyrings
//! (packages `debian-archive-keyring`, `ubuntu-keyring`). A registered directory of the same
//! name overrides one of these.

use std::path::PathBuf;

use crate::distribution::{Distribution, DistributionSource, PackageEntry};
use vserver_pkgmgmt::Family;

struct Builtin {
    name: &'static str,
    description: &'static str,
    releasever: &'static str,
    repos: &'static [(&'static str, &'static str, &'static str)],
    gpgkey: &'static str,
    lists: &'static [&'static [&'static str]],
}

const FEDORA_LISTS: &[&[&str]] = &[
    &["filesystem", "setup"],
    &[
        "basesystem",
        "bash",
        "coreutils",
        "glibc-minimal-langpack",
        "rpm",
        "shadow-utils",
    ],
    &["--can-fail rootfiles", "--can-fail vim-minimal"],
];
const EL_LISTS: &[&[&str]] = &[
    &["filesystem", "setup"],
    &[
        "basesystem",
        "bash",
        "coreutils",
        "glibc-minimal-langpack",
        "rpm",
        "shadow-utils",
    ],
    &["--can-fail rootfiles", "--can-fail vim-minimal"],
];

const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "fedora-41",
        description: "Fedora Linux 41",
        releasever: "41",
        repos: &[
            (
                "fedora",
                "Fedora $releasever - $basearch",
                "https://dl.fedoraproject.org/pub/fedora/linux/releases/$releasever/Everything/$basearch/os/",
            ),
            (
                "updates",
                "Fedora $releasever - $basearch - Updates",
                "https://dl.fedoraproject.org/pub/fedora/linux/updates/$releasever/Everything/$basearch/",
            ),
        ],
        gpgkey: "https://src.fedoraproject.org/rpms/fedora-repos/raw/f41/f/RPM-GPG-KEY-fedora-41-primary",
        lists: FEDORA_LISTS,
    },
    Builtin {
        name: "fedora-42",
        description: "Fedora Linux 42",
        releasever: "42",
        repos: &[
            (
                "fedora",
                "Fedora $releasever - $basearch",
                "https://dl.fedoraproject.org/pub/fedora/linux/releases/$releasever/Everything/$basearch/os/",
            ),
            (
                "updates",
                "Fedora $releasever - $basearch - Updates",
                "https://dl.fedoraproject.org/pub/fedora/linux/updates/$releasever/Everything/$basearch/",
            ),
        ],
        gpgkey: "https://src.fedoraproject.org/rpms/fedora-repos/raw/f42/f/RPM-GPG-KEY-fedora-42-primary",
        lists: FEDORA_LISTS,
    },
    Builtin {
        name: "rocky-9",
        description: "Rocky Linux 9",
        releasever: "9",
        repos: &[
            (
                "baseos",
                "Rocky Linux $releasever - BaseOS",
                "https://dl.rockylinux.org/pub/rocky/$releasever/BaseOS/$basearch/os/",
            ),
            (
                "appstream",
                "Rocky Linux $releasever - AppStream",
                "https://dl.rockylinux.org/pub/rocky/$releasever/AppStream/$basearch/os/",
            ),
        ],
        gpgkey: "https://dl.rockylinux.org/pub/rocky/RPM-GPG-KEY-Rocky-9",
        lists: EL_LISTS,
    },
    Builtin {
        name: "alma-9",
        description: "AlmaLinux 9",
        releasever: "9",
        repos: &[
            (
                "baseos",
                "AlmaLinux $releasever - BaseOS",
                "https://repo.almalinux.org/almalinux/$releasever/BaseOS/$basearch/os/",
            ),
            (
                "appstream",
                "AlmaLinux $releasever - AppStream",
                "https://repo.almalinux.org/almalinux/$releasever/AppStream/$basearch/os/",
            ),
        ],
        gpgkey: "https://repo.almalinux.org/almalinux/RPM-GPG-KEY-AlmaLinux-9",
        lists: EL_LISTS,
    },
];

/// A Debian-family release: its archive, suites and keyring.
struct DebBuiltin {
    name: &'static str,
    description: &'static str,
    releasever: &'static str,
    codename: &'static str,
    archive: &'static str,
    /// The security archive, which serves `CODENAME-security`.
    security: &'static str,
    components: &'static str,
    keyring: &'static str,
}

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const UBUNTU_KEYRING: &str = "/usr/share/keyrings/ubuntu-archive-keyring.gpg";

const DEB_BUILTINS: &[DebBuiltin] = &[
    DebBuiltin {
        name: "debian-12",
        description: "Debian 12 (bookworm)",
        releasever: "12",
        codename: "bookworm",
        archive: "http://deb.debian.org/debian",
        security: "http://deb.debian.org/debian-security",
        components: "main",
        keyring: DEBIAN_KEYRING,
    },
    DebBuiltin {
        name: "debian-13",
        description: "Debian 13 (trixie)",
        releasever: "13",
        codename: "trixie",
        archive: "http://deb.debian.org/debian",
        security: "http://deb.debian.org/debian-security",
        components: "main",
        keyring: DEBIAN_KEYRING,
    },
    DebBuiltin {
        name: "ubuntu-22.04",
        description: "Ubuntu 22.04 LTS (jammy), amd64",
        releasever: "22.04",
        codename: "jammy",
        archive: "http://archive.ubuntu.com/ubuntu",
        security: "http://security.ubuntu.com/ubuntu",
        components: "main universe",
        keyring: UBUNTU_KEYRING,
    },
    DebBuiltin {
        name: "ubuntu-24.04",
        description: "Ubuntu 24.04 LTS (noble), amd64",
        releasever: "24.04",
        codename: "noble",
        archive: "http://archive.ubuntu.com/ubuntu",
        security: "http://security.ubuntu.com/ubuntu",
        components: "main universe",
        keyring: UBUNTU_KEYRING,
    },
];

/// Every built-in distribution.
pub(crate) fn builtins() -> Vec<Distribution> {
    BUILTINS
        .iter()
        .map(to_distribution)
        .chain(DEB_BUILTINS.iter().map(deb_distribution))
        .collect()
}

/// apt verifies the Release files' signatures (the sources carry no `trusted` option), so
/// plain http is what Debian's own installer uses too.
fn deb_distribution(b: &DebBuiltin) -> Distribution {
    let DebBuiltin {
        codename,
        archive,
        security,
        components,
        ..
    } = b;
    Distribution {
        name: b.name.to_owned(),
        description: b.description.to_owned(),
        family: Family::Deb,
        releasever: b.releasever.to_owned(),
        arch: String::new(),
        gpgcheck: true,
        repo_files: Vec::new(),
        apt_sources: format!(
            "deb {archive} {codename} {components}\n\
             deb {archive} {codename}-updates {components}\n\
             deb {security} {codename}-security {components}\n"
        ),
        package_lists: Vec::new(),
        macros: String::new(),
        pubkeys: vec![PathBuf::from(b.keyring)],
        source: DistributionSource::Builtin,
    }
}

fn to_distribution(b: &Builtin) -> Distribution {
    let repo_files = b
        .repos
        .iter()
        .map(|(id, name, url)| {
            (
                format!("{id}.repo"),
                format!(
                    "[{id}]\nname={name}\nbaseurl={url}\nenabled=1\ngpgcheck=1\ngpgkey={}\n",
                    b.gpgkey
                ),
            )
        })
        .collect();
    Distribution {
        name: b.name.to_owned(),
        description: b.description.to_owned(),
        family: Family::Rpm,
        releasever: b.releasever.to_owned(),
        arch: String::new(),
        gpgcheck: true,
        repo_files,
        apt_sources: String::new(),
        package_lists: b
            .lists
            .iter()
            .enumerate()
            .map(|(i, list)| {
                (
                    format!("{:02}", i + 1),
                    list.iter().map(|line| PackageEntry::parse(line)).collect(),
                )
            })
            .collect(),
        macros: String::new(),
        pubkeys: Vec::new(),
        source: DistributionSource::Builtin,
    }
}
