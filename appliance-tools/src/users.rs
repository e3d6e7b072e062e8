//! `appliance user …`: accounts, through the admin socket when the homeserver runs and on the
//! database directly when it is stopped.
//!
//! Both paths run the same homeserver service functions, so they behave the same. The one
//! exception is deactivation, which needs the running server: it leaves the user's rooms, and
//! that signs and sends leave events.

use homeserver::admin::wire::{CreateUser, ResetPassword, SetAdmin, UserList, UserSummary};
use homeserver::service::admin as service;

use crate::base::admin_client::AdminClient;
use crate::base::console::{Console, read_secret_file};
use crate::base::exit::{Exit, Failure};
use crate::base::password::check_strength;
use crate::cli::UserCommand;
use crate::unit::{START_HINT, ServerState, Unit};

/// Runs `appliance user …`.
pub fn run(unit: &Unit, command: &UserCommand) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let server_name = config.server_name.clone();
    let online = matches!(unit.server_state()?, ServerState::Running);
    let client = AdminClient::new(unit.socket_path());
    let console = Console::new();
    match command {
        UserCommand::Create {
            user,
            admin,
            password_file,
        } => {
            let user_id = service::parse_new_user(&server_name, user)
                .map_err(crate::base::exit::from_homeserver)?;
            let password = new_password(
                &console,
                user_id.as_str(),
                user_id.localpart(),
                password_file.as_deref(),
            )?;
            let created: UserSummary = if online {
                client.post(
                    "/v1/users",
                    &CreateUser {
                        user: user_id.to_string(),
                        password,
                        admin: *admin,
                    },
                )?
            } else {
                let user = user_id.to_string();
                let admin = *admin;
                crate::unit::offline::with_store(&config.data_dir, |store| async move {
                    service::create_user_in_store(&store, &server_name, &user, password, admin)
                        .await
                })?
            };
            println!(
                "Created {}{}.",
                created.user_id,
                if created.admin { " (server admin)" } else { "" }
            );
        }
        UserCommand::List { json } => {
            let users = if online {
                client.get::<UserList>("/v1/users")?.users
            } else {
                crate::unit::offline::with_store(&config.data_dir, |store| async move {
                    service::list_users_in_store(&store).await
                })?
            };
            if *json {
                let list = UserList { users };
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list)
                        .map_err(|err| Failure::broke(format!("encoding JSON: {err}")))?
                );
            } else {
                print_table(&users);
            }
        }
        UserCommand::ResetPassword {
            user,
            password_file,
        } => {
            let user_id = service::parse_user(&server_name, user)
                .map_err(crate::base::exit::from_homeserver)?;
            let password = new_password(
                &console,
                user_id.as_str(),
                user_id.localpart(),
                password_file.as_deref(),
            )?;
            if online {
                client.post::<_, UserSummary>(
                    &format!(
                        "/v1/users/{}/password",
                        homeserver::util::urlencode(user_id.as_str())
                    ),
                    &ResetPassword { password },
                )?;
            } else {
                let user = user_id.to_string();
                crate::unit::offline::with_store(&config.data_dir, |store| async move {
                    service::reset_password_in_store(&store, &server_name, &user, password).await
                })?;
            }
            println!("Set a new password for {user_id}; all of its sessions were logged out.");
        }
        UserCommand::Deactivate { user, yes } => {
            let user_id = service::parse_user(&server_name, user)
                .map_err(crate::base::exit::from_homeserver)?;
            if !online {
                return Err(Failure::state(format!(
                    "the homeserver is not running: deactivating leaves the user's rooms, which \
                     only the running homeserver can do. Start it (`{START_HINT}`) and try again. \
                     To lock the account out meanwhile, use `appliance user reset-password`."
                )));
            }
            if !yes
                && !console.confirm(
                    &format!(
                        "Deactivate {user_id} for good? It cannot log in again and leaves all its rooms."
                    ),
                    false,
                    "--yes",
                )?
            {
                return Err(Failure::state("not deactivated"));
            }
            client.post::<_, UserSummary>(
                &format!(
                    "/v1/users/{}/deactivate",
                    homeserver::util::urlencode(user_id.as_str())
                ),
                &serde_json::json!({}),
            )?;
            println!("Deactivated {user_id}.");
        }
        UserCommand::MakeAdmin { user, revoke } => {
            let user_id = service::parse_user(&server_name, user)
                .map_err(crate::base::exit::from_homeserver)?;
            let admin = !revoke;
            if online {
                client.post::<_, UserSummary>(
                    &format!(
                        "/v1/users/{}/admin",
                        homeserver::util::urlencode(user_id.as_str())
                    ),
                    &SetAdmin { admin },
                )?;
            } else {
                let user = user_id.to_string();
                crate::unit::offline::with_store(&config.data_dir, |store| async move {
                    service::set_admin_in_store(&store, &server_name, &user, admin).await
                })?;
            }
            if admin {
                println!("{user_id} is now a server admin.");
            } else {
                println!("{user_id} is no longer a server admin.");
            }
        }
    }
    Ok(Exit::Success)
}

/// A new password from `--password-file` or typed twice, checked against the policy.
fn new_password(
    console: &Console,
    user_id: &str,
    localpart: &str,
    file: Option<&std::path::Path>,
) -> Result<String, Failure> {
    match file {
        Some(path) => {
            let password = read_secret_file(path)?;
            check_strength(&password, localpart).map_err(|reason| {
                Failure::rejected(format!("the password is too weak: {reason}"))
            })?;
            Ok(password)
        }
        None => console.new_password(user_id, "--password-file", |password| {
            check_strength(password, localpart)
        }),
    }
}

fn print_table(users: &[UserSummary]) {
    if users.is_empty() {
        println!("No accounts yet. Create one with `appliance user create NAME`.");
        return;
    }
    let width = users
        .iter()
        .map(|user| user.user_id.len())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<width$}  {:<5}  {:<11}  {:>7}  CREATED",
        "USER", "ADMIN", "STATE", "DEVICES"
    );
    for user in users {
        println!(
            "{:<width$}  {:<5}  {:<11}  {:>7}  {}",
            user.user_id,
            if user.admin { "yes" } else { "no" },
            if user.deactivated {
                "deactivated"
            } else {
                "active"
            },
            user.devices,
            crate::base::console::format_time_ms(user.created_ts)
        );
    }
}
