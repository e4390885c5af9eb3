//! Logging: `tracing` everywhere, written as text to stderr, or, when stderr
//! is the systemd journal (`JOURNAL_STREAM`, as under the unit), sent to
//! journald through systemd-journal-logger with structured fields: every
//! field of the event and of its spans becomes a journal field (the query
//! span's `id` becomes `QUERY_ID`, an answer's `route` `ROUTE`, its
//! `latency_ms` `LATENCY_MS`), so `journalctl -u swarm-llm ROUTE=cloud` works.

use std::fmt::Debug;

use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber; `default_filter` applies without `RUST_LOG`.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    if systemd_journal_logger::connected_to_journal() {
        if let Ok(journal) = JournalLog::new() {
            tracing_subscriber::registry()
                .with(filter)
                .with(JournalLayer { journal })
                .init();
            return;
        }
    }
    // Colour only on a terminal: not in files or pipes.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// An event's message and its fields, with those of its enclosing spans.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fields {
    pub message: String,
    pub pairs: Vec<(String, String)>,
}

struct Collect<'a> {
    prefix: &'a str,
    fields: &'a mut Fields,
}

impl Visit for Collect<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.push(field, format!("{value:?}"));
    }
}

impl Collect<'_> {
    fn push(&mut self, field: &Field, value: String) {
        if field.name() == "message" && self.prefix.is_empty() {
            self.fields.message = value;
        } else if self.prefix.is_empty() {
            self.fields.pairs.push((field.name().to_string(), value));
        } else {
            self.fields
                .pairs
                .push((format!("{}_{}", self.prefix, field.name()), value));
        }
    }
}

/// Collects `event`'s fields and those of its spans (root first, named
/// `<span>_<field>`).
pub fn collect<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Fields
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut fields = Fields::default();
    event.record(&mut Collect {
        prefix: "",
        fields: &mut fields,
    });
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope.from_root() {
            if let Some(span_fields) = span.extensions().get::<Fields>() {
                fields.pairs.extend(span_fields.pairs.iter().cloned());
            }
        }
    }
    fields
}

/// Remembers each span's fields so its events can carry them.
fn store_span_fields<S>(
    attrs: &tracing::span::Attributes<'_>,
    id: &tracing::span::Id,
    ctx: &Context<'_, S>,
) where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut fields = Fields::default();
    attrs.record(&mut Collect {
        prefix: span.name(),
        fields: &mut fields,
    });
    span.extensions_mut().insert(fields);
}

struct JournalLayer {
    journal: JournalLog,
}

impl<S> Layer<S> for JournalLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        store_span_fields(attrs, id, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let fields = collect(event, &ctx);
        let kvs: Vec<(&str, &str)> = fields
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .args(format_args!("{}", fields.message))
                .key_values(&kvs)
                .build(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// The journal layer's field collection, writing to a list instead of journald.
    struct Capture(Arc<Mutex<Vec<Fields>>>);

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: Context<'_, S>,
        ) {
            store_span_fields(attrs, id, &ctx);
        }
        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            self.0.lock().unwrap().push(collect(event, &ctx));
        }
    }

    #[test]
    fn events_carry_their_fields_and_the_query_id_of_their_span() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("query", id = "plc7-42");
            let _guard = span.enter();
            tracing::info!(route = "cloud", latency_ms = 12.5, "answered");
        });
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].message, "answered");
        let pairs: Vec<(&str, &str)> = seen[0]
            .pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("route", "cloud"),
                ("latency_ms", "12.5"),
                ("query_id", "plc7-42")
            ]
        );
    }
}
