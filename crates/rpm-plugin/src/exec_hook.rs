//! The C entry points dpkg sees when the library is preloaded (`LD_PRELOAD`) into the host's
//! apt and dpkg: `execv`, `execvp` and `execve`, which confine a maintainer script just before
//! dpkg executes it.
//!
//! dpkg has no plugin interface. To run a maintainer script it forks, sets
//! `DPKG_MAINTSCRIPT_NAME` and friends in the child, chroots into the guest and calls `execv`
//! (or `execvp`, by version). Those calls land here first: in a process that has
//! `DPKG_MAINTSCRIPT_NAME` set and runs under vserver ([`CONFINE_VAR`]), the hook removes
//! `LD_PRELOAD` from the environment (the guest's programs must not try to load a host path),
//! calls [`vserver_sandbox::confine_scriptlet`] without a database (maintainer scripts need
//! dpkg's database, see docs/security.md) — which drops `CAP_SYS_CHROOT` and the rest beyond file
//! ownership and sets `no_new_privs` — and only then executes the script.
//!
//! # Why the script runs through its interpreter, and why that makes the hook fail closed
//!
//! Every maintainer script lives in dpkg's database (`info/`, or `tmp.ci/` for a `preinst`),
//! which vserver mounts `noexec`. Executed directly, as dpkg does, a script fails with `EACCES`.
//! The hook instead reads the script's `#!` line and executes the interpreter (which lies in the
//! guest's `/bin` or `/usr/bin`, an ordinary mount) with the script's path as an argument, as the
//! kernel's `binfmt_script` would: `INTERPRETER [ARG] SCRIPT ARGS…`. So a dpkg that ran without
//! this hook — `ld.so` skips a preload it cannot load and says so only on standard error — runs
//! no maintainer script at all, instead of running them with dpkg's capabilities. A script that
//! is not a `#!` script (an ELF binary, which Debian policy allows but nobody ships) is refused.
//!
//! If confining fails the exec fails with `EPERM`: the script does not run. Every other exec goes
//! straight to the system call.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char, c_int};

/// Set (to any value) in the environment of the apt and dpkg that vserver runs on a guest.
pub const CONFINE_VAR: &CStr = c"VSERVER_CONFINE_MAINTSCRIPTS";

/// The kernel reads this much of a script for its `#!` line (`BINPRM_BUF_SIZE`).
const SHEBANG_LIMIT: usize = 256;

unsafe extern "C" {
    /// The process environment (`environ(7)`).
    static environ: *const *const c_char;
}

/// What to do with an exec.
enum Exec {
    /// Not a maintainer script: execute it as asked.
    AsAsked,
    /// A maintainer script, now confined: execute it through its interpreter.
    Script,
    /// A maintainer script that could not be confined: refuse.
    Refuse,
}

/// Confines the calling process if it is about to become a maintainer script.
fn confine_if_maintainer_script() -> Exec {
    // SAFETY: getenv with NUL-terminated names; dpkg's child is single-threaded.
    let wanted = unsafe {
        !libc::getenv(CONFINE_VAR.as_ptr()).is_null()
            && !libc::getenv(c"DPKG_MAINTSCRIPT_NAME".as_ptr()).is_null()
    };
    if !wanted {
        return Exec::AsAsked;
    }
    // SAFETY: as above; unsetenv only edits this process's environment.
    unsafe { libc::unsetenv(c"LD_PRELOAD".as_ptr()) };
    match std::panic::catch_unwind(|| vserver_sandbox::confine_scriptlet(None).is_ok()) {
        Ok(true) => Exec::Script,
        _ => Exec::Refuse,
    }
}

fn fail(errno: c_int) -> c_int {
    // SAFETY: errno is thread-local and writable.
    unsafe { *libc::__errno_location() = errno };
    -1
}

/// The interpreter and its optional argument from a script's first bytes, parsed as the kernel
/// parses them (`fs/binfmt_script.c`): `#!`, blanks, the interpreter up to a blank or the end of
/// the line, then the rest of the line without surrounding blanks as one argument.
pub(crate) fn parse_shebang(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let rest = head.strip_prefix(b"#!")?;
    // The whole line must fit in what the kernel reads; a longer one is not executable.
    let line = match rest.iter().position(|&b| b == b'\n') {
        Some(end) => &rest[..end],
        None if head.len() < SHEBANG_LIMIT => rest,
        None => return None,
    };
    let blank = |b: &u8| *b == b' ' || *b == b'\t';
    let line = trim(line, blank);
    let end = line.iter().position(blank).unwrap_or(line.len());
    let (interpreter, argument) = line.split_at(end);
    if interpreter.is_empty() || interpreter.contains(&0) {
        return None;
    }
    let argument = trim(argument, blank);
    if argument.contains(&0) {
        return None;
    }
    Some((
        interpreter.to_vec(),
        (!argument.is_empty()).then(|| argument.to_vec()),
    ))
}

fn trim(bytes: &[u8], blank: impl Fn(&u8) -> bool) -> &[u8] {
    let start = bytes.iter().position(|b| !blank(b)).unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !blank(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Reads the first [`SHEBANG_LIMIT`] bytes of `path`.
fn read_head(path: &CStr) -> Result<Vec<u8>, c_int> {
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: `path` is NUL-terminated; the descriptor is closed below on every path.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(errno());
    }
    let mut head = vec![0u8; SHEBANG_LIMIT];
    let mut filled = 0;
    while filled < head.len() {
        // SAFETY: reading into the unfilled tail of a live buffer of that length.
        let n = unsafe { libc::read(fd, head[filled..].as_mut_ptr().cast(), head.len() - filled) };
        match n {
            0 => break,
            n if n > 0 => filled += n as usize,
            _ if errno() == libc::EINTR => continue,
            _ => {
                let e = errno();
                // SAFETY: closing the descriptor opened above.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        }
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    head.truncate(filled);
    Ok(head)
}

/// Executes the maintainer script `path` through its interpreter; returns only on failure.
///
/// # Safety
///
/// `path` must be a NUL-terminated string and `argv` a null-terminated array of them.
unsafe fn exec_script(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    if path.is_null() {
        return fail(libc::EFAULT);
    }
    // SAFETY: the caller passes a NUL-terminated path.
    let script = unsafe { CStr::from_ptr(path) };
    let head = match read_head(script) {
        Ok(head) => head,
        Err(errno) => return fail(errno),
    };
    let Some((interpreter, argument)) = parse_shebang(&head) else {
        return fail(libc::ENOEXEC);
    };
    let (Ok(interpreter), Ok(argument)) = (
        CString::new(interpreter),
        argument.map(CString::new).transpose(),
    ) else {
        return fail(libc::ENOEXEC);
    };
    let mut args: Vec<*const c_char> = vec![interpreter.as_ptr()];
    if let Some(argument) = &argument {
        args.push(argument.as_ptr());
    }
    args.push(script.as_ptr());
    // SAFETY: `argv` is a null-terminated array (or null); argv[0] is read only when it exists.
    if !argv.is_null() && !unsafe { *argv }.is_null() {
        // Skip argv[0], as the kernel does for a script.
        let mut index = 1;
        loop {
            // SAFETY: argv[index - 1] was not the terminator, so argv[index] exists.
            let arg = unsafe { *argv.add(index) };
            if arg.is_null() {
                break;
            }
            args.push(arg);
            index += 1;
        }
    }
    args.push(std::ptr::null());
    // SAFETY: the execve system call with NUL-terminated strings and null-terminated arrays that
    // stay alive across the call.
    unsafe { libc::syscall(libc::SYS_execve, interpreter.as_ptr(), args.as_ptr(), envp) as c_int }
}

/// `execv(3)`, confining a maintainer script first.
///
/// # Safety
///
/// As `execv(3)`: `path` a NUL-terminated string, `argv` a null-terminated array of them.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    match confine_if_maintainer_script() {
        // SAFETY: the execve system call with the caller's arguments and this process's
        // environment (what execv means); the system call, not the C function, which this
        // library replaces too.
        Exec::AsAsked => unsafe { libc::syscall(libc::SYS_execve, path, argv, environ) as c_int },
        // SAFETY: as `execv`'s contract; the environment is this process's.
        Exec::Script => unsafe { exec_script(path, argv, environ) },
        Exec::Refuse => fail(libc::EPERM),
    }
}

/// `execvp(3)`, confining a maintainer script first.
///
/// # Safety
///
/// As `execvp(3)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    match confine_if_maintainer_script() {
        // SAFETY: the C library's execvpe (not replaced here) with the caller's arguments and
        // this process's environment, which is what execvp means.
        Exec::AsAsked => unsafe { libc::execvpe(file, argv, environ) },
        // dpkg names its scripts by absolute path; a bare name would need a PATH search that
        // no maintainer script needs.
        // SAFETY: `file` is NUL-terminated by execvp's contract.
        Exec::Script if !file.is_null() && unsafe { *file } == b'/' as c_char => unsafe {
            exec_script(file, argv, environ)
        },
        Exec::Script | Exec::Refuse => fail(libc::EPERM),
    }
}

/// `execve(2)`, confining a maintainer script first. The environment passed is the caller's:
/// dpkg does not use it for scripts, so `LD_PRELOAD` is only removed from the process's own.
///
/// # Safety
///
/// As `execve(2)`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    match confine_if_maintainer_script() {
        // SAFETY: the execve system call with the caller's arguments.
        Exec::AsAsked => unsafe { libc::syscall(libc::SYS_execve, path, argv, envp) as c_int },
        // SAFETY: as `execve`'s contract.
        Exec::Script => unsafe { exec_script(path, argv, envp) },
        Exec::Refuse => fail(libc::EPERM),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_shebang;

    fn parsed(head: &[u8]) -> Option<(String, Option<String>)> {
        parse_shebang(head).map(|(i, a)| {
            (
                String::from_utf8(i).unwrap(),
                a.map(|a| String::from_utf8(a).unwrap()),
            )
        })
    }

    /// A script's first bytes and the interpreter and argument expected from them.
    type Case<'a> = (&'a [u8], Option<(&'a str, Option<&'a str>)>);

    #[test]
    fn shebang_lines_parse_as_the_kernel_parses_them() {
        let cases: &[Case<'_>] = &[
            (b"#!/bin/sh\nset -e\n", Some(("/bin/sh", None))),
            (b"#! /bin/sh -e\n", Some(("/bin/sh", Some("-e")))),
            (
                b"#!/usr/bin/perl -w \t\n",
                Some(("/usr/bin/perl", Some("-w"))),
            ),
            (
                b"#!/usr/bin/env python3 -u\n",
                Some(("/usr/bin/env", Some("python3 -u"))),
            ),
            (b"#!/bin/sh", Some(("/bin/sh", None))),
            (b"#!\n", None),
            (b"#! \t \n", None),
            (b"\x7fELF\x02\x01", None),
            (b"", None),
            (b"#!/bin/s\0h\n", None),
        ];
        for (head, want) in cases {
            let want = want.map(|(i, a)| (i.to_string(), a.map(str::to_string)));
            assert_eq!(parsed(head), want, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn a_first_line_longer_than_the_kernel_reads_is_refused() {
        let mut long = b"#!/bin/sh ".to_vec();
        long.resize(300, b'x');
        assert_eq!(parsed(&long[..256]), None);
    }
}
