//! The per-operation sandbox against a program that attacks the host from inside, and a guest
//! script that tries to get out of its context.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vserver_sandbox::{Access, CapabilityProfile, Error, Freezer, SandboxCommand};

use crate::support::{Outcome, World, require, require_root, run};

crate::tests![
    program_cannot_reach_the_host,
    package_manager_profile_keeps_mounts_locked,
    scriptlet_context_hides_database_and_blocks_escape,
    scriptlet_hook_fails_closed_without_its_namespace,
    write_boundary_holds_beyond_the_mounts,
    entry_point_gate_holds_the_lock_until_the_library_reports,
    dpkg_without_its_library_runs_no_script,
    host_daemon_sockets_are_out_of_reach,
    setup_errors_are_reported,
    display_shows_command_and_environment,
    leftover_processes_are_killed,
    orphaned_sandbox_cgroups_are_removed,
    running_guest_is_frozen_and_thawed,
    guest_is_thawed_when_sandbox_is_killed,
    joined_guest_namespaces,
    time_limit_kills_a_stopped_process_tree,
    time_limit_kills_what_runs_in_a_joined_guest,
    real_rpm_writes_its_database_outside_the_guest,
    host_secrets_and_neighbours_are_hidden,
    no_network_leaves_only_loopback,
    private_tmp_when_the_guest_lies_below_tmp,
];

/// What loading a module fails with in the sandbox: EPERM, or ENOSYS on a kernel built without
/// module support (like this one), where the host's root gets ENOSYS too.
fn module_errno() -> i32 {
    // SAFETY: a NULL image of length 0; the kernel rejects it before reading anything.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0usize,
            c"".as_ptr(),
        )
    };
    let host = std::io::Error::last_os_error().raw_os_error();
    if ret == -1 && host == Some(libc::ENOSYS) {
        println!(
            "  note: this kernel has no module support; init_module fails with ENOSYS everywhere"
        );
        libc::ENOSYS
    } else {
        libc::EPERM
    }
}

fn parse(stdout: &[u8]) -> BTreeMap<String, i32> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("RESULT ")?.split(' ');
            Some((words.next()?.to_string(), words.next()?.parse().ok()?))
        })
        .collect()
}

#[track_caller]
fn expect(results: &BTreeMap<String, i32>, expected: &[(&str, i32)]) {
    for (check, errno) in expected {
        assert_eq!(results.get(*check), Some(errno), "{check} in {results:?}");
    }
}

fn attack(args: &[&str]) -> SandboxCommand {
    let mut command = SandboxCommand::new(std::env::current_exe().unwrap());
    command.arg("--attack").args(args);
    command
}

/// A guest with a database directory outside it, a `/.rpmdb` mount point, and a block device node
/// the guest "planted".
fn prepare(world: &World) -> PathBuf {
    let db = world._temp.path().join("db");
    fs::create_dir_all(&db).unwrap();
    fs::write(db.join("Packages"), "the database").unwrap();
    for dir in [".rpmdb", "mnt", "dev", "proc"] {
        fs::create_dir_all(world.guest.join(dir)).unwrap();
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        world.guest.join("disk"),
        rustix::fs::FileType::BlockDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(254, 0),
    )
    .unwrap();
    db
}

fn run_attack(world: &World, command: &mut SandboxCommand) -> BTreeMap<String, i32> {
    let finished = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&finished.stderr);
    assert!(finished.status.success(), "{:?} {stderr}", finished.status);
    for note in &finished.notes {
        println!("  note: {note}");
    }
    let results = parse(&finished.stdout);
    println!("  {results:?}");
    let _ = world;
    results
}

fn program_cannot_reach_the_host() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let db = prepare(&world);
        let host_name_before = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        let me = std::process::id().to_string();
        let results = run_attack(
            &world,
            attack(&[
                "host",
                world.host.to_str().unwrap(),
                world.guest.to_str().unwrap(),
                &me,
            ])
            .guest_root(&world.guest)
            .bind(&db, "/.rpmdb", Access::ReadWrite)
            .hostname("sandboxed"),
        );
        expect(
            &results,
            &[
                ("write-host-file", libc::EROFS),
                ("create-host-file", libc::EROFS),
                ("write-guest-file", 0),
                ("remount-root-rw", libc::EPERM),
                ("mount-tmpfs", libc::EPERM),
                ("bind-host-root", libc::EPERM),
                ("umount-dev", libc::EPERM),
                ("mknod-block", libc::EPERM),
                ("open-guest-block-device", libc::EACCES),
                ("open-host-disk", libc::ENOENT),
                ("init-module", module_errno()),
                ("finit-module", module_errno()),
                ("ptrace-host", libc::ESRCH),
                ("kill-host", libc::ESRCH),
                ("reboot", libc::EPERM),
                ("hostname", libc::EPERM),
                ("pid", 2),
                ("no-new-privs", 1),
                ("cap-sys-admin-in-bounding-set", 0),
                ("cap-sys-module-in-bounding-set", 0),
            ],
        );
        // This kernel has no /proc/sysrq-trigger (ENOENT); where it has one, /proc is read-only.
        assert!(
            matches!(results["sysrq-trigger"], libc::EROFS | libc::ENOENT),
            "{results:?}"
        );
        assert!(world.guest.join("written-by-program").exists());
        assert_eq!(
            fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
            host_name_before
        );
        world.assert_host_unchanged();
        Ok(())
    })
}

/// With `CAP_SYS_ADMIN` kept (for rpm's plugin), the program may mount in its own namespace, but
/// the host stays read-only and the mounts it inherited stay in place.
fn package_manager_profile_keeps_mounts_locked() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let db = prepare(&world);
        let me = std::process::id().to_string();
        let results = run_attack(
            &world,
            attack(&[
                "host",
                world.host.to_str().unwrap(),
                world.guest.to_str().unwrap(),
                &me,
            ])
            .guest_root(&world.guest)
            .bind(&db, "/.rpmdb", Access::ReadWrite)
            .capabilities(CapabilityProfile::PackageManager),
        );
        expect(
            &results,
            &[
                ("write-host-file", libc::EROFS),
                ("create-host-file", libc::EROFS),
                ("remount-root-rw", libc::EPERM),
                // Mounts inherited from the set-up are locked to what they cover.
                ("umount-dev", libc::EINVAL),
                ("mknod-block", libc::EPERM),
                ("open-guest-block-device", libc::EACCES),
                ("init-module", module_errno()),
                ("finit-module", module_errno()),
                ("reboot", libc::EPERM),
                ("hostname", libc::EPERM),
            ],
        );
        world.assert_host_unchanged();
        Ok(())
    })
}

fn scriptlet_context_hides_database_and_blocks_escape() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let db = prepare(&world);
        let results = run_attack(
            &world,
            attack(&["scriptlet", world.guest.to_str().unwrap()])
                .guest_root(&world.guest)
                .bind(&db, "/.rpmdb", Access::ReadWrite)
                .scriptlet_namespace(true)
                .capabilities(CapabilityProfile::PackageManager),
        );
        expect(
            &results,
            &[
                ("chroot-into-guest", 0),
                ("database-before", 0),
                ("confine", 0),
                ("database-after", libc::ENOENT),
                ("mkdir-escape-dir", 0),
                ("chroot-escape", libc::EPERM),
                ("mount-after-confine", libc::EPERM),
                ("remount-database", libc::EPERM),
                ("write-guest-file", 0),
            ],
        );
        assert!(world.guest.join("scriptlet-ran").exists());
        assert_eq!(fs::read(db.join("Packages")).unwrap(), b"the database");
        assert!(
            fs::read_dir(world.guest.join(".rpmdb"))
                .unwrap()
                .next()
                .is_none()
        );
        world.assert_host_unchanged();
        Ok(())
    })
}

/// Inside the write boundary nothing may unmount: without the prepared scriptlet namespace the
/// hook cannot leave the database behind, and says so instead of letting the script run.
fn scriptlet_hook_fails_closed_without_its_namespace() -> Outcome {
    run(|| {
        require_root()?;
        require(
            vserver_sandbox::write_boundary_available(),
            "needs Landlock (ABI 3)",
        )?;
        let world = World::new();
        let db = prepare(&world);
        let results = run_attack(
            &world,
            attack(&["scriptlet", world.guest.to_str().unwrap()])
                .guest_root(&world.guest)
                .bind(&db, "/.rpmdb", Access::ReadWrite)
                .capabilities(CapabilityProfile::PackageManager),
        );
        expect(&results, &[("confine", libc::EPERM), ("database-after", 0)]);
        world.assert_host_unchanged();
        Ok(())
    })
}

/// The write boundary holds a package manager that keeps `CAP_SYS_ADMIN` and `CAP_SYS_CHROOT`
/// in its own namespaces, for a directory the mounts leave writable: only Landlock stands
/// between the program and that directory.
fn write_boundary_holds_beyond_the_mounts() -> Outcome {
    run(|| {
        require_root()?;
        require(
            vserver_sandbox::write_boundary_available(),
            "needs Landlock (ABI 3)",
        )?;
        let world = World::new();
        let db = prepare(&world);
        let outside = world._temp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("existing"), "host data").unwrap();
        let results = run_attack(
            &world,
            attack(&[
                "boundary",
                outside.to_str().unwrap(),
                world.guest.to_str().unwrap(),
            ])
            .guest_root(&world.guest)
            .bind(&db, "/.rpmdb", Access::ReadWrite)
            .writable(&outside)
            .writes_only_beneath([&world.guest])
            .capabilities(CapabilityProfile::PackageManager),
        );
        expect(
            &results,
            &[
                ("create-outside", libc::EACCES),
                ("write-outside", libc::EACCES),
                ("truncate-outside", libc::EACCES),
                ("unlink-outside", libc::EACCES),
                ("symlink-outside", libc::EACCES),
                ("write-guest", 0),
                ("rename-guest-file-out", libc::EXDEV),
                ("link-guest-file-out", libc::EXDEV),
                ("mount-tmpfs-in-guest", libc::EPERM),
                ("unmount-database", libc::EPERM),
            ],
        );
        assert_eq!(fs::read(outside.join("existing")).unwrap(), b"host data");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
        assert_eq!(fs::read(db.join("Packages")).unwrap(), b"the database");
        world.assert_host_unchanged();
        Ok(())
    })
}

/// dpkg's entry point holds the database lock until the program's confinement library reports
/// in: a program that never does (a preload `ld.so` skipped) finds the lock taken, as a real
/// dpkg does before it runs any maintainer script; one that does gets it.
fn entry_point_gate_holds_the_lock_until_the_library_reports() -> Outcome {
    run(|| {
        require_root()?;
        require(
            vserver_sandbox::write_boundary_available(),
            "needs Landlock (ABI 3)",
        )?;
        let world = World::new();
        let lock = world.guest.join("lock");
        let exe = std::env::current_exe().unwrap();
        let through_entry = |mode: &str| {
            let (key, value) = vserver_sandbox::narrow_exec_env(
                &exe,
                std::slice::from_ref(&world.guest),
                Some(&lock),
            );
            let mut command = attack(&["gate", lock.to_str().unwrap(), mode]);
            command.env(key, value).guest_root(&world.guest);
            command
        };
        let skipped = run_attack(&world, &mut through_entry("no-library"));
        expect(&skipped, &[("lock", libc::EAGAIN)]);
        let loaded = run_attack(&world, &mut through_entry("handshake"));
        expect(&loaded, &[("gate-opened", 0), ("lock", 0)]);
        world.assert_host_unchanged();
        Ok(())
    })
}

/// The real dpkg, started through the entry point without the confinement library, stops at
/// its database's lock: nothing is configured, no maintainer script runs.
fn dpkg_without_its_library_runs_no_script() -> Outcome {
    run(|| {
        require_root()?;
        require(Path::new("/usr/bin/dpkg").exists(), "needs dpkg")?;
        require(
            vserver_sandbox::write_boundary_available(),
            "needs Landlock (ABI 3)",
        )?;
        let world = World::new();
        let admin = world.guest.join("var/lib/dpkg");
        for dir in ["info", "updates", "triggers"] {
            fs::create_dir_all(admin.join(dir)).unwrap();
        }
        // A half-configured package whose postinst would leave a mark.
        fs::write(
            admin.join("status"),
            "Package: marker\nStatus: install ok unpacked\nVersion: 1\nArchitecture: all\n\
             Maintainer: test <test@example.invalid>\nDescription: test\n\n",
        )
        .unwrap();
        fs::write(admin.join("info/marker.list"), "").unwrap();
        let postinst = admin.join("info/marker.postinst");
        fs::write(&postinst, "#!/bin/sh\ntouch /postinst-ran\n").unwrap();
        fs::set_permissions(&postinst, fs::Permissions::from_mode(0o755)).unwrap();
        let (key, value) = vserver_sandbox::narrow_exec_env(
            Path::new("/usr/bin/dpkg"),
            std::slice::from_ref(&world.guest),
            Some(&admin.join("lock")),
        );
        let mut root = std::ffi::OsString::from("--root=");
        root.push(&world.guest);
        let finished = SandboxCommand::new(std::env::current_exe().unwrap())
            .env(key, value)
            .arg(root)
            .args(["--configure", "-a"])
            .guest_root(&world.guest)
            .capabilities(CapabilityProfile::ChrootingTool)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&finished.stderr);
        println!("  {stderr}");
        assert!(!finished.status.success(), "{stderr}");
        assert!(stderr.contains("lock"), "{stderr}");
        assert!(stderr.contains("did not load"), "{stderr}");
        assert!(!world.guest.join("postinst-ran").exists());
        world.assert_host_unchanged();
        Ok(())
    })
}

/// The host's daemons listen on sockets below /run (systemd, D-Bus, container engines) and in
/// the abstract namespace; a socket on a read-only mount still takes connections from host uid 0.
/// The sandbox's /run is a fresh one, and the write boundary scopes abstract sockets.
fn host_daemon_sockets_are_out_of_reach() -> Outcome {
    run(|| {
        require_root()?;
        require(
            vserver_sandbox::write_boundary_available(),
            "needs Landlock (ABI 6 for abstract sockets)",
        )?;
        let world = World::new();
        let name = format!("vserver-test-{}", std::process::id());
        let path = PathBuf::from("/run").join(format!("{name}.sock"));
        let _ = fs::remove_file(&path);
        let by_path = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let abstract_address = {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
        };
        let by_name = std::os::unix::net::UnixListener::bind_addr(&abstract_address).unwrap();
        // Both answer outside the sandbox.
        assert!(std::os::unix::net::UnixStream::connect(&path).is_ok());
        let results = run_attack(
            &world,
            attack(&["sockets", path.to_str().unwrap(), &name])
                .guest_root(&world.guest)
                .capabilities(CapabilityProfile::PackageManager),
        );
        let _ = fs::remove_file(&path);
        drop((by_path, by_name));
        expect(
            &results,
            &[
                ("connect-path", libc::ENOENT),
                ("connect-abstract", libc::EPERM),
            ],
        );
        Ok(())
    })
}

fn host_secrets_and_neighbours_are_hidden() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let neighbour = world.host.join("secret");
        let script = format!(
            "cat /etc/shadow; echo ---; cat /root/.profile {}; echo rc=$?",
            neighbour.display()
        );
        let hidden = SandboxCommand::new("/bin/sh")
            .args(["-c", &script])
            .guest_root(&world.guest)
            .hide_siblings_of(&world.guest)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&hidden.stdout);
        // /etc/shadow reads empty, /root is an empty directory, the guest's neighbour is gone.
        assert!(out.starts_with("---\n"), "{out}");
        assert!(
            out.ends_with("rc=1\n") && !out.contains("host secret"),
            "{out}"
        );
        // The control: without hide_siblings_of the neighbour is there to read.
        let shown = SandboxCommand::new("/bin/cat")
            .arg(&neighbour)
            .guest_root(&world.guest)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&shown.stdout), "host secret\n");
        world.assert_host_unchanged();
        Ok(())
    })
}

fn no_network_leaves_only_loopback() -> Outcome {
    run(|| {
        require_root()?;
        let interfaces = |isolate: bool| {
            let finished = SandboxCommand::new("/bin/cat")
                .arg("/proc/self/net/dev")
                .no_network(isolate)
                .output()
                .unwrap();
            String::from_utf8_lossy(&finished.stdout)
                .lines()
                .skip(2)
                .filter_map(|l| Some(l.split(':').next()?.trim().to_owned()))
                .collect::<Vec<_>>()
        };
        assert_eq!(interfaces(true), ["lo"]);
        let host = interfaces(false);
        assert!(host.len() > 1, "the host's interfaces: {host:?}");
        Ok(())
    })
}

fn setup_errors_are_reported() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        let db = prepare(&world);
        symlink_force(&world.host, &world.guest.join("evil"));
        // A bind target that is a symlink to the host: the setup fails, the program never runs.
        let error = SandboxCommand::new("/bin/true")
            .guest_root(&world.guest)
            .bind(&db, "/evil", Access::ReadWrite)
            .status()
            .unwrap_err();
        let text = error.to_string();
        assert_eq!(error.errno(), Some(libc::ENOTDIR), "{error:?}");
        assert!(
            text.contains("bind-mount into the guest") && text.contains("/bin/true"),
            "{text}"
        );
        // A program that does not exist.
        let error = SandboxCommand::new("no-such-program-anywhere")
            .status()
            .unwrap_err();
        assert_eq!(error.errno(), Some(libc::ENOENT), "{error:?}");
        // Exit codes pass through.
        let finished = SandboxCommand::new("/bin/sh")
            .args(["-c", "exit 7"])
            .status()
            .unwrap();
        assert_eq!(finished.status.code(), Some(7));
        world.assert_host_unchanged();
        Ok(())
    })
}

fn symlink_force(target: &Path, link: &Path) {
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn display_shows_command_and_environment() -> Outcome {
    let mut command = SandboxCommand::new("rpm");
    command
        .args(["--root", "/vservers/a b", "-qa"])
        .env("HOME", "/vservers/.pkg/a/rpm")
        .env_remove("LANG");
    assert_eq!(
        command.to_string(),
        "HOME=/vservers/.pkg/a/rpm rpm --root '/vservers/a b' -qa"
    );
    Outcome::Passed
}

fn marker_processes(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

fn leftover_processes_are_killed() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        prepare(&world);
        let marker = format!("leftover-{}", std::process::id());
        let results = run_attack(
            &world,
            attack(&["daemon", &marker]).guest_root(&world.guest),
        );
        expect(&results, &[("forked", 0)]);
        assert_eq!(marker_processes(&marker), Vec::<u32>::new());
        assert_no_sandbox_cgroups();
        Ok(())
    })
}

/// The cgroup of a sandbox whose clean-up never ran (its guardian was killed with it): the next
/// sandbox kills what is in it and removes it; the cgroup of a live sandbox process stays.
fn orphaned_sandbox_cgroups_are_removed() -> Outcome {
    run(|| {
        require_root()?;
        let unified = unified()?;
        let world = World::new();
        prepare(&world);
        // A pid that is gone: a child that ended.
        let mut ended = Command::new("/bin/true").spawn().unwrap();
        ended.wait().unwrap();
        let parent = unified.join("vserver-sandbox");
        fs::create_dir_all(&parent).unwrap();
        let orphan = parent.join(format!("{}-1", ended.id()));
        fs::create_dir_all(orphan.join("program")).unwrap();
        let mut left = Command::new("/bin/sleep").arg("60").spawn().unwrap();
        fs::write(orphan.join("program/cgroup.procs"), left.id().to_string()).unwrap();
        // A live owner: this test process (pid and start time).
        let me = std::process::id();
        let start = vserver_sandbox::process_start_time(me).unwrap();
        let live = parent.join(format!("{me}-{start}"));
        fs::create_dir_all(&live).unwrap();

        let finished = SandboxCommand::new("/bin/true")
            .guest_root(&world.guest)
            .output()
            .unwrap();
        assert!(finished.status.success());
        assert!(!orphan.exists(), "the orphaned cgroup is still there");
        let status = left.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
        assert!(live.exists(), "a live sandbox's cgroup was removed");
        fs::remove_dir(&live).unwrap();
        assert_no_sandbox_cgroups();
        Ok(())
    })
}

/// No sandbox cgroup is left whose sandbox process is gone (ours have all ended; those of
/// sandboxes that still run, such as another build's on this machine, are theirs).
fn assert_no_sandbox_cgroups() {
    let owner_alive = |name: &str| {
        let (pid, start) = name.split_once('-').unwrap_or((name, ""));
        let Ok(pid) = pid.parse::<u32>() else {
            return false;
        };
        match start.parse::<u64>() {
            Ok(start) => vserver_sandbox::process_start_time(pid) == Some(start),
            Err(_) => Path::new(&format!("/proc/{pid}")).exists(),
        }
    };
    let support = vserver_sandbox::CgroupSupport::detect().unwrap();
    if let Some(unified) = support.unified {
        let parent = unified.join("vserver-sandbox");
        if parent.exists() {
            let left: Vec<_> = fs::read_dir(parent)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .filter(|p| !owner_alive(&p.file_name().unwrap().to_string_lossy()))
                .collect();
            assert!(left.is_empty(), "sandbox cgroups left: {left:?}");
        }
    }
}

/// A stand-in for a running guest: a shell loop in a cgroup of its own, counting in a file.
struct FakeGuest {
    child: Child,
    cgroup: PathBuf,
    counter: PathBuf,
}

impl FakeGuest {
    fn start(world: &World, cgroup_parent: &Path) -> FakeGuest {
        let cgroup = cgroup_parent.join(format!("vserver-it-guest-{}", std::process::id()));
        let _ = fs::remove_dir(&cgroup);
        fs::create_dir(&cgroup).unwrap();
        let counter = world.guest.join("counter");
        let child = Command::new("/bin/sh")
            .args(["-c", "while :; do echo x >> \"$0\"; done"])
            .arg(&counter)
            .spawn()
            .unwrap();
        fs::write(cgroup.join("cgroup.procs"), child.id().to_string()).unwrap();
        FakeGuest {
            child,
            cgroup,
            counter,
        }
    }

    fn advancing(&self) -> bool {
        let size = || fs::metadata(&self.counter).map(|m| m.len()).unwrap_or(0);
        let first = size();
        std::thread::sleep(Duration::from_millis(100));
        first != size()
    }
}

impl Drop for FakeGuest {
    fn drop(&mut self) {
        let _ = Freezer::for_cgroup(&self.cgroup).map(|f| f.thaw());
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir(&self.cgroup);
    }
}

fn unified() -> Result<PathBuf, Outcome> {
    let support = vserver_sandbox::CgroupSupport::detect().unwrap();
    require(support.unified.is_some(), "no cgroup v2 tree mounted")?;
    Ok(support.unified.unwrap())
}

fn running_guest_is_frozen_and_thawed() -> Outcome {
    run(|| {
        require_root()?;
        let unified = unified()?;
        let world = World::new();
        prepare(&world);
        let guest = FakeGuest::start(&world, &unified);
        std::thread::sleep(Duration::from_millis(100));
        assert!(guest.advancing());
        let freezer = Freezer::for_cgroup(&guest.cgroup).unwrap();
        let results = run_attack(
            &world,
            attack(&["observe", guest.counter.to_str().unwrap()])
                .guest_root(&world.guest)
                .freeze(freezer.clone()),
        );
        expect(&results, &[("counter-changed", 0)]);
        assert!(!freezer.is_frozen().unwrap());
        assert!(guest.advancing(), "guest was not thawed");
        assert_no_sandbox_cgroups();
        Ok(())
    })
}

fn guest_is_thawed_when_sandbox_is_killed() -> Outcome {
    run(|| {
        require_root()?;
        let unified = unified()?;
        let world = World::new();
        prepare(&world);
        let guest = FakeGuest::start(&world, &unified);
        let freezer = Freezer::for_cgroup(&guest.cgroup).unwrap();
        let child = SandboxCommand::new("/bin/sleep")
            .arg("30")
            .guest_root(&world.guest)
            .freeze(freezer.clone())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !freezer.is_frozen().unwrap() {
            assert!(Instant::now() < deadline, "guest never froze");
            std::thread::sleep(Duration::from_millis(10));
        }
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(child.id() as i32).unwrap(),
            rustix::process::Signal::KILL,
        )
        .unwrap();
        let _ = child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        while freezer.is_frozen().unwrap() {
            assert!(
                Instant::now() < deadline,
                "guest still frozen after the sandbox was killed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(guest.advancing());
        assert_eq!(marker_processes("/bin/sleep\u{0}30"), Vec::<u32>::new());
        Ok(())
    })
}

/// A running guest with its own pid, uts, ipc and net namespaces (made with `unshare`): the
/// program joins them; host processes are invisible, leftovers die with the sandbox cgroup.
fn joined_guest_namespaces() -> Outcome {
    run(|| {
        require_root()?;
        require(Path::new("/usr/bin/unshare").exists(), "needs unshare(1)")?;
        unified()?;
        let world = World::new();
        let db = prepare(&world);
        let (mut holder, guest_init) = guest_namespaces_holder();
        let me = std::process::id().to_string();
        let results = run_attack(
            &world,
            attack(&[
                "host",
                world.host.to_str().unwrap(),
                world.guest.to_str().unwrap(),
                &me,
            ])
            .guest_root(&world.guest)
            .bind(&db, "/.rpmdb", Access::ReadWrite)
            .join_guest(guest_init),
        );
        expect(
            &results,
            &[
                ("write-host-file", libc::EROFS),
                ("remount-root-rw", libc::EPERM),
                ("ptrace-host", libc::ESRCH),
                ("kill-host", libc::ESRCH),
                ("hostname", libc::EPERM),
            ],
        );
        // In the guest's pid namespace, next to its init (pid 1).
        assert!(results["pid"] > 1);
        let marker = format!("joined-leftover-{}", std::process::id());
        let results = run_attack(
            &world,
            attack(&["daemon", &marker])
                .guest_root(&world.guest)
                .join_guest(guest_init),
        );
        expect(&results, &[("forked", 0)]);
        assert_eq!(marker_processes(&marker), Vec::<u32>::new());
        let _ = holder.kill();
        let _ = holder.wait();
        assert_no_sandbox_cgroups();
        let _ = fs::metadata(&world.guest).unwrap().permissions().mode();
        world.assert_host_unchanged();
        Ok(())
    })
}

/// A stand-in for a running guest's namespaces: `unshare` with a `sleep` as pid 1 of its own
/// pid, uts, ipc and net namespaces; returns `unshare` and the sleep's (host) pid.
fn guest_namespaces_holder() -> (Child, u32) {
    let holder = Command::new("/usr/bin/unshare")
        .args([
            "--pid",
            "--fork",
            "--uts",
            "--ipc",
            "--net",
            "/bin/sleep",
            "60",
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let guest_init = loop {
        let children = fs::read_to_string(format!("/proc/{0}/task/{0}/children", holder.id()))
            .unwrap_or_default();
        if let Some(pid) = children.split_whitespace().next() {
            break pid.parse::<u32>().unwrap();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    };
    (holder, guest_init)
}

/// The processes whose environment holds `VSERVER_IT_MARKER=marker`.
fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = format!("VSERVER_IT_MARKER={marker}");
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let environ = fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|&b| b == 0).any(|v| v == needle.as_bytes()) {
            found.push(pid);
        }
    }
    found
}

/// Runs the `stop-parent` attack under a 2 s limit: the run must end with `TimedOut` naming
/// the shell (by its marker) and the `sleep` it ran, within a few seconds of the limit.
fn expect_stop_parent_timed_out(command: &mut SandboxCommand, marker: &str) {
    let limit = Duration::from_secs(2);
    let started = Instant::now();
    let error = command.time_limit(Some(limit)).output().unwrap_err();
    let elapsed = started.elapsed();
    println!("  {error}");
    println!(
        "  error {:.0} ms after the limit",
        (elapsed - limit).as_secs_f64() * 1000.0
    );
    let Error::TimedOut {
        limit: reported,
        running,
        ..
    } = &error
    else {
        panic!("not a time-out: {error:?}");
    };
    assert_eq!(*reported, limit);
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(running[0].starts_with("/bin/sh -c"), "{running:?}");
    assert!(running[0].ends_with(marker), "{running:?}");
    assert_eq!(running[1], "sleep 600");
    let text = error.to_string();
    assert!(
        text.contains("--attack stop-parent")
            && text.contains("did not finish within 2s; killed it while it ran `/bin/sh -c")
            && text.ends_with(", which ran `sleep 600`"),
        "{text}"
    );
    assert!(elapsed < limit + Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(marked_processes(marker), Vec::<u32>::new());
}

/// A program whose child stops it (`kill -STOP $PPID`) and sleeps: the time limit kills the
/// stopped program and its child, and says what ran.
fn time_limit_kills_a_stopped_process_tree() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        prepare(&world);
        // A run that ends in time is not disturbed: its status and output come back (a limit
        // too far away to be a point in time is none).
        for limit in [Duration::from_secs(10), Duration::MAX] {
            let finished = SandboxCommand::new("/bin/sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .guest_root(&world.guest)
                .time_limit(Some(limit))
                .output()
                .unwrap();
            assert_eq!(finished.status.code(), Some(3));
            assert_eq!(finished.stdout, b"out\n");
            assert_eq!(finished.stderr, b"err\n");
        }
        let marker = format!("time-limit-{}", std::process::id());
        expect_stop_parent_timed_out(
            attack(&["stop-parent", &marker]).guest_root(&world.guest),
            &marker,
        );
        assert_no_sandbox_cgroups();
        world.assert_host_unchanged();
        Ok(())
    })
}

/// The same in a running guest's pid namespace, which does not die with the sandbox's init:
/// the sandbox cgroup's kill takes the shell and its sleep; the frozen guest is thawed.
fn time_limit_kills_what_runs_in_a_joined_guest() -> Outcome {
    run(|| {
        require_root()?;
        require(Path::new("/usr/bin/unshare").exists(), "needs unshare(1)")?;
        let unified = unified()?;
        let world = World::new();
        prepare(&world);
        let (mut holder, guest_init) = guest_namespaces_holder();
        let guest = FakeGuest::start(&world, &unified);
        let freezer = Freezer::for_cgroup(&guest.cgroup).unwrap();
        let marker = format!("time-limit-joined-{}", std::process::id());
        expect_stop_parent_timed_out(
            attack(&["stop-parent", &marker])
                .guest_root(&world.guest)
                .join_guest(guest_init)
                .freeze(freezer.clone()),
            &marker,
        );
        assert!(!freezer.is_frozen().unwrap());
        assert!(guest.advancing(), "guest was not thawed");
        let _ = holder.kill();
        let _ = holder.wait();
        assert_no_sandbox_cgroups();
        Ok(())
    })
}

/// The host's real rpm, run the way the package back end will: the database lands in the host
/// directory bound at `/.rpmdb`, never in the guest (the pitfall in NOTES: a hidden mount makes
/// rpm silently create a fresh database inside the guest).
fn real_rpm_writes_its_database_outside_the_guest() -> Outcome {
    run(|| {
        require_root()?;
        require(Path::new("/usr/bin/rpm").exists(), "needs rpm")?;
        let world = World::new();
        let db = world._temp.path().join("rpmdb");
        fs::create_dir_all(&db).unwrap();
        fs::create_dir_all(world.guest.join(".rpmdb")).unwrap();
        let guest = world.guest.to_str().unwrap();
        let rpm = |args: &[&str]| {
            let finished = SandboxCommand::new("rpm")
                .args(["--root", guest, "--dbpath", "/.rpmdb"])
                .args(args)
                .guest_root(&world.guest)
                .bind(&db, "/.rpmdb", Access::ReadWrite)
                .capabilities(CapabilityProfile::PackageManager)
                .output()
                .unwrap();
            assert!(
                finished.status.success(),
                "{}",
                String::from_utf8_lossy(&finished.stderr)
            );
            finished
        };
        rpm(&["--initdb"]);
        assert!(
            db.join("rpmdb.sqlite").exists(),
            "database not in the host directory"
        );
        assert_eq!(fs::read_dir(world.guest.join(".rpmdb")).unwrap().count(), 0);
        assert!(rpm(&["-qa"]).stdout.is_empty());
        world.assert_host_unchanged();
        Ok(())
    })
}

/// A guest root below the host's `/tmp`: the operation still gets a private, writable `/tmp`
/// (and `TMPDIR`), where the guest root, the host's other entries of `/tmp` and their
/// read-only-ness are as before; what one operation leaves in it, the next never sees, and the
/// host's `/tmp` is untouched. The guest's own `tmp` is a symlink to `/`: nothing follows it.
fn private_tmp_when_the_guest_lies_below_tmp() -> Outcome {
    run(|| {
        require_root()?;
        let world = World::new();
        require(
            world.guest.starts_with("/tmp"),
            "the test's temporary directory is not below /tmp (TMPDIR is set)",
        )?;
        std::os::unix::fs::symlink("/", world.guest.join("tmp")).unwrap();
        let marker = format!("vserver-private-tmp-{}", std::process::id());
        let script = format!(
            "echo TMPDIR=$TMPDIR; echo op > /tmp/{marker} && echo wrote-tmp; \
             mktemp -d >/dev/null && echo mktemp; \
             cat {host}/etc/passwd; echo guest > {guest}/written && echo wrote-guest; \
             (echo x > {host}/etc/evil) 2>/dev/null || echo host-refused",
            host = world.host.display(),
            guest = world.guest.display(),
        );
        let first = SandboxCommand::new("/bin/sh")
            .args(["-c", &script])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .guest_root(&world.guest)
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&first.stdout);
        assert_eq!(
            out,
            "TMPDIR=/tmp\nwrote-tmp\nmktemp\nroot:x:0:0:host:/root:/bin/sh\nwrote-guest\nhost-refused\n",
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        assert!(
            first.notes.iter().all(|n| !n.contains("/tmp")),
            "{:?}",
            first.notes
        );
        assert_eq!(fs::read(world.guest.join("written")).unwrap(), b"guest\n");
        assert!(!Path::new("/tmp").join(&marker).exists());
        let second = SandboxCommand::new("/bin/sh")
            .args([
                "-c",
                &format!("test -e /tmp/{marker} && echo shared || echo fresh"),
            ])
            .guest_root(&world.guest)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&second.stdout), "fresh\n");
        assert!(
            fs::symlink_metadata(world.guest.join("tmp"))
                .unwrap()
                .is_symlink()
        );
        world.assert_host_unchanged();
        Ok(())
    })
}
