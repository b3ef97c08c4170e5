//! A Redis Cluster owned by a test: masters (and their replicas) on free
//! loopback ports, each node in a directory of its own, joined by
//! `redis-cli --cluster create`, with a short node timeout so a killed
//! master's replica takes over within seconds.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{free_port, missing, owned_command, wait_listening, Owned};

/// How long a node may be unreachable before the cluster fails it over.
const NODE_TIMEOUT_MS: u64 = 2000;

/// A running cluster.
pub struct TestCluster {
    ports: Vec<u16>,
    processes: Vec<Option<Owned>>,
    _dir: tempfile::TempDir,
}

/// `redis-cli -p port <args>`'s output.
fn cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli").arg("-p").arg(port.to_string()).args(args).output();
    output.map(|output| String::from_utf8_lossy(&output.stdout).into_owned()).unwrap_or_default()
}

impl TestCluster {
    /// Starts `masters` masters with `replicas` replicas each and waits
    /// until the cluster serves every slot and every replica follows.
    pub fn start(masters: usize, replicas: usize) -> Self {
        let dir = tempfile::tempdir().expect("cluster dir");
        let ports: Vec<u16> = (0..masters * (1 + replicas)).map(|_| free_port()).collect();
        let mut processes = Vec::new();
        for port in &ports {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node dir");
            let child = owned_command("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--cluster-enabled", "yes"])
                .args(["--cluster-config-file", "nodes.conf", "--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--save", "", "--appendonly", "no", "--dir"])
                .arg(&node_dir)
                .stdout(Stdio::null())
                .spawn()
                .unwrap_or_else(|error| panic!("{}", missing("redis-server (the binary)", "PATH", error)));
            processes.push(Some(Owned(child)));
        }
        for port in &ports {
            wait_listening("a cluster node", *port, Duration::from_secs(10));
        }
        let addresses: Vec<String> = ports.iter().map(|port| format!("127.0.0.1:{port}")).collect();
        let created = std::process::Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|error| panic!("{}", missing("redis-cli", "PATH", error)));
        assert!(created.status.success(), "redis-cli --cluster create failed:\n{}", String::from_utf8_lossy(&created.stdout));
        let cluster = TestCluster { ports, processes, _dir: dir };
        cluster.wait_healthy(masters * replicas, Duration::from_secs(30));
        cluster
    }

    /// The seed nodes, comma-separated: a `redis_url` for the cluster.
    pub fn url(&self) -> String {
        self.ports.iter().map(|port| format!("redis://127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// The ports of the nodes still running.
    fn running(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().zip(&self.processes).filter(|(_, process)| process.is_some()).map(|(port, _)| *port)
    }

    /// Waits until every running node says the cluster is ok, no failed
    /// node serves a slot any more, and `replicas` replicas are in sync
    /// with their masters (a replica that never synced cannot take over).
    pub fn wait_healthy(&self, replicas: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let synced = self.running().filter(|port| cli(*port, &["info", "replication"]).contains("master_link_status:up")).count();
            let healthy = synced >= replicas
                && self.running().all(|port| {
                    let failed_serving = cli(port, &["cluster", "nodes"]).lines().any(|line| {
                        let fields: Vec<&str> = line.split_whitespace().collect();
                        fields.len() > 8 && fields[2].contains("fail")
                    });
                    cli(port, &["cluster", "info"]).contains("cluster_state:ok") && !failed_serving
                });
            if healthy {
                return;
            }
            assert!(Instant::now() < deadline, "the cluster was not healthy within {within:?}:\n{}", self.describe());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// What a running node says of the cluster (for failure messages).
    pub fn describe(&self) -> String {
        self.running().next().map(|port| cli(port, &["cluster", "nodes"])).unwrap_or_default()
    }

    /// Waits until a node marks the node on `port` as failed (its replica
    /// then takes its slots over).
    pub fn wait_failed(&self, port: u16, within: Duration) {
        let deadline = Instant::now() + within;
        let address = format!("127.0.0.1:{port}@");
        while !self
            .running()
            .any(|node| cli(node, &["cluster", "nodes"]).lines().any(|line| line.contains(&address) && line.contains("fail")))
        {
            assert!(Instant::now() < deadline, "node {port} was not marked failed within {within:?}:\n{}", self.describe());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The port of the master serving `slot`, as a running node sees it.
    pub fn master_of(&self, slot: u16) -> u16 {
        let port = self.running().next().expect("a running node");
        for line in cli(port, &["cluster", "nodes"]).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| match range.split_once('-') {
                Some((from, to)) => from.parse::<u16>().is_ok_and(|from| from <= slot) && to.parse::<u16>().is_ok_and(|to| slot <= to),
                None => range.parse::<u16>() == Ok(slot),
            });
            if serves {
                let address = fields[1].split('@').next().unwrap_or_default();
                return address.rsplit(':').next().and_then(|port| port.parse().ok()).expect("a node port");
            }
        }
        panic!("no master serves slot {slot}")
    }

    /// SIGKILLs the node on `port`.
    pub fn kill(&mut self, port: u16) {
        let index = self.ports.iter().position(|known| *known == port).expect("a node of this cluster");
        self.processes[index] = None;
    }
}
