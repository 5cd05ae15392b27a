//! The runtime side of CNI (what libcni does for containerd and podman): load a network
//! configuration list, find each plugin in the plugin directories, and run `ADD` in order and
//! `DEL` in reverse order, chaining `prevResult`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use podlet_cni::config::NetworkConfigList;
use serde_json::{json, Value};

use super::PodError;

/// Where network configuration lists are looked up by default.
pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
/// Where plugins are looked up by default.
pub const DEFAULT_PLUGIN_DIR: &str = "/opt/cni/bin";
/// The network podlet uses when none is configured under its name.
pub const DEFAULT_NETWORK: &str = "podlet";

/// The built-in default network: a `podlet0` bridge on 10.88.0.0/16 served by `podlet-cni`.
pub fn default_network_config() -> Value {
    json!({
        "cniVersion": "1.1.0",
        "name": DEFAULT_NETWORK,
        "plugins": [{
            "type": "podlet-cni",
            "bridge": "podlet0",
            "isGateway": true,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.88.0.0/16", "gateway": "10.88.0.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": "/var/lib/podlet/cni/networks"
            }
        }]
    })
}

/// A network configuration, ready to attach containers to.
#[derive(Debug, Clone)]
pub struct CniNetwork {
    /// The parsed list.
    pub list: NetworkConfigList,
    /// The document it came from (plugins' own fields are passed through unchanged).
    pub raw: Value,
    /// Directories searched for plugin executables, in order.
    pub plugin_dirs: Vec<PathBuf>,
}

fn conf_error(what: impl Into<String>) -> PodError {
    PodError::Network(what.into())
}

impl CniNetwork {
    /// Parses a configuration (`.conflist` or a single plugin `.conf`).
    pub fn from_bytes(bytes: &[u8], plugin_dirs: Vec<PathBuf>) -> Result<CniNetwork, PodError> {
        let list = NetworkConfigList::parse(bytes)
            .map_err(|e| conf_error(format!("{}: {}", e.msg, e.details)))?;
        let raw: Value = serde_json::from_slice(bytes).map_err(|e| conf_error(e.to_string()))?;
        Ok(CniNetwork {
            list,
            raw,
            plugin_dirs,
        })
    }

    /// Finds the network called `name` in `conf_dir` (files ending in `.conflist`, `.conf` or
    /// `.json`, in name order, as libcni does). The built-in default network is used for
    /// [`DEFAULT_NETWORK`] when no file defines it.
    pub fn load(
        conf_dir: &Path,
        name: &str,
        plugin_dirs: Vec<PathBuf>,
    ) -> Result<CniNetwork, PodError> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(conf_dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    matches!(
                        p.extension().and_then(|e| e.to_str()),
                        Some("conflist" | "conf" | "json")
                    )
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(conf_error(format!("{}: {e}", conf_dir.display()))),
        };
        files.sort();
        for f in &files {
            let bytes =
                std::fs::read(f).map_err(|e| conf_error(format!("{}: {e}", f.display())))?;
            let doc: Value = match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(file = %f.display(), error = %e, "skipping unreadable CNI config");
                    continue;
                }
            };
            if doc["name"] == name {
                return CniNetwork::from_bytes(&bytes, plugin_dirs)
                    .map_err(|e| conf_error(format!("{}: {e}", f.display())));
            }
        }
        if name == DEFAULT_NETWORK {
            let doc = default_network_config();
            return CniNetwork::from_bytes(doc.to_string().as_bytes(), plugin_dirs);
        }
        Err(conf_error(format!(
            "no CNI network named {name:?} in {} ({} config files)",
            conf_dir.display(),
            files.len()
        )))
    }

    fn plugin_path(&self, plugin: &str) -> Result<PathBuf, PodError> {
        if plugin.contains('/') || plugin.is_empty() || plugin.starts_with('.') {
            return Err(conf_error(format!(
                "plugin type {plugin:?} is not a plain name"
            )));
        }
        self.plugin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                conf_error(format!(
                    "CNI plugin {plugin:?} not found in {}",
                    self.plugin_dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                ))
            })
    }

    /// The config one plugin gets: its own object plus the network's name and version, and
    /// the previous plugin's result.
    fn plugin_config(&self, index: usize, prev: Option<&Value>) -> Value {
        let mut conf = Value::Object(self.list.plugins[index].raw.clone());
        conf["name"] = json!(self.list.name);
        conf["cniVersion"] = json!(self.list.cni_version);
        if let Some(p) = prev {
            conf["prevResult"] = p.clone();
        }
        conf
    }

    fn exec(
        &self,
        command: &str,
        index: usize,
        id: &str,
        netns: Option<&Path>,
        ifname: &str,
        prev: Option<&Value>,
    ) -> Result<Option<Value>, PodError> {
        let plugin = &self.list.plugins[index].plugin_type;
        let exe = self.plugin_path(plugin)?;
        let path = std::env::join_paths(&self.plugin_dirs).unwrap_or_default();
        let mut cmd = Command::new(&exe);
        cmd.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(n) = netns {
            cmd.env("CNI_NETNS", n);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| conf_error(format!("run {}: {e}", exe.display())))?;
        let input = self.plugin_config(index, prev).to_string();
        if let Some(mut stdin) = child.stdin.take() {
            // A plugin may refuse before reading: its answer on stdout says why.
            let _ = stdin.write_all(input.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| conf_error(format!("run {}: {e}", exe.display())))?;
        let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
        if !out.status.success() {
            let (code, msg, details) = match &parsed {
                Some(v) => (
                    v["code"].as_u64().unwrap_or(0),
                    v["msg"].as_str().unwrap_or("").to_string(),
                    v["details"].as_str().unwrap_or("").to_string(),
                ),
                None => (
                    0,
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                    String::new(),
                ),
            };
            return Err(PodError::Plugin {
                plugin: plugin.clone(),
                command: command.into(),
                code,
                message: if details.is_empty() {
                    msg
                } else {
                    format!("{msg}: {details}")
                },
            });
        }
        Ok(parsed)
    }

    /// ADD: every plugin in order; returns the last plugin's result. On failure, the plugins
    /// that ran are undone (DEL) so nothing is left.
    pub fn add(&self, id: &str, netns: &Path, ifname: &str) -> Result<Value, PodError> {
        let mut prev: Option<Value> = None;
        for i in 0..self.list.plugins.len() {
            match self.exec("ADD", i, id, Some(netns), ifname, prev.as_ref()) {
                Ok(r) => prev = r.or(prev),
                Err(e) => {
                    let _ = self.del(id, Some(netns), ifname, prev.as_ref());
                    return Err(e);
                }
            }
        }
        prev.ok_or_else(|| conf_error("the network's plugins returned no result"))
    }

    /// DEL: every plugin in reverse order, with the cached ADD result; every plugin runs even
    /// if one fails, and the first failure is returned.
    pub fn del(
        &self,
        id: &str,
        netns: Option<&Path>,
        ifname: &str,
        result: Option<&Value>,
    ) -> Result<(), PodError> {
        let mut first = None;
        for i in (0..self.list.plugins.len()).rev() {
            if let Err(e) = self.exec("DEL", i, id, netns, ifname, result) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// CHECK: every plugin in order, with the cached ADD result.
    pub fn check(
        &self,
        id: &str,
        netns: &Path,
        ifname: &str,
        result: &Value,
    ) -> Result<(), PodError> {
        for i in 0..self.list.plugins.len() {
            self.exec("CHECK", i, id, Some(netns), ifname, Some(result))?;
        }
        Ok(())
    }
}

/// The first IPv4 address of a CNI result, without its prefix length.
pub fn result_ip(result: &Value) -> Option<String> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .find(|a| !a.contains(':'))
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
}
