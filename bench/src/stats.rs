//! The statistics every benchmark reports: one implementation for all.

/// The median; NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The sample standard deviation; NaN for fewer than two values.
pub fn std_dev(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    if values.len() < 2 {
        return f64::NAN;
    }
    let mean = values.iter().sum::<f64>() / n;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// The smallest value (infinity for none).
pub fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The largest value (minus infinity for none).
pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The two-sided 95 % quantile of Student's t distribution with `df`
/// degrees of freedom (a table to 30, then the Cornish–Fisher expansion to
/// its second term, within 0.001 of the exact value there); NaN for
/// `df == 0`.
pub fn t_975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df - 1],
        _ => {
            let (z, df) = (1.959_964_f64, df as f64);
            z + (z.powi(3) + z) / (4.0 * df)
                + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * df * df)
        }
    }
}

/// The mean of `values` and its 95 % confidence interval (Student's t), as
/// `(mean, low, high)`; the interval is NaN for fewer than two values, all
/// three for none.
pub fn mean_ci(values: &[f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let half = t_975(values.len() - 1) * std_dev(values) / n.sqrt();
    (mean, mean - half, mean + half)
}

/// Paired ratios `a[i] / b[i]` summarised: their geometric mean and its
/// 95 % confidence interval (Student's t on the logarithms), as
/// `(mean, low, high)`. Pairing removes what both members of a pair share
/// (the host's load at that moment), which dominates the spread of
/// unpaired runs. NaN where there are too few pairs.
pub fn paired_ratio(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let logs: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x / y).ln()).collect();
    let (mean, low, high) = mean_ci(&logs);
    (mean.exp(), low.exp(), high.exp())
}

/// The 1-, 5- and 15-minute load averages, from /proc/loadavg.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn spread() {
        assert_eq!(min(&[2.0, 1.0, 3.0]), 1.0);
        assert_eq!(max(&[2.0, 1.0, 3.0]), 3.0);
        assert!((std_dev(&[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
        assert!(std_dev(&[1.0]).is_nan());
    }

    #[test]
    fn t_quantiles_from_the_table_and_beyond() {
        assert_eq!(t_975(1), 12.706);
        assert_eq!(t_975(11), 2.201);
        // Exact values: df 40 → 2.0211, df 120 → 1.9799.
        assert!((t_975(40) - 2.0211).abs() < 1e-3);
        assert!((t_975(120) - 1.9799).abs() < 1e-3);
        assert!(t_975(0).is_nan());
    }

    #[test]
    fn means_with_their_interval() {
        let (mean, low, high) = mean_ci(&[1.0, 2.0, 3.0]);
        assert_eq!(mean, 2.0);
        // σ = 1, n = 3: half-width 4.303 / √3.
        assert!((high - mean - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert!((mean - low - 4.303 / 3f64.sqrt()).abs() < 1e-12);
        assert!(mean_ci(&[]).0.is_nan());
    }

    #[test]
    fn paired_ratios_cancel_what_pairs_share() {
        // Each pair moves with the host's load; the ratio within pairs is 0.98.
        let off = [1000.0, 3000.0, 500.0, 2000.0];
        let on: Vec<f64> = off.iter().map(|v| v * 0.98).collect();
        let (mean, low, high) = paired_ratio(&on, &off);
        assert!((mean - 0.98).abs() < 1e-12);
        assert!((low - 0.98).abs() < 1e-9 && (high - 0.98).abs() < 1e-9);

        // Ratios 0.9 and 1.1: geometric mean √0.99, an interval around it.
        let (mean, low, high) = paired_ratio(&[0.9, 1.1], &[1.0, 1.0]);
        assert!((mean - 0.99f64.sqrt()).abs() < 1e-12);
        assert!(low < 0.9 && high > 1.1);

        let (mean, low, _) = paired_ratio(&[1.0], &[1.0]);
        assert_eq!(mean, 1.0);
        assert!(low.is_nan());
        assert!(paired_ratio(&[], &[]).0.is_nan());
    }
}
