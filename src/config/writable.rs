//! Whether the daemon can write where its config says (`metricsFile`, `logDir`), asked
//! by `run --check` and before the daemon starts, so that a path it cannot write stops
//! it at once with the key named, instead of failing quietly every few seconds later.
//!
//! Judged by creating and removing a file there, as the user running the check, never
//! by permission bits: root, ACLs, read-only mounts and systemd's `ProtectSystem=`
//! make the bits lie.

use std::io;
use std::path::{Path, PathBuf};

use crate::config::{Config, Problem};
use crate::telemetry::metrics::probe_dir;

/// The first path of `config` the daemon could not write, as a problem with its key.
pub fn check_writable(config: &Config) -> Result<(), Problem> {
    if let Some(file) = &config.metrics_file {
        check_metrics_file(file).map_err(|m| Problem::key("metricsFile", m))?;
    }
    if let Some(logs) = &config.log_files {
        check_log_dir(&logs.dir).map_err(|m| Problem::key("logDir", m))?;
    }
    Ok(())
}

/// The metrics file is written beside itself and renamed into place: its directory
/// must exist (it is not created: node_exporter's collector owns it) and take new files.
fn check_metrics_file(file: &Path) -> Result<(), String> {
    let shown = file.display();
    let dir = match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if file.file_name().is_none() {
        return Err(format!(
            "{shown} names no file; give a file path such as /var/lib/prometheus/node-exporter/delayqs.prom"
        ));
    }
    if file.is_dir() {
        return Err(format!(
            "{shown} is a directory; name a file in it, such as {}",
            file.join("delayqs.prom").display()
        ));
    }
    if !dir.is_dir() {
        return Err(format!(
            "cannot write {shown}: the directory {} does not exist; create it (mkdir -p {0}), writable by the user delayqs runs as, or change the key",
            dir.display()
        ));
    }
    probe_dir(dir).map_err(|e| cannot_create(&shown.to_string(), dir, &e))
}

/// The log directory is created when missing (`telemetry::logging`): then the nearest
/// directory that exists must let it be created.
fn check_log_dir(dir: &Path) -> Result<(), String> {
    let shown = dir.display().to_string();
    if dir.exists() && !dir.is_dir() {
        return Err(format!(
            "{shown} is not a directory; name the directory info.log and error.log go to"
        ));
    }
    let existing = nearest_existing(dir);
    if !existing.is_dir() {
        return Err(format!(
            "cannot create the log directory {shown}: {} is not a directory",
            existing.display()
        ));
    }
    probe_dir(&existing).map_err(|e| match existing == dir {
        true => cannot_create(&format!("log files in {shown}"), dir, &e),
        false => cannot_create(&format!("the log directory {shown}"), &existing, &e),
    })
}

fn nearest_existing(dir: &Path) -> PathBuf {
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    absolute
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf()
}

/// Why `what` cannot be created in `dir`, and what to do about it.
fn cannot_create(what: &str, dir: &Path, e: &io::Error) -> String {
    let dir = dir.display();
    // SAFETY: geteuid cannot fail.
    let uid = unsafe { libc::geteuid() };
    let fix = match e.kind() {
        io::ErrorKind::ReadOnlyFilesystem => format!(
            "{dir} is read-only here; under systemd's ProtectSystem=strict, add ReadWritePaths={dir} to the unit (see config/delayqs.service), or change the key"
        ),
        _ => format!(
            "make {dir} writable by the user delayqs runs as (here uid {uid}; check as that user: sudo -u delayqs delayqs run --check), or change the key"
        ),
    };
    format!("cannot create {what}: creating a file in {dir} failed ({e}); {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("delayqs-unit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_missing_or_wrong_kind_of_path_is_named_with_what_to_do() {
        let dir = scratch("writable");
        assert_eq!(check_metrics_file(&dir.join("m.prom")), Ok(()));
        let e = check_metrics_file(&dir.join("no/m.prom")).unwrap_err();
        assert!(
            e.contains("no/m.prom") && e.contains("does not exist"),
            "{e}"
        );
        assert!(e.contains("mkdir -p"), "{e}");
        let e = check_metrics_file(&dir).unwrap_err();
        assert!(e.contains("is a directory"), "{e}");
        // A log directory that is not there yet is made at start: fine when its
        // parent takes it.
        assert_eq!(check_log_dir(&dir.join("logs/deeper")), Ok(()));
        std::fs::write(dir.join("file"), "").unwrap();
        let e = check_log_dir(&dir.join("file")).unwrap_err();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_log_dir(&dir.join("file/logs")).unwrap_err();
        assert!(e.contains("file is not a directory"), "{e}");
        // Nothing was left behind by the probes.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
