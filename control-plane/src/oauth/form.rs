//! The request's parameters, as the edge relayed them (form fields in order).

use super::errors::OAuthError;

/// Parameters by name. RFC 6749 3.1: a parameter sent twice makes the request invalid, so
/// no one can smuggle a second `redirect_uri` past a check of the first.
#[derive(Debug, Default)]
pub struct Form<'a> {
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Form<'a> {
    pub fn new(fields: &'a [(String, String)]) -> Result<Self, OAuthError> {
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(fields.len());
        for (name, value) in fields {
            // Postgres text cannot hold NUL: refused here rather than failing the lookup.
            if name.contains('\0') || value.contains('\0') {
                return Err(OAuthError::InvalidRequest("a parameter holds a NUL byte"));
            }
            if out.iter().any(|(n, _)| *n == name.as_str()) {
                return Err(OAuthError::InvalidRequest(
                    "a parameter was sent more than once",
                ));
            }
            out.push((name, value));
        }
        Ok(Self { fields: out })
    }

    /// The parameter, `None` when absent or empty (RFC 6749 3.1: empty means omitted).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .filter(|v| !v.is_empty())
    }

    pub fn require(&self, name: &str, missing: &'static str) -> Result<&'a str, OAuthError> {
        self.get(name).ok_or(OAuthError::InvalidRequest(missing))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn empty_is_absent_and_repeats_are_refused() {
        let f = fields(&[("a", "1"), ("b", "")]);
        let form = Form::new(&f).unwrap();
        assert_eq!(form.get("a"), Some("1"));
        assert_eq!(form.get("b"), None);
        assert_eq!(form.get("c"), None);
        let f = fields(&[("redirect_uri", "x"), ("redirect_uri", "y")]);
        assert!(matches!(Form::new(&f), Err(OAuthError::InvalidRequest(_))));
        let f = fields(&[("api_id", "a\0b")]);
        assert!(matches!(Form::new(&f), Err(OAuthError::InvalidRequest(_))));
    }
}
