//! `ledger-projection`: projects the ledger's balances into PostgreSQL, exactly once.
//!
//! Reads the canonical `ledger` events of the log (of every pipeline) from the position stored
//! in the database
//! and applies them in transactions that also store the position; see
//! `ledger::projection`. Stops at the log end, or with `--follow` on SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig};
use competing_transformers_launcher::config::{self, Config, Overrides};
use competing_transformers_launcher::signals::shutdown_on_signals;
use ledger_projection::{Projection, RunOptions, BATCH_EVENTS_MAX_DEFAULT};

/// Project the ledger's balances into PostgreSQL, exactly once.
#[derive(Parser, Debug)]
#[command(name = "ledger-projection", version)]
struct Args {
    /// postgres://user@host:port/database (?sslmode=require for TLS; PGSSLROOTCERT adds a CA)
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Kafka bootstrap servers [default: the config file's, else 127.0.0.1:9092]
    #[arg(long, env = "KAFKA_BOOTSTRAP")]
    bootstrap: Option<String>,
    /// The log's topic [default: the config file's]
    #[arg(long, env = "KAFKA_TOPIC")]
    topic: Option<String>,
    /// How many pipelines (partitions) the log has: every one is projected [default: the
    /// config file's `pipelines`, else 1]
    #[arg(long, env = "KAFKA_PIPELINES", value_name = "P")]
    pipeline_count: Option<u32>,
    /// A launcher config file whose [kafka] table (servers, topic, librdkafka properties,
    /// properties_file) to use; KAFKA_PROPERTIES_FILE and KAFKA_PROPERTY_* apply as for the
    /// launcher (docs/SECURITY.md)
    #[arg(long, env = "TRANSFORMER_LAUNCHER_CONFIG", value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    /// PostgreSQL schema holding `balances` and `position`
    #[arg(long, default_value = "ledger")]
    schema: String,
    /// Most ledger events per database transaction
    #[arg(long, default_value_t = BATCH_EVENTS_MAX_DEFAULT)]
    batch_events_max: usize,
    /// Keep projecting new events until SIGINT or SIGTERM
    #[arg(long, short = 'f')]
    follow: bool,
}

/// The log's client configuration, read as the launcher reads it.
fn log_config(args: &Args) -> anyhow::Result<KafkaLogConfig> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let overrides = Overrides {
        bootstrap_servers: args.bootstrap.clone(),
        topic: args.topic.clone(),
        pipelines: args.pipeline_count,
        properties_file: std::env::var(config::PROPERTIES_FILE_VAR).ok().filter(|p| !p.is_empty()),
        properties: config::environment_properties(std::env::vars()),
        // A reader: the log's trust table comes with the config; it signs nothing.
        ..Overrides::default()
    };
    Ok(config.log_config(&overrides)?)
}

/// The next `ledger` index of each pipeline: `N` for one, `p0 N, p1 M, ...` for several.
fn next_indexes(positions: &[ledger_projection::Position]) -> String {
    match positions {
        [one] => one.next_index.to_string(),
        all => all
            .iter()
            .enumerate()
            .map(|(p, position)| format!("p{p} {}", position.next_index))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.batch_events_max > 0, "--batch-events-max must be at least 1");
    let log_config = log_config(&args)?;
    let topic = log_config.topic.clone();
    let mut logs = Vec::new();
    for pipeline in log_config.each_pipeline() {
        logs.push(Arc::new(KafkaLog::connect(pipeline).await?));
    }
    let pipelines = log_config.pipelines.count();
    let mut projection = Projection::connect_pipelines(&args.database_url, &args.schema, &topic, pipelines).await?;
    let shutdown = shutdown_on_signals().context("cannot listen for signals")?;
    let options =
        RunOptions { batch_events_max: args.batch_events_max, follow: args.follow, shutdown, before_commit: None };
    let stats = projection.run_pipelines(logs, options).await.context("projection stopped")?;
    let balances = projection.balances().await?;
    for (account, balance) in &balances {
        println!("{account} {balance}");
    }
    eprintln!(
        "applied {} ledger event(s) in {} transaction(s) over {pipelines} pipeline(s); next index {}; {} account(s) holding {} in total",
        stats.events,
        stats.batches,
        next_indexes(&projection.stored_positions().await?),
        balances.len(),
        balances.values().sum::<i64>()
    );
    Ok(())
}
