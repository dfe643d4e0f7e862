//! One request's plan, from its headers: what to count, what to log, and either a reply here (a
//! refusal, or managed mode's answer to the version check) or the request forwarded (a new
//! `:path`, the client's credentials removed in managed mode, the robot's token to get first)
//! with what the answer is judged by ([`Forwarded`]). Pure: the [`driver`](crate::driver)
//! carries it out against the host; managed mode's token comes from the fetch machine
//! ([`crate::managed::fetch`]).

use crate::challenge;
use crate::config::Config;
use crate::decide::{decide, Decision, Request, Route};
use crate::host::RequestHeaders;
use crate::oci;
use crate::response::Forwarded;

/// The response header that carries the decision, with `debug_header`.
pub const DEBUG_HEADER: &str = "x-harbor-mirror";

/// The headers of every reply the filter sends itself: a registry's JSON answer.
pub const REPLY_HEADERS: [(&str, &str); 2] = [("content-type", "application/json"), ("docker-distribution-api-version", "registry/2.0")];

/// The request headers that carry a client's credentials, none of which managed mode forwards:
/// Harbor must see only the robot.
pub const CLIENT_CREDENTIALS: [&str; 3] = ["authorization", "proxy-authorization", "cookie"];

/// What to count of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Nothing: its headers were not valid UTF-8.
    Nothing,
    /// `harbor_mirror.rejected`.
    Rejected,
    /// `harbor_mirror.passed`.
    Passed,
    /// `harbor_mirror.rewritten` and the registry's `harbor_mirror.registry.<key>.rewritten`.
    Rewritten {
        /// The registry, by its index in the configuration.
        registry: usize,
    },
}

/// What to do with a request.
#[derive(Debug)]
pub struct Plan {
    /// What to count.
    pub count: Count,
    /// The line to log at debug level, when [`plan`] was asked for it.
    pub debug_line: Option<String>,
    /// The `x-harbor-mirror` value for the response (`debug_header`).
    pub debug_header: Option<String>,
    /// Reply here, or forward.
    pub then: Then,
}

/// Reply here, or forward.
#[derive(Debug)]
pub enum Then {
    /// Answer the request here with this registry-style JSON reply.
    Reply {
        /// The HTTP status.
        status: u32,
        /// The JSON body (an OCI error, or `{}`).
        body: String,
    },
    /// Forward the request.
    Forward(Forwarding),
}

/// How a request is forwarded.
#[derive(Debug)]
pub struct Forwarding {
    /// Whether `:path` is rewritten (to `forwarded.path`).
    pub rewritten: bool,
    /// With `log_original_path`, the `:path` as the client sent it, for the access log; only
    /// for a rewritten request.
    pub original_path: Option<String>,
    /// Managed mode: remove the [`CLIENT_CREDENTIALS`] headers.
    pub strip_credentials: bool,
    /// Managed mode: the Harbor repository whose project's robot token the request needs first.
    pub needs_token: Option<String>,
    /// What the answer is judged by; the driver sets its `robot_token` when it has one.
    pub forwarded: Forwarded,
}

impl Forwarding {
    /// The new `:path` to set, when it is rewritten.
    pub fn new_path(&self) -> Option<&str> {
        self.rewritten.then_some(self.forwarded.path.as_str())
    }
}

/// The plan for a request with `headers` under `config`; with `debug`, the debug line is
/// written (the debug header is, whenever `debug_header` is on).
pub fn plan(config: &Config, headers: &RequestHeaders<'_>, debug: bool) -> Plan {
    let request = match Request::from_bytes(headers.method, headers.path, headers.authority) {
        Ok(request) => request,
        Err(refusal) => {
            return Plan {
                count: Count::Nothing,
                debug_line: debug.then(|| refusal.message.clone()),
                debug_header: None,
                then: Then::Reply { status: refusal.status, body: refusal.body() },
            };
        }
    };
    let decision = decide(config, &request);
    let count = match &decision {
        Decision::Refuse(_) => Count::Rejected,
        Decision::Forward { route: Route::Mapped { registry, .. } | Route::Token { registry, .. }, .. } => Count::Rewritten { registry: registry.index },
        Decision::Forward { .. } => Count::Passed,
    };
    let described = (debug || config.debug_header).then(|| decision.to_string());
    let debug_line = if debug { described.as_ref().map(|described| format!("{} {}: {described}", request.method, request.path)) } else { None };
    let debug_header = if config.debug_header { described } else { None };
    let (new_path, route) = match decision {
        Decision::Refuse(refusal) => {
            return Plan { count, debug_line, debug_header, then: Then::Reply { status: refusal.status, body: refusal.body() } };
        }
        Decision::Forward { path, route } => (path, route),
    };
    let managed = config.auth.managed.is_some();
    if managed && matches!(route, Route::Ping { .. }) && matches!(request.method, "GET" | "HEAD") {
        // Managed mode answers the version check itself: there is nothing to authenticate.
        return Plan { count, debug_line, debug_header, then: Then::Reply { status: 200, body: "{}".to_owned() } };
    }
    let rewritten = new_path.is_some();
    let original_path = (config.log_original_path && rewritten).then(|| request.path.to_owned());
    let forwarded_path = new_path.unwrap_or_else(|| request.path.to_owned());
    let needs_token = match route {
        Route::Mapped { .. } | Route::Prefixed if managed => oci::repository_in(&forwarded_path).map(str::to_owned),
        _ => None,
    };
    let scheme = challenge::client_scheme(headers.scheme, headers.forwarded_proto);
    let forwarded = Forwarded::new(&request, &route, forwarded_path, scheme, None);
    let forwarding = Forwarding { rewritten, original_path, strip_credentials: managed, needs_token, forwarded };
    Plan { count, debug_line, debug_header, then: Then::Forward(forwarding) }
}
