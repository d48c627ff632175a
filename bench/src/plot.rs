//! The report's SVG plots (`plotters`, SVG backend; text is drawn by the
//! viewer). Each function takes finished reports and returns an SVG
//! document; nothing here measures.

use anyhow::{Result, anyhow};
use plotters::prelude::*;
use vigil_bench::guest::System;
use vigil_bench::http::{self, HttpReport, Latency};
use vigil_bench::stats::{self, median};

use crate::watchdog::{self, WatchdogReport};

const VIGIL: RGBColor = RGBColor(31, 119, 180);
const VIGIL_LIGHT: RGBColor = RGBColor(120, 180, 225);
const LINUX: RGBColor = RGBColor(214, 39, 40);
const LINUX_LIGHT: RGBColor = RGBColor(245, 140, 60);
const HOST: RGBColor = RGBColor(110, 110, 110);
const FONT: &str = "sans-serif";

/// A target's colour: blue for the unikernel, red for Linux; lighter for
/// virtio-net.
fn colour(name: &str, system: System) -> RGBColor {
    let virtio = name.ends_with("virtio");
    match (system, virtio) {
        (System::Vigil, false) => VIGIL,
        (System::Vigil, true) => VIGIL_LIGHT,
        (System::Linux, false) => LINUX,
        (System::Linux, true) => LINUX_LIGHT,
        (System::HostProcess, _) => HOST,
    }
}

/// Draws into an SVG of `size` with `draw`, and returns the document.
fn svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<()>,
) -> Result<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
        draw(&root)?;
        root.present().map_err(|e| anyhow!("{e}"))?;
    }
    Ok(text)
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a plot: {e}")
}

/// `lo..hi` widened to whole powers of ten, for a log axis.
fn decades(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.1, 10.0);
    }
    (
        10f64.powf(lo.log10().floor()),
        10f64.powf(hi.log10().ceil().max(lo.log10().floor() + 1.0)),
    )
}

/// Boot times: every boot as a point, per guest, on a log axis; the
/// median as a bar.
pub fn boot(report: &HttpReport) -> Result<String> {
    let targets: Vec<_> = report
        .targets
        .iter()
        .filter(|t| !t.boot_seconds.is_empty())
        .collect();
    let n = targets.len();
    let (lo, hi) = decades(targets.iter().flat_map(|t| t.boot_seconds.iter().copied()));
    svg((900, 120 + 60 * n as u32), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "QEMU start to first /healthz answer ({}, {} vCPUs)",
                    report.accel.to_uppercase(),
                    report.cpus
                ),
                (FONT, 20),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(130)
            .build_cartesian_2d((lo..hi).log_scale(), -0.5..(n as f64 - 0.5))
            .map_err(err)?;
        let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        chart
            .configure_mesh()
            .x_desc("seconds (log scale)")
            .x_label_formatter(&log_tick)
            .y_labels(n)
            .y_label_formatter(&|y| category(&names, *y))
            .disable_y_mesh()
            .draw()
            .map_err(err)?;
        for (i, t) in targets.iter().enumerate() {
            let c = colour(&t.name, t.system);
            let y = i as f64;
            chart
                .draw_series(t.boot_seconds.iter().enumerate().map(|(k, &s)| {
                    // A little vertical spread so that equal times stay visible.
                    let jitter = ((k as f64 * 0.618_034).fract() - 0.5) * 0.3;
                    Circle::new((s, y + jitter), 4, c.mix(0.7).filled())
                }))
                .map_err(err)?;
            let m = median(&t.boot_seconds);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(m, y - 0.35), (m, y + 0.35)],
                    BLACK.stroke_width(2),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{m:.2} s"),
                    (m, y + 0.38),
                    (FONT, 13),
                )))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// A tick label without needless decimals: `7000`, `2.5`, `0.05`.
fn tick(value: &f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.to_owned()
    }
}

/// A log axis's tick label: only at 1, 2 and 5 times a power of ten
/// (the other key points would crowd each other).
fn log_tick(value: &f64) -> String {
    if *value <= 0.0 {
        return String::new();
    }
    let mantissa = value / 10f64.powf(value.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|m| (mantissa - m).abs() < 1e-6) {
        tick(value)
    } else {
        String::new()
    }
}

/// A value and its interval for an error bar: the value itself where the
/// interval is unknown (one sample).
fn bar_values((value, low, high): (f64, f64, f64)) -> (f64, f64, f64) {
    if low.is_finite() && high.is_finite() {
        (low, value, high)
    } else {
        (value, value, value)
    }
}

/// The label of category `i` at a (whole-number) axis position.
fn category(names: &[String], at: f64) -> String {
    let i = at.round();
    if (at - i).abs() > 1e-6 || i < 0.0 {
        return String::new();
    }
    names.get(i as usize).cloned().unwrap_or_default()
}

/// Requests/s per load: the median of the rounds as a bar, min–max as an
/// error bar; one panel per NIC, unikernel beside Linux.
pub fn throughput(report: &HttpReport) -> Result<String> {
    let pairs = http::pairs(report);
    let loads = http::loads(report);
    let labels: Vec<String> = loads
        .iter()
        .map(|(c, r)| format!("{} c={c}", r.label()))
        .collect();
    svg((1000, 380 * pairs.len().max(1) as u32), |root| {
        let panels = root.split_evenly((pairs.len().max(1), 1));
        for ((nic, vigil, linux), panel) in pairs.iter().zip(&panels) {
            let rates = |name: &str| -> Vec<Vec<f64>> {
                loads
                    .iter()
                    .map(|(c, r)| http::rates(&http::runs_of(report, name, *r, *c)))
                    .collect()
            };
            let (v, l) = (rates(&vigil.name), rates(&linux.name));
            let top = v
                .iter()
                .chain(&l)
                .map(|r| stats::max(r))
                .fold(1.0, f64::max)
                * 1.3;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!(
                        "{}: requests/s (median of rounds, min–max), {} s runs",
                        nic.name(),
                        report.seconds
                    ),
                    (FONT, 18),
                )
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5..(loads.len() as f64 - 0.5), 0.0..top)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_labels(loads.len())
                .x_label_formatter(&|x| category(&labels, *x))
                .disable_x_mesh()
                .y_desc("requests/s")
                .y_label_formatter(&tick)
                .draw()
                .map_err(err)?;
            for (side, (values, colour, offset)) in [(&v, VIGIL, -0.2), (&l, LINUX, 0.2)]
                .into_iter()
                .enumerate()
            {
                let name = if side == 0 { &vigil.name } else { &linux.name };
                chart
                    .draw_series(values.iter().enumerate().map(|(i, r)| {
                        let x = i as f64 + offset;
                        Rectangle::new([(x - 0.17, 0.0), (x + 0.17, median(r))], colour.filled())
                    }))
                    .map_err(err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                    });
                chart
                    .draw_series(values.iter().enumerate().filter(|(_, r)| r.len() > 1).map(
                        |(i, r)| {
                            ErrorBar::new_vertical(
                                i as f64 + offset,
                                stats::min(r),
                                median(r),
                                stats::max(r),
                                BLACK.stroke_width(1),
                                8,
                            )
                        },
                    ))
                    .map_err(err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Latency CDFs: one panel per (connections, request), one line per guest
/// (percentiles averaged over rounds, then the largest maximum).
pub fn latency_cdf(report: &HttpReport) -> Result<String> {
    let loads = http::loads(report);
    let mut requests: Vec<_> = loads.iter().map(|(_, r)| *r).collect();
    requests.dedup();
    requests.sort_by_key(|r| *r as u8);
    requests.dedup();
    let columns = requests.len().max(1);
    let rows = loads.len().div_ceil(columns);
    let (lo, hi) = decades(report.runs.iter().flat_map(|r| {
        r.result
            .percentiles
            .iter()
            .map(|(_, ms)| *ms)
            .chain(r.result.max_ms)
    }));
    svg((420 * columns as u32, 330 * rows.max(1) as u32), |root| {
        let panels = root.split_evenly((rows.max(1), columns));
        for ((connections, request), panel) in loads.iter().zip(&panels) {
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    format!("{}, {connections} connections", request.label()),
                    (FONT, 15),
                )
                .margin(8)
                .x_label_area_size(35)
                .y_label_area_size(45)
                .build_cartesian_2d((lo.max(0.001)..hi).log_scale(), 0.0..100.0)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("latency, ms (log)")
                .x_label_formatter(&log_tick)
                .y_desc("percentile")
                .y_label_formatter(&tick)
                .draw()
                .map_err(err)?;
            for t in &report.targets {
                let runs = http::runs_of(report, &t.name, *request, *connections);
                if runs.is_empty() {
                    continue;
                }
                let mut points: Vec<(f64, f64)> = Vec::new();
                if let Some(first) = runs.first() {
                    for (k, (p, _)) in first.result.percentiles.iter().enumerate() {
                        let ms: Vec<f64> = runs
                            .iter()
                            .filter_map(|r| r.result.percentiles.get(k).map(|(_, ms)| *ms))
                            .collect();
                        points.push((ms.iter().sum::<f64>() / ms.len() as f64, *p));
                    }
                }
                let max = Latency::of(&runs).max_ms;
                if max.is_finite() {
                    points.push((max, 100.0));
                }
                let points: Vec<(f64, f64)> =
                    points.into_iter().filter(|(ms, _)| *ms > 0.0).collect();
                let c = colour(&t.name, t.system);
                chart
                    .draw_series(LineSeries::new(points, c.stroke_width(2)))
                    .map_err(err)?
                    .label(t.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .label_font((FONT, 11))
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Footprint: disk, QEMU RSS after boot, and peak QEMU RSS under load, per
/// guest.
pub fn footprint(report: &HttpReport) -> Result<String> {
    let targets: Vec<_> = report
        .targets
        .iter()
        .filter(|t| t.system != System::HostProcess)
        .collect();
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let disk: Vec<f64> = targets
        .iter()
        .map(|t| t.files.iter().map(|(_, b)| *b as f64).sum::<f64>() / 1e6)
        .collect();
    let after: Vec<f64> = targets
        .iter()
        .map(|t| median(&t.rss_after_boot_mib))
        .collect();
    let under: Vec<f64> = targets
        .iter()
        .map(|t| stats::max(&http::rss_peaks(report, &t.name)))
        .collect();
    svg((1100, 360), |root| {
        let panels = root.split_evenly((1, 3));
        for ((title, unit, values), panel) in [
            ("on disk (kernel + initrd)", "MB", &disk),
            ("QEMU RSS after boot", "MiB", &after),
            ("QEMU RSS under load (peak)", "MiB", &under),
        ]
        .iter()
        .zip(&panels)
        {
            let top = values
                .iter()
                .copied()
                .filter(|v| v.is_finite())
                .fold(1.0, f64::max)
                * 1.2;
            let mut chart = ChartBuilder::on(panel)
                .caption(*title, (FONT, 16))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(50)
                .build_cartesian_2d(-0.5..(targets.len() as f64 - 0.5), 0.0..top)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_labels(targets.len())
                .x_label_formatter(&|x| category(&names, *x))
                .disable_x_mesh()
                .y_desc(*unit)
                .y_label_formatter(&tick)
                .draw()
                .map_err(err)?;
            chart
                .draw_series(
                    targets
                        .iter()
                        .zip(values.iter())
                        .enumerate()
                        .filter(|(_, (_, v))| v.is_finite())
                        .map(|(i, (t, v))| {
                            let x = i as f64;
                            Rectangle::new(
                                [(x - 0.3, 0.0), (x + 0.3, *v)],
                                colour(&t.name, t.system).filled(),
                            )
                        }),
                )
                .map_err(err)?;
            chart
                .draw_series(
                    values
                        .iter()
                        .enumerate()
                        .filter(|(_, v)| v.is_finite())
                        .map(|(i, v)| {
                            let shown = (v * 10.0).round() / 10.0;
                            Text::new(tick(&shown), (i as f64 - 0.15, *v * 1.07), (FONT, 12))
                        }),
                )
                .map_err(err)?;
        }
        Ok(())
    })
}

/// The watchdog at several intervals: the throughput it costs (paired
/// on/off, and in the guest) and how soon it finds a change.
pub fn watchdog(reports: &[WatchdogReport]) -> Result<String> {
    let intervals: Vec<f64> = reports.iter().map(|r| f64::from(r.interval_ms)).collect();
    let (lo, hi) = decades(intervals.iter().copied());
    let costs: Vec<watchdog::Cost> = reports.iter().filter_map(watchdog::cost).collect();
    svg((1100, 420), |root| {
        let panels = root.split_evenly((1, 2));
        // Left: cost, %.
        let values: Vec<f64> = costs
            .iter()
            .flat_map(|c| {
                let (a, b, d) = c.paired_loss;
                let (e, f, g) = c.in_guest_loss.unwrap_or((0.0, 0.0, 0.0));
                [a, b, d, e, f, g]
            })
            .filter(|v| v.is_finite())
            .collect();
        let bound = values.iter().copied().fold(2.0, f64::max) * 1.3;
        let low = values.iter().copied().fold(-1.0, f64::min) * 1.2;
        let mut chart = ChartBuilder::on(&panels[0])
            .caption("Throughput cost of the watchdog (%, 95 % CI)", (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((lo / 2.0..hi * 2.0).log_scale(), low..bound)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("interval, ms (log)")
            .x_label_formatter(&log_tick)
            .y_desc("loss, %")
            .y_label_formatter(&tick)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(lo / 2.0, 1.0), (hi * 2.0, 1.0)],
                BLACK.mix(0.5).stroke_width(1),
            )))
            .map_err(err)?
            .label("target: 1 % at the default interval")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK.mix(0.5)));
        chart
            .draw_series(costs.iter().map(|c| {
                let x = f64::from(c.interval_ms) * 0.93;
                let (low, value, high) = bar_values(c.paired_loss);
                ErrorBar::new_vertical(x, low, value, high, LINUX.filled(), 8)
            }))
            .map_err(err)?
            .label("1 − on/off requests/s (two guests, paired)")
            .legend(|(x, y)| Circle::new((x + 7, y), 4, LINUX.filled()));
        chart
            .draw_series(costs.iter().filter_map(|c| {
                let (low, mean, high) = bar_values(c.in_guest_loss?);
                let x = f64::from(c.interval_ms) * 1.07;
                Some(ErrorBar::new_vertical(
                    x,
                    low,
                    mean,
                    high,
                    VIGIL.filled(),
                    8,
                ))
            }))
            .map_err(err)?
            .label("in the guest: busy share × rate fall")
            .legend(|(x, y)| Circle::new((x + 7, y), 4, VIGIL.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 11))
            .draw()
            .map_err(err)?;

        // Right: detection latency.
        let top = reports
            .iter()
            .flat_map(|r| r.detection_ms.iter().copied())
            .chain(intervals.iter().map(|i| i * 2.0))
            .fold(10.0, f64::max)
            * 2.0;
        let mut chart = ChartBuilder::on(&panels[1])
            .caption("Detection latency (median, min–max)", (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((lo / 2.0..hi * 2.0).log_scale(), (1.0..top).log_scale())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("interval, ms (log)")
            .x_label_formatter(&log_tick)
            .y_desc("ms from the change to the report (log)")
            .y_label_formatter(&log_tick)
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                [lo / 2.0, hi * 2.0].map(|x| (x, 2.0 * x)),
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(err)?
            .label("bound: two intervals")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], BLACK.mix(0.5)));
        chart
            .draw_series(
                reports
                    .iter()
                    .filter(|r| !r.detection_ms.is_empty())
                    .map(|r| {
                        ErrorBar::new_vertical(
                            f64::from(r.interval_ms),
                            stats::min(&r.detection_ms),
                            median(&r.detection_ms),
                            stats::max(&r.detection_ms),
                            VIGIL.filled(),
                            10,
                        )
                    }),
            )
            .map_err(err)?
            .label("detection, trials under load")
            .legend(|(x, y)| Circle::new((x + 7, y), 4, VIGIL.filled()));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 11))
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_cover_the_values() {
        assert_eq!(decades([0.3, 8.0].into_iter()), (0.1, 10.0));
        assert_eq!(decades([100.0].into_iter()), (100.0, 1000.0));
        assert_eq!(decades(std::iter::empty()), (0.1, 10.0));
    }

    #[test]
    fn ticks_are_short() {
        assert_eq!(tick(&7000.0), "7000");
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&0.05), "0.05");
        assert_eq!(tick(&-0.0), "0");
        assert_eq!(log_tick(&500.0), "500");
        assert_eq!(log_tick(&300.0), "");
        assert_eq!(log_tick(&0.1), "0.1");
    }

    #[test]
    fn bars_without_an_interval_are_points() {
        assert_eq!(bar_values((1.0, f64::NAN, f64::NAN)), (1.0, 1.0, 1.0));
        assert_eq!(bar_values((1.0, 0.5, 2.0)), (0.5, 1.0, 2.0));
    }

    #[test]
    fn categories_only_at_whole_positions() {
        let names = ["a".to_owned(), "b".to_owned()];
        assert_eq!(category(&names, 1.0), "b");
        assert_eq!(category(&names, 0.5), "");
        assert_eq!(category(&names, 2.0), "");
    }
}
