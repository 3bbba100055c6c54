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

/// Counts failures per key in fixed windows and refuses once a key has too many.
/// Bounded: past `max_keys`, expired windows are purged; if none expired, new keys are
/// refused (an attacker spraying keys must not grow memory) and counted.
#[derive(Debug)]
pub struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    max_keys: usize,
    windows: HashMap<String, (Instant, u32)>,
    pub refused_full: u64,
}

impl FailureLimiter {
    pub fn new(max_failures: u32, window: Duration, max_keys: usize) -> Self {
        FailureLimiter {
            max_failures,
            window,
            max_keys,
            windows: HashMap::new(),
            refused_full: 0,
        }
    }

    /// `Err(wait)` when the key must wait before trying again.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        match self.windows.get(key) {
            Some((start, n))
                if now.duration_since(*start) < self.window && *n >= self.max_failures =>
            {
                Err(self.window - now.duration_since(*start))
            }
            _ => Ok(()),
        }
    }

    pub fn fail(&mut self, key: &str, now: Instant) {
        if !self.windows.contains_key(key) && self.windows.len() >= self.max_keys {
            let window = self.window;
            self.windows
                .retain(|_, (start, _)| now.duration_since(*start) < window);
            if self.windows.len() >= self.max_keys {
                self.refused_full += 1;
                return;
            }
        }
        let e = self.windows.entry(key.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        e.1 += 1;
    }

    pub fn succeed(&mut self, key: &str) {
        self.windows.remove(key);
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
        let mut l = FailureLimiter::new(3, Duration::from_secs(60), 10);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("s", t0).is_ok());
            l.fail("s", t0);
        }
        let wait = l.check("s", t0 + Duration::from_secs(10)).unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(l.check("s", t0 + Duration::from_secs(60)).is_ok());
        l.fail("s", t0 + Duration::from_secs(61));
        assert!(
            l.check("s", t0 + Duration::from_secs(61)).is_ok(),
            "new window starts at 1"
        );
    }

    #[test]
    fn limiter_is_bounded() {
        let mut l = FailureLimiter::new(1, Duration::from_secs(60), 2);
        let t0 = Instant::now();
        l.fail("a", t0);
        l.fail("b", t0);
        l.fail("c", t0);
        assert_eq!(l.refused_full, 1);
        l.fail("d", t0 + Duration::from_secs(61));
        assert!(l.check("d", t0 + Duration::from_secs(61)).is_err());
    }
}
