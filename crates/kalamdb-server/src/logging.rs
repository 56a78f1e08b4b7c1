//! Logging: `tracing` events to the console and to `logging.file_path`, as text or JSON.
//!
//! The file is written by a background thread (tracing-appender's non-blocking writer), so a
//! slow disk never stalls a request; [`LogGuard`] flushes it when dropped at shutdown. With
//! `logging.rotation = "daily"` or `"hourly"` the file starts afresh each period, named
//! `<file_path>.<YYYY-MM-DD>` or `<file_path>.<YYYY-MM-DD-HH>`; `"never"` writes `file_path`
//! itself.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

use crate::config::{LogFormat, LogRotation, LoggingConfig};

/// Keeps the file writer running; dropping it flushes what is buffered.
#[must_use = "dropping the guard stops file logging"]
#[derive(Debug)]
pub struct LogGuard {
    _file: WorkerGuard,
}

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log file or its directory could not be created.
    #[error("logging.file_path: cannot create {path}: {source}")]
    File {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A global subscriber was already installed.
    #[error("logging is already initialised")]
    AlreadyInitialised,
}

/// Installs the global subscriber. `RUST_LOG`, when set and valid, overrides `logging.level`.
pub fn init(config: &LoggingConfig) -> Result<LogGuard, LoggingError> {
    let file_error = |source| LoggingError::File {
        path: config.file_path.display().to_string(),
        source,
    };
    let directory = config
        .file_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(directory).map_err(file_error)?;
    let file_name = config
        .file_path
        .file_name()
        .ok_or_else(|| file_error(std::io::Error::other("the path names no file")))?;
    let rotation = match config.rotation {
        LogRotation::Never => Rotation::NEVER,
        LogRotation::Daily => Rotation::DAILY,
        LogRotation::Hourly => Rotation::HOURLY,
    };
    // Building opens the file, so a read-only directory fails start-up instead of losing every
    // line later.
    let appender = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix(file_name.to_string_lossy())
        .build(directory)
        .map_err(|e| file_error(std::io::Error::other(e)))?;
    let (file_writer, guard) = tracing_appender::non_blocking(appender);

    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        // The config was validated, so its level parses.
        .unwrap_or_else(|| EnvFilter::new(&config.level));

    let (console, file) = match config.format {
        LogFormat::Text => (
            fmt::layer()
                // Colour only for a person at a terminal, not for a redirect or a log collector.
                .with_ansi(std::io::stdout().is_terminal())
                .with_writer(std::io::stdout)
                .boxed(),
            fmt::layer()
                .with_ansi(false)
                .fmt_fields(FileFields::default())
                .with_writer(file_writer)
                .boxed(),
        ),
        LogFormat::Json => (
            fmt::layer().json().with_writer(std::io::stdout).boxed(),
            fmt::layer().json().with_writer(file_writer).boxed(),
        ),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file)
        .try_init()
        .map_err(|_| LoggingError::AlreadyInitialised)?;
    Ok(LogGuard { _file: guard })
}

/// The file layer's field formatter. Span fields are formatted once per formatter *type* and
/// cached; with the console's type the file would inherit its colour codes.
#[derive(Debug, Default)]
struct FileFields(DefaultFields);

impl<'writer> FormatFields<'writer> for FileFields {
    fn format_fields<R: RecordFields>(
        &self,
        writer: Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        self.0.format_fields(writer, fields)
    }
}
