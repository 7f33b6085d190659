//! The lines on stderr that are not log events (errors before or after a run, the end-of-run
//! summary, hints), in the format `--log-format` chose: plain lines, or with `json` one JSON
//! object a line shaped as the log's own events (`timestamp`, `level`, `fields.message`), so
//! that a log shipper reading stderr never meets a line of another format. `-q` leaves the
//! end-of-run summary out (errors only).

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);
static QUIET: AtomicBool = AtomicBool::new(false);

/// Set once by the command, before anything is written.
pub(crate) fn set(json: bool, quiet: bool) {
    JSON.store(json, Ordering::Relaxed);
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether stderr carries JSON events (no progress bar is drawn then).
pub(crate) fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "INFO",
            Level::Warn => "WARN",
            Level::Error => "ERROR",
        }
    }
}

/// One JSON event: `{"timestamp":…,"level":…,"fields":{"message":…, …fields}}`.
pub(crate) fn event_json(
    level: Level,
    message: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut all = serde_json::Map::new();
    all.insert("message".into(), message.into());
    all.extend(fields);
    let event = serde_json::json!({
        "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
        "level": level.as_str(),
        "fields": all,
    });
    event.to_string()
}

/// What a plain line says in JSON: its level from its `error:`/`warning:` prefix, its message
/// without the `autopilot-bulk: ` prefix and the summary's indent.
pub(crate) fn classify(line: &str) -> (Level, &str) {
    let text = line.trim_start();
    let text = text.strip_prefix("autopilot-bulk: ").unwrap_or(text);
    if let Some(rest) = text.strip_prefix("error: ") {
        (Level::Error, rest)
    } else if let Some(rest) = text.strip_prefix("warning: ") {
        (Level::Warn, rest)
    } else {
        (Level::Info, text)
    }
}

/// A line (or lines) on stderr as written, or each line as a JSON event.
pub(crate) fn line(text: &str) {
    if json() {
        let mut out = String::new();
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let (level, message) = classify(l);
            out.push_str(&event_json(level, message, serde_json::Map::new()));
            out.push('\n');
        }
        crate::progress::write_stderr(out.as_bytes());
    } else {
        let mut out = text.to_string();
        out.push('\n');
        crate::progress::write_stderr(out.as_bytes());
    }
}

/// The end-of-run summary: `text` as written, or one JSON event `message` carrying the
/// summary JSON's fields; nothing with `-q`.
pub(crate) fn summary(text: &str, message: &str, fields: serde_json::Value, exit_code: u8) {
    if QUIET.load(Ordering::Relaxed) {
        return;
    }
    if json() {
        let level = match exit_code {
            0 => Level::Info,
            1 | 130 => Level::Warn,
            _ => Level::Error,
        };
        let fields = match fields {
            serde_json::Value::Object(map) => map,
            other => {
                let mut map = serde_json::Map::new();
                map.insert("summary".into(), other);
                map
            }
        };
        let mut out = event_json(level, message, fields);
        out.push('\n');
        crate::progress::write_stderr(out.as_bytes());
    } else {
        crate::progress::write_stderr(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_keeps_its_level_and_loses_its_prefix() {
        assert_eq!(
            classify("autopilot-bulk: error: no credentials"),
            (Level::Error, "no credentials")
        );
        assert_eq!(
            classify("autopilot-bulk: warning: cannot write summary x"),
            (Level::Warn, "cannot write summary x")
        );
        assert_eq!(
            classify("  to continue: autopilot-bulk run x --resume"),
            (Level::Info, "to continue: autopilot-bulk run x --resume")
        );
    }

    #[test]
    fn an_event_is_one_json_line_with_its_fields() {
        let mut fields = serde_json::Map::new();
        fields.insert("exit_code".into(), 1.into());
        let line = event_json(Level::Warn, "run finished", fields);
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["fields"]["message"], "run finished");
        assert_eq!(v["fields"]["exit_code"], 1);
        assert!(v["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
