//! The merged catalog: tools, prompts, resources and templates of every
//! ready upstream, with tool and prompt names namespaced as
//! `<prefix><separator><name>` when configured (DESIGN.md "router").
//!
//! Built from the upstreams' [`Lists`](crate::upstream::Lists) and rebuilt
//! only when an upstream's generation changes; list answers are pre-serialized.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::jsonrpc::to_raw;
use crate::upstream::Upstream;

/// Where a public name or URI is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Index of the upstream.
    pub upstream: usize,
    /// The name as the upstream knows it (without prefix).
    pub name: String,
}

/// What Ballast knows about one tool, for routing and (later) policy.
#[derive(Debug, Clone)]
pub struct ToolEntry {
    /// Where it is served.
    pub target: Target,
    /// `annotations.readOnlyHint` (default false; an untrusted hint, SPEC.md 29).
    pub read_only: bool,
    /// `annotations.idempotentHint` (default false).
    pub idempotent: bool,
}

/// One immutable merged snapshot.
#[derive(Debug, Default)]
pub struct Catalog {
    tools: HashMap<String, ToolEntry>,
    prompts: HashMap<String, Target>,
    resources: HashMap<String, usize>,
    /// Literal prefix of each template (text before the first `{`), longest first.
    templates: Vec<(String, usize)>,
    /// `{"tools":[…]}` and friends, ready to send.
    tools_result: Option<Box<RawValue>>,
    prompts_result: Option<Box<RawValue>>,
    resources_result: Option<Box<RawValue>>,
    templates_result: Option<Box<RawValue>>,
    /// The upstream generations this snapshot was built from.
    generations: Vec<u64>,
}

impl Catalog {
    /// Builds a snapshot from every ready upstream. `prefixes[i]` is the
    /// namespace prefix of upstream `i`, or `None` when not namespaced.
    pub fn build(
        upstreams: &[Arc<Upstream>],
        prefixes: &[Option<String>],
        separator: &str,
    ) -> Catalog {
        let mut c = Catalog {
            generations: upstreams.iter().map(|u| u.generation()).collect(),
            ..Catalog::default()
        };
        let (mut tools, mut prompts, mut resources, mut templates) =
            (vec![], vec![], vec![], vec![]);
        for (u, prefix) in upstreams.iter().zip(prefixes) {
            if !u.is_listed() {
                continue;
            }
            let lists = u.lists();
            let public = |name: &str| match prefix {
                Some(p) => format!("{p}{separator}{name}"),
                None => name.to_owned(),
            };
            for tool in &lists.tools {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let public_name = public(name);
                if c.tools.contains_key(&public_name) {
                    tracing::warn!(tool = %public_name, upstream = %u.name, "tool name already taken; hidden");
                    continue;
                }
                let hint = |k: &str| {
                    tool.pointer(&format!("/annotations/{k}"))
                        .and_then(Value::as_bool)
                        .unwrap_or(false)
                };
                c.tools.insert(
                    public_name.clone(),
                    ToolEntry {
                        target: Target {
                            upstream: u.index,
                            name: name.to_owned(),
                        },
                        read_only: hint("readOnlyHint"),
                        idempotent: hint("idempotentHint"),
                    },
                );
                let mut tool = tool.clone();
                tool["name"] = json!(public_name);
                tools.push(tool);
            }
            for prompt in &lists.prompts {
                let Some(name) = prompt.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let public_name = public(name);
                if c.prompts.contains_key(&public_name) {
                    continue;
                }
                c.prompts.insert(
                    public_name.clone(),
                    Target {
                        upstream: u.index,
                        name: name.to_owned(),
                    },
                );
                let mut prompt = prompt.clone();
                prompt["name"] = json!(public_name);
                prompts.push(prompt);
            }
            for resource in &lists.resources {
                let Some(uri) = resource.get("uri").and_then(Value::as_str) else {
                    continue;
                };
                if c.resources.insert(uri.to_owned(), u.index).is_none() {
                    resources.push(resource.clone());
                }
            }
            for template in &lists.resource_templates {
                let Some(t) = template.get("uriTemplate").and_then(Value::as_str) else {
                    continue;
                };
                let literal = t.split('{').next().unwrap_or("").to_owned();
                c.templates.push((literal, u.index));
                templates.push(template.clone());
            }
        }
        c.templates.sort_by_key(|t| std::cmp::Reverse(t.0.len()));
        c.tools_result = Some(to_raw(&json!({ "tools": tools })));
        c.prompts_result = Some(to_raw(&json!({ "prompts": prompts })));
        c.resources_result = Some(to_raw(&json!({ "resources": resources })));
        c.templates_result = Some(to_raw(&json!({ "resourceTemplates": templates })));
        c
    }

    /// Whether this snapshot still matches the upstreams' generations.
    pub fn is_current(&self, upstreams: &[Arc<Upstream>]) -> bool {
        self.generations.len() == upstreams.len()
            && upstreams
                .iter()
                .zip(&self.generations)
                .all(|(u, g)| u.generation() == *g)
    }

    /// The tool behind a public name.
    pub fn tool(&self, public_name: &str) -> Option<&ToolEntry> {
        self.tools.get(public_name)
    }

    /// The prompt behind a public name.
    pub fn prompt(&self, public_name: &str) -> Option<&Target> {
        self.prompts.get(public_name)
    }

    /// The upstream serving a resource URI: an exact resource, else the
    /// template with the longest matching literal prefix.
    pub fn resource_upstream(&self, uri: &str) -> Option<usize> {
        self.resources.get(uri).copied().or_else(|| {
            self.templates
                .iter()
                .find(|(prefix, _)| !prefix.is_empty() && uri.starts_with(prefix.as_str()))
                .map(|(_, u)| *u)
        })
    }

    /// A fingerprint of the tool list as clients see it (to announce
    /// `list_changed` only when it changed).
    pub fn tools_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.tools_result.as_ref().map(|r| r.get()).hash(&mut h);
        h.finish()
    }

    /// The pre-serialized result for a list method, if it is one.
    pub fn list_result(&self, method: &str) -> Option<&RawValue> {
        use crate::mcp::method as m;
        match method {
            m::TOOLS_LIST => self.tools_result.as_deref(),
            m::PROMPTS_LIST => self.prompts_result.as_deref(),
            m::RESOURCES_LIST => self.resources_result.as_deref(),
            m::RESOURCE_TEMPLATES_LIST => self.templates_result.as_deref(),
            _ => None,
        }
    }
}
