//! One refresh of the discovered mapping, as a state machine without I/O: the driver reports
//! each call it dispatched and Harbor's answer, and dispatches what comes back, until the
//! refresh publishes a mapping or fails (and the last good mapping stays).
//!
//! The calls, in order: with credentials, `GET /service/token?service=harbor-registry` (Harbor
//! answers wrong Basic credentials on its API with 200 and the public projects only, but its
//! token service refuses them without a scope: 401); the pages of `GET /api/v2.0/projects`
//! filtered to proxy-cache projects; then each project's summary, for its upstream.

use crate::harbor::{parse_grant, HarborClaims, HARBOR_SERVICE, TOKEN_PATH};
use crate::host::CallId;
use crate::oci;

use super::mapping::{self, Built, Project, Upstream};

/// Projects asked for per page: Harbor's maximum.
pub const PAGE_SIZE: u32 = 100;

/// Pages read at most (10,000 projects): a refresh ends.
const MAX_PAGES: u32 = 100;

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send Harbor `GET <path>` through `discover.cluster` (with the robot's Basic credentials
    /// if there are any), then report it with [`Refresh::dispatched`].
    Dispatch {
        /// The `:path`.
        path: String,
    },
    /// The refresh is complete: apply and share this mapping, and log its warnings.
    Publish(Built),
    /// The refresh failed: count it, log why; the last good mapping stays.
    Failed(String),
}

/// Harbor's answer to an API call, as far as the refresh reads it.
#[derive(Debug, Clone, Copy)]
pub struct ApiAnswer<'a> {
    /// `:status`; `None` when Harbor did not answer (timeout, connection failure).
    pub status: Option<u32>,
    /// The body.
    pub body: &'a [u8],
    /// Whether a `Link` header has a `rel="next"` entry.
    pub next_link: bool,
    /// `X-Total-Count`, when it is a number.
    pub total: Option<u64>,
}

/// Where a refresh is.
#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    /// Checking the robot's credentials at the token service.
    Credentials { call: Option<CallId>, robot: String },
    /// Reading page `page` of the project list; `seen` counts the projects of earlier pages.
    Listing { call: Option<CallId>, page: u32, seen: u64, proxies: Vec<Project> },
    /// Reading `current`'s summary; `todo` are the projects after it.
    Summaries { call: Option<CallId>, current: Project, todo: Vec<Project>, done: Vec<(Project, Upstream)>, warnings: Vec<String> },
}

/// One plugin instance's refresh, if it is running one.
#[derive(Debug, Default)]
pub struct Refresh {
    state: State,
}

impl Refresh {
    /// Whether a refresh is under way.
    pub fn is_running(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Starts a refresh; `robot` is the account of the API calls, if any. Does nothing while one
    /// runs.
    pub fn start(&mut self, robot: Option<&str>) -> Vec<Step> {
        if self.is_running() {
            return Vec::new();
        }
        match robot {
            Some(robot) => {
                self.state = State::Credentials { call: None, robot: robot.to_owned() };
                vec![Step::Dispatch { path: format!("{TOKEN_PATH}?service={HARBOR_SERVICE}") }]
            }
            None => self.list(1, 0, Vec::new()),
        }
    }

    /// The driver dispatched the call the last action asked for (`Ok`, its id) or could not
    /// (`Err`, why).
    pub fn dispatched(&mut self, result: Result<CallId, String>) -> Vec<Step> {
        match result {
            Ok(id) => {
                if let State::Credentials { call, .. } | State::Listing { call, .. } | State::Summaries { call, .. } = &mut self.state {
                    *call = Some(id);
                }
                Vec::new()
            }
            Err(e) => self.fail(format!("cannot ask harbor's API through discover.cluster: {e}")),
        }
    }

    /// Harbor answered call `call`. Nothing for a call this refresh did not make.
    pub fn on_answer(&mut self, call: CallId, answer: ApiAnswer<'_>) -> Vec<Step> {
        let ours = match &self.state {
            State::Credentials { call: c, .. } | State::Listing { call: c, .. } | State::Summaries { call: c, .. } => *c == Some(call),
            State::Idle => false,
        };
        if !ours {
            return Vec::new();
        }
        match std::mem::take(&mut self.state) {
            State::Idle => Vec::new(),
            State::Credentials { robot, .. } => self.on_credentials(&robot, answer),
            State::Listing { page, seen, proxies, .. } => self.on_page(page, seen, proxies, answer),
            State::Summaries { current, todo, done, warnings, .. } => self.on_summary(current, todo, done, warnings, answer),
        }
    }

    fn on_credentials(&mut self, robot: &str, answer: ApiAnswer<'_>) -> Vec<Step> {
        let refused = || format!("harbor refused the robot credentials of discover.robot (or auth.robot), {robot}: check the username and password");
        match answer.status {
            Some(200) => {
                let claims = parse_grant(answer.body).ok().and_then(|grant| HarborClaims::read(&grant.token));
                if claims.is_some_and(|claims| claims.subject != robot) {
                    return self.fail(refused());
                }
                self.list(1, 0, Vec::new())
            }
            Some(401) => self.fail(refused()),
            status => self.fail(failure("the token service, checking the robot's credentials", status)),
        }
    }

    fn on_page(&mut self, page: u32, seen: u64, mut proxies: Vec<Project>, answer: ApiAnswer<'_>) -> Vec<Step> {
        if answer.status != Some(200) {
            return self.fail(failure(&format!("page {page} of the project list"), answer.status));
        }
        let projects = match mapping::read_projects(answer.body) {
            Ok(projects) => projects,
            Err(e) => return self.fail(format!("harbor's page {page} of the project list: {e}")),
        };
        let seen = seen + projects.len() as u64;
        let more = !projects.is_empty() && (answer.next_link || answer.total.is_some_and(|total| seen < total));
        proxies.extend(projects.into_iter().filter(Project::is_proxy_cache));
        if more {
            if page >= MAX_PAGES {
                return self.fail(format!("harbor lists more than {} projects; discovery reads at most that many", MAX_PAGES * PAGE_SIZE));
            }
            return self.list(page + 1, seen, proxies);
        }
        proxies.sort_by_key(|project| project.project_id);
        self.next_summary(proxies, Vec::new(), Vec::new())
    }

    fn on_summary(&mut self, current: Project, todo: Vec<Project>, mut done: Vec<(Project, Upstream)>, mut warnings: Vec<String>, answer: ApiAnswer<'_>) -> Vec<Step> {
        match answer.status {
            Some(200) => match mapping::read_summary(answer.body) {
                Ok(Some(upstream)) => done.push((current, upstream)),
                Ok(None) => warnings.push(format!("project {} skipped: its summary names no upstream registry", current.name)),
                Err(e) => return self.fail(format!("harbor's summary of project {}: {e}", current.name)),
            },
            // Deleted between the list and its summary.
            Some(404) => warnings.push(format!("project {} skipped: harbor no longer has it", current.name)),
            status => return self.fail(failure(&format!("the summary of project {}", current.name), status)),
        }
        self.next_summary(todo, done, warnings)
    }

    fn list(&mut self, page: u32, seen: u64, proxies: Vec<Project>) -> Vec<Step> {
        self.state = State::Listing { call: None, page, seen, proxies };
        // `q=registry_id=[1~]`: proxy-cache projects only, where Harbor knows the key.
        let path = format!("/api/v2.0/projects?page={page}&page_size={PAGE_SIZE}&with_detail=false&q=registry_id%3D%5B1~%5D");
        vec![Step::Dispatch { path }]
    }

    fn next_summary(&mut self, mut todo: Vec<Project>, done: Vec<(Project, Upstream)>, warnings: Vec<String>) -> Vec<Step> {
        if todo.is_empty() {
            self.state = State::Idle;
            let mut built = mapping::build(&done);
            built.warnings.splice(0..0, warnings);
            return vec![Step::Publish(built)];
        }
        let current = todo.remove(0);
        if !oci::is_valid_component(&current.name) {
            let mut warnings = warnings;
            warnings.push(format!("project {:?} skipped: not a Harbor project name", current.name));
            return self.next_summary(todo, done, warnings);
        }
        let path = format!("/api/v2.0/projects/{}/summary", current.name);
        self.state = State::Summaries { call: None, current, todo, done, warnings };
        vec![Step::Dispatch { path }]
    }

    fn fail(&mut self, message: String) -> Vec<Step> {
        self.state = State::Idle;
        vec![Step::Failed(message)]
    }
}

/// Why an answer ends a refresh.
fn failure(what: &str, status: Option<u32>) -> String {
    match status {
        // Envoy reports its own timeout of the call as a 504.
        None | Some(504) => format!("harbor did not answer for {what} (timeout or connection failure on discover.cluster)"),
        Some(401) => format!("harbor answered 401 for {what}: the API refused the credentials"),
        Some(403) => format!("harbor answered 403 for {what}: the account may not read it"),
        Some(503) => format!("harbor answered 503 for {what}, or discover.cluster could not reach it"),
        Some(status) => format!("harbor answered {status} for {what}"),
    }
}
