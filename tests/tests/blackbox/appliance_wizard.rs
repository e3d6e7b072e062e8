//! The interactive `appliance setup` wizard driven through a real pseudo-terminal, and what
//! Ctrl-C leaves behind.
//!
//! The wizard asks only when stdin is a terminal, so these tests give it one: a pty pair from
//! `openpty`, the slave as the command's stdin, stdout and stderr, and `setsid --ctty` making
//! it the controlling terminal of a new session, so the line discipline does to the command
//! exactly what a console does: echo typed answers, and turn the byte 0x03 (Ctrl-C) into
//! SIGINT for the foreground process group. The test reads the prompts from the master side
//! and types the answers there.
//!
//! Checked: a whole setup typed at the prompts (a weak password refused and re-asked, a
//! mismatched confirmation re-asked) writes a unit whose admin can log in, and no password ever
//! reaches the terminal; Ctrl-C at the password prompt, at the final confirmation and while the
//! unit is being built ends the command by SIGINT, with terminal echo back on and nothing (or,
//! past the point of no return, the whole unit) in the data dir; Ctrl-C during `appliance
//! selftest` deactivates the temporary accounts it made.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::termios::{LocalFlags, tcgetattr};
use nix::unistd::Pid;
use tests::appliance::{COMMAND_DEADLINE, Unit, appliance_binary};
use tests::{Value, free_addr, poll_until};

/// How long a prompt may take to appear (the first admin's password is hashed before the
/// summary; everything else is instant).
const PROMPT_DEADLINE: Duration = Duration::from_secs(30);

/// How soon an interrupted command must be gone: the longest uninterruptible step (hashing
/// a password) plus the cleanup.
const INTERRUPT_DEADLINE: Duration = Duration::from_secs(10);

/// How long output may keep arriving after the command exited.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

const SERVER_NAME: &str = "wizard.test";
const ADMIN: &str = "chief";
const WEAK_PASSWORD: &str = "short";
const GOOD_PASSWORD: &str = "Quiet-Harbour-7-Lantern";
const MISTYPED_PASSWORD: &str = "Quiet-Harbour-7-Lanterm";

/// One `appliance` command running on a pseudo-terminal, with everything it printed so far.
struct Console {
    child: Child,
    command: String,
    /// The master side, where the test types.
    keyboard: File,
    /// A slave descriptor kept open here, to read the terminal settings after the command
    /// exits (and so the master never reads end-of-file while the test still looks).
    slave: OwnedFd,
    /// Every byte the command wrote to the terminal (the line discipline's echo included).
    screen: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has read.
    seen: usize,
}

impl Console {
    /// Starts `appliance --data-dir <unit's data dir> ARGS` as the leader of a new session
    /// whose controlling terminal is a fresh pty.
    fn start(unit: &Unit, args: &[&str]) -> Console {
        let pty = nix::pty::openpty(None, None).expect("opening a pseudo-terminal");
        let slave = |what: &str| -> Stdio {
            Stdio::from(
                pty.slave
                    .try_clone()
                    .unwrap_or_else(|err| panic!("duplicating the pty slave for {what}: {err}")),
            )
        };
        let mut command = Command::new("setsid");
        command
            .arg("--ctty")
            .arg(appliance_binary())
            .arg("--data-dir")
            .arg(unit.data_dir())
            .args(args)
            .stdin(slave("stdin"))
            .stdout(slave("stdout"))
            .stderr(slave("stderr"))
            .env_remove("OUTPOST_DATA_DIR")
            .env("NO_COLOR", "1")
            .env("TERM", "dumb");
        let command_line = format!("{command:?}");
        let child = command.spawn().unwrap_or_else(|err| {
            panic!("spawning {command_line} (is util-linux `setsid` installed?): {err}")
        });
        // The command's copies of the slave go with it.
        drop(command);
        let keyboard = File::from(pty.master);
        let mut reader = keyboard.try_clone().expect("duplicating the pty master");
        let screen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&screen);
        thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with EIO once the test drops its slave and the command is gone.
            while let Ok(read @ 1..) = reader.read(&mut buffer) {
                sink.lock()
                    .expect("screen lock is never poisoned")
                    .extend_from_slice(&buffer[..read]);
            }
        });
        Console {
            child,
            command: command_line,
            keyboard,
            slave: pty.slave,
            screen,
            seen: 0,
        }
    }

    /// Everything on the terminal so far, as text.
    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().expect("screen lock is never poisoned"))
            .into_owned()
    }

    /// Waits until `text` appears after what the previous `expect` matched. Fails early if the
    /// command ended and printed nothing more for a while (output may still be on its way for
    /// a moment after the exit).
    fn expect(&mut self, text: &str) {
        let seen = self.seen;
        let mut ended: Option<Instant> = None;
        let found = poll_until(
            &format!("{text:?} on the terminal"),
            PROMPT_DEADLINE,
            || {
                let screen = self.screen.lock().expect("screen lock is never poisoned");
                let tail = &screen[seen.min(screen.len())..];
                let wanted = text.as_bytes();
                if let Some(at) = tail.windows(wanted.len()).position(|bytes| bytes == wanted) {
                    return Some(seen + at + wanted.len());
                }
                let Ok(Some(status)) = self.child.try_wait() else {
                    return None;
                };
                if ended.get_or_insert_with(Instant::now).elapsed() > OUTPUT_GRACE {
                    panic!(
                        "{} exited with {status} before printing {text:?}\n--- terminal \
                         ---\n{}",
                        self.command,
                        String::from_utf8_lossy(tail)
                    );
                }
                None
            },
        );
        self.seen = found;
    }

    /// Types `keys` at the terminal.
    fn type_keys(&mut self, keys: &str) {
        self.keyboard
            .write_all(keys.as_bytes())
            .expect("typing at the pty master");
    }

    /// Waits for the prompt `prompt` and types `answer` and Enter.
    fn answer(&mut self, prompt: &str, answer: &str) {
        self.expect(prompt);
        self.type_keys(&format!("{answer}\n"));
    }

    /// Presses Ctrl-C: the line discipline sends SIGINT to the foreground process group.
    fn ctrl_c(&mut self) {
        self.type_keys("\x03");
    }

    /// Whether the terminal echoes what is typed.
    fn echoes(&self) -> bool {
        tcgetattr(&self.slave)
            .expect("reading the pty's terminal settings")
            .local_flags
            .contains(LocalFlags::ECHO)
    }

    /// Waits for the command to end within `deadline`.
    fn wait(&mut self, deadline: Duration) -> ExitStatus {
        let command = self.command.clone();
        poll_until(&format!("{command} to exit"), deadline, || {
            self.child.try_wait().expect("polling the command")
        })
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("=== {}\n--- terminal ---\n{}", self.command, self.screen());
        }
    }
}

/// Whether `status` is death by SIGINT (or, if SIGINT was inherited as ignored, the exit code
/// a shell gives it).
fn interrupted(status: ExitStatus) -> bool {
    status.signal() == Some(Signal::SIGINT as i32) || status.code() == Some(130)
}

/// The data dir's entries (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| {
                entry
                    .expect("listing the data dir")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Answers the wizard's questions up to (and including) the server name, listen addresses,
/// endpoint and admin name; the password prompt comes next.
fn answer_up_to_the_password(console: &mut Console) {
    console.answer("Server name of this unit", SERVER_NAME);
    console.answer("Address for Matrix clients [", &free_addr().to_string());
    console.answer("Address for peer units [", &free_addr().to_string());
    // The default endpoint (the server name at the federation port) is taken with Enter.
    console.answer("Address peer units reach this unit at", "");
    // The default URL (http:// and the client address) is taken with Enter.
    console.answer("URL users' Matrix clients reach this unit at [http://", "");
    console.answer("Name of the first admin account [admin]", ADMIN);
}

/// Types the good password twice.
fn type_good_password(console: &mut Console) {
    console.answer(
        &format!("Password for @{ADMIN}:{SERVER_NAME}: "),
        GOOD_PASSWORD,
    );
    console.answer("Type it again: ", GOOD_PASSWORD);
}

#[test]
fn the_wizard_takes_typed_answers_re_asks_bad_passwords_and_never_echoes_them() {
    let mut unit = Unit::new();
    let mut console = Console::start(&unit, &["setup", "--client-tls", "off"]);
    answer_up_to_the_password(&mut console);

    let password_prompt = format!("Password for @{ADMIN}:{SERVER_NAME}: ");
    console.expect(&password_prompt);
    assert!(!console.echoes(), "echo is on at the password prompt");
    console.type_keys(&format!("{WEAK_PASSWORD}\n"));
    console.expect("That password is too weak");
    // A mismatched confirmation starts over.
    console.answer(&password_prompt, GOOD_PASSWORD);
    console.answer("Type it again: ", MISTYPED_PASSWORD);
    console.expect("The two passwords differ");
    type_good_password(&mut console);

    console.expect("This unit will be set up as follows");
    console.expect(&format!("@{ADMIN}:{SERVER_NAME}"));
    console.answer("Write this configuration? [y/N]", "y");
    console.expect(&format!("Unit {SERVER_NAME} is set up in"));
    let status = console.wait(COMMAND_DEADLINE);
    assert!(
        status.success(),
        "setup ended with {status}\n{}",
        console.screen()
    );
    assert!(console.echoes(), "echo is off after setup");

    let screen = console.screen();
    // The typed answers were echoed (echo was on for them) ...
    assert!(screen.contains(&format!("{SERVER_NAME}\r\n")), "{screen}");
    // ... and none of the passwords ever was.
    for secret in [WEAK_PASSWORD, GOOD_PASSWORD, MISTYPED_PASSWORD] {
        assert!(!screen.contains(secret), "{secret:?} was echoed:\n{screen}");
    }

    let data = unit.data_dir();
    for file in [
        "homeserver.toml",
        "provisioning.json",
        "homeserver.db",
        "signing.key",
        "tls/ca.pem",
        "tls/cert.pem",
    ] {
        assert!(data.join(file).is_file(), "{file} was not written");
    }
    assert!(
        !data.join(".setup-staging").exists(),
        "the staging dir is left"
    );
    let recorded: Value =
        serde_json::from_slice(&fs::read(data.join("provisioning.json")).expect("provisioning"))
            .expect("provisioning.json is JSON");
    assert_eq!(recorded["server_name"], SERVER_NAME);
    assert_eq!(recorded["admin"]["user"], ADMIN);
    let client_url = format!("http://{}", unit.client_addr());
    assert_eq!(recorded["network"]["public_base_url"], client_url.as_str());

    // The admin typed at the console is a working account with the password typed last.
    unit.start();
    let well_known = unit.client().get_ok("/.well-known/matrix/client");
    assert_eq!(well_known["m.homeserver"]["base_url"], client_url.as_str());
    unit.login_ok(ADMIN, GOOD_PASSWORD);
    let (status, body) = unit.login(ADMIN, MISTYPED_PASSWORD);
    assert_eq!(status, 403, "the mistyped password works: {body:#}");
}

#[test]
fn ctrl_c_at_the_password_prompt_restores_echo_and_writes_nothing() {
    let unit = Unit::new();
    let mut console = Console::start(&unit, &["setup", "--client-tls", "off"]);
    answer_up_to_the_password(&mut console);
    console.expect(&format!("Password for @{ADMIN}:{SERVER_NAME}: "));
    assert!(!console.echoes(), "echo is on at the password prompt");
    // Half a password typed, then Ctrl-C.
    console.type_keys("Quiet-Har");
    console.ctrl_c();
    let status = console.wait(INTERRUPT_DEADLINE);
    assert!(
        interrupted(status),
        "Ctrl-C ended setup with {status}\n{}",
        console.screen()
    );
    assert!(console.echoes(), "Ctrl-C left the terminal without echo");
    console.expect("interrupted");
    assert!(
        !console.screen().contains("Quiet-Har"),
        "{}",
        console.screen()
    );
    let left = entries(&unit.data_dir());
    assert!(left.is_empty(), "Ctrl-C at a prompt left {left:?}");
}

#[test]
fn ctrl_c_at_the_final_confirmation_writes_nothing() {
    let unit = Unit::new();
    let mut console = Console::start(&unit, &["setup", "--client-tls", "off"]);
    answer_up_to_the_password(&mut console);
    type_good_password(&mut console);
    console.expect("Write this configuration? [y/N]");
    console.ctrl_c();
    let status = console.wait(INTERRUPT_DEADLINE);
    assert!(
        interrupted(status),
        "Ctrl-C ended setup with {status}\n{}",
        console.screen()
    );
    assert!(console.echoes(), "Ctrl-C left the terminal without echo");
    let left = entries(&unit.data_dir());
    assert!(left.is_empty(), "Ctrl-C at the confirmation left {left:?}");
    // Nothing was set up: a scripted setup afterwards succeeds without --force.
    unit.setup(SERVER_NAME);
}

#[test]
fn ctrl_c_while_the_unit_is_built_leaves_no_half_written_unit() {
    let unit = Unit::new();
    let mut console = Console::start(&unit, &["setup", "--client-tls", "off"]);
    answer_up_to_the_password(&mut console);
    type_good_password(&mut console);
    console.answer("Write this configuration? [y/N]", "y");
    // The build has started: interrupt it as early as the test can.
    console.expect("Generating the signing key");
    console.ctrl_c();
    let status = console.wait(INTERRUPT_DEADLINE);
    let screen = console.screen();
    let left = entries(&unit.data_dir());
    assert!(
        !left.iter().any(|name| name == ".setup-staging"),
        "the staging dir is left: {left:?}\n{screen}"
    );
    if left.iter().any(|name| name == "homeserver.toml") {
        // Ctrl-C came after the point of no return: the unit is whole.
        for file in ["provisioning.json", "homeserver.db", "signing.key", "tls"] {
            assert!(
                left.iter().any(|name| name == file),
                "{file} missing: {left:?}"
            );
        }
    } else {
        assert!(
            interrupted(status),
            "Ctrl-C ended setup with {status}\n{screen}"
        );
        assert!(
            left.is_empty(),
            "an interrupted build left {left:?}\n{screen}"
        );
        console.expect("removing the unfinished setup");
    }
}

/// The pid of the homeserver running on `unit`'s config, found in `/proc` (the harness keeps
/// its process to itself).
fn homeserver_pid(unit: &Unit) -> Pid {
    let config = unit.data_dir().join("homeserver.toml");
    let config = config.to_string_lossy();
    let found = fs::read_dir("/proc")
        .expect("listing /proc")
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).into_owned();
            let mut args = cmdline.split('\0');
            let program = args.next()?;
            (program.ends_with("homeserver") && args.any(|arg| arg == config)).then_some(pid)
        })
        .next();
    Pid::from_raw(found.unwrap_or_else(|| panic!("no homeserver process runs {config}")))
}

#[test]
fn ctrl_c_during_selftest_deactivates_its_temporary_accounts() {
    let mut unit = Unit::new();
    unit.setup("unit-a.test");
    unit.start();
    let server = homeserver_pid(&unit);
    // A frozen homeserver holds the selftest inside its first step (creating an account over
    // the admin socket, which the kernel accepts while the server sleeps).
    kill(server, Signal::SIGSTOP).expect("stopping the homeserver");
    let mut selftest = Command::new(appliance_binary())
        .arg("--data-dir")
        .arg(unit.data_dir())
        .arg("selftest")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("OUTPOST_DATA_DIR")
        .env("NO_COLOR", "1")
        .spawn()
        .expect("spawning appliance selftest");
    let pid = Pid::from_raw(i32::try_from(selftest.id()).expect("pids fit in i32"));
    // The account request is in flight once the admin call's thread exists (main, the
    // interrupt watcher, and that one).
    let tasks = format!("/proc/{pid}/task");
    poll_until("the selftest's admin request", PROMPT_DEADLINE, || {
        (fs::read_dir(&tasks).map_or(0, Iterator::count) >= 3).then_some(())
    });
    kill(pid, Signal::SIGINT).expect("interrupting the selftest");
    kill(server, Signal::SIGCONT).expect("waking the homeserver");
    let status = poll_until("the selftest to exit", INTERRUPT_DEADLINE, || {
        selftest.try_wait().expect("polling the selftest")
    });
    let mut stderr = String::new();
    selftest
        .stderr
        .take()
        .expect("stderr was piped")
        .read_to_string(&mut stderr)
        .expect("reading the selftest's stderr");
    assert!(
        interrupted(status),
        "SIGINT ended the selftest with {status}\n{stderr}"
    );
    assert!(
        stderr.contains("deactivating the selftest's temporary accounts"),
        "{stderr}"
    );
    assert!(!stderr.contains("failed"), "{stderr}");
    let made: Vec<Value> = unit
        .users()
        .into_iter()
        .filter(|user| {
            user["user_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("@selftest-"))
        })
        .collect();
    assert!(!made.is_empty(), "the selftest made no account to clean up");
    for user in &made {
        assert_eq!(user["deactivated"], true, "left active: {user:#}");
    }
}
