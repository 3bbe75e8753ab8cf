//! Built-in and registered distributions.

use std::fs;

use vserver_guest::{DistributionSource, DistributionStore, Error, NewDistribution};
use vserver_pkgmgmt::Family;

use crate::support::{Outcome, World, run};

crate::tests![
    builtins_and_registered,
    debian_family_builtins_and_registration,
    seed_style_directory,
    unknown_name_suggests
];

fn debian_family_builtins_and_registration() -> Outcome {
    run(|| {
        let world = World::new();
        let store = DistributionStore::new(world.roots.distributions_dir());
        let bookworm = store.get("debian-12").unwrap();
        assert_eq!(bookworm.family, Family::Deb);
        assert_eq!(
            bookworm.apt_sources,
            "deb http://deb.debian.org/debian bookworm main\n\
             deb http://deb.debian.org/debian bookworm-updates main\n\
             deb http://deb.debian.org/debian-security bookworm-security main\n"
        );
        assert_eq!(
            bookworm.pubkeys,
            ["/usr/share/keyrings/debian-archive-keyring.gpg"]
                .map(std::path::PathBuf::from)
                .to_vec()
        );
        for name in ["debian-13", "ubuntu-22.04", "ubuntu-24.04"] {
            let d = store.get(name).unwrap();
            assert!(d.apt_sources.contains("-security"), "{name}");
        }

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
            assert!(
                matches!(store.add(&bad), Err(Error::BadDistribution { .. })),
                "{sources:?}"
            );
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
