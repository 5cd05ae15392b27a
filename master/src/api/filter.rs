//! List and watch filtering: label selectors (`crate::selector`) and field selectors
//! (`metadata.name=x,spec.nodeName!=y`), and `continue` tokens.

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::Value;

use super::status::ApiError;
use crate::selector::Selector;

/// A parsed field selector: every `path (=|==|!=) value` must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses `a.b=c,d!=e`.
    pub fn parse(text: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, value) = if let Some((p, v)) = part.split_once("!=") {
                (p, false, v)
            } else if let Some((p, v)) = part.split_once("==") {
                (p, true, v)
            } else if let Some((p, v)) = part.split_once('=') {
                (p, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid field selector {part:?}: expected field=value, field==value or field!=value"
                )));
            };
            let path = path.trim();
            if path.is_empty()
                || !path
                    .split('.')
                    .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric()))
            {
                return Err(ApiError::BadRequest(format!(
                    "invalid field selector {part:?}: bad field path {path:?}"
                )));
            }
            terms.push((path.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector { terms })
    }

    /// True when `obj` satisfies every term (a missing field is the empty string).
    pub fn matches(&self, obj: &Value) -> bool {
        self.terms.iter().all(|(path, eq, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = &cur[seg];
            }
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (have == *want) == *eq
        })
    }
}

/// Both selectors of a request.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    labels: Selector,
    fields: FieldSelector,
}

impl Filter {
    /// From `labelSelector` and `fieldSelector`.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Filter, ApiError> {
        Ok(Filter {
            labels: Selector::parse(labels.unwrap_or(""))
                .map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?,
            fields: FieldSelector::parse(fields.unwrap_or(""))?,
        })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.labels == Selector::default() && self.fields.terms.is_empty()
    }

    /// Whether `obj` is selected.
    pub fn matches(&self, obj: &Value) -> bool {
        let labels: BTreeMap<String, String> = obj["metadata"]["labels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        self.labels.matches(&labels) && self.fields.matches(obj)
    }
}

/// A `continue` token: the list's revision and the last key returned.
pub fn encode_continue(revision: i64, last_key: &str) -> String {
    let doc = serde_json::json!({"v": "podlet/1", "rv": revision, "start": last_key});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(doc.to_string())
}

/// Parses a `continue` token.
pub fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad =
        || ApiError::BadRequest("continue key is not valid: not a token this server issued".into());
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let doc: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if doc["v"] != "podlet/1" {
        return Err(bad());
    }
    Ok((
        doc["rv"].as_i64().ok_or_else(bad)?,
        doc["start"].as_str().ok_or_else(bad)?.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=a,spec.nodeName==n1")
            .unwrap()
            .matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName!=n1")
            .unwrap()
            .matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=")
            .unwrap()
            .matches(&json!({"spec": {}})));
        assert!(FieldSelector::parse("nonsense").is_err());
        assert!(FieldSelector::parse("a..b=c").is_err());
        let f = Filter::parse(Some("app in (web)"), None).unwrap();
        assert!(f.matches(&json!({"metadata": {"labels": {"app": "web"}}})));
        assert!(Filter::parse(Some("app in (web"), None).is_err());
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_junk() {
        let t = encode_continue(42, "/registry/core/pods/default/x");
        assert_eq!(
            decode_continue(&t).unwrap(),
            (42, "/registry/core/pods/default/x".into())
        );
        assert!(decode_continue("garbage!").is_err());
    }
}
