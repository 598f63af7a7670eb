//! The projection speaks TLS to a real PostgreSQL that offers it (`scripts/postgres.sh`
//! gives its server a certificate from a CA of its own): with `sslmode=require` and that CA
//! in `PGSSLROOTCERT` it connects over TLS; trusting only the system's CAs, it is refused in
//! one sentence naming the fix.
//!
//! Needs `DATABASE_URL` and `PGSSLROOTCERT` (`scripts/postgres.sh start` prints both;
//! `scripts/test.sh` sets them); fails when they are missing.

use ledger_projection::{Projection, ProjectionError, PG_SSL_ROOT_CERT_ENV};

fn required(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: `scripts/postgres.sh start` prints it, and scripts/test.sh sets it")
    })
}

/// `url` asking for TLS.
fn requiring_tls(url: &str) -> String {
    format!("{url}{}sslmode=require", if url.contains('?') { '&' } else { '?' })
}

/// Sessions the server reports as encrypted.
async fn encrypted_sessions(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("a plain session");
    tokio::spawn(connection);
    let row = client.query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[]).await.expect("pg_stat_ssl");
    row.get(0)
}

// One test: PGSSLROOTCERT is the process's environment.
#[tokio::test]
async fn the_projection_connects_over_tls_only_to_a_server_it_trusts() {
    let (url, ca) = (required("DATABASE_URL"), required(PG_SSL_ROOT_CERT_ENV));
    let before = encrypted_sessions(&url).await;

    std::env::set_var(PG_SSL_ROOT_CERT_ENV, &ca);
    let projection = Projection::connect(&requiring_tls(&url), "tls_test", "tls-test-topic")
        .await
        .unwrap_or_else(|e| panic!("TLS with the server's CA trusted: {e}"));
    assert!(
        encrypted_sessions(&url).await > before,
        "the server lists no new encrypted session while the projection is connected"
    );
    drop(projection);

    std::env::remove_var(PG_SSL_ROOT_CERT_ENV);
    let refused = Projection::connect(&requiring_tls(&url), "tls_test", "tls-test-topic").await;
    let error = match refused {
        Ok(_) => panic!("connected to a server whose certificate no trusted CA signed"),
        Err(error) => error,
    };
    assert!(matches!(error, ProjectionError::Handshake { .. }), "{error:?}");
    let sentence = error.to_string();
    assert!(sentence.contains(PG_SSL_ROOT_CERT_ENV) && sentence.contains("TLS handshake"), "{sentence}");
}
