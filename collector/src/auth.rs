//! Secrets and trust: bearer tokens, one-time enrollment codes, how both are hashed for
//! storage, and the rate limit on wrong enrollment codes.
//!
//! Tokens are 256 random bits, so a plain SHA-256 is enough to store them. Enrollment
//! codes are short (8 characters from a 31-letter alphabet, about 40 bits) so that a
//! volunteer can read one aloud over the phone; a bare hash of one could be brute-forced
//! offline from a stolen database, so codes are hashed with HMAC-SHA256 under a secret
//! key kept in a separate file of the data directory (`secret.key`, mode 0600). Online
//! guessing is held off by the per-station and per-peer limits below.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Letters a person can read aloud and type without mix-ups: no 0/O, 1/I/L.
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
pub const CODE_LEN: usize = 8;

/// A SHA-256 digest as stored.
pub type Digest32 = [u8; 32];

/// A new random bearer token (`tps_` + 64 hex digits) and its stored hash.
pub fn new_token() -> (String, Digest32) {
    let bytes: [u8; 32] = rand::rng().random();
    let token = format!("tps_{}", hex::encode(bytes));
    let hash = token_hash(&token);
    (token, hash)
}

pub fn token_hash(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

/// A new random enrollment code, printed as `ABCD-EF23`.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    let raw: String = (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    format!("{}-{}", &raw[..4], &raw[4..])
}

/// Why a typed enrollment code cannot be a code at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadCode {
    #[error("an enrollment code has {CODE_LEN} characters (dashes and spaces ignored), got {0}")]
    Length(usize),
    #[error("{0:?} is not used in enrollment codes (they use A-Z without I, L, O, and digits 2-9)")]
    Character(char),
}

/// Normalises what a person typed: case, spaces and dashes do not matter.
pub fn normalize_code(typed: &str) -> Result<String, BadCode> {
    let s: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if let Some(c) = s
        .chars()
        .find(|c| !c.is_ascii() || !CODE_ALPHABET.contains(&(*c as u8)))
    {
        return Err(BadCode::Character(c));
    }
    if s.len() != CODE_LEN {
        return Err(BadCode::Length(s.len()));
    }
    Ok(s)
}

/// The key enrollment codes are hashed under.
#[derive(Clone)]
pub struct CodeKey([u8; 32]);

impl std::fmt::Debug for CodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeKey(..)")
    }
}

impl CodeKey {
    /// Loads `secret.key` from the data directory, creating it (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<CodeKey> {
        let path = data_dir.join("secret.key");
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} must hold exactly 32 bytes, it has {}",
                            path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                Ok(CodeKey(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::rng().random();
                let tmp = data_dir.join("secret.key.tmp");
                {
                    use std::io::Write;
                    let mut opts = std::fs::OpenOptions::new();
                    opts.write(true).create(true).truncate(true);
                    #[cfg(unix)]
                    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
                    let mut f = opts.open(&tmp)?;
                    f.write_all(&key)?;
                    f.sync_all()?;
                }
                std::fs::rename(&tmp, &path)?;
                Ok(CodeKey(key))
            }
            Err(e) => Err(e),
        }
    }

    /// Hash of a normalised code for one station; binding the station in means a code
    /// hash copied to another station's row does not verify.
    pub fn hash(&self, tps_code: &str, normalized_code: &str) -> Digest32 {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(tps_code.as_bytes());
        mac.update(b":");
        mac.update(normalized_code.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

/// Wrong enrollment codes, limited where the guessing happens. Every attempt is counted
/// when it begins (check and count are one step, so concurrent attempts cannot all pass)
/// and given back if the code was right. Three counts, per window:
/// - a peer address across stations (`per_peer`);
/// - a peer on one station (`per_station`);
/// - a station across peers (`per_station`): once reached, only peers that have not
///   failed on that station may still try, so guessing at a station's public TPS code
///   does not lock out its technician.
///
/// Bounded: past `max_keys`, expired windows are purged; if none expired, new attempts
/// are refused (an attacker spraying keys must not grow memory) and counted.
///
/// A peer whose window is full only because attempts are still under way (many devices
/// behind one carrier NAT enrolling at once) is told it is busy, not locked out: nothing
/// was wrong yet. Attempts left unfinished for `IN_FLIGHT_FOR` no longer count as under
/// way (they stay counted in the window).
#[derive(Debug)]
pub struct EnrollLimiter {
    per_station: u32,
    per_peer: u32,
    window: Duration,
    max_keys: usize,
    windows: HashMap<String, (Instant, u32)>,
    /// Attempts under way per peer key, and when the last began.
    in_flight: HashMap<String, (Instant, u32)>,
    pub refused_full: u64,
}

/// How long an attempt may stay unfinished and still count as under way.
const IN_FLIGHT_FOR: Duration = Duration::from_secs(30);

/// Who has to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locked {
    Peer,
    PeerOnStation,
    Station,
    /// The limiter is full of fresh windows (a key spray).
    Full,
    /// Not a lockout: this peer's window is full of attempts still under way.
    Busy,
}

/// An attempt under way: finish it with [`EnrollLimiter::succeed`] or
/// [`EnrollLimiter::fail`].
#[derive(Debug)]
#[must_use]
pub struct Attempt {
    peer: String,
    pair: String,
    station: String,
}

impl Attempt {
    /// The windows a right code ends (the station's, and this peer's on it).
    pub fn ended_by_success(&self) -> [String; 2] {
        [self.station.clone(), self.pair.clone()]
    }
}

/// A window that just reached its limit, to record and log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    pub key: String,
    pub failures: u32,
    /// How long it lasts from now.
    pub lasts: Duration,
}

impl EnrollLimiter {
    pub fn new(per_station: u32, per_peer: u32, window: Duration, max_keys: usize) -> Self {
        EnrollLimiter {
            per_station,
            per_peer,
            window,
            max_keys,
            windows: HashMap::new(),
            in_flight: HashMap::new(),
            refused_full: 0,
        }
    }

    fn count(&self, key: &str, now: Instant) -> (u32, Duration) {
        match self.windows.get(key) {
            Some((start, n)) if now.duration_since(*start) < self.window => {
                (*n, self.window - now.duration_since(*start))
            }
            _ => (0, Duration::ZERO),
        }
    }

    fn bump(&mut self, key: &str, now: Instant) -> u32 {
        let window = self.window;
        let e = self.windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= window {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1
    }

    /// Begins an attempt for `station` from `peer`, or says who must wait how long.
    pub fn begin(
        &mut self,
        station: &str,
        peer: &str,
        now: Instant,
    ) -> Result<Attempt, (Locked, Duration)> {
        let a = Attempt {
            peer: format!("peer:{peer}"),
            pair: format!("station:{station}|peer:{peer}"),
            station: format!("station:{station}"),
        };
        let (np, wp) = self.count(&a.peer, now);
        if np >= self.per_peer {
            let busy = self.under_way(&a.peer, now);
            if np - busy.min(np) < self.per_peer {
                return Err((Locked::Busy, Duration::from_secs(1)));
            }
            return Err((Locked::Peer, wp));
        }
        let (npair, wpair) = self.count(&a.pair, now);
        if npair >= self.per_station {
            return Err((Locked::PeerOnStation, wpair));
        }
        let (ns, ws) = self.count(&a.station, now);
        if ns >= self.per_station && npair > 0 {
            return Err((Locked::Station, ws));
        }
        if self.windows.len() + 3 > self.max_keys {
            let window = self.window;
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            self.in_flight
                .retain(|_, (last, _)| now.duration_since(*last) < IN_FLIGHT_FOR);
            if self.windows.len() + 3 > self.max_keys {
                self.refused_full += 1;
                return Err((Locked::Full, Duration::from_secs(60)));
            }
        }
        for k in [&a.peer, &a.pair, &a.station] {
            self.bump(k, now);
        }
        let e = self.in_flight.entry(a.peer.clone()).or_insert((now, 0));
        if now.duration_since(e.0) >= IN_FLIGHT_FOR {
            e.1 = 0;
        }
        *e = (now, e.1 + 1);
        Ok(a)
    }

    /// Attempts from `peer` begun in the last `IN_FLIGHT_FOR` and not yet finished.
    fn under_way(&self, peer: &str, now: Instant) -> u32 {
        match self.in_flight.get(peer) {
            Some((last, n)) if now.duration_since(*last) < IN_FLIGHT_FOR => *n,
            _ => 0,
        }
    }

    /// An attempt of `peer` finished.
    fn finished(&mut self, peer: &str) {
        if let Some(e) = self.in_flight.get_mut(peer) {
            e.1 = e.1.saturating_sub(1);
            if e.1 == 0 {
                self.in_flight.remove(peer);
            }
        }
    }

    /// The code was right: the attempt is given back and the station starts afresh.
    pub fn succeed(&mut self, a: Attempt) {
        self.finished(&a.peer);
        for k in [&a.peer, &a.pair] {
            if let Some(e) = self.windows.get_mut(k.as_str()) {
                e.1 = e.1.saturating_sub(1);
            }
        }
        self.windows.remove(&a.station);
        self.windows.remove(&a.pair);
    }

    /// The code was wrong (the attempt stays counted); returns the windows that have
    /// just reached their limit.
    pub fn fail(&mut self, a: Attempt, now: Instant) -> Vec<Lockout> {
        self.finished(&a.peer);
        let mut out = Vec::new();
        for (k, limit) in [
            (&a.peer, self.per_peer),
            (&a.pair, self.per_station),
            (&a.station, self.per_station),
        ] {
            let (n, lasts) = self.count(k, now);
            if n == limit {
                out.push(Lockout {
                    key: k.clone(),
                    failures: n,
                    lasts,
                });
            }
        }
        out
    }

    /// A lockout recorded before a restart, still `lasts` long.
    pub fn restore(&mut self, key: &str, failures: u32, lasts: Duration, now: Instant) {
        let lasts = lasts.min(self.window);
        let start = now.checked_sub(self.window - lasts).unwrap_or(now);
        self.windows.insert(key.to_string(), (start, failures));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_use_the_alphabet_and_normalize() {
        for _ in 0..100 {
            let c = new_code();
            assert_eq!(c.len(), 9);
            let n = normalize_code(&c).unwrap();
            assert_eq!(n.len(), 8);
            assert_eq!(
                normalize_code(&c.to_lowercase().replace('-', " ")).unwrap(),
                n
            );
        }
        assert_eq!(normalize_code("ABCD-EF0H"), Err(BadCode::Character('0')));
        assert_eq!(normalize_code("ABC"), Err(BadCode::Length(3)));
    }

    #[test]
    fn code_hash_binds_station_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = CodeKey::load_or_create(dir.path()).unwrap();
        let again = CodeKey::load_or_create(dir.path()).unwrap();
        assert_eq!(
            k.hash("2171011001001", "ABCDEFGH"),
            again.hash("2171011001001", "ABCDEFGH")
        );
        assert_ne!(
            k.hash("2171011001001", "ABCDEFGH"),
            k.hash("2171011001002", "ABCDEFGH")
        );
        let other = tempfile::tempdir().unwrap();
        let k2 = CodeKey::load_or_create(other.path()).unwrap();
        assert_ne!(
            k.hash("2171011001001", "ABCDEFGH"),
            k2.hash("2171011001001", "ABCDEFGH")
        );
    }

    #[test]
    fn limiter_locks_out_and_window_expires() {
        let mut l = EnrollLimiter::new(3, 100, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        for _ in 0..3 {
            let a = l.begin("s", "p", t0).unwrap();
            let _ = l.fail(a, t0);
        }
        let (who, wait) = l.begin("s", "p", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(
            (who, wait),
            (Locked::PeerOnStation, Duration::from_secs(50))
        );
        assert!(l.begin("s", "p", t0 + Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn attempts_are_counted_when_they_begin() {
        let mut l = EnrollLimiter::new(5, 100, Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        // 200 attempts at once, none finished yet: only 5 may run.
        let began: Vec<_> = (0..200)
            .filter_map(|_| l.begin("s", "p", t0).ok())
            .collect();
        assert_eq!(began.len(), 5);
    }

    #[test]
    fn many_attempts_under_way_are_busy_not_locked_out() {
        let mut l = EnrollLimiter::new(5, 20, Duration::from_secs(900), 1000);
        let t0 = Instant::now();
        // 20 devices behind one NAT address, each on its own station, all at once.
        let began: Vec<_> = (0..20)
            .map(|i| l.begin(&format!("s{i}"), "nat", t0).unwrap())
            .collect();
        assert_eq!(l.begin("s20", "nat", t0).unwrap_err().0, Locked::Busy);
        for a in began {
            l.succeed(a);
        }
        assert!(l.begin("s20", "nat", t0).is_ok());
        // Twenty wrong codes are a lockout, however many are under way.
        let mut l = EnrollLimiter::new(5, 20, Duration::from_secs(900), 1000);
        for i in 0..20 {
            let a = l.begin(&format!("s{i}"), "p", t0).unwrap();
            let _ = l.fail(a, t0);
        }
        assert_eq!(l.begin("s20", "p", t0).unwrap_err().0, Locked::Peer);
        // Attempts abandoned mid-way stop counting as under way after a while.
        let mut l = EnrollLimiter::new(5, 2, Duration::from_secs(900), 1000);
        std::mem::forget([
            l.begin("a", "q", t0).unwrap(),
            l.begin("b", "q", t0).unwrap(),
        ]);
        assert_eq!(l.begin("c", "q", t0).unwrap_err().0, Locked::Busy);
        let later = t0 + IN_FLIGHT_FOR;
        assert_eq!(l.begin("c", "q", later).unwrap_err().0, Locked::Peer);
    }

    #[test]
    fn a_guessing_peer_does_not_lock_out_the_technician() {
        let mut l = EnrollLimiter::new(5, 100, Duration::from_secs(60), 1000);
        let t0 = Instant::now();
        let mut locked = Vec::new();
        for _ in 0..5 {
            let a = l.begin("s", "attacker", t0).unwrap();
            locked.extend(l.fail(a, t0));
        }
        let keys: Vec<&str> = locked.iter().map(|l| l.key.as_str()).collect();
        assert_eq!(keys, ["station:s|peer:attacker", "station:s"]);
        assert_eq!(
            l.begin("s", "attacker", t0).unwrap_err().0,
            Locked::PeerOnStation
        );
        // The technician, who has not failed here, still gets to try.
        let a = l.begin("s", "technician", t0).unwrap();
        l.succeed(a);
        // A peer that failed once on the locked station waits.
        let mut l2 = EnrollLimiter::new(2, 100, Duration::from_secs(60), 1000);
        let a = l2.begin("s", "x", t0).unwrap();
        let _ = l2.fail(a, t0);
        let a = l2.begin("s", "y", t0).unwrap();
        let _ = l2.fail(a, t0);
        assert_eq!(l2.begin("s", "x", t0).unwrap_err().0, Locked::Station);
        assert!(l2.begin("s", "z", t0).is_ok());
    }

    #[test]
    fn limiter_is_bounded() {
        let mut l = EnrollLimiter::new(1, 1, Duration::from_secs(60), 6);
        let t0 = Instant::now();
        assert!(l.begin("a", "1", t0).is_ok());
        assert!(l.begin("b", "2", t0).is_ok());
        assert_eq!(l.begin("c", "3", t0).unwrap_err().0, Locked::Full);
        assert_eq!(l.refused_full, 1);
        assert!(l.begin("d", "4", t0 + Duration::from_secs(61)).is_ok());
    }

    #[test]
    fn a_restored_lockout_keeps_its_remaining_time() {
        let mut l = EnrollLimiter::new(5, 20, Duration::from_secs(900), 100);
        let t0 = Instant::now() + Duration::from_secs(3600);
        l.restore("station:s|peer:p", 5, Duration::from_secs(300), t0);
        let (who, wait) = l.begin("s", "p", t0).unwrap_err();
        assert_eq!(
            (who, wait),
            (Locked::PeerOnStation, Duration::from_secs(300))
        );
    }
}
