//! The ledger's event sink: balances projected into PostgreSQL, exactly once.
//!
//! It reads the canonical events of the `ledger` stream (`Pipeline::stream_events`) from the
//! stored position and applies them in batches. Each batch is one database transaction that
//! changes the `balances` table **and** advances the stored position, so the table always
//! reflects exactly the events up to the position: a sink that dies anywhere (before, during
//! or after a batch) restarts from the position and neither loses nor applies twice.
//!
//! Tables, in a PostgreSQL schema of the operator's choice (default `ledger`):
//! - `balances(account text primary key, balance bigint)`;
//! - `position`, one row per pipeline (`pipeline`, its number): the log topic it projects,
//!   `next_index` (the `ledger` index to apply
//!   next), `resume_offset` (the log offset of the record holding the last applied event, where
//!   a restart reads from; a record can hold several inputs' events, so the index decides
//!   which of its events are new), `resume_count` (the `ledger` count in the log before
//!   `resume_offset`: the canonical rule's state there) and `events_applied`.
//!
//! **Resuming, not replaying.** A restart opens its reader at `resume_offset` with the rule
//! resumed from `resume_count` (`Pipeline::resumed`), so it reads only the log since its last
//! batch, and the log before may be truncated. The pair is exact whatever the records hold:
//! the record at `resume_offset` is read again whole, its events judged from the count
//! before it, and those below `next_index` skipped. Both are written in the batch's own
//! transaction. A position row of an older layout has no `resume_count` (NULL): that
//! projection reads from offset 0 once, says so, and stores the count from its first batch.
//!
//! **Pipelines.** On a log of P pipelines ([`Projection::connect_pipelines`],
//! [`Projection::run_pipelines`]) it reads every pipeline's `ledger` stream, each from its own
//! position row, taking them in turn a batch at a time; a batch holds one pipeline's events and
//! commits with that pipeline's position in the same transaction. The balances of every
//! pipeline share the one `balances` table: account names are unique across pipelines (the
//! ledger's books are sharded whole). A schema of the older single-row layout (`only_row`) is
//! migrated in place at connect: its row becomes pipeline 0's, and a log line says so.
//!
//! Transfers are applied as deltas (`balance - amount`, `balance + amount`) and the result is
//! checked against the balances the entry carries: an event applied twice, or a table edited
//! by hand, stops the sink with [`ProjectionError::Inconsistent`] instead of drifting. The
//! position row is locked (`FOR UPDATE`) and compared in every batch, so two sinks on one
//! schema cannot both apply a batch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use competing_transformers::{EventSourceKey, Offset};
use competing_transformers_kafka::{CanonicalEvent, EventLog, EventStream, LogError, Pipeline, Resume, Shutdown};
use tokio_postgres::Client;

use ledger::{Entry, LEDGER_KEY};

/// Most events one database transaction applies.
pub const BATCH_EVENTS_MAX_DEFAULT: usize = 200;
/// How long the sink waits for more events before committing what it has.
const IDLE_WAIT: Duration = Duration::from_millis(300);

/// Why the projection stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// PostgreSQL refused or is unreachable.
    #[error("PostgreSQL: {0}; is it running (scripts/postgres.sh start) and is DATABASE_URL right?")]
    Database(#[from] tokio_postgres::Error),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The TLS handshake with PostgreSQL failed: most often a certificate signed by a CA
    /// this process does not trust.
    #[error("the TLS handshake with PostgreSQL failed ({source}); if its certificate is signed by a private CA, set {PG_SSL_ROOT_CERT_ENV} to that CA's PEM file")]
    Handshake {
        /// The client's error.
        source: tokio_postgres::Error,
    },
    /// The TLS settings for PostgreSQL are unusable.
    #[error("PostgreSQL TLS: {message}")]
    Tls {
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A `ledger` event does not parse as an [`Entry`].
    #[error("the ledger event at offset {offset}, index {index} is not a ledger entry ({message}); is `{key}` written by the ledger?")]
    BadEntry {
        /// The stream read.
        key: String,
        /// Its record's offset.
        offset: Offset,
        /// Its index.
        index: u64,
        /// The parse error.
        message: String,
    },
    /// The table disagrees with the ledger: applied twice, or edited by hand.
    #[error("balance of `{account}` would be {got} after ledger event {index} but the ledger says {want}; the projection in schema `{schema}` is corrupt: drop the schema and project again")]
    Inconsistent {
        /// The schema.
        schema: String,
        /// The account.
        account: String,
        /// The ledger event's index.
        index: u64,
        /// What the table computed.
        got: i64,
        /// What the ledger says.
        want: u64,
    },
    /// Another sink advanced the position: two sinks run on one schema.
    #[error("the position of pipeline {pipeline} in schema `{schema}` moved to index {found} while this sink was at {expected}: another projection runs on the same schema; run one per schema")]
    Moved {
        /// The schema.
        schema: String,
        /// The pipeline whose position moved.
        pipeline: u32,
        /// Where this sink was.
        expected: u64,
        /// What the table holds.
        found: u64,
    },
    /// The schema already projects another log topic.
    #[error("schema `{schema}` projects topic `{stored}`, not `{topic}`; pick another --schema")]
    OtherTopic {
        /// The schema.
        schema: String,
        /// The topic it projects.
        stored: String,
        /// The topic asked for.
        topic: String,
    },
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
}

/// Where the projection stands, as committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Position {
    /// The `ledger` index applied next.
    pub next_index: u64,
    /// The log offset a restart reads from.
    pub resume_offset: Offset,
    /// Canonical `ledger` events in the log before `resume_offset`; `None` in a row an older
    /// projection stored, which did not keep it.
    pub resume_count: Option<u64>,
    /// Events applied so far (rejections included).
    pub events_applied: u64,
}

/// Called inside each batch's transaction after its changes, before the commit, with the
/// batch's number (from 1, per run). For fault-injection tests: a panic there is a crash at
/// the worst moment.
pub type BeforeCommit = Arc<dyn Fn(u64) + Send + Sync>;

/// How [`Projection::run`] runs.
#[derive(Clone)]
pub struct RunOptions {
    /// Most events per database transaction.
    pub batch_events_max: usize,
    /// Keep going at the log end, until `shutdown`; otherwise stop there.
    pub follow: bool,
    /// Once requested, the run stops after the current batch; never by default.
    pub shutdown: Shutdown,
    /// A fault hook (see [`BeforeCommit`]).
    pub before_commit: Option<BeforeCommit>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            batch_events_max: BATCH_EVENTS_MAX_DEFAULT,
            follow: false,
            shutdown: Shutdown::never(),
            before_commit: None,
        }
    }
}

/// What one [`Projection::run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RunStats {
    /// Transactions committed.
    pub batches: u64,
    /// Events applied.
    pub events: u64,
    /// Where it stopped.
    pub position: Position,
}

/// What one ledger entry does to the `balances` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new row.
    Open {
        /// The account.
        account: String,
        /// Its opening balance.
        balance: u64,
    },
    /// Money moves; the balances are what the ledger says the rows hold afterwards.
    Move {
        /// The account paying.
        from: String,
        /// The account paid.
        to: String,
        /// How much.
        amount: u64,
        /// `from`'s balance afterwards.
        from_balance: u64,
        /// `to`'s balance afterwards.
        to_balance: u64,
    },
}

/// The table change an entry stands for, if any (a rejection changes nothing). Pure.
pub fn change_of(entry: Entry) -> Option<Change> {
    match entry {
        Entry::Opened { account, balance } => Some(Change::Open { account, balance }),
        Entry::Transferred { from, to, amount, from_balance, to_balance, .. } => {
            Some(Change::Move { from, to, amount, from_balance, to_balance })
        }
        Entry::Rejected { .. } => None,
    }
}

/// A PostgreSQL schema name: lower-case letters, digits and `_`, not starting with a digit,
/// so it needs no quoting rules beyond double quotes.
fn check_schema(schema: &str) -> Result<(), ProjectionError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ProjectionError::Config(format!(
            "schema `{schema}` must be 1 to 63 lower-case letters, digits or `_`, not starting with a digit"
        )))
    }
}

fn to_bigint(value: u64) -> i64 {
    // Ledger amounts never exceed TOTAL_MAX = i64::MAX.
    i64::try_from(value).expect("ledger amounts fit a bigint")
}

/// The environment variable naming a PEM CA to trust for PostgreSQL, as libpq's.
pub const PG_SSL_ROOT_CERT_ENV: &str = "PGSSLROOTCERT";

/// TLS to PostgreSQL: used as DATABASE_URL's `sslmode` says (`prefer`, the default, uses it
/// when the server offers it; `require` insists), verifying the server's certificate and
/// name against the system's CAs and [`PG_SSL_ROOT_CERT_ENV`]'s.
fn tls_connector() -> Result<postgres_native_tls::MakeTlsConnector, ProjectionError> {
    let tls = |message: String| ProjectionError::Tls { message };
    let mut builder = native_tls::TlsConnector::builder();
    if let Some(path) = std::env::var_os(PG_SSL_ROOT_CERT_ENV).filter(|p| !p.is_empty()) {
        let shown = std::path::Path::new(&path).display().to_string();
        let pem =
            std::fs::read(&path).map_err(|e| tls(format!("cannot read {shown} ({PG_SSL_ROOT_CERT_ENV}): {e}")))?;
        let certificate = native_tls::Certificate::from_pem(&pem)
            .map_err(|e| tls(format!("{shown} ({PG_SSL_ROOT_CERT_ENV}) is not a PEM certificate: {e}")))?;
        builder.add_root_certificate(certificate);
    }
    let connector = builder.build().map_err(|e| tls(format!("cannot set up TLS: {e}")))?;
    Ok(postgres_native_tls::MakeTlsConnector::new(connector))
}

/// A failed connection: a TLS handshake failure is told apart, since its fix is a CA.
fn connect_error(error: tokio_postgres::Error) -> ProjectionError {
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        if inner.is::<native_tls::Error>() {
            return ProjectionError::Handshake { source: error };
        }
        cause = inner.source();
    }
    ProjectionError::Database(error)
}

/// The balances projection over one PostgreSQL schema.
pub struct Projection {
    client: Client,
    schema: String,
    topic: String,
    key: EventSourceKey,
    /// Each pipeline's committed position, by its number.
    positions: Vec<Position>,
    /// Whether connecting migrated a position table of the single-pipeline layout.
    migrated: bool,
}

/// One pipeline's reader during a run: its stream, the end it reads to, and the batch it is
/// gathering.
struct PipelineReader {
    pipeline: u32,
    stream: EventStream,
    end: Offset,
    /// The record of the last event read, and the index of its first `ledger` event: the
    /// count before it.
    record: (Offset, u64),
    batch: Vec<CanonicalEvent>,
}

impl Projection {
    /// Connects, creates the schema and tables if missing, and reads the stored position.
    /// `topic` is the log topic projected: one schema projects one log, here of one pipeline.
    pub async fn connect(database_url: &str, schema: &str, topic: &str) -> Result<Self, ProjectionError> {
        Self::connect_pipelines(database_url, schema, topic, 1).await
    }

    /// [`Projection::connect`] for a log of `pipelines` pipelines: a position row for each.
    pub async fn connect_pipelines(
        database_url: &str,
        schema: &str,
        topic: &str,
        pipelines: u32,
    ) -> Result<Self, ProjectionError> {
        check_schema(schema)?;
        if pipelines == 0 {
            return Err(ProjectionError::Config("a log has at least one pipeline".into()));
        }
        let (client, connection) =
            tokio_postgres::connect(database_url, tls_connector()?).await.map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(%error, "PostgreSQL connection ended");
            }
        });
        client
            .batch_execute(&format!(
                r#"CREATE SCHEMA IF NOT EXISTS "{schema}";
                   CREATE TABLE IF NOT EXISTS "{schema}".balances (account text PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0));
                   CREATE TABLE IF NOT EXISTS "{schema}".position (
                       pipeline integer PRIMARY KEY CHECK (pipeline >= 0),
                       log_topic text NOT NULL,
                       next_index bigint NOT NULL,
                       resume_offset bigint NOT NULL,
                       events_applied bigint NOT NULL);
                   ALTER TABLE "{schema}".position ADD COLUMN IF NOT EXISTS resume_count bigint;"#
            ))
            .await?;
        let key = EventSourceKey::new(LEDGER_KEY).expect("a valid constant key");
        let mut projection = Self {
            client,
            schema: schema.to_string(),
            topic: topic.to_string(),
            key,
            positions: Vec::new(),
            migrated: false,
        };
        projection.migrate_single_row().await?;
        let insert = format!(
            r#"INSERT INTO "{schema}".position (pipeline, log_topic, next_index, resume_offset, resume_count, events_applied) VALUES ($1, $2, 0, 0, 0, 0) ON CONFLICT DO NOTHING"#
        );
        for pipeline in 0..pipelines {
            projection.client.execute(&insert, &[&(pipeline as i32), &topic]).await?;
        }
        let stored = projection.stored_positions().await?;
        projection.positions = stored.into_iter().take(pipelines as usize).collect();
        Ok(projection)
    }

    /// Moves a position table of the single-pipeline layout (one row, keyed by `only_row`) to
    /// one keyed by `pipeline`, its row becoming pipeline 0's; nothing on a table that has it.
    async fn migrate_single_row(&mut self) -> Result<(), ProjectionError> {
        let schema = self.schema.clone();
        let transaction = self.client.transaction().await?;
        // One migration at a time: a second sink waits here, then finds it done.
        transaction.batch_execute(&format!(r#"LOCK TABLE "{schema}".position IN ACCESS EXCLUSIVE MODE"#)).await?;
        let single = transaction
            .query_opt(
                "SELECT 1 FROM information_schema.columns WHERE table_schema = $1 AND table_name = 'position' AND column_name = 'only_row'",
                &[&schema],
            )
            .await?
            .is_some();
        if !single {
            return Ok(());
        }
        transaction
            .batch_execute(&format!(
                r#"ALTER TABLE "{schema}".position ADD COLUMN pipeline integer NOT NULL DEFAULT 0 CHECK (pipeline >= 0);
                   ALTER TABLE "{schema}".position DROP COLUMN only_row;
                   ALTER TABLE "{schema}".position ADD PRIMARY KEY (pipeline);
                   ALTER TABLE "{schema}".position ALTER COLUMN pipeline DROP DEFAULT;"#
            ))
            .await?;
        transaction.commit().await?;
        self.migrated = true;
        tracing::info!(
            schema = %schema,
            "migrated the position table of the single-pipeline layout in place: its row is now pipeline 0's"
        );
        Ok(())
    }

    /// Whether connecting migrated the schema's position table from the single-pipeline
    /// layout (its row is pipeline 0's now).
    pub fn migrated(&self) -> bool {
        self.migrated
    }

    /// Pipeline 0's position as committed in the database (a log of one pipeline: its only
    /// position).
    pub async fn stored_position(&self) -> Result<Position, ProjectionError> {
        let positions = self.stored_positions().await?;
        Ok(positions.first().copied().unwrap_or_default())
    }

    /// Every pipeline's position as committed in the database, by pipeline number.
    pub async fn stored_positions(&self) -> Result<Vec<Position>, ProjectionError> {
        let schema = &self.schema;
        let rows = self
            .client
            .query(
                &format!(
                    r#"SELECT log_topic, next_index, resume_offset, events_applied, resume_count, pipeline FROM "{schema}".position ORDER BY pipeline"#
                ),
                &[],
            )
            .await?;
        let mut positions = Vec::new();
        for row in rows {
            let stored: String = row.get(0);
            if stored != self.topic {
                return Err(ProjectionError::OtherTopic { schema: schema.clone(), stored, topic: self.topic.clone() });
            }
            let unsigned = |i: usize| row.get::<_, i64>(i) as u64;
            debug_assert_eq!(row.get::<_, i32>(5) as usize, positions.len(), "a row per pipeline from 0");
            positions.push(Position {
                next_index: unsigned(1),
                resume_offset: unsigned(2),
                resume_count: row.get::<_, Option<i64>>(4).map(|count| count as u64),
                events_applied: unsigned(3),
            });
        }
        Ok(positions)
    }

    /// The projected balances.
    pub async fn balances(&self) -> Result<BTreeMap<String, i64>, ProjectionError> {
        let rows =
            self.client.query(&format!(r#"SELECT account, balance FROM "{}".balances"#, self.schema), &[]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Applies the `ledger` events of `log` (a log of one pipeline) from the stored position:
    /// until the log end seen at the start, or with `follow` until `shutdown`.
    pub async fn run<L: EventLog>(&mut self, log: Arc<L>, options: RunOptions) -> Result<RunStats, ProjectionError> {
        self.run_pipelines(vec![log], options).await
    }

    /// Applies the `ledger` events of every pipeline (`logs[p]` is pipeline p's log), each
    /// from its stored position, a batch of one pipeline at a time in turn: until each
    /// pipeline's end seen at the start, or with `follow` until `shutdown`. The stats'
    /// position is pipeline 0's.
    pub async fn run_pipelines<L: EventLog>(
        &mut self,
        logs: Vec<Arc<L>>,
        options: RunOptions,
    ) -> Result<RunStats, ProjectionError> {
        assert!(options.batch_events_max > 0, "a batch holds at least one event");
        if logs.len() != self.positions.len() {
            return Err(ProjectionError::Config(format!(
                "schema `{}` projects {} pipeline(s), but {} log(s) were given",
                self.schema,
                self.positions.len(),
                logs.len()
            )));
        }
        let mut readers = Vec::new();
        for (pipeline, log) in logs.into_iter().enumerate() {
            readers.push(self.reader(pipeline as u32, log).await?);
        }
        let mut stats = RunStats { position: self.positions[0], ..RunStats::default() };
        // Each pipeline waits its share of the idle wait, so a round takes about one.
        let wait = IDLE_WAIT / readers.len() as u32;
        loop {
            let stopping = options.shutdown.is_requested();
            let mut at_end = true;
            for reader in &mut readers {
                at_end &= self.pump(reader, wait, stopping, &options, &mut stats).await?;
            }
            if stopping || (at_end && !options.follow) {
                return Ok(stats);
            }
        }
    }

    /// Opens pipeline `pipeline`'s reader at its stored position.
    async fn reader<L: EventLog>(&self, pipeline: u32, log: Arc<L>) -> Result<PipelineReader, ProjectionError> {
        let position = self.positions[pipeline as usize];
        let end = log.end_offset().await?;
        let start = self.start(pipeline);
        let stream = Pipeline::resumed(log, "ledger-projection", start)
            .stream_events(std::slice::from_ref(&self.key), position.resume_offset)
            .await?;
        let record = (position.resume_offset, position.resume_count.unwrap_or(0));
        Ok(PipelineReader { pipeline, stream, end, record, batch: Vec::new() })
    }

    /// Reads `reader`'s pipeline until a batch is full or nothing comes within `wait` (none
    /// when `stopping`), applying what it gathered; whether the pipeline is read to the end
    /// seen at the start.
    async fn pump(
        &mut self,
        reader: &mut PipelineReader,
        wait: Duration,
        stopping: bool,
        options: &RunOptions,
        stats: &mut RunStats,
    ) -> Result<bool, ProjectionError> {
        let next_index = self.positions[reader.pipeline as usize].next_index;
        loop {
            let next = if stopping { None } else { reader.stream.next_within(wait).await? };
            let Some(event) = next else {
                if !reader.batch.is_empty() {
                    let batch = std::mem::take(&mut reader.batch);
                    self.apply_batch(reader.pipeline, &batch, reader.record.1, options, stats).await?;
                }
                // The stream's position steps over transaction markers, which no record holds.
                return Ok(reader.stream.position() >= reader.end);
            };
            let index = event.event.index.expect("canonical events carry their index");
            if event.offset != reader.record.0 {
                reader.record = (event.offset, index);
            }
            // Events of the record we resumed at that were applied before are skipped.
            if index >= next_index + reader.batch.len() as u64 {
                reader.batch.push(event);
            }
            if reader.batch.len() >= options.batch_events_max {
                let batch = std::mem::take(&mut reader.batch);
                self.apply_batch(reader.pipeline, &batch, reader.record.1, options, stats).await?;
                // The next pipeline's turn.
                return Ok(false);
            }
        }
    }

    /// Where pipeline `pipeline`'s reader starts: at its stored position with the `ledger`
    /// count there, or for a row an older projection stored, at the log's start.
    fn start(&self, pipeline: u32) -> Resume {
        let position = self.positions[pipeline as usize];
        match position.resume_count {
            Some(count) => Resume::at(position.resume_offset, [(self.key.clone(), count)]),
            None => {
                tracing::info!(
                    schema = %self.schema,
                    pipeline,
                    resume_offset = position.resume_offset,
                    "the stored position is of an older layout, without the `ledger` count there: reading the log from offset 0 once; the next batch stores it"
                );
                Resume::origin()
            }
        }
    }

    /// Applies each ledger entry of `batch` to the balances, inside `transaction`, checking
    /// each result against the balances the entry carries.
    async fn apply_entries(
        transaction: &tokio_postgres::Transaction<'_>,
        schema: &str,
        key: &EventSourceKey,
        batch: &[CanonicalEvent],
    ) -> Result<(), ProjectionError> {
        let update =
            format!(r#"UPDATE "{schema}".balances SET balance = balance + $2 WHERE account = $1 RETURNING balance"#);
        let insert = format!(r#"INSERT INTO "{schema}".balances (account, balance) VALUES ($1, $2)"#);
        for canonical in batch {
            let index = canonical.event.index.expect("indexed");
            let entry: Entry =
                serde_json::from_slice(&canonical.event.payload).map_err(|e| ProjectionError::BadEntry {
                    key: key.to_string(),
                    offset: canonical.offset,
                    index,
                    message: e.to_string(),
                })?;
            match change_of(entry) {
                None => {}
                Some(Change::Open { account, balance }) => {
                    transaction.execute(&insert, &[&account, &to_bigint(balance)]).await?;
                }
                Some(Change::Move { from, to, amount, from_balance, to_balance }) => {
                    let amount = to_bigint(amount);
                    for (account, delta, want) in [(from, -amount, from_balance), (to, amount, to_balance)] {
                        let rows = transaction.query(&update, &[&account, &delta]).await?;
                        let got = rows.first().map_or(i64::MIN, |row| row.get::<_, i64>(0));
                        if got != to_bigint(want) {
                            let schema = schema.to_string();
                            return Err(ProjectionError::Inconsistent { schema, account, index, got, want });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// One transaction: lock and check the position, apply the batch, advance the position.
    /// `resume_count` is the `ledger` count before the last event's record.
    async fn apply_batch(
        &mut self,
        pipeline: u32,
        batch: &[CanonicalEvent],
        resume_count: u64,
        options: &RunOptions,
        stats: &mut RunStats,
    ) -> Result<(), ProjectionError> {
        let schema = self.schema.clone();
        let first = batch[0].event.index.expect("indexed");
        let current = self.positions[pipeline as usize];
        debug_assert_eq!(first, current.next_index, "batches start where the position is");
        let transaction = self.client.transaction().await?;
        let row = transaction
            .query_one(
                &format!(r#"SELECT next_index FROM "{schema}".position WHERE pipeline = $1 FOR UPDATE"#),
                &[&(pipeline as i32)],
            )
            .await?;
        let found = row.get::<_, i64>(0) as u64;
        if found != current.next_index {
            return Err(ProjectionError::Moved { schema, pipeline, expected: current.next_index, found });
        }
        Self::apply_entries(&transaction, &schema, &self.key, batch).await?;
        let last = batch.last().expect("a batch is never empty");
        let position = Position {
            next_index: last.event.index.expect("indexed") + 1,
            resume_offset: last.offset,
            resume_count: Some(resume_count),
            events_applied: current.events_applied + batch.len() as u64,
        };
        transaction
            .execute(
                &format!(
                    r#"UPDATE "{schema}".position SET next_index = $1, resume_offset = $2, resume_count = $3, events_applied = $4 WHERE pipeline = $5"#
                ),
                &[
                    &to_bigint(position.next_index),
                    &to_bigint(position.resume_offset),
                    &to_bigint(resume_count),
                    &to_bigint(position.events_applied),
                    &(pipeline as i32),
                ],
            )
            .await?;
        if let Some(hook) = &options.before_commit {
            hook(stats.batches + 1);
        }
        transaction.commit().await?;
        self.positions[pipeline as usize] = position;
        stats.batches += 1;
        stats.events += batch.len() as u64;
        stats.position = self.positions[0];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_change_no_balance_and_transfers_carry_their_results() {
        let rejected =
            Entry::Rejected { id: Some("t".into()), account: None, reason: ledger::RejectReason::InsufficientFunds };
        assert_eq!(change_of(rejected), None);
        let moved = Entry::Transferred {
            id: "t".into(),
            from: "a".into(),
            to: "b".into(),
            amount: 3,
            from_balance: 7,
            to_balance: 3,
        };
        assert_eq!(
            change_of(moved),
            Some(Change::Move { from: "a".into(), to: "b".into(), amount: 3, from_balance: 7, to_balance: 3 })
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema("ledger_1").is_ok());
        for bad in ["", "1x", "Ledger", "a-b", "a\"b"] {
            assert!(check_schema(bad).is_err(), "{bad:?}");
        }
    }
}
