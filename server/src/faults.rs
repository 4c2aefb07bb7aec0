//! Fault injection: the fault spec language (parsing and canonical printing),
//! the seeded PRNG that decides when faults strike, the fault counters, and
//! the process-wide fault engine (global spec, seed, creation streams).
//!
//! Reproducibility is the point: the same seed and the same sequence of
//! requests must give the same faults, so the client's retry logic can be
//! tested deterministically. Randomness therefore never comes from the OS
//! here, only from [`Prng`] streams derived from the seed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The kinds of fault that are counted (latency and bandwidth shape traffic
/// but are not "injected faults").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    TooManyRequests,
    Internal,
    Unavailable,
    Reset,
    /// One byte of a checksummed body flipped before verification. Never
    /// returned by [`FaultSpec::roll`]: it has its own stream (see
    /// [`FaultSpec::roll_corrupt`]).
    Corrupt,
}

impl FaultKind {
    /// The label used in spec items, JSON counters and log lines.
    pub fn label(self) -> &'static str {
        match self {
            FaultKind::TooManyRequests => "429",
            FaultKind::Internal => "500",
            FaultKind::Unavailable => "503",
            FaultKind::Reset => "reset",
            FaultKind::Corrupt => "corrupt",
        }
    }

    fn index(self) -> usize {
        match self {
            FaultKind::TooManyRequests => 0,
            FaultKind::Internal => 1,
            FaultKind::Unavailable => 2,
            FaultKind::Reset => 3,
            FaultKind::Corrupt => 4,
        }
    }
}

/// A parsed fault spec. `None` fields were not mentioned in the spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultSpec {
    pub p429: Option<f64>,
    pub p500: Option<f64>,
    pub p503: Option<f64>,
    pub reset: Option<f64>,
    /// Probability of flipping one byte of a body the server verifies with a
    /// checksum (tus PATCH with `Upload-Checksum`); never strikes elsewhere,
    /// so it can only ever cause a refusal, never wrong stored bytes.
    pub corrupt: Option<f64>,
    /// Delay added before handling each POST/HEAD/PATCH/DELETE.
    pub latency_ms: Option<u64>,
    /// Throttle for reading PATCH bodies, in bytes per second.
    pub bandwidth: Option<u64>,
    /// Seconds announced by `Retry-After` on an injected 429 (default 1).
    pub retry_after_secs: Option<u64>,
    /// Send `Retry-After` as an HTTP-date instead of delta-seconds.
    pub retry_after_date: bool,
    /// `checksum:off`: OPTIONS on this family hides the checksum extension,
    /// so clients send no `Upload-Checksum` and a broken PATCH keeps its
    /// partial body (only meaningful in a `/faults/{spec}/` path).
    pub checksum_off: bool,
    /// `token:N`: requests must carry `Authorization: Bearer <token>`, and each token is
    /// good for N requests; a missing or used-up token gets 401 (tokens that expire, for
    /// the client's credential refresh).
    pub token_uses: Option<u64>,
}

/// A spec that could not be parsed; the message names the offending item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError(pub String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad fault spec: {}", self.0)
    }
}

impl std::error::Error for SpecError {}

impl FaultSpec {
    /// Parses the spec syntax shared by `--faults`, the `/faults/{spec}/`
    /// path prefix and `PUT /__faults`: comma-separated `kind:value` items,
    /// `429:P`, `500:P`, `503:P`, `reset:P`, `corrupt:P` (P in [0,1]), `latency:MS`,
    /// `bandwidth:N[unit]`, `retry-after:SECS` / `retry-after:date` /
    /// `retry-after:date:SECS`, `checksum:off|on`; empty or `none` means no faults. Matching is
    /// case-insensitive, whitespace around items is ignored, empty items are
    /// skipped, and a repeated kind overrides the earlier one.
    pub fn parse(text: &str) -> Result<FaultSpec, SpecError> {
        let lowered = text.trim().to_ascii_lowercase();
        let mut spec = FaultSpec::default();
        let items: Vec<&str> = lowered
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .collect();
        if items == ["none"] {
            return Ok(spec);
        }
        for item in items {
            let (kind, value) = item
                .split_once(':')
                .ok_or_else(|| SpecError(format!("item {item:?} is not kind:value")))?;
            let (kind, value) = (kind.trim(), value.trim());
            match kind {
                "429" => spec.p429 = Some(parse_probability(item, value)?),
                "500" => spec.p500 = Some(parse_probability(item, value)?),
                "503" => spec.p503 = Some(parse_probability(item, value)?),
                "reset" => spec.reset = Some(parse_probability(item, value)?),
                "corrupt" => spec.corrupt = Some(parse_probability(item, value)?),
                "latency" => spec.latency_ms = Some(parse_u64(item, value)?),
                "bandwidth" => {
                    let bps = parse_bytes(item, value)?;
                    if bps == 0 {
                        return Err(SpecError(format!("{item:?}: bandwidth must be > 0")));
                    }
                    spec.bandwidth = Some(bps);
                }
                "retry-after" => {
                    // `date` switches the format, `date:N` also sets the
                    // seconds, a bare number sets only the seconds; this
                    // keeps `retry-after:3,retry-after:date` meaningful too.
                    if value == "date" {
                        spec.retry_after_date = true;
                    } else if let Some(secs) = value.strip_prefix("date:") {
                        spec.retry_after_date = true;
                        spec.retry_after_secs = Some(parse_u64(item, secs.trim())?);
                    } else {
                        spec.retry_after_secs = Some(parse_u64(item, value)?);
                    }
                }
                "token" => {
                    let uses = parse_u64(item, value)?;
                    if uses == 0 {
                        return Err(SpecError(format!(
                            "{item:?}: a token must be good for at least 1 request"
                        )));
                    }
                    spec.token_uses = Some(uses);
                }
                "checksum" => match value {
                    "off" => spec.checksum_off = true,
                    "on" => spec.checksum_off = false,
                    _ => return Err(SpecError(format!("{item:?}: checksum is on or off"))),
                },
                "none" => {
                    return Err(SpecError(
                        "\"none\" cannot be combined with other items".into(),
                    ))
                }
                other => return Err(SpecError(format!("unknown fault kind {other:?}"))),
            }
        }
        Ok(spec)
    }

    /// True when the spec can inject nothing and delays nothing.
    pub fn is_none(&self) -> bool {
        *self == FaultSpec::default()
    }

    fn probability(&self, kind: FaultKind) -> f64 {
        let p = match kind {
            FaultKind::TooManyRequests => self.p429,
            FaultKind::Internal => self.p500,
            FaultKind::Unavailable => self.p503,
            FaultKind::Reset => self.reset,
            FaultKind::Corrupt => self.corrupt,
        };
        p.unwrap_or(0.0)
    }

    /// Decides whether a fault strikes this request. Always consumes exactly
    /// four draws (429, 500, 503, reset, in that order) whatever the spec and
    /// the outcome, so the stream position depends only on how many requests
    /// were rolled, which keeps runs with different specs comparable.
    /// `reset` only strikes when `allow_reset` (PATCH).
    pub fn roll(&self, rng: &mut Prng, allow_reset: bool) -> Option<FaultKind> {
        let draws = [
            rng.next_f64(),
            rng.next_f64(),
            rng.next_f64(),
            rng.next_f64(),
        ];
        let kinds = [
            FaultKind::TooManyRequests,
            FaultKind::Internal,
            FaultKind::Unavailable,
            FaultKind::Reset,
        ];
        kinds
            .into_iter()
            .zip(draws)
            .filter(|(kind, _)| allow_reset || *kind != FaultKind::Reset)
            .find(|(kind, draw)| *draw < self.probability(*kind))
            .map(|(kind, _)| kind)
    }

    /// Decides whether the `corrupt` fault strikes a checksummed body of
    /// `body_len` bytes, and where: `Some(position)` of the byte to flip.
    /// Always consumes exactly two draws (decision, position) from `rng`, a
    /// stream of its own, so adding `corrupt` to a spec never shifts the
    /// four-draw streams of the other kinds. An empty body cannot be
    /// corrupted.
    pub fn roll_corrupt(&self, rng: &mut Prng, body_len: u64) -> Option<u64> {
        let strike = rng.next_f64() < self.probability(FaultKind::Corrupt);
        let at = rng.below(body_len);
        (strike && body_len > 0).then_some(at)
    }

    /// The `Retry-After` value for an injected 429, relative to `now`.
    pub fn retry_after_value(&self, now: SystemTime) -> String {
        let secs = self.retry_after_secs.unwrap_or(1);
        if !self.retry_after_date {
            return secs.to_string();
        }
        // HTTP-dates have whole-second resolution; round up so the date is
        // never earlier than `secs` from now.
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let whole = since_epoch.as_secs() + u64::from(since_epoch.subsec_nanos() > 0);
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(whole.saturating_add(secs)))
    }

    pub fn latency(&self) -> Option<Duration> {
        self.latency_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }
}

/// Canonical form: items in the fixed order 429, 500, 503, reset, corrupt,
/// latency, bandwidth (plain bytes/s), retry-after, checksum; `none` when
/// empty. The canonical
/// form parses back to an equal spec.
impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = Vec::new();
        let probs = [
            ("429", self.p429),
            ("500", self.p500),
            ("503", self.p503),
            ("reset", self.reset),
            ("corrupt", self.corrupt),
        ];
        for (name, p) in probs {
            if let Some(p) = p {
                items.push(format!("{name}:{p}"));
            }
        }
        if let Some(ms) = self.latency_ms {
            items.push(format!("latency:{ms}"));
        }
        if let Some(bps) = self.bandwidth {
            items.push(format!("bandwidth:{bps}"));
        }
        match (self.retry_after_date, self.retry_after_secs) {
            (true, Some(s)) => items.push(format!("retry-after:date:{s}")),
            (true, None) => items.push("retry-after:date".into()),
            (false, Some(s)) => items.push(format!("retry-after:{s}")),
            (false, None) => {}
        }
        if self.checksum_off {
            items.push("checksum:off".into());
        }
        if let Some(uses) = self.token_uses {
            items.push(format!("token:{uses}"));
        }
        if items.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&items.join(","))
        }
    }
}

fn parse_probability(item: &str, value: &str) -> Result<f64, SpecError> {
    let p: f64 = value
        .parse()
        .map_err(|_| SpecError(format!("{item:?}: {value:?} is not a number")))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(SpecError(format!("{item:?}: probability must be in [0,1]")));
    }
    Ok(p)
}

fn parse_u64(item: &str, value: &str) -> Result<u64, SpecError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SpecError(format!(
            "{item:?}: {value:?} is not a non-negative integer"
        )));
    }
    value
        .parse()
        .map_err(|_| SpecError(format!("{item:?}: {value:?} is out of range")))
}

/// Byte counts with an optional unit: `b`, `kb`/`mb`/`gb` (powers of 1000),
/// `k`/`m`/`g` and `kib`/`mib`/`gib` (powers of 1024). The input is already
/// lowercased.
fn parse_bytes(item: &str, value: &str) -> Result<u64, SpecError> {
    let split = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (digits, unit) = value.split_at(split);
    let n = parse_u64(item, digits)?;
    let factor: u64 = match unit.trim() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        other => return Err(SpecError(format!("{item:?}: unknown unit {other:?}"))),
    };
    n.checked_mul(factor)
        .ok_or_else(|| SpecError(format!("{item:?}: value out of range")))
}

/// splitmix64: tiny, fast, and good enough to decide test faults; chosen
/// over the rand crate so the exact sequence is pinned by this file.
#[derive(Debug, Clone)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); `n` must be > 0 (returns 0 otherwise). Uses the
    /// multiply-shift reduction, whose bias is negligible at these sizes.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Derives an independent stream seed from a seed and a label, so streams
/// for different purposes do not overlap.
pub fn derive_seed(seed: u64, label: &str) -> u64 {
    // FNV-1a over the label, then one splitmix step to spread the bits.
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    Prng::new(seed ^ h).next_u64()
}

/// Counts of injected faults, by kind.
#[derive(Debug, Default)]
pub struct FaultCounters([AtomicU64; 5]);

/// JSON shape of [`FaultCounters`]:
/// `{"429": n, "500": n, "503": n, "reset": n, "corrupt": n}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    #[serde(rename = "429")]
    pub too_many: u64,
    #[serde(rename = "500")]
    pub internal: u64,
    #[serde(rename = "503")]
    pub unavailable: u64,
    pub reset: u64,
    pub corrupt: u64,
}

impl FaultCounters {
    pub fn bump(&self, kind: FaultKind) {
        self.0[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let get = |k: FaultKind| self.0[k.index()].load(Ordering::Relaxed);
        CounterSnapshot {
            too_many: get(FaultKind::TooManyRequests),
            internal: get(FaultKind::Internal),
            unavailable: get(FaultKind::Unavailable),
            reset: get(FaultKind::Reset),
            corrupt: get(FaultKind::Corrupt),
        }
    }
}

/// Process-wide fault state: the runtime-changeable global spec, the seed,
/// the PRNG streams that decide faults on upload creation, and the global
/// counters (which count faults from every route family).
#[derive(Debug)]
pub struct FaultEngine {
    state: Mutex<EngineState>,
    pub counters: FaultCounters,
    /// `token:N`: how many requests each bearer token has been used for.
    token_uses: Mutex<HashMap<String, u64>>,
}

#[derive(Debug)]
struct EngineState {
    spec: FaultSpec,
    seed: u64,
    /// One creation stream per route family (`global`, or the canonical
    /// path spec) so browser tests using different prefixes do not perturb
    /// each other's sequences.
    creation: HashMap<String, Prng>,
}

impl FaultEngine {
    pub fn new(spec: FaultSpec, seed: u64) -> Self {
        FaultEngine {
            state: Mutex::new(EngineState {
                spec,
                seed,
                creation: HashMap::new(),
            }),
            counters: FaultCounters::default(),
            token_uses: Mutex::new(HashMap::new()),
        }
    }

    /// `token:N`: counts one use of the bearer token in `authorization` (a header value)
    /// and says whether it was still good (at most `limit` uses). Tokens are never logged.
    pub fn use_token(&self, authorization: Option<&str>, limit: u64) -> bool {
        let Some(token) = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return false;
        };
        let mut uses = self.token_uses.lock().unwrap_or_else(|e| e.into_inner());
        let used = uses.entry(token.to_owned()).or_insert(0);
        *used += 1;
        *used <= limit
    }

    fn lock(&self) -> MutexGuard<'_, EngineState> {
        // A panic while holding this lock cannot leave the state
        // inconsistent (every update is a single assignment), so recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn global_spec(&self) -> FaultSpec {
        self.lock().spec.clone()
    }

    pub fn seed(&self) -> u64 {
        self.lock().seed
    }

    /// Replaces the global spec; with `Some(seed)` also reseeds, restarting
    /// every creation stream so the following run is reproducible. Uploads
    /// created earlier keep their own streams.
    pub fn set(&self, spec: FaultSpec, seed: Option<u64>) {
        let mut st = self.lock();
        st.spec = spec;
        if let Some(seed) = seed {
            st.seed = seed;
            st.creation.clear();
        }
    }

    /// Rolls the faults for one upload creation on the stream `key`. On no
    /// fault also draws the new upload's own stream seed from the same
    /// stream, so upload streams follow the seed and the creation order.
    pub fn roll_creation(&self, key: &str, spec: &FaultSpec) -> Result<u64, FaultKind> {
        let mut st = self.lock();
        let seed = st.seed;
        let rng = st
            .creation
            .entry(key.to_owned())
            .or_insert_with(|| Prng::new(derive_seed(seed, key)));
        match spec.roll(rng, false) {
            Some(kind) => Err(kind),
            None => Ok(rng.next_u64()),
        }
    }

    /// Draws a stream seed from the creation stream `key` without rolling
    /// any fault: for creations that are never faulted (range sessions are
    /// created by the app's backend, not by the client whose retries are
    /// under test). Callers prefix `key` with their
    /// protocol so they do not shift the tus creation streams.
    pub fn draw_seed(&self, key: &str) -> u64 {
        let mut st = self.lock();
        let seed = st.seed;
        st.creation
            .entry(key.to_owned())
            .or_insert_with(|| Prng::new(derive_seed(seed, key)))
            .next_u64()
    }

    /// Runs `f` on the stream `key` (created from the seed and `key` on
    /// first use; restarted by a reseed). For callers that know no upload,
    /// such as the fault-injecting proxy, which keys its streams by path.
    pub fn with_stream<R>(&self, key: &str, f: impl FnOnce(&mut Prng) -> R) -> R {
        let mut st = self.lock();
        let seed = st.seed;
        let rng = st
            .creation
            .entry(key.to_owned())
            .or_insert_with(|| Prng::new(derive_seed(seed, key)));
        f(rng)
    }

    /// Stream seed for an upload found on disk at startup (no creation order
    /// is known for it).
    pub fn seed_for_existing(&self, id: &str) -> u64 {
        derive_seed(self.seed(), &format!("existing:{id}"))
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_are_good_for_their_number_of_uses() {
        let spec = FaultSpec::parse("token:2").unwrap();
        assert_eq!(spec.token_uses, Some(2));
        assert_eq!(spec.to_string(), "token:2");
        assert!(FaultSpec::parse("token:0").is_err());
        let engine = FaultEngine::new(FaultSpec::default(), 1);
        assert!(engine.use_token(Some("Bearer a"), 2));
        assert!(engine.use_token(Some("Bearer a"), 2));
        assert!(!engine.use_token(Some("Bearer a"), 2), "used up");
        assert!(engine.use_token(Some("Bearer b"), 2), "a fresh token");
        assert!(!engine.use_token(None, 2));
        assert!(!engine.use_token(Some("Basic xyz"), 2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_spec_and_prints_canonically() {
        let spec = FaultSpec::parse(
            " reset:0.05, 429:0.25 ,500:1,503:0,latency:20,bandwidth:2MB,retry-after:3",
        )
        .expect("valid");
        assert_eq!(spec.p429, Some(0.25));
        assert_eq!(spec.p500, Some(1.0));
        assert_eq!(spec.p503, Some(0.0));
        assert_eq!(spec.reset, Some(0.05));
        assert_eq!(spec.latency_ms, Some(20));
        assert_eq!(spec.bandwidth, Some(2_000_000));
        assert_eq!(spec.retry_after_secs, Some(3));
        assert!(!spec.retry_after_date);
        let canon = spec.to_string();
        assert_eq!(
            canon,
            "429:0.25,500:1,503:0,reset:0.05,latency:20,bandwidth:2000000,retry-after:3"
        );
        assert_eq!(FaultSpec::parse(&canon), Ok(spec));
    }

    #[test]
    fn none_and_empty_are_no_faults() {
        for text in ["", "none", " NONE ", ",", "  "] {
            let spec = FaultSpec::parse(text).expect("valid");
            assert!(spec.is_none(), "{text:?}");
            assert_eq!(spec.to_string(), "none");
        }
    }

    #[test]
    fn bandwidth_units_and_retry_after_date() {
        let bw = |s: &str| FaultSpec::parse(s).map(|f| f.bandwidth);
        assert_eq!(bw("bandwidth:512KB"), Ok(Some(512_000)));
        assert_eq!(bw("bandwidth:512kib"), Ok(Some(512 * 1024)));
        assert_eq!(bw("bandwidth:2M"), Ok(Some(2 << 20)));
        assert_eq!(bw("bandwidth:100"), Ok(Some(100)));
        let spec = FaultSpec::parse("retry-after:date").expect("valid");
        assert!(spec.retry_after_date);
        assert_eq!(spec.retry_after_secs, None);
        let spec = FaultSpec::parse("retry-after:date:7").expect("valid");
        assert_eq!(
            (spec.retry_after_date, spec.retry_after_secs),
            (true, Some(7))
        );
        assert_eq!(spec.to_string(), "retry-after:date:7");
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            spec.retry_after_value(now),
            "Sun, 06 Nov 1994 08:49:44 GMT" // 08:49:37 + 7 s
        );
        assert_eq!(FaultSpec::default().retry_after_value(now), "1");
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "429",
            "429:1.5",
            "429:-0.1",
            "429:abc",
            "500:nan",
            "teapot:0.5",
            "latency:-5",
            "latency:1.5",
            "bandwidth:0",
            "bandwidth:5XB",
            "bandwidth:",
            "retry-after:soon",
            "none,429:0.1",
            "reset:0.1;500:0.2",
        ] {
            assert!(FaultSpec::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn roll_respects_extremes_and_reset_only_on_patch() {
        let mut rng = Prng::new(9);
        let always = FaultSpec::parse("500:1").expect("valid");
        let never = FaultSpec::parse("429:0,500:0,503:0,reset:0").expect("valid");
        let reset = FaultSpec::parse("reset:1").expect("valid");
        for _ in 0..100 {
            assert_eq!(always.roll(&mut rng, true), Some(FaultKind::Internal));
            assert_eq!(never.roll(&mut rng, true), None);
            assert_eq!(reset.roll(&mut rng, false), None);
            assert_eq!(reset.roll(&mut rng, true), Some(FaultKind::Reset));
        }
    }

    #[test]
    fn same_seed_same_sequence() {
        let spec = FaultSpec::parse("429:0.2,500:0.2,503:0.2,reset:0.2").expect("valid");
        let run = |seed| {
            let mut rng = Prng::new(seed);
            (0..200)
                .map(|_| spec.roll(&mut rng, true).map(FaultKind::label))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        let engine_a = FaultEngine::new(spec.clone(), 5);
        let engine_b = FaultEngine::new(spec.clone(), 5);
        let seq = |e: &FaultEngine| {
            (0..50)
                .map(|_| e.roll_creation("global", &spec))
                .collect::<Vec<_>>()
        };
        assert_eq!(seq(&engine_a), seq(&engine_b));
    }

    #[test]
    fn corrupt_parses_prints_and_rolls_on_its_own() {
        let spec = FaultSpec::parse("corrupt:0.5, reset:0.1").expect("valid");
        assert_eq!(spec.corrupt, Some(0.5));
        assert_eq!(spec.to_string(), "reset:0.1,corrupt:0.5");
        assert_eq!(FaultSpec::parse(&spec.to_string()), Ok(spec.clone()));
        assert!(FaultSpec::parse("corrupt:2").is_err());
        // `roll` never answers Corrupt, whatever the probability.
        let always = FaultSpec::parse("corrupt:1").expect("valid");
        let mut rng = Prng::new(4);
        for _ in 0..50 {
            assert_eq!(always.roll(&mut rng, true), None);
        }
        // Two draws per roll, position inside the body, none for empty bodies.
        let (mut a, mut b) = (Prng::new(8), Prng::new(8));
        for len in 1..100 {
            let at = always.roll_corrupt(&mut a, len).expect("strikes");
            assert!(at < len);
            b.next_u64();
            b.next_u64();
        }
        assert_eq!(a.next_u64(), b.next_u64());
        assert_eq!(always.roll_corrupt(&mut a, 0), None);
        let never = FaultSpec::default();
        assert_eq!(never.roll_corrupt(&mut a, 10), None);
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = Prng::new(3);
        for n in 1..200 {
            assert!(rng.below(n) < n);
        }
        assert_eq!(rng.below(0), 0);
    }
}
