//! The Python SDK as an interop peer: the interpreter from `RSTREAM_PYTHON`,
//! the scripts in `tests/interop/`, and the two ways the tests talk to them
//! (one JSON batch over stdin/stdout, or a long-running process that writes
//! one JSON event per line).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Variables through which the environment could redirect the Python SDK;
/// every peer runs without them.
const SDK_ENV: &[&str] = &[
    "RSTREAM_ENGINE",
    "RSTREAM_ENGINE_ADDRESS",
    "RSTREAM_AUTHENTICATION_TOKEN",
    "RSTREAM_CONFIG",
    "RSTREAM_CONTEXT",
    "RSTREAM_TUNNEL_TRANSPORT",
    "RSTREAM_QUIC_TRANSPORT",
    "RSTREAM_MTLS_CERT_FILE",
    "RSTREAM_MTLS_KEY_FILE",
];

/// The interpreter named by `RSTREAM_PYTHON`, or `None` when the run opted
/// out with `RSTREAM_SKIP_PYTHON_INTEROP=1` (said loudly, naming `what`, on
/// the real stderr). Panics when neither is set, so interop cannot be
/// skipped by accident.
pub fn interpreter(what: &str) -> Option<PathBuf> {
    match std::env::var_os("RSTREAM_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var("RSTREAM_SKIP_PYTHON_INTEROP").as_deref() == Ok("1") => {
            // Straight to the real stderr (not `eprintln!`, which the test
            // harness captures) so that the skip cannot go unnoticed.
            let _ = std::io::stderr().write_all(
                format!(
                    "\n!!!!!!!!!! SKIPPING {what}: RSTREAM_SKIP_PYTHON_INTEROP=1 and \
                     RSTREAM_PYTHON is unset. Nothing was checked against the Python SDK. \
                     !!!!!!!!!!\n\n"
                )
                .as_bytes(),
            );
            None
        }
        _ => panic!(
            "RSTREAM_PYTHON is not set. Point it at a Python interpreter that has the \
             rstreamlabs-rstream[api,realtime] SDK installed \
             (`export RSTREAM_PYTHON=$(bash .ci/python-venv.sh)`), or set \
             RSTREAM_SKIP_PYTHON_INTEROP=1 to skip {what} on purpose."
        ),
    }
}

/// `tests/interop/<name>`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// Runs `tests/interop/<name>` once: `requests` as JSON on its stdin, its
/// whole stdout parsed as the answer. Panics with its stderr if it fails.
pub fn run_batch<T: DeserializeOwned>(python: &Path, name: &str, requests: &impl Serialize) -> T {
    let mut child = std::process::Command::new(python)
        .arg(script(name))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let input = serde_json::to_vec(requests).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python driver failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad driver output ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A running peer script: JSON events from its stdout, one per line; its
/// stderr echoed and kept for failure messages. Killed when dropped.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
    what: String,
    limit: Duration,
}

impl Peer {
    /// Runs `tests/interop/<name> <args>`, each wait bounded by `limit`.
    /// Its stdin stays open until [`finish`](Self::finish).
    pub fn spawn(python: &Path, name: &str, args: &[&str], limit: Duration) -> Peer {
        let mut cmd = Command::new(python);
        cmd.arg(script(name))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for var in SDK_ENV {
            cmd.env_remove(var);
        }
        let what = format!("{name} {}", args.join(" "));
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let sink = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = err_pipe.next_line().await {
                eprintln!("[python stderr] {line}");
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Peer {
            stdin: child.stdin.take(),
            lines: BufReader::new(child.stdout.take().expect("stdout")).lines(),
            child,
            stderr,
            what,
            limit,
        }
    }

    /// What the peer wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The next JSON event, or `None` at end of output.
    pub async fn next_event(&mut self) -> Option<Value> {
        let limit = self.limit;
        let line = tokio::time::timeout(limit, self.lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: no output for {limit:?}; stderr:\n{}",
                    self.what,
                    self.stderr()
                )
            })
            .expect("reading the peer's stdout")?;
        eprintln!("[python event] {line}");
        Some(
            serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("{}: not a JSON event ({e}): {line}", self.what)),
        )
    }

    /// The next event, which must be `event`.
    pub async fn expect(&mut self, event: &str) -> Value {
        match self.next_event().await {
            Some(v) if v["event"] == event => v,
            Some(v) => panic!(
                "{}: expected a {event:?} event, got {v}; stderr:\n{}",
                self.what,
                self.stderr()
            ),
            None => {
                // Give stderr a moment to be collected for the message.
                tokio::time::sleep(Duration::from_millis(200)).await;
                panic!(
                    "{}: exited before a {event:?} event; stderr:\n{}",
                    self.what,
                    self.stderr()
                )
            }
        }
    }

    /// Closes stdin (the `serve` stop signal), then collects every
    /// remaining event and the exit status.
    pub async fn finish(mut self) -> (std::process::ExitStatus, Vec<Value>) {
        drop(self.stdin.take());
        let mut events = Vec::new();
        while let Some(v) = self.next_event().await {
            events.push(v);
        }
        let limit = self.limit;
        let status = tokio::time::timeout(limit, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{}: did not exit within {limit:?}", self.what))
            .expect("waiting for the peer");
        (status, events)
    }

    /// [`finish`](Self::finish), asserting exit code 0.
    pub async fn finish_ok(self) -> Vec<Value> {
        let stderr = self.stderr.clone();
        let what = self.what.clone();
        let (status, events) = self.finish().await;
        assert!(
            status.success(),
            "{what} failed ({status}); events: {events:?}; stderr:\n{}",
            stderr.lock().unwrap()
        );
        events
    }
}
