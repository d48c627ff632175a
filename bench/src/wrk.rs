//! Load generation with `wrk`, and parsing of its report.

use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

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
}

/// Runs `wrk` against `url`.
pub fn run(url: &str, load: &Load) -> Result<LoadResult> {
    let mut args = options(load);
    args.extend(["--latency".to_owned(), url.to_owned()]);
    let command = format!("wrk {}", args.join(" "));
    let output = Command::new("wrk")
        .args(&args)
        .output()
        .context("running wrk (install the Debian package `wrk`: scripts/install-deps)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse(&text, command).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Latency thresholds, in milliseconds, for [`Detailed::slower_than`].
pub const SLOW_MS: [f64; 3] = [5.0, 20.0, 100.0];

/// A wrk script whose `done` prints the largest latency and, for each of
/// [`SLOW_MS`], the share of requests slower than that (from wrk's
/// latency histogram: the highest percentile at or below the threshold,
/// found by bisection).
const DETAIL_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  io.write(string.format("vigil-max-us %d\n", latency.max))
  for _, ms in ipairs({THRESHOLDS}) do
    local t = ms * 1000
    -- (wrk's percentile(100) answers 0: use the largest value instead)
    local lo, hi = 0.0, 99.9999
    if latency.max <= t then
      lo = 100.0
    else
      for _ = 1, 40 do
        local mid = (lo + hi) / 2
        if latency:percentile(mid) <= t then lo = mid else hi = mid end
      end
    end
    io.write(string.format("vigil-slower-than-ms %g %.4f\n", ms, 100.0 - lo))
  end
end
"#;

/// A wrk run with more of the latency distribution than [`LoadResult`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Detailed {
    /// The summary every run has.
    #[serde(flatten)]
    pub result: LoadResult,
    /// 75th percentile latency, milliseconds.
    pub p75_ms: f64,
    /// 90th percentile latency, milliseconds.
    pub p90_ms: f64,
    /// The slowest request, milliseconds.
    pub max_ms: f64,
    /// Per threshold of [`SLOW_MS`]: `(threshold ms, share of requests
    /// slower than it, per cent)`.
    pub slower_than: Vec<(f64, f64)>,
}

/// Runs `wrk --latency` against `url` with a script that also reports the
/// largest latency and the share of slow requests.
pub fn run_detailed(url: &str, load: &Load) -> Result<Detailed> {
    let thresholds = SLOW_MS.map(|ms| ms.to_string()).join(", ");
    let mut script = tempfile::Builder::new()
        .prefix("vigil-wrk-")
        .suffix(".lua")
        .tempfile()
        .context("creating wrk's script")?;
    std::io::Write::write_all(
        &mut script,
        DETAIL_SCRIPT.replace("THRESHOLDS", &thresholds).as_bytes(),
    )
    .context("writing wrk's script")?;
    let mut args = options(load);
    args.extend([
        "--latency".to_owned(),
        "-s".to_owned(),
        script.path().display().to_string(),
        url.to_owned(),
    ]);
    let command = format!("wrk {}", args.join(" "));
    let output = Command::new("wrk")
        .args(&args)
        .output()
        .context("running wrk (install the Debian package `wrk`: scripts/install-deps)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "`{command}` failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_detailed(&text, command).with_context(|| format!("unexpected wrk output:\n{text}"))
}

/// Parses what `run_detailed`'s wrk prints.
pub fn parse_detailed(text: &str, command: String) -> Result<Detailed> {
    let result = parse(text, command)?;
    let percentile = |p: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(p))
            .and_then(|v| v.split_whitespace().next())
            .and_then(duration_ms)
    };
    let max_us: f64 = text
        .lines()
        .find_map(|line| line.strip_prefix("vigil-max-us "))
        .and_then(|v| v.trim().parse().ok())
        .context("no largest latency (vigil-max-us)")?;
    let slower_than = text
        .lines()
        .filter_map(|line| {
            let mut words = line
                .strip_prefix("vigil-slower-than-ms ")?
                .split_whitespace();
            Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
        })
        .collect::<Vec<(f64, f64)>>();
    if slower_than.len() != SLOW_MS.len() {
        bail!("expected {} slow-request shares", SLOW_MS.len());
    }
    Ok(Detailed {
        result,
        p75_ms: percentile("75%").context("no 75% latency")?,
        p90_ms: percentile("90%").context("no 90% latency")?,
        max_ms: max_us / 1000.0,
        slower_than,
    })
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
        .context("running wrk (install the Debian package `wrk`: scripts/install-deps)")?;
    Ok(Background { child })
}

impl Background {
    /// Whether it is still loading (it has neither failed nor run out of
    /// time); an early exit is an error with its status.
    pub fn still_running(mut self) -> Result<bool> {
        match self.child.try_wait()? {
            None => Ok(true),
            Some(status) if status.success() => Ok(false),
            Some(status) => bail!("background wrk ended early: {status}"),
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
    Ok(LoadResult {
        command,
        requests_per_second,
        p50_ms: percentile("50%").context("no 50% latency")?,
        p99_ms: percentile("99%").context("no 99% latency")?,
        requests,
        errors,
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
    }

    #[test]
    fn units() {
        assert_eq!(duration_ms("812.00us"), Some(0.812));
        assert_eq!(duration_ms("2.50s"), Some(2500.0));
        assert_eq!(duration_ms("junk"), None);
    }

    #[test]
    fn parses_the_detail_script_output() {
        let text = format!(
            "{SAMPLE}vigil-max-us 200000\nvigil-slower-than-ms 5 97.5\n\
             vigil-slower-than-ms 20 60.25\nvigil-slower-than-ms 100 1.0000\n"
        );
        let detailed = parse_detailed(&text, "wrk".into()).unwrap();
        assert_eq!(detailed.result.requests, 7602);
        assert_eq!(detailed.p75_ms, 88.5);
        assert_eq!(detailed.p90_ms, 95.1);
        assert_eq!(detailed.max_ms, 200.0);
        assert_eq!(
            detailed.slower_than,
            vec![(5.0, 97.5), (20.0, 60.25), (100.0, 1.0)]
        );
        assert!(parse_detailed(SAMPLE, "wrk".into()).is_err());
    }

    #[test]
    fn rejects_other_output() {
        assert!(parse("nothing useful", "wrk".into()).is_err());
    }
}
