//! Figures the benchmarks (`bench`, `fedbench`) print: latency percentiles, durations and sizes
//! in one format, so the binaries' reports read alike and the helpers live once.

use std::time::Duration;

/// `p50 …, p90 …, p99 …, p99.9 …, max … (n = …)` of a latency sample (sorted in place).
pub fn percentiles(sample: &mut [Duration]) -> String {
    if sample.is_empty() {
        return "no samples".to_owned();
    }
    sample.sort_unstable();
    let at = |q: f64| {
        let index = ((sample.len() as f64 - 1.0) * q).round() as usize;
        sample[index.min(sample.len() - 1)]
    };
    format!(
        "p50 {}, p90 {}, p99 {}, p99.9 {}, max {} (n = {})",
        ms(at(0.50)),
        ms(at(0.90)),
        ms(at(0.99)),
        ms(at(0.999)),
        ms(sample[sample.len() - 1]),
        sample.len()
    )
}

/// A duration in milliseconds with two decimals.
pub fn ms(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

/// A size given in KiB, in MiB with one decimal.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Prints one aligned `label: value` line of a report.
pub fn row(label: &str, value: impl std::fmt::Display) {
    println!("{:<38}{value}", format!("{label}:"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_sample() {
        let mut sample: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(
            percentiles(&mut sample),
            "p50 51.00 ms, p90 90.00 ms, p99 99.00 ms, p99.9 100.00 ms, max 100.00 ms (n = 100)"
        );
        assert_eq!(percentiles(&mut []), "no samples");
        assert_eq!(mib(1536), "1.5 MiB");
    }
}
