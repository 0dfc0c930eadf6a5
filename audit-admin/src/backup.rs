//! `backup`, `backup-info` and `restore-backup --to TIME`: pgBackRest, the
//! tool PostgreSQL operators use, driven with the same commands as
//! `scripts/backup.sh` (the local stack's clusters) and the chart's CronJob:
//!
//! ```text
//! pgbackrest --config=C --stanza=S --type=incr backup
//! pgbackrest --config=C --stanza=S --output=json info
//! pgbackrest --config=C --stanza=S --pg1-path=TARGET --type=time --target=TIME \
//!            --target-action=promote --archive-mode=off restore
//! ```
//!
//! A restore always goes into a FRESH data directory (never over the live
//! primary); with `--port` the copy is configured to run beside the source,
//! and with `--start` it is started and waited for until recovery has
//! replayed to TIME and promoted. pgBackRest and the server run as the
//! `postgres` OS user when this runs as root, as they must.

use crate::cli::{BackupArgs, PgBackRestArgs, RestoreBackupArgs};
use crate::error::AdminError;
use crate::report::{self, Report};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::Command;

fn run_as(args: &PgBackRestArgs) -> Option<String> {
    if let Some(user) = &args.run_as {
        return Some(user.clone());
    }
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root.then(|| "postgres".to_owned())
}

/// `program args…`, as the configured OS user.
fn command(user: &Option<String>, program: &str, args: &[String]) -> Command {
    let mut cmd = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.arg("-u").arg(user).arg("--").arg(program);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args).stdin(Stdio::null());
    cmd
}

async fn pgbackrest(args: &PgBackRestArgs, extra: &[String]) -> Result<String, AdminError> {
    let mut all = vec![
        format!("--config={}", args.config.display()),
        format!("--stanza={}", args.stanza),
        "--log-level-console=warn".to_owned(),
    ];
    all.extend_from_slice(extra);
    let output = command(&run_as(args), &args.pgbackrest, &all)
        .output()
        .await
        .map_err(|e| AdminError::State(format!("cannot run {}: {e}", args.pgbackrest)))?;
    if !output.status.success() {
        return Err(AdminError::State(format!(
            "pgbackrest {} failed ({}): {}",
            extra.last().map_or("", String::as_str),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[derive(Debug, Serialize)]
pub struct BackupSet {
    pub label: String,
    pub kind: String,
    pub start: i64,
    pub stop: i64,
    pub size: i64,
    pub repository_size: i64,
}

/// The backups of the stanza, oldest first (`pgbackrest info --output=json`).
async fn backups(args: &PgBackRestArgs) -> Result<Vec<BackupSet>, AdminError> {
    let json = pgbackrest(args, &["--output=json".into(), "info".into()]).await?;
    let info: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| AdminError::State(format!("pgbackrest info: not JSON: {e}")))?;
    let sets = info
        .as_array()
        .and_then(|stanzas| stanzas.iter().find(|s| s["name"] == args.stanza.as_str()))
        .and_then(|s| s["backup"].as_array())
        .cloned()
        .unwrap_or_default();
    Ok(sets
        .iter()
        .map(|b| BackupSet {
            label: b["label"].as_str().unwrap_or_default().to_owned(),
            kind: b["type"].as_str().unwrap_or_default().to_owned(),
            start: b["timestamp"]["start"].as_i64().unwrap_or_default(),
            stop: b["timestamp"]["stop"].as_i64().unwrap_or_default(),
            size: b["info"]["size"].as_i64().unwrap_or_default(),
            repository_size: b["info"]["repository"]["size"].as_i64().unwrap_or_default(),
        })
        .collect())
}

fn describe(set: &BackupSet) -> String {
    format!(
        "{} {:<4} {} .. {} ({} of data, {} in the repository)",
        set.label,
        set.kind,
        chrono::DateTime::from_timestamp(set.start, 0).unwrap_or_default(),
        chrono::DateTime::from_timestamp(set.stop, 0).unwrap_or_default(),
        report::size(set.size),
        report::size(set.repository_size)
    )
}

pub async fn backup(args: &BackupArgs) -> Result<Report, AdminError> {
    let started = Instant::now();
    let spinner = report::spinner(&format!("{} backup", args.kind));
    let result = pgbackrest(
        &args.pgbackrest,
        &[format!("--type={}", args.kind), "backup".into()],
    )
    .await;
    spinner.finish_and_clear();
    result?;
    let sets = backups(&args.pgbackrest).await?;
    let latest = sets.into_iter().last().ok_or_else(|| {
        AdminError::State("pgbackrest reported no backup after backing up".into())
    })?;
    let text = format!(
        "backed up in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        describe(&latest)
    );
    Ok(Report::new(&latest, text))
}

pub async fn info(args: &PgBackRestArgs) -> Result<Report, AdminError> {
    let sets = backups(args).await?;
    let mut text: String = sets.iter().map(|s| format!("{}\n", describe(s))).collect();
    text.push_str(&format!("{} backup(s)", sets.len()));
    Ok(Report::new(&sets, text))
}

#[derive(Debug, Serialize)]
struct Restored {
    target: String,
    to: chrono::DateTime<chrono::Utc>,
    url: Option<String>,
    seconds: f64,
}

fn id_of(user: &str, flag: &str) -> Option<u32> {
    let out = std::process::Command::new("id")
        .arg(flag)
        .arg(user)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// A socket folder whose socket path fits the kernel's limit (107 bytes).
fn socket_dir(target: &Path) -> String {
    let dir = target.display().to_string();
    if dir.len() + ".s.PGSQL.65535".len() < 107 {
        dir
    } else {
        format!(
            "/tmp/pgr-{}",
            &crate::archive::sha256_hex(dir.as_bytes())[..16]
        )
    }
}

pub async fn restore(args: &RestoreBackupArgs) -> Result<Report, AdminError> {
    let started = Instant::now();
    let target = &args.target;
    if target.exists() {
        let empty = std::fs::read_dir(target)?.next().is_none();
        if !empty {
            return Err(AdminError::invalid(
                "--target",
                format!(
                    "{} is not empty: a restore needs a fresh directory",
                    target.display()
                ),
            ));
        }
    }
    if args.start && args.port.is_none() {
        return Err(AdminError::invalid(
            "--start",
            "needs --port for the restored server",
        ));
    }
    std::fs::create_dir_all(target)?;
    let target = target.canonicalize()?;
    let user = run_as(&args.pgbackrest);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
    }
    if let Some(user) = &user {
        let (uid, gid) = (id_of(user, "-u"), id_of(user, "-g"));
        std::os::unix::fs::chown(&target, uid, gid)?;
    }
    let to = args.to.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string();
    let spinner = report::spinner("restoring");
    let restored = pgbackrest(
        &args.pgbackrest,
        &[
            format!("--pg1-path={}", target.display()),
            "--type=time".into(),
            format!("--target={to}"),
            "--target-action=promote".into(),
            "--archive-mode=off".into(),
            "restore".into(),
        ],
    )
    .await;
    spinner.finish_and_clear();
    restored?;
    let mut url = None;
    if let Some(port) = args.port {
        let sockets = socket_dir(&target);
        if sockets != target.display().to_string() {
            std::fs::create_dir_all(&sockets)?;
            if let Some(user) = &user {
                std::os::unix::fs::chown(&sockets, id_of(user, "-u"), id_of(user, "-g"))?;
            }
        }
        // Appended, so the settings win over the source's; appending keeps
        // the file's owner.
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(target.join("postgresql.conf"))?;
        use std::io::Write;
        writeln!(
            conf,
            "\n# audit-admin restore-backup\nport = {port}\nlisten_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{sockets}'\ncluster_name = 'audit_restored'\narchive_mode = off"
        )?;
        url = Some(format!("postgres://postgres@127.0.0.1:{port}/postgres"));
    }
    if let (true, Some(url)) = (args.start, &url) {
        let pg_ctl = args.pg_bin.join("pg_ctl").display().to_string();
        let log = target.join("restore.log").display().to_string();
        let status = command(
            &user,
            &pg_ctl,
            &[
                "-D".into(),
                target.display().to_string(),
                "-l".into(),
                log.clone(),
                "-w".into(),
                "-t".into(),
                "120".into(),
                "start".into(),
            ],
        )
        .stdout(Stdio::null())
        .status()
        .await?;
        if !status.success() {
            return Err(AdminError::State(format!(
                "the restored server did not start (log: {log})"
            )));
        }
        wait_promoted(url, Duration::from_secs(120)).await?;
    }
    let out = Restored {
        target: target.display().to_string(),
        to: args.to,
        url,
        seconds: started.elapsed().as_secs_f64(),
    };
    let text = match &out.url {
        Some(url) if args.start => format!(
            "restored to {to} into {} in {:.1} s; running at {url}",
            out.target, out.seconds
        ),
        _ => format!(
            "restored to {to} into {} in {:.1} s; start it with pg_ctl -D {}",
            out.target, out.seconds, out.target
        ),
    };
    Ok(Report::new(&out, text))
}

#[derive(diesel::QueryableByName)]
struct Recovery {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    in_recovery: bool,
}

/// Until the restored server has replayed to its target and promoted.
async fn wait_promoted(url: &str, timeout: Duration) -> Result<(), AdminError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(mut conn) = AsyncPgConnection::establish(url).await {
            let row: Result<Recovery, _> =
                diesel::sql_query("SELECT pg_is_in_recovery() AS in_recovery")
                    .get_result(&mut conn)
                    .await;
            if matches!(row, Ok(Recovery { in_recovery: false })) {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(AdminError::State(format!(
                "the restored server at {url} is still recovering after {} s",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
