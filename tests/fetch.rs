//! Managed mode's single-flight token fetch, driven through the races the end-to-end suite can
//! only sample: who fetches, who waits, what a timeout, a vanished request, a stale or
//! remembered cache entry and a failed dispatch come to. Each scenario is a list of events and
//! what the machine must answer to each, written the way the adapter executes it. Runs natively
//! and under wasm-bindgen-test.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use harbor_mirror_core::managed::cache::CacheEntry;
use harbor_mirror_core::managed::fetch::{Command, Fetches, Lookup};
use harbor_mirror_core::harbor::Grant;

mod common;

use common::{harbor_token, parse, token_answer, Report, MANAGED, PULL_PRIVATE};

const NOW: u64 = 1_800_000_000;

/// What the shared cache holds when a request reads it.
#[derive(Clone, Copy)]
enum Cache {
    Empty,
    /// A token that holds until `NOW + n`.
    Token(i64),
    /// A remembered refusal that holds until `NOW + n`.
    Failure(i64),
}

/// What happens, in order.
#[derive(Clone, Copy)]
enum Event {
    /// Request `id` needs a token for `repository` and finds `Cache`, `later` seconds after NOW.
    Request(u32, &'static str, Cache),
    /// The adapter dispatched the project's call with this id, or could not (`None`).
    Dispatched(&'static str, Option<u64>),
    /// Harbor answered call `id` with this status (`None`: no answer) and body.
    Answer(u64, Option<u32>, Body),
    /// Request `id` ended.
    End(u32),
    /// The root context's timer.
    Tick,
}

/// A token service answer.
#[derive(Clone, Copy)]
enum Body {
    /// Harbor's JWT for the robot, granting pull.
    Granted,
    /// Harbor's anonymous JWT: the robot's credentials were refused.
    Anonymous,
    /// Nothing.
    Empty,
}

use Cache::{Empty, Failure, Token};
use Event::{Answer, Dispatched, End, Request, Tick};

/// One scenario: its name, then each event with what must come of it, as [`summary`] writes it.
type Scenario = (&'static str, &'static [(Event, &'static str)]);

const SCENARIOS: &[Scenario] = &[
    ("a fresh cached token is used at once", &[(Request(1, "dockerhub-private/a", Token(60)), "forward cached")]),
    ("a cached token past its time is fetched again", &[(Request(1, "dockerhub-private/a", Token(0)), "dispatch dockerhub-private")]),
    ("a remembered refusal is answered at once", &[(Request(1, "dockerhub-private/a", Failure(3)), "refuse 503")]),
    ("a remembered refusal past its window is fetched again", &[(Request(1, "dockerhub-private/a", Failure(0)), "dispatch dockerhub-private")]),
    ("a cold project: the first request fetches, the second waits, both resumed, the token stored", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/b", Empty), "wait"),
        (Answer(7, Some(200), Body::Granted), "store dockerhub-private token; resume 1,2"),
        (Request(3, "dockerhub-private/a", Token(1740)), "forward cached"),
    ]),
    ("two projects fetch apart", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "production/app", Empty), "dispatch production"),
        (Dispatched("production", Some(8)), ""),
        (Answer(8, Some(200), Body::Granted), "store production token; resume 2"),
        (Answer(7, Some(200), Body::Granted), "store dockerhub-private token; resume 1"),
    ]),
    ("a timeout refuses every waiter with 503 and stores nothing", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/a", Empty), "wait"),
        (Answer(7, None, Body::Empty), "failed dockerhub-private; refuse 1,2 503"),
        (Request(3, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
    ]),
    ("refused robot credentials are remembered and refuse every waiter", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/b", Empty), "wait"),
        (Answer(7, Some(200), Body::Anonymous), "failed dockerhub-private; store dockerhub-private failure; refuse 1,2 503"),
    ]),
    ("a dispatch that fails refuses the request that made it", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", None), "failed dockerhub-private; refuse 1 503"),
        (Request(2, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
    ]),
    ("the owner goes away: the root context fetches again for the waiter", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/b", Empty), "wait"),
        (End(1), ""),
        (Answer(7, Some(200), Body::Granted), ""),
        (Tick, "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(9)), ""),
        (Tick, ""),
        (Answer(9, Some(200), Body::Granted), "store dockerhub-private token; resume 2"),
    ]),
    ("the owner goes away and nobody waits: the fetch is dropped", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (End(1), ""),
        (Tick, ""),
        (Answer(7, Some(200), Body::Granted), ""),
        (Request(2, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
    ]),
    ("a root fetch whose waiter goes away still stores its token", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/b", Empty), "wait"),
        (End(1), ""),
        (Tick, "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(9)), ""),
        (End(2), ""),
        (Tick, ""),
        (Answer(9, Some(200), Body::Granted), "store dockerhub-private token"),
    ]),
    ("a waiter that goes away is not resumed", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/b", Empty), "wait"),
        (Request(3, "dockerhub-private/c", Empty), "wait"),
        (End(2), ""),
        (Answer(7, Some(200), Body::Granted), "store dockerhub-private token; resume 1,3"),
    ]),
    ("a root redispatch that fails refuses the waiters", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/b", Empty), "wait"),
        (End(1), ""),
        (Tick, "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", None), "failed dockerhub-private; refuse 2 503"),
        (Tick, ""),
    ]),
    ("an answer to a call this VM does not know is ignored", &[(Answer(42, Some(200), Body::Granted), "")]),
];

/// The same machine where calls are the configuration's (the dynamic module): a request's end
/// orphans nothing.
const CONFIGURATION_CALL_SCENARIOS: &[Scenario] = &[
    ("the first request goes away: its call still answers the waiter", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Request(2, "dockerhub-private/b", Empty), "wait"),
        (End(1), ""),
        (Answer(7, Some(200), Body::Granted), "store dockerhub-private token; resume 2"),
    ]),
    ("everybody goes away: the call's token is still stored", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (End(1), ""),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Answer(7, Some(200), Body::Granted), "store dockerhub-private token"),
        (Request(2, "dockerhub-private/a", Token(1740)), "forward cached"),
    ]),
    ("a timeout refuses the waiters", &[
        (Request(1, "dockerhub-private/a", Empty), "dispatch dockerhub-private"),
        (Request(2, "dockerhub-private/a", Empty), "wait"),
        (Dispatched("dockerhub-private", Some(7)), ""),
        (Answer(7, None, Body::Empty), "failed dockerhub-private; refuse 1,2 503"),
    ]),
];

#[test]
fn every_race_comes_to_what_the_scenario_says() {
    run_scenarios("fetch scenarios", SCENARIOS, Fetches::default);
}

#[test]
fn calls_of_the_configuration_outlive_requests() {
    run_scenarios("configuration call scenarios", CONFIGURATION_CALL_SCENARIOS, Fetches::with_calls_of_the_plugin);
}

fn run_scenarios(table: &str, scenarios: &[Scenario], new: fn() -> Fetches) {
    let config = parse(MANAGED);
    let managed = config.auth.managed.as_ref().expect("managed mode");
    let mut report = Report::new(table);
    for (name, events) in scenarios {
        let mut fetches = new();
        for (at, (event, want)) in events.iter().enumerate() {
            let got = match *event {
                Request(id, repository, cache) => {
                    let value = cache_value(cache);
                    let entry = value.as_deref().and_then(|value| CacheEntry::decode(value.as_bytes()));
                    lookup_summary(&fetches.on_request(id, repository, entry, NOW))
                }
                Dispatched(project, call) => summary(&fetches.dispatched(project, call.ok_or_else(|| "no route to harbor".to_owned()))),
                Answer(call, status, body) => {
                    let body = match body {
                        Body::Granted => token_answer(&harbor_token(Some("robot$mirror"), &grant_everywhere())),
                        Body::Anonymous => token_answer(&harbor_token(None, PULL_PRIVATE)),
                        Body::Empty => Vec::new(),
                    };
                    summary(&fetches.on_answer(managed, call, status, &body, NOW))
                }
                End(id) => {
                    fetches.on_request_end(id);
                    String::new()
                }
                Tick => summary(&fetches.on_tick()),
            };
            report.eq(format_args!("{name}, event {}", at + 1), got.as_str(), *want);
        }
    }
}

#[test]
fn resumed_requests_keep_their_token_until_they_end() {
    let config = parse(MANAGED);
    let managed = config.auth.managed.as_ref().expect("managed mode");
    let mut fetches = Fetches::default();
    let mut report = Report::new("resumed tokens");
    let _ = fetches.on_request(1, "dockerhub-private/a", None, NOW);
    let _ = fetches.dispatched("dockerhub-private", Ok(7));
    let token = harbor_token(Some("robot$mirror"), PULL_PRIVATE);
    let actions = fetches.on_answer(managed, 7, Some(200), &token_answer(&token), NOW);
    report.check("resumed", actions.iter().any(|a| matches!(a, Command::Resume { requests, .. } if requests == &[1])), format_args!("{actions:?}"));
    report.eq("the token request 1 went with", fetches.resumed_with(1), Some(token.as_str()));
    report.eq("another request", fetches.resumed_with(2), None);
    fetches.on_request_end(1);
    report.eq("after request 1 ended", fetches.resumed_with(1), None);
    report.check("idle", fetches.is_idle(), "a fetch is left");
}

#[test]
fn a_stored_token_is_kept_unless_the_new_entry_holds_longer() {
    let grant = |expires_in| Grant { token: "t".into(), expires_in };
    let (short, long) = (grant(300), grant(1800));
    let (short, long) = (CacheEntry::for_grant(&short, NOW), CacheEntry::for_grant(&long, NOW));
    let failure = CacheEntry::Failure { until: NOW + 5, message: "m" };
    let mut report = Report::new("cache replacement");
    report.eq("a token over nothing", long.replaces(None), true);
    report.eq("a longer token over a shorter one", long.replaces(Some(&short)), true);
    report.eq("a shorter token over a longer one", short.replaces(Some(&long)), false);
    report.eq("a token over a remembered refusal", short.replaces(Some(&failure)), true);
    report.eq("a refusal over a token", failure.replaces(Some(&short)), false);
}

/// Harbor's grant to the robot on every project the scenarios use.
fn grant_everywhere() -> String {
    let entry = |project: &str| format!(r#"{{"type":"repository","name":"{project}/a","actions":["pull"]}}"#);
    format!("[{},{}]", entry("dockerhub-private"), entry("production"))
}

fn cache_value(cache: Cache) -> Option<String> {
    let at = |n: i64| NOW.saturating_add_signed(n);
    match cache {
        Empty => None,
        Token(n) => Some(CacheEntry::Token { fresh_until: at(n), token: "cached" }.encode()),
        Failure(n) => Some(CacheEntry::Failure { until: at(n), message: "harbor did not accept the robot credentials" }.encode()),
    }
}

fn lookup_summary(lookup: &Lookup) -> String {
    match lookup {
        Lookup::Token { token } => format!("forward {token}"),
        Lookup::Refused(refusal) => format!("refuse {}", refusal.status),
        Lookup::Wait => "wait".to_owned(),
        Lookup::Fetch(call) => format!("dispatch {}", call.project),
    }
}

/// Commands as the driver carries them out: `dispatch P`, `store P token|failure`, `resume 1,2`,
/// `refuse 1,2 STATUS`, `failed P`, joined by `; `.
fn summary(actions: &[Command]) -> String {
    let ids = |requests: &[u32]| requests.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let parts: Vec<String> = actions
        .iter()
        .map(|action| match action {
            Command::Dispatch(call) => format!("dispatch {}", call.project),
            Command::Store { project, value } => {
                let kind = match CacheEntry::decode(value.as_bytes()) {
                    Some(CacheEntry::Token { .. }) => "token",
                    Some(CacheEntry::Failure { .. }) => "failure",
                    None => "garbage",
                };
                format!("store {project} {kind}")
            }
            Command::Resume { requests, .. } => format!("resume {}", ids(requests)),
            Command::Refuse { requests, refusal } => format!("refuse {} {}", ids(requests), refusal.status),
            Command::Failed { project, .. } => format!("failed {project}"),
        })
        .collect();
    parts.join("; ")
}
