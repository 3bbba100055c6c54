//! The network edge of both ports: a cap on connections (refused clearly when reached),
//! a deadline for a new connection to start talking, an idle timeout, and the plain or
//! TLS HTTP server loop with a header-read timeout and graceful drain. A client that
//! opens connections and says nothing cannot use up the collector's file descriptors.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::{Instant, Sleep};

use crate::config::EdgeConfig;
use crate::metrics::Metrics;

/// Bytes a new connection must send within the start deadline: more than any TLS
/// ClientHello's first record header, and the HTTP/2 preface is 24.
const START_BYTES: usize = 16;
/// How long in-flight HTTP requests may take to finish at shutdown.
pub const HTTP_DRAIN: Duration = Duration::from_secs(10);

/// A connection under the edge's rules: it holds one of the port's connection permits,
/// must send [`START_BYTES`] within the start deadline, and is closed when neither side
/// has moved a byte for the idle timeout.
#[derive(Debug)]
pub struct Guarded {
    io: TcpStream,
    deadline: Pin<Box<Sleep>>,
    read: usize,
    idle: Duration,
    port: &'static str,
    metrics: Arc<Metrics>,
    _permit: OwnedSemaphorePermit,
}

impl Guarded {
    fn new(
        io: TcpStream,
        limits: &EdgeConfig,
        permit: OwnedSemaphorePermit,
        port: &'static str,
        metrics: Arc<Metrics>,
    ) -> Guarded {
        let _ = io.set_nodelay(true);
        Guarded {
            io,
            deadline: Box::pin(tokio::time::sleep(limits.start_timeout)),
            read: 0,
            idle: limits.idle_timeout,
            port,
            metrics,
            _permit: permit,
        }
    }

    fn started(&self) -> bool {
        self.read >= START_BYTES
    }

    fn moved(&mut self) {
        if self.started() {
            self.deadline.as_mut().reset(Instant::now() + self.idle);
        }
    }

    /// Whether the deadline passed: the connection is then to be closed.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            let why = if self.started() { "idle" } else { "slow_start" };
            self.metrics.connection_closed(self.port, why);
            return Some(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connection closed: {why}"),
            ));
        }
        None
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.peer_addr()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.read += n;
                    this.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    this.moved();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.expired(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Accepts on `listener` under the cap; a connection over the cap is answered by
/// `refuse` and closed at once (it never holds a descriptor).
async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    limits: &EdgeConfig,
    port: &'static str,
    metrics: &Arc<Metrics>,
    refuse: fn(&TcpStream),
) -> Guarded {
    let mut warned: Option<std::time::Instant> = None;
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => match permits.clone().try_acquire_owned() {
                Ok(permit) => return Guarded::new(tcp, limits, permit, port, metrics.clone()),
                Err(_) => {
                    metrics.connection_closed(port, "cap");
                    refuse(&tcp);
                }
            },
            Err(e) => {
                // Out of descriptors or memory: wait a little instead of spinning.
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    tracing::warn!(port, error = %e, "cannot accept connections");
                    warned = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// gRPC over the cap: nothing can be said before the HTTP/2 preface; close.
fn refuse_quietly(_: &TcpStream) {}

/// HTTP over the cap: a short `503` with `Retry-After`, written without waiting.
fn refuse_http(tcp: &TcpStream) {
    const BODY: &str =
        r#"{"error":"the collector has as many connections as it takes; retry in a few seconds"}"#;
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 5\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tcp.try_write(resp.as_bytes());
}

/// The gRPC port's connections, as a stream for tonic (which does TLS on them when
/// configured). Ends when `stop` resolves.
pub fn grpc_incoming(
    listener: TcpListener,
    limits: EdgeConfig,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Guarded>> {
    let (tx, rx) = mpsc::channel(64);
    let permits = Arc::new(Semaphore::new(limits.max_connections.unwrap_or(1024)));
    tokio::spawn(async move {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                g = accept(&listener, &permits, &limits, "grpc", &metrics, refuse_quietly) => {
                    if tx.send(Ok(g)).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Serves `app` on `listener` (TLS when `tls` is given) until `stop`, then lets
/// requests in flight finish for up to [`HTTP_DRAIN`].
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: EdgeConfig,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.start_timeout);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections.unwrap_or(1024)));
    tokio::pin!(stop);
    loop {
        let io = tokio::select! {
            () = &mut stop => break,
            g = accept(&listener, &permits, &limits, "http", &metrics, refuse_http) => g,
        };
        let svc = TowerToHyperService::new(app.clone());
        let (builder, tls, start) = (builder.clone(), tls.clone(), limits.start_timeout);
        let watcher = graceful.watcher();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(acceptor) => {
                    let Ok(Ok(stream)) = tokio::time::timeout(start, acceptor.accept(io)).await
                    else {
                        metrics.connection_closed("http", "tls_handshake");
                        return;
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP requests still running at shutdown were cut off");
    }
    Ok(())
}

/// The HTTP port's TLS from the configured PEM certificate chain and key.
pub fn tls_acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read the TLS certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("cannot read the TLS key: {e}"))?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("the TLS certificate and key do not go together: {e}"))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
