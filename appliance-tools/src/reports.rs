//! `appliance reports`: the content reports users filed from their clients (events, rooms,
//! users), through the admin socket when the homeserver runs and from the database when it is
//! stopped. `appliance notice`: the admin's answer channel, a server notice to users (needs the
//! running homeserver, which signs and sends the message).

use homeserver::admin::wire::{NoticesSent, Report, ReportList, SendNotice};

use crate::base::admin_client::AdminClient;
use crate::base::exit::{Exit, Failure};
use crate::cli::{NoticeArgs, ReportsArgs};
use crate::unit::{START_HINT, ServerState, Unit};

/// Runs `appliance reports`.
pub fn run(unit: &Unit, args: &ReportsArgs) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let reports = if matches!(unit.server_state()?, ServerState::Running) {
        AdminClient::new(unit.socket_path())
            .get::<ReportList>("/v1/reports")?
            .reports
    } else {
        crate::unit::offline::with_store(&config.data_dir, |store| async move {
            store.read(homeserver::store::admin::reports).await
        })?
    };
    if args.json {
        let list = ReportList { reports };
        println!(
            "{}",
            serde_json::to_string_pretty(&list)
                .map_err(|err| Failure::broke(format!("encoding JSON: {err}")))?
        );
    } else {
        print_reports(&reports);
    }
    Ok(Exit::Success)
}

fn print_reports(reports: &[Report]) {
    if reports.is_empty() {
        println!("No reports.");
        return;
    }
    for report in reports {
        let when = time::OffsetDateTime::from_unix_timestamp(report.created_ts / 1000)
            .map(|t| {
                format!(
                    "{:04}-{:02}-{:02} {:02}:{:02} UTC",
                    t.year(),
                    u8::from(t.month()),
                    t.day(),
                    t.hour(),
                    t.minute()
                )
            })
            .unwrap_or_else(|_| report.created_ts.to_string());
        let what = match report.kind.as_str() {
            "event" => format!(
                "event {} in {} (sent by {})",
                report.event_id.as_deref().unwrap_or("?"),
                report.room_id.as_deref().unwrap_or("?"),
                report.target_user.as_deref().unwrap_or("?")
            ),
            "room" => format!("room {}", report.room_id.as_deref().unwrap_or("?")),
            _ => format!("user {}", report.target_user.as_deref().unwrap_or("?")),
        };
        println!("#{} {when}  {} reported {what}", report.id, report.reporter);
        if !report.reason.is_empty() {
            println!("    reason: {}", report.reason);
        }
    }
}

/// Runs `appliance notice`.
pub fn notice(unit: &Unit, args: &NoticeArgs) -> Result<Exit, Failure> {
    if !matches!(unit.server_state()?, ServerState::Running) {
        return Err(Failure::state(format!(
            "the homeserver is not running: it sends the notice. Start it (`{START_HINT}`) and \
             try again."
        )));
    }
    let sent: NoticesSent = AdminClient::new(unit.socket_path()).post(
        "/v1/notices",
        &SendNotice {
            user: args.user.clone(),
            body: args.message.clone(),
        },
    )?;
    match sent.sent.len() {
        0 => println!("No active accounts: nobody to notify."),
        1 => println!("Sent the notice to {}.", sent.sent[0]),
        n => println!("Sent the notice to {n} users."),
    }
    Ok(Exit::Success)
}
