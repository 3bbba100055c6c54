//! Proxies between the agent and a real collector that fail on purpose: one that lets a
//! push be stored and then loses its answer, and one whose open connections go dead
//! (bytes swallowed, nothing closed) the way a re-dialled modem's do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::{Request, Response, Status};
use tps_proto::v1 as pb;
use tps_proto::v1::collector_client::CollectorClient;
use tps_proto::v1::collector_server::{Collector, CollectorServer};

/// Forwards to the collector; when armed, the next push that carries measurements is
/// delivered and stored, and its answer replaced by UNAVAILABLE.
#[derive(Clone)]
pub struct LoseAnswer {
    upstream: CollectorClient<tonic::transport::Channel>,
    armed: Arc<AtomicBool>,
    /// Highest sequence number of a push whose answer was lost (0: none yet).
    pub lost_upto: Arc<AtomicU64>,
}

impl LoseAnswer {
    /// Serves on 127.0.0.1:0 in front of `collector`; returns its address.
    pub async fn start(collector: SocketAddr) -> anyhow::Result<(SocketAddr, LoseAnswer)> {
        let upstream = CollectorClient::new(
            tonic::transport::Endpoint::from_shared(format!("http://{collector}"))?.connect_lazy(),
        );
        let me = LoseAnswer {
            upstream,
            armed: Arc::new(AtomicBool::new(true)),
            lost_upto: Arc::new(AtomicU64::new(0)),
        };
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let svc = CollectorServer::new(me.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
        );
        Ok((addr, me))
    }
}

fn forward<T>(req: Request<T>) -> Request<T> {
    let auth = req.metadata().get("authorization").cloned();
    let mut out = Request::new(req.into_inner());
    if let Some(a) = auth {
        out.metadata_mut().insert("authorization", a);
    }
    out
}

#[tonic::async_trait]
impl Collector for LoseAnswer {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        self.upstream.clone().enroll(forward(req)).await
    }

    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let upto = req.get_ref().measurements.last().map(|m| m.seq);
        let answer = self.upstream.clone().push(forward(req)).await?;
        if let Some(upto) = upto
            && self.armed.swap(false, Ordering::SeqCst)
        {
            // Stored at the collector; the agent never hears of it.
            self.lost_upto.store(upto, Ordering::SeqCst);
            return Err(Status::unavailable(
                "answer lost on the way back (test proxy)",
            ));
        }
        Ok(answer)
    }
}

/// A TCP proxy; [`DeadLink::kill_open`] makes every open connection swallow what it is
/// sent and answer nothing, without closing; new connections work.
#[derive(Clone)]
pub struct DeadLink {
    generation: Arc<AtomicU64>,
}

impl DeadLink {
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<(SocketAddr, DeadLink)> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let me = DeadLink {
            generation: Arc::new(AtomicU64::new(0)),
        };
        let generation = me.generation.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = l.accept().await {
                let born = generation.load(Ordering::SeqCst);
                let generation = generation.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let g2 = generation.clone();
                    tokio::spawn(pipe(cr, sw, born, g2));
                    pipe(sr, cw, born, generation).await;
                });
            }
        });
        Ok((addr, me))
    }

    /// Every connection open now goes dead.
    pub fn kill_open(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    born: u64,
    generation: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if generation.load(Ordering::SeqCst) != born {
            continue; // dead: swallowed
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
