//! The Kubernetes manifests (`deploy/kubernetes/`, docs/deploy.md) and the `Dockerfile`. No
//! cluster and no container engine run here, so what can be proven is proven without them:
//! every object of the base and of each rendered overlay satisfies the Kubernetes API's schemas
//! (kubernetes-validate, strict); every flag and PORTCULLIS_* variable the manifests give a
//! binary is one its `--help` lists; probe paths answer on a running control plane and gateway;
//! ports, names and users agree between the manifests, the binaries and the Dockerfile.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis_tests::kube_manifests::{self, repo_root};
use portcullis_tests::{Cp, Dp, TestDb};
use serde_json::{Map, Value, json};

fn deploy_dir() -> PathBuf {
    repo_root().join("deploy/kubernetes")
}

fn rendered() -> Map<String, Value> {
    let all = kube_manifests::render_all(&deploy_dir());
    assert!(all.contains_key("base"), "{:?}", all.keys());
    assert!(
        all.keys().filter(|k| k.starts_with("overlays/")).count() >= 2,
        "one overlay per example region: {:?}",
        all.keys()
    );
    all
}

fn objects(all: &Map<String, Value>, set: &str) -> Vec<Value> {
    all[set].as_array().expect("a list of objects").clone()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn containers(object: &Value) -> Vec<&Value> {
    let spec = &object["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn env<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr}"))
}

fn container_port(container: &Value, name: &str) -> u64 {
    container["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == name))
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn every_object_of_the_base_and_of_each_overlay_satisfies_the_kubernetes_schemas() {
    let all = rendered();
    for (set, objs) in &all {
        let objs = objs.as_array().expect("a list");
        assert!(!objs.is_empty(), "{set} renders nothing");
        for (object, error) in objs.iter().zip(kube_manifests::validate(objs)) {
            assert_eq!(
                error, None,
                "{set}: {} {}",
                object["kind"], object["metadata"]["name"]
            );
        }
    }

    // The validator refuses what the API server would: a wrong type, an unknown field (a typo
    // kubectl would drop or refuse), a missing required field.
    let edge = find(&objects(&all, "overlays/eu"), "Deployment", "portcullis-gw").clone();
    let mut wrong_type = edge.clone();
    wrong_type["spec"]["replicas"] = json!("three");
    let mut typo = edge.clone();
    let probe = typo["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .expect("a container")
        .remove("readinessProbe")
        .expect("the edge has a readiness probe");
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = probe;
    let mut no_selector = edge.clone();
    no_selector["spec"]
        .as_object_mut()
        .expect("a spec")
        .remove("selector");
    let results = kube_manifests::validate(&[wrong_type, typo, no_selector]);
    let explain = format!("{results:?}");
    assert!(results.iter().all(Option::is_some), "{explain}");
    assert!(explain.contains("replicas"), "{explain}");
    assert!(explain.contains("readinesProbe"), "{explain}");
    assert!(explain.contains("selector"), "{explain}");
}

#[test]
fn overlays_set_the_namespace_group_image_and_region_label() {
    let all = rendered();
    let base = objects(&all, "base");
    let base_edge = find(&base, "Deployment", "portcullis-gw");
    assert_eq!(
        env(containers(base_edge)[0], "PORTCULLIS_GROUP"),
        Some("default")
    );
    for region in ["eu", "us"] {
        let objs = objects(&all, &format!("overlays/{region}"));
        assert_eq!(objs.len(), base.len(), "{region}: every base object, once");
        for o in &objs {
            assert_eq!(o["metadata"]["namespace"], format!("portcullis-{region}"));
            assert_eq!(o["metadata"]["labels"]["portcullis.io/region"], region);
            for c in containers(o) {
                assert_eq!(c["image"], "registry.example.com/portcullis:0.1.0");
            }
        }
        let edge = find(&objs, "Deployment", "portcullis-gw");
        assert_eq!(env(containers(edge)[0], "PORTCULLIS_GROUP"), Some(region));
        assert_eq!(
            edge["spec"]["template"]["metadata"]["labels"]["portcullis.io/region"],
            region
        );
        // Selectors are immutable on a Deployment: the region label stays out of them.
        assert_eq!(
            edge["spec"]["selector"]["matchLabels"],
            base_edge["spec"]["selector"]["matchLabels"]
        );
        // The patch merged into the env list by name: nothing else was lost.
        assert_eq!(
            containers(edge)[0]["env"].as_array().map(Vec::len),
            containers(base_edge)[0]["env"].as_array().map(Vec::len)
        );
    }

    // The renderer refuses what it does not implement instead of rendering it wrongly.
    let dir = std::env::temp_dir().join(format!("portcullis-kustomize-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let base_rel = deploy_dir().join("base");
    let refused = |kustomization: &str, patch: &str| -> String {
        std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
        std::fs::write(dir.join("patch.yaml"), patch).unwrap();
        kube_manifests::render_dir(&dir).expect_err("refused")
    };
    let resources = format!("resources:\n  - {}\n", base_rel.display());
    let unsupported = refused(&format!("namePrefix: eu-\n{resources}"), "");
    assert!(unsupported.contains("namePrefix"), "{unsupported}");
    let no_match = refused(
        &format!("{resources}patches:\n  - path: patch.yaml\n"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: nothing\n",
    );
    assert!(no_match.contains("matches 0"), "{no_match}");
    let ports = refused(
        &format!("{resources}patches:\n  - path: patch.yaml\n"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: portcullis-gw\nspec:\n  ports:\n    - port: 8000\n",
    );
    assert!(ports.contains("'ports'"), "{ports}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The built binary next to this test's directory (`cargo build` and the README test command
/// build it there), or else the same clap definition it parses its arguments with.
fn help(binary: &str, subcommand: &[&str]) -> String {
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()));
    if let Some(path) = dir.map(|d| d.join(binary)).filter(|p| p.is_file()) {
        eprintln!("help of {}", path.display());
        let out = Command::new(&path)
            .args(subcommand)
            .arg("--help")
            .env_clear()
            .output()
            .expect("binary runs");
        assert!(out.status.success(), "{} --help failed", path.display());
        return String::from_utf8(out.stdout).expect("UTF-8 help");
    }
    eprintln!("no built {binary}: help from the clap definition it parses with");
    use clap::CommandFactory;
    let mut command = match binary {
        "portcullis-cp" => portcullis_control_plane::cli::Cli::command(),
        "portcullis-gw" => portcullis_data_plane::cli::Cli::command(),
        other => panic!("no binary {other}"),
    };
    for name in subcommand {
        command.build();
        command = command
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("{binary} has no subcommand {name}"))
            .clone();
    }
    command.render_long_help().to_string()
}

/// Words in `text` that follow `prefix` and are made of `allowed` characters.
fn words(text: &str, prefix: &str, allowed: fn(char) -> bool) -> BTreeSet<String> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest.find(|c| !allowed(c)).unwrap_or(rest.len());
            rest[..end].to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

fn flag_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn var_char(c: char) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'
}

/// What a container gives its binary that the binary's help does not list.
fn unknown_options(container: &Value) -> Vec<String> {
    let command = strings(&container["command"]);
    let args: Vec<&str> = command
        .iter()
        .skip(1)
        .chain(strings(&container["args"]).iter())
        .copied()
        .collect();
    let binary = command.first().copied().unwrap_or_default();
    let subcommand: Vec<&str> = args
        .iter()
        .take_while(|a| !a.starts_with('-'))
        .copied()
        .collect();
    let run_help = help(binary, &subcommand);
    // Variables reach every process in the container, including the client commands docs/deploy.md
    // runs there with `kubectl exec`.
    let mut env_help = run_help.clone();
    if binary == "portcullis-cp" {
        env_help += &help(binary, &["token", "create"]);
        env_help += &help(binary, &["ca", "show"]);
    }
    let flags = words(&run_help, "--", flag_char);
    let vars = words(&env_help, "env: ", var_char);
    let mut unknown = Vec::new();
    for arg in args.iter().filter(|a| a.starts_with("--")) {
        let flag = arg[2..].split('=').next().unwrap_or_default();
        if !flags.contains(flag) {
            unknown.push(format!("{binary} {}: --{flag}", subcommand.join(" ")));
        }
    }
    let names = container["env"].as_array().into_iter().flatten();
    for name in names.filter_map(|e| e["name"].as_str()) {
        if name.starts_with("PORTCULLIS_") && !vars.contains(name) {
            unknown.push(format!("{binary}: {name}"));
        }
    }
    unknown
}

#[test]
fn every_flag_and_variable_the_manifests_use_is_in_the_binaries_help() {
    let all = rendered();
    let mut seen = BTreeSet::new();
    for (set, objs) in &all {
        for o in objs.as_array().expect("a list") {
            for c in containers(o) {
                let binary = strings(&c["command"]).first().copied().unwrap_or_default();
                assert!(
                    ["portcullis-cp", "portcullis-gw"].contains(&binary),
                    "{set}: {} runs {binary:?}",
                    o["metadata"]["name"]
                );
                seen.insert(binary.to_owned());
                assert_eq!(unknown_options(c), Vec::<String>::new(), "{set}");
            }
        }
    }
    assert_eq!(seen.len(), 2, "both binaries are deployed: {seen:?}");

    // The check catches a flag or a variable no binary has, and one given to the wrong binary.
    let base = objects(&all, "base");
    let mut cp = containers(find(&base, "Deployment", "portcullis-cp"))[0].clone();
    cp["args"]
        .as_array_mut()
        .unwrap()
        .push(json!("--no-such-flag=1"));
    cp["args"]
        .as_array_mut()
        .unwrap()
        .push(json!("--bootstrap-token"));
    cp["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "PORTCULLIS_NO_SUCH_VARIABLE", "value": "1"}));
    cp["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "PORTCULLIS_STATE_DIR", "value": "/x"}));
    assert_eq!(
        unknown_options(&cp),
        [
            "portcullis-cp serve: --no-such-flag",
            "portcullis-cp serve: --bootstrap-token",
            "portcullis-cp: PORTCULLIS_NO_SUCH_VARIABLE",
            "portcullis-cp: PORTCULLIS_STATE_DIR",
        ]
    );
}

#[test]
fn ports_names_probes_and_secrets_agree() {
    let all = rendered();
    let docs = std::fs::read_to_string(repo_root().join("docs/deploy.md")).expect("docs/deploy.md");
    for (set, objs) in &all {
        let objs = objs.as_array().expect("a list");
        let cp = find(objs, "Deployment", "portcullis-cp");
        let gw = find(objs, "Deployment", "portcullis-gw");
        let cpc = containers(cp)[0];
        let gwc = containers(gw)[0];

        // Listeners are where the container ports, probes and scrape annotations say.
        let listen = |c: &Value, var: &str| port_of(env(c, var).unwrap_or_else(|| panic!("{var}")));
        assert_eq!(
            listen(cpc, "PORTCULLIS_API_LISTEN"),
            container_port(cpc, "api")
        );
        assert_eq!(
            listen(cpc, "PORTCULLIS_SYNC_LISTEN"),
            container_port(cpc, "sync")
        );
        assert_eq!(
            listen(gwc, "PORTCULLIS_LISTEN"),
            container_port(gwc, "http")
        );
        assert_eq!(
            listen(gwc, "PORTCULLIS_TLS_LISTEN"),
            container_port(gwc, "https")
        );
        let admin = listen(gwc, "PORTCULLIS_ADMIN_LISTEN");
        assert_eq!(admin, container_port(gwc, "admin"));
        let annotations = &gw["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], admin.to_string());
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        assert_eq!(gwc["readinessProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(gwc["readinessProbe"]["httpGet"]["port"], "admin");
        for c in [cpc, gwc] {
            for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                if let Some(port) = c[probe]["httpGet"]["port"].as_str() {
                    container_port(c, port);
                }
            }
        }
        // Off loopback the API is served over TLS only (docs/operations.md), and probed so.
        assert!(
            !env(cpc, "PORTCULLIS_API_LISTEN")
                .unwrap()
                .starts_with("127.")
        );
        assert!(env(cpc, "PORTCULLIS_API_TLS_CERT").is_some());
        assert!(env(cpc, "PORTCULLIS_API_TLS_KEY").is_some());
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(cpc[probe]["httpGet"]["scheme"], "HTTPS", "{set} {probe}");
        }

        // Edges reach the sync port by the Service's name, which is in the sync certificate.
        let url = url::Url::parse(env(gwc, "PORTCULLIS_CONTROL_PLANE").unwrap()).unwrap();
        let service = find(objs, "Service", "portcullis-cp");
        assert_eq!(url.host_str(), service["metadata"]["name"].as_str());
        let names: Vec<&str> = env(cpc, "PORTCULLIS_SYNC_NAMES")
            .unwrap()
            .split(',')
            .collect();
        assert!(names.contains(&url.host_str().unwrap()), "{names:?}");
        let sync = service["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["targetPort"] == "sync")
            .expect("the Service exposes sync");
        assert_eq!(url.port().map(u64::from), sync["port"].as_u64());

        // Every Service and PodDisruptionBudget selects the pods of a Deployment, by name.
        for o in objs {
            let selector = match o["kind"].as_str() {
                Some("Service") => &o["spec"]["selector"],
                Some("PodDisruptionBudget") => &o["spec"]["selector"]["matchLabels"],
                _ => continue,
            };
            let target = find(objs, "Deployment", o["metadata"]["name"].as_str().unwrap());
            let labels = &target["spec"]["template"]["metadata"]["labels"];
            for (k, v) in selector.as_object().unwrap() {
                assert_eq!(&labels[k], v, "{set}: {} {k}", o["kind"]);
            }
            if o["kind"] == "Service" {
                let c = containers(target)[0];
                for p in o["spec"]["ports"].as_array().unwrap() {
                    container_port(c, p["targetPort"].as_str().unwrap());
                }
            }
        }

        // Every Secret the pods read is one docs/deploy.md tells how to create, key by key.
        for o in [cp, gw] {
            for c in containers(o) {
                for e in c["env"].as_array().unwrap() {
                    let r = &e["valueFrom"]["secretKeyRef"];
                    if let (Some(name), Some(key)) = (r["name"].as_str(), r["key"].as_str()) {
                        assert!(docs.contains(&format!("secret generic {name}")), "{name}");
                        assert!(
                            docs.contains(&format!("--from-literal={key}=")),
                            "{name} {key}"
                        );
                    }
                }
            }
            let spec = &o["spec"]["template"]["spec"];
            for v in spec["volumes"].as_array().unwrap() {
                let Some(name) = v["secret"]["secretName"].as_str() else {
                    continue;
                };
                assert!(docs.contains(&format!("secret generic {name}")), "{name}");
                // Each file of the Secret a variable names is one the docs put in it.
                for c in containers(o) {
                    let mounts = c["volumeMounts"].as_array().unwrap();
                    let Some(mount) = mounts.iter().find(|m| m["name"] == v["name"]) else {
                        continue;
                    };
                    let dir = format!("{}/", mount["mountPath"].as_str().unwrap());
                    for e in c["env"].as_array().unwrap() {
                        if let Some(file) = e["value"].as_str().and_then(|p| p.strip_prefix(&dir)) {
                            assert!(
                                docs.contains(&format!("--from-file={file}=")),
                                "{name} {file}"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test]
async fn the_probe_and_scrape_paths_answer_on_a_running_control_plane_and_gateway() {
    let all = rendered();
    let base = objects(&all, "base");
    let paths = |name: &str| -> Vec<String> {
        let c = containers(find(&base, "Deployment", name))[0];
        ["startupProbe", "readinessProbe", "livenessProbe"]
            .iter()
            .filter_map(|p| c[p]["httpGet"]["path"].as_str().map(str::to_owned))
            .collect()
    };
    let db = TestDb::new().await;
    let cp = Cp::start(&db.url).await;
    let dp = Dp::joined(&cp).await;
    let http = reqwest::Client::new();
    // The gateway's /ready turns 200 once its first configuration is applied.
    let get = |url: String| {
        let http = http.clone();
        async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
            loop {
                let resp = http.get(&url).send().await.expect("reachable");
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                if status == 200 || tokio::time::Instant::now() > deadline {
                    return (status, body);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    for path in paths("portcullis-cp") {
        let (status, body) = get(format!("http://{}{path}", cp.api_addr)).await;
        assert_eq!(status, 200, "control plane {path}: {body}");
    }
    let gw_paths = paths("portcullis-gw");
    assert!(gw_paths.contains(&"/ready".to_owned()), "{gw_paths:?}");
    for path in gw_paths {
        let (status, body) = get(format!("http://{}{path}", dp.admin_addr)).await;
        assert_eq!(status, 200, "gateway {path}: {body}");
    }
    let gw = find(&base, "Deployment", "portcullis-gw");
    let scrape = gw["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        .as_str()
        .unwrap();
    let (status, body) = get(format!("http://{}{scrape}", dp.admin_addr)).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("portcullis_gateway_applied_revision"),
        "{body}"
    );
}

/// The stages of a Dockerfile: each `FROM` line with the lines after it.
fn stages(dockerfile: &str) -> Vec<Vec<&str>> {
    let mut stages: Vec<Vec<&str>> = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        if line.starts_with("FROM ") {
            stages.push(Vec::new());
        }
        if let Some(stage) = stages.last_mut() {
            stage.push(line);
        }
    }
    stages
}

#[test]
fn the_dockerfile_builds_the_binaries_the_manifests_run_and_runs_them_unprivileged() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("Dockerfile");
    let stages = stages(&dockerfile);
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let build = stages[..stages.len() - 1].concat().join("\n");
    let runtime = stages.last().unwrap();
    assert!(
        build.contains("protobuf-compiler"),
        "protoc for portcullis-proto"
    );
    assert!(build.contains("cargo build --release --locked"));

    // The runtime stage is a slim image, given as a build argument.
    let runtime_image = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ARG RUNTIME_IMAGE="))
        .expect("ARG RUNTIME_IMAGE");
    assert!(runtime_image.contains("slim"), "{runtime_image}");
    assert_eq!(runtime[0], "FROM ${RUNTIME_IMAGE} AS runtime");

    // What it copies in is what the build built and what the manifests run.
    let copied: BTreeSet<&str> = runtime
        .iter()
        .filter(|l| l.starts_with("COPY --from=build "))
        .flat_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().skip(2).collect();
            assert_eq!(parts.last(), Some(&"/usr/local/bin/"), "{l}");
            parts[..parts.len() - 1].to_vec()
        })
        .map(|p| Path::new(p).file_name().and_then(|n| n.to_str()).unwrap())
        .collect();
    assert_eq!(copied, BTreeSet::from(["portcullis-cp", "portcullis-gw"]));
    for binary in &copied {
        assert!(build.contains(&format!("--bin {binary}")), "{binary}");
    }

    // The last USER is numeric and not root; the pods run as that user.
    let user = runtime
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    let uid: u64 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("numeric uid");
    assert_ne!(uid, 0);
    let all = rendered();
    for (set, objs) in &all {
        for o in objs.as_array().unwrap() {
            for c in containers(o) {
                let binary = strings(&c["command"])[0];
                assert!(
                    copied.contains(binary),
                    "{set}: {binary} is not in the image"
                );
            }
            if o["kind"] == "Deployment" {
                let security = &o["spec"]["template"]["spec"]["securityContext"];
                assert_eq!(security["runAsNonRoot"], true, "{set}");
                assert_eq!(security["runAsUser"].as_u64(), Some(uid), "{set}");
            }
        }
    }

    // The binaries stop cleanly on Ctrl-C, so that is the signal the runtime sends.
    assert!(runtime.contains(&"STOPSIGNAL SIGINT"));
    for main in ["control-plane/src/main.rs", "data-plane/src/main.rs"] {
        let source = std::fs::read_to_string(root.join(main)).unwrap();
        assert!(source.contains("signal::ctrl_c()"), "{main}");
    }

    let ignore = std::fs::read_to_string(root.join(".dockerignore")).expect(".dockerignore");
    let ignored: Vec<&str> = ignore.lines().map(str::trim).collect();
    for entry in ["target", ".git"] {
        assert!(
            ignored.contains(&entry),
            "{entry} stays out of the build context"
        );
    }
}
