//! Running the real `autoj` binary in tests: a server child process that is killed on drop.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The binary under test.
pub fn autoj() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoj"))
}

/// A running `autoj serve` (or `judge`), killed when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `autoj serve --listen 127.0.0.1:0 --model MODEL` and waits (bounded) for its
    /// `listening on ADDR` line.
    pub fn start(model: &Path, extra: &[&str]) -> Self {
        let mut child = autoj()
            .args(["serve", "--listen", "127.0.0.1:0", "--model"])
            .arg(model)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn autoj serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("server printed its address within 120 s");
        Self {
            child,
            addr: format!("http://{addr}"),
        }
    }
}

/// Runs a command to completion and returns its output, failing on spawn errors.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run command")
}
