//! Network configuration: a single plugin config or a `.conflist`, validated per CNI 1.1.

use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};

/// The newest specification version podlet implements.
pub const LATEST_VERSION: &str = "1.1.0";

/// Every specification version podlet accepts in a configuration.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// One plugin's configuration, with the fields the runtime injects.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// `cniVersion` of the enclosing network.
    pub cni_version: String,
    /// The network's `name`.
    pub name: String,
    /// The plugin `type` (the executable's name).
    pub plugin_type: String,
    /// The whole object, for plugin-specific fields.
    pub raw: Map<String, Value>,
}

/// A network configuration list (`.conflist`), or a single config promoted to one.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// `cniVersion`.
    pub cni_version: String,
    /// `cniVersions`, when given (CNI 1.1).
    pub cni_versions: Vec<String>,
    /// The network's `name`.
    pub name: String,
    /// `disableCheck`.
    pub disable_check: bool,
    /// `disableGC` (CNI 1.1).
    pub disable_gc: bool,
    /// The plugins, in order.
    pub plugins: Vec<PluginConfig>,
}

fn invalid(details: impl Into<String>) -> CniError {
    CniError::new(
        ErrorCode::InvalidNetworkConfig,
        "invalid network config",
        details,
    )
}

fn string_field(obj: &Map<String, Value>, field: &str, ctx: &str) -> Result<String, CniError> {
    match obj.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(invalid(format!("{ctx}field \"{field}\" must not be empty"))),
        Some(_) => Err(invalid(format!("{ctx}field \"{field}\" must be a string"))),
        None => Err(invalid(format!("{ctx}missing required field \"{field}\""))),
    }
}

fn bool_field(obj: &Map<String, Value>, field: &str) -> Result<bool, CniError> {
    match obj.get(field) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        // The spec's own examples write these as strings; accept "true"/"false" too.
        Some(Value::String(s)) if s == "true" || s == "false" => Ok(s == "true"),
        Some(_) => Err(invalid(format!("field \"{field}\" must be a boolean"))),
    }
}

/// Checks that `version` is one podlet speaks, with the spec's code 1 otherwise.
pub fn check_version(version: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&version) {
        Ok(())
    } else {
        Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "incompatible CNI version",
            format!(
                "cniVersion {version:?} is not supported; supported: {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ))
    }
}

/// Network names: alphanumerics plus `_`, `.` and `-`, starting with an alphanumeric.
fn check_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first_ok
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        Ok(())
    } else {
        Err(invalid(format!(
            "field \"name\" {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        )))
    }
}

impl NetworkConfigList {
    /// Parses a `.conflist` document, or a single plugin config (promoted to a one-plugin list).
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                ErrorCode::DecodingFailure,
                "failed to decode network config",
                e.to_string(),
            )
        })?;
        let Value::Object(obj) = value else {
            return Err(CniError::new(
                ErrorCode::DecodingFailure,
                "failed to decode network config",
                "expected a JSON object",
            ));
        };
        let cni_version = string_field(&obj, "cniVersion", "")?;
        check_version(&cni_version)?;
        let name = string_field(&obj, "name", "")?;
        check_network_name(&name)?;
        let cni_versions = match obj.get("cniVersions") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| invalid("field \"cniVersions\" must hold strings"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("field \"cniVersions\" must be an array of strings")),
        };
        let disable_check = bool_field(&obj, "disableCheck")?;
        let disable_gc = bool_field(&obj, "disableGC")?;
        let plugins = match obj.get("plugins") {
            None => vec![PluginConfig {
                cni_version: cni_version.clone(),
                name: name.clone(),
                plugin_type: string_field(&obj, "type", "")?,
                raw: obj.clone(),
            }],
            Some(Value::Array(list)) if list.is_empty() => {
                return Err(invalid("field \"plugins\" must not be empty"))
            }
            Some(Value::Array(list)) => list
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let Value::Object(p) = p else {
                        return Err(invalid(format!("plugins[{i}] must be an object")));
                    };
                    let mut raw = p.clone();
                    raw.insert("cniVersion".into(), Value::String(cni_version.clone()));
                    raw.insert("name".into(), Value::String(name.clone()));
                    Ok(PluginConfig {
                        cni_version: cni_version.clone(),
                        name: name.clone(),
                        plugin_type: string_field(p, "type", &format!("plugins[{i}]: "))?,
                        raw,
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid("field \"plugins\" must be an array")),
        };
        Ok(NetworkConfigList {
            cni_version,
            cni_versions,
            name,
            disable_check,
            disable_gc,
            plugins,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conflist_and_injects_name_and_version() {
        let doc = br#"{"cniVersion":"1.1.0","name":"podnet","disableGC":true,
            "plugins":[{"type":"podlet-cni","bridge":"pod0"},{"type":"portmap"}]}"#;
        let list = NetworkConfigList::parse(doc).unwrap();
        assert_eq!(list.plugins.len(), 2);
        assert!(list.disable_gc);
        assert!(!list.disable_check);
        assert_eq!(list.plugins[0].raw["name"], "podnet");
        assert_eq!(list.plugins[1].raw["cniVersion"], "1.1.0");
        assert_eq!(list.plugins[0].raw["bridge"], "pod0");
    }

    #[test]
    fn single_config_becomes_a_list() {
        let list =
            NetworkConfigList::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#)
                .unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0].plugin_type, "bridge");
    }

    #[test]
    fn errors_carry_spec_codes_and_name_the_field() {
        let e = NetworkConfigList::parse(b"{not json").unwrap_err();
        assert_eq!(e.code, 6);
        let e = NetworkConfigList::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"x"}"#)
            .unwrap_err();
        assert_eq!(e.code, 1);
        assert!(e.details.contains("9.9.9"));
        let e = NetworkConfigList::parse(br#"{"cniVersion":"1.1.0","type":"x"}"#).unwrap_err();
        assert_eq!(e.code, 7);
        assert!(e.details.contains("\"name\""), "{}", e.details);
        let e = NetworkConfigList::parse(
            br#"{"cniVersion":"1.1.0","name":"n","plugins":[{"bridge":"b"}]}"#,
        )
        .unwrap_err();
        assert!(
            e.details.contains("plugins[0]") && e.details.contains("\"type\""),
            "{}",
            e.details
        );
        let e = NetworkConfigList::parse(br#"{"cniVersion":"1.1.0","name":"../etc","type":"x"}"#)
            .unwrap_err();
        assert_eq!(e.code, 7);
        let json: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(json["code"], 7);
        assert!(json["msg"].is_string() && json["cniVersion"].is_string());
    }
}
