//! `doctor`: what this build of librdkafka supports, and whether a configuration gets to
//! the log: reachable, authenticated, topic readable, topic writable, one line each. The
//! first failure ends it with its one-sentence error and its exit code.

use std::future::Future;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::cli::LogArgs;
use crate::{ops, out, Error};
use competing_transformers_kafka::client::build_features;
use competing_transformers_kafka::{admin, EventLog, KafkaLog};

/// How long the TCP check waits on each bootstrap server.
const CONNECT_TIMEOUT_MS: u64 = 3_000;
/// How long the read check waits for the first batch (an empty topic answers with none).
const READ_WAIT_MS: u64 = 2_000;

/// Runs the checks in order and prints one line per check.
pub(super) async fn doctor(args: &LogArgs) -> Result<(), Error> {
    let (version, features) = build_features();
    out(format_args!("build: librdkafka {version}, features {features}"))?;
    let config = ops::log_config(args)?;
    let servers = config.bootstrap_servers.clone();
    match reachable(&servers).await {
        Some(address) => out(format_args!("reachable: ok ({address} takes TCP connections)"))?,
        None => out(format_args!("reachable: failed (no server of {servers} takes TCP connections)"))?,
    }
    let brokers = check("authenticated", admin::fetch_metadata(&config, None)).await?.brokers().len();
    out(format_args!("authenticated: ok ({brokers} broker(s) answered)"))?;
    let records = check("topic readable", read(config.clone())).await?;
    out(format_args!("topic readable: ok (`{}` has {records} record(s); layout checked)", config.topic))?;
    check("topic writable", admin::probe_write(&config)).await?;
    out(format_args!("topic writable: ok (the broker let a write through without appending it)"))
}

/// Awaits one check; on failure prints `<name>: failed` and returns its error.
async fn check<T, E: Into<Error>>(name: &str, step: impl Future<Output = Result<T, E>>) -> Result<T, Error> {
    match step.await {
        Ok(value) => Ok(value),
        Err(error) => {
            out(format_args!("{name}: failed"))?;
            Err(error.into())
        }
    }
}

/// The first bootstrap server that takes a TCP connection.
async fn reachable(servers: &str) -> Option<String> {
    let servers: Vec<String> =
        servers.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_string).collect();
    // Name lookups and connects block: keep them off the async workers.
    tokio::task::spawn_blocking(move || {
        servers.into_iter().find(|server| {
            server
                .to_socket_addrs()
                .into_iter()
                .flatten()
                .any(|address| TcpStream::connect_timeout(&address, Duration::from_millis(CONNECT_TIMEOUT_MS)).is_ok())
        })
    })
    .await
    .ok()
    .flatten()
}

/// Checks the topic as a reader does and fetches from its start: the records it holds.
async fn read(config: competing_transformers_kafka::KafkaLogConfig) -> Result<u64, Error> {
    admin::check_topic_as_client(&config).await?;
    let log = KafkaLog::connect_unchecked(config).await?;
    let mut cursor = log.cursor(0).await?;
    cursor.next_batch(Duration::from_millis(READ_WAIT_MS)).await?;
    Ok(log.end_offset().await?)
}
