//! Parameter checks shared by the HTTP routes and the gRPC service: one
//! validator per parameter, so both fronts refuse the same things with the
//! same codes. Each error names the parameter and quotes at most a short
//! piece of what the client sent ([`crate::text`]).
//!
//! Filters are strict: a list with a blank entry (`","`, `" "`, `"pgc,"`)
//! is refused, never read as "no filter". A clear names what it removes:
//! its businesses, or everything with an explicit `all`; nothing else
//! clears a whole history.

use std::collections::{BTreeSet, HashSet};

use history_read::{Cursor, PageQuery};

use crate::error::ApiError;
use crate::text::{quoted, quoted_list};

/// Most items one history page may ask for.
pub const MAX_PAGE_LIMIT: usize = 100;
/// Page size when the request names none.
pub const DEFAULT_PAGE_LIMIT: usize = 20;
/// Most items one progress look-up may name.
pub const MAX_PROGRESS_ITEMS: usize = 100;

fn invalid(code: &'static str, message: String) -> ApiError {
    ApiError::InvalidParameter { code, message }
}

/// What a clear removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClearScope {
    /// Every item of every business (asked for with `all`).
    Everything,
    /// Every item of these businesses.
    Businesses(BTreeSet<String>),
}

/// A uid: a decimal integer above 0.
pub fn uid(text: &str) -> Result<u64, ApiError> {
    match text.parse::<u64>() {
        Ok(uid) if uid > 0 => Ok(uid),
        _ => Err(invalid("invalid_uid", format!("`uid` {} must be an integer greater than 0", quoted(text)))),
    }
}

/// A uid given as a number (gRPC).
pub fn uid_number(uid: u64) -> Result<u64, ApiError> {
    if uid == 0 {
        return Err(invalid("invalid_uid", "`uid` must be greater than 0".to_owned()));
    }
    Ok(uid)
}

/// A business registered on this endpoint.
pub fn business(name: &str, businesses: &HashSet<String>) -> Result<String, ApiError> {
    if businesses.contains(name) {
        Ok(name.to_owned())
    } else {
        Err(invalid("unknown_business", format!("`business` {} is not registered on this endpoint", quoted(name))))
    }
}

/// A business filter (of a page or a clear): registered names,
/// comma-separated, at least one. A blank entry is refused (a filter that
/// names nothing is a mistake, not "every business"); every unregistered
/// name is counted in the error.
pub fn business_filter(names: &str, businesses: &HashSet<String>) -> Result<BTreeSet<String>, ApiError> {
    let entries: Vec<&str> = names.split(',').map(str::trim).collect();
    if entries.iter().any(|entry| entry.is_empty()) {
        return Err(invalid(
            "invalid_business",
            format!(
                "`business` {} has a blank entry: name each business, comma-separated, e.g. pgc,comic; nothing was done",
                quoted(names)
            ),
        ));
    }
    let unknown: Vec<&str> = entries.iter().copied().filter(|name| !businesses.contains(*name)).collect();
    if !unknown.is_empty() {
        return Err(invalid("unknown_business", format!("`business` names {}, not registered on this endpoint", quoted_list(&unknown))));
    }
    Ok(entries.into_iter().map(str::to_owned).collect())
}

/// An optional business filter as gRPC carries it: an empty string is no
/// filter (proto3 cannot tell it from an absent field).
pub fn grpc_business_filter(names: &str, businesses: &HashSet<String>) -> Result<Option<BTreeSet<String>>, ApiError> {
    (!names.is_empty()).then(|| business_filter(names, businesses)).transpose()
}

/// A switch parameter: `true` or `false`.
pub fn switch(name: &str, text: &str) -> Result<bool, ApiError> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid("invalid_parameter", format!("`{name}` is {}; it must be true or false", quoted(text)))),
    }
}

/// What a clear removes: the businesses `business` names, or everything
/// when `all` is set. Neither, or both, is refused: a clear cannot be
/// undone, so it is never inferred.
pub fn clear_scope(business: Option<&str>, all: bool, businesses: &HashSet<String>) -> Result<ClearScope, ApiError> {
    match (business, all) {
        (Some(_), true) => Err(invalid(
            "ambiguous_clear",
            "a clear takes `business` (the businesses to clear) or `all` (every business), not both; nothing was done".to_owned(),
        )),
        (Some(names), false) => Ok(ClearScope::Businesses(business_filter(names, businesses)?)),
        (None, true) => Ok(ClearScope::Everything),
        (None, false) => Err(invalid(
            "clear_scope_missing",
            "a clear names what it removes: `business` (comma-separated) or `all` = true for every business; nothing was done".to_owned(),
        )),
    }
}

/// An item key `business:oid` with a registered business.
pub fn item(text: &str, businesses: &HashSet<String>) -> Result<String, ApiError> {
    let (name, oid) = item_shape(text)?;
    Ok(model::record::item_key(&business(name, businesses)?, oid))
}

/// The `items` of a progress look-up or a delete: 1 to 100 item keys, none
/// blank.
pub fn items<'a>(list: impl IntoIterator<Item = &'a str>, businesses: &HashSet<String>) -> Result<Vec<String>, ApiError> {
    let items: Vec<&str> = list.into_iter().map(str::trim).collect();
    if items.is_empty() {
        return Err(invalid("invalid_items", "`items` must name at least one `business:oid`".to_owned()));
    }
    if items.iter().any(|item| item.is_empty()) {
        return Err(invalid("invalid_items", "`items` has a blank entry: name each `business:oid`, comma-separated".to_owned()));
    }
    if items.len() > MAX_PROGRESS_ITEMS {
        return Err(invalid("invalid_items", format!("`items` names {} items; at most {MAX_PROGRESS_ITEMS} are allowed", items.len())));
    }
    // Malformed items fail first; then every item of an unregistered
    // business is counted in one error.
    let shapes = items.iter().map(|text| item_shape(text)).collect::<Result<Vec<_>, _>>()?;
    let unknown: Vec<&str> =
        items.iter().zip(&shapes).filter(|(_, (name, _))| !businesses.contains(*name)).map(|(text, _)| *text).collect();
    if !unknown.is_empty() {
        return Err(invalid(
            "unknown_business",
            format!("`items` {} name businesses not registered on this endpoint", quoted_list(&unknown)),
        ));
    }
    Ok(shapes.into_iter().map(|(name, oid)| model::record::item_key(name, oid)).collect())
}

/// The business and oid of an item key `business:oid`.
fn item_shape(text: &str) -> Result<(&str, u64), ApiError> {
    let bad = || invalid("invalid_item", format!("item {} must be `business:oid`, e.g. archive:42", quoted(text)));
    let (name, oid) = text.split_once(':').ok_or_else(bad)?;
    Ok((name, oid.parse().map_err(|_| bad())?))
}

/// A page query: `limit` 1..=100 (default 20), an optional business filter
/// and cursor.
pub fn page(business_filter: Option<BTreeSet<String>>, limit: Option<&str>, cursor: Option<&str>) -> Result<PageQuery, ApiError> {
    let limit = match limit.map(str::trim).filter(|text| !text.is_empty()) {
        None => DEFAULT_PAGE_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(limit) if (1..=MAX_PAGE_LIMIT).contains(&limit) => limit,
            _ => return Err(invalid("invalid_limit", format!("`limit` {} must be an integer from 1 to {MAX_PAGE_LIMIT}", quoted(text)))),
        },
    };
    let cursor = cursor
        .filter(|text| !text.is_empty())
        .map(|text| {
            Cursor::decode(text)
                .map_err(|_| invalid("invalid_cursor", format!("`cursor` {} is not a cursor this API gave out", quoted(text))))
        })
        .transpose()?;
    Ok(PageQuery { businesses: business_filter, limit, cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<impl std::fmt::Debug, ApiError>) -> &'static str {
        match result {
            Err(ApiError::InvalidParameter { code, .. }) => code,
            other => panic!("expected an invalid parameter, got {other:?}"),
        }
    }

    fn registered() -> HashSet<String> {
        ["archive".to_owned(), "pgc".to_owned()].into()
    }

    #[test]
    fn parameters_are_named_when_wrong() {
        let businesses = registered();
        assert_eq!(uid("42").ok(), Some(42));
        assert_eq!(code(uid("0")), "invalid_uid");
        assert_eq!(code(uid("-3")), "invalid_uid");
        assert_eq!(code(page(None, Some("0"), None)), "invalid_limit");
        assert_eq!(code(page(None, Some("101"), None)), "invalid_limit");
        assert_eq!(page(None, Some("100"), None).map(|q| q.limit).ok(), Some(100));
        assert_eq!(page(None, None, None).map(|q| q.limit).ok(), Some(20));
        assert_eq!(code(page(None, None, Some("nope"))), "invalid_cursor");
        assert_eq!(code(business_filter("comic", &businesses)), "unknown_business");
        assert_eq!(code(business_filter("archive,comic", &businesses)), "unknown_business");
        assert_eq!(business_filter(" archive , archive", &businesses).ok(), Some(["archive".to_owned()].into()));
        let unknown = items(["archive:1", "comic:2", "radio:3"], &businesses);
        assert!(
            matches!(&unknown, Err(ApiError::InvalidParameter { code: "unknown_business", message, .. }) if message.contains("comic:2") && message.contains("radio:3") && !message.contains("archive:1")),
            "{unknown:?}"
        );
        assert_eq!(code(items(["comic:2", "archive"], &businesses)), "invalid_item");
        assert_eq!(items(["archive:1", " archive:2 "], &businesses).ok(), Some(vec!["archive:1".into(), "archive:2".into()]));
        assert_eq!(code(items(["pgc:1", ""], &businesses)), "invalid_items");
        assert_eq!(code(items(["archive"], &businesses)), "invalid_item");
        assert_eq!(code(items(Vec::<&str>::new(), &businesses)), "invalid_items");
        let many: Vec<String> = (0..101).map(|i| format!("archive:{i}")).collect();
        assert_eq!(code(items(many.iter().map(String::as_str), &businesses)), "invalid_items");
    }

    #[test]
    fn a_blank_filter_is_refused_never_read_as_every_business() {
        let businesses = registered();
        for blank in ["", " ", ",", ",,,", " , ", "pgc,", ",pgc", "pgc,,archive"] {
            assert_eq!(code(business_filter(blank, &businesses)), "invalid_business", "{blank:?}");
            assert_eq!(code(clear_scope(Some(blank), false, &businesses)), "invalid_business", "{blank:?}");
        }
        assert_eq!(grpc_business_filter("", &businesses).ok(), Some(None), "gRPC's empty string is an absent filter");
        assert_eq!(code(grpc_business_filter(" , ", &businesses)), "invalid_business");
    }

    #[test]
    fn a_clear_of_everything_is_asked_for_explicitly() {
        let businesses = registered();
        assert_eq!(clear_scope(None, true, &businesses).ok(), Some(ClearScope::Everything));
        assert_eq!(clear_scope(Some("pgc"), false, &businesses).ok(), Some(ClearScope::Businesses(["pgc".to_owned()].into())));
        assert_eq!(code(clear_scope(None, false, &businesses)), "clear_scope_missing");
        assert_eq!(code(clear_scope(Some("pgc"), true, &businesses)), "ambiguous_clear");
        assert_eq!(code(clear_scope(Some("comic"), false, &businesses)), "unknown_business");
        assert_eq!(switch("all", "true").ok(), Some(true));
        assert_eq!(code(switch("all", "yes")), "invalid_parameter");
    }

    #[test]
    fn errors_quote_little_of_a_long_input() {
        let businesses = registered();
        let long = "x".repeat(500_000);
        for error in [
            business_filter(&long, &businesses).unwrap_err(),
            uid(&long).unwrap_err(),
            items([long.as_str()], &businesses).unwrap_err(),
            page(None, Some(&long), None).unwrap_err(),
            page(None, None, Some(&long)).unwrap_err(),
        ] {
            let ApiError::InvalidParameter { message, .. } = error else { panic!("{error:?}") };
            assert!(message.len() < 300, "{} bytes: {}", message.len(), &message[..100]);
        }
    }
}
