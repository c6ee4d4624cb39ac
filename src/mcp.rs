//! Protocol knowledge: versions, method names, and the few params fields
//! Ballast reads or rewrites (SPEC.md items 7, 16, 23, 24).
//!
//! Params are edited at the top level only: the object is split into
//! `Map<String, Box<RawValue>>`, one field is replaced, and every other field
//! (known or not) is written back untouched.

use serde::Deserialize;
use serde_json::Map;
use serde_json::value::RawValue;

use crate::jsonrpc::to_raw;

/// Protocol versions of the legacy era that Ballast serves downstream,
/// oldest first (SPEC.md "Versions in the wild").
pub const LEGACY_VERSIONS: [&str; 4] = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"];

/// The newest legacy-era version: offered when a client asks for one Ballast
/// does not know (L25 "Version Negotiation"), and used towards upstreams.
pub const LATEST_LEGACY: &str = "2025-11-25";

/// Assumed when a request carries no `MCP-Protocol-Version` header (SPEC.md 7).
pub const DEFAULT_HEADER_VERSION: &str = "2025-03-26";

/// Method names Ballast treats specially; everything else is forwarded.
pub mod method {
    /// Lifecycle: first request of a session.
    pub const INITIALIZE: &str = "initialize";
    /// Lifecycle: the client's "I am ready" notification.
    pub const INITIALIZED: &str = "notifications/initialized";
    /// Liveness check, answered locally in both directions.
    pub const PING: &str = "ping";
    /// Cancellation of an in-flight request (U25 cancellation).
    pub const CANCELLED: &str = "notifications/cancelled";
    /// Progress for a request carrying `_meta.progressToken`.
    pub const PROGRESS: &str = "notifications/progress";
    /// Tool catalog.
    pub const TOOLS_LIST: &str = "tools/list";
    /// Tool invocation, routed by `params.name`.
    pub const TOOLS_CALL: &str = "tools/call";
    /// Prompt catalog.
    pub const PROMPTS_LIST: &str = "prompts/list";
    /// Prompt retrieval, routed by `params.name`.
    pub const PROMPTS_GET: &str = "prompts/get";
    /// Resource catalog.
    pub const RESOURCES_LIST: &str = "resources/list";
    /// Resource template catalog.
    pub const RESOURCE_TEMPLATES_LIST: &str = "resources/templates/list";
    /// Resource read, routed by `params.uri`.
    pub const RESOURCES_READ: &str = "resources/read";
    /// Resource subscription, routed by `params.uri`.
    pub const RESOURCES_SUBSCRIBE: &str = "resources/subscribe";
    /// Resource unsubscription, routed by `params.uri`.
    pub const RESOURCES_UNSUBSCRIBE: &str = "resources/unsubscribe";
    /// Argument completion, routed by `params.ref`.
    pub const COMPLETE: &str = "completion/complete";
    /// Logging level, sent to every upstream.
    pub const SET_LEVEL: &str = "logging/setLevel";
    /// Catalog change notifications.
    pub const TOOLS_LIST_CHANGED: &str = "notifications/tools/list_changed";
    /// Catalog change notifications.
    pub const PROMPTS_LIST_CHANGED: &str = "notifications/prompts/list_changed";
    /// Catalog change notifications.
    pub const RESOURCES_LIST_CHANGED: &str = "notifications/resources/list_changed";
    /// Server→client: the client's filesystem roots.
    pub const ROOTS_LIST: &str = "roots/list";
    /// A subscribed resource changed.
    pub const RESOURCES_UPDATED: &str = "notifications/resources/updated";
}

/// Whether `version` is a legacy-era version Ballast serves.
pub fn is_supported_version(version: &str) -> bool {
    LEGACY_VERSIONS.contains(&version)
}

/// The version Ballast answers to a client that asked for `requested`:
/// the same one if supported, else [`LATEST_LEGACY`] (L25).
pub fn negotiate(requested: &str) -> &'static str {
    LEGACY_VERSIONS
        .iter()
        .find(|v| **v == requested)
        .copied()
        .unwrap_or(LATEST_LEGACY)
}

/// Params split at the top level; values stay raw.
#[derive(Debug, Default)]
pub struct Params(pub indexmap::IndexMap<String, Box<RawValue>>);

impl Params {
    /// Splits raw params. `None` or a non-object gives `None`.
    pub fn split(raw: Option<&RawValue>) -> Option<Params> {
        serde_json::from_str(raw?.get()).ok().map(Params)
    }

    /// A string field, e.g. `name` or `uri`.
    pub fn str_field(&self, key: &str) -> Option<String> {
        serde_json::from_str::<String>(self.0.get(key)?.get()).ok()
    }

    /// Replaces (or inserts) a field with a serializable value.
    pub fn set<T: serde::Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.0.insert(key.to_owned(), to_raw(value));
    }

    /// `_meta.progressToken`, raw, if present.
    pub fn progress_token(&self) -> Option<Box<RawValue>> {
        let meta: Map<String, serde_json::Value> =
            serde_json::from_str(self.0.get("_meta")?.get()).ok()?;
        meta.get("progressToken").map(to_raw)
    }

    /// Sets `_meta.progressToken`, keeping every other `_meta` field.
    pub fn set_progress_token<T: serde::Serialize + ?Sized>(&mut self, token: &T) {
        let mut meta: Map<String, serde_json::Value> = self
            .0
            .get("_meta")
            .and_then(|m| serde_json::from_str(m.get()).ok())
            .unwrap_or_default();
        meta.insert(
            "progressToken".to_owned(),
            serde_json::to_value(token).unwrap_or_default(),
        );
        self.set("_meta", &meta);
    }

    /// Joins the fields back into raw params.
    pub fn into_raw(self) -> Box<RawValue> {
        to_raw(&self.0)
    }
}

/// The fields of `initialize` params Ballast reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitializeParams {
    /// The version the client asks for.
    pub protocol_version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_echoes_known_and_offers_latest_otherwise() {
        assert_eq!(negotiate("2025-06-18"), "2025-06-18");
        assert_eq!(negotiate("2099-01-01"), LATEST_LEGACY);
    }

    #[test]
    fn progress_token_rewrite_keeps_other_meta_fields() {
        let raw = RawValue::from_string(
            r#"{"name":"x","_meta":{"progressToken":"abc","k":1},"z":[1]}"#.into(),
        )
        .unwrap();
        let mut p = Params::split(Some(&raw)).unwrap();
        assert_eq!(p.progress_token().unwrap().get(), r#""abc""#);
        p.set_progress_token(&42u64);
        p.set("name", "y");
        assert_eq!(
            p.into_raw().get(),
            r#"{"name":"y","_meta":{"progressToken":42,"k":1},"z":[1]}"#
        );
    }
}
