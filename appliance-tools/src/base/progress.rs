//! A progress line for long operations (backup, restore).
//!
//! On a terminal it redraws one line at most ten times a second; otherwise (scripts, logs,
//! tests) it prints the label once and a summary at the end, so logs do not fill with redraws.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Minimum time between redraws.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// One long step with a known total size in bytes.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    tty: bool,
    last_draw: Option<Instant>,
    started: Instant,
}

impl Progress {
    /// Starts a step; `total` may be 0 when unknown.
    pub fn new(label: &str, total: u64) -> Self {
        let tty = std::io::stderr().is_terminal();
        if !tty {
            eprintln!("{label}…");
        }
        Self {
            label: label.to_owned(),
            total,
            done: 0,
            tty,
            last_draw: None,
            started: Instant::now(),
        }
    }

    /// Records that `done` bytes are finished.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if self.tty && self.last_draw.is_none_or(|at| at.elapsed() >= REDRAW_EVERY) {
            self.draw();
            self.last_draw = Some(Instant::now());
        }
    }

    /// Adds `bytes` to what is finished.
    pub fn add(&mut self, bytes: u64) {
        self.set(self.done.saturating_add(bytes));
    }

    fn draw(&self) {
        const WIDTH: u64 = 30;
        let mut err = std::io::stderr().lock();
        if self.total > 0 {
            let done = self.done.min(self.total);
            let filled = done * WIDTH / self.total;
            let _ = write!(
                err,
                "\r{} [{}{}] {:>3}% {} of {}  ",
                self.label,
                "#".repeat(filled as usize),
                "-".repeat((WIDTH - filled) as usize),
                done * 100 / self.total,
                human_bytes(done),
                human_bytes(self.total)
            );
        } else {
            let _ = write!(err, "\r{} {}  ", self.label, human_bytes(self.done));
        }
        let _ = err.flush();
    }

    /// Ends the step with a summary line.
    pub fn finish(mut self) {
        if self.total > 0 {
            self.done = self.total;
        }
        if self.tty {
            self.draw();
            eprintln!();
        } else {
            eprintln!(
                "{}: done, {} in {:.1} s",
                self.label,
                human_bytes(self.done),
                self.started.elapsed().as_secs_f64()
            );
        }
    }
}

/// `1536` → `1.5 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
