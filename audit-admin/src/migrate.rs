//! `migrate up|down|status`: the embedded migrations of `audit-migrations`.

use crate::cli::{Global, MigrateCommand};
use crate::error::AdminError;
use crate::report::Report;
use serde::Serialize;

#[derive(Serialize)]
struct Status {
    applied: Vec<String>,
    pending: Vec<String>,
    unknown: Vec<String>,
}

#[derive(Serialize)]
struct Changed {
    applied: Vec<String>,
    reverted: Vec<String>,
}

pub async fn run(global: &Global, command: &MigrateCommand) -> Result<Report, AdminError> {
    let url = &global.database_url;
    match command {
        MigrateCommand::Status => {
            let s = audit_migrations::status(url).await?;
            let mut text = String::new();
            for v in &s.applied {
                text.push_str(&format!("applied  {v}\n"));
            }
            for v in &s.pending {
                text.push_str(&format!("pending  {v}\n"));
            }
            for v in &s.unknown {
                text.push_str(&format!("unknown  {v}  (applied by a newer release)\n"));
            }
            text.push_str(&format!(
                "{} applied, {} pending, {} unknown",
                s.applied.len(),
                s.pending.len(),
                s.unknown.len()
            ));
            let status = Status {
                applied: s.applied,
                pending: s.pending,
                unknown: s.unknown,
            };
            Ok(Report::new(&status, text))
        }
        MigrateCommand::Up => {
            audit_migrations::ensure_known(url).await?;
            let applied = audit_migrations::run_pending(url).await?;
            let text = if applied.is_empty() {
                "schema is up to date".to_owned()
            } else {
                format!("applied {}", applied.join(", "))
            };
            let changed = Changed {
                applied,
                reverted: vec![],
            };
            Ok(Report::new(&changed, text))
        }
        MigrateCommand::Down(args) => {
            if !args.yes {
                let what = if args.all {
                    "revert every migration (drops all data)".to_owned()
                } else {
                    format!(
                        "revert the newest {} migration(s) (drops their tables and data)",
                        args.steps
                    )
                };
                return Err(AdminError::NeedsConfirmation(what));
            }
            let steps = if args.all { usize::MAX } else { args.steps };
            let reverted = audit_migrations::revert_last(url, steps).await?;
            let text = if reverted.is_empty() {
                "nothing to revert".to_owned()
            } else {
                format!("reverted {}", reverted.join(", "))
            };
            let changed = Changed {
                applied: vec![],
                reverted,
            };
            Ok(Report::new(&changed, text))
        }
    }
}
