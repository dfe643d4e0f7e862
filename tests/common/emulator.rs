//! An emulated Envoy for the driver: the core's host interface implemented in memory, so that
//! tests run every flow of the real driver in process (natively and under wasm-bindgen-test) and
//! assert the exact host calls it makes.
//!
//! It emulates either host: [`Kind::Wasm`] as a proxy-wasm VM (requests send their own token
//! calls, counts are held until the tick, a woken request runs at once in its own context, the
//! VM has linear memory), or [`Kind::Module`] as the dynamic module (the main thread sends the
//! calls, counts go straight to Envoy, a woken request runs when the test delivers its event,
//! metrics are defined only at configure). Several emulators can share one [`SharedData`], as
//! the VMs of one Envoy share its shared data.
//!
//! Every host call is written to [`World::calls`] as one line (`get request headers`,
//! `set :path /v2/...`, `reply 404 {...}`, `get time`); asking whether a log level is on is
//! left out (the wasm filter reads the level on its tick, the module's check is no call into
//! Envoy's data), and so are the lines logged, which go to [`World::logs`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use harbor_mirror_core::driver::{Exchange, Plugin};
use harbor_mirror_core::host::{
    CallAnswer, CallId, CallRequest, CallSender, Flow, Host, HostError, Level, MetricId, MetricKind, RequestHeaders, RequestId, SharedValue,
    StreamHost, Written,
};
use harbor_mirror_core::shared_data::SharedData;

/// Which host is emulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A proxy-wasm VM.
    Wasm,
    /// The dynamic module.
    Module,
}

/// Unix seconds the emulated clock starts at.
pub const START: u64 = 1_800_000_000;

/// One emulated stream.
#[derive(Debug, Default, Clone)]
pub struct Stream {
    /// Request headers, in order, names lower-case.
    pub request: Vec<(String, Vec<u8>)>,
    /// Response headers, in order.
    pub response: Vec<(String, Vec<u8>)>,
    /// The local reply, if it got one.
    pub reply: Option<Reply>,
    /// The filter state.
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// Whether the request was resumed after a pause.
    pub resumed: bool,
    /// Whether it ended.
    pub ended: bool,
    /// Module: whether it registered to be woken.
    pub wakeable: bool,
}

impl Stream {
    /// The first value of request header `name`.
    pub fn request_header(&self, name: &str) -> Option<&[u8]> {
        self.request.iter().find(|(known, _)| known == name).map(|(_, value)| value.as_slice())
    }

    /// The request header as text, or `-` when absent.
    pub fn request_text(&self, name: &str) -> String {
        self.request_header(name).map_or_else(|| "-".to_owned(), |value| String::from_utf8_lossy(value).into_owned())
    }

    /// Every value of response header `name`, as text.
    pub fn response_values(&self, name: &str) -> Vec<String> {
        self.response.iter().filter(|(known, _)| known == name).map(|(_, value)| String::from_utf8_lossy(value).into_owned()).collect()
    }
}

/// A local reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status.
    pub status: u32,
    /// The headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: String,
}

/// A call the plugin sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its id.
    pub id: CallId,
    /// The context that sent it: a request, or `None` for the plugin's own.
    pub from: Option<RequestId>,
    /// `:method`.
    pub method: String,
    /// The cluster.
    pub cluster: String,
    /// `:path`.
    pub path: String,
    /// `:authority`.
    pub authority: String,
    /// The other headers.
    pub headers: Vec<(String, String)>,
    /// Whether it is still waiting for its answer.
    pub open: bool,
}

/// An answer to a call.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// `:status`; `None`: no answer (timeout, reset).
    pub status: Option<u32>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Answer {
    /// `status` with `body`.
    pub fn new(status: u32, body: impl Into<Vec<u8>>) -> Self {
        Answer { status: Some(status), headers: Vec::new(), body: body.into() }
    }

    /// No answer came.
    pub fn none() -> Self {
        Answer::default()
    }

    /// With a header.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

impl CallAnswer for Answer {
    fn status(&self) -> Option<u32> {
        self.status
    }

    fn header(&self, name: &str) -> Option<Vec<u8>> {
        self.headers.iter().find(|(known, _)| known == name).map(|(_, value)| value.clone().into_bytes())
    }

    fn body(&self, max: usize) -> Vec<u8> {
        self.body[..self.body.len().min(max)].to_vec()
    }
}

/// Everything the emulated Envoy holds, apart from the plugin.
#[derive(Debug)]
pub struct World {
    /// The host emulated.
    pub kind: Kind,
    /// Every host call, one line each, in order.
    pub calls: RefCell<Vec<String>>,
    /// Every line logged, with its level.
    pub logs: Vec<(Level, String)>,
    /// The level logged from.
    pub level: Level,
    /// The clock: the time since the epoch.
    pub now: Duration,
    /// The data every worker shares.
    pub shared: Arc<SharedData>,
    /// Streams by id.
    pub streams: HashMap<RequestId, Stream>,
    /// Calls sent, in order.
    pub sent: Vec<Sent>,
    /// Metrics defined: id to (kind, name).
    pub metrics: BTreeMap<u64, (MetricKind, String)>,
    /// Values by metric name (counters summed as Envoy got them, gauges as set).
    pub values: BTreeMap<String, i64>,
    /// Module: whether configure is over (metrics can no longer be defined).
    pub frozen: bool,
    /// Wasm: the VM's linear memory.
    pub memory: u64,
    /// Module: requests whose woken event is posted, not yet delivered.
    pub woken: Vec<RequestId>,
    /// Module: how often the plugin's context was woken to send calls, not yet delivered.
    pub plugin_wakes: usize,
    /// Host calls that fail: the call's line prefix (e.g. `set :path`).
    pub failing: Vec<String>,
    /// In a response-body event: its chunk.
    pub body_chunk: Vec<u8>,
}

impl World {
    fn new(kind: Kind, shared: Arc<SharedData>) -> Self {
        World {
            kind,
            calls: RefCell::default(),
            logs: Vec::new(),
            level: Level::Debug,
            now: Duration::from_secs(START),
            shared,
            streams: HashMap::new(),
            sent: Vec::new(),
            metrics: BTreeMap::new(),
            values: BTreeMap::new(),
            frozen: false,
            memory: 2 * 65536,
            woken: Vec::new(),
            plugin_wakes: 0,
            failing: Vec::new(),
            body_chunk: Vec::new(),
        }
    }

    fn record(&self, line: String) -> Result<(), HostError> {
        let fails = self.failing.iter().any(|prefix| line.starts_with(prefix.as_str()));
        self.calls.borrow_mut().push(line);
        if fails { Err(HostError::new("emulated", "Fault")) } else { Ok(()) }
    }

    fn metric_name(&self, id: MetricId) -> String {
        self.metrics.get(&id.0).map_or_else(|| format!("#{}", id.0), |(_, name)| name.clone())
    }
}

/// The emulated Envoy and the plugin in it.
pub struct Emulator {
    /// The host's state.
    pub world: World,
    /// The plugin, once configured.
    pub plugin: Option<Plugin>,
    exchanges: HashMap<RequestId, Exchange>,
    next_request: RequestId,
}

/// The host as one context sees it: the plugin's own (`current` `None`) or a request's.
pub struct Ctx<'w, 'p> {
    world: &'w mut World,
    plugin: Option<&'p Plugin>,
    current: Option<RequestId>,
}

impl Emulator {
    /// An emulated host of `kind` with its own shared data.
    pub fn new(kind: Kind) -> Self {
        Emulator::sharing(kind, Arc::default())
    }

    /// An emulated host of `kind` sharing `shared` with others (the VMs of one Envoy).
    pub fn sharing(kind: Kind, shared: Arc<SharedData>) -> Self {
        Emulator { world: World::new(kind, shared), plugin: None, exchanges: HashMap::new(), next_request: 2 }
    }

    /// Configures the plugin; the error line if it refuses the configuration.
    pub fn configure(&mut self, json: &str) -> Result<(), String> {
        let plugin = Plugin::configure(&mut Ctx { world: &mut self.world, plugin: None, current: None }, json.as_bytes())?;
        self.world.frozen = true;
        self.plugin = Some(plugin);
        Ok(())
    }

    /// An emulated host of `kind` with the plugin configured from `json`.
    pub fn configured(kind: Kind, json: &str) -> Self {
        let mut emulator = Emulator::new(kind);
        emulator.configure(json).unwrap_or_else(|e| panic!("test configuration refused: {e}"));
        emulator
    }

    fn plugin(&self) -> &Plugin {
        self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"))
    }

    /// Forgets the host calls made so far (and the logs).
    pub fn clear(&mut self) {
        self.world.calls.borrow_mut().clear();
        self.world.logs.clear();
    }

    /// Takes the host calls made since the last take or clear.
    pub fn take_calls(&mut self) -> Vec<String> {
        self.world.calls.take()
    }

    /// Moves the clock on.
    pub fn advance_secs(&mut self, secs: u64) {
        self.world.now += Duration::from_secs(secs);
    }

    /// A request with `method`, `path` and `:authority` `mirror:5000`, and `extra` headers:
    /// its headers phase runs; its id and the flow.
    pub fn request(&mut self, method: &str, path: &str, extra: &[(&str, &str)]) -> (RequestId, Flow) {
        let id = self.next_request;
        self.next_request += 1;
        let mut request: Vec<(String, Vec<u8>)> = vec![
            (":method".into(), method.into()),
            (":path".into(), path.into()),
            (":authority".into(), b"mirror:5000".to_vec()),
            (":scheme".into(), b"http".to_vec()),
        ];
        for (name, value) in extra {
            match request.iter_mut().find(|(known, _)| known == name) {
                Some(slot) => slot.1 = value.as_bytes().to_vec(),
                None => request.push(((*name).to_owned(), value.as_bytes().to_vec())),
            }
        }
        self.world.streams.insert(id, Stream { request, ..Stream::default() });
        let mut exchange = Exchange::new(id);
        let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
        let flow = plugin.on_request_headers(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: Some(id) }, &mut exchange);
        self.exchanges.insert(id, exchange);
        (id, flow)
    }

    /// Harbor's answer to request `id`: `status` and `headers`; its response phase runs.
    pub fn respond(&mut self, id: RequestId, status: u32, headers: &[(&str, &str)]) -> Flow {
        let stream = self.world.streams.get_mut(&id).unwrap_or_else(|| panic!("no stream {id}"));
        stream.response = vec![(":status".into(), status.to_string().into_bytes())];
        stream.response.extend(headers.iter().map(|(name, value)| ((*name).to_owned(), value.as_bytes().to_vec())));
        let mut exchange = self.exchanges.remove(&id).unwrap_or_else(|| panic!("no exchange {id}"));
        let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
        let flow = plugin.on_response_headers(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: Some(id) }, &mut exchange);
        self.exchanges.insert(id, exchange);
        flow
    }

    /// A chunk of Harbor's answer to request `id`; its response-body event runs.
    pub fn body(&mut self, id: RequestId, chunk: &[u8], end_of_stream: bool) {
        self.world.body_chunk = chunk.to_vec();
        let mut exchange = self.exchanges.remove(&id).unwrap_or_else(|| panic!("no exchange {id}"));
        let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
        plugin.on_response_body(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: Some(id) }, &mut exchange, end_of_stream);
        self.exchanges.insert(id, exchange);
        self.world.body_chunk.clear();
    }

    /// Moves the clock on by milliseconds.
    pub fn advance_ms(&mut self, ms: u64) {
        self.world.now += Duration::from_millis(ms);
    }

    /// Request `id` ends (its client went away, or its answer was sent).
    pub fn end(&mut self, id: RequestId) {
        if let Some(exchange) = self.exchanges.remove(&id) {
            let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
            plugin.on_stream_end(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: Some(id) }, &exchange);
        }
        if let Some(stream) = self.world.streams.get_mut(&id) {
            stream.ended = true;
            stream.wakeable = false;
        }
    }

    /// The plugin's timer ticks.
    pub fn tick(&mut self) {
        let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
        plugin.on_tick(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: None });
    }

    /// The plugin stops.
    pub fn stop(&mut self) {
        let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
        plugin.on_stop(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: None });
    }

    /// Module: delivers the posted wake-ups (the plugin's, then the requests').
    pub fn deliver(&mut self) {
        let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
        while self.world.plugin_wakes > 0 {
            self.world.plugin_wakes -= 1;
            plugin.on_plugin_woken(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: None });
        }
        for id in std::mem::take(&mut self.world.woken) {
            if self.world.streams.get(&id).is_some_and(|stream| !stream.ended) {
                plugin.on_woken(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: Some(id) }, id);
            }
        }
    }

    /// The call sent `index`-th (0 first) is answered with `answer`, in the context that sent it.
    /// A call whose request ended was cancelled by the host: nothing happens.
    pub fn answer(&mut self, index: usize, answer: &Answer) {
        let sent = self.world.sent.get_mut(index).unwrap_or_else(|| panic!("no call {index} was sent"));
        assert!(sent.open, "call {index} was answered already");
        sent.open = false;
        let (id, from) = (sent.id, sent.from);
        if from.is_some_and(|from| self.world.streams.get(&from).is_none_or(|stream| stream.ended)) {
            return;
        }
        let plugin = self.plugin.as_ref().unwrap_or_else(|| panic!("the plugin is not configured"));
        plugin.on_call_answer(&mut Ctx { world: &mut self.world, plugin: Some(plugin), current: from }, id, answer);
    }

    /// The stream `id`.
    pub fn stream(&self, id: RequestId) -> &Stream {
        self.world.streams.get(&id).unwrap_or_else(|| panic!("no stream {id}"))
    }

    /// The status of request `id`'s local reply, if it got one.
    pub fn replied(&self, id: RequestId) -> Option<u32> {
        self.stream(id).reply.as_ref().map(|reply| reply.status)
    }

    /// Lines logged at `level` or above that contain `text`.
    pub fn logged(&self, level: Level, text: &str) -> usize {
        self.world.logs.iter().filter(|(at, line)| *at >= level && line.contains(text)).count()
    }

    /// The value Envoy holds for metric `name` (0 when never set).
    pub fn metric(&self, name: &str) -> i64 {
        self.world.values.get(name).copied().unwrap_or(0)
    }

    /// The calls sent, as `cluster path` lines.
    pub fn sent_paths(&self) -> Vec<String> {
        self.world.sent.iter().map(|sent| format!("{} {}", sent.cluster, sent.path)).collect()
    }
}

impl Ctx<'_, '_> {
    fn stream(&mut self) -> &mut Stream {
        let id = self.current.unwrap_or_else(|| panic!("a stream call from the plugin's context"));
        self.world.streams.get_mut(&id).unwrap_or_else(|| panic!("no stream {id}"))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl Host for Ctx<'_, '_> {
    fn call_sender(&self) -> CallSender {
        match self.world.kind {
            Kind::Wasm => CallSender::Stream,
            Kind::Module => CallSender::Plugin,
        }
    }

    fn now(&self) -> Result<Duration, HostError> {
        self.world.record("get time".to_owned())?;
        Ok(self.world.now)
    }

    fn log_enabled(&self, level: Level) -> bool {
        level >= self.world.level
    }

    fn write_log(&mut self, level: Level, line: &str) {
        self.world.logs.push((level, line.to_owned()));
    }

    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<Option<MetricId>, HostError> {
        if self.world.kind == Kind::Module && self.world.frozen {
            return Ok(None);
        }
        self.world.record(format!("define {name}"))?;
        let id = self.world.metrics.len() as u64 + 100;
        self.world.metrics.insert(id, (kind, name.to_owned()));
        Ok(Some(MetricId(id)))
    }

    fn holds_counts(&self) -> bool {
        self.world.kind == Kind::Wasm
    }

    fn count(&mut self, counter: MetricId, by: u64) {
        let name = self.world.metric_name(counter);
        let _ = self.world.record(format!("count {name} +{by}"));
        *self.world.values.entry(name).or_default() += i64::try_from(by).unwrap_or(i64::MAX);
    }

    fn set_gauge(&mut self, gauge: MetricId, value: u64) -> Result<(), HostError> {
        let name = self.world.metric_name(gauge);
        self.world.record(format!("set gauge {name} {value}"))?;
        self.world.values.insert(name, i64::try_from(value).unwrap_or(i64::MAX));
        Ok(())
    }

    fn add_to_gauge(&mut self, gauge: MetricId, delta: i64) -> Result<(), HostError> {
        let name = self.world.metric_name(gauge);
        self.world.record(format!("add to gauge {name} {delta:+}"))?;
        *self.world.values.entry(name).or_default() += delta;
        Ok(())
    }

    fn memory_bytes(&self) -> Option<u64> {
        (self.world.kind == Kind::Wasm).then_some(self.world.memory)
    }

    fn shared_data(&self, key: &str) -> Result<Option<SharedValue>, HostError> {
        self.world.record(format!("get shared {key}"))?;
        Ok(self.world.shared.get(key))
    }

    fn set_shared_data(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<Written, HostError> {
        self.world.record(format!("set shared {key} {:?}", text(value)))?;
        Ok(self.world.shared.set(key, value, cas))
    }

    fn send_call(&mut self, call: &CallRequest<'_>) -> Result<CallId, HostError> {
        if self.current.is_some() && self.world.kind == Kind::Module {
            panic!("the module's streams cannot send calls");
        }
        let method = if call.method == "GET" { String::new() } else { format!("{} ", call.method) };
        self.world.record(format!("send {method}{} {}", call.cluster, call.path))?;
        let id = self.world.sent.len() as u64 + 1;
        self.world.sent.push(Sent {
            id,
            from: self.current,
            method: call.method.to_owned(),
            cluster: call.cluster.to_owned(),
            path: call.path.to_owned(),
            authority: call.authority.to_owned(),
            headers: call.headers.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect(),
            open: true,
        });
        Ok(id)
    }

    fn wake(&mut self, request: RequestId) -> bool {
        let _ = self.world.record(format!("wake {request}"));
        let alive = self.world.streams.get(&request).is_some_and(|stream| !stream.ended);
        match self.world.kind {
            Kind::Wasm => {
                if !alive {
                    return false;
                }
                if let Some(plugin) = self.plugin {
                    plugin.on_woken(&mut Ctx { world: &mut *self.world, plugin: Some(plugin), current: Some(request) }, request);
                }
                true
            }
            Kind::Module => {
                let Some(stream) = self.world.streams.get_mut(&request).filter(|stream| stream.wakeable) else {
                    return false;
                };
                stream.wakeable = false;
                self.world.woken.push(request);
                true
            }
        }
    }
}

impl StreamHost for Ctx<'_, '_> {
    fn request_headers<R>(&mut self, read: impl FnOnce(&RequestHeaders<'_>) -> R) -> Result<R, HostError> {
        self.world.record("get request headers".to_owned())?;
        let stream = self.stream().clone();
        let mut headers = RequestHeaders::default();
        for (name, value) in &stream.request {
            headers.offer(name.as_bytes(), value);
        }
        Ok(read(&headers))
    }

    fn set_request_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError> {
        self.world.record(format!("set {name} {}", text(value)))?;
        let stream = self.stream();
        stream.request.retain(|(known, _)| known != name);
        stream.request.push((name.to_owned(), value.to_vec()));
        Ok(())
    }

    fn remove_request_header(&mut self, name: &'static str) -> Result<(), HostError> {
        self.world.record(format!("remove {name}"))?;
        self.stream().request.retain(|(known, _)| known != name);
        Ok(())
    }

    fn set_filter_state(&mut self, key: &'static str, value: &[u8]) -> Result<(), HostError> {
        self.world.record(format!("set filter state {key} {}", text(value)))?;
        self.stream().filter_state.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn send_reply(&mut self, status: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<(), HostError> {
        self.world.record(format!("reply {status} {}", text(body)))?;
        let headers = headers.iter().map(|(name, value)| ((*name).to_owned(), (*value).to_owned())).collect();
        self.stream().reply = Some(Reply { status, headers, body: text(body) });
        Ok(())
    }

    fn resume(&mut self) -> Result<(), HostError> {
        self.world.record("resume".to_owned())?;
        self.stream().resumed = true;
        Ok(())
    }

    fn prepare_to_wait(&mut self, _request: RequestId) -> Result<(), HostError> {
        if self.world.kind == Kind::Module {
            self.world.record("prepare to wait".to_owned())?;
            self.stream().wakeable = true;
        }
        Ok(())
    }

    fn wake_plugin(&mut self) {
        let _ = self.world.record("wake plugin".to_owned());
        self.world.plugin_wakes += 1;
    }

    fn reads_response_bodies(&self) -> bool {
        self.world.kind == Kind::Module
    }

    fn upstream_cluster(&mut self) -> Result<String, HostError> {
        self.world.record("get xds.cluster_name".to_owned())?;
        Ok("harbor".to_owned())
    }

    fn response_body<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError> {
        self.world.record("get response body".to_owned())?;
        Ok(read(&self.world.body_chunk))
    }

    fn response_header<R>(&mut self, name: &'static str, read: impl FnOnce(&[u8]) -> R) -> Result<R, HostError> {
        self.world.record(format!("get response {name}"))?;
        let value = self.stream().response.iter().find(|(known, _)| known == name).map(|(_, value)| value.clone()).unwrap_or_default();
        Ok(read(&value))
    }

    fn response_header_values<R>(&mut self, name: &'static str, read: impl FnOnce(&[&[u8]]) -> R) -> Result<R, HostError> {
        self.world.record(format!("get response {name} values"))?;
        let values: Vec<Vec<u8>> = self.stream().response.iter().filter(|(known, _)| known == name).map(|(_, value)| value.clone()).collect();
        let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        Ok(read(&values))
    }

    fn set_response_header_values(&mut self, name: &'static str, values: &[Vec<u8>]) -> Result<(), HostError> {
        let shown: Vec<String> = values.iter().map(|value| text(value)).collect();
        self.world.record(format!("set response {name} {}", shown.join(" | ")))?;
        let stream = self.stream();
        stream.response.retain(|(known, _)| known != name);
        stream.response.extend(values.iter().map(|value| (name.to_owned(), value.clone())));
        Ok(())
    }

    fn add_response_header(&mut self, name: &'static str, value: &[u8]) -> Result<(), HostError> {
        self.world.record(format!("add response {name} {}", text(value)))?;
        self.stream().response.push((name.to_owned(), value.to_vec()));
        Ok(())
    }
}
