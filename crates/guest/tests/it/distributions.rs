//! Built-in and registered distributions.

use std::fs;

use vserver_guest::{DistributionSource, DistributionStore, Error, NewDistribution};
use vserver_pkgmgmt::Family;

use crate::support::{Outcome, World, run};

crate::tests![
    builtins_and_registered,
    debian_family_builtins_and_registration,
    seed_style_directory,
    unknown_name_suggests,
    add_refuses_control_characters_in_every_field,
    read_back_refuses_what_add_would,
    guest_settings_are_checked_like_a_distribution,
];

fn debian_family_builtins_and_registration() -> Outcome {
    run(|| {
        let world = World::new();
        // The built-ins take their archives from the host's apt sources: here a temporary
        // `/etc/apt` with a deb822 Debian archive, its security suite on another URI, a
        // third-party repository and a classic one-line Ubuntu `sources.list`.
        let apt = world.temp.path().join("etc-apt");
        fs::create_dir_all(apt.join("sources.list.d")).unwrap();
        fs::write(
            apt.join("sources.list.d/debian.sources"),
            "Types: deb\nURIs: http://archive.test/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\n\n\
             Types: deb\nURIs: http://security.test/debian-security\n\
             Suites: bookworm-security\nComponents: main\n",
        )
        .unwrap();
        fs::write(
            apt.join("sources.list.d/vendor.sources"),
            "Types: deb\nURIs: https://vendor.test/apt\nSuites: nodistro\nComponents: main\n",
        )
        .unwrap();
        fs::write(
            apt.join("sources.list"),
            "deb http://ubuntu.test/ubuntu jammy main restricted\n\
             deb http://ubuntu.test/ubuntu jammy universe\n\
             deb http://ubuntu.test/ubuntu jammy-security main universe\n",
        )
        .unwrap();
        let store = DistributionStore::new(world.roots.distributions_dir()).with_apt_dir(&apt);
        let bookworm = store.get("debian-12").unwrap();
        assert_eq!(bookworm.family, Family::Deb);
        assert_eq!(
            bookworm.apt_sources,
            "deb http://archive.test/debian bookworm main\n\
             deb http://archive.test/debian bookworm-updates main\n\
             deb http://security.test/debian-security bookworm-security main\n"
        );
        assert_eq!(bookworm.missing_archive, None);
        assert_eq!(
            bookworm.pubkeys,
            ["/usr/share/keyrings/debian-archive-keyring.gpg"]
                .map(std::path::PathBuf::from)
                .to_vec()
        );
        assert_eq!(
            store.get("ubuntu-22.04").unwrap().apt_sources,
            "deb http://ubuntu.test/ubuntu jammy main universe\n\
             deb http://ubuntu.test/ubuntu jammy-security main universe\n"
        );
        // No archive for these suites: listed all the same, without sources.
        let listed = store.list().unwrap();
        for name in ["debian-13", "ubuntu-24.04"] {
            let d = store.get(name).unwrap();
            assert!(listed.contains(&d), "{name}");
            assert_eq!(d.apt_sources, "", "{name}");
            let missing = d.missing_archive.expect(name);
            assert_eq!(missing.apt_dir, apt, "{name}");
        }
        let trixie = store.get("debian-13").unwrap().missing_archive.unwrap();
        assert_eq!(
            (trixie.suite.as_str(), &trixie.components[..]),
            ("trixie", &["main".to_owned()][..])
        );

        let keyring = world.roots.distributions_dir().join("../local.gpg");
        fs::create_dir_all(keyring.parent().unwrap()).unwrap();
        fs::write(&keyring, b"key").unwrap();
        let new = NewDistribution {
            name: "local".into(),
            releasever: "12".into(),
            family: Family::Deb,
            apt_sources: vec![
                "file:/srv/mirror bookworm".into(),
                "http://example.org/debian bookworm-updates main contrib".into(),
            ],
            pubkeys: vec![keyring],
            ..NewDistribution::default()
        };
        let dir = store.add(&new).unwrap();
        let local = store.get("local").unwrap();
        assert_eq!(local.family, Family::Deb);
        assert_eq!(
            local.apt_sources,
            "deb file:/srv/mirror bookworm main\n\
             deb http://example.org/debian bookworm-updates main contrib\n"
        );
        assert_eq!(local.pubkeys, vec![dir.join("apt/trusted.gpg.d/local.gpg")]);

        // No apt source, a line break, an option bracket or a missing scheme: refused, nothing
        // registered.
        for sources in [
            vec![],
            vec!["file:/m bookworm main\ndeb http://evil/ x main".to_owned()],
            vec!["[trusted=yes] file:/m bookworm".to_owned()],
            vec!["/srv/mirror bookworm".to_owned()],
            vec!["file:/m".to_owned()],
        ] {
            let bad = NewDistribution {
                name: "bad".into(),
                apt_sources: sources.clone(),
                ..new.clone()
            };
            let refused = store.add(&bad);
            if sources.is_empty() {
                assert!(
                    matches!(refused, Err(Error::BadDistribution { .. })),
                    "{refused:?}"
                );
            } else {
                assert!(
                    matches!(&refused, Err(Error::InvalidField(e)) if e.field == "apt source"),
                    "{sources:?}: {refused:?}"
                );
            }
            assert!(store.get("bad").is_err());
        }
        Ok(())
    })
}

fn builtins_and_registered() -> Outcome {
    run(|| {
        let world = World::new();
        let store = DistributionStore::new(world.roots.distributions_dir());
        let names: Vec<String> = store.list().unwrap().into_iter().map(|d| d.name).collect();
        for builtin in ["fedora-41", "fedora-42", "rocky-9", "alma-9"] {
            assert!(names.contains(&builtin.to_string()), "{names:?}");
        }
        let rocky = store.get("rocky-9").unwrap();
        assert_eq!(rocky.source, DistributionSource::Builtin);
        assert!(
            rocky
                .repo_files
                .iter()
                .any(|(_, t)| t.contains("dl.rockylinux.org"))
        );
        assert!(!rocky.package_lists.is_empty());

        // `vdistro add fc3 --releasever 3 --repo base=… --repo updates=…`, as in the seed.
        let dir = store
            .add(&NewDistribution {
                name: "fc3".into(),
                releasever: "3".into(),
                repos: vec![
                    ("base".into(), "file:///srv/mirror/fedora/3/base".into()),
                    (
                        "updates".into(),
                        "http://mirror.example/fedora/$releasever/updates".into(),
                    ),
                ],
                package_lists: vec![
                    vec!["filesystem".into()],
                    vec!["bash".into(), "--can-fail vim".into()],
                ],
                macros: "%_excludedocs 1\n".into(),
                ..NewDistribution::default()
            })
            .unwrap();
        assert!(dir.join("yum.repos.d/base.repo").is_file());
        let text = fs::read_to_string(dir.join("yum.repos.d/updates.repo")).unwrap();
        assert!(
            text.contains("baseurl=http://mirror.example/fedora/$releasever/updates"),
            "{text}"
        );
        let fc3 = store.get("fc3").unwrap();
        assert_eq!(fc3.releasever, "3");
        assert_eq!(fc3.family, Family::Rpm);
        assert!(!fc3.gpgcheck);
        assert_eq!(fc3.package_lists.len(), 2);
        assert!(
            fc3.package_lists[1]
                .1
                .iter()
                .any(|e| e.name == "vim" && e.can_fail)
        );
        assert_eq!(fc3.macros, "%_excludedocs 1\n");
        // Adding again needs --force; nothing half-written stays behind.
        let again = NewDistribution {
            name: "fc3".into(),
            releasever: "3".into(),
            repos: vec![("b".into(), "file:///x".into())],
            ..NewDistribution::default()
        };
        assert!(matches!(
            store.add(&again),
            Err(Error::DistributionExists { .. })
        ));
        store
            .add(&NewDistribution {
                force: true,
                ..again
            })
            .unwrap();
        assert!(!dir.join("yum.repos.d/base.repo").exists());
        let leftovers: Vec<_> = fs::read_dir(world.roots.distributions_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("fc3")]);
        // A registered directory replaces the built-in of the same name.
        store
            .add(&NewDistribution {
                name: "rocky-9".into(),
                releasever: "9.5".into(),
                repos: vec![("local".into(), "file:///srv/rocky".into())],
                ..NewDistribution::default()
            })
            .unwrap();
        let rocky = store.get("rocky-9").unwrap();
        assert_eq!(rocky.releasever, "9.5");
        assert_eq!(
            store
                .list()
                .unwrap()
                .iter()
                .filter(|d| d.name == "rocky-9")
                .count(),
            1
        );
        Ok(())
    })
}

fn seed_style_directory() -> Outcome {
    run(|| {
        // Written by hand as the 2005 post does: only yum.repos.d, no distribution.toml.
        let world = World::new();
        let dir = world.roots.distributions_dir().join("fc3");
        fs::create_dir_all(dir.join("yum.repos.d")).unwrap();
        fs::write(
            dir.join("yum.repos.d/fc3.repo"),
            "[fc3]\nname=Fedora Core $releasever - $basearch - Base\nbaseurl=file:///srv/3\n",
        )
        .unwrap();
        fs::create_dir_all(dir.join("pkgs")).unwrap();
        fs::write(
            dir.join("pkgs/01"),
            "filesystem # first\n--can-fail rootfiles\n\nbash coreutils\n",
        )
        .unwrap();
        let fc3 = DistributionStore::new(world.roots.distributions_dir())
            .get("fc3")
            .unwrap();
        assert_eq!(fc3.family, Family::Rpm);
        let names: Vec<(String, bool)> = fc3.package_lists[0]
            .1
            .iter()
            .map(|e| (e.name.clone(), e.can_fail))
            .collect();
        assert_eq!(
            names,
            vec![
                ("filesystem".into(), false),
                ("rootfiles".into(), true),
                ("bash".into(), false),
                ("coreutils".into(), false)
            ]
        );
        Ok(())
    })
}

fn unknown_name_suggests() -> Outcome {
    run(|| {
        let world = World::new();
        let store = DistributionStore::new(world.roots.distributions_dir());
        let error = store.get("fedora-4").unwrap_err();
        assert_eq!(error.to_string(), "unknown distribution `fedora-4`");
        assert_eq!(error.hint().as_deref(), Some("did you mean `fedora-41`?"));
        let error = vserver_guest::load_guest(&world.roots, "nosuch").unwrap_err();
        assert!(
            error.to_string().starts_with("unknown guest `nosuch`"),
            "{error}"
        );
        assert!(matches!(
            store.add(&NewDistribution {
                name: "../evil".into(),
                ..NewDistribution::default()
            }),
            Err(Error::InvalidName { .. })
        ));
        Ok(())
    })
}

/// Control characters that would split a line or hide in one: line feed, carriage return, NUL,
/// tab, escape, DEL.
const CONTROLS: [&str; 6] = ["\n", "\r", "\0", "\t", "\x1b", "\x7f"];

/// A value of every field of `vdistro add` that lands in a file, with a control character in
/// it, is refused with an error naming the field and the value; nothing is written, not even the
/// `.distributions` directory.
fn add_refuses_control_characters_in_every_field() -> Outcome {
    run(|| {
        let world = World::new();
        let dir = world.roots.distributions_dir();
        let store = DistributionStore::new(&dir);
        let keys = world.temp.path().join("keys");
        let rpm = NewDistribution {
            name: "local".into(),
            description: "local mirror".into(),
            releasever: "41".into(),
            arch: "x86_64".into(),
            repos: vec![("base".into(), "file:///srv/mirror".into())],
            package_lists: vec![vec!["bash ?vim".into()]],
            macros: "%_excludedocs 1\n".into(),
            ..NewDistribution::default()
        };
        let deb = NewDistribution {
            family: Family::Deb,
            arch: "amd64".into(),
            repos: Vec::new(),
            macros: String::new(),
            apt_sources: vec!["file:/srv/mirror bookworm main".into()],
            ..rpm.clone()
        };
        type Edit = fn(&mut NewDistribution, &str);
        let fields: &[(&str, bool, Edit)] = &[
            ("description", false, |d, c| {
                d.description = format!("local{c}mirror")
            }),
            ("release version", false, |d, c| {
                d.releasever = format!("4{c}1")
            }),
            ("architecture", false, |d, c| {
                d.arch = format!("{}{c}", d.arch)
            }),
            ("repository id", false, |d, c| {
                d.repos[0].0 = format!("base{c}[evil]")
            }),
            ("repository URL", false, |d, c| {
                d.repos[0].1 = format!("file:///x{c}[evil]{c}baseurl=file:///etc")
            }),
            ("package list", false, |d, c| {
                d.package_lists[0][0] = format!("bash{c}vim")
            }),
            ("rpm macros line 1", false, |d, c| {
                d.macros = format!("%_excludedocs 1{c}\n")
            }),
            ("apt source", true, |d, c| {
                d.apt_sources[0] = format!("file:/srv/m bookworm main{c}deb http://evil/ x main")
            }),
            ("package list", true, |d, c| {
                d.package_lists[0][0] = format!("bash{c}vim")
            }),
            ("architecture", true, |d, c| d.arch = format!("amd64{c}")),
        ];
        for (field, is_deb, edit) in fields {
            for control in CONTROLS {
                // Macros are lines (a line feed separates them; what a line may hold is the
                // rest of this test) and a tab is a blank there, as in rpm's own macro files.
                if field.starts_with("rpm macros") && ["\n", "\t"].contains(&control) {
                    continue;
                }
                let mut bad = if *is_deb { deb.clone() } else { rpm.clone() };
                edit(&mut bad, control);
                let error = store.add(&bad).unwrap_err();
                let message = error.to_string();
                assert!(
                    matches!(&error, Error::InvalidField(e) if e.field == *field),
                    "{field} {control:?}: {message}"
                );
                assert!(!message.contains(['\n', '\r', '\0']), "{message:?}");
                assert!(!dir.exists(), "{field} {control:?} wrote {}", dir.display());
            }
        }
        // A public key's file name lands in the directory (and in apt's and rpm's arguments).
        for control in CONTROLS {
            // Refused by name, before the file is read (a NUL cannot be in a file name at all).
            let key = keys.join(format!("key{control}x.gpg"));
            let error = store
                .add(&NewDistribution {
                    pubkeys: vec![key],
                    ..deb.clone()
                })
                .unwrap_err();
            assert!(
                matches!(&error, Error::InvalidField(e) if e.field == "public key file name"),
                "{error}"
            );
            assert!(!dir.exists());
        }
        // Not control characters, but out of their syntax: a path as architecture, a repository
        // id dnf refuses, an option as package name, shell in the macros.
        for bad in [
            NewDistribution {
                arch: "../x".into(),
                ..rpm.clone()
            },
            NewDistribution {
                arch: "/".into(),
                ..deb.clone()
            },
            NewDistribution {
                arch: "amd64".into(),
                ..rpm.clone()
            },
            NewDistribution {
                repos: vec![("a/b".into(), "file:///x".into())],
                ..rpm.clone()
            },
            NewDistribution {
                repos: vec![("b".into(), "/srv/no-scheme".into())],
                ..rpm.clone()
            },
            NewDistribution {
                package_lists: vec![vec!["--setopt=x".into()]],
                ..rpm.clone()
            },
            NewDistribution {
                package_lists: vec![vec!["Bash".into()]],
                ..deb.clone()
            },
            NewDistribution {
                macros: "%x_ok %(id)\n".into(),
                ..rpm.clone()
            },
            NewDistribution {
                macros: "%_dbpath /var/lib/rpm\n".into(),
                ..rpm.clone()
            },
            NewDistribution {
                releasever: "../41".into(),
                ..rpm.clone()
            },
        ] {
            assert!(
                matches!(store.add(&bad), Err(Error::InvalidField(_))),
                "{bad:?}"
            );
            assert!(!dir.exists());
        }
        // The valid ones register; the package lists are written one entry a line.
        let registered = store.add(&rpm).unwrap();
        assert_eq!(
            fs::read_to_string(registered.join("pkgs/01")).unwrap(),
            "bash\n--can-fail vim\n"
        );
        store
            .add(&NewDistribution {
                name: "localdeb".into(),
                ..deb
            })
            .unwrap();
        assert_eq!(store.get("localdeb").unwrap().arch, "amd64");
        Ok(())
    })
}

/// A registered directory edited by hand (or written by an older version) is checked as `add`
/// checks: the distribution is refused, naming the file, before any of it reaches a guest.
fn read_back_refuses_what_add_would() -> Outcome {
    run(|| {
        let world = World::new();
        let store = DistributionStore::new(world.roots.distributions_dir());
        let good = store
            .add(&NewDistribution {
                name: "good".into(),
                releasever: "41".into(),
                repos: vec![("base".into(), "file:///srv/mirror".into())],
                package_lists: vec![vec!["bash".into()]],
                macros: "%_excludedocs 1\n".into(),
                ..NewDistribution::default()
            })
            .unwrap();
        let deb = store
            .add(&NewDistribution {
                name: "gooddeb".into(),
                releasever: "12".into(),
                family: Family::Deb,
                apt_sources: vec!["file:/srv/mirror bookworm main".into()],
                ..NewDistribution::default()
            })
            .unwrap();
        let cases: &[(&std::path::Path, &str, &str)] = &[
            (
                &good,
                "distribution.toml",
                "family = \"rpm\"\narch = \"../x\"\n",
            ),
            (
                &good,
                "distribution.toml",
                "family = \"rpm\"\nreleasever = \"4\\n1\"\n",
            ),
            (
                &good,
                "distribution.toml",
                "family = \"rpm\"\ndescription = \"a\\u001b[2Jb\"\n",
            ),
            (
                &good,
                "yum.repos.d/base.repo",
                "[base]\nbaseurl=file:///x\r\n[evil]\n",
            ),
            (
                &good,
                "yum.repos.d/base.repo",
                "[base]\nbaseurl=file:///x\0\n",
            ),
            (
                &good,
                "yum.repos.d/evil\n[x].repo",
                "[x]\nbaseurl=file:///x\n",
            ),
            (&good, "pkgs/01", "bash\r\nvim\n"),
            (&good, "pkgs/01", "bash --setopt=reposdir=/tmp\n"),
            (&good, "pkgs/0\n1", "bash\n"),
            (&good, "rpm/macros", "%_excludedocs 1\r\n"),
            (&good, "rpm/macros", "%_dbpath /var/lib/rpm\n"),
            (&good, "rpm/macros", "%x_ok %{lua: os.execute('id')}\n"),
            (&good, "pubkeys/key\nx", "key"),
            (&deb, "apt/sources.list", "deb file:/m bookworm main\r\n"),
            (&deb, "apt/sources.list", "deb file:/m bookworm main\0\n"),
            (&deb, "apt/trusted.gpg.d/k\x1b.gpg", "key"),
        ];
        for (dir, file, content) in cases {
            let path = dir.join(file);
            let saved = fs::read(&path).ok();
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, content).unwrap();
            let name = dir.file_name().unwrap().to_str().unwrap();
            let error = store.get(name).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(&error, Error::InvalidField(e) if e.path.as_ref() == Some(&path)),
                "{file:?} {content:?}: {message}"
            );
            assert!(!message.contains(['\n', '\r', '\0', '\x1b']), "{message:?}");
            assert!(store.list().is_err());
            match saved {
                Some(bytes) => fs::write(&path, bytes).unwrap(),
                None => fs::remove_file(&path).unwrap(),
            }
            store.get(name).unwrap();
        }
        Ok(())
    })
}

/// A guest's architecture and release version reach apt's and dnf's configuration; a
/// hand-edited `config.toml` (or a build's `--releasever`) is held to the distribution's rules.
fn guest_settings_are_checked_like_a_distribution() -> Outcome {
    run(|| {
        let world = World::new();
        let deb = vserver_guest::GuestConfig {
            name: "g".into(),
            root: world.roots.rootdir.join("g"),
            family: "deb".into(),
            arch: "amd64\";\nDPkg::Options { \"--force-all\"; };".into(),
            package_management: vserver_guest::PackageManagement::External,
            ..vserver_guest::GuestConfig::default()
        };
        let error = vserver_guest::open_deb_backend(&world.roots, &deb, false).unwrap_err();
        let message = error.to_string();
        assert!(matches!(error, Error::BadRequest { .. }), "{message}");
        assert!(
            message.contains("invalid architecture \"amd64\\\""),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message:?}");
        let rpm = vserver_guest::GuestConfig {
            family: "rpm".into(),
            arch: "x86_64".into(),
            releasever: "../../x".into(),
            ..deb
        };
        let error = vserver_guest::open_backend(&world.roots, &rpm, false).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("invalid release version \"../../x\""),
            "{error}"
        );

        let request = vserver_guest::BuildRequest {
            distribution: None,
            releasever: Some("41\n[evil]".into()),
            ..world.request("g", vserver_guest::BuildMethod::Skeleton)
        };
        let error = vserver_guest::build(&world.roots, &request, &mut |_| {}).unwrap_err();
        assert!(
            error.to_string().contains("invalid release version"),
            "{error}"
        );
        assert!(!world.roots.confdir.join("g").exists());
        assert!(!world.roots.rootdir.join("g").exists());
        Ok(())
    })
}
