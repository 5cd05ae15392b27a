//! The scheduler: every pending pod (no `nodeName`, `schedulerName` default) is placed on the
//! best node that passes every filter — Ready and schedulable, enough allocatable CPU, memory
//! and pod slots for its requests, `nodeSelector`, required node affinity, taints tolerated,
//! host ports free — scored by least allocation and by spreading one owner's pods. Binding goes
//! through `pods/binding`; a pod no node fits gets `PodScheduled=False` naming why, per node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use serde_json::{json, Value};

use super::{controller_of, level_loop, res, terminating, triggers, Ctx, Informer};

/// The scheduler's name in `spec.schedulerName`.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Parses a Kubernetes quantity into a number (CPU in cores, memory in bytes).
pub fn quantity(q: &str) -> Option<f64> {
    let t = q.trim();
    let suffixes: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    for (s, mult) in suffixes {
        if let Some(num) = t.strip_suffix(s) {
            return num.parse::<f64>().ok().map(|n| n * mult);
        }
    }
    t.parse().ok()
}

fn qty(v: &Value) -> Option<f64> {
    match v {
        Value::String(s) => quantity(s),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }
}

/// A pod's requests: (CPU millicores, memory bytes).
pub fn requests(pod: &Value) -> (f64, f64) {
    let sum = |list: &Value| -> (f64, f64) {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                let r = &c["resources"]["requests"];
                (
                    qty(&r["cpu"]).unwrap_or(0.0) * 1000.0,
                    qty(&r["memory"]).unwrap_or(0.0),
                )
            })
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let main = sum(&pod["spec"]["containers"]);
    // Init containers run one at a time: the pod needs the largest of them.
    let init = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let r = &c["resources"]["requests"];
            (
                qty(&r["cpu"]).unwrap_or(0.0) * 1000.0,
                qty(&r["memory"]).unwrap_or(0.0),
            )
        })
        .fold((0.0f64, 0.0f64), |a, b| (a.0.max(b.0), a.1.max(b.1)));
    (main.0.max(init.0), main.1.max(init.1))
}

fn host_ports(pod: &Value) -> Vec<(i64, String, String)> {
    pod["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| {
            let hp = p["hostPort"].as_i64().filter(|h| *h > 0)?;
            Some((
                hp,
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
                p["hostIP"].as_str().unwrap_or("0.0.0.0").to_string(),
            ))
        })
        .collect()
}

/// A node as the scheduler sees it.
#[derive(Debug, Clone)]
struct NodeInfo {
    name: String,
    labels: BTreeMap<String, String>,
    ready: bool,
    unschedulable: bool,
    taints: Vec<Value>,
    cpu: f64,
    mem: f64,
    max_pods: f64,
    used_cpu: f64,
    used_mem: f64,
    pods: f64,
    ports: HashSet<(i64, String, String)>,
    owners: HashMap<String, usize>,
}

fn node_info(n: &Value) -> NodeInfo {
    let alloc = if n["status"]["allocatable"].is_object() {
        &n["status"]["allocatable"]
    } else {
        &n["status"]["capacity"]
    };
    NodeInfo {
        name: n["metadata"]["name"].as_str().unwrap_or("").to_string(),
        labels: crate::selector::labels_of(n),
        ready: n["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        }),
        unschedulable: n["spec"]["unschedulable"] == true,
        taints: n["spec"]["taints"].as_array().cloned().unwrap_or_default(),
        cpu: qty(&alloc["cpu"])
            .map(|c| c * 1000.0)
            .unwrap_or(f64::INFINITY),
        mem: qty(&alloc["memory"]).unwrap_or(f64::INFINITY),
        max_pods: qty(&alloc["pods"]).unwrap_or(110.0),
        used_cpu: 0.0,
        used_mem: 0.0,
        pods: 0.0,
        ports: HashSet::new(),
        owners: HashMap::new(),
    }
}

/// Whether `tolerations` tolerate `taint`.
pub fn tolerates(tolerations: &Value, taint: &Value) -> bool {
    tolerations.as_array().into_iter().flatten().any(|t| {
        let key_ok = match t["key"].as_str().unwrap_or("") {
            "" => t["operator"] == "Exists",
            k => k == taint["key"].as_str().unwrap_or(""),
        };
        let value_ok = t["operator"] == "Exists"
            || t["value"].as_str().unwrap_or("") == taint["value"].as_str().unwrap_or("");
        let effect_ok = t["effect"]
            .as_str()
            .is_none_or(|e| e.is_empty() || Some(e) == taint["effect"].as_str());
        key_ok && value_ok && effect_ok
    })
}

fn expr_matches(e: &Value, value: Option<&str>) -> bool {
    let vals: Vec<&str> = e["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match e["operator"].as_str().unwrap_or("") {
        "In" => value.is_some_and(|v| vals.contains(&v)),
        "NotIn" => !value.is_some_and(|v| vals.contains(&v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => value
            .and_then(|v| v.parse::<i64>().ok())
            .zip(vals.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a > b),
        "Lt" => value
            .and_then(|v| v.parse::<i64>().ok())
            .zip(vals.first().and_then(|x| x.parse::<i64>().ok()))
            .is_some_and(|(a, b)| a < b),
        _ => false,
    }
}

fn affinity_ok(pod: &Value, n: &NodeInfo) -> bool {
    let sel_ok = pod["spec"]["nodeSelector"].as_object().is_none_or(|m| {
        m.iter()
            .all(|(k, v)| n.labels.get(k).map(String::as_str) == v.as_str())
    });
    let terms = &pod["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    let aff_ok = match terms.as_array() {
        None => true,
        Some(ts) => ts.iter().any(|term| {
            let exprs = term["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| {
                    expr_matches(
                        e,
                        n.labels
                            .get(e["key"].as_str().unwrap_or(""))
                            .map(String::as_str),
                    )
                });
            let fields = term["matchFields"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|e| e["key"] == "metadata.name" && expr_matches(e, Some(&n.name)));
            exprs && fields
        }),
    };
    sel_ok && aff_ok
}

/// Why a node does not fit, or None if it does.
fn filter(
    pod: &Value,
    req: (f64, f64),
    ports: &[(i64, String, String)],
    n: &NodeInfo,
) -> Option<&'static str> {
    if !n.ready {
        return Some("node(s) were not ready");
    }
    if n.unschedulable {
        return Some("node(s) were unschedulable");
    }
    if !affinity_ok(pod, n) {
        return Some("node(s) didn't match Pod's node affinity/selector");
    }
    let untolerated = n.taints.iter().any(|t| {
        matches!(t["effect"].as_str(), Some("NoSchedule" | "NoExecute"))
            && !tolerates(&pod["spec"]["tolerations"], t)
    });
    if untolerated {
        return Some("node(s) had untolerated taint");
    }
    if n.pods + 1.0 > n.max_pods {
        return Some("Too many pods");
    }
    if n.used_cpu + req.0 > n.cpu {
        return Some("Insufficient cpu");
    }
    if n.used_mem + req.1 > n.mem {
        return Some("Insufficient memory");
    }
    if ports.iter().any(|p| {
        n.ports.iter().any(|q| {
            q.0 == p.0 && q.1 == p.1 && (q.2 == p.2 || q.2 == "0.0.0.0" || p.2 == "0.0.0.0")
        })
    }) {
        return Some("node(s) didn't have free ports for the requested pod ports");
    }
    None
}

fn score(req: (f64, f64), owner: Option<&str>, n: &NodeInfo) -> f64 {
    let frac = |used: f64, cap: f64| {
        if cap.is_finite() && cap > 0.0 {
            ((cap - used) / cap).max(0.0)
        } else {
            1.0
        }
    };
    let least = (frac(n.used_cpu + req.0, n.cpu) + frac(n.used_mem + req.1, n.mem)) / 2.0 * 100.0;
    let same = owner.and_then(|o| n.owners.get(o)).copied().unwrap_or(0) as f64;
    let spread = 100.0 / (1.0 + same);
    least + 2.0 * spread - n.pods * 0.01
}

/// One scheduling decision (for tests and the benchmark).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Bind to this node.
    Bind(String),
    /// No node fits; the message says why.
    Unschedulable(String),
}

/// The scheduler's view of the cluster, updated as it binds.
#[derive(Debug, Default)]
pub struct Cluster {
    nodes: Vec<NodeInfo>,
}

impl Cluster {
    /// From nodes and the pods already bound to them.
    pub fn build(nodes: &[Arc<Value>], pods: &[Arc<Value>]) -> Cluster {
        let mut infos: Vec<NodeInfo> = nodes.iter().map(|n| node_info(n)).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let index: HashMap<String, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        for p in pods {
            let Some(i) = p["spec"]["nodeName"].as_str().and_then(|n| index.get(n)) else {
                continue;
            };
            if super::pod_finished(p) {
                continue;
            }
            infos[*i].account(p);
        }
        Cluster { nodes: infos }
    }

    /// Decides where `pod` goes, and accounts for it when bound.
    pub fn decide(&mut self, pod: &Value) -> Decision {
        let req = requests(pod);
        let ports = host_ports(pod);
        let owner = controller_of(pod)
            .and_then(|o| o["uid"].as_str())
            .map(str::to_string);
        let mut best: Option<(f64, usize)> = None;
        let mut reasons: BTreeMap<&'static str, usize> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            match filter(pod, req, &ports, n) {
                Some(why) => *reasons.entry(why).or_default() += 1,
                None => {
                    let s = score(req, owner.as_deref(), n);
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, i));
                    }
                }
            }
        }
        match best {
            Some((_, i)) => {
                self.nodes[i].account(pod);
                Decision::Bind(self.nodes[i].name.clone())
            }
            None => {
                let detail: Vec<String> = reasons
                    .iter()
                    .map(|(why, n)| format!("{n} {why}"))
                    .collect();
                Decision::Unschedulable(format!(
                    "0/{} nodes are available: {}.",
                    self.nodes.len(),
                    detail.join(", ")
                ))
            }
        }
    }
}

impl Cluster {
    /// Counts `pod` as running on `node` (a binding made but not yet seen).
    pub fn assume(&mut self, pod: &Value, node: &str) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == node) {
            n.account(pod);
        }
    }
}

impl NodeInfo {
    fn account(&mut self, pod: &Value) {
        let (c, m) = requests(pod);
        self.used_cpu += c;
        self.used_mem += m;
        self.pods += 1.0;
        self.ports.extend(host_ports(pod));
        if let Some(o) = controller_of(pod).and_then(|o| o["uid"].as_str()) {
            *self.owners.entry(o.to_string()).or_default() += 1;
        }
    }
}

fn pending(p: &Value) -> bool {
    p["spec"]["nodeName"].as_str().is_none_or(str::is_empty)
        && p["spec"]["schedulerName"]
            .as_str()
            .is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME)
        && !terminating(p)
        && !super::pod_finished(p)
}

/// Bindings made and not yet seen in the informer (pod uid → node, when): the next pass
/// counts them as placed, so a lagging informer neither re-schedules a pod nor skews the
/// spreading of the pods after it (kube-scheduler's "assumed pods").
type Assumed = std::sync::Mutex<HashMap<String, (String, std::time::Instant)>>;

async fn pass(ctx: &Ctx, pods: &Informer, nodes: &Informer, assumed: &Arc<Assumed>) {
    let all = pods.list();
    {
        let mut a = assumed.lock().unwrap();
        let seen: HashMap<&str, &Value> = all
            .iter()
            .filter_map(|p| Some((p["metadata"]["uid"].as_str()?, &**p)))
            .collect();
        a.retain(|uid, (_, at)| {
            at.elapsed() < Duration::from_secs(30)
                && seen
                    .get(uid.as_str())
                    .is_some_and(|p| p["spec"]["nodeName"].as_str().is_none_or(str::is_empty))
        });
    }
    let in_flight: HashMap<String, String> = assumed
        .lock()
        .unwrap()
        .iter()
        .map(|(u, (n, _))| (u.clone(), n.clone()))
        .collect();
    let mut queue: Vec<Arc<Value>> = all
        .iter()
        .filter(|p| {
            pending(p) && !in_flight.contains_key(p["metadata"]["uid"].as_str().unwrap_or(""))
        })
        .cloned()
        .collect();
    if queue.is_empty() {
        return;
    }
    queue.sort_by(|a, b| {
        let k = |p: &Value| {
            (
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                super::key_of(p),
            )
        };
        k(a).cmp(&k(b))
    });
    let mut cluster = Cluster::build(&nodes.list(), &all);
    for p in &all {
        if let Some(node) = in_flight.get(p["metadata"]["uid"].as_str().unwrap_or("")) {
            cluster.assume(p, node);
        }
    }
    let pod_res = res("Pod");
    let mut binds = Vec::new();
    for pod in queue {
        let ns = pod["metadata"]["namespace"]
            .as_str()
            .unwrap_or("default")
            .to_string();
        let name = pod["metadata"]["name"].as_str().unwrap_or("").to_string();
        match cluster.decide(&pod) {
            Decision::Bind(node) => {
                let ctx = ctx.clone();
                let uid = pod["metadata"]["uid"].clone();
                let uid_s = uid.as_str().unwrap_or("").to_string();
                assumed
                    .lock()
                    .unwrap()
                    .insert(uid_s.clone(), (node.clone(), std::time::Instant::now()));
                let assumed = assumed.clone();
                binds.push(async move {
                    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "namespace": ns, "uid": uid},
                                         "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                    let path = super::path(pod_res, Some(&ns), Some(&name), Some("binding"));
                    if let Err(e) = ctx.request(Method::POST, &path, "application/json", Some(&binding)).await {
                        assumed.lock().unwrap().remove(&uid_s);
                        tracing::debug!(pod = %name, error = %e, "binding failed; retried next pass");
                    }
                });
            }
            Decision::Unschedulable(msg) => {
                let already = pod["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == "PodScheduled"
                            && c["status"] == "False"
                            && c["message"] == msg.as_str()
                    })
                });
                if !already {
                    let mut conds: Vec<Value> = pod["status"]["conditions"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default();
                    conds.retain(|c| c["type"] != "PodScheduled");
                    conds.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg,
                                      "lastProbeTime": null, "lastTransitionTime": crate::api::objects::now()}));
                    let patch = json!({"status": {"conditions": conds}});
                    let _ = ctx
                        .patch(pod_res, Some(&ns), &name, Some("status"), &patch)
                        .await;
                }
            }
        }
        // Bind in batches of 32 concurrent requests.
        if binds.len() >= 32 {
            futures::future::join_all(std::mem::take(&mut binds)).await;
        }
    }
    futures::future::join_all(binds).await;
}

/// Runs the scheduler.
pub async fn run(ctx: Ctx, pods: Informer, nodes: Informer) {
    let trigger = triggers(&[&pods, &nodes]);
    let assumed: Arc<Assumed> = Arc::default();
    level_loop(trigger, Duration::from_secs(2), || {
        pass(&ctx, &pods, &nodes, &assumed)
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, labels: Value, taints: Value) -> Arc<Value> {
        Arc::new(
            json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints},
            "status": {"allocatable": {"cpu": cpu, "memory": "4Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}}),
        )
    }

    fn pod(cpu: &str, extra: Value) -> Value {
        let mut p = json!({"metadata": {"name": "p", "ownerReferences": [{"uid": "rs1", "controller": true}]},
                           "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}});
        if let (Some(s), Some(e)) = (p["spec"].as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        p
    }

    #[test]
    fn spreads_one_owner_and_respects_capacity() {
        let nodes = vec![
            node("a", "2", json!({}), json!([])),
            node("b", "2", json!({}), json!([])),
            node("c", "2", json!({}), json!([])),
        ];
        let mut c = Cluster::build(&nodes, &[]);
        let mut placed: HashMap<String, usize> = HashMap::new();
        for _ in 0..6 {
            let Decision::Bind(n) = c.decide(&pod("500m", json!({}))) else {
                panic!()
            };
            *placed.entry(n).or_default() += 1;
        }
        assert_eq!(placed.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        for _ in 0..6 {
            assert!(matches!(
                c.decide(&pod("500m", json!({}))),
                Decision::Bind(_)
            ));
        }
        match c.decide(&pod("500m", json!({}))) {
            Decision::Unschedulable(m) => {
                assert_eq!(m, "0/3 nodes are available: 3 Insufficient cpu.")
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn selectors_affinity_taints_and_ports() {
        let nodes = vec![
            node(
                "gpu",
                "8",
                json!({"hw": "gpu"}),
                json!([{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}]),
            ),
            node("plain", "8", json!({"hw": "cpu"}), json!([])),
        ];
        let mut c = Cluster::build(&nodes, &[]);
        assert_eq!(c.decide(&pod("1", json!({"nodeSelector": {"hw": "gpu"}}))), Decision::Unschedulable("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint.".into()));
        let tolerant = json!({"nodeSelector": {"hw": "gpu"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}]});
        assert_eq!(c.decide(&pod("1", tolerant)), Decision::Bind("gpu".into()));
        let aff = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "hw", "operator": "NotIn", "values": ["gpu"]}]}]}}}});
        assert_eq!(c.decide(&pod("1", aff)), Decision::Bind("plain".into()));
        let port = json!({"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]});
        assert_eq!(
            c.decide(&pod("0", port.clone())),
            Decision::Bind("plain".into())
        );
        assert!(
            matches!(c.decide(&pod("0", port)), Decision::Unschedulable(m) if m.contains("free ports"))
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity("250m"), Some(0.25));
        assert_eq!(quantity("1Gi"), Some(1073741824.0));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("x"), None);
    }
}
