//! API errors as Kubernetes `Status` objects with their HTTP codes.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::resources::Resource;
use crate::store::StoreError;

/// One field-level cause of a 422.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, …
    pub reason: &'static str,
    /// The JSON path (`spec.replicas`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Cause {
    /// A required field is missing.
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// A field has a bad value.
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {why}"),
        }
    }

    /// A value that must be unique in its list appears twice.
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    /// A value outside a fixed set.
    pub fn unsupported(field: impl Into<String>, value: &str, supported: &[&str]) -> Cause {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: \"{value}\": supported values: {}",
                list.join(", ")
            ),
        }
    }
}

/// An error the API returns.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiError {
    /// 404.
    NotFound {
        /// `deployments.apps`.
        qualified: String,
        /// Group (for details).
        group: String,
        /// Plural (for details).
        plural: String,
        /// Object name.
        name: String,
    },
    /// 409 AlreadyExists.
    AlreadyExists {
        /// `deployments.apps`.
        qualified: String,
        /// Group.
        group: String,
        /// Plural.
        plural: String,
        /// Object name.
        name: String,
    },
    /// 409 Conflict (stale resourceVersion).
    Conflict {
        /// `deployments.apps`.
        qualified: String,
        /// Group.
        group: String,
        /// Plural.
        plural: String,
        /// Object name.
        name: String,
    },
    /// 422 Invalid.
    Invalid {
        /// Kind (`Deployment`).
        kind: String,
        /// Group.
        group: String,
        /// Object name.
        name: String,
        /// What is wrong.
        causes: Vec<Cause>,
    },
    /// 400.
    BadRequest(String),
    /// 410 Expired (too old resourceVersion / continue token).
    Expired(String),
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden(String),
    /// 405.
    MethodNotAllowed(String),
    /// 413.
    TooLarge(String),
    /// 415.
    UnsupportedMediaType(String),
    /// 404 for a path that names no resource.
    NoRoute(String),
    /// 500.
    Internal(String),
}

impl ApiError {
    /// 404 for an object of `r`.
    pub fn not_found(r: &Resource, name: &str) -> ApiError {
        ApiError::NotFound {
            qualified: r.qualified(),
            group: r.group.into(),
            plural: r.plural.into(),
            name: name.into(),
        }
    }

    /// 409 AlreadyExists for an object of `r`.
    pub fn already_exists(r: &Resource, name: &str) -> ApiError {
        ApiError::AlreadyExists {
            qualified: r.qualified(),
            group: r.group.into(),
            plural: r.plural.into(),
            name: name.into(),
        }
    }

    /// 409 Conflict for an object of `r`.
    pub fn conflict(r: &Resource, name: &str) -> ApiError {
        ApiError::Conflict {
            qualified: r.qualified(),
            group: r.group.into(),
            plural: r.plural.into(),
            name: name.into(),
        }
    }

    /// 422 for an object of `r`.
    pub fn invalid(r: &Resource, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::Invalid {
            kind: r.kind.into(),
            group: r.group.into(),
            name: name.into(),
            causes,
        }
    }

    /// Maps a store error for an object of `r` named `name`.
    pub fn from_store(r: &Resource, name: &str, e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound(_) => ApiError::not_found(r, name),
            StoreError::AlreadyExists(_) => ApiError::already_exists(r, name),
            StoreError::Conflict { .. } => ApiError::conflict(r, name),
            StoreError::Compacted { requested, oldest } => {
                ApiError::Expired(format!("too old resource version: {requested} ({oldest})"))
            }
            StoreError::FutureRevision { requested, current } => ApiError::Expired(format!(
                "Too large resource version: {requested}, current: {current}"
            )),
            StoreError::Backend(m) => ApiError::Internal(m),
        }
    }

    /// The HTTP code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Expired(_) => 410,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::TooLarge(_) => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Internal(_) => 500,
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let (reason, message, details) = match self {
            ApiError::NotFound {
                qualified,
                group,
                plural,
                name,
            } => (
                "NotFound",
                format!("{qualified} \"{name}\" not found"),
                json!({"name": name, "group": group, "kind": plural}),
            ),
            ApiError::AlreadyExists {
                qualified,
                group,
                plural,
                name,
            } => (
                "AlreadyExists",
                format!("{qualified} \"{name}\" already exists"),
                json!({"name": name, "group": group, "kind": plural}),
            ),
            ApiError::Conflict {
                qualified,
                group,
                plural,
                name,
            } => (
                "Conflict",
                format!("Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"),
                json!({"name": name, "group": group, "kind": plural}),
            ),
            ApiError::Invalid {
                kind,
                group,
                name,
                causes,
            } => {
                let gk = if group.is_empty() {
                    kind.clone()
                } else {
                    format!("{kind}.{group}")
                };
                let list: Vec<String> = causes
                    .iter()
                    .map(|c| format!("{}: {}", c.field, c.message))
                    .collect();
                let msg = if list.len() == 1 {
                    format!("{gk} \"{name}\" is invalid: {}", list[0])
                } else {
                    format!("{gk} \"{name}\" is invalid: [{}]", list.join(", "))
                };
                (
                    "Invalid",
                    msg,
                    json!({"name": name, "group": group, "kind": kind,
                           "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>()}),
                )
            }
            ApiError::BadRequest(m) => ("BadRequest", m.clone(), Value::Null),
            ApiError::Expired(m) => ("Expired", m.clone(), Value::Null),
            ApiError::Unauthorized => ("Unauthorized", "Unauthorized".into(), Value::Null),
            ApiError::Forbidden(m) => ("Forbidden", m.clone(), Value::Null),
            ApiError::MethodNotAllowed(m) => ("MethodNotAllowed", m.clone(), Value::Null),
            ApiError::TooLarge(m) => ("RequestEntityTooLarge", m.clone(), Value::Null),
            ApiError::UnsupportedMediaType(m) => ("UnsupportedMediaType", m.clone(), Value::Null),
            ApiError::NoRoute(m) => ("NotFound", m.clone(), Value::Null),
            ApiError::Internal(m) => ("InternalError", m.clone(), Value::Null),
        };
        let mut s = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": self.code(),
        });
        if !details.is_null() {
            s["details"] = details;
        }
        s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.status()["message"].as_str().unwrap_or(""))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            code,
            [("content-type", "application/json")],
            self.status().to_string(),
        )
            .into_response()
    }
}

/// A success `Status` (what DELETE of a collection returns).
pub fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})
}
