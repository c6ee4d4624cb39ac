//! The stale cache (DESIGN.md "degrade loudly"): the last good result of
//! each read-only tool call, keyed by tool and canonical arguments, kept for
//! `stale_ttl`. Served only when the call and its fallbacks failed, and
//! then marked as stale with its age. A moka cache (bounded, TTL).

use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use tokio::time::Instant;

/// Last good results of read-only tool calls.
pub struct StaleCache {
    entries: moka::sync::Cache<String, (Instant, Box<RawValue>)>,
}

impl StaleCache {
    /// At most `max_entries` results, each kept `stale_ttl`.
    pub fn new(max_entries: u64, stale_ttl: Duration) -> Self {
        Self {
            entries: moka::sync::Cache::builder()
                .max_capacity(max_entries)
                .time_to_live(stale_ttl)
                .build(),
        }
    }

    /// The key for `tool` called with `arguments` (any key order).
    pub fn key(tool: &str, arguments: Option<&Value>) -> String {
        let mut key = String::from(tool);
        key.push('\0');
        if let Some(args) = arguments {
            key.push_str(&canonical(args).to_string());
        }
        key
    }

    /// Remembers a good result.
    pub fn put(&self, key: String, result: Box<RawValue>) {
        self.entries.insert(key, (Instant::now(), result));
    }

    /// The last good result and its age, if still kept.
    pub fn get(&self, key: &str) -> Option<(Box<RawValue>, Duration)> {
        self.entries
            .get(key)
            .map(|(at, result)| (result, at.elapsed()))
    }
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
            "t",
            Some(&json!({ "b": 1, "a": { "y": 2, "x": [1, { "q": 0, "p": 1 }] } })),
        );
        let b = StaleCache::key(
            "t",
            Some(&json!({ "a": { "x": [1, { "p": 1, "q": 0 }], "y": 2 }, "b": 1 })),
        );
        assert_eq!(a, b);
        assert_ne!(a, StaleCache::key("t", Some(&json!({ "b": 2 }))));
        assert_ne!(a, StaleCache::key("u", Some(&json!({ "b": 1, "a": {} }))));
    }

    #[tokio::test]
    async fn results_are_kept_and_aged() {
        let c = StaleCache::new(10, Duration::from_secs(60));
        let raw = RawValue::from_string("{\"ok\":true}".into()).unwrap();
        c.put("k".into(), raw);
        let (got, age) = c.get("k").expect("cached");
        assert_eq!(got.get(), "{\"ok\":true}");
        assert!(age < Duration::from_secs(60));
        assert!(c.get("other").is_none());
    }
}
