//! The state directory: the ACME account and the certificate served, on disk.
//!
//! Owns the layout of `tls.acme.state_dir` (`account.json`, `cert.pem`, `key.pem`,
//! `domains`: the names the CA issued `cert.pem` for) and
//! how files get there: the directory is 0700, every file 0600, and each file is written
//! to a temporary name and renamed, so a reader (the TLS reload, a restart) sees the
//! old file or the new one, never half of one. It never logs what a file holds.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use instant_acme::AccountCredentials;

use super::AcmeError;
use crate::config::AcmeSettings;
use crate::net::tls::CertPaths;

/// Only the owner may read or list the directory: it holds private keys.
const DIR_MODE: u32 = 0o700;
/// Only the owner may read a file.
const FILE_MODE: u32 = 0o600;

/// `tls.acme.state_dir` and the files in it.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
    /// `cert.pem` and `key.pem`, as the settings name them for the TLS listeners.
    certificate: CertPaths,
}

impl StateDir {
    /// Creates the directory (and its parents) if needed and restricts it to the owner.
    pub fn open(settings: &AcmeSettings) -> Result<Self, AcmeError> {
        let dir = &settings.state_dir;
        let io_error = |error| AcmeError::Io {
            path: dir.to_path_buf(),
            error,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
            .map_err(io_error)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_error)?;
        let (cert, key) = settings.cert_files();
        Ok(Self {
            dir: dir.to_path_buf(),
            certificate: CertPaths { cert, key },
        })
    }

    /// The certificate chain and key the TLS listeners serve.
    pub fn cert_paths(&self) -> CertPaths {
        self.certificate.clone()
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    /// Deletes the saved account, so the next connection registers a new one.
    pub fn forget_account(&self) -> Result<(), AcmeError> {
        let path = self.account_path();
        match fs::remove_file(&path) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                Err(AcmeError::Io { path, error })
            }
            _ => Ok(()),
        }
    }

    fn domains_path(&self) -> PathBuf {
        self.dir.join("domains")
    }

    /// The domains the CA issued the certificate in `cert.pem` for, as recorded when it
    /// was saved; `None` if nothing was recorded (the placeholder, or files put there
    /// by hand). Compared with `tls.acme.domains` to notice a changed list.
    pub fn issued_for(&self) -> Option<Vec<String>> {
        let text = fs::read_to_string(self.domains_path()).ok()?;
        Some(text.lines().map(str::to_string).collect())
    }

    /// Whether both certificate files are there (they may still be a placeholder).
    pub fn has_certificate(&self) -> bool {
        let paths = self.cert_paths();
        paths.cert.is_file() && paths.key.is_file()
    }

    /// The account saved by an earlier run for `directory`, if any (an account made
    /// with another CA is not used, and is replaced when the new one is saved). A file
    /// that cannot be parsed is an error rather than a reason to register again.
    pub fn account(&self, directory: &str) -> Result<Option<AccountCredentials>, AcmeError> {
        let path = self.account_path();
        let text = match fs::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(AcmeError::Io { path, error }),
        };
        let saved: SavedAccount =
            serde_json::from_slice(&text).map_err(|_| AcmeError::BadAccountFile { path })?;
        Ok((saved.directory == directory).then_some(saved.credentials))
    }

    pub fn save_account(
        &self,
        directory: &str,
        credentials: AccountCredentials,
    ) -> Result<(), AcmeError> {
        let saved = SavedAccount {
            directory: directory.to_string(),
            credentials,
        };
        // Serializing strings and bytes into memory cannot fail.
        let text = serde_json::to_vec(&saved).unwrap_or_default();
        write_atomic(&self.account_path(), &text)
    }

    /// Replaces the certificate: the key first, so that when `cert.pem` changes (what a
    /// reload stats last) both are in place. `domains` is what the CA issued it for
    /// (none for the placeholder).
    pub fn save_certificate(
        &self,
        chain_pem: &str,
        key_pem: &str,
        domains: &[String],
    ) -> Result<(), AcmeError> {
        let paths = self.cert_paths();
        // Forgotten first: a crash half-way leaves a certificate that is renewed.
        match fs::remove_file(self.domains_path()) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => {
                return Err(AcmeError::Io {
                    path: self.domains_path(),
                    error,
                });
            }
            _ => {}
        }
        write_atomic(&paths.key, key_pem.as_bytes())?;
        write_atomic(&paths.cert, chain_pem.as_bytes())?;
        match domains.is_empty() {
            true => Ok(()),
            false => write_atomic(&self.domains_path(), domains.join("\n").as_bytes()),
        }
    }
}

/// `account.json`: the account's key and URL, and the directory it belongs to.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Writes `contents` to a temporary file next to `path` (0600, synced) and renames it
/// over `path`, then syncs the directory.
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), AcmeError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = PathBuf::from(temporary);
    let written = (|| {
        let _ = fs::remove_file(&temporary);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        // The rename itself survives a crash only once the directory is synced.
        match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => fs::File::open(dir)?.sync_all(),
            _ => Ok(()),
        }
    })();
    written.map_err(|error| {
        let _ = fs::remove_file(&temporary);
        AcmeError::Io {
            path: path.to_path_buf(),
            error,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("tern-acme-store-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let settings = AcmeSettings {
            state_dir: dir.join("nested"),
            ..AcmeSettings::default()
        };
        let state = StateDir::open(&settings).unwrap();
        assert!(!state.has_certificate());
        let domains = ["a.example".to_string(), "b.example".to_string()];
        state
            .save_certificate("chain one", "key one", &domains)
            .unwrap();
        assert_eq!(state.issued_for().as_deref(), Some(&domains[..]));
        state.save_certificate("chain two", "key two", &[]).unwrap();
        assert_eq!(
            state.issued_for(),
            None,
            "a placeholder is issued for nothing"
        );
        let paths = state.cert_paths();
        assert_eq!(fs::read_to_string(&paths.cert).unwrap(), "chain two");
        assert_eq!(fs::read_to_string(&paths.key).unwrap(), "key two");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("nested")), 0o700);
        assert_eq!(mode(&paths.cert), 0o600);
        assert_eq!(mode(&paths.key), 0o600);
        assert!(state.has_certificate());
        assert!(state.account("https://ca.example/dir").unwrap().is_none());
        fs::write(state.account_path(), "not json").unwrap();
        assert!(matches!(
            state.account("https://ca.example/dir"),
            Err(AcmeError::BadAccountFile { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }
}
