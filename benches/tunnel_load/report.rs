use crate::*;

// ---------------------------------------------------------------------------
// Summary

/// `median [min–max]` over rounds (just the value for one round).
pub(crate) fn spread(values: &[f64], decimals: usize) -> String {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return "–".to_owned();
    }
    v.sort_by(f64::total_cmp);
    let med = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    if v.len() == 1 {
        format!("{med:.decimals$}")
    } else {
        format!(
            "{med:.decimals$} [{:.decimals$}–{:.decimals$}]",
            v[0],
            v[v.len() - 1]
        )
    }
}

/// One round: the legs' results, and the dial runs (label, result).
pub(crate) type Round = (HashMap<char, LegResult>, Vec<(String, DialResult)>);
pub(crate) type Rounds = [Round];

pub(crate) fn collect(
    rounds: &Rounds,
    leg: char,
    f: impl Fn(&LegResult) -> Option<f64>,
) -> Vec<f64> {
    rounds
        .iter()
        .filter_map(|(m, _)| m.get(&leg).and_then(&f))
        .collect()
}

pub(crate) fn summary(legs: &[char], rounds: &Rounds) {
    if !legs.is_empty() {
        summary_http(legs, rounds);
    }
    summary_bytestream(rounds);
}

/// The HTTP legs' table, their ratios and the proxy handshakes.
pub(crate) fn summary_http(legs: &[char], rounds: &Rounds) {
    println!();
    println!(
        "## Results (median [min–max] over {} round(s))",
        rounds.len()
    );
    println!();
    println!("| leg | keep-alive req/s | p50 ms | p99 ms | CPU s/10k server (engine) | new-conn req/s | p50 ms | p99 ms | CPU s/10k server (engine) | peak RSS MiB | idle KiB/conn |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for &leg in legs {
        let w = |f: fn(&Measured) -> f64, w2: bool| {
            collect(rounds, leg, move |r| {
                if w2 { r.w2.as_ref() } else { r.w1.as_ref() }.map(f)
            })
        };
        let what = match leg.to_ascii_uppercase() {
            'A' => "axum::serve(tunnel)",
            'B' => "forward_to(loopback)",
            'C' => "direct TLS (ceiling)",
            _ => "Python asgi.serve",
        };
        let cmp = if leg.is_ascii_lowercase() {
            " [--compare-exe]"
        } else {
            ""
        };
        let name = format!("{leg} {what}{cmp}");
        let mut idle = spread(&collect(rounds, leg, |r| r.idle_kib_per_conn), 1);
        let sdk = collect(rounds, leg, |r| r.idle_sdk_kib_per_conn);
        if !sdk.is_empty() {
            idle = format!("{idle} (SDK alone {})", spread(&sdk, 1));
        }
        println!(
            "| {name} | {} | {} | {} | {} ({}) | {} | {} | {} | {} ({}) | {} | {idle} |",
            spread(&w(|m| m.rps, false), 0),
            spread(&w(|m| m.p50, false), 2),
            spread(&w(|m| m.p99, false), 2),
            spread(&w(|m| m.cpu_server, false), 3),
            spread(&w(|m| m.cpu_engine, false), 3),
            spread(&w(|m| m.rps, true), 0),
            spread(&w(|m| m.p50, true), 2),
            spread(&w(|m| m.p99, true), 2),
            spread(&w(|m| m.cpu_server, true), 3),
            spread(&w(|m| m.cpu_engine, true), 3),
            spread(
                &collect(rounds, leg, |r| Some(r.peak_rss_kib as f64 / 1024.0)),
                1
            ),
        );
    }
    println!();
    println!("### Ratios (per round, side by side; median [min–max])");
    println!();
    let ratio = |a: char, b: char, f: fn(&LegResult) -> Option<f64>| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|(m, _)| Some(f(m.get(&a)?)? / f(m.get(&b)?)?))
            .collect()
    };
    println!("| ratio | keep-alive req/s | keep-alive p99 | new-conn req/s | new-conn p99 | CPU/10k keep-alive (server) |");
    println!("|---|---|---|---|---|---|");
    for (a, b) in [
        ('A', 'B'),
        ('A', 'C'),
        ('A', 'D'),
        ('A', 'a'),
        ('B', 'b'),
        ('a', 'b'),
    ] {
        if !legs.contains(&a) || !legs.contains(&b) {
            continue;
        }
        println!(
            "| {a}/{b} | {} | {} | {} | {} | {} |",
            spread(&ratio(a, b, |r| r.w1.as_ref().map(|m| m.rps)), 2),
            spread(&ratio(a, b, |r| r.w1.as_ref().map(|m| m.p99)), 2),
            spread(&ratio(a, b, |r| r.w2.as_ref().map(|m| m.rps)), 2),
            spread(&ratio(a, b, |r| r.w2.as_ref().map(|m| m.p99)), 2),
            spread(&ratio(a, b, |r| r.w1.as_ref().map(|m| m.cpu_server)), 2),
        );
    }
    let proxy: Vec<(u64, u64)> = rounds
        .iter()
        .filter_map(|(m, _)| m.get(&'A').and_then(|r| r.proxy_handshakes))
        .collect();
    if !proxy.is_empty() {
        let (full, resumed) = proxy.iter().fold((0, 0), |(f, r), (a, b)| (f + a, r + b));
        println!();
        println!("Proxy connections opened by the SDK during new-conn (leg A, all rounds): {full} full TLS handshakes, {resumed} resumed.");
    }
}

/// Workload 3: the dialed tunnel, raw TCP and leg E, per build.
pub(crate) fn summary_bytestream(rounds: &Rounds) {
    let labels: Vec<&str> = {
        let mut l: Vec<&str> = rounds
            .iter()
            .flat_map(|(_, d)| d.iter().map(|(l, _)| l.as_str()))
            .collect();
        l.sort_unstable();
        l.dedup();
        l
    };
    if labels.is_empty() {
        return;
    }
    println!();
    println!("| bytestream | MB/s | CPU s/GiB receiver | CPU s/GiB engine | CPU s/GiB sender | dial/raw |");
    println!("|---|---|---|---|---|---|");
    for label in labels {
        let dials: Vec<&DialResult> = rounds
            .iter()
            .flat_map(|(_, d)| d.iter().filter(|(l, _)| l == label).map(|(_, r)| r))
            .collect();
        let v =
            |f: fn(&DialResult) -> f64| spread(&dials.iter().map(|d| f(d)).collect::<Vec<_>>(), 2);
        let which = if label.is_empty() {
            ""
        } else {
            " [--compare-exe]"
        };
        println!(
            "| dialed private tunnel{which} | {} | {} | {} | {} | {} |",
            v(|d| d.dial_mbps),
            v(|d| d.dial_cpu_sink),
            v(|d| d.dial_cpu_engine),
            v(|d| d.dial_cpu_loadgen),
            v(|d| d.dial_mbps / d.raw_mbps)
        );
        println!(
            "| raw loopback TCP{which} | {} | {} | – | {} | |",
            v(|d| d.raw_mbps),
            v(|d| d.raw_cpu_sink),
            v(|d| d.raw_cpu_loadgen)
        );
        let haps: Vec<(&DialResult, &HaproxyResult)> = dials
            .iter()
            .filter_map(|d| Some((*d, d.haproxy.as_ref()?)))
            .collect();
        if !haps.is_empty() {
            let h = |f: fn(&DialResult, &HaproxyResult) -> f64| {
                spread(&haps.iter().map(|(d, h)| f(d, h)).collect::<Vec<_>>(), 2)
            };
            println!(
                "| E HAProxy TLS relay{which} | {} | {} | {} (haproxy) | {} | {} |",
                h(|_, h| h.mbps),
                h(|_, h| h.cpu_sink),
                h(|_, h| h.cpu_proxy),
                h(|_, h| h.cpu_sender),
                h(|d, h| h.mbps / d.raw_mbps)
            );
        }
        println!(
            "(sink peak RSS {} MiB; dial TLS resumed: {})",
            v(|d| d.sink_peak_rss_kib as f64 / 1024.0),
            dials.iter().all(|d| d.dial_resumed)
        );
        if !haps.is_empty() {
            // Per round, side by side: > 1 means the engine does better.
            let h = |f: fn(&DialResult, &HaproxyResult) -> f64| {
                spread(&haps.iter().map(|(d, h)| f(d, h)).collect::<Vec<_>>(), 2)
            };
            println!();
            println!("| engine / HAProxy{which} (per round; > 1: engine better) | MB/s | relay CPU s/GiB (HAProxy / engine) | all 3 processes CPU s/GiB (HAProxy / engine) |");
            println!("|---|---|---|---|");
            println!(
                "| dialed private tunnel / leg E | {} | {} | {} |",
                h(|d, h| d.dial_mbps / h.mbps),
                h(|d, h| h.cpu_proxy / d.dial_cpu_engine),
                h(|d, h| (h.cpu_sink + h.cpu_proxy + h.cpu_sender)
                    / (d.dial_cpu_sink + d.dial_cpu_engine + d.dial_cpu_loadgen)),
            );
            let mut suites: Vec<&str> = haps.iter().map(|(_, h)| h.suite.as_str()).collect();
            suites.sort_unstable();
            suites.dedup();
            println!("(sender ↔ HAProxy cipher suite: {})", suites.join(", "));
        }
        summary_published(&dials, which);
    }
}

/// Leg E, published: the engine's published endpoints beside HAProxy.
fn summary_published(dials: &[&DialResult], which: &str) {
    let runs: Vec<(&DialResult, &PublishedResult)> = dials
        .iter()
        .filter_map(|d| Some((*d, d.published.as_ref()?)))
        .collect();
    if runs.is_empty() {
        return;
    }
    let col = |f: &dyn Fn(&DialResult, &PublishedResult) -> Option<f64>| {
        spread(
            &runs.iter().filter_map(|(d, p)| f(d, p)).collect::<Vec<_>>(),
            2,
        )
    };
    let row = |name: &str, f: &dyn Fn(&DialResult, &PublishedResult) -> Option<PathRun>| {
        println!(
            "| {name}{which} | {} | {} | {} | {} |",
            col(&|d, p| f(d, p).map(|r| r.mbps)),
            col(&|d, p| f(d, p).map(|r| r.cpu_sink)),
            col(&|d, p| f(d, p).map(|r| r.cpu_relay)),
            col(&|d, p| f(d, p).map(|r| r.cpu_sender)),
        );
    };
    let hap = |d: &DialResult| {
        d.haproxy.as_ref().map(|h| PathRun {
            mbps: h.mbps,
            cpu_sink: h.cpu_sink,
            cpu_relay: h.cpu_proxy,
            cpu_sender: h.cpu_sender,
        })
    };
    println!();
    println!("| published path (leg E) | MB/s | CPU s/GiB receiver | CPU s/GiB relay | CPU s/GiB sender |");
    println!("|---|---|---|---|---|");
    row(
        "engine, published https endpoint (TLS terminated by the engine)",
        &|_, p| p.https.clone(),
    );
    row("HAProxy, TLS front + TLS back", &|d, _| hap(d));
    row("engine, published tcp endpoint, end-to-end TLS", &|_, p| {
        p.tcp.clone()
    });
    row("HAProxy, tcp front + TLS back, end-to-end TLS", &|_, p| {
        p.haproxy_tcp.clone()
    });
    let all = |r: &PathRun| r.cpu_sink + r.cpu_relay + r.cpu_sender;
    let ratios = |name: &str,
                  e: &dyn Fn(&DialResult, &PublishedResult) -> Option<PathRun>,
                  h: &dyn Fn(&DialResult, &PublishedResult) -> Option<PathRun>| {
        let pair =
            |f: &dyn Fn(&PathRun, &PathRun) -> f64| col(&|d, p| Some(f(&e(d, p)?, &h(d, p)?)));
        println!(
            "| {name}{which} | {} | {} | {} |",
            pair(&|e, h| e.mbps / h.mbps),
            pair(&|e, h| h.cpu_relay / e.cpu_relay),
            pair(&|e, h| all(h) / all(e)),
        );
    };
    println!();
    println!("| engine / HAProxy, published (per round; > 1: engine better) | MB/s | relay CPU s/GiB (HAProxy / engine) | all 3 processes CPU s/GiB (HAProxy / engine) |");
    println!("|---|---|---|---|");
    ratios(
        "https endpoint / TLS front + back",
        &|_, p| p.https.clone(),
        &|d, _| hap(d),
    );
    ratios(
        "tcp endpoint / tcp front + TLS back",
        &|_, p| p.tcp.clone(),
        &|_, p| p.haproxy_tcp.clone(),
    );
}
