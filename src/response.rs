//! Harbor's answer to a forwarded request: what the filter reads of it and what it does.
//!
//! Reading response headers costs host calls, so the plan comes in two steps. [`Forwarded::look`]
//! says what to read, given what the request phase learnt: in managed mode the `:status` of
//! answers to requests that carried the robot's token, in pass-through mode the
//! `WWW-Authenticate` values, nothing otherwise. [`Forwarded::on_status`] and
//! [`Forwarded::on_challenges`] then say what to do with what was read.
//!
//! Pass-through: every Bearer realm points back at this proxy with the request's registry as
//! `ns`, and `Basic realm="harbor"` on a rewritten request becomes a Bearer challenge for its
//! Harbor name. Managed: Harbor refused the robot's token, so the token leaves the cache and the
//! client gets an OCI error naming the robot and the project, never Harbor's challenge, which an
//! anonymous client could not answer.

use crate::challenge::{self, RealmTarget};
use crate::config::Config;
use crate::decide::{Request, Route};
use crate::managed::grant;
use crate::oci;
use crate::refusal::Refusal;

/// What the answer to a forwarded request is judged by, kept from the request phase (request
/// headers cannot be read while the response is processed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The registry the request was routed to, by index: its key is the realm's `ns`.
    pub registry: Option<usize>,
    /// Whether the name was mapped (a `Basic realm="harbor"` then becomes a Bearer challenge).
    pub mapped: bool,
    /// GET or HEAD: a Bearer scope for pull only, else for pull and push.
    pub pull: bool,
    /// The `:path` Harbor got.
    pub path: String,
    /// The client's `:authority`: token requests must come back to it.
    pub authority: String,
    /// The scheme the client used, for the realm ([`challenge::client_scheme`]).
    pub scheme: &'static str,
    /// Managed mode: the robot's token the request went with.
    pub robot_token: Option<String>,
}

/// What to read of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Nothing: the answer passes as it is.
    Nothing,
    /// Its `:status`, for [`Forwarded::on_status`].
    Status,
    /// Its `WWW-Authenticate` values, for [`Forwarded::on_challenges`] (none is the common case:
    /// asking whether there is one is the cheap first step).
    Challenges,
}

/// What to change of the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Leave it as it is.
    Untouched,
    /// Replace the `WWW-Authenticate` values, in order, by these (the ones not rewritten keep
    /// their bytes); count it.
    Challenges(Vec<Vec<u8>>),
    /// Drop the project's cached token and answer the client with the refusal instead.
    RefuseRobotToken {
        /// The Harbor project whose token Harbor refused.
        project: String,
        /// What the client gets.
        refusal: Refusal,
    },
}

impl Forwarded {
    /// What the request phase knows of a request forwarded along `route`, with `path` the
    /// `:path` Harbor gets and `scheme` the client's ([`challenge::client_scheme`]).
    pub fn new(request: &Request<'_>, route: &Route<'_>, path: String, scheme: &'static str, robot_token: Option<String>) -> Self {
        let (registry, mapped) = match route {
            Route::Mapped { registry, .. } => (Some(registry.index), true),
            Route::Ping { registry } => (registry.map(|registry| registry.index), false),
            _ => (None, false),
        };
        Forwarded {
            registry,
            mapped,
            pull: matches!(request.method, "GET" | "HEAD"),
            path,
            authority: request.authority.to_owned(),
            scheme,
            robot_token,
        }
    }

    /// What to read of Harbor's answer.
    pub fn look(&self, config: &Config) -> Look {
        if config.auth.managed.is_some() {
            return if self.robot_token.is_some() { Look::Status } else { Look::Nothing };
        }
        if config.auth.rewrite_tokens { Look::Challenges } else { Look::Nothing }
    }

    /// Managed mode, with the answer's `:status`.
    pub fn on_status(&self, config: &Config, status: &[u8]) -> Edit {
        let (Some(managed), Some(token)) = (&config.auth.managed, &self.robot_token) else {
            return Edit::Untouched;
        };
        if status != b"401" {
            return Edit::Untouched;
        }
        let Some(repository) = oci::repository_in(&self.path) else {
            return Edit::Untouched;
        };
        let project = oci::first_component(repository).0;
        Edit::RefuseRobotToken { project: project.to_owned(), refusal: grant::refused_robot_token(token, &managed.username, project) }
    }

    /// Pass-through mode, with the answer's `WWW-Authenticate` values in order (none when it
    /// has none). Values that are not UTF-8 or do not parse stay as they are.
    pub fn on_challenges(&self, config: &Config, values: &[&[u8]]) -> Edit {
        if config.auth.managed.is_some() || !config.auth.rewrite_tokens || values.is_empty() {
            return Edit::Untouched;
        }
        let bearer_scope = self
            .mapped
            .then(|| oci::repository_in(&self.path))
            .flatten()
            .map(|repository| format!("repository:{repository}:{}", if self.pull { "pull" } else { "pull,push" }));
        let target = RealmTarget {
            scheme: self.scheme,
            authority: &self.authority,
            ns: self.registry.and_then(|index| config.registries().get(index)).map(|registry| registry.key.as_str()),
            bearer_scope: bearer_scope.as_deref(),
        };
        let rewritten: Vec<Option<String>> =
            values.iter().map(|value| std::str::from_utf8(value).ok().and_then(|value| challenge::rewrite(value, &target))).collect();
        if rewritten.iter().all(Option::is_none) {
            return Edit::Untouched;
        }
        let values = values
            .iter()
            .zip(rewritten)
            .map(|(original, new)| new.map_or_else(|| original.to_vec(), String::into_bytes))
            .collect();
        Edit::Challenges(values)
    }
}
