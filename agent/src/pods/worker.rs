//! Syncing one pod to the engine, kubelet's `SyncPod` in small: the sandbox (network, IPC and
//! UTS namespaces on the node's pod network), volumes, init containers in order, then the
//! containers, each restarted per `restartPolicy` with CrashLoopBackOff (10 s doubling to
//! 5 min, reset after 10 min of running), probes, and the status the API gets. Blocking: the
//! pod's worker task runs it on the blocking pool. Everything it knows can be rebuilt from the
//! engine, so a restarted agent adopts running pods without restarting them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use nix::sys::signal::Signal;
use podlet_runtime::engine::{Engine, EngineError};
use podlet_runtime::pod::{PodNetwork, PodSpec};
use podlet_runtime::state::Status;
use serde_json::{json, Value};

use super::naming::{self, Kind};
use super::probes::{self, ProbeState};
use super::pull_secrets;
use super::refs::Refs;
use super::{convert, volumes};

/// The first restart delay after a crash.
pub const BACKOFF_START: Duration = Duration::from_secs(10);
/// The longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// What a worker needs from the agent.
#[derive(Clone)]
pub struct SyncContext {
    /// The container engine.
    pub engine: Arc<Engine>,
    /// The agent's data directory (volumes).
    pub data_dir: std::path::PathBuf,
    /// This node's address (`status.hostIP`).
    pub node_ip: String,
    /// The pod network pods join.
    pub network: PodNetwork,
    /// Pods (by uid) the eviction manager has chosen; their workers stop them.
    pub evictions: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// The node's pod policies.
    pub policy: crate::PodPolicy,
    /// The images each pod (by uid) on this node names: image GC keeps them even while no
    /// container of theirs exists (between restarts, before the first start).
    pub pod_images: Arc<std::sync::Mutex<HashMap<String, Vec<String>>>>,
    /// The cluster's Services (environment variables, resolv.conf); `None` without the
    /// Service proxy (`--disable-service-proxy`).
    pub services: Option<crate::services::ServiceView>,
}

/// One container's bookkeeping across its runs.
#[derive(Debug, Clone, Default)]
struct Track {
    /// The engine name of the current run.
    current: Option<String>,
    /// Its run number (= restarts so far).
    run: u32,
    /// Not restarted before this time (CrashLoopBackOff).
    not_before: Option<Instant>,
    /// The delay the next crash will wait.
    backoff: Option<Duration>,
    /// Why it is waiting (reason, message).
    waiting: Option<(String, String)>,
    /// The previous run's end (`lastState`).
    last_state: Option<Value>,
    /// When the current run started (for probes and back-off reset).
    started: Option<Instant>,
    /// Init container finished successfully.
    completed: bool,
    liveness: ProbeState,
    readiness: ProbeState,
    startup: ProbeState,
}

/// A pod's in-memory state between syncs (rebuilt from the engine after a restart).
#[derive(Debug, Default)]
pub struct PodRuntime {
    tracks: HashMap<(Kind, String), Track>,
    adopted: bool,
    start_time: Option<String>,
    pod_ip: Option<String>,
    failed: Option<(String, String)>,
    sandbox_error: Option<String>,
}

fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_default()
}

/// Kubernetes' QoS class of a pod.
pub fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let all: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let limits = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.clone())
            .unwrap_or_default();
        let requests = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for k in ["cpu", "memory"] {
            let l = limits.get(k).map(|q| q.0.clone());
            let r = requests.get(k).map(|q| q.0.clone()).or(l.clone());
            if l.is_none() || l != r {
                guaranteed = false;
            }
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

fn grace_period(pod: &Pod) -> Duration {
    Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    )
}

/// The signal that stops a container: its image's `STOPSIGNAL`, else SIGTERM.
fn stop_signal(engine: &Engine, image: &str) -> Signal {
    engine
        .image_config(image)
        .ok()
        .and_then(|c| c.config().as_ref().and_then(|c| c.stop_signal().clone()))
        .and_then(|s| parse_signal(&s))
        .unwrap_or(Signal::SIGTERM)
}

/// `SIGQUIT`, `QUIT` or `3` as a signal.
fn parse_signal(s: &str) -> Option<Signal> {
    let s = s.trim().to_ascii_uppercase();
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).ok();
    }
    let name = if s.starts_with("SIG") {
        s
    } else {
        format!("SIG{s}")
    };
    name.parse().ok()
}

/// Runs a container's `preStop` handler (exec or httpGet), waiting at most until `deadline`.
fn pre_stop(ctx: &SyncContext, c: &Container, id: &str, pod_ip: &str, deadline: Instant) {
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return;
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    if let Some(e) = &h.exec {
        let ok = probes::exec(
            &ctx.engine,
            id,
            e.command.as_deref().unwrap_or_default(),
            left,
        );
        tracing::info!(container = %id, ok, "preStop exec");
    } else if let Some(g) = &h.http_get {
        let port = match &g.port {
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                u16::try_from(*n).ok()
            }
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s.parse().ok(),
        };
        let host = g.host.clone().unwrap_or_else(|| pod_ip.to_string());
        if let Some(port) = port {
            let ok = probes::http_get(&host, port, g.path.as_deref().unwrap_or("/"), left);
            tracing::info!(container = %id, ok, "preStop httpGet");
        }
    } else if let Some(s) = &h.sleep {
        std::thread::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(left));
    }
}

/// Stops every container of the pod with `uid` — `preStop` handlers first, then the image's
/// stop signal (SIGTERM), SIGKILL once `grace` has passed — and removes its sandbox (network
/// released) and its volumes. `pod` is the last spec seen, if any.
pub fn teardown(ctx: &SyncContext, uid: &str, pod: Option<&Pod>, grace: Duration) {
    if let Ok(mut m) = ctx.pod_images.lock() {
        m.remove(uid);
    }
    let sandbox_name = naming::sandbox(uid);
    let engine = &ctx.engine;
    let sandbox = engine.pod(&sandbox_name).ok();
    let ids: Vec<String> = sandbox
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let pod_ip = sandbox
        .as_ref()
        .and_then(|s| s.ip.clone())
        .unwrap_or_default();
    let deadline = Instant::now() + grace;
    let spec_of = |id: &str| -> Option<&Container> {
        let (kind, name, _) = naming::parse(uid, id)?;
        let spec = pod?.spec.as_ref()?;
        match kind {
            Kind::Regular => spec.containers.iter().find(|c| c.name == name),
            Kind::Init => spec
                .init_containers
                .iter()
                .flatten()
                .find(|c| c.name == name),
        }
    };
    for id in &ids {
        if let (Status::Running, Some(c)) = (engine.status(id), spec_of(id)) {
            pre_stop(ctx, c, id, &pod_ip, deadline);
        }
    }
    for id in &ids {
        if engine.status(id) == Status::Running {
            let sig = spec_of(id)
                .and_then(|c| c.image.as_deref())
                .map(|i| stop_signal(engine, i))
                .unwrap_or(Signal::SIGTERM);
            let _ = engine.kill(id, sig);
        }
    }
    while Instant::now() < deadline && ids.iter().any(|id| engine.status(id) == Status::Running) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for id in &ids {
        let _ = engine.remove(id, true);
    }
    match engine.remove_pod(&sandbox_name, true) {
        Ok(()) => {}
        Err(EngineError::Pod(podlet_runtime::pod::PodError::NotFound(_))) => {}
        Err(e) => tracing::warn!(pod = %uid, error = %e, "removing the pod sandbox"),
    }
    let dir = volumes::pod_dir(&ctx.data_dir, uid);
    volumes::unmount_below(&dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// Ensures the image is in the store per `policy`, pulling with each of the pod's matching
/// pull-secret credentials in turn (then anonymously); an error is (reason, message).
fn ensure_image(
    engine: &Engine,
    pod: &Pod,
    refs: &Refs,
    image: &str,
    policy: &str,
) -> Result<(), (String, String)> {
    let present = engine.store().resolve(image).is_ok();
    let pull = || -> Result<(), String> {
        let r = podlet_runtime::image::reference::Reference::parse(image)
            .map_err(|e| format!("invalid image reference {:?}: {}", e.0, e.1))?;
        let creds = pull_secrets::credentials_for(pod, refs, &r.registry, &r.repository)?;
        let mut attempts: Vec<Option<(String, String)>> = creds
            .into_iter()
            .map(|c| Some((c.username, c.password)))
            .collect();
        if attempts.is_empty() {
            attempts.push(None);
        }
        let mut last = String::new();
        for creds in attempts {
            let client = podlet_runtime::image::registry::RegistryClient::new(false, creds);
            match client.pull(engine.store(), &r, &NoProgress) {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    };
    match (policy, present) {
        ("Never", true) | ("IfNotPresent", true) => Ok(()),
        ("Never", false) => Err((
            "ErrImageNeverPull".into(),
            format!("Container image \"{image}\" is not present with pull policy of Never"),
        )),
        (_, true) => {
            // Always: refresh, but an offline node keeps running what it has.
            if let Err(e) = pull() {
                tracing::info!(%image, error = %e, "pull failed; using the image in the store");
            }
            Ok(())
        }
        (_, false) => pull().map_err(|e| ("ErrImagePull".into(), format!("pulling {image}: {e}"))),
    }
}

struct NoProgress;

impl podlet_runtime::image::registry::Progress for NoProgress {
    fn skipped(&self, _: &podlet_runtime::image::Digest, _: u64) {}
    fn started(
        &self,
        _: &podlet_runtime::image::Digest,
        _: u64,
    ) -> Box<dyn podlet_runtime::image::registry::BlobProgress> {
        Box::new(NoBlob)
    }
}

struct NoBlob;

impl podlet_runtime::image::registry::BlobProgress for NoBlob {
    fn advance(&self, _: u64) {}
    fn done(&self) {}
}

fn pull_policy(c: &Container) -> String {
    c.image_pull_policy.clone().unwrap_or_else(|| {
        let image = c.image.as_deref().unwrap_or("");
        let tagged = image
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
            || image.contains('@');
        if !tagged || image.ends_with(":latest") {
            "Always".into()
        } else {
            "IfNotPresent".into()
        }
    })
}

impl PodRuntime {
    /// Finds the pod's existing containers in the engine (after an agent restart).
    fn adopt(&mut self, ctx: &SyncContext, uid: &str) {
        self.adopted = true;
        // Only the pod's own sandbox is read: a new pod costs nothing, however many run.
        let Ok(sandbox) = ctx.engine.pod(&naming::sandbox(uid)) else {
            return;
        };
        for id in &sandbox.containers {
            let Ok(info) = ctx.engine.inspect(id) else {
                continue;
            };
            let Some((kind, name, n)) = naming::parse(uid, &info.name) else {
                continue;
            };
            let t = self.tracks.entry((kind, name)).or_default();
            if t.current.is_none() || n > t.run {
                t.current = Some(info.name.clone());
                t.run = n;
                t.started = Some(Instant::now());
                if kind == Kind::Init && info.exit.as_ref().is_some_and(|e| e.exit_code == 0) {
                    t.completed = true;
                }
            }
        }
    }

    /// Makes sure the sandbox runs; returns the pod IP.
    fn ensure_sandbox(&mut self, ctx: &SyncContext, pod: &Pod) -> Result<String, String> {
        let uid = uid_of(pod);
        let name = naming::sandbox(&uid);
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        match ctx.engine.pod(&name) {
            Ok(st) if st.is_running() => {
                return Ok(if host_network {
                    ctx.node_ip.clone()
                } else {
                    st.ip.clone().unwrap_or_default()
                })
            }
            Ok(_) => {
                // The sandbox died: everything in it goes, and starts again in a new one.
                tracing::info!(pod = %uid, "pod sandbox died; recreating it");
                let _ = ctx.engine.remove_pod(&name, true);
                for t in self.tracks.values_mut() {
                    t.current = None;
                    t.completed = false;
                }
            }
            Err(_) => {}
        }
        let meta = &pod.metadata;
        let mut hostname = pod
            .spec
            .as_ref()
            .and_then(|s| s.hostname.clone())
            .or_else(|| meta.name.clone())
            .unwrap_or_else(|| name.clone());
        hostname.truncate(63);
        let spec = PodSpec {
            name: name.clone(),
            hostname: Some(hostname),
            network: if host_network {
                PodNetwork::Host
            } else {
                ctx.network.clone()
            },
            labels: [
                (
                    "io.kubernetes.pod.name".to_string(),
                    meta.name.clone().unwrap_or_default(),
                ),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    meta.namespace.clone().unwrap_or_default(),
                ),
                ("io.kubernetes.pod.uid".to_string(), uid.clone()),
            ]
            .into(),
            pids_limit: ctx.policy.pod_max_pids,
        };
        let st = ctx.engine.create_pod(&spec).map_err(|e| e.to_string())?;
        Ok(if host_network {
            ctx.node_ip.clone()
        } else {
            st.ip.unwrap_or_default()
        })
    }

    /// Starts run `t.run` of container `c` (image, config, monitor); on failure records why.
    #[allow(clippy::too_many_arguments)]
    fn start(
        t: &mut Track,
        ctx: &SyncContext,
        pod: &Pod,
        kind: Kind,
        c: &Container,
        refs: &Refs,
        vols: &BTreeMap<String, std::path::PathBuf>,
        pod_ip: &str,
    ) {
        let uid = uid_of(pod);
        let id = naming::container(&uid, kind, &c.name, t.run);
        let image = c.image.clone().unwrap_or_default();
        if let Err((reason, msg)) = ensure_image(&ctx.engine, pod, refs, &image, &pull_policy(c)) {
            t.waiting = Some((reason, msg));
            t.not_before = Some(Instant::now() + BACKOFF_START);
            return;
        }
        let image_user = ctx
            .engine
            .image_config(&image)
            .ok()
            .and_then(|ic| ic.config().as_ref().and_then(|c| c.user().clone()))
            .unwrap_or_default();
        if let Err(msg) = convert::check_non_root(pod, c, &image_user) {
            t.waiting = Some(("CreateContainerConfigError".into(), msg));
            return;
        }
        let service_env = ctx
            .services
            .as_ref()
            .map(|v| crate::services::pod_env::service_env(pod, &v.services.state()))
            .unwrap_or_default();
        let mut cfg = match convert::container_config(
            pod,
            c,
            &id,
            &naming::sandbox(&uid),
            refs,
            &service_env,
            vols,
            pod_ip,
            &ctx.node_ip,
        ) {
            Ok(cfg) => cfg,
            Err(msg) => {
                t.waiting = Some(("CreateContainerConfigError".into(), msg));
                return;
            }
        };
        if let Some(v) = &ctx.services {
            let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            match crate::services::pod_env::resolv_conf(pod, v.dns_ip, &v.domain, &host) {
                Ok(r) => cfg.resolv_conf = r,
                Err(msg) => {
                    t.waiting = Some(("CreateContainerConfigError".into(), msg));
                    return;
                }
            }
        }
        let profiles = ctx.data_dir.join("seccomp");
        match convert::seccomp(pod, c, ctx.policy.seccomp_default, &profiles) {
            Ok(s) => cfg.seccomp = s,
            Err(msg) => {
                t.waiting = Some(("CreateContainerConfigError".into(), msg));
                return;
            }
        }

        // A leftover of an interrupted start of this run is replaced.
        let _ = ctx.engine.remove(&id, true);
        let prepared = match ctx.engine.prepare(&cfg) {
            Ok(p) => p,
            Err(e) => {
                t.waiting = Some(("CreateContainerError".into(), e.to_string()));
                return;
            }
        };
        if let Err(e) = ctx.engine.start_detached(&prepared) {
            ctx.engine.discard(&prepared);
            t.waiting = Some(("RunContainerError".into(), e.to_string()));
            t.not_before = Some(Instant::now() + t.backoff.unwrap_or(BACKOFF_START));
            return;
        }
        t.current = Some(id);
        t.waiting = None;
        t.started = Some(Instant::now());
        t.liveness = ProbeState::default();
        t.readiness = ProbeState::default();
        t.startup = ProbeState::default();
    }

    /// Ends the current run (it exited) and schedules the next per the back-off.
    fn schedule_restart(t: &mut Track, ctx: &SyncContext, terminated: Value) {
        let ran = t.started.map(|s| s.elapsed()).unwrap_or_default();
        if ran >= BACKOFF_RESET {
            t.backoff = None;
        }
        let delay = if t.run == 0 && t.backoff.is_none() {
            Duration::ZERO
        } else {
            t.backoff.unwrap_or(BACKOFF_START)
        };
        t.backoff = Some(if delay.is_zero() {
            BACKOFF_START
        } else {
            (delay * 2).min(BACKOFF_MAX)
        });
        t.not_before = Some(Instant::now() + delay);
        t.last_state = Some(json!({"terminated": terminated}));
        if let Some(old) = t.current.take() {
            let _ = ctx.engine.remove(&old, true);
        }
        t.run += 1;
    }

    /// Runs due probes of a running container; returns whether it must be restarted.
    fn probe(t: &mut Track, ctx: &SyncContext, c: &Container, pod_ip: &str) -> bool {
        let (Some(id), Some(started)) = (t.current.clone(), t.started) else {
            return false;
        };
        let now = Instant::now();
        if let Some(p) = &c.startup_probe {
            if t.startup.verdict != Some(true) {
                let timing = probes::timing(p);
                if t.startup.due(&timing, started, now) {
                    let ok = probes::run(&ctx.engine, p, c, &id, pod_ip);
                    if t.startup.record(&timing, ok, now) == Some(false) {
                        return true;
                    }
                }
                return false;
            }
        }
        if let Some(p) = &c.readiness_probe {
            let timing = probes::timing(p);
            if t.readiness.due(&timing, started, now) {
                let ok = probes::run(&ctx.engine, p, c, &id, pod_ip);
                t.readiness.record(&timing, ok, now);
            }
        }
        if let Some(p) = &c.liveness_probe {
            let timing = probes::timing(p);
            if t.liveness.due(&timing, started, now) {
                let ok = probes::run(&ctx.engine, p, c, &id, pod_ip);
                if t.liveness.record(&timing, ok, now) == Some(false) {
                    tracing::info!(container = %id, "liveness probe failed; restarting");
                    return true;
                }
            }
        }
        false
    }

    /// One sync of `pod`; returns its status for the API.
    pub fn sync(&mut self, ctx: &SyncContext, pod: &Pod, refs: &Refs) -> Value {
        let uid = uid_of(pod);
        let images: Vec<String> = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
            })
            .filter_map(|c| c.image.clone())
            .collect();
        if let Ok(mut m) = ctx.pod_images.lock() {
            m.insert(uid.clone(), images);
        }
        if !self.adopted {
            self.adopt(ctx, &uid);
        }
        if self.start_time.is_none() {
            self.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string())
                .or_else(|| Some(now_rfc3339()));
        }
        let Some(spec) = pod.spec.clone() else {
            return self.status_with(Some(ctx), pod);
        };
        if self.failed.is_some() {
            return self.status_with(Some(ctx), pod);
        }
        let pod_ip = match self.ensure_sandbox(ctx, pod) {
            Ok(ip) => {
                self.sandbox_error = None;
                ip
            }
            Err(e) => {
                tracing::warn!(pod = %uid, error = %e, "creating the pod sandbox");
                self.sandbox_error = Some(e);
                return self.status_with(Some(ctx), pod);
            }
        };
        self.pod_ip = Some(pod_ip.clone());
        let vols = match volumes::materialize(&ctx.data_dir, pod, refs, &pod_ip, &ctx.node_ip) {
            Ok(v) => v,
            Err(msg) => {
                for c in spec
                    .init_containers
                    .iter()
                    .flatten()
                    .map(|c| (Kind::Init, c))
                    .chain(spec.containers.iter().map(|c| (Kind::Regular, c)))
                {
                    let t = self.tracks.entry((c.0, c.1.name.clone())).or_default();
                    if t.current.is_none() {
                        t.waiting = Some(("CreateContainerConfigError".into(), msg.clone()));
                    }
                }
                return self.status_with(Some(ctx), pod);
            }
        };
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        // Init containers, one at a time, in order.
        let mut init_done = true;
        for c in spec.init_containers.iter().flatten() {
            let t = self.tracks.entry((Kind::Init, c.name.clone())).or_default();
            if t.completed {
                continue;
            }
            init_done = false;
            if let Some(id) = t.current.clone() {
                let info = ctx.engine.inspect(&id).ok();
                match info.as_ref().and_then(|i| i.exit.clone()) {
                    None if info.is_some() => break, // still running
                    Some(exit) if exit.exit_code == 0 => {
                        t.completed = true;
                        init_done = true;
                        continue;
                    }
                    Some(exit) => {
                        let term = terminated_json(&id, &exit);
                        if policy == "Never" {
                            self.failed = Some((
                                "Init:Error".into(),
                                format!("init container {} failed", c.name),
                            ));
                            t.last_state = Some(json!({"terminated": term}));
                            return self.status_with(Some(ctx), pod);
                        }
                        Self::schedule_restart(t, ctx, term);
                    }
                    None => t.current = None,
                }
            }
            if t.current.is_none() && t.not_before.is_none_or(|nb| Instant::now() >= nb) {
                Self::start(t, ctx, pod, Kind::Init, c, refs, &vols, &pod_ip);
            } else if t.current.is_none() && t.run > 0 {
                t.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off restarting failed container {} in pod {}",
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or("")
                    ),
                ));
            }
            break;
        }
        if !init_done {
            return self.status_with(Some(ctx), pod);
        }
        let grace = grace_period(pod).min(Duration::from_secs(5));
        for c in &spec.containers {
            let t = self
                .tracks
                .entry((Kind::Regular, c.name.clone()))
                .or_default();
            if let Some(id) = t.current.clone() {
                match ctx.engine.inspect(&id) {
                    Ok(info) if info.exit.is_none() && info.status != Status::Stopped => {
                        if Self::probe(t, ctx, c, &pod_ip) {
                            let _ = ctx.engine.stop(&id, Signal::SIGTERM, grace);
                        } else {
                            continue;
                        }
                    }
                    _ => {}
                }
                let exit = ctx.engine.exit_record(&id);
                let code = exit.as_ref().map(|e| e.exit_code).unwrap_or(137);
                let restart = match policy.as_str() {
                    "Always" => true,
                    "OnFailure" => code != 0,
                    _ => false,
                };
                if !restart {
                    continue;
                }
                let term = match &exit {
                    Some(e) => terminated_json(&id, e),
                    None => {
                        json!({"exitCode": 137, "reason": "Error", "containerID": format!("podlet://{id}")})
                    }
                };
                Self::schedule_restart(t, ctx, term);
            }
            if t.not_before.is_none_or(|nb| Instant::now() >= nb) {
                Self::start(t, ctx, pod, Kind::Regular, c, refs, &vols, &pod_ip);
            } else if t
                .waiting
                .as_ref()
                .is_none_or(|(r, _)| r == "CrashLoopBackOff")
            {
                t.waiting = Some((
                    "CrashLoopBackOff".into(),
                    format!(
                        "back-off restarting failed container={} pod={}",
                        c.name,
                        pod.metadata.name.as_deref().unwrap_or("")
                    ),
                ));
            }
        }
        self.status_with(Some(ctx), pod)
    }

    fn container_status(
        &self,
        ctx: Option<&SyncContext>,
        kind: Kind,
        c: &Container,
    ) -> (Value, bool, bool) {
        let t = self
            .tracks
            .get(&(kind, c.name.clone()))
            .cloned()
            .unwrap_or_default();
        let image = c.image.clone().unwrap_or_default();
        let mut running = false;
        let mut terminated_ok = false;
        let info = t
            .current
            .as_ref()
            .and_then(|id| ctx.and_then(|ctx| ctx.engine.inspect(id).ok()));
        let state = match (&info, &t.waiting) {
            (Some(i), _) if i.exit.is_none() && i.status != Status::Stopped => {
                running = true;
                json!({"running": {"startedAt": started_at(i)}})
            }
            (Some(i), _) => {
                let exit = i
                    .exit
                    .clone()
                    .unwrap_or(podlet_runtime::engine::ExitRecord {
                        exit_code: 137,
                        finished_at: now_rfc3339(),
                        oom_killed: false,
                    });
                terminated_ok = exit.exit_code == 0;
                json!({"terminated": terminated_json(&i.name, &exit)})
            }
            (None, Some((reason, msg))) => json!({"waiting": {"reason": reason, "message": msg}}),
            (None, None) => {
                json!({"waiting": {"reason": if kind == Kind::Init && t.completed {"Completed"} else {"ContainerCreating"}}})
            }
        };
        let ready = running
            && match &c.readiness_probe {
                Some(_) => t.readiness.verdict == Some(true),
                None => true,
            }
            && (c.startup_probe.is_none() || t.startup.verdict == Some(true));
        let mut v = json!({
            "name": c.name,
            "image": image,
            "imageID": info.as_ref().map(|i| i.image.clone()).unwrap_or_default(),
            "ready": if kind == Kind::Init { t.completed } else { ready },
            "restartCount": t.run,
            "state": state,
            "lastState": t.last_state.clone().unwrap_or(json!({})),
        });
        if kind == Kind::Regular {
            v["started"] =
                json!(running && (c.startup_probe.is_none() || t.startup.verdict == Some(true)));
        }
        if let Some(id) = &t.current {
            v["containerID"] = json!(format!("podlet://{id}"));
        }
        if kind == Kind::Init && t.completed && info.is_none() {
            v["state"] = json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        }
        (v, running, terminated_ok)
    }

    /// The pod's status as the API shows it (`ctx` reads the containers' states).
    pub fn status_with(&self, ctx: Option<&SyncContext>, pod: &Pod) -> Value {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let inits: Vec<Value> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| self.container_status(ctx, Kind::Init, c).0)
            .collect();
        let initialized = spec.init_containers.iter().flatten().all(|c| {
            self.tracks
                .get(&(Kind::Init, c.name.clone()))
                .is_some_and(|t| t.completed)
        });
        let mut all_ready = !spec.containers.is_empty();
        let mut any_running = false;
        let mut all_terminated = true;
        let mut all_ok = true;
        let statuses: Vec<Value> = spec
            .containers
            .iter()
            .map(|c| {
                let (v, running, ok) = self.container_status(ctx, Kind::Regular, c);
                all_ready &= v["ready"] == true;
                any_running |= running;
                let terminated = v["state"]["terminated"].is_object();
                all_terminated &= terminated;
                all_ok &= ok;
                v
            })
            .collect();
        let phase = if self.failed.is_some() {
            "Failed"
        } else if all_terminated && policy != "Always" && !statuses.is_empty() {
            if all_ok {
                "Succeeded"
            } else if policy == "Never" {
                "Failed"
            } else {
                "Running"
            }
        } else if initialized && any_running {
            "Running"
        } else {
            "Pending"
        };
        let now = now_rfc3339();
        let cond = |t: &str, on: bool| json!({"type": t, "status": if on {"True"} else {"False"}, "lastTransitionTime": now});
        let mut st = json!({
            "phase": phase,
            "conditions": [
                cond("PodScheduled", true),
                cond("Initialized", initialized),
                cond("ContainersReady", all_ready && initialized),
                cond("Ready", all_ready && initialized),
            ],
            "hostIP": ctx.map(|c| c.node_ip.clone()).unwrap_or_default(),
            "startTime": self.start_time,
            "qosClass": qos_class(pod),
            "containerStatuses": statuses,
        });
        if let Some(ip) = self.pod_ip.as_ref().filter(|ip| !ip.is_empty()) {
            st["podIP"] = json!(ip);
            st["podIPs"] = json!([{"ip": ip}]);
        }
        if let Some(ctx) = ctx {
            st["hostIPs"] = json!([{"ip": ctx.node_ip}]);
        }
        if !inits.is_empty() {
            st["initContainerStatuses"] = json!(inits);
        }
        if let Some((reason, msg)) = &self.failed {
            st["reason"] = json!(reason);
            st["message"] = json!(msg);
        }
        if let Some(e) = &self.sandbox_error {
            st["message"] = json!(format!("pod sandbox: {e}"));
        }
        st
    }
}

fn started_at(i: &podlet_runtime::engine::ContainerInfo) -> String {
    // The rootfs mount point is made when the container is prepared, just before it starts.
    std::fs::metadata(&i.rootfs)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(now_rfc3339)
}

fn terminated_json(id: &str, e: &podlet_runtime::engine::ExitRecord) -> Value {
    let reason = if e.oom_killed {
        "OOMKilled"
    } else if e.exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    json!({"exitCode": e.exit_code, "reason": reason, "finishedAt": e.finished_at,
           "containerID": format!("podlet://{id}")})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_parse_like_docker() {
        assert_eq!(parse_signal("SIGQUIT"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("quit"), Some(Signal::SIGQUIT));
        assert_eq!(parse_signal("9"), Some(Signal::SIGKILL));
        assert_eq!(parse_signal("SIGNOPE"), None);
    }

    #[test]
    fn qos_classes() {
        let pod = |res: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c", "resources": res}]}}))
            .unwrap()
        };
        assert_eq!(qos_class(&pod(json!({}))), "BestEffort");
        assert_eq!(
            qos_class(&pod(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed"
        );
        assert_eq!(
            qos_class(&pod(
                json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}})
            )),
            "Burstable"
        );
    }
}
