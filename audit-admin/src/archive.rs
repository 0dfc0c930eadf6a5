//! The archive of one day: its events, the signals they belong to, and a
//! manifest, written through `object_store` (a local folder by default).
//!
//! Layout under the archive root, one folder per day:
//!
//! ```text
//! signal_events/day=2026-09-01/events.jsonl.zst          every row of the day's partition
//! signal_events/day=2026-09-01/signals.jsonl.zst         the signals those events belong to
//! signal_events/day=2026-09-01/signals-purged.jsonl.zst  the signals that left the database with the day
//! signal_events/day=2026-09-01/manifest.json             written last: the archive exists once it does
//! ```
//!
//! Each part is zstd-compressed JSON lines, one row per line exactly as
//! PostgreSQL's `row_to_json` renders it (so `json_populate_recordset` on
//! the same row type restores it bit for bit: numerics, microseconds and
//! JSONB included). The manifest holds, per part, the row count, the time
//! range, the SHA-256 of the file and of its uncompressed lines, and the
//! schema version (newest migration) the rows were read under. A part is
//! trusted only after it has been read back and every one of those matched.

use crate::error::AdminError;
use chrono::{DateTime, NaiveDate, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::sync::Arc;

pub const FORMAT: &str = "signal-audit-archive";
pub const FORMAT_VERSION: u32 = 1;
/// zstd level: 3 is zstd's default, about 10x on these rows at a fraction
/// of the CPU of the higher levels (the machine has 2 cores).
const LEVEL: i32 = 3;

/// The parts a day's archive can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartKind {
    Events,
    Signals,
    SignalsPurged,
}

impl PartKind {
    pub fn file(self) -> &'static str {
        match self {
            PartKind::Events => "events.jsonl.zst",
            PartKind::Signals => "signals.jsonl.zst",
            PartKind::SignalsPurged => "signals-purged.jsonl.zst",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    pub kind: PartKind,
    pub file: String,
    pub rows: u64,
    /// Compressed size.
    pub bytes: u64,
    /// SHA-256 (hex) of the file as stored.
    pub sha256: String,
    /// SHA-256 (hex) of the uncompressed JSON lines.
    pub content_sha256: String,
    pub min_ts: Option<DateTime<Utc>>,
    pub max_ts: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub format_version: u32,
    pub day: NaiveDate,
    /// Newest migration applied when the rows were read.
    pub schema_version: String,
    pub created_at: DateTime<Utc>,
    pub parts: Vec<Part>,
}

impl Manifest {
    pub fn part(&self, kind: PartKind) -> Option<&Part> {
        self.parts.iter().find(|p| p.kind == kind)
    }

    pub fn rows(&self, kind: PartKind) -> u64 {
        self.part(kind).map_or(0, |p| p.rows)
    }
}

/// Builds one part: JSON lines through a zstd encoder, hashed as they go.
pub struct PartWriter {
    kind: PartKind,
    encoder: zstd::Encoder<'static, Vec<u8>>,
    content: Sha256,
    rows: u64,
    min_ts: Option<DateTime<Utc>>,
    max_ts: Option<DateTime<Utc>>,
}

/// A finished part, ready to store.
pub struct PartBuf {
    pub part: Part,
    pub data: Vec<u8>,
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

impl PartWriter {
    pub fn new(kind: PartKind) -> Result<Self, AdminError> {
        Ok(Self {
            kind,
            encoder: zstd::Encoder::new(Vec::new(), LEVEL)?,
            content: Sha256::new(),
            rows: 0,
            min_ts: None,
            max_ts: None,
        })
    }

    /// One row; `ts` widens the part's time range.
    pub fn push(&mut self, line: &str, ts: Option<DateTime<Utc>>) -> Result<(), AdminError> {
        self.encoder.write_all(line.as_bytes())?;
        self.encoder.write_all(b"\n")?;
        self.content.update(line.as_bytes());
        self.content.update(b"\n");
        self.rows += 1;
        if let Some(ts) = ts {
            self.min_ts = Some(self.min_ts.map_or(ts, |m| m.min(ts)));
            self.max_ts = Some(self.max_ts.map_or(ts, |m| m.max(ts)));
        }
        Ok(())
    }

    pub fn finish(self) -> Result<PartBuf, AdminError> {
        let data = self.encoder.finish()?;
        Ok(PartBuf {
            part: Part {
                kind: self.kind,
                file: self.kind.file().to_owned(),
                rows: self.rows,
                bytes: data.len() as u64,
                sha256: sha256_hex(&data),
                content_sha256: hex(&self.content.finalize()),
                min_ts: self.min_ts,
                max_ts: self.max_ts,
            },
            data,
        })
    }
}

/// Verified, uncompressed JSON lines of a part.
pub struct Lines {
    content: Vec<u8>,
}

impl Lines {
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.content
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| std::str::from_utf8(l).unwrap_or(""))
    }
}

/// Where archives live.
#[derive(Clone)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// How to name it in messages.
    pub location: String,
}

impl Archive {
    /// A local folder (created when missing), or a URL object_store knows
    /// (`file:///…`, `memory://`, `s3://bucket/prefix`).
    pub fn open(location: &str) -> Result<Self, AdminError> {
        if location.contains("://") {
            let url = url::Url::parse(location)
                .map_err(|e| AdminError::invalid("--archive-url", e.to_string()))?;
            // S3 and S3-compatible stores take credentials, region and
            // endpoint from the environment, as the AWS tools do
            // (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION,
            // AWS_ENDPOINT, AWS_ALLOW_HTTP, …): object_store's option keys
            // are those names in lower case. Never in the URL, which is
            // printed.
            let options = std::env::vars()
                .filter(|(key, _)| key.starts_with("AWS_"))
                .map(|(key, value)| (key.to_ascii_lowercase(), value));
            // The S3 client's HTTPS (reqwest, built without a crypto
            // provider of its own) uses the process's: ring, as everywhere
            // else here. An error only says one is installed already.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let (store, root) = object_store::parse_url_opts(&url, options)?;
            Ok(Self {
                store: Arc::from(store),
                root,
                location: location.to_owned(),
            })
        } else {
            std::fs::create_dir_all(location)?;
            let store = object_store::local::LocalFileSystem::new_with_prefix(location)?;
            Ok(Self {
                store: Arc::new(store),
                root: Path::default(),
                location: location.to_owned(),
            })
        }
    }

    fn path(&self, day: NaiveDate, file: &str) -> Path {
        let mut path = self.root.clone();
        for segment in [
            "signal_events".to_owned(),
            format!("day={day}"),
            file.to_owned(),
        ] {
            path = path.clone().join(segment.as_str());
        }
        path
    }

    /// For messages: where a day's file is.
    pub fn describe(&self, day: NaiveDate, file: &str) -> String {
        format!(
            "{}/signal_events/day={day}/{file}",
            self.location.trim_end_matches('/')
        )
    }

    /// The day's manifest; `None` when the day was never archived.
    pub async fn manifest(&self, day: NaiveDate) -> Result<Option<Manifest>, AdminError> {
        let path = self.path(day, "manifest.json");
        let bytes = match self.store.get(&path).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| AdminError::corrupt(self.describe(day, "manifest.json"), e.to_string()))?;
        if manifest.format != FORMAT || manifest.format_version != FORMAT_VERSION {
            return Err(AdminError::corrupt(
                self.describe(day, "manifest.json"),
                format!(
                    "format {} version {} is not {FORMAT} version {FORMAT_VERSION}",
                    manifest.format, manifest.format_version
                ),
            ));
        }
        if manifest.day != day {
            return Err(AdminError::corrupt(
                self.describe(day, "manifest.json"),
                format!("manifest is for day {}", manifest.day),
            ));
        }
        Ok(Some(manifest))
    }

    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<(), AdminError> {
        let json = serde_json::to_vec_pretty(manifest)
            .map_err(|e| AdminError::State(format!("manifest: {e}")))?;
        self.store
            .put(
                &self.path(manifest.day, "manifest.json"),
                PutPayload::from(json),
            )
            .await?;
        Ok(())
    }

    /// Stores a part and reads it back: the stored file must hash and
    /// decompress to exactly what was written.
    pub async fn put_part(&self, day: NaiveDate, buf: PartBuf) -> Result<Part, AdminError> {
        let path = self.path(day, &buf.part.file);
        self.store.put(&path, PutPayload::from(buf.data)).await?;
        self.read_part(day, &buf.part).await?;
        Ok(buf.part)
    }

    /// Reads a part and checks it against its manifest entry: file hash,
    /// decompression, content hash and row count.
    pub async fn read_part(&self, day: NaiveDate, part: &Part) -> Result<Lines, AdminError> {
        let name = self.describe(day, &part.file);
        let path = self.path(day, &part.file);
        let data = match self.store.get(&path).await {
            Ok(got) => got.bytes().await?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(AdminError::corrupt(name, "file is missing"));
            }
            Err(e) => return Err(e.into()),
        };
        let sha = sha256_hex(&data);
        if sha != part.sha256 {
            return Err(AdminError::corrupt(
                name,
                format!(
                    "checksum mismatch: file has sha256 {sha}, manifest says {}",
                    part.sha256
                ),
            ));
        }
        let mut content = Vec::new();
        zstd::Decoder::new(&data[..])?
            .read_to_end(&mut content)
            .map_err(|e| AdminError::corrupt(&name, format!("cannot decompress: {e}")))?;
        let content_sha = sha256_hex(&content);
        if content_sha != part.content_sha256 {
            return Err(AdminError::corrupt(
                name,
                format!(
                    "content checksum mismatch: {content_sha}, manifest says {}",
                    part.content_sha256
                ),
            ));
        }
        let lines = Lines { content };
        let rows = lines.iter().count() as u64;
        if rows != part.rows {
            return Err(AdminError::corrupt(
                name,
                format!("{rows} rows, manifest says {}", part.rows),
            ));
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 9, 1).unwrap_or_default()
    }

    #[tokio::test]
    async fn a_part_reads_back_and_a_changed_byte_is_caught() -> Result<(), AdminError> {
        let archive = Archive::open("memory://")?;
        let mut writer = PartWriter::new(PartKind::Events)?;
        writer.push(r#"{"a":1}"#, None)?;
        writer.push(r#"{"a":2}"#, None)?;
        let part = archive.put_part(day(), writer.finish()?).await?;
        assert_eq!(part.rows, 2);
        let lines = archive.read_part(day(), &part).await?;
        assert_eq!(
            lines.iter().collect::<Vec<_>>(),
            [r#"{"a":1}"#, r#"{"a":2}"#]
        );

        let mut wrong = part.clone();
        wrong.sha256 = "0".repeat(64);
        let error = archive.read_part(day(), &wrong).await.err();
        assert!(
            matches!(error, Some(AdminError::Corrupt { .. })),
            "{error:?}"
        );
        assert!(archive.manifest(day()).await?.is_none());
        Ok(())
    }
}
