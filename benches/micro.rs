//! Micro-benchmarks: the frame codec and webhook verification.
//!
//! ```text
//! cargo bench --bench micro [-- FILTER] [--quick]
//! ```
//!
//! A hand-rolled timing loop (`Instant` + `black_box`): each case is
//! calibrated to ~0.2 s per sample (0.05 s with `--quick`), then timed over
//! 7 samples (3 with `--quick`); the median and min–max ns/op are printed.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rstream::proto::{
    decode_body, encode_frame, message::Payload, read_frame, ClientDetails, Heartbeat, Message,
    ProxyConnReq, ProxyReq,
};
use rstream::webhook::{sign, verify, verify_with_secrets, VerifyOptions, WebhookSecret};

struct Bench {
    filter: Option<String>,
    sample: Duration,
    samples: usize,
}

impl Bench {
    fn run<R>(&self, name: &str, mut f: impl FnMut() -> R) {
        if self
            .filter
            .as_deref()
            .is_some_and(|flt| !name.contains(flt))
        {
            return;
        }
        // Calibrate: double the batch until one batch takes >= 1/8 sample (bounded).
        let mut batch: u64 = 1;
        for _ in 0..40 {
            let t = Instant::now();
            for _ in 0..batch {
                black_box(f());
            }
            if t.elapsed() >= self.sample / 8 {
                break;
            }
            batch *= 2;
        }
        let iters = batch * 8;
        let mut ns: Vec<f64> = (0..self.samples)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(f());
                }
                t.elapsed().as_nanos() as f64 / iters as f64
            })
            .collect();
        ns.sort_by(f64::total_cmp);
        println!(
            "{name:<44} {:>10.1} ns/op  [{:.1} – {:.1}]  ({iters} iters × {})",
            ns[ns.len() / 2],
            ns[0],
            ns[ns.len() - 1],
            self.samples
        );
    }
}

fn proxy_conn_req() -> Message {
    Message::new(Payload::ProxyConnReq(ProxyConnReq {
        tunnel_id: "9f2c4e1ab37d5e60".into(),
        stream_id: "4b8d2f0c9e1a7b3d5f6e8a0c2b4d6f8e".into(),
        secret: Some("s3cr3t-7f6e5d4c3b2a19080706050403020100".into()),
        source_ip: None,
        proxy_endpoint: None,
    }))
}

fn proxy_req() -> Message {
    Message::new(Payload::ProxyReq(ProxyReq {
        client_details: Some(ClientDetails {
            agent: Some("rstream-rust-runtime".into()),
            channel: Some("sdk".into()),
            version: Some("0.1.0".into()),
            os: Some("linux".into()),
            arch: Some("x86_64".into()),
            token: Some("s3cr3t-7f6e5d4c3b2a19080706050403020100".into()),
            protocol_version: Some("1.4.5".into()),
        }),
        stream_id: "4b8d2f0c9e1a7b3d5f6e8a0c2b4d6f8e".into(),
        zero_rtt: Some(true),
    }))
}

fn main() {
    let mut filter = None;
    let mut quick = false;
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--quick" => quick = true,
            s if s.starts_with("--") => {} // `--bench` from cargo
            s => filter = Some(s.to_owned()),
        }
    }
    let b = Bench {
        filter,
        sample: Duration::from_millis(if quick { 50 } else { 200 }),
        samples: if quick { 3 } else { 7 },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");

    // Frame codec.
    let heartbeat = Message::new(Payload::Heartbeat(Heartbeat {
        sequence: 42,
        acknowledgement: 41,
    }));
    for (name, msg) in [
        ("heartbeat", heartbeat),
        ("proxy_conn_req", proxy_conn_req()),
        ("proxy_req", proxy_req()),
    ] {
        let frame = encode_frame(&msg).expect("encodes");
        b.run(
            &format!("codec/encode_frame/{name} ({} B)", frame.len()),
            || encode_frame(black_box(&msg)),
        );
        b.run(&format!("codec/decode_body/{name}"), || {
            decode_body(black_box(&frame[4..]))
        });
        b.run(&format!("codec/read_frame/{name}"), || {
            let mut r: &[u8] = black_box(&frame[..]);
            rt.block_on(read_frame(&mut r))
        });
    }

    // Webhooks.
    let secret = WebhookSecret::new("whsec_bench_0123456789abcdef").expect("secret");
    let other = WebhookSecret::new("whsec_bench_rotated_fedcba98").expect("secret");
    let now = 1_700_000_000;
    let options = VerifyOptions::new().now(now);
    let small = br#"{"id":"evt_1","type":"tunnel.created","created":1700000000,"object":{"id":"t1","name":"api"}}"#.to_vec();
    let mut large = br#"{"id":"evt_2","type":"tunnel.created","created":1700000000,"object":{"id":"t1","pad":""#.to_vec();
    large.extend(std::iter::repeat_n(b'x', 64 * 1024));
    large.extend_from_slice(br#""}}"#);
    for (name, payload) in [("small", &small), ("64KiB", &large)] {
        let header = sign(payload, &secret, now);
        b.run(
            &format!("webhook/sign/{name} ({} B)", payload.len()),
            || sign(black_box(payload), &secret, now),
        );
        b.run(&format!("webhook/verify/{name}"), || {
            verify(black_box(payload), black_box(&header), &secret, &options).is_ok()
        });
        let secrets = [other.clone(), secret.clone()];
        b.run(&format!("webhook/verify_rotated/{name}"), || {
            verify_with_secrets(black_box(payload), black_box(&header), &secrets, &options).is_ok()
        });
        let bad = header.replace("v1=", "v1=0");
        b.run(&format!("webhook/verify_bad_signature/{name}"), || {
            verify(black_box(payload), black_box(&bad), &secret, &options).is_err()
        });
    }
}
