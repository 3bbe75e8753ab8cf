//! `bind_into` and `mount_into` against planted symlinks, wrong types and a racing guest. Each
//! test works in a private mount namespace of its own thread (`unshare(CLONE_NEWNS)` acts on the
//! calling thread), so nothing it mounts can reach the host even if the code under test failed.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vserver_sandbox::{Access, Error, FileSystem, GuestRoot, bind_into, mount_into};

use crate::support::{Outcome, World, require_root, run};

crate::tests![
    bind_lands_on_the_pinned_directory,
    bind_refuses_planted_targets,
    bind_survives_a_racing_guest,
    proc_and_tmpfs_through_fsmount,
];

/// Runs `body` on a thread that lives in a private mount namespace.
fn in_private_namespace<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        vserver_sandbox::enter_private_mount_namespace().unwrap();
        body()
    })
    .join()
    .unwrap()
}

fn thread_mounts() -> String {
    fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
}

fn database(world: &World) -> std::path::PathBuf {
    let db = world._temp.path().join("db");
    fs::create_dir_all(&db).unwrap();
    fs::write(db.join("Packages"), "the database").unwrap();
    db
}

fn bind_lands_on_the_pinned_directory() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let db = database(&world);
        fs::create_dir(world.guest.join(".rpmdb")).unwrap();
        let guest = world.guest.clone();
        in_private_namespace(move || {
            let root = GuestRoot::open(&guest).unwrap();
            let mount = bind_into(&root, &db, "/.rpmdb", Access::ReadOnly).unwrap();
            assert_eq!(root.read("/.rpmdb/Packages").unwrap(), b"the database");
            let error = root
                .write_atomic("/.rpmdb/Packages", b"x", 0o644)
                .unwrap_err();
            assert_eq!(error.errno(), Some(libc::EROFS));
            assert!(thread_mounts().contains(&format!("{}/.rpmdb", guest.display())));
            assert!(mount.mount_id > 0);
            let rw = bind_into(&root, &db, "/.rpmdb", Access::ReadWrite).unwrap();
            root.write_atomic("/.rpmdb/new", b"y", 0o644).unwrap();
            assert_ne!(rw.mount_id, mount.mount_id);
        });
        // The host namespace never saw the mounts; the write went to the database directory.
        assert!(
            !fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .contains(".rpmdb")
        );
        assert_eq!(fs::read(world._temp.path().join("db/new")).unwrap(), b"y");
        world.assert_host_unchanged();
        Ok(())
    })
}

fn bind_refuses_planted_targets() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let db = database(&world);
        let g = &world.guest;
        symlink("/", g.join("to-root")).unwrap();
        symlink(&world.host, g.join("to-host")).unwrap();
        symlink("../../../..", g.join("to-up")).unwrap();
        symlink("loop-b", g.join("loop-a")).unwrap();
        symlink("loop-a", g.join("loop-b")).unwrap();
        fs::write(g.join("a-file"), "").unwrap();
        fs::create_dir_all(g.join("real/dir")).unwrap();
        symlink("real", g.join("via-link")).unwrap();
        let guest = world.guest.clone();
        in_private_namespace(move || {
            let root = GuestRoot::open(&guest).unwrap();
            let before = thread_mounts();
            for (target, errno) in [
                // A symlink as the last component is not a directory to `O_NOFOLLOW`.
                ("to-root", libc::ENOTDIR),
                ("to-host", libc::ENOTDIR),
                ("to-up", libc::ENOTDIR),
                ("loop-a", libc::ENOTDIR),
                ("a-file", libc::ENOTDIR),
                ("via-link/dir", libc::ELOOP),
                ("missing", libc::ENOENT),
                ("to-root/etc", libc::ELOOP),
            ] {
                let error = bind_into(&root, &db, target, Access::ReadWrite).unwrap_err();
                assert_eq!(error.errno(), Some(errno), "{target}: {error:?}");
                let error = mount_into(&root, &FileSystem::Proc, target).unwrap_err();
                assert_eq!(error.errno(), Some(errno), "{target}: {error:?}");
            }
            // `..` inside the guest path is clamped to the guest root, and that is a real dir.
            bind_into(&root, &db, "../../real/dir", Access::ReadOnly).unwrap();
            assert_eq!(root.read("real/dir/Packages").unwrap(), b"the database");
            let after = thread_mounts();
            assert_eq!(before.lines().count() + 1, after.lines().count());
        });
        world.assert_host_unchanged();
        Ok(())
    })
}

/// The guest renames the target away, replaces it with a symlink to the host and puts it back,
/// as fast as it can, while the host mounts. Every mount either lands on the guest's `.rpmdb`
/// (and is verified there) or is refused / undone; the host never changes.
fn bind_survives_a_racing_guest() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let db = database(&world);
        fs::create_dir(world.guest.join(".rpmdb")).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let racer = {
            let stop = stop.clone();
            let guest = world.guest.clone();
            let host = world.host.clone();
            std::thread::spawn(move || {
                let (target, aside) = (guest.join(".rpmdb"), guest.join("aside"));
                let mut rounds = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let _ = fs::rename(&target, &aside);
                    let _ = symlink(&host, &target);
                    let _ = fs::remove_file(&target);
                    let _ = fs::rename(&aside, &target);
                    // Leave the real directory in place for a moment each round: on a loaded
                    // machine a racer that never pauses was descheduled mid-swap so often that
                    // no bind could land, and the test proves binds land despite the race.
                    std::thread::sleep(Duration::from_micros(20));
                    rounds += 1;
                }
                rounds
            })
        };
        let guest = world.guest.clone();
        let (landed, refused, misplaced) = in_private_namespace(move || {
            let root = GuestRoot::open(&guest).unwrap();
            let (mut landed, mut refused, mut misplaced) = (0, 0, 0);
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                match bind_into(&root, &db, "/.rpmdb", Access::ReadWrite) {
                    Ok(_) => landed += 1,
                    Err(Error::MountMisplaced { .. }) => misplaced += 1,
                    Err(error) => {
                        assert!(
                            matches!(
                                error.errno(),
                                Some(libc::ELOOP | libc::ENOENT | libc::ENOTDIR)
                            ),
                            "{error:?}"
                        );
                        refused += 1;
                    }
                }
            }
            // Whatever is mounted in this namespace is on guest paths only.
            for line in thread_mounts().lines() {
                let mount_point = line.split(' ').nth(4).unwrap();
                if mount_point.contains("vserver-sandbox-it") {
                    assert!(mount_point.starts_with(guest.to_str().unwrap()), "{line}");
                }
            }
            (landed, refused, misplaced)
        });
        stop.store(true, Ordering::Relaxed);
        let rounds = racer.join().unwrap();
        println!(
            "  {landed} landed, {refused} refused, {misplaced} misplaced and undone, {rounds} guest rounds"
        );
        assert!(landed > 0);
        world.assert_host_unchanged();
        Ok(())
    })
}

fn proc_and_tmpfs_through_fsmount() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        fs::create_dir_all(world.guest.join("proc")).unwrap();
        fs::create_dir_all(world.guest.join("tmp")).unwrap();
        let guest = world.guest.clone();
        in_private_namespace(move || {
            let root = GuestRoot::open(&guest).unwrap();
            mount_into(&root, &FileSystem::Proc, "/proc").unwrap();
            assert!(root.exists("/proc/self/status").unwrap());
            mount_into(
                &root,
                &FileSystem::Tmpfs {
                    mode: 0o1777,
                    size: Some(1 << 20),
                },
                "/tmp",
            )
            .unwrap();
            assert_eq!(root.metadata("/tmp").unwrap().mode, 0o1777);
            let info = thread_mounts();
            let tmp_line = info
                .lines()
                .find(|l| l.contains(&format!("{}/tmp ", guest.display())))
                .unwrap();
            assert!(
                tmp_line.contains("nosuid") && tmp_line.contains("nodev"),
                "{tmp_line}"
            );
            assert!(
                !Path::new(&guest).join("proc/self").exists() || root.exists("/proc/1").unwrap()
            );
        });
        world.assert_host_unchanged();
        Ok(())
    })
}
