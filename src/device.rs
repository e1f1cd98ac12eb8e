//! Choosing where tensors live: burn's `flex` CPU backend by default, Vulkan with the `vulkan`
//! cargo feature.

use anyhow::{Result, bail};
use burn::prelude::*;

/// Where tensors live (the command line's `--device cpu|vulkan`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKindArg {
    /// burn's flex CPU backend.
    Cpu,
    /// burn's Vulkan GPU backend (build with `--features vulkan`).
    Vulkan,
}

/// The inference device for `kind`.
pub fn device(kind: DeviceKindArg) -> Result<Device> {
    match kind {
        DeviceKindArg::Cpu => Ok(Device::flex()),
        DeviceKindArg::Vulkan => vulkan(),
    }
}

#[cfg(feature = "vulkan")]
fn vulkan() -> Result<Device> {
    Ok(Device::vulkan(burn::prelude::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "vulkan"))]
fn vulkan() -> Result<Device> {
    bail!(
        "this segrs was built without Vulkan support; rebuild with `cargo build --release --features vulkan`"
    )
}

/// Sets the number of CPU threads (rayon's global pool, which flex uses). 0 keeps the default
/// (all cores, or RAYON_NUM_THREADS).
pub fn set_threads(n: usize) -> Result<()> {
    if n == 0 {
        return Ok(());
    }
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        && rayon::current_num_threads() != n
    {
        bail!("cannot set {n} threads: {e}");
    }
    Ok(())
}

/// Keeps freed buffers in the heap instead of mapping each one afresh from the OS, which costs
/// a page fault per 4 KB and a TLB shootdown per free: the mmap threshold at its largest (32
/// MB) and, for the buffers above it (MobileSAM's 64 MB feature maps, SAM's 48 MB MLP
/// activations), no mmap at all (MobileSAM's encoder 3-8% faster, peak memory unchanged).
/// Freed memory is kept for reuse up to 1 GB above the heap's top instead of being returned.
/// Called once by the binary and the benchmarks.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before heavy allocation.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_MMAP_MAX, 0);
    }
}
