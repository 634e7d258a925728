//! Version skew rule between an edge and the control plane (Kong's rule: same major, edge minor
//! not newer than the control plane's).

/// This build's version, "MAJOR.MINOR.PATCH".
pub const BUILD_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `Ok` when an edge of `dp` version may talk to a control plane of `cp` version; otherwise a
/// message naming both versions.
pub fn check_skew(cp: &str, dp: &str) -> Result<(), String> {
    let (Some(c), Some(d)) = (major_minor(cp), major_minor(dp)) else {
        return Err(format!(
            "unparsable version: control plane {cp}, gateway {dp}"
        ));
    };
    if c.0 != d.0 {
        return Err(format!(
            "gateway version {dp} has another major version than control plane {cp}"
        ));
    }
    if d.1 > c.1 {
        return Err(format!(
            "gateway version {dp} is newer than control plane {cp}; upgrade the control plane first"
        ));
    }
    Ok(())
}

fn major_minor(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::check_skew;

    #[test]
    fn same_major_older_minor_is_accepted() {
        assert!(check_skew("1.4.0", "1.3.9").is_ok());
        assert!(check_skew("1.4.0", "1.4.7").is_ok());
    }

    #[test]
    fn newer_minor_or_other_major_is_refused_naming_both() {
        let e = check_skew("1.4.0", "1.5.0").unwrap_err();
        assert!(e.contains("1.4.0") && e.contains("1.5.0"), "{e}");
        assert!(check_skew("2.0.0", "1.9.0").is_err());
        assert!(check_skew("1.0.0", "garbage").is_err());
    }
}
