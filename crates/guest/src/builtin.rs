//! Distributions shipped inside the binary: current Fedora, Rocky Linux and AlmaLinux releases
//! with their public mirrors and base package lists, and current Debian and Ubuntu releases with
//! their release, updates and security suites, verified with the host's archive keyrings
//! (packages `debian-archive-keyring`, `ubuntu-keyring`). A registered directory of the same
//! name overrides one of these.
//!
//! A Debian-family release names no archive of its own: it takes the archives the host's apt
//! sources serve its suites from (module `host_apt`). When they serve none, the distribution
//! still lists, with no sources and a [`MissingArchive`] that a build without `--mirror` reports.

use std::path::PathBuf;

use crate::distribution::{Distribution, DistributionSource, MissingArchive, PackageEntry};
use crate::host_apt::HostAptSources;
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

/// A Debian-family release: its suites and keyring; the archives come from the host.
struct DebBuiltin {
    name: &'static str,
    description: &'static str,
    releasever: &'static str,
    codename: &'static str,
    components: &'static [&'static str],
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
        components: &["main"],
        keyring: DEBIAN_KEYRING,
    },
    DebBuiltin {
        name: "debian-13",
        description: "Debian 13 (trixie)",
        releasever: "13",
        codename: "trixie",
        components: &["main"],
        keyring: DEBIAN_KEYRING,
    },
    DebBuiltin {
        name: "ubuntu-22.04",
        description: "Ubuntu 22.04 LTS (jammy)",
        releasever: "22.04",
        codename: "jammy",
        components: &["main", "universe"],
        keyring: UBUNTU_KEYRING,
    },
    DebBuiltin {
        name: "ubuntu-24.04",
        description: "Ubuntu 24.04 LTS (noble)",
        releasever: "24.04",
        codename: "noble",
        components: &["main", "universe"],
        keyring: UBUNTU_KEYRING,
    },
];

/// Every built-in distribution, the Debian-family ones with the archives of `host`'s apt
/// sources.
pub(crate) fn builtins(host: &HostAptSources) -> Vec<Distribution> {
    BUILTINS
        .iter()
        .map(to_distribution)
        .chain(DEB_BUILTINS.iter().map(|b| deb_distribution(b, host)))
        .collect()
}

/// apt verifies the Release files' signatures (the sources carry no `trusted` option, and the
/// host's options are not copied), so plain http is as good as what the host uses.
fn deb_distribution(b: &DebBuiltin, host: &HostAptSources) -> Distribution {
    let apt_sources = host.release_sources(b.codename, b.components);
    let missing_archive = match apt_sources {
        Some(_) => None,
        None => Some(MissingArchive {
            suite: b.codename.to_owned(),
            components: b.components.iter().map(|c| (*c).to_owned()).collect(),
            apt_dir: host.dir().to_owned(),
        }),
    };
    Distribution {
        name: b.name.to_owned(),
        description: b.description.to_owned(),
        family: Family::Deb,
        releasever: b.releasever.to_owned(),
        arch: String::new(),
        gpgcheck: true,
        repo_files: Vec::new(),
        apt_sources: apt_sources.unwrap_or_default(),
        missing_archive,
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
        missing_archive: None,
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
