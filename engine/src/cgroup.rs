//! The CPU and memory limits the kernel enforces on this process, read from its cgroup
//! (v2 `cpu.max`/`memory.max`, or v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`/`memory.limit_in_bytes`).

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Which cgroup hierarchy the limits were read from.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// The unified hierarchy.
    V2,
    /// Per-controller hierarchies.
    V1,
    /// No cgroup file could be read (not Linux, or no cgroup filesystem mounted).
    None,
}

/// CPU limit as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CpuLimit {
    /// Hierarchy the figures come from.
    pub cgroup: CgroupVersion,
    /// CFS quota in microseconds per period; `None` when unlimited.
    pub quota_micros: Option<u64>,
    /// CFS period in microseconds.
    pub period_micros: Option<u64>,
    /// quota / period: the number of CPUs this process may use; `None` when unlimited.
    pub cpus: Option<f64>,
    /// The directory the files were read from.
    pub path: Option<String>,
}

/// Memory limit as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryLimit {
    /// Hierarchy the figure comes from.
    pub cgroup: CgroupVersion,
    /// Limit in bytes; `None` when unlimited.
    pub limit_bytes: Option<u64>,
    /// Current usage in bytes, when readable.
    pub usage_bytes: Option<u64>,
    /// The directory the files were read from.
    pub path: Option<String>,
}

/// v1 reports "no limit" as a huge page-aligned number; anything at or above this is unlimited.
const V1_UNLIMITED: u64 = 1 << 62;

/// Parse v2 `cpu.max` ("max 100000" or "25000 100000") into (quota, period).
pub fn parse_cpu_max(text: &str) -> Option<(Option<u64>, u64)> {
    let mut parts = text.split_whitespace();
    let quota = parts.next()?;
    let period = parts.next()?.parse().ok()?;
    let quota = if quota == "max" {
        None
    } else {
        Some(quota.parse().ok()?)
    };
    Some((quota, period))
}

/// Parse a v2 `memory.max` ("max" or bytes) or a v1 `memory.limit_in_bytes`.
pub fn parse_memory_limit(text: &str) -> Option<Option<u64>> {
    let t = text.trim();
    if t == "max" {
        return Some(None);
    }
    let v: u64 = t.parse().ok()?;
    Some(if v >= V1_UNLIMITED { None } else { Some(v) })
}

/// Parse `/proc/self/cgroup` into (v2 path, v1 controller → path).
fn own_paths(proc_cgroup: &str) -> (Option<String>, Vec<(String, String)>) {
    let mut v2 = None;
    let mut v1 = Vec::new();
    for line in proc_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = match (f.next(), f.next(), f.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        if ctrls.is_empty() {
            v2 = Some(path.to_string());
        } else {
            for c in ctrls.split(',') {
                v1.push((c.to_string(), path.to_string()));
            }
        }
    }
    (v2, v1)
}

/// Reads limits under a cgroup mount root (normally `/sys/fs/cgroup`).
#[derive(Debug, Clone)]
pub struct CgroupReader {
    root: PathBuf,
    proc_cgroup: String,
}

impl CgroupReader {
    /// The reader for this process.
    pub fn for_self() -> Self {
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        CgroupReader {
            root: PathBuf::from("/sys/fs/cgroup"),
            proc_cgroup,
        }
    }

    /// A reader over another root, with the given `/proc/self/cgroup` text (for tests).
    pub fn new(root: impl Into<PathBuf>, proc_cgroup: impl Into<String>) -> Self {
        CgroupReader {
            root: root.into(),
            proc_cgroup: proc_cgroup.into(),
        }
    }

    fn is_v2(&self) -> bool {
        self.root.join("cgroup.controllers").exists()
    }

    /// The first directory holding `file`: this process's own cgroup, then the mount root
    /// (inside a container the mount root already is the container's cgroup).
    fn find(&self, controller: Option<&str>, file: &str) -> Option<PathBuf> {
        let (v2, v1) = own_paths(&self.proc_cgroup);
        let base = match controller {
            None => self.root.clone(),
            Some(c) => self.root.join(c),
        };
        let own = match controller {
            None => v2,
            Some(c) => v1.into_iter().find(|(name, _)| name == c).map(|(_, p)| p),
        };
        let candidates = own
            .map(|p| base.join(p.trim_start_matches('/')))
            .into_iter()
            .chain(std::iter::once(base));
        candidates.into_iter().find(|dir| dir.join(file).is_file())
    }

    /// The CPU limit.
    pub fn cpu(&self) -> CpuLimit {
        let none = CpuLimit {
            cgroup: CgroupVersion::None,
            quota_micros: None,
            period_micros: None,
            cpus: None,
            path: None,
        };
        if self.is_v2() {
            let Some(dir) = self.find(None, "cpu.max") else {
                return none;
            };
            let Some((quota, period)) = read(&dir.join("cpu.max")).and_then(|t| parse_cpu_max(&t))
            else {
                return none;
            };
            return cpu_limit(CgroupVersion::V2, quota, period, &dir);
        }
        let Some(dir) = self.find(Some("cpu"), "cpu.cfs_quota_us") else {
            return none;
        };
        let quota: Option<i64> =
            read(&dir.join("cpu.cfs_quota_us")).and_then(|t| t.trim().parse().ok());
        let period: Option<u64> =
            read(&dir.join("cpu.cfs_period_us")).and_then(|t| t.trim().parse().ok());
        match (quota, period) {
            (Some(q), Some(p)) => cpu_limit(CgroupVersion::V1, u64::try_from(q).ok(), p, &dir),
            _ => none,
        }
    }

    /// The memory limit and current usage.
    pub fn memory(&self) -> MemoryLimit {
        let none = MemoryLimit {
            cgroup: CgroupVersion::None,
            limit_bytes: None,
            usage_bytes: None,
            path: None,
        };
        let (version, dir, limit_file, usage_file) = if self.is_v2() {
            match self.find(None, "memory.max") {
                Some(d) => (CgroupVersion::V2, d, "memory.max", "memory.current"),
                None => return none,
            }
        } else {
            match self.find(Some("memory"), "memory.limit_in_bytes") {
                Some(d) => (
                    CgroupVersion::V1,
                    d,
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                ),
                None => return none,
            }
        };
        let Some(limit) = read(&dir.join(limit_file)).and_then(|t| parse_memory_limit(&t)) else {
            return none;
        };
        let usage = read(&dir.join(usage_file)).and_then(|t| t.trim().parse().ok());
        MemoryLimit {
            cgroup: version,
            limit_bytes: limit,
            usage_bytes: usage,
            path: Some(dir.display().to_string()),
        }
    }
}

fn cpu_limit(cgroup: CgroupVersion, quota: Option<u64>, period: u64, dir: &Path) -> CpuLimit {
    let cpus = quota
        .filter(|_| period > 0)
        .map(|q| q as f64 / period as f64);
    CpuLimit {
        cgroup,
        quota_micros: quota,
        period_micros: Some(period),
        cpus,
        path: Some(dir.display().to_string()),
    }
}

/// The limits written into a tenant's own cgroup (from its tier).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantLimits {
    /// CPU in millicores.
    pub cpu_millis: Option<u64>,
    /// CPU weight against sibling tenants (v2 `cpu.weight`, v1 `cpu.shares`).
    pub priority: Option<crate::config::Priority>,
    /// Memory in bytes.
    pub memory_bytes: Option<u64>,
    /// IO operations a second, for reads and for writes.
    pub iops: Option<u32>,
    /// IO bytes a second, for reads and for writes.
    pub io_bytes_per_second: Option<u64>,
    /// The block device (major, minor) that IO limits apply to: the data directory's.
    pub device: Option<(u64, u64)>,
}

/// A tenant's own cgroup, made by [`CgroupReader::create_tenant`].
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantCgroup {
    /// Hierarchy it lives in.
    pub cgroup: CgroupVersion,
    /// Its directories (one on v2; one a controller on v1).
    pub paths: Vec<String>,
    /// Every file written, with the value written.
    pub written: Vec<(String, String)>,
    /// The file that throttles IO, when the data directory is on a block device.
    pub io_file: Option<String>,
}

/// Why a tenant cgroup could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup filesystem under the root.
    #[error("no cgroup filesystem at {0}")]
    NotMounted(String),
    /// A name that is not a plain directory name.
    #[error("cgroup name {0:?} must be letters, digits, '-' or '_'")]
    BadName(String),
    /// The kernel refused a write (not root, read-only, or controller not enabled).
    #[error("{path}: {source}")]
    Write {
        /// The file or directory.
        path: String,
        /// What the kernel said.
        source: std::io::Error,
    },
}

fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.display().to_string(),
        source,
    })
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Write {
        path: path.display().to_string(),
        source,
    })
}

fn plain_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadName(name.into()))
    }
}

/// The CFS period written with a quota, in microseconds.
pub const CFS_PERIOD_MICROS: u64 = 100_000;

/// The CFS quota for `millis` of CPU a period (at least 1 ms, the kernel's minimum).
fn cfs_quota_micros(millis: u64) -> u64 {
    (millis * CFS_PERIOD_MICROS / 1000).max(1000)
}

/// Records each cgroup file written, with its value.
#[derive(Default)]
struct Writes(Vec<(String, String)>);

impl Writes {
    fn put(&mut self, path: PathBuf, value: String) -> Result<(), CgroupError> {
        write_file(&path, &value)?;
        self.0.push((path.display().to_string(), value));
        Ok(())
    }
}

impl CgroupReader {
    /// Make `<parent>/<tenant>` under the cgroup root (in each controller's hierarchy on
    /// v1) and write the tenant's limits: v2 `cpu.max`, `cpu.weight`, `memory.max`,
    /// `io.max`; v1 `cpu.cfs_quota_us`/`cfs_period_us`, `cpu.shares`, `memory.limit_in_bytes`,
    /// `blkio.throttle.{read,write}_{iops,bps}_device`. Needs root and a writable cgroup
    /// filesystem: standalone mode. Nothing is moved into it (see [`TenantCgroup::enter`]).
    pub fn create_tenant(
        &self,
        parent: &str,
        tenant: &str,
        limits: &TenantLimits,
    ) -> Result<TenantCgroup, CgroupError> {
        plain_name(parent)?;
        plain_name(tenant)?;
        if self.is_v2() {
            self.create_tenant_v2(parent, tenant, limits)
        } else {
            self.create_tenant_v1(parent, tenant, limits)
        }
    }

    fn create_tenant_v2(
        &self,
        parent: &str,
        tenant: &str,
        limits: &TenantLimits,
    ) -> Result<TenantCgroup, CgroupError> {
        // Controllers must be enabled in every ancestor's subtree_control.
        let parent_dir = self.root.join(parent);
        make_dir(&parent_dir)?;
        for dir in [&self.root, &parent_dir] {
            for c in ["+cpu", "+memory", "+io"] {
                // A controller the kernel lacks is refused; the limit file then is too.
                let _ = std::fs::write(dir.join("cgroup.subtree_control"), c);
            }
        }
        let dir = parent_dir.join(tenant);
        make_dir(&dir)?;
        let mut w = Writes::default();
        if let Some(m) = limits.cpu_millis {
            w.put(
                dir.join("cpu.max"),
                format!("{} {CFS_PERIOD_MICROS}", cfs_quota_micros(m)),
            )?;
        }
        if let Some(p) = limits.priority {
            w.put(dir.join("cpu.weight"), p.cpu_weight().to_string())?;
        }
        if let Some(b) = limits.memory_bytes {
            w.put(dir.join("memory.max"), b.to_string())?;
        }
        let mut io_file = None;
        if let (Some((maj, min)), true) = (
            limits.device,
            limits.iops.is_some() || limits.io_bytes_per_second.is_some(),
        ) {
            let mut v = format!("{maj}:{min}");
            if let Some(i) = limits.iops {
                v += &format!(" riops={i} wiops={i}");
            }
            if let Some(b) = limits.io_bytes_per_second {
                v += &format!(" rbps={b} wbps={b}");
            }
            w.put(dir.join("io.max"), v)?;
            io_file = Some("io.max".to_string());
        }
        Ok(TenantCgroup {
            cgroup: CgroupVersion::V2,
            paths: vec![dir.display().to_string()],
            written: w.0,
            io_file,
        })
    }

    fn create_tenant_v1(
        &self,
        parent: &str,
        tenant: &str,
        limits: &TenantLimits,
    ) -> Result<TenantCgroup, CgroupError> {
        if !self.root.join("cpu").is_dir() && !self.root.join("memory").is_dir() {
            return Err(CgroupError::NotMounted(self.root.display().to_string()));
        }
        let mut paths = Vec::new();
        let mut dir_for = |controller: &str| -> Result<PathBuf, CgroupError> {
            let dir = self.root.join(controller).join(parent).join(tenant);
            make_dir(&dir)?;
            paths.push(dir.display().to_string());
            Ok(dir)
        };
        let mut w = Writes::default();
        if limits.cpu_millis.is_some() || limits.priority.is_some() {
            let dir = dir_for("cpu")?;
            if let Some(m) = limits.cpu_millis {
                w.put(dir.join("cpu.cfs_period_us"), CFS_PERIOD_MICROS.to_string())?;
                w.put(
                    dir.join("cpu.cfs_quota_us"),
                    cfs_quota_micros(m).to_string(),
                )?;
            }
            if let Some(p) = limits.priority {
                w.put(dir.join("cpu.shares"), p.cpu_shares().to_string())?;
            }
        }
        if let Some(b) = limits.memory_bytes {
            let dir = dir_for("memory")?;
            w.put(dir.join("memory.limit_in_bytes"), b.to_string())?;
        }
        let mut io_file = None;
        if let Some((maj, min)) = limits.device {
            let mut files = Vec::new();
            if let Some(i) = limits.iops {
                files.extend([
                    ("read_iops_device", u64::from(i)),
                    ("write_iops_device", u64::from(i)),
                ]);
            }
            if let Some(b) = limits.io_bytes_per_second {
                files.extend([("read_bps_device", b), ("write_bps_device", b)]);
            }
            if !files.is_empty() {
                let dir = dir_for("blkio")?;
                for (f, v) in &files {
                    w.put(
                        dir.join(format!("blkio.throttle.{f}")),
                        format!("{maj}:{min} {v}"),
                    )?;
                }
                io_file = Some("blkio.throttle.*_device".to_string());
            }
        }
        Ok(TenantCgroup {
            cgroup: CgroupVersion::V1,
            paths,
            written: w.0,
            io_file,
        })
    }
}

impl TenantCgroup {
    /// Move process `pid` (every thread of it) into this cgroup.
    pub fn enter(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in &self.paths {
            write_file(&Path::new(dir).join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Remove the cgroup's directories (they must hold no process).
    pub fn remove(&self) -> Result<(), CgroupError> {
        for dir in &self.paths {
            std::fs::remove_dir(dir).map_err(|source| CgroupError::Write {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// The block device (major, minor) that holds `path`, when it is a real one (major ≠ 0;
/// overlay and tmpfs have none, and cgroup IO limits do not apply to them).
pub fn block_device(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(path).ok()?.dev();
    let (major, minor) = (libc::major(dev) as u64, libc::minor(dev) as u64);
    (major != 0).then_some((major, minor))
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_max() {
        assert_eq!(parse_cpu_max("25000 100000\n"), Some((Some(25000), 100000)));
        assert_eq!(parse_cpu_max("max 100000"), Some((None, 100000)));
        assert_eq!(parse_cpu_max("garbage"), None);
    }

    #[test]
    fn parses_memory_limits() {
        assert_eq!(parse_memory_limit("134217728\n"), Some(Some(134217728)));
        assert_eq!(parse_memory_limit("max"), Some(None));
        assert_eq!(parse_memory_limit("9223372036854771712"), Some(None));
        assert_eq!(parse_memory_limit("x"), None);
    }

    #[test]
    fn reads_v1_limits_from_own_cgroup() {
        let root = tempfile::tempdir().unwrap();
        let own = root.path().join("cpu/kubepods/pod1/c1");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::write(own.join("cpu.cfs_quota_us"), "50000\n").unwrap();
        std::fs::write(own.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let mem = root.path().join("memory/kubepods/pod1/c1");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "268435456\n").unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "1000\n").unwrap();
        let reader = CgroupReader::new(
            root.path(),
            "4:cpu,cpuacct:/kubepods/pod1/c1\n3:memory:/kubepods/pod1/c1\n",
        );
        let cpu = reader.cpu();
        assert_eq!(cpu.cgroup, CgroupVersion::V1);
        assert_eq!(cpu.cpus, Some(0.5));
        let memory = reader.memory();
        assert_eq!(memory.limit_bytes, Some(268435456));
        assert_eq!(memory.usage_bytes, Some(1000));
    }

    #[test]
    fn reads_v2_limits_at_the_namespace_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::write(root.path().join("cpu.max"), "max 100000\n").unwrap();
        std::fs::write(root.path().join("memory.max"), "536870912\n").unwrap();
        let reader = CgroupReader::new(root.path(), "0::/\n");
        assert_eq!(reader.cpu().cpus, None);
        assert_eq!(reader.cpu().cgroup, CgroupVersion::V2);
        assert_eq!(reader.memory().limit_bytes, Some(536870912));
    }
}
