//! Core micro-benchmarks: what the decision costs for the request shapes clients send, how that
//! grows with the number of configured registries and rewrite rules, and how long a large
//! configuration takes to parse (the filter's on_configure).
//!
//! `cargo bench --bench core` prints one markdown table; `-- NAME` runs only the cases whose
//! name contains NAME; `-- --profile NAME` runs that case for a fixed count of iterations
//! without timing, for `valgrind --tool=callgrind` (see BENCHMARKS.md).
//!
//! Each figure is the median of 7 samples of about 40 ms each, after a warm-up. The machine is
//! shared with whatever else runs, so compare figures of one run with each other.

use std::hint::black_box;
use std::time::{Duration, Instant};

use harbor_mirror_core::{decide, Config, Decision, Request};

const SAMPLES: usize = 7;
const SAMPLE_TIME: Duration = Duration::from_millis(40);
const PROFILE_ITERATIONS: u64 = 200_000;
const SIZES: [usize; 4] = [1, 10, 100, 1000];

/// The shipped example configuration with a host, an alias and a rewrite rule.
const TYPICAL: &str = r#"{
  "registries": {
    "docker.io": {
      "project": "dockerhub-proxy",
      "aliases": ["dockerhub"],
      "rewrite": {"^ksd-test/(.*)$": "production/ksd-test/$1"}
    },
    "quay.io": {"project": "quay-proxy", "hosts": ["quay.mirror.example.com"]},
    "ghcr.io": {"project": "ghcr-proxy"},
    "registry.k8s.io": {"project": "k8s-proxy"}
  },
  "default_registry": "docker.io",
  "passthrough_projects": ["production"]
}"#;

/// One request shape against one configuration.
struct Case {
    name: String,
    config: Config,
    method: &'static str,
    path: String,
    authority: String,
}

impl Case {
    fn new(name: impl Into<String>, config: Config, method: &'static str, path: impl Into<String>, authority: impl Into<String>) -> Self {
        Case { name: name.into(), config, method, path: path.into(), authority: authority.into() }
    }

    /// Decides once and checks the request was forwarded with a new path: a benchmark of a
    /// refusal or a pass-through would measure the wrong thing.
    fn check(&self) -> Result<String, String> {
        match decide(&self.config, &self.request()) {
            Decision::Forward { path: Some(path), .. } => Ok(path),
            other => Err(format!("{}: expected a rewrite, got {other}", self.name)),
        }
    }

    fn request(&self) -> Request<'_> {
        Request { method: self.method, path: &self.path, authority: &self.authority }
    }

    /// Not inlined: callgrind counts inside this function only (`--toggle-collect`).
    #[inline(never)]
    fn run_once(&self) {
        let request = black_box(self.request());
        black_box(decide(black_box(&self.config), &request));
    }
}

fn config(json: &str) -> Config {
    match Config::from_json(json.as_bytes()) {
        Ok(config) => config,
        Err(e) => panic!("benchmark configuration is invalid: {e}\n{json}"),
    }
}

/// `n` registries `r<i>.example.com`, each with a project, a host and an alias.
fn registries_json(n: usize) -> String {
    let registries: Vec<String> = (0..n)
        .map(|i| format!(r#""r{i}.example.com": {{"project": "proxy-{i}", "hosts": ["r{i}.mirror.example.com"], "aliases": ["r{i}"]}}"#))
        .collect();
    format!(r#"{{"registries": {{{}}}, "default_registry": "r{}.example.com"}}"#, registries.join(", "), n - 1)
}

/// docker.io with `n` rewrite rules `^team<j>/(.*)$` -> `production/team<j>/$1`.
fn rules_json(n: usize) -> String {
    let rules: Vec<String> = (0..n).map(|j| format!(r#""^team{j}/(.*)$": "production/team{j}/$1""#)).collect();
    format!(
        r#"{{"registries": {{"docker.io": {{"project": "dockerhub-proxy", "rewrite": {{{}}}}}}}, "default_registry": "docker.io", "passthrough_projects": ["production"]}}"#,
        rules.join(", ")
    )
}

fn cases() -> Vec<Case> {
    let mirror = "mirror.example.com:5000";
    let mut cases = vec![
        Case::new("shape: containerd ns", config(TYPICAL), "HEAD", "/v2/library/nginx/manifests/latest?ns=docker.io", mirror),
        Case::new("shape: docker default", config(TYPICAL), "GET", "/v2/library/nginx/manifests/latest", mirror),
        Case::new("shape: docker single name (library/)", config(TYPICAL), "GET", "/v2/nginx/manifests/latest", mirror),
        Case::new("shape: alias", config(TYPICAL), "GET", "/dockerhub/v2/library/nginx/manifests/latest", mirror),
        Case::new("shape: host", config(TYPICAL), "GET", "/v2/coreos/etcd/manifests/v3.5.0", "quay.mirror.example.com"),
        Case::new("shape: regex rule", config(TYPICAL), "GET", "/v2/ksd-test/app/manifests/1.0", mirror),
        Case::new(
            "shape: token scope",
            config(TYPICAL),
            "GET",
            "/service/token?scope=repository%3Alibrary%2Fnginx%3Apull&service=harbor-registry",
            mirror,
        ),
    ];
    for n in SIZES {
        let last = n - 1;
        let json = registries_json(n);
        let path = "/v2/library/nginx/manifests/latest";
        cases.push(Case::new(format!("registries {n}: ns"), config(&json), "HEAD", format!("{path}?ns=r{last}.example.com"), mirror));
        cases.push(Case::new(format!("registries {n}: host"), config(&json), "GET", path, format!("r{last}.mirror.example.com")));
        cases.push(Case::new(format!("registries {n}: alias"), config(&json), "GET", format!("/r{last}{path}"), mirror));
        cases.push(Case::new(format!("registries {n}: default"), config(&json), "GET", path, mirror));
    }
    for n in SIZES {
        let json = rules_json(n);
        cases.push(Case::new(
            format!("rules {n}: last rule matches"),
            config(&json),
            "GET",
            format!("/v2/team{}/app/manifests/1.0", n - 1),
            mirror,
        ));
        cases.push(Case::new(format!("rules {n}: no rule matches"), config(&json), "GET", "/v2/library/nginx/manifests/latest", mirror));
    }
    cases
}

/// Median nanoseconds per call of `f`.
fn measure(mut f: impl FnMut()) -> f64 {
    let mut iterations: u64 = 1;
    loop {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        if start.elapsed() >= SAMPLE_TIME / 4 {
            break;
        }
        iterations *= 2;
    }
    iterations *= 4;
    let mut samples: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / iterations as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[SAMPLES / 2]
}

/// Median milliseconds to parse and compile `json` (a few runs: large ones are slow).
fn measure_parse(json: &str) -> f64 {
    let mut samples: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            black_box(config(black_box(json)));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[2]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|arg| arg != "--bench").collect();
    if let [flag, name] = args.as_slice()
        && flag == "--profile"
    {
        let Some(case) = cases().into_iter().find(|case| case.name == *name) else {
            panic!("no case named {name:?}");
        };
        for _ in 0..PROFILE_ITERATIONS {
            case.run_once();
        }
        return;
    }
    let filter = args.first().cloned().unwrap_or_default();

    println!("| case | ns per decision | rewritten path |");
    println!("|---|---:|---|");
    for case in cases().iter().filter(|case| case.name.contains(&filter)) {
        let path = case.check().unwrap_or_else(|e| panic!("{e}"));
        let ns = measure(|| case.run_once());
        println!("| {} | {ns:.0} | `{path}` |", case.name);
    }
    if !"configure".contains(&filter) && !filter.is_empty() {
        return;
    }
    println!();
    println!("| configuration (on_configure's parse and compile) | bytes | ms |");
    println!("|---|---:|---:|");
    for n in SIZES {
        let json = registries_json(n);
        println!("| configure: {n} registries | {} | {:.2} |", json.len(), measure_parse(&json));
    }
    for n in SIZES {
        let json = rules_json(n);
        println!("| configure: {n} rewrite rules | {} | {:.2} |", json.len(), measure_parse(&json));
    }
}
