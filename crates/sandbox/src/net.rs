//! A guest's network: the host's own, a network namespace with only loopback, or a namespace
//! joined to a host bridge through a veth pair.
//!
//! A new network namespace starts with a single interface, `lo`, and even that one down; the
//! guest's launcher brings it up right after `unshare(CLONE_NEWNET)` (an `ioctl(SIOCSIFFLAGS)`
//! on a socket of the new namespace), so `127.0.0.1` works in every guest.
//!
//! For a bridge, the host side creates the pair once the init exists and before it executes
//! anything of the guest (the init waits on a pipe for it): `ip link add HOST type veth peer
//! name GUEST netns PID` puts one end straight into the init's namespace, `ip link set HOST
//! master BRIDGE up` attaches the other; the guest's end gets its address and default route (the
//! guest, without `CAP_NET_ADMIN`, could not set them) and is brought up. The `ip` tool of
//! iproute2 is used instead of a netlink library: these are two fixed, well-known commands run
//! by the host (never inside the guest), and the netlink crates that do veth and bridge ports
//! are large (and mostly async). When the namespace ends with the guest's last process, the
//! kernel removes the guest's end and with it the host's end: a stopped guest leaves no
//! interface behind.

use std::io;
use std::process::Command;

use crate::error::{Error, Result};

/// Which network a guest's processes see.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum GuestNetwork {
    /// The host's network namespace (shares every interface of the host).
    Host,
    /// A network namespace of its own with only loopback, up.
    #[default]
    Isolated,
    /// A network namespace of its own with loopback and one end of a veth pair whose other end
    /// is a port of a host bridge.
    Bridge {
        /// The host bridge (must exist).
        bridge: String,
        /// The name of the host's end (at most 15 bytes).
        host_interface: String,
        /// The name of the guest's end (`eth0`).
        guest_interface: String,
        /// An address for the guest's end with its prefix length (`10.0.0.2/24`): the guest
        /// cannot set one itself, it has no `CAP_NET_ADMIN`.
        address: Option<String>,
        /// The guest's default route.
        gateway: Option<String>,
    },
}

impl GuestNetwork {
    /// Whether the guest gets a network namespace of its own.
    pub fn is_private(&self) -> bool {
        !matches!(self, GuestNetwork::Host)
    }
}

/// The longest interface name the kernel accepts (`IFNAMSIZ` minus the NUL).
pub const MAX_INTERFACE_NAME: usize = libc::IFNAMSIZ - 1;

/// Brings the interface `name` of the caller's network namespace up.
pub(crate) fn set_interface_up(name: &str) -> io::Result<()> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_INTERFACE_NAME || bytes.contains(&0) {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let socket = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct (an empty name, zero
    // flags).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(bytes) {
        *slot = *byte as libc::c_char;
    }
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name from and writes the flags into the live
    // `request`; `fd` is an open socket.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut request) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled in `ifru_flags` (the union member SIOCGIFFLAGS writes).
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads the name and flags from the live `request`.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &request) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `ip ARGS…` on the host.
fn ip(args: &[&str]) -> Result<()> {
    let mut full = vec!["ip"];
    full.extend_from_slice(args);
    run(&full)
}

/// Runs a host tool (`ip`, `nsenter`) and fails with its standard error when it fails.
fn run(args: &[&str]) -> Result<()> {
    let display = args.join(" ");
    let Some((program, args)) = args.split_first() else {
        return Ok(());
    };
    let output = Command::new(program)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .map_err(|source| Error::Spawn {
            command: display.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(Error::Tool {
        command: display,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

/// Creates the veth pair of a bridged guest whose init is `init_pid` (see the module
/// documentation) and gives the guest's end its address and default route, if configured
/// (through `nsenter --net=/proc/PID/ns/net`: the host's `ip` working in the guest's network
/// namespace only). On failure nothing is left on the host.
pub(crate) fn connect_to_bridge(init_pid: u32, network: &GuestNetwork) -> Result<()> {
    let GuestNetwork::Bridge {
        bridge,
        host_interface,
        guest_interface,
        address,
        gateway,
    } = network
    else {
        return Ok(());
    };
    let pid = init_pid.to_string();
    ip(&[
        "link",
        "add",
        host_interface,
        "type",
        "veth",
        "peer",
        "name",
        guest_interface,
        "netns",
        &pid,
    ])?;
    let netns = format!("--net=/proc/{init_pid}/ns/net");
    let in_guest = |args: &[&str]| -> Result<()> {
        let mut full = vec!["nsenter", netns.as_str(), "ip"];
        full.extend_from_slice(args);
        run(&full)
    };
    let configured = ip(&["link", "set", host_interface, "master", bridge, "up"])
        .and_then(|()| match address {
            Some(address) => in_guest(&["address", "add", address, "dev", guest_interface]),
            None => Ok(()),
        })
        .and_then(|()| in_guest(&["link", "set", guest_interface, "up"]))
        .and_then(|()| match gateway {
            Some(gateway) => in_guest(&["route", "add", "default", "via", gateway]),
            None => Ok(()),
        });
    if configured.is_err() {
        let _ = ip(&["link", "del", host_interface]);
    }
    configured
}
