//! A configuration folder on disk (docs/config.md): `apis/`, `policies/`, `certificates/` and
//! `oauth_clients/`, one resource per JSON or YAML file. Reading it names the file of every
//! problem; writing it (`config dump`) puts each resource in `<kind>/<id>.json`.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The folders of a configuration folder, by the kind their files hold.
pub const KINDS: &[&str] = &["apis", "policies", "certificates", "oauth_clients"];

/// Largest file read (a definition with a big OpenAPI document inlined).
const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;
/// Most files of one kind.
const MAX_FILES: usize = 10_000;
/// Most bytes of all files together: what the control plane takes in one apply.
const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// Longest file name written; longer ids get a shortened name with a hash (most file systems
/// stop at 255 bytes).
const MAX_NAME_BYTES: usize = 160;

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
/// the top of `dir` are ignored (a README); a folder other than the kinds is refused, so
/// a typo (`policy/`) does not silently apply nothing. Only the kinds whose folder exists are
/// sent: a kind without its folder is left as it is in the store, even with `--prune`.
pub fn read(dir: &Path) -> Result<Value, FolderError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, e))?;
    let mut budget = MAX_TOTAL_BYTES;
    let mut body = serde_json::Map::new();
    for entry in entries {
        let entry = entry.map_err(|e| file_error(dir, e))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| file_error(&path, e))?;
        if hidden(&entry.file_name()) || !(file_type.is_dir() || file_type.is_symlink()) {
            continue;
        }
        if file_type.is_symlink() {
            return Err(symlink_refused(&path));
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !KINDS.contains(&name.as_str()) {
            return Err(file_error(
                &path,
                format!("unknown folder; use {}", KINDS.join("/, ") + "/"),
            ));
        }
        let items = read_kind(dir, &path, &mut budget)?;
        body.insert(name, Value::Array(items));
    }
    Ok(Value::Object(body))
}

/// A link could make a folder from a repository read any file the user can (and send it to the
/// control plane), so links are refused rather than followed.
fn symlink_refused(path: &Path) -> FolderError {
    file_error(
        path,
        "is a symbolic link; a configuration folder holds plain files and folders only",
    )
}

/// Reads at most [`MAX_FILE_BYTES`] and what is left of `budget`, whatever the file's size
/// claimed when it was listed (it may grow, or be a device).
fn read_bounded(path: &Path, budget: &mut u64) -> Result<String, FolderError> {
    use std::os::unix::fs::OpenOptionsExt;
    // The listing checked the file; a link or a FIFO put in its place since is refused at the
    // open itself (no follow, no blocking open) and by what the opened handle is.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => symlink_refused(path),
            _ => file_error(path, e),
        })?;
    let meta = file.metadata().map_err(|e| file_error(path, e))?;
    if !meta.is_file() {
        return Err(file_error(path, "must be a plain file"));
    }
    let limit = MAX_FILE_BYTES.min(*budget);
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| file_error(path, e))?;
    let read = text.len() as u64;
    if read > limit {
        return Err(if limit == MAX_FILE_BYTES {
            file_error(path, format!("larger than {MAX_FILE_BYTES} bytes"))
        } else {
            file_error(
                path,
                format!("the folder's files hold more than {MAX_TOTAL_BYTES} bytes together"),
            )
        });
    }
    *budget -= read;
    Ok(text)
}

fn read_kind(root: &Path, dir: &Path, budget: &mut u64) -> Result<Vec<Value>, FolderError> {
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
        let meta = std::fs::symlink_metadata(&path).map_err(|e| file_error(&path, e))?;
        if meta.file_type().is_symlink() {
            return Err(symlink_refused(&path));
        }
        if !meta.is_file() {
            return Err(file_error(&path, "must be a plain file"));
        }
        let text = read_bounded(&path, budget)?;
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

/// A file name for `id`: ids may hold characters a file system or a shell treats specially,
/// and may be longer than a file name can be. `taken` holds the names given so far, in lower
/// case: on a case-insensitive file system `Gold` and `gold` would be one file, so the second
/// gets the hashed form as well.
pub fn file_name(id: &str, taken: &mut BTreeSet<String>) -> String {
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
    if out.len() > MAX_NAME_BYTES || taken.contains(&format!("{}.json", out.to_lowercase())) {
        // Cut at a whole escape, then the hash keeps distinct ids apart.
        let mut cut = out.len().min(MAX_NAME_BYTES - 30);
        while out[..cut].rfind('%').is_some_and(|i| i + 3 > cut) {
            cut -= 1;
        }
        out.truncate(cut);
        let digest = Sha256::digest(id.as_bytes());
        out.push('~');
        out.push_str(&hex::encode(&digest[..8]));
    }
    out.push_str(".json");
    taken.insert(out.to_lowercase());
    out
}

/// Writes the answer of `GET /portcullis/config` into `dir`, which must be empty or absent
/// (unless `force`: then its kind folders are replaced whole, and
/// other files in `dir` stay). Everything is first written into a hidden staging folder inside
/// `dir`, so a failure leaves the previous folders as they were. Folders are made `0700` and
/// files `0600`: the files hold sealed secrets. Returns how many files were written.
pub fn write(dir: &Path, dump: &Value, force: bool) -> Result<usize, FolderError> {
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.file_type().is_symlink() => return Err(symlink_refused(dir)),
        Ok(_) => {
            let mut entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, e))?;
            if entries.next().is_some() && !force {
                return Err(file_error(
                    dir,
                    "is not empty; dump into a new folder or pass --force to replace its apis/, policies/, certificates/ and oauth_clients/",
                ));
            }
        }
        Err(_) => private_dir(dir)?,
    }
    // A fresh name, created here (not reused): nobody else can have prepared it.
    let staging = dir.join(format!(".portcullis-dump-{:016x}", rand::random::<u64>()));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| file_error(&staging, e))?;
    }
    let result = stage(&staging, dump).and_then(|written| {
        swap_in(dir, &staging)?;
        Ok(written)
    });
    let _ = std::fs::remove_dir_all(&staging);
    result
}

fn private_dir(path: &Path) -> Result<(), FolderError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| file_error(path, e))
}

/// Writes every kind folder under `staging`.
fn stage(staging: &Path, dump: &Value) -> Result<usize, FolderError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut written = 0;
    for (kind, id_field) in [
        ("apis", "api_id"),
        ("policies", "id"),
        ("certificates", "id"),
        ("oauth_clients", "client_id"),
    ] {
        let folder = staging.join(kind);
        private_dir(&folder)?;
        let mut taken = BTreeSet::new();
        for item in dump[kind].as_array().into_iter().flatten() {
            let Some(id) = item.get(id_field).and_then(Value::as_str) else {
                // Skipping it would make the next `apply --prune` delete it.
                return Err(file_error(
                    &folder,
                    format!("the control plane answered an item without a string {id_field}"),
                ));
            };
            let path = folder.join(file_name(id, &mut taken));
            let mut text = serde_json::to_string_pretty(item).map_err(|e| file_error(&path, e))?;
            text.push('\n');
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
                .map_err(|e| file_error(&path, e))?;
            written += 1;
        }
    }
    Ok(written)
}

/// Moves the staged kind folders into `dir`; the folders they replace are moved into the
/// staging folder, which the caller removes. Every link is checked before anything moves, and
/// a kind whose new folder cannot be moved in gets its old one back.
fn swap_in(dir: &Path, staging: &Path) -> Result<(), FolderError> {
    for kind in KINDS {
        let target = dir.join(kind);
        if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(symlink_refused(&target));
        }
    }
    for kind in KINDS {
        let target = dir.join(kind);
        let old = staging.join(format!("old-{kind}"));
        let had_old = target.exists();
        if had_old {
            std::fs::rename(&target, &old).map_err(|e| file_error(&target, e))?;
        }
        if let Err(e) = std::fs::rename(staging.join(kind), &target) {
            if had_old {
                let _ = std::fs::rename(&old, &target);
            }
            return Err(file_error(&target, e));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_names_keep_ids_apart_and_inside_the_folder() {
        let mut taken = BTreeSet::new();
        let mut name = |id: &str| file_name(id, &mut taken);
        assert_eq!(name("gold"), "gold.json");
        assert_eq!(name("a b/../c"), "a%20b%2F..%2Fc.json");
        assert_eq!(name(".."), "%2E..json");
        assert_ne!(name("a:b"), name("a_b"));
        // Apart on a case-insensitive file system too.
        let upper = name("GOLD");
        assert!(
            upper.starts_with("GOLD~") && upper.ends_with(".json"),
            "{upper}"
        );
        // A long id fits a file name, and two long ids with one prefix stay apart.
        let long = "/".repeat(300);
        let (a, b) = (name(&format!("{long}a")), name(&format!("{long}b")));
        assert!(
            a.len() <= MAX_NAME_BYTES && b.len() <= MAX_NAME_BYTES,
            "{a}"
        );
        assert_ne!(a, b);
        assert!(!a.contains('/'), "{a}");
    }

    #[test]
    fn a_dump_is_private_replaces_kind_folders_whole_and_refuses_links() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("portcullis-dump-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let dump = json!({"apis": [{"api_id": "a"}, {"api_id": "A"}], "policies": [{"id": "p"}], "certificates": []});
        assert_eq!(write(&dir, &dump, false).unwrap(), 3);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("apis")), 0o700);
        assert_eq!(mode(&dir.join("apis/a.json")), 0o600);
        assert!(
            write(&dir, &dump, false).is_err(),
            "not empty without --force"
        );
        // --force: a stale file goes, a file beside the kind folders stays.
        std::fs::write(dir.join("policies/stale.json"), "{}").unwrap();
        std::fs::write(dir.join("README.md"), "notes").unwrap();
        let fewer = json!({"apis": [], "policies": [{"id": "p"}], "certificates": []});
        assert_eq!(write(&dir, &fewer, true).unwrap(), 1);
        assert!(!dir.join("policies/stale.json").exists());
        assert!(!dir.join("apis/a.json").exists());
        assert!(dir.join("README.md").exists());
        // An item the dump cannot name fails the dump and leaves the folders as they were.
        let bad = json!({"apis": [{"name": "no id"}], "policies": [], "certificates": []});
        assert!(write(&dir, &bad, true).is_err());
        assert!(dir.join("policies/p.json").exists());
        // A kind folder that is a link is neither followed nor replaced.
        let elsewhere = dir.with_extension("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::remove_dir_all(dir.join("certificates")).unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("certificates")).unwrap();
        let e = write(&dir, &fewer, true).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::remove_dir_all(&elsewhere).unwrap();
    }

    #[test]
    fn yaml_aliases_cannot_expand_a_small_file_into_a_huge_value() {
        let dir = std::env::temp_dir().join(format!("portcullis-laughs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        doc.push_str("id: p\n");
        std::fs::write(dir.join("policies/laughs.yaml"), doc).unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("laughs.yaml"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
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
        assert_eq!(body.get("certificates"), None, "no folder: not sent");

        std::fs::write(dir.join("policies/q.yaml"), "id: [unclosed\n").unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("q.yaml") && e.contains("YAML"), "{e}");
        std::fs::remove_file(dir.join("policies/q.yaml")).unwrap();
        std::fs::create_dir_all(dir.join("policy")).unwrap();
        let e = read(&dir).unwrap_err().to_string();
        assert!(e.contains("unknown folder"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// What the listing saw may be swapped before the open: a link or a FIFO put in a file's
    /// place is refused by the open itself, without following it or blocking on it.
    #[test]
    fn a_file_swapped_for_a_link_or_a_fifo_is_refused_at_the_open() {
        let dir = std::env::temp_dir().join(format!("portcullis-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret.txt");
        std::fs::write(&secret, "not for the control plane").unwrap();
        let link = dir.join("a.json");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let mut budget = MAX_TOTAL_BYTES;
        let e = read_bounded(&link, &mut budget).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let fifo = dir.join("b.json");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let e = read_bounded(&fifo, &mut budget).unwrap_err().to_string();
        assert!(e.contains("plain file"), "{e}");
        assert_eq!(budget, MAX_TOTAL_BYTES, "nothing was read");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
