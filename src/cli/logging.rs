//! The binary's log (`[log]`): text or JSON lines on standard error, with
//! RFC 3339 timestamps in UTC; the audit records (target
//! `testament::audit`) optionally appended to a file of their own, whatever
//! the level.

use std::io::Write as _;
use std::path::Path;

use env_logger::fmt::Formatter;
use log::kv::{self, VisitSource};

const AUDIT: &str = "testament::audit";

/// Installs the logger.
///
/// # Errors
/// When the audit file cannot be opened for appending.
pub fn init(level: &str, json: bool, audit_file: Option<&Path>) -> Result<(), String> {
    let main = builder(json)
        .parse_env(env_logger::Env::default().default_filter_or(level))
        .build();
    let audit = match audit_file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("log.audit_file {}: {e}", path.display()))?;
            Some(
                builder(json)
                    .filter_module(AUDIT, log::LevelFilter::Info)
                    .target(env_logger::Target::Pipe(Box::new(file)))
                    .build(),
            )
        }
        None => None,
    };
    let max = audit
        .as_ref()
        .map_or(main.filter(), |a| a.filter().max(main.filter()));
    log::set_boxed_logger(Box::new(Split { main, audit })).map_err(|e| e.to_string())?;
    log::set_max_level(max);
    Ok(())
}

fn builder(json: bool) -> env_logger::Builder {
    let mut b = env_logger::Builder::new();
    if json {
        b.format(json_line);
    } else {
        b.format_timestamp_millis();
    }
    b
}

/// One JSON object per record: `ts`, `level`, `target`, then an audit
/// record's fields, or `message` for the rest.
fn json_line(buf: &mut Formatter, record: &log::Record<'_>) -> std::io::Result<()> {
    let mut line = serde_json::Map::new();
    line.insert("ts".into(), buf.timestamp_millis().to_string().into());
    line.insert("level".into(), record.level().as_str().into());
    line.insert("target".into(), record.target().into());
    let mut fields = Fields(serde_json::Map::new());
    let _ = record.key_values().visit(&mut fields);
    if fields.0.is_empty() {
        line.insert("message".into(), record.args().to_string().into());
    }
    line.extend(fields.0);
    writeln!(buf, "{}", serde_json::Value::Object(line))
}

/// A record's key-values as JSON; the audit record's own fields in place
/// of the `audit` key that carries it.
struct Fields(serde_json::Map<String, serde_json::Value>);

impl<'kvs> VisitSource<'kvs> for Fields {
    fn visit_pair(&mut self, key: kv::Key<'kvs>, value: kv::Value<'kvs>) -> Result<(), kv::Error> {
        match serde_json::to_value(&value) {
            Ok(serde_json::Value::Object(fields)) if key.as_str() == "audit" => {
                self.0.extend(fields);
            }
            Ok(v) => {
                self.0.insert(key.as_str().to_owned(), v);
            }
            Err(e) => {
                self.0.insert(key.as_str().to_owned(), e.to_string().into());
            }
        }
        Ok(())
    }
}

/// The audit records to their file when there is one, the rest (and them
/// otherwise) to standard error.
struct Split {
    main: env_logger::Logger,
    audit: Option<env_logger::Logger>,
}

impl Split {
    fn pick(&self, target: &str) -> &env_logger::Logger {
        match &self.audit {
            Some(a) if target == AUDIT => a,
            _ => &self.main,
        }
    }
}

impl log::Log for Split {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.pick(metadata.target()).enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        let logger = self.pick(record.target());
        if logger.matches(record) {
            logger.log(record);
        }
    }

    fn flush(&self) {
        self.main.flush();
        if let Some(a) = &self.audit {
            a.flush();
        }
    }
}
