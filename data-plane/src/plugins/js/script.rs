//! Middleware files: where they may be (inside `--middleware-path` only) and a small cache of
//! their text, read again when the file's modification time or size changes.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;
use std::time::SystemTime;

/// Largest middleware file read (Tyk scripts are a few KiB).
pub const MAX_SCRIPT_BYTES: u64 = 512 * 1024;
/// Files one engine thread keeps; beyond, the cache starts again empty.
const MAX_CACHED: usize = 32;
/// Longest `auth_check.path`.
pub const MAX_PATH_BYTES: usize = 255;

/// Why `auth_check.path` is refused before any file is looked at.
pub fn check_relative(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("is required with driver otto");
    }
    if path.len() > MAX_PATH_BYTES {
        return Err("must be at most 255 bytes");
    }
    if path.contains('\0') || path.contains('\\') {
        return Err("must be a relative path with forward slashes");
    }
    let relative = Path::new(path);
    if relative.is_absolute()
        || !relative
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err("must be relative to the gateway's --middleware-path, without `..`");
    }
    Ok(())
}

/// The file `relative` names inside `root`, links followed: it must still be inside `root`.
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf, String> {
    check_relative(relative).map_err(|why| format!("auth_check.path {why}"))?;
    let root = root
        .canonicalize()
        .map_err(|e| format!("--middleware-path {}: {e}", root.display()))?;
    let file = root
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("{relative}: {e}"))?;
    if !file.starts_with(&root) {
        return Err(format!("{relative} leads outside --middleware-path"));
    }
    Ok(file)
}

struct Cached {
    modified: Option<SystemTime>,
    len: u64,
    source: Rc<str>,
}

#[derive(Default)]
pub struct Scripts {
    files: HashMap<PathBuf, Cached>,
}

impl Scripts {
    /// The text of `path`, from the cache while the file is unchanged.
    pub fn load(&mut self, path: &Path) -> Result<Rc<str>, String> {
        let shown = path.file_name().map(Path::new).unwrap_or(path).display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("{shown} is not a file"));
        }
        if meta.len() > MAX_SCRIPT_BYTES {
            return Err(format!("{shown} is larger than {MAX_SCRIPT_BYTES} bytes"));
        }
        let modified = meta.modified().ok();
        if let Some(c) = self.files.get(path)
            && c.modified == modified
            && c.len == meta.len()
        {
            return Ok(c.source.clone());
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_SCRIPT_BYTES + 1).read_to_string(&mut text))
            .map_err(|e| format!("{shown}: {e}"))?;
        if text.len() as u64 > MAX_SCRIPT_BYTES {
            return Err(format!("{shown} is larger than {MAX_SCRIPT_BYTES} bytes"));
        }
        if self.files.len() >= MAX_CACHED {
            self.files.clear();
        }
        let source: Rc<str> = text.into();
        self.files.insert(
            path.to_owned(),
            Cached {
                modified,
                len: meta.len(),
                source: source.clone(),
            },
        );
        Ok(source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_accepted() {
        assert!(check_relative("auth.js").is_ok());
        assert!(check_relative("./mw/auth.js").is_ok());
        for bad in [
            "",
            "/etc/passwd",
            "../auth.js",
            "mw/../../auth.js",
            "mw\\..\\auth.js",
            "a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?} accepted");
        }
        assert!(check_relative(&"a".repeat(256)).is_err());
    }

    #[test]
    fn a_link_out_of_the_middleware_path_is_refused() {
        let dir = std::env::temp_dir().join(format!("pc-js-{}", std::process::id()));
        let root = dir.join("root");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.join("secret.js"), "var x = 1;").unwrap();
        std::fs::write(root.join("ok.js"), "var y = 1;").unwrap();
        let _ = std::fs::remove_file(root.join("out.js"));
        std::os::unix::fs::symlink(dir.join("secret.js"), root.join("out.js")).unwrap();
        assert!(resolve(&root, "ok.js").is_ok());
        let err = resolve(&root, "out.js").unwrap_err();
        assert!(err.contains("outside"), "{err}");
        assert!(resolve(&root, "missing.js").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_changed_file_is_read_again() {
        let dir = std::env::temp_dir().join(format!("pc-js-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.js");
        std::fs::write(&file, "var a = 1;").unwrap();
        let mut scripts = Scripts::default();
        assert_eq!(&*scripts.load(&file).unwrap(), "var a = 1;");
        std::fs::write(&file, "var a = 22;").unwrap();
        assert_eq!(&*scripts.load(&file).unwrap(), "var a = 22;");
        std::fs::write(&file, "x".repeat(MAX_SCRIPT_BYTES as usize + 1)).unwrap();
        assert!(scripts.load(&file).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
