//! Reading config files and reporting errors by file, line, column and field.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::{Config, UpstreamMode};

/// Why a configuration could not be used. Every variant names the file;
/// [`ConfigError::Invalid`] also names line, column (1-based) and field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Syntax, type or validation error at a place in the file.
    #[error("{path}:{line}:{column}: {field}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// Dotted field name, e.g. `upstreams.time.command`.
        field: String,
        /// What is wrong.
        message: String,
    },
}

/// Reads and validates a TOML config file.
///
/// # Errors
/// [`ConfigError::Io`] if unreadable, [`ConfigError::Invalid`] otherwise.
pub fn load_toml_file(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    from_toml_str(&src, path)
}

/// Reads an `mcpServers` JSON file (Claude Desktop / Cursor / Claude Code
/// format) into a config with default settings.
///
/// # Errors
/// [`ConfigError::Io`] if unreadable, [`ConfigError::Invalid`] otherwise.
pub fn load_mcp_servers_file(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    super::from_mcp_servers_json(&src, path)
}

/// Parses and validates TOML text; `path` is only used in errors.
///
/// # Errors
/// [`ConfigError::Invalid`] for syntax errors, unknown fields, wrong types and
/// failed validation.
pub fn from_toml_str(src: &str, path: &Path) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        invalid_at(src, path, span, None, e.message().to_owned())
    })?;
    validate(&config, src, path)?;
    Ok(config)
}

/// Checks what types alone cannot: one transport per upstream, valid URLs,
/// unique prefixes, names usable in namespaced tool names.
pub(super) fn validate(config: &Config, src: &str, path: &Path) -> Result<(), ConfigError> {
    let sep = &config.catalog.separator;
    if sep.is_empty() {
        return Err(invalid_field(
            src,
            path,
            "catalog.separator",
            "must not be empty",
        ));
    }
    if !config.server.path.starts_with('/') {
        return Err(invalid_field(
            src,
            path,
            "server.path",
            "must start with '/'",
        ));
    }
    if config.server.max_connections == 0 {
        return Err(invalid_field(
            src,
            path,
            "server.max_connections",
            "must be at least 1",
        ));
    }
    let store = &config.store;
    if store.kind == super::StoreKind::Redis {
        if let Err(bad) = crate::store::redis::Target::parse(&store.url) {
            return Err(invalid_field(src, path, "store.url", &bad.0));
        }
        if store.deployment.is_empty()
            || !store
                .deployment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid_field(
                src,
                path,
                "store.deployment",
                "must be non-empty letters, digits, '-' or '_'",
            ));
        }
    }
    if config.upstreams.is_empty() {
        return Err(invalid_field(
            src,
            path,
            "upstreams",
            "configure at least one upstream",
        ));
    }
    let prefixes = config.prefixes();
    for (i, ((name, spanned), prefix)) in config.upstreams.iter().zip(&prefixes).enumerate() {
        let u = spanned.get_ref();
        let at = |field: &str, message: String| {
            let start = key_offset(src, spanned.span().start, field);
            invalid_at(
                src,
                path,
                start..start,
                Some(format!("upstreams.{name}.{field}")),
                message,
            )
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(at("", "upstream names use only A-Z a-z 0-9 _ -".to_owned()));
        }
        match (&u.command, &u.url) {
            (Some(_), Some(_)) => {
                return Err(at("url", "set either `command` or `url`, not both".into()));
            }
            (None, None) => {
                return Err(at(
                    "command",
                    "set `command` (stdio) or `url` (HTTP)".into(),
                ));
            }
            (None, Some(url)) => match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                Ok(_) => return Err(at("url", "must be an http:// or https:// URL".into())),
                Err(e) => return Err(at("url", format!("not a URL: {e}"))),
            },
            (Some(cmd), None) if cmd.is_empty() => {
                return Err(at("command", "must not be empty".into()));
            }
            (Some(_), None) => {}
        }
        if let Some(root) = u.roots.iter().find(|r| !r.starts_with("file://")) {
            return Err(at(
                "roots",
                format!("{root:?} is not a file:// URI (MCP roots are file:// URIs)"),
            ));
        }
        if u.mode == UpstreamMode::PerSession {
            return Err(at(
                "mode",
                "`per_session` is not available yet; use `shared`".into(),
            ));
        }
        if let Some(p) = prefix {
            if p.is_empty() || p.contains(sep.as_str()) {
                return Err(at(
                    "prefix",
                    format!("must be non-empty and must not contain the separator {sep:?}"),
                ));
            }
            if let Some(j) = prefixes[..i]
                .iter()
                .position(|q| q.as_deref() == Some(p.as_str()))
            {
                let other = &config
                    .upstreams
                    .get_index(j)
                    .map(|(n, _)| n.clone())
                    .unwrap_or_default();
                return Err(at(
                    "prefix",
                    format!("prefix {p:?} is also used by upstream {other:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// The offset of the line that sets `key` inside the table starting at
/// `table_start` (up to the next table header); `table_start` if none.
fn key_offset(src: &str, table_start: usize, key: &str) -> usize {
    if key.is_empty() || table_start >= src.len() {
        return table_start;
    }
    let mut pos = table_start;
    for (i, line) in src[table_start..].split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            break;
        }
        let k = t.split_once('=').map(|(k, _)| k.trim().trim_matches('"'));
        if k == Some(key) {
            return pos + (line.len() - t.len());
        }
        pos += line.len();
    }
    table_start
}

fn invalid_field(src: &str, path: &Path, field: &str, message: &str) -> ConfigError {
    let key = field.rsplit('.').next().unwrap_or(field);
    let offset = src
        .lines()
        .scan(0, |pos, line| {
            let start = *pos;
            *pos += line.len() + 1;
            Some((start, line))
        })
        .find(|(_, line)| line.trim_start().starts_with(key))
        .map(|(start, _)| start)
        .unwrap_or(0);
    invalid_at(
        src,
        path,
        offset..offset,
        Some(field.to_owned()),
        message.to_owned(),
    )
}

/// Builds [`ConfigError::Invalid`] for a byte span of `src`. Without an
/// explicit field, the field is read off the source: the table header in
/// force at the span plus the key on the span's line.
pub(super) fn invalid_at(
    src: &str,
    path: &Path,
    span: Range<usize>,
    field: Option<String>,
    message: String,
) -> ConfigError {
    let start = span.start.min(src.len());
    let before = &src[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let field = field.unwrap_or_else(|| field_at(src, line_start));
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        field,
        message,
    }
}

fn field_at(src: &str, line_start: usize) -> String {
    let line = src[line_start..].lines().next().unwrap_or("");
    let table = src[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().trim_matches('"').to_owned())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (Some(t), None) => t,
        (None, Some(k)) => k,
        (None, None) => "(document)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(src: &str) -> (usize, usize, String, String) {
        match from_toml_str(src, Path::new("b.toml")).unwrap_err() {
            ConfigError::Invalid {
                line,
                column,
                field,
                message,
                ..
            } => (line, column, field, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_config_without_upstreams_is_an_error() {
        let (_, _, field, message) = err("[server]\npath = \"/mcp\"\n");
        assert_eq!(field, "upstreams");
        assert!(message.contains("at least one"), "{message}");
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let (line, _, field, message) =
            err("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n[upstreams.a]\ncommand = \"x\"\n");
        assert_eq!(line, 3);
        assert_eq!(field, "server.lisen");
        assert!(message.contains("unknown field"), "{message}");
    }

    #[test]
    fn wrong_type_names_line_column_and_field() {
        let (line, column, field, _) = err("[upstreams.a]\ncommand = \"x\"\nargs = 5\n");
        assert_eq!((line, column), (3, 8));
        assert_eq!(field, "upstreams.a.args");
    }

    #[test]
    fn both_transports_is_an_error_at_the_upstream() {
        let (line, _, field, _) =
            err("\n[upstreams.a]\ncommand = \"x\"\nurl = \"http://127.0.0.1:1/mcp\"\n");
        assert_eq!(line, 4);
        assert_eq!(field, "upstreams.a.url");
    }

    #[test]
    fn a_redis_cluster_url_is_accepted_and_a_bad_one_names_the_field() {
        let ok = "[store]\nkind = \"redis\"\nurl = \"redis+cluster://10.0.0.1:7000,10.0.0.2:7000\"\n\
                  [upstreams.a]\ncommand = \"x\"\n";
        let config = from_toml_str(ok, Path::new("b.toml")).expect("valid");
        assert!(config.store.url.starts_with("redis+cluster://"));
        let (line, _, field, message) = err(
            "[store]\nkind = \"redis\"\nurl = \"redis+cluster://10.0.0.1\"\n[upstreams.a]\ncommand = \"x\"\n",
        );
        assert_eq!((line, field.as_str()), (3, "store.url"));
        assert!(message.contains("host:port"), "{message}");
    }

    #[test]
    fn duplicate_prefix_is_an_error() {
        let src = "[upstreams.a]\ncommand = \"x\"\nprefix = \"p\"\n[upstreams.b]\ncommand = \"y\"\nprefix = \"p\"\n";
        let (_, _, field, message) = err(src);
        assert_eq!(field, "upstreams.b.prefix");
        assert!(message.contains("\"a\""), "{message}");
    }
}
