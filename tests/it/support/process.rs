//! The real `cognie-sync` binary as a child process, for tests that kill it (SIGKILL), stop it
//! (SIGTERM) or run several of it against one database.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

/// A running `cognie-sync` process.
pub struct ServiceProcess {
    child: Child,
    /// The HTTP address, for the `serve` and `api` roles.
    pub addr: Option<SocketAddr>,
    /// Every log line so far (JSON), for assertions.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ServiceProcess {
    /// Starts `cognie-sync <role>` with `settings` as its whole environment (plus PATH), and
    /// waits until it serves HTTP (or, for `worker`, until its worker has started).
    pub fn start(role: &str, settings: &HashMap<&'static str, String>) -> Self {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_cognie-sync")), role, settings, None)
    }

    /// Like [`ServiceProcess::start`], in the working directory `dir` (where `./data` is).
    pub fn start_in(role: &str, settings: &HashMap<&'static str, String>, dir: Option<&Path>) -> Self {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_cognie-sync")), role, settings, dir)
    }

    /// Like [`Self::start`], with another build of the binary (the chaos run uses the release
    /// one), in the working directory `dir` if given.
    pub fn start_binary(
        binary: &Path,
        role: &str,
        settings: &HashMap<&'static str, String>,
        dir: Option<&Path>,
    ) -> Self {
        let mut command = Command::new(binary);
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        command
            .arg(role)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in settings {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start cognie-sync");
        let stdout = child.stdout.take().expect("stdout");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<Option<SocketAddr>>();
        let lines = log.clone();
        let wants_http = role != "worker";
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(tx) = ready.as_ref() {
                    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    let message = parsed["message"].as_str().unwrap_or("");
                    if wants_http && message.starts_with("HTTP API listening") {
                        let addr = parsed["addr"].as_str().and_then(|a| a.parse().ok());
                        let _ = tx.send(addr);
                        ready = None;
                    } else if !wants_http && message == "step worker started" {
                        let _ = tx.send(None);
                        ready = None;
                    }
                }
                lines.lock().expect("log lock").push(line);
            }
        });
        let Ok(addr) = ready_rx.recv_timeout(Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cognie-sync {role} did not start; log: {:?}", log.lock().map(|l| l.clone()));
        };
        Self { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr.expect("this process serves HTTP"))
    }

    /// SIGKILL: no cleanup, no goodbye.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the exit. Returns whether it exited successfully in time.
    pub fn terminate(mut self, within: Duration) -> bool {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        false
    }

    /// A URL on the ops endpoints' address (`OPS_BIND_ADDR`), as the process logged it.
    pub fn ops_url(&self, path: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let logged = self.log.lock().expect("log lock").iter().find_map(|line| {
                let parsed: serde_json::Value = serde_json::from_str(line).ok()?;
                parsed["message"].as_str()?.starts_with("ops endpoints listening").then_some(())?;
                parsed["addr"].as_str()?.parse::<SocketAddr>().ok()
            });
            if let Some(addr) = logged {
                return format!("http://{addr}{path}");
            }
            assert!(std::time::Instant::now() < deadline, "the process logged no ops address");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().expect("log lock").iter().any(|l| l.contains(needle))
    }

    /// The JSON log lines logged so far whose message is `message`.
    pub fn log_lines(&self, message: &str) -> Vec<serde_json::Value> {
        self.log
            .lock()
            .expect("log lock")
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["message"] == message)
            .collect()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
