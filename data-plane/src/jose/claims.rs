//! Claim lookup and the time claims (`exp`, `iat`, `nbf`, RFC 7519 §4.1) with Tyk's skews.

use serde_json::{Map, Value};

/// `exp`, `iat`, `nbf` failures, each with Tyk's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("token has expired")]
    Expired,
    #[error("token used before issued")]
    UsedBeforeIssued,
    #[error("token is not valid yet")]
    NotYetValid,
}

impl TimeError {
    /// The body Tyk answers with (401).
    pub fn message(self) -> &'static str {
        match self {
            TimeError::Expired => "Key not authorized: token has expired",
            TimeError::UsedBeforeIssued => "Key not authorized: token used before issued",
            TimeError::NotYetValid => "Key not authorized: token is not valid yet",
        }
    }
}

/// Leeways in seconds (`jwt_*_validation_skew`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Skews {
    pub issued_at: u64,
    pub expires_at: u64,
    pub not_before: u64,
}

/// A claim by exact name first, then as a dot path into nested objects
/// (`realm_access.roles`), so a claim whose name itself holds a dot still wins.
pub fn claim<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut segments = path.split('.');
    let mut value = claims.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
}

/// What a time claim says: absent (or 0, which Tyk treats as absent), whole seconds
/// (fractions truncated, as Tyk's JWT library does), or not a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Time {
    Absent,
    At(i64),
    NotANumber,
}

fn time(claims: &Map<String, Value>, name: &str) -> Time {
    match claims.get(name) {
        None => Time::Absent,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(0) => Time::Absent,
            Some(i) => Time::At(i),
            // `as` saturates, and JSON has no NaN.
            None => match n.as_f64() {
                Some(0.0) => Time::Absent,
                Some(f) => Time::At(f.trunc() as i64),
                None => Time::NotANumber,
            },
        },
        Some(_) => Time::NotANumber,
    }
}

fn skew(s: u64) -> i64 {
    i64::try_from(s).unwrap_or(i64::MAX)
}

/// A token's `exp`, `iat` and `nbf`, read once (a verified token is remembered with them and
/// checked again at every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    exp: Time,
    iat: Time,
    nbf: Time,
}

impl Times {
    pub fn of(claims: &Map<String, Value>) -> Self {
        Self {
            exp: time(claims, "exp"),
            iat: time(claims, "iat"),
            nbf: time(claims, "nbf"),
        }
    }

    /// `exp` when it is a number (not 0).
    pub fn exp(&self) -> Option<i64> {
        match self.exp {
            Time::At(t) => Some(t),
            _ => None,
        }
    }

    /// `iat` when it is a number (not 0).
    pub fn iat(&self) -> Option<i64> {
        match self.iat {
            Time::At(t) => Some(t),
            _ => None,
        }
    }

    /// Tyk's rules (`now` in Unix seconds): expired when `now >= exp + skew`, used before
    /// issued when `iat > now + skew`, not valid yet when `nbf > now + skew`. A time claim that
    /// is not a number fails its own check (Tyk's library treats it so). When several fail, the
    /// error is the last in the order exp, iat, nbf, as Tyk reports the last failure.
    pub fn check(&self, now: i64, skews: Skews) -> Result<(), TimeError> {
        let mut failed = None;
        match self.exp {
            Time::At(exp) if now < exp.saturating_add(skew(skews.expires_at)) => {}
            Time::Absent => {}
            _ => failed = Some(TimeError::Expired),
        }
        match self.iat {
            Time::At(iat) if iat <= now.saturating_add(skew(skews.issued_at)) => {}
            Time::Absent => {}
            _ => failed = Some(TimeError::UsedBeforeIssued),
        }
        match self.nbf {
            Time::At(nbf) if nbf <= now.saturating_add(skew(skews.not_before)) => {}
            Time::Absent => {}
            _ => failed = Some(TimeError::NotYetValid),
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// [`Times::check`] of a token's claims.
pub fn check_times(claims: &Map<String, Value>, now: i64, skews: Skews) -> Result<(), TimeError> {
    Times::of(claims).check(now, skews)
}
