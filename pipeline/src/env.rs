//! `${VAR}` and `${VAR:-default}` interpolation of topology values.
//!
//! Interpolation runs on the parsed TOML tree, string by string, rather than
//! on the raw text: a variable's value can never inject TOML syntax, and
//! every problem can name the exact field it came from. A string that is
//! exactly one placeholder whose value is an integer or a boolean becomes
//! that integer or boolean, so `capacity = "${INGEST_CAPACITY:-4096}"` works.

use std::collections::HashMap;

/// Where variable values come from: the process environment, or a fixed map
/// (tests, so they never touch the process-global environment).
#[derive(Debug, Clone, Default)]
pub enum VarSource {
    /// `std::env::var`.
    #[default]
    Process,
    /// A fixed set of variables; anything else is undefined.
    Fixed(HashMap<String, String>),
}

impl VarSource {
    fn get(&self, name: &str) -> Option<String> {
        match self {
            VarSource::Process => std::env::var(name).ok(),
            VarSource::Fixed(vars) => vars.get(name).cloned(),
        }
    }
}

/// One interpolation problem, with the dotted path of the value it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    /// Dotted path of the field, e.g. `stages[2].url`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Replaces every placeholder in every string of `value`, in place, and
/// returns every problem found (all of them, not just the first).
pub fn interpolate(value: &mut toml::Value, vars: &VarSource) -> Vec<InterpolationError> {
    let mut errors = Vec::new();
    walk(value, String::new(), vars, &mut errors);
    errors
}

fn walk(value: &mut toml::Value, path: String, vars: &VarSource, errors: &mut Vec<InterpolationError>) {
    match value {
        toml::Value::String(text) => match expand(text, vars) {
            Ok(expanded) => *value = typed(text, expanded),
            Err(message) => errors.push(InterpolationError { path, message }),
        },
        toml::Value::Array(items) => {
            for (index, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{index}]"), vars, errors);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                walk(item, child, vars, errors);
            }
        }
        _ => {}
    }
}

/// A whole-string placeholder whose value looks like an integer or a bool
/// takes that type; anything else stays a string.
fn typed(original: &str, expanded: String) -> toml::Value {
    let whole_placeholder = original.starts_with("${") && original.ends_with('}') && original.matches("${").count() == 1;
    if whole_placeholder {
        if let Ok(number) = expanded.parse::<i64>() {
            return toml::Value::Integer(number);
        }
        if let Ok(flag) = expanded.parse::<bool>() {
            return toml::Value::Boolean(flag);
        }
    }
    toml::Value::String(expanded)
}

/// Expands the placeholders of one string. `$$` is a literal `$`.
pub fn expand(text: &str, vars: &VarSource) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        let Some(body_and_tail) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_and_tail.find('}') else {
            return Err(format!("unterminated placeholder in {text:?}: missing `}}`"));
        };
        let body = &body_and_tail[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid variable name {name:?} in {text:?}"));
        }
        match (vars.get(name), default) {
            (Some(found), _) => out.push_str(&found),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set and `${{{name}}}` has no default (write `${{{name}:-default}}`)"
                ));
            }
        }
        rest = &body_and_tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> VarSource {
        VarSource::Fixed(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn expands_set_default_and_literal_dollar() {
        let v = vars(&[("HOST", "10.0.0.1")]);
        assert_eq!(expand("redis://${HOST}:6379", &v).as_deref(), Ok("redis://10.0.0.1:6379"));
        assert_eq!(expand("${PORT:-8080}", &v).as_deref(), Ok("8080"));
        assert_eq!(expand("${HOST:-x}", &v).as_deref(), Ok("10.0.0.1"));
        assert_eq!(expand("cost $$5 $x", &v).as_deref(), Ok("cost $5 $x"));
        assert_eq!(expand("${EMPTY:-}", &v).as_deref(), Ok(""));
    }

    #[test]
    fn undefined_without_default_names_the_variable() {
        let err = expand("${NOPE}", &vars(&[])).unwrap_err();
        assert!(err.contains("NOPE is not set"), "{err}");
        assert!(expand("${OPEN", &vars(&[])).unwrap_err().contains("unterminated"));
        assert!(expand("${a-b}", &vars(&[])).unwrap_err().contains("invalid variable name"));
    }

    #[test]
    fn whole_placeholder_becomes_typed_and_errors_carry_paths() {
        let mut value: toml::Value = toml::from_str(
            r#"
            n = "${N:-42}"
            flag = "${F:-true}"
            mixed = "x${N:-1}"
            [[stages]]
            url = "${MISSING}"
            "#,
        )
        .unwrap();
        let errors = interpolate(&mut value, &vars(&[]));
        assert_eq!(value["n"].as_integer(), Some(42));
        assert_eq!(value["flag"].as_bool(), Some(true));
        assert_eq!(value["mixed"].as_str(), Some("x1"));
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, "stages[0].url");
    }
}
