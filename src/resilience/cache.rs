//! The stale cache (DESIGN.md "degrade loudly"): the last good result of
//! each read-only tool call, keyed by a SHA-256 of its scope, tool and
//! canonical arguments, kept for `stale_ttl`. Served only when the call and
//! its fallbacks failed, and then marked as stale with its age. A moka
//! cache bounded by bytes and by count ([`CacheBounds`]), with an optional
//! second tier shared by replicas ([`super::SharedCache`]) bounded alike.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::config::CacheConfig;

/// A result is written to the shared tier at most this often per key (the
/// local copy says how fresh the shared one is).
const SHARED_WRITE_EVERY: Duration = Duration::from_secs(1);

/// What one kept entry costs beyond its result's bytes (bytes): the key,
/// the `Arc` with its time stamp, and moka's own bookkeeping.
pub const ENTRY_OVERHEAD_BYTES: usize = 256;

/// The key of one cached result: SHA-256 of its scope, tool and canonical
/// arguments (32 bytes whatever the arguments' size; the same on every
/// replica, so the shared tier agrees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey([u8; 32]);

impl CacheKey {
    /// Lower-case hex, for the shared tier's key names (64 characters).
    pub fn hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// How much the cache of one upstream may hold, locally and in the shared tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheBounds {
    /// Most results kept (count).
    pub max_entries: u64,
    /// Most bytes kept, results plus [`ENTRY_OVERHEAD_BYTES`] each.
    pub max_bytes: u64,
    /// A larger result (bytes of its JSON) is not cached at all.
    pub max_result_bytes: usize,
}

impl CacheBounds {
    /// What an entry holding `result_bytes` counts against the bounds:
    /// its bytes, but at least `max_bytes / max_entries`, so that neither
    /// more than `max_entries` entries nor more than `max_bytes` bytes fit.
    pub fn weight(&self, result_bytes: usize) -> u64 {
        let floor = self.max_bytes / self.max_entries.max(1);
        (result_bytes as u64 + ENTRY_OVERHEAD_BYTES as u64).max(floor)
    }
}

/// Last good results of read-only tool calls.
pub struct StaleCache {
    entries: moka::sync::Cache<CacheKey, Arc<(Instant, Box<RawValue>)>>,
    stale_ttl: Duration,
    bounds: CacheBounds,
    /// The shared tier and this cache's namespace in it (the upstream).
    shared: Option<(Arc<dyn super::SharedCache>, String)>,
}

impl StaleCache {
    /// A cache within `config`'s bounds (`max_entries`, `max_bytes`,
    /// `max_result_bytes`), each result kept `stale_ttl`.
    pub fn new(config: &CacheConfig) -> Self {
        let bounds = CacheBounds {
            max_entries: config.max_entries.max(1),
            max_bytes: config.max_bytes.max(1),
            max_result_bytes: config.max_result_bytes,
        };
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(bounds.max_bytes)
                .weigher(move |_, v: &Arc<(Instant, Box<RawValue>)>| {
                    u32::try_from(bounds.weight(v.1.get().len())).unwrap_or(u32::MAX)
                })
                .time_to_live(config.stale_ttl)
                .build(),
            stale_ttl: config.stale_ttl,
            bounds,
            shared: None,
        }
    }

    /// Adds a second tier shared by replicas, under `namespace`.
    #[must_use]
    pub fn with_shared(mut self, shared: Arc<dyn super::SharedCache>, namespace: &str) -> Self {
        self.shared = Some((shared, namespace.to_owned()));
        self
    }

    /// The key for `tool` called with `arguments` (any key order), within
    /// `scope`: `None` for a result any caller may get, `Some(session)` for
    /// one only that session may get (a `cacheScope: "private"` result).
    pub fn key(scope: Option<&str>, tool: &str, arguments: Option<&Value>) -> CacheKey {
        use aws_lc_rs::digest;
        let mut ctx = digest::Context::new(&digest::SHA256);
        match scope {
            Some(session) => {
                ctx.update(b"s\0");
                ctx.update(session.as_bytes());
            }
            None => ctx.update(b"p"),
        }
        ctx.update(b"\0");
        ctx.update(tool.as_bytes());
        ctx.update(b"\0");
        if let Some(args) = arguments {
            ctx.update(canonical(args).to_string().as_bytes());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        CacheKey(key)
    }

    /// Remembers a good result — at most once a second per key: a result
    /// that fresh is as good a stale answer as the newer one, and under load
    /// the same call repeats thousands of times a second. Also hands it to
    /// the shared tier in the background. A result over `max_result_bytes`
    /// is not kept.
    pub fn put(&self, key: CacheKey, result: &RawValue) {
        if result.get().len() > self.bounds.max_result_bytes {
            return;
        }
        let recent = self
            .entries
            .get(&key)
            .is_some_and(|e| e.0.elapsed() < SHARED_WRITE_EVERY);
        if recent {
            return;
        }
        if let Some((shared, namespace)) = &self.shared {
            shared.put(
                namespace,
                &key.hex(),
                result.to_owned(),
                self.stale_ttl,
                self.bounds,
            );
        }
        self.entries
            .insert(key, Arc::new((Instant::now(), result.to_owned())));
    }

    /// The last good result and its age, if still kept here or, failing
    /// that, by any replica in the shared tier.
    pub async fn get(&self, key: &CacheKey) -> Option<(Box<RawValue>, Duration)> {
        if let Some(entry) = self.entries.get(key) {
            return Some((entry.1.clone(), entry.0.elapsed()));
        }
        let (shared, namespace) = self.shared.as_ref()?;
        shared
            .get(namespace, &key.hex())
            .await
            .filter(|(_, age)| *age <= self.stale_ttl)
    }

    /// Bytes the local tier holds by [`CacheBounds::weight`] (after its
    /// pending evictions ran).
    pub fn weighted_bytes(&self) -> u64 {
        self.entries.run_pending_tasks();
        self.entries.weighted_size()
    }
}

/// Whether a result says it is for its caller only: `cacheScope:
/// "private"` (2026-07-28, SPEC.md 30; the same word as HTTP's
/// `Cache-Control: private`). Such a result is cached for the caller's
/// session only, never served to another.
pub fn is_private(result: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Scope<'a> {
        #[serde(rename = "cacheScope", borrow)]
        cache_scope: Option<&'a str>,
    }
    // Most results never mention it: skip the parse for them.
    result.get().contains("\"cacheScope\"")
        && serde_json::from_str::<Scope<'_>>(result.get())
            .is_ok_and(|s| s.cache_scope == Some("private"))
}

/// `value` with every object's keys sorted (so equal arguments give equal keys).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let sorted: Map<String, Value> = keys
                .into_iter()
                .map(|k| (k.clone(), canonical(&map[k])))
                .collect();
            Value::Object(sorted)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_ignore_argument_order_and_distinguish_values() {
        let a = StaleCache::key(
            None,
            "t",
            Some(&json!({ "b": 1, "a": { "y": 2, "x": [1, { "q": 0, "p": 1 }] } })),
        );
        let b = StaleCache::key(
            None,
            "t",
            Some(&json!({ "a": { "x": [1, { "p": 1, "q": 0 }], "y": 2 }, "b": 1 })),
        );
        assert_eq!(a, b);
        assert_ne!(a, StaleCache::key(None, "t", Some(&json!({ "b": 2 }))));
        assert_ne!(
            a,
            StaleCache::key(None, "u", Some(&json!({ "b": 1, "a": {} })))
        );
    }

    #[test]
    fn private_results_are_keyed_by_session() {
        let args = json!({ "q": 1 });
        let public = StaleCache::key(None, "t", Some(&args));
        let a = StaleCache::key(Some("A"), "t", Some(&args));
        let b = StaleCache::key(Some("B"), "t", Some(&args));
        assert!(public != a && a != b && public != b);
        let private =
            RawValue::from_string(r#"{"content":[],"cacheScope":"private"}"#.into()).expect("json");
        let public_result =
            RawValue::from_string(r#"{"content":[],"cacheScope":"public"}"#.into()).expect("json");
        let mention = RawValue::from_string(
            r#"{"content":[{"type":"text","text":"\"cacheScope\""}]}"#.into(),
        )
        .expect("json");
        assert!(is_private(&private));
        assert!(!is_private(&public_result));
        assert!(!is_private(&mention), "only the top-level field counts");
    }

    fn config(max_entries: u64, max_bytes: u64, max_result_bytes: usize) -> CacheConfig {
        CacheConfig {
            enabled: true,
            stale_ttl: Duration::from_secs(60),
            max_entries,
            max_bytes,
            max_result_bytes,
        }
    }

    fn key(n: usize) -> CacheKey {
        StaleCache::key(None, "t", Some(&json!({ "n": n })))
    }

    #[tokio::test]
    async fn results_are_kept_and_aged() {
        let c = StaleCache::new(&config(10, 1 << 20, 1 << 20));
        let raw = RawValue::from_string("{\"ok\":true}".into()).unwrap();
        c.put(key(1), &raw);
        let (got, age) = c.get(&key(1)).await.expect("cached");
        assert_eq!(got.get(), "{\"ok\":true}");
        assert!(age < Duration::from_secs(60));
        assert!(c.get(&key(2)).await.is_none());
    }

    #[tokio::test]
    async fn the_local_tier_is_bounded_by_bytes_and_by_count() {
        // 1 MiB of room; results of 100 KiB: about ten fit, never more bytes.
        let c = StaleCache::new(&config(1000, 1 << 20, 1 << 20));
        let big = RawValue::from_string(format!("\"{}\"", "x".repeat(100 * 1024))).unwrap();
        for n in 0..100 {
            c.put(key(n), &big);
        }
        let held = c.weighted_bytes();
        assert!(held <= 1 << 20, "{held} bytes held");
        assert!(held >= 5 * 100 * 1024, "kept some: {held}");
        // Tiny results: the count bound holds (10 entries at most).
        let c = StaleCache::new(&config(10, 1 << 20, 1 << 20));
        let small = RawValue::from_string("1".into()).unwrap();
        for n in 0..100 {
            c.put(key(n), &small);
        }
        c.entries.run_pending_tasks();
        assert!(c.entries.entry_count() <= 10, "{}", c.entries.entry_count());
        // A result over max_result_bytes is not kept at all.
        let c = StaleCache::new(&config(10, 1 << 20, 1000));
        c.put(key(1), &big);
        assert!(c.get(&key(1)).await.is_none());
    }
}
