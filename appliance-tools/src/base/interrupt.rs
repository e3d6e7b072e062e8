//! Ctrl-C at the console (and SIGTERM, and SIGHUP when a serial console hangs up): what is
//! undone before the process dies, so an interrupted command never leaves a terminal without
//! echo, a half-built staging directory or temporary accounts behind.
//!
//! [`install`] blocks these signals in every thread and hands them to one watcher thread (with
//! `sigwait`), so no code ever runs inside a signal handler: the watcher is an ordinary thread
//! that may lock, print and remove files. When a signal arrives it waits for the running
//! [`uninterruptible`] section (if any) to end, runs the actions registered with
//! [`on_interrupt`] (newest first), and then lets the process die of that same signal, so a
//! calling shell or script sees "interrupted" (status 130 for Ctrl-C) and stops.
//!
//! Commands stay written as straight-line code: they register an undo action when they create
//! something that must not outlive an interruption, and drop it when that thing is committed
//! or gone. Child processes are unaffected: `std::process::Command` resets the signal mask.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal, raise};

/// The signals that interrupt a command.
const SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// One undo action: its id (for [`Undo`]), what it does (printed when it runs, unless empty)
/// and the action.
type Action = (u64, String, Box<dyn FnOnce() -> Result<(), String> + Send>);

/// The registered undo actions, oldest first.
static ACTIONS: Mutex<Vec<Action>> = Mutex::new(Vec::new());

/// Held by the code of an [`uninterruptible`] section and by the watcher once a signal came.
static SECTION: Mutex<()> = Mutex::new(());

/// Set by the watcher before it waits for [`SECTION`]: no new section may start.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Distinguishes registrations.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Takes a lock whatever a panicking holder left behind: the data (a list, or nothing) stays
/// consistent, and an interruption must still be handled.
fn lock<T>(mutex: &'static Mutex<T>) -> MutexGuard<'static, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Routes the interrupting signals to the watcher thread. Call it first thing in `main`,
/// before any other thread exists: threads inherit the signal mask of the thread that starts
/// them, and a thread that does not block the signals could be picked to receive one and die
/// of it without any cleanup. If the watcher cannot start, the signals keep their default
/// effect (the process dies at once), which is what happened before this module existed.
pub fn install() {
    let mut signals = SigSet::empty();
    for signal in SIGNALS {
        signals.add(signal);
    }
    if signals.thread_block().is_err() {
        return;
    }
    let started = std::thread::Builder::new()
        .name("interrupt".to_owned())
        .spawn(move || watch(&signals));
    if started.is_err() {
        let _ = signals.thread_unblock();
    }
}

/// The watcher thread: waits for a signal, undoes what is registered, dies of the signal.
fn watch(signals: &SigSet) {
    let signal = loop {
        match signals.wait() {
            Ok(signal) => break signal,
            // sigwait only fails for an invalid set, which this is not; never spin on it.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    INTERRUPTED.store(true, Ordering::SeqCst);
    // Never released: the process ends while the watcher holds it, so no section starts again.
    let _section = lock(&SECTION);
    let actions = std::mem::take(&mut *lock(&ACTIONS));
    say(&format!("\nappliance: interrupted ({signal})"));
    for (_, what, action) in actions.into_iter().rev() {
        if !what.is_empty() {
            say(&format!("appliance: {what} …"));
        }
        // A panicking action must not end the watcher before the process ends.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(action)) {
            Ok(Ok(())) => {}
            Ok(Err(err)) => say(&format!("appliance:   that failed: {err}")),
            Err(_) => say("appliance:   that failed (a bug: it panicked)"),
        }
    }
    // Die of the signal itself (its default action), so the parent sees how we ended.
    let _ = raise(signal);
    let _ = SigSet::from(signal).thread_unblock();
    // Still alive: the signal was inherited as ignored. Exit the way a shell reports a signal.
    std::process::exit(128 + signal as i32);
}

/// Prints a line on stderr, ignoring errors: after SIGHUP the terminal is gone, and the undo
/// must run all the same (`eprintln!` would panic and end the watcher instead).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A registered undo action; dropping it unregisters the action (the thing it would undo was
/// committed or cleaned up normally).
#[must_use = "dropping the registration unregisters the action at once"]
pub struct Undo {
    id: u64,
}

impl Drop for Undo {
    fn drop(&mut self) {
        lock(&ACTIONS).retain(|(id, _, _)| *id != self.id);
    }
}

/// Registers `action` to run if the command is interrupted while the returned [`Undo`] lives.
/// `what` is printed before it runs (say what is being undone; empty prints nothing). The
/// action runs on the watcher thread while the command's own thread is stopped or blocked, so
/// it must finish on its own within seconds: give any network call a deadline.
pub fn on_interrupt(
    what: impl Into<String>,
    action: impl FnOnce() -> Result<(), String> + Send + 'static,
) -> Undo {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    lock(&ACTIONS).push((id, what.into(), Box::new(action)));
    Undo { id }
}

/// Runs `work` so that an interruption waits until it is done: for steps that must not be cut
/// in half, such as writing into a staging directory that an undo action removes (the removal
/// must not race the writes) or moving a finished unit into place. Once a signal has arrived
/// no new section starts: the calling thread waits for the process to end instead. Keep
/// sections short, they delay Ctrl-C.
pub fn uninterruptible<T>(work: impl FnOnce() -> T) -> T {
    let section = lock(&SECTION);
    if INTERRUPTED.load(Ordering::SeqCst) {
        drop(section);
        loop {
            std::thread::park();
        }
    }
    let result = work();
    drop(section);
    result
}
