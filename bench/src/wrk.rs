//! Load generation with `wrk`, and parsing of its report.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, spawn_error};
use crate::interrupt;

/// One `wrk` run's parameters.
#[derive(Clone, Debug, Serialize)]
pub struct Load {
    /// Threads.
    pub threads: u32,
    /// Open connections (keep-alive).
    pub connections: u32,
    /// Seconds.
    pub seconds: u32,
}

/// The request a load run sends, over and over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `PUT` with this JSON body.
    Put(&'static str),
}

/// Requests slower than this are counted apart ([`LoadResult::over_threshold`]):
/// wrk 4.1 folds a few long stalls into a p99 near the maximum, so the
/// share of such requests says more than the p99 alone.
pub const LATENCY_THRESHOLD_MS: f64 = 100.0;

/// The percentiles of the latency distribution each run reports
/// ([`LoadResult::percentiles`]), for its CDF; the maximum is
/// [`LoadResult::max_ms`] (wrk's `percentile(100)` is 0).
pub const PERCENTILES: [f64; 29] = [
    1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0,
    75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 97.5, 98.0, 99.0, 99.5, 99.8, 99.9, 99.99,
];

/// The Lua script every run loads: the request, and, when the run is done,
/// lines with the latency distribution (`vigil-latency ...`) that
/// [`parse`] reads.
pub fn script(method: Method) -> String {
    let mut text = String::from("-- vigil-bench: the request, then the latency distribution.\n");
    if let Method::Put(body) = method {
        text += &format!(
            "wrk.method = \"PUT\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\n"
        );
    }
    let percentiles: Vec<String> = PERCENTILES.iter().map(|p| p.to_string()).collect();
    text += &format!(
        "done = function(summary, latency, requests)
  io.write(string.format(\"vigil-latency max_us %d\\n\", latency.max))
  -- The share of requests at or under the threshold, by bisection on percentile().
  local lo, hi = 0.0, 100.0
  for _ = 1, 40 do
    local mid = (lo + hi) / 2
    if latency:percentile(mid) <= {threshold_us} then lo = mid else hi = mid end
  end
  io.write(string.format(\"vigil-latency over_share %.6f\\n\", (100 - lo) / 100))
  for _, p in ipairs({{ {percentiles} }}) do
    io.write(string.format(\"vigil-latency p %s %d\\n\", tostring(p), latency:percentile(p)))
  end
end
",
        threshold_us = LATENCY_THRESHOLD_MS * 1000.0,
        percentiles = percentiles.join(", "),
    );
    text
}

/// What `wrk --latency` reported.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LoadResult {
    /// The command that produced it.
    pub command: String,
    /// Requests per second.
    pub requests_per_second: f64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors and non-2xx/3xx responses.
    pub errors: u64,
    /// The slowest request, ms (reports written before it have none).
    #[serde(default)]
    pub max_ms: Option<f64>,
    /// The share of requests slower than [`LATENCY_THRESHOLD_MS`].
    #[serde(default)]
    pub over_threshold: Option<f64>,
    /// The latency distribution: (percentile, ms) at [`PERCENTILES`].
    #[serde(default)]
    pub percentiles: Vec<(f64, f64)>,
}

/// Runs `wrk` with `GET` requests against `url`.
pub fn run(url: &str, load: &Load) -> Result<LoadResult> {
    run_request(url, load, Method::Get)
}

/// Runs `wrk` against `url` with `method`. A signal ([`crate::interrupt`])
/// ends it early with [`BenchError::Interrupted`].
pub fn run_request(url: &str, load: &Load, method: Method) -> Result<LoadResult> {
    let mut script_file = tempfile::Builder::new()
        .prefix("vigil-bench-")
        .suffix(".lua")
        .tempfile()
        .context("creating wrk's script")?;
    std::io::Write::write_all(&mut script_file, script(method).as_bytes())?;
    let mut args = options(load);
    args.extend(["--latency".to_owned(), "-s".to_owned()]);
    let described = match method {
        Method::Get => "GET".to_owned(),
        Method::Put(body) => format!("PUT of {} JSON bytes", body.len()),
    };
    let command = format!(
        "wrk {} --latency -s <script: {described}; latency distribution> {url}",
        options(load).join(" ")
    );
    let child = Command::new("wrk")
        .args(&args)
        .arg(script_file.path())
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| spawn_error("wrk", "wrk", err))?;
    let output = wait_interruptibly(child)?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Load {
            command,
            problem: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }
        .into());
    }
    parse(&text, command.clone()).map_err(|err| {
        BenchError::Load {
            command,
            problem: format!("{err}; its output:\n{text}"),
        }
        .into()
    })
}

/// Waits for `child` to exit and collects its output; kills it (by its
/// pid) and fails if the run is interrupted first. Its output must fit in
/// the pipes' buffers (wrk's report does).
fn wait_interruptibly(mut child: Child) -> Result<std::process::Output> {
    loop {
        if let Some(status) = child.try_wait()? {
            let mut output = std::process::Output {
                status,
                stdout: Vec::new(),
                stderr: Vec::new(),
            };
            if let Some(mut out) = child.stdout.take() {
                out.read_to_end(&mut output.stdout)?;
            }
            if let Some(mut err) = child.stderr.take() {
                err.read_to_end(&mut output.stderr)?;
            }
            return Ok(output);
        }
        if interrupt::interrupted() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BenchError::Interrupted.into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// wrk's options for `load` (threads, connections, duration).
fn options(load: &Load) -> Vec<String> {
    vec![
        format!("-t{}", load.threads),
        format!("-c{}", load.connections),
        format!("-d{}s", load.seconds),
    ]
}

/// `wrk` running in the background, to load a guest while something else
/// is measured. Dropping it ends that `wrk` (by its pid).
#[derive(Debug)]
pub struct Background {
    child: Child,
}

/// Starts `wrk` against `url` in the background; it ends by itself after
/// `load.seconds`.
pub fn background(url: &str, load: &Load) -> Result<Background> {
    let child = Command::new("wrk")
        .args(options(load))
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| spawn_error("wrk", "wrk", err))?;
    Ok(Background { child })
}

impl Background {
    /// Whether it is still loading (it has neither failed nor run out of
    /// time); an early exit is an error with its status.
    pub fn still_running(mut self) -> Result<bool> {
        match self.child.try_wait()? {
            None => Ok(true),
            Some(status) if status.success() => Ok(false),
            Some(status) => Err(BenchError::Load {
                command: "wrk (in the background)".into(),
                problem: format!("ended early: {status}"),
            }
            .into()),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A wrk duration (`812.00us`, `1.20ms`, `2.01s`) in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        _ => return None,
    };
    Some(value * factor)
}

/// Parses the report `wrk --latency` prints.
pub fn parse(text: &str, command: String) -> Result<LoadResult> {
    let field = |prefix: &str| -> Option<&str> {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(prefix))
            .map(str::trim)
    };
    let percentile = |p: &str| {
        field(p)
            .and_then(|v| v.split_whitespace().next())
            .and_then(duration_ms)
    };
    let requests_per_second: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .context("no Requests/sec line")?;
    let requests = text
        .lines()
        .find_map(|line| {
            let line = line.trim();
            line.contains("requests in")
                .then(|| line.split_whitespace().next()?.parse().ok())?
        })
        .context("no request count")?;
    let mut errors = 0;
    if let Some(socket) = field("Socket errors:") {
        errors += socket
            .split(',')
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    if let Some(non2xx) = field("Non-2xx or 3xx responses:") {
        errors += non2xx.parse::<u64>().unwrap_or(0);
    }
    let (mut max_ms, mut over_threshold, mut percentiles) = (None, None, Vec::new());
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["vigil-latency", "max_us", us] => max_ms = us.parse::<f64>().ok().map(|us| us / 1e3),
            ["vigil-latency", "over_share", share] => over_threshold = share.parse().ok(),
            ["vigil-latency", "p", p, us] => {
                if let (Ok(p), Ok(us)) = (p.parse::<f64>(), us.parse::<f64>()) {
                    percentiles.push((p, us / 1e3));
                }
            }
            _ => {}
        }
    }
    Ok(LoadResult {
        command,
        requests_per_second,
        p50_ms: percentile("50%").context("no 50% latency")?,
        p99_ms: percentile("99%").context("no 99% latency")?,
        requests,
        errors,
        max_ms,
        over_threshold,
        percentiles,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 10s test @ http://127.0.0.1:8080/healthz
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    84.10ms   12.01ms 200.00ms   90.00%
    Req/Sec   380.12     40.10   450.00     70.00%
  Latency Distribution
     50%   82.00ms
     75%   88.50ms
     90%   95.10ms
     99%  130.40ms
  7602 requests in 10.01s, 1.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:    759.46
Transfer/sec:    112.34KB
";

    #[test]
    fn parses_wrk_latency_report() {
        let result = parse(SAMPLE, "wrk".into()).unwrap();
        assert_eq!(result.requests_per_second, 759.46);
        assert_eq!(result.p50_ms, 82.0);
        assert_eq!(result.p99_ms, 130.4);
        assert_eq!(result.requests, 7602);
        assert_eq!(result.errors, 7);
        assert_eq!(result.max_ms, None);
        assert!(result.percentiles.is_empty());

        let with_script = format!(
            "{SAMPLE}vigil-latency max_us 1250000\nvigil-latency over_share 0.012500\n\
             vigil-latency p 50 82000\nvigil-latency p 99.9 1200000\n"
        );
        let result = parse(&with_script, "wrk".into()).unwrap();
        assert_eq!(result.max_ms, Some(1250.0));
        assert_eq!(result.over_threshold, Some(0.0125));
        assert_eq!(result.percentiles, [(50.0, 82.0), (99.9, 1200.0)]);
    }

    #[test]
    fn the_script_sets_the_request_and_reports_the_distribution() {
        let get = script(Method::Get);
        assert!(!get.contains("wrk.method"));
        assert!(get.contains("latency:percentile(mid) <= 100000 then"));
        assert!(get.contains("ipairs({ 1, 2.5, 5, 10, 15, "));
        assert!(get.contains(" 99.5, 99.8, 99.9, 99.99 })"));
        let put = script(Method::Put(r#"{"a":1}"#));
        assert!(put.contains("wrk.method = \"PUT\"\nwrk.body = [[{\"a\":1}]]\n"));
    }

    #[test]
    fn old_results_still_read() {
        let old = r#"{"command":"wrk","requests_per_second":1.0,"p50_ms":1.0,"p99_ms":2.0,"requests":10,"errors":0}"#;
        let result: LoadResult = serde_json::from_str(old).unwrap();
        assert_eq!(result.max_ms, None);
    }

    #[test]
    fn units() {
        assert_eq!(duration_ms("812.00us"), Some(0.812));
        assert_eq!(duration_ms("2.50s"), Some(2500.0));
        assert_eq!(duration_ms("junk"), None);
    }

    #[test]
    fn rejects_other_output() {
        assert!(parse("nothing useful", "wrk".into()).is_err());
    }
}
