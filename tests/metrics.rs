//! The one table of metrics against what the README's Metrics section tells users: the same
//! names, each of the same kind, no more and no fewer. Runs natively and under
//! wasm-bindgen-test (the README is compiled in).

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::host::MetricKind;
use harbor_mirror_core::metrics::{in_namespace, registry_rewritten, METRICS, NAMESPACE};

const README: &str = include_str!("../README.md");

/// The metrics the README's section `## Metrics` lists, with the kind of the table each is in.
fn documented() -> Vec<(String, MetricKind)> {
    let start = README.find("\n## Metrics\n").unwrap_or_else(|| panic!("the README has no Metrics section"));
    let section = &README[start + 1..];
    let section = &section[..section[1..].find("\n## ").map_or(section.len(), |end| end + 1)];
    let mut kind = None;
    let mut found = Vec::new();
    for line in section.lines() {
        if line.starts_with("| counter |") {
            kind = Some(MetricKind::Counter);
        } else if line.starts_with("| gauge |") {
            kind = Some(MetricKind::Gauge);
        } else if let (Some(kind), Some(rest)) = (kind, line.strip_prefix("| `")) {
            let name = rest.split('`').next().unwrap_or_default();
            found.push((name.to_owned(), kind));
        } else if !line.starts_with('|') {
            kind = None;
        }
    }
    found
}

#[test]
fn the_readme_lists_exactly_the_metrics_of_the_table() {
    let mut documented = documented();
    let mut defined: Vec<(String, MetricKind)> = METRICS.iter().map(|def| (def.name.to_owned(), def.kind)).collect();
    documented.sort_by(|a, b| a.0.cmp(&b.0));
    defined.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(documented, defined, "README.md's Metrics section against harbor_mirror_core::metrics::METRICS");
}

#[test]
fn every_name_is_in_the_namespace_and_the_family_names_each_registry() {
    for def in METRICS {
        assert!(def.name.starts_with(&format!("{NAMESPACE}.")), "{} is outside {NAMESPACE}", def.name);
        assert_eq!(format!("{NAMESPACE}.{}", in_namespace(def.name)), def.name);
        assert!(!def.help.is_empty(), "{} has no help", def.name);
    }
    assert_eq!(registry_rewritten("quay.io"), "harbor_mirror.registry.quay.io.rewritten");
    assert_eq!(METRICS.iter().filter(|def| def.label.is_some()).count(), 1, "one family");
}
