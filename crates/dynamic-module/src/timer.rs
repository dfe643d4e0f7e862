//! Schedulers and a timer.
//!
//! Envoy 1.40's HTTP filter ABI has no timer: it has *schedulers*, which post an event to the
//! thread that owns their target (the main thread for a filter configuration, the stream's worker
//! for a filter) from any thread. [`Timer`] adds the delay: one module-owned thread that sleeps
//! until the earliest deadline and then commits the event to its scheduler.

use std::collections::BinaryHeap;
use std::cmp::{Ordering, Reverse};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::abi;

/// Something that can post an event to an Envoy thread: [`ConfigScheduler`] (main thread) or
/// [`FilterScheduler`] (the stream's worker). Safe to call from any thread.
pub trait Wake: Send + Sync + 'static {
    /// Posts `event_id`; the target's `on_scheduled(event_id)` runs later on its own thread.
    fn wake(&self, event_id: u64);
}

/// Owns one Envoy scheduler object; deleted when the last clone is dropped.
struct RawScheduler {
    ptr: *mut std::ffi::c_void,
    commit: unsafe extern "C" fn(*mut std::ffi::c_void, u64),
    delete: unsafe extern "C" fn(*mut std::ffi::c_void),
}

// SAFETY: Envoy's scheduler objects hold a weak pointer to their target and a reference to the
// target thread's dispatcher; `commit` only posts to that dispatcher (thread-safe) and `delete`
// only drops the weak pointer, so both may run on any thread.
unsafe impl Send for RawScheduler {}
// SAFETY: as above; `commit` takes the object by pointer without mutating shared module state.
unsafe impl Sync for RawScheduler {}

impl RawScheduler {
    fn commit(&self, event_id: u64) {
        // SAFETY: `ptr` came from the matching `*_scheduler_new` and is deleted only in `drop`,
        // so it is live; committing is thread-safe and a no-op once the target is destroyed.
        unsafe { (self.commit)(self.ptr, event_id) }
    }
}

impl Drop for RawScheduler {
    fn drop(&mut self) {
        // SAFETY: this is the only owner of `ptr` (it is never copied out), so it is deleted once.
        unsafe { (self.delete)(self.ptr) }
    }
}

/// Posts events to a filter configuration's `on_scheduled`, which runs on Envoy's **main
/// thread**. `Clone + Send + Sync`; committing after the configuration is gone does nothing.
#[derive(Clone)]
pub struct ConfigScheduler(Arc<RawScheduler>);

impl ConfigScheduler {
    pub(crate) fn new(config: abi::ConfigEnvoyPtr) -> Option<ConfigScheduler> {
        // SAFETY: `config` is the live Envoy configuration of the current hook; Envoy allocates
        // and returns a scheduler the module now owns.
        let ptr = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        if ptr.is_null() {
            return None;
        }
        Some(ConfigScheduler(Arc::new(RawScheduler {
            ptr,
            commit: abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit,
            delete: abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete,
        })))
    }

    /// Posts `event_id` to the main thread. Any thread.
    pub fn commit(&self, event_id: u64) {
        self.0.commit(event_id);
    }
}

impl Wake for ConfigScheduler {
    fn wake(&self, event_id: u64) {
        self.commit(event_id);
    }
}

/// Posts events to one filter's `on_scheduled`, which runs on the **worker thread** of its
/// stream (to resume work there, e.g. after a result computed elsewhere). `Clone + Send + Sync`;
/// committing after the stream ended does nothing.
#[derive(Clone)]
pub struct FilterScheduler(Arc<RawScheduler>);

impl FilterScheduler {
    pub(crate) fn new(filter: abi::FilterEnvoyPtr) -> Option<FilterScheduler> {
        // SAFETY: `filter` is the live Envoy filter of the current hook; Envoy allocates and
        // returns a scheduler the module now owns.
        let ptr = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(filter) };
        if ptr.is_null() {
            return None;
        }
        Some(FilterScheduler(Arc::new(RawScheduler {
            ptr,
            commit: abi::envoy_dynamic_module_callback_http_filter_scheduler_commit,
            delete: abi::envoy_dynamic_module_callback_http_filter_scheduler_delete,
        })))
    }

    /// Posts `event_id` to the stream's worker thread. Any thread.
    pub fn commit(&self, event_id: u64) {
        self.0.commit(event_id);
    }
}

impl Wake for FilterScheduler {
    fn wake(&self, event_id: u64) {
        self.commit(event_id);
    }
}

/// A deadline-ordered queue, earliest first, ties in insertion order. The pure part of
/// [`Timer`], generic over the time type so that tests drive it with integers.
#[derive(Debug)]
pub(crate) struct TimerQueue<T: Ord + Copy, V> {
    heap: BinaryHeap<Reverse<Entry<T, V>>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T, V> {
    deadline: T,
    seq: u64,
    value: V,
}

impl<T: Ord, V> PartialEq for Entry<T, V> {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline && self.seq == other.seq
    }
}
impl<T: Ord, V> Eq for Entry<T, V> {}
impl<T: Ord, V> PartialOrd for Entry<T, V> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T: Ord, V> Ord for Entry<T, V> {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.deadline, self.seq).cmp(&(&other.deadline, other.seq))
    }
}

impl<T: Ord + Copy, V> TimerQueue<T, V> {
    pub(crate) fn new() -> Self {
        TimerQueue { heap: BinaryHeap::new(), next_seq: 0 }
    }

    pub(crate) fn push(&mut self, deadline: T, value: V) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(Entry { deadline, seq, value }));
    }

    /// The earliest deadline, if any.
    pub(crate) fn next_deadline(&self) -> Option<T> {
        self.heap.peek().map(|Reverse(entry)| entry.deadline)
    }

    /// Removes and returns every value due at `now` (deadline <= now), earliest first.
    pub(crate) fn pop_due(&mut self, now: T) -> Vec<V> {
        let mut due = Vec::new();
        while self.heap.peek().is_some_and(|Reverse(entry)| entry.deadline <= now) {
            if let Some(Reverse(entry)) = self.heap.pop() {
                due.push(entry.value);
            }
        }
        due
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }
}

type Job = (Box<dyn Wake>, u64);

struct TimerState {
    queue: TimerQueue<Instant, Job>,
    stopping: bool,
}

struct TimerShared {
    state: Mutex<TimerState>,
    changed: Condvar,
}

impl TimerShared {
    fn lock(&self) -> MutexGuard<'_, TimerState> {
        // A panic while holding the lock cannot leave the queue inconsistent (push/pop are
        // single heap operations), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One module-owned thread that commits events to schedulers after a delay: the timer the ABI
/// lacks. `Send + Sync`; [`Timer::schedule`] may be called from any thread. Dropping the timer
/// stops its thread and waits for it (pending events are dropped, not fired), so keep it in the
/// filter configuration (its `Drop` runs when Envoy destroys the configuration) and no event can
/// reach a scheduler after that.
pub struct Timer {
    shared: Arc<TimerShared>,
    thread: Option<JoinHandle<()>>,
}

impl Timer {
    /// Starts the timer thread, named `name` (visible in `top -H`).
    pub fn spawn(name: &str) -> std::io::Result<Timer> {
        let shared = Arc::new(TimerShared {
            state: Mutex::new(TimerState { queue: TimerQueue::new(), stopping: false }),
            changed: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || run_timer(&for_thread))?;
        Ok(Timer { shared, thread: Some(thread) })
    }

    /// After `delay`, commits `event_id` to `target` (from the timer thread).
    pub fn schedule<W: Wake + Clone>(&self, delay: Duration, target: &W, event_id: u64) {
        let deadline = Instant::now() + delay;
        let mut state = self.shared.lock();
        state.queue.push(deadline, (Box::new(target.clone()), event_id));
        drop(state);
        self.shared.changed.notify_one();
    }

    /// How many events are waiting.
    pub fn pending(&self) -> usize {
        self.shared.lock().queue.len()
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_one();
        if let Some(thread) = self.thread.take() {
            // A panic on the timer thread was already reported by the panic hook.
            let _ = thread.join();
        }
    }
}

fn run_timer(shared: &TimerShared) {
    let mut state = shared.lock();
    loop {
        if state.stopping {
            return;
        }
        let now = Instant::now();
        let due = state.queue.pop_due(now);
        if !due.is_empty() {
            // Commit without holding the lock: commit only posts to a dispatcher, but a Wake
            // implementation may take its own locks.
            drop(state);
            for (target, event_id) in due {
                target.wake(event_id);
            }
            state = shared.lock();
            continue;
        }
        state = match state.queue.next_deadline() {
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(now);
                shared.changed.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0
            }
            None => shared.changed.wait(state).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize};
    use std::sync::atomic::Ordering::SeqCst;

    #[test]
    fn queue_pops_due_entries_earliest_first_ties_in_insertion_order() {
        let mut queue = TimerQueue::new();
        queue.push(30, "c");
        queue.push(10, "a1");
        queue.push(20, "b");
        queue.push(10, "a2");
        assert_eq!(queue.next_deadline(), Some(10));
        assert_eq!(queue.pop_due(9), Vec::<&str>::new());
        assert_eq!(queue.pop_due(20), vec!["a1", "a2", "b"]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next_deadline(), Some(30));
        assert_eq!(queue.pop_due(100), vec!["c"]);
        assert_eq!(queue.next_deadline(), None);
    }

    #[derive(Clone, Default)]
    struct Recorder {
        last: Arc<AtomicU64>,
        count: Arc<AtomicUsize>,
    }
    impl Wake for Recorder {
        fn wake(&self, event_id: u64) {
            self.last.store(event_id, SeqCst);
            self.count.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn timer_fires_after_the_delay_and_drop_discards_pending_events() {
        let recorder = Recorder::default();
        let timer = Timer::spawn("test-timer").expect("spawn");
        timer.schedule(Duration::from_millis(10), &recorder, 7);
        timer.schedule(Duration::from_secs(3600), &recorder, 8);
        let start = Instant::now();
        while recorder.count.load(SeqCst) == 0 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(recorder.count.load(SeqCst), 1);
        assert_eq!(recorder.last.load(SeqCst), 7);
        assert_eq!(timer.pending(), 1);
        drop(timer); // joins promptly although an event is an hour away
        assert_eq!(recorder.count.load(SeqCst), 1);
    }
}
