//! CNI errors: the specification's well-known codes and its JSON error shape.

use serde::Serialize;

/// The CNI specification's well-known error codes (section "Error").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 1: incompatible CNI version.
    IncompatibleVersion = 1,
    /// 2: unsupported field in network configuration.
    UnsupportedField = 2,
    /// 3: container unknown or does not exist.
    UnknownContainer = 3,
    /// 4: invalid necessary environment variables.
    InvalidEnvironment = 4,
    /// 5: I/O failure.
    IoFailure = 5,
    /// 6: failed to decode content.
    DecodingFailure = 6,
    /// 7: invalid network config.
    InvalidNetworkConfig = 7,
    /// 11: try again later.
    TryAgainLater = 11,
}

/// A CNI error as the specification prints it on stdout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    /// The version the result is written for.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// One of [`ErrorCode`], as a number.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer details naming the field or object at fault.
    pub details: String,
}

impl CniError {
    /// Builds an error for `code` with a message and details.
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            cni_version: crate::config::LATEST_VERSION.to_string(),
            code: code as u32,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The JSON document to print on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code))
    }
}
