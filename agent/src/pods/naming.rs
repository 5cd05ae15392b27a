//! Names the agent gives a pod's sandbox and containers in the engine, so that a restarted
//! agent finds (adopts) them again: `k8s-<uid>` for the sandbox, `k8s-<uid>.c.<name>.<n>` for
//! the n-th run of container `<name>` and `k8s-<uid>.i.<name>.<n>` for init containers.
//! Kubernetes container names are DNS labels (no dots), so the parts never run together.

/// Whether a name belongs to an init container or a regular one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `spec.initContainers`.
    Init,
    /// `spec.containers`.
    Regular,
}

/// The sandbox (engine pod) name of the pod with `uid`.
pub fn sandbox(uid: &str) -> String {
    format!("k8s-{uid}")
}

/// The engine container name of run `n` of container `name`.
pub fn container(uid: &str, kind: Kind, name: &str, n: u32) -> String {
    let k = match kind {
        Kind::Init => "i",
        Kind::Regular => "c",
    };
    format!("k8s-{uid}.{k}.{name}.{n}")
}

/// Parses an engine container name of the pod with `uid` into (kind, name, run).
pub fn parse(uid: &str, id: &str) -> Option<(Kind, String, u32)> {
    let rest = id.strip_prefix(&format!("k8s-{uid}."))?;
    let mut parts = rest.splitn(3, '.');
    let kind = match parts.next()? {
        "i" => Kind::Init,
        "c" => Kind::Regular,
        _ => return None,
    };
    let tail = parts.next()?;
    let n = parts.next()?.parse().ok()?;
    Some((kind, tail.to_string(), n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let uid = "0f3c-11";
        let id = container(uid, Kind::Regular, "web", 3);
        assert_eq!(id, "k8s-0f3c-11.c.web.3");
        assert_eq!(parse(uid, &id), Some((Kind::Regular, "web".into(), 3)));
        let id = container(uid, Kind::Init, "setup", 0);
        assert_eq!(parse(uid, &id), Some((Kind::Init, "setup".into(), 0)));
        assert_eq!(parse("other", &id), None);
        assert_eq!(parse(uid, "k8s-0f3c-11.x.web.1"), None);
        assert_eq!(sandbox(uid), "k8s-0f3c-11");
    }
}
