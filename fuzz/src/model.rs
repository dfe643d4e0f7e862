//! What both the decision and the token-scope checks stand on: the documented name mapping
//! (the model the filter is held to), the context of a failure, and what a refusal must be.

use std::fmt;

use harbor_mirror_core::config::Registry;
use harbor_mirror_core::oci;
use harbor_mirror_core::{Config, Decision, Refusal, Request, Rule};

use crate::text::has_line_break;

/// Harbor's token service path.
pub const TOKEN_PATH: &str = "/service/token";

/// The case being checked, for failure messages: the request, the configuration's name and
/// what was decided. Written out only when a check fails.
pub struct Ctx<'a> {
    config_name: &'a str,
    request: &'a Request<'a>,
    decision: &'a Decision<'a>,
}

impl<'a> Ctx<'a> {
    /// Describes `request` under configuration `config_name` and its `decision`.
    pub fn new(config_name: &'a str, request: &'a Request<'a>, decision: &'a Decision<'a>) -> Self {
        Ctx { config_name, request, decision }
    }
}

impl fmt::Display for Ctx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Ctx { config_name, request, decision } = self;
        write!(
            f,
            "{} {} (authority {}, config {config_name}) decided as: {decision}",
            Clip(request.method),
            Clip(request.path),
            Clip(request.authority)
        )
    }
}

/// Client text in a message: quoted, and cut after 300 characters.
pub struct Clip<'a>(pub &'a str);

impl fmt::Display for Clip<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(300) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// Where the documented rules send a client-visible name for `registry` (README, "What the
/// filter does" and the configuration reference).
#[derive(Debug, PartialEq, Eq)]
pub enum Model {
    /// Already under a configured or passthrough project: kept as it is.
    Prefixed,
    /// Mapped to this Harbor repository by this rule.
    To(String, Rule),
    /// Not a valid name, denied, not allowed, or mapped outside the projects or the grammar.
    Refused,
}

/// The documented mapping of `name` for `registry`: names under a project stay; then deny,
/// allow, the first rewrite rule that matches (its result must be a valid name under a
/// project), else `<project>/[library/]<name>`, `library/` for Docker Hub's one-segment names.
pub fn model(config: &Config, registry: &Registry, name: &str) -> Model {
    if !oci::is_valid_name(name) {
        return Model::Refused;
    }
    if config.is_under_project(name) {
        return Model::Prefixed;
    }
    let client = if registry.is_docker_hub() && !name.contains('/') { format!("library/{name}") } else { name.to_owned() };
    if registry.deny.iter().any(|rule| rule.is_match(&client)) {
        return Model::Refused;
    }
    if !registry.allow.is_empty() && !registry.allow.iter().any(|rule| rule.is_match(&client)) {
        return Model::Refused;
    }
    if let Some((i, target)) = registry.rewrite.iter().enumerate().find_map(|(i, rule)| rule.apply(&client).map(|t| (i, t))) {
        let confined = oci::is_valid_name(&target) && config.is_under_project(&target);
        return if confined { Model::To(target, Rule::Rewrite(i)) } else { Model::Refused };
    }
    match &registry.project {
        Some(project) => {
            let target = format!("{project}/{client}");
            if target.len() > oci::MAX_NAME_LEN { Model::Refused } else { Model::To(target, Rule::Project) }
        }
        None => Model::Refused,
    }
}

/// A refusal is an OCI error reply: a 4xx or 5xx status, a code, and a JSON body
/// `{"errors":[{"code":...,"message":...}]}` holding exactly those; its message is one line.
pub fn check_refusal(ctx: &dyn fmt::Display, refusal: &Refusal, from_envoy: bool) {
    ensure!((400..=599).contains(&refusal.status), "refusal status {}: {ctx}", refusal.status);
    let code = refusal.code.as_str();
    ensure!(!code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "refusal code {code:?}: {ctx}");
    ensure!(!refusal.message.is_empty(), "a refusal without message: {ctx}");
    if from_envoy {
        ensure!(!has_line_break(&refusal.message), "the refusal's message is not one line: {ctx}");
    }
    let body = refusal.body();
    let parsed: serde_json::Value = match serde_json::from_str(&body) {
        Ok(parsed) => parsed,
        Err(e) => panic!("invariant broken: the refusal body {body:?} is not JSON ({e}): {ctx}"),
    };
    let expected = serde_json::json!({"errors": [{"code": code, "message": refusal.message}]});
    ensure!(parsed == expected, "the refusal body {body:?} is not the OCI error of its code and message: {ctx}");
}
