//! Tyk's key lifetime rules: when a key is deleted after a write. Zero means "never".
//!
//! | force_global_session_lifetime | session_lifetime_respects_key_expiration | lifetime |
//! | --- | --- | --- |
//! | true | any | `global_session_lifetime` |
//! | false | true | the larger of `session_lifetime` and the time left until `expires` |
//! | false | false | `session_lifetime` |
//!
//! `session_lifetime` is the key's own when set, else the largest of the APIs it has rights to.

/// The gateway-wide settings (CP flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LifetimeRules {
    pub global_session_lifetime: i64,
    pub force_global_session_lifetime: bool,
    pub respects_key_expiration: bool,
    /// Lifetimes of the OAuth provider's codes, access and refresh tokens (`--oauth-*-ttl`).
    pub oauth: crate::oauth::OAuthLifetimes,
}

/// Seconds from `now` until the key is deleted, or `None` for never.
pub fn lifetime(
    rules: LifetimeRules,
    key_lifetime: i64,
    api_lifetime: i64,
    expires: i64,
    now: i64,
) -> Option<i64> {
    if rules.force_global_session_lifetime {
        return (rules.global_session_lifetime > 0).then_some(rules.global_session_lifetime);
    }
    let base = if key_lifetime > 0 {
        key_lifetime
    } else {
        api_lifetime.max(0)
    };
    if base == 0 {
        return None;
    }
    if rules.respects_key_expiration && expires > 0 {
        return Some(base.max(expires.saturating_sub(now)));
    }
    Some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_000_000;

    fn rules(force: bool, respects: bool) -> LifetimeRules {
        LifetimeRules {
            global_session_lifetime: 50,
            force_global_session_lifetime: force,
            respects_key_expiration: respects,
            ..LifetimeRules::default()
        }
    }

    #[test]
    fn the_four_rows_of_the_table() {
        // A key with lifetime 100 s that expires in 500 s.
        let expires = NOW + 500;
        assert_eq!(
            lifetime(rules(true, true), 100, 0, expires, NOW),
            Some(50),
            "force + respects: global"
        );
        assert_eq!(
            lifetime(rules(true, false), 100, 0, expires, NOW),
            Some(50),
            "force only: global"
        );
        assert_eq!(
            lifetime(rules(false, true), 100, 0, expires, NOW),
            Some(500),
            "respects: larger of lifetime and expires"
        );
        assert_eq!(
            lifetime(rules(false, true), 100, 0, NOW + 10, NOW),
            Some(100),
            "respects: lifetime when it is larger"
        );
        assert_eq!(
            lifetime(rules(false, false), 100, 0, expires, NOW),
            Some(100),
            "neither: session_lifetime"
        );
    }

    #[test]
    fn zero_means_never_and_the_key_overrides_the_api() {
        assert_eq!(lifetime(rules(false, false), 0, 0, NOW + 5, NOW), None);
        assert_eq!(
            lifetime(rules(false, true), 0, 0, NOW + 5, NOW),
            None,
            "expiry alone deletes nothing"
        );
        assert_eq!(
            lifetime(
                LifetimeRules {
                    force_global_session_lifetime: true,
                    ..LifetimeRules::default()
                },
                100,
                0,
                0,
                NOW
            ),
            None,
            "global 0 is never"
        );
        assert_eq!(
            lifetime(rules(false, false), 0, 30, 0, NOW),
            Some(30),
            "the API's lifetime when the key sets none"
        );
        assert_eq!(
            lifetime(rules(false, false), 10, 30, 0, NOW),
            Some(10),
            "the key's own wins"
        );
    }
}
