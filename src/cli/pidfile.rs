//! The pid file: written atomically, and backed by an exclusive lock on `<pid>.lock`
//! held for the life of the process.
//!
//! The lock, not the pid in the file, says whether delayqs runs: the kernel drops it when
//! the process dies however it dies, so a stale file (a dead pid, or a pid since reused
//! by another program) never blocks a start. The lock sits on its own file because the
//! pid file is replaced by a rename, which would leave a lock on it behind.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A pid file this process owns; removed when dropped.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    _lock: File,
}

#[derive(Debug)]
pub enum PidFileError {
    /// Another delayqs holds the lock.
    AlreadyRunning(Option<u32>),
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for PidFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PidFileError::AlreadyRunning(Some(pid)) => {
                write!(f, "delayqs is already running (pid {pid})")
            }
            PidFileError::AlreadyRunning(None) => write!(f, "delayqs is already running"),
            PidFileError::Io(path, e) => write!(
                f,
                "cannot write the pid file {}: {e}; set `pid` in the config to a writable path",
                path.display()
            ),
        }
    }
}

/// What the pid file says about the daemon.
#[derive(Debug, PartialEq, Eq)]
pub enum Status {
    Running {
        pid: u32,
        since: SystemTime,
    },
    Stopped,
    /// A pid file with no live delayqs behind it.
    Dead {
        pid: Option<u32>,
    },
}

impl PidFile {
    /// Takes the lock and writes this process's pid.
    pub fn create(path: &Path) -> Result<PidFile, PidFileError> {
        let io_err = |e| PidFileError::Io(path.to_path_buf(), e);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        // 0600: any user who could open the lock file could take the lock and make
        // every start refuse.
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(lock_path(path))
            .map_err(io_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(PidFileError::AlreadyRunning(read_pid(path)));
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let tmp = with_suffix(path, ".tmp");
        let write = || -> io::Result<()> {
            // Under the lock nobody else writes it; create_new refuses to follow a
            // symlink planted in its place.
            let _ = fs::remove_file(&tmp);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(io_err)?;
        Ok(PidFile {
            path: path.to_path_buf(),
            _lock: lock,
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Reads the state of the daemon whose pid file is at `path`.
pub fn status(path: &Path) -> Status {
    let Ok(meta) = fs::metadata(path) else {
        return Status::Stopped;
    };
    let pid = read_pid(path);
    let since = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    let lock = match File::open(lock_path(path)) {
        Ok(lock) => lock,
        // Not ours to read (the daemon runs as another user): judge by the pid alone.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return match pid.filter(|p| Path::new(&format!("/proc/{p}")).exists()) {
                Some(pid) => Status::Running { pid, since },
                None => Status::Dead { pid },
            };
        }
        Err(_) => return Status::Dead { pid },
    };
    match (lock.try_lock(), pid) {
        (Err(TryLockError::WouldBlock), Some(pid)) => Status::Running { pid, since },
        _ => Status::Dead { pid },
    }
}

/// Whether some process still holds the lock beside the pid file. A stopping daemon
/// removes its pid file a moment before it exits and lets go of the lock: until then
/// a new start would be refused.
pub fn lock_held(path: &Path) -> bool {
    match File::open(lock_path(path)) {
        Ok(lock) => matches!(lock.try_lock(), Err(TryLockError::WouldBlock)),
        Err(_) => false,
    }
}

/// Removes a pid file no process holds any more, if it still names `pid` (a new
/// daemon may have written its own meanwhile).
pub fn remove_stale_of(path: &Path, pid: u32) -> io::Result<()> {
    match read_pid(path) {
        Some(p) if p == pid => remove_stale(path),
        _ => Ok(()),
    }
}

/// Removes a pid file no process holds any more.
pub fn remove_stale(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn lock_path(path: &Path) -> PathBuf {
    with_suffix(path, ".lock")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_path(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("delayqs-pid-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir.join("sub").join("delayqs.pid")
    }

    #[test]
    fn second_lock_is_refused_and_drop_cleans_up() {
        let path = temp_path("second");
        let first = PidFile::create(&path).unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
        assert!(matches!(status(&path), Status::Running { pid, .. } if pid == std::process::id()));
        match PidFile::create(&path) {
            Err(PidFileError::AlreadyRunning(Some(pid))) => assert_eq!(pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        drop(first);
        assert_eq!(status(&path), Status::Stopped);
    }

    #[test]
    fn stale_file_does_not_block() {
        let path = temp_path("stale");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "1\n").unwrap(); // pid 1 lives, but holds no lock
        assert_eq!(status(&path), Status::Dead { pid: Some(1) });
        let _owner = PidFile::create(&path).unwrap();
        assert_eq!(read_pid(&path), Some(std::process::id()));
    }

    #[test]
    fn unwritable_path_says_which() {
        let e = PidFile::create(Path::new("/proc/delayqs/x.pid")).unwrap_err();
        assert!(e.to_string().contains("/proc/delayqs/x.pid"), "{e}");
    }
}
