//! The progress model: turns upload events into the object handed to `onProgress`.
//!
//! Three promises to the person watching the bar: `bytesUploaded` (and so `percent`) only
//! counts bytes the server acknowledged and never goes backwards; speed and ETA are
//! smoothed over a few seconds of acknowledged bytes, stalls and retries included, so they
//! do not flicker or flatter; and calls are throttled to one per `progressIntervalMs`,
//! except the ones that matter (a phase change, a chunk acknowledged, the final 100 %),
//! which always go out.

use crate::core::digest::Sha256Bytes;

/// Where the upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Talking to the server before the first byte is sent (capabilities, creation).
    Starting,
    /// Continuing an upload the server already holds part of: re-reading and hashing that
    /// part locally (nothing is sent again).
    Resuming,
    /// Reading, hashing and sending chunks.
    Uploading,
    /// Waiting before a retry (`retryInMs` says how long).
    Retrying,
    /// The browser is offline: waiting for it to come back (no retry is spent meanwhile).
    Offline,
    /// Every byte is sent; the server is checking the file (web-messaging attachments).
    Verifying,
    /// Finished: every byte acknowledged.
    Done,
}

impl Phase {
    /// The string JavaScript sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Resuming => "resuming",
            Phase::Uploading => "uploading",
            Phase::Retrying => "retrying",
            Phase::Offline => "offline",
            Phase::Verifying => "verifying",
            Phase::Done => "done",
        }
    }
}

/// One chunk the server acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadedChunk {
    /// 0-based position among the acknowledged chunks.
    pub index: u64,
    /// Where it starts in the file.
    pub offset: u64,
    /// Its length in bytes.
    pub length: u64,
    /// SHA-256 of its bytes.
    pub sha256: Sha256Bytes,
    /// Retries spent on this chunk before it was acknowledged.
    pub retries: u32,
}

/// The snapshot handed to `onProgress`.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Where the upload is.
    pub phase: Phase,
    /// Bytes that have passed through the counting stream, as a file position. Rewinds when
    /// a retry re-reads part of the file.
    pub bytes_read: u64,
    /// Bytes the server acknowledged. Never decreases.
    pub bytes_uploaded: u64,
    /// Bytes handed to the network, acknowledged or not: byte by byte for requests sent with
    /// upload progress (XHR), otherwise equal to `bytes_uploaded`. Goes back when a retry
    /// re-sends.
    pub bytes_sent: u64,
    /// The file's size.
    pub bytes_total: u64,
    /// Share of the file sent (`max(bytesUploaded, bytesSent)`), as 0..=100; never
    /// decreases (a re-send holds it until it passes the mark), and is 100 only when done.
    pub percent: f64,
    /// Smoothed rate of acknowledged bytes.
    pub bytes_per_second: f64,
    /// Remaining bytes over the smoothed rate; `None` until a rate is known.
    pub eta_seconds: Option<f64>,
    /// The chunk being worked on (0-based).
    pub chunk_index: u64,
    /// How many chunks the upload will have, as planned now.
    pub chunk_count: u64,
    /// The try of the current request: 1, then 2 after its first retry, and so on.
    pub attempt: u32,
    /// Retries over the whole upload.
    pub retries: u32,
    /// While `Retrying`, how long the wait is.
    pub retry_in_ms: Option<u32>,
    /// Set on the call made when a chunk was acknowledged.
    pub chunk: Option<UploadedChunk>,
    /// The upload's URL on the server, once it exists (to show, log or resume).
    pub upload_url: Option<String>,
}

/// Smoothed throughput of acknowledged bytes: an exponentially weighted moving average
/// whose weight depends on elapsed time, so irregular samples are treated fairly.
#[derive(Debug, Clone)]
struct SpeedMeter {
    last: (f64, u64),
    rate: Option<f64>,
}

/// Seconds over which the speed is smoothed.
const SPEED_TIME_CONSTANT_MS: f64 = 3000.0;

impl SpeedMeter {
    fn new(now_ms: f64) -> Self {
        SpeedMeter {
            last: (now_ms, 0),
            rate: None,
        }
    }

    fn sample(&mut self, now_ms: f64, bytes: u64) {
        let (then, before) = self.last;
        let dt = now_ms - then;
        if dt <= 0.0 || bytes < before {
            return;
        }
        let instant = (bytes - before) as f64 * 1000.0 / dt;
        let alpha = 1.0 - (-dt / SPEED_TIME_CONSTANT_MS).exp();
        self.rate = Some(match self.rate {
            None => instant,
            Some(rate) => rate + alpha * (instant - rate),
        });
        self.last = (now_ms, bytes);
    }
}

/// Builds progress snapshots and decides which ones are worth a callback.
#[derive(Debug, Clone)]
pub struct ProgressModel {
    current: Progress,
    interval_ms: f64,
    last_emit_ms: Option<f64>,
    speed: SpeedMeter,
}

impl ProgressModel {
    /// A model for `total` bytes in `chunk_count` chunks, starting at `now_ms`.
    pub fn new(total: u64, chunk_count: u64, interval_ms: u32, now_ms: f64) -> Self {
        ProgressModel {
            current: Progress {
                phase: Phase::Starting,
                bytes_read: 0,
                bytes_uploaded: 0,
                bytes_sent: 0,
                bytes_total: total,
                percent: 0.0,
                bytes_per_second: 0.0,
                eta_seconds: None,
                chunk_index: 0,
                chunk_count,
                attempt: 1,
                retries: 0,
                retry_in_ms: None,
                chunk: None,
                upload_url: None,
            },
            interval_ms: f64::from(interval_ms),
            last_emit_ms: None,
            speed: SpeedMeter::new(now_ms),
        }
    }

    /// The latest snapshot, emitted or not.
    pub fn current(&self) -> &Progress {
        &self.current
    }

    /// The phase changed; always reported.
    pub fn phase(&mut self, phase: Phase, now_ms: f64) -> Progress {
        self.current.phase = phase;
        if phase != Phase::Retrying {
            self.current.retry_in_ms = None;
        }
        self.emit(now_ms, None)
    }

    /// A retry is scheduled in `delay_ms`; always reported.
    pub fn retrying(&mut self, attempt: u32, retries: u32, delay_ms: u32, now_ms: f64) -> Progress {
        self.current.attempt = attempt;
        self.current.retries = retries;
        self.current.retry_in_ms = Some(delay_ms);
        self.phase(Phase::Retrying, now_ms)
    }

    /// The attempt number changed without a wait (after the offset advanced it is back to 1).
    pub fn set_attempt(&mut self, attempt: u32) {
        self.current.attempt = attempt;
    }

    /// The server created the upload at `url`.
    pub fn set_upload_url(&mut self, url: &str) {
        self.current.upload_url = Some(url.to_owned());
    }

    /// Work moved to the chunk `index` of (now) `count`.
    pub fn set_chunk_position(&mut self, index: u64, count: u64) {
        self.current.chunk_index = index;
        self.current.chunk_count = count;
    }

    /// The reader got to `bytes_read`; reported if the throttle allows.
    pub fn read(&mut self, bytes_read: u64, now_ms: f64) -> Option<Progress> {
        self.current.bytes_read = bytes_read;
        self.throttled(now_ms).then(|| self.emit(now_ms, None))
    }

    /// The request in flight has sent its body up to the file position `position`; reported
    /// if the throttle allows.
    pub fn sent(&mut self, position: u64, now_ms: f64) -> Option<Progress> {
        self.current.bytes_sent = position.min(self.current.bytes_total);
        // Byte-level progress gives a speed long before any acknowledgement (one PUT).
        self.speed.sample(
            now_ms,
            self.current.bytes_sent.max(self.current.bytes_uploaded),
        );
        self.throttled(now_ms).then(|| self.emit(now_ms, None))
    }

    fn throttled(&self, now_ms: f64) -> bool {
        self.last_emit_ms
            .is_none_or(|last| now_ms - last >= self.interval_ms)
    }

    /// The server acknowledged everything before `offset`; reported when a chunk completed
    /// (a chunk boundary) and otherwise only if the throttle allows.
    pub fn acknowledged(
        &mut self,
        offset: u64,
        chunk: Option<UploadedChunk>,
        now_ms: f64,
    ) -> Option<Progress> {
        if offset > self.current.bytes_uploaded {
            self.current.bytes_uploaded = offset.min(self.current.bytes_total);
            self.speed.sample(now_ms, self.current.bytes_uploaded);
        }
        self.current.bytes_sent = self.current.bytes_sent.max(self.current.bytes_uploaded);
        let due = chunk.is_some() || self.throttled(now_ms);
        due.then(|| self.emit(now_ms, chunk))
    }

    /// The server already held the first `offset` bytes when the upload began (a resumed
    /// upload): they count as uploaded, but not towards the speed, which measures this
    /// session's transfer.
    pub fn resumed(&mut self, offset: u64, now_ms: f64) {
        if offset > self.current.bytes_uploaded {
            self.current.bytes_uploaded = offset.min(self.current.bytes_total);
            self.current.bytes_sent = self.current.bytes_sent.max(self.current.bytes_uploaded);
        }
        self.speed = SpeedMeter::new(now_ms);
        self.speed.last.1 = self.current.bytes_uploaded;
    }

    /// Everything is acknowledged: the final 100 % call.
    pub fn done(&mut self, now_ms: f64) -> Progress {
        self.current.bytes_uploaded = self.current.bytes_total;
        self.current.bytes_sent = self.current.bytes_total;
        self.current.bytes_read = self.current.bytes_read.max(self.current.bytes_total);
        self.current.chunk_index = self.current.chunk_count;
        self.phase(Phase::Done, now_ms)
    }

    fn emit(&mut self, now_ms: f64, chunk: Option<UploadedChunk>) -> Progress {
        let p = &mut self.current;
        p.percent = if p.phase == Phase::Done {
            100.0
        } else if p.bytes_total == 0 {
            0.0
        } else {
            let share = p.bytes_uploaded.max(p.bytes_sent) as f64 * 100.0 / p.bytes_total as f64;
            // Never 100 before the server confirmed everything.
            p.percent.max(share.min(99.9))
        };
        p.bytes_per_second = self.speed.rate.unwrap_or(0.0);
        let remaining = p.bytes_total - p.bytes_uploaded.max(p.bytes_sent);
        p.eta_seconds = if remaining == 0 {
            Some(0.0)
        } else {
            self.speed
                .rate
                .filter(|r| *r > 0.0)
                .map(|r| remaining as f64 / r)
        };
        self.last_emit_ms = Some(now_ms);
        Progress { chunk, ..p.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(index: u64) -> UploadedChunk {
        UploadedChunk {
            index,
            offset: index * 100,
            length: 100,
            sha256: [0; 32],
            retries: 0,
        }
    }

    #[test]
    fn reads_are_throttled_but_chunk_boundaries_always_reported() {
        let mut m = ProgressModel::new(1000, 10, 100, 0.0);
        assert_eq!(m.phase(Phase::Uploading, 0.0).phase, Phase::Uploading);
        assert!(m.read(10, 50.0).is_none());
        let p = m.read(20, 100.0).expect("interval elapsed");
        assert_eq!(p.bytes_read, 20);
        assert!(m.read(30, 150.0).is_none());
        let p = m
            .acknowledged(100, Some(chunk(0)), 160.0)
            .expect("boundary");
        assert_eq!(p.chunk.as_ref().map(|c| c.index), Some(0));
        assert_eq!(p.bytes_read, 30);
        assert!(m.acknowledged(150, None, 170.0).is_none());
        assert!(m.read(40, 200.0).is_none());
        assert!(m.read(40, 260.0).is_some());
    }

    #[test]
    fn uploaded_bytes_and_percent_never_decrease() {
        let mut m = ProgressModel::new(1000, 10, 0, 0.0);
        let mut last = 0.0;
        for (t, offset) in [(1.0, 100), (2.0, 300), (3.0, 200), (4.0, 0), (5.0, 900)] {
            let p = m.acknowledged(offset, Some(chunk(0)), t).expect("forced");
            assert!(p.percent >= last, "{} < {last}", p.percent);
            last = p.percent;
        }
        assert_eq!(m.current().bytes_uploaded, 900);
        let done = m.done(6.0);
        assert_eq!(
            (done.percent, done.bytes_uploaded, done.phase),
            (100.0, 1000, Phase::Done)
        );
        assert_eq!(done.eta_seconds, Some(0.0));
    }

    #[test]
    fn speed_is_smoothed_and_eta_follows() {
        let mut m = ProgressModel::new(10_000_000, 10, 0, 0.0);
        // 1 MB per second for 3 s.
        for s in 1..=3u64 {
            m.acknowledged(s * 1_000_000, Some(chunk(s)), s as f64 * 1000.0);
        }
        let p = m.current().clone();
        assert!(
            (p.bytes_per_second - 1_000_000.0).abs() < 1.0,
            "{}",
            p.bytes_per_second
        );
        // 7 MB left at 1 MB/s.
        let eta = m
            .acknowledged(3_000_000, Some(chunk(3)), 3000.0)
            .and_then(|p| p.eta_seconds);
        assert!((eta.unwrap_or(0.0) - 7.0).abs() < 0.01);
        // A 2 s stall then one fast chunk: smoothing keeps the estimate between extremes.
        let p = m
            .acknowledged(4_000_000, Some(chunk(4)), 5000.0)
            .expect("forced");
        assert!(p.bytes_per_second < 1_000_000.0 && p.bytes_per_second > 333_333.0);
    }

    #[test]
    fn retrying_reports_the_wait_and_clears_it_after() {
        let mut m = ProgressModel::new(100, 1, 100, 0.0);
        let p = m.retrying(2, 1, 750, 10.0);
        assert_eq!(
            (p.phase, p.attempt, p.retries, p.retry_in_ms),
            (Phase::Retrying, 2, 1, Some(750))
        );
        let p = m.phase(Phase::Uploading, 20.0);
        assert_eq!(p.retry_in_ms, None);
        assert_eq!(p.eta_seconds, None);
    }

    #[test]
    fn bytes_sent_move_the_percentage_which_never_goes_back() {
        let mut m = ProgressModel::new(1000, 1, 0, 0.0);
        assert_eq!(m.sent(250, 1.0).map(|p| p.percent), Some(25.0));
        assert_eq!(
            m.sent(1000, 2.0).map(|p| (p.percent, p.bytes_sent)),
            Some((99.9, 1000))
        );
        // A retry re-sends from 0: bytesSent goes back, the percentage holds.
        let again = m.sent(100, 3.0).expect("unthrottled");
        assert_eq!(
            (again.bytes_sent, again.percent, again.bytes_uploaded),
            (100, 99.9, 0)
        );
        assert_eq!(m.done(4.0).percent, 100.0);
    }

    #[test]
    fn resumed_bytes_count_as_uploaded_but_not_as_speed() {
        let mut m = ProgressModel::new(1_000_000, 10, 0, 0.0);
        m.resumed(400_000, 1000.0);
        let p = m.phase(Phase::Resuming, 1000.0);
        assert_eq!(
            (p.bytes_uploaded, p.percent, p.phase.as_str()),
            (400_000, 40.0, "resuming")
        );
        // 100 kB in the next second: 100 kB/s, not 500 kB/s.
        let p = m
            .acknowledged(500_000, Some(chunk(5)), 2000.0)
            .expect("forced");
        assert!(
            (p.bytes_per_second - 100_000.0).abs() < 1.0,
            "{}",
            p.bytes_per_second
        );
        // Re-hashed chunks before the resume point never move the bar back.
        let p = m
            .acknowledged(100_000, Some(chunk(1)), 2100.0)
            .expect("forced");
        assert_eq!((p.bytes_uploaded, p.percent), (500_000, 50.0));
    }

    #[test]
    fn empty_file_reaches_one_hundred_percent_only_when_done() {
        let mut m = ProgressModel::new(0, 0, 100, 0.0);
        assert_eq!(m.phase(Phase::Starting, 0.0).percent, 0.0);
        assert_eq!(m.done(1.0).percent, 100.0);
    }
}
