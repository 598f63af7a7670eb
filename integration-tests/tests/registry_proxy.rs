//! The schema registry client goes through the HTTP proxy the environment names
//! (`HTTP_PROXY`, as networks that require one set it), here a forward proxy on a local
//! socket in front of the real registry (`SCHEMA_REGISTRY_URL`): registering a schema works
//! through it, and the proxy saw the request.

use std::sync::{Arc, Mutex};

use competing_transformers_kafka::schema_registry::{subject_for, SchemaRegistry};
use integration_tests::{schema_registry_url, unique_topic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SCHEMA: &str =
    r#"{"type":"record","name":"Proxied","namespace":"ct.test","fields":[{"name":"id","type":"string"}]}"#;

/// A forward proxy for plain HTTP, one request per connection: it reads the request's head
/// (`GET http://host:port/path …`), connects to that host, sends it the request in origin
/// form (`GET /path …`, `Connection: close`) and relays the rest both ways. Every request
/// line it saw is kept.
async fn forward_proxy(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else { return };
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut head = vec![0u8; 8192];
            let read = client.read(&mut head).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&head[..read]).to_string();
            let line = text.lines().next().unwrap_or("").to_string();
            seen.lock().unwrap().push(line.clone());
            let authority = line
                .split(' ')
                .nth(1)
                .and_then(|url| url.strip_prefix("http://"))
                .map(|rest| rest.split('/').next().unwrap_or("").to_string());
            let Some(authority) = authority else { return };
            let Ok(mut upstream) = TcpStream::connect(&authority).await else { return };
            let origin_form = text.replacen(&format!("http://{authority}"), "", 1);
            let (request_head, rest) = origin_form.split_once("\r\n\r\n").unwrap_or((&origin_form, ""));
            let headers: Vec<&str> =
                request_head.lines().filter(|h| !h.to_ascii_lowercase().contains("connection:")).collect();
            let request = format!("{}\r\nConnection: close\r\n\r\n{rest}", headers.join("\r\n"));
            if upstream.write_all(request.as_bytes()).await.is_ok() {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
        });
    }
}

#[tokio::test]
async fn the_registry_client_goes_through_the_environments_http_proxy() {
    let url = schema_registry_url();
    assert!(url.starts_with("http://"), "this test relays plain HTTP; SCHEMA_REGISTRY_URL is {url}");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(forward_proxy(listener, seen.clone()));
    // The environment a client on a proxied network has; this test's binary has no other test.
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }
    std::env::set_var("HTTP_PROXY", &proxy);
    std::env::set_var("http_proxy", &proxy);

    let registry = SchemaRegistry::new(&url).unwrap();
    let subject = subject_for(unique_topic("proxied").as_str());
    let id = registry.register(&subject, SCHEMA).await.expect("registering through the proxy");
    assert!(registry.writer_schema(id).await.is_ok(), "the schema reads back through the proxy");

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|line| line.contains(&format!("/subjects/{subject}"))),
        "the proxy saw no request for subject {subject}: {seen:?}"
    );
}
