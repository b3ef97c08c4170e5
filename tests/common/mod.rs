//! Helpers shared by the end-to-end tests: where the real services are,
//! processes the tests own (histflow, and Redis or tansu instances a test
//! stops and starts), and reading topics. Missing services fail loudly;
//! nothing is skipped. Every wait has a deadline.

#![allow(dead_code)]

pub mod cluster;
pub mod load;
pub mod trace;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::ClientConfig;

/// The Redis the tests use: `REDIS_URL`, as exported by scripts/test.sh.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// The Kafka-protocol brokers the tests use: `KAFKA_BROKERS`.
/// A connection for a test's own Redis commands: to one Redis, or to a
/// cluster when `url` lists its seed nodes (commands and single-slot
/// pipelines only; a cluster refuses a pipeline across slots).
pub async fn redis_connection(url: &str) -> backends::user_state::Link {
    let mut link = backends::user_state::Link::connect_lazy(url, false).unwrap_or_else(|error| panic!("{}", missing("Redis", url, error)));
    let ping = tokio::time::timeout(Duration::from_secs(5), redis::cmd("PING").query_async::<String>(&mut link)).await;
    match ping {
        Ok(Ok(_)) => link,
        Ok(Err(error)) => panic!("{}", missing("Redis", url, error)),
        Err(_) => panic!("{}", missing("Redis", url, "no answer in 5 s")),
    }
}

pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// The message for a missing service: how to get one.
pub fn missing(service: &str, address: &str, error: impl std::fmt::Display) -> String {
    format!("{service} is not reachable at {address} ({error}). These tests need the real service: run them through scripts/test.sh, which installs and starts Redis and the tansu broker.")
}

/// The `histflow` binary built for these tests.
pub fn histflow() -> Command {
    owned_command(env!("CARGO_BIN_EXE_histflow"))
}

/// A command for `program` that the kernel kills if the test process dies
/// first (`setpriv --pdeathsig KILL`, util-linux; a plain command where
/// setpriv is missing): a test binary killed mid-run must leave no service
/// behind, since a stray service re-drives other runs' marks from the
/// same Redis database into its own topic.
pub fn owned_command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    static SETPRIV: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let available = *SETPRIV.get_or_init(|| {
        Command::new("setpriv").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|status| status.success())
    });
    if !available {
        return Command::new(program);
    }
    let mut command = Command::new("setpriv");
    command.args(["--pdeathsig", "KILL", "--"]).arg(program);
    command
}

/// The repository root (where topology.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file in a fresh temporary directory, holding `text`.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write temporary file");
    (dir, path)
}

/// stdout and stderr of a finished command, as text.
pub fn texts(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// A loopback port nobody listens on now.
///
/// Never the same port twice in one test process: the kernel may hand a
/// port out again once its probe listener is closed, and two listeners of
/// one service (`listen` and `grpc_listen`) given the same port refuse
/// the topology.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<std::collections::BTreeSet<u16>> = std::sync::Mutex::new(std::collections::BTreeSet::new());
    loop {
        let port =
            TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).map(|addr| addr.port()).expect("a free port");
        if GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(port) {
            return port;
        }
    }
}

/// A name no other test run uses (topics, groups).
pub fn unique(prefix: &str) -> String {
    static TAKEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let count = TAKEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{nanos}-{count}", std::process::id())
}

/// A uid range no other test run uses on the shared Redis.
pub fn unique_uid_base() -> u64 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    // Leaves room for a million users per test above the base.
    ((nanos as u64) % 1_000_000_000_000 + 1) * 1_000_000
}

/// Polls `check` until it returns `Some`, or panics naming `what` after
/// `timeout`.
pub async fn eventually<T>(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends a signal to a process by pid with the `kill` command.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A child process killed when dropped.
pub struct Owned(pub Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server owned by a test (so it can stop and restart it), with
/// append-only persistence in its own directory.
pub struct TestRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    process: Option<Owned>,
    /// `appendfsync`: `always` or `everysec`.
    fsync: &'static str,
}

impl TestRedis {
    pub fn start() -> Self {
        Self::start_with_fsync("always")
    }

    /// Starts it with `appendfsync` = `fsync` (`always`, `everysec`).
    pub fn start_with_fsync(fsync: &'static str) -> Self {
        let mut redis = TestRedis { port: free_port(), dir: tempfile::tempdir().expect("redis dir"), process: None, fsync };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and directory.
    pub fn restart(&mut self) {
        let child = owned_command("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{}", missing("redis-server (the binary)", "PATH", error)));
        self.process = Some(Owned(child));
        wait_listening("redis-server", self.port, Duration::from_secs(10));
    }

    /// Stops it (SIGTERM: Redis writes its append-only file and exits).
    pub fn stop(&mut self) {
        if let Some(mut owned) = self.process.take() {
            signal(owned.0.id(), "TERM");
            let _ = owned.0.wait();
        }
    }
}

/// A tansu broker owned by a test (so it can pause, stop and restart it),
/// in memory or on SQLite in a directory of its own.
pub struct TestTansu {
    pub port: u16,
    process: Option<Owned>,
    /// The SQLite storage's directory; `None`: memory.
    storage: Option<tempfile::TempDir>,
}

impl TestTansu {
    /// A broker keeping everything in memory.
    pub fn start() -> Self {
        let mut tansu = TestTansu { port: free_port(), process: None, storage: None };
        tansu.restart();
        tansu
    }

    /// A broker keeping its topics in SQLite, so they outlive a restart.
    pub fn start_sqlite() -> Self {
        let mut tansu = TestTansu { port: free_port(), process: None, storage: Some(tempfile::tempdir().expect("tansu dir")) };
        tansu.restart();
        tansu
    }

    /// Starts it (again) on the same port and storage.
    pub fn restart(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let mut command = owned_command("tansu");
        command.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine"]);
        match &self.storage {
            // tansu opens a sqlite:// path relative to its directory.
            Some(dir) => command.arg("sqlite://tansu.db").current_dir(dir.path()),
            None => command.arg("memory://tansu/"),
        };
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("{}", missing("tansu (the binary)", "PATH", error)));
        self.process = Some(Owned(child));
        wait_listening("tansu", self.port, Duration::from_secs(30));
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        drop(self.process.take());
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        if let Some(process) = &self.process {
            signal(process.0.id(), "STOP");
        }
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        if let Some(process) = &self.process {
            signal(process.0.id(), "CONT");
        }
    }
}

/// Waits (blocking) until `what` listens on `port`; panics after `within`.
pub fn wait_listening(what: &str, port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while !tcp_open(port) {
        assert!(Instant::now() < deadline, "{what} did not listen on {port} within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn tcp_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

/// A running `histflow run` with its own topology file and HTTP port.
pub struct Histflow {
    pub http: u16,
    pub base: String,
    process: Option<Owned>,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Histflow {
    /// Starts `histflow run <topology> <args>` and waits until `/readyz`
    /// answers 200 on `http`.
    pub async fn start(topology: &str, http: u16, args: &[&str]) -> Self {
        Self::start_with_env(topology, http, args, &[]).await
    }

    /// As [`Histflow::start`], with extra environment variables.
    pub async fn start_with_env(topology: &str, http: u16, args: &[&str], env: &[(&str, &str)]) -> Self {
        let (dir, path) = temp_file("topology.toml", topology);
        let log = dir.path().join("histflow.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let child = histflow()
            .arg("run")
            .arg(&path)
            .args(args)
            // HISTFLOW_TEST_RUST_LOG sets the log filter (RUST_LOG's syntax)
            // of every histflow a test starts, to look into a failure
            // (`info,librdkafka=debug`, say); a failing test prints the log.
            .env("RUST_LOG", std::env::var("HISTFLOW_TEST_RUST_LOG").unwrap_or_else(|_| "info".to_owned()))
            // Topologies that read GRPC_ADDR (the shipped one) get a port
            // of their own, so tests can run side by side.
            .env("GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start histflow");
        let mut running = Histflow { http, base: format!("http://127.0.0.1:{http}"), process: Some(Owned(child)), _dir: dir, log };
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", running.base);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(response) = client.get(&url).send().await {
                if response.status() == 200 {
                    break;
                }
            }
            if let Some(Owned(child)) = &mut running.process {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("histflow exited ({status}) before it was ready:\n{}", running.log_text());
                }
            }
            assert!(Instant::now() < deadline, "histflow not ready within 20 s:\n{}", running.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        running
    }

    /// The topology file it runs (rewrite it, then reload).
    pub fn topology_path(&self) -> PathBuf {
        self._dir.path().join("topology.toml")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|owned| owned.0.id())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|owned| matches!(owned.0.try_wait(), Ok(None)))
    }

    /// SIGKILL: no drain, no final commit.
    pub fn kill(&mut self) {
        if let Some(mut owned) = self.process.take() {
            let _ = owned.0.kill();
            let _ = owned.0.wait();
        }
    }

    /// SIGTERM, then waits (at most `timeout`) for the exit code.
    pub fn stop(&mut self, timeout: Duration) -> Option<i32> {
        signal(self.pid()?, "TERM");
        self.wait_exit(timeout)
    }

    /// Waits (at most `timeout`) for the exit code of a process already
    /// told to stop.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let mut owned = self.process.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = owned.0.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "histflow did not exit within {timeout:?} of its stop:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Histflow {
    fn drop(&mut self) {
        if let Some(Owned(child)) = &mut self.process {
            signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A metric of a running process, summed over its labels (`None`: the
/// process does not answer, or has no such metric).
pub async fn metric(process: &Histflow, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", process.base)).await.ok()?.text().await.ok()?;
    ingest_http::admin::stats::Exposition::parse(&text).sum(name, &[])
}

/// Starts one role of a topology whose `admin_listen` is `${ADMIN_ADDR}`.
/// The service is polled for readiness on its ingest port `http`; the job
/// (no ingest) on its admin address.
pub async fn start_role(topology: &str, role: &str, http: Option<u16>) -> Histflow {
    let admin = free_port();
    let admin_addr = format!("127.0.0.1:{admin}");
    Histflow::start_with_env(topology, http.unwrap_or(admin), &["--role", role], &[("ADMIN_ADDR", admin_addr.as_str())]).await
}

/// Creates `topic` with `partitions` partitions.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &options)
        .await
        .unwrap_or_else(|error| panic!("{}", missing("the Kafka broker", brokers, error)));
    for result in results {
        // The name is this test's own: "already exists" means an attempt
        // the client retried had made it.
        if let Err((name, code)) = result {
            assert_eq!(code, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists, "creating topic {name}: {code}");
        }
    }
}

/// A consumer of `topic` from its beginning, in a group of its own.
pub fn consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("histflow-test-reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// Reads messages, handing each to `take`, until `take` says it has seen
/// enough (returns true) or `timeout` passes (panics naming `what`).
pub async fn read_until(consumer: &StreamConsumer, what: &str, timeout: Duration, mut take: impl FnMut(&BorrowedMessage<'_>) -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("timed out after {timeout:?} reading {what}"))
            .expect("consume");
        if take(&message) {
            return;
        }
    }
}

/// The payload of a message (empty when none).
pub fn payload<'a>(message: &'a BorrowedMessage<'_>) -> &'a [u8] {
    message.payload().unwrap_or_default()
}

/// A Thrift1 client of the HBase-compatible server (binary protocol,
/// buffered transport).
pub type HbaseClient = hbase_thrift::hbase::HbaseSyncClient<
    thrift::protocol::TBinaryInputProtocol<
        thrift::transport::TBufferedReadTransport<thrift::transport::ReadHalf<thrift::transport::TTcpChannel>>,
    >,
    thrift::protocol::TBinaryOutputProtocol<
        thrift::transport::TBufferedWriteTransport<thrift::transport::WriteHalf<thrift::transport::TTcpChannel>>,
    >,
>;

/// A `histflow hbase-compat-server` owned by a test, on its own port and
/// data directory, which it can kill and restart.
pub struct TestCompat {
    pub port: u16,
    pub data: tempfile::TempDir,
    process: Option<Owned>,
    /// Further arguments of `hbase-compat-server`.
    args: Vec<String>,
}

impl TestCompat {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts it with further arguments (`--idle-timeout-s 1`, say).
    pub fn start_with(args: &[&str]) -> Self {
        let args = args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut server = TestCompat { port: free_port(), data: tempfile::tempdir().expect("compat data dir"), process: None, args };
        server.restart();
        server
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn restart(&mut self) {
        let child = histflow()
            .args(["hbase-compat-server", "--listen", &self.address(), "--data"])
            .arg(self.data.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start hbase-compat-server");
        self.process = Some(Owned(child));
        wait_listening("hbase-compat-server", self.port, Duration::from_secs(10));
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut owned) = self.process.take() {
            owned.0.kill().expect("kill compat server");
            owned.0.wait().expect("reap compat server");
        }
    }

    pub fn client(&self) -> HbaseClient {
        use thrift::transport::TIoChannel;
        let mut channel = thrift::transport::TTcpChannel::new();
        channel.open(self.address()).expect("connect to the compat server");
        let (read, write) = channel.split().expect("split channel");
        hbase_thrift::hbase::HbaseSyncClient::new(
            thrift::protocol::TBinaryInputProtocol::new(thrift::transport::TBufferedReadTransport::new(read), true),
            thrift::protocol::TBinaryOutputProtocol::new(thrift::transport::TBufferedWriteTransport::new(write), true),
        )
    }

    /// Every visible cell of `table`: (row, column) -> (timestamp, value);
    /// empty when the table does not exist yet.
    pub fn snapshot(&self, table: &str) -> std::collections::BTreeMap<(String, String), (i64, Vec<u8>)> {
        use hbase_thrift::hbase::THbaseSyncClient;
        let mut client = self.client();
        let mut cells = std::collections::BTreeMap::new();
        if !client.get_table_names().expect("table names").contains(&table.as_bytes().to_vec()) {
            return cells;
        }
        let scanner = client.scanner_open(table.as_bytes().to_vec(), Vec::new(), Vec::new(), Default::default()).expect("open scanner");
        loop {
            let rows = client.scanner_get_list(scanner, 500).expect("scan");
            if rows.is_empty() {
                break;
            }
            for row in rows {
                let key = String::from_utf8_lossy(&row.row.unwrap_or_default()).into_owned();
                for (column, cell) in row.columns.unwrap_or_default() {
                    cells.insert(
                        (key.clone(), String::from_utf8_lossy(&column).into_owned()),
                        (cell.timestamp.unwrap_or_default(), cell.value.unwrap_or_default()),
                    );
                }
            }
        }
        client.scanner_close(scanner).expect("close scanner");
        cells
    }
}

/// Produces one message (key, payload) to `topic` and waits for delivery.
pub async fn produce(brokers: &str, topic: &str, key: &str, payload: &[u8]) {
    let producer: rdkafka::producer::FutureProducer = ClientConfig::new().set("bootstrap.servers", brokers).create().expect("producer");
    producer
        .send(rdkafka::producer::FutureRecord::to(topic).key(key).payload(payload), Duration::from_secs(10))
        .await
        .unwrap_or_else(|(error, _)| panic!("{}", missing("the Kafka broker", brokers, error)));
}

/// The offsets `group` has committed on partitions 0..`partitions` of
/// `topic` (-1001 where none), read without joining the group.
pub fn committed(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: rdkafka::consumer::BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", group).create().expect("consumer");
    let mut wanted = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        wanted.add_partition(topic, partition);
    }
    let offsets = consumer.committed_offsets(wanted, Duration::from_secs(10)).expect("committed offsets");
    offsets.elements().iter().map(|element| element.offset().to_raw().unwrap_or(-1001)).collect()
}

/// Waits (at most 60 s) until every acknowledged (uid, item) is in the
/// history table with its view_at; panics naming how many are not.
pub async fn all_durable(compat: &TestCompat, acknowledged: &std::collections::BTreeMap<(u64, String), i64>) {
    if let Err(problem) = until_durable(compat, acknowledged).await {
        panic!("{problem}");
    }
}

/// Acknowledged items the history table still lacked at the deadline.
#[derive(Debug)]
pub struct NotDurable {
    /// The (uid, item) pairs missing (or there with another view_at).
    pub missing: Vec<(u64, String)>,
    /// Acknowledged in all.
    pub acknowledged: usize,
}

impl std::fmt::Display for NotDurable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} acknowledged items never reached the history table within 60 s, e.g. {:?}",
            self.missing.len(),
            self.acknowledged,
            &self.missing[..self.missing.len().min(3)]
        )
    }
}

/// As [`all_durable`], answering what is missing instead of panicking (so
/// a caller can add the processes' logs and [`trace::missing`]).
pub async fn until_durable(compat: &TestCompat, acknowledged: &std::collections::BTreeMap<(u64, String), i64>) -> Result<(), NotDurable> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let snapshot = compat.snapshot("history");
        let missing: Vec<(u64, String)> = acknowledged
            .iter()
            .filter(|((uid, item), view_at)| {
                snapshot
                    .get(&(model::keys::hbase_row(*uid), format!("r:{item}")))
                    .and_then(|(_, value)| model::codec::decode_record(value).ok())
                    .is_none_or(|record| record.view_at != **view_at)
            })
            .map(|(key, _)| key.clone())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NotDurable { missing, acknowledged: acknowledged.len() });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A whole-stack topology (service and job roles) for the end-to-end
/// tests; its fields are what the tests vary.
pub struct StackTopology<'a> {
    /// The service's ingest port.
    pub http: u16,
    /// The history table.
    pub compat: &'a TestCompat,
    /// The realtime stage's Redis URL.
    pub realtime_redis: String,
    /// The job's Redis URL (`ids` re-reads), if it has one.
    pub job_redis: Option<String>,
    /// The brokers.
    pub brokers: String,
    /// The merge topic (and the names of the job's group, its dead-letter
    /// topic and its static member id, made from it).
    pub topic: &'a str,
    /// `ids` or `full`.
    pub payload: &'a str,
    /// The drain's deadline.
    pub shutdown_timeout_ms: u64,
    /// How long ingest waits for a request's realtime write.
    pub request_timeout_ms: u64,
    /// The aggregate's window.
    pub aggregate_flush_ms: u64,
    /// Further lines of the realtime stage.
    pub realtime_extra: String,
    /// Further lines of the ingest stage.
    pub ingest_extra: String,
}

impl StackTopology<'_> {
    /// The topology's text; `admin_listen` is `${ADMIN_ADDR}` (see
    /// [`start_role`]).
    pub fn render(&self) -> String {
        let StackTopology { http, compat, realtime_redis, job_redis, brokers, topic, payload, .. } = self;
        let job_redis = job_redis.as_ref().map(|url| format!("redis_url = \"{url}\"")).unwrap_or_default();
        format!(
            r#"
[pipeline]
shutdown_timeout_ms = {shutdown}
admin_listen = "${{ADMIN_ADDR}}"

[businesses]
archive = {{ id = 1, retention_days = 1 }}

[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"
request_timeout_ms = {request}
{ingest_extra}

[[stages]]
name = "realtime"
type = "realtime"
inputs = ["ingest"]
redis_url = "{realtime_redis}"
{realtime_extra}

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]
flush_interval_ms = {flush}
flush_max_entries = 100000

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "{brokers}"
topic = "{topic}"
consumer_group = "{topic}-job"
dead_letter_topic = "{topic}-dlq"
consumer_instance_id = "{topic}-job-1"
payload = "{payload}"
partitions = 2

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "{compat}"
{job_redis}
flush_interval_ms = 100
"#,
            shutdown = self.shutdown_timeout_ms,
            request = self.request_timeout_ms,
            realtime_extra = self.realtime_extra,
            ingest_extra = self.ingest_extra,
            flush = self.aggregate_flush_ms,
            compat = compat.address(),
        )
    }
}

/// The whole pipeline for `--embedded` (every backend in process, the
/// history table in `data`): `before_stages` goes before the stages
/// (`[auth]` clients), `ingest_lines` into the ingest stage, which listens
/// on `http`.
pub fn embedded_topology(http: u16, data: &std::path::Path, before_stages: &str, ingest_lines: &str) -> String {
    format!(
        r#"
[businesses]
archive = {{ id = 1, retention_days = 1 }}
{before_stages}
[[stages]]
name = "ingest"
type = "http_ingest"
listen = "127.0.0.1:{http}"
{ingest_lines}

[[stages]]
name = "realtime"
type = "realtime"
inputs = ["ingest"]
redis_url = "redis://unused"

[[stages]]
name = "aggregate"
type = "aggregate"
inputs = ["realtime"]

[[stages]]
name = "kafka_batch"
type = "kafka_batch"
inputs = ["aggregate"]
brokers = "unused:9092"
topic = "merge"
consumer_group = "job"

[[stages]]
name = "persist"
type = "persist"
inputs = ["kafka_batch"]
hbase_thrift = "unused:9090"
embedded_data_dir = "{data}"
"#,
        data = data.display()
    )
}
