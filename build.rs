//! Build facts for `spate --version`, `spate_build_info` and `/api/v1/status/buildinfo`: the
//! git revision and branch (when built from a checkout), the build date and the compiler.

use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    let revision = git(&["rev-parse", "HEAD"]);
    let branch = git(&["rev-parse", "--abbrev-ref", "HEAD"]);
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // SOURCE_DATE_EPOCH makes the date reproducible; otherwise the time of the build.
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        });
    println!("cargo:rustc-env=SPATE_REVISION={revision}");
    println!("cargo:rustc-env=SPATE_BRANCH={branch}");
    println!("cargo:rustc-env=SPATE_RUSTC={rustc_version}");
    println!(
        "cargo:rustc-env=SPATE_BUILD_DATE={}",
        yyyymmdd_hhmmss(epoch)
    );
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    // The revision changes with HEAD and with the branch it points to.
    // (A path that does not exist, such as a packed ref, would rebuild every time: skip it.)
    let watch = |path: String| {
        if !path.is_empty() && std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    };
    watch(git(&["rev-parse", "--git-path", "HEAD"]));
    let reference = git(&["symbolic-ref", "-q", "HEAD"]);
    if !reference.is_empty() {
        watch(git(&["rev-parse", "--git-path", &reference]));
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// Prometheus' build date format, `20060102-15:04:05`, in UTC.
fn yyyymmdd_hhmmss(epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}
