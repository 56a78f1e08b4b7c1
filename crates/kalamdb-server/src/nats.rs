//! The `nats` live bus (`live.bus = "nats"`): NATS core pub/sub on one subject the servers
//! share, spoken directly over one TCP connection. The part of the protocol a publisher and
//! subscriber needs is a handful of text lines (`CONNECT`, `SUB`, `PUB`, `MSG`, `PING`/`PONG`),
//! so no client library is linked.
//!
//! Core NATS delivers at most once and drops what a slow consumer cannot take: that is all the
//! bus promises, since streams read what it loses from the store (`kalamdb_core::bus`). The
//! connection comes back by itself after a failure.

use std::sync::Arc;
use std::time::Duration;

use kalamdb_core::bus::{Event, Outbox};
use kalamdb_core::StoreHandle;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// How many events wait for the connection before new ones are dropped.
const QUEUE: usize = 16_384;
/// The pause before a lost connection is made again.
const RECONNECT: Duration = Duration::from_millis(500);
/// The largest message this client takes from the server (NATS's default `max_payload`).
const MAX_PAYLOAD: usize = 1024 * 1024;

/// The bus; see the module docs.
#[derive(Debug)]
pub struct NatsBus;

impl NatsBus {
    /// Connects to `address` (`host:port`) and subscribes to `subject`, on the current tokio
    /// runtime, and returns where events go to be sent; what other servers publish goes to
    /// `handle`'s streams.
    pub fn start(address: String, subject: String, handle: StoreHandle) -> Arc<Outbox> {
        let origin = uuid::Uuid::new_v4().to_string();
        let (outbox, outgoing) = Outbox::new(origin.clone(), QUEUE);
        tokio::spawn(run(address, subject, origin, outgoing, handle));
        Arc::new(outbox)
    }
}

/// One connection after another until the handle's streams end.
async fn run(
    address: String,
    subject: String,
    origin: String,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
    handle: StoreHandle,
) {
    loop {
        let session = session(&address, &subject, &origin, &mut outgoing, &handle);
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, %address, "live bus: the NATS connection failed; reconnecting");
                }
            }
            () = handle.streams_ended() => return,
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// One connection: subscribe, then publish what is queued and deliver what is heard.
async fn session(
    address: &str,
    subject: &str,
    origin: &str,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    handle: &StoreHandle,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    let mut line = String::new();
    // The server speaks first: INFO {...}.
    read.read_line(&mut line).await?;
    if !line.starts_with("INFO") {
        return Err(invalid(format!("expected INFO, got {:?}", line.trim())));
    }
    write
        .write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"name\":\"kalamdb-server\",\"lang\":\"rust\",\"version\":\"1\",\"protocol\":0}\r\n",
        )
        .await?;
    write
        .write_all(format!("SUB {subject} 1\r\nPING\r\n").as_bytes())
        .await?;
    write.flush().await?;
    // Reading a line is not safe to cancel, so the reader has a task of its own and asks the
    // writer for its PONGs; `recv` is, so the writer waits on both queues.
    let (pongs, mut pong_requests) = mpsc::channel::<()>(16);
    let reader = async move {
        loop {
            line.clear();
            if read.read_line(&mut line).await? == 0 {
                return Err(invalid("the server closed the connection".into()));
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.first().copied() {
                Some("MSG") => {
                    // MSG <subject> <sid> [reply-to] <#bytes>
                    let size: usize = words
                        .last()
                        .and_then(|n| n.parse().ok())
                        .filter(|n| *n <= MAX_PAYLOAD)
                        .ok_or_else(|| invalid(format!("bad MSG line {:?}", line.trim())))?;
                    let mut payload = vec![0; size + 2];
                    read.read_exact(&mut payload).await?;
                    payload.truncate(size);
                    if let Some((from, event)) = Event::decode(&payload) {
                        if from != origin {
                            handle.deliver(&event);
                        }
                    }
                }
                Some("PING") => {
                    let _ = pongs.send(()).await;
                }
                Some("-ERR") => {
                    return Err(invalid(format!("the server refused: {}", line.trim())));
                }
                // PONG, +OK, INFO updates.
                _ => {}
            }
        }
    };
    let writer = async move {
        loop {
            tokio::select! {
                pong = pong_requests.recv() => {
                    if pong.is_none() {
                        return Ok(());
                    }
                    write.write_all(b"PONG\r\n").await?;
                }
                payload = outgoing.recv() => {
                    let Some(payload) = payload else {
                        return Ok(()); // The store handle is gone.
                    };
                    publish(&mut write, subject, &payload).await?;
                    // Whatever else is queued goes in the same write.
                    while let Ok(more) = outgoing.try_recv() {
                        publish(&mut write, subject, &more).await?;
                    }
                }
            }
            write.flush().await?;
        }
    };
    tokio::select! {
        result = reader => result,
        result = writer => result,
    }
}

async fn publish(
    write: &mut BufWriter<tokio::net::tcp::OwnedWriteHalf>,
    subject: &str,
    payload: &[u8],
) -> std::io::Result<()> {
    write
        .write_all(format!("PUB {subject} {}\r\n", payload.len()).as_bytes())
        .await?;
    write.write_all(payload).await?;
    write.write_all(b"\r\n").await
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}
