//! `podlet apply|get|describe|delete|scale|rollout` for people without kubectl: a thin client
//! on kube-rs against a podlet master (or any Kubernetes API), with kubectl's output shapes —
//! tables come from the server's `Table` responses.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use kube::Client;
use serde_json::{json, Value};

/// Where the cluster is.
#[derive(Debug, Args, Clone)]
pub struct ClusterArgs {
    /// Kubeconfig (default: $KUBECONFIG, ~/.kube/config, then a local master's
    /// /var/lib/podlet/master/admin.kubeconfig).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Namespace (default: the kubeconfig's, or `default`).
    #[arg(long, short = 'n', global = true)]
    pub namespace: Option<String>,
}

/// `podlet rollout` subcommands.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Wait until a Deployment's rollout completes.
    Status {
        /// `deployment/NAME`.
        target: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// List a Deployment's revisions.
    History {
        /// `deployment/NAME`.
        target: String,
    },
    /// Roll a Deployment back to the previous (or a given) revision.
    Undo {
        /// `deployment/NAME`.
        target: String,
        /// The revision to return to (default: the previous one).
        #[arg(long)]
        to_revision: Option<i64>,
    },
}

fn kubeconfig_path(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = given {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
    if let Some(h) = home.filter(|h| h.exists()) {
        return Some(h);
    }
    let local = PathBuf::from(podlet_master::serve::DEFAULT_DATA_DIR).join("admin.kubeconfig");
    local.exists().then_some(local)
}

async fn connect(c: &ClusterArgs) -> Result<(Client, String)> {
    let path = kubeconfig_path(c.kubeconfig.as_deref())
        .context("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or run `podlet master` here")?;
    let kc = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("read {}", path.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .with_context(|| format!("use {}", path.display()))?;
    let ns = c
        .namespace
        .clone()
        .unwrap_or_else(|| cfg.default_namespace.clone());
    Ok((Client::try_from(cfg)?, ns))
}

/// Resolves `kind` (plural, singular, short name or Kind, optionally `.group`).
fn resolve(discovery: &Discovery, kind: &str) -> Result<(ApiResource, bool)> {
    let (name, group) = kind
        .split_once('.')
        .map(|(n, g)| (n, Some(g)))
        .unwrap_or((kind, None));
    let lower = name.to_ascii_lowercase();
    for g in discovery.groups() {
        if group.is_some_and(|want| want != g.name()) {
            continue;
        }
        for (ar, caps) in g.recommended_resources() {
            let short = ar.plural.clone();
            let matches = ar.plural == lower
                || ar.kind.to_ascii_lowercase() == lower
                || short.trim_end_matches('s') == lower
                || short_names(&ar.plural).contains(&lower.as_str());
            if matches {
                return Ok((ar, caps.scope == Scope::Namespaced));
            }
        }
    }
    bail!("the server doesn't have a resource type \"{kind}\"")
}

fn short_names(plural: &str) -> &'static [&'static str] {
    podlet_master::resources::RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .map(|r| r.short_names)
        .unwrap_or(&[])
}

fn api_for(client: &Client, ar: &ApiResource, namespaced: bool, ns: &str) -> Api<DynamicObject> {
    if namespaced {
        Api::namespaced_with(client.clone(), ns, ar)
    } else {
        Api::all_with(client.clone(), ar)
    }
}

fn display_kind(ar: &ApiResource) -> String {
    if ar.group.is_empty() {
        ar.kind.to_ascii_lowercase()
    } else {
        format!("{}.{}", ar.kind.to_ascii_lowercase(), ar.group)
    }
}

fn read_docs(file: &Path) -> Result<Vec<Value>> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?
    };
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: serde_yaml::Value = serde::Deserialize::deserialize(doc)
            .with_context(|| format!("{}: not YAML", file.display()))?;
        if v.is_null() {
            continue;
        }
        let j: Value = serde_json::to_value(v)?;
        if j["kind"] == "List" {
            out.extend(j["items"].as_array().cloned().unwrap_or_default());
        } else {
            out.push(j);
        }
    }
    Ok(out)
}

/// `podlet apply -f FILE` (server-side apply, field manager `podlet`).
pub async fn apply(c: &ClusterArgs, file: &Path) -> Result<ExitCode> {
    let docs = read_docs(file)?;
    let (client, ns) = connect(c).await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    for doc in docs {
        let kind = doc["kind"].as_str().context("an object without kind")?;
        let name = doc["metadata"]["name"]
            .as_str()
            .with_context(|| format!("a {kind} without metadata.name"))?;
        let (ar, namespaced) = resolve(&discovery, kind)?;
        let obj_ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&ns)
            .to_string();
        let api = api_for(&client, &ar, namespaced, &obj_ns);
        let existed = api.get_opt(name).await?.is_some();
        api.patch(
            name,
            &PatchParams::apply("podlet").force(),
            &Patch::Apply(&doc),
        )
        .await?;
        println!(
            "{}/{name} {}",
            display_kind(&ar),
            if existed {
                "serverside-applied"
            } else {
                "created"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(table: &Value, wide: bool, with_namespace: bool) {
    let cols: Vec<(usize, String)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, c)| wide || c["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, c)| (i, c["name"].as_str().unwrap_or("").to_ascii_uppercase()))
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header: Vec<String> = Vec::new();
    if with_namespace {
        header.push("NAMESPACE".into());
    }
    header.extend(cols.iter().map(|(_, n)| n.clone()));
    rows.push(header);
    for r in table["rows"].as_array().into_iter().flatten() {
        let mut row = Vec::new();
        if with_namespace {
            row.push(
                r["object"]["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            );
        }
        for (i, _) in &cols {
            let cell = &r["cells"][*i];
            row.push(match cell {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                v => v.to_string(),
            });
        }
        rows.push(row);
    }
    if rows.len() == 1 {
        eprintln!("No resources found.");
        return;
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("   ").trim_end());
    }
}

/// `podlet get KIND [NAME] [-A] [-l SEL] [-o table|wide|json|yaml]`.
pub async fn get(
    c: &ClusterArgs,
    kind: &str,
    name: Option<&str>,
    all_namespaces: bool,
    selector: Option<&str>,
    output: &str,
) -> Result<ExitCode> {
    let (client, ns) = connect(c).await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let (ar, namespaced) = resolve(&discovery, kind)?;
    let base = if ar.group.is_empty() {
        format!("/api/{}", ar.version)
    } else {
        format!("/apis/{}/{}", ar.group, ar.version)
    };
    let mut path = if namespaced && !all_namespaces {
        format!("{base}/namespaces/{ns}/{}", ar.plural)
    } else {
        format!("{base}/{}", ar.plural)
    };
    if let Some(n) = name {
        path = format!("{path}/{n}");
    }
    if let Some(s) = selector {
        path = format!(
            "{path}?labelSelector={}",
            s.bytes().map(|b| format!("%{b:02X}")).collect::<String>()
        );
    }
    let table = matches!(output, "table" | "wide");
    let mut req = http::Request::get(&path);
    if table {
        req = req.header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        );
    }
    let text = client
        .request_text(req.body(Vec::new())?)
        .await
        .map_err(|e| match e {
            kube::Error::Api(s) => anyhow!("Error from server ({}): {}", s.reason, s.message),
            e => anyhow!(e),
        })?;
    let v: Value = serde_json::from_str(&text)?;
    match output {
        "table" | "wide" => print_table(&v, output == "wide", all_namespaces && namespaced),
        "json" => println!("{}", serde_json::to_string_pretty(&v)?),
        "yaml" => print!("{}", serde_yaml::to_string(&v)?),
        "name" => {
            let items = if name.is_some() {
                vec![v]
            } else {
                v["items"].as_array().cloned().unwrap_or_default()
            };
            for i in items {
                println!(
                    "{}/{}",
                    display_kind(&ar),
                    i["metadata"]["name"].as_str().unwrap_or("")
                );
            }
        }
        other => bail!("unknown output format {other:?}: use table, wide, json, yaml or name"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Maps whose keys are data (label names, data keys), printed as they are.
const RAW_KEYED: &[&str] = &[
    "labels",
    "annotations",
    "matchLabels",
    "selector",
    "nodeSelector",
    "data",
    "limits",
    "requests",
    "binaryData",
];

fn describe_value(prefix: &str, v: &Value, depth: usize, out: &mut String) {
    describe_in(prefix, v, depth, false, out)
}

fn describe_in(prefix: &str, v: &Value, depth: usize, raw_keys: bool, out: &mut String) {
    let pad = "  ".repeat(depth);
    match v {
        Value::Object(m) => {
            for (k, val) in m {
                if k == "managedFields" {
                    continue;
                }
                match val {
                    Value::Object(_) | Value::Array(_)
                        if !val.as_object().is_some_and(|o| o.is_empty())
                            && !val.as_array().is_some_and(|a| a.is_empty()) =>
                    {
                        out.push_str(&format!("{pad}{prefix}{}:\n", shown(k, raw_keys)));
                        describe_in("", val, depth + 1, RAW_KEYED.contains(&k.as_str()), out);
                    }
                    _ => out.push_str(&format!(
                        "{pad}{prefix}{}: {}\n",
                        shown(k, raw_keys),
                        scalar(val)
                    )),
                }
            }
        }
        Value::Array(a) => {
            for item in a {
                match item {
                    Value::Object(_) => {
                        out.push_str(&format!("{pad}-\n"));
                        describe_in("", item, depth + 1, false, out);
                    }
                    _ => out.push_str(&format!("{pad}{}\n", scalar(item))),
                }
            }
        }
        _ => out.push_str(&format!("{pad}{}\n", scalar(v))),
    }
}

fn shown(k: &str, raw: bool) -> String {
    if raw {
        k.to_string()
    } else {
        title(k)
    }
}

fn title(k: &str) -> String {
    let mut s = String::new();
    for (i, ch) in k.chars().enumerate() {
        if i == 0 {
            s.extend(ch.to_uppercase());
        } else if ch.is_uppercase() {
            s.push(' ');
            s.push(ch);
        } else {
            s.push(ch);
        }
    }
    s
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        Value::Object(o) if o.is_empty() => "<none>".into(),
        Value::Array(a) if a.is_empty() => "<none>".into(),
        other => other.to_string(),
    }
}

/// `podlet describe KIND NAME`.
pub async fn describe(c: &ClusterArgs, kind: &str, name: &str) -> Result<ExitCode> {
    let (client, ns) = connect(c).await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let (ar, namespaced) = resolve(&discovery, kind)?;
    let api = api_for(&client, &ar, namespaced, &ns);
    let obj = api.get(name).await.map_err(|e| anyhow!("{e}"))?;
    let v = serde_json::to_value(&obj)?;
    let mut out = String::new();
    out.push_str(&format!("Name:         {}\n", name));
    if namespaced {
        out.push_str(&format!("Namespace:    {ns}\n"));
    }
    let labels = v["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    out.push_str(&format!(
        "Labels:       {}\n",
        if labels.is_empty() {
            "<none>".into()
        } else {
            labels
        }
    ));
    out.push_str(&format!(
        "Created:      {}\n",
        v["metadata"]["creationTimestamp"].as_str().unwrap_or("")
    ));
    if v["kind"] == "Secret" {
        // Like kubectl: sizes, never the values.
        use base64::Engine;
        out.push_str(&format!(
            "Type:         {}\nData\n====\n",
            v["type"].as_str().unwrap_or("")
        ));
        for (k, val) in v["data"].as_object().into_iter().flatten() {
            let n = base64::engine::general_purpose::STANDARD
                .decode(val.as_str().unwrap_or(""))
                .map(|b| b.len())
                .unwrap_or(0);
            out.push_str(&format!("{k}:  {n} bytes\n"));
        }
        print!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    for part in ["spec", "data", "status"] {
        if v[part].is_object() {
            out.push_str(&format!("{}:\n", title(part)));
            describe_value("", &v[part], 1, &mut out);
        }
    }
    // Events about it.
    let events: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<k8s_openapi::api::core::v1::Event>(&()),
    );
    let list = events
        .list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await;
    out.push_str("Events:");
    match list {
        Ok(l) if !l.items.is_empty() => {
            out.push('\n');
            for e in l.items {
                let e = serde_json::to_value(e)?;
                out.push_str(&format!(
                    "  {}  {}  {}\n",
                    e["type"].as_str().unwrap_or(""),
                    e["reason"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ));
            }
        }
        _ => out.push_str("  <none>\n"),
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// `podlet delete KIND NAME…` or `podlet delete -f FILE`.
pub async fn delete(
    c: &ClusterArgs,
    kind: Option<&str>,
    names: &[String],
    file: Option<&Path>,
) -> Result<ExitCode> {
    let (client, ns) = connect(c).await?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut targets: Vec<(ApiResource, bool, String, String)> = Vec::new();
    if let Some(f) = file {
        for doc in read_docs(f)? {
            let (ar, namespaced) = resolve(
                &discovery,
                doc["kind"].as_str().context("an object without kind")?,
            )?;
            let obj_ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&ns)
                .to_string();
            targets.push((
                ar,
                namespaced,
                obj_ns,
                doc["metadata"]["name"].as_str().unwrap_or("").to_string(),
            ));
        }
    } else {
        let kind = kind.context("give KIND NAME… or -f FILE")?;
        let (ar, namespaced) = resolve(&discovery, kind)?;
        if names.is_empty() {
            bail!("give the names of the {kind} to delete");
        }
        for n in names {
            targets.push((ar.clone(), namespaced, ns.clone(), n.clone()));
        }
    }
    let mut failed = false;
    for (ar, namespaced, obj_ns, name) in targets {
        let api = api_for(&client, &ar, namespaced, &obj_ns);
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => println!("{} \"{name}\" deleted", display_kind(&ar)),
            Err(e) => {
                eprintln!("Error from server: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn deployment_name(target: &str) -> Result<&str> {
    match target.split_once('/') {
        Some((
            "deployment" | "deployments" | "deploy" | "deployment.apps" | "deployments.apps",
            n,
        )) if !n.is_empty() => Ok(n),
        None if !target.is_empty() => Ok(target),
        _ => bail!("{target:?}: expected deployment/NAME"),
    }
}

/// `podlet scale KIND/NAME --replicas N`.
pub async fn scale(c: &ClusterArgs, target: &str, replicas: i32) -> Result<ExitCode> {
    let (client, ns) = connect(c).await?;
    let (kind, name) = target
        .split_once('/')
        .context("expected KIND/NAME, e.g. deployment/web")?;
    let discovery = Discovery::new(client.clone()).run().await?;
    let (ar, namespaced) = resolve(&discovery, kind)?;
    let api = api_for(&client, &ar, namespaced, &ns);
    api.patch_scale(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .map_err(|e| anyhow!("{e}"))?;
    println!("{}/{name} scaled", display_kind(&ar));
    Ok(ExitCode::SUCCESS)
}

fn revision(o: &Value) -> i64 {
    o["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

async fn owned_replicasets(client: &Client, ns: &str, dep: &Value) -> Result<Vec<Value>> {
    let rss: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(client.clone(), ns);
    let uid = dep["metadata"]["uid"].as_str().unwrap_or("");
    let mut out: Vec<Value> = rss
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .filter(|r| {
            r["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|o| o.iter().any(|x| x["uid"] == uid))
        })
        .collect();
    out.sort_by_key(revision);
    Ok(out)
}

/// `podlet rollout …`.
pub async fn rollout(c: &ClusterArgs, cmd: &RolloutCommand) -> Result<ExitCode> {
    let (client, ns) = connect(c).await?;
    let deps: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), &ns);
    match cmd {
        RolloutCommand::Status { target, timeout } => {
            let name = deployment_name(target)?;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(*timeout);
            let mut last = String::new();
            loop {
                let d = serde_json::to_value(deps.get(name).await.map_err(|e| anyhow!("{e}"))?)?;
                let want = d["spec"]["replicas"].as_i64().unwrap_or(1);
                let st = &d["status"];
                let (updated, total, available) = (
                    st["updatedReplicas"].as_i64().unwrap_or(0),
                    st["replicas"].as_i64().unwrap_or(0),
                    st["availableReplicas"].as_i64().unwrap_or(0),
                );
                let observed = st["observedGeneration"].as_i64().unwrap_or(0)
                    >= d["metadata"]["generation"].as_i64().unwrap_or(0);
                if st["conditions"].as_array().into_iter().flatten().any(|c| {
                    c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded"
                }) {
                    bail!("deployment \"{name}\" exceeded its progress deadline");
                }
                let msg = if !observed {
                    "Waiting for deployment spec update to be observed...".to_string()
                } else if updated < want {
                    format!("Waiting for deployment \"{name}\" rollout to finish: {updated} out of {want} new replicas have been updated...")
                } else if total > updated {
                    format!("Waiting for deployment \"{name}\" rollout to finish: {} old replicas are pending termination...", total - updated)
                } else if available < updated {
                    format!("Waiting for deployment \"{name}\" rollout to finish: {available} of {updated} updated replicas are available...")
                } else {
                    println!("deployment \"{name}\" successfully rolled out");
                    return Ok(ExitCode::SUCCESS);
                };
                if msg != last {
                    println!("{msg}");
                    last = msg;
                }
                if std::time::Instant::now() > deadline {
                    bail!("timed out waiting for the rollout of deployment \"{name}\"");
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        RolloutCommand::History { target } => {
            let name = deployment_name(target)?;
            let d = serde_json::to_value(deps.get(name).await.map_err(|e| anyhow!("{e}"))?)?;
            println!("deployment.apps/{name}");
            println!("REVISION  CHANGE-CAUSE");
            for rs in owned_replicasets(&client, &ns, &d).await? {
                let cause = rs["metadata"]["annotations"]["kubernetes.io/change-cause"]
                    .as_str()
                    .unwrap_or("<none>");
                println!("{:<9} {cause}", revision(&rs));
            }
            Ok(ExitCode::SUCCESS)
        }
        RolloutCommand::Undo {
            target,
            to_revision,
        } => {
            let name = deployment_name(target)?;
            let d = serde_json::to_value(deps.get(name).await.map_err(|e| anyhow!("{e}"))?)?;
            let rss = owned_replicasets(&client, &ns, &d).await?;
            let current = rss.iter().map(revision).max().unwrap_or(0);
            let want = match to_revision {
                Some(r) => *r,
                None => rss
                    .iter()
                    .map(revision)
                    .filter(|r| *r < current)
                    .max()
                    .context("no previous revision to roll back to")?,
            };
            let rs = rss
                .iter()
                .find(|r| revision(r) == want)
                .with_context(|| format!("unable to find the specified revision {want}"))?;
            let mut template = rs["spec"]["template"].clone();
            if let Some(l) = template["metadata"]["labels"].as_object_mut() {
                l.remove("pod-template-hash");
            }
            let patch: json_patch::Patch = serde_json::from_value(
                json!([{"op": "replace", "path": "/spec/template", "value": template}]),
            )?;
            deps.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                .await
                .map_err(|e| anyhow!("{e}"))?;
            println!("deployment.apps/{name} rolled back");
            Ok(ExitCode::SUCCESS)
        }
    }
}
