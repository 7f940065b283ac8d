//! Relative file paths in a configuration file are relative to that file's directory, as in
//! Prometheus (`SetDirectory`/`JoinDir`): credentials, TLS and header files, file discovery
//! patterns, kubeconfig files, failure log files and `scrape_config_files` patterns. The
//! directory is set for the time one file is resolved (a `scrape_config_files` entry gets
//! its own).

use std::cell::RefCell;
use std::path::{Path, PathBuf};

thread_local! {
    static DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `f` with relative paths taken as relative to `dir`.
pub(super) fn within<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    let previous = DIR.with(|d| d.replace(Some(dir.to_path_buf())));
    let out = f();
    DIR.with(|d| *d.borrow_mut() = previous);
    out
}

/// `path` joined to the directory of the file being resolved, unless it is empty or
/// absolute (or no file is being resolved: then it stays relative to the working directory).
pub(super) fn join(path: String) -> String {
    if path.is_empty() || Path::new(&path).is_absolute() {
        return path;
    }
    DIR.with(|d| match &*d.borrow() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(&path).display().to_string(),
        _ => path,
    })
}

/// Whether the last component of `pattern` holds a `*` or `?`.
pub fn is_pattern(pattern: &str) -> bool {
    Path::new(pattern).file_name().is_some_and(|n| {
        n.as_encoded_bytes()
            .iter()
            .any(|c| matches!(c, b'*' | b'?'))
    })
}

/// The existing files `pattern` names, in name order, as Go's `filepath.Glob` finds them for
/// patterns with `*` and `?` in the last component only.
pub fn expand(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    if !is_pattern(pattern) {
        return if path.exists() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let name = path
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| glob_match(name, e.file_name().as_encoded_bytes()))
        .map(|e| dir.join(e.file_name()))
        .collect();
    found.sort();
    found
}

/// Shell-style matching of one path component: `*` any run, `?` one byte.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(b"*.json", b"a.json"));
        assert!(glob_match(b"t-*.yml", b"t-1.yml"));
        assert!(!glob_match(b"t-*.yml", b"t-1.yaml"));
        assert!(glob_match(b"?.json", b"a.json"));
        assert!(!glob_match(b"?.json", b"ab.json"));
        assert!(glob_match(b"*", b""));
        assert!(glob_match(b"a*b*c", b"aXbYbZc"));
        assert!(is_pattern("sd/*.yml") && !is_pattern("sd*/a.yml") && !is_pattern("a.yml"));
    }

    #[test]
    fn relative_paths_join_the_files_directory() {
        assert_eq!(join("a.json".into()), "a.json", "no file being resolved");
        within(Path::new("/etc/prometheus"), || {
            assert_eq!(join("a.json".into()), "/etc/prometheus/a.json");
            assert_eq!(join("sd/*.yml".into()), "/etc/prometheus/sd/*.yml");
            assert_eq!(join("/abs/x".into()), "/abs/x");
            assert_eq!(join(String::new()), "");
            within(Path::new("/etc/prometheus/jobs"), || {
                assert_eq!(join("t".into()), "/etc/prometheus/jobs/t");
            });
            assert_eq!(join("t".into()), "/etc/prometheus/t", "restored");
        });
        within(Path::new(""), || assert_eq!(join("t".into()), "t"));
    }
}
