//! What the binary was built from, for `--version`, the stats and the
//! build-info metric. Its own module so the control plane, the metrics
//! endpoint and the daemon can all name it without importing each other.

/// Build facts for `--version` and the stats.
#[derive(Debug, Clone, Copy)]
pub struct BuildInfo {
    pub version: &'static str,
    pub git_revision: &'static str,
    pub dpdk_build_version: &'static str,
}
