//! Trust checks on the state directory and the CA files in it (Unix).
//!
//! Whoever can write the state directory, or read `ca-key.pem`, controls
//! the CA that clients trust through `RSTREAM_CA_FILE`. So, like `ssh`
//! with `~/.ssh`, the engine refuses (error code [`LOCAL_ENGINE_STATE_DIR`](crate::error::code::LOCAL_ENGINE_STATE_DIR), kind `Config`,
//! the path in the message):
//! - a state directory not owned by the current (effective) user, or
//!   writable by its group or by others;
//! - a `ca-key.pem` not owned by the current user, or with any permission
//!   for its group or others;
//! - a `ca.pem` not owned by the current user, or writable by its group or
//!   by others.
//!
//! A directory the engine creates gets mode 0700 (and the key 0600, see
//! `certs`), so the default (a fresh directory under the system temp dir)
//! passes. On other platforms nothing is checked.

use std::path::Path;

use crate::error::{code, Error, ErrorKind, Result};

/// Creates `dir` (and missing parents) with mode 0700, or checks the
/// existing one (see the module docs).
pub(crate) fn prepare(dir: &Path) -> Result<()> {
    if !dir.exists() {
        create(dir)?;
    }
    // Checked even when just created: a directory that someone else
    // created in between makes `create` succeed too.
    check(dir, Rule::Directory)
}

/// Checks the CA's private key file (see the module docs).
pub(crate) fn check_key(path: &Path) -> Result<()> {
    check(path, Rule::Secret)
}

/// Checks the CA certificate file (see the module docs).
pub(crate) fn check_certificate(path: &Path) -> Result<()> {
    check(path, Rule::Public)
}

fn create(dir: &Path) -> Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| Error::io(format!("creating state directory {}", dir.display()), e))
}

#[derive(Clone, Copy)]
enum Rule {
    /// Owned by us, not writable by group or others.
    Directory,
    /// Owned by us, no permission at all for group or others.
    Secret,
    /// Owned by us, not writable by group or others.
    Public,
}

fn refused(path: &Path, why: std::fmt::Arguments<'_>) -> Error {
    Error::new(
        ErrorKind::Config,
        code::LOCAL_ENGINE_STATE_DIR,
        format!(
            "local engine state: {} {why}; another local user could replace the engine's CA. \
             Use a directory of your own (e.g. under $XDG_RUNTIME_DIR or ~/.rstream)",
            path.display()
        ),
    )
}

#[cfg(unix)]
fn check(path: &Path, rule: Rule) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading the metadata of {}", path.display()), e))?;
    match rule {
        Rule::Directory if !meta.is_dir() => {
            return Err(refused(path, format_args!("is not a directory")))
        }
        Rule::Secret | Rule::Public if !meta.is_file() => {
            return Err(refused(path, format_args!("is not a regular file")))
        }
        _ => {}
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(refused(
            path,
            format_args!(
                "is owned by uid {}, not by the current user (uid {me})",
                meta.uid()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    let (forbidden, fix) = match rule {
        Rule::Directory => (0o022, "chmod 700"),
        Rule::Secret => (0o077, "chmod 600"),
        Rule::Public => (0o022, "chmod 644"),
    };
    if mode & forbidden != 0 {
        let what = match rule {
            Rule::Secret => "is accessible to its group or others",
            Rule::Directory | Rule::Public => "is writable by its group or others",
        };
        return Err(refused(
            path,
            format_args!("{what} (mode {mode:04o}; {fix} it)"),
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check(_path: &Path, _rule: Rule) -> Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn fresh(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("rstream-{tag}-{}", uuid::Uuid::new_v4().simple()))
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_directories() {
        let dir = fresh("state-new").join("a").join("b");
        prepare(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        prepare(&dir).unwrap();
        let _ = std::fs::remove_dir_all(dir.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn refuses_shared_directories_and_keys() {
        let dir = fresh("state-shared");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = prepare(&dir).unwrap_err();
        assert_eq!(err.code(), code::LOCAL_ENGINE_STATE_DIR);
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string().contains(&dir.display().to_string()),
            "{err}"
        );
        assert!(err.to_string().contains("0777"), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();

        let key = dir.join("ca-key.pem");
        std::fs::write(&key, "key").unwrap();
        for bad in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(bad)).unwrap();
            let err = check_key(&key).unwrap_err();
            assert_eq!(err.code(), code::LOCAL_ENGINE_STATE_DIR, "{bad:o}");
            assert!(err.to_string().contains("ca-key.pem"), "{err}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        check_key(&key).unwrap();
        assert!(check_key(&dir).is_err());
        assert!(prepare(&key).is_err());

        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "ca").unwrap();
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert_eq!(
            check_certificate(&ca).unwrap_err().code(),
            code::LOCAL_ENGINE_STATE_DIR
        );
        std::fs::set_permissions(&ca, std::fs::Permissions::from_mode(0o644)).unwrap();
        check_certificate(&ca).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
