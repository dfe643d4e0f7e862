//! `harbor-mirror discover`: the mapping the filter would read from Harbor's API, read with the
//! filter's own refresh machine (the core's `discovery::refresh`) and printed as a static
//! configuration, to inspect it or freeze it.

use std::time::Duration;

use harbor_mirror_core::config::DOCKER_HUB;
use harbor_mirror_core::discovery::mapping::Built;
use harbor_mirror_core::discovery::refresh::{ApiAnswer, Refresh, Step};
use serde::Deserialize;
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

/// A robot's credentials, as `--robot-file` holds them (the configuration's `robot` object).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Robot {
    pub username: String,
    pub password: String,
}

/// How long each API call may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// Reads Harbor's proxy-cache projects at `harbor` (its URL), as `robot` or anonymously.
pub fn discover(harbor: &str, robot: Option<&Robot>, ca_pem: Option<&[u8]>) -> Result<Built, String> {
    let base = harbor.trim_end_matches('/');
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(format!("{harbor}: an http:// or https:// URL of harbor is required"));
    }
    let mut tls = TlsConfig::builder();
    if let Some(pem) = ca_pem {
        let certificate = Certificate::from_pem(pem).map_err(|e| format!("--ca-file: {e}"))?;
        tls = tls.root_certs(RootCerts::new_with_certs(&[certificate]));
    }
    let agent: Agent = Agent::config_builder().http_status_as_error(false).timeout_global(Some(TIMEOUT)).tls_config(tls.build()).build().into();
    let authorization = robot.map(|robot| {
        let credentials = format!("{}:{}", robot.username, robot.password);
        format!("Basic {}", base64(credentials.as_bytes()))
    });
    let mut refresh = Refresh::default();
    let mut actions = refresh.start(robot.map(|robot| robot.username.as_str()));
    for call in 1.. {
        match actions.pop() {
            Some(Step::Dispatch { path }) => {
                let _ = refresh.dispatched(Ok(call));
                let mut request = agent.get(format!("{base}{path}")).header("accept", "application/json");
                if let Some(authorization) = &authorization {
                    request = request.header("authorization", authorization);
                }
                actions = match request.call() {
                    Ok(mut response) => {
                        let status = u32::from(response.status().as_u16());
                        let header = |name: &str| response.headers().get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
                        let next_link = header("link").is_some_and(|link| link.contains("rel=\"next\""));
                        let total = header("x-total-count").and_then(|total| total.trim().parse().ok());
                        let body = response.body_mut().read_to_vec().map_err(|e| format!("{base}{path}: {e}"))?;
                        refresh.on_answer(call, ApiAnswer { status: Some(status), body: &body, next_link, total })
                    }
                    Err(e) => {
                        eprintln!("harbor-mirror discover: {base}{path}: {e}");
                        refresh.on_answer(call, ApiAnswer { status: None, body: b"", next_link: false, total: None })
                    }
                };
            }
            Some(Step::Publish(built)) => return Ok(built),
            Some(Step::Failed(message)) => return Err(message),
            None => break,
        }
    }
    Err("the refresh ended without a mapping".to_owned())
}

/// The configuration the filter would build: the discovered registries, Docker Hub's as the
/// default when there is one.
pub fn configuration(built: &Built) -> String {
    let default = built.mapping.project_of(DOCKER_HUB).map(|_| format!(",\n  \"default_registry\": \"{DOCKER_HUB}\"")).unwrap_or_default();
    format!("{{\n  \"registries\": {}{default}\n}}\n", built.mapping.to_registries_json())
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            out.push(if i <= chunk.len() { char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]) } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use harbor_mirror_core::discovery::Mapping;

    #[test]
    fn the_configuration_defaults_to_docker_hub_when_harbor_caches_it() {
        let built = |entries: &[(&str, &str)]| Built {
            mapping: Mapping { entries: entries.iter().map(|(k, p)| ((*k).to_owned(), (*p).to_owned())).collect() },
            warnings: Vec::new(),
        };
        assert_eq!(
            configuration(&built(&[("docker.io", "hub"), ("quay.io", "q")])),
            "{\n  \"registries\": {\"docker.io\": {\"project\": \"hub\"}, \"quay.io\": {\"project\": \"q\"}},\n  \"default_registry\": \"docker.io\"\n}\n"
        );
        assert_eq!(configuration(&built(&[("quay.io", "q")])), "{\n  \"registries\": {\"quay.io\": {\"project\": \"q\"}}\n}\n");
        assert_eq!(base64(b"robot$m:pw"), "cm9ib3QkbTpwdw==");
    }
}
