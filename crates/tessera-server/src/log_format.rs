//! The server's logs: where they go ([`init`]) and the text format of
//! their lines, the access log's included:
//!
//! ```text
//! 2026-12-04T21:13:46.212571Z  INFO request{request_id="7966…" method=GET route="/healthz"}: tessera_server::edge: request finished status=200 latency_ms=0.08
//! ```
//!
//! The same shape as `tracing-subscriber`'s default format without colours,
//! written with less work per line: the date and time up to the second are
//! formatted once a second per thread, numbers and plain strings are written
//! directly, and only a string that needs escaping goes through `Debug`
//! (so a value cannot forge a line: quotes, backslashes and control
//! characters are escaped). The default format spent about a sixth of the
//! instructions of a `GET /healthz` on the access log line. The JSON format
//! (`log.format = "json"`) is `tracing-subscriber`'s own.

use std::cell::RefCell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::{MakeVisitor, VisitFmt, VisitOutput};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::request_context::RequestContext;
use crate::settings::{LogFormat, Settings};

/// Formats events: time, level, the spans with their fields, target, fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFormat;

/// Formats events as one JSON object per line, in the shape of
/// `tracing-subscriber`'s JSON format: `timestamp`, `level`, `fields`,
/// `target`, and `span` — the request the line belongs to (`name`,
/// `request_id`, `method`, `route`), from its [`RequestContext`]. Other
/// `tracing` spans are not written: the server opens none.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonFormat;

/// Formats fields: `name=value`, separated by spaces; the message bare.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

thread_local! {
    /// The last second formatted on this thread, and its text.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Writes the current UTC time as `2026-12-04T21:13:46.212571Z`.
fn write_now(writer: &mut Writer<'_>) -> fmt::Result {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let (seconds, micros) = (now.as_secs(), now.subsec_micros());
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != seconds {
            let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
            let text = i64::try_from(seconds)
                .ok()
                .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
                .and_then(|t| t.format(format).ok())
                .unwrap_or_default();
            *cached = (seconds, text);
        }
        write!(writer, "{}.{micros:06}Z", cached.1)
    })
}

fn level_text(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        Level::ERROR => "ERROR",
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        write_now(&mut writer)?;
        let metadata = event.metadata();
        write!(writer, " {} ", level_text(metadata.level()))?;
        RequestContext::with_current(|request| {
            write!(writer, "request{{request_id={} method={} route=", Quoted(request.id.as_str()), request.method)?;
            write!(writer, "{}}}: ", Quoted(request.route()))
        })
        .transpose()?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                writer.write_str(span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{{{fields}}}")?;
                    }
                }
                writer.write_char(':')?;
            }
            writer.write_char(' ')?;
        }
        write!(writer, "{}: ", metadata.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let metadata = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        write_now(&mut writer)?;
        write!(writer, "\",\"level\":\"{}\",\"fields\":", metadata.level())?;
        // `N` is `JsonFields`: the event's fields as one JSON object.
        ctx.format_fields(writer.by_ref(), event)?;
        write!(writer, ",\"target\":{}", Json(metadata.target()))?;
        RequestContext::with_current(|request| {
            write!(writer, ",\"span\":{{\"name\":\"request\",\"request_id\":{}", Json(request.id.as_str()))?;
            write!(writer, ",\"method\":{},\"route\":{}}}", Json(request.method.as_str()), Json(request.route()))
        })
        .transpose()?;
        writer.write_str("}\n")
    }
}

/// A string as a JSON string literal, escaped by `serde_json`.
struct Json<'a>(&'a str);

impl fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_string(self.0) {
            Ok(literal) => f.write_str(&literal),
            Err(_) => f.write_str("null"),
        }
    }
}

impl<'writer> MakeVisitor<Writer<'writer>> for TextFields {
    type Visitor = TextVisitor<'writer>;

    fn make_visitor(&self, target: Writer<'writer>) -> Self::Visitor {
        TextVisitor { writer: target, first: true, result: Ok(()) }
    }
}

/// Writes one event's or span's fields.
pub struct TextVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// The separator before a field, then `name=` (nothing for the message).
    fn start(&mut self, field: &Field) -> fmt::Result {
        if !self.first {
            self.writer.write_char(' ')?;
        }
        self.first = false;
        if field.name() != "message" {
            self.writer.write_str(field.name())?;
            self.writer.write_char('=')?;
        }
        Ok(())
    }

    fn record(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.start(field).and_then(|()| value(&mut self.writer));
        }
    }
}

/// A string value as the text format writes it: between quotes, escaped
/// only if it needs to be.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match plain(self.0) {
            true => write!(f, "\"{}\"", self.0),
            false => write!(f, "{:?}", self.0),
        }
    }
}

/// Whether `text` can be written between quotes as it is.
fn plain(text: &str) -> bool {
    text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b != 0x7f)
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.record(field, |w| match message && plain(value) {
            true => w.write_str(value),
            false => write!(w, "{}", Quoted(value)),
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.record(field, |w| write!(w, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.record(field, |w| write!(w, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.record(field, |w| write!(w, "{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.record(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%value` fields arrive here too (as Display wrapped in Debug);
        // Debug output of strings is escaped, and a message's Display is
        // the caller's own text.
        self.record(field, |w| write!(w, "{value:?}"));
    }
}

impl VisitOutput<fmt::Result> for TextVisitor<'_> {
    fn finish(self) -> fmt::Result {
        self.result
    }
}

impl VisitFmt for TextVisitor<'_> {
    fn writer(&mut self) -> &mut dyn fmt::Write {
        &mut self.writer
    }
}

/// Installs the process's subscriber: logs go to standard output. A server writes them from a thread of their
/// own, in batches: a request formats its access log line and queues it
/// (never dropped: a full queue waits), instead of taking the stdout lock and
/// making a write system call per line on the request's path. Commands
/// write straight through, so their log lines and output stay in order.
pub fn init(settings: &Settings, serving: bool) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    if serving {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("tessera-log")
            .finish(std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()));
        install(settings, writer);
        Some(guard)
    } else {
        install(settings, std::io::stdout);
        None
    }
}

/// The subscriber of `settings` (filter, format), writing to `writer`.
fn install<W>(settings: &Settings, writer: W)
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&settings.log.filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: escape codes in a log file or a
    // collector's pipe are noise (and cost formatting on every line).
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    match settings.log.format {
        // A second call (a benchmark building the app twice) keeps the first.
        LogFormat::Text => {
            let _ = builder.fmt_fields(TextFields).event_format(TextFormat).try_init();
        }
        LogFormat::Json => {
            let _ = builder.fmt_fields(JsonFields::new()).event_format(JsonFormat).try_init();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::request_id::RequestId;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn request() -> RequestContext {
        RequestContext { id: RequestId(http::HeaderValue::from_static("abc")), method: http::Method::GET, route: None }
    }

    /// Logs one access-log-like event inside a request's context with
    /// `subscriber`, and returns what was written.
    fn one_line(subscriber: impl Subscriber + Send + Sync + 'static, captured: &Captured) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let _default = tracing::subscriber::set_default(subscriber);
        runtime.block_on(request().scope(async {
            tracing::info!(status = 200u64, latency_ms = 0.5, forged = "a\nINFO fake \"line\"", "request finished");
        }));
        String::from_utf8(captured.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_have_time_level_request_target_and_escaped_fields() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_ansi(false)
            .fmt_fields(TextFields)
            .event_format(TextFormat)
            .finish();
        let text = one_line(subscriber, &captured);
        assert_eq!(text.lines().count(), 1, "one line, the newline in a value escaped: {text}");
        let (time, rest) = text.split_once(' ').unwrap();
        assert!(time.ends_with('Z') && time.len() == "2026-12-04T21:13:46.212571Z".len(), "{time}");
        assert_eq!(
            rest.trim_end(),
            " INFO request{request_id=\"abc\" method=GET route=\"unmatched\"}: tessera_server::log_format::tests: \
             request finished status=200 latency_ms=0.5 forged=\"a\\nINFO fake \\\"line\\\"\""
        );
    }

    #[test]
    fn json_lines_carry_the_request_and_escaped_fields() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .fmt_fields(JsonFields::new())
            .event_format(JsonFormat)
            .finish();
        let text = one_line(subscriber, &captured);
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], "tessera_server::log_format::tests");
        assert_eq!(line["fields"]["message"], "request finished");
        assert_eq!(line["fields"]["status"], 200);
        assert_eq!(line["fields"]["forged"], "a\nINFO fake \"line\"");
        assert_eq!(line["span"]["name"], "request");
        assert_eq!(line["span"]["request_id"], "abc");
        assert_eq!(line["span"]["method"], "GET");
        assert_eq!(line["span"]["route"], "unmatched");
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'), "{line}");
    }
}
