//! Reads the Prometheus text the process's own exporter renders (the one
//! source of every figure `/metrics` and the live page show) into series
//! that can be summed by name and label.

use std::collections::HashMap;

/// One series: its labels and its value.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    labels: Vec<(String, String)>,
    value: f64,
}

/// Every series of one rendering, by metric name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    series: HashMap<String, Vec<Series>>,
}

impl Exposition {
    /// Parses Prometheus text exposition; lines it cannot read (and
    /// comments) are skipped.
    pub fn parse(text: &str) -> Self {
        let mut series: HashMap<String, Vec<Series>> = HashMap::new();
        for line in text.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with('#')) {
            if let Some((name, one)) = parse_line(line) {
                series.entry(name).or_default().push(one);
            }
        }
        Exposition { series }
    }

    /// The finite values of the series of `name` carrying all of `labels`.
    fn matching<'a>(&'a self, name: &str, labels: &'a [(&str, &str)]) -> impl Iterator<Item = f64> + 'a {
        self.series
            .get(name)
            .into_iter()
            .flatten()
            .filter(|series| labels.iter().all(|(key, value)| series.labels.iter().any(|(k, v)| k == key && v == value)))
            .map(|series| series.value)
            .filter(|value| value.is_finite())
    }

    /// The sum of every series of `name` carrying all of `labels`; `None`
    /// when no such series exists.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).fold(None, |sum, value| Some(sum.unwrap_or(0.0) + value))
    }

    /// The largest value of `name` with `labels` (a summary's quantile
    /// over its series); `None` when there is none.
    pub fn max(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.matching(name, labels).reduce(f64::max)
    }
}

/// `name{label="value",...} value [timestamp]` or `name value [timestamp]`.
fn parse_line(line: &str) -> Option<(String, Series)> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inner)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().ok()?,
    };
    Some((name.to_owned(), Series { labels, value }))
}

/// Labels up to the closing brace, with `\\`, `\"` and `\n` escapes; the
/// text after the brace.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        text = text.trim_start_matches([' ', ',']);
        if let Some(after) = text.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = text.find('=')?;
        let key = text[..eq].trim().to_owned();
        let mut chars = text[eq + 1..].trim_start().strip_prefix('"')?.char_indices();
        let mut value = String::new();
        let end = loop {
            let (at, c) = chars.next()?;
            match c {
                '"' => break at,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                other => value.push(other),
            }
        };
        let quoted = text[eq + 1..].trim_start();
        text = &quoted[1 + end + 1..];
        labels.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# TYPE histflow_stage_events_in_total counter
histflow_stage_events_in_total{stage="ingest"} 12
histflow_stage_events_in_total{stage="realtime"} 10
histflow_kafka_consumer_lag_messages{partition="0"} 3
histflow_kafka_consumer_lag_messages{partition="1"} 4
histflow_http_requests_total{route="/v1/events",method="POST",status="200"} 5
odd{path="a \"quoted\", comma\\ and } brace"} 1.5 1700000000
histflow_persist_durable_lag_seconds{quantile="0.99"} 0.25
histflow_persist_durable_lag_seconds{quantile="0.5"} NaN
plain 7
"#;

    #[test]
    fn sums_by_name_and_label() {
        let exposition = Exposition::parse(TEXT);
        assert_eq!(exposition.sum("histflow_stage_events_in_total", &[("stage", "ingest")]), Some(12.0));
        assert_eq!(exposition.sum("histflow_stage_events_in_total", &[]), Some(22.0));
        assert_eq!(exposition.sum("histflow_kafka_consumer_lag_messages", &[]), Some(7.0));
        assert_eq!(exposition.sum("histflow_http_requests_total", &[("route", "/v1/events"), ("status", "200")]), Some(5.0));
        assert_eq!(exposition.sum("histflow_stage_events_in_total", &[("stage", "nope")]), None);
        assert_eq!(exposition.sum("absent", &[]), None);
        assert_eq!(exposition.sum("plain", &[]), Some(7.0));
    }

    #[test]
    fn reads_escaped_label_values_and_skips_what_is_not_a_number() {
        let exposition = Exposition::parse(TEXT);
        assert_eq!(exposition.sum("odd", &[("path", "a \"quoted\", comma\\ and } brace")]), Some(1.5));
        assert_eq!(exposition.max("histflow_persist_durable_lag_seconds", &[("quantile", "0.99")]), Some(0.25));
        assert_eq!(exposition.max("histflow_persist_durable_lag_seconds", &[("quantile", "0.5")]), None);
    }
}
