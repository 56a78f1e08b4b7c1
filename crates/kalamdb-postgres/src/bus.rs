//! The `postgres` live bus (`live.bus = "postgres"`): each server sends its committed events
//! with `NOTIFY` on a connection of its own, after the commit and never inside the store's
//! transactions, and hears the others' with `LISTEN` on another. PostgreSQL and Citus run it;
//! CockroachDB has no `LISTEN` (use NATS there).
//!
//! Both connections come back by themselves after a failure; what the bus loses meanwhile the
//! streams read from the store (`kalamdb_core::bus`). These are the only statements of the
//! crate outside `sql.rs`: they belong to the bus, not to the store, and are PostgreSQL's own.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kalamdb_core::bus::{Event, Outbox};
use kalamdb_core::StoreHandle;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

/// How many events wait for the sending connection before new ones are dropped (streams then
/// catch up by `live.resync_ms`): a bus that is down never holds up a writer.
const QUEUE: usize = 16_384;
/// The pause before a lost connection is made again.
const RECONNECT: Duration = Duration::from_millis(500);

/// The bus; see the module docs.
#[derive(Debug)]
pub struct PgBus;

impl PgBus {
    /// Starts the sending and listening connections to `url` on `channel` (a validated
    /// identifier), on the current tokio runtime, and returns where events go to be sent. What
    /// is heard goes to `handle`'s streams.
    pub fn start(url: &str, channel: &str, handle: StoreHandle) -> Arc<Outbox> {
        let origin = uuid::Uuid::new_v4().to_string();
        let channel = channel.to_ascii_lowercase();
        let (outbox, outgoing) = Outbox::new(origin.clone(), QUEUE);
        tokio::spawn(send(url.to_owned(), channel.clone(), outgoing));
        tokio::spawn(listen(url.to_owned(), channel, origin, handle));
        Arc::new(outbox)
    }
}

/// Sends queued events, one `NOTIFY` each, reconnecting after a failure.
async fn send(url: String, channel: String, mut outgoing: mpsc::Receiver<Vec<u8>>) {
    let mut pending: Option<Vec<u8>> = None;
    loop {
        let connected = async {
            let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(connection);
            let notify = client.prepare("SELECT pg_notify($1, $2)").await?;
            Ok::<_, tokio_postgres::Error>((client, notify))
        };
        let (client, notify) = match connected.await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "live bus: cannot connect to send; retrying");
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        loop {
            let payload = match pending.take() {
                Some(payload) => payload,
                None => match outgoing.recv().await {
                    Some(payload) => payload,
                    None => return, // The store handle is gone.
                },
            };
            // Events are JSON, so always text.
            let text = String::from_utf8_lossy(&payload);
            if let Err(e) = client.execute(&notify, &[&channel, &text.as_ref()]).await {
                tracing::warn!(error = %e, "live bus: a NOTIFY failed; reconnecting");
                if client.is_closed() {
                    pending = Some(payload);
                    break;
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Listens on `channel` and hands every other server's event to `handle`.
async fn listen(url: String, channel: String, origin: String, handle: StoreHandle) {
    loop {
        let (client, mut connection) = match tokio_postgres::connect(&url, NoTls).await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "live bus: cannot connect to listen; retrying");
                tokio::time::sleep(RECONNECT).await;
                continue;
            }
        };
        let (heard, mut notifications) = mpsc::channel(QUEUE);
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = messages.next().await {
                match message {
                    Ok(AsyncMessage::Notification(notification)) => {
                        // Full: dropped, and read from the store by the streams.
                        let _ = heard.try_send(notification);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        match client.batch_execute(&format!("LISTEN {channel}")).await {
            Ok(()) => loop {
                let notification = tokio::select! {
                    notification = notifications.recv() => notification,
                    () = handle.streams_ended() => {
                        driver.abort();
                        return;
                    }
                };
                let Some(notification) = notification else {
                    break;
                };
                let Some((from, event)) = Event::decode(notification.payload().as_bytes()) else {
                    continue;
                };
                if from != origin {
                    handle.deliver(&event);
                }
            },
            Err(e) => tracing::warn!(error = %e, "live bus: LISTEN failed; retrying"),
        }
        driver.abort();
        tracing::warn!("live bus: the listening connection ended; reconnecting");
        tokio::time::sleep(RECONNECT).await;
    }
}
