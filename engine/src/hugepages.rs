//! The hugepage check before `rte_eal_init`: when the host has no free
//! hugepages or no hugetlbfs mounted, EAL fails with a line about
//! "hugepage info" that does not say what to do. lbd looks first and names
//! the fix (the `lbd-hugepages` script, or `--no-huge` for a trial run).
//!
//! [`check`] is pure (it takes the texts of `/proc/meminfo`, `/proc/mounts`
//! and the per-size pools of `/sys/kernel/mm/hugepages`) so the unit tests
//! can give it any host; [`HostMemory::read`] reads this host's.

use std::path::Path;

/// The pools of one page size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub page_kb: u64,
    pub total: u64,
    pub free: u64,
}

/// A mounted hugetlbfs and the page size it serves (`pagesize=` option;
/// the default page size when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dir: String,
    pub page_kb: Option<u64>,
}

/// What the host offers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostMemory {
    /// `Hugepagesize` of `/proc/meminfo`.
    pub default_page_kb: Option<u64>,
    pub pools: Vec<Pool>,
    pub mounts: Vec<Mount>,
}

/// The script the package installs (and the source tree has at
/// `dist/lbd-hugepages`).
pub const SCRIPT: &str = "lbd-hugepages";

impl HostMemory {
    /// From the texts: `meminfo` gives the default page size and its pool
    /// (used when `sysfs_pools` is empty, as in a container without
    /// `/sys/kernel/mm`), `mounts` the hugetlbfs mounts.
    pub fn parse(meminfo: &str, mounts: &str, sysfs_pools: Vec<Pool>) -> HostMemory {
        let field = |name: &str| {
            meminfo.lines().find_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix(':')?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        };
        let default_page_kb = field("Hugepagesize");
        let pools = if sysfs_pools.is_empty() {
            match (default_page_kb, field("HugePages_Total"), field("HugePages_Free")) {
                (Some(page_kb), Some(total), Some(free)) => vec![Pool { page_kb, total, free }],
                _ => Vec::new(),
            }
        } else {
            sysfs_pools
        };
        let mounts = mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 4 || f[2] != "hugetlbfs" {
                    return None;
                }
                let page_kb = f[3].split(',').find_map(|o| o.strip_prefix("pagesize=")).and_then(parse_size_kb);
                Some(Mount { dir: unescape_mount(f[1]), page_kb })
            })
            .collect();
        HostMemory { default_page_kb, pools, mounts }
    }

    /// This host's (missing files read as empty: the check then says
    /// nothing is there, which is what EAL would find too).
    pub fn read() -> HostMemory {
        let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let mut pools = Vec::new();
        if let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(kb) = name.strip_prefix("hugepages-").and_then(|s| s.strip_suffix("kB")) else {
                    continue;
                };
                let num = |f: &str| std::fs::read_to_string(e.path().join(f)).ok()?.trim().parse::<u64>().ok();
                if let (Ok(page_kb), Some(total), Some(free)) = (kb.parse(), num("nr_hugepages"), num("free_hugepages"))
                {
                    pools.push(Pool { page_kb, total, free });
                }
            }
        }
        pools.sort_by_key(|p| p.page_kb);
        HostMemory::parse(&text("/proc/meminfo"), &text("/proc/mounts"), pools)
    }

    /// The page size a mount serves.
    fn mount_page_kb(&self, m: &Mount) -> Option<u64> {
        m.page_kb.or(self.default_page_kb)
    }
}

/// `2M`, `1G`, `2048k` (mount options) in kB.
fn parse_size_kb(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" => Some(n),
        "m" | "mb" => Some(n * 1024),
        "g" | "gb" => Some(n * 1024 * 1024),
        "" => Some(n / 1024),
        _ => None,
    }
}

/// `/proc/mounts` writes a space in a path as `\040`.
fn unescape_mount(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
}

/// The value of EAL option `name` (`--opt V`, `--opt=V`, and for short
/// options `-mV`).
fn eal_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == name {
            return it.next().map(String::as_str);
        }
        if let Some(v) = a.strip_prefix(name) {
            if let Some(v) = v.strip_prefix('=') {
                return Some(v);
            }
            if !name.starts_with("--") && !v.is_empty() {
                return Some(v);
            }
        }
    }
    None
}

/// The memory EAL reserves at start, in MB (`-m`, or `--socket-mem`
/// summed over the NUMA nodes); `None` when it takes what it needs later.
fn requested_mb(args: &[String]) -> Option<u64> {
    if let Some(m) = eal_value(args, "-m") {
        return m.trim().parse().ok();
    }
    let per_node = eal_value(args, "--socket-mem")?;
    per_node.split(',').try_fold(0u64, |sum, n| Some(sum.saturating_add(n.trim().parse::<u64>().ok()?)))
}

fn human_kb(kb: u64) -> String {
    if kb >= 1024 * 1024 && kb.is_multiple_of(1024 * 1024) {
        format!("{} GB", kb / (1024 * 1024))
    } else if kb >= 1024 {
        format!("{} MB", kb / 1024)
    } else {
        format!("{kb} kB")
    }
}

/// Checks the host against the EAL arguments lbd will pass. `Err` is the
/// whole message for the operator: what is missing and what to run.
pub fn check(args: &[String], host: &HostMemory) -> Result<(), String> {
    let has = |flag: &str| args.iter().any(|a| a == flag);
    // No hugepages asked for; a secondary process maps the primary's.
    if has("--no-huge") || eal_value(args, "--proc-type").is_some_and(|t| t == "secondary") {
        return Ok(());
    }
    // --in-memory backs pages with memfd: no mount is needed.
    let in_memory = has("--in-memory");
    let huge_dir = eal_value(args, "--huge-dir");
    let usable_mounts: Vec<&Mount> =
        host.mounts.iter().filter(|m| huge_dir.is_none_or(|d| Path::new(d) == Path::new(&m.dir))).collect();
    let trial = "for a trial without hugepages, add \"--no-huge\", \"-m\", \"1024\" to `eal` (slower)";
    if !in_memory && usable_mounts.is_empty() {
        let what = match huge_dir {
            Some(d) => format!("--huge-dir {d} is not a mounted hugetlbfs"),
            None => "no hugetlbfs is mounted (none in /proc/mounts)".to_owned(),
        };
        return Err(format!(
            "hugepages: {what}; DPDK needs one unless `eal` has --no-huge. Mount it: `{SCRIPT} mount` (or `mount -t \
             hugetlbfs nodev /dev/hugepages`); {trial}"
        ));
    }
    // The sizes EAL can use: those with a mount (any with --in-memory).
    let usable: Vec<&Pool> = host
        .pools
        .iter()
        .filter(|p| in_memory || usable_mounts.iter().any(|m| host.mount_page_kb(m) == Some(p.page_kb)))
        .collect();
    let free_kb = usable.iter().fold(0u64, |sum, p| sum.saturating_add(p.free.saturating_mul(p.page_kb)));
    let listing = || {
        if host.pools.is_empty() {
            "the kernel reports no hugepage pools".to_owned()
        } else {
            host.pools
                .iter()
                .map(|p| format!("{} pages: {} reserved, {} free", human_kb(p.page_kb), p.total, p.free))
                .collect::<Vec<_>>()
                .join("; ")
        }
    };
    let reserve = format!("`{SCRIPT} reserve 1024` reserves 1024 pages of 2 MB (2 GB) now and at every boot");
    if free_kb == 0 {
        let mounted = if in_memory {
            String::new()
        } else {
            let sizes: Vec<String> = usable_mounts
                .iter()
                .map(|m| format!("{} ({})", m.dir, host.mount_page_kb(m).map_or("?".to_owned(), human_kb)))
                .collect();
            format!(" usable through the mount(s) {}", sizes.join(", "))
        };
        return Err(format!(
            "hugepages: none free{mounted} ({}); DPDK needs them unless `eal` has --no-huge. {reserve}; {trial}",
            listing()
        ));
    }
    if let Some(mb) = requested_mb(args) {
        if mb.saturating_mul(1024) > free_kb {
            return Err(format!(
                "hugepages: `eal` asks for {mb} MB (-m/--socket-mem) but only {} are free ({}). Reserve more \
                 ({reserve}) or lower -m; {trial}",
                human_kb(free_kb),
                listing()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMINFO_NONE: &str = "MemTotal:        8000000 kB\nHugePages_Total:       0\nHugePages_Free:        0\nHugePages_Rsvd:        0\nHugePages_Surp:        0\nHugepagesize:       2048 kB\nHugetlb:               0 kB\n";
    const MEMINFO_256: &str = "MemTotal:        8000000 kB\nHugePages_Total:     256\nHugePages_Free:      200\nHugePages_Rsvd:        0\nHugePages_Surp:        0\nHugepagesize:       2048 kB\n";
    const MOUNTS_2M: &str =
        "proc /proc proc rw,nosuid 0 0\nnodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n";
    const MOUNTS_NONE: &str = "proc /proc proc rw,nosuid 0 0\ntmpfs /run tmpfs rw 0 0\n";

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_meminfo_and_mounts() {
        let h = HostMemory::parse(MEMINFO_256, "nodev /mnt/huge\\0401g hugetlbfs rw,pagesize=1024M 0 0\n", vec![]);
        assert_eq!(h.default_page_kb, Some(2048));
        assert_eq!(h.pools, vec![Pool { page_kb: 2048, total: 256, free: 200 }]);
        assert_eq!(h.mounts, vec![Mount { dir: "/mnt/huge 1g".into(), page_kb: Some(1024 * 1024) }]);
        // sysfs pools win over meminfo's default-size figures.
        let h = HostMemory::parse(MEMINFO_256, MOUNTS_2M, vec![Pool { page_kb: 1048576, total: 4, free: 4 }]);
        assert_eq!(h.pools.len(), 1);
        assert_eq!(h.pools[0].page_kb, 1048576);
    }

    #[test]
    fn enough_pages_and_a_mount_pass() {
        let h = HostMemory::parse(MEMINFO_256, MOUNTS_2M, vec![]);
        assert_eq!(check(&args(&["lbd", "-a", "0000:01:00.0"]), &h), Ok(()));
        assert_eq!(check(&args(&["lbd", "-m", "400"]), &h), Ok(()));
        assert_eq!(check(&args(&["lbd", "--socket-mem=200,200"]), &h), Ok(()));
    }

    #[test]
    fn no_free_pages_names_the_script_and_no_huge() {
        let h = HostMemory::parse(MEMINFO_NONE, MOUNTS_2M, vec![]);
        let e = check(&args(&["lbd", "--no-pci"]), &h).unwrap_err();
        assert!(e.contains("none free"), "{e}");
        assert!(e.contains("lbd-hugepages reserve"), "{e}");
        assert!(e.contains("--no-huge"), "{e}");
        assert!(e.contains("2 MB pages: 0 reserved, 0 free"), "{e}");
        assert!(e.contains("/dev/hugepages (2 MB)"), "{e}");
    }

    #[test]
    fn no_mount_says_mount() {
        let h = HostMemory::parse(MEMINFO_256, MOUNTS_NONE, vec![]);
        let e = check(&args(&["lbd"]), &h).unwrap_err();
        assert!(e.contains("no hugetlbfs is mounted"), "{e}");
        assert!(e.contains("lbd-hugepages mount"), "{e}");
        assert!(e.contains("--no-huge"), "{e}");
        // --in-memory needs pages but no mount.
        assert_eq!(check(&args(&["lbd", "--in-memory"]), &h), Ok(()));
        // A --huge-dir that is not the mount.
        let h = HostMemory::parse(MEMINFO_256, MOUNTS_2M, vec![]);
        let e = check(&args(&["lbd", "--huge-dir", "/mnt/huge"]), &h).unwrap_err();
        assert!(e.contains("--huge-dir /mnt/huge is not a mounted hugetlbfs"), "{e}");
        assert_eq!(check(&args(&["lbd", "--huge-dir=/dev/hugepages"]), &h), Ok(()));
    }

    #[test]
    fn pages_of_a_size_without_a_mount_do_not_count() {
        // 1 GB pages reserved, only a 2 MB mount: EAL cannot use them.
        let pools = vec![Pool { page_kb: 2048, total: 0, free: 0 }, Pool { page_kb: 1048576, total: 4, free: 4 }];
        let h = HostMemory::parse(MEMINFO_NONE, MOUNTS_2M, pools.clone());
        let e = check(&args(&["lbd"]), &h).unwrap_err();
        assert!(e.contains("1 GB pages: 4 reserved, 4 free"), "{e}");
        let h = HostMemory::parse(MEMINFO_NONE, "nodev /dev/hugepages1G hugetlbfs rw,pagesize=1G 0 0\n", pools);
        assert_eq!(check(&args(&["lbd", "-m", "4096"]), &h), Ok(()));
    }

    #[test]
    fn asking_for_more_than_is_free_is_refused() {
        let h = HostMemory::parse(MEMINFO_256, MOUNTS_2M, vec![]);
        let e = check(&args(&["lbd", "-m", "1024"]), &h).unwrap_err();
        assert!(e.contains("asks for 1024 MB") && e.contains("only 400 MB are free"), "{e}");
        assert!(e.contains("lbd-hugepages reserve") && e.contains("--no-huge"), "{e}");
        let e = check(&args(&["lbd", "-m1024"]), &h).unwrap_err();
        assert!(e.contains("asks for 1024 MB"), "{e}");
        let e = check(&args(&["lbd", "--socket-mem", "512,512"]), &h).unwrap_err();
        assert!(e.contains("asks for 1024 MB"), "{e}");
        // Figures near the integer limit are refused, never an overflow.
        let max = u64::MAX.to_string();
        assert!(check(&args(&["lbd", "-m", &max]), &h).is_err());
        assert!(check(&args(&["lbd", &format!("--socket-mem={max},{max}")]), &h).is_err());
    }

    #[test]
    fn no_huge_and_secondary_skip_the_check() {
        let h = HostMemory::parse(MEMINFO_NONE, MOUNTS_NONE, vec![]);
        assert_eq!(check(&args(&["lbd", "--no-huge", "-m", "1024"]), &h), Ok(()));
        assert_eq!(check(&args(&["lbd", "--proc-type=secondary"]), &h), Ok(()));
        assert!(check(&args(&["lbd", "--proc-type=primary"]), &h).is_err());
    }
}
