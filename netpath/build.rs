//! Builds the eBPF object (netpath-ebpf, target bpfel-unknown-none, nightly + build-std)
//! so a plain `cargo build` produces a binary with the datapath embedded.
use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "netpath-ebpf")
        .ok_or_else(|| anyhow!("netpath-ebpf package not found"))?;
    let root_dir =
        ebpf.manifest_path.parent().ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let package =
        aya_build::Package { name: ebpf.name.as_str(), root_dir: root_dir.as_str(), ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::Nightly)
}
