//! `scrape_failure_log_file`: every failed scrape of a job's targets as one JSON line, as
//! Prometheus writes them (`time`, `level`, `source`, `msg`: the error, `target`: the URL).
//! Each file is opened for appending when the configuration loads and again at every reload
//! (so a rotated file is let go); jobs naming the same file share it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::config::Config;

/// The open failure log files, by path; shared by the control plane (which reopens them) and
/// the cores (which write).
#[derive(Default)]
pub struct FailureLogs {
    files: Mutex<HashMap<Arc<str>, Arc<std::fs::File>>>,
}

impl FailureLogs {
    /// Opens every file `cfg`'s jobs name, anew, in place of the ones open before. A file
    /// that cannot be opened is left out (its jobs' failures are not logged) and named in
    /// the error.
    pub fn reopen(&self, cfg: &Config) -> Result<(), String> {
        let mut files = HashMap::new();
        let mut errors = Vec::new();
        for path in cfg
            .scrape_configs
            .iter()
            .filter_map(|sc| sc.scrape_failure_log_file.as_deref())
        {
            if files.contains_key(path) {
                continue;
            }
            match std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(path)
            {
                Ok(f) => {
                    files.insert(Arc::<str>::from(path), Arc::new(f));
                }
                Err(e) => errors.push(format!(
                    "cannot open the scrape failure log file {path}: {e} (check that its directory exists and is writable)"
                )),
            }
        }
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = files;
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Appends the line for a failed scrape of `target` to `path`, when it is open.
    pub fn write(&self, path: &str, target: &str, message: &str) {
        let file = self
            .files
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(path)
            .cloned();
        let Some(file) = file else { return };
        let line = line(std::time::SystemTime::now(), target, message);
        // One write per line: O_APPEND keeps the lines of several cores whole.
        let _ = (&*file).write_all(line.as_bytes());
    }
}

/// One failure as Prometheus' JSON file logger writes it.
fn line(at: std::time::SystemTime, target: &str, message: &str) -> String {
    let mut out = String::with_capacity(96 + target.len() + message.len());
    out.push_str("{\"time\":");
    crate::log::quoted(&mut out, &crate::log::rfc3339_millis(at));
    out.push_str(",\"level\":\"ERROR\",\"source\":\"scrape\",\"msg\":");
    crate::log::quoted(&mut out, message);
    out.push_str(",\"target\":");
    crate::log::quoted(&mut out, target);
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_one_json_object_with_prometheus_keys() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        let l = line(
            at,
            "http://a:1/metrics",
            "Get \"http://a:1/metrics\": refused\n",
        );
        assert!(l.ends_with("}\n") && l.matches('\n').count() == 1, "{l}");
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["msg"], "Get \"http://a:1/metrics\": refused\n");
        assert_eq!(v["target"], "http://a:1/metrics");
    }
}
