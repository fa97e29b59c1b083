//! Retry timing: exponential backoff with jitter, `Retry-After` and gRPC `RetryInfo`.
//!
//! The schedule follows the OpenTelemetry Collector's exporter helper: the
//! interval doubles ([`MULTIPLIER`]; the Collector uses 1.5, our config
//! documents doubling) from `initial_interval` up to `max_interval`,
//! each delay is drawn uniformly from ±[`RANDOMIZATION`] around the interval, a
//! server-requested delay wins when it is longer, and the request is given up
//! when the next attempt would start after `max_elapsed_time` (0 = never).

use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use prost::Message;

/// Growth factor of the backoff interval between attempts.
pub const MULTIPLIER: f64 = 2.0;
/// Relative jitter: a delay lies in `[interval × (1 − r), interval × (1 + r)]`.
pub const RANDOMIZATION: f64 = 0.5;
/// The longest wait a destination's `Retry-After` or `RetryInfo` is followed for; a longer
/// one (`Retry-After: 18446744073709551615` from a broken proxy) waits this long. Taken as
/// asked, it overflowed the clock and panicked the core.
pub const MAX_SERVER_DELAY: Duration = Duration::from_secs(3600);

/// Retry settings of one exporter (from `shardtel_config::RetryConfig`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retry retryable failures at all.
    pub enabled: bool,
    /// First backoff interval.
    pub initial_interval: Duration,
    /// Cap of the backoff interval (not of a server-requested delay).
    pub max_interval: Duration,
    /// Give up when the next attempt would start later than this after the
    /// first one; zero retries forever.
    pub max_elapsed_time: Duration,
}

/// Backoff state of one request.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: RetryPolicy,
    started: Instant,
    interval: Duration,
}

impl Backoff {
    /// Starts the schedule for a request first attempted at `started`.
    pub(crate) fn new(policy: RetryPolicy, started: Instant) -> Self {
        Self {
            policy,
            started,
            interval: policy.initial_interval,
        }
    }

    /// The delay before the next attempt, or `None` to give up.
    ///
    /// `unit` is a uniform random number in `[0, 1)` (a parameter so the
    /// schedule is testable); `server_delay` is what the server asked for.
    pub(crate) fn next_delay(
        &mut self,
        now: Instant,
        server_delay: Option<Duration>,
        unit: f64,
    ) -> Option<Duration> {
        let mut delay = jittered(self.interval, unit);
        if let Some(asked) = server_delay {
            delay = delay.max(asked.min(MAX_SERVER_DELAY));
        }
        self.interval = grow(self.interval, self.policy.max_interval);
        let max_elapsed = self.policy.max_elapsed_time;
        if !max_elapsed.is_zero()
            && now
                .checked_add(delay)
                .is_none_or(|at| at.saturating_duration_since(self.started) > max_elapsed)
        {
            return None;
        }
        Some(delay)
    }
}

/// `interval` spread by ±[`RANDOMIZATION`], `unit` in `[0, 1)`.
pub(crate) fn jittered(interval: Duration, unit: f64) -> Duration {
    let factor = 1.0 - RANDOMIZATION + 2.0 * RANDOMIZATION * unit.clamp(0.0, 1.0);
    interval.mul_f64(factor)
}

/// The interval after `interval`, capped at `max`.
pub(crate) fn grow(interval: Duration, max: Duration) -> Duration {
    let next = interval.mul_f64(MULTIPLIER);
    if next > max {
        max.max(interval.min(max))
    } else {
        next
    }
}

/// Parses an HTTP `Retry-After` value: delay seconds or an HTTP date.
pub(crate) fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(text).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// `google.rpc.Status`, as carried in `grpc-status-details-bin` and OTLP/HTTP error bodies.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct RpcStatus {
    /// gRPC code.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// `google.protobuf.Any` details.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<ProtoAny>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub(crate) struct ProtoAny {
    /// Type URL, e.g. `type.googleapis.com/google.rpc.RetryInfo`.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// Encoded message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The `RetryInfo.retry_delay` inside a `google.rpc.Status`, if any.
pub(crate) fn retry_info_delay(status: &RpcStatus) -> Option<Duration> {
    let any = status
        .details
        .iter()
        .find(|d| d.type_url == RETRY_INFO_TYPE)?;
    let delay = RetryInfo::decode(any.value.as_slice()).ok()?.retry_delay?;
    let seconds = u64::try_from(delay.seconds).ok()?;
    let nanos = u32::try_from(delay.nanos).ok()?.min(999_999_999);
    Some(Duration::new(seconds, nanos))
}

/// Decodes the base64 `grpc-status-details-bin` header (padding optional).
pub(crate) fn decode_status_details(value: &[u8]) -> Option<RpcStatus> {
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let raw = engine.decode(value).ok()?;
    RpcStatus::decode(raw.as_slice()).ok()
}

/// Undoes the percent-encoding of a `grpc-message` header.
pub(crate) fn decode_grpc_message(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' && i + 2 < value.len() {
            let hex = std::str::from_utf8(&value[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(byte) = hex {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A uniform random number in `[0, 1)` from this core's generator.
pub(crate) fn random_unit() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_elapsed: u64) -> RetryPolicy {
        RetryPolicy {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(max_elapsed),
        }
    }

    #[test]
    fn interval_grows_by_multiplier_up_to_max() {
        let start = Instant::now();
        let mut backoff = Backoff::new(policy(0), start);
        // unit 0.5 is the middle of the jitter range: exactly the interval.
        let delays: Vec<f64> = (0..8)
            .map(|_| backoff.next_delay(start, None, 0.5).unwrap().as_secs_f64())
            .collect();
        let expected = [5.0, 10.0, 20.0, 30.0, 30.0, 30.0, 30.0, 30.0];
        for (got, want) in delays.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{delays:?}");
        }
    }

    #[test]
    fn jitter_spans_plus_minus_half() {
        let interval = Duration::from_secs(10);
        assert_eq!(jittered(interval, 0.0), Duration::from_secs(5));
        assert_eq!(jittered(interval, 0.5), Duration::from_secs(10));
        assert!(jittered(interval, 0.999_999) < Duration::from_secs(15));
        assert!(jittered(interval, 0.999_999) > Duration::from_millis(14_999));
    }

    #[test]
    fn server_delay_wins_when_longer() {
        let start = Instant::now();
        let mut backoff = Backoff::new(policy(0), start);
        let asked = Duration::from_secs(60);
        assert_eq!(backoff.next_delay(start, Some(asked), 0.5), Some(asked));
        let short = Duration::from_millis(1);
        assert_eq!(
            backoff.next_delay(start, Some(short), 0.5),
            Some(Duration::from_secs(10))
        );
    }

    /// A destination asking for an absurd wait (a broken proxy, a hostile server) neither
    /// overflows the clock (which panicked the core) nor parks the batch for years.
    #[test]
    fn a_huge_server_delay_is_capped() {
        let start = Instant::now();
        let huge = parse_retry_after(b"18446744073709551615", SystemTime::now()).unwrap();
        for max_elapsed in [0, 20, 86_400] {
            let mut backoff = Backoff::new(policy(max_elapsed), start);
            let delay = backoff.next_delay(start, Some(huge), 0.5);
            match max_elapsed {
                20 => assert_eq!(delay, None, "past max_elapsed_time: given up"),
                _ => assert_eq!(delay, Some(MAX_SERVER_DELAY)),
            }
        }
        let status = RpcStatus {
            code: 14,
            message: String::new(),
            details: vec![prost_types_any(i64::MAX)],
        };
        let asked = retry_info_delay(&status).unwrap();
        let mut backoff = Backoff::new(policy(0), start);
        assert_eq!(
            backoff.next_delay(start, Some(asked), 0.5),
            Some(MAX_SERVER_DELAY)
        );
    }

    /// A `RetryInfo` detail asking for `seconds`.
    fn prost_types_any(seconds: i64) -> ProtoAny {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration { seconds, nanos: 0 }),
        };
        ProtoAny {
            type_url: RETRY_INFO_TYPE.into(),
            value: info.encode_to_vec(),
        }
    }

    #[test]
    fn gives_up_after_max_elapsed_time() {
        let start = Instant::now();
        let mut backoff = Backoff::new(policy(20), start);
        assert!(backoff.next_delay(start, None, 0.5).is_some()); // 5 s
        let later = start + Duration::from_secs(10);
        assert!(backoff.next_delay(later, None, 0.5).is_some()); // 10 + 10
        let later = start + Duration::from_secs(18);
        assert_eq!(backoff.next_delay(later, None, 0.5), None); // 18 + 20 > 20
                                                                // A server delay past the deadline also gives up.
        let mut backoff = Backoff::new(policy(20), start);
        assert_eq!(
            backoff.next_delay(start, Some(Duration::from_secs(21)), 0.5),
            None
        );
    }

    #[test]
    fn zero_max_elapsed_retries_forever() {
        let start = Instant::now();
        let mut backoff = Backoff::new(policy(0), start);
        let far = start + Duration::from_secs(86_400 * 365);
        assert!(backoff.next_delay(far, None, 0.5).is_some());
    }

    #[test]
    fn max_below_initial_caps_immediately() {
        assert_eq!(
            grow(Duration::from_secs(10), Duration::from_secs(3)),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after(b" 3 ", now), Some(Duration::from_secs(3)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(date.as_bytes(), now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(past.as_bytes(), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(b"soon", now), None);
        assert_eq!(parse_retry_after(b"-1", now), None);
    }

    #[test]
    fn retry_info_from_status_details() {
        let info = RetryInfo {
            retry_delay: Some(ProtoDuration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let status = RpcStatus {
            code: 8,
            message: "slow down".into(),
            details: vec![
                ProtoAny {
                    type_url: "type.googleapis.com/google.rpc.DebugInfo".into(),
                    value: vec![1, 2, 3],
                },
                ProtoAny {
                    type_url: RETRY_INFO_TYPE.into(),
                    value: info.encode_to_vec(),
                },
            ],
        };
        let header =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(status.encode_to_vec());
        let decoded = decode_status_details(header.as_bytes()).unwrap();
        assert_eq!(decoded.message, "slow down");
        assert_eq!(
            retry_info_delay(&decoded),
            Some(Duration::from_millis(2500))
        );
        let padded = base64::engine::general_purpose::STANDARD.encode(status.encode_to_vec());
        assert!(decode_status_details(padded.as_bytes()).is_some());
        let without = RpcStatus {
            details: vec![],
            ..decoded
        };
        assert_eq!(retry_info_delay(&without), None);
        assert!(decode_status_details(b"!!!").is_none());
    }

    #[test]
    fn grpc_message_percent_decoding() {
        assert_eq!(decode_grpc_message(b"bad%20span%3A%20x"), "bad span: x");
        assert_eq!(decode_grpc_message(b"100%"), "100%");
        assert_eq!(decode_grpc_message(b"%zz"), "%zz");
        assert_eq!(decode_grpc_message(b"caf%C3%A9"), "café");
    }
}
