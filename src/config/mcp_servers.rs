//! Import of the `mcpServers` JSON that Claude Desktop, Cursor and Claude
//! Code use: `{"mcpServers": {"name": {"command", "args", "env", "cwd"} |
//! {"url", "headers"}}}`. Fields those tools add for themselves
//! (`autoApprove`, `alwaysAllow`, …) are ignored; `"disabled": true` skips an entry.
//! Ballast's own key `"required": false` marks an upstream optional
//! (readiness and `initialize` do not wait for it); other tools ignore it.

use std::path::Path;

use indexmap::IndexMap;
use serde::Deserialize;

use super::load::validate;
use super::{Config, ConfigError, UpstreamConfig};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    mcp_servers: IndexMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: IndexMap<String, String>,
    cwd: Option<std::path::PathBuf>,
    url: Option<String>,
    #[serde(default)]
    headers: IndexMap<String, String>,
    /// `stdio`, `http`, `streamable-http` or `sse`; informational, the
    /// transport follows from `command` / `url`.
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    disabled: bool,
    /// Ballast's own: whether readiness waits for it. Default true.
    #[serde(default = "yes")]
    required: bool,
}

fn yes() -> bool {
    true
}

/// Parses `mcpServers` JSON text into a config with default settings.
///
/// # Errors
/// [`ConfigError::Invalid`] with line and column for malformed JSON, and for
/// entries that fail validation (e.g. neither `command` nor `url`).
pub fn from_mcp_servers_json(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let file: File = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(src))
        .map_err(|e| json_error(path, &e))?;
    let mut config = Config::default();
    for (name, e) in file.mcp_servers {
        if e.disabled {
            continue;
        }
        let mut u = match (e.command, e.url) {
            (Some(cmd), url) => UpstreamConfig {
                url,
                ..UpstreamConfig::stdio(cmd, e.args)
            },
            (None, url) => UpstreamConfig {
                url,
                ..UpstreamConfig::http("")
            },
        };
        if e.kind.as_deref() == Some("sse") {
            u.transport = super::RemoteTransport::Sse;
        }
        u.env = e.env;
        u.cwd = e.cwd;
        u.headers = e.headers;
        u.required = e.required;
        let at = src.find(&format!("\"{name}\"")).unwrap_or(0);
        config.upstreams.insert(name, toml::Spanned::new(at..at, u));
    }
    validate(&config, src, path)?;
    Ok(config)
}

/// A JSON error as precise as a TOML one: file, line, column and the field
/// path (`mcpServers.time.args[0]`; as far as known for a syntax error),
/// the message without serde_json's own
/// " at line L column C" suffix.
fn json_error(path: &Path, e: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let inner = e.inner();
    let message = inner.to_string();
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    // A syntax error has no complete key path: name the part that is known
    // (serde_path_to_error writes "?" for the unknown rest, "." for none).
    let path_text = e.path().to_string();
    let known = path_text.trim_end_matches(".?").trim_end_matches('?');
    let field = match known {
        "" | "." => "(document)".to_owned(),
        p => p.to_owned(),
    };
    ConfigError::Invalid {
        path: path.to_owned(),
        line: inner.line(),
        column: inner.column(),
        field,
        message: message
            .strip_suffix(&position)
            .unwrap_or(&message)
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UpstreamKind;

    #[test]
    fn claude_desktop_format_imports() {
        let src = r#"{"mcpServers": {
            "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}, "autoApprove": []},
            "remote": {"url": "http://127.0.0.1:3001/mcp", "headers": {"X-Key": "k"}, "type": "http"},
            "old": {"url": "http://127.0.0.1:3002/sse", "type": "sse"},
            "off": {"command": "x", "disabled": true},
            "optional": {"command": "uvx", "args": ["mcp-server-fetch"], "required": false}
        }}"#;
        let c = from_mcp_servers_json(src, Path::new("m.json")).unwrap();
        assert_eq!(c.upstreams.len(), 4);
        assert!(c.upstreams["time"].get_ref().required);
        assert!(!c.upstreams["optional"].get_ref().required);
        assert_eq!(c.upstreams["old"].get_ref().kind(), UpstreamKind::Sse);
        assert_eq!(c.upstreams["time"].get_ref().kind(), UpstreamKind::Stdio);
        assert_eq!(c.upstreams["time"].get_ref().env["TZ"], "UTC");
        assert_eq!(c.upstreams["remote"].get_ref().kind(), UpstreamKind::Http);
        assert_eq!(c.upstreams["remote"].get_ref().headers["X-Key"], "k");
    }

    #[test]
    fn json_errors_name_the_field_path() {
        let field = |src: &str| match from_mcp_servers_json(src, Path::new("m.json")) {
            Err(ConfigError::Invalid { field, message, .. }) => {
                assert!(!message.contains(" at line "), "{message}");
                field
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(r#"{"mcpServers": {"t": {"command": "x", "args": [1]}}}"#),
            "mcpServers.t.args[0]"
        );
        assert_eq!(
            field(r#"{"mcpServers": {"t": {"command": "x"}, }}"#),
            "mcpServers"
        );
        assert_eq!(field("[]"), "(document)");
    }

    #[test]
    fn entry_without_transport_is_an_error_naming_it() {
        let src = "{\"mcpServers\": {\n  \"bad\": {\"args\": []}\n}}";
        match from_mcp_servers_json(src, Path::new("m.json")).unwrap_err() {
            ConfigError::Invalid { line, field, .. } => {
                assert_eq!(line, 2);
                assert_eq!(field, "upstreams.bad.command");
            }
            other => panic!("{other:?}"),
        }
    }
}
