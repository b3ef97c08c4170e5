//! Reading histflow's Prometheus text (`/metrics`).

/// One scrape of a process's `/metrics`.
#[derive(Debug, Default, Clone)]
pub struct Scrape(String);

impl Scrape {
    /// `GET {base}/metrics`; empty when the process does not answer.
    pub async fn of(http: &reqwest::Client, base: &str) -> Self {
        match http.get(format!("{base}/metrics")).send().await {
            Ok(response) => Scrape(response.text().await.unwrap_or_default()),
            Err(_) => Scrape::default(),
        }
    }

    /// Several processes' scrapes as one: sums add up over them; a
    /// quantile is the first process's.
    pub fn merged(scrapes: impl IntoIterator<Item = Scrape>) -> Self {
        Scrape(scrapes.into_iter().map(|scrape| scrape.0).collect::<Vec<_>>().join("\n"))
    }

    /// The sum of `name`'s samples whose labels contain every `labels`
    /// part (e.g. `stage="persist"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (series, value) = line.rsplit_once(' ')?;
                let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
                (metric == name && labels.iter().all(|label| rest.contains(label))).then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }

    /// A summary's quantile (`quantile="0.99"`), if present.
    pub fn quantile(&self, name: &str, quantile: &str) -> Option<f64> {
        let wanted = format!("quantile=\"{quantile}\"");
        self.0.lines().find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series.starts_with(&format!("{name}{{")) && series.contains(&wanted)).then(|| value.parse().ok()).flatten()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_quantiles() {
        let scrape =
            Scrape("# TYPE x counter\nx{stage=\"a\"} 2\nx{stage=\"b\"} 3\nxy 9\nlag{quantile=\"0.99\"} 1.5\nlag_sum 3\n".to_owned());
        assert_eq!(scrape.sum("x", &[]), 5.0);
        assert_eq!(scrape.sum("x", &["stage=\"b\""]), 3.0);
        assert_eq!(scrape.quantile("lag", "0.99"), Some(1.5));
        assert_eq!(scrape.quantile("lag", "0.5"), None);
    }
}
