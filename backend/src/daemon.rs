//! The composition root of `gpair-backend`: open the catalog, load the registry, start the
//! outbox workers and each gpair's watcher and scans, serve gRPC on the Unix socket, and on
//! shutdown stop accepting, cancel work and give in-flight west calls a deadline.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Instant;

use gpair_proto::pb;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, CF_REGISTRY};
use crate::config::Config;
use crate::grpc::{AdminService, ChangesService, MountService};
use crate::registry::{GpairRecord, GpairState, GpeerRecord, GPAIR_PREFIX, GPEER_PREFIX};
use crate::sync::{Engine, WestFactory};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
    #[error("socket {path}: {source}")]
    Socket {
        path: String,
        source: std::io::Error,
    },
    #[error("another gpair-backend is already listening on {0}")]
    InUse(String),
    #[error("migration engine: {0}")]
    Tier(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Runs the daemon until `shutdown` resolves.
pub async fn run(
    config: Config,
    west: WestFactory,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), RunError> {
    let started = Instant::now();
    let catalog = Arc::new(tokio::task::block_in_place(|| {
        Catalog::open(&config.catalog)
    })?);
    // The registry is copied next to the catalog at every change; a catalog created afresh
    // (lost) gets it back before anything reads it (docs/operations.md, "Catalog lost").
    let backup = crate::fsck::registry_backup_path(&config.catalog);
    let restored =
        tokio::task::block_in_place(|| crate::fsck::restore_registry(&catalog, &backup))?;
    if restored > 0 {
        tracing::warn!(
            records = restored,
            backup = %backup.display(),
            "the catalog had no registry: gpeers and gpairs restored from the registry backup; run `gpair fsck --rebuild` to rebuild each gpair's records"
        );
    }
    catalog.set_registry_backup(backup);
    let cancel = CancellationToken::new();
    let engine = Engine::new(
        Arc::clone(&catalog),
        config.sync.clone(),
        west,
        cancel.clone(),
    );

    let gpeers: Vec<(Vec<u8>, GpeerRecord)> = catalog.scan(
        CF_REGISTRY,
        GPEER_PREFIX,
        |e| tracing::error!(error = %e, "skipping corrupt gpeer record"),
    )?;
    for (_, g) in gpeers {
        engine.add_gpeer(g);
    }
    let gpairs: Vec<(Vec<u8>, GpairRecord)> = catalog.scan(
        CF_REGISTRY,
        GPAIR_PREFIX,
        |e| tracing::error!(error = %e, "skipping corrupt gpair record"),
    )?;
    let mut active = Vec::new();
    for (key, g) in gpairs {
        if g.state == GpairState::Unbinding {
            // An unbind was interrupted: finish it.
            engine.stop_gpair(&g.name).await?;
            catalog.delete(CF_REGISTRY, &key)?;
            tracing::info!(gpair = g.name, "finished an interrupted unbind");
            continue;
        }
        active.push(g);
    }
    for g in active {
        engine.start_gpair(g);
    }
    let queued = engine.load_outbox()?;
    tracing::info!(queued, "outbox loaded");
    let workers = engine.start_workers();

    // Migration: usage from the catalog, interrupted migrations resolved, jobs resumed.
    crate::tier::stub::ignore_lease_break_signal();
    crate::tier::setup_failpoints();
    engine.quotas.load(&catalog)?;
    let tiering =
        crate::tier::Tiering::new(Arc::clone(&engine), config.tier.clone(), cancel.clone());
    // Mount sessions and caps of the previous run (stale exclusive caps purged) before any
    // migration runs: offloads ask them for the exclusive cap.
    let sessions = crate::session::start(&catalog, &config, &tiering, cancel.clone())?;
    let recovered = tokio::task::block_in_place(|| tiering.recover())?;
    if recovered != crate::tier::recover::Recovered::default() {
        tracing::info!(?recovered, "interrupted migrations resolved");
    }
    tiering.start_purge_loop(std::time::Duration::from_secs(3600));
    crate::policy::run::start_periodic(Arc::clone(&tiering));
    let resumed = tiering
        .resume_jobs()
        .map_err(|e| RunError::Tier(e.to_string()))?;
    if resumed > 0 {
        tracing::info!(resumed, "unfinished jobs resumed");
    }

    let listener = bind_socket(&config)?;
    println!("gpair-backend listening on {}", config.socket.display());
    let admin = Arc::new(AdminService {
        engine: Arc::clone(&engine),
        tiering: Arc::clone(&tiering),
        cluster_id: config.cluster_id.clone(),
        started,
        registry_lock: tokio::sync::Mutex::new(()),
    });
    let changes = Arc::new(ChangesService {
        engine: Arc::clone(&engine),
    });
    let mount = Arc::new(MountService {
        tiering: Arc::clone(&tiering),
        sessions: Arc::clone(&sessions),
    });
    let tcp_server = match &config.tcp {
        Some(tcp) => Some(
            serve_tcp(
                tcp,
                Arc::clone(&admin),
                Arc::clone(&changes),
                Arc::clone(&mount),
                cancel.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let serve_cancel = cancel.clone();
    let closing_sessions = Arc::clone(&sessions);
    let server = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(bound_status_message))
        .add_service(pb::admin_server::AdminServer::from_arc(admin))
        .add_service(pb::changes_server::ChangesServer::from_arc(changes))
        .add_service(pb::mount_server::MountServer::from_arc(mount))
        .serve_with_incoming_shutdown(incoming, async move {
            tokio::select! {
                () = shutdown => {}
                () = serve_cancel.cancelled() => {}
            }
            // End the mounts' revoke streams (the server waits for open streams) and stop
            // evicting sessions that cannot reach us while we stop.
            closing_sessions.closing();
        });
    let result = server.await;
    tracing::info!("shutting down: stopping workers");
    cancel.cancel();
    if let Some(tcp) = tcp_server {
        let _ = tcp.await;
    }
    let drain = futures::future::join_all(workers);
    if tokio::time::timeout(config.shutdown_grace, drain)
        .await
        .is_err()
    {
        tracing::warn!("workers did not stop within the grace period");
    }
    sessions.shutdown();
    let _ = tokio::task::block_in_place(|| catalog.sync_wal());
    let _ = std::fs::remove_file(&config.socket);
    result?;
    Ok(())
}

/// Checks `authorization: Bearer <token>` on every request of the TCP listener.
#[derive(Clone)]
struct BearerToken(Arc<String>);

impl tonic::service::Interceptor for BearerToken {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            // Compare every byte, so the time taken does not reveal how much matched.
            Some(t)
                if t.len() == self.0.len()
                    && t.bytes()
                        .zip(self.0.bytes())
                        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                        == 0 =>
            {
                Ok(req)
            }
            _ => Err(tonic::Status::unauthenticated(
                "missing or wrong bearer token",
            )),
        }
    }
}

/// Serves the API on TCP with TLS and a bearer token, until `cancel`.
async fn serve_tcp(
    tcp: &crate::config::TcpConfig,
    admin: Arc<AdminService>,
    changes: Arc<ChangesService>,
    mount: Arc<MountService>,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, RunError> {
    use tonic::transport::{Identity, ServerTlsConfig};
    let socket_err = |source| RunError::Socket {
        path: tcp.listen.to_string(),
        source,
    };
    let listener = tokio::net::TcpListener::bind(tcp.listen)
        .await
        .map_err(socket_err)?;
    let local = listener.local_addr().map_err(socket_err)?;
    let token = BearerToken(Arc::new(tcp.token.clone()));
    let router = tonic::transport::Server::builder()
        .tls_config(
            ServerTlsConfig::new().identity(Identity::from_pem(&tcp.cert_pem, &tcp.key_pem)),
        )?
        .layer(tower::util::MapResponseLayer::new(bound_status_message))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            pb::admin_server::AdminServer::from_arc(admin),
            token.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            pb::changes_server::ChangesServer::from_arc(changes),
            token.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            pb::mount_server::MountServer::from_arc(mount),
            token,
        ));
    println!("gpair-backend listening on https://{local} (TLS, bearer token)");
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(tokio::spawn(async move {
        if let Err(e) = router
            .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "TCP listener failed");
        }
    }))
}

fn bind_socket(config: &Config) -> Result<tokio::net::UnixListener, RunError> {
    let path = &config.socket;
    let err = |source| RunError::Socket {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(RunError::InUse(path.display().to_string()));
        }
        // A socket left by a crashed daemon.
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.socket_mode))
        .map_err(err)?;
    Ok(listener)
}

/// Longest `grpc-message` sent, in bytes (percent-encoded).
const MAX_STATUS_MESSAGE: usize = 1024;

/// Cuts a long gRPC status message: an error that quotes a huge request field (a 1 MiB name
/// or path) would otherwise make a `grpc-message` header larger than clients accept, and the
/// caller would get an HTTP/2 protocol error instead of the reason. The cut never splits a
/// `%XX` escape nor a UTF-8 character.
fn bound_status_message<B>(mut resp: http::Response<B>) -> http::Response<B> {
    let Some(v) = resp.headers().get("grpc-message") else {
        return resp;
    };
    let b = v.as_bytes();
    if b.len() <= MAX_STATUS_MESSAGE {
        return resp;
    }
    let mut cut = MAX_STATUS_MESSAGE;
    while cut > 0 {
        let in_escape = b[cut - 1] == b'%' || (cut >= 2 && b[cut - 2] == b'%');
        let continuation = b.get(cut) == Some(&b'%')
            && matches!(
                b.get(cut + 1),
                Some(b'8' | b'9' | b'A' | b'B' | b'a' | b'b')
            );
        if !in_escape && !continuation {
            break;
        }
        cut -= 1;
    }
    let mut short = b[..cut].to_vec();
    short.extend_from_slice(b"%E2%80%A6 (cut)");
    if let Ok(v) = http::HeaderValue::from_bytes(&short) {
        resp.headers_mut().insert("grpc-message", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_message(m: &str) -> http::Response<()> {
        let mut r = http::Response::new(());
        r.headers_mut().insert(
            "grpc-message",
            http::HeaderValue::from_str(m).expect("ascii"),
        );
        r
    }

    #[test]
    fn long_status_messages_are_cut_between_characters() {
        let short = with_message("gpair name \"x\" is bad");
        assert_eq!(
            bound_status_message(short).headers()["grpc-message"],
            "gpair name \"x\" is bad"
        );
        // "é" is %C3%A9: whatever the offset, the cut keeps whole characters.
        for pad in 0..6 {
            let m = format!("{}{}", "a".repeat(pad), "%C3%A9".repeat(400));
            let cut = bound_status_message(with_message(&m));
            let v = cut.headers()["grpc-message"]
                .to_str()
                .expect("ascii")
                .to_string();
            assert!(v.len() <= MAX_STATUS_MESSAGE + 20, "{}", v.len());
            let decoded = percent_encoding::percent_decode_str(&v).decode_utf8();
            assert!(decoded.is_ok(), "pad {pad}: {v}");
            assert!(decoded.expect("utf8").ends_with("… (cut)"));
        }
    }
}
