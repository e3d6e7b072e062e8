//! The selftest's report: each step printed the moment it completes, with its duration (and
//! the error of a failed one), so an installer watching the console sees where it stands; with
//! `--json`, nothing until the end and then one JSON document.

use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::matrix::Deadline;

/// Width of the step-name column.
const NAME_WIDTH: usize = 36;

/// One finished step.
#[derive(Debug, Clone, Serialize)]
pub struct StepRecord {
    /// What the step does, e.g. `create test accounts`.
    pub step: &'static str,
    /// Whether it passed.
    pub ok: bool,
    /// How long it took, in milliseconds.
    pub ms: u64,
    /// What it found or made (user IDs, a room ID), when worth showing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A step failed; its error is in the report, and the round trip stops.
#[derive(Debug)]
pub struct Stopped;

/// What a running step is handed: its deadline, and a place for a detail line.
pub struct Step {
    /// When the step must be done.
    pub deadline: Deadline,
    detail: Option<String>,
}

impl Step {
    /// Records what the step found, shown under its line.
    pub fn detail(&mut self, text: impl Into<String>) {
        self.detail = Some(text.into());
    }
}

/// The steps so far.
pub struct Report {
    json: bool,
    limit: Duration,
    steps: Vec<StepRecord>,
    started: Instant,
}

impl Report {
    /// An empty report; `json` holds all output back for one document at the end; `limit` is
    /// each step's time limit.
    pub fn new(json: bool, limit: Duration) -> Self {
        Self {
            json,
            limit,
            steps: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Prints a line of text (not with `--json`).
    pub fn say(&self, line: &str) {
        if !self.json {
            println!("{line}");
            let _ = std::io::stdout().flush();
        }
    }

    /// Runs one step with a fresh deadline, records and prints how it went.
    pub fn step<T>(
        &mut self,
        name: &'static str,
        run: impl FnOnce(&mut Step) -> Result<T, String>,
    ) -> Result<T, Stopped> {
        let started = Instant::now();
        let mut step = Step {
            deadline: Deadline::after(self.limit),
            detail: None,
        };
        let result = run(&mut step);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = StepRecord {
            step: name,
            ok: result.is_ok(),
            ms,
            detail: step.detail,
            error: result.as_ref().err().cloned(),
        };
        if !self.json {
            print_step(&record);
        }
        self.steps.push(record);
        result.map_err(|_| Stopped)
    }

    /// Every step so far.
    pub fn steps(&self) -> &[StepRecord] {
        &self.steps
    }

    /// The first step that failed.
    pub fn first_failure(&self) -> Option<&StepRecord> {
        self.steps.iter().find(|step| !step.ok)
    }

    /// Time since the report started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

fn print_step(record: &StepRecord) {
    let mut out = std::io::stdout().lock();
    let mark = if record.ok { "ok  " } else { "FAIL" };
    let _ = writeln!(
        out,
        "  {mark}  {:<NAME_WIDTH$} {:>6} ms",
        record.step, record.ms
    );
    if let Some(detail) = &record.detail {
        let _ = writeln!(out, "        {detail}");
    }
    if let Some(error) = &record.error {
        let _ = writeln!(out, "        error: {error}");
    }
    let _ = out.flush();
}
