//! How a guest runs: the settings of `config.toml` that `start` and `stop` read — its network
//! (`net`), its init (`init`, `runlevel`), its cgroup limits (`[limits]`) and how it is stopped
//! (`stop_signal`, `stop_timeout`) — and how long a package operation on it may take
//! (`operation_time_limit`).
//!
//! ```toml
//! net = "none"                  # default: a network namespace with only loopback
//! # net = "host"                # share the host's network
//! # net = { bridge = "br0" }    # plus a veth pair, `eth0` in the guest, a port of br0
//! init = "plain"                # the guest's /sbin/init (default; systemd if it is systemd)
//! # init = "sysv"               # /etc/rc.d/rc or /etc/init.d/rc RUNLEVEL, as util-vserver
//! # init = "systemd"            # systemd, as systemd-nspawn boots it
//! # init = ["/bin/sh", "-c", "exec my-daemon"]
//! runlevel = 3                  # for init = "sysv"
//! stop_signal = "TERM"          # what asks the init to stop (default: RTMIN+3 for systemd)
//! stop_timeout = 10             # seconds before everything left is killed
//! start_timeout = 90            # seconds `start` waits for the init to be up
//! start_at_boot = false         # `vserver G enable` / `disable`; `vserver --marked start`
//! operation_time_limit = "2h"   # per run of rpm, dnf, dpkg or apt-get (also "90s", "30m")
//!
//! [limits]
//! memory = "256M"               # bytes, or with a k/M/G suffix
//! pids = 100
//! cpu = "0.5"                   # CPUs (a CFS quota)
//! ```
//!
//! Every field has a default, and a configuration written before these existed reads the same.
//! Malformed values are refused when the file is read, naming the field.
//!
//! The `sysv` mode follows util-vserver's (`vserver … start` runs the guest's `rc` script with
//! the runlevel instead of an init; `stop` runs it again for the stop scripts). Here a guest
//! always has a pid 1, so a small shell loop is that pid 1: it runs `rc RUNLEVEL`, then waits;
//! on the stop signal it runs `rc 0` (the `K` scripts of runlevel 0) and ends.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `net`: the guest's network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetConfig {
    /// `"none"`: a network namespace with only loopback (the default).
    #[default]
    None,
    /// `"host"`: the host's network namespace.
    Host,
    /// `{ bridge = "br0", interface = "eth0", address = "10.0.0.2/24", gateway = "10.0.0.1" }`:
    /// a veth pair into a host bridge.
    Bridge {
        /// The host bridge.
        bridge: String,
        /// The guest's end (default `eth0`).
        interface: Option<String>,
        /// Its address with prefix length (set by the host: the guest has no `CAP_NET_ADMIN`).
        address: Option<String>,
        /// The guest's default route.
        gateway: Option<String>,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BridgeTable {
    bridge: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum NetRepr {
    Mode(String),
    Bridge(BridgeTable),
}

impl Serialize for NetConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            NetConfig::None => NetRepr::Mode("none".into()),
            NetConfig::Host => NetRepr::Mode("host".into()),
            NetConfig::Bridge {
                bridge,
                interface,
                address,
                gateway,
            } => NetRepr::Bridge(BridgeTable {
                bridge: bridge.clone(),
                interface: interface.clone(),
                address: address.clone(),
                gateway: gateway.clone(),
            }),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NetConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = NetRepr::deserialize(deserializer).map_err(|_| {
            de::Error::custom("`net` is \"none\", \"host\" or { bridge = \"BRIDGE\" }")
        })?;
        match repr {
            NetRepr::Mode(mode) if mode == "none" => Ok(NetConfig::None),
            NetRepr::Mode(mode) if mode == "host" => Ok(NetConfig::Host),
            NetRepr::Mode(mode) => Err(de::Error::custom(format!(
                "unknown `net` mode `{mode}`: use \"none\", \"host\" or {{ bridge = \"BRIDGE\" }}"
            ))),
            NetRepr::Bridge(table) => {
                for name in std::iter::once(&table.bridge).chain(table.interface.as_ref()) {
                    check_interface_name(name).map_err(de::Error::custom)?;
                }
                if let Some(address) = &table.address {
                    check_address(address).map_err(de::Error::custom)?;
                }
                if let Some(gateway) = &table.gateway
                    && gateway.parse::<std::net::IpAddr>().is_err()
                {
                    return Err(de::Error::custom(format!(
                        "bad gateway `{gateway}`: an IPv4 or IPv6 address"
                    )));
                }
                Ok(NetConfig::Bridge {
                    bridge: table.bridge,
                    interface: table.interface,
                    address: table.address,
                    gateway: table.gateway,
                })
            }
        }
    }
}

fn check_address(text: &str) -> Result<(), String> {
    let ok = text.split_once('/').is_some_and(|(ip, prefix)| {
        let max = match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(_)) => 32,
            Ok(std::net::IpAddr::V6(_)) => 128,
            Err(_) => return false,
        };
        prefix.parse::<u8>().is_ok_and(|p| p <= max)
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad address `{text}`: an IP address with its prefix length, such as 10.0.0.2/24"
        ))
    }
}

fn check_interface_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= vserver_sandbox::MAX_INTERFACE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad interface name `{name}`: 1 to {} letters, digits, `-`, `_`, `.`",
            vserver_sandbox::MAX_INTERFACE_NAME
        ))
    }
}

/// `init`: what runs as the guest's pid 1.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum InitConfig {
    /// `"plain"`: the guest's `/sbin/init` (the default).
    #[default]
    Plain,
    /// `"sysv"`: the guest's `rc` script with the runlevel (see the module documentation).
    Sysv,
    /// `"systemd"`: the guest's systemd, booted as systemd-nspawn boots it (module `init`).
    Systemd,
    /// `["/bin/sh", "-c", "…"]`: this command.
    Command(Vec<String>),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum InitRepr {
    Mode(String),
    Command(Vec<String>),
}

impl Serialize for InitConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            InitConfig::Plain => InitRepr::Mode("plain".into()),
            InitConfig::Sysv => InitRepr::Mode("sysv".into()),
            InitConfig::Systemd => InitRepr::Mode("systemd".into()),
            InitConfig::Command(command) => InitRepr::Command(command.clone()),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for InitConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let repr = InitRepr::deserialize(deserializer).map_err(|_| {
            de::Error::custom(
                "`init` is \"plain\", \"sysv\", \"systemd\" or a command [\"PROGRAM\", \"ARG\"…]",
            )
        })?;
        match repr {
            InitRepr::Mode(mode) if mode == "plain" => Ok(InitConfig::Plain),
            InitRepr::Mode(mode) if mode == "sysv" => Ok(InitConfig::Sysv),
            InitRepr::Mode(mode) if mode == "systemd" => Ok(InitConfig::Systemd),
            InitRepr::Mode(mode) => Err(de::Error::custom(format!(
                "unknown `init` mode `{mode}`: use \"plain\", \"sysv\", \"systemd\" or a command list"
            ))),
            InitRepr::Command(command) if command.is_empty() => {
                Err(de::Error::custom("`init` command list is empty"))
            }
            InitRepr::Command(command) => Ok(InitConfig::Command(command)),
        }
    }
}

/// `[limits]`: the guest cgroup's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// `memory`: bytes (`268435456`, `"256M"`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "memory_field"
    )]
    pub memory: Option<u64>,
    /// `pids`: most processes and threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// `cpu`: thousandths of a CPU (`cpu = "0.5"` is 500).
    #[serde(
        default,
        rename = "cpu",
        skip_serializing_if = "Option::is_none",
        with = "cpu_field"
    )]
    pub cpu_millis: Option<u64>,
}

impl LimitsConfig {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        self == &LimitsConfig::default()
    }

    /// As the sandbox takes them.
    pub fn to_limits(&self) -> vserver_sandbox::GuestLimits {
        vserver_sandbox::GuestLimits {
            memory: self.memory,
            pids: self.pids,
            cpu_millis: self.cpu_millis,
        }
    }
}

/// Parses a size: digits with an optional `k`, `M`, `G` or `T` suffix (powers of 1024; a
/// trailing `B` or `iB` is allowed: `256MiB`).
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let text = text
        .strip_suffix("iB")
        .or_else(|| text.strip_suffix('B'))
        .unwrap_or(text);
    let (digits, shift) = match text.chars().last()? {
        'k' | 'K' => (&text[..text.len() - 1], 10),
        'm' | 'M' => (&text[..text.len() - 1], 20),
        'g' | 'G' => (&text[..text.len() - 1], 30),
        't' | 'T' => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()?
        .checked_mul(1u64 << shift)
}

/// Parses a CPU count (`"0.5"`, `"2"`, `1.5`) into thousandths of a CPU; at least one
/// thousandth.
pub fn parse_cpus(text: &str) -> Option<u64> {
    let value: f64 = text.trim().parse().ok()?;
    cpus_to_millis(value)
}

fn cpus_to_millis(value: f64) -> Option<u64> {
    if !value.is_finite() || value <= 0.0 || value > 1_000_000.0 {
        return None;
    }
    // In range (checked above): the cast cannot truncate beyond the rounding wanted here.
    Some(((value * 1000.0).round() as u64).max(1))
}

mod memory_field {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => s.serialize_u64(*bytes),
            None => s.serialize_none(),
        }
    }

    struct Size;

    impl Visitor<'_> for Size {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("bytes, or a size such as \"256M\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom("a memory limit cannot be negative"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_size(v).ok_or_else(|| {
                E::custom(format!(
                    "bad memory limit `{v}`: bytes with an optional k, M, G suffix"
                ))
            })
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(Size).map(Some)
    }
}

mod cpu_field {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(millis) => s.serialize_str(&format!("{}", *millis as f64 / 1000.0)),
            None => s.serialize_none(),
        }
    }

    struct Cpus;

    impl Visitor<'_> for Cpus {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number of CPUs such as \"0.5\"")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            v.checked_mul(1000)
                .filter(|m| *m > 0)
                .ok_or_else(|| E::custom(format!("bad cpu limit `{v}`")))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v)
                .map_err(|_| E::custom("a cpu limit cannot be negative"))
                .and_then(|v| self.visit_u64(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            cpus_to_millis(v).ok_or_else(|| E::custom(format!("bad cpu limit `{v}`")))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_cpus(v).ok_or_else(|| {
                E::custom(format!(
                    "bad cpu limit `{v}`: a positive number of CPUs such as \"0.5\""
                ))
            })
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(Cpus).map(Some)
    }
}

/// The default runlevel of `init = "sysv"`.
pub const DEFAULT_RUNLEVEL: u8 = 3;
/// The default `start_timeout`.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(90);
/// The default `stop_timeout`.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The environment variable that sets the time limit of package operations for one command,
/// over any guest's `operation_time_limit` (`VSERVER_OPERATION_TIME_LIMIT=30m vyum …`).
pub const TIME_LIMIT_VAR: &str = "VSERVER_OPERATION_TIME_LIMIT";

/// Parses a time limit: a positive whole number of seconds, minutes or hours (`90s`, `30m`,
/// `2h`; digits alone are seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last()? {
        (at, 's') => (&text[..at], 1),
        (at, 'm') => (&text[..at], 60),
        (at, 'h') => (&text[..at], 3600),
        _ => (text, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let seconds = digits.parse::<u64>().ok()?.checked_mul(unit)?;
    (seconds > 0).then(|| Duration::from_secs(seconds))
}

/// A duration as [`parse_duration`] reads it back: in hours or minutes when it is a whole
/// number of them, else in seconds.
pub fn format_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds != 0 && seconds.is_multiple_of(3600) {
        format!("{}h", seconds / 3600)
    } else if seconds != 0 && seconds.is_multiple_of(60) {
        format!("{}m", seconds / 60)
    } else {
        format!("{seconds}s")
    }
}

/// What `operation_time_limit` accepts, for error messages.
pub(crate) const DURATION_FORMAT: &str =
    "a positive number of seconds, minutes or hours, such as \"90s\", \"30m\" or \"2h\"";

pub(crate) mod time_limit_field {
    use super::*;

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => s.serialize_str(&format_duration(*duration)),
            None => s.serialize_none(),
        }
    }

    struct Limit;

    impl Visitor<'_> for Limit {
        type Value = Duration;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(DURATION_FORMAT)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            self.visit_str(&v.to_string())
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).ok_or_else(|| {
                E::custom(format!(
                    "bad operation_time_limit `{}`: {DURATION_FORMAT}",
                    v.escape_debug()
                ))
            })
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(Limit).map(Some)
    }
}

/// Parses a signal name (`TERM`, `SIGTERM`, `RTMIN+3`) or number, as `stop_signal` takes it.
pub fn parse_signal(text: &str) -> Option<rustix::process::Signal> {
    vserver_sandbox::signal_by_name(text)
}

/// Reads `stop_signal`, refusing a name [`parse_signal`] does not know.
pub(crate) fn deserialize_signal<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if parse_signal(&text).is_none() {
        return Err(de::Error::custom(format!(
            "unknown stop_signal `{text}`: use a name such as \"TERM\", \"PWR\", \"RTMIN+3\" or a number"
        )));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Net {
        net: NetConfig,
    }

    #[test]
    fn net_settings() {
        let parsed: Net = toml::from_str(
            r#"net = { bridge = "br0", address = "10.0.0.2/24", gateway = "10.0.0.1" }"#,
        )
        .unwrap();
        assert_eq!(
            parsed.net,
            NetConfig::Bridge {
                bridge: "br0".into(),
                interface: None,
                address: Some("10.0.0.2/24".into()),
                gateway: Some("10.0.0.1".into()),
            }
        );
        let host: Net = toml::from_str(r#"net = "host""#).unwrap();
        assert_eq!(host.net, NetConfig::Host);
        for bad in [
            r#"net = "bogus""#,
            r#"net = { bridge = "br0", address = "10.0.0.2" }"#,
            r#"net = { bridge = "br0", address = "10.0.0.2/33" }"#,
            r#"net = { bridge = "br0", gateway = "gateway" }"#,
            r#"net = { bridge = "a-name-much-too-long" }"#,
            r#"net = { bridge = "br0", colour = "blue" }"#,
        ] {
            assert!(toml::from_str::<Net>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_settings() {
        #[derive(Debug, Deserialize, Serialize)]
        struct Init {
            init: InitConfig,
        }
        for (text, init) in [
            ("plain", InitConfig::Plain),
            ("sysv", InitConfig::Sysv),
            ("systemd", InitConfig::Systemd),
        ] {
            let parsed: Init = toml::from_str(&format!("init = \"{text}\"")).unwrap();
            assert_eq!(parsed.init, init);
            let written = toml::to_string(&parsed).unwrap();
            assert_eq!(written.trim(), format!("init = \"{text}\""));
        }
        let error = toml::from_str::<Init>("init = \"upstart\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"systemd\""), "{error}");
    }

    #[test]
    fn sizes_and_cpus() {
        assert_eq!(parse_size("256M"), Some(256 << 20));
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_cpus("0.5"), Some(500));
        assert_eq!(parse_cpus("2"), Some(2000));
        assert_eq!(parse_cpus("0"), None);
        assert_eq!(parse_cpus("nan"), None);
    }

    #[test]
    fn time_limits() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("90s"), Some(secs(90)));
        assert_eq!(parse_duration("30m"), Some(secs(1800)));
        assert_eq!(parse_duration(" 2h "), Some(secs(7200)));
        assert_eq!(parse_duration("45"), Some(secs(45)));
        for bad in [
            "",
            "h",
            "0",
            "0s",
            "-5m",
            "1.5h",
            "1h30m",
            "2d",
            "2 h",
            "٣s",
            "99999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        for limit in [secs(7200), secs(1800), secs(90), secs(3660)] {
            assert_eq!(parse_duration(&format_duration(limit)), Some(limit));
        }

        #[derive(Debug, Deserialize, Serialize)]
        struct Limit {
            #[serde(default, with = "time_limit_field")]
            operation_time_limit: Option<Duration>,
        }
        let read = |text: &str| toml::from_str::<Limit>(text).map(|l| l.operation_time_limit);
        assert_eq!(
            read("operation_time_limit = \"30m\"").unwrap(),
            Some(secs(1800))
        );
        assert_eq!(read("operation_time_limit = 600").unwrap(), Some(secs(600)));
        assert_eq!(read("").unwrap(), None);
        let error = read("operation_time_limit = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bad operation_time_limit `soon`"), "{error}");
        assert!(read("operation_time_limit = -1").is_err());
        let written = toml::to_string(&Limit {
            operation_time_limit: Some(secs(5400)),
        })
        .unwrap();
        assert_eq!(written.trim(), "operation_time_limit = \"90m\"");
    }
}
