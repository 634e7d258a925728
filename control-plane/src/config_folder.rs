//! A configuration folder on disk (docs/config.md): `apis/`, `policies/` and `certificates/`,
//! one resource per JSON or YAML file. Reading it names the file of every problem; writing it
//! (`config dump`) puts each resource in `<kind>/<id>.json`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// The folders of a configuration folder, by the kind their files hold.
pub const KINDS: &[&str] = &["apis", "policies", "certificates"];

/// Largest file read (a definition with a big OpenAPI document inlined).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most files of one kind.
const MAX_FILES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> FolderError {
    FolderError::File {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

fn hidden(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// Reads `dir` into the body of `POST /portcullis/config` (without `dry_run`/`prune`). Files at
/// the top of `dir` are ignored (a README); a folder other than the three kinds is refused, so
/// a typo (`policy/`) does not silently apply nothing.
pub fn read(dir: &Path) -> Result<Value, FolderError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, e))?;
    let mut body = serde_json::Map::new();
    for kind in KINDS {
        body.insert((*kind).to_owned(), Value::Array(Vec::new()));
    }
    for entry in entries {
        let entry = entry.map_err(|e| file_error(dir, e))?;
        let path = entry.path();
        if hidden(&entry.file_name()) || !path.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !KINDS.contains(&name.as_str()) {
            return Err(file_error(
                &path,
                format!("unknown folder; use {}", KINDS.join("/, ") + "/"),
            ));
        }
        let items = read_kind(dir, &path)?;
        body.insert(name, Value::Array(items));
    }
    Ok(Value::Object(body))
}

fn read_kind(root: &Path, dir: &Path) -> Result<Vec<Value>, FolderError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| file_error(dir, e))? {
        let entry = entry.map_err(|e| file_error(dir, e))?;
        if hidden(&entry.file_name()) {
            continue;
        }
        files.push(entry.path());
        if files.len() > MAX_FILES {
            return Err(file_error(dir, format!("more than {MAX_FILES} files")));
        }
    }
    files.sort();
    let mut items = Vec::with_capacity(files.len());
    for path in files {
        let shown = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .display()
            .to_string();
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase());
        let yaml = match ext.as_deref() {
            Some("json") => false,
            Some("yaml" | "yml") => true,
            _ => return Err(file_error(&path, "expected a .json, .yaml or .yml file")),
        };
        let meta = std::fs::metadata(&path).map_err(|e| file_error(&path, e))?;
        if !meta.is_file() || meta.len() > MAX_FILE_BYTES {
            return Err(file_error(
                &path,
                format!("must be a file of at most {MAX_FILE_BYTES} bytes"),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| file_error(&path, e))?;
        let body: Value = if yaml {
            yaml_serde::from_str(&text).map_err(|e| file_error(&path, format!("YAML: {e}")))?
        } else {
            serde_json::from_str(&text).map_err(|e| file_error(&path, format!("JSON: {e}")))?
        };
        if !body.is_object() {
            return Err(file_error(&path, "must hold one object"));
        }
        items.push(json!({"source": shown, "body": body}));
    }
    Ok(items)
}

/// A file name for `id`: ids may hold characters a file system or a shell treats specially.
pub fn file_name(id: &str) -> String {
    let mut out = String::with_capacity(id.len() + 5);
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.starts_with('.') {
        out.replace_range(..1, "%2E");
    }
    out.push_str(".json");
    out
}

/// Writes the answer of `GET /portcullis/config` into `dir`, which must be empty or absent
/// (unless `force`: then the kind folders' JSON and YAML files are replaced). Returns how many
/// files were written.
pub fn write(dir: &Path, dump: &Value, force: bool) -> Result<usize, FolderError> {
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, e))?;
        if entries.next().is_some() && !force {
            return Err(file_error(
                dir,
                "is not empty; dump into a new folder or pass --force to replace its apis/, policies/ and certificates/",
            ));
        }
    }
    let mut written = 0;
    for (kind, id_field) in [
        ("apis", "api_id"),
        ("policies", "id"),
        ("certificates", "id"),
    ] {
        let folder = dir.join(kind);
        std::fs::create_dir_all(&folder).map_err(|e| file_error(&folder, e))?;
        if force {
            for entry in std::fs::read_dir(&folder).map_err(|e| file_error(&folder, e))? {
                let path = entry.map_err(|e| file_error(&folder, e))?.path();
                let ext = path
                    .extension()
                    .map(|e| e.to_string_lossy().to_ascii_lowercase());
                if matches!(ext.as_deref(), Some("json" | "yaml" | "yml")) {
                    std::fs::remove_file(&path).map_err(|e| file_error(&path, e))?;
                }
            }
        }
        for item in dump[kind].as_array().into_iter().flatten() {
            let Some(id) = item.get(id_field).and_then(Value::as_str) else {
                continue;
            };
            let path = folder.join(file_name(id));
            let mut text = serde_json::to_string_pretty(item).map_err(|e| file_error(&path, e))?;
            text.push('\n');
            std::fs::write(&path, text).map_err(|e| file_error(&path, e))?;
            written += 1;
        }
    }
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_ids_apart_and_inside_the_folder() {
        assert_eq!(file_name("gold"), "gold.json");
        assert_eq!(file_name("a b/../c"), "a%20b%2F..%2Fc.json");
        assert_eq!(file_name(".."), "%2E..json");
        assert_ne!(file_name("a:b"), file_name("a_b"));
    }

    #[test]
    fn a_folder_reads_json_and_yaml_and_names_bad_files() {
        let dir = std::env::temp_dir().join(format!("portcullis-cfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("apis")).unwrap();
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        std::fs::write(dir.join("README.md"), "notes").unwrap();
        std::fs::write(dir.join("apis/a.json"), r#"{"api_id": "a"}"#).unwrap();
        std::fs::write(dir.join("policies/p.yaml"), "id: p\nrate: 5\nper: 1\n").unwrap();
        let body = read(&dir).unwrap();
        assert_eq!(body["apis"][0]["source"], "apis/a.json");
        assert_eq!(body["policies"][0]["body"]["rate"], 5);
        assert_eq!(body["certificates"], json!([]));

        std::fs::write(dir.join("policies/q.yaml"), "id: [unclosed\n").unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("q.yaml") && e.contains("YAML"), "{e}");
        std::fs::remove_file(dir.join("policies/q.yaml")).unwrap();
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("unknown folder"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
