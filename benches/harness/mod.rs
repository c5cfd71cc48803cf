//! A small benchmark harness that reports ratios against baselines run in the
//! same process: every case of a group runs once per round, interleaved, and
//! the median of the rounds is compared. Absolute numbers vary by machine;
//! the ratios are what the project tracks.
#![allow(clippy::disallowed_methods)] // benchmarks measure wall time by design
#![allow(dead_code)]

use std::time::{Duration, Instant};

use testament::auth::Identity;
use testament::broker::{Action, Broker};
use testament::session::AuthnOutcome;
use testament::time::{Now, Timestamp};

/// Runs the hub's actions until none is left: authentications are answered
/// with `identity(client id, wall clock)` (the id shared with the session, as an
/// authenticator shares it), bytes are dropped.
pub fn settle(
    hub: &mut Broker,
    now: Now,
    identity: impl Fn(&std::sync::Arc<str>, Timestamp) -> Identity,
) {
    let mut pending = Vec::new();
    loop {
        while let Some(a) = hub.poll_action() {
            if let Action::Authenticate {
                ticket,
                credentials,
                ..
            } = a
            {
                pending.push((ticket, credentials.client_id.clone()));
            }
        }
        if pending.is_empty() {
            return;
        }
        for (ticket, name) in pending.drain(..) {
            let outcome = AuthnOutcome::Success(identity(&name, now.wall));
            hub.handle_authentication(now, ticket, outcome).unwrap();
        }
    }
}

/// One thing to measure: it does its own untimed setup and returns the time
/// of the part that counts.
pub struct Case<'a> {
    pub name: String,
    /// Work units (packets, messages, tokens) per run.
    pub units: u64,
    /// Bytes processed per run (0 when meaningless).
    pub bytes: u64,
    pub run: Box<dyn FnMut() -> Duration + 'a>,
}

impl<'a> Case<'a> {
    pub fn new(
        name: impl Into<String>,
        units: u64,
        bytes: u64,
        run: impl FnMut() -> Duration + 'a,
    ) -> Self {
        Self {
            name: name.into(),
            units,
            bytes,
            run: Box::new(run),
        }
    }
}

/// Times `f` once.
pub fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

pub struct Measured {
    pub name: String,
    pub median: Duration,
    pub units: u64,
    pub bytes: u64,
}

impl Measured {
    pub fn units_per_sec(&self) -> f64 {
        self.units as f64 / self.median.as_secs_f64()
    }
    pub fn mb_per_sec(&self) -> f64 {
        self.bytes as f64 / self.median.as_secs_f64() / 1e6
    }
}

/// Number of rounds: `BENCH_ROUNDS` or the given default.
pub fn rounds(default: usize) -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs every case `rounds` times, interleaved, after one warm-up run each.
pub fn measure(rounds: usize, cases: &mut [Case<'_>]) -> Vec<Measured> {
    for c in cases.iter_mut() {
        (c.run)();
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); cases.len()];
    for _ in 0..rounds {
        for (c, t) in cases.iter_mut().zip(times.iter_mut()) {
            t.push((c.run)());
        }
    }
    cases
        .iter()
        .zip(times)
        .map(|(c, mut t)| {
            t.sort();
            Measured {
                name: c.name.clone(),
                median: t[t.len() / 2],
                units: c.units,
                bytes: c.bytes,
            }
        })
        .collect()
}

/// Prints a group: rate per case and its ratio to each named baseline
/// (ratio > 1 means the case is faster than the baseline).
pub fn report(title: &str, unit: &str, results: &[Measured], baselines: &[&str]) {
    println!("\n## {title}\n");
    let mut header = format!("| case | median | {unit}/s | MB/s |");
    for b in baselines {
        header.push_str(&format!(" vs {b} |"));
    }
    println!("{header}");
    println!("|{}", " --- |".repeat(4 + baselines.len()));
    for r in results {
        let mut line = format!(
            "| {} | {:.2} ms | {:.2} M | {:.0} |",
            r.name,
            r.median.as_secs_f64() * 1e3,
            r.units_per_sec() / 1e6,
            r.mb_per_sec()
        );
        for b in baselines {
            let base = results
                .iter()
                .find(|m| m.name == *b)
                .expect("baseline is measured");
            line.push_str(&format!(
                " {:.2}× |",
                r.units_per_sec() / base.units_per_sec()
            ));
        }
        println!("{line}");
    }
}

/// The ratio of case `a`'s rate to case `b`'s.
pub fn ratio(results: &[Measured], a: &str, b: &str) -> f64 {
    let get = |n: &str| {
        results
            .iter()
            .find(|m| m.name == n)
            .expect("case is measured")
    };
    get(a).units_per_sec() / get(b).units_per_sec()
}
