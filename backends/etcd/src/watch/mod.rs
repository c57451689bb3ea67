//! All watches of one backend over one gRPC watch stream, resumed after a break,
//! moved off a member that stops answering, and never stalled by one consumer.
//!
//! A hub task owns the stream. Each watch gets a client-assigned id (etcd ≥ 3.4) and
//! remembers the next revision it is owed; when the stream breaks or goes silent,
//! the hub opens a new one (on the next healthy endpoint) and re-creates every watch
//! from that revision, so the caller sees no gap and no duplicate, or `Compacted` if
//! etcd compacted past that point meanwhile. Watches of one key are read first, a
//! chunk at a time, each chunk created before the next is read: a read moves a watch
//! near the present when its key did not change, or changed by exactly one put,
//! delivered from the read (`bring_forward`), so etcd has little history to replay.
//! Watches of many keys of one directory come back as one watch of the directory,
//! the directory read a page at a time (`group`): etcd creates one watch, not
//! thousands.
//!
//! Liveness: a stream quiet for half the liveness bound is asked for its progress
//! (etcd answers at once, even with nothing to report); a stream that then says
//! nothing for the whole bound is left, its endpoint set aside.
//!
//! Backpressure: each watch buffers at most [`WATCH_BUFFER`] responses. A consumer
//! that falls that far behind has its etcd watch cancelled (the hub and the other
//! watches carry on); once it has read what is buffered, its watch is created again
//! from the first revision it has not seen. Requests to etcd go out from a queue
//! that the hub drains while it reads responses, so re-creating thousands of
//! watches cannot deadlock against etcd's send loop.
//!
//! A watch "from now" is created without a start revision (etcd's own "now", so the
//! watcher is synced at once and sees a change without etcd's 100 ms catch-up
//! loop for lagging watchers); its creation is confirmed to the caller with the
//! revision it starts after, which is where a resume would continue.

mod bring_forward;
pub(crate) mod buffer;
mod group;
mod stream;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coordkit::{Error, Event, EventKind, KeyRange, Revision, WatchResponse};
use etcd_client as etcd;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use crate::convert;
use crate::endpoints::Endpoints;
use crate::keepalive::Liveness;
use crate::observed::Observed;

/// Responses buffered per watch before its consumer counts as stalled.
pub(crate) const WATCH_BUFFER: usize = 1024;

pub(crate) enum Command {
    Open {
        id: i64,
        keys: KeyRange,
        prev_kv: bool,
        /// The first revision owed; `None`: from now, confirmed through `created`.
        start: Option<Revision>,
        created: Option<oneshot::Sender<Revision>>,
        /// For a watch from now: told whether etcd registered it live (see
        /// [`Hub::progressed`]).
        live: Option<oneshot::Sender<bool>>,
        tx: buffer::Sender,
        stalled: Arc<AtomicBool>,
    },
    /// The consumer has read everything buffered since its watch was cut.
    Resume {
        id: i64,
    },
    Close {
        id: i64,
    },
}

/// The hub's inbox: at most one `Open`, one `Close` and a `Resume` per stall of
/// each live watch handle, so it is bounded by the handles, and a handle's `Drop`
/// can post to it without waiting.
#[derive(Default)]
pub(crate) struct Mailbox {
    queue: Mutex<VecDeque<Command>>,
    notify: Notify,
    closed: AtomicBool,
}

impl Mailbox {
    pub(crate) fn post(&self, cmd: Command) -> bool {
        if self.closed.load(Ordering::Acquire) {
            return false;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(cmd);
        self.notify.notify_one();
        true
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    async fn next(&self) -> Option<Command> {
        loop {
            if let Some(cmd) = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
            {
                return Some(cmd);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            self.notify.notified().await;
        }
    }
}

struct Watch {
    keys: KeyRange,
    prev_kv: bool,
    /// The next revision owed to the caller; 0 until a watch from now is created.
    next: Revision,
    created: Option<oneshot::Sender<Revision>>,
    /// Whether etcd registered this watch live, to be told (boxed: only a
    /// watch from now that asked has one, until it is told).
    live: Option<Box<LiveCheck>>,
    tx: buffer::Sender,
    /// Set by the hub when the buffer filled and the etcd watch was cut; the
    /// handle asks for a `Resume` once it has read the buffer out.
    stalled: Arc<AtomicBool>,
    /// Whether the watch is (being) created on the current stream.
    on_stream: bool,
    /// Cancels of ours on the current stream not yet confirmed: their
    /// confirmations are not the store's cancellation.
    cancels: u32,
    /// For a watch of one key: the key as the last change it delivered left it
    /// (see `bring_forward`).
    last: Option<bring_forward::Seen>,
    /// Set aside after a reconnect until a read brings it forward.
    waiting_read: bool,
    /// The group whose watch serves this one, if any (see `group`).
    group: Option<i64>,
}

/// For a watch from now: whether etcd registered it live, to be told (see
/// [`Hub::progressed`]).
struct LiveCheck {
    tx: oneshot::Sender<bool>,
    /// The revision etcd created the watch at (its creation's header).
    created_at: Option<Revision>,
    /// The revision a progress report sent after the watch's creation gave,
    /// when it came before the creation's confirmation.
    progress_at: Option<Revision>,
}

impl Watch {
    /// Tell the caller whether the watch is live, if it waits to know.
    fn tell_live(&mut self, live: bool) {
        if let Some(check) = self.live.take() {
            let _ = check.tx.send(live);
        }
    }

    fn options(&self, id: i64) -> (Vec<u8>, etcd::WatchOptions) {
        let mut options = etcd::WatchOptions::new().with_watch_id(id);
        if self.next > 0 {
            options = options.with_start_revision(self.next);
        }
        if self.prev_kv {
            options = options.with_prev_key();
        }
        let (key, prefix) = convert::key_of(&self.keys);
        if prefix {
            options = options.with_prefix();
        }
        (key, options)
    }
}

/// Counts of the hub's work, for tests and benchmarks.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) streams_opened: AtomicU64,
    pub(crate) stalls: AtomicU64,
    pub(crate) brought_forward: AtomicU64,
    pub(crate) grouped: AtomicU64,
}

enum Outgoing {
    Create(i64),
    Cancel(i64),
    /// A progress request, for the liveness of the stream and to tell whether
    /// the watches with these ids, created just before, are live.
    Progress(Vec<i64>),
}

/// Progress requests awaiting their answer at most; watches created while this
/// many are out are not told they are live.
const PROGRESS_OUT: usize = 4;

struct Stream {
    endpoint: usize,
    sender: etcd::WatchRequestSender,
    responses: etcd::WatchResponseStream,
    /// When the stream last said anything.
    heard: Instant,
    /// When a progress request went out unanswered, if one did.
    probed: Option<Instant>,
}

struct Hub {
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    counters: Arc<Counters>,
    observed: Arc<Observed>,
    watches: BTreeMap<i64, Watch>,
    stream: Option<Stream>,
    outgoing: VecDeque<Outgoing>,
    /// Watches from now whose creation went out with no progress request after it.
    unverified: Vec<i64>,
    /// The progress requests sent and not answered, oldest first, each with the
    /// watches it tells about.
    progress_out: VecDeque<Vec<i64>>,
    /// Watches waiting for their chunk's read before they are created again.
    to_bring: VecDeque<i64>,
    /// The read of a chunk of them, or of a group's page, while out.
    bringing: Option<bring_forward::Bringing>,
    /// Watches of directories serving the watches of their keys, by id.
    groups: HashMap<i64, group::Group>,
    next_group: i64,
    /// Reconnect backoff, grown on each failed open, with jitter.
    backoff: Duration,
    retry_at: Option<Instant>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(crate) async fn run(
    endpoints: Arc<Endpoints>,
    liveness: Arc<Liveness>,
    mailbox: Arc<Mailbox>,
    counters: Arc<Counters>,
    observed: Arc<Observed>,
) {
    use futures::future::Either;
    let mut hub = Hub {
        endpoints,
        liveness,
        counters,
        observed,
        watches: BTreeMap::new(),
        stream: None,
        outgoing: VecDeque::new(),
        unverified: Vec::new(),
        progress_out: VecDeque::new(),
        to_bring: VecDeque::new(),
        bringing: None,
        groups: HashMap::new(),
        next_group: group::FIRST_GROUP_ID,
        backoff: BACKOFF_MIN,
        retry_at: None,
    };
    loop {
        if hub.stream.is_none()
            && hub.wants_stream()
            && hub.retry_at.is_none_or(|t| t <= Instant::now())
        {
            hub.open().await;
        }
        let bound = hub.liveness.bound();
        // The next request to send, built now (a watch closed meanwhile needs none).
        while let Some(out) = hub.outgoing.front() {
            if let Outgoing::Create(id) = out {
                let wanted = hub.groups.contains_key(id)
                    || hub
                        .watches
                        .get(id)
                        .is_some_and(|w| w.on_stream && w.group.is_none());
                if !wanted {
                    hub.outgoing.pop_front();
                    continue;
                }
            }
            break;
        }
        let head = hub.outgoing.front().map(|out| match out {
            Outgoing::Create(id) => Request::Create(hub.create_request(*id)),
            Outgoing::Cancel(id) => Request::Cancel(*id),
            Outgoing::Progress(_) => Request::Progress,
        });
        let check_at = hub.stream.as_ref().map(|s| match s.probed {
            Some(at) => at + bound,
            None => s.heard + bound / 2,
        });
        let retry_at = hub
            .retry_at
            .filter(|_| hub.stream.is_none() && hub.wants_stream());
        if hub.bringing.is_none() {
            hub.bringing = hub.next_read();
        }
        let bring = match &mut hub.bringing {
            Some(read) => Either::Left(read.as_mut()),
            None => Either::Right(std::future::pending()),
        };
        let (message, send) = match &mut hub.stream {
            Some(s) => (
                Either::Left(s.responses.message()),
                match head {
                    Some(req) => Either::Left(req.send(&mut s.sender)),
                    None => Either::Right(std::future::pending()),
                },
            ),
            None => (
                Either::Right(std::future::pending()),
                Either::Right(std::future::pending()),
            ),
        };
        tokio::select! {
            cmd = mailbox.next() => match cmd {
                Some(cmd) => hub.apply(cmd),
                None => return,
            },
            msg = message => match msg {
                Ok(Some(resp)) => hub.handle(resp),
                Ok(None) => hub.abandon("the watch stream ended"),
                Err(e) => hub.abandon(&format!("the watch stream broke: {e}")),
            },
            sent = send => match sent {
                Ok(()) => hub.sent(),
                Err(e) => hub.abandon(&format!("the watch stream does not take requests: {e}")),
            },
            _ = sleep_until(check_at) => hub.check_liveness(bound),
            _ = sleep_until(retry_at) => hub.retry_at = None,
            brought = bring => {
                hub.bringing = None;
                hub.brought(brought);
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A request for the stream, built from the hub's state when it is next to go.
enum Request {
    Create((Vec<u8>, etcd::WatchOptions)),
    Cancel(i64),
    Progress,
}

impl Request {
    async fn send(
        self,
        sender: &mut etcd::WatchRequestSender,
    ) -> std::result::Result<(), etcd::Error> {
        match self {
            Request::Create((key, options)) => sender.watch(key, Some(options)).await,
            Request::Cancel(id) => sender.cancel(id).await,
            Request::Progress => sender.request_progress().await,
        }
    }
}

impl Hub {
    /// Whether any watch needs a stream (a stalled one waits for its consumer).
    fn wants_stream(&self) -> bool {
        self.watches
            .values()
            .any(|w| !w.stalled.load(Ordering::Acquire))
    }

    fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Open {
                id,
                keys,
                prev_kv,
                start,
                created,
                live,
                tx,
                stalled,
            } => {
                let on_stream = self.stream.is_some();
                self.watches.insert(
                    id,
                    Watch {
                        keys,
                        prev_kv,
                        next: start.unwrap_or(0),
                        created,
                        live: live.map(|tx| {
                            Box::new(LiveCheck {
                                tx,
                                created_at: None,
                                progress_at: None,
                            })
                        }),
                        tx,
                        stalled,
                        on_stream,
                        cancels: 0,
                        last: None,
                        waiting_read: false,
                        group: None,
                    },
                );
                if on_stream {
                    self.outgoing.push_back(Outgoing::Create(id));
                }
            }
            Command::Resume { id } => self.resume(id),
            Command::Close { id } => self.drop_watch(id),
        }
    }

    /// Watch `id` is gone (closed, or its consumer dropped): out of its group,
    /// or its etcd watch cancelled.
    fn drop_watch(&mut self, id: i64) {
        let member = self.watches.get(&id).is_some_and(|w| w.group.is_some());
        self.leave_group(id);
        if let Some(w) = self.watches.remove(&id) {
            if w.on_stream && !member && self.stream.is_some() {
                self.outgoing.push_back(Outgoing::Cancel(id));
            }
        }
    }

    /// The creation request of watch or group `id`.
    fn create_request(&self, id: i64) -> (Vec<u8>, etcd::WatchOptions) {
        self.group_options(id)
            .unwrap_or_else(|| self.watches[&id].options(id))
    }

    fn resume(&mut self, id: i64) {
        let has_stream = self.stream.is_some();
        if let Some(w) = self.watches.get_mut(&id) {
            if !w.on_stream && has_stream {
                w.on_stream = true;
                self.outgoing.push_back(Outgoing::Create(id));
            }
        }
    }

    fn handle(&mut self, resp: etcd::WatchResponse) {
        // Before anyone hears of it: a read after a watch's creation or an event
        // then sees at least that state.
        if let Some(h) = resp.header() {
            self.observed.see(h.revision());
        }
        if let Some(s) = &mut self.stream {
            s.heard = Instant::now();
            s.probed = None;
            self.endpoints.answered(s.endpoint);
        }
        let id = resp.watch_id();
        if id == -1 && !resp.created() && !resp.canceled() {
            self.progressed(resp.header().map_or(0, |h| h.revision()));
            return;
        }
        if self.groups.contains_key(&id) {
            self.handle_group(id, resp);
            return;
        }
        let Some(w) = self.watches.get_mut(&id) else {
            return; // a watch closed meanwhile
        };
        if !w.on_stream {
            if resp.canceled() {
                w.cancels = w.cancels.saturating_sub(1);
            }
            return; // late news for a watch cut for its slow consumer
        }
        if resp.created() && !resp.canceled() {
            if w.next == 0 {
                let at = resp.header().map_or(0, |h| h.revision());
                w.next = at + 1;
                if let Some(check) = &mut w.live {
                    check.created_at = Some(at);
                    if let Some(progress) = check.progress_at {
                        w.tell_live(progress == at);
                    }
                }
            }
            if let Some(created) = w.created.take() {
                let _ = created.send(w.next);
            }
        }
        if resp.canceled() && resp.compact_revision() == 0 && w.cancels > 0 {
            w.cancels -= 1;
            return;
        }
        if resp.canceled() {
            let err = if resp.compact_revision() > 0 {
                Error::Compacted {
                    compact_revision: resp.compact_revision(),
                }
            } else {
                Error::unavailable(format!("etcd canceled the watch: {}", resp.cancel_reason()))
            };
            match w.tx.try_send(Err(err)) {
                Err(buffer::Refused::Full) => {
                    // Told once the consumer has caught up: the re-creation is
                    // refused the same way.
                    self.stall(id);
                }
                _ => {
                    self.watches.remove(&id);
                }
            }
            return;
        }
        self.deliver(id, resp.events().iter().collect());
    }

    /// Hand `events` (of one response) to watch `id`, one response per
    /// revision, from the revision it is owed.
    fn deliver(&mut self, id: i64, events: Vec<&etcd::Event>) {
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        // One response per revision: etcd may batch several revisions in one message.
        let mut by_revision: HashMap<Revision, Vec<Event>> = HashMap::new();
        let mut order = Vec::new();
        for e in events {
            let Some(kv) = e.kv() else { continue };
            let rev = kv.mod_revision();
            if rev < w.next {
                continue; // already delivered before a resume
            }
            let event = Event {
                kind: match e.event_type() {
                    etcd::EventType::Put => EventKind::Put,
                    etcd::EventType::Delete => EventKind::Delete,
                },
                kv: convert::kv(kv),
                prev_kv: e.prev_kv().map(convert::kv),
            };
            if !by_revision.contains_key(&rev) {
                order.push(rev);
            }
            by_revision.entry(rev).or_default().push(event);
        }
        let one_key = matches!(w.keys, KeyRange::Key(_));
        for rev in order {
            let events = by_revision.remove(&rev).unwrap_or_default();
            let seen = events.last().filter(|_| one_key).map(|e| match e.kind {
                EventKind::Put => (e.kv.create_revision, e.kv.version),
                EventKind::Delete => (0, 0),
            });
            match w.tx.try_send(Ok(WatchResponse {
                revision: rev,
                events,
            })) {
                Ok(()) => {
                    w.next = rev + 1;
                    w.last = seen.or(w.last);
                }
                Err(buffer::Refused::Full) => {
                    self.stall(id);
                    return;
                }
                Err(buffer::Refused::Closed) => {
                    // The caller dropped the stream; its Close is on the way.
                    self.drop_watch(id);
                    return;
                }
            }
        }
    }

    /// A request went out: the head of the queue. After the last creation in a row
    /// of watches from now, a progress request follows (if not too many are out).
    fn sent(&mut self) {
        match self.outgoing.pop_front() {
            Some(Outgoing::Create(id))
                if self.watches.get(&id).is_some_and(|w| w.live.is_some()) =>
            {
                self.unverified.push(id);
            }
            Some(Outgoing::Progress(ids)) => self.progress_out.push_back(ids),
            _ => {}
        }
        if self.outgoing.is_empty() && !self.unverified.is_empty() {
            let ids = std::mem::take(&mut self.unverified);
            if self.progress_out.len() < PROGRESS_OUT {
                self.outgoing.push_back(Outgoing::Progress(ids));
            } else {
                for id in ids {
                    if let Some(w) = self.watches.get_mut(&id) {
                        w.tell_live(false);
                    }
                }
            }
        }
    }

    /// A progress report at `revision` answered the oldest progress request out.
    ///
    /// etcd creates a watch from now to start after the revision it read first
    /// (the creation's header), and registers it as lagging, served by a loop
    /// every 100 ms, when a write committed between that read and the
    /// registration. It handles the requests of a stream in order and reads its
    /// revision again for a progress request: a report at the creation's own
    /// revision means no write committed in between, so the watch was
    /// registered live. A later revision cannot tell. (Reports answering fewer
    /// requests than were sent, as newer etcd may coalesce them, only make this
    /// attribute a report to an older request, whose watches were registered
    /// before it was read.)
    fn progressed(&mut self, revision: Revision) {
        let Some(ids) = self.progress_out.pop_front() else {
            return;
        };
        for id in ids {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            let Some(check) = &mut w.live else { continue };
            match check.created_at {
                Some(at) => w.tell_live(revision == at),
                None => check.progress_at = Some(revision),
            }
        }
    }

    /// The consumer of watch `id` fell [`WATCH_BUFFER`] responses behind: cut its
    /// etcd watch and wait for the consumer to read what is buffered.
    fn stall(&mut self, id: i64) {
        let member = self.watches.get(&id).is_some_and(|w| w.group.is_some());
        self.leave_group(id);
        let Some(w) = self.watches.get_mut(&id) else {
            return;
        };
        self.counters.stalls.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            watch = id,
            next = w.next,
            "a watch consumer fell behind; its etcd watch is cut until it catches up"
        );
        w.on_stream = false;
        w.stalled.store(true, Ordering::Release);
        // A member had no etcd watch of its own to cancel.
        if self.stream.is_some() && !member {
            w.cancels += 1;
            self.outgoing.push_back(Outgoing::Cancel(id));
        }
        // The consumer may have read everything between the full send and the
        // flag: then nobody would ask for the resume.
        if w.tx.is_empty() && w.stalled.swap(false, Ordering::AcqRel) {
            self.resume(id);
        }
    }
}
