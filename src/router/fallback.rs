//! Fallback chains (DESIGN.md "degrade loudly"): when a tool call fails and
//! the tool's policy names a `fallback` tool (by its public name, possibly on
//! another upstream), the same arguments go there; a result obtained that
//! way is marked in its `_meta` as `ballast/degraded`.

use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::Router;
use crate::downstream::{Session, Sink};
use crate::jsonrpc::{RequestId, Response, code, to_raw};
use crate::mcp::{Params, method};

/// Longest chain of fallbacks followed for one call.
const MAX_FALLBACKS: usize = 3;

impl Router {
    /// Tries the fallback chain of a failed `tools/call`. `params` are the
    /// call's params (the arguments as the client sent them); `tool` the
    /// failed tool's name on `upstream`. Returns the first success, marked degraded, or `None`.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn try_fallbacks(
        &self,
        session: &Arc<Session>,
        id: &RequestId,
        params: &RawValue,
        mut upstream: usize,
        mut tool: String,
        sink: Option<Sink>,
        primary: &Response,
    ) -> Option<Response> {
        if !falls_back_on(primary) {
            return None;
        }
        let mut tried = vec![];
        for _ in 0..MAX_FALLBACKS {
            let fallback = self.policies.get(upstream)?.fallback(&tool)?.to_owned();
            if tried.contains(&fallback) {
                return None;
            }
            tried.push(fallback.clone());
            let mut p = Params::split(Some(params))?;
            p.set("name", &fallback);
            let Ok((next, routed)) = self.route(method::TOOLS_CALL, Some(p.into_raw())) else {
                return None;
            };
            let safety = self.safety(method::TOOLS_CALL, next, routed.as_deref());
            let next_tool = safety.tool.clone()?;
            tracing::info!(tool = %tool, fallback = %fallback, "primary failed; trying its fallback");
            let response = self
                .forward(
                    session,
                    next,
                    id.clone(),
                    method::TOOLS_CALL,
                    &routed,
                    sink.clone(),
                    safety,
                )
                .await?;
            if let Ok(result) = &response.outcome {
                self.stats.count(crate::observe::Counter::CallsDegraded);
                let primary_upstream = self.upstreams.get(upstream).map(|u| &*u.name);
                crate::observe::metrics::degraded(primary_upstream.unwrap_or_default(), &tool);
                let marker = json!({ "source": "fallback", "tool": fallback, "primary_error": primary_error(primary) });
                return Some(Response::ok(id.clone(), mark_degraded(result, marker)));
            }
            (upstream, tool) = (next, next_tool);
        }
        None
    }
}

/// Whether a failed answer may be replaced by a fallback's or a stale one:
/// any error but the client's own — a malformed request would fail there
/// too, and a rate limit means "come back later", not "take older data".
pub(super) fn falls_back_on(response: &Response) -> bool {
    let Err(error) = &response.outcome else {
        return false;
    };
    let code = serde_json::from_str::<Value>(error.get())
        .ok()
        .and_then(|e| e["code"].as_i64());
    !matches!(
        code,
        Some(
            code::INVALID_REQUEST | code::METHOD_NOT_FOUND | code::PARSE_ERROR | code::RATE_LIMITED
        )
    )
}

/// The code and message of a failed answer, for a degraded result's marker.
pub(super) fn primary_error(primary: &Response) -> Value {
    primary
        .outcome
        .as_ref()
        .err()
        .and_then(|e| serde_json::from_str::<Value>(e.get()).ok())
        .map_or(
            Value::Null,
            |e| json!({ "code": e["code"], "message": e["message"] }),
        )
}

/// Adds `_meta["ballast/degraded"] = marker` to a result.
pub(super) fn mark_degraded(result: &RawValue, marker: Value) -> Box<RawValue> {
    let mut obj: Map<String, Value> = serde_json::from_str(result.get()).unwrap_or_default();
    let meta = obj.entry("_meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert("ballast/degraded".into(), marker);
    }
    to_raw(&obj)
}
