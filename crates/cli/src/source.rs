//! Where the filter's configuration is in the files users have: the plugin's JSON itself, an
//! Envoy bootstrap (YAML or JSON) with the `harbor_mirror` wasm filter, an Istio `WasmPlugin`, an
//! Envoy Gateway `EnvoyExtensionPolicy` or a Higress `WasmPlugin` (whose `defaultConfig` and
//! `matchRules` become the one document Higress hands the plugin).

use serde_json::{Map, Value};

use crate::yaml;

/// The filter's root id, which its Envoy filter, `WasmPlugin` and policy entries name.
const ROOT_ID: &str = "harbor_mirror";
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE_TYPE: &str = "type.googleapis.com/google.protobuf.StringValue";

/// One filter configuration found in a file.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    /// Where in the file, for messages; empty when the file is the configuration.
    pub place: String,
    /// The JSON document the filter is handed.
    pub json: Vec<u8>,
}

/// The filter configurations in a file. A file that is JSON, or none of the files above, is the
/// plugin's configuration itself: the filter's own reader says what is wrong with it.
pub fn find(bytes: &[u8]) -> Result<Vec<Found>, String> {
    let whole = || vec![Found { place: String::new(), json: bytes.to_vec() }];
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        let found = in_document(&value)?;
        return Ok(if found.is_empty() { whole() } else { found });
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Ok(whole());
    };
    let documents = match yaml::parse_all(text) {
        Ok(documents) => documents,
        // Not YAML either: the filter's reader says where the JSON goes wrong.
        Err(_) if looks_like_json(text) => return Ok(whole()),
        Err(e) => return Err(format!("not JSON, and not YAML: {e}")),
    };
    let mut found = Vec::new();
    for document in &documents {
        if is_plugin_config(document) {
            // The plugin's configuration written as YAML.
            found.push(self::found(String::new(), document));
        } else {
            found.extend(in_document(document)?);
        }
    }
    if found.is_empty() {
        if documents.iter().all(|document| !document.is_object()) {
            return Ok(whole());
        }
        return Err(format!(
            "found no filter configuration: looked for the plugin's JSON (with registries or _rules_), an Envoy bootstrap with \
             the {ROOT_ID} wasm filter, an Istio or Higress WasmPlugin and an Envoy Gateway EnvoyExtensionPolicy"
        ));
    }
    Ok(found)
}

fn looks_like_json(text: &str) -> bool {
    text.trim_start().starts_with(['{', '['])
}

/// The configurations in one document.
fn in_document(document: &Value) -> Result<Vec<Found>, String> {
    let Some(object) = document.as_object() else {
        return Ok(Vec::new());
    };
    let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("");
    let name = object.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("(unnamed)");
    let spec = object.get("spec");
    match (text("kind"), text("apiVersion")) {
        ("WasmPlugin", api) if api.starts_with("extensions.istio.io/") => {
            let config = spec.and_then(|spec| spec.get("pluginConfig")).ok_or_else(|| format!("Istio WasmPlugin {name}: has no spec.pluginConfig"))?;
            Ok(vec![found(format!("Istio WasmPlugin {name}, spec.pluginConfig"), config)])
        }
        ("WasmPlugin", api) if api.starts_with("extensions.higress.io/") => {
            let envelope = spec.and_then(higress_envelope).ok_or_else(|| format!("Higress WasmPlugin {name}: has neither defaultConfig nor matchRules"))?;
            Ok(vec![found(format!("Higress WasmPlugin {name}, defaultConfig and matchRules as Higress hands them over"), &envelope)])
        }
        ("EnvoyExtensionPolicy", _) => {
            let entries = spec.and_then(|spec| spec.get("wasm")).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
            let ours = |entry: &&Value| entry.get("rootID").and_then(Value::as_str).is_none_or(|root| root == ROOT_ID);
            let found: Vec<Found> = entries
                .iter()
                .enumerate()
                .filter(|(_, entry)| ours(entry))
                .filter_map(|(i, entry)| Some(found(format!("EnvoyExtensionPolicy {name}, spec.wasm[{i}].config"), entry.get("config")?)))
                .collect();
            if found.is_empty() {
                return Err(format!("EnvoyExtensionPolicy {name}: no spec.wasm entry with rootID {ROOT_ID} and a config"));
            }
            Ok(found)
        }
        _ if is_plugin_config(document) => Ok(Vec::new()),
        _ => {
            let mut found = Vec::new();
            wasm_filters(document, &mut String::new(), &mut found)?;
            Ok(found)
        }
    }
}

/// Whether a document is the plugin's configuration itself.
fn is_plugin_config(document: &Value) -> bool {
    document.as_object().is_some_and(|object| object.contains_key("registries") || object.contains_key("_rules_"))
}

fn found(place: String, config: &Value) -> Found {
    Found { place, json: config.to_string().into_bytes() }
}

/// Every `harbor_mirror` wasm filter of an Envoy configuration, walked depth first; `path` is
/// where the walk is (`static_resources.listeners[0]...`).
fn wasm_filters(value: &Value, path: &mut String, found: &mut Vec<Found>) -> Result<(), String> {
    let len = path.len();
    match value {
        Value::Object(object) => {
            if object.get("@type").and_then(Value::as_str) == Some(WASM_FILTER_TYPE)
                && let Some(config) = object.get("config")
                && is_ours(config)
            {
                found.push(Found { place: format!("{path}.config.configuration"), json: configuration(config, path)? });
                return Ok(());
            }
            for (key, child) in object {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                wasm_filters(child, path, found)?;
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push_str(&format!("[{i}]"));
                wasm_filters(child, path, found)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Whether a wasm filter's `config` is this filter's: its root id, or its name.
fn is_ours(config: &Value) -> bool {
    [config.get("root_id"), config.get("name")].into_iter().flatten().any(|id| id.as_str() == Some(ROOT_ID))
}

/// The plugin configuration of a wasm filter's `config`: a `StringValue`'s text.
fn configuration(config: &Value, path: &str) -> Result<Vec<u8>, String> {
    let place = format!("{path}.config.configuration");
    let configuration = config.get("configuration").ok_or_else(|| format!("{place}: missing (the filter needs a configuration)"))?;
    if configuration.get("@type").and_then(Value::as_str) != Some(STRING_VALUE_TYPE) {
        return Err(format!("{place}: expected a {STRING_VALUE_TYPE}, as the filter reads it"));
    }
    match configuration.get("value") {
        Some(Value::String(text)) => Ok(text.clone().into_bytes()),
        _ => Err(format!("{place}.value: expected the configuration's JSON text")),
    }
}

/// The one document Higress's controller makes of `defaultConfig` and `matchRules`: each rule's
/// `config` with its match keys under `_rules_`, and the default configuration (unless
/// `defaultConfigDisable`) around them.
fn higress_envelope(spec: &Value) -> Option<Value> {
    let mut rules = Vec::new();
    for rule in spec.get("matchRules").and_then(Value::as_array).into_iter().flatten() {
        if rule.get("configDisable").and_then(Value::as_bool) == Some(true) {
            continue;
        }
        let mut entry = Map::new();
        for (key, match_key) in [("domain", "_match_domain_"), ("service", "_match_service_"), ("ingress", "_match_route_")] {
            if let Some(value) = rule.get(key).filter(|value| !is_empty(value)) {
                entry.insert(match_key.to_owned(), value.clone());
            }
        }
        if let Some(Value::Object(config)) = rule.get("config") {
            entry.extend(config.clone());
        }
        rules.push(Value::Object(entry));
    }
    let disabled = spec.get("defaultConfigDisable").and_then(Value::as_bool) == Some(true);
    let mut envelope = match spec.get("defaultConfig") {
        Some(Value::Object(config)) if !disabled => config.clone(),
        _ => Map::new(),
    };
    if !rules.is_empty() {
        envelope.insert("_rules_".to_owned(), Value::Array(rules));
    }
    (!envelope.is_empty()).then_some(Value::Object(envelope))
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::String(text) => text.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"registries": {"docker.io": {"project": "p"}}}"#;

    /// Each configuration found, as (place, JSON text).
    type Places = Result<Vec<(String, String)>, String>;

    fn places(bytes: &str) -> Places {
        let found = find(bytes.as_bytes())?;
        Ok(found.into_iter().map(|f| (f.place, String::from_utf8(f.json).unwrap_or_default())).collect())
    }

    #[test]
    fn each_kind_of_file_gives_its_configuration() {
        let bootstrap = format!(
            "static_resources:\n  listeners:\n  - filter_chains:\n    - filters:\n      - typed_config:\n          http_filters:\n          - name: other\n            typed_config:\n              \"@type\": {WASM_FILTER_TYPE}\n              config: {{root_id: other, configuration: {{\"@type\": {STRING_VALUE_TYPE}, value: x}}}}\n          - name: envoy.filters.http.wasm\n            typed_config:\n              \"@type\": {WASM_FILTER_TYPE}\n              config:\n                root_id: harbor_mirror\n                configuration:\n                  \"@type\": {STRING_VALUE_TYPE}\n                  value: '{CONFIG}'\n"
        );
        let istio = "apiVersion: extensions.istio.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: m}\nspec:\n  pluginConfig:\n    registries: {docker.io: {project: p}}\n";
        let gateway = "apiVersion: gateway.envoyproxy.io/v1alpha1\nkind: EnvoyExtensionPolicy\nmetadata: {name: m}\nspec:\n  wasm:\n  - rootID: other\n    config: {x: 1}\n  - rootID: harbor_mirror\n    config: {registries: {docker.io: {project: p}}}\n";
        let higress = "apiVersion: extensions.higress.io/v1alpha1\nkind: WasmPlugin\nmetadata: {name: m}\nspec:\n  defaultConfigDisable: true\n  matchRules:\n  - domain: [h.example.com]\n    config: {registries: {docker.io: {project: p}}}\n";
        let plain = r#"{"registries": {"docker.io": {"project": "p"}}}"#;
        let compact = r#"{"registries":{"docker.io":{"project":"p"}}}"#;
        let rows: Vec<(&str, String, Places)> = vec![
            ("the plugin's JSON itself", plain.to_owned(), Ok(vec![(String::new(), plain.to_owned())])),
            ("not JSON: the filter's reader says so", "not json".to_owned(), Ok(vec![(String::new(), "not json".to_owned())])),
            ("an Envoy bootstrap", bootstrap, Ok(vec![(
                "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[1].typed_config.config.configuration".to_owned(),
                CONFIG.to_owned(),
            )])),
            ("an Istio WasmPlugin", istio.to_owned(), Ok(vec![("Istio WasmPlugin m, spec.pluginConfig".to_owned(), compact.to_owned())])),
            ("an EnvoyExtensionPolicy", gateway.to_owned(), Ok(vec![("EnvoyExtensionPolicy m, spec.wasm[1].config".to_owned(), compact.to_owned())])),
            ("a Higress WasmPlugin", higress.to_owned(), Ok(vec![(
                "Higress WasmPlugin m, defaultConfig and matchRules as Higress hands them over".to_owned(),
                r#"{"_rules_":[{"_match_domain_":["h.example.com"],"registries":{"docker.io":{"project":"p"}}}]}"#.to_owned(),
            )])),
            ("the plugin's configuration as YAML", "registries:\n  docker.io: {project: p}\n".to_owned(), Ok(vec![(String::new(), compact.to_owned())])),
            ("a YAML file of something else", "kind: Deployment\nspec: {}\n".to_owned(), Err("found no filter configuration".to_owned())),
        ];
        for (name, file, expected) in rows {
            let got = places(&file);
            match (&got, &expected) {
                (Err(got), Err(want)) => assert!(got.starts_with(want.as_str()), "{name}: {got}"),
                _ => assert_eq!(got, expected, "{name}"),
            }
        }
    }
}
