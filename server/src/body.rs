//! Request-body plumbing shared by every upload protocol (tus PATCH, the
//! GCS-style range PUT, the S3-style presigned PUT): streaming a body into a
//! disk [`Appender`] with the `bandwidth` and `corrupt` faults applied,
//! reporting how the body ended, and draining bodies that are refused.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt as _;

use crate::store::Appender;

/// Bodies we refuse are still read to the end (up to this long) before the
/// error is sent: answering while the browser is still sending makes the
/// kernel reset the connection, and the browser would then report a network
/// error instead of our status code.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads and discards the rest of a body (bounded by [`DRAIN_TIMEOUT`]), then
/// returns `res`. See [`DRAIN_TIMEOUT`] for why.
pub async fn reject(body: Body, res: Response) -> Response {
    drain(body).await;
    res
}

pub async fn drain(mut body: Body) {
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
}

/// How a request body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEnd {
    /// The body ended (possibly short of the limit when it had no
    /// Content-Length; callers compare the count).
    Complete,
    /// More bytes than the limit allows (only possible without
    /// Content-Length, which callers check up front).
    Overflow,
    /// The connection broke (or the client aborted) mid-body.
    Broken,
    /// The disk writer stopped; its error comes from `Appender::finish`.
    WriteFailed,
}

/// The `bandwidth` fault: reading is paused so the average rate since the
/// start of the body stays at or below the limit; TCP flow control then
/// slows the sender.
pub struct Pacer {
    start: Instant,
    bytes_per_sec: Option<u64>,
}

impl Pacer {
    pub fn new(bytes_per_sec: Option<u64>) -> Self {
        Pacer {
            start: Instant::now(),
            bytes_per_sec,
        }
    }

    pub async fn pace(&self, total: u64) {
        if let Some(bps) = self.bytes_per_sec.filter(|b| *b > 0) {
            let due = Duration::from_secs_f64(total as f64 / bps as f64);
            let elapsed = self.start.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }
}

/// Reads up to `limit` body bytes into `sink` (or discards them when `sink`
/// is None), throttled to `bandwidth` bytes/s. Returns how the body ended
/// and the count read. With `probe_end`, a body that reaches `limit` is also
/// checked for extra bytes (Overflow); without it, reading simply stops at
/// `limit`. A `limit` of 0 with `probe_end` treats any byte as Overflow.
pub async fn read_body(
    body: &mut Body,
    limit: u64,
    sink: Option<&Appender>,
    probe_end: bool,
    bandwidth: Option<u64>,
) -> (BodyEnd, u64) {
    read_body_skipping(body, limit, 0, sink, probe_end, bandwidth).await
}

/// [`read_body`], but the first `skip` bytes are received and counted without reaching
/// the sink (a range chunk that overlaps bytes the server already persisted).
pub async fn read_body_skipping(
    body: &mut Body,
    limit: u64,
    skip: u64,
    sink: Option<&Appender>,
    probe_end: bool,
    bandwidth: Option<u64>,
) -> (BodyEnd, u64) {
    read_into(body, limit, skip, sink, probe_end, bandwidth, None).await
}

/// [`read_body`] with the `corrupt` fault: the body byte at position
/// `flip_at` (if the body gets that far) is inverted on its way to the sink,
/// as if it had been damaged in transit. Only for bodies whose checksum is
/// verified afterwards, so the damage is always caught and never stored.
/// The byte was flipped exactly when the returned count exceeds `flip_at`.
pub async fn read_body_corrupting(
    body: &mut Body,
    limit: u64,
    sink: Option<&Appender>,
    probe_end: bool,
    bandwidth: Option<u64>,
    flip_at: u64,
) -> (BodyEnd, u64) {
    read_into(body, limit, 0, sink, probe_end, bandwidth, Some(flip_at)).await
}

/// Inverts the byte at `at` (a body position) if it falls inside `data`,
/// which starts at body position `start`.
pub(crate) fn flip(data: Bytes, start: u64, at: Option<u64>) -> Bytes {
    match at.and_then(|at| at.checked_sub(start)) {
        Some(i) if i < data.len() as u64 => {
            let mut owned = BytesMut::from(&data[..]);
            owned[i as usize] ^= 0xFF;
            owned.freeze()
        }
        _ => data,
    }
}

async fn read_into(
    body: &mut Body,
    limit: u64,
    skip: u64,
    sink: Option<&Appender>,
    probe_end: bool,
    bandwidth: Option<u64>,
    flip_at: Option<u64>,
) -> (BodyEnd, u64) {
    let pacer = Pacer::new(bandwidth);
    let mut received = 0u64;
    while received < limit || limit == 0 {
        let frame = match body.frame().await {
            None => return (BodyEnd::Complete, received),
            Some(Err(_)) => return (BodyEnd::Broken, received),
            Some(Ok(frame)) => frame,
        };
        // Trailers carry no upload bytes.
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let room = limit - received;
        let over = data.len() as u64 > room;
        if over {
            data = data.slice(..room as usize);
        }
        let data = flip(data, received, flip_at);
        let n = data.len() as u64;
        let skipped = skip.saturating_sub(received).min(n);
        let data = data.slice(skipped as usize..);
        if !data.is_empty() {
            if let Some(sink) = sink {
                if sink.push(data).await.is_err() {
                    return (BodyEnd::WriteFailed, received);
                }
            }
        }
        received += n;
        if over {
            return (BodyEnd::Overflow, received);
        }
        pacer.pace(received).await;
    }
    if !probe_end {
        return (BodyEnd::Complete, received);
    }
    // Exactly `limit` bytes so far; any further byte is an overflow.
    loop {
        match body.frame().await {
            None => return (BodyEnd::Complete, received),
            Some(Err(_)) => return (BodyEnd::Broken, received),
            Some(Ok(f)) if f.data_ref().is_some_and(|d| !d.is_empty()) => {
                return (BodyEnd::Overflow, received)
            }
            Some(Ok(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_hits_one_byte_only_inside_the_piece() {
        let piece = Bytes::from_static(&[1, 2, 3, 4]);
        assert_eq!(flip(piece.clone(), 10, Some(12))[..], [1, 2, 0xFC, 4]);
        assert_eq!(flip(piece.clone(), 10, Some(9)), piece);
        assert_eq!(flip(piece.clone(), 10, Some(14)), piece);
        assert_eq!(flip(piece.clone(), 10, None), piece);
    }
}
