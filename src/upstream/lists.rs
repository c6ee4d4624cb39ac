//! The catalog lists one upstream offers, fetched through every page.

use serde_json::{Value, json};

use super::Connection;
use crate::jsonrpc::to_raw;
use crate::mcp::method;

/// Upper bound on pages fetched per list (a server that never stops
/// returning `nextCursor` cannot hold Ballast forever).
const MAX_PAGES: usize = 1000;

/// Tools, prompts, resources and resource templates of one upstream, as the
/// upstream sent them (one JSON object per item, unknown fields kept).
#[derive(Debug, Default, Clone)]
pub struct Lists {
    /// `tools/list` items.
    pub tools: Vec<Value>,
    /// `prompts/list` items.
    pub prompts: Vec<Value>,
    /// `resources/list` items.
    pub resources: Vec<Value>,
    /// `resources/templates/list` items.
    pub resource_templates: Vec<Value>,
}

impl Lists {
    /// Fetches every list the upstream's capabilities announce. A list that
    /// fails to load is logged and left empty; the others still load.
    pub(crate) async fn fetch(conn: &Connection) -> Lists {
        let caps = conn
            .info()
            .map(|i| i.capabilities.clone())
            .unwrap_or_default();
        let has = |k: &str| caps.get(k).is_some_and(|v| !v.is_null());
        let mut lists = Lists::default();
        if has("tools") {
            lists.tools = fetch_all(conn, method::TOOLS_LIST, "tools").await;
        }
        if has("prompts") {
            lists.prompts = fetch_all(conn, method::PROMPTS_LIST, "prompts").await;
        }
        if has("resources") {
            lists.resources = fetch_all(conn, method::RESOURCES_LIST, "resources").await;
            lists.resource_templates =
                fetch_all(conn, method::RESOURCE_TEMPLATES_LIST, "resourceTemplates").await;
        }
        lists
    }
}

async fn fetch_all(conn: &Connection, method: &str, key: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..MAX_PAGES {
        let params = cursor.take().map(|c| to_raw(&json!({ "cursor": c })));
        let id = conn.next_id();
        let page = match conn.request(id, method, params).await {
            Ok(r) => r.outcome.map_err(|e| e.get().to_owned()),
            Err(e) => Err(e.to_string()),
        };
        let page: Value = match page
            .and_then(|raw| serde_json::from_str(raw.get()).map_err(|e| e.to_string()))
        {
            Ok(v) => v,
            Err(error) => {
                tracing::warn!(method, %error, "could not fetch an upstream list; it stays empty");
                break;
            }
        };
        if let Some(Value::Array(page_items)) = page.get(key) {
            items.extend(page_items.iter().cloned());
        }
        match page.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => break,
        }
    }
    items
}
