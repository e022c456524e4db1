//! The composition root: credentials, store, usage, the S3 service with its routes, the
//! listener, background cleanup and graceful shutdown — in that order.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::credentials::{Credentials, Loaded, RoleAccess};
use crate::ext::GpairRoutes;
use crate::quota::Usage;
use crate::s3impl::Gateway;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Credentials(#[from] crate::credentials::CredentialsError),
    #[error("cannot prepare root {root}: {source}")]
    Root {
        root: String,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Runs the gateway until `shutdown` resolves, then drains in-flight requests.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let root_err = |source| RunError::Root {
        root: config.root.display().to_string(),
        source,
    };

    let credentials = match Credentials::load_or_generate(&config.credentials)? {
        Loaded::Existing(c) => c,
        Loaded::Generated(c, key) => {
            // Printed once, to stdout only; never logged.
            println!(
                "generated credentials in {}: access_key={} secret_key={} role=backend",
                config.credentials.display(),
                key.access_key,
                key.secret_key
            );
            c
        }
    };
    let store = Arc::new(Store::open(&config.root, config.fsync).map_err(root_err)?);
    let usage = {
        let (root, quotas) = (config.root.clone(), config.quotas.clone());
        let scanned = tokio::task::spawn_blocking(move || Usage::scan(&root, quotas))
            .await
            .map_err(|e| root_err(std::io::Error::other(e)))?;
        Arc::new(scanned.map_err(root_err)?)
    };
    let access = Arc::new(RoleAccess {
        credentials: credentials.clone(),
    });

    let service = {
        let mut b = S3ServiceBuilder::new(Gateway {
            store: Arc::clone(&store),
            usage: Arc::clone(&usage),
            region: config.region.clone(),
        });
        b.set_auth(credentials.clone());
        b.set_access(RoleAccess { credentials });
        b.set_route(GpairRoutes {
            store: Arc::clone(&store),
            usage: Arc::clone(&usage),
            access,
        });
        let mut s3_config = s3s::config::S3Config::default();
        s3_config.xml_max_body_size = config.max_xml_body_bytes;
        b.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            s3_config,
        ))));
        XmlBodyLimit {
            inner: b.build(),
            max: config.max_xml_body_bytes as u64,
        }
    };

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(|source| RunError::Listen {
        addr: config.listen,
        source,
    })?;
    println!("s3fs-gateway listening on http://{local}");
    let _ = std::io::stdout().flush();
    tracing::info!(%local, root = %config.root.display(), fsync = config.fsync, "serving");

    let cleanup = tokio::spawn(clean_stale_uploads(
        Arc::clone(&store),
        config.multipart_stale_after,
        config.multipart_cleanup_interval,
    ));

    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        // A client may shut down its sending side once the request is out.
        .half_close(true)
        .max_buf_size(config.max_header_bytes)
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(60));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = socket.set_nodelay(true);
        let conn = http.serve_connection(TokioIo::new(socket), service.clone());
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    cleanup.abort();
    tracing::info!("shutting down: waiting for in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_grace) => tracing::warn!("grace period over; closing remaining connections"),
    }
    Ok(())
}

/// The front of the S3 service. Refuses XML request bodies over the limit by their
/// Content-Length before s3s reads them, with the S3 error a client expects (s3s would read
/// up to the limit and answer 500); and closes the connection after the answers of
/// `Expect: 100-continue` requests that botocore would misread the next response after
/// ([`CloseAfter`]).
#[derive(Clone)]
struct XmlBodyLimit {
    inner: s3s::service::S3Service,
    max: u64,
}

impl XmlBodyLimit {
    /// POSTs (DeleteObjects, CompleteMultipartUpload, ...) and bucket-level PUTs carry XML;
    /// object and part PUTs carry data and are not limited here.
    fn carries_xml(req: &http::Request<hyper::body::Incoming>) -> bool {
        match *req.method() {
            http::Method::POST => true,
            http::Method::PUT => !req.uri().path().trim_matches('/').contains('/'),
            _ => false,
        }
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for XmlBodyLimit {
    type Response = s3s::HttpResponse;
    type Error = s3s::HttpError;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let len = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let close = closes_after_final_answer(&req);
        if Self::carries_xml(&req) && len.is_some_and(|n| n > self.max) {
            let err = s3s::S3Error::with_message(
                s3s::S3ErrorCode::MaxMessageLengthExceeded,
                format!("the request body is larger than {} bytes", self.max),
            );
            let resp = err
                .to_http_response()
                .map(|r| {
                    let close = close.after(r.status());
                    with_close(r, close)
                })
                .map_err(|e| s3s::HttpError::new(Box::new(e)));
            return Box::pin(async move { resp });
        }
        let answer = hyper::service::Service::call(&self.inner, req);
        Box::pin(async move {
            let resp = answer.await?;
            let close = close.after(resp.status());
            Ok(with_close(resp, close))
        })
    }
}

/// When an answer to a request with `Expect: 100-continue` has to close the connection.
///
/// botocore (the AWS CLI, boto3) keeps the status line of a final answer it got *instead of*
/// `100 Continue` on the pooled connection (boto/botocore#3755, #1863): the next request with
/// `Expect` on that connection is parsed against that stale status line, its real status line
/// is taken for a header, its length is lost, and the client reads until the server closes —
/// a silent 60 s stall. hyper sends no `100 Continue` for an empty body (nothing to wait for)
/// nor when we answer before reading the body, so in both cases we close the connection after
/// the answer (`Connection: close`), which makes botocore drop that state. A reconnect per
/// empty PUT is cheap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CloseAfter {
    /// No `Expect: 100-continue`: keep-alive as usual.
    Never,
    /// `Expect` with an empty body: no `100 Continue` is ever sent, so always close.
    Always,
    /// `Expect` with a body: close when the answer is an error, which may have come before the
    /// body was read (and so without `100 Continue`).
    OnError,
}

impl CloseAfter {
    fn after(self, status: http::StatusCode) -> bool {
        match self {
            Self::Never => false,
            Self::Always => true,
            Self::OnError => !status.is_success(),
        }
    }
}

fn closes_after_final_answer<B: hyper::body::Body>(req: &http::Request<B>) -> CloseAfter {
    let expects = req
        .headers()
        .get_all(http::header::EXPECT)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects {
        CloseAfter::Never
    } else if req.body().is_end_stream() || req.body().size_hint().exact() == Some(0) {
        CloseAfter::Always
    } else {
        CloseAfter::OnError
    }
}

fn with_close(mut resp: s3s::HttpResponse, close: bool) -> s3s::HttpResponse {
    if close {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    resp
}

async fn clean_stale_uploads(
    store: Arc<Store>,
    max_age: std::time::Duration,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || crate::multipart::remove_stale(&s, max_age)).await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(removed = n, "removed stale multipart uploads"),
            Ok(Err(e)) => tracing::warn!(error = %e, "stale multipart cleanup failed"),
            Err(e) => tracing::warn!(error = %e, "stale multipart cleanup panicked"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(expect: Option<&str>, body: &str) -> http::Request<String> {
        let mut b = http::Request::builder().method("PUT").uri("/b/k");
        if let Some(e) = expect {
            b = b.header(http::header::EXPECT, e);
        }
        b.body(body.to_owned()).expect("request")
    }

    #[test]
    fn expect_continue_without_a_body_closes_the_connection() {
        let ok = http::StatusCode::OK;
        let denied = http::StatusCode::FORBIDDEN;
        assert_eq!(closes_after_final_answer(&req(None, "")), CloseAfter::Never);
        assert!(!CloseAfter::Never.after(denied));
        let empty = closes_after_final_answer(&req(Some("100-Continue"), ""));
        assert_eq!(empty, CloseAfter::Always);
        assert!(empty.after(ok));
        let data = closes_after_final_answer(&req(Some("100-continue"), "data"));
        assert_eq!(data, CloseAfter::OnError);
        assert!(!data.after(ok) && data.after(denied));
        let resp = with_close(s3s::HttpResponse::new(s3s::Body::empty()), true);
        assert_eq!(resp.headers()[http::header::CONNECTION], "close");
    }
}
