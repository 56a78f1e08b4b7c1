//! [`Router`]: the route table, method + path template → endpoint, with 404 and 405 as JSON.
//!
//! The `routes!` table below is the one place routes are written. It declares [`Endpoints`]
//! (one named field per endpoint, which the server's `stack.rs` fills) and [`ROUTES`]; the
//! router's dispatch, the `Allow` header of a 405, the timing layer's [`route_name`] and the
//! route coverage test (`tests/tests/routes.rs`, which holds it to `docs/openapi.yaml`) all
//! read it. Paths are matched by `matchit` (the matcher axum uses), and
//! path parameters are percent-decoded once, into [`PathParams`].

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use http_body::Body;
use kalamdb_http::{ApiError, BoxError, ResponseBody};
use percent_encoding::percent_decode_str;
use tower_service::Service;

use crate::{
    CreateConversation, DeleteConversation, DeleteMember, DeleteMessage, EndpointFuture,
    GetConversation, GetMessage, Health, InsertBatch, InsertMessage, ListConversations,
    ListMembers, Metrics, PatchConversation, PatchMessage, PutMember, QueryMessages,
    StreamMessages, TrimConversation,
};

/// Declares [`Endpoints`], [`ROUTES`] and the dispatch from a route's place in the table to its
/// endpoint, from one line per route: `METHOD "template" => field: Type`.
macro_rules! routes {
    ($($method:ident $template:literal => $field:ident: $endpoint:ty),+ $(,)?) => {
        /// Every endpoint the router dispatches to, by name. The server builds each one with
        /// what it needs (`stack.rs`); tests may build any of them alone.
        #[derive(Debug, Clone)]
        pub struct Endpoints {
            $(
                #[doc = concat!("`", stringify!($method), " ", $template, "`")]
                pub $field: $endpoint,
            )+
        }

        /// Every route: its method and path template, as the table lists them.
        pub const ROUTES: &[(Method, &str)] = &[$((Method::$method, $template)),+];

        impl Endpoints {
            /// Calls the endpoint of `ROUTES[route]`.
            fn call<B>(&self, route: usize, request: Request<B>) -> EndpointFuture
            where
                B: Body + Send + 'static,
                B::Data: Send,
                B::Error: Into<BoxError>,
            {
                let mut index = 0;
                $(
                    if route == index {
                        return self.$field.clone().call(request);
                    }
                    index += 1;
                )+
                let _ = index;
                unreachable!("route {route} is not in the table")
            }
        }
    };
}

routes! {
    POST "/api/v1/messages" => insert_message: InsertMessage,
    POST "/api/v1/messages/batch" => insert_batch: InsertBatch,
    GET "/api/v1/messages/{msg_id}" => get_message: GetMessage,
    PATCH "/api/v1/messages/{msg_id}" => patch_message: PatchMessage,
    DELETE "/api/v1/messages/{msg_id}" => delete_message: DeleteMessage,
    POST "/api/v1/query" => query_messages: QueryMessages,
    GET "/api/v1/conversations/{conversation_id}/stream" => stream_messages: StreamMessages,
    POST "/api/v1/conversations" => create_conversation: CreateConversation,
    GET "/api/v1/conversations" => list_conversations: ListConversations,
    GET "/api/v1/conversations/{conversation_id}" => get_conversation: GetConversation,
    PATCH "/api/v1/conversations/{conversation_id}" => patch_conversation: PatchConversation,
    DELETE "/api/v1/conversations/{conversation_id}" => delete_conversation: DeleteConversation,
    DELETE "/api/v1/conversations/{conversation_id}/messages" => trim_conversation: TrimConversation,
    GET "/api/v1/conversations/{conversation_id}/members" => list_members: ListMembers,
    PUT "/api/v1/conversations/{conversation_id}/members/{user_id}" => put_member: PutMember,
    DELETE "/api/v1/conversations/{conversation_id}/members/{user_id}" => delete_member: DeleteMember,
    GET "/health" => health: Health,
    GET "/metrics" => metrics: Metrics,
}

/// One path template and the routes that share it.
#[derive(Debug)]
struct Resource {
    template: &'static str,
    /// Whether the template is a fixed path, without parameters.
    fixed: bool,
    /// (method, place in [`ROUTES`]).
    routes: Vec<(Method, usize)>,
}

impl Resource {
    fn allowed(&self) -> Vec<Method> {
        self.routes
            .iter()
            .map(|(method, _)| method.clone())
            .collect()
    }
}

/// [`ROUTES`] grouped by template, and a `matchit` tree over the templates.
struct Table {
    resources: Vec<Resource>,
    /// Every template → its place in `resources`. Only paths that are no fixed template need
    /// it, but the fixed ones are in it too, so that matchit refuses templates that overlap.
    tree: matchit::Router<usize>,
}

/// The table, built on first use.
static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let mut resources: Vec<Resource> = Vec::new();
    for (route, (method, template)) in ROUTES.iter().enumerate() {
        match resources.iter_mut().find(|r| r.template == *template) {
            Some(resource) => resource.routes.push((method.clone(), route)),
            None => resources.push(Resource {
                template,
                fixed: !template.contains('{'),
                routes: vec![(method.clone(), route)],
            }),
        }
    }
    let mut tree = matchit::Router::new();
    for (place, resource) in resources.iter().enumerate() {
        let template = resource.template;
        // The table is a constant: a template matchit refuses is a bug the unit tests catch.
        tree.insert(template, place)
            .unwrap_or_else(|e| panic!("route {template}: {e}"));
    }
    Table { resources, tree }
});

/// The resource a path belongs to, with its raw (still percent-encoded) parameters, if any.
fn resolve(path: &str) -> Option<(&'static Resource, Option<matchit::Params<'static, '_>>)> {
    let table: &'static Table = &TABLE;
    // Nearly every request is to a fixed path: comparing those first spares the tree walk,
    // about 300 instructions, and a request is resolved twice (router and timing layer).
    if let Some(resource) = table
        .resources
        .iter()
        .find(|r| r.fixed && r.template == path)
    {
        return Some((resource, None));
    }
    let found = table.tree.at(path).ok()?;
    // matchit lets `{name}` match an empty segment; no parameter here may be empty.
    if found.params.iter().any(|(_, value)| value.is_empty()) {
        return None;
    }
    Some((&table.resources[*found.value], Some(found.params)))
}

/// The route a path belongs to, as a metrics label: its template (`/api/v1/messages/{msg_id}`),
/// or `unmatched`. The set of values is fixed, so clients cannot grow the number of series.
pub fn route_name(path: &str) -> &'static str {
    resolve(path).map_or("unmatched", |(resource, _)| resource.template)
}

/// A request's path parameters, percent-decoded: `conv%20one` is `conv one`.
///
/// The router puts them in the request's extensions; an endpoint called on its own (a test's
/// `oneshot`) matches its path against the same table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathParams(Vec<(&'static str, String)>);

impl PathParams {
    /// The parameter named `name` in the route's template.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    fn decode(params: &matchit::Params<'static, '_>) -> Result<Self, ApiError> {
        params
            .iter()
            .map(|(name, raw)| {
                // percent-encoding passes a malformed escape (`%ZZ`, `a%2`) through as text;
                // here it is an error, like bytes that are not UTF-8.
                let decoded = escapes_well_formed(raw)
                    .then(|| percent_decode_str(raw).decode_utf8().ok())
                    .flatten();
                decoded
                    .map(|value| (name, value.into_owned()))
                    .ok_or_else(|| {
                        ApiError::validation(format!(
                            "{name} in the path must be percent-encoded UTF-8"
                        ))
                    })
            })
            .collect::<Result<_, _>>()
            .map(PathParams)
    }

    /// The parameters of `request`: those the router found (taken out of its extensions), or
    /// else its path matched here.
    pub(crate) fn take<B>(request: &mut Request<B>) -> Result<Self, ApiError> {
        if let Some(params) = request.extensions_mut().remove::<PathParams>() {
            return Ok(params);
        }
        match resolve(request.uri().path()) {
            Some((_, Some(params))) => Self::decode(&params),
            _ => Ok(Self::default()),
        }
    }

    /// The parameter `name`, which the endpoint's template guarantees: a 404 when it is absent,
    /// which only an endpoint called on a path not its own can meet.
    pub(crate) fn require(&self, name: &str) -> Result<&str, ApiError> {
        self.get(name)
            .ok_or_else(|| ApiError::not_found(format!("no {name} in the path")))
    }
}

/// Whether every `%` in `raw` starts an escape of two hex digits.
fn escapes_well_formed(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    })
}

/// Dispatches each request to the endpoint for its method and path.
///
/// Unknown paths get 404 `not_found`; a known path with another method gets 405
/// `method_not_allowed` with an `Allow` header. Every endpoint is always ready, so the router is
/// too, and it calls a clone of the endpoint per request.
#[derive(Debug, Clone)]
pub struct Router {
    /// Shared: hyper clones the whole service stack for every request, and a clone of every
    /// endpoint was a reference count taken and dropped per endpoint.
    endpoints: Arc<Endpoints>,
}

impl Router {
    /// A router over `endpoints`.
    pub fn new(endpoints: Endpoints) -> Self {
        Self {
            endpoints: Arc::new(endpoints),
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

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let routed = match resolve(request.uri().path()) {
            None => Err(ApiError::not_found(format!(
                "no such path: {}",
                request.uri().path()
            ))),
            Some((resource, params)) => {
                match resource.routes.iter().find(|(m, _)| m == request.method()) {
                    None => Err(ApiError::method_not_allowed(
                        request.method(),
                        &resource.allowed(),
                    )),
                    // Only routes with parameters pay for decoding and the extension.
                    Some(&(_, route)) => match params {
                        None => Ok((route, None)),
                        Some(params) => PathParams::decode(&params).map(|p| (route, Some(p))),
                    },
                }
            }
        };
        match routed {
            Ok((route, params)) => {
                if let Some(params) = params {
                    request.extensions_mut().insert(params);
                }
                self.endpoints.call(route, request)
            }
            Err(error) => Box::pin(async move { Ok(error.to_response()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_resolves_to_its_own_template() {
        for (method, template) in ROUTES {
            // A template is also a path that matches it, its parameters named for themselves.
            let (resource, _) = resolve(template).expect(template);
            assert_eq!(resource.template, *template);
            assert!(resource.routes.iter().any(|(m, _)| m == method));
        }
    }

    #[test]
    fn resolves_paths_exactly() {
        for (path, template) in [
            ("/api/v1/messages", "/api/v1/messages"),
            ("/api/v1/messages/123", "/api/v1/messages/{msg_id}"),
            ("/api/v1/messages/abc", "/api/v1/messages/{msg_id}"),
            ("/api/v1/messages/batch", "/api/v1/messages/batch"),
            ("/api/v1/query", "/api/v1/query"),
            (
                "/api/v1/conversations/c%201/stream",
                "/api/v1/conversations/{conversation_id}/stream",
            ),
            ("/api/v1/conversations", "/api/v1/conversations"),
            (
                "/api/v1/conversations/c",
                "/api/v1/conversations/{conversation_id}",
            ),
            (
                "/api/v1/conversations/c/members",
                "/api/v1/conversations/{conversation_id}/members",
            ),
            (
                "/api/v1/conversations/c/members/u",
                "/api/v1/conversations/{conversation_id}/members/{user_id}",
            ),
            ("/health", "/health"),
            ("/metrics", "/metrics"),
        ] {
            assert_eq!(route_name(path), template, "{path:?}");
        }
        for path in [
            "",
            "/",
            "/api",
            "/api/v1",
            "/api/v1/messages/",
            "/api/v1/messages/1/2",
            "/api/v1/messages/batch/x",
            "/api/v1/conversations/",
            "/api/v1/conversations//stream",
            "/api/v1/conversations/c/members/",
            "/api/v1/conversations/c/members/u/x",
            "/api/v1/conversations/c/stream/",
            "/api/v1/conversations/c/stream/x",
            "/api/v2/messages",
            "/health/",
            "/healthz",
            "//health",
        ] {
            assert_eq!(route_name(path), "unmatched", "{path:?}");
        }
    }

    #[test]
    fn path_parameters_are_percent_decoded_once() {
        let mut request = Request::get("/api/v1/conversations/conv%20one%2Fx/stream")
            .body(())
            .unwrap();
        let params = PathParams::take(&mut request).unwrap();
        assert_eq!(params.get("conversation_id"), Some("conv one/x"));
        assert_eq!(params.get("msg_id"), None);
        // %25 is a literal percent sign, not the start of another escape.
        let mut request = Request::get("/api/v1/messages/%2531").body(()).unwrap();
        let params = PathParams::take(&mut request).unwrap();
        assert_eq!(params.get("msg_id"), Some("%31"));
    }

    #[test]
    fn a_malformed_escape_or_bytes_not_utf8_are_a_400_naming_the_parameter() {
        for segment in ["%FF", "%ZZ", "%+1", "a%2", "a%"] {
            let path = format!("/api/v1/conversations/{segment}/stream");
            let mut request = Request::get(path.as_str()).body(()).unwrap();
            let error = PathParams::take(&mut request).unwrap_err();
            assert_eq!(error.status(), http::StatusCode::BAD_REQUEST, "{segment}");
            assert!(error.to_string().contains("conversation_id"), "{error}");
        }
    }
}
