//! The composition root: the only place that reads the whole configuration, builds every
//! endpoint and orders every layer.

use std::convert::Infallible;
use std::time::Instant;

use http::{Request, Response};
use http_body::Body;
use kalamdb_core::StoreHandle;
use kalamdb_http::{BoxError, ResponseBody};
use kalamdb_middleware::request_log::RequestLogLayer;
use kalamdb_middleware::rescue::RescueLayer;
use kalamdb_services::{GetMessage, Health, InsertMessage, QueryMessages, Router};
use tower::{Service, ServiceBuilder};

use crate::config::Config;

/// Builds the whole application, endpoints and layers, over `store`.
///
/// Generic over the request body: the server passes hyper's `Incoming`, tests pass `Full<Bytes>`.
/// The result never fails: every error is already a JSON response.
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
    let router = Router::new(
        InsertMessage::new(store.clone(), config.message_limits()),
        GetMessage::new(store.clone()),
        QueryMessages::new(store.clone(), config.query_limits()),
        Health::new(store, started),
    );

    ServiceBuilder::new()
        // Outermost, so every error and panic of every layer below becomes the JSON body.
        .layer(RescueLayer::new())
        // Logs every request that reached the server, whatever the layers below decide, with
        // the status rescue will give it.
        .layer(RequestLogLayer::new())
        // The deadline covers everything below, including reading the body.
        .layer(config.middleware.timeout.layer())
        // Innermost: refuses an oversized body before the router and endpoints see the request.
        .layer(config.middleware.body_limit.layer())
        .service(router)
}
