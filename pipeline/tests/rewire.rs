//! Rewiring a running pipeline (what a topology reload does): capacities
//! and rate limits change in place, a stage is handed over to a new
//! instance on the same queue, branches come and go, and no event is lost
//! or re-ordered. Timers run on tokio's paused clock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pipeline::runtime::{start, Rewire};
use pipeline::{stage_fn, InputSpec, NodeSpec, RateLimitSpec, Stage, StageContext, WhenFull};
use tokio_util::sync::CancellationToken;

type Batch = Vec<u64>;
type Seen = Arc<Mutex<Vec<(u64, &'static str)>>>;

fn node(name: &str, inputs: &[(&str, usize)]) -> NodeSpec {
    NodeSpec {
        name: name.to_owned(),
        inputs: inputs
            .iter()
            .map(|(from, capacity)| InputSpec { from: (*from).to_owned(), capacity: *capacity, when_full: WhenFull::Block })
            .collect(),
        rate_limit: None,
        source: inputs.is_empty(),
    }
}

/// Sends `total` numbers one per batch, then waits for the stop signal.
fn source(total: u64, sent: Arc<AtomicUsize>) -> Box<dyn Stage<Batch>> {
    stage_fn(move |cx: StageContext<Batch>| async move {
        for n in 0..total {
            cx.output.send(vec![n]).await?;
            sent.fetch_add(1, Ordering::Relaxed);
        }
        cx.shutdown.cancelled().await;
        Ok(())
    })
}

/// Records what it takes, tagged, sleeping `per_batch` after each, and the
/// largest queue it saw since `watch` was raised.
fn sink(seen: Seen, tag: &'static str, per_batch: Duration, watch: Arc<AtomicBool>, max_queued: Arc<AtomicUsize>) -> Box<dyn Stage<Batch>> {
    stage_fn(move |mut cx: StageContext<Batch>| async move {
        loop {
            if watch.load(Ordering::Relaxed) {
                max_queued.fetch_max(cx.input.queued(), Ordering::Relaxed);
            }
            let Some(batch) = cx.input.recv().await else { break };
            seen.lock().expect("seen lock").extend(batch.into_iter().map(|n| (n, tag)));
            tokio::time::sleep(per_batch).await;
        }
        Ok(())
    })
}

/// Passes everything on, holding one batch back until its input ends (as
/// a window does), so a handover that did not drain would lose it.
fn windowed_relay() -> Box<dyn Stage<Batch>> {
    stage_fn(|mut cx: StageContext<Batch>| async move {
        let mut held: Option<Batch> = None;
        while let Some(batch) = cx.input.recv().await {
            if let Some(previous) = held.replace(batch) {
                cx.output.send(previous).await?;
            }
        }
        if let Some(last) = held {
            cx.output.send(last).await?;
        }
        Ok(())
    })
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Sends consecutive numbers one per batch until the stop signal.
fn endless_source(sent: Arc<AtomicUsize>) -> Box<dyn Stage<Batch>> {
    stage_fn(move |cx: StageContext<Batch>| async move {
        let mut n = 0;
        while !cx.shutdown.is_cancelled() {
            cx.output.send(vec![n]).await?;
            sent.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        Ok(())
    })
}

#[tokio::test(start_paused = true)]
async fn a_capacity_shrunk_below_the_fill_drains_down_without_a_drop() {
    let (sent, seen, watch, max_queued) =
        (Arc::new(AtomicUsize::new(0)), Seen::default(), Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let nodes = vec![
        (node("source", &[]), endless_source(sent.clone())),
        (node("sink", &[("source", 1_000)]), sink(seen.clone(), "sink", Duration::from_millis(1), watch.clone(), max_queued.clone())),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    let control = running.control();
    let waiter = tokio::spawn(running.wait(Duration::from_secs(60)));
    let queued = || sent.load(Ordering::Relaxed) - seen.lock().unwrap().len();
    wait_for("the edge to fill", || queued() >= 900).await;

    let specs = vec![node("source", &[]), node("sink", &[("source", 50)])];
    control.apply(Rewire { specs, stages: HashMap::new() }).await.unwrap();
    // The source never stops sending: once the surplus places are taken
    // back, the queue stays within 50.
    wait_for("the edge to drain down", || queued() <= 51).await;
    watch.store(true, Ordering::Relaxed);
    let drained_at = seen.lock().unwrap().len();
    wait_for("1,000 more events through the shrunk edge", || seen.lock().unwrap().len() >= drained_at + 1_000).await;
    shutdown.cancel();
    waiter.await.unwrap().unwrap();

    assert!(max_queued.load(Ordering::Relaxed) <= 50, "queue reached {} after the shrink", max_queued.load(Ordering::Relaxed));
    let seen: Vec<u64> = seen.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(seen, (0..sent.load(Ordering::Relaxed) as u64).collect::<Vec<u64>>(), "every event sent arrived once, in order");
}

#[tokio::test(start_paused = true)]
async fn a_changed_rate_limit_changes_the_pacing_at_once() {
    let (sent, seen) = (Arc::new(AtomicUsize::new(0)), Seen::default());
    let limited =
        |per_second| NodeSpec { rate_limit: Some(RateLimitSpec { per_second, burst: Some(10) }), ..node("sink", &[("source", 10_000)]) };
    let nodes = vec![
        (node("source", &[]), source(1_000, sent.clone())),
        (limited(100), sink(seen.clone(), "sink", Duration::ZERO, Arc::default(), Arc::default())),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    let control = running.control();
    let waiter = tokio::spawn(running.wait(Duration::from_secs(60)));

    let started = tokio::time::Instant::now();
    wait_for("200 events at 100/s", || seen.lock().unwrap().len() >= 200).await;
    let slow = started.elapsed();
    control.apply(Rewire { specs: vec![node("source", &[]), limited(1_000)], stages: HashMap::new() }).await.unwrap();
    let started = tokio::time::Instant::now();
    wait_for("the next 200 events at 1000/s", || seen.lock().unwrap().len() >= 400).await;
    let fast = started.elapsed();
    shutdown.cancel();
    wait_for("everything", || seen.lock().unwrap().len() == 1_000).await;
    waiter.await.unwrap().unwrap();

    // 190 paced events at 100/s: 1.9 s; 200 at 1000/s (a fresh burst of
    // 10): 0.19 s.
    assert!(slow >= Duration::from_millis(1_850) && slow <= Duration::from_millis(2_000), "200 at 100/s took {slow:?}");
    assert!(fast >= Duration::from_millis(180) && fast <= Duration::from_millis(220), "200 at 1000/s took {fast:?}");
}

#[tokio::test(start_paused = true)]
async fn a_handed_over_stage_finishes_its_window_and_the_next_one_takes_the_same_queue_in_order() {
    let (sent, seen) = (Arc::new(AtomicUsize::new(0)), Seen::default());
    let nodes = vec![
        (node("source", &[]), source(3_000, sent.clone())),
        (node("relay", &[("source", 64)]), windowed_relay()),
        (node("sink", &[("relay", 64)]), sink(seen.clone(), "old", Duration::from_millis(1), Arc::default(), Arc::default())),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    let control = running.control();
    let waiter = tokio::spawn(running.wait(Duration::from_secs(60)));
    wait_for("traffic", || seen.lock().unwrap().len() >= 500).await;

    // Both the relay (holding a batch back) and the sink get new instances;
    // the source keeps sending meanwhile.
    let specs = vec![node("source", &[]), node("relay", &[("source", 64)]), node("sink", &[("relay", 64)])];
    let stages: HashMap<String, Box<dyn Stage<Batch>>> = [
        ("relay".to_owned(), windowed_relay()),
        ("sink".to_owned(), sink(seen.clone(), "new", Duration::from_millis(1), Arc::default(), Arc::default())),
    ]
    .into_iter()
    .collect();
    let report = control.apply(Rewire { specs, stages }).await.unwrap();
    assert_eq!(report.handed_over, vec!["relay".to_owned(), "sink".to_owned()]);
    // The relay's last batch waits for its input to end (the stop).
    wait_for("all but the relay's last batch", || seen.lock().unwrap().len() == 2_999).await;
    shutdown.cancel();
    waiter.await.unwrap().unwrap();

    let seen = seen.lock().unwrap();
    let numbers: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, (0..3_000).collect::<Vec<u64>>(), "every event once, in order, across the handover");
    let switched = seen.iter().position(|(_, tag)| *tag == "new").expect("the new sink took over");
    assert!(switched > 0 && seen[switched..].iter().all(|(_, tag)| *tag == "new"), "old instance first, then only the new one");
}

#[tokio::test(start_paused = true)]
async fn a_branch_added_then_removed_gets_events_only_while_wired_and_the_main_path_loses_none() {
    let (sent, main, branch) = (Arc::new(AtomicUsize::new(0)), Seen::default(), Seen::default());
    let base = || vec![node("source", &[]), node("main", &[("source", 128)])];
    let nodes = vec![
        (node("source", &[]), source(3_000, sent.clone())),
        (node("main", &[("source", 128)]), sink(main.clone(), "main", Duration::from_millis(1), Arc::default(), Arc::default())),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    let control = running.control();
    let waiter = tokio::spawn(running.wait(Duration::from_secs(60)));
    wait_for("traffic", || main.lock().unwrap().len() >= 500).await;

    let mut with_branch = base();
    with_branch.push(node("branch", &[("source", 128)]));
    let stages: HashMap<String, Box<dyn Stage<Batch>>> =
        [("branch".to_owned(), sink(branch.clone(), "branch", Duration::ZERO, Arc::default(), Arc::default()))].into_iter().collect();
    let report = control.apply(Rewire { specs: with_branch, stages }).await.unwrap();
    assert_eq!(report.started, vec!["branch".to_owned()]);
    wait_for("the branch to get events", || branch.lock().unwrap().len() >= 300).await;
    let report = control.apply(Rewire { specs: base(), stages: HashMap::new() }).await.unwrap();
    assert_eq!(report.retired, vec!["branch".to_owned()]);
    let at_removal = sent.load(Ordering::Relaxed);
    wait_for("everything on the main path", || main.lock().unwrap().len() == 3_000).await;
    shutdown.cancel();
    waiter.await.unwrap().unwrap();

    let main: Vec<u64> = main.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert_eq!(main, (0..3_000).collect::<Vec<u64>>());
    let branch: Vec<u64> = branch.lock().unwrap().iter().map(|(n, _)| *n).collect();
    assert!(branch.windows(2).all(|pair| pair[1] == pair[0] + 1), "the branch saw one unbroken run");
    assert!(*branch.last().unwrap() < at_removal as u64 + 130, "the branch kept getting events after it was removed");
    assert!(at_removal < 3_000, "the source had finished before the removal: the test proves nothing");
}

#[tokio::test(start_paused = true)]
async fn a_bad_rewiring_changes_nothing() {
    let (sent, seen) = (Arc::new(AtomicUsize::new(0)), Seen::default());
    let nodes = vec![
        (node("source", &[]), source(100, sent.clone())),
        (node("sink", &[("source", 16)]), sink(seen.clone(), "sink", Duration::ZERO, Arc::default(), Arc::default())),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    let control = running.control();
    let waiter = tokio::spawn(running.wait(Duration::from_secs(60)));
    let error = control
        .apply(Rewire {
            specs: vec![node("source", &[]), node("sink", &[("source", 16)]), node("extra", &[("ghost", 1)])],
            stages: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "node `extra` reads from `ghost`, which is not a node of this pipeline");
    let error = control
        .apply(Rewire {
            specs: vec![node("source", &[]), node("sink", &[("source", 16)]), node("extra", &[("source", 1)])],
            stages: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "node `extra` is new but no stage was given for it");
    let mut running_specs = control.specs();
    running_specs.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(running_specs, vec![node("sink", &[("source", 16)]), node("source", &[])]);
    wait_for("everything", || seen.lock().unwrap().len() == 100).await;
    shutdown.cancel();
    waiter.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_source_hands_over_on_its_stop_signal() {
    let seen = Seen::default();
    let started = Arc::new(AtomicUsize::new(0));
    let emitter = |started: Arc<AtomicUsize>| {
        stage_fn(move |cx: StageContext<Batch>| async move {
            let generation = started.fetch_add(1, Ordering::Relaxed) as u64;
            let output = cx.output;
            let mut n = 0;
            while !cx.shutdown.is_cancelled() && n < 100 {
                output.send(vec![generation * 1000 + n]).await?;
                n += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            cx.shutdown.cancelled().await;
            Ok(())
        })
    };
    let nodes = vec![
        (node("source", &[]), emitter(started.clone())),
        (node("sink", &[("source", 16)]), sink(seen.clone(), "sink", Duration::ZERO, Arc::default(), Arc::default())),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    let control = running.control();
    let waiter = tokio::spawn(running.wait(Duration::from_secs(60)));
    wait_for("the first source", || !seen.lock().unwrap().is_empty()).await;
    let stages: HashMap<String, Box<dyn Stage<Batch>>> = [("source".to_owned(), emitter(started.clone()))].into_iter().collect();
    let report = control.apply(Rewire { specs: vec![node("source", &[]), node("sink", &[("source", 16)])], stages }).await.unwrap();
    assert_eq!(report.handed_over, vec!["source".to_owned()]);
    wait_for("the second source", || seen.lock().unwrap().iter().any(|(n, _)| *n >= 1000)).await;
    shutdown.cancel();
    waiter.await.unwrap().unwrap();
}
