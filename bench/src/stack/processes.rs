//! The processes of a stack run, each on a free loopback port, killed when
//! dropped (also when the run fails or is interrupted): Redis, the tansu
//! broker, the HBase-compatible server, and histflow's roles.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// A free loopback port (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A child process, killed on drop.
pub struct Owned {
    /// What it is, for messages.
    pub name: String,
    child: Child,
}

impl Owned {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then waits up to `timeout` (SIGKILL after).
    pub fn stop(&mut self, timeout: Duration) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Fails when the process has already exited.
    pub fn check_alive(&mut self, log: &Path) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            anyhow::bail!(
                "{} exited ({status}); last lines of {}:\n{}",
                self.name,
                log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `command` with its output in `log`, and waits until `port`
/// accepts connections.
pub fn start(name: &str, mut command: Command, port: u16, log: &Path) -> anyhow::Result<Owned> {
    let file = std::fs::File::create(log)?;
    let child =
        command.stdout(Stdio::from(file.try_clone()?)).stderr(Stdio::from(file)).spawn().with_context(|| {
            format!("cannot start {name} ({command:?}); is it installed? scripts/test.sh installs redis-server and tansu")
        })?;
    let mut owned = Owned { name: name.to_owned(), child };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        owned.check_alive(log)?;
        anyhow::ensure!(Instant::now() < deadline, "{name} did not listen on port {port} within 30 s (log: {})", log.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(owned)
}

/// The histflow binary: `--histflow`, or the one built beside this bench
/// (built first with cargo when this bench runs under cargo).
pub fn histflow_binary(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path.to_owned());
    }
    let beside = std::env::current_exe()?.with_file_name("histflow");
    if let Ok(cargo) = std::env::var("CARGO") {
        // Under `cargo run -p bench`, only the bench is built: build the
        // pipeline too (a no-op when it is up to date).
        let release = beside.parent().and_then(Path::file_name).is_some_and(|dir| dir == "release");
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "-p", "histflow", "--bin", "histflow"]);
        if release {
            build.arg("--release");
        }
        let status = build.status().context("cannot run cargo to build histflow")?;
        anyhow::ensure!(status.success(), "building histflow failed");
    }
    anyhow::ensure!(beside.exists(), "no histflow binary at {}; build it (cargo build --release) or pass --histflow", beside.display());
    Ok(beside)
}

/// Where the processes of one stack listen.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Redis.
    pub redis: u16,
    /// The tansu broker.
    pub kafka: u16,
    /// The HBase-compatible server.
    pub hbase: u16,
    /// The service's HTTP API.
    pub http: u16,
    /// The service's gRPC API.
    pub grpc: u16,
}

impl Ports {
    /// Free ports for every process.
    pub fn free() -> anyhow::Result<Self> {
        Ok(Ports { redis: free_port()?, kafka: free_port()?, hbase: free_port()?, http: free_port()?, grpc: free_port()? })
    }
}

/// `histflow run <topology> --role <role>` wired to `ports` through the
/// topology's `${VAR}`s, its admin endpoints on `admin_port`, running in
/// `dir` (its data goes there).
pub fn histflow_run(histflow: &Path, topology: &Path, role: &str, ports: Ports, admin_port: u16, dir: &Path) -> Command {
    let mut command = Command::new(histflow);
    command
        .arg("run")
        .arg(topology)
        .args(["--role", role])
        .env("REDIS_URL", format!("redis://127.0.0.1:{}", ports.redis))
        .env("KAFKA_BROKERS", format!("127.0.0.1:{}", ports.kafka))
        .env("HBASE_THRIFT", format!("127.0.0.1:{}", ports.hbase))
        .env("HTTP_ADDR", format!("127.0.0.1:{}", ports.http))
        .env("GRPC_ADDR", format!("127.0.0.1:{}", ports.grpc))
        .env("ADMIN_ADDR", format!("127.0.0.1:{admin_port}"))
        // BENCH_HISTFLOW_LOG sets their log filter (RUST_LOG's syntax) to
        // look into a run; warnings only by default, so logging costs the
        // figures nothing.
        .env("RUST_LOG", std::env::var("BENCH_HISTFLOW_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .current_dir(dir);
    command
}

/// Starts Redis, tansu (memory storage) and the HBase-compatible server
/// (data in `dir`) on `ports`, as `needs` says.
pub fn start_backends(histflow: &Path, ports: Ports, dir: &Path, redis: bool, kafka: bool, hbase: bool) -> anyhow::Result<Vec<Owned>> {
    let log = |what: &str| dir.join(format!("{what}.log"));
    let mut owned = Vec::new();
    if redis {
        let mut command = Command::new("redis-server");
        command.args(["--bind", "127.0.0.1", "--port", &ports.redis.to_string(), "--save", "", "--appendonly", "no"]);
        owned.push(start("redis-server", command, ports.redis, &log("redis"))?);
    }
    if kafka {
        let url = format!("tcp://127.0.0.1:{}", ports.kafka);
        let mut command = Command::new("tansu");
        command.args(["broker", "--listener-url", &url, "--advertised-listener-url", &url, "--storage-engine", "memory://tansu/"]);
        owned.push(start("tansu", command, ports.kafka, &log("tansu"))?);
    }
    if hbase {
        let mut command = Command::new(histflow);
        command.args(["hbase-compat-server", "--listen", &format!("127.0.0.1:{}", ports.hbase), "--data"]).arg(dir.join("hbase"));
        owned.push(start("hbase-compat-server", command, ports.hbase, &log("hbase"))?);
    }
    Ok(owned)
}

/// Starts a Redis Cluster of `masters` masters (no replicas) on free
/// loopback ports, nodes in `dir`, and waits until it serves every slot;
/// answers the nodes and the seeds as a `redis_url`.
pub fn start_redis_cluster(masters: usize, dir: &Path) -> anyhow::Result<(Vec<Owned>, String)> {
    anyhow::ensure!(masters >= 3, "a Redis Cluster needs at least 3 masters (redis-cli --cluster create)");
    let mut nodes = Vec::new();
    let mut addresses = Vec::new();
    for _ in 0..masters {
        let port = free_port()?;
        let node_dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&node_dir)?;
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&node_dir);
        nodes.push(start("redis-server (cluster)", command, port, &dir.join(format!("redis-{port}.log")))?);
        addresses.push(format!("127.0.0.1:{port}"));
    }
    let created = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .context("cannot run redis-cli")?;
    anyhow::ensure!(created.status.success(), "redis-cli --cluster create failed: {}", String::from_utf8_lossy(&created.stdout));
    let deadline = Instant::now() + Duration::from_secs(30);
    let ok = |address: &String| {
        let port = address.rsplit(':').next().unwrap_or_default();
        Command::new("redis-cli")
            .args(["-p", port, "cluster", "info"])
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("cluster_state:ok"))
    };
    while !addresses.iter().all(ok) {
        anyhow::ensure!(Instant::now() < deadline, "the Redis Cluster was not ok within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = addresses.iter().map(|address| format!("redis://{address}")).collect::<Vec<_>>().join(",");
    Ok((nodes, url))
}

/// Peak resident memory (bytes) and CPU seconds so far of process `pid`,
/// from /proc.
pub fn usage(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let peak_kib: u64 = status.lines().find_map(|line| line.strip_prefix("VmHWM:"))?.split_whitespace().next()?.parse().ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which ends with ')'): utime is the
    // 12th, stime the 13th, in clock ticks.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((peak_kib * 1024, ticks / clock_ticks_per_second()))
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs `scenario` on a multi-threaded runtime until it ends or Ctrl-C
/// (the processes it started stop as they are dropped, either way).
pub fn run_until_interrupted(scenario: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        tokio::select! {
            result = scenario => result,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted; every process this bench started is stopped"),
        }
    })
}

/// Current resident memory of `pid`, from /proc.
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some(kib * 1024)
}

/// What a fault bench starts first: Redis, tansu and the HBase-compatible
/// server on free ports, beside the histflow binary and topology it runs,
/// with every log in one temporary directory.
pub struct BenchStack {
    /// The histflow binary.
    pub histflow: PathBuf,
    /// The topology (absolute).
    pub topology: PathBuf,
    /// Where the processes run and log.
    pub dir: tempfile::TempDir,
    /// Where they listen.
    pub ports: Ports,
    /// Redis, tansu, the compat server (in that order).
    pub backends: Vec<Owned>,
}

impl BenchStack {
    /// Starts the backends for a bench named `name` (the directory's prefix).
    pub fn start(histflow: Option<&Path>, topology: &Path, name: &str) -> anyhow::Result<Self> {
        let histflow = histflow_binary(histflow)?;
        let topology = topology.canonicalize().with_context(|| format!("cannot read {}", topology.display()))?;
        let dir = tempfile::Builder::new().prefix(&format!("histflow-{name}-")).tempdir()?;
        let ports = Ports::free()?;
        let backends = start_backends(&histflow, ports, dir.path(), true, true, true)?;
        Ok(BenchStack { histflow, topology, dir, ports, backends })
    }

    /// `histflow run --role <role>` of this stack, its admin endpoints on
    /// `admin_port`.
    pub fn histflow_run(&self, role: &str, admin_port: u16) -> Command {
        histflow_run(&self.histflow, &self.topology, role, self.ports, admin_port, self.dir.path())
    }
}

/// Waits (at most 30 s) until `base`/readyz answers 200; polls every 20 ms,
/// so a restart's time to ready is measured to that.
pub async fn wait_ready(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !http.get(format!("{base}/readyz")).send().await.is_ok_and(|answer| answer.status() == 200) {
        anyhow::ensure!(Instant::now() < deadline, "{base} not ready within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
