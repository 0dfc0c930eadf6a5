//! Tags are edited under the signal's row lock: read, edit, write back.

use super::{Committed, committed};
use audit_db::models::SignalRow;
use audit_db::schema::signals;
use audit_db::{DbError, PgPool};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

#[tracing::instrument(name = "UPDATE signals", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "signals"))]
pub async fn add_tags(
    pool: &PgPool,
    signal_id: Uuid,
    tags: Vec<String>,
) -> Result<Committed<SignalRow>, DbError> {
    change_tags(pool, signal_id, |current| {
        for tag in tags {
            if !current.contains(&tag) {
                current.push(tag);
            }
        }
    })
    .await
}

#[tracing::instrument(name = "UPDATE signals", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "UPDATE", db.collection.name = "signals"))]
pub async fn remove_tags(
    pool: &PgPool,
    signal_id: Uuid,
    tags: Vec<String>,
) -> Result<Committed<SignalRow>, DbError> {
    change_tags(pool, signal_id, |current| {
        current.retain(|t| !tags.contains(t))
    })
    .await
}

/// Reads the tags under the row lock, edits them, writes them back.
async fn change_tags(
    pool: &PgPool,
    signal_id: Uuid,
    edit: impl FnOnce(&mut Vec<String>) + Send,
) -> Result<Committed<SignalRow>, DbError> {
    let mut conn = pool.get().await?;
    let value = conn
        .transaction::<_, DbError, _>(async |conn| {
            let mut tags = lock_signal(conn, signal_id).await?.tags;
            edit(&mut tags);
            Ok(diesel::update(signals::table.find(signal_id))
                .set(signals::tags.eq(tags))
                .returning(SignalRow::as_returning())
                .get_result(conn)
                .await?)
        })
        .await?;
    committed(&mut conn, value).await
}

async fn lock_signal(conn: &mut AsyncPgConnection, signal_id: Uuid) -> Result<SignalRow, DbError> {
    signals::table
        .find(signal_id)
        .select(SignalRow::as_select())
        .for_no_key_update()
        .first(conn)
        .await
        .optional()?
        .ok_or_else(|| DbError::not_found("signal", signal_id))
}
