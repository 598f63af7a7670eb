//! The operator commands: `topics`, `publish`, `tail`, `status`, `dead-letters`, `export`.
//!
//! Each connects with the same checks as a replica (the topic must have the log's layout),
//! prints plain text to stdout (JSON with `--output json` on `topics`, `tail`, `status` and
//! `dead-letters list`: one document, or one object a line for streams), and says what went
//! wrong as one sentence.

use std::io::{BufRead, BufReader};
use std::sync::Arc;

use crate::cli::{ExportArgs, Format, LogArgs, PublishArgs, RedriveArgs, StatusArgs, TailArgs};
use crate::config::Config;
use crate::ownership::{Owners, Tool};
use crate::progress;
use crate::reading::DetailedDeadLetter;
use crate::reading::{
    chosen_pipelines, dead_letter_line, each_canonical, kafka_start, line_prefix, read_dead_letters_from, readable,
    StartFrom,
};
use crate::registry::Registry;
use crate::summary::{self, LogSummary};
use crate::{out, signals, wall_clock_ms, writer_id, Error};
use competing_transformers::codec::SchemaCache;
use competing_transformers::event::{Event, EventSourceKey, Offset, CONTENT_TYPE_JSON};
use competing_transformers::record::Record;
use competing_transformers::shard::{pipeline_of, Pipelines};
use competing_transformers_kafka::export::{ExportConfig, ExportRunOptions, Exporter};
use competing_transformers_kafka::schema_registry::SchemaRegistry;
use competing_transformers_kafka::{
    admin, EventLog, KafkaLog, KafkaLogConfig, LogError, Pipeline, Shutdown, WriteOutcome,
};

/// The optional config file.
fn load_config(args: &LogArgs) -> Result<Config, Error> {
    match &args.config {
        Some(path) => Ok(Config::load(path)?),
        None => Ok(Config::default()),
    }
}

/// The log's client configuration from flags, environment and the optional config file.
pub(super) fn log_config(args: &LogArgs) -> Result<KafkaLogConfig, Error> {
    Ok(load_config(args)?.log_config(&args.kafka.overrides())?)
}

/// The DETs whose streams only their replicas write: `registry`'s and the config file's.
fn owners(args: &LogArgs, registry: &Registry) -> Result<Owners, Error> {
    Ok(Owners::known(registry, &load_config(args)?))
}

pub(super) async fn topics(args: &LogArgs, create: bool, output: Format) -> Result<(), Error> {
    let config = log_config(args)?;
    let facts = if create { admin::create_topic(&config).await? } else { admin::check_topic(&config).await? };
    if output == Format::Json {
        let snapshots = snapshot_topics_json(&config, create).await?;
        return out(format_args!("{}", topic_json(&facts, &config.bootstrap_servers, snapshots)));
    }
    let partitions = match facts.partitions {
        1 => "1 partition".to_string(),
        n => format!("{n} partitions (a pipeline each)"),
    };
    out(format_args!(
        "topic `{}` on {}: {partitions}, replication factor {} on {} broker(s), min.insync.replicas={}, cleanup.policy={}, retention.ms={}, retention.bytes={}: ready for the event log",
        facts.topic,
        config.bootstrap_servers,
        facts.replication_factor,
        facts.brokers,
        facts.min_insync_replicas,
        facts.cleanup_policy,
        facts.retention_ms,
        facts.retention_bytes
    ))?;
    if config.pipelines.count() > 1 {
        out(format_args!("{}", leaders_line(&facts)))?;
    }
    snapshot_topics(&config, create).await
}

/// "leaders: p0 on broker 1, p1 on broker 2, p2 on broker 3 (3 brokers lead)": where each
/// pipeline's partition is led, so an operator sees whether they spread over the brokers.
fn leaders_line(facts: &admin::TopicFacts) -> String {
    let each: Vec<String> = facts
        .leaders
        .iter()
        .enumerate()
        .map(|(pipeline, leader)| match leader {
            Some(broker) => format!("p{pipeline} on broker {broker}"),
            None => format!("p{pipeline} without a leader"),
        })
        .collect();
    let distinct: std::collections::BTreeSet<i32> = facts.leaders.iter().flatten().copied().collect();
    format!("leaders: {} ({} broker(s) lead)", each.join(", "), distinct.len())
}

/// `topics`' second line: the snapshot topics beside the log. Missing ones are not an error
/// for `check`: replicas then run without snapshots.
async fn snapshot_topics(config: &KafkaLogConfig, create: bool) -> Result<(), Error> {
    let checked =
        if create { admin::create_snapshot_topics(config).await } else { admin::check_snapshot_topics(config).await };
    match checked {
        Ok(facts) => out(format_args!(
            "snapshot topics `{}` (cleanup.policy={}) and `{}` (cleanup.policy={}): ready for snapshots",
            facts.snapshots.topic, facts.snapshots.cleanup_policy, facts.index.topic, facts.index.cleanup_policy
        )),
        Err(LogError::TopicMissing { topic, .. }) => out(format_args!(
            "snapshot topic `{topic}` does not exist: replicas run without snapshots and replay the log from its start; create it with `transformer-launcher topics create`"
        )),
        Err(error) => Err(error.into()),
    }
}

/// `topics --output json`: the log topic's facts and its snapshot topics' (null when missing).
fn topic_json(facts: &admin::TopicFacts, bootstrap: &str, snapshots: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "topic": facts.topic,
        "bootstrap": bootstrap,
        "partitions": facts.partitions,
        "replication_factor": facts.replication_factor,
        "brokers": facts.brokers,
        "min_insync_replicas": facts.min_insync_replicas,
        "cleanup_policy": facts.cleanup_policy,
        "retention_ms": facts.retention_ms,
        "retention_bytes": facts.retention_bytes,
        "pipelines": facts.partitions,
        "leaders": facts.leaders.iter().enumerate().map(|(pipeline, leader)| {
            serde_json::json!({"pipeline": pipeline, "partition": pipeline, "leader": leader})
        }).collect::<Vec<_>>(),
        "snapshot_topics": snapshots,
    })
}

/// The snapshot topics as JSON for `topics --output json`; null when one is missing.
async fn snapshot_topics_json(config: &KafkaLogConfig, create: bool) -> Result<serde_json::Value, Error> {
    let checked =
        if create { admin::create_snapshot_topics(config).await } else { admin::check_snapshot_topics(config).await };
    let topic =
        |facts: &admin::TopicFacts| serde_json::json!({"topic": facts.topic, "cleanup_policy": facts.cleanup_policy});
    match checked {
        Ok(facts) => Ok(serde_json::json!({"snapshots": topic(&facts.snapshots), "index": topic(&facts.index)})),
        Err(LogError::TopicMissing { .. }) => Ok(serde_json::Value::Null),
        Err(error) => Err(error.into()),
    }
}

/// Most unconditional `publish` writes in flight at once: enough to keep the producer's
/// batches full, far below librdkafka's queue (100,000 records), and a short range of lines
/// in doubt if one fails.
const PUBLISH_IN_FLIGHT_MAX: usize = 10_000;

/// `publish`: one event per non-empty line, each to its pipeline ([`Route`]). Unconditional
/// writes are pipelined (up to [`PUBLISH_IN_FLIGHT_MAX`] in flight, in order: one idempotent
/// producer per pipeline keeps a caller's appends in order); `--start-index` writes go one
/// at a time, each reading the count.
pub(super) async fn publish(args: PublishArgs, registry: &Registry) -> Result<(), Error> {
    owners(&args.log, registry)?.refuse(&args.key, Tool::Publish)?;
    let config = log_config(&args.log)?;
    // Where the lines go is settled before anything is read or written.
    let route = publish_route(&args, config.pipelines)?;
    let (source, reader): (String, Box<dyn BufRead>) = match &args.file {
        Some(path) => {
            let file =
                std::fs::File::open(path).map_err(|source| Error::Read { path: path.display().to_string(), source })?;
            (path.display().to_string(), Box::new(BufReader::new(file)))
        }
        None => ("stdin".into(), Box::new(BufReader::new(std::io::stdin()))),
    };
    let writer = writer_id(args.writer.clone(), "publish")?;
    let mut publisher = Publisher::new(config, writer, &args);
    if let Route::Fixed(pipeline) = route {
        // Unconditional writes go straight to the log: refuse a protected key without its
        // writers' signing key here, before any line is read.
        publisher.lane(pipeline).await?;
    }
    let mut lines = reader.lines();
    let mut number = 0usize;
    // Reading stdin blocks; keep it off the async workers' backs.
    while let Some(line) = tokio::task::block_in_place(|| lines.next()) {
        number += 1;
        let line = line.map_err(|error| Error::Read { path: source.clone(), source: error })?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let pipeline = match line_pipeline(&route, text, publisher.config.pipelines) {
            Ok(pipeline) => pipeline,
            Err(problem) => {
                publisher.finish().await?;
                return Err(Error::Usage(format!(
                    "line {number} of {source} {problem}; {} event(s) before it were published: fix the line and publish the rest",
                    publisher.written()
                )));
            }
        };
        let time_ms = args.effective_time_ms.unwrap_or_else(wall_clock_ms);
        let event = Event::new(args.key.clone(), None, None, time_ms, CONTENT_TYPE_JSON, text.as_bytes().to_vec());
        publisher.line(number, pipeline, event).await?;
    }
    publisher.finish().await?;
    eprintln!("published {} event(s) under `{}` from {source}{}", publisher.written(), args.key, publisher.tally());
    Ok(())
}

/// Where `publish` writes its lines.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    /// Every line to this pipeline.
    Fixed(u32),
    /// Each line to the pipeline of its field at this JSON pointer.
    Field(String),
}

/// The route `--shard-key`, `--shard-field` or `--pipeline` asks for on a log of `pipelines`;
/// on a log of one pipeline none is needed. Refused with one sentence before anything is
/// written.
fn publish_route(args: &PublishArgs, pipelines: Pipelines) -> Result<Route, Error> {
    let count = pipelines.count();
    if let Some(key) = &args.shard_key {
        return Ok(Route::Fixed(pipeline_of(key.as_bytes(), pipelines)));
    }
    if let Some(pipeline) = args.pipeline {
        chosen_pipelines(pipelines, Some(pipeline))?;
        return Ok(Route::Fixed(pipeline));
    }
    if let Some(pointer) = &args.shard_field {
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(Error::Usage(format!(
                "--shard-field `{pointer}` is not a JSON pointer; write it from the root, e.g. `/{pointer}`"
            )));
        }
        if count > 1 && args.start_index.is_some() {
            return Err(Error::Usage(format!(
                "--start-index counts within one pipeline, but --shard-field spreads the lines over {count} pipelines; publish each pipeline's lines with --pipeline N or --shard-key TEXT and its own --start-index"
            )));
        }
        return Ok(Route::Field(pointer.clone()));
    }
    if count > 1 {
        return Err(Error::Usage(format!(
            "the log has {count} pipelines, so each line needs one: pass --shard-key TEXT (every line to TEXT's pipeline), --shard-field POINTER (each line to the pipeline of its field there) or --pipeline N"
        )));
    }
    Ok(Route::Fixed(0))
}

/// The pipeline of one line (`text`, to be one JSON value) under `route`, or what is wrong
/// with the line, as the end of a sentence starting "line N of FILE".
fn line_pipeline(route: &Route, text: &str, pipelines: Pipelines) -> Result<u32, String> {
    let not_json = |error: serde_json::Error| format!("is not one JSON value ({error})");
    let pointer = match route {
        Route::Fixed(pipeline) => {
            serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(not_json)?;
            return Ok(*pipeline);
        }
        Route::Field(pointer) => pointer,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(not_json)?;
    let shard_key = match value.pointer(pointer) {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(serde_json::Value::Number(number)) => number.to_string(),
        Some(other) => {
            let kind = match other {
                serde_json::Value::Null => "null",
                serde_json::Value::Bool(_) => "a boolean",
                serde_json::Value::Array(_) => "an array",
                _ => "an object",
            };
            return Err(format!("has {kind} at --shard-field `{pointer}`, not a string or a number to shard by"));
        }
        None => return Err(format!("has no field at --shard-field `{pointer}` to shard by")),
    };
    Ok(pipeline_of(shard_key.as_bytes(), pipelines))
}

/// One pipeline's log client and tally in a `publish`.
struct Lane {
    log: Arc<KafkaLog>,
    pipeline: Pipeline<KafkaLog>,
    /// Events handed to this pipeline so far (the next one's place after `start_index`).
    events: u64,
    written: u64,
    existing: u64,
}

/// `publish`'s writes and their tally, with a progress line on a terminal.
struct Publisher {
    /// The log's configuration; each pipeline's client is connected on its first line.
    config: KafkaLogConfig,
    lanes: std::collections::BTreeMap<u32, Lane>,
    key: EventSourceKey,
    writer: String,
    start_index: Option<u64>,
    /// Unconditional writes not yet delivered, by line number and pipeline, oldest first.
    in_flight: std::collections::VecDeque<(usize, u32, competing_transformers_kafka::Delivery)>,
    progress: indicatif::ProgressBar,
}

impl Publisher {
    fn new(config: KafkaLogConfig, writer: String, args: &PublishArgs) -> Self {
        Self {
            config,
            lanes: std::collections::BTreeMap::new(),
            key: args.key.clone(),
            writer,
            start_index: args.start_index,
            in_flight: std::collections::VecDeque::new(),
            progress: progress::counter(&format!("publishing under `{}`", args.key)),
        }
    }

    /// Pipeline `pipeline`'s lane, connected (and its signing key checked) on first use.
    async fn lane(&mut self, pipeline: u32) -> Result<&mut Lane, Error> {
        if !self.lanes.contains_key(&pipeline) {
            let log = Arc::new(KafkaLog::connect(self.config.pipeline(pipeline)).await?);
            log.check_signer(self.key.as_str())?;
            let lane = Lane {
                pipeline: Pipeline::new(log.clone(), self.writer.clone()),
                log,
                events: 0,
                written: 0,
                existing: 0,
            };
            self.lanes.insert(pipeline, lane);
        }
        Ok(self.lanes.get_mut(&pipeline).expect("inserted above"))
    }

    /// Events written, over every pipeline.
    fn written(&self) -> u64 {
        self.lanes.values().map(|lane| lane.written).sum()
    }

    /// The end of the closing sentence: the events that existed already (with
    /// `--start-index`), and on a log of several pipelines how many lines each one got.
    fn tally(&self) -> String {
        let mut tally = String::new();
        if self.start_index.is_some() {
            let existing: u64 = self.lanes.values().map(|lane| lane.existing).sum();
            tally.push_str(&format!(", {existing} already existed"));
        }
        if self.config.pipelines.count() > 1 {
            let each: Vec<String> = self
                .lanes
                .iter()
                .map(|(pipeline, lane)| format!("p{pipeline} {}", lane.written + lane.existing))
                .collect();
            let each = if each.is_empty() { "none".to_string() } else { each.join(", ") };
            tally.push_str(&format!("; lines per pipeline: {each}"));
        }
        tally
    }

    /// Writes the event of line `number` to `pipeline`.
    async fn line(&mut self, number: usize, pipeline: u32, event: Event) -> Result<(), Error> {
        let (key, writer, start_index) = (self.key.clone(), self.writer.clone(), self.start_index);
        let lane = self.lane(pipeline).await?;
        let place = lane.events;
        lane.events += 1;
        match start_index {
            None => {
                let delivery = lane.log.append(&Record { source: key, writer, events: vec![event] });
                self.in_flight.push_back((number, pipeline, delivery));
                while self.in_flight.len() >= PUBLISH_IN_FLIGHT_MAX {
                    self.settle_oldest().await?;
                }
                Ok(())
            }
            Some(start) => {
                let outcome = lane.pipeline.exists_or_write(&key, start + place, vec![event]).await?;
                self.report(number, pipeline, place, outcome)
            }
        }
    }

    /// Waits for the oldest write in flight and prints where it landed. A failure names the
    /// lines whose writes were still in flight behind it: they may or may not have landed.
    async fn settle_oldest(&mut self) -> Result<(), Error> {
        let Some((number, pipeline, delivery)) = self.in_flight.pop_front() else { return Ok(()) };
        match delivery.await {
            Ok(offset) => {
                if let Some(lane) = self.lanes.get_mut(&pipeline) {
                    lane.written += 1;
                }
                self.progress.inc(1);
                let prefix = line_prefix(self.config.pipelines, pipeline);
                self.progress.suspend(|| out(format_args!("{prefix}line {number}: written at offset {offset}")))
            }
            Err(error) => {
                self.progress.finish_and_clear();
                if let Some((last, ..)) = self.in_flight.back() {
                    tracing::warn!("line {number} was not written; lines {}..={last} were in flight and may have been: `tail` shows which", number + 1);
                }
                Err(error.into())
            }
        }
    }

    /// Waits for every write in flight.
    async fn finish(&mut self) -> Result<(), Error> {
        while !self.in_flight.is_empty() {
            self.settle_oldest().await?;
        }
        self.progress.finish_and_clear();
        Ok(())
    }

    /// Prints what an `exists_or_write` of the `place`-th event of `pipeline` did; a rejected
    /// write ends the publish.
    fn report(&mut self, number: usize, pipeline: u32, place: u64, outcome: WriteOutcome) -> Result<(), Error> {
        let (key, prefix) = (self.key.clone(), line_prefix(self.config.pipelines, pipeline));
        let lane = self.lanes.get_mut(&pipeline).expect("written through its lane");
        match outcome {
            WriteOutcome::Written { offset, index } => {
                lane.written += 1;
                self.progress.inc(1);
                self.progress
                    .suspend(|| out(format_args!("{prefix}line {number}: written as index {index} at offset {offset}")))
            }
            WriteOutcome::Exists { index, winner, same_digest } => {
                lane.existing += 1;
                let at = winner.map(|o| format!(" at offset {o}")).unwrap_or_default();
                let same = match same_digest {
                    Some(true) => "the same event",
                    Some(false) => "a different event (another payload or effective time; pass --effective-time-ms to retry exactly)",
                    None => "too old to compare",
                };
                self.progress
                    .suspend(|| out(format_args!("{prefix}line {number}: exists as index {index}{at}: {same}")))
            }
            WriteOutcome::Rejected { index, count } => {
                // The start index that would put this line at the count.
                let fix = match count.checked_sub(place) {
                    Some(start) => format!("publish the file again with --start-index {start}"),
                    None => format!("publish the events before index {index} first"),
                };
                Err(Error::Usage(format!(
                    "{prefix}line {number}: index {index} is ahead of `{key}`'s count {count}, so it was not written (nor any line after it); {fix}"
                )))
            }
        }
    }
}

/// Each chosen pipeline of the log (`only`, or all) with its client, and the log's config.
async fn connect_pipelines(
    args: &LogArgs,
    only: Option<u32>,
) -> Result<(KafkaLogConfig, Vec<(u32, Arc<KafkaLog>)>), Error> {
    let config = log_config(args)?;
    let mut logs = Vec::new();
    for pipeline in chosen_pipelines(config.pipelines, only)? {
        logs.push((pipeline, Arc::new(KafkaLog::connect(config.pipeline(pipeline)).await?)));
    }
    Ok((config, logs))
}

/// Waits for every task of `tasks`, ending at the first failure (the others are aborted).
async fn join_all<T: 'static>(mut tasks: tokio::task::JoinSet<Result<T, Error>>) -> Result<Vec<T>, Error> {
    let mut done = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => done.push(result?),
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => {}
        }
    }
    Ok(done)
}

/// `tail`: from the newest snapshot holding the key's count (like `tail -f`, it shows the
/// end), or every event still on the log with `--from-start`; each pipeline from its own
/// snapshots, one after the other, or with `--follow` all at once.
pub(super) async fn tail(args: TailArgs) -> Result<(), Error> {
    let (config, logs) = connect_pipelines(&args.log, args.pipeline).await?;
    let prefixes = |pipeline| line_prefix(config.pipelines, pipeline);
    let alone = logs.len() == 1;
    if !args.follow {
        for (pipeline, log) in logs {
            tail_pipeline(args.clone(), pipeline, prefixes(pipeline), log, alone).await?;
        }
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (pipeline, log) in logs {
        tasks.spawn(tail_pipeline(args.clone(), pipeline, prefixes(pipeline), log, alone));
    }
    join_all(tasks).await.map(|_| ())
}

/// `tail` of one pipeline, its text lines starting with `prefix`; a progress bar when it is
/// the only one read.
async fn tail_pipeline(
    args: TailArgs,
    number: u32,
    prefix: String,
    log: Arc<KafkaLog>,
    bar: bool,
) -> Result<(), Error> {
    let end = log.end_offset().await?;
    let from = match args.from {
        _ if args.from_start => StartFrom::LogStart,
        Some(offset) => StartFrom::Newest { up_to: offset },
        None => StartFrom::Newest { up_to: Offset::MAX },
    };
    let start = kafka_start(&log, "tail", Some(std::slice::from_ref(&args.key)), from).await?;
    if args.from.is_none() && start.position() > 0 {
        eprintln!(
            "{prefix}`{}` from offset {}, its newest snapshot; --from-start prints every event still on the log",
            args.key,
            start.position()
        );
    }
    let pipeline = Pipeline::resumed(log, "tail", start);
    let mut stream = pipeline.stream_events(std::slice::from_ref(&args.key), args.from.unwrap_or(0)).await?;
    let registry = SchemaRegistry::from_env().transpose()?;
    let mut schemas = SchemaCache::new();
    let bar = if bar { progress::offsets("tail", end) } else { indicatif::ProgressBar::hidden() };
    let printed = each_canonical(&mut stream, end, args.follow, |canonical| {
        let payload = readable(&canonical.event, registry.as_ref(), &mut schemas);
        let index = canonical.event.index.expect("canonical events carry their index");
        // With --follow the bar goes once the log end it started at is reached.
        if canonical.offset < end {
            bar.set_position(canonical.offset + 1);
        } else if !bar.is_finished() {
            bar.finish_and_clear();
        }
        bar.suspend(|| match args.output {
            Format::Text => {
                out(format_args!("{prefix}{} {} {} {}", canonical.offset, index, canonical.writer, payload))
            }
            Format::Json => out(format_args!("{}", tail_json(number, &canonical, index, &payload))),
        })
    })
    .await;
    bar.finish_and_clear();
    printed
}

/// One line of `tail --output json`: the payload as JSON when it is JSON (a JSON payload, or
/// Avro decoded to JSON), else as a string.
fn tail_json(
    pipeline: u32,
    canonical: &competing_transformers_kafka::CanonicalEvent,
    index: u64,
    payload: &str,
) -> serde_json::Value {
    let event = &canonical.event;
    let payload = serde_json::from_str::<serde_json::Value>(payload)
        .unwrap_or_else(|_| serde_json::Value::String(payload.to_string()));
    serde_json::json!({
        "pipeline": pipeline,
        "offset": canonical.offset,
        "index": index,
        "key": event.key.as_str(),
        "writer": canonical.writer,
        "effective_time_ms": event.effective_time_ms,
        "content_type": event.content_type,
        "payload": payload,
    })
}

/// `status`' summary: of every record still on the log, or with `recent` of each key from
/// its newest snapshot; a spinner meanwhile on a terminal.
async fn summarise(log: &KafkaLog, recent: bool) -> Result<LogSummary, Error> {
    let from = if recent { StartFrom::Newest { up_to: Offset::MAX } } else { StartFrom::LogStart };
    let reading =
        progress::spinner(if recent { "reading the log since its newest snapshots" } else { "reading the whole log" });
    let summary = match kafka_start(log, "status", None, from).await {
        Ok(start) => LogSummary::read_from(log, start).await.map_err(Error::from),
        Err(error) => Err(error),
    };
    reading.finish_and_clear();
    summary
}

/// `status`: every record still on the log, or with `recent` each key from its newest
/// snapshot; a section per pipeline, then the totals, on a log of several.
pub(super) async fn status(args: &StatusArgs, registry: &Registry) -> Result<(), Error> {
    let owners = owners(&args.log, registry)?;
    let (config, logs) = connect_pipelines(&args.log, args.pipeline).await?;
    let mut summaries = Vec::new();
    for (pipeline, log) in &logs {
        summaries.push((*pipeline, summarise(log, args.recent).await?));
    }
    let topic = &config.topic;
    if args.output == Format::Json {
        let documents = summaries.iter().map(|(p, summary)| (*p, summary.to_json(topic, &owners))).collect();
        return out(format_args!("{}", summary::status_json(topic, config.pipelines.count() > 1, documents)));
    }
    for (pipeline, summary) in &summaries {
        let prefix = line_prefix(config.pipelines, *pipeline);
        for line in status_lines(summary, topic, &owners) {
            out(format_args!("{}", format!("{prefix}{line}").trim_end()))?;
        }
    }
    if config.pipelines.count() == 1 {
        return Ok(());
    }
    let lines = summary::totals_lines(topic, &summaries);
    std::iter::once(String::new()).chain(lines).try_for_each(|line| out(format_args!("{line}")))
}

/// `status`' text about one summary (one pipeline's).
fn status_lines(summary: &LogSummary, topic: &str, owners: &Owners) -> Vec<String> {
    let keys = summary.keys();
    let width = keys.iter().map(|(k, _)| k.as_str().len()).max().unwrap_or(0).max(3);
    let mut lines =
        vec![format!("{} records in topic `{topic}`, {} malformed", summary.records(), summary.malformed())];
    lines.extend(since_lines(summary));
    if keys.is_empty() {
        lines.push("no events yet".to_string());
        return lines;
    }
    lines.push(String::new());
    lines.extend(summary::key_table(keys.iter().map(|(key, stats)| (key, stats))));
    let unauthorized: Vec<String> = keys
        .iter()
        .filter(|(_, stats)| stats.unauthorized > 0)
        .map(|(key, stats)| format!("`{key}` {}", stats.unauthorized))
        .collect();
    if !unauthorized.is_empty() {
        lines.push(format!(
            "unauthorized events, ignored (protected keys, records not signed by their writers): {}",
            unauthorized.join(", ")
        ));
    }
    lines.push(String::new());
    lines.push("races won: who wrote the canonical copy of each event".to_string());
    let writers: Vec<_> = keys.iter().map(|(key, stats)| (key, stats, summary.writers(key))).collect();
    let writer_width =
        writers.iter().flat_map(|(_, _, w)| w.iter().map(|(name, _)| name.len())).max().unwrap_or(0).max(6);
    lines.push(format!("{:<width$}  {:<writer_width$}  {:>7}  {:>6}  {:>6}", "key", "writer", "won", "share", "lost"));
    for (key, stats, writers) in writers {
        for (writer, tally) in writers {
            lines.push(format!(
                "{:<width$}  {:<writer_width$}  {:>7}  {:>5.1}%  {:>6}",
                key.as_str(),
                writer,
                tally.won,
                percent(tally.won, stats.canonical),
                tally.lost
            ));
        }
    }
    lines.extend(summary.streams_report(owners));
    lines
}

/// `status`' lines when it starts from snapshots (`--recent`, or a truncated log): since
/// where it summarises, and the keys it cannot.
fn since_lines(summary: &LogSummary) -> Vec<String> {
    if summary.since() == 0 {
        return Vec::new();
    }
    let mut lines = vec![format!(
        "since offset {}: canonical counts are the whole log's (from snapshots), the other columns count what came since",
        summary.since()
    )];
    let (keys, more) = summary.unsummarised();
    if keys.is_empty() {
        return lines;
    }
    let more = if more { " and more" } else { "" };
    let names = keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    lines.push(format!(
        "not summarised: {names}{more}: no snapshot holds their counts; run a DET that reads or writes them with snapshots on, or read a log that keeps its records"
    ));
    lines
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// `dead-letters list`: each chosen pipeline's, in turn.
pub(super) async fn dead_letters(
    args: &LogArgs,
    transformer: &EventSourceKey,
    output: Format,
    only: Option<u32>,
) -> Result<(), Error> {
    let (config, logs) = connect_pipelines(args, only).await?;
    let key = transformer.dead_letters();
    let mut counts = Vec::new();
    for (pipeline, log) in logs {
        let prefix = line_prefix(config.pipelines, pipeline);
        let start =
            kafka_start(&log, "dead-letters list", Some(std::slice::from_ref(&key)), StartFrom::LogStart).await?;
        let log_start = log.start_offset().await?;
        if start.position() > log_start {
            eprintln!(
                "{prefix}the log's records before offset {log_start} are deleted: listing from offset {}, its oldest snapshot of `{transformer}`; dead letters between cannot be numbered",
                start.position()
            );
        }
        let letters = read_dead_letters_from(log, &key, start).await?;
        for letter in &letters {
            match output {
                Format::Text => out(format_args!("{prefix}{}", dead_letter_line(&letter.0, letter.1.as_ref())))?,
                Format::Json => out(format_args!("{}", dead_letter_json(pipeline, letter)))?,
            }
        }
        counts.push(format!("p{pipeline}: {}", letters.len()));
        if config.pipelines.count() == 1 {
            eprintln!("{} dead letter(s) in `{key}`", letters.len());
        }
    }
    if config.pipelines.count() > 1 {
        eprintln!("dead letters in `{key}` per pipeline: {}", counts.join(", "));
    }
    Ok(())
}

/// One line of `dead-letters list --output json`.
fn dead_letter_json(pipeline: u32, ((offset, index, letter), detail): &DetailedDeadLetter) -> serde_json::Value {
    let (letter, raw) = match letter {
        Ok(letter) => (serde_json::to_value(letter).unwrap_or_default(), serde_json::Value::Null),
        Err(raw) => (serde_json::Value::Null, serde_json::Value::String(raw.clone())),
    };
    serde_json::json!({
        "pipeline": pipeline,
        "offset": offset,
        "index": index,
        "dead_letter": letter,
        "raw": raw,
        "detail": detail.as_ref().map(|detail| serde_json::to_value(detail).unwrap_or_default()),
    })
}

/// `dead-letters redrive`: each chosen pipeline's dead letters into that same pipeline.
pub(super) async fn redrive(args: RedriveArgs, registry: &Registry) -> Result<(), Error> {
    if args.index.is_none() && !args.all {
        return Err(Error::Usage(
            "say which dead letters to redrive: --index I (see `dead-letters list`) or --all".into(),
        ));
    }
    let owners = owners(&args.log, registry)?;
    if let Some(to) = &args.to {
        owners.refuse(to, Tool::Redrive)?;
    }
    let writer = writer_id(args.writer.clone(), "redrive")?;
    let pipelines = log_config(&args.log)?.pipelines;
    if pipelines.count() > 1 && args.index.is_some() && args.pipeline.is_none() {
        return Err(Error::Usage(format!(
            "each of the log's {} pipelines numbers its own dead letters: say whose dead letter {} to redrive with --pipeline N (see `dead-letters list`)",
            pipelines.count(),
            args.index.unwrap_or_default()
        )));
    }
    let (config, logs) = connect_pipelines(&args.log, args.pipeline).await?;
    for (pipeline, log) in logs {
        let label = line_prefix(config.pipelines, pipeline);
        redrive_pipeline(&args, &owners, &writer, log, &label).await?;
    }
    Ok(())
}

/// `dead-letters redrive` of one pipeline, its lines starting with `label`.
async fn redrive_pipeline(
    args: &RedriveArgs,
    owners: &Owners,
    writer: &str,
    log: Arc<KafkaLog>,
    label: &str,
) -> Result<(), Error> {
    let start = |keys: Vec<EventSourceKey>| {
        let log = log.clone();
        async move { kafka_start(&log, "dead-letters redrive", Some(&keys), StartFrom::LogStart).await }
    };
    if args.to.is_none() {
        let key = args.transformer.dead_letters();
        let letters = read_dead_letters_from(log.clone(), &key, start(vec![key.clone()]).await?).await?;
        let letters: Vec<_> = letters.into_iter().map(|(letter, _)| letter).collect();
        owners.refuse_redrive_home(&letters, args.index)?;
    }
    let (transformer, to) = (&args.transformer, args.to.as_ref());
    let replaying = progress::spinner("reading the dead letters and redriving");
    let target = crate::redrive::Target { index: args.index, to, writer, label };
    let redriven = crate::redrive::redrive_labelled(log.clone(), transformer, target, start).await;
    replaying.finish_and_clear();
    redriven.map(|_| ())
}

/// `export`: every chosen pipeline at once, each into the partition of its number, until
/// the log end, or with --follow until SIGINT/SIGTERM.
pub(super) async fn export(args: ExportArgs) -> Result<(), Error> {
    if args.batch_events_max == 0 {
        return Err(Error::Usage("--batch-events-max must be at least 1".into()));
    }
    let (config, logs) = connect_pipelines(&args.log, None).await?;
    // Without --follow the export ends at the log end; a signal ends the process as usual.
    let shutdown = if args.follow { signals::listen()? } else { Shutdown::never() };
    let exporting = progress::spinner(&format!("exporting to `{}`", args.to));
    let mut tasks = tokio::task::JoinSet::new();
    for (pipeline, log) in logs {
        // One at a time: the first creates the target topic.
        let mut exporter = Exporter::start(export_config(&args, log.config().clone())).await?;
        let options = ExportRunOptions { follow: args.follow, shutdown: shutdown.clone(), before_commit: None };
        tasks.spawn(async move {
            let started_at = exporter.position();
            let stats = exporter.run(log, options).await?;
            Ok::<_, Error>((pipeline, started_at, stats))
        });
    }
    let done = join_all(tasks).await;
    exporting.finish_and_clear();
    let mut done = done?;
    done.sort_by_key(|(pipeline, _, _)| *pipeline);
    let keys = if args.keys.is_empty() {
        "every key".to_string()
    } else {
        args.keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
    };
    for (pipeline, started_at, stats) in done {
        let prefix = line_prefix(config.pipelines, pipeline);
        out(format_args!(
            "{prefix}exported {} event(s) of {keys} to topic `{}` in {} transaction(s), log offsets {started_at}..{}; the next export starts at {} (consumer group `export-{}`)",
            stats.events, args.to, stats.batches, stats.position, stats.position, args.to
        ))?;
    }
    Ok(())
}

/// What `export` exports of one pipeline (`log`, that pipeline's config).
fn export_config(args: &ExportArgs, log: KafkaLogConfig) -> ExportConfig {
    let mut config = ExportConfig::new(log, args.keys.clone(), &args.to);
    config.from_offset = args.from_offset.unwrap_or(0);
    config.batch_events_max = args.batch_events_max;
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::KafkaArgs;
    use competing_transformers::testing::Echo;

    /// A log nobody listens on: a refusal must come before any connection.
    fn nowhere() -> LogArgs {
        LogArgs {
            kafka: KafkaArgs {
                bootstrap: Some("127.0.0.1:1".into()),
                topic: Some("log".into()),
                ..KafkaArgs::default()
            },
            config: None,
        }
    }

    fn key(name: &str) -> EventSourceKey {
        EventSourceKey::new(name).unwrap()
    }

    #[tokio::test]
    async fn publish_and_redrive_refuse_a_registered_dets_streams_before_connecting() {
        let registry = Registry::new().with("echo", Echo::default);
        for stream in ["echo", "echo.dead-letters"] {
            let args = PublishArgs {
                log: nowhere(),
                key: key(stream),
                file: Some("/nonexistent".into()),
                effective_time_ms: None,
                start_index: None,
                writer: None,
                shard_key: None,
                shard_field: None,
                pipeline: None,
            };
            let error = publish(args, &registry).await.unwrap_err().to_string();
            assert!(error.starts_with(&format!("refusing to publish under `{stream}`")), "{error}");
            let args = RedriveArgs {
                log: nowhere(),
                transformer: key("echo"),
                index: Some(0),
                all: false,
                to: Some(key(stream)),
                writer: None,
                pipeline: None,
            };
            let error = redrive(args, &registry).await.unwrap_err().to_string();
            assert!(error.starts_with(&format!("refusing to redrive to `{stream}`")), "{error}");
        }
    }

    fn publish_args(route: (Option<&str>, Option<&str>, Option<u32>), start_index: Option<u64>) -> PublishArgs {
        PublishArgs {
            log: nowhere(),
            key: key("orders"),
            file: None,
            effective_time_ms: None,
            start_index,
            writer: None,
            shard_key: route.0.map(str::to_string),
            shard_field: route.1.map(str::to_string),
            pipeline: route.2,
        }
    }

    #[test]
    fn publish_routes_by_shard_key_field_or_number_and_refuses_a_guess() {
        let three = Pipelines::new(3).unwrap();
        let route = |route, start| publish_route(&publish_args(route, start), three);
        // sha256("book-eu") mod 3 is 1 (crates/core/src/shard.rs).
        assert_eq!(route((Some("book-eu"), None, None), None).unwrap(), Route::Fixed(1));
        assert_eq!(route((Some("book-eu"), None, None), Some(0)).unwrap(), Route::Fixed(1));
        assert_eq!(route((None, None, Some(2)), Some(5)).unwrap(), Route::Fixed(2));
        assert_eq!(route((None, Some("/account"), None), None).unwrap(), Route::Field("/account".into()));
        let one = publish_route(&publish_args((None, None, None), Some(3)), Pipelines::ONE).unwrap();
        assert_eq!(one, Route::Fixed(0), "a log of one pipeline needs no route");
        let one = publish_route(&publish_args((None, Some("/a"), None), Some(3)), Pipelines::ONE).unwrap();
        assert_eq!(one, Route::Field("/a".into()), "--start-index with --shard-field is fine on one pipeline");
        for (args, says) in [
            (publish_args((None, None, None), None), "pass --shard-key TEXT"),
            (
                publish_args((None, None, Some(3)), None),
                "--pipeline 3 is not a pipeline of this log, which has 3 (0 to 2)",
            ),
            (publish_args((None, Some("/account"), None), Some(0)), "--start-index counts within one pipeline"),
            (publish_args((None, Some("account"), None), None), "write it from the root, e.g. `/account`"),
        ] {
            let error = publish_route(&args, three).unwrap_err();
            assert_eq!(error.exit(), crate::Exit::Usage);
            let error = error.to_string();
            assert!(error.contains(says), "{error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
        let guess = publish_route(&publish_args((None, None, None), None), three).unwrap_err().to_string();
        for option in ["--shard-key", "--shard-field", "--pipeline N"] {
            assert!(guess.contains(option), "{guess}");
        }
    }

    #[test]
    fn a_line_goes_to_the_pipeline_of_its_field_as_text() {
        let three = Pipelines::new(3).unwrap();
        let field = Route::Field("/account".into());
        let of = |text: &str| pipeline_of(text.as_bytes(), three);
        assert_eq!(line_pipeline(&field, r#"{"account":"book-eu","n":1}"#, three), Ok(of("book-eu")));
        assert_eq!(line_pipeline(&field, r#"{"account":42}"#, three), Ok(of("42")));
        let nested = Route::Field("/to/account".into());
        assert_eq!(line_pipeline(&nested, r#"{"to":{"account":"a-1"}}"#, three), Ok(of("a-1")));
        let missing = line_pipeline(&field, r#"{"acct":"a"}"#, three).unwrap_err();
        assert_eq!(missing, "has no field at --shard-field `/account` to shard by");
        let wrong = line_pipeline(&field, r#"{"account":true}"#, three).unwrap_err();
        assert!(wrong.contains("has a boolean at --shard-field `/account`"), "{wrong}");
        assert!(line_pipeline(&field, "{nope", three).unwrap_err().starts_with("is not one JSON value"));
        assert_eq!(line_pipeline(&Route::Fixed(2), r#"{"any":1}"#, three), Ok(2));
        assert!(line_pipeline(&Route::Fixed(0), "nope", three).unwrap_err().starts_with("is not one JSON value"));
    }

    #[tokio::test]
    async fn publish_refuses_an_unrouted_line_on_several_pipelines_before_connecting() {
        let mut args = publish_args((None, None, None), None);
        args.log.kafka.pipeline_count = Some(3);
        args.file = Some("/nonexistent".into());
        let error = publish(args, &Registry::new()).await.unwrap_err();
        assert_eq!(error.exit(), crate::Exit::Usage, "{error}");
        assert!(error.to_string().starts_with("the log has 3 pipelines"), "{error}");
    }

    #[test]
    fn topics_reports_each_pipelines_leader() {
        let facts = admin::TopicFacts {
            topic: "log".into(),
            partitions: 3,
            replication_factor: 3,
            brokers: 3,
            cleanup_policy: "delete".into(),
            retention_ms: -1,
            retention_bytes: -1,
            min_insync_replicas: 2,
            leaders: vec![Some(1), Some(2), None],
        };
        assert_eq!(
            leaders_line(&facts),
            "leaders: p0 on broker 1, p1 on broker 2, p2 without a leader (2 broker(s) lead)"
        );
        let json = topic_json(&facts, "k:9092", serde_json::Value::Null);
        assert_eq!(json["pipelines"], 3);
        assert_eq!(json["leaders"][1], serde_json::json!({"pipeline": 1, "partition": 1, "leader": 2}));
        assert_eq!(json["leaders"][2]["leader"], serde_json::Value::Null);
    }
}
