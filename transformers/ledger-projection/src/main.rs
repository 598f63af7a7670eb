//! `ledger-projection`: projects the ledger's balances into PostgreSQL, exactly once.
//!
//! Reads the canonical `ledger` events of the log from the position stored in the database
//! and applies them in transactions that also store the position; see
//! `ledger::projection`. Stops at the log end, or with `--follow` on SIGINT/SIGTERM.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use competing_transformers_kafka::{KafkaLog, KafkaLogConfig};
use competing_transformers_launcher::signals::shutdown_on_signals;
use ledger_projection::{Projection, RunOptions, BATCH_EVENTS_MAX_DEFAULT};

/// Project the ledger's balances into PostgreSQL, exactly once.
#[derive(Parser, Debug)]
#[command(name = "ledger-projection", version)]
struct Args {
    /// postgres://user@host:port/database
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Kafka bootstrap servers
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// The log's topic
    #[arg(long, env = "KAFKA_TOPIC")]
    topic: String,
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.batch_events_max > 0, "--batch-events-max must be at least 1");
    let log = Arc::new(KafkaLog::connect(KafkaLogConfig::new(&args.bootstrap, &args.topic)).await?);
    let mut projection = Projection::connect(&args.database_url, &args.schema, &args.topic).await?;
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
