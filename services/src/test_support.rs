//! What the endpoints' own tests share: a handle over an in-memory store, requests, and
//! answers reduced to status and JSON.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kalamdb_core::testing::{Faulty, MemStore};
use kalamdb_core::StoreHandle;
use kalamdb_http::ResponseBody;
use serde_json::Value;
use tower::{Service, ServiceExt};

/// A handle over a fresh [`MemStore`], through a [`Faulty`] the test may disturb.
pub(crate) fn store() -> (StoreHandle, Arc<MemStore>, Arc<Faulty>) {
    let mem = Arc::new(MemStore::new());
    let faulty = Arc::new(Faulty::new(mem.clone()));
    (StoreHandle::new(faulty.clone()), mem, faulty)
}

/// A POST with a JSON body.
pub(crate) fn post_json(uri: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("a valid request")
}

/// A GET with no body.
pub(crate) fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri)
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

/// The status and the body parsed as JSON (`Null` when it is not JSON).
pub(crate) async fn answer(response: Response<ResponseBody>) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Sends `request` to a clone of `service` and reduces the answer as [`answer`] does.
pub(crate) async fn send<S>(service: &S, request: Request<Full<Bytes>>) -> (StatusCode, Value)
where
    S: Service<Request<Full<Bytes>>, Response = Response<ResponseBody>, Error = Infallible> + Clone,
{
    let response = service.clone().oneshot(request).await;
    answer(response.unwrap_or_else(|never| match never {})).await
}
