//! The agent's gRPC client: one long-lived HTTP/2 connection to the collector (TLS
//! when the URL is `https://`), enrollment, and push with its errors sorted into what
//! the agent should do about them.

use std::path::Path;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Status};
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("collector URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot read the CA certificate {path}: {source}")]
    Ca {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const KEEPALIVE: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a push of `n` measurements may take: 15 s, and 40 ms more per measurement
/// (500 of them, ~70 KB, over a slow 2G link).
pub fn push_timeout(n: usize) -> Duration {
    Duration::from_secs(15) + Duration::from_millis(40) * n as u32
}

/// A lazily connecting channel: the agent starts and spools even when the collector
/// cannot be reached; tonic reconnects on the next call after a failure.
pub fn channel(url: &str, ca_cert: Option<&Path>) -> Result<Channel, ConnectError> {
    let bad = |message: String| ConnectError::Url {
        url: url.to_string(),
        message,
    };
    let mut ep = Endpoint::from_shared(url.to_string())
        .map_err(|e| bad(e.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT)
        // While a push is in flight the connection is pinged: a link that died under
        // an open connection (a mobile modem that re-dialled, a NAT that forgot it) is
        // noticed within KEEPALIVE + KEEPALIVE_TIMEOUT, not when a long timeout runs
        // out. An idle connection is not pinged (metered links).
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(false)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        .tcp_nodelay(true);
    if url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        tls = match ca_cert {
            Some(p) => {
                let pem = std::fs::read(p).map_err(|source| ConnectError::Ca {
                    path: p.to_path_buf(),
                    source,
                })?;
                tls.ca_certificate(Certificate::from_pem(pem))
            }
            None => tls.with_webpki_roots(),
        };
        ep = ep.tls_config(tls).map_err(|e| bad(e.to_string()))?;
    }
    Ok(ep.connect_lazy())
}

/// What to do about a failed push.
#[derive(Debug)]
pub enum PushError {
    /// The token is missing, unknown or revoked: stop pushing until re-enrolled.
    Unauthenticated(String),
    /// The collector refuses some measurements (listed), or their times.
    Refused {
        refusal: crate::wire::Refusal,
        message: String,
    },
    /// More measurements than the collector takes at once.
    TooLarge(String),
    /// Anything else (network, collector busy or down, a refusal naming nothing the
    /// agent can drop): keep the data, retry later.
    Transient(Status),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::Unauthenticated(m) | PushError::TooLarge(m) => f.write_str(m),
            PushError::Refused { message, .. } => f.write_str(message),
            PushError::Transient(s) => write!(f, "{:?}: {}", s.code(), s.message()),
        }
    }
}

pub fn classify(s: Status) -> PushError {
    match s.code() {
        Code::Unauthenticated => PushError::Unauthenticated(s.message().to_string()),
        Code::InvalidArgument | Code::FailedPrecondition => match crate::wire::refusal(&s) {
            Some(refusal) => PushError::Refused {
                refusal,
                message: s.message().to_string(),
            },
            // A collector without details names the field in its message.
            None => match crate::wire::measurement_index(s.message()) {
                Some(i) => PushError::Refused {
                    refusal: crate::wire::Refusal {
                        indexes: vec![i],
                        clock_server_ms: None,
                    },
                    message: s.message().to_string(),
                },
                None => PushError::Transient(s),
            },
        },
        Code::ResourceExhausted => PushError::TooLarge(s.message().to_string()),
        _ => PushError::Transient(s),
    }
}

/// An authenticated client for one agent.
#[derive(Clone)]
pub struct Uplink {
    client: CollectorClient<Channel>,
    token: String,
}

impl std::fmt::Debug for Uplink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uplink")
            .field("token", &"<hidden>")
            .finish()
    }
}

impl Uplink {
    pub fn new(channel: Channel, token: String) -> Uplink {
        Uplink {
            client: CollectorClient::new(channel),
            token,
        }
    }

    pub fn set_token(&mut self, token: String) {
        self.token = token;
    }

    pub async fn push(
        &mut self,
        status: pb::AgentStatus,
        measurements: Vec<pb::Measurement>,
    ) -> Result<pb::PushResponse, PushError> {
        let timeout = push_timeout(measurements.len());
        let mut req = tonic::Request::new(pb::PushRequest {
            status: Some(status),
            measurements,
        });
        req.set_timeout(timeout);
        match format!("Bearer {}", self.token).parse() {
            Ok(v) => {
                req.metadata_mut().insert("authorization", v);
            }
            Err(_) => {
                return Err(PushError::Unauthenticated(
                    "the stored token is not valid text; re-enroll".into(),
                ));
            }
        }
        self.client
            .push(req)
            .await
            .map(|r| r.into_inner())
            .map_err(classify)
    }
}

/// Calls Enroll and turns refusals into what a technician should check.
pub async fn enroll(
    channel: Channel,
    url: &str,
    tps_code: &str,
    code: &str,
    facts: pb::AgentFacts,
) -> Result<pb::EnrollResponse, String> {
    let mut client = CollectorClient::new(channel);
    let req = pb::EnrollRequest {
        tps_code: tps_code.to_string(),
        enrollment_code: code.to_string(),
        agent: Some(facts),
    };
    client.enroll(req).await.map(|r| r.into_inner()).map_err(|s| match s.code() {
        Code::NotFound => format!(
            "TPS {tps_code} is not in the collector's station registry. Check the 13-digit TPS code printed on the kit."
        ),
        Code::PermissionDenied => format!(
            "the enrollment code was not accepted for TPS {tps_code}. Check it for typos; a code works only once, \
             so if this TPS was enrolled before, ask the operator for a new code."
        ),
        Code::InvalidArgument | Code::ResourceExhausted => s.message().to_string(),
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => format!(
            "cannot reach the collector at {url}: {}. Check the internet link and the collector URL.",
            s.message()
        ),
        _ => format!("the collector refused enrollment: {}", s.message()),
    })
}
