//! Mapping of SQLite and I/O failures onto the two server-side [`StoreError`]s.
//!
//! Values that cannot be decoded (wrong column type, out-of-range integer, invalid UTF-8) and a
//! file SQLite itself calls corrupt are [`StoreError::Corrupt`]; everything else (I/O, locks,
//! a full disk, a stopped writer) is [`StoreError::Unavailable`]: the caller may retry later.

use rusqlite::ErrorCode;
use sessiond_store::StoreError;

/// Maps a rusqlite error.
pub(crate) fn sql(err: rusqlite::Error) -> StoreError {
    use rusqlite::Error as E;
    match &err {
        E::FromSqlConversionFailure(..)
        | E::IntegralValueOutOfRange(..)
        | E::Utf8Error(..)
        | E::InvalidColumnType(..) => StoreError::Corrupt(err.to_string()),
        E::SqliteFailure(e, _)
            if matches!(e.code, ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) =>
        {
            StoreError::Corrupt(err.to_string())
        }
        _ => StoreError::Unavailable(format!("sqlite: {err}")),
    }
}

/// Maps an I/O error (directory creation, WAL fsync).
pub(crate) fn io(what: &str, err: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{what}: {err}"))
}

/// The error every call gets once the engine is closed.
pub(crate) fn closed() -> StoreError {
    StoreError::Unavailable("sqlite engine closed".into())
}

/// A value that cannot be stored as an SQLite INTEGER (a `u64` at or above 2^63).
pub(crate) fn out_of_range(what: &str, value: u64) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(
        format!("{what} {value} does not fit a signed 64-bit integer").into(),
    )
}

/// Converts a caller's row limit to SQL: `usize::MAX` and friends clamp to `i64::MAX`.
pub(crate) fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
