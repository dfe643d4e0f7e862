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
    child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("stdin written");
    child.wait_with_output().expect("harbor-mirror exits")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const CONFIG: &str = r#"{"registries": {"docker.io": {"project": "dockerhub-proxy"}}, "default_registry": "docker.io"}"#;

/// What Higress hands the plugin for a `matchRules` entry on Harbor's domain.
const HIGRESS: &str = r#"{"_rules_": [{"_match_domain_": ["harbor.example.com"], "registries": {"docker.io": {"project": "dockerhub-proxy"}}, "default_registry": "docker.io"}]}"#;

#[test]
fn each_command_answers_with_its_exit_status() {
    // (args, stdin, status, text in stdout, text in stderr)
    let cases: &[(&[&str], &str, i32, &str, &str)] = &[
        (&["check", "-"], CONFIG, 0, "-: ok, 1 registry (docker.io), default docker.io, pass-through token auth", ""),
        (&["check", "-"], "{}", 1, "", "harbor-mirror: invalid configuration: configuration: missing field `registries`"),
        (&["check", "-"], r#"{"registries": {"quay.io": {"projct": "q"}}}"#, 1, "", "registries[\"quay.io\"]: unknown field `projct`"),
        (&["check", "/nonexistent.json"], "", 1, "", "harbor-mirror: /nonexistent.json: "),
        (&["check"], "", 2, "", "expected check CONFIG"),
        (
            &["explain", "-", "GET /v2/nginx/manifests/1", "--host", "mirror:5000"],
            CONFIG,
            0,
            "registry: docker.io (selected by default_registry)\nrule:     project \"dockerhub-proxy\"\npath:     /v2/dockerhub-proxy/library/nginx/manifests/1\n",
            "",
        ),
        (&["explain", "-", "PUT /v2/nginx/manifests/1"], CONFIG, 0, "decision: refuse, 405 UNSUPPORTED", ""),
        (&["check", "-"], HIGRESS, 0, "-: ok for harbor.example.com, 1 registry (docker.io), default docker.io", ""),
        (&["explain", "-", "GET /v2/nginx/manifests/1", "--host", "harbor.example.com:443"], HIGRESS, 0, "path:     /v2/dockerhub-proxy/library/nginx/manifests/1", ""),
        (&["explain", "-", "GET /v2/nginx/manifests/1", "--host", "grafana.example.com"], HIGRESS, 0, "decision: not this plugin's", ""),
        (&["explain", "-", "/v2/"], CONFIG, 2, "", "expected 'METHOD PATH'"),
        (&["import-k3s", "-"], "mirrors:\n  quay.io:\n    rewrite:\n      \"(.*)\": \"quay-proxy/$1\"\n", 0, "\"quay.io\": {\"project\": \"quay-proxy\"}", "no docker.io mirror"),
        (&["import-k3s", "-"], "mirrors: {\n", 1, "", "line 1: "),
        (&["clients", "--mirror=http://m:5000", "--only", "docker"], "", 0, "{\"registry-mirrors\": [\"http://m:5000\"]}\n", ""),
        (&["clients"], "", 2, "", "--mirror URL is required"),
        (&["clients", "--mirror", "m:5000"], "", 2, "", "an http:// or https:// URL is required"),
        (&["clients", "--mirror", "http://m", "--only", "nerdctl"], "", 2, "", "--only \"nerdctl\": no such recipe"),
        (&["frobnicate"], "", 2, "", "unknown command \"frobnicate\""),
    ];
    for (args, stdin, status, stdout, stderr) in cases {
        let output = run(args, stdin);
        let (out, err) = (text(&output.stdout), text(&output.stderr));
        assert_eq!(output.status.code(), Some(*status), "{args:?}\nstdout: {out}\nstderr: {err}");
        assert!(out.contains(stdout), "{args:?}: wanted {stdout:?} in stdout:\n{out}");
        assert!(err.contains(stderr), "{args:?}: wanted {stderr:?} in stderr:\n{err}");
    }
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
