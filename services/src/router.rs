//! [`Router`]: method + path → endpoint, with 404 and 405 as JSON.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;
use kalamdb_http::{ApiError, BoxError, ResponseBody};
use tower_service::Service;

use crate::{
    EndpointFuture, GetMessage, Health, InsertBatch, InsertMessage, Metrics, QueryMessages,
    StreamMessages,
};

/// The resources the API serves, resolved from the path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resource {
    /// `/api/v1/messages`
    Messages,
    /// `/api/v1/messages/batch`
    Batch,
    /// `/api/v1/messages/{msg_id}`
    Message,
    /// `/api/v1/query`
    Query,
    /// `/api/v1/conversations/{conversation_id}/stream`
    Stream,
    /// `/health`
    Health,
    /// `/metrics`
    Metrics,
}

impl Resource {
    fn resolve(path: &str) -> Option<Self> {
        // The fixed paths, most of all requests, by one comparison each: splitting costs about
        // 450 instructions, and every request is resolved twice (router and timing layer).
        match path {
            "/api/v1/messages" => return Some(Resource::Messages),
            "/api/v1/query" => return Some(Resource::Query),
            "/api/v1/messages/batch" => return Some(Resource::Batch),
            "/health" => return Some(Resource::Health),
            "/metrics" => return Some(Resource::Metrics),
            _ => {}
        }
        let rest = path.strip_prefix('/')?;
        let mut segments = rest.split('/');
        // One more than the longest route, so a path with anything past a route's end misses.
        let s: [Option<&str>; 6] = std::array::from_fn(|_| segments.next());
        let resource = match s {
            [Some("api"), Some("v1"), Some("messages"), None, ..] => Resource::Messages,
            [Some("api"), Some("v1"), Some("messages"), Some("batch"), None, _] => Resource::Batch,
            [Some("api"), Some("v1"), Some("messages"), Some(id), None, _] if !id.is_empty() => {
                Resource::Message
            }
            [Some("api"), Some("v1"), Some("query"), None, ..] => Resource::Query,
            [Some("api"), Some("v1"), Some("conversations"), Some(id), Some("stream"), None]
                if !id.is_empty() =>
            {
                Resource::Stream
            }
            [Some("health"), None, ..] => Resource::Health,
            [Some("metrics"), None, ..] => Resource::Metrics,
            _ => return None,
        };
        Some(resource)
    }

    fn allowed(self) -> &'static [Method] {
        match self {
            Resource::Messages | Resource::Batch | Resource::Query => &[Method::POST],
            Resource::Message | Resource::Stream | Resource::Health | Resource::Metrics => {
                &[Method::GET]
            }
        }
    }

    fn template(self) -> &'static str {
        match self {
            Resource::Messages => "/api/v1/messages",
            Resource::Batch => "/api/v1/messages/batch",
            Resource::Message => "/api/v1/messages/{msg_id}",
            Resource::Query => "/api/v1/query",
            Resource::Stream => "/api/v1/conversations/{conversation_id}/stream",
            Resource::Health => "/health",
            Resource::Metrics => "/metrics",
        }
    }
}

/// The route a path belongs to, as a metrics label: its template (`/api/v1/messages/{msg_id}`),
/// or `unmatched`. The set of values is fixed, so clients cannot grow the number of series.
pub fn route_name(path: &str) -> &'static str {
    Resource::resolve(path).map_or("unmatched", Resource::template)
}

/// Dispatches each request to the endpoint for its method and path.
///
/// Unknown paths get 404 `not_found`; a known path with another method gets 405
/// `method_not_allowed` with an `Allow` header. Every endpoint is always ready, so the router is
/// too, and it calls a clone of the endpoint per request.
#[derive(Debug, Clone)]
pub struct Router {
    insert_message: InsertMessage,
    insert_batch: InsertBatch,
    get_message: GetMessage,
    query_messages: QueryMessages,
    stream_messages: StreamMessages,
    health: Health,
    metrics: Metrics,
}

impl Router {
    /// A router over the given endpoints.
    pub fn new(
        insert_message: InsertMessage,
        insert_batch: InsertBatch,
        get_message: GetMessage,
        query_messages: QueryMessages,
        stream_messages: StreamMessages,
        health: Health,
        metrics: Metrics,
    ) -> Self {
        Self {
            insert_message,
            insert_batch,
            get_message,
            query_messages,
            stream_messages,
            health,
            metrics,
        }
    }
}

impl<B> Service<Request<B>> for Router
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = EndpointFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(resource) = Resource::resolve(request.uri().path()) else {
            let error = ApiError::not_found(format!("no such path: {}", request.uri().path()));
            return Box::pin(async move { Ok(error.to_response()) });
        };
        match (resource, request.method()) {
            (Resource::Messages, &Method::POST) => self.insert_message.call(request),
            (Resource::Batch, &Method::POST) => self.insert_batch.call(request),
            (Resource::Message, &Method::GET) => self.get_message.call(request),
            (Resource::Query, &Method::POST) => self.query_messages.call(request),
            (Resource::Stream, &Method::GET) => self.stream_messages.call(request),
            (Resource::Health, &Method::GET) => self.health.call(request),
            (Resource::Metrics, &Method::GET) => self.metrics.call(request),
            (resource, method) => {
                let error = ApiError::method_not_allowed(method, resource.allowed());
                Box::pin(async move { Ok(error.to_response()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_exactly() {
        assert_eq!(
            Resource::resolve("/api/v1/messages"),
            Some(Resource::Messages)
        );
        assert_eq!(
            Resource::resolve("/api/v1/messages/123"),
            Some(Resource::Message)
        );
        assert_eq!(
            Resource::resolve("/api/v1/messages/abc"),
            Some(Resource::Message)
        );
        assert_eq!(
            Resource::resolve("/api/v1/messages/batch"),
            Some(Resource::Batch)
        );
        assert_eq!(Resource::resolve("/api/v1/query"), Some(Resource::Query));
        assert_eq!(
            Resource::resolve("/api/v1/conversations/c%201/stream"),
            Some(Resource::Stream)
        );
        assert_eq!(Resource::resolve("/health"), Some(Resource::Health));
        assert_eq!(Resource::resolve("/metrics"), Some(Resource::Metrics));
        for path in [
            "",
            "/",
            "/api",
            "/api/v1",
            "/api/v1/messages/",
            "/api/v1/messages/1/2",
            "/api/v1/messages/batch/x",
            "/api/v1/conversations/c",
            "/api/v1/conversations//stream",
            "/api/v1/conversations/c/stream/",
            "/api/v1/conversations/c/stream/x",
            "/api/v2/messages",
            "/health/",
            "/healthz",
            "//health",
        ] {
            assert_eq!(Resource::resolve(path), None, "{path:?}");
        }
    }

    #[test]
    fn route_names_are_templates() {
        assert_eq!(
            route_name("/api/v1/messages/123"),
            "/api/v1/messages/{msg_id}"
        );
        assert_eq!(route_name("/api/v1/messages"), "/api/v1/messages");
        assert_eq!(route_name("/wp-admin/../../etc"), "unmatched");
    }
}
