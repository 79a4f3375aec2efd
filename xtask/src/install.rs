//! `cargo xtask install`: netpath as a node runs it. The release binary, the CNI plugin
//! (a link to the same binary, in both plugin directories runtimes look in), a systemd
//! unit (Type=notify: the agent says ready once the datapath is attached and its socket
//! listens), a default config file, shell completions and the man page.
//! `--uninstall` removes exactly those files: a link only while it still points at the
//! binary, the config file only while it is the default one.
use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

use crate::{step, workspace_root};

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Where the binary and its documentation go (PREFIX/bin, PREFIX/share).
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Stage every file under this directory instead of / (packaging, tests); the paths
    /// written into the unit and the links are the final ones, without it.
    #[arg(long, default_value = "/")]
    destdir: PathBuf,
    /// Install this netpath binary instead of building the release one.
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Remove what an install with the same --prefix and --destdir put in place.
    #[arg(long)]
    uninstall: bool,
}

const CONFIG: &str = "/etc/netpath/agent.toml";
const UNIT: &str = "/etc/systemd/system/netpath.service";
/// Where runtimes look for CNI plugins: the CNI default, and Debian's (podman's there).
const CNI_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

const DEFAULT_CONFIG: &str = "\
# netpath agent settings. The keys are the long flags of `netpath agent` (see
# `netpath agent --help` and `man netpath`); a flag or a NETPATH_* variable beats this
# file, this file beats the default.
#
# pod-cidr = \"10.77.0.0/24\"
# mode = \"routed\"          # or \"bridge\" (a docker0-style bridge)
# uplink = \"eth0\"          # default: the interface of the default route
# nat-ports = \"61000-65535\"
# metrics = \"127.0.0.1:9464\"
# state-dir = \"/var/lib/netpath\"
# run-dir = \"/run/netpath\"  # CNI netconfs name it as runDir
";

/// The unit for the binary at `bin`.
pub fn unit(bin: &Path) -> String {
    format!(
        "[Unit]\n\
         Description=netpath node agent: container networking on an eBPF datapath\n\
         Documentation=man:netpath(1)\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         # Ready (sd_notify READY=1) once the datapath is attached and the socket listens.\n\
         Type=notify\n\
         ExecStart={bin} agent --config {CONFIG}\n\
         # A restart is hitless: programs stay attached and maps pinned while the agent is\n\
         # down, and the next one takes them over.\n\
         Restart=on-failure\n\
         RestartSec=2s\n\
         # The verifier's first load of the datapath takes seconds on a busy node.\n\
         TimeoutStartSec=5min\n\
         LimitNOFILE=1048576\n\
         LimitMEMLOCK=infinity\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        bin = bin.display()
    )
}

/// Every file an install puts in place, as (final path, what goes there).
fn files(prefix: &Path, staged_bin: &Path) -> Result<Vec<(PathBuf, Content)>> {
    let bin = prefix.join("bin/netpath");
    let generated = |args: &[&str]| -> Result<Vec<u8>> {
        let out = Command::new(staged_bin)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", staged_bin.display()))?;
        if !out.status.success() {
            bail!("netpath {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        }
        Ok(out.stdout)
    };
    let share = prefix.join("share");
    let mut files = vec![(bin.clone(), Content::Binary)];
    files.extend(CNI_DIRS.iter().map(|d| (Path::new(d).join("netpath"), Content::Link(bin.clone()))));
    files.push((PathBuf::from(UNIT), Content::Text(unit(&bin).into_bytes())));
    files.push((PathBuf::from(CONFIG), Content::Config));
    files.push((share.join("man/man1/netpath.1"), Content::Text(generated(&["man"])?)));
    files.push((
        share.join("bash-completion/completions/netpath"),
        Content::Text(generated(&["completions", "bash"])?),
    ));
    files.push((
        share.join("zsh/site-functions/_netpath"),
        Content::Text(generated(&["completions", "zsh"])?),
    ));
    files.push((
        share.join("fish/vendor_completions.d/netpath.fish"),
        Content::Text(generated(&["completions", "fish"])?),
    ));
    Ok(files)
}

enum Content {
    Binary,
    Link(PathBuf),
    Text(Vec<u8>),
    /// The default config: written when there is none, never over the admin's.
    Config,
}

/// `path` under `destdir`.
fn staged(destdir: &Path, path: &Path) -> PathBuf {
    destdir.join(path.strip_prefix("/").unwrap_or(path))
}

pub fn run(args: InstallArgs) -> Result<()> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None if args.uninstall => staged(&args.destdir, &args.prefix.join("bin/netpath")),
        None => build_release()?,
    };
    if !binary.exists() {
        bail!("{} does not exist: give --binary or build first", binary.display());
    }
    let files = files(&args.prefix, &binary)?;
    if args.uninstall {
        return uninstall(&args, &files);
    }
    for (path, content) in &files {
        let dst = staged(&args.destdir, path);
        fs::create_dir_all(dst.parent().expect("absolute paths"))
            .with_context(|| format!("create {}", dst.display()))?;
        match content {
            Content::Binary => {
                // Replaced by rename: a running agent keeps its old inode.
                let tmp = dst.with_extension("new");
                fs::copy(&binary, &tmp)
                    .with_context(|| format!("copy {} to {}", binary.display(), tmp.display()))?;
                fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
                fs::rename(&tmp, &dst)?;
            }
            Content::Link(target) => {
                let _ = fs::remove_file(&dst);
                std::os::unix::fs::symlink(target, &dst)
                    .with_context(|| format!("link {}", dst.display()))?;
            }
            Content::Text(bytes) => {
                fs::write(&dst, bytes).with_context(|| format!("write {}", dst.display()))?
            }
            Content::Config if dst.exists() => {
                step(&format!("{} exists: kept", dst.display()));
                continue;
            }
            Content::Config => {
                fs::write(&dst, DEFAULT_CONFIG).with_context(|| format!("write {}", dst.display()))?
            }
        }
        step(&format!("installed {}", dst.display()));
    }
    step("start it with: systemctl daemon-reload && systemctl enable --now netpath");
    Ok(())
}

fn uninstall(args: &InstallArgs, files: &[(PathBuf, Content)]) -> Result<()> {
    // The binary goes last: the others were generated from it.
    for (path, content) in files.iter().rev() {
        let dst = staged(&args.destdir, path);
        let ours = match content {
            Content::Link(target) => fs::read_link(&dst).is_ok_and(|t| t == *target),
            Content::Config => fs::read_to_string(&dst).is_ok_and(|t| t == DEFAULT_CONFIG),
            Content::Binary | Content::Text(_) => dst.exists(),
        };
        if !ours {
            if dst.symlink_metadata().is_ok() {
                step(&format!("{} is not the one netpath installed: kept", dst.display()));
            }
            continue;
        }
        fs::remove_file(&dst).with_context(|| format!("remove {}", dst.display()))?;
        step(&format!("removed {}", dst.display()));
    }
    Ok(())
}

fn build_release() -> Result<PathBuf> {
    let root = workspace_root();
    step("building netpath (release)");
    let status =
        Command::new("cargo").current_dir(&root).args(["build", "--release", "-p", "netpath"]).status()?;
    if !status.success() {
        bail!("release build failed");
    }
    Ok(root.join("target/release/netpath"))
}
