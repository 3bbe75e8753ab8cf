//! The program the sandbox tests run *inside* the sandbox: this same test binary started with
//! `--attack NAME ARGS…`. Each attack prints `RESULT <check> <errno>` lines (0 = it worked) and
//! exits 0; the test asserts the exact errno.

use std::ffi::CString;
use std::io::Write;

fn errno_of(ret: libc::c_long) -> i32 {
    if ret == -1 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
    } else {
        0
    }
}

fn report(check: &str, errno: i32) {
    println!("RESULT {check} {errno}");
    let _ = std::io::stdout().flush();
}

fn c(path: &str) -> CString {
    CString::new(path).unwrap()
}

fn try_open(path: &str, flags: libc::c_int) -> i32 {
    let path = c(path);
    // SAFETY: `path` is a valid C string; a returned descriptor is closed right away.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd >= 0 {
        // SAFETY: `fd` was just returned by `open` and is owned here.
        unsafe { libc::close(fd) };
    }
    errno_of(fd.into())
}

fn try_mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong) -> i32 {
    let (source, target, fstype) = (c(source), c(target), c(fstype));
    // SAFETY: all pointers are valid C strings or NULL data, alive for the call.
    let ret = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    errno_of(ret.into())
}

/// Runs the attack named by `args[0]`.
pub fn main(args: &[String]) -> ! {
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(0).as_str() {
        // Everything a program run by the package manager might try against the host.
        "host" => {
            let host_file = arg(1);
            let guest_root = arg(2);
            let host_pid: i32 = arg(3).parse().unwrap();
            report(
                "write-host-file",
                try_open(
                    &format!("{host_file}/etc/passwd"),
                    libc::O_WRONLY | libc::O_TRUNC,
                ),
            );
            report(
                "create-host-file",
                try_open(&format!("{host_file}/new"), libc::O_WRONLY | libc::O_CREAT),
            );
            report(
                "write-guest-file",
                try_open(
                    &format!("{guest_root}/written-by-program"),
                    libc::O_WRONLY | libc::O_CREAT,
                ),
            );
            report(
                "remount-root-rw",
                try_mount("none", "/", "", libc::MS_REMOUNT | libc::MS_BIND),
            );
            report(
                "mount-tmpfs",
                try_mount("tmpfs", &format!("{guest_root}/mnt"), "tmpfs", 0),
            );
            report(
                "bind-host-root",
                try_mount("/", &format!("{guest_root}/mnt"), "", libc::MS_BIND),
            );
            report("umount-dev", {
                let dev = c("/dev");
                // SAFETY: valid C string.
                errno_of(unsafe { libc::umount2(dev.as_ptr(), libc::MNT_DETACH) }.into())
            });
            report("mknod-block", {
                let path = c(&format!("{guest_root}/sda"));
                // SAFETY: valid C string; mknod only creates a node.
                errno_of(
                    unsafe {
                        libc::mknod(path.as_ptr(), libc::S_IFBLK | 0o600, libc::makedev(8, 0))
                    }
                    .into(),
                )
            });
            report(
                "open-guest-block-device",
                try_open(&format!("{guest_root}/disk"), libc::O_RDONLY),
            );
            report("open-host-disk", try_open("/dev/vda", libc::O_RDONLY));
            report(
                "sysrq-trigger",
                try_open("/proc/sysrq-trigger", libc::O_WRONLY),
            );
            report("init-module", {
                // SAFETY: a NULL image of length 0: the kernel checks permissions first.
                errno_of(unsafe {
                    libc::syscall(
                        libc::SYS_init_module,
                        std::ptr::null::<u8>(),
                        0usize,
                        c"".as_ptr(),
                    )
                })
            });
            report("finit-module", {
                let fd = std::fs::File::open("/dev/null").unwrap();
                // SAFETY: a valid descriptor and an empty parameter string.
                errno_of(unsafe {
                    libc::syscall(
                        libc::SYS_finit_module,
                        std::os::fd::AsRawFd::as_raw_fd(&fd),
                        c"".as_ptr(),
                        0,
                    )
                })
            });
            report("ptrace-host", {
                // SAFETY: PTRACE_ATTACH takes a pid and no pointers.
                errno_of(unsafe { libc::ptrace(libc::PTRACE_ATTACH, host_pid, 0, 0) })
            });
            report("kill-host", {
                // SAFETY: signal 0 only checks permission and existence.
                errno_of(unsafe { libc::kill(host_pid, 0) }.into())
            });
            report("reboot", {
                // SAFETY: a power-off request with a wrong magic argument does nothing even when
                // permitted; the permission check comes first.
                errno_of(unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, 0) })
            });
            report("hostname", {
                let name = b"owned-by-guest";
                // SAFETY: pointer and length of a live byte array.
                errno_of(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }.into())
            });
            report("pid", std::process::id() as i32);
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let field = |name: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            report("no-new-privs", field("NoNewPrivs:").parse().unwrap_or(-1));
            let bounding = u64::from_str_radix(&field("CapBnd:"), 16).unwrap_or(u64::MAX);
            report(
                "cap-sys-admin-in-bounding-set",
                i32::from(bounding & (1 << 21) /* CAP_SYS_ADMIN */ != 0),
            );
            report(
                "cap-sys-module-in-bounding-set",
                i32::from(bounding & (1 << 16) /* CAP_SYS_MODULE */ != 0),
            );
        }
        // A package script: chroot into the guest (as rpm does), confine, then try to get out.
        "scriptlet" => {
            let guest_root = arg(1);
            let root = c(&guest_root);
            // SAFETY: valid C strings.
            let chrooted =
                unsafe { libc::chroot(root.as_ptr()) == 0 && libc::chdir(c"/".as_ptr()) == 0 };
            report("chroot-into-guest", if chrooted { 0 } else { -1 });
            report(
                "database-before",
                try_open("/.rpmdb/Packages", libc::O_RDONLY),
            );
            let confined = vserver_sandbox::confine_scriptlet(Some(c"/.rpmdb"));
            report("confine", confined.map_or_else(|e| e.errno, |()| 0));
            report(
                "database-after",
                try_open("/.rpmdb/Packages", libc::O_RDONLY),
            );
            report("mkdir-escape-dir", {
                // SAFETY: valid C string.
                errno_of(unsafe { libc::mkdir(c"/escape".as_ptr(), 0o755) }.into())
            });
            report("chroot-escape", {
                // SAFETY: valid C string.
                errno_of(unsafe { libc::chroot(c"/escape".as_ptr()) }.into())
            });
            report(
                "mount-after-confine",
                try_mount("tmpfs", "/escape", "tmpfs", 0),
            );
            report(
                "remount-database",
                try_mount("/", "/.rpmdb", "", libc::MS_BIND),
            );
            report(
                "write-guest-file",
                try_open("/scriptlet-ran", libc::O_WRONLY | libc::O_CREAT),
            );
        }
        // A package manager (every capability it gets) that left the guest's chroot, against the
        // write boundary: ARG1 is writable by mount but outside the boundary, ARG2 the guest.
        "boundary" => {
            let outside = arg(1);
            let guest = arg(2);
            let path = |dir: &str, name: &str| format!("{dir}/{name}");
            report(
                "create-outside",
                try_open(&path(&outside, "new"), libc::O_WRONLY | libc::O_CREAT),
            );
            report(
                "write-outside",
                try_open(&path(&outside, "existing"), libc::O_WRONLY),
            );
            report(
                "truncate-outside",
                try_open(&path(&outside, "existing"), libc::O_WRONLY | libc::O_TRUNC),
            );
            report("unlink-outside", {
                let p = c(&path(&outside, "existing"));
                // SAFETY: valid C string.
                errno_of(unsafe { libc::unlink(p.as_ptr()) }.into())
            });
            report("symlink-outside", {
                let (target, link) = (c("/etc/passwd"), c(&path(&outside, "link")));
                // SAFETY: valid C strings.
                errno_of(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) }.into())
            });
            report(
                "write-guest",
                try_open(&path(&guest, "inside"), libc::O_WRONLY | libc::O_CREAT),
            );
            report("rename-guest-file-out", {
                let (from, to) = (c(&path(&guest, "inside")), c(&path(&outside, "moved")));
                // SAFETY: valid C strings.
                errno_of(unsafe { libc::rename(from.as_ptr(), to.as_ptr()) }.into())
            });
            report("link-guest-file-out", {
                let (from, to) = (c(&path(&guest, "inside")), c(&path(&outside, "linked")));
                // SAFETY: valid C strings.
                errno_of(unsafe { libc::link(from.as_ptr(), to.as_ptr()) }.into())
            });
            // Mounting needs nothing but CAP_SYS_ADMIN in the sandbox's own namespaces, which
            // this profile keeps: the boundary refuses it all the same.
            report(
                "mount-tmpfs-in-guest",
                try_mount("tmpfs", &path(&guest, "mnt"), "tmpfs", 0),
            );
            report("unmount-database", {
                let db = c(&path(&guest, ".rpmdb"));
                // SAFETY: valid C string.
                errno_of(unsafe { libc::umount2(db.as_ptr(), libc::MNT_DETACH) }.into())
            });
        }
        // Started through the entry point with a gate lock: optionally does what the
        // confinement library's constructor does, then tries the lock as dpkg would.
        "gate" => {
            let lock = arg(1);
            if arg(2) == "handshake" {
                let fd: i32 = std::env::var(vserver_sandbox::GATE_VAR)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1);
                let mut answer = [0u8; 1];
                // SAFETY: one-byte reads and writes on the inherited socket.
                let opened = unsafe {
                    libc::write(fd, [vserver_sandbox::GATE_LOADED].as_ptr().cast(), 1) == 1
                        && libc::read(fd, answer.as_mut_ptr().cast(), 1) == 1
                };
                report(
                    "gate-opened",
                    if opened && answer[0] == vserver_sandbox::GATE_OPEN {
                        0
                    } else {
                        1
                    },
                );
            }
            let path = c(&lock);
            // SAFETY: valid C string; the descriptor is leaked until exit, holding the lock.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR) };
            // SAFETY: an all-zero flock is valid; whole-file write lock.
            let mut flock: libc::flock = unsafe { std::mem::zeroed() };
            flock.l_type = libc::F_WRLCK as libc::c_short;
            // SAFETY: `flock` is live for the call.
            report(
                "lock",
                errno_of(unsafe { libc::fcntl(fd, libc::F_SETLK, &flock) }.into()),
            );
        }
        // Connects to a host daemon's socket by path (ARG1) and to an abstract one (ARG2).
        "sockets" => {
            use std::os::linux::net::SocketAddrExt;
            let errno = |e: std::io::Error| e.raw_os_error().unwrap_or(-1);
            report(
                "connect-path",
                std::os::unix::net::UnixStream::connect(arg(1)).map_or_else(errno, |_| 0),
            );
            let abstract_name = std::os::unix::net::SocketAddr::from_abstract_name(arg(2)).unwrap();
            report(
                "connect-abstract",
                std::os::unix::net::UnixStream::connect_addr(&abstract_name)
                    .map_or_else(errno, |_| 0),
            );
        }
        // Looks at the size of a file a guest keeps appending to, twice, 300 ms apart.
        "observe" => {
            let file = arg(1);
            let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            let first = size();
            std::thread::sleep(std::time::Duration::from_millis(300));
            let second = size();
            report("counter-changed", i32::from(first != second));
        }
        // Leaves a process behind that would run for a minute.
        "daemon" => {
            // SAFETY: this process is single-threaded (a fresh exec of the test binary).
            let pid = unsafe { libc::fork() };
            if pid == 0 {
                std::thread::sleep(std::time::Duration::from_secs(60));
                std::process::exit(0);
            }
            report("forked", i32::from(pid <= 0));
        }
        // A script that stops its parent (this program) and then runs on: a package manager
        // whose scriptlet does `kill -STOP $PPID` never ends by itself. Everything it starts
        // carries the marker in its environment; the shell also as its `$0`.
        "stop-parent" => {
            let marker = arg(1);
            let mut child = std::process::Command::new("/bin/sh")
                .args(["-c", "kill -STOP $PPID; sleep 600; :", &marker])
                .env("VSERVER_IT_MARKER", &marker)
                .spawn()
                .unwrap();
            let _ = child.wait();
        }
        other => {
            eprintln!("unknown attack {other:?}");
            std::process::exit(2);
        }
    }
    std::process::exit(0)
}
