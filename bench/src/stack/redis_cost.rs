//! What a run cost Redis: its CPU seconds (`INFO cpu`), the time in
//! scripts and the calls of each command (`INFO commandstats`, which counts
//! a script's inner `redis.call`s too), sampled before and after and
//! divided by the events the run recorded.

use std::collections::BTreeMap;

use serde::Serialize;

/// One reading of a Redis's counters.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// `used_cpu_user + used_cpu_sys`, seconds.
    cpu_s: f64,
    /// Per command: calls and microseconds spent in it.
    commands: BTreeMap<String, (u64, u64)>,
}

/// What a run cost Redis per event.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Redis process CPU, microseconds per event (= seconds per million).
    pub cpu_us_per_event: f64,
    /// Time inside script calls (EVALSHA, FCALL), microseconds per event.
    pub script_us_per_event: f64,
    /// Calls per event of each command (inner script calls included),
    /// the busiest first in the table.
    pub calls_per_event: BTreeMap<String, f64>,
    /// Microseconds per event in each command (a script's inner calls
    /// count in their own command and in the script's): where the time
    /// goes.
    pub us_per_event: BTreeMap<String, f64>,
}

impl Sample {
    /// Reads the counters of every Redis in `redis_urls` (a cluster's
    /// masters), added up: a cluster's cost is what all of them spent.
    pub async fn of_all(redis_urls: &[String]) -> anyhow::Result<Self> {
        let mut total = Sample::default();
        for url in redis_urls {
            total.add(Sample::of(url).await?);
        }
        Ok(total)
    }

    fn add(&mut self, other: Sample) {
        self.cpu_s += other.cpu_s;
        for (name, (calls, usec)) in other.commands {
            let known = self.commands.entry(name).or_default();
            known.0 += calls;
            known.1 += usec;
        }
    }

    /// Reads `redis_url`'s counters.
    pub async fn of(redis_url: &str) -> anyhow::Result<Self> {
        let client = redis::Client::open(redis_url)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        let cpu: String = redis::cmd("INFO").arg("cpu").query_async(&mut connection).await?;
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(&mut connection).await?;
        Ok(Self::parse(&cpu, &stats))
    }

    fn parse(cpu: &str, stats: &str) -> Self {
        let field =
            |name: &str| cpu.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok()).unwrap_or(0.0);
        let mut commands = BTreeMap::new();
        for line in stats.lines() {
            // cmdstat_zadd:calls=3,usec=12,usec_per_call=4.00,...
            let Some((name, values)) = line.strip_prefix("cmdstat_").and_then(|line| line.split_once(':')) else { continue };
            let value =
                |key: &str| values.split(',').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('=')?.parse::<u64>().ok()).unwrap_or(0);
            commands.insert(name.to_owned(), (value("calls"), value("usec")));
        }
        Sample { cpu_s: field("used_cpu_user") + field("used_cpu_sys"), commands }
    }

    /// What happened between `self` and `later`, per one of `events`.
    pub fn cost_until(&self, later: &Sample, events: u64) -> Option<Cost> {
        if events == 0 {
            return None;
        }
        let events = events as f64;
        let mut script_us = 0u64;
        let mut calls_per_event = BTreeMap::new();
        let mut us_per_event = BTreeMap::new();
        for (name, (calls, usec)) in &later.commands {
            let (calls_before, usec_before) = self.commands.get(name).copied().unwrap_or((0, 0));
            // The bench's own INFO calls are not the run's work.
            if name == "info" || *calls <= calls_before {
                continue;
            }
            let usec = usec.saturating_sub(usec_before);
            if matches!(name.as_str(), "evalsha" | "eval" | "fcall" | "fcall_ro") {
                script_us += usec;
            }
            calls_per_event.insert(name.clone(), (calls - calls_before) as f64 / events);
            us_per_event.insert(name.clone(), usec as f64 / events);
        }
        Some(Cost {
            cpu_us_per_event: (later.cpu_s - self.cpu_s).max(0.0) * 1e6 / events,
            script_us_per_event: script_us as f64 / events,
            calls_per_event,
            us_per_event,
        })
    }
}

impl Cost {
    /// One line: CPU and script time per event, then the calls per event
    /// of the busiest commands.
    pub fn describe(&self) -> String {
        let mut calls: Vec<(&String, &f64)> = self.calls_per_event.iter().collect();
        calls.sort_by(|a, b| b.1.total_cmp(a.1));
        let calls: Vec<String> = calls
            .iter()
            .take(12)
            .map(|(name, per)| format!("{name} {per:.2} ({:.2} µs)", self.us_per_event.get(*name).copied().unwrap_or(0.0)))
            .collect();
        format!(
            "Redis CPU {:.2} µs/event (= s per million events), {:.2} µs/event in scripts; calls per event (µs in them): {}",
            self.cpu_us_per_event,
            self.script_us_per_event,
            calls.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cost_is_the_difference_per_event_and_leaves_info_out() {
        let before = Sample::parse(
            "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.5\r\n",
            "cmdstat_evalsha:calls=10,usec=100,usec_per_call=10.00\r\ncmdstat_info:calls=1,usec=5\r\n",
        );
        let after = Sample::parse(
            "used_cpu_sys:2.0\r\nused_cpu_user:4.0\r\n",
            "cmdstat_evalsha:calls=20,usec=300,usec_per_call=15.00\r\ncmdstat_zadd:calls=40,usec=80\r\ncmdstat_info:calls=3,usec=9\r\n",
        );
        let cost = before.cost_until(&after, 20).expect("events");
        assert!((cost.cpu_us_per_event - 100_000.0).abs() < 1e-6, "{cost:?}");
        assert!((cost.script_us_per_event - 10.0).abs() < 1e-9, "{cost:?}");
        assert_eq!(cost.calls_per_event.get("zadd"), Some(&2.0));
        assert_eq!(cost.calls_per_event.get("evalsha"), Some(&0.5));
        assert_eq!(cost.us_per_event.get("zadd"), Some(&4.0));
        assert!(!cost.calls_per_event.contains_key("info"));
        assert!(before.cost_until(&after, 0).is_none());
    }

    #[test]
    fn a_clusters_cost_adds_up_its_masters() {
        let mut one = Sample::parse("used_cpu_sys:1.0\r\nused_cpu_user:2.0\r\n", "cmdstat_zadd:calls=4,usec=8\r\n");
        one.add(Sample::parse(
            "used_cpu_sys:0.5\r\nused_cpu_user:0.5\r\n",
            "cmdstat_zadd:calls=6,usec=2\r\ncmdstat_hset:calls=1,usec=1\r\n",
        ));
        let cost = Sample::default().cost_until(&one, 10).expect("events");
        assert!((cost.cpu_us_per_event - 400_000.0).abs() < 1e-6, "{cost:?}");
        assert_eq!(cost.calls_per_event.get("zadd"), Some(&1.0));
        assert_eq!(cost.us_per_event.get("zadd"), Some(&1.0));
        assert_eq!(cost.calls_per_event.get("hset"), Some(&0.1));
    }
}
