//! Per-client rate limits (`TROUPE_RATE_LIMIT`, `TROUPE_RATE_BURST`): GCRA, the token bucket
//! kept as one timestamp per client.
//!
//! A client is the name of the key it sent, else its address ([`Client`]). For each, the
//! limiter keeps the *theoretical arrival time* (TAT): when the client's bucket would be full
//! again. A request at `now` passes when `TAT - now ≤ (burst - 1) × interval`, and moves the
//! TAT one interval on; a refused one changes nothing and learns how long to wait. A client
//! whose TAT has passed is exactly a client never seen, so forgetting it loses nothing: that
//! is what keeps the memory bounded without weakening the limit ([`RateLimiter::forget_idle`],
//! and a hard cap on clients past which those nearest to idle go first).
//!
//! Limits are per process: N replicas let a client through N times as often.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher as _;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::ConfigError;
use crate::error::AppError;

/// The variable the rate comes from.
pub const RATE_LIMIT_VAR: &str = "TROUPE_RATE_LIMIT";

/// The variable the burst comes from.
pub const RATE_BURST_VAR: &str = "TROUPE_RATE_BURST";

/// The largest rate, and the largest burst, taken: a million per unit.
pub const MAX_REQUESTS: u32 = 1_000_000;

/// The default cap on clients remembered at once (about 4 MB).
pub const DEFAULT_MAX_CLIENTS: usize = 100_000;

/// How often the server should call [`RateLimiter::forget_idle`].
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The unit of a rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Per {
    /// `N/s`.
    Second,
    /// `N/m`.
    Minute,
}

impl Per {
    fn duration(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
        }
    }

    fn letter(self) -> char {
        match self {
            Self::Second => 's',
            Self::Minute => 'm',
        }
    }
}

/// A rate limit: `requests` per `per`, with up to `burst` requests at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Requests per unit, 1 to [`MAX_REQUESTS`].
    pub requests: u32,
    /// The unit.
    pub per: Per,
    /// Requests a client that has been quiet may send at once, 1 to [`MAX_REQUESTS`].
    pub burst: u32,
}

impl RateSpec {
    /// Parses `TROUPE_RATE_LIMIT` (`N/s` or `N/m`; empty, `0`, `0/s` or `0/m` is no limit,
    /// `None`) and `TROUPE_RATE_BURST` (a whole number from 1; empty is
    /// [`RateSpec::default_burst`]). A burst is checked even when the limit is off, so a
    /// typo never waits for the day the limit is turned on.
    pub fn parse(limit: &str, burst: &str) -> Result<Option<Self>, ConfigError> {
        let (limit, burst) = (limit.trim(), burst.trim());
        let burst = match burst {
            "" => None,
            b => Some(
                b.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_REQUESTS).contains(n))
                    .ok_or_else(|| ConfigError {
                        var: RATE_BURST_VAR,
                        problem: format!(
                            "expected a whole number from 1 to {MAX_REQUESTS}, got {b:?}"
                        ),
                    })?,
            ),
        };
        if limit.is_empty() || limit == "0" {
            return Ok(None);
        }
        let bad = || ConfigError {
            var: RATE_LIMIT_VAR,
            problem: format!(
                "expected N/s or N/m (N requests a second or a minute, N from 0 to \
                 {MAX_REQUESTS}; 0 is no limit), got {limit:?}"
            ),
        };
        let (n, unit) = limit.split_once('/').ok_or_else(bad)?;
        let per = match unit {
            "s" => Per::Second,
            "m" => Per::Minute,
            _ => return Err(bad()),
        };
        // Plain digits only: no sign, blank or leading zero (`+5/s`, ` 5/s`, `05/s`).
        let plain = !n.is_empty()
            && n.bytes().all(|b| b.is_ascii_digit())
            && (n == "0" || !n.starts_with('0'));
        let requests = n
            .parse::<u32>()
            .ok()
            .filter(|&n| plain && n <= MAX_REQUESTS)
            .ok_or_else(bad)?;
        if requests == 0 {
            return Ok(None);
        }
        Ok(Some(Self {
            requests,
            per,
            burst: burst.unwrap_or_else(|| Self::default_burst(requests, per)),
        }))
    }

    /// The burst when `TROUPE_RATE_BURST` is unset: two seconds' worth of the rate, at least 1
    /// (`N/s` → 2N; `N/m` → 2N/60 rounded up, so `30/m` bursts 1 and `600/m` bursts 20).
    pub fn default_burst(requests: u32, per: Per) -> u32 {
        match per {
            Per::Second => requests.saturating_mul(2),
            Per::Minute => requests.saturating_mul(2).div_ceil(60),
        }
        .max(1)
    }

    /// The time one request uses up: the unit divided by the rate.
    pub fn interval(&self) -> Duration {
        self.per.duration() / self.requests
    }
}

impl fmt::Display for RateSpec {
    /// `N/s, burst B`, for the start-up log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}, burst {}",
            self.requests,
            self.per.letter(),
            self.burst
        )
    }
}

/// Who a request counts against: the key it sent, else where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// A configured key, by name.
    Key(Arc<str>),
    /// An address: an IPv4 address, or the /64 an IPv6 address lies in.
    Ip(IpAddr),
}

impl Client {
    /// The client for a request that sent a valid key.
    pub fn key(name: Arc<str>) -> Self {
        Self::Key(name)
    }

    /// The client for a request from `addr` without a valid key. An IPv4-mapped IPv6 address
    /// counts as its IPv4 address; any other IPv6 address counts as its /64, the block one
    /// subscriber is given, so that walking through a /64 does not escape the limit.
    pub fn ip(addr: IpAddr) -> Self {
        match addr.to_canonical() {
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !(u128::MAX >> 64);
                Self::Ip(IpAddr::V6(prefix.into()))
            }
            v4 => Self::Ip(v4),
        }
    }
}

/// A refused request: how long until the client may send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The exact wait.
    pub retry_after: Duration,
}

impl Limited {
    /// The wait in whole seconds for `Retry-After`: rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after
            .as_nanos()
            .div_ceil(1_000_000_000)
            .try_into()
            .unwrap_or(u64::MAX)
            .max(1)
    }
}

impl From<Limited> for AppError {
    /// 429 `rate_limited` with `Retry-After`.
    fn from(limited: Limited) -> Self {
        AppError::RateLimited {
            retry_after_secs: limited.retry_after_secs(),
        }
    }
}

/// Clients' TATs, in nanoseconds since the limiter's epoch.
type Shard = HashMap<Client, u64>;

/// Shards for the default cap: enough that workers seldom wait on each other's lock.
const SHARDS: usize = 16;

/// The per-client limiter, shared by every worker (`Arc<RateLimiter>`).
pub struct RateLimiter {
    spec: RateSpec,
    interval: u64,
    tolerance: u64,
    epoch: Instant,
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    shard_cap: usize,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("spec", &self.spec)
            .field("clients", &self.len())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter for `spec` remembering at most `max_clients` clients (at least one per
    /// shard); see [`DEFAULT_MAX_CLIENTS`].
    pub fn new(spec: RateSpec, max_clients: usize) -> Self {
        Self::with_shards(spec, max_clients, SHARDS)
    }

    fn with_shards(spec: RateSpec, max_clients: usize, shards: usize) -> Self {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let interval = nanos(spec.interval()).max(1);
        let shards = shards.max(1);
        Self {
            spec,
            interval,
            tolerance: interval.saturating_mul(u64::from(spec.burst.max(1) - 1)),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..shards).map(|_| Mutex::new(Shard::new())).collect(),
            shard_cap: max_clients.div_ceil(shards).max(1),
        }
    }

    /// The limit this limiter holds clients to.
    pub fn spec(&self) -> RateSpec {
        self.spec
    }

    /// Counts one request from `client` at `now`: `Ok` if it is within the limit, else how
    /// long the client must wait (the request is then not counted).
    pub fn check(&self, client: &Client, now: Instant) -> Result<(), Limited> {
        let t = self.nanos(now);
        let mut shard = self.shard(client);
        if let Some(tat) = shard.get_mut(client) {
            let tat_now = (*tat).max(t);
            let ahead = tat_now - t;
            if ahead > self.tolerance {
                return Err(Limited {
                    retry_after: Duration::from_nanos(ahead - self.tolerance),
                });
            }
            *tat = tat_now.saturating_add(self.interval);
            return Ok(());
        }
        if shard.len() >= self.shard_cap {
            make_room(&mut shard, t, self.shard_cap);
        }
        shard.insert(client.clone(), t.saturating_add(self.interval));
        Ok(())
    }

    /// Forgets every client whose bucket is full again at `now` (as if never seen); returns
    /// how many. Call it every [`SWEEP_EVERY`].
    pub fn forget_idle(&self, now: Instant) -> usize {
        let t = self.nanos(now);
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
                let before = shard.len();
                shard.retain(|_, tat| *tat > t);
                before - shard.len()
            })
            .sum()
    }

    /// How many clients are remembered.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no client is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn shard(&self, client: &Client) -> std::sync::MutexGuard<'_, Shard> {
        // The hash is 64 bits and shards few: the remainder fits usize.
        let i =
            usize::try_from(self.hasher.hash_one(client) % self.shards.len() as u64).unwrap_or(0);
        self.shards
            .get(i)
            .unwrap_or(&self.shards[0])
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes room in a full shard: first forgets idle clients (losing nothing); if that frees
/// too little, forgets the eighth of the cap whose buckets are nearest to full (losing the
/// least), so that the next full scan is an eighth of the cap of inserts away.
fn make_room(shard: &mut Shard, t: u64, cap: usize) {
    shard.retain(|_, tat| *tat > t);
    let keep = cap - (cap / 8).max(1);
    if shard.len() <= keep {
        return;
    }
    let drop = shard.len() - keep;
    let mut tats: Vec<u64> = shard.values().copied().collect();
    let (below, &mut threshold, _) = tats.select_nth_unstable(drop - 1);
    let mut ties = drop - below.iter().filter(|&&tat| tat < threshold).count();
    shard.retain(|_, tat| {
        if *tat < threshold {
            false
        } else if *tat == threshold && ties > 0 {
            ties -= 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use actix_web::http::{header, StatusCode};

    use super::*;

    fn spec(limit: &str, burst: &str) -> Option<RateSpec> {
        RateSpec::parse(limit, burst).unwrap()
    }

    fn ip(n: u8) -> Client {
        Client::ip(IpAddr::from([10, 0, 0, n]))
    }

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn unset_and_zero_are_no_limit() {
        for limit in ["", "  ", "0", "0/s", "0/m"] {
            assert_eq!(spec(limit, ""), None, "{limit:?}");
        }
    }

    #[test]
    fn a_rate_is_n_per_second_or_minute_with_a_default_burst_of_two_seconds() {
        assert_eq!(
            spec("10/s", ""),
            Some(RateSpec {
                requests: 10,
                per: Per::Second,
                burst: 20
            })
        );
        assert_eq!(spec("600/m", "").map(|s| s.burst), Some(20));
        assert_eq!(spec("30/m", "").map(|s| s.burst), Some(1));
        assert_eq!(spec("31/m", "").map(|s| s.burst), Some(2));
        assert_eq!(spec("1/m", "").map(|s| s.burst), Some(1));
        assert_eq!(spec(" 5/s ", "3").map(|s| s.burst), Some(3));
        assert_eq!(spec("10/s", "").unwrap().interval(), 100 * MS);
        assert_eq!(spec("2/m", "").unwrap().interval(), 30 * S);
        assert_eq!(spec("10/s", "").unwrap().to_string(), "10/s, burst 20");
    }

    #[test]
    fn bad_rates_and_bursts_name_their_variable() {
        for limit in [
            "10",
            "10/h",
            "10/S",
            "-1/s",
            "+5/s",
            "05/s",
            "1.5/s",
            "10 /s",
            "/s",
            "1000001/s",
            "x",
        ] {
            let err = RateSpec::parse(limit, "").unwrap_err();
            assert_eq!(err.var, RATE_LIMIT_VAR, "{limit:?}");
            assert!(err
                .to_string()
                .starts_with("TROUPE_RATE_LIMIT: expected N/s or N/m"));
        }
        for burst in ["0", "-1", "1.5", "many", "1000001"] {
            let err = RateSpec::parse("10/s", burst).unwrap_err();
            assert_eq!(err.var, RATE_BURST_VAR, "{burst:?}");
        }
        assert_eq!(RateSpec::parse("", "x").unwrap_err().var, RATE_BURST_VAR);
    }

    #[test]
    fn a_quiet_client_gets_its_burst_then_waits_one_interval() {
        let limiter = RateLimiter::new(spec("10/s", "5").unwrap(), 100);
        let t0 = Instant::now();
        for i in 0..5 {
            assert_eq!(limiter.check(&ip(1), t0), Ok(()), "request {i}");
        }
        let refused = limiter.check(&ip(1), t0).unwrap_err();
        assert_eq!(refused.retry_after, 100 * MS);
        assert_eq!(refused.retry_after_secs(), 1);
        // A refused request is not counted: the wait is the same a moment later, less the moment.
        assert_eq!(
            limiter.check(&ip(1), t0 + 40 * MS).unwrap_err().retry_after,
            60 * MS
        );
        assert_eq!(limiter.check(&ip(1), t0 + 100 * MS), Ok(()));
        assert!(limiter.check(&ip(1), t0 + 100 * MS).is_err());
        // Other clients are not affected.
        assert_eq!(limiter.check(&ip(2), t0), Ok(()));
    }

    #[test]
    fn a_steady_client_at_the_rate_is_never_refused() {
        let limiter = RateLimiter::new(spec("10/s", "1").unwrap(), 100);
        let t0 = Instant::now();
        for i in 0..1000 {
            assert_eq!(
                limiter.check(&ip(1), t0 + i * 100 * MS),
                Ok(()),
                "request {i}"
            );
        }
        assert!(limiter.check(&ip(1), t0 + 99_950 * MS).is_err());
    }

    #[test]
    fn the_bucket_refills_after_the_window() {
        let limiter = RateLimiter::new(spec("2/s", "").unwrap(), 100);
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(limiter.check(&ip(1), t0), Ok(()));
        }
        assert!(limiter.check(&ip(1), t0).is_err());
        let t1 = t0 + 2 * S;
        for _ in 0..4 {
            assert_eq!(limiter.check(&ip(1), t1), Ok(()));
        }
        assert!(limiter.check(&ip(1), t1).is_err());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
        let secs = |d: Duration| Limited { retry_after: d }.retry_after_secs();
        assert_eq!(secs(Duration::ZERO), 1);
        assert_eq!(secs(MS), 1);
        assert_eq!(secs(S), 1);
        assert_eq!(secs(S + MS), 2);
        assert_eq!(secs(30 * S), 30);

        let limiter = RateLimiter::new(spec("1/m", "").unwrap(), 100);
        let t0 = Instant::now();
        assert_eq!(limiter.check(&ip(1), t0), Ok(()));
        let refused = limiter.check(&ip(1), t0 + 10 * S + 500 * MS).unwrap_err();
        assert_eq!(refused.retry_after_secs(), 50);
    }

    #[test]
    fn a_refusal_is_429_rate_limited_with_retry_after() {
        let err = AppError::from(Limited {
            retry_after: 2500 * MS,
        });
        assert_eq!(
            (err.status(), err.code()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
        );
        let res = err.to_response("r");
        assert_eq!(res.headers().get(header::RETRY_AFTER).unwrap(), "3");
    }

    #[test]
    fn keys_and_addresses_are_separate_clients() {
        let limiter = RateLimiter::new(spec("1/s", "1").unwrap(), 100);
        let t0 = Instant::now();
        let key = Client::key("ci".into());
        assert_eq!(limiter.check(&key, t0), Ok(()));
        assert!(limiter.check(&Client::key("ci".into()), t0).is_err());
        assert_eq!(limiter.check(&Client::key("other".into()), t0), Ok(()));
        assert_eq!(limiter.check(&ip(1), t0), Ok(()));
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_a_mapped_ipv4_its_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:ffff:ffff:ffff".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Client::ip(a), Client::ip(b));
        assert_ne!(Client::ip(a), Client::ip(c));
        assert_eq!(Client::ip(a), Client::Ip("2001:db8:1:2::".parse().unwrap()));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Client::ip(mapped), Client::Ip("192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn idle_clients_are_forgotten_and_busy_ones_kept() {
        let limiter = RateLimiter::new(spec("1/s", "3").unwrap(), 100);
        let t0 = Instant::now();
        assert_eq!(limiter.check(&ip(1), t0), Ok(()));
        for _ in 0..3 {
            assert_eq!(limiter.check(&ip(2), t0), Ok(()));
        }
        assert_eq!(limiter.len(), 2);
        assert_eq!(limiter.forget_idle(t0 + 500 * MS), 0);
        assert_eq!(
            limiter.forget_idle(t0 + S),
            1,
            "ip 1's bucket is full again"
        );
        assert_eq!(limiter.len(), 1);
        // ip 2 kept its count: one request a second later, not a new burst of three.
        assert_eq!(limiter.check(&ip(2), t0 + S), Ok(()));
        assert!(limiter.check(&ip(2), t0 + S).is_err());
        assert_eq!(limiter.forget_idle(t0 + 4 * S), 1);
        assert!(limiter.is_empty());
    }

    #[test]
    fn the_cap_forgets_the_clients_nearest_to_idle_first() {
        let limiter = RateLimiter::with_shards(spec("1/s", "16").unwrap(), 16, 1);
        let t0 = Instant::now();
        let passes = |client: &Client| {
            (0..20)
                .filter(|_| limiter.check(client, t0).is_ok())
                .count()
        };
        // Client n has sent n + 1 requests: the low numbers are nearest to a full bucket.
        for n in 0..16u8 {
            for _ in 0..=n {
                assert_eq!(limiter.check(&ip(n), t0), Ok(()));
            }
        }
        assert_eq!(limiter.len(), 16);
        assert_eq!(limiter.check(&ip(100), t0), Ok(()));
        // An eighth of the cap (2) was forgotten to make room: clients 0 and 1.
        assert_eq!(limiter.len(), 15);
        assert_eq!(passes(&ip(1)), 16, "client 1 was forgotten: a full burst");
        assert_eq!(passes(&ip(2)), 13, "client 2 kept its count");
        assert_eq!(passes(&ip(15)), 0, "client 15 kept its count");
        assert_eq!(limiter.len(), 16);
    }

    #[test]
    fn the_cap_first_forgets_idle_clients() {
        let limiter = RateLimiter::with_shards(spec("1/s", "10").unwrap(), 4, 1);
        let t0 = Instant::now();
        for n in 0..4 {
            assert_eq!(limiter.check(&ip(n), t0), Ok(()));
        }
        for _ in 0..9 {
            assert_eq!(limiter.check(&ip(3), t0), Ok(()));
        }
        assert!(limiter.check(&ip(3), t0).is_err());
        // At t0 + 1 s clients 0..3 are idle; 3 is not, and stays limited.
        assert_eq!(limiter.check(&ip(9), t0 + S), Ok(()));
        assert_eq!(limiter.len(), 2);
        assert!(limiter.check(&ip(3), t0 + S).is_ok());
        assert!(limiter.check(&ip(3), t0 + S).is_err());
    }

    #[test]
    fn memory_stays_under_the_cap_whatever_the_number_of_clients() {
        let limiter = RateLimiter::new(spec("1/s", "").unwrap(), 1000);
        let t0 = Instant::now();
        for i in 0..50_000u32 {
            let addr = IpAddr::from(i.to_be_bytes());
            assert_eq!(limiter.check(&Client::ip(addr), t0), Ok(()));
        }
        // Sixteen shards of ceil(1000 / 16) = 63.
        assert!(limiter.len() <= 16 * 63, "{}", limiter.len());
    }

    #[test]
    fn every_worker_can_use_one_limiter() {
        let limiter = Arc::new(RateLimiter::new(spec("1/s", "100").unwrap(), 1000));
        let t0 = Instant::now();
        let passed: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let limiter = Arc::clone(&limiter);
                    s.spawn(move || {
                        (0..100)
                            .filter(|_| limiter.check(&Client::key("ci".into()), t0).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(passed, 100, "exactly the burst passes, across threads");
    }
}
