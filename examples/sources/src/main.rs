//! Sources from Rust: a log tail of several files, served and read over one TCP connection.
//!
//! ```text
//! cargo run -p gotalk-example-sources                     # serves and reads itself
//! cargo run -p gotalk-example-sources -- 127.0.0.1:1235 search harbour
//! ```
//!
//! With no arguments it starts a server whose `tail` service answers with one source per
//! "file" (the header is the file name, each frame a line), connects to it and prints every
//! source as it streams in. With an address, an op and a query it reads that service instead
//! (`gotalk serve` offers `search`).

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use gotalk::sources::{lookup_and_post, Source, SourceError, SourceService};
use gotalk::{Config, Handlers};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (addr, op, body) = match args.as_slice() {
        [addr, op, body] => (addr.parse()?, op.clone(), body.clone()),
        [] => (serve().await?, "tail".to_owned(), "3".to_owned()),
        _ => anyhow::bail!("usage: sources [ADDR OP BODY]"),
    };
    let sock = gotalk::tcp::connect(addr, Arc::new(Handlers::new()), Config::default()).await?;
    let mut sources = lookup_and_post(&sock, &op, body).await?;
    // Sources are read one after the other here; a reader may as well take each into a task
    // of its own, and credit flows per source either way.
    while let Some(mut source) = sources.next().await? {
        let header = String::from_utf8_lossy(source.header()).into_owned();
        println!("source {} from {:?}: {header}", source.id(), source.remote_addr());
        loop {
            match source.next().await {
                Ok(Some(frame)) => println!("  {}", String::from_utf8_lossy(&frame)),
                Ok(None) => break println!("  (completed)"),
                Err(SourceError::Aborted(reason)) => break println!("  (aborted: {reason})"),
                Err(e) => return Err(e.into()),
            }
        }
    }
    println!("every source is finished");
    Ok(())
}

/// Serves `tail` on an ephemeral port: the body is how many lines each file gives.
async fn serve() -> anyhow::Result<std::net::SocketAddr> {
    let mut handlers = Handlers::new();
    SourceService::new(|_sock, body: Bytes| async move {
        let lines: usize = std::str::from_utf8(&body)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("the body is a number of lines")?;
        let files = ["access.log", "error.log", "jobs.log"].map(|file| {
            let frames = stream::iter(0..lines).then(move |n| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, String>(Bytes::from(format!("{file} line {n}")))
            });
            Source::new(file, frames)
        });
        Ok::<_, &str>(stream::iter(files))
    })
    .register(&mut handlers, "tail");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = gotalk::tcp::Server::new(Arc::new(handlers), Config::default());
    tokio::spawn(server.run(listener, std::future::pending::<()>()));
    Ok(addr)
}
