//! Runtime behaviour: bounded edges, backpressure, reject, rate limits,
//! fan-out, draining shutdown, deadlines and failures. Timers run on
//! tokio's paused clock, so nothing here depends on the machine's speed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use pipeline::runtime::{start, RunError};
use pipeline::{stage_fn, InputSpec, NodeSpec, RateLimitSpec, SendError, WhenFull};
use tokio_util::sync::CancellationToken;

type Batch = Vec<u64>;

fn node(name: &str, inputs: &[(&str, usize, WhenFull)]) -> NodeSpec {
    NodeSpec {
        name: name.to_owned(),
        inputs: inputs
            .iter()
            .map(|(from, capacity, when_full)| InputSpec { from: (*from).to_owned(), capacity: *capacity, when_full: *when_full })
            .collect(),
        rate_limit: None,
        source: inputs.is_empty(),
    }
}

/// A source emitting `batches` batches of `size` consecutive numbers, then
/// finishing; counts sends that had to wait.
fn counting_source(batches: u64, size: u64, blocked: Arc<AtomicUsize>) -> Box<dyn pipeline::Stage<Batch>> {
    stage_fn(move |cx| async move {
        for b in 0..batches {
            let batch: Batch = (b * size..(b + 1) * size).collect();
            let send = cx.output.send(batch);
            futures::pin_mut!(send);
            match futures::poll!(&mut send) {
                std::task::Poll::Ready(result) => result?,
                std::task::Poll::Pending => {
                    blocked.fetch_add(1, Ordering::Relaxed);
                    send.await?;
                }
            }
        }
        Ok(())
    })
}

/// A sink that collects everything, optionally sleeping per batch, and
/// records the largest queue it ever saw on its input.
fn collecting_sink(seen: Arc<Mutex<Vec<u64>>>, per_batch: Duration, max_queued: Arc<AtomicUsize>) -> Box<dyn pipeline::Stage<Batch>> {
    stage_fn(move |mut cx| async move {
        loop {
            max_queued.fetch_max(cx.input.queued(), Ordering::Relaxed);
            let Some(batch) = cx.input.recv().await else {
                break;
            };
            if !per_batch.is_zero() {
                tokio::time::sleep(per_batch).await;
            }
            seen.lock().expect("collector lock").extend(batch);
        }
        Ok(())
    })
}

#[tokio::test(start_paused = true)]
async fn backpressure_bounds_the_queue_and_loses_nothing() {
    const CAPACITY: usize = 64;
    let (blocked, max_queued, seen) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let nodes = vec![
        (node("source", &[]), counting_source(200, 16, blocked.clone())),
        (
            node("sink", &[("source", CAPACITY, WhenFull::Block)]),
            collecting_sink(seen.clone(), Duration::from_millis(1), max_queued.clone()),
        ),
    ];
    let running = start(nodes, CancellationToken::new()).unwrap();
    running.wait(Duration::from_secs(5)).await.unwrap();

    assert!(max_queued.load(Ordering::Relaxed) <= CAPACITY, "queue reached {}", max_queued.load(Ordering::Relaxed));
    assert!(max_queued.load(Ordering::Relaxed) >= CAPACITY - 16, "the edge never filled: the test did not exercise backpressure");
    assert!(blocked.load(Ordering::Relaxed) > 0, "the source never waited");
    let seen = seen.lock().unwrap();
    assert_eq!(*seen, (0..200 * 16).collect::<Vec<u64>>(), "every event exactly once, in order");
}

#[tokio::test]
async fn reject_edge_fails_the_send_at_once() {
    let outcome: Arc<Mutex<Vec<String>>> = Arc::default();
    let release = CancellationToken::new();
    let (outcome_in_source, release_in_source) = (outcome.clone(), release.clone());
    let source = stage_fn(move |cx| async move {
        let first = cx.output.send(vec![1, 2]).now_or_never();
        let second = cx.output.send(vec![3]).now_or_never();
        let describe = |result: Option<Result<(), SendError<Batch>>>| match result {
            None => "pending".to_owned(),
            Some(Ok(())) => "sent".to_owned(),
            Some(Err(SendError::Full { to, message })) => format!("full {to} {message:?}"),
            Some(Err(error)) => error.to_string(),
        };
        outcome_in_source.lock().unwrap().extend([describe(first), describe(second)]);
        release_in_source.cancel();
        Ok(())
    });
    let sink = stage_fn(move |mut cx: pipeline::StageContext<Batch>| async move {
        // Read nothing until the source has tried both sends.
        release.cancelled().await;
        while cx.input.recv().await.is_some() {}
        Ok(())
    });
    let nodes = vec![(node("source", &[]), source), (node("sink", &[("source", 2, WhenFull::Reject)]), sink)];
    start(nodes, CancellationToken::new()).unwrap().wait(Duration::from_secs(5)).await.unwrap();
    assert_eq!(*outcome.lock().unwrap(), vec!["sent".to_owned(), "full sink [3]".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_delays_and_never_drops() {
    // 500 events under 100/s with a burst of 10: the first 10 pass at once,
    // the other 490 take 4.9 s of virtual time.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut limited = node("sink", &[("source", 10_000, WhenFull::Block)]);
    limited.rate_limit = Some(RateLimitSpec { per_second: 100, burst: Some(10) });
    let nodes = vec![
        (node("source", &[]), counting_source(50, 10, Arc::default())),
        (limited, collecting_sink(seen.clone(), Duration::ZERO, Arc::default())),
    ];
    let started = tokio::time::Instant::now();
    start(nodes, CancellationToken::new()).unwrap().wait(Duration::from_secs(60)).await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(4_850) && elapsed <= Duration::from_millis(5_000), "took {elapsed:?} of virtual time");
    assert_eq!(seen.lock().unwrap().len(), 500);
}

#[tokio::test(start_paused = true)]
async fn fan_out_delivers_every_batch_to_every_reader() {
    let (left, right) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let nodes = vec![
        (node("source", &[]), counting_source(100, 8, Arc::default())),
        (node("left", &[("source", 32, WhenFull::Block)]), collecting_sink(left.clone(), Duration::from_millis(1), Arc::default())),
        (node("right", &[("source", 32, WhenFull::Block)]), collecting_sink(right.clone(), Duration::ZERO, Arc::default())),
    ];
    start(nodes, CancellationToken::new()).unwrap().wait(Duration::from_secs(5)).await.unwrap();
    let expected: Vec<u64> = (0..800).collect();
    assert_eq!(*left.lock().unwrap(), expected);
    assert_eq!(*right.lock().unwrap(), expected);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_events_in_flight() {
    let sent = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let sent_in_source = sent.clone();
    let source = stage_fn(move |cx| async move {
        let mut next = 0u64;
        // A source stops taking new work on the signal; what it sent stays.
        while !cx.shutdown.is_cancelled() {
            let batch: Batch = (next..next + 10).collect();
            next += 10;
            cx.output.send(batch).await?;
            sent_in_source.fetch_add(10, Ordering::Relaxed);
        }
        Ok(())
    });
    let relay = stage_fn(|mut cx: pipeline::StageContext<Batch>| async move {
        while let Some(batch) = cx.input.recv().await {
            cx.output.send(batch).await?;
        }
        Ok(())
    });
    let received_in_sink = received.clone();
    let sink = stage_fn(move |mut cx: pipeline::StageContext<Batch>| async move {
        while let Some(batch) = cx.input.recv().await {
            tokio::time::sleep(Duration::from_millis(1)).await;
            received_in_sink.fetch_add(batch.len(), Ordering::Relaxed);
        }
        Ok(())
    });
    let nodes = vec![
        (node("source", &[]), source),
        (node("relay", &[("source", 100, WhenFull::Block)]), relay),
        (node("sink", &[("relay", 100, WhenFull::Block)]), sink),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    shutdown.cancel();
    let in_flight = sent.load(Ordering::Relaxed) - received.load(Ordering::Relaxed);
    running.wait(Duration::from_secs(10)).await.unwrap();
    assert!(in_flight > 0, "nothing was in flight at the signal: the test proves nothing");
    assert_eq!(received.load(Ordering::Relaxed), sent.load(Ordering::Relaxed));
}

#[tokio::test(start_paused = true)]
async fn deadline_names_the_stages_that_did_not_drain() {
    let nodes = vec![
        (
            node("source", &[]),
            stage_fn(|cx: pipeline::StageContext<Batch>| async move {
                cx.shutdown.cancelled().await;
                Ok(())
            }),
        ),
        (node("stuck", &[("source", 10, WhenFull::Block)]), stage_fn(|_cx: pipeline::StageContext<Batch>| std::future::pending())),
    ];
    let shutdown = CancellationToken::new();
    let running = start(nodes, shutdown.clone()).unwrap();
    shutdown.cancel();
    match running.wait(Duration::from_secs(3)).await {
        Err(RunError::DeadlineExceeded { still_running, timeout }) => {
            assert_eq!(still_running, vec!["stuck".to_owned()]);
            assert_eq!(timeout, Duration::from_secs(3));
        }
        other => panic!("expected a deadline error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_stage_stops_the_sources_and_fails_the_run() {
    let source = stage_fn(|cx: pipeline::StageContext<Batch>| async move {
        loop {
            tokio::select! {
                () = cx.shutdown.cancelled() => return Ok(()),
                sent = cx.output.send(vec![1]) => if sent.is_err() { return Ok(()) },
            }
        }
    });
    let failing = stage_fn(|mut cx: pipeline::StageContext<Batch>| async move {
        cx.input.recv().await;
        Err("disk on fire".into())
    });
    let nodes = vec![(node("source", &[]), source), (node("failing", &[("source", 10, WhenFull::Block)]), failing)];
    let shutdown = CancellationToken::new();
    let outcome = start(nodes, shutdown.clone()).unwrap().wait(Duration::from_secs(5)).await;
    match outcome {
        Err(RunError::StagesFailed(failures)) => assert_eq!(failures, vec![("failing".to_owned(), "disk on fire".to_owned())]),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(shutdown.is_cancelled());
}

#[test]
fn wiring_errors_name_the_nodes() {
    let nodes: Vec<pipeline::RunnableNode<Batch>> =
        vec![(node("sink", &[("ghost", 1, WhenFull::Block)]), stage_fn(|_cx| async { Ok(()) }))];
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let _guard = runtime.enter();
    let error = start(nodes, CancellationToken::new()).err().map(|error| error.to_string());
    assert_eq!(error.as_deref(), Some("node `sink` reads from `ghost`, which is not a node of this pipeline"));
}
