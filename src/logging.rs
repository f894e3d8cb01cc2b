//! The process's log: `RUST_LOG` filtering (default `info`), one line per record on stderr,
//! as text or, with `TROUPE_LOG_FORMAT=json`, as one JSON object.
//!
//! Every line written while a request is served names it, wherever it was written: a
//! handler, or an actor serving a message that carries the id (`request_id::current`, a
//! task-local the actors' messages carry across, `actors::db::ForRequest`). A record can
//! also name it itself, with a `request_id` key-value (the access line, logged after the
//! handler's scope has ended). Text lines end with `request_id=…`; JSON lines have a
//! `request_id` field.
//!
//! A JSON line is `{"timestamp", "level", "target", "message", "request_id"?, …}`: the
//! timestamp RFC 3339 in UTC (microseconds), then the record's key-values as fields, so the
//! access line carries its method, route, status and the rest as fields (`http::middleware`).
//!
//! Why `log` + `env_logger` with a JSON format of our own, not `tracing`: the request id is
//! the only context troupe's lines need, and it already crosses actor messages as a
//! task-local that every actor re-enters (`request_id::scope` / `sync_scope`). `tracing`'s
//! span context does not cross an actor's mailbox by itself: each message would have to
//! carry a `Span` and each handler `.instrument()` its future, a second mechanism for the
//! same id. `log`'s key-values give the access line its fields, and a JSON object per
//! record is a few dozen lines here.
//!
//! An invalid `RUST_LOG` (one that does not parse, or a bare word that is not a level, such
//! as `lots`, which `env_logger` would read as a module name and so silence every other
//! line) is replaced by the default `info`, with one warning line saying so.

use std::fmt::{self, Write as _};
use std::io::{self, Write as _};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicBool, Ordering};

use log::kv::{self, Key, Value, VisitSource, VisitValue};
use log::{LevelFilter, Record};

use crate::config::ConfigError;
use crate::http::request_id::{current, id_str};

/// The variable that chooses the format.
pub const LOG_FORMAT_VAR: &str = "TROUPE_LOG_FORMAT";

/// The filter when `RUST_LOG` is unset, empty or invalid.
pub const DEFAULT_FILTER: &str = "info";

/// The key-value a record names its request with when it is not logged in the request's
/// scope.
pub const REQUEST_ID_KEY: &str = "request_id";

/// How each line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// `[TIMESTAMP LEVEL target] message request_id=…`, for people.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl LogFormat {
    /// `text` (the default when unset or empty) or `json`.
    pub fn parse(value: Option<&str>) -> Result<Self, ConfigError> {
        match value.map(str::trim) {
            None | Some("") | Some("text") => Ok(Self::Text),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(ConfigError {
                var: LOG_FORMAT_VAR,
                problem: format!("expected text (the default) or json, got {other:?}"),
            }),
        }
    }
}

static JSON: AtomicBool = AtomicBool::new(false);

/// Whether lines are JSON: what only JSON lines show (the access line's route, client and
/// user agent) is gathered only then.
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// Installs the logger. Call once, first thing in `main`. A bad `TROUPE_LOG_FORMAT` leaves
/// the text format on; `Config::from_env` then refuses it, with the usual line.
pub fn init() {
    let format =
        LogFormat::parse(std::env::var(LOG_FORMAT_VAR).ok().as_deref()).unwrap_or_default();
    let spec = std::env::var("RUST_LOG").unwrap_or_default();
    let refused = filter_problem(&spec);
    let filter = match refused {
        _ if spec.trim().is_empty() => DEFAULT_FILTER,
        None => spec.as_str(),
        Some(_) => DEFAULT_FILTER,
    };
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(filter);
    match format {
        LogFormat::Text => {
            if let Ok(style) = std::env::var("RUST_LOG_STYLE") {
                builder.parse_write_style(&style);
            }
            builder.format(write_text);
        }
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder
                .write_style(env_logger::WriteStyle::Never)
                .format(write_json);
            log_panics();
        }
    }
    builder.init();
    if let Some(problem) = refused {
        log::warn!("RUST_LOG={spec:?} is refused ({problem}); logging at {DEFAULT_FILTER}");
    }
}

/// Why a `RUST_LOG` value is refused, or `None` when it is a filter: `env_logger`'s own
/// syntax (`LEVEL`, `module=LEVEL`, comma-separated, an optional `/regex`), where a bare
/// word must be a level or a module path (`troupe`, or with `::`).
pub fn filter_problem(spec: &str) -> Option<String> {
    if let Err(err) = env_filter::Builder::new().try_parse(spec) {
        return Some(err.to_string());
    }
    let directives = spec.split('/').next().unwrap_or_default();
    directives
        .split(',')
        .map(str::trim)
        .filter(|word| !word.is_empty() && !word.contains('='))
        .find(|word| {
            LevelFilter::from_str(word).is_err() && *word != "troupe" && !word.contains("::")
        })
        .map(|word| {
            format!(
                "{word:?} is not a level (off, error, warn, info, debug, trace); \
                 for every line of one module write {word}=trace"
            )
        })
}

/// The request a record names: its own `request_id` key-value, else the request being
/// served where it was logged.
fn with_request_id<R>(record: &Record<'_>, f: impl FnOnce(Option<&str>) -> R) -> R {
    if let Some(id) = record.key_values().get(Key::from_str(REQUEST_ID_KEY)) {
        if let Some(id) = id.to_borrowed_str() {
            return f(Some(id));
        }
    }
    match current() {
        Some(id) => f(Some(id_str(&id))),
        None => f(None),
    }
}

fn write_text(buf: &mut env_logger::fmt::Formatter, record: &Record<'_>) -> io::Result<()> {
    let style = buf.default_level_style(record.level());
    write!(
        buf,
        "[{} {style}{:<5}{style:#} {}] {}",
        buf.timestamp(),
        record.level(),
        record.target(),
        record.args()
    )?;
    with_request_id(record, |id| match id {
        Some(id) => writeln!(buf, " request_id={id}"),
        None => writeln!(buf),
    })
}

fn write_json(buf: &mut env_logger::fmt::Formatter, record: &Record<'_>) -> io::Result<()> {
    let timestamp = buf.timestamp_micros();
    let mut out = Json(buf);
    let line = (|| {
        write!(
            out,
            "{{\"timestamp\":\"{timestamp}\",\"level\":\"{}\",\"target\":",
            record.level()
        )?;
        out.string(record.target())?;
        out.write_str(",\"message\":")?;
        out.string(format_args!("{}", record.args()))?;
        with_request_id(record, |id| match id {
            Some(id) => {
                out.write_str(",\"request_id\":")?;
                out.string(id)
            }
            None => Ok(()),
        })?;
        let mut fields = Fields { out: &mut out };
        record
            .key_values()
            .visit(&mut fields)
            .map_err(|_| fmt::Error)?;
        out.write_str("}\n")
    })();
    line.map_err(|_| io::Error::other("a log line could not be written"))
}

/// Writes JSON text into the line being formatted.
struct Json<'a>(&'a mut env_logger::fmt::Formatter);

impl fmt::Write for Json<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.write_all(s.as_bytes()).map_err(|_| fmt::Error)
    }
}

impl Json<'_> {
    /// `text` as a JSON string.
    fn string(&mut self, text: impl fmt::Display) -> fmt::Result {
        self.write_char('"')?;
        write!(Escaped(self), "{text}")?;
        self.write_char('"')
    }
}

/// Escapes what is written through it as the inside of a JSON string.
struct Escaped<'a, 'b>(&'a mut Json<'b>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if u32::from(c) < 0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", u32::from(c))?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + c.len_utf8();
        }
        self.0.write_str(&s[plain..])
    }
}

/// A record's key-values as `,"key":value` (its `request_id` is written before them).
struct Fields<'a, 'b> {
    out: &'a mut Json<'b>,
}

impl<'kvs> VisitSource<'kvs> for Fields<'_, '_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), kv::Error> {
        if key.as_str() == REQUEST_ID_KEY {
            return Ok(());
        }
        let out = &mut *self.out;
        out.write_char(',').map_err(failed)?;
        out.string(key.as_str()).map_err(failed)?;
        out.write_char(':').map_err(failed)?;
        value.visit(FieldValue(out))
    }
}

fn failed(_: fmt::Error) -> kv::Error {
    kv::Error::msg("a log line could not be written")
}

/// One key-value's value as JSON: numbers, booleans and null as themselves, the rest as
/// strings.
struct FieldValue<'a, 'b>(&'a mut Json<'b>);

impl<'v> VisitValue<'v> for FieldValue<'_, '_> {
    fn visit_any(&mut self, value: Value) -> Result<(), kv::Error> {
        self.0.string(value).map_err(failed)
    }

    fn visit_null(&mut self) -> Result<(), kv::Error> {
        self.0.write_str("null").map_err(failed)
    }

    fn visit_u64(&mut self, value: u64) -> Result<(), kv::Error> {
        write!(self.0, "{value}").map_err(failed)
    }

    fn visit_i64(&mut self, value: i64) -> Result<(), kv::Error> {
        write!(self.0, "{value}").map_err(failed)
    }

    fn visit_f64(&mut self, value: f64) -> Result<(), kv::Error> {
        if value.is_finite() {
            write!(self.0, "{value}").map_err(failed)
        } else {
            self.visit_null()
        }
    }

    fn visit_bool(&mut self, value: bool) -> Result<(), kv::Error> {
        write!(self.0, "{value}").map_err(failed)
    }

    fn visit_str(&mut self, value: &str) -> Result<(), kv::Error> {
        self.0.string(value).map_err(failed)
    }
}

/// Panics are logged as JSON lines too (`troupe::panic`, with the thread, the place and,
/// with `RUST_BACKTRACE` set, the backtrace), not as the default hook's plain text: a panic
/// caught in a handler is answered 500 and the process goes on, and its log must stay one
/// object per line.
fn log_panics() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = crate::error::panic_text(info.payload());
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        // As the default hook does: only when RUST_BACKTRACE asks for one.
        let backtrace = std::backtrace::Backtrace::capture();
        let backtrace = (backtrace.status() == std::backtrace::BacktraceStatus::Captured)
            .then(|| backtrace.to_string());
        log::error!(
            target: "troupe::panic",
            thread = thread.name().unwrap_or("unnamed"),
            location = place.as_str(),
            backtrace = backtrace.as_deref();
            "panicked at {place}: {message}"
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_text_by_default_json_on_request_and_nothing_else() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some(" ")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        let err = LogFormat::parse(Some("JSONL")).unwrap_err();
        assert_eq!(err.var, "TROUPE_LOG_FORMAT");
        assert!(err.problem.contains("\"JSONL\""), "{err}");
    }

    #[test]
    fn rust_log_filters_parse_and_a_bare_word_must_be_a_level_or_a_module_path() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "warn,troupe=debug",
            "troupe::access=off",
            "actix_web=debug, troupe",
            "troupe::http",
            "info/GET",
            "diesel=",
        ] {
            assert_eq!(filter_problem(good), None, "{good}");
        }
        for (bad, says) in [
            ("lots", "\"lots\" is not a level"),
            ("info,loud", "\"loud\" is not a level"),
            ("troupe=lots", "lots"),
            ("a=b=c", "a=b=c"),
            ("info/x/y", "too many"),
        ] {
            let problem = filter_problem(bad).unwrap_or_default();
            assert!(problem.contains(says), "{bad}: {problem}");
        }
    }
}
