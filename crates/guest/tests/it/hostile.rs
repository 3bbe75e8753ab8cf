//! Hostile guests: planted symlinks and a guest `/bin/sh` that attacks the host. Every operation
//! fails safe or stays inside the guest; the host canary does not change.

use std::fs;
use std::os::unix::fs::symlink;

use vserver_guest::BuildMethod;
use vserver_pkgmgmt::{Error as PkgError, PackageBackend, Tool};

use crate::support::{HOST_TARGET_NAME, Outcome, World, require_tools, run, tool};

crate::tests![
    rpmdb_symlink_to_host_is_refused,
    var_lib_to_root_stays_inside,
    hostile_shell_and_scriptlets_stay_inside,
    hung_scriptlet_is_killed_and_the_lock_released
];

fn built(world: &World, guest: &str) {
    world.register_fixture(&["fx-shell"]);
    world
        .build(&world.request(guest, BuildMethod::Yum))
        .unwrap();
}

fn rpmdb_symlink_to_host_is_refused() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        built(&world, "h");
        let root = world.root("h");
        fs::remove_dir(root.join(".rpmdb")).unwrap();
        symlink(&world.canary, root.join(".rpmdb")).unwrap();
        let backend = world.backend("h");
        for (which, args) in [
            (Tool::Low, vec!["-qa"]),
            (Tool::Resolver, vec!["-y", "install", "fx-00000"]),
        ] {
            let args: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
            let error = backend.run_tool_captured(which, &args).unwrap_err();
            assert!(matches!(error, PkgError::Sandbox { .. }), "{error:?}");
            let mut chain = error.to_string();
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                chain.push_str(": ");
                chain.push_str(&cause.to_string());
                source = cause.source();
            }
            assert!(chain.starts_with("guest `h`: cannot run `"), "{chain}");
            assert!(chain.contains("/.rpmdb"), "{chain}");
        }
        // A relative symlink up and out, and one into the guest's own tree: refused too.
        fs::remove_file(root.join(".rpmdb")).unwrap();
        symlink("../../../../..", root.join(".rpmdb")).unwrap();
        assert!(
            backend
                .run_tool_captured(Tool::Low, &["-qa".into()])
                .is_err()
        );
        world.assert_host_unchanged();
        // The database itself is intact: repair the mount point and it works again.
        fs::remove_file(root.join(".rpmdb")).unwrap();
        fs::create_dir(root.join(".rpmdb")).unwrap();
        assert_eq!(tool(&backend, Tool::Low, &["-q", "fx-shell"]).0, 0);
        Ok(())
    })
}

fn var_lib_to_root_stays_inside() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        built(&world, "v");
        let root = world.root("v");
        fs::create_dir_all(root.join("var")).unwrap();
        let _ = fs::remove_dir_all(root.join("var/lib"));
        symlink("/", root.join("var/lib")).unwrap();
        let backend = world.backend("v");
        // fx-00003's files and %post write below /var/lib: they land in the guest's own root.
        let (code, _, err) = tool(&backend, Tool::Resolver, &["-y", "install", "fx-00003"]);
        assert_eq!(code, 0, "{err}");
        assert!(
            root.join("fx-00003/state").is_file(),
            "written through the guest's link"
        );
        assert!(!std::path::Path::new("/fx-00003").exists());
        assert!(!std::path::Path::new("/var/lib/fx-00003").exists());
        assert_eq!(fs::read_dir(root.join(".rpmdb")).unwrap().count(), 0);
        assert!(!root.join("dnf").exists() && !root.join("rpm").exists());
        world.assert_host_unchanged();
        Ok(())
    })
}

fn hostile_shell_and_scriptlets_stay_inside() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        built(&world, "s");
        let root = world.root("s");
        let host_target = std::env::temp_dir().join(HOST_TARGET_NAME);
        let _ = fs::remove_file(&host_target);
        // The guest replaces /bin/sh with a script that goes for the host first.
        fs::remove_file(root.join("bin/sh")).unwrap();
        let canary = world.canary.display();
        fs::write(
            root.join("bin/sh"),
            format!(
                "#!/bin/busybox sh\n\
                 echo pwned > {canary}/secret\n\
                 echo pwned > /../../../..{canary}/secret\n\
                 echo pwned > /proc/1/root{canary}/secret\n\
                 echo pwned > /proc/sysrq-trigger\n\
                 exec /bin/busybox sh \"$@\"\n"
            ),
        )
        .unwrap();
        fs::set_permissions(
            root.join("bin/sh"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let backend = world.backend("s");
        let (code, _, err) = tool(
            &backend,
            Tool::Resolver,
            &["-y", "install", "escape", "fx-00001"],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            root.join("var/tmp/escape-post-ran").exists(),
            "the scriptlet ran"
        );
        assert!(root.join("var/lib/fx-00001/state").exists());
        assert!(!host_target.exists(), "a scriptlet wrote to the host");
        // What the scripts wrote landed in the guest, if anywhere.
        assert!(root.join("tmp").join(HOST_TARGET_NAME).exists());
        world.assert_host_unchanged();
        // The database is untouched by the guest and still answers from the host.
        assert_eq!(tool(&backend, Tool::Low, &["-q", "escape"]).0, 0);
        backend.clean_cache().unwrap();
        Ok(())
    })
}

/// A `%post` that stops rpm and sleeps: with the guest's `operation_time_limit` at 2 s,
/// installing it fails with `TimedOut` naming the scriptlet, and the same back end, in the same
/// process, takes the guest's lock again at once.
fn hung_scriptlet_is_killed_and_the_lock_released() -> Outcome {
    run(|| {
        require_tools()?;
        let world = World::new();
        built(&world, "h");
        let mut config = vserver_guest::load_guest(&world.roots, "h").unwrap();
        config.operation_time_limit = Some(std::time::Duration::from_secs(2));
        config.save(&world.roots).unwrap();
        let mut hung = vserver_fixtures::RpmPackage::new("hung", "1.0");
        hung.release("1")
            .file("/usr/share/hung/README", b"hung\n".to_vec(), 0o644)
            .post_install("kill -STOP $PPID\n/bin/busybox sleep 600\n");
        let package = hung.write_to(world.temp.path()).unwrap();
        let backend = world.backend("h");
        let started = std::time::Instant::now();
        let error = backend.install_files(&[package]).unwrap_err();
        println!("  {:?} later: {error}", started.elapsed());
        let PkgError::TimedOut { guest, source } = &error else {
            panic!("not a time-out: {error:?}");
        };
        assert_eq!(guest, "h");
        let cause = source.to_string();
        assert!(
            cause.contains(
                "did not finish within 2s; killed it while it ran `/bin/sh /var/tmp/rpm-tmp."
            ) && cause.ends_with(", which ran `/bin/busybox sleep 600`"),
            "{cause}"
        );
        let (code, out, err) = tool(&backend, Tool::Low, &["-q", "--qf", "%{NAME}\n", "hung"]);
        assert_eq!((code, out.as_str()), (0, "hung\n"), "{err}");
        world.assert_host_unchanged();
        Ok(())
    })
}
