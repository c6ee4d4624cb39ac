//! [`EventLog`] on Redis: one Redis Stream per downstream SSE stream, so any
//! replica can replay and follow it.
//!
//! Keys (all under `ballast:<deployment>:`; `{<stream>}` is a Redis Cluster
//! hash tag, so one stream's keys share a hash slot and its scripts and
//! pipelines run on one node):
//! - `m:{<stream>}` — a hash: `owner` (session id), `writer` (replica id),
//!   `req` (the request, for takeover), `seq` (last seq), `bytes`
//!   (retained bytes), `fin` (0/1).
//! - `s:{<stream>}` — the events: a Redis Stream whose entry ids are
//!   `0-<seq>`, field `d` = the JSON-RPC message.
//! - channel `n:<stream>` — a pub/sub message per append and on finish.
//! - `o:{<stream>}` — instead of the three above, a stream whose whole life was
//!   one event (a call answered before its stream had to be visible): one
//!   string, `<owner>\n<event>`, written by one plain `SET … PX`. Nobody can
//!   have been following it (its id was not out yet), so nothing is
//!   published; nobody can claim it (it is finished).
//!
//! `append` is one Lua script (atomic): next seq, `XADD`, trim the oldest
//! entries beyond `stream_max_events`/`stream_max_bytes` (never the newest),
//! refresh the TTLs, `PUBLISH`; `append_last` is the same script that also
//! marks the stream finished. It returns once Redis has the event, which
//! is before any socket sees it. TTLs: an unfinished stream lives
//! [`LIVE_TTL`] after its last append; a finished one `resume_window`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::RedisBackend;
use super::batch::{Joined, SetBatcher, Then};
use super::notify::{self, POLL, Waiters};
use crate::store::{Batch, EventLog, Orphan, StoreError, StreamLimits};

/// How long an unfinished stream's keys live after its last append (or
/// its opening): 1 h. A call that runs longer without sending anything
/// loses its stream's retained events, not its answer's delivery to a
/// client still reading on the replica that runs it.
pub const LIVE_TTL: Duration = Duration::from_secs(3600);

/// KEYS: meta, events. ARGV: data, max events, max bytes, TTL ms, channel,
/// last ('1' also finishes), and — to create the stream if it does not
/// exist yet — owner, writer, request (owner '' = do not create), and the
/// last seq this writer appended ('0' for a new stream). Returns `{seq,
/// lost}`: `lost` is 1 when the stream's keys were gone (or behind) though
/// the writer had appended before — Redis lost them (FLUSHALL, a restart
/// without persistence, eviction) — and the stream was recreated to go on
/// after the writer's last seq (seqs never go back; meta `lost` records
/// up to which seq events are missing).
const APPEND: &str = r"
local floor = tonumber(ARGV[10])
local lost = 0
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[7] == '' then return {-1, 0} end
  redis.call('HSET', KEYS[1], 'owner', ARGV[7], 'writer', ARGV[8], 'seq', floor, 'bytes', 0, 'fin', 0)
  if floor > 0 then
    redis.call('HSET', KEYS[1], 'lost', floor)
    lost = 1
  end
elseif tonumber(redis.call('HGET', KEYS[1], 'seq') or '0') < floor then
  redis.call('HSET', KEYS[1], 'seq', floor, 'lost', floor)
  lost = 1
end
if ARGV[9] ~= '' then redis.call('HSETNX', KEYS[1], 'req', ARGV[9]) end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local bytes = redis.call('HINCRBY', KEYS[1], 'bytes', string.len(ARGV[1]))
redis.call('XADD', KEYS[2], '0-' .. seq, 'd', ARGV[1])
local maxe = tonumber(ARGV[2])
local maxb = tonumber(ARGV[3])
local len = redis.call('XLEN', KEYS[2])
while len > 1 and (len > maxe or bytes > maxb) do
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)[1]
  redis.call('XDEL', KEYS[2], first[1])
  bytes = redis.call('HINCRBY', KEYS[1], 'bytes', -string.len(first[2][2]))
  len = len - 1
end
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'fin', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[5], seq)
return {seq, lost}
";

/// KEYS[1] meta; ARGV: owner, writer, request ('' = none), TTL ms. Creates
/// the stream unless it exists (an append by its writer may have created it
/// first), records the request if none is, refreshes the TTL.
const OPEN: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'writer', ARGV[2], 'seq', 0, 'bytes', 0, 'fin', 0)
end
if ARGV[3] ~= '' then redis.call('HSETNX', KEYS[1], 'req', ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// KEYS[1] meta; ARGV[1] the writer seen dead ('' = none recorded),
/// ARGV[2] the claimer's replica id. Claims the unfinished stream if its
/// writer is still the one seen dead (compare-and-set: a replica that
/// claimed it meanwhile wins) or is the claimer already (the same claim
/// again); returns `{request, last_seq}` or false. The writer's liveness
/// key is checked before, outside the script: it is in another hash slot.
const CLAIM: &str = r"
local m = redis.call('HMGET', KEYS[1], 'fin', 'writer', 'req', 'seq')
if not m[1] or m[1] == '1' then return false end
if m[2] == ARGV[2] then return { m[3] or '', m[4] or '0' } end
if (m[2] or '') ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 'writer', ARGV[2])
return { m[3] or '', m[4] or '0' }
";

/// KEYS: meta, events, one-shot; ARGV: TTL ms, channel.
const FINISH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return redis.call('EXISTS', KEYS[3]) == 1 and 1 or -1
end
redis.call('HSET', KEYS[1], 'fin', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], 'fin')
return 1
";

/// What this process knows of a stream it writes, kept until the stream
/// is finished (after that, its Redis TTL is all there is to it).
#[derive(Debug, Clone)]
pub struct Local {
    /// The owning session.
    pub owner: Arc<str>,
    /// The last seq this process appended.
    pub last_seq: u64,
}

/// What a first append needs to create its stream.
struct Opening<'a> {
    owner: &'a str,
    request: &'a [u8],
}

/// One XRANGE entry: (`0-<seq>`, [(`d`, data)]).
type Entry = (String, Vec<(String, Vec<u8>)>);

/// The Redis event log.
pub struct RedisEventLog {
    backend: Arc<RedisBackend>,
    limits: StreamLimits,
    resume_window: Duration,
    append: redis::Script,
    finish: redis::Script,
    claim: redis::Script,
    open: redis::Script,
    waiters: Arc<Waiters>,
    /// The one-event streams' `SET`s, pipelined.
    sets: SetBatcher,
    /// How often a waiting reader re-checks Redis without a wake-up.
    poll: Duration,
    /// Streams opened by this process.
    local: Mutex<HashMap<Arc<str>, Local>>,
    _listener: tokio_util::sync::DropGuard,
}

impl RedisEventLog {
    /// An event log on `backend`; streams keep at most `limits` and stay
    /// resumable for `resume_window` after they finish. Spawns the pub/sub
    /// listener (must run inside a tokio runtime).
    pub fn new(backend: Arc<RedisBackend>, limits: StreamLimits, resume_window: Duration) -> Self {
        let waiters = Arc::new(Waiters::default());
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(notify::listen(
            Arc::downgrade(&backend),
            Arc::downgrade(&waiters),
            stop.clone(),
        ));
        tokio::spawn(heartbeat(Arc::downgrade(&backend), stop.clone()));
        let sets = SetBatcher::new(&backend);
        Self {
            backend,
            limits,
            resume_window,
            append: redis::Script::new(APPEND),
            finish: redis::Script::new(FINISH),
            claim: redis::Script::new(CLAIM),
            open: redis::Script::new(OPEN),
            waiters,
            sets,
            poll: POLL,
            local: Mutex::new(HashMap::new()),
            _listener: stop.drop_guard(),
        }
    }

    /// Readers waiting on a stream re-check Redis every `poll` (default
    /// [`POLL`], 500 ms) in case a pub/sub wake-up was lost.
    #[must_use]
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    fn local(&self) -> MutexGuard<'_, HashMap<Arc<str>, Local>> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What this process knows of `stream`, if it opened it.
    pub fn local_stream(&self, stream: &str) -> Option<Local> {
        self.local().get(stream).cloned()
    }

    fn keys(&self, stream: &str) -> (String, String) {
        (
            self.backend.key(&format!("m:{{{stream}}}")),
            self.backend.key(&format!("s:{{{stream}}}")),
        )
    }

    /// The key of `stream` held as one event (see the module docs).
    fn one_shot_key(&self, stream: &str) -> String {
        format!("{}o:{{{stream}}}", self.backend.prefix())
    }

    /// One look at the stream: events after `after`, and whether it is
    /// finished. `UnknownStream` if its keys are gone.
    async fn fetch(&self, stream: &str, after: u64) -> Result<Batch, StoreError> {
        let (meta, events) = self.keys(stream);
        let one_shot = self.one_shot_key(stream);
        type Fetched = ((Option<String>, Option<u64>), Vec<Entry>, Option<Vec<u8>>);
        let ((fin, lost), entries, single): Fetched = self
            .backend
            .run(|mut c| async move {
                redis::pipe()
                    .cmd("HMGET")
                    .arg(&meta)
                    .arg("fin")
                    .arg("lost")
                    .cmd("XRANGE")
                    .arg(&events)
                    .arg(format!("(0-{after}"))
                    .arg("+")
                    .get(&one_shot)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if let Some(single) = single {
            let (owner, _) = split_one_shot(&single).ok_or(StoreError::UnknownStream)?;
            let start = owner.len() + 1;
            let events = if after < 1 {
                vec![(1, Bytes::from(single).slice(start..))]
            } else {
                Vec::new()
            };
            return Ok(Batch {
                events,
                finished: true,
            });
        }
        let Some(fin) = fin else {
            return Err(StoreError::UnknownStream);
        };
        // Redis lost this stream's events up to `lost` (see APPEND): a
        // reader that had not seen them all cannot be given them.
        if lost.is_some_and(|lost| after < lost) {
            return Err(StoreError::EventsLost);
        }
        let events = entries
            .into_iter()
            .filter_map(|(id, mut fields)| {
                let seq = id.strip_prefix("0-")?.parse().ok()?;
                let (_, data) = fields.pop()?;
                Some((seq, Bytes::from(data)))
            })
            .collect();
        Ok(Batch {
            events,
            finished: fin == "1",
        })
    }
}

/// Redis lost the keys of a stream this replica writes (found by an
/// append): counted, and logged at WARN at most once a minute (a FLUSHALL
/// or an empty restart loses every live stream at once), DEBUG otherwise.
fn keys_lost(stream: &str, last_seq: u64) {
    static LAST_WARN_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    crate::observe::metrics::store_keys_lost();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let last = LAST_WARN_MS.load(std::sync::atomic::Ordering::Relaxed);
    if now.saturating_sub(last) >= 60_000
        && LAST_WARN_MS
            .compare_exchange(
                last,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
    {
        tracing::warn!(%stream, last_seq, "Redis lost the keys of a live stream (FLUSHALL, a restart without persistence, or eviction): it goes on after seq {last_seq}; events up to it are gone from Redis (counted in ballast_store_keys_lost_total; further losses this minute are logged at DEBUG)");
    } else {
        tracing::debug!(%stream, last_seq, "Redis lost the keys of a live stream; it goes on after its last seq");
    }
}

/// `<owner>\n<event>` split in two; `None` if it is not that.
fn split_one_shot(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = value.iter().position(|&b| b == b'\n')?;
    Some((&value[..nl], &value[nl + 1..]))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisEventLog {
    async fn open_with(
        &self,
        stream: &str,
        session: &str,
        request: Option<Bytes>,
    ) -> Result<(), StoreError> {
        // Known here before the script runs: an append racing this opening
        // creates the stream itself (see `push`).
        self.local().entry(stream.into()).or_insert_with(|| Local {
            owner: session.into(),
            last_seq: 0,
        });
        let (meta, _) = self.keys(stream);
        let writer = self.backend.replica();
        let script = &self.open;
        let opened = self
            .backend
            .run(|mut c| async move {
                script
                    .key(&meta)
                    .arg(session)
                    .arg(writer)
                    .arg(request.as_deref().unwrap_or_default())
                    .arg(ms(LIVE_TTL))
                    .invoke_async::<()>(&mut c)
                    .await
            })
            .await;
        if opened.is_err() {
            self.local().remove(stream);
        }
        opened
    }

    /// Opens `stream` for session `session` (unless it exists) and appends
    /// its first event (and, if `last`, finishes it), in one script call:
    /// one round trip for a call whose first event (not its answer) came
    /// before its stream had to be visible (see
    /// [`crate::store::FallbackEventLog`]; an answer goes to
    /// [`Self::store_one_shot`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis fails.
    pub async fn open_and_push(
        &self,
        stream: &str,
        session: &Arc<str>,
        request: Option<Bytes>,
        data: Bytes,
        last: bool,
    ) -> Result<u64, StoreError> {
        self.local().entry(stream.into()).or_insert_with(|| Local {
            owner: session.clone(),
            last_seq: 0,
        });
        let opening = Opening {
            owner: session,
            request: request.as_deref().unwrap_or_default(),
        };
        let pushed = self.push_with(stream, data, last, Some(opening)).await;
        if pushed.is_err() {
            self.local().remove(stream);
        }
        pushed
    }

    /// `stream` was delivered to its client: its keys (`o:` if `one_shot`,
    /// else `m:` and `s:`) now live [`StreamLimits::delivered_ttl`] instead
    /// of the resume window, as in memory. Sent with the next batch; not
    /// waited for.
    pub fn shorten(&self, stream: &str, one_shot: bool) {
        let ttl = ms(self.limits.delivered_ttl);
        if one_shot {
            self.sets.expire(self.one_shot_key(stream), ttl);
        } else {
            let (meta, events) = self.keys(stream);
            self.sets.expire(meta, ttl);
            self.sets.expire(events, ttl);
        }
    }

    /// Stores a stream whose first event is its last (seq 1) as one key
    /// (module docs): one `SET … PX resume_window`, sent with the other
    /// calls' in one pipeline ([`SetBatcher`]). Returns at once; `then` runs
    /// once Redis answered (see [`SetBatcher::set`]). No reader can be
    /// waiting on the stream here or elsewhere: its id is not out yet.
    pub fn store_one_shot(&self, stream: &str, owner: Arc<str>, data: Bytes, then: Then) {
        let key = self.one_shot_key(stream);
        let value = Joined {
            head: owner,
            body: data,
        };
        self.sets.set(key, value, ms(self.resume_window), then);
    }

    /// One append (and, if `last`, the finish) in one script call. For a
    /// stream this process opened, the script also creates it if missing
    /// (its deferred or in-flight opening may arrive after this append).
    async fn push(&self, stream: &str, data: Bytes, last: bool) -> Result<u64, StoreError> {
        let local = self.local().get(stream).cloned();
        let opening = local.as_ref().map(|l| Opening {
            owner: &l.owner,
            request: &[],
        });
        self.push_with(stream, data, last, opening).await
    }

    async fn push_with(
        &self,
        stream: &str,
        data: Bytes,
        last: bool,
        opening: Option<Opening<'_>>,
    ) -> Result<u64, StoreError> {
        let writer = self.backend.replica();
        // Where this writer's seqs stand: a recreated stream goes on after it.
        let floor = self.local().get(stream).map_or(0, |l| l.last_seq);
        let (owner, request) = opening.map_or(("", &[][..]), |o| (o.owner, o.request));
        let owner_writer = if owner.is_empty() { "" } else { writer };
        let (meta, events) = self.keys(stream);
        let channel = notify::channel(&self.backend, stream);
        let script = &self.append;
        let limits = self.limits;
        let ttl = ms(if last { self.resume_window } else { LIVE_TTL });
        let (seq, lost): (i64, i64) = self
            .backend
            .run(|mut c| async move {
                script
                    .key(&meta)
                    .key(&events)
                    .arg(data.as_ref())
                    .arg(limits.max_events)
                    .arg(limits.max_bytes)
                    .arg(ttl)
                    .arg(&channel)
                    .arg(if last { "1" } else { "0" })
                    .arg(owner)
                    .arg(owner_writer)
                    .arg(request)
                    .arg(floor)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if lost == 1 {
            keys_lost(stream, floor);
            self.backend.note_keys_lost();
        }
        self.waiters.wake(stream);
        let seq = u64::try_from(seq).map_err(|_| StoreError::UnknownStream)?;
        let mut local = self.local();
        if last {
            local.remove(stream);
        } else if let Some(l) = local.get_mut(stream) {
            l.last_seq = l.last_seq.max(seq);
        }
        Ok(seq)
    }
}

/// Keeps this replica's liveness key (`replica:<id>`, TTL [`REPLICA_TTL`])
/// fresh every [`HEARTBEAT`] until `stop`.
async fn heartbeat(
    backend: std::sync::Weak<RedisBackend>,
    stop: tokio_util::sync::CancellationToken,
) {
    // Whether this replica's canary key was written: if Redis has it no
    // more (it lives an hour), Redis lost what this replica wrote.
    let mut canary_written = false;
    loop {
        let Some(b) = backend.upgrade() else { return };
        let key = b.key(&format!("replica:{}", b.replica()));
        let canary = b.key(&format!("canary:{}", b.replica()));
        let ttl = ms(REPLICA_TTL);
        let canary_ttl = ms(CANARY_TTL);
        // Two commands, not one pipeline: on a Redis Cluster the two keys
        // live in different hash slots.
        let beat = b
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(1)
                    .arg("PX")
                    .arg(ttl)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await;
        if let Err(e) = &beat {
            tracing::debug!(error = %e, "replica heartbeat failed");
        }
        let canary = b
            .run(|mut c| async move {
                redis::cmd("SET")
                    .arg(&canary)
                    .arg(1)
                    .arg("PX")
                    .arg(canary_ttl)
                    .arg("GET")
                    .query_async::<Option<String>>(&mut c)
                    .await
            })
            .await;
        match canary {
            Ok(None) if canary_written => {
                tracing::warn!(
                    "Redis lost this replica's keys (FLUSHALL, or a restart without persistence); writing back the sessions it holds"
                );
                b.note_keys_lost();
            }
            Ok(_) => canary_written = true,
            Err(e) => tracing::debug!(error = %e, "replica canary check failed"),
        }
        drop(b);
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// How long a replica's canary key outlives its last refresh (each
/// heartbeat): an outage shorter than this after which Redis has no canary
/// means Redis lost its keys.
const CANARY_TTL: Duration = Duration::from_secs(3600);

/// The first-event grace of the Redis log ([`EventLog::first_event_grace`]),
/// where it decides what a call costs Redis: a stream answered within it
/// is stored as one key by one pipelined `SET`; one answered later must
/// first be made visible to the other replicas (its keys created before the
/// headers go out, one round trip), then its answer appended by the Lua
/// append and published: ≈ 25 µs of redis-server time instead of ≈ 2 µs.
/// On a busy machine many upstream answers take longer than 2 ms (34 % of
/// the calls at c=64 with the CPU shared with a build), so the wait is
/// longer than in memory. A client cut off before the headers could not
/// resume that call (it has no stream id yet).
pub const SHARED_FIRST_EVENT_GRACE: Duration = Duration::from_millis(10);

/// How often a replica refreshes its liveness key.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// How long a replica's liveness key outlives its last refresh: a replica
/// silent this long is dead, and its unfinished streams may be claimed.
pub const REPLICA_TTL: Duration = Duration::from_secs(3);

impl EventLog for RedisEventLog {
    fn is_shared(&self) -> bool {
        true
    }

    fn first_event_grace(&self) -> Duration {
        SHARED_FIRST_EVENT_GRACE
    }

    fn open<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.open_with(stream, session, None))
    }

    fn open_for_request<'a>(
        &'a self,
        stream: &'a str,
        session: &'a str,
        request: Bytes,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(self.open_with(stream, session, Some(request)))
    }

    fn claim_orphan<'a>(
        &'a self,
        stream: &'a str,
    ) -> BoxFuture<'a, Result<Option<Orphan>, StoreError>> {
        Box::pin(async move {
            let (meta, _) = self.keys(stream);
            let seen: (Option<String>, Option<String>) = {
                let meta = &meta;
                self.backend
                    .run(|mut c| async move {
                        redis::cmd("HMGET")
                            .arg(meta)
                            .arg("fin")
                            .arg("writer")
                            .query_async(&mut c)
                            .await
                    })
                    .await?
            };
            let writer = match seen {
                (Some(fin), writer) if fin != "1" => writer.unwrap_or_default(),
                _ => return Ok(None), // gone or finished
            };
            if !writer.is_empty() {
                let alive = self.backend.key(&format!("replica:{writer}"));
                let alive: bool = self
                    .backend
                    .run(|mut c| async move {
                        redis::cmd("EXISTS").arg(&alive).query_async(&mut c).await
                    })
                    .await?;
                if alive {
                    return Ok(None);
                }
            }
            let script = &self.claim;
            let me = self.backend.replica();
            let claimed: Option<(Vec<u8>, String)> = self
                .backend
                .run(|mut c| async move {
                    script
                        .key(&meta)
                        .arg(&writer)
                        .arg(me)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            let Some((request, seq)) = claimed else {
                return Ok(None);
            };
            let last_seq = seq.parse().unwrap_or(0);
            let owner = self.owner(stream).await?.unwrap_or_else(|| "".into());
            self.local()
                .insert(stream.into(), Local { owner, last_seq });
            Ok(Some(Orphan {
                request: (!request.is_empty()).then(|| Bytes::from(request)),
                last_seq,
            }))
        })
    }

    fn append<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.push(stream, data, false))
    }

    fn append_last<'a>(
        &'a self,
        stream: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(self.push(stream, data, true))
    }

    fn finish<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let (meta, events) = self.keys(stream);
            let one_shot = self.one_shot_key(stream);
            let channel = notify::channel(&self.backend, stream);
            let script = &self.finish;
            let window = ms(self.resume_window);
            let found: i64 = self
                .backend
                .run(|mut c| async move {
                    script
                        .key(&meta)
                        .key(&events)
                        .key(&one_shot)
                        .arg(window)
                        .arg(&channel)
                        .invoke_async(&mut c)
                        .await
                })
                .await?;
            self.local().remove(stream);
            self.waiters.wake(stream);
            if found < 0 {
                return Err(StoreError::UnknownStream);
            }
            Ok(())
        })
    }

    fn read<'a>(
        &'a self,
        stream: &'a str,
        after: u64,
        wait: Duration,
    ) -> BoxFuture<'a, Result<Batch, StoreError>> {
        Box::pin(async move {
            let deadline = Instant::now() + wait;
            let wake = self.waiters.register(stream);
            loop {
                let woken = wake.notified();
                tokio::pin!(woken);
                woken.as_mut().enable();
                let batch = self.fetch(stream, after).await?;
                if !batch.events.is_empty() || batch.finished {
                    return Ok(batch);
                }
                let now = Instant::now();
                if now >= deadline {
                    return Ok(batch);
                }
                let _ = tokio::time::timeout_at(deadline.min(now + self.poll), woken).await;
            }
        })
    }

    fn owner<'a>(&'a self, stream: &'a str) -> BoxFuture<'a, Result<Option<Arc<str>>, StoreError>> {
        Box::pin(async move {
            let (meta, _) = self.keys(stream);
            let one_shot = self.one_shot_key(stream);
            let (owner, single): (Option<String>, Option<Vec<u8>>) = self
                .backend
                .run(|mut c| async move {
                    redis::pipe()
                        .hget(&meta, "owner")
                        .get(&one_shot)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            if let Some(owner) = owner {
                return Ok(Some(owner.into()));
            }
            Ok(single
                .as_deref()
                .and_then(split_one_shot)
                .and_then(|(owner, _)| std::str::from_utf8(owner).ok())
                .map(Arc::from))
        })
    }

    fn expire<'a>(
        &'a self,
        _resume_window: Duration,
        ended: &'a [Arc<str>],
    ) -> BoxFuture<'a, usize> {
        Box::pin(async move {
            // Redis expires keys by their TTLs (a finished stream's is the
            // resume window); this deletes the unfinished streams this
            // process writes for sessions that ended here. Finished ones
            // are left to their TTL: their session is gone, so no replica
            // serves them any more.
            let mut doomed = Vec::new();
            let dropped = {
                let mut local = self.local();
                let before = local.len();
                local.retain(|stream, l| {
                    let orphaned = ended.contains(&l.owner);
                    if orphaned {
                        doomed.push(stream.clone());
                    }
                    !orphaned
                });
                before - local.len()
            };
            if !doomed.is_empty() {
                // One UNLINK per stream (its keys share a hash slot);
                // UNLINK: Redis frees them off its main thread. Unfinished,
                // so never the one-key form.
                let unlinks = doomed
                    .iter()
                    .map(|s| {
                        let (m, e) = self.keys(s);
                        let mut unlink = redis::cmd("UNLINK");
                        unlink.arg(&m).arg(&e);
                        (m, unlink)
                    })
                    .collect();
                let deleted = self.backend.run_each(unlinks).await;
                if let Some(Err(e)) = deleted.into_iter().find(Result::is_err) {
                    tracing::debug!(error = %e, "could not delete ended streams; their TTLs will");
                }
                for s in &doomed {
                    self.waiters.wake(s);
                }
            }
            dropped
        })
    }

    fn len(&self) -> usize {
        self.local().len()
    }
}
