use crate::*;

// ---------------------------------------------------------------------------
// Process bookkeeping

/// A child process: its `READY` fields, its stdout lines, its stdin.
pub(crate) struct Proc {
    pub(crate) name: String,
    pub(crate) child: Child,
    pub(crate) stdin: Option<ChildStdin>,
    pub(crate) lines: std_mpsc::Receiver<String>,
    pub(crate) ready: HashMap<String, String>,
    pub(crate) perf: Option<Child>,
}

impl Proc {
    pub(crate) fn spawn(name: &str, mut cmd: Command) -> Result<Proc, BoxError> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("starting {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = Proc {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            ready: HashMap::new(),
            perf: None,
        };
        let line = p.wait_line("READY", READY_TIMEOUT)?;
        p.ready = line
            .split_whitespace()
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(p)
    }

    pub(crate) fn self_child(
        exe: &Path,
        name: &str,
        kind: &str,
        extra: &[(&str, &str)],
    ) -> Result<Proc, BoxError> {
        let mut cmd = Command::new(exe);
        cmd.arg("--child").arg(kind);
        for (k, v) in extra {
            cmd.arg(format!("--{k}")).arg(v);
        }
        Proc::spawn(name, cmd)
    }

    pub(crate) fn wait_line(
        &mut self,
        prefix: &str,
        timeout: Duration,
    ) -> Result<String, BoxError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return Ok(line),
                Ok(_) => {}
                Err(_) => {
                    return Err(
                        format!("{}: no {prefix} line within {timeout:?}", self.name).into(),
                    )
                }
            }
        }
    }

    pub(crate) fn field(&self, key: &str) -> Result<&str, BoxError> {
        self.ready
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("{}: READY has no {key}", self.name).into())
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn cpu(&self) -> f64 {
        cpu_seconds(self.pid()).unwrap_or(f64::NAN)
    }

    pub(crate) fn status_kib(&self, key: &str) -> u64 {
        status_kib(self.pid(), key).unwrap_or(0)
    }

    /// Sends `line` to the child and waits for its answer (the next line
    /// starting with `prefix`).
    pub(crate) fn command(
        &mut self,
        line: &str,
        prefix: &str,
        timeout: Duration,
    ) -> Result<String, BoxError> {
        let stdin = self.stdin.as_mut().ok_or("no stdin")?;
        stdin.write_all(format!("{line}\n").as_bytes())?;
        stdin.flush()?;
        self.wait_line(prefix, timeout)
    }

    /// Asks the child for its counters (`STATS k=v ...`).
    pub(crate) fn stats(&mut self) -> HashMap<String, u64> {
        let Some(stdin) = self.stdin.as_mut() else {
            return HashMap::new();
        };
        if stdin
            .write_all(b"stats\n")
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return HashMap::new();
        }
        match self.wait_line("STATS", Duration::from_secs(5)) {
            Ok(line) => line
                .split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }

    pub(crate) fn start_perf(&mut self, dir: &Path, tag: &str) {
        self.perf = perf_record(self.pid(), dir, tag);
    }

    pub(crate) fn stop_perf(&mut self) {
        perf_stop(&mut self.perf);
    }
}

/// `perf record` of process `pid` into `dir/<tag>.perf.data`.
pub(crate) fn perf_record(pid: u32, dir: &Path, tag: &str) -> Option<Child> {
    let out = dir.join(format!("{tag}.perf.data"));
    let perf = Command::new("perf")
        .args([
            "record",
            "-F",
            "1999",
            "-g",
            "--call-graph",
            "dwarf,16384",
            "-o",
        ])
        .arg(&out)
        .arg("-p")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match perf {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("perf not started ({e})");
            None
        }
    }
}

pub(crate) fn perf_stop(perf: &mut Option<Child>) {
    if let Some(mut perf) = perf.take() {
        // SIGINT makes perf write its file; `kill -INT <its pid>`.
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(perf.id().to_string())
            .status();
        wait_bounded(&mut perf, Duration::from_secs(60));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop_perf();
        // EOF on stdin ends the child; kill it if it lingers.
        drop(self.stdin.take());
        wait_bounded(&mut self.child, Duration::from_secs(10));
    }
}

pub(crate) fn wait_bounded(child: &mut Child, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub(crate) fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process (all its threads, dead ones included), in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of proc(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

pub(crate) fn self_cpu() -> f64 {
    cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
}

/// A `VmRSS`/`VmHWM`-style line of `/proc/<pid>/status`, in KiB.
pub(crate) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}
