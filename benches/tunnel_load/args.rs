use crate::*;

// ---------------------------------------------------------------------------
// Arguments

#[derive(Clone, Debug)]
pub(crate) struct Args {
    pub(crate) quick: bool,
    pub(crate) duration: Duration,
    pub(crate) skip_python: bool,
    pub(crate) rounds: usize,
    pub(crate) legs: Vec<char>,
    pub(crate) dial: bool,
    /// Leg E (`E` in `--legs`): the bytestream through HAProxy too.
    pub(crate) haproxy: bool,
    /// Leg E's published paths (also `E` in `--legs`).
    pub(crate) published: bool,
    pub(crate) idle: bool,
    pub(crate) transfer: u64,
    pub(crate) idle_conns: usize,
    pub(crate) perf: Option<PathBuf>,
    /// Another build of this harness: lowercase legs (and a second dial
    /// run) use its engine and servers, side by side with this build's.
    pub(crate) compare_exe: Option<PathBuf>,
    /// `--scale`: the scaling curves instead of the legs.
    pub(crate) scale_on: bool,
    pub(crate) scale: ScaleArgs,
    pub(crate) child: Option<String>,
    pub(crate) kv: HashMap<String, String>,
}

impl Args {
    pub(crate) fn parse() -> Result<Args, BoxError> {
        let mut args = Args {
            quick: false,
            duration: Duration::from_secs(10),
            skip_python: false,
            rounds: 1,
            legs: vec!['A', 'B', 'C', 'D', 'E'],
            dial: true,
            haproxy: true,
            published: true,
            idle: true,
            transfer: 1 << 30,
            idle_conns: 256,
            perf: None,
            compare_exe: None,
            scale_on: false,
            scale: ScaleArgs::default(),
            child: None,
            kv: HashMap::new(),
        };
        let mut duration_set = false;
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
            match a.as_str() {
                "--quick" => args.quick = true,
                "--duration" => {
                    args.duration = Duration::from_secs_f64(value("--duration")?.parse()?);
                    duration_set = true;
                }
                "--skip-python" => args.skip_python = true,
                "--rounds" => args.rounds = value("--rounds")?.parse::<usize>()?.clamp(1, 20),
                "--legs" => {
                    args.legs = value("--legs")?
                        .chars()
                        .filter(|c| "ABCDEabc".contains(*c))
                        .collect()
                }
                "--compare-exe" => args.compare_exe = Some(PathBuf::from(value("--compare-exe")?)),
                "--no-dial" => args.dial = false,
                "--no-idle" => args.idle = false,
                "--transfer-mib" => args.transfer = value("--transfer-mib")?.parse::<u64>()? << 20,
                "--idle-conns" => {
                    args.idle_conns = value("--idle-conns")?.parse::<usize>()?.clamp(1, 4096)
                }
                "--scale" => args.scale_on = true,
                "--scale-curves" => {
                    args.scale.curves = value("--scale-curves")?
                        .split(',')
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .collect()
                }
                "--scale-conns" => {
                    args.scale.conns = parse_sizes(&value("--scale-conns")?, 16_384)?
                }
                "--scale-idle" => args.scale.idle = parse_sizes(&value("--scale-idle")?, 100_000)?,
                "--scale-tunnels" => {
                    args.scale.tunnels = parse_sizes(&value("--scale-tunnels")?, 4_000)?
                }
                "--scale-clients" => {
                    args.scale.clients = parse_sizes(&value("--scale-clients")?, 4_000)?
                }
                "--scale-dials" => {
                    args.scale.dials = value("--scale-dials")?.parse::<usize>()?.clamp(1, 100_000)
                }
                "--scale-out" => args.scale.out = Some(PathBuf::from(value("--scale-out")?)),
                "--perf" => args.perf = Some(PathBuf::from(value("--perf")?)),
                "--child" => args.child = Some(value("--child")?),
                // `--key value` pairs for children (--engine, --ca, ...).
                k if args.child.is_some() && k.starts_with("--") => {
                    args.kv
                        .insert(k.trim_start_matches("--").to_owned(), value(k)?);
                }
                // `cargo bench` passes `--bench`; filters are meaningless here.
                _ => {}
            }
        }
        if args.quick {
            if !duration_set {
                args.duration = Duration::from_secs(3);
            }
            args.transfer = args.transfer.min(256 << 20);
            args.idle_conns = args.idle_conns.min(64);
        }
        args.duration = args
            .duration
            .clamp(Duration::from_millis(500), Duration::from_secs(600));
        if args.compare_exe.is_none() {
            args.legs.retain(char::is_ascii_uppercase);
        }
        // E is not an HTTP leg: it rides along the bytestream workload.
        args.haproxy = args.legs.contains(&'E');
        args.published = args.haproxy;
        args.legs.retain(|c| *c != 'E');
        Ok(args)
    }

    pub(crate) fn get(&self, key: &str) -> Result<&str, BoxError> {
        self.kv
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| format!("--{key} is required").into())
    }
}
