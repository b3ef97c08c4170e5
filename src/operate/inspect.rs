//! `histflow inspect TOPOLOGY --uid U [--item business:oid ...] [--json]`:
//! every place one user's items live, and a verdict per item. Reads only.

use std::fmt::Write as _;

use super::endpoints::Endpoints;
use super::shown::shown_time as time;
use super::snapshot::{self, ItemReport, UserReport};

/// Reads user `uid` (only `items`, when given) and prints it, as JSON with
/// `json`.
pub async fn run(endpoints: &Endpoints, uid: u64, items: &[String], json: bool) -> anyhow::Result<()> {
    anyhow::ensure!(uid > 0, "--uid must be greater than 0");
    for item in items {
        let well_formed = item.split_once(':').is_some_and(|(business, oid)| !business.is_empty() && oid.parse::<u64>().is_ok());
        anyhow::ensure!(well_formed, "--item {item:?} is not business:oid (archive:7)");
    }
    let (link, table) = (endpoints.redis()?, endpoints.table()?);
    let only = (!items.is_empty()).then_some(items);
    let report = snapshot::read(&link, &table, endpoints.shards, uid, only, endpoints.job_lag().await).await?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", text(&report));
    }
    Ok(())
}

fn item_lines(item: &ItemReport, out: &mut String) {
    let _ = writeln!(out, "  {:<22} {}", item.item, item.verdict.label());
    if let Some(redis) = &item.redis {
        let record =
            redis.record.as_ref().map_or("none".to_owned(), |shown| format!("{} progress {}", time(shown.view_at), shown.progress));
        let timeline = redis.timeline_view_at.map_or("not listed".to_owned(), time);
        let _ = writeln!(out, "      redis: record {record}; timeline {timeline}");
        if let Some(kept) = &redis.kept {
            let _ = writeln!(out, "      redis: kept copy {} progress {}", time(kept.view_at), kept.progress);
        }
    } else {
        let _ = writeln!(out, "      redis: nothing");
    }
    if let Some(mark) = &item.mark {
        let _ = writeln!(out, "      mark (acknowledged, not yet in Kafka): {mark}");
    }
    if let Some(shipped) = &item.shipped {
        let _ = writeln!(out, "      shipped reference (in Kafka, not yet written): {shipped}");
    }
    match &item.hbase {
        Some(cell) => {
            let _ = writeln!(out, "      hbase: cell {} progress {}", time(cell.view_at), cell.progress);
        }
        None => {
            let _ = writeln!(out, "      hbase: no cell");
        }
    }
    let markers = &item.markers;
    for (name, at) in [("deleted", markers.deleted_at), ("cleared", markers.cleared_at), ("business cleared", markers.business_cleared_at)]
    {
        if let Some(at) = at {
            let _ = writeln!(out, "      marker: {name} at {}", time(at));
        }
    }
}

/// The report as text.
fn text(report: &UserReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "user {} (shard {})", report.uid, report.shard);
    let hbase_paused = report.recording.hbase.map_or("not written".to_owned(), |paused| paused.to_string());
    let _ = writeln!(out, "  recording paused: redis {}, hbase {hbase_paused}", report.recording.redis);
    for (field, value) in &report.meta {
        let _ = writeln!(out, "  meta {field} = {value}");
    }
    for (key, ttl) in &report.keys {
        let shown = match ttl {
            None => "absent".to_owned(),
            Some(-1) => "no expiry".to_owned(),
            Some(ms) => format!("expires in {:.1} days", *ms as f64 / 86_400_000.0),
        };
        let _ = writeln!(out, "  key {key}: {shown}");
    }
    let listed = |score: Option<f64>| score.map_or("not listed".to_owned(), |score| format!("listed ({score})"));
    let _ = writeln!(out, "  re-drive index: {}; leaving set: {}", listed(report.pending_index), listed(report.leaving_index));
    let lag = report.job_lag.map_or("unknown".to_owned(), |lag| format!("{lag} messages"));
    let _ = writeln!(out, "  job lag on the merge topic: {lag}");
    let _ = writeln!(out, "items ({}):", report.items.len());
    for item in &report.items {
        item_lines(item, &mut out);
    }
    let counts: Vec<String> = report.counts.iter().map(|(verdict, count)| format!("{verdict} {count}")).collect();
    let _ = writeln!(out, "verdicts: {}", if counts.is_empty() { "no items".to_owned() } else { counts.join(", ") });
    out
}
