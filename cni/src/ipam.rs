//! IP address management equivalent to the reference `host-local` plugin: IPv4 ranges with
//! gateways and exclusions, allocations persisted as one file per address under
//! `<dataDir>/<network>/` (the file holds `<containerID>\n<ifname>`), and an `flock` on
//! `<dataDir>/<network>/lock` so concurrent ADDs never hand out one address twice.

use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{CniError, ErrorCode};

/// Default allocation directory (host-local's).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

/// An IPv4 subnet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    /// The network address.
    pub network: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Parses `a.b.c.d/n`, normalizing host bits away.
    pub fn parse(s: &str) -> Option<Subnet> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = len.parse().ok()?;
        if prefix > 30 {
            return None;
        }
        let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
        Some(Subnet {
            network: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
        })
    }

    fn mask(&self) -> u32 {
        u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0)
    }

    /// True if `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network)
    }

    /// The broadcast address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !self.mask())
    }

    /// True if the two subnets share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }
}

/// One allocation range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet.
    pub subnet: Subnet,
    /// First allocatable address.
    pub start: Ipv4Addr,
    /// Last allocatable address.
    pub end: Ipv4Addr,
    /// The gateway (never allocated).
    pub gateway: Ipv4Addr,
}

/// The `ipam` section.
#[derive(Debug, Clone, PartialEq)]
pub struct IpamConfig {
    /// Ranges, tried in order.
    pub ranges: Vec<Range>,
    /// Routes to add in the container (`dst`, optional `gw`).
    pub routes: Vec<(Subnet, Option<Ipv4Addr>)>,
    /// Addresses never handed out.
    pub exclude: Vec<Ipv4Addr>,
    /// Where allocations live.
    pub data_dir: PathBuf,
}

fn invalid(details: impl Into<String>) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        "invalid network config",
        details,
    )
}

fn ip_field(v: &Value, field: &str, ctx: &str) -> Result<Option<Ipv4Addr>, CniError> {
    match v.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| invalid(format!("{ctx}.{field}: {s:?} is not an IPv4 address"))),
        Some(_) => Err(invalid(format!("{ctx}.{field} must be a string"))),
    }
}

impl IpamConfig {
    /// Parses the plugin config's `ipam` object (`type` must be `host-local`).
    pub fn parse(ipam: &Value) -> Result<IpamConfig, CniError> {
        match ipam.get("type").and_then(Value::as_str) {
            Some("host-local") => {}
            Some(t) => {
                return Err(invalid(format!(
                    "ipam.type {t:?}: only \"host-local\" is built in"
                )))
            }
            None => return Err(invalid("missing required field \"ipam.type\"")),
        }
        let mut range_values: Vec<(String, Value)> = Vec::new();
        if let Some(sets) = ipam.get("ranges") {
            let sets = sets
                .as_array()
                .ok_or_else(|| invalid("ipam.ranges must be an array of range sets"))?;
            for (i, set) in sets.iter().enumerate() {
                let set = set
                    .as_array()
                    .ok_or_else(|| invalid(format!("ipam.ranges[{i}] must be an array")))?;
                for (j, r) in set.iter().enumerate() {
                    range_values.push((format!("ipam.ranges[{i}][{j}]"), r.clone()));
                }
            }
        } else if ipam.get("subnet").is_some() {
            range_values.push(("ipam".into(), ipam.clone()));
        }
        if range_values.is_empty() {
            return Err(invalid("ipam needs \"ranges\" (or \"subnet\")"));
        }
        let mut ranges: Vec<Range> = Vec::new();
        for (ctx, r) in &range_values {
            let s = r
                .get("subnet")
                .and_then(Value::as_str)
                .ok_or_else(|| invalid(format!("{ctx}: missing required field \"subnet\"")))?;
            let subnet = Subnet::parse(s).ok_or_else(|| {
                invalid(format!(
                    "{ctx}.subnet: {s:?} is not an IPv4 subnet of /30 or larger"
                ))
            })?;
            let first = Ipv4Addr::from(u32::from(subnet.network) + 1);
            let last = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);
            let start = ip_field(r, "rangeStart", ctx)?.unwrap_or(first);
            let end = ip_field(r, "rangeEnd", ctx)?.unwrap_or(last);
            let gateway = ip_field(r, "gateway", ctx)?.unwrap_or(first);
            for (name, ip) in [
                ("rangeStart", start),
                ("rangeEnd", end),
                ("gateway", gateway),
            ] {
                if !subnet.contains(ip) || ip == subnet.network || ip == subnet.broadcast() {
                    return Err(invalid(format!(
                        "{ctx}.{name}: {ip} is not a host address of {s}"
                    )));
                }
            }
            if u32::from(start) > u32::from(end) {
                return Err(invalid(format!(
                    "{ctx}: rangeStart {start} is after rangeEnd {end}"
                )));
            }
            if let Some(other) = ranges.iter().find(|o| o.subnet.overlaps(&subnet)) {
                return Err(invalid(format!(
                    "{ctx}.subnet {s} overlaps {}/{}",
                    other.subnet.network, other.subnet.prefix
                )));
            }
            ranges.push(Range {
                subnet,
                start,
                end,
                gateway,
            });
        }
        let mut routes = Vec::new();
        for (i, r) in ipam
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let dst = r
                .get("dst")
                .and_then(Value::as_str)
                .and_then(|d| {
                    let (ip, len) = d.split_once('/')?;
                    let ip: Ipv4Addr = ip.parse().ok()?;
                    let prefix: u8 = len.parse().ok().filter(|p| *p <= 32)?;
                    Some(Subnet {
                        network: ip,
                        prefix,
                    })
                })
                .ok_or_else(|| invalid(format!("ipam.routes[{i}].dst must be an IPv4 CIDR")))?;
            routes.push((dst, ip_field(r, "gw", &format!("ipam.routes[{i}]"))?));
        }
        let mut exclude = Vec::new();
        for (i, e) in ipam
            .get("exclude")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let ip = e
                .as_str()
                .and_then(|s| s.split('/').next())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| invalid(format!("ipam.exclude[{i}] must be an IPv4 address")))?;
            exclude.push(ip);
        }
        let data_dir = ipam
            .get("dataDir")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        Ok(IpamConfig {
            ranges,
            routes,
            exclude,
            data_dir,
        })
    }
}

/// An address handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    /// The address.
    pub ip: Ipv4Addr,
    /// Its range's prefix length.
    pub prefix: u8,
    /// Its range's gateway.
    pub gateway: Ipv4Addr,
}

fn io(path: &Path, e: std::io::Error) -> CniError {
    CniError::new(
        ErrorCode::IoFailure,
        "I/O failure",
        format!("{}: {e}", path.display()),
    )
}

/// The allocation store of one network, locked while held.
pub struct Store {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<fs::File>,
}

impl Store {
    /// Opens and locks `<dataDir>/<network>`.
    pub fn lock(cfg: &IpamConfig, network: &str) -> Result<Store, CniError> {
        let dir = cfg.data_dir.join(network);
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let lock_path = dir.join("lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, e))?;
        let lock = nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io(&lock_path, e.into()))?;
        Ok(Store { dir, _lock: lock })
    }

    fn owner(&self, ip: Ipv4Addr) -> Option<(String, String)> {
        let text = fs::read_to_string(self.dir.join(ip.to_string())).ok()?;
        let mut lines = text.lines();
        Some((
            lines.next()?.trim().to_string(),
            lines.next().unwrap_or("").trim().to_string(),
        ))
    }

    /// Every allocation: address → (containerID, ifname).
    pub fn all(&self) -> Vec<(Ipv4Addr, String, String)> {
        fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let ip: Ipv4Addr = e.file_name().to_str()?.parse().ok()?;
                let (c, i) = self.owner(ip)?;
                Some((ip, c, i))
            })
            .collect()
    }

    /// The address already held by (container, ifname), if any.
    pub fn find(&self, container: &str, ifname: &str) -> Option<Ipv4Addr> {
        self.all()
            .into_iter()
            .find(|(_, c, i)| c == container && i == ifname)
            .map(|(ip, _, _)| ip)
    }

    /// Allocates the next free address after the last one handed out in each range.
    pub fn allocate(
        &self,
        cfg: &IpamConfig,
        container: &str,
        ifname: &str,
    ) -> Result<Allocation, CniError> {
        if let Some(ip) = self.find(container, ifname) {
            let r = cfg.ranges.iter().find(|r| r.subnet.contains(ip));
            if let Some(r) = r {
                return Ok(Allocation {
                    ip,
                    prefix: r.subnet.prefix,
                    gateway: r.gateway,
                });
            }
        }
        for (n, r) in cfg.ranges.iter().enumerate() {
            let last_file = self.dir.join(format!("last_reserved_ip.{n}"));
            let last: Option<Ipv4Addr> = fs::read_to_string(&last_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .filter(|ip| r.subnet.contains(*ip));
            let (lo, hi) = (u32::from(r.start), u32::from(r.end));
            let size = hi - lo + 1;
            let begin = last.map(|l| u32::from(l).saturating_add(1)).unwrap_or(lo);
            for k in 0..size {
                let cand = lo + ((begin.wrapping_sub(lo)).wrapping_add(k)) % size;
                let ip = Ipv4Addr::from(cand);
                if ip == r.gateway || cfg.exclude.contains(&ip) {
                    continue;
                }
                let path = self.dir.join(ip.to_string());
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                {
                    Ok(mut f) => {
                        f.write_all(format!("{container}\n{ifname}").as_bytes())
                            .map_err(|e| io(&path, e))?;
                        fs::write(&last_file, ip.to_string()).map_err(|e| io(&last_file, e))?;
                        return Ok(Allocation {
                            ip,
                            prefix: r.subnet.prefix,
                            gateway: r.gateway,
                        });
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io(&path, e)),
                }
            }
        }
        Err(CniError::new(
            ErrorCode::TryAgainLater,
            "no free address",
            "every range of the network is allocated",
        ))
    }

    /// Releases what (container, ifname) holds. Releasing nothing is not an error.
    pub fn release(&self, container: &str, ifname: &str) -> Result<(), CniError> {
        for (ip, c, i) in self.all() {
            if c == container && i == ifname {
                let p = self.dir.join(ip.to_string());
                fs::remove_file(&p).map_err(|e| io(&p, e))?;
            }
        }
        Ok(())
    }

    /// Drops allocations whose (container, ifname) is not in `valid`. Returns how many.
    pub fn gc(&self, valid: &[(String, String)]) -> Result<usize, CniError> {
        let mut n = 0;
        for (ip, c, i) in self.all() {
            if !valid.iter().any(|(vc, vi)| *vc == c && *vi == i) {
                let p = self.dir.join(ip.to_string());
                fs::remove_file(&p).map_err(|e| io(&p, e))?;
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(dir: &Path) -> IpamConfig {
        IpamConfig::parse(&json!({
            "type": "host-local",
            "ranges": [[{"subnet": "10.22.0.0/24", "rangeStart": "10.22.0.10", "rangeEnd": "10.22.0.200"}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "exclude": ["10.22.0.11"],
            "dataDir": dir,
        }))
        .unwrap()
    }

    #[test]
    fn allocates_in_order_skipping_gateway_and_exclusions_and_releases() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path());
        let s = Store::lock(&c, "net").unwrap();
        let a = s.allocate(&c, "c1", "eth0").unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 22, 0, 10));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 22, 0, 1));
        let b = s.allocate(&c, "c2", "eth0").unwrap();
        assert_eq!(b.ip, Ipv4Addr::new(10, 22, 0, 12), "10.22.0.11 is excluded");
        // The same attachment gets its address back.
        assert_eq!(s.allocate(&c, "c1", "eth0").unwrap().ip, a.ip);
        s.release(&c1(), "eth0").unwrap();
        assert_eq!(s.find("c1", "eth0"), None);
        assert_eq!(s.gc(&[]).unwrap(), 1);
        assert!(s.all().is_empty());
    }

    fn c1() -> String {
        "c1".into()
    }

    #[test]
    fn bad_configs_name_the_field() {
        let cases = [
            (json!({"type": "dhcp"}), "ipam.type"),
            (json!({"type": "host-local"}), "ranges"),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/33"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.1.0.1"}]]}),
                "gateway",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/16"}], [{"subnet": "10.0.5.0/24"}]]}),
                "overlaps",
            ),
            (
                json!({"type": "host-local", "ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.5"}]]}),
                "after",
            ),
        ];
        for (v, needle) in cases {
            let e = IpamConfig::parse(&v).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidNetworkConfig as u32);
            assert!(e.details.contains(needle), "{needle}: {}", e.details);
        }
    }
}
