//! Talking to the admin at the console: questions with defaults, passwords without echo,
//! confirmations. Prompts go to stderr so stdout stays clean for `--json` and man pages.
//!
//! Every question names the flag that answers it instead: when stdin is not a terminal the
//! question is not asked and the command fails with that flag's name, rather than hanging.

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::Path;

use crate::base::exit::Failure;
use crate::base::interrupt::{self, Undo};

/// The console, interactive only when stdin is a terminal.
pub struct Console {
    interactive: bool,
}

impl Console {
    /// Looks at stdin to decide whether questions may be asked.
    pub fn new() -> Self {
        Self {
            interactive: std::io::stdin().is_terminal(),
        }
    }

    /// Whether questions can be asked.
    pub fn is_interactive(&self) -> bool {
        self.interactive
    }

    fn require_terminal(&self, flag: &str, what: &str) -> Result<(), Failure> {
        if self.interactive {
            Ok(())
        } else {
            Err(Failure::usage(format!(
                "{what} is needed and there is no terminal to ask on: pass {flag}"
            )))
        }
    }

    /// Asks `question` (showing `default`, taken on an empty answer) until `validate` accepts
    /// the answer; explains each refusal. Without a terminal, fails naming `flag`.
    pub fn ask<T>(
        &self,
        question: &str,
        default: Option<&str>,
        flag: &str,
        validate: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, Failure> {
        self.require_terminal(flag, question)?;
        loop {
            match default {
                Some(default) => eprint!("{question} [{default}]: "),
                None => eprint!("{question}: "),
            }
            let line = read_line()?;
            let answer = match (line.trim(), default) {
                ("", Some(default)) => default.to_owned(),
                ("", None) => {
                    eprintln!("  An answer is needed.");
                    continue;
                }
                (answer, _) => answer.to_owned(),
            };
            match validate(&answer) {
                Ok(value) => return Ok(value),
                Err(reason) => eprintln!("  {reason}"),
            }
        }
    }

    /// Asks a yes/no question; `default_yes` decides an empty answer. Without a terminal, fails
    /// naming `flag` (the flag that means "yes").
    pub fn confirm(&self, question: &str, default_yes: bool, flag: &str) -> Result<bool, Failure> {
        self.require_terminal(flag, "a confirmation")?;
        let hint = if default_yes { "[Y/n]" } else { "[y/N]" };
        loop {
            eprint!("{question} {hint} ");
            let line = read_line()?;
            match line.trim().to_ascii_lowercase().as_str() {
                "" => return Ok(default_yes),
                "y" | "yes" => return Ok(true),
                "n" | "no" => return Ok(false),
                _ => eprintln!("  Please answer y or n."),
            }
        }
    }

    /// Reads a new password twice without echo, re-asking on a mismatch or when `check`
    /// refuses it. Without a terminal, fails naming `flag`.
    pub fn new_password(
        &self,
        for_whom: &str,
        flag: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Result<String, Failure> {
        self.require_terminal(flag, "a password")?;
        loop {
            let first = read_hidden(&format!("Password for {for_whom}: "))?;
            if let Err(reason) = check(&first) {
                eprintln!("  That password is too weak: {reason}.");
                continue;
            }
            let second = read_hidden("Type it again: ")?;
            if first == second {
                return Ok(first);
            }
            eprintln!("  The two passwords differ; please start again.");
        }
    }
}

impl Console {
    /// Asks for one secret without echo (a backup passphrase: the caller decides whether to ask
    /// twice). Without a terminal, fails naming `flag`.
    pub fn secret(&self, prompt: &str, flag: &str) -> Result<String, Failure> {
        self.require_terminal(flag, "a passphrase")?;
        read_hidden(prompt)
    }
}

/// Reads one line from stdin; end of input means the admin gave up.
fn read_line() -> Result<String, Failure> {
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|err| Failure::broke(format!("reading the console: {err}")))?;
    if read == 0 {
        eprintln!();
        return Err(Failure::state(
            "cancelled at the console; nothing was changed",
        ));
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Turns terminal echo back on when dropped, even if reading failed, and while it lives also
/// when the command is interrupted (Ctrl-C kills the process, so no drop would run then; the
/// [`interrupt`](crate::base::interrupt) watcher restores the settings instead).
struct EchoGuard {
    saved: nix::sys::termios::Termios,
    _on_interrupt: Undo,
}

impl EchoGuard {
    /// Registers `saved` to be put back on drop or on interrupt.
    fn new(saved: nix::sys::termios::Termios) -> Self {
        let restore = saved.clone();
        let on_interrupt = interrupt::on_interrupt("", move || {
            nix::sys::termios::tcsetattr(
                std::io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                &restore,
            )
            .map_err(|err| format!("restoring terminal echo: {err}"))
        });
        Self {
            saved,
            _on_interrupt: on_interrupt,
        }
    }
}

impl Drop for EchoGuard {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = nix::sys::termios::tcsetattr(
            stdin.as_fd(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.saved,
        );
    }
}

/// Prompts and reads a line with terminal echo off. Echo goes off before the prompt is shown,
/// so nothing typed after the prompt appears can be echoed.
fn read_hidden(prompt: &str) -> Result<String, Failure> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(stdin.as_fd())
        .map_err(|err| Failure::broke(format!("reading terminal settings: {err}")))?;
    let guard = EchoGuard::new(saved.clone());
    let mut quiet = saved;
    quiet.local_flags.remove(LocalFlags::ECHO);
    // Keep the newline echoed so the next prompt starts on its own line.
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet)
        .map_err(|err| Failure::broke(format!("turning off terminal echo: {err}")))?;
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let line = read_line();
    drop(guard);
    line
}

/// Reads a secret from `path`, or from stdin when `path` is `-`: the first line, without its
/// line ending. Meant for scripts (`--password-file`), so secrets stay out of `ps` and history.
pub fn read_secret_file(path: &Path) -> Result<String, Failure> {
    let text = if path == Path::new("-") {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|err| Failure::broke(format!("reading the password from stdin: {err}")))?;
        line
    } else {
        std::fs::read_to_string(path).map_err(|err| Failure::io("cannot read", path, err))?
    };
    let secret = text.lines().next().unwrap_or_default().to_owned();
    if secret.is_empty() {
        return Err(Failure::rejected(format!(
            "{} holds no password (the first line is empty)",
            path.display()
        )));
    }
    Ok(secret)
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM UTC`.
pub fn format_time_ms(ms: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(ms / 1000) {
        Ok(at) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            at.year(),
            u8::from(at.month()),
            at.day(),
            at.hour(),
            at.minute()
        ),
        Err(_) => ms.to_string(),
    }
}
