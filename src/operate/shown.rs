//! How the operator's commands show values: a time as RFC 3339.

/// A unix-ms time as RFC 3339 (the number itself when out of range).
pub fn shown_time(ms: i64) -> String {
    match std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(ms.max(0) as u64)) {
        Some(at) => humantime::format_rfc3339_millis(at).to_string(),
        None => ms.to_string(),
    }
}
