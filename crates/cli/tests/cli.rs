//! The `harbor-mirror` command line, run as a user runs it: exit statuses, what goes to stdout
//! and stderr, and the README's client recipes being exactly what `clients` prints.
#![cfg(not(target_arch = "wasm32"))]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harbor-mirror"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("harbor-mirror runs");
    // A command that fails before reading stdin closes it: the pipe breaks, which is fine.
    match child.stdin.take().expect("stdin").write_all(stdin.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => panic!("stdin not written: {e}"),
        _ => {}
    }
    child.wait_with_output().expect("harbor-mirror exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const CONFIG: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-proxy"}}, "default_registry": "docker.io"}"#;

/// What Higress hands the plugin for a `matchRules` entry on Harbor's domain.
const HIGRESS: &str = r#"{"_rules_": [{"_match_domain_": ["harbor.example.com"], "registries": {"docker.io": {"project": "dockerhub-proxy"}}, "default_registry": "docker.io"}]}"#;

/// What a stream must hold.
#[derive(Debug)]
enum Out {
    /// Nothing at all.
    Empty,
    /// Exactly this.
    Is(&'static str),
    /// This, among the rest.
    Has(&'static str),
}

impl Out {
    fn holds(&self, text: &str) -> bool {
        match self {
            Empty => text.is_empty(),
            Is(want) => text == *want,
            Has(want) => text.contains(want),
        }
    }
}

use Out::{Empty, Has, Is};

/// The repository's own Envoy configuration and Kubernetes resources, as users hold them.
fn shipped(file: &str) -> String {
    format!("{}/../../envoy/{file}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn each_command_answers_with_its_exit_status() {
    let bootstrap = shipped("harbor-mirror.yaml");
    let istio = shipped("istio/wasmplugin.yaml");
    let higress = shipped("higress/wasmplugin.yaml");
    let gateway = shipped("envoy-gateway/envoyextensionpolicy.yaml");
    // (args, stdin, status, stdout, stderr)
    let cases: Vec<(Vec<&str>, &str, i32, Out, Out)> = vec![
        (vec!["check", "-"], CONFIG, 0, Is("-: ok, 1 registry (docker.io), default docker.io, pass-through token auth\n"), Empty),
        (vec!["check", "-"], "{}", 1, Empty, Is("harbor-mirror: invalid configuration: registries: is required (or discover, to read them from harbor)\n")),
        (vec!["check", "-"], r#"{"registries": {"quay.io": {"projct": "q"}}}"#, 1, Empty, Has("invalid configuration: registries[\"quay.io\"]: unknown field `projct`")),
        (vec!["check", "-"], "not json", 1, Empty, Is("harbor-mirror: invalid configuration: configuration: expected ident at line 1 column 2\n")),
        (vec!["check", "/nonexistent.json"], "", 1, Empty, Has("harbor-mirror: /nonexistent.json: No such file")),
        (vec!["check"], "", 2, Empty, Has("check takes 1 argument(s), got 0\nusage: harbor-mirror check FILE")),
        (vec!["check", "--", "-"], CONFIG, 0, Has("-: ok, 1 registry"), Empty),
        (vec!["check", "-", "--bogus"], CONFIG, 2, Empty, Has("invalid option '--bogus'\nusage: harbor-mirror check FILE")),
        (vec!["check", "--host", "h", "-"], CONFIG, 2, Empty, Has("invalid option '--host'")),
        (vec!["check", "--help"], "", 0, Has("usage: harbor-mirror check FILE\n"), Empty),
        // The files users have: an Envoy bootstrap, Istio, Higress and Envoy Gateway resources.
        (vec!["check", &bootstrap], "", 0, Has(".http_filters[0].typed_config.config.configuration): ok, 4 registries"), Empty),
        (vec!["check", &istio], "", 0, Has("(Istio WasmPlugin harbor-mirror, spec.pluginConfig): ok, 4 registries"), Empty),
        (vec!["check", &higress], "", 0, Has("matchRules as Higress hands them over): ok for harbor.example.com, 4 registries"), Empty),
        (vec!["check", &gateway], "", 0, Has("(EnvoyExtensionPolicy harbor-mirror, spec.wasm[0].config): ok, 4 registries"), Empty),
        (vec!["check", "-"], "kind: Deployment\nspec: {}\n", 1, Empty, Has("-: found no filter configuration")),
        (vec!["explain", &bootstrap, "GET /v2/library/alpine/manifests/3.19"], "", 0, Has("path:     /v2/dockerhub-proxy/library/alpine/manifests/3.19\n"), Empty),
        (
            vec!["explain", "-", "GET /v2/nginx/manifests/1", "--host", "mirror:5000"],
            CONFIG,
            0,
            Has("registry: docker.io (selected by default_registry)\nrule:     project \"dockerhub-proxy\"\npath:     /v2/dockerhub-proxy/library/nginx/manifests/1\n"),
            Empty,
        ),
        (vec!["explain", "-", "PUT /v2/nginx/manifests/1"], CONFIG, 0, Has("decision: refuse, 405 UNSUPPORTED"), Empty),
        (vec!["check", "-"], HIGRESS, 0, Has("-: ok for harbor.example.com, 1 registry (docker.io), default docker.io"), Empty),
        (vec!["explain", "-", "GET /v2/nginx/manifests/1", "--host", "harbor.example.com:443"], HIGRESS, 0, Has("path:     /v2/dockerhub-proxy/library/nginx/manifests/1"), Empty),
        (vec!["explain", "-", "GET /v2/nginx/manifests/1", "--host", "grafana.example.com"], HIGRESS, 0, Has("decision: not this plugin's"), Empty),
        (vec!["explain", "-", "/v2/"], CONFIG, 2, Empty, Has("expected 'METHOD PATH'")),
        (vec!["explain", "--help"], "", 0, Has("--host HOST"), Empty),
        (vec!["import-k3s", "-"], "mirrors:\n  quay.io:\n    rewrite:\n      \"(.*)\": \"quay-proxy/$1\"\n", 0, Has("\"quay.io\": {\"project\": \"quay-proxy\"}"), Has("no docker.io mirror")),
        (vec!["import-k3s", "-"], "mirrors: {\n", 1, Empty, Has("-: registries.yaml: line 1 column 10: unclosed bracket")),
        (vec!["clients", "--mirror=http://m:5000", "--only", "docker"], "", 0, Is("{\"registry-mirrors\": [\"http://m:5000\"]}\n"), Empty),
        (vec!["clients"], "", 2, Empty, Has("--mirror URL is required")),
        (vec!["clients", "--mirror", "m:5000"], "", 2, Empty, Has("an http:// or https:// URL is required")),
        (vec!["clients", "--mirror", "http://m", "--only", "nerdctl"], "", 2, Empty, Has("--only \"nerdctl\": no such recipe")),
        (vec!["clients", "--mirror"], "", 2, Empty, Has("missing argument for option '--mirror'")),
        (vec!["frobnicate"], "", 2, Empty, Has("unknown command \"frobnicate\"")),
        (vec!["--help"], "", 0, Has("commands:\n  check FILE"), Empty),
        (vec!["help", "import-k3s"], "", 0, Has("usage: harbor-mirror import-k3s REGISTRIES_YAML"), Empty),
        (vec![], "", 2, Empty, Has("a command is required")),
    ];
    let mut failures = Vec::new();
    for (args, stdin, status, stdout, stderr) in &cases {
        let output = run(args, stdin);
        let (out, err) = (text(&output.stdout), text(&output.stderr));
        if output.status.code() != Some(*status) || !stdout.holds(&out) || !stderr.holds(&err) {
            failures.push(format!(
                "  {args:?}: status {:?} (want {status}), stdout {out:?} (want {stdout:?}), stderr {err:?} (want {stderr:?})",
                output.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} command lines failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// The README's recipes are `clients --mirror http://mirror.example.com:5000` (the suite runs
/// the same command for its own address).
#[test]
fn readme_client_recipes_are_what_clients_prints() {
    let readme = include_str!("../../../README.md");
    let recipes = [("docker", "json"), ("containerd", "toml"), ("containerd-default", "toml"), ("containers", "toml"), ("k3s", "yaml")];
    for (recipe, language) in recipes {
        let output = run(&["clients", "--mirror", "http://mirror.example.com:5000", "--only", recipe], "");
        assert!(output.status.success(), "{recipe}");
        let block = format!("```{language}\n{}```\n", text(&output.stdout));
        assert!(readme.contains(&block), "README.md lacks the {recipe} recipe as clients prints it:\n{block}");
    }
}
