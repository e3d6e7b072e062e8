//! `appliance setup`: the first-boot wizard and `setup --from FILE`.
//!
//! Gather (flags, the provisioning file, questions at the console) → validate everything →
//! summary and confirmation → act. Acting builds the whole unit in a staging directory inside
//! the data dir (keys, TLS, database with the first admin, provisioning file, config), checks
//! the config loads, and only then moves the files into place, the config last. Until that
//! move nothing of the old state has changed. Ctrl-C (or SIGTERM, SIGHUP) at a prompt writes
//! nothing; during the build it removes the staging directory; the move into place is never cut
//! in half (see [`crate::base::interrupt`]). Only a crash or SIGKILL can leave the staging directory,
//! which the next setup removes.

use std::path::{Path, PathBuf};

use homeserver::matrix::keys::SigningKey;

use crate::base::console::{Console, read_secret_file};
use crate::base::exit::{Exit, Failure};
use crate::base::interrupt::{self, Undo};
use crate::base::password::check_strength;
use crate::cli::SetupArgs;
use crate::unit::client_cert::{self, CertPaths};
use crate::unit::provisioning::{
    self, Admin, CertificateFiles, ClientTls, Network, Plan, Provisioning,
};
use crate::unit::{self, START_HINT, Unit};

/// The staging directory inside the data dir.
const STAGING: &str = ".setup-staging";

/// Runs `appliance setup`.
pub fn run(unit: &Unit, args: &SetupArgs) -> Result<Exit, Failure> {
    let console = Console::new();
    let file = match &args.from {
        Some(path) => Some(read_file(path)?),
        None => None,
    };
    // `admin.password_file` in the provisioning file, relative to it; the flag wins.
    let password_file = args.admin_password_file.clone().or_else(|| {
        let from = args.from.as_deref()?;
        let named = file.as_ref()?.admin.password_file.as_deref()?;
        Some(from.parent().unwrap_or(Path::new(".")).join(named))
    });
    if args.check {
        // `--check` validates the file alone, whatever the state of this unit.
        let file = file.ok_or_else(|| Failure::usage("--check needs --from FILE"))?;
        let plan = validate(&file)?;
        if let Some(path) = &password_file {
            admin_password(&console, Some(path), &plan)?;
        }
        check_certificate(&plan, args.from.as_deref())?;
        println!(
            "The provisioning file is valid: unit {}, first admin {}.",
            plan.server_name, plan.admin
        );
        return Ok(Exit::Success);
    }
    if unit.exists() {
        unit.require_stopped("replacing this unit")?;
        if !args.force {
            let name = unit
                .server_name()
                .map(|name| format!(" ({name})"))
                .unwrap_or_default();
            return Err(Failure::state(format!(
                "a unit{name} is already set up in {}; nothing was changed. To start over, run \
                 `appliance factory-reset` first, or pass --force to replace it.",
                unit.dir().display()
            )));
        }
    }
    let plan = match file {
        Some(file) => validate(&file)?,
        None => ask(&console, args)?,
    };
    let certificate = check_certificate(&plan, args.from.as_deref())?;
    let password = admin_password(&console, password_file.as_deref(), &plan)?;
    print_summary(unit, &plan, certificate.as_ref());
    if !args.yes && !console.confirm("Write this configuration?", false, "--yes")? {
        return Err(Failure::state("setup cancelled; nothing was written"));
    }
    let data_dir = apply(unit, &plan, certificate.as_ref(), password, args.force)?;
    // The CA download port through the firewall (closed again when a replaced unit had one).
    for note in crate::unit::firewall::admit_ca_http(
        &Unit::new(data_dir.clone()),
        plan.ca_http_listen.map(|addr| addr.port()),
    )? {
        eprintln!("{note}");
    }
    println!(
        "\nUnit {} is set up in {}.\nStart the homeserver with `{START_HINT}`, then log in \
         as {} from a Matrix client at {}.",
        plan.server_name,
        data_dir.display(),
        plan.admin,
        plan.public_base_url
    );
    Ok(Exit::Success)
}

/// Reads and checks the certificate to import (`client_tls: imported`), whose paths are
/// relative to the provisioning file `from` (or as given on the command line).
fn check_certificate(
    plan: &Plan,
    from: Option<&Path>,
) -> Result<Option<client_cert::Validated>, Failure> {
    let Some(files) = &plan.client_certificate else {
        return Ok(None);
    };
    let base = from
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let paths = CertPaths {
        cert: base.join(&files.certificate),
        key: base.join(&files.key),
        chain: files.chain.as_ref().map(|chain| base.join(chain)),
    };
    client_cert::check(&paths, &plan.public_names)
        .map(Some)
        .map_err(|failure| {
            Failure::new(
                failure.code,
                failure
                    .message
                    .replace("nothing was changed", "nothing was written"),
            )
        })
}

fn read_file(path: &Path) -> Result<Provisioning, Failure> {
    let text =
        std::fs::read_to_string(path).map_err(|err| Failure::io("cannot read", path, err))?;
    Provisioning::parse(&text)
        .map_err(|err| Failure::rejected(format!("{}: {err}; nothing was written", path.display())))
}

fn validate(file: &Provisioning) -> Result<Plan, Failure> {
    file.validate().map_err(|problems| {
        Failure::rejected(format!(
            "the provisioning file is not valid; nothing was written:\n  - {}",
            problems.join("\n  - ")
        ))
    })
}

/// The wizard: every value from its flag if given (validated), else asked at the console.
fn ask(console: &Console, args: &SetupArgs) -> Result<Plan, Failure> {
    if console.is_interactive() {
        eprintln!(
            "Setting up this Outpost unit. Press Enter to accept a [default]; Ctrl-C stops \
             without writing anything.\n"
        );
    }
    // A flag's value is checked and refused outright; an answer at the prompt is checked and
    // asked again. Values with a default need no question when there is no terminal.
    let value = |flag_value: Option<&str>,
                 question: &str,
                 default: Option<&str>,
                 flag: &str,
                 check: &dyn Fn(&str) -> Result<(), String>|
     -> Result<String, Failure> {
        match (flag_value, default) {
            (Some(raw), _) => {
                check(raw).map_err(|reason| Failure::rejected(format!("{flag}: {reason}")))?;
                Ok(raw.to_owned())
            }
            (None, Some(default)) if !console.is_interactive() => Ok(default.to_owned()),
            (None, _) => console.ask(question, default, flag, |answer| {
                check(answer).map(|()| answer.to_owned())
            }),
        }
    };
    let server_name = value(
        args.server_name.as_deref(),
        "Server name of this unit (user IDs end in it, e.g. unit-a.example)",
        None,
        "--server-name",
        &|raw| provisioning::server_name(raw).map(drop),
    )?;
    let server_name = provisioning::server_name(&server_name).map_err(Failure::rejected)?;
    let client = value(
        args.client_listen.as_deref(),
        "Address for Matrix clients",
        Some(provisioning::DEFAULT_CLIENT_LISTEN),
        "--client-listen",
        &|raw| provisioning::listen_addr(raw).map(drop),
    )?;
    let client_addr = provisioning::listen_addr(&client).map_err(Failure::rejected)?;
    let client_tls = match args.client_tls.as_deref() {
        Some(raw) => ClientTls::parse(raw)
            .map_err(|reason| Failure::rejected(format!("--client-tls: {reason}")))?,
        None if args.client_cert.is_some() => ClientTls::Imported,
        None => ClientTls::UnitCa,
    };
    let federation = value(
        args.federation_listen.as_deref(),
        "Address for peer units",
        Some(provisioning::DEFAULT_FEDERATION_LISTEN),
        "--federation-listen",
        &|raw| {
            let addr = provisioning::listen_addr(raw)?;
            if provisioning::overlaps(client_addr, addr) {
                return Err(format!(
                    "{addr} collides with the client address {client_addr}; use another port"
                ));
            }
            Ok(())
        },
    )?;
    let federation_addr = provisioning::listen_addr(&federation).map_err(Failure::rejected)?;
    let default_endpoint = provisioning::default_endpoint(&server_name, federation_addr);
    let split = |raw: &str| -> Vec<String> {
        raw.split(',')
            .map(|endpoint| endpoint.trim().to_owned())
            .filter(|endpoint| !endpoint.is_empty())
            .collect()
    };
    let endpoints = if args.federation_endpoint.is_empty() {
        split(&value(
            None,
            "Address peer units reach this unit at (host:port; several separated by commas)",
            Some(&default_endpoint),
            "--federation-endpoint",
            &|raw| {
                let endpoints = split(raw);
                if endpoints.is_empty() {
                    return Err("give at least one host:port".to_owned());
                }
                endpoints
                    .iter()
                    .try_for_each(|endpoint| provisioning::endpoint(endpoint).map(drop))
            },
        )?)
    } else {
        args.federation_endpoint.clone()
    };
    let names_from_url = args
        .public_base_url
        .as_deref()
        .and_then(|url| provisioning::public_base_url(url).ok())
        .map(|url| provisioning::url_host(&url).to_owned());
    let public_names = if client_tls == ClientTls::Off || !args.public_name.is_empty() {
        args.public_name.clone()
    } else {
        let default_names = names_from_url.unwrap_or_else(|| server_name.host().to_owned());
        split(&value(
            None,
            "Names users type to reach this unit, which its certificate covers (DNS names or \
             IP addresses, separated by commas)",
            Some(&default_names),
            "--public-name",
            &|raw| {
                let names = split(raw);
                if names.is_empty() {
                    return Err("give at least one name or address".to_owned());
                }
                names
                    .iter()
                    .try_for_each(|name| provisioning::public_name(name).map(drop))
            },
        )?)
    };
    let default_url = match (client_tls, public_names.first()) {
        (ClientTls::Off, _) | (_, None) => {
            provisioning::default_public_base_url(&server_name, client_addr)
        }
        (_, Some(first)) => provisioning::default_https_url(
            &provisioning::public_name(first).map_err(Failure::rejected)?,
            client_addr.port(),
        ),
    };
    let public_base_url = value(
        args.public_base_url.as_deref(),
        "URL users' Matrix clients reach this unit at",
        Some(&default_url),
        "--public-base-url",
        &|raw| provisioning::public_base_url(raw).map(drop),
    )?;
    let admin = value(
        args.admin_user.as_deref(),
        "Name of the first admin account",
        Some(provisioning::DEFAULT_ADMIN),
        "--admin-user",
        &|raw| provisioning::admin_user(&server_name, raw).map(drop),
    )?;
    let file = Provisioning {
        schema: None,
        version: provisioning::VERSION,
        server_name: server_name.to_string(),
        network: Network {
            client_listen: client,
            federation_listen: federation,
            federation_endpoints: endpoints,
            public_base_url: Some(public_base_url),
            public_names,
            client_tls,
            client_certificate: args.client_cert.as_ref().map(|cert| CertificateFiles {
                certificate: cert.to_string_lossy().into_owned(),
                key: args
                    .client_key
                    .as_ref()
                    .map(|key| key.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                chain: args
                    .client_chain
                    .as_ref()
                    .map(|chain| chain.to_string_lossy().into_owned()),
            }),
            ca_http_listen: args.ca_http_listen.clone(),
            insecure_plain_http: args.insecure_plain_http,
        },
        admin: Admin {
            user: admin,
            password_file: None,
        },
    };
    file.validate().map_err(|problems| {
        Failure::rejected(format!(
            "these values are not valid; nothing was written:\n  - {}",
            problems.join("\n  - ")
        ))
    })
}

/// The first admin's password: from `--admin-password-file` (or the provisioning file's
/// `admin.password_file`), else typed twice at the console.
fn admin_password(
    console: &Console,
    password_file: Option<&Path>,
    plan: &Plan,
) -> Result<String, Failure> {
    let localpart = plan.admin.localpart();
    match password_file {
        Some(path) => {
            let password = read_secret_file(path)?;
            check_strength(&password, localpart).map_err(|reason| {
                Failure::rejected(format!(
                    "the admin password is too weak: {reason}; nothing was written"
                ))
            })?;
            Ok(password)
        }
        None => console.new_password(plan.admin.as_str(), "--admin-password-file", |password| {
            check_strength(password, localpart)
        }),
    }
}

fn print_summary(unit: &Unit, plan: &Plan, certificate: Option<&client_cert::Validated>) {
    let tls = match (plan.client_tls, certificate) {
        (ClientTls::UnitCa, _) => format!(
            "HTTPS, a certificate from the unit CA for {}",
            plan.public_names.join(", ")
        ),
        (ClientTls::Imported, Some(checked)) => format!(
            "HTTPS, the imported certificate for {} from {}",
            checked.info.names().join(", "),
            checked.info.issuer
        ),
        (ClientTls::Imported, None) => "HTTPS, an imported certificate".to_owned(),
        (ClientTls::Off, _) => "plain HTTP (no TLS)".to_owned(),
    };
    let ca_http = plan
        .ca_http_listen
        .map(|addr| format!("\n  CA download (HTTP)   {addr}"))
        .unwrap_or_default();
    eprintln!(
        "\nThis unit will be set up as follows:\n  \
         Server name          {}\n  \
         Data directory       {}\n  \
         Matrix clients       {} (listening on {})\n  \
         Client TLS           {tls}{ca_http}\n  \
         Peer units listen    {}\n  \
         Peers reach it at    {}\n  \
         First admin          {}\n  \
         Keys                 a new ed25519 signing key and a TLS unit CA + certificate",
        plan.server_name,
        unit.dir().display(),
        plan.public_base_url,
        plan.client_listen,
        plan.federation_listen,
        plan.federation_endpoints.join(", "),
        plan.admin
    );
}

/// Builds the unit in the staging dir, then moves it into place; returns the data dir's
/// canonical path.
///
/// From the staging dir's creation until it is gone, an interruption (Ctrl-C) removes it: each
/// step that writes into it, and the move into place, is an uninterruptible section, so the
/// removal never races a write and an interrupted setup leaves either the old state or the
/// finished unit.
fn apply(
    unit: &Unit,
    plan: &Plan,
    certificate: Option<&client_cert::Validated>,
    password: String,
    replace: bool,
) -> Result<PathBuf, Failure> {
    let data_dir = unit::ensure_dir(unit.dir())?;
    unit::restrict_dir(&data_dir)?;
    let unit = Unit::new(data_dir.clone());
    let staging = data_dir.join(STAGING);
    let on_interrupt = interrupt::uninterruptible(|| -> Result<Undo, Failure> {
        if staging.exists() {
            std::fs::remove_dir_all(&staging)
                .map_err(|err| Failure::io("cannot remove the old", &staging, err))?;
        }
        std::fs::create_dir(&staging).map_err(|err| Failure::io("cannot create", &staging, err))?;
        let doomed = staging.clone();
        Ok(interrupt::on_interrupt(
            format!(
                "removing the unfinished setup in {}; nothing else was changed",
                staging.display()
            ),
            move || {
                std::fs::remove_dir_all(&doomed)
                    .map_err(|err| format!("cannot remove {}: {err}", doomed.display()))
            },
        ))
    })?;
    let built = build(&staging, &data_dir, plan, certificate, password);
    if let Err(err) = built {
        interrupt::uninterruptible(|| {
            let _ = std::fs::remove_dir_all(&staging);
            drop(on_interrupt);
        });
        return Err(err);
    }
    interrupt::uninterruptible(|| move_into_place(&unit, &staging, replace, on_interrupt))?;
    Ok(data_dir)
}

/// Replaces the data dir's contents with the staging dir's (erasing a previous unit first when
/// `replace`), the config last, and removes the emptied staging dir; then `on_interrupt` (the
/// staging dir's removal) is dropped, as there is nothing left to undo.
fn move_into_place(
    unit: &Unit,
    staging: &Path,
    replace: bool,
    on_interrupt: Undo,
) -> Result<(), Failure> {
    let data_dir = unit.dir();
    if replace {
        eprintln!("Erasing the previous unit in {} …", data_dir.display());
        unit.erase(&[STAGING])?;
    }
    // The config goes last: its presence is what marks a finished setup.
    let mut names: Vec<String> = std::fs::read_dir(staging)
        .map_err(|err| Failure::io("cannot list", staging, err))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name != unit::CONFIG_FILE)
        .collect();
    names.sort();
    names.push(unit::CONFIG_FILE.to_owned());
    for name in names {
        let (from, to) = (staging.join(&name), data_dir.join(&name));
        std::fs::rename(&from, &to)
            .map_err(|err| Failure::io("cannot move into place", &to, err))?;
    }
    std::fs::remove_dir(staging).map_err(|err| Failure::io("cannot remove", staging, err))?;
    drop(on_interrupt);
    Ok(())
}

/// Writes every file of the new unit into `staging`; `data_dir` is where they will live. Each
/// step is an uninterruptible section (see [`apply`]); the slowest, hashing the admin's
/// password, delays Ctrl-C by about a second.
fn build(
    staging: &Path,
    data_dir: &Path,
    plan: &Plan,
    certificate: Option<&client_cert::Validated>,
    password: String,
) -> Result<(), Failure> {
    eprintln!("Generating the signing key …");
    interrupt::uninterruptible(|| {
        let key = SigningKey::generate();
        unit::write_file(
            &staging.join(homeserver::SIGNING_KEY_FILE),
            key.serialize().as_bytes(),
            0o600,
        )
    })?;
    eprintln!("Generating the TLS unit CA and certificate …");
    interrupt::uninterruptible(|| {
        unit::generate_tls(
            &staging.join(unit::TLS_DIR),
            plan.server_name.as_str(),
            &plan.federation_endpoints,
        )
    })?;
    if let Some(checked) = certificate {
        eprintln!("Writing the imported client certificate …");
        interrupt::uninterruptible(|| {
            client_cert::write_imported(&staging.join(unit::TLS_DIR), checked).map(drop)
        })?;
    }
    eprintln!("Creating the database and the first admin {} …", plan.admin);
    let server_name = plan.server_name.clone();
    let admin = plan.admin.to_string();
    interrupt::uninterruptible(|| {
        crate::unit::offline::with_store(staging, |store| async move {
            homeserver::service::admin::create_user_in_store(
                &store,
                &server_name,
                &admin,
                password,
                true,
            )
            .await
        })
    })?;
    let provisioning = serde_json::to_string_pretty(&plan.to_file())
        .map_err(|err| Failure::broke(format!("encoding the provisioning file: {err}")))?;
    let config_path = staging.join(unit::CONFIG_FILE);
    interrupt::uninterruptible(|| {
        unit::write_file(
            &staging.join(unit::PROVISIONING_FILE),
            format!("{provisioning}\n").as_bytes(),
            0o640,
        )?;
        unit::write_file(&config_path, plan.render_config(data_dir).as_bytes(), 0o640)
    })?;
    homeserver::config::Config::from_file(&config_path).map_err(|err| {
        Failure::broke(format!("the generated config does not load (a bug): {err}"))
    })?;
    Ok(())
}
