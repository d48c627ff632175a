//! `vigil-bench seal`: sealing and SHA-256 throughput beside
//! `openssl dgst -sha256` on the same files, measured in one run.
//!
//! Every comparison alternates our run and OpenSSL's, after one warm-up of
//! each (so the page cache is warm for both), and reports medians. OpenSSL
//! runs as a spawned process and its wall time is reported as measured: its
//! start-up cost is measured separately (`openssl dgst` on an empty file) and
//! shown, never subtracted. Each OpenSSL digest is checked against ours.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vigil_bench::error::{BenchError, spawn_error};
use vigil_bench::interrupt;
use vigil_bench::stats::median;
use vigil_build::seal::{self, SealOptions};
use vigil_core::v1::bundle::{IMAGE_FILE, LOADER_FILE};
use vigil_core::v1::config::ServiceConfig;
use vigil_core::v1::events::sha256;
use vigil_core::v1::manifest::Digest;
use vigil_core::v1::refblock::Reaction;

/// The read size of the streaming hasher.
const CHUNK: usize = 1 << 20;

/// What to measure.
#[derive(Clone, Debug)]
pub struct SealBench {
    /// The directory `vigil-build build` wrote.
    pub image_dir: PathBuf,
    /// Runs of each side per comparison on the image.
    pub runs: usize,
    /// Size of the large file, MiB (0: skip it).
    pub large_mib: u64,
    /// Runs of each side on the large file.
    pub large_runs: usize,
    /// Where the temporary directory (key, bundles, large file) goes.
    pub work_dir: PathBuf,
}

/// One comparison: our code against `openssl dgst -sha256` over the same bytes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Comparison {
    /// What our side does.
    pub ours: String,
    /// The OpenSSL command line.
    pub openssl: String,
    /// Bytes hashed by OpenSSL (our side reads the same files).
    pub bytes: u64,
    /// Our wall times, seconds, one per run.
    pub ours_seconds: Vec<f64>,
    /// OpenSSL's process wall times, seconds, one per run.
    pub openssl_seconds: Vec<f64>,
    /// Median of ours, MB/s (10^6 bytes).
    pub ours_mb_per_s: f64,
    /// Median of OpenSSL's, MB/s.
    pub openssl_mb_per_s: f64,
    /// Throughput ratio ours / OpenSSL (medians; above 1 means we are faster).
    pub ratio: f64,
}

/// Everything measured.
#[derive(Debug, Serialize, Deserialize)]
pub struct SealReport {
    /// `openssl version`.
    pub openssl_version: String,
    /// /proc/loadavg when the benchmark started: other work on the machine
    /// makes every number noisier.
    pub load_average: String,
    /// Whether the CPU has the SHA extensions (`sha_ni` in /proc/cpuinfo).
    pub cpu_sha_ni: bool,
    /// Whether sha2 0.10's run-time check for its SHA-NI backend passes here
    /// (sha, sse2, ssse3 and sse4.1, as its `cpufeatures` probe asks).
    pub sha2_uses_sha_ni: bool,
    /// The image file measured.
    pub image: PathBuf,
    /// Its size.
    pub image_bytes: u64,
    /// The loader beside it.
    pub loader_bytes: u64,
    /// `openssl dgst -sha256` on an empty file: its start-up cost, seconds
    /// (median), included in every OpenSSL time above.
    pub openssl_startup_seconds: f64,
    /// Comparisons on the real image.
    pub image_comparisons: Vec<Comparison>,
    /// The large-file comparison, if run.
    pub large: Option<Comparison>,
}

/// SHA-256 of a file, read `CHUNK` bytes at a time.
pub fn sha256_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; CHUNK];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(hasher.finalize().into())
}

/// `openssl version`, or an error naming the package to install.
fn openssl_version() -> Result<String> {
    let output = Command::new("openssl")
        .arg("version")
        .output()
        .map_err(|err| spawn_error("openssl", "openssl", err))?;
    ensure!(output.status.success(), "`openssl version` failed");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `openssl dgst -sha256 FILES`; returns its wall time and the digests
/// it printed, in order.
fn openssl_dgst(files: &[&Path]) -> Result<(f64, Vec<String>)> {
    let started = Instant::now();
    let output = Command::new("openssl")
        .args(["dgst", "-sha256"])
        .args(files)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("running `openssl dgst -sha256`")?;
    let elapsed = started.elapsed().as_secs_f64();
    ensure!(
        output.status.success(),
        "`openssl dgst -sha256` failed ({})",
        output.status
    );
    // Lines read `SHA2-256(FILE)= HEX` (OpenSSL 3) or `SHA256(FILE)= HEX`.
    let digests = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.rsplit_once("= ").map(|(_, hex)| hex.trim().to_owned()))
        .collect::<Vec<_>>();
    ensure!(
        digests.len() == files.len(),
        "unexpected `openssl dgst` output: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    Ok((elapsed, digests))
}

fn display(files: &[&Path]) -> String {
    let names = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>();
    format!("openssl dgst -sha256 {}", names.join(" "))
}

/// Times `ours` against `openssl dgst -sha256 files`, alternating, after one
/// warm-up each. `ours` returns the digests of `files` it computed (checked
/// against OpenSSL's on the warm-up), or `None` if it computes something else.
fn compare(
    label: &str,
    files: &[&Path],
    runs: usize,
    mut ours: impl FnMut() -> Result<Option<Vec<[u8; 32]>>>,
) -> Result<Comparison> {
    let bytes = files
        .iter()
        .map(|f| Ok(std::fs::metadata(f)?.len()))
        .sum::<io::Result<u64>>()?;
    let (_, expected) = openssl_dgst(files)?;
    if let Some(digests) = ours()? {
        let digests = digests
            .iter()
            .map(|d| Digest(*d).to_string())
            .collect::<Vec<_>>();
        ensure!(
            digests == expected,
            "{label}: our SHA-256 {digests:?} differs from OpenSSL's {expected:?}"
        );
    }
    let mut ours_seconds = Vec::with_capacity(runs);
    let mut openssl_seconds = Vec::with_capacity(runs);
    for _ in 0..runs {
        interrupt::check()?;
        let started = Instant::now();
        ours()?;
        ours_seconds.push(started.elapsed().as_secs_f64());
        openssl_seconds.push(openssl_dgst(files)?.0);
    }
    let mb_per_s = |seconds: &[f64]| bytes as f64 / median(seconds) / 1e6;
    let comparison = Comparison {
        ours: label.to_owned(),
        openssl: display(files),
        bytes,
        ours_mb_per_s: mb_per_s(&ours_seconds),
        openssl_mb_per_s: mb_per_s(&openssl_seconds),
        ratio: median(&openssl_seconds) / median(&ours_seconds),
        ours_seconds,
        openssl_seconds,
    };
    eprintln!(
        "vigil-bench: {label}: {:.0} MB/s, openssl {:.0} MB/s, ratio {:.3}",
        comparison.ours_mb_per_s, comparison.openssl_mb_per_s, comparison.ratio
    );
    Ok(comparison)
}

/// Writes `mib` MiB of pseudo-random bytes (xorshift; SHA-256's speed does
/// not depend on the content, but a file of zeros could be sparse).
fn write_large_file(path: &Path, mib: u64) -> Result<()> {
    let mut file = io::BufWriter::new(File::create(path)?);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut chunk = vec![0u8; CHUNK];
    for _ in 0..mib {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        file.write_all(&chunk)?;
    }
    file.into_inner()
        .map_err(|err| err.into_error())?
        .sync_all()?;
    Ok(())
}

#[cfg(target_arch = "x86_64")]
fn sha2_uses_sha_ni() -> bool {
    std::arch::is_x86_feature_detected!("sha")
        && std::arch::is_x86_feature_detected!("sse2")
        && std::arch::is_x86_feature_detected!("ssse3")
        && std::arch::is_x86_feature_detected!("sse4.1")
}

#[cfg(not(target_arch = "x86_64"))]
fn sha2_uses_sha_ni() -> bool {
    false
}

/// Runs the whole benchmark.
pub fn run(bench: &SealBench) -> Result<SealReport> {
    if bench.runs == 0 {
        return Err(BenchError::BadOption {
            option: "--runs",
            problem: "must be at least 1",
        }
        .into());
    }
    let openssl_version = openssl_version()?;
    let load_average = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    vigil_bench::require_image(&bench.image_dir)?;
    let image = bench.image_dir.join(IMAGE_FILE);
    let loader = bench.image_dir.join(LOADER_FILE);
    std::fs::create_dir_all(&bench.work_dir)
        .with_context(|| format!("creating {}", bench.work_dir.display()))?;
    let dir = tempfile::Builder::new()
        .prefix("vigil-bench-seal-")
        .tempdir_in(&bench.work_dir)
        .with_context(|| format!("creating a directory in {}", bench.work_dir.display()))?;
    let key = dir.path().join("signing.pem");
    vigil_build::keys::generate(&key, &dir.path().join("signing.pub.pem"))?;
    let mut options = SealOptions {
        image_dir: bench.image_dir.clone(),
        key: key.clone(),
        out: PathBuf::new(),
        service_name: "vigil-service".into(),
        service_version: env!("CARGO_PKG_VERSION").into(),
        security_version: 1,
        interval_ms: 1000,
        reaction: Reaction::Log,
        service: ServiceConfig::default(),
    };

    let empty = dir.path().join("empty");
    File::create(&empty)?;
    openssl_dgst(&[&empty])?;
    let mut startup = Vec::new();
    for _ in 0..bench.runs {
        startup.push(openssl_dgst(&[&empty])?.0);
    }
    let openssl_startup_seconds = median(&startup);

    let both = [image.as_path(), loader.as_path()];
    let mut image_comparisons = Vec::new();
    image_comparisons.push(compare(
        "seal in memory: read image, loader, key, build.json; `seal_bytes`",
        &both,
        bench.runs,
        || {
            let key = vigil_build::keys::read_signing_key(&options.key)?;
            let image_bytes = std::fs::read(&image)?;
            let loader_bytes = std::fs::read(&loader)?;
            let provenance = seal::read_provenance(&bench.image_dir.join("build.json"))?;
            let bundle = seal::seal_bytes(
                &image_bytes,
                &loader_bytes,
                provenance,
                &options,
                &key,
                &image,
            )?;
            std::hint::black_box(&bundle);
            Ok(None)
        },
    )?);
    let mut bundles = 0;
    image_comparisons.push(compare(
        "`seal::seal`: the above, then write and fsync the bundle",
        &both,
        bench.runs,
        || {
            bundles += 1;
            options.out = dir.path().join(format!("bundle-{bundles}"));
            seal::seal(&options)?;
            std::fs::remove_dir_all(&options.out)?;
            Ok(None)
        },
    )?);
    image_comparisons.push(compare(
        "SHA-256 of the image as seal takes it: `fs::read` + `vigil_core` `sha256`",
        &[&image],
        bench.runs,
        || Ok(Some(vec![sha256(&std::fs::read(&image)?)])),
    )?);
    image_comparisons.push(compare(
        "SHA-256 of the image, streaming: 1 MiB reads into `sha2::Sha256`",
        &[&image],
        bench.runs,
        || Ok(Some(vec![sha256_file(&image)?])),
    )?);

    let large = if bench.large_mib > 0 {
        let path = dir.path().join("large");
        eprintln!(
            "vigil-bench: writing a {} MiB file in {}",
            bench.large_mib,
            dir.path().display()
        );
        write_large_file(&path, bench.large_mib)
            .with_context(|| format!("writing {}", path.display()))?;
        let comparison = compare(
            &format!(
                "SHA-256 of a {} MiB file, streaming: 1 MiB reads into `sha2::Sha256`",
                bench.large_mib
            ),
            &[&path],
            bench.large_runs.max(1),
            || Ok(Some(vec![sha256_file(&path)?])),
        )?;
        std::fs::remove_file(&path)?;
        Some(comparison)
    } else {
        None
    };

    let cpu_sha_ni = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "sha_ni"));
    Ok(SealReport {
        openssl_version,
        load_average,
        cpu_sha_ni,
        sha2_uses_sha_ni: sha2_uses_sha_ni(),
        image_bytes: std::fs::metadata(&image)?.len(),
        loader_bytes: std::fs::metadata(&loader)?.len(),
        image,
        openssl_startup_seconds,
        image_comparisons,
        large,
    })
}

fn row(c: &Comparison) -> String {
    format!(
        "| {} | `{}` | {:.1} | {:.2} | {:.0} | {:.2} | {:.0} | **{:.2}** |\n",
        c.ours,
        c.openssl,
        c.bytes as f64 / 1e6,
        median(&c.ours_seconds) * 1e3,
        c.ours_mb_per_s,
        median(&c.openssl_seconds) * 1e3,
        c.openssl_mb_per_s,
        c.ratio
    )
}

fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// The report as Markdown.
pub fn markdown(report: &SealReport, command: &str, machine: &str) -> String {
    let mut text = String::new();
    text.push_str("# Sealing benchmark: SHA-256 throughput beside `openssl dgst -sha256`\n\n");
    text.push_str(&format!("Command: `{command}`\n\n{machine}\n\n"));
    text.push_str(&format!(
        "{}. Load average at the start: {}. CPU SHA extensions (`sha_ni`): {}; \
         sha2 0.10's SHA-NI backend (picked at run time): {}.\n\n",
        report.openssl_version,
        report.load_average,
        yes_no(report.cpu_sha_ni),
        yes_no(report.sha2_uses_sha_ni)
    ));
    text.push_str(
        "MB/s are 10^6 bytes per second of the bytes OpenSSL hashes, from the \
         median of the runs; the ratio is ours / OpenSSL (target ≥ 0.9). \
         OpenSSL's times are the wall times of the `openssl` process, start-up \
         included; ours are in-process. Runs alternate, after a warm-up of each, \
         so the page cache is warm for both.\n\n",
    );
    text.push_str("| ours | OpenSSL | MB | ours ms | ours MB/s | OpenSSL ms | OpenSSL MB/s | ours / OpenSSL |\n");
    text.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for c in report.image_comparisons.iter().chain(&report.large) {
        text.push_str(&row(c));
    }
    let runs = report
        .image_comparisons
        .first()
        .map_or(0, |c| c.ours_seconds.len());
    text.push_str(&format!(
        "\nImage: `{}` ({} bytes; loader {} bytes). {runs} runs each on the image{}.\n\n",
        report.image.display(),
        report.image_bytes,
        report.loader_bytes,
        report.large.as_ref().map_or_else(String::new, |c| format!(
            ", {} on the large file (written once into a temporary directory, deleted after)",
            c.ours_seconds.len()
        )),
    ));
    text.push_str(&format!(
        "`openssl dgst -sha256` on an empty file takes {:.2} ms (median): that \
         start-up cost is inside every OpenSSL time above and dominates on the \
         few-MB image; the large file is where the hashing speeds compare. \
         Sealing hashes more than OpenSSL does: the measured regions, then the \
         whole sealed image, then the loader, and it signs the manifest.\n",
        report.openssl_startup_seconds * 1e3
    ));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_digest_matches_one_shot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let bytes = (0..(CHUNK * 2 + 123)).map(|i| i as u8).collect::<Vec<_>>();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256(&bytes));
        std::fs::write(&path, b"").unwrap();
        assert_eq!(
            Digest(sha256_file(&path).unwrap()).to_string(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
