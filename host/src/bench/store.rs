//! The benchmark history: every run, with its settings, machine and raw samples, in SQLite.
//!
//! SQLite (through rusqlite, with SQLite compiled in so no system library is needed) because
//! the history is appended to by many runs over months, queried by run, tag and metric, and
//! must survive a crash mid-write: one file, transactions, and any `sqlite3` shell can read it.
//!
//! Raw samples are stored, not summaries, so a better statistic or a new regression rule can
//! be applied to old runs later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::{Case, Run};
use crate::error::{Error, Result};

/// The schema version this build writes (SQLite's `user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id          INTEGER PRIMARY KEY,
    started_at  TEXT NOT NULL,     -- RFC 3339, UTC
    unix_time   INTEGER NOT NULL,
    tag         TEXT,
    git_rev     TEXT,
    version     TEXT NOT NULL,     -- keepsync's version
    settings    TEXT NOT NULL,     -- JSON: workloads, classes, seed, repeats, ...
    machine     TEXT NOT NULL,     -- JSON: cores, CPU, crypto features, memory, kernel
    peers       TEXT NOT NULL      -- JSON: each peer and whether it ran
);
CREATE TABLE IF NOT EXISTS cases (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    workload    TEXT NOT NULL,
    size_class  TEXT NOT NULL,
    tool        TEXT NOT NULL,
    command     TEXT NOT NULL,
    input_bytes INTEGER NOT NULL,
    files       INTEGER NOT NULL,
    PRIMARY KEY (run_id, workload, size_class, tool)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id      INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    workload    TEXT NOT NULL,
    size_class  TEXT NOT NULL,
    tool        TEXT NOT NULL,
    metric      TEXT NOT NULL,
    repeat      INTEGER NOT NULL,
    value       REAL NOT NULL,
    PRIMARY KEY (run_id, workload, size_class, tool, metric, repeat)
);
CREATE TABLE IF NOT EXISTS baseline (
    name        TEXT PRIMARY KEY,
    run_id      INTEGER NOT NULL REFERENCES runs(id)
);
";

/// SQLite integers are signed; sizes never come near 2^63.
fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An open history database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

/// One line of `bench history`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunInfo {
    /// Run id.
    pub id: i64,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Its tag.
    pub tag: Option<String>,
    /// The git revision it measured.
    pub git_rev: Option<String>,
    /// Whether it is the baseline.
    pub baseline: bool,
}

/// The default database: `$XDG_DATA_HOME/keepsync/bench.sqlite`, else
/// `~/.local/share/keepsync/bench.sqlite`.
pub fn default_path() -> Result<PathBuf> {
    crate::io::xdg_path("XDG_DATA_HOME", ".local/share", "bench.sqlite", "--db FILE")
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |reason: String| Error::History { path: path.to_path_buf(), reason };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
        }
        let conn = Connection::open(path).map_err(|e| fail(e.to_string()))?;
        let store = Self { conn, path: path.to_path_buf() };
        let version: i64 =
            store.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| fail(e.to_string()))?;
        if version > SCHEMA_VERSION {
            return Err(fail(format!(
                "written by a newer keepsync (schema {version}, this one knows {SCHEMA_VERSION}); upgrade keepsync"
            )));
        }
        store
            .conn
            .execute_batch(&format!(
                "PRAGMA foreign_keys = ON; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION};"
            ))
            .map_err(|e| fail(e.to_string()))?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> Error {
        Error::History { path: self.path.clone(), reason: e.to_string() }
    }

    fn json<T: serde::de::DeserializeOwned>(&self, id: i64, text: &str) -> Result<T> {
        serde_json::from_str(text).map_err(|e| self.err(format!("run {id} has unreadable JSON: {e}")))
    }

    /// Stores `run` in one transaction and returns its id.
    pub fn insert(&mut self, run: &Run) -> Result<i64> {
        let path = self.path.clone();
        let err = |e: rusqlite::Error| Error::History { path: path.clone(), reason: e.to_string() };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "INSERT INTO runs (started_at, unix_time, tag, git_rev, version, settings, machine, peers)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                run.started_at,
                run.unix_time,
                run.tag,
                run.git_rev,
                run.version,
                run.settings.to_string(),
                run.machine.to_string(),
                serde_json::to_string(&run.peers).expect("peers serialize"),
            ],
        )
        .map_err(err)?;
        let id = tx.last_insert_rowid();
        for case in &run.cases {
            tx.execute(
                "INSERT INTO cases VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    id,
                    case.workload,
                    case.size_class,
                    case.tool,
                    case.command,
                    to_sql_int(case.input_bytes),
                    to_sql_int(case.files)
                ],
            )
            .map_err(err)?;
            for (metric, values) in &case.samples {
                for (repeat, value) in values.iter().enumerate() {
                    tx.execute(
                        "INSERT INTO samples VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![id, case.workload, case.size_class, case.tool, metric, repeat as i64, value],
                    )
                    .map_err(err)?;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(id)
    }

    /// Resolves a run name: an id, `latest`, `baseline`, or a tag (its latest run).
    pub fn resolve(&self, name: &str) -> Result<i64> {
        let found: Option<i64> = match name {
            "latest" => {
                self.conn.query_row("SELECT max(id) FROM runs", [], |r| r.get(0)).map_err(|e| self.err(e))?
            }
            "baseline" => self
                .conn
                .query_row("SELECT run_id FROM baseline WHERE name = 'baseline'", [], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?,
            _ => match name.parse::<i64>() {
                Ok(id) => self
                    .conn
                    .query_row("SELECT id FROM runs WHERE id = ?1", [id], |r| r.get(0))
                    .optional()
                    .map_err(|e| self.err(e))?,
                Err(_) => self
                    .conn
                    .query_row("SELECT max(id) FROM runs WHERE tag = ?1", [name], |r| r.get(0))
                    .map_err(|e| self.err(e))?,
            },
        };
        found.ok_or_else(|| Error::UnknownRun(name.to_string()))
    }

    /// Makes `id` the baseline.
    pub fn set_baseline(&self, id: i64) -> Result<()> {
        self.conn
            .execute("INSERT OR REPLACE INTO baseline (name, run_id) VALUES ('baseline', ?1)", [id])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Every run, oldest first (at most the last `limit`).
    pub fn list(&self, limit: usize) -> Result<Vec<RunInfo>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, started_at, tag, git_rev, id IN (SELECT run_id FROM baseline)
                 FROM runs ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok(RunInfo {
                    id: r.get(0)?,
                    started_at: r.get(1)?,
                    tag: r.get(2)?,
                    git_rev: r.get(3)?,
                    baseline: r.get(4)?,
                })
            })
            .map_err(|e| self.err(e))?;
        let mut runs = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))?;
        runs.reverse();
        Ok(runs)
    }

    /// Loads run `id` with all its samples.
    pub fn load(&self, id: i64) -> Result<Run> {
        let (started_at, unix_time, tag, git_rev, version, settings, machine, peers) = self
            .conn
            .query_row(
                "SELECT started_at, unix_time, tag, git_rev, version, settings, machine, peers FROM runs WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, String>(6)?,
                        r.get::<_, String>(7)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| Error::UnknownRun(id.to_string()))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT workload, size_class, tool, command, input_bytes, files FROM cases WHERE run_id = ?1
                 ORDER BY rowid",
            )
            .map_err(|e| self.err(e))?;
        let mut cases = stmt
            .query_map([id], |r| {
                Ok(Case {
                    workload: r.get(0)?,
                    size_class: r.get(1)?,
                    tool: r.get(2)?,
                    command: r.get(3)?,
                    input_bytes: u64::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                    files: u64::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                    samples: BTreeMap::new(),
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| self.err(e))?;
        let mut stmt = self
            .conn
            .prepare(
                "SELECT workload, size_class, tool, metric, value FROM samples WHERE run_id = ?1
                 ORDER BY metric, repeat",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([id], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        for row in rows {
            let (workload, class, tool, metric, value): (String, String, String, String, f64) =
                row.map_err(|e| self.err(e))?;
            if let Some(case) =
                cases.iter_mut().find(|c| c.workload == workload && c.size_class == class && c.tool == tool)
            {
                case.samples.entry(metric).or_default().push(value);
            }
        }
        Ok(Run {
            id: Some(id),
            started_at,
            unix_time,
            tag,
            git_rev,
            version,
            settings: self.json(id, &settings)?,
            machine: self.json(id, &machine)?,
            peers: self.json(id, &peers)?,
            cases,
        })
    }

    /// Every run's id and start time with the median of `metric` for one case, oldest first:
    /// the data of the history chart.
    pub fn series(
        &self,
        workload: &str,
        class: &str,
        tool: &str,
        metric: &str,
    ) -> Result<Vec<(i64, Vec<f64>)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT run_id, value FROM samples WHERE workload = ?1 AND size_class = ?2 AND tool = ?3
                 AND metric = ?4 ORDER BY run_id, repeat",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![workload, class, tool, metric], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out: Vec<(i64, Vec<f64>)> = Vec::new();
        for row in rows {
            let (id, value) = row.map_err(|e| self.err(e))?;
            match out.last_mut() {
                Some((last, values)) if *last == id => values.push(value),
                _ => out.push((id, vec![value])),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn synthetic_run(tag: Option<&str>, wall: &[f64]) -> Run {
        let mut samples = BTreeMap::new();
        samples.insert("wall_s".to_string(), wall.to_vec());
        samples.insert("mb_per_s".to_string(), wall.iter().map(|w| 8.0 / w).collect());
        Run {
            id: None,
            started_at: "2026-11-25T12:00:00Z".into(),
            unix_time: 1_795_000_000,
            tag: tag.map(Into::into),
            git_rev: Some("abc123".into()),
            version: "0.1.0".into(),
            settings: serde_json::json!({"seed": 1, "repeat": wall.len()}),
            machine: serde_json::json!({"cores": 2}),
            peers: vec![super::super::PeerStatus { tool: "zstd".into(), status: "not installed".into() }],
            cases: vec![Case {
                workload: "pack".into(),
                size_class: "small".into(),
                tool: "keepsync".into(),
                command: "keepsync pack".into(),
                input_bytes: 8 << 20,
                files: 2000,
                samples,
            }],
        }
    }

    #[test]
    fn runs_round_trip_and_resolve_by_id_tag_latest_and_baseline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/bench.sqlite");
        let mut store = Store::open(&path).unwrap();
        let first = synthetic_run(Some("before"), &[0.5, 0.52, 0.49]);
        let a = store.insert(&first).unwrap();
        let b = store.insert(&synthetic_run(None, &[0.4, 0.41])).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        let mut loaded = store.load(a).unwrap();
        assert_eq!(loaded.id, Some(a));
        loaded.id = None;
        assert_eq!(serde_json::to_value(&loaded).unwrap(), serde_json::to_value(&first).unwrap());
        assert_eq!(store.resolve("before").unwrap(), a);
        assert_eq!(store.resolve("latest").unwrap(), b);
        assert_eq!(store.resolve(&b.to_string()).unwrap(), b);
        assert!(matches!(store.resolve("baseline"), Err(Error::UnknownRun(_))));
        assert!(matches!(store.resolve("999"), Err(Error::UnknownRun(_))));
        assert!(matches!(store.resolve("no-such-tag"), Err(Error::UnknownRun(_))));
        store.set_baseline(a).unwrap();
        assert_eq!(store.resolve("baseline").unwrap(), a);
        let list = store.list(10).unwrap();
        assert_eq!(list.iter().map(|r| (r.id, r.baseline)).collect::<Vec<_>>(), [(a, true), (b, false)]);
        let series = store.series("pack", "small", "keepsync", "wall_s").unwrap();
        assert_eq!(series, [(a, vec![0.5, 0.52, 0.49]), (b, vec![0.4, 0.41])]);
    }

    #[test]
    fn a_file_that_is_not_a_database_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.sqlite");
        std::fs::write(&path, b"this is not sqlite, just some text that is long enough to matter").unwrap();
        let e = Store::open(&path).err().unwrap();
        assert!(matches!(e, Error::History { .. }), "{e}");
        assert!(e.hint().unwrap().contains("--db"));
    }
}
