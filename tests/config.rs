//! The README's configuration reference is the schema: every field it shows
//! parses, and every field the schema has is shown. Invalid files are
//! reported by `check-config` with line, column and field, exit code 2.

mod support;

use std::collections::BTreeSet;
use std::path::Path;

use ballast::config::{self, LogFormat, NamespaceMode, UpstreamKind};
use support::BIN;

/// The first ```toml block of the README.
fn readme_toml() -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + "```toml\n".len();
    let len = readme[start..].find("```").expect("closed block");
    readme[start..start + len].to_owned()
}

/// Dotted key paths of a TOML value; upstream names become `*`; the
/// free-form maps `env` and `headers` count as one key each.
fn key_paths(prefix: &str, value: &toml::Value, out: &mut BTreeSet<String>) {
    let toml::Value::Table(t) = value else { return };
    for (k, v) in t {
        let k = if prefix == "upstreams" {
            "*"
        } else {
            k.as_str()
        };
        let path = if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        };
        if matches!(v, toml::Value::Table(_))
            && !path.ends_with(".env")
            && !path.ends_with(".headers")
        {
            key_paths(&path, v, out);
        } else {
            out.insert(path);
        }
    }
}

#[test]
fn readme_example_parses_with_every_field_set() {
    let src = readme_toml();
    let c = config::from_toml_str(&src, Path::new("README.md")).expect("README example is valid");
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.drain_timeout.as_secs(), 10);
    assert_eq!(c.server.max_body_bytes, 4_194_304);
    assert_eq!(c.log.format, LogFormat::Pretty);
    assert_eq!(c.catalog.namespace, NamespaceMode::Auto);
    let time = c.upstreams["time"].get_ref();
    assert_eq!(time.kind(), UpstreamKind::Stdio);
    assert_eq!(time.args, ["--local-timezone", "UTC"]);
    assert_eq!(time.env["TZ"], "UTC");
    assert_eq!(time.shutdown_grace.as_secs(), 2);
    let remote = c.upstreams["remote"].get_ref();
    assert_eq!(remote.kind(), UpstreamKind::Http);
    assert_eq!(remote.headers["X-Api-Key"], "upstream-secret");
    assert!(!remote.required);
    assert_eq!(
        c.prefixes(),
        [Some("time".to_owned()), Some("remote".to_owned())]
    );
}

#[test]
fn readme_documents_exactly_the_fields_of_the_schema() {
    let src = readme_toml();
    let documented: toml::Value = toml::from_str(&src).expect("toml");
    let c = config::from_toml_str(&src, Path::new("README.md")).expect("valid");
    // The effective config, serialized back, has every field of the schema.
    let effective: toml::Value = toml::Value::try_from(&c).expect("serialize");
    let (mut doc, mut eff) = (BTreeSet::new(), BTreeSet::new());
    key_paths("", &documented, &mut doc);
    key_paths("", &effective, &mut eff);
    assert_eq!(doc, eff, "README config reference and schema differ");
}

/// Writes `content` to a temp file named `name` and runs `ballast check-config`
/// on it: (exit code, stdout, stderr).
fn check_config(name: &str, content: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(name);
    std::fs::write(&file, content).expect("write");
    let out = std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .output()
        .expect("run");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn check_config_prints_the_effective_config() {
    let (code, printed, err) = check_config("ok.toml", "[upstreams.demo]\ncommand = \"x\"\n");
    assert_eq!(code, Some(0), "{err}");
    assert!(printed.contains("drain_timeout = \"10s\""), "{printed}");
    assert!(printed.contains("[upstreams.demo]"), "{printed}");
}

#[test]
fn check_config_names_file_line_column_and_field_and_exits_2() {
    let bad_toml =
        "[server]\nlisten = \"127.0.0.1:8080\"\n\n[upstreams.time]\ncommand = \"t\"\nargs = 5\n";
    let (code, _, err) = check_config("bad.toml", bad_toml);
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.toml:6:8: upstreams.time.args:"), "{err}");

    let (code, _, err) = check_config(
        "bad.json",
        "{\"mcpServers\": {\n \"x\": {\"command\": \"a\",}\n}}",
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("bad.json:2:"), "{err}");
}

#[test]
fn serve_with_an_invalid_config_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[upstreams.a]\nurl = \"ftp://x\"\n").expect("write");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("upstreams.a.url"), "{err}");
}

#[test]
fn check_config_into_a_closed_pipe_exits_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("ballast.toml");
    std::fs::write(&file, readme_toml()).expect("write");
    let mut child = std::process::Command::new(BIN)
        .arg("check-config")
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    // The reader goes away before anything is read (as `| head -0` does).
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
