//! Logging through Envoy's `dynamic_modules` logger (`--component-log-level dynamic_modules:debug`).
//!
//! Both functions may be called from any thread, Envoy's own or the module's.

use crate::abi;

/// An Envoy log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `trace`.
    Trace,
    /// `debug`.
    Debug,
    /// `info`.
    Info,
    /// `warning`.
    Warn,
    /// `error`.
    Error,
    /// `critical`.
    Critical,
}

impl Level {
    pub(crate) fn raw(self) -> abi::CEnum {
        match self {
            Level::Trace => abi::LOG_LEVEL_TRACE,
            Level::Debug => abi::LOG_LEVEL_DEBUG,
            Level::Info => abi::LOG_LEVEL_INFO,
            Level::Warn => abi::LOG_LEVEL_WARN,
            Level::Error => abi::LOG_LEVEL_ERROR,
            Level::Critical => abi::LOG_LEVEL_CRITICAL,
        }
    }
}

/// Whether a line at `level` would be written: check it before formatting an expensive line.
/// One cheap host call.
pub fn enabled(level: Level) -> bool {
    // SAFETY: takes a plain integer and reads Envoy's logger level; callable from any thread.
    unsafe { abi::envoy_dynamic_module_callback_log_enabled(level.raw()) }
}

/// Writes `message` at `level`; Envoy's log line names the caller's file and line.
#[track_caller]
pub fn log(level: Level, message: &str) {
    let location = std::panic::Location::caller();
    // SAFETY: both buffers borrow live `&str`s that Envoy only reads during the call (it copies
    // the file name into its own thread-local buffer); the logger is thread-safe.
    unsafe {
        abi::envoy_dynamic_module_callback_log_v2(
            level.raw(),
            abi::ModuleBuffer::of(message.as_bytes()),
            abi::ModuleBuffer::of(location.file().as_bytes()),
            location.line(),
        );
    }
}

/// Formats and logs a line only when its level is enabled:
/// `envoy_log!(Level::Debug, "rewrote {} to {}", from, to)`.
#[macro_export]
macro_rules! envoy_log {
    ($level:expr, $($arg:tt)+) => {{
        let level: $crate::log::Level = $level;
        if $crate::log::enabled(level) {
            $crate::log::log(level, &::std::format!($($arg)+));
        }
    }};
}
