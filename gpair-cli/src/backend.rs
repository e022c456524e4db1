//! The connection to the backend's admin socket.
//!
//! [`Backend`] says where the backend is and how long to wait; [`Backend::connect`] opens the
//! Unix socket and returns a [`BackendClient`], a thin wrapper over the generated gRPC client
//! whose methods turn every failure into a [`CliError`]: statuses the backend sent keep their
//! code and message, while a connection that breaks under a request becomes
//! [`CliError::Unreachable`] naming the socket. Commands validate their input first and
//! connect only then, so a usage error never depends on whether the backend is up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpair_proto::pb::{self, admin_client::AdminClient};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Uri};

use crate::error::{connect_reason, is_client_timeout, CliError};

/// How long connecting to the socket may take; a local socket answers at once or never.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the backend listens and how long to wait for its answers.
#[derive(Debug, Clone)]
pub struct Backend {
    /// A Unix socket path, or `https://HOST:PORT` for the TCP listener.
    socket: PathBuf,
    timeout: Duration,
    /// CA certificate (PEM) to verify the TCP listener with; system roots when absent.
    ca_cert: Option<PathBuf>,
    /// Bearer token sent to the TCP listener.
    token: Option<String>,
}

/// Adds `authorization: Bearer <token>` to every request when a token is set.
#[derive(Debug, Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

impl Backend {
    /// The backend at `socket`; each request may take up to `timeout`.
    pub fn new(socket: impl Into<PathBuf>, timeout: Duration) -> Self {
        Backend {
            socket: socket.into(),
            timeout,
            ca_cert: None,
            token: None,
        }
    }

    /// For an `https://` backend: the CA to trust and the bearer token to send.
    pub fn with_tls(mut self, ca_cert: Option<PathBuf>, token: Option<String>) -> Self {
        self.ca_cert = ca_cert;
        self.token = token;
        self
    }

    /// The TCP listener's URL, when the backend is given as `https://HOST:PORT`.
    fn url(&self) -> Option<&str> {
        self.socket.to_str().filter(|s| s.starts_with("https://"))
    }

    async fn tls_channel(&self, url: &str) -> Result<Channel, CliError> {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &self.ca_cert {
            let pem = std::fs::read(ca)
                .map_err(|e| CliError::usage("--ca-cert", format!("{}: {e}", ca.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        Endpoint::from_shared(url.to_string())
            .map_err(|e| CliError::usage("--backend", format!("{url}: {e}")))?
            .tls_config(tls)
            .map_err(|e| CliError::usage("--backend", format!("{url}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(self.timeout)
            .connect()
            .await
            .map_err(|e| self.unreachable(connect_reason(&e)))
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, reason: String) -> CliError {
        CliError::Unreachable {
            socket: self.socket.display().to_string(),
            reason,
        }
    }

    /// Connects to the socket. A missing socket or a refused connection is
    /// [`CliError::Unreachable`] with the reason in words.
    pub async fn connect(&self) -> Result<BackendClient, CliError> {
        let bearer = match (&self.token, self.url()) {
            (Some(t), Some(_)) => Some(format!("Bearer {t}").parse().map_err(|_| {
                CliError::usage("--token-file", "the bearer token must be printable ASCII")
            })?),
            (None, Some(url)) => {
                return Err(CliError::usage(
                    "--backend",
                    format!("{url} needs a bearer token: set GPAIR_TOKEN or --token-file"),
                ))
            }
            _ => None,
        };
        let channel = match self.url() {
            Some(url) => self.tls_channel(url).await?,
            None => {
                let path = self.socket.clone();
                Endpoint::from_static("http://localhost")
                    .connect_timeout(CONNECT_TIMEOUT)
                    .timeout(self.timeout)
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            let stream = UnixStream::connect(path).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(stream))
                        }
                    }))
                    .await
                    .map_err(|e| self.unreachable(connect_reason(&e)))?
            }
        };
        Ok(BackendClient {
            backend: self.clone(),
            admin: AdminClient::with_interceptor(channel, Bearer(bearer)),
        })
    }
}

/// A connected admin client: one method per Admin RPC, errors already mapped.
#[derive(Debug, Clone)]
pub struct BackendClient {
    backend: Backend,
    admin: AdminClient<InterceptedService<Channel, Bearer>>,
}

/// Generates the thin per-RPC methods; each returns the response message or a [`CliError`].
macro_rules! rpcs {
    ($($(#[$doc:meta])* $name:ident($req:ty) -> $resp:ty;)*) => {
        impl BackendClient {
            $(
                $(#[$doc])*
                pub async fn $name(&mut self, req: $req) -> Result<$resp, CliError> {
                    match self.admin.$name(req).await {
                        Ok(r) => Ok(r.into_inner()),
                        Err(s) => Err(self.status_error(s)),
                    }
                }
            )*
        }
    };
}

rpcs! {
    /// `AddGpeer`.
    add_gpeer(pb::AddGpeerRequest) -> pb::Gpeer;
    /// `ListGpeers`.
    list_gpeers(pb::ListGpeersRequest) -> pb::ListGpeersResponse;
    /// `GetGpeer`.
    get_gpeer(pb::GetGpeerRequest) -> pb::Gpeer;
    /// `CheckGpeer`.
    check_gpeer(pb::GetGpeerRequest) -> pb::CheckGpeerResponse;
    /// `RemoveGpeer`.
    remove_gpeer(pb::RemoveGpeerRequest) -> pb::RemoveGpeerResponse;
    /// `Bind`.
    bind(pb::BindRequest) -> pb::Gpair;
    /// `ListGpairs`.
    list_gpairs(pb::ListGpairsRequest) -> pb::ListGpairsResponse;
    /// `GetGpair`.
    get_gpair(pb::GetGpairRequest) -> pb::Gpair;
    /// `Unbind`.
    unbind(pb::UnbindRequest) -> pb::UnbindResponse;
    /// `SyncStatus`.
    sync_status(pb::SyncStatusRequest) -> pb::SyncStatusResponse;
    /// `Status`.
    status(pb::StatusRequest) -> pb::StatusResponse;
    /// `Migrate`: queue an offload job.
    migrate(pb::MigrateRequest) -> pb::Job;
    /// `Recall`: queue a recall job.
    recall(pb::MigrateRequest) -> pb::Job;
    /// `State`.
    state(pb::StateRequest) -> pb::StateResponse;
    /// `ListJobs`.
    list_jobs(pb::ListJobsRequest) -> pb::ListJobsResponse;
    /// `GetJob`.
    get_job(pb::GetJobRequest) -> pb::Job;
    /// `CancelJob`.
    cancel_job(pb::GetJobRequest) -> pb::Job;
    /// `SetQuota`.
    set_quota(pb::SetQuotaRequest) -> pb::Quota;
    /// `GetQuotas`.
    get_quotas(pb::GetQuotasRequest) -> pb::GetQuotasResponse;
    /// `SetPolicy`.
    set_policy(pb::SetPolicyRequest) -> pb::Policy;
    /// `GetPolicy`.
    get_policy(pb::GetPolicyRequest) -> pb::Policy;
    /// `Explain`.
    explain(pb::ExplainRequest) -> pb::Explanation;
    /// `Pin`.
    pin(pb::PinRequest) -> pb::PinResponse;
    /// `RunPolicy`.
    run_policy(pb::RunPolicyRequest) -> pb::PolicyRun;
    /// `Fsck`.
    fsck(pb::FsckRequest) -> pb::FsckResponse;
    /// `ListCaps`.
    list_caps(pb::ListCapsRequest) -> pb::ListCapsResponse;
    /// `ListSessions`.
    list_sessions(pb::ListSessionsRequest) -> pb::ListSessionsResponse;
    /// `EvictSession`.
    evict_session(pb::EvictSessionRequest) -> pb::EvictSessionResponse;
}

/// The stream of `WatchJob`: the job now, then at every change, until it finishes.
#[derive(Debug)]
pub struct JobWatch {
    backend: Backend,
    stream: tonic::Streaming<pb::Job>,
}

impl JobWatch {
    /// The next state of the job; `None` when the backend ended the stream. Only the opening
    /// call is bounded by `--timeout`: a job may rightly run for hours between messages.
    pub async fn next(&mut self) -> Result<Option<pb::Job>, CliError> {
        self.stream
            .message()
            .await
            .map_err(|s| status_error(&self.backend, s))
    }
}

impl BackendClient {
    /// `WatchJob`: opens the stream of a job's states.
    pub async fn watch_job(&mut self, req: pb::GetJobRequest) -> Result<JobWatch, CliError> {
        match self.admin.watch_job(req).await {
            Ok(r) => Ok(JobWatch {
                backend: self.backend.clone(),
                stream: r.into_inner(),
            }),
            Err(s) => Err(self.status_error(s)),
        }
    }
}

impl BackendClient {
    /// Maps a failed call. Running out of `--timeout` is [`CliError::Timeout`]. tonic reports local transport failures (the connection closed, the
    /// peer is not an HTTP/2 server) as a status carrying the underlying error as its source;
    /// statuses the backend sent carry none. The first kind means "cannot reach the backend".
    fn status_error(&self, s: tonic::Status) -> CliError {
        status_error(&self.backend, s)
    }
}

/// See [`BackendClient::status_error`].
fn status_error(backend: &Backend, s: tonic::Status) -> CliError {
    if is_client_timeout(&s) {
        return CliError::Timeout {
            socket: backend.socket.display().to_string(),
            secs: backend.timeout.as_secs(),
        };
    }
    match std::error::Error::source(&s) {
        Some(cause) => backend.unreachable(connect_reason(cause)),
        None => CliError::from(s),
    }
}
