//! The composition root: the only place that reads the whole configuration, builds every
//! endpoint and orders every layer.

use std::convert::Infallible;
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use kalamdb_core::StoreHandle;
use kalamdb_http::{BoxError, ResponseBody};
use kalamdb_middleware::rescue::RescueLayer;
use kalamdb_services::{
    route_name, CreateConversation, DeleteConversation, DeleteMember, DeleteMessage, Endpoints,
    GetConversation, GetMessage, Health, InsertBatch, InsertMessage, ListConversations,
    ListMembers, Metrics, PatchConversation, PatchMessage, PutMember, QueryMessages, Router,
    StreamMessages, TrimConversation,
};
use tower::{Service, ServiceBuilder};

use crate::config::Config;

/// The one route whose token may come as `?access_token=`: a browser's `EventSource` cannot
/// set headers.
fn is_stream_route(path: &str) -> bool {
    route_name(path) == "/api/v1/conversations/{conversation_id}/stream"
}

/// Builds the whole application, endpoints and layers, over `store`.
///
/// Generic over the request body: the server passes hyper's `Incoming`, tests pass `Full<Bytes>`.
/// The result never fails: every error is already a JSON response.
///
/// # Panics
/// When `config` has not passed [`Config::validate`] (a bad CORS origin, an unreadable key
/// file, say).
pub fn build_app<B>(
    config: &Config,
    store: StoreHandle,
    started: Instant,
) -> impl Service<
    Request<B>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
       + Send
       + 'static
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    // One line per endpoint: what each needs, by name (the routes are services/src/router.rs).
    let router = Router::new(Endpoints {
        insert_message: InsertMessage::new(store.clone(), config.message_limits()),
        insert_batch: InsertBatch::new(
            store.clone(),
            config.message_limits(),
            config.limits.max_batch_messages.get(),
        ),
        get_message: GetMessage::new(store.clone()),
        patch_message: PatchMessage::new(store.clone(), config.message_limits()),
        delete_message: DeleteMessage::new(store.clone()),
        query_messages: QueryMessages::new(store.clone(), config.query_limits()),
        stream_messages: StreamMessages::new(store.clone(), config.stream_limits()),
        create_conversation: CreateConversation::new(store.clone(), config.message_limits()),
        list_conversations: ListConversations::new(store.clone(), config.query_limits()),
        get_conversation: GetConversation::new(store.clone()),
        patch_conversation: PatchConversation::new(store.clone(), config.message_limits()),
        delete_conversation: DeleteConversation::new(store.clone()),
        trim_conversation: TrimConversation::new(store.clone()),
        list_members: ListMembers::new(store.clone()),
        put_member: PutMember::new(store.clone()),
        delete_member: DeleteMember::new(store.clone()),
        health: Health::new(store.clone(), started),
        metrics: Metrics::new(crate::metrics::handle(), store, started),
    });

    let middleware = &config.middleware;
    ServiceBuilder::new()
        // Outermost: every response carries the id, and every layer below can log it.
        .layer(middleware.request_id.layer())
        // Outside rescue, so it logs each answer, refusals included, as the client gets it.
        .option_layer(middleware.request_log.layer())
        // Likewise: Server-Timing on every response and metrics with the status clients saw.
        .option_layer(middleware.timing.layer(route_name))
        // Outside rescue so 429s and 503s carry CORS headers a browser script needs to read
        // them; preflights are answered here, spending no rate or concurrency allowance.
        .option_layer(
            middleware
                .cors
                .layer()
                .expect("[middleware.cors] is validated when the config is loaded"),
        )
        // Every error and panic from here down becomes the one JSON error body. The layers
        // above never fail, so the stack's error type is Infallible.
        .layer(RescueLayer::new())
        // Refuses requests without valid credentials before they spend anything below: one
        // signature check (or SHA-256) each. Outside the rate limit, which may key on the
        // principal it sets.
        .option_layer(
            config
                .auth
                .layer(is_stream_route)
                .expect("[auth] is validated when the config is loaded"),
        )
        // Refuses over-rate clients before they take a concurrency slot or read a byte.
        .option_layer(middleware.rate_limit.layer())
        // Sheds load beyond max_in_flight; outside the timeout, so a timed-out request gives
        // its slot back.
        .option_layer(middleware.concurrency.layer())
        // The deadline covers everything below, including reading the body. It ends at the
        // response head, so an event stream, whose head goes out at once, is never cut.
        .layer(middleware.timeout.layer())
        // Innermost: refuses an oversized body before the router and endpoints see the request.
        .layer(middleware.body_limit.layer())
        .service(router)
}
