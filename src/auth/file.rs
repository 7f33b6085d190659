//! The one way a credential file (client secret, access token, certificate PEM) is read.
//!
//! A path given for a secret may be anything: `/dev/zero` or a FIFO would block or fill memory,
//! a directory reads as an error nobody understands, and a value pasted where a path belongs is
//! itself the secret. So: regular files only (a symlink to one, as Kubernetes mounts secrets,
//! is fine), at most a cap read, and a path that names nothing is never echoed.

use std::io::Read;
use std::path::Path;

/// Most bytes a client secret or access token file may hold: tokens are a few kilobytes.
pub const SECRET_CAP: u64 = 64 * 1024;
/// Most bytes a certificate PEM (certificate and key) may hold.
pub const PEM_CAP: u64 = 1024 * 1024;

/// Why a credential file could not be read. The `Display` never holds the path.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no such file")]
    Missing,
    #[error("not a regular file ({0})")]
    NotRegular(&'static str),
    #[error("larger than {} KiB; not a credential file", .0 / 1024)]
    TooLarge(u64),
    #[error("{0}")]
    Io(std::io::Error),
}

impl FileError {
    /// One line naming what the file was given to (`--client-secret-file`, a tenants-file
    /// key), and the path only when it names something that exists: a value that names
    /// nothing may be a secret pasted where its path belongs, whatever the error (no such
    /// file, a name too long, a folder that cannot be searched).
    pub fn describe(&self, given_to: &str, path: &Path) -> String {
        let exists = !matches!(self, FileError::Missing) && std::fs::symlink_metadata(path).is_ok();
        if exists {
            format!(
                "cannot read the file given to {given_to} ({}): {self}",
                path.display()
            )
        } else {
            format!("cannot read the file given to {given_to}: {self}")
        }
    }
}

/// The file's bytes, if it is a regular file of at most `cap` bytes (at most `cap + 1` are
/// read, whatever its metadata claimed).
pub fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, FileError> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => FileError::Missing,
        _ => FileError::Io(e),
    };
    // Checked before opening: opening a FIFO for reading blocks until a writer comes.
    regular(&std::fs::metadata(path).map_err(io)?)?;
    let mut file = open(path).map_err(io)?;
    // Checked again on what was opened: the path may have changed in between.
    regular(&file.metadata().map_err(FileError::Io)?)?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(FileError::Io)?;
    if bytes.len() as u64 > cap {
        return Err(FileError::TooLarge(cap));
    }
    Ok(bytes)
}

/// A secret or token file as text, trimmed (an editor's trailing newline is not the secret).
pub fn read_secret(path: &Path) -> Result<String, FileError> {
    let bytes = read_capped(path, SECRET_CAP)?;
    let text = String::from_utf8(bytes).map_err(|_| {
        FileError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })?;
    Ok(text.trim().to_string())
}

fn regular(m: &std::fs::Metadata) -> Result<(), FileError> {
    let kind = m.file_type();
    if kind.is_file() {
        return Ok(());
    }
    Err(FileError::NotRegular(if kind.is_dir() {
        "a directory"
    } else {
        kind_on_unix(&kind)
    }))
}

#[cfg(unix)]
fn kind_on_unix(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

#[cfg(not(unix))]
fn kind_on_unix(_: &std::fs::FileType) -> &'static str {
    "not a file"
}

/// Open for reading; on unix without blocking, should a FIFO have been swapped in.
fn open(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK);
    }
    options.open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_small_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("secret");
        std::fs::write(&ok, "  s3cret\n").unwrap();
        assert_eq!(read_secret(&ok).unwrap(), "s3cret");
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; SECRET_CAP as usize + 1]).unwrap();
        assert!(matches!(read_secret(&big), Err(FileError::TooLarge(_))));
        std::fs::write(&big, vec![b'a'; SECRET_CAP as usize]).unwrap();
        assert_eq!(read_secret(&big).unwrap().len(), SECRET_CAP as usize);
        assert!(matches!(
            read_secret(dir.path()),
            Err(FileError::NotRegular("a directory"))
        ));
        #[cfg(unix)]
        assert!(matches!(
            read_capped(Path::new("/dev/zero"), PEM_CAP),
            Err(FileError::NotRegular("a device"))
        ));
        let pasted = Path::new("Zx8Q~notapath.secret");
        let e = read_secret(pasted).unwrap_err();
        let line = e.describe("--client-secret-file", pasted);
        assert_eq!(
            line,
            "cannot read the file given to --client-secret-file: no such file"
        );
        // A pasted token is longer than a file name may be: not a missing file to the
        // system, and still not echoed.
        let token = format!("eyJ0eXAi.{}", "A".repeat(2000));
        let e = read_secret(Path::new(&token)).unwrap_err();
        assert!(matches!(e, FileError::Io(_)), "{e:?}");
        let line = e.describe("--access-token-file", Path::new(&token));
        assert!(!line.contains("eyJ0eXAi"), "{line}");
        assert!(line.starts_with("cannot read the file given to --access-token-file: "));
        let e = read_secret(dir.path()).unwrap_err();
        assert!(
            e.describe("--access-token-file", dir.path())
                .contains(&dir.path().display().to_string())
        );
    }
}
