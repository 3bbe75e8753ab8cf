//! `vserver G build` with each method, then host-side rpm/dnf on the guest.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use vserver_guest::{BuildMethod, Error, PackageManagement};
use vserver_pkgmgmt::Tool;

use crate::support::{
    Outcome, World, assert_no_package_state_in_guest, fixture_repo, require_tools, run, tool,
};

crate::tests![
    skeleton,
    yum_build_and_host_side_operations,
    failed_build_cleans_up_or_keeps,
    force_moves_aside_and_restores,
    rpm_method_from_manifest
];

fn skeleton() -> Outcome {
    run(|| {
        crate::support::require(
            rustix::process::geteuid().is_root(),
            "needs root (device nodes)",
        )?;
        let world = World::new();
        let mut request = world.request("sk", BuildMethod::Skeleton);
        request.distribution = None;
        request.hostname = Some("sk.example".into());
        let config = world.build(&request).unwrap();
        assert_eq!(config.package_management, PackageManagement::None);
        let root = world.root("sk");
        for dir in [
            "proc", "sys", "tmp", "var/tmp", "etc", "root", ".rpmdb", "dev/pts", "dev/shm",
        ] {
            assert!(root.join(dir).is_dir(), "{dir}");
        }
        for node in ["null", "zero", "full", "random", "urandom", "tty", "ptmx"] {
            assert!(
                fs::metadata(root.join("dev").join(node))
                    .unwrap()
                    .file_type()
                    .is_char_device(),
                "{node}"
            );
        }
        assert_eq!(
            fs::read_link(root.join("dev/fd")).unwrap().to_str(),
            Some("/proc/self/fd")
        );
        assert!(
            fs::read_to_string(root.join("etc/hosts"))
                .unwrap()
                .contains("sk.example")
        );
        assert!(root.join("etc/resolv.conf").is_file());
        let text = fs::read_to_string(world.roots.confdir.join("sk/config.toml")).unwrap();
        assert!(
            text.contains("name = \"sk\"") && text.contains("package_management = \"none\""),
            "{text}"
        );
        // A skeleton has no package state, only the identity `delete` checks.
        let state: Vec<String> = fs::read_dir(world.roots.pkgdir.join("sk"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(state, ["identity"]);
        // A second build without --force refuses.
        assert!(matches!(
            world.build(&request),
            Err(Error::GuestExists { .. })
        ));
        Ok(())
    })
}

fn yum_build_and_host_side_operations() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        world.register_fixture(&["fx-shell", "fx-00000 ?fx-does-not-exist"]);
        let mut request = world.request("t", BuildMethod::Yum);
        request.packages = vec!["fx-00002".into()];
        let mut events = Vec::new();
        let config = vserver_guest::build(&world.roots, &request, &mut |e| events.push(e)).unwrap();
        assert_eq!(config.releasever, "1");
        assert!(!config.gpgcheck);
        assert!(
            events.iter().any(|e| matches!(e, vserver_guest::BuildEvent::Warning(w) if w.contains("fx-does-not-exist"))),
            "{events:?}"
        );
        let root = world.root("t");
        let pkg = world.roots.pkgdir.join("t");
        // The database is outside, the guest holds none and no dnf state.
        assert!(pkg.join("rpm/state/rpmdb.sqlite").is_file());
        assert!(
            fs::read_to_string(pkg.join("rpm/etc/macros"))
                .unwrap()
                .contains("%_dbpath /.rpmdb")
        );
        assert!(pkg.join("yum/etc/yum.repos.d/fx.repo").is_file());
        assert!(!pkg.join("yum/etc/yum.repos.d/fx.repo").is_symlink());
        assert!(pkg.join("yum/lib/history.sqlite").is_file());
        assert!(pkg.join("yum/log/dnf.log").is_file());
        assert_no_package_state_in_guest(&root);
        assert!(root.join("bin/busybox").is_file());
        assert!(
            root.join("var/lib/fx-00002/state").is_file(),
            "fx-00002's %post ran in the guest"
        );

        let backend = world.backend("t");
        let (code, out, _) = tool(&backend, Tool::Low, &["-qa", "--qf", "%{NAME}\n"]);
        assert_eq!(code, 0);
        let mut names: Vec<&str> = out.lines().collect();
        names.sort();
        assert_eq!(names, ["fx-00000", "fx-00001", "fx-00002", "fx-shell"]);

        // vyum install: the scriptlet ran inside the guest, without the database, confined.
        let (code, _, err) = tool(
            &backend,
            Tool::Resolver,
            &["-y", "install", "probe", "netshared"],
        );
        assert_eq!(code, 0, "{err}");
        assert!(root.join("var/tmp/probe-post-ran").exists());
        assert_eq!(
            fs::read_to_string(root.join("var/tmp/probe-rpmdb.txt")).unwrap(),
            "",
            "scriptlet saw the database"
        );
        let status = fs::read_to_string(root.join("var/tmp/probe-status.txt")).unwrap();
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        let cap_eff = status.lines().find(|l| l.starts_with("CapEff")).unwrap();
        let caps = u64::from_str_radix(cap_eff.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(
            caps & (1 << 21),
            0,
            "scriptlet kept CAP_SYS_ADMIN: {status}"
        );
        assert_eq!(
            caps & (1 << 18),
            0,
            "scriptlet kept CAP_SYS_CHROOT: {status}"
        );
        // Netshared paths were not installed; the rest of the package was.
        assert!(root.join("usr/share/netshared/kept").is_file());
        assert!(!root.join("etc/rc.d/init.d/halt").exists());
        assert!(!root.join("sbin/new-kernel-pkg").exists());

        // vrpm -q passes the exit status through.
        assert_eq!(tool(&backend, Tool::Low, &["-q", "probe"]).0, 0);
        assert_eq!(tool(&backend, Tool::Low, &["-q", "no-such-package"]).0, 1);
        assert_eq!(tool(&backend, Tool::Low, &["-V", "probe"]).0, 0);
        // vrpm -Va: everything installed verifies (netshared files are not reported missing).
        let (code, out, err) = tool(&backend, Tool::Low, &["-Va"]);
        assert_eq!(code, 0, "{out}{err}");
        // vyum remove.
        let (code, _, err) = tool(&backend, Tool::Resolver, &["-y", "remove", "probe"]);
        assert_eq!(code, 0, "{err}");
        assert!(root.join("var/tmp/probe-postun-ran").exists());
        assert!(!root.join("usr/share/probe/README").exists());
        assert_eq!(tool(&backend, Tool::Low, &["-q", "probe"]).0, 1);
        assert_no_package_state_in_guest(&root);
        world.assert_host_unchanged();
        Ok(())
    })
}

fn failed_build_cleans_up_or_keeps() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        world.register_fixture(&["fx-shell"]);
        let mut request = world.request("bad", BuildMethod::Yum);
        request.packages = vec!["no-such-package".into()];
        let error = world.build(&request).unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(
                "building guest `bad` failed during extra packages; removed everything it created"
            ),
            "{text}"
        );
        for dir in [&world.roots.confdir, &world.roots.rootdir] {
            assert!(!dir.join("bad").exists(), "{} left behind", dir.display());
        }
        // Only the operation log the error names is left of the package state.
        assert!(vserver_pkgmgmt::holds_only_logs(
            &world.roots.pkgdir.join("bad")
        ));
        request.keep = true;
        let error = world.build(&request).unwrap_err();
        assert!(error.to_string().contains("kept what was built"), "{error}");
        assert!(world.root("bad").join("bin/busybox").is_file());
        assert!(
            world
                .roots
                .pkgdir
                .join("bad/rpm/state/rpmdb.sqlite")
                .is_file()
        );
        // An unknown distribution fails before anything is created, with a hint.
        let mut request = world.request("other", BuildMethod::Yum);
        request.distribution = Some("fixtur".into());
        let error = world.build(&request).unwrap_err();
        assert_eq!(error.hint().as_deref(), Some("did you mean `fixture`?"));
        assert!(!world.root("other").exists());
        Ok(())
    })
}

fn force_moves_aside_and_restores() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        world.register_fixture(&["fx-shell"]);
        let request = world.request("f", BuildMethod::Yum);
        world.build(&request).unwrap();
        fs::write(world.root("f").join("etc/marker"), "old guest\n").unwrap();
        // A failing forced rebuild puts the old guest back.
        let mut failing = request.clone();
        failing.force = true;
        failing.packages = vec!["no-such-package".into()];
        let error = world.build(&failing).unwrap_err();
        assert_eq!(
            fs::read_to_string(world.root("f").join("etc/marker")).unwrap(),
            "old guest\n"
        );
        // The log the error names is there, among the restored guest's.
        let chain = std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(": ");
        let log = chain
            .split_once("(command and full output: ")
            .and_then(|(_, log)| log.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no log named: {chain}"));
        assert!(
            Path::new(log).starts_with(world.roots.pkgdir.join("f/log"))
                && Path::new(log).is_file(),
            "{chain}"
        );
        assert!(
            world
                .roots
                .pkgdir
                .join("f/rpm/state/rpmdb.sqlite")
                .is_file()
        );
        // A successful forced rebuild replaces it and leaves nothing aside.
        let mut forced = request.clone();
        forced.force = true;
        world.build(&forced).unwrap();
        assert!(!world.root("f").join("etc/marker").exists());
        let aside: Vec<_> = fs::read_dir(&world.roots.rootdir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".old-"))
            .collect();
        assert!(aside.is_empty(), "{aside:?}");
        Ok(())
    })
}

fn rpm_method_from_manifest() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        world.register_fixture(&[]);
        let repo = fixture_repo();
        let manifest = world.temp.path().join("manifest");
        let files: Vec<String> = fs::read_dir(&repo)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with("fx-shell") || name.starts_with("fx-00000")
            })
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(files.len(), 2);
        fs::write(&manifest, files.join("\n") + "\n").unwrap();
        let mut request = world.request("r", BuildMethod::Rpm);
        request.rpm_files = vec![manifest];
        world.build(&request).unwrap();
        let (code, out, _) = tool(
            &world.backend("r"),
            Tool::Low,
            &["-qa", "--qf", "%{NAME}\n"],
        );
        assert_eq!(code, 0);
        let mut names: Vec<&str> = out.lines().collect();
        names.sort();
        assert_eq!(names, ["fx-00000", "fx-shell"]);
        assert_no_package_state_in_guest(&world.root("r"));
        Ok(())
    })
}
