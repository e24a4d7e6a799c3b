//! Files only the server's own user may read: the SQLite database (signing
//! keys, secrets, TOTP seeds, password hashes), its `-wal`/`-shm` files and
//! the TLS private key.
//!
//! New SQLite files are created `0600` (SQLite gives the `-wal` and `-shm`
//! files the database's mode); an existing file that the group or others
//! may open is refused at start-up with a message that names it and the fix.

use std::path::{Path, PathBuf};

/// The file behind a `sqlite:` URL, or `None` for an in-memory database
/// (or a URL that is no SQLite URL).
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    let text = path.to_string_lossy();
    if text.is_empty() || text == ":memory:" || text.starts_with("file:sqlx-in-memory") || url.contains("mode=memory") {
        return None;
    }
    Some(path.to_path_buf())
}

/// The database file and the `-wal`/`-shm` files SQLite keeps beside it.
pub fn sqlite_files(database: &Path) -> [PathBuf; 3] {
    let with_suffix = |suffix: &str| {
        let mut name = database.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    [database.to_path_buf(), with_suffix("-wal"), with_suffix("-shm")]
}

/// Creates `path` empty with mode `0600` if it does not exist yet (so that
/// SQLite, which would create it `0644`, opens it instead).
pub fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(error),
    }
}

/// `Err` with a message naming `path` and the fix when the group or others
/// may read (or write) the existing file `path`; `Ok` when it is private or
/// missing. `what` says what the file is ("database", "TLS key").
pub fn check_private(path: &Path, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(metadata) = std::fs::metadata(path) else { return Ok(()) };
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "the {what} {} is open to other users (mode {mode:04o}); it holds secrets, so tessera refuses \
                 to use it: run `chmod 600 {}` (and make the server's user its owner)",
                path.display(),
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}

/// Creates the SQLite database of `url` privately if missing, then checks
/// it and its `-wal`/`-shm` files (see [`check_private`]). Nothing to do
/// for other databases.
pub fn prepare_sqlite(url: &str, what: &str) -> Result<(), String> {
    let Some(path) = sqlite_file(url) else { return Ok(()) };
    create_private(&path).map_err(|e| format!("creating the {what} {}: {e}", path.display()))?;
    for file in sqlite_files(&path) {
        check_private(&file, what)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_file("sqlite://tessera.db"), Some(PathBuf::from("tessera.db")));
        assert_eq!(sqlite_file("sqlite:///var/lib/t.db?mode=rwc"), Some(PathBuf::from("/var/lib/t.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
        assert_eq!(
            sqlite_files(Path::new("/x/t.db")),
            [PathBuf::from("/x/t.db"), PathBuf::from("/x/t.db-wal"), PathBuf::from("/x/t.db-shm")]
        );
    }

    #[cfg(unix)]
    #[test]
    fn creates_private_files_and_refuses_open_ones() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        prepare_sqlite(&format!("sqlite://{}", path.display()), "database").unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = prepare_sqlite(&format!("sqlite://{}", path.display()), "database").unwrap_err();
        assert!(error.contains(&format!("chmod 600 {}", path.display())) && error.contains("0644"), "{error}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let wal = dir.path().join("t.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = prepare_sqlite(&format!("sqlite://{}", path.display()), "database").unwrap_err();
        assert!(error.contains("t.db-wal"), "{error}");
    }
}
