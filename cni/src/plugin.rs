//! The CNI commands (`ADD`, `DEL`, `CHECK`, `STATUS`, `GC`, `VERSION`) of the bridge plugin,
//! driven by the `CNI_*` environment and the plugin configuration on stdin.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::config::{check_version, LATEST_VERSION, SUPPORTED_VERSIONS};
use crate::error::{CniError, ErrorCode};
use crate::ipam::{IpamConfig, Store};
use crate::link::{self, BridgeAttach};

/// The `CNI_*` environment of one invocation.
#[derive(Debug, Clone, Default)]
pub struct Invocation {
    /// CNI_COMMAND.
    pub command: String,
    /// CNI_CONTAINERID.
    pub container_id: String,
    /// CNI_NETNS.
    pub netns: Option<PathBuf>,
    /// CNI_IFNAME.
    pub ifname: String,
    /// CNI_ARGS (`K=V;K2=V2`).
    pub args: String,
}

fn env_error(details: impl Into<String>) -> CniError {
    CniError::new(
        ErrorCode::InvalidEnvironment,
        "invalid environment",
        details,
    )
}

impl Invocation {
    /// Reads and checks the variables `command` needs.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let command = get("CNI_COMMAND").ok_or_else(|| env_error("CNI_COMMAND is not set"))?;
        let inv = Invocation {
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args: get("CNI_ARGS").unwrap_or_default(),
            command,
        };
        let needs = match inv.command.as_str() {
            "ADD" | "CHECK" => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"][..],
            "DEL" => &["CNI_CONTAINERID", "CNI_IFNAME"][..],
            "STATUS" | "GC" | "VERSION" => &[][..],
            other => return Err(env_error(format!("unknown CNI_COMMAND {other:?}"))),
        };
        for n in needs {
            let missing = match *n {
                "CNI_CONTAINERID" => inv.container_id.is_empty(),
                "CNI_NETNS" => inv.netns.is_none(),
                _ => inv.ifname.is_empty(),
            };
            if missing {
                return Err(env_error(format!("{n} is required for {}", inv.command)));
            }
        }
        if inv.ifname.len() > 15 || inv.ifname.contains(['/', ' ']) {
            return Err(env_error(format!(
                "CNI_IFNAME {:?} is not a valid interface name",
                inv.ifname
            )));
        }
        Ok(inv)
    }
}

/// The host-side veth name for an attachment: stable, unique enough, at most 15 bytes.
pub fn host_veth_name(container_id: &str, ifname: &str) -> String {
    // FNV-1a over "<id>/<ifname>".
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(ifname.bytes())
    {
        h ^= b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    format!("plv{:08x}", h as u32)
}

fn invalid(details: impl Into<String>) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        "invalid network config",
        details,
    )
}

struct Conf {
    version: String,
    name: String,
    bridge: String,
    mtu: Option<u32>,
    is_gateway: bool,
    default_route: bool,
    hairpin: bool,
    ipam: IpamConfig,
    raw: Value,
}

fn parse_conf(stdin: &[u8]) -> Result<Conf, CniError> {
    let raw: Value = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            ErrorCode::DecodingFailure,
            "failed to decode network config",
            e.to_string(),
        )
    })?;
    let s = |f: &str| raw.get(f).and_then(Value::as_str).map(str::to_string);
    let version =
        s("cniVersion").ok_or_else(|| invalid("missing required field \"cniVersion\""))?;
    check_version(&version)?;
    let name = s("name").ok_or_else(|| invalid("missing required field \"name\""))?;
    let bridge = s("bridge").unwrap_or_else(|| "cni0".into());
    if bridge.is_empty() || bridge.len() > 15 {
        return Err(invalid(format!(
            "field \"bridge\" {bridge:?} is not a valid interface name"
        )));
    }
    let mtu = match raw.get("mtu") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .filter(|m| (68..=65535).contains(m))
                .ok_or_else(|| invalid("field \"mtu\" must be a number from 68 to 65535"))?
                as u32,
        ),
    };
    let is_default_gateway = raw
        .get("isDefaultGateway")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let is_gateway = raw
        .get("isGateway")
        .and_then(Value::as_bool)
        .unwrap_or(false)
        || is_default_gateway;
    let hairpin = match raw.get("hairpinMode") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("field \"hairpinMode\" must be a boolean")),
    };
    let ipam = IpamConfig::parse(
        raw.get("ipam")
            .ok_or_else(|| invalid("missing required field \"ipam\""))?,
    )?;
    Ok(Conf {
        version,
        name,
        bridge,
        mtu,
        is_gateway,
        hairpin,
        default_route: is_default_gateway || ipam_has_default(&ipam),
        ipam,
        raw,
    })
}

fn ipam_has_default(ipam: &IpamConfig) -> bool {
    ipam.routes.iter().any(|(d, _)| d.prefix == 0)
}

/// Runs one command; `Ok(Some(result))` is printed on stdout.
pub fn run(inv: &Invocation, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if inv.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": LATEST_VERSION,
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf = parse_conf(stdin)?;
    match inv.command.as_str() {
        "ADD" => add(inv, &conf).map(Some),
        "DEL" => {
            let store = Store::lock(&conf.ipam, &conf.name)?;
            let host_veth = host_veth_name(&inv.container_id, &inv.ifname);
            let detached = link::detach(inv.netns.as_deref(), &inv.ifname, &host_veth);
            // The address is released even if the links could not be retired.
            store.release(&inv.container_id, &inv.ifname)?;
            drop(store);
            let tombstone = detached?;
            if let Some(t) = tombstone {
                spawn_reaper(&t);
            }
            Ok(None)
        }
        "CHECK" => {
            let store = Store::lock(&conf.ipam, &conf.name)?;
            let ip = store.find(&inv.container_id, &inv.ifname).ok_or_else(|| {
                CniError::new(
                    ErrorCode::UnknownContainer,
                    "check failed",
                    "no address is allocated to this attachment",
                )
            })?;
            drop(store);
            // The previous result must describe this attachment: its container interface (the
            // one with a sandbox) and its address.
            let prev = &conf.raw["prevResult"];
            let mut mac = None;
            if prev.is_object() {
                let ifc = prev["interfaces"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|i| i["sandbox"].is_string() && i["name"] == inv.ifname.as_str());
                let Some(ifc) = ifc else {
                    return Err(CniError::new(
                        ErrorCode::InvalidNetworkConfig,
                        "check failed",
                        format!("prevResult has no interface {} in a sandbox", inv.ifname),
                    ));
                };
                mac = ifc["mac"].as_str().map(str::to_string);
                if first_ip(prev) != Some(ip) {
                    return Err(CniError::new(
                        ErrorCode::IoFailure,
                        "check failed",
                        format!("prevResult's address is not the allocated {ip}"),
                    ));
                }
            }
            let netns = inv.netns.as_deref().unwrap_or(std::path::Path::new(""));
            link::check(netns, &inv.ifname, ip, mac)?;
            Ok(None)
        }
        "STATUS" => {
            let dir = conf.ipam.data_dir.join(&conf.name);
            std::fs::create_dir_all(&dir).map_err(|e| {
                CniError::new(
                    ErrorCode::IoFailure,
                    "plugin not available",
                    format!("{}: {e}", dir.display()),
                )
            })?;
            Ok(None)
        }
        "GC" => {
            let valid: Vec<(String, String)> = conf
                .raw
                .get("cni.dev/valid-attachments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|a| {
                    Some((
                        a.get("containerID")?.as_str()?.to_string(),
                        a.get("ifname")?.as_str()?.to_string(),
                    ))
                })
                .collect();
            let store = Store::lock(&conf.ipam, &conf.name)?;
            store.gc(&valid)?;
            link::destroy_all_tombstones()?;
            Ok(None)
        }
        _ => unreachable!("commands are checked in Invocation::from_env"),
    }
}

/// The requested container MAC: `runtimeConfig.mac` (capability `mac`), then `args.cni.mac`,
/// then `MAC=` in `CNI_ARGS`, as the reference bridge plugin reads them.
fn requested_mac(inv: &Invocation, conf: &Conf) -> Result<Option<[u8; 6]>, CniError> {
    let from_args = inv
        .args
        .split(';')
        .find_map(|kv| kv.strip_prefix("MAC="))
        .map(str::to_string);
    let wanted = conf.raw["runtimeConfig"]["mac"]
        .as_str()
        .or(conf.raw["args"]["cni"]["mac"].as_str())
        .map(str::to_string)
        .or(from_args);
    match wanted {
        None => Ok(None),
        Some(m) => link::parse_mac(&m).map(Some).ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidNetworkConfig,
                "invalid MAC address",
                format!("{m:?} is not a unicast MAC address (aa:bb:cc:dd:ee:ff)"),
            )
        }),
    }
}

fn add(inv: &Invocation, conf: &Conf) -> Result<Value, CniError> {
    let netns = inv.netns.clone().unwrap_or_default();
    let mac = requested_mac(inv, conf)?;
    let alloc = {
        let store = Store::lock(&conf.ipam, &conf.name)?;
        store.allocate(&conf.ipam, &inv.container_id, &inv.ifname)?
    };
    let attach = BridgeAttach {
        bridge: conf.bridge.clone(),
        host_veth: host_veth_name(&inv.container_id, &inv.ifname),
        ifname: inv.ifname.clone(),
        mtu: conf.mtu,
        is_gateway: conf.is_gateway,
        default_route: conf.default_route,
        routes: conf.ipam.routes.clone(),
        hairpin: conf.hairpin,
        mac,
    };
    let attached = match link::attach(&netns, &attach, alloc) {
        Ok(a) => a,
        Err(e) => {
            // Leave nothing: no address held, no half-made pair.
            let _ = link::remove_now(&netns, &inv.ifname);
            if let Ok(store) = Store::lock(&conf.ipam, &conf.name) {
                let _ = store.release(&inv.container_id, &inv.ifname);
            }
            return Err(e);
        }
    };
    let routes: Vec<Value> = conf
        .ipam
        .routes
        .iter()
        .map(|(d, gw)| {
            let mut r = json!({"dst": format!("{}/{}", d.network, d.prefix)});
            if let Some(g) = gw {
                r["gw"] = json!(g.to_string());
            }
            r
        })
        .chain(
            (conf.default_route && !ipam_has_default(&conf.ipam))
                .then(|| json!({"dst": "0.0.0.0/0", "gw": alloc.gateway.to_string()})),
        )
        .collect();
    Ok(json!({
        "cniVersion": conf.version,
        "interfaces": [
            {"name": conf.bridge, "mac": attached.bridge_mac},
            {"name": attach.host_veth, "mac": attached.host_mac},
            {"name": inv.ifname, "mac": attached.container_mac, "sandbox": netns},
        ],
        "ips": [{"address": format!("{}/{}", alloc.ip, alloc.prefix), "gateway": alloc.gateway.to_string(), "interface": 2}],
        "routes": routes,
        "dns": {},
    }))
}

/// The environment variable that turns `podlet-cni` into the reaper of one tombstone.
pub const REAP_ENV: &str = "PODLET_CNI_REAP";

/// Starts a detached `podlet-cni` (own session, stdio on /dev/null, not waited for) that
/// destroys the tombstoned pair `name` in this namespace. If it cannot start, the pair is
/// destroyed here instead.
fn spawn_reaper(name: &str) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.env_clear()
        .env(REAP_ENV, name)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setsid is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    if cmd.spawn().is_err() {
        let _ = link::destroy_tombstone(name);
    }
}

/// Parses an IPv4 address out of a result's `ips[0].address` (for tests and callers).
pub fn first_ip(result: &Value) -> Option<Ipv4Addr> {
    result["ips"][0]["address"]
        .as_str()?
        .split('/')
        .next()?
        .parse()
        .ok()
}
