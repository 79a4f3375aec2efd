//! Debian kernels for the VM runs, fetched without touching the machine's apt sources:
//! a private apt configuration per release, its own lists and cache, under target/vm.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};

/// A kernel ready to boot: its image and its modules directory.
pub struct Kernel {
    pub label: String,
    pub vmlinuz: PathBuf,
    /// The modules directory of the same package, `lib/modules/<version>` or, merged
    /// /usr (Debian 13 on), `usr/lib/modules/<version>`; None for a user's bzImage.
    pub modules: Option<PathBuf>,
}

/// The Debian release that ships a kernel series.
fn suite(version: &str) -> Option<&'static str> {
    match version {
        "5.10" => Some("bullseye"),
        "6.1" => Some("bookworm"),
        "6.12" => Some("trixie"),
        _ => None,
    }
}

fn apt(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args([
            "-o",
            &format!("Dir::Etc::sourcelist={}", dir.join("sources.list").display()),
            "-o",
            "Dir::Etc::sourceparts=-",
            "-o",
            &format!("Dir::State::Lists={}", dir.join("lists").display()),
            "-o",
            &format!("Dir::Cache={}", dir.join("cache").display()),
            "-o",
            "Debug::NoLocking=1",
        ])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .with_context(|| format!("cannot run {}", args[0]))?;
    if !out.status.success() {
        bail!("{} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `5.10`, `6.1`, `6.12` (Debian's cloud kernels, cached), or a path to a bzImage.
pub fn resolve(spec: &str, cache: &Path) -> Result<Kernel> {
    let Some(suite) = suite(spec) else {
        let p = PathBuf::from(spec);
        if p.is_file() {
            return Ok(Kernel { label: spec.to_string(), vmlinuz: p, modules: None });
        }
        bail!("kernel {spec:?}: give 5.10, 6.1, 6.12 or the path of a bzImage");
    };
    let dir = cache.join(suite);
    let root = dir.join("root");
    if let Some(k) = find(&root, spec)? {
        return Ok(k);
    }
    // A half-extracted or older layout: start again from the package.
    let _ = std::fs::remove_dir_all(&root);
    for old in std::fs::read_dir(&dir).map(|d| d.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        if old.path().extension().is_some_and(|e| e == "deb") {
            let _ = std::fs::remove_file(old.path());
        }
    }
    std::fs::create_dir_all(dir.join("lists/partial"))?;
    std::fs::create_dir_all(dir.join("cache/archives/partial"))?;
    std::fs::write(
        dir.join("sources.list"),
        format!("deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n"),
    )?;
    crate::step(&format!("fetching Debian's {suite} cloud kernel ({spec})"));
    apt(&dir, &["apt-get", "update", "-q"])?;
    let deps = apt(&dir, &["apt-cache", "depends", "linux-image-cloud-amd64"])?;
    let pkg = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .ok_or_else(|| anyhow!("no kernel package behind linux-image-cloud-amd64 in {suite}"))?
        .to_string();
    apt(&dir, &["apt-get", "download", &pkg])?;
    let deb = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .ok_or_else(|| anyhow!("{pkg}: download produced no .deb"))?;
    let status = Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).status()?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed", deb.display());
    }
    find(&root, spec)?.ok_or_else(|| anyhow!("{pkg} has no vmlinuz or no modules directory"))
}

/// The kernel extracted under `root`: its vmlinuz and its modules directory, which
/// Debian's packages put in `lib/modules/<version>` (up to Debian 12) or, with merged
/// /usr, `usr/lib/modules/<version>` (Debian 13's 6.12). None until both are there: a
/// Debian kernel without its modules boots into "Unknown device type" for every veth.
fn find(root: &Path, label: &str) -> Result<Option<Kernel>> {
    let Ok(boot) = std::fs::read_dir(root.join("boot")) else { return Ok(None) };
    let Some(vmlinuz) = boot
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("vmlinuz-")))
    else {
        return Ok(None);
    };
    let version = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let Some(modules) = modules_dir(root, &version) else { return Ok(None) };
    Ok(Some(Kernel { label: format!("{label} ({version})"), vmlinuz, modules: Some(modules) }))
}

/// `lib/modules/<version>` or `usr/lib/modules/<version>` under `root`, whichever exists.
pub fn modules_dir(root: &Path, version: &str) -> Option<PathBuf> {
    ["lib/modules", "usr/lib/modules"].iter().map(|d| root.join(d).join(version)).find(|p| p.is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(layout: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "npvm-kpkg-{}-{}",
            std::process::id(),
            layout.replace('/', "_")
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.12.9+deb13-cloud-amd64"), "bzImage").unwrap();
        std::fs::create_dir_all(root.join(layout).join("6.12.9+deb13-cloud-amd64/kernel")).unwrap();
        root
    }

    #[test]
    fn finds_the_modules_of_a_merged_usr_package() {
        let root = package("usr/lib/modules");
        let k = find(&root, "6.12").unwrap().expect("kernel found");
        assert_eq!(k.label, "6.12 (6.12.9+deb13-cloud-amd64)");
        assert_eq!(k.modules.unwrap(), root.join("usr/lib/modules/6.12.9+deb13-cloud-amd64"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn finds_the_modules_of_a_classic_package() {
        let root = package("lib/modules");
        let k = find(&root, "6.1").unwrap().expect("kernel found");
        assert_eq!(k.modules.unwrap(), root.join("lib/modules/6.12.9+deb13-cloud-amd64"));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_package_without_modules_is_not_taken_for_a_kernel() {
        let root = package("opt/elsewhere");
        assert!(find(&root, "6.12").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&root);
    }
}
