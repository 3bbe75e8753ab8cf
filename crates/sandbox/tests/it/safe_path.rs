//! Every `GuestRoot` operation against planted symlinks, loops, wrong types and a racing guest.

use std::fs;
use std::os::unix::fs::{MetadataExt, symlink};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vserver_sandbox::{DeviceNode, FileKind, GuestRoot};

use crate::support::{Outcome, World, assert_errno, require_root, run};

crate::tests![
    planted_symlinks_stay_inside_for_reads,
    planted_symlinks_stay_inside_for_writes,
    changes_never_follow_the_final_symlink,
    loops_and_wrong_types_fail_cleanly,
    remove_all_does_not_follow_symlinks,
    device_nodes_and_fifos,
    racing_guest_cannot_redirect_writes,
];

/// Plants the classic attacks in the guest: `abs -> /`, `hostdir -> <host canary dir>`,
/// `up -> ../../../../..`, a loop, a file where a directory is expected, and `secret` pointing at
/// a host file.
fn plant(world: &World) {
    let g = &world.guest;
    symlink("/", g.join("abs")).unwrap();
    symlink(&world.host, g.join("hostdir")).unwrap();
    symlink("../../../../../../..", g.join("up")).unwrap();
    symlink("loop2", g.join("loop1")).unwrap();
    symlink("loop1", g.join("loop2")).unwrap();
    fs::write(g.join("file"), "a file, not a directory").unwrap();
    symlink(world.host.join("secret"), g.join("secret")).unwrap();
    symlink(world.host.join("etc/passwd"), g.join("passwd-link")).unwrap();
}

fn planted_symlinks_stay_inside_for_reads() -> Outcome {
    run(|| {
        let world = World::new();
        plant(&world);
        let root = GuestRoot::open(&world.guest).unwrap();
        // Every way up ends at the guest's own root.
        for path in ["abs/etc/passwd", "up/etc/passwd", "/../../etc/passwd"] {
            let text = String::from_utf8(root.read(path).unwrap()).unwrap();
            assert!(text.contains(":guest:"), "{path} read {text:?}");
        }
        // Absolute links to host files resolve to the same path inside the guest: absent.
        assert_errno(root.read("secret"), libc::ENOENT);
        assert_errno(root.read("passwd-link"), libc::ENOENT);
        assert_errno(root.read("hostdir/secret"), libc::ENOENT);
        // Listing `/` through `abs` lists the guest root.
        let names: Vec<_> = root
            .read_dir("abs")
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(names.iter().any(|n| n == "loop1"), "{names:?}");
        assert!(
            !names.iter().any(|n| n == "proc" || n == "usr"),
            "{names:?}"
        );
        assert_eq!(
            root.metadata("up").unwrap().ino,
            fs::metadata(&world.guest).unwrap().ino()
        );
        world.assert_host_unchanged();
        Ok(())
    })
}

fn planted_symlinks_stay_inside_for_writes() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        plant(&world);
        let root = GuestRoot::open(&world.guest).unwrap();
        let unique = format!("vserver-canary-{}", std::process::id());
        // A write through `abs` lands in the guest's /tmp, never the host's.
        fs::create_dir(world.guest.join("tmp")).unwrap();
        root.write_atomic(format!("abs/tmp/{unique}"), b"x", 0o644)
            .unwrap();
        assert!(world.guest.join("tmp").join(&unique).exists());
        assert!(!std::path::Path::new("/tmp").join(&unique).exists());
        // Through `hostdir` the parent does not exist inside the guest.
        assert_errno(
            root.write_atomic("hostdir/etc/passwd", b"owned", 0o644),
            libc::ENOENT,
        );
        assert_errno(root.create_new("hostdir/new", 0o644), libc::ENOENT);
        assert_errno(root.mkdir("hostdir/new", 0o755), libc::ENOENT);
        // mkdir -p follows the link inside the guest, where it dangles: like `mkdir -p`, it fails.
        assert_errno(root.mkdir_all("hostdir/made/by/guest", 0o755), libc::ENOENT);
        assert!(!world.host.join("made").exists());
        root.mkdir_all(format!("up/{unique}/x"), 0o755).unwrap();
        assert!(world.guest.join(&unique).join("x").is_dir());
        assert!(!std::path::Path::new("/").join(&unique).exists());
        root.symlink("/etc/shadow", "up/newlink").unwrap();
        assert_eq!(
            fs::read_link(world.guest.join("newlink")).unwrap(),
            std::path::Path::new("/etc/shadow")
        );
        root.rename("up/newlink", "abs/renamed").unwrap();
        assert!(fs::symlink_metadata(world.guest.join("renamed")).is_ok());
        world.assert_host_unchanged();
        Ok(())
    })
}

fn changes_never_follow_the_final_symlink() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        plant(&world);
        let root = GuestRoot::open(&world.guest).unwrap();
        // chmod of a symlink is refused; chown changes the link itself.
        assert_errno(root.set_permissions("secret", 0o777), libc::EOPNOTSUPP);
        root.set_owner("secret", Some(4242), Some(4242)).unwrap();
        assert_eq!(
            fs::symlink_metadata(world.guest.join("secret"))
                .unwrap()
                .uid(),
            4242
        );
        assert_eq!(
            root.symlink_metadata("secret").unwrap().kind,
            FileKind::Symlink
        );
        assert_eq!(root.read_link("secret").unwrap(), world.host.join("secret"));
        // An atomic write replaces the link instead of writing through it.
        root.write_atomic("passwd-link", b"guest data", 0o640)
            .unwrap();
        let meta = fs::symlink_metadata(world.guest.join("passwd-link")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.mode() & 0o7777, 0o640);
        // Creating a new file where a symlink already is fails instead of following it.
        assert_errno(root.create_new("secret", 0o644), libc::EEXIST);
        // Renaming onto a link replaces the link.
        root.write_atomic("src", b"moved", 0o644).unwrap();
        root.rename("src", "hostdir").unwrap();
        assert_eq!(fs::read(world.guest.join("hostdir")).unwrap(), b"moved");
        world.assert_host_unchanged();
        Ok(())
    })
}

fn loops_and_wrong_types_fail_cleanly() -> Outcome {
    run(|| {
        let world = World::new();
        plant(&world);
        let root = GuestRoot::open(&world.guest).unwrap();
        assert_errno(root.read("loop1"), libc::ELOOP);
        assert_errno(root.read_dir("loop1/x"), libc::ELOOP);
        assert_errno(root.mkdir_all("loop1/a/b", 0o755), libc::ELOOP);
        assert_errno(root.write_atomic("loop2/f", b"", 0o644), libc::ELOOP);
        assert_errno(root.mkdir_all("file/sub/dir", 0o755), libc::ENOTDIR);
        assert_errno(root.write_atomic("file/x", b"", 0o644), libc::ENOTDIR);
        assert_errno(root.read_dir("file"), libc::ENOTDIR);
        assert_errno(root.read("etc"), libc::EINVAL);
        assert!(matches!(
            root.write_atomic("/", b"", 0o644),
            Err(vserver_sandbox::Error::BadGuestPath { .. })
        ));
        assert!(matches!(
            root.remove_all("etc/.."),
            Err(vserver_sandbox::Error::BadGuestPath { .. })
        ));
        world.assert_host_unchanged();
        Ok(())
    })
}

fn remove_all_does_not_follow_symlinks() -> Outcome {
    run(|| {
        let world = World::new();
        plant(&world);
        let root = GuestRoot::open(&world.guest).unwrap();
        // A tree full of links to the host and to `/`.
        root.mkdir_all("var/cache/x/y", 0o755).unwrap();
        symlink(&world.host, world.guest.join("var/cache/x/host")).unwrap();
        symlink("/", world.guest.join("var/cache/x/y/root")).unwrap();
        symlink("../../../../..", world.guest.join("var/cache/x/y/up")).unwrap();
        root.remove_all("var/cache").unwrap();
        assert!(!world.guest.join("var/cache").exists());
        for link in ["abs", "hostdir", "up", "secret", "loop1"] {
            root.remove_all(link).unwrap();
        }
        root.remove_all_if_exists("no/such/thing").unwrap();
        assert_errno(root.remove_all("nothing-here"), libc::ENOENT);
        assert!(world.guest.join("etc/passwd").exists());
        world.assert_host_unchanged();
        Ok(())
    })
}

fn device_nodes_and_fifos() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        plant(&world);
        let root = GuestRoot::open(&world.guest).unwrap();
        root.create_standard_devices("/dev").unwrap();
        let null = root.symlink_metadata("/dev/null").unwrap();
        assert_eq!(null.kind, FileKind::CharDevice);
        assert_eq!(null.rdev, rustix::fs::makedev(1, 3));
        assert_eq!(null.mode, 0o666);
        assert_eq!(
            root.read_link("dev/fd").unwrap(),
            std::path::Path::new("/proc/self/fd")
        );
        // Idempotent.
        root.create_standard_devices("/dev").unwrap();
        // A symlink planted where a node goes is not accepted.
        root.mkdir_all("dev2", 0o755).unwrap();
        symlink("/dev/sda", world.guest.join("dev2/null")).unwrap();
        assert_errno(root.create_device("dev2", DeviceNode::Null), libc::EEXIST);
        // `dev -> /` style redirection lands in the guest.
        root.create_device("abs/dev", DeviceNode::Zero).unwrap();
        // A FIFO is never opened for reading (it would block).
        rustix::fs::mknodat(
            rustix::fs::CWD,
            world.guest.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert_errno(root.read("fifo"), libc::EINVAL);
        world.assert_host_unchanged();
        Ok(())
    })
}

/// A guest process swaps a directory for a symlink (to the host canary, to `/`, to `..`) as fast
/// as it can while the host writes into it.
fn racing_guest_cannot_redirect_writes() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let root = GuestRoot::open(&world.guest).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let racer = {
            let stop = stop.clone();
            let guest = world.guest.clone();
            let host = world.host.clone();
            std::thread::spawn(move || {
                let mut swaps = 0u64;
                let targets = [
                    host.clone(),
                    "/".into(),
                    "../../../..".into(),
                    host.join("data"),
                ];
                while !stop.load(Ordering::Relaxed) {
                    let race = guest.join("race");
                    let _ = fs::remove_dir_all(&race).or_else(|_| fs::remove_file(&race));
                    let _ = fs::create_dir(&race);
                    let _ = fs::remove_dir_all(&race).or_else(|_| fs::remove_file(&race));
                    let _ = symlink(&targets[swaps as usize % targets.len()], &race);
                    swaps += 1;
                }
                swaps
            })
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut operations = 0u64;
        while Instant::now() < deadline {
            let _ = root.mkdir_all("race/a/b", 0o755);
            let _ = root.write_atomic("race/passwd", b"owned", 0o644);
            let _ = root.write_atomic("race/etc/passwd", b"owned", 0o644);
            let _ = root.set_permissions("race/secret", 0o777);
            let _ = root.set_owner("race/secret", Some(4242), None);
            let _ = root.create_device("race", DeviceNode::Null);
            let _ = root.symlink("x", "race/deep/link");
            let _ = root.remove_all("race/deep");
            let _ = root.remove_all("race");
            operations += 1;
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = racer.join().unwrap();
        println!("  {operations} operation rounds against {swaps} swaps");
        world.assert_host_unchanged();
        Ok(())
    })
}
