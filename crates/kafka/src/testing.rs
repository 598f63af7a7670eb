//! Test helpers for code that drives this crate: a schema registry on a local socket.

use crate::schema_registry::SchemaRegistry;

/// A registry on a local socket that answers each request with the next of `answers`
/// (status line, JSON body), the last one for ever after.
pub async fn registry_answering(answers: Vec<(&'static str, &'static str)>) -> SchemaRegistry {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/apis/ccompat/v7", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let (status, body) = answers[n.min(answers.len() - 1)];
            let mut request = Vec::new();
            let mut buffer = [0; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    SchemaRegistry::new(&url).unwrap()
}
