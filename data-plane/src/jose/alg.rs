//! The JWA `alg` values the gateway verifies and the families `jwt_signing_method` names.

/// The three families `jwt_signing_method` names (`hmac`, `rsa`, `ecdsa`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    Hmac,
    Rsa,
    Ecdsa,
}

impl Family {
    /// Tyk's `jwt_signing_method` values; `rsa` covers both RS* and PS*.
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "hmac" => Some(Family::Hmac),
            "rsa" => Some(Family::Rsa),
            "ecdsa" => Some(Family::Ecdsa),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Hmac => "hmac",
            Family::Rsa => "rsa",
            Family::Ecdsa => "ecdsa",
        }
    }
}

/// A JWS `alg` this gateway verifies. `none` and anything else is not one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
}

impl Alg {
    /// Exact, case-sensitive JWA names (RFC 7518 §3.1): `hs256` or `none` are not algs here.
    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    pub fn family(self) -> Family {
        match self {
            Alg::HS256 | Alg::HS384 | Alg::HS512 => Family::Hmac,
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                Family::Rsa
            }
            Alg::ES256 | Alg::ES384 => Family::Ecdsa,
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
