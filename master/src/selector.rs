//! Kubernetes label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`.

use std::collections::BTreeMap;

/// Why a selector string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text could not be parsed; names the requirement at fault.
    #[error("unable to parse requirement {requirement:?}: {reason}")]
    Parse {
        /// The offending requirement text.
        requirement: String,
        /// What was wrong.
        reason: String,
    },
    /// A label key breaks Kubernetes' naming rules.
    #[error("invalid label key {key:?}: {reason}")]
    InvalidKey {
        /// The key.
        key: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// A label value breaks Kubernetes' naming rules.
    #[error("invalid label value {value:?}: must be 63 characters or less, alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric")]
    InvalidValue {
        /// The value.
        value: String,
    },
}

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value` (also true when the key is absent).
    NotEquals(String, String),
    /// `key in (v1,v2)`.
    In(String, Vec<String>),
    /// `key notin (v1,v2)` (also true when the key is absent).
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    DoesNotExist(String),
}

/// A parsed selector: all requirements must hold. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    /// The requirements, in the order written.
    pub requirements: Vec<Requirement>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn check_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(is_name_char)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Validates a label key: an optional DNS-subdomain prefix and `/`, then a name of ≤ 63 chars.
pub fn validate_key(key: &str) -> Result<(), SelectorError> {
    let err = |reason| SelectorError::InvalidKey {
        key: key.to_string(),
        reason,
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        let ok = !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if !ok {
            return Err(err("prefix must be a DNS subdomain"));
        }
    }
    if !check_name_part(name) {
        return Err(err("name part must be 63 characters or less, alphanumerics, '-', '_' or '.', beginning and ending with an alphanumeric"));
    }
    Ok(())
}

/// Validates a label value (may be empty).
pub fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || check_name_part(value) {
        Ok(())
    } else {
        Err(SelectorError::InvalidValue {
            value: value.to_string(),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, SelectorError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(SelectorError::Parse {
                requirement: text.to_string(),
                reason: "unbalanced parentheses".into(),
            });
        }
    }
    if depth != 0 {
        return Err(SelectorError::Parse {
            requirement: text.to_string(),
            reason: "unbalanced parentheses".into(),
        });
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_set(req: &str, rest: &str) -> Result<Vec<String>, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Parse {
            requirement: req.to_string(),
            reason: "expected a parenthesised value list".into(),
        })?;
    let mut values = Vec::new();
    for v in inner.split(',') {
        let v = v.trim();
        validate_value(v)?;
        values.push(v.to_string());
    }
    Ok(values)
}

fn parse_requirement(req: &str) -> Result<Requirement, SelectorError> {
    let t = req.trim();
    if t.is_empty() {
        return Err(SelectorError::Parse {
            requirement: req.to_string(),
            reason: "empty requirement".into(),
        });
    }
    if let Some(key) = t.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(Requirement::DoesNotExist(key.to_string()));
    }
    for (op, ctor) in [("!=", 0), ("==", 1), ("=", 1)] {
        if let Some((k, v)) = t.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            validate_key(k)?;
            validate_value(v)?;
            return Ok(if ctor == 0 {
                Requirement::NotEquals(k.into(), v.into())
            } else {
                Requirement::Equals(k.into(), v.into())
            });
        }
    }
    let mut words = t.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().map(str::trim_start).unwrap_or("");
    if rest.is_empty() {
        validate_key(key)?;
        return Ok(Requirement::Exists(key.to_string()));
    }
    validate_key(key)?;
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement::NotIn(key.into(), parse_set(req, set)?));
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement::In(key.into(), parse_set(req, set)?));
    }
    Err(SelectorError::Parse {
        requirement: req.to_string(),
        reason: "expected one of =, ==, !=, in, notin".into(),
    })
}

impl Selector {
    /// Parses a selector as `kubectl -l` and `?labelSelector=` write it.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        if text.trim().is_empty() {
            return Ok(Selector::default());
        }
        let requirements = split_requirements(text)?
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<_, _>>()?;
        Ok(Selector { requirements })
    }

    /// True if `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }
}

/// A label selector object (`matchLabels` + `matchExpressions`) as a [`Selector`].
pub fn selector_of(sel: &serde_json::Value) -> Option<Selector> {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or("");
        let vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect();
        parts.push(match e["operator"].as_str().unwrap_or("") {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.to_string(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    if parts.is_empty() {
        return None; // an empty selector selects nothing for controllers
    }
    Selector::parse(&parts.join(",")).ok()
}

/// The labels of an object as a map.
pub fn labels_of(obj: &serde_json::Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn equality_and_set_based_requirements_match_like_kubernetes() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("example.com/team", "a")]);
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "env!=prod",
            "tier in (front, back)",
            "env notin (prod)",
            "app",
            "!env",
            "example.com/team=a,app in (web)",
        ];
        for s in yes {
            assert!(
                Selector::parse(s).unwrap().matches(&l),
                "{s:?} should match"
            );
        }
        let no = [
            "app=db",
            "app!=web",
            "tier in (back)",
            "tier notin (front)",
            "env",
            "!app",
            "app=web,tier=back",
        ];
        for s in no {
            assert!(
                !Selector::parse(s).unwrap().matches(&l),
                "{s:?} should not match"
            );
        }
    }

    #[test]
    fn bad_selectors_name_the_problem() {
        for bad in [
            "app in web",
            "app in (a",
            "=x",
            "a b c",
            "app=-bad-",
            "Bad_Prefix.COM/x=y",
            ",",
            "app in ((a))",
        ] {
            let err = Selector::parse(bad).unwrap_err();
            assert!(!err.to_string().is_empty(), "{bad:?}");
        }
        let err = Selector::parse("app in web").unwrap_err();
        assert!(err.to_string().contains("app in web"), "{err}");
        let long = format!("k={}", "a".repeat(64));
        assert!(matches!(
            Selector::parse(&long),
            Err(SelectorError::InvalidValue { .. })
        ));
    }
}
