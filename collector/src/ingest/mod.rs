//! The agent-facing gRPC service `tps.v1.Collector`: enrollment (code for token) and
//! push (authenticate, validate at the edge, commit, acknowledge). What a commit changes
//! in memory is done by the writer, so a cancelled call cannot skip it.

pub mod wire;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::{Request, Response, Status};
use tps_proto::v1 as pb;

use self::wire::PushLimits;
use crate::auth::{self, CodeKey, EnrollLimiter, Locked};
use crate::config::Config;
use crate::domain::{Push, TpsCode, now_ms};
use crate::metrics::Metrics;
use crate::state::live::{Live, TokenCheck};
use crate::store::writer::{EnrollJob, EnrollOutcome, WriteError, Writer};

/// Most distinct stations and peers whose wrong codes are remembered at once.
const LIMITER_KEYS: usize = 100_000;

/// State the service needs; one per collector.
#[derive(Debug)]
pub struct Ingest {
    writer: Writer,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    code_key: CodeKey,
    limits: PushLimits,
    settings: pb::AgentSettings,
    /// Wrong enrollment codes per peer, per peer on a station, per station.
    limiter: Mutex<EnrollLimiter>,
    /// Calls running at once; past it, calls are refused with `UNAVAILABLE`.
    in_flight: tokio::sync::Semaphore,
    max_in_flight: usize,
    /// Below the free-space floor, pushes are refused before they reach the writer.
    space: Arc<crate::store::space::Space>,
}

impl Ingest {
    pub fn new(
        writer: Writer,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        code_key: CodeKey,
        config: &Config,
        lockouts: Vec<(String, i64, u32)>,
        space: Arc<crate::store::space::Space>,
    ) -> Self {
        let (ingest, enroll) = (&config.ingest, &config.enroll);
        let max_in_flight = config.grpc_edge.max_in_flight;
        let mut limiter = EnrollLimiter::new(
            enroll.max_failures_per_station,
            enroll.max_failures_per_peer,
            enroll.window,
            LIMITER_KEYS,
        );
        let (now, now_ms) = (Instant::now(), now_ms());
        for (key, until_ms, failures) in lockouts {
            let lasts = std::time::Duration::from_millis((until_ms - now_ms).max(0) as u64);
            limiter.restore(&key, failures, lasts, now);
        }
        Ingest {
            writer,
            live,
            metrics,
            code_key,
            limits: PushLimits {
                max_batch: ingest.max_batch,
                max_future_ms: ingest.max_future.as_millis() as i64,
                max_past_ms: ingest.max_past.as_millis() as i64,
            },
            settings: wire::settings(ingest.push_interval_secs, ingest.max_batch),
            limiter: Mutex::new(limiter),
            in_flight: tokio::sync::Semaphore::new(max_in_flight),
            max_in_flight,
            space,
        }
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, EnrollLimiter> {
        self.limiter.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records lockouts that just began (they outlive a restart) and logs them.
    async fn record_lockouts(&self, tps: TpsCode, peer: &str, locked: Vec<auth::Lockout>) {
        for l in locked {
            tracing::warn!(
                %tps,
                %peer,
                key = %l.key,
                failures = l.failures,
                minutes = l.lasts.as_secs().div_ceil(60),
                "enrollment locked after too many wrong codes"
            );
            let now = now_ms();
            let until = now + l.lasts.as_millis() as i64;
            let r = self
                .writer
                .exec(move |tx| {
                    crate::store::store_enroll_lockout(tx, &l.key, now, until, l.failures)
                })
                .await;
            if let Err(e) = r {
                tracing::warn!(error = %e, "cannot record the lockout; it holds until a restart");
            }
        }
    }

    /// A place among the calls in flight, or `UNAVAILABLE` when there is none.
    fn admit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, Status> {
        self.in_flight.try_acquire().map_err(|_| {
            self.metrics.request_shed("grpc", "overloaded");
            Status::unavailable(format!(
                "the collector is handling {} calls already; retry in a few seconds",
                self.max_in_flight
            ))
        })
    }

    fn reject(&self, reason: &'static str, status: Status) -> Status {
        self.metrics.reject(reason);
        status
    }

    fn authenticate<T>(&self, req: &Request<T>) -> Result<(u64, TpsCode), Status> {
        let Some(value) = req.metadata().get("authorization") else {
            return Err(self.reject(
                "unauthenticated",
                Status::unauthenticated(
                    "missing `authorization: Bearer <token>`; enroll this agent first",
                ),
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        match self.live.check_token(&auth::token_hash(token)) {
            TokenCheck::Valid { agent_id, tps_code } => Ok((agent_id, tps_code)),
            TokenCheck::Revoked => Err(self.reject(
                "unauthenticated",
                Status::unauthenticated(
                    "this agent's token was revoked; re-enroll with a new enrollment code",
                ),
            )),
            TokenCheck::Unknown => Err(self.reject(
                "unauthenticated",
                Status::unauthenticated("unknown token; re-enroll this agent"),
            )),
        }
    }
}

fn write_error(e: WriteError) -> Status {
    match e {
        WriteError::Busy(_) => Status::unavailable(e.to_string()),
        WriteError::Store(e) => {
            tracing::error!(error = %e, "store write failed");
            Status::unavailable(format!(
                "the collector could not store this; retry later ({e})"
            ))
        }
    }
}

#[tonic::async_trait]
impl pb::collector_server::Collector for Ingest {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let _admitted = self.admit()?;
        let peer = req
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let req = req.into_inner();
        let tps_code: TpsCode =
            req.tps_code
                .trim()
                .parse()
                .map_err(|e: crate::domain::BadTpsCode| {
                    self.metrics.enrollment("invalid");
                    Status::invalid_argument(format!("tps_code: {e}"))
                })?;
        let code = auth::normalize_code(&req.enrollment_code).map_err(|e| {
            self.metrics.enrollment("invalid");
            Status::invalid_argument(format!("enrollment_code: {e}"))
        })?;
        let attempt = match self
            .limiter()
            .begin(tps_code.as_str(), &peer, Instant::now())
        {
            Ok(a) => a,
            Err((who, wait)) => {
                let whom = match who {
                    Locked::Busy => {
                        self.metrics.enrollment("busy");
                        return Err(Status::unavailable(
                            "too many enrollments under way from this address at once; try again in a few seconds",
                        ));
                    }
                    Locked::Peer => "from this address".to_string(),
                    Locked::PeerOnStation => format!("for TPS {tps_code} from this address"),
                    Locked::Station => {
                        format!("for TPS {tps_code} (from several addresses, this one included)")
                    }
                    Locked::Full => "from too many places at once".to_string(),
                };
                self.metrics.enrollment("rate_limited");
                return Err(Status::resource_exhausted(format!(
                    "too many wrong enrollment codes {whom}; try again in {} minute(s)",
                    wait.as_secs().div_ceil(60)
                )));
            }
        };
        let facts = req.agent.unwrap_or_default();
        let (token, token_hash) = auth::new_token();
        let now = now_ms();
        let job = EnrollJob {
            tps_code,
            code_hash: self.code_key.hash(tps_code.as_str(), &code),
            token_hash,
            hostname: facts.hostname.chars().take(256).collect(),
            os: facts.os.chars().take(256).collect(),
            agent_version: facts.agent_version.chars().take(64).collect(),
            now_ms: now,
        };
        let outcome = match self.writer.enroll(job).await {
            Ok(o) => o,
            Err(e) => {
                // Not evaluated: the attempt does not count against anyone.
                self.limiter().succeed(attempt);
                return Err(write_error(e));
            }
        };
        match outcome {
            EnrollOutcome::UnknownStation => {
                let locked = self.limiter().fail(attempt, Instant::now());
                self.record_lockouts(tps_code, &peer, locked).await;
                self.metrics.enrollment("unknown_station");
                Err(Status::not_found(format!(
                    "TPS {tps_code} is not in the station registry; check the TPS code printed on the kit"
                )))
            }
            EnrollOutcome::WrongCode => {
                let locked = self.limiter().fail(attempt, Instant::now());
                self.record_lockouts(tps_code, &peer, locked).await;
                self.metrics.enrollment("wrong_code");
                Err(Status::permission_denied(format!(
                    "the enrollment code is not valid for TPS {tps_code}: mistyped, already used, or replaced; \
                     check it or ask the operator for a new one"
                )))
            }
            EnrollOutcome::Enrolled { agent_id } => {
                // The writer has put the token in the live view and told the state owner.
                let ended = attempt.ended_by_success();
                self.limiter().succeed(attempt);
                // A lockout of this station recorded earlier ends with it.
                if let Err(e) = self
                    .writer
                    .exec(move |tx| crate::store::clear_enroll_lockouts(tx, &ended))
                    .await
                {
                    tracing::warn!(error = %e, "cannot clear the station's stored lockout");
                }
                self.metrics.enrollment("enrolled");
                tracing::info!(%tps_code, agent_id, %peer, "agent enrolled");
                Ok(Response::new(pb::EnrollResponse {
                    agent_id,
                    token,
                    settings: Some(self.settings),
                }))
            }
        }
    }

    async fn push(
        &self,
        req: Request<pb::PushRequest>,
    ) -> Result<Response<pb::PushResponse>, Status> {
        let received = Instant::now();
        let _admitted = self.admit()?;
        let (agent_id, tps_code) = self.authenticate(&req)?;
        if self.space.refusing() {
            return Err(self.reject(
                "disk_floor",
                Status::unavailable(self.space.refusal_message()),
            ));
        }
        let req = req.into_inner();
        let now = now_ms();
        let (status, cut) = wire::status(req.status);
        for field in cut {
            self.metrics.status_truncated(field);
        }
        let measurements = wire::measurements(req.measurements, now, &self.limits)
            .map_err(|e| self.reject(e.reason(), e.into()))?;
        let clock_skew_ms = if status.agent_time_ms > 0 {
            now - status.agent_time_ms
        } else {
            0
        };
        let push = Push {
            agent_id,
            tps_code,
            received_ms: now,
            clock_skew_ms,
            status,
            measurements,
        };
        let outcome = match self.writer.push(push).await {
            Ok(o) => o,
            Err(e) => {
                self.metrics.reject(match e {
                    WriteError::Busy(_) => "busy",
                    WriteError::Store(_) => "store_error",
                });
                return Err(write_error(e));
            }
        };
        // Stored: the writer has updated the live view and told the state owner.
        self.metrics
            .push_seconds
            .observe(received.elapsed().as_secs_f64());
        Ok(Response::new(pb::PushResponse {
            acked_seq: outcome.acked_seq,
            server_time_ms: now_ms(),
            settings: Some(self.settings),
        }))
    }
}
