use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use kalamdb_http::{BoxError, Principal};
use pin_project_lite::pin_project;

pin_project! {
    /// The response future of [`super::Auth`]: the inner service's, which puts the principal in
    /// the response's extensions for the request log, or a refusal that resolves at once.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] future: F, principal: Option<Principal> },
        Refused { error: Option<BoxError> },
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn inner(future: F, principal: Option<Principal>) -> Self {
        Self {
            kind: Kind::Inner { future, principal },
        }
    }

    pub(super) fn refused(error: impl Into<BoxError>) -> Self {
        Self {
            kind: Kind::Refused {
                error: Some(error.into()),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, principal } => {
                let mut response = std::task::ready!(future.poll(cx)).map_err(Into::into)?;
                if let Some(principal) = principal.take() {
                    response.extensions_mut().insert(principal);
                }
                Poll::Ready(Ok(response))
            }
            KindProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
