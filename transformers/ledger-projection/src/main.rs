//! `ledger-projection`: projects the ledger's balances into PostgreSQL, exactly once.
//!
//! Reads the canonical `ledger` events of the log from the position stored in the database
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
        properties_file: std::env::var(config::PROPERTIES_FILE_VAR).ok().filter(|p| !p.is_empty()),
        properties: config::environment_properties(std::env::vars()),
        // A reader: the log's trust table comes with the config; it signs nothing.
        ..Overrides::default()
    };
    Ok(config.log_config(&overrides)?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.batch_events_max > 0, "--batch-events-max must be at least 1");
    let log_config = log_config(&args)?;
    let topic = log_config.topic.clone();
    let log = Arc::new(KafkaLog::connect(log_config).await?);
    let mut projection = Projection::connect(&args.database_url, &args.schema, &topic).await?;
    let shutdown = shutdown_on_signals().context("cannot listen for signals")?;
    let options =
        RunOptions { batch_events_max: args.batch_events_max, follow: args.follow, shutdown, before_commit: None };
    let stats = projection.run(log, options).await.context("projection stopped")?;
    let balances = projection.balances().await?;
    for (account, balance) in &balances {
        println!("{account} {balance}");
    }
    eprintln!(
        "applied {} ledger event(s) in {} transaction(s); next index {}; {} account(s) holding {} in total",
        stats.events,
        stats.batches,
        stats.position.next_index,
        balances.len(),
        balances.values().sum::<i64>()
    );
    Ok(())
}
