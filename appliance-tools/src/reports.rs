//! `appliance reports`: the content reports users filed from their clients (events, rooms,
//! users), through the admin socket when the homeserver runs and from the database when it is
//! stopped.

use homeserver::admin::wire::{Report, ReportList};

use crate::admin_client::AdminClient;
use crate::cli::ReportsArgs;
use crate::exit::{Exit, Failure};
use crate::unit::{ServerState, Unit};

/// Runs `appliance reports`.
pub fn run(unit: &Unit, args: &ReportsArgs) -> Result<Exit, Failure> {
    let config = unit.config()?;
    let reports = if matches!(unit.server_state()?, ServerState::Running) {
        AdminClient::new(unit.socket_path())
            .get::<ReportList>("/v1/reports")?
            .reports
    } else {
        crate::offline::with_store(&config.data_dir, |store| async move {
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
