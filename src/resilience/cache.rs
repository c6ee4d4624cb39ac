//! The stale cache (DESIGN.md "degrade loudly"): the last good result of
//! each read-only tool call, keyed by tool and canonical arguments, kept for
//! `stale_ttl`. Served only when the call and its fallbacks failed, and
//! then marked as stale with its age. A moka cache (bounded, TTL), with an
//! optional second tier shared by replicas ([`super::SharedCache`]).

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

/// A result is written to the shared tier at most this often per key (the
/// local copy says how fresh the shared one is).
const SHARED_WRITE_EVERY: Duration = Duration::from_secs(1);

/// Keys longer than this stay local (bytes).
const MAX_SHARED_KEY: usize = 1024;

/// Last good results of read-only tool calls.
pub struct StaleCache {
    entries: moka::sync::Cache<String, Arc<(Instant, Box<RawValue>)>>,
    stale_ttl: Duration,
    /// The shared tier and this cache's namespace in it (the upstream).
    shared: Option<(Arc<dyn super::SharedCache>, String)>,
}

impl StaleCache {
    /// At most `max_entries` results, each kept `stale_ttl`.
    pub fn new(max_entries: u64, stale_ttl: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(stale_ttl)
                .build(),
            stale_ttl,
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
    pub fn key(scope: Option<&str>, tool: &str, arguments: Option<&Value>) -> String {
        let mut key = String::new();
        if let Some(session) = scope {
            key.push_str("s:");
            key.push_str(session);
            key.push('\0');
        }
        key.push_str(tool);
        key.push('\0');
        if let Some(args) = arguments {
            key.push_str(&canonical(args).to_string());
        }
        key
    }

    /// Remembers a good result — at most once a second per key: a result
    /// that fresh is as good a stale answer as the newer one, and under load
    /// the same call repeats thousands of times a second. Also hands it to
    /// the shared tier in the background.
    pub fn put(&self, key: String, result: &RawValue) {
        let recent = self
            .entries
            .get(&key)
            .is_some_and(|e| e.0.elapsed() < SHARED_WRITE_EVERY);
        if recent {
            return;
        }
        if let Some((shared, namespace)) = &self.shared
            && key.len() <= MAX_SHARED_KEY
        {
            shared.put(
                format!("{namespace}\0{key}"),
                result.to_owned(),
                self.stale_ttl,
            );
        }
        self.entries
            .insert(key, Arc::new((Instant::now(), result.to_owned())));
    }

    /// The last good result and its age, if still kept here or, failing
    /// that, by any replica in the shared tier.
    pub async fn get(&self, key: &str) -> Option<(Box<RawValue>, Duration)> {
        if let Some(entry) = self.entries.get(key) {
            return Some((entry.1.clone(), entry.0.elapsed()));
        }
        let (shared, namespace) = self.shared.as_ref()?;
        if key.len() > MAX_SHARED_KEY {
            return None;
        }
        shared
            .get(&format!("{namespace}\0{key}"))
            .await
            .filter(|(_, age)| *age <= self.stale_ttl)
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

    #[tokio::test]
    async fn results_are_kept_and_aged() {
        let c = StaleCache::new(10, Duration::from_secs(60));
        let raw = RawValue::from_string("{\"ok\":true}".into()).unwrap();
        c.put("k".into(), &raw);
        let (got, age) = c.get("k").await.expect("cached");
        assert_eq!(got.get(), "{\"ok\":true}");
        assert!(age < Duration::from_secs(60));
        assert!(c.get("other").await.is_none());
    }
}
