//! One request's flow: from its headers to a reply here or to Harbor (with a new `:path`, the
//! client's credentials removed, the robot's token), then Harbor's answer (challenges pointed
//! back at the mirror, or a 401 to the robot's token answered), counted and logged.

use std::sync::Arc;

use crate::coalesce::{self, Answered, Arrival, Captured, Kind, Probe, Release, Released, CAPTURED_HEADERS, MAX_CAPTURED_BYTES};
use crate::host::{CallSender, Flow, Host, HostError, Level, RequestId, StreamHost};
use crate::managed::cache::CacheEntry;
use crate::managed::fetch::Lookup;
use crate::metrics::Metric;
use crate::oci;
use crate::plan::{plan, Count, Forwarding, Then, CLIENT_CREDENTIALS, DEBUG_HEADER, REPLY_HEADERS};
use crate::refusal::Refusal;
use crate::response::{Edit, Forwarded, Look};

use super::active::Active;
use super::plugin::Plugin;
use super::tokens::Tokens;
use super::waiting::{wake_released, Part, Waiting};
use super::woken::Outcome;

/// The filter state a rewritten request's original path is kept under, with
/// `log_original_path`. The proxy-wasm filter's property shows in an access log as
/// `%FILTER_STATE(wasm.harbor_mirror.original_path:PLAIN)%`, the dynamic module's as
/// `%FILTER_STATE(harbor_mirror.original_path:PLAIN)%`.
pub const ORIGINAL_PATH_KEY: &str = "harbor_mirror.original_path";

/// The response header whose values the filter points back at the mirror.
const CHALLENGE_HEADER: &str = "www-authenticate";

/// What the driver keeps of one request between its events; the adapter owns it.
#[derive(Debug)]
pub struct Exchange {
    id: RequestId,
    /// Its configuration's domain and the configuration it began with, once its headers were
    /// read (none for a request no configuration is for).
    active: Option<(usize, Arc<Active>)>,
    /// The `x-harbor-mirror` value to add to the answer.
    debug_header: Option<String>,
    /// What the answer is judged by, for a forwarded request.
    forwarded: Option<Forwarded>,
    /// Whether it paused for its project's token.
    waited: bool,
    /// Its part in a burst of identical GETs, if any.
    part: Option<Part>,
}

impl Exchange {
    /// A new request, by the id its host gave it.
    pub fn new(id: RequestId) -> Self {
        Exchange { id, active: None, debug_header: None, forwarded: None, waited: false, part: None }
    }

    /// The request's id.
    pub fn id(&self) -> RequestId {
        self.id
    }

    /// Whether it paused for its project's token or for an identical request (a host that
    /// keeps a way to wake it can let go of it when the request ends).
    pub fn waited(&self) -> bool {
        self.waited || matches!(self.part, Some(Part::Waits))
    }

    /// The waiting list of its configuration, if it coalesces.
    fn waiting<'p>(&self, plugin: &'p Plugin) -> Option<&'p Waiting> {
        let (index, _) = self.active.as_ref()?;
        plugin.domains.get(*index)?.waiting.as_ref()
    }
}

/// What managed mode did with a request that needs the robot's token.
enum Authenticated {
    /// Send it on, with this token.
    Continue(String),
    /// Paused until its project's token fetch ends.
    Waiting,
    /// Answered here.
    Answered,
}

impl Plugin {
    /// A request's headers arrived.
    pub fn on_request_headers(&self, host: &mut impl StreamHost, exchange: &mut Exchange) -> Flow {
        match self.request_headers(host, exchange) {
            Ok(flow) => flow,
            Err(e) => {
                host.log(Level::Error, &e);
                match refuse(host, &Refusal::filter_failed(), None) {
                    Ok(()) => Flow::Pause,
                    Err(_) => Flow::Continue,
                }
            }
        }
    }

    fn request_headers(&self, host: &mut impl StreamHost, exchange: &mut Exchange) -> Result<Flow, HostError> {
        let debug = host.log_enabled(Level::Debug);
        let manifests = host.reads_response_bodies();
        let planned = host.request_headers(|headers| {
            let index = self.selector.select(std::str::from_utf8(headers.authority).unwrap_or(""))?;
            let active = self.domains.get(index)?.current.get();
            let plan = plan(&active.config, headers, debug);
            let coalesce = match &plan.then {
                Then::Forward(Forwarding { forwarded, strip_credentials, .. }) if forwarded.mapped && active.config.coalesce.enabled => {
                    coalesce::key(headers.method, &forwarded.path, headers.accept, manifests).map(|(key, kind)| {
                        // A blob's storage checks carry the client's credentials, where the plan
                        // keeps them.
                        let keeps = kind == Kind::Blob && !strip_credentials && !headers.authorization.is_empty();
                        (key, kind, keeps.then(|| String::from_utf8_lossy(headers.authorization).into_owned()))
                    })
                }
                _ => None,
            };
            Some((index, active, plan, coalesce))
        })?;
        let Some((index, active, plan, coalesce)) = planned else {
            host.log(Level::Debug, "no _rules_ domain matches the request's host, and there is no global configuration: passed untouched");
            return Ok(Flow::Continue);
        };
        self.count_request(host, &active, plan.count);
        if let Some(line) = &plan.debug_line {
            host.log(Level::Debug, line);
        }
        exchange.active = Some((index, active));
        let forwarding = match plan.then {
            Then::Reply { status, body } => {
                reply(host, status, body.as_bytes(), plan.debug_header.as_deref())?;
                return Ok(Flow::Pause);
            }
            Then::Forward(forwarding) => forwarding,
        };
        if let Some(path) = forwarding.new_path() {
            host.set_request_header(":path", path.as_bytes())?;
        }
        let Forwarding { original_path, strip_credentials, needs_token, mut forwarded, .. } = forwarding;
        if let Some(original) = &original_path
            && let Err(e) = host.set_filter_state(ORIGINAL_PATH_KEY, original.as_bytes())
        {
            host.log(Level::Warn, format_args!("{e}: the access log will not show the original path"));
        }
        if strip_credentials {
            // Clients' credentials are for other registries (docker sends Docker Hub's).
            for name in CLIENT_CREDENTIALS {
                host.remove_request_header(name)?;
            }
        }
        let tokens = self.domains.get(index).and_then(|domain| domain.tokens.as_ref());
        let flow = match (tokens, &needs_token) {
            (Some(tokens), Some(repository)) => match self.authenticate(host, exchange, tokens, repository, plan.debug_header.as_deref())? {
                Authenticated::Continue(token) => {
                    forwarded.robot_token = Some(token);
                    Flow::Continue
                }
                Authenticated::Waiting => Flow::Pause,
                Authenticated::Answered => return Ok(Flow::Pause),
            },
            _ => Flow::Continue,
        };
        exchange.forwarded = Some(forwarded);
        exchange.debug_header = plan.debug_header;
        match coalesce {
            Some((key, kind, authorization)) if flow == Flow::Continue => Ok(self.join_burst(host, exchange, key, kind, authorization)),
            _ => Ok(flow),
        }
    }

    /// A GET that may share its fetch: it leads its burst, or waits for the leader.
    fn join_burst(&self, host: &mut impl StreamHost, exchange: &mut Exchange, key: String, kind: Kind, authorization: Option<String>) -> Flow {
        let Some(waiting) = exchange.waiting(self) else {
            return Flow::Continue;
        };
        // A blob's key is its Harbor path: its storage check's.
        let blob_path = (kind == Kind::Blob).then(|| key.clone());
        match waiting.arrive(host, exchange.id, key, kind) {
            Arrival::Lead => {
                let probe = match (blob_path, &exchange.forwarded) {
                    (Some(path), Some(forwarded)) => Some(Probe {
                        cluster: String::new(),
                        path,
                        authority: forwarded.authority.clone(),
                        authorization: forwarded.robot_token.as_deref().map(bearer).or(authorization),
                    }),
                    _ => None,
                };
                exchange.part = Some(Part::Leads { kind, capture: None, probe });
                Flow::Continue
            }
            Arrival::Wait => {
                if let Err(e) = host.prepare_to_wait(exchange.id) {
                    host.log(Level::Warn, format_args!("cannot pause a request for the identical one in flight, it goes on: {e}"));
                    waiting.ended(host, exchange.id, None);
                    return Flow::Continue;
                }
                self.count(host, Metric::CoalesceWaited);
                host.log(Level::Debug, format_args!("request {} waits for the identical request in flight", exchange.id));
                exchange.part = Some(Part::Waits);
                Flow::Pause
            }
        }
    }

    fn count_request(&self, host: &mut impl Host, active: &Active, count: Count) {
        match count {
            Count::Nothing => {}
            Count::Rejected => self.count(host, Metric::Rejected),
            Count::Passed => self.count(host, Metric::Passed),
            Count::Rewritten { registry } => {
                self.count(host, Metric::Rewritten);
                if let Some(Some(counter)) = active.registry_counters.get(registry) {
                    counter.add_one(host);
                }
            }
        }
    }

    /// Managed mode: gives a repository request the robot's token for `repository`'s project,
    /// from the shared cache or from the project's one fetch.
    fn authenticate(
        &self,
        host: &mut impl StreamHost,
        exchange: &mut Exchange,
        tokens: &Tokens,
        repository: &str,
        debug_header: Option<&str>,
    ) -> Result<Authenticated, HostError> {
        let project = oci::first_component(repository).0;
        let cached = tokens.read(host, project);
        let now = host.now_secs()?;
        let lookup = tokens.fetches().on_request(exchange.id, repository, cached.as_deref().and_then(CacheEntry::decode), now);
        let call = match lookup {
            Lookup::Token { token } => {
                self.count(host, Metric::TokenCacheHits);
                host.set_request_header("authorization", bearer(&token).as_bytes())?;
                return Ok(Authenticated::Continue(token));
            }
            Lookup::Refused(refusal) => {
                host.log(Level::Debug, format_args!("token for project {project}: a recent failure is remembered: {}", refusal.message));
                refuse(host, &refusal, debug_header)?;
                return Ok(Authenticated::Answered);
            }
            Lookup::Wait => None,
            Lookup::Fetch(call) => Some(call),
        };
        exchange.waited = true;
        if let Err(e) = host.prepare_to_wait(exchange.id) {
            let refusal = Refusal::new(503, oci::ErrorCode::Unavailable, format!("cannot pause the request for its token: {e}"));
            tokens.fetches().on_request_end(exchange.id);
            if let Some(call) = &call {
                let commands = tokens.fetches().dispatched(&call.project, Err(refusal.message.clone()));
                tokens.run(&self.metrics, &self.woken, host, commands);
            }
            refuse(host, &refusal, debug_header)?;
            return Ok(Authenticated::Answered);
        }
        let Some(call) = call else {
            return Ok(Authenticated::Waiting);
        };
        match host.call_sender() {
            CallSender::Plugin => {
                tokens.queue(call);
                host.wake_plugin();
                Ok(Authenticated::Waiting)
            }
            CallSender::Stream => {
                let sent = tokens.send(&self.metrics, host, &call);
                let failed = sent.is_err();
                let commands = tokens.fetches().dispatched(&call.project, sent);
                tokens.run(&self.metrics, &self.woken, host, commands);
                Ok(if failed { Authenticated::Answered } else { Authenticated::Waiting })
            }
        }
    }

    /// A request paused for its token was woken: it goes on with the token, or is answered.
    pub fn on_woken(&self, host: &mut impl StreamHost, request: RequestId) {
        let Some(outcome) = self.woken.take(request) else {
            return;
        };
        let done = match outcome {
            Outcome::Resume(token) => host.set_request_header("authorization", bearer(&token).as_bytes()).and_then(|()| host.resume()),
            Outcome::Refuse(refusal) => refuse(host, &refusal, None),
            Outcome::Coalesced(release) => {
                match release {
                    Release::GoOn | Release::Lead => host.resume(),
                    Release::Stored => {
                        // Harbor serves it from storage now.
                        self.count(host, Metric::CoalesceReleased);
                        host.resume()
                    }
                    Release::Serve(captured) => {
                        // Harbor answers a HEAD without a pull counted upstream, and says whether
                        // the request's own credentials may read the manifest.
                        self.woken.keep(request, Outcome::Serving(captured));
                        host.set_request_header(":method", b"HEAD").and_then(|()| host.resume())
                    }
                }
            }
            Outcome::Serving(captured) => {
                self.woken.keep(request, Outcome::Serving(captured));
                Ok(())
            }
        };
        if let Err(e) = done {
            host.log(Level::Warn, format_args!("resuming a paused request: {e}"));
        }
    }

    /// The answer's headers arrived.
    pub fn on_response_headers(&self, host: &mut impl StreamHost, exchange: &mut Exchange) -> Flow {
        if let Some(value) = exchange.debug_header.take()
            && let Err(e) = host.add_response_header(DEBUG_HEADER, value.as_bytes())
        {
            host.log(Level::Warn, e);
        }
        let Some(mut forwarded) = exchange.forwarded.take() else {
            return Flow::Continue;
        };
        if matches!(exchange.part, Some(Part::Waits)) && exchange.waiting(self).is_some_and(|waiting| waiting.leads(exchange.id)) {
            // Handed the burst when the first request's credentials were refused.
            exchange.part = Some(Part::Leads { kind: Kind::Manifest, capture: None, probe: None });
        }
        if matches!(exchange.part, Some(Part::Leads { .. })) {
            self.leader_answered(host, exchange);
        }
        let Some((index, active)) = &exchange.active else {
            return Flow::Continue;
        };
        if matches!(exchange.part, Some(Part::Waits)) {
            match self.serve_waiting(host, exchange.id, active, &forwarded) {
                Ok(Some(flow)) => return flow,
                Ok(None) => {}
                Err(e) => host.log(Level::Warn, e),
            }
        }
        let tokens = self.domains.get(*index).and_then(|domain| domain.tokens.as_ref());
        if forwarded.robot_token.is_none()
            && exchange.waited
            && let Some(tokens) = tokens
        {
            forwarded.robot_token = tokens.fetches().resumed_with(exchange.id).map(str::to_owned);
        }
        match self.answer(host, active, tokens, &forwarded) {
            Ok(flow) => flow,
            Err(e) => {
                host.log(Level::Warn, e);
                Flow::Continue
            }
        }
    }

    /// The leader's answer headers: kept for the requests waiting for it if it is a 200, else
    /// they go on their own. Nobody waiting, nothing is read.
    fn leader_answered(&self, host: &mut impl StreamHost, exchange: &mut Exchange) {
        let (Some(waiting), Some(Part::Leads { kind, capture, probe })) = (exchange.waiting(self), &mut exchange.part) else {
            return;
        };
        // A blob's burst stays open while it streams, waited for or not: its status is read.
        let status = |host: &mut _| StreamHost::response_header(host, ":status", status_of).unwrap_or(0);
        match waiting.answered(host, exchange.id, *kind, status) {
            Answered::Streams => match host.upstream_cluster() {
                Ok(cluster) => {
                    if let Some(probe) = probe {
                        probe.cluster = cluster;
                    }
                }
                Err(e) => {
                    host.log(Level::Warn, format_args!("{e}: requests waiting for this blob will go on their own"));
                    *probe = None;
                }
            },
            Answered::Capture => {
                let mut headers = Vec::with_capacity(CAPTURED_HEADERS.len());
                for name in CAPTURED_HEADERS {
                    match host.response_header(name, |value| String::from_utf8_lossy(value).into_owned()) {
                        Ok(value) if !value.is_empty() => headers.push((name, value)),
                        Ok(_) => {}
                        Err(e) => host.log(Level::Warn, e),
                    }
                }
                *capture = Some(Captured { headers, body: Vec::new() });
            }
            Answered::Closed(released) => {
                exchange.part = None;
                let why = match released.first() {
                    Some(Released { release: Release::Lead, .. }) => "the identical request in flight was refused for its credentials: this one leads",
                    _ => "the identical request in flight was not answered 200",
                };
                wake_released(&self.metrics, &self.woken, host, released, why);
            }
        }
    }

    /// A chunk of the answer's body arrived: a leader whose answer requests wait for keeps it,
    /// and at its end hands it to them. The chunk passes on either way.
    pub fn on_response_body(&self, host: &mut impl StreamHost, exchange: &mut Exchange, end_of_stream: bool) {
        let (Some(waiting), Some(Part::Leads { capture: Some(capture), .. })) = (exchange.waiting(self), &mut exchange.part) else {
            return;
        };
        let read = host.response_body(|chunk| {
            let fits = capture.body.len() + chunk.len() <= MAX_CAPTURED_BYTES;
            if fits {
                capture.body.extend_from_slice(chunk);
            }
            fits
        });
        let released = match read {
            Ok(true) if !end_of_stream => return,
            Ok(true) => {
                let captured = std::mem::take(capture);
                (waiting.captured(host, exchange.id, captured), "served the manifest of the identical request")
            }
            Ok(false) => (waiting.ended(host, exchange.id, None), "the identical request's manifest is too long to keep"),
            Err(e) => {
                host.log(Level::Warn, format_args!("reading the answer the identical requests wait for: {e}"));
                (waiting.ended(host, exchange.id, None), "the identical request's answer could not be read")
            }
        };
        exchange.part = None;
        wake_released(&self.metrics, &self.woken, host, released.0, released.1);
    }

    /// A waiting request sent on as a HEAD got Harbor's answer: a 200 (its credentials may read
    /// the manifest) is answered with the leader's manifest; anything else with Harbor's status
    /// and challenge, as an OCI error (the HEAD's own answer has no body for a GET).
    fn serve_waiting(&self, host: &mut impl StreamHost, request: RequestId, active: &Active, forwarded: &Forwarded) -> Result<Option<Flow>, HostError> {
        let Some(Outcome::Serving(captured)) = self.woken.take(request) else {
            return Ok(None);
        };
        let status = host.response_header(":status", status_of)?;
        if status == 200 {
            let headers: Vec<(&str, &str)> = captured.headers.iter().map(|(name, value)| (*name, value.as_str())).collect();
            host.send_reply(200, &headers, &captured.body)?;
            self.count(host, Metric::CoalesceReleased);
            return Ok(Some(Flow::Pause));
        }
        let challenges = host.response_header_values(CHALLENGE_HEADER, |values| match forwarded.on_challenges(&active.config, values) {
            Edit::Challenges(rewritten) => rewritten,
            _ => values.iter().map(|value| value.to_vec()).collect(),
        })?;
        let challenges: Vec<String> = challenges.iter().map(|value| String::from_utf8_lossy(value).into_owned()).collect();
        let (code, message) = match status {
            401 => (oci::ErrorCode::Unauthorized, "authentication required"),
            403 => (oci::ErrorCode::Denied, "requested access to the resource is denied"),
            404 => (oci::ErrorCode::NotFound, "manifest unknown"),
            _ => (oci::ErrorCode::Unknown, "harbor could not serve the manifest"),
        };
        host.log(Level::Debug, format_args!("request {request} waited for the identical one; harbor answered {status} to its own credentials"));
        let body = Refusal::new(status, code, message.to_owned()).body();
        let [first, second] = REPLY_HEADERS;
        let mut headers = vec![first, second];
        headers.extend(challenges.iter().map(|value| (CHALLENGE_HEADER, value.as_str())));
        host.send_reply(status, &headers, body.as_bytes())?;
        Ok(Some(Flow::Pause))
    }

    /// Reads what the response plan asks for of Harbor's answer, and does what it says.
    fn answer(&self, host: &mut impl StreamHost, active: &Active, tokens: Option<&Tokens>, forwarded: &Forwarded) -> Result<Flow, HostError> {
        let config = &active.config;
        let edit = match forwarded.look(config) {
            Look::Nothing => return Ok(Flow::Continue),
            Look::Status => host.response_header(":status", |status| forwarded.on_status(config, status))?,
            Look::Challenges => host.response_header_values(CHALLENGE_HEADER, |values| forwarded.on_challenges(config, values))?,
        };
        match edit {
            Edit::Untouched => Ok(Flow::Continue),
            Edit::Challenges(values) => {
                host.set_response_header_values(CHALLENGE_HEADER, &values)?;
                self.count(host, Metric::ChallengesRewritten);
                Ok(Flow::Continue)
            }
            Edit::RefuseRobotToken { project, refusal } => {
                host.log(Level::Warn, format_args!("harbor answered 401 to {} with the robot's token: {}", forwarded.path, refusal.message));
                if let Some(tokens) = tokens {
                    tokens.forget(host, &project)?;
                }
                refuse(host, &refusal, None)?;
                Ok(Flow::Pause)
            }
        }
    }

    /// The request ended: it waits for no token any more, nor for an identical request; a
    /// leader that had not handed its answer over lets the requests waiting for it go on.
    pub fn on_stream_end(&self, host: &mut impl Host, exchange: &Exchange) {
        if let Some(waiting) = exchange.waiting(self) {
            let released = match &exchange.part {
                Some(Part::Leads { probe, .. }) => waiting.ended(host, exchange.id, probe.clone()),
                Some(Part::Waits) => waiting.ended(host, exchange.id, None),
                None => Vec::new(),
            };
            wake_released(&self.metrics, &self.woken, host, released, "the identical request in flight ended without handing its answer over");
        }
        if exchange.waited
            && let Some((index, _)) = &exchange.active
            && let Some(tokens) = self.domains.get(*index).and_then(|domain| domain.tokens.as_ref())
        {
            tokens.fetches().on_request_end(exchange.id);
        }
        if exchange.waited() {
            self.woken.take(exchange.id);
        }
    }
}

/// A `:status` value as a number (0 when it is not one).
fn status_of(value: &[u8]) -> u32 {
    std::str::from_utf8(value).ok().and_then(|value| value.parse().ok()).unwrap_or(0)
}

/// Answers the request here with a registry-style JSON reply.
fn reply(host: &mut impl StreamHost, status: u32, body: &[u8], debug_header: Option<&str>) -> Result<(), HostError> {
    match debug_header {
        None => host.send_reply(status, &REPLY_HEADERS, body),
        Some(value) => {
            let [first, second] = REPLY_HEADERS;
            host.send_reply(status, &[first, second, (DEBUG_HEADER, value)], body)
        }
    }
}

/// Answers the request here with the refusal's OCI error.
fn refuse(host: &mut impl StreamHost, refusal: &Refusal, debug_header: Option<&str>) -> Result<(), HostError> {
    reply(host, refusal.status, refusal.body().as_bytes(), debug_header)
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}
