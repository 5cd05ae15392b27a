//! Keeps the ClusterIP and NodePort bitmaps ([`crate::allocator`]) true: the values of a
//! Service that disappears are released at once; every minute a repair pass marks what live
//! Services hold and releases values nothing has held for two passes in a row (a bit set by a
//! create whose Service is not visible yet is never released: it is seen on the next pass).

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{level_loop, triggers, Ctx, Informer};
use crate::allocator::{self, Range, NODE_PORTS, SERVICE_IPS};
use crate::store::Store;

/// How often bits nothing holds are looked for.
pub const REPAIR: Duration = Duration::from_secs(60);

/// The ClusterIPs and NodePorts a Service holds.
pub fn values_of(svc: &Value) -> (Vec<u32>, Vec<u32>) {
    let ips = svc["spec"]["clusterIPs"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| vec![svc["spec"]["clusterIP"].clone()])
        .iter()
        .filter_map(|v| v.as_str()?.parse::<Ipv4Addr>().ok())
        .map(u32::from)
        .collect();
    let ports = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["nodePort"].as_u64())
        .map(|p| p as u32)
        .collect();
    (ips, ports)
}

/// Marks every value the Services in the store hold (run once at start, before any
/// allocation, so a cluster made before the bitmaps existed keeps its values).
pub async fn initialize(
    store: &dyn Store,
    services: &[Value],
) -> Result<(), allocator::AllocError> {
    let (mut ips, mut ports) = (Vec::new(), Vec::new());
    for s in services {
        let (i, p) = values_of(s);
        ips.extend(i);
        ports.extend(p);
    }
    allocator::reconcile(store, &SERVICE_IPS, &ips).await?;
    allocator::reconcile(store, &NODE_PORTS, &ports).await?;
    Ok(())
}

#[derive(Default)]
struct State {
    /// Values by Service uid, as of the last pass.
    held: HashMap<String, (Vec<u32>, Vec<u32>)>,
    /// Values found set but unheld, and when first.
    suspects: HashMap<(&'static str, u32), Instant>,
    last_repair: Option<Instant>,
}

async fn repair(ctx: &Ctx, state: &mut State, range: &'static Range, used: &[u32]) {
    let store = ctx.st.store.as_ref();
    let unused = match allocator::reconcile(store, range, used).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(range = range.key, error = %e, "range repair");
            return;
        }
    };
    let unused: HashSet<u32> = unused.into_iter().collect();
    state
        .suspects
        .retain(|(k, v), _| *k != range.key || unused.contains(v));
    let now = Instant::now();
    let mut stale = Vec::new();
    for v in unused {
        let first = *state.suspects.entry((range.key, v)).or_insert(now);
        if now.duration_since(first) >= REPAIR {
            stale.push(v);
        }
    }
    if !stale.is_empty() {
        tracing::info!(
            range = range.key,
            count = stale.len(),
            "releasing values no Service holds"
        );
        if allocator::release(store, range, &stale).await.is_ok() {
            state
                .suspects
                .retain(|(k, v), _| *k != range.key || !stale.contains(v));
        }
    }
}

async fn pass(ctx: &Ctx, svcs: &Informer, state: &mut State) {
    let mut now_held = HashMap::new();
    let (mut ips, mut ports) = (HashSet::new(), HashSet::new());
    for s in svcs.list() {
        let uid = s["metadata"]["uid"].as_str().unwrap_or("").to_string();
        let (i, p) = values_of(&s);
        ips.extend(i.iter().copied());
        ports.extend(p.iter().copied());
        now_held.insert(uid, (i, p));
    }
    let store = ctx.st.store.as_ref();
    for (uid, (i, p)) in &state.held {
        if now_held.contains_key(uid) {
            continue;
        }
        let free_ips: Vec<u32> = i.iter().copied().filter(|v| !ips.contains(v)).collect();
        let free_ports: Vec<u32> = p.iter().copied().filter(|v| !ports.contains(v)).collect();
        let _ = allocator::release(store, &SERVICE_IPS, &free_ips).await;
        let _ = allocator::release(store, &NODE_PORTS, &free_ports).await;
    }
    state.held = now_held;
    if state.last_repair.is_none_or(|t| t.elapsed() >= REPAIR) {
        state.last_repair = Some(Instant::now());
        let ips: Vec<u32> = ips.into_iter().collect();
        let ports: Vec<u32> = ports.into_iter().collect();
        repair(ctx, state, &SERVICE_IPS, &ips).await;
        repair(ctx, state, &NODE_PORTS, &ports).await;
    }
}

/// Runs the controller.
pub async fn run(ctx: Ctx, svcs: Informer) {
    let trigger = triggers(&[&svcs]);
    let state = Arc::new(tokio::sync::Mutex::new(State::default()));
    level_loop(trigger, Duration::from_secs(10), || {
        let (ctx, svcs, state) = (ctx.clone(), svcs.clone(), state.clone());
        async move {
            let mut st = state.lock().await;
            pass(&ctx, &svcs, &mut st).await;
        }
    })
    .await;
}
