//! Query strings, read strictly: a route names the parameters it takes, and
//! a parameter it does not take or one given twice is refused (400, naming
//! it) instead of ignored. An ignored
//! `?businesses=pgc` once turned "clear pgc" into "clear everything".

use std::collections::BTreeMap;

use crate::error::ApiError;
use crate::text::quoted;

/// The parameters of one query string, by name.
#[derive(Debug, Default)]
pub struct QueryParams {
    values: BTreeMap<&'static str, String>,
}

impl QueryParams {
    /// Reads `raw` (the part after `?`, if any), taking only the parameters
    /// named in `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&'static str]) -> Result<Self, ApiError> {
        let mut values = BTreeMap::new();
        let Some(raw) = raw.filter(|raw| !raw.is_empty()) else {
            return Ok(QueryParams { values });
        };
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            let Some(known) = allowed.iter().copied().find(|known| *known == name.as_ref()) else {
                let takes = if allowed.is_empty() {
                    "this route takes no query parameters".to_owned()
                } else {
                    format!("this route takes {}", allowed.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", "))
                };
                return Err(ApiError::InvalidParameter {
                    code: "unknown_parameter",
                    message: format!("unknown query parameter {}: {takes}; nothing was done", quoted(&name)),
                });
            };
            if values.insert(known, value.into_owned()).is_some() {
                return Err(ApiError::InvalidParameter {
                    code: "repeated_parameter",
                    message: format!("`{known}` is given more than once; give it once (a list is comma-separated)"),
                });
            }
        }
        Ok(QueryParams { values })
    }

    /// The value of `name`, if given (possibly empty).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(result: Result<QueryParams, ApiError>) -> &'static str {
        match result {
            Err(ApiError::InvalidParameter { code, .. }) => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn only_named_parameters_pass_each_once() {
        let params = QueryParams::parse(Some("business=pgc%2Ccomic&all="), &["business", "all"]).unwrap();
        assert_eq!(params.get("business"), Some("pgc,comic"));
        assert_eq!(params.get("all"), Some(""));
        assert_eq!(params.get("cursor"), None);
        assert!(QueryParams::parse(None, &[]).unwrap().get("business").is_none());
        assert!(QueryParams::parse(Some(""), &[]).is_ok());
        for misspelt in ["businesses=pgc", "Business=archive", "biz=pgc", "business=pgc&bizness=comic"] {
            assert_eq!(code(QueryParams::parse(Some(misspelt), &["business", "all"])), "unknown_parameter", "{misspelt}");
        }
        assert_eq!(code(QueryParams::parse(Some("business=a&business=b"), &["business"])), "repeated_parameter");
        assert_eq!(code(QueryParams::parse(Some("x=1"), &[])), "unknown_parameter");
    }

    #[test]
    fn a_long_unknown_name_is_not_echoed_whole() {
        let name = "b".repeat(500_000);
        let Err(ApiError::InvalidParameter { message, .. }) = QueryParams::parse(Some(&format!("{name}=1")), &["business"]) else {
            panic!("a long unknown name passed");
        };
        assert!(message.len() < 400, "{} bytes", message.len());
    }
}
