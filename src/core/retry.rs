//! When to try again, and how long to wait first.
//!
//! Exponential backoff with full jitter (delay drawn uniformly from
//! `0..=min(maxDelayMs, baseDelayMs * 2^attempt)`), except when the server said how long to
//! wait with `Retry-After`, which is honoured (capped by `maxDelayMs`). The attempt counter
//! is kept by the engine and resets whenever the server's offset advances, so a long upload
//! over a flaky network is not failed by many unrelated hiccups.

use crate::core::error::{RetryAfter, UploadError};

/// HTTP statuses that mean "the same request may work later".
pub const TRANSIENT_STATUSES: [u16; 8] = [408, 423, 429, 460, 500, 502, 503, 504];

/// True for statuses worth retrying.
pub fn is_transient_status(status: u16) -> bool {
    TRANSIENT_STATUSES.contains(&status)
}

/// The retry settings (`options.retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries allowed in a row without the server's offset advancing.
    pub attempts: u32,
    /// The first backoff ceiling; it doubles with each retry.
    pub base_delay_ms: u32,
    /// No wait is ever longer, even one a server asks for.
    pub max_delay_ms: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base_delay_ms: 500,
            max_delay_ms: 30_000,
        }
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then re-sync with the server and go on.
    RetryAfterMs(u32),
    /// Stop and report the error.
    GiveUp,
}

impl RetryPolicy {
    /// Decides about `error`, the `attempt`-th failure in a row (0-based) without progress.
    /// `random` is uniform in `[0, 1)`; `now_epoch_ms` converts an HTTP-date `Retry-After`.
    pub fn decide(
        &self,
        error: &UploadError,
        attempt: u32,
        random: f64,
        now_epoch_ms: f64,
    ) -> Decision {
        if !error.is_retryable() || attempt >= self.attempts {
            return Decision::GiveUp;
        }
        let server_wait = match error {
            UploadError::HttpStatus {
                retry_after: Some(after),
                ..
            } => Some(match *after {
                RetryAfter::Seconds(s) => s.saturating_mul(1000),
                RetryAfter::At { epoch_ms } => {
                    epoch_ms.saturating_sub(now_epoch_ms.max(0.0) as u64)
                }
            }),
            _ => None,
        };
        let delay = match server_wait {
            Some(ms) => ms.min(u64::from(self.max_delay_ms)),
            None => {
                let ceiling = u64::from(self.base_delay_ms)
                    .saturating_mul(1u64 << attempt.min(40))
                    .min(u64::from(self.max_delay_ms));
                (random.clamp(0.0, 1.0) * (ceiling as f64 + 1.0)).floor() as u64
            }
        };
        Decision::RetryAfterMs(delay.min(u64::from(self.max_delay_ms)) as u32)
    }

    /// [`decide`](Self::decide) for a caller that waits and tries again: the wait in
    /// milliseconds, or the error to report, `RetriesExhausted` (wrapping `error`) when a
    /// retryable error has used up its attempts, else `error` itself.
    pub fn delay_or_fail(
        &self,
        error: UploadError,
        attempt: u32,
        random: f64,
        now_epoch_ms: f64,
    ) -> Result<u32, UploadError> {
        match self.decide(&error, attempt, random, now_epoch_ms) {
            Decision::RetryAfterMs(ms) => Ok(ms),
            Decision::GiveUp if error.is_retryable() => Err(UploadError::RetriesExhausted {
                attempts: attempt,
                last: Box::new(error),
            }),
            Decision::GiveUp => Err(error),
        }
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3), including
/// the obsolete RFC 850 and asctime date forms. Anything else is ignored (`None`).
pub fn parse_retry_after(value: &str) -> Option<RetryAfter> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse().ok().map(RetryAfter::Seconds);
    }
    parse_http_date(value).map(|epoch_ms| RetryAfter::At { epoch_ms })
}

/// Milliseconds since the Unix epoch for an HTTP-date.
pub fn parse_http_date(value: &str) -> Option<u64> {
    // Tokenise on spaces, commas and dashes: "Sun, 06 Nov 1994 08:49:37 GMT",
    // "Sunday, 06-Nov-94 08:49:37 GMT" and "Sun Nov  6 08:49:37 1994" all become words.
    let words: Vec<&str> = value
        .split([' ', ',', '-'])
        .filter(|w| !w.is_empty())
        .collect();
    let month_of = |w: &str| {
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        MONTHS.iter().position(|m| *m == w).map(|i| i as u32 + 1)
    };
    let (day, month, year, time) = match words.as_slice() {
        [_, d, m, y, t, "GMT"] if month_of(m).is_some() => (*d, month_of(m)?, *y, *t),
        [_, m, d, t, y] if month_of(m).is_some() => (*d, month_of(m)?, *y, *t),
        _ => return None,
    };
    let day: u32 = day.parse().ok()?;
    let mut year: i64 = year.parse().ok()?;
    if year < 100 {
        // RFC 9110 reads a two-digit year 50+ years ahead as the past century; with a fixed
        // pivot of 70 (as the Unix epoch suggests), 00-69 are 20xx and 70-99 are 19xx.
        year += if year < 70 { 2000 } else { 1900 };
    }
    let hms: Vec<u32> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, s] = hms.as_slice() else {
        return None;
    };
    // A four-digit year at most (RFC 9110's dates have four): a larger one would overflow
    // the arithmetic below.
    if !(1..=31).contains(&day) || year > 9999 || *h > 23 || *m > 59 || *s > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(*h) * 3600 + i64::from(*m) * 60 + i64::from(*s);
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::http::Method;

    fn status(code: u16, retry_after: Option<RetryAfter>) -> UploadError {
        UploadError::HttpStatus {
            method: Method::Patch,
            purpose: "upload chunk",
            status: code,
            retryable: is_transient_status(code),
            retry_after,
            expired_url: false,
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        attempts: 5,
        base_delay_ms: 100,
        max_delay_ms: 1000,
    };

    #[test]
    fn transient_statuses_are_the_documented_ones() {
        for s in [408, 423, 429, 460, 500, 502, 503, 504] {
            assert!(is_transient_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 410, 412, 413, 415, 501] {
            assert!(!is_transient_status(s), "{s}");
        }
    }

    #[test]
    fn backoff_ceiling_doubles_and_is_capped() {
        // random just below 1 gives the ceiling, 0 gives 0: full jitter spans the whole range.
        let top = 0.999_999_999;
        let schedule: Vec<_> = (0..5)
            .map(|a| POLICY.decide(&status(503, None), a, top, 0.0))
            .collect();
        assert_eq!(
            schedule,
            [100, 200, 400, 800, 1000]
                .map(Decision::RetryAfterMs)
                .to_vec()
        );
        assert_eq!(
            POLICY.decide(&status(503, None), 3, 0.0, 0.0),
            Decision::RetryAfterMs(0)
        );
        assert_eq!(
            POLICY.decide(&status(503, None), 2, 0.5, 0.0),
            Decision::RetryAfterMs(200)
        );
    }

    #[test]
    fn delay_or_fail_wraps_only_retryable_errors_that_ran_out_of_attempts() {
        assert_eq!(
            POLICY.delay_or_fail(status(503, None), 2, 0.5, 0.0),
            Ok(200)
        );
        match POLICY.delay_or_fail(status(503, None), 5, 0.5, 0.0) {
            Err(UploadError::RetriesExhausted { attempts: 5, last }) => {
                assert_eq!(last.status(), Some(503))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            POLICY.delay_or_fail(status(404, None), 0, 0.5, 0.0),
            Err(status(404, None))
        );
        assert_eq!(
            POLICY.delay_or_fail(UploadError::Aborted, 0, 0.5, 0.0),
            Err(UploadError::Aborted)
        );
    }

    #[test]
    fn gives_up_after_the_allowed_attempts_or_on_permanent_errors() {
        assert_eq!(
            POLICY.decide(&status(503, None), 5, 0.5, 0.0),
            Decision::GiveUp
        );
        assert_eq!(
            POLICY.decide(&status(404, None), 0, 0.5, 0.0),
            Decision::GiveUp
        );
        assert_eq!(
            POLICY.decide(&status(403, None), 0, 0.5, 0.0),
            Decision::GiveUp
        );
        assert_eq!(
            POLICY.decide(&UploadError::Aborted, 0, 0.5, 0.0),
            Decision::GiveUp
        );
        let network = UploadError::Network {
            method: Method::Patch,
            purpose: "upload chunk",
            detail: "Failed to fetch".into(),
        };
        assert!(matches!(
            POLICY.decide(&network, 0, 0.5, 0.0),
            Decision::RetryAfterMs(_)
        ));
    }

    #[test]
    fn retry_after_is_honoured_and_capped() {
        let ask = |after| POLICY.decide(&status(429, Some(after)), 0, 0.9, 1_000_000.0);
        assert_eq!(ask(RetryAfter::Seconds(0)), Decision::RetryAfterMs(0));
        assert_eq!(ask(RetryAfter::Seconds(1)), Decision::RetryAfterMs(1000));
        assert_eq!(ask(RetryAfter::Seconds(3600)), Decision::RetryAfterMs(1000));
        let soon = RetryAfter::At {
            epoch_ms: 1_000_700,
        };
        assert_eq!(ask(soon), Decision::RetryAfterMs(700));
        let past = RetryAfter::At { epoch_ms: 5 };
        assert_eq!(ask(past), Decision::RetryAfterMs(0));
    }

    #[test]
    fn parses_both_retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(RetryAfter::Seconds(120)));
        assert_eq!(parse_retry_after(" 0 "), Some(RetryAfter::Seconds(0)));
        // RFC 9110's example date is 784111777 s after the epoch.
        let at = Some(RetryAfter::At {
            epoch_ms: 784_111_777_000,
        });
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"), at);
        assert_eq!(parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT"), at);
        assert_eq!(parse_retry_after("Sun Nov  6 08:49:37 1994"), at);
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(RetryAfter::At { epoch_ms: 0 })
        );
        assert_eq!(
            parse_retry_after("Sun, 29 Feb 2032 23:59:59 GMT"),
            Some(RetryAfter::At {
                epoch_ms: 1_961_711_999_000
            })
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "soon",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "06 Nov 1994",
            // A year that would overflow the arithmetic (a panic in a debug build).
            "Sun, 06 Nov 99999999999999999 08:49:37 GMT",
            "Sun Nov  6 08:49:37 10000",
        ] {
            assert_eq!(parse_retry_after(bad), None, "{bad:?}");
        }
    }
}
