//! The sandbox every node runs in (../shared/spec/local-sandbox-spike.md): besides its
//! network namespace, a node has its own mount namespace with a private root filesystem
//! (host /usr read-only; its own /etc, /run, /tmp, /dev, /var/lib/docker), its own PID, UTS,
//! IPC and cgroup namespaces, and one cgroup subtree per hierarchy. Its dockerd remaps
//! container users to a 65536-uid range of its own and asks our authorization plugin
//! (`magnum-node-authz`, started inside the sandbox) before every API call. One nftables
//! table per cluster keeps the cluster's bridge away from the host and from other clusters.
//!
//! The layers back each other up: the plugin refuses what would reach outside the node, the
//! private root and PID namespace contain whatever the plugin cannot see (a symlink planted
//! in a volume), and the user namespace makes a container's root an unprivileged uid on the
//! host.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use magnum_driver::DriverError;

/// The name dockerd knows the plugin by (`/run/docker/plugins/<name>.sock` in the node).
pub const AUTHZ_PLUGIN: &str = "magnum-authz";
/// The user whose subordinate ranges dockerd maps container users to.
const REMAP_USER: &str = "dockremap";
const REMAP_ID: u32 = 4999;
/// Each node owns `[slot × RANGE, (slot + 1) × RANGE)` of host uids and gids; slots below
/// `FIRST_SLOT` are left to the host's own users and their subordinate ranges.
const RANGE: u32 = 65_536;
const FIRST_SLOT: u32 = 16;
const LAST_SLOT: u32 = 65_534;
// The last range ends below uid 4294967295, which the kernel reserves.
const _: () = assert!(LAST_SLOT * RANGE + (RANGE - 1) < u32::MAX);
/// What a node's own daemons (dockerd, containerd, shims, the plugin) may use beyond the
/// limits of its containers.
const NODE_OVERHEAD_MIB: u64 = 512;
const NODE_OVERHEAD_PIDS: u32 = 1024;
/// How long a node's dockerd gets to stop on SIGTERM before the node is killed.
/// A node's dockerd.log is trimmed past this size, to its newest `LOG_KEPT` bytes.
pub const LOG_LIMIT: u64 = 8 * 1024 * 1024;
const LOG_KEPT: u64 = 256 * 1024;

pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// The cgroup v1 hierarchies a node gets a subtree in (those mounted on this host).
const HIERARCHIES: [&str; 10] = [
    "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "systemd",
    "unified",
];

fn failed(message: impl Into<String>) -> DriverError {
    DriverError::Failed(message.into())
}

/// Runs as the node's first process (`sh -c`), in its fresh namespaces: builds the private
/// root under `$NODE_DIR/root`, pivots into it, and hands over to docker-init (tini), which
/// reaps orphans and forwards SIGTERM to dockerd. When dockerd exits, docker-init exits and
/// the kernel kills everything left in the node's PID namespace: shims, containers and the
/// plugin. Nothing mounted here is visible on the host (private propagation).
const NODE_INIT: &str = r#"set -eu
R="$NODE_DIR/root"
hostname "$NODE_HOSTNAME"
mount -t tmpfs -o mode=755,size=16m,nosuid magnum-node "$R"
mkdir -p "$R/usr" "$R/etc/docker/tls" "$R/var/lib/docker" "$R/run" "$R/tmp" "$R/proc" "$R/sys" "$R/dev" "$R/root" "$R/opt/magnum"
mount --rbind /usr "$R/usr"
# Read-only, but not nosuid/nodev: `--init` containers get /usr/bin/docker-init bind-mounted
# by runc, which a user namespace cannot do from a mount with flags it may not clear.
mount -o remount,bind,ro "$R/usr"
for link in bin sbin lib lib32 lib64 libx32; do
  if [ -e "/usr/$link" ]; then ln -s "usr/$link" "$R/$link"; fi
done
ln -s /run "$R/var/run"
for file in hosts nsswitch.conf ld.so.cache localtime resolv.conf; do
  if [ -e "/etc/$file" ]; then cp -L "/etc/$file" "$R/etc/"; fi
done
cp -a /etc/alternatives "$R/etc/"
cp -a "$NODE_DIR/etc/." "$R/etc/"
mount --bind -o ro "$NODE_DIR/tls" "$R/etc/docker/tls"
mount --bind "$NODE_DIR/data" "$R/var/lib/docker"
mount -t tmpfs -o mode=755,size=64m,nosuid,nodev magnum-run "$R/run"
mkdir -p "$R/run/magnum" "$R/run/docker/plugins"
mount --bind "$NODE_RUN_DIR" "$R/run/magnum"
touch "$R/opt/magnum/magnum-node-authz"
mount --bind -o ro "$AUTHZ_BINARY" "$R/opt/magnum/magnum-node-authz"
cp "$NODE_DIR/start-dockerd" "$R/opt/magnum/start-dockerd"
mount -t tmpfs -o mode=1777,size=64m,nosuid,nodev magnum-tmp "$R/tmp"
mount -t tmpfs -o mode=755,size=64k,nosuid magnum-dev "$R/dev"
mknod -m 666 "$R/dev/null" c 1 3
mknod -m 666 "$R/dev/zero" c 1 5
mknod -m 666 "$R/dev/full" c 1 7
mknod -m 666 "$R/dev/random" c 1 8
mknod -m 666 "$R/dev/urandom" c 1 9
mknod -m 666 "$R/dev/tty" c 5 0
mkdir "$R/dev/pts" "$R/dev/shm" "$R/dev/mqueue"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"
mount -t tmpfs -o mode=1777,nosuid,nodev,size=64m shm "$R/dev/shm"
mount -t mqueue mqueue "$R/dev/mqueue"
ln -s /proc/self/fd "$R/dev/fd"
ln -s /proc/self/fd/0 "$R/dev/stdin"
ln -s /proc/self/fd/1 "$R/dev/stdout"
ln -s /proc/self/fd/2 "$R/dev/stderr"
mount -t proc -o nosuid,nodev,noexec proc "$R/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys"
mount -t tmpfs -o mode=755 cgroup "$R/sys/fs/cgroup"
for hierarchy in cpu cpuacct cpuset memory devices freezer blkio pids; do
  mkdir -p "$R/sys/fs/cgroup/$hierarchy"
  mount -t cgroup -o "$hierarchy" cgroup "$R/sys/fs/cgroup/$hierarchy"
done
mkdir -p "$R/sys/fs/cgroup/systemd" "$R/sys/fs/cgroup/unified"
mount -t cgroup -o none,name=systemd cgroup "$R/sys/fs/cgroup/systemd"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup/unified" 2>/dev/null || true
cd "$R"
mkdir .oldroot
pivot_root . .oldroot
cd /
umount -l /.oldroot
rmdir /.oldroot
exec /usr/bin/docker-init -- /bin/sh /opt/magnum/start-dockerd "$@"
"#;

/// docker-init's child: the authorization plugin, restarted if it ever exits (dockerd fails
/// closed while it is away), then dockerd, once the plugin's socket exists.
const START_DOCKERD: &str = r#"set -u
(while true; do /opt/magnum/magnum-node-authz --socket /run/docker/plugins/magnum-authz.sock; sleep 0.2; done) &
waited=0
while [ ! -S /run/docker/plugins/magnum-authz.sock ] && [ $waited -lt 250 ]; do
  sleep 0.02
  waited=$((waited + 1))
done
exec /usr/sbin/dockerd "$@"
"#;

/// Enters the node's cgroups, records this process as the node, and creates its namespaces.
/// `$$` stays the node's host PID through the `exec`s (`ip netns exec` does not fork).
const NODE_LAUNCH: &str = r#"set -eu
for directory in $NODE_CGROUPS; do echo $$ > "$directory/cgroup.procs"; done
echo $$ > "$NODE_DIR/node.pid"
exec ip netns exec "$NODE_NETNS" unshare --mount --pid --fork --uts --ipc --cgroup \
  --propagation private --kill-child=SIGKILL sh "$NODE_DIR/init" "$@"
"#;

/// Everything one node's sandbox is made of on the host.
#[derive(Debug, Clone)]
pub struct NodeSandbox {
    /// `<state>/clusters/<uuid>/<node>`: data, tls, etc, root, node.pid, dockerd.log.
    pub directory: PathBuf,
    /// Holds the node's docker.sock (short: unix socket paths are limited to 108 bytes).
    pub run_directory: PathBuf,
    pub netns: String,
    /// The node's cgroup in every hierarchy, e.g. `magnum-1a2b3c4d-n1`.
    pub cgroup: String,
    pub hostname: String,
}

/// What a node's containers may use: the flavor's limits and a cap on processes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub vcpus: Option<u32>,
    pub ram_mib: Option<u64>,
    pub pids: u32,
}

impl NodeSandbox {
    pub fn pid_file(&self) -> PathBuf {
        self.directory.join("node.pid")
    }

    pub fn log_file(&self) -> PathBuf {
        self.directory.join("dockerd.log")
    }

    /// The last `lines` lines of the node's log, read from its last 16 KiB only.
    pub fn log_tail(&self, lines: usize) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut file) = std::fs::File::open(self.log_file()) else {
            return String::new();
        };
        let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        // Diagnostics only: what cannot be read is left out.
        let _ = file.seek(SeekFrom::Start(length.saturating_sub(16 * 1024)));
        let mut bytes = Vec::new();
        let _ = file.take(16 * 1024).read_to_end(&mut bytes);
        let text = String::from_utf8_lossy(&bytes);
        let mut tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.reverse();
        tail.join(" / ")
    }

    /// Keeps the node's log under `LOG_LIMIT`: a tenant can make its dockerd log (refused
    /// requests are logged), and the host's disk is not theirs. Past the limit the log keeps
    /// only its newest `LOG_KEPT` bytes. The node writes in append mode, so it goes on at the
    /// new end.
    pub fn trim_log(&self) {
        use std::io::{Read, Seek, SeekFrom};
        let path = self.log_file();
        let Ok(mut file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
        else {
            return;
        };
        let length = file.metadata().map(|meta| meta.len()).unwrap_or(0);
        if length <= LOG_LIMIT {
            return;
        }
        let mut kept = Vec::new();
        if file.seek(SeekFrom::Start(length - LOG_KEPT)).is_err()
            || Read::by_ref(&mut file)
                .take(LOG_KEPT)
                .read_to_end(&mut kept)
                .is_err()
        {
            return;
        }
        let mut trimmed = b"[log trimmed by magnumd]\n".to_vec();
        trimmed.extend_from_slice(&kept);
        // A failure here leaves the log as it was or emptied: either way bounded. The kept
        // part is appended, as dockerd appends: a line it writes meanwhile is not overwritten
        // (it may come before the kept part; lines written during the read are lost).
        if file.set_len(0).is_err() {
            return;
        }
        if let Ok(mut appending) = std::fs::OpenOptions::new().append(true).open(&path) {
            let _ = std::io::Write::write_all(&mut appending, &trimmed);
        }
    }

    pub fn tls_directory(&self) -> PathBuf {
        self.directory.join("tls")
    }

    /// The node's first process on the host (`unshare`), when it runs. A PID is trusted only
    /// while its command line names this node's init script, so a reused PID is never taken
    /// for the node.
    pub fn pid(&self) -> Option<i32> {
        let text = std::fs::read_to_string(self.pid_file()).ok()?;
        let pid: i32 = text.trim().parse().ok()?;
        let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let init = self.directory.join("init").display().to_string();
        let names_node = command_line
            .split(|byte| *byte == 0)
            .any(|argument| argument == init.as_bytes());
        names_node.then_some(pid)
    }

    /// Prepares the node's private files and cgroups, and starts it detached from magnumd.
    /// `dockerd_arguments` are paths as the node sees them.
    pub fn launch(
        &self,
        authz_binary: &Path,
        uid_slot: u32,
        limits: Limits,
        dockerd_arguments: &[String],
    ) -> Result<(), DriverError> {
        for directory in [
            self.directory.join("data"),
            self.directory.join("root"),
            self.directory.join("etc"),
            self.tls_directory(),
            self.run_directory.clone(),
        ] {
            std::fs::create_dir_all(&directory).map_err(|error| {
                failed(format!("cannot create {}: {error}", directory.display()))
            })?;
        }
        self.write_private_etc(uid_slot)?;
        for (name, script) in [("init", NODE_INIT), ("start-dockerd", START_DOCKERD)] {
            write_private(&self.directory.join(name), script.as_bytes())?;
        }
        let cgroups = self.create_cgroups(limits)?;
        // Appended to, not replaced: a restarted node's log still says why it went down.
        self.trim_log();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.log_file())
            .map_err(|error| failed(format!("cannot create the node log: {error}")))?;
        let log_err = log
            .try_clone()
            .map_err(|error| failed(format!("cannot create the node log: {error}")))?;
        let mut arguments = vec![
            "--userns-remap".to_owned(),
            format!("{REMAP_USER}:{REMAP_USER}"),
            "--authorization-plugin".to_owned(),
            AUTHZ_PLUGIN.to_owned(),
            "--cgroup-parent".to_owned(),
            "/containers".to_owned(),
        ];
        arguments.extend_from_slice(dockerd_arguments);
        let mut command = std::process::Command::new("setsid");
        // --fork: the node is re-parented to init at once; magnumd holds no child for it.
        command
            .args(["--fork", "sh", "-c", NODE_LAUNCH, "sh"])
            .args(&arguments)
            .env("NODE_DIR", &self.directory)
            .env("NODE_RUN_DIR", &self.run_directory)
            .env("NODE_NETNS", &self.netns)
            .env("NODE_HOSTNAME", &self.hostname)
            .env("NODE_CGROUPS", cgroups.join(" "))
            .env("AUTHZ_BINARY", authz_binary)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut child = command
            .spawn()
            .map_err(|error| failed(format!("cannot start node {}: {error}", self.netns)))?;
        // setsid --fork returns at once; this reaps it (its exit status says nothing about the
        // node, which runs on detached: launch_dockerd then waits for its dockerd to answer).
        if let Err(error) = child.wait() {
            tracing::warn!(%error, "cannot reap setsid");
        }
        Ok(())
    }

    /// The node's /etc additions: the remapping user and its subordinate id ranges. The
    /// host's own /etc/subuid and /etc/subgid are never touched.
    fn write_private_etc(&self, uid_slot: u32) -> Result<(), DriverError> {
        let etc = self.directory.join("etc");
        let first = uid_slot * RANGE;
        let with_user = |host: &str, line: String| {
            let mut text = std::fs::read_to_string(host).unwrap_or_default();
            if !text
                .lines()
                .any(|entry| entry.starts_with(&format!("{REMAP_USER}:")))
            {
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push_str(&line);
            }
            text
        };
        let files = [
            (
                "passwd",
                with_user(
                    "/etc/passwd",
                    format!(
                        "{REMAP_USER}:x:{REMAP_ID}:{REMAP_ID}::/nonexistent:/usr/sbin/nologin\n"
                    ),
                ),
            ),
            (
                "group",
                with_user("/etc/group", format!("{REMAP_USER}:x:{REMAP_ID}:\n")),
            ),
            ("subuid", format!("{REMAP_USER}:{first}:{RANGE}\n")),
            ("subgid", format!("{REMAP_USER}:{first}:{RANGE}\n")),
            ("hostname", format!("{}\n", self.hostname)),
        ];
        for (name, contents) in files {
            std::fs::write(etc.join(name), contents)
                .map_err(|error| failed(format!("cannot write the node's /etc/{name}: {error}")))?;
        }
        Ok(())
    }

    /// One cgroup per hierarchy for the whole node (it becomes the node's cgroup namespace
    /// root), and below it `containers`, where the flavor's limits apply: a container that
    /// runs out of memory is killed, not the node's dockerd.
    fn create_cgroups(&self, limits: Limits) -> Result<Vec<String>, DriverError> {
        let mut node_cgroups = Vec::new();
        for hierarchy in HIERARCHIES {
            let root = Path::new("/sys/fs/cgroup").join(hierarchy);
            if !root.join("cgroup.procs").exists() {
                continue;
            }
            let node = root.join(&self.cgroup);
            let containers = node.join("containers");
            std::fs::create_dir_all(&containers).map_err(|error| {
                failed(format!(
                    "cannot create the cgroup {}: {error}",
                    node.display()
                ))
            })?;
            if hierarchy == "cpuset" {
                // A new cpuset has no CPUs or memory nodes until given its parent's.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    let inherited = std::fs::read_to_string(root.join(file)).unwrap_or_default();
                    for directory in [&node, &containers] {
                        std::fs::write(directory.join(file), inherited.trim()).map_err(
                            |error| {
                                failed(format!(
                                    "cannot give the cgroup {} its {file}: {error}",
                                    directory.display()
                                ))
                            },
                        )?;
                    }
                }
            }
            node_cgroups.push(node.display().to_string());
        }
        let node = |hierarchy: &str| {
            Path::new("/sys/fs/cgroup")
                .join(hierarchy)
                .join(&self.cgroup)
        };
        let containers = |hierarchy: &str| node(hierarchy).join("containers");
        // Limits on the whole node too, above the containers' own, so that nothing the node
        // starts outside `containers` (a build container given another cgroup parent) goes
        // past the flavor by more than what dockerd itself needs.
        let mut settings: Vec<(PathBuf, String)> = Vec::new();
        if let Some(ram_mib) = limits.ram_mib {
            settings.push((
                node("memory").join("memory.limit_in_bytes"),
                ((ram_mib + NODE_OVERHEAD_MIB) * 1024 * 1024).to_string(),
            ));
            settings.push((
                containers("memory").join("memory.limit_in_bytes"),
                (ram_mib * 1024 * 1024).to_string(),
            ));
        }
        if limits.pids > 0 {
            settings.push((
                node("pids").join("pids.max"),
                (limits.pids + NODE_OVERHEAD_PIDS).to_string(),
            ));
        }
        if let Some(vcpus) = limits.vcpus {
            settings.push((node("cpu").join("cpu.cfs_period_us"), "100000".into()));
            settings.push((
                node("cpu").join("cpu.cfs_quota_us"),
                ((u64::from(vcpus) + 1) * 100_000).to_string(),
            ));
            settings.push((containers("cpu").join("cpu.cfs_period_us"), "100000".into()));
            settings.push((
                containers("cpu").join("cpu.cfs_quota_us"),
                (u64::from(vcpus) * 100_000).to_string(),
            ));
        }
        if limits.pids > 0 {
            settings.push((containers("pids").join("pids.max"), limits.pids.to_string()));
        }
        // No real-time scheduling in a node: CFS quotas do not hold real-time tasks back.
        // (New cgroups start with none; this says so where the kernel has the setting.)
        for directory in [node("cpu"), containers("cpu")] {
            let runtime = directory.join("cpu.rt_runtime_us");
            if runtime.exists() {
                settings.insert(0, (runtime, "0".into()));
            }
        }
        for (file, value) in settings {
            if file.parent().is_some_and(Path::exists) {
                std::fs::write(&file, &value).map_err(|error| {
                    failed(format!("cannot set {} to {value}: {error}", file.display()))
                })?;
            }
        }
        Ok(node_cgroups)
    }

    /// Stops the node: SIGTERM to its docker-init (which passes it to dockerd), then, after
    /// `grace`, SIGKILL. Killing the first process takes the whole PID namespace with it.
    pub async fn stop(&self, grace: Duration) {
        let Some(pid) = self.pid() else {
            return;
        };
        if let Some(init) = child_of(pid) {
            signal(init, "TERM").await;
        } else {
            signal(pid, "TERM").await;
        }
        let deadline = Instant::now() + grace;
        while self.pid().is_some() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.pid().is_some() {
            signal(pid, "KILL").await;
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.pid().is_some() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Removes the node's cgroups (depth first: the kernel only removes empty ones).
    pub fn remove_cgroups(&self) {
        for hierarchy in HIERARCHIES {
            remove_cgroup_tree(
                &Path::new("/sys/fs/cgroup")
                    .join(hierarchy)
                    .join(&self.cgroup),
            );
        }
    }
}

async fn signal(pid: i32, name: &str) {
    // The process may be gone already: that is what the caller wants anyway.
    let _ = tokio::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .output()
        .await;
}

/// The child of `parent` (the node's PID 1 for its `unshare`), found through /proc: this
/// kernel has no /proc/<pid>/task/<tid>/children.
fn child_of(parent: i32) -> Option<i32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The command name may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        if fields.get(1).and_then(|ppid| ppid.parse::<i32>().ok()) == Some(parent) {
            return Some(pid);
        }
    }
    None
}

/// Removes every cgroup whose name starts with `prefix` (a cluster's nodes), killing what is
/// left in them first: a node whose launch was cut short before it was recorded is found
/// only this way. Returns the cgroups that are still there (a process that did not die yet).
pub fn remove_cgroups_with_prefix(prefix: &str) -> Vec<PathBuf> {
    let trees = cgroups_with_prefix(prefix);
    let mut members = std::collections::BTreeSet::new();
    for tree in &trees {
        collect_members(tree, &mut members);
    }
    kill_processes(&members.into_iter().collect::<Vec<_>>());
    for tree in &trees {
        remove_cgroup_tree(tree);
    }
    trees.into_iter().filter(|tree| tree.exists()).collect()
}

/// The cgroups, in every hierarchy, whose name starts with `prefix`.
fn cgroups_with_prefix(prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for hierarchy in HIERARCHIES {
        let root = Path::new("/sys/fs/cgroup").join(hierarchy);
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for entry in entries.flatten() {
            let matches = entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(prefix));
            if matches {
                found.push(entry.path());
            }
        }
    }
    found
}

/// Every process of a cgroup tree.
fn collect_members(path: &Path, pids: &mut std::collections::BTreeSet<i32>) {
    if let Ok(members) = std::fs::read_to_string(path.join("cgroup.procs")) {
        pids.extend(
            members
                .split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
    }
    if let Ok(children) = std::fs::read_dir(path) {
        for child in children.flatten() {
            if child.path().is_dir() {
                collect_members(&child.path(), pids);
            }
        }
    }
}

/// Every process of a cluster's nodes, from two places, read without running anything:
/// the members of every cgroup whose name starts with `cgroup_prefix` (a node's cgroup and
/// its `containers` below it, in every hierarchy: the node moves itself there before it
/// makes its namespaces, so everything it starts is in them) and every process in a network
/// namespace of /run/netns whose name starts with `netns_prefix` (a process some other way
/// put in a node's namespace). Processes that have exited (zombies) are in neither.
pub fn cluster_processes(cgroup_prefix: &str, netns_prefix: &str) -> Vec<i32> {
    use std::os::unix::fs::MetadataExt;
    let mut pids = std::collections::BTreeSet::new();
    for tree in cgroups_with_prefix(cgroup_prefix) {
        collect_members(&tree, &mut pids);
    }
    // A namespace is known by its nsfs device and inode, as `ip netns identify` knows it.
    let namespaces: Vec<(u64, u64)> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(netns_prefix))
        })
        .filter_map(|entry| std::fs::metadata(entry.path()).ok())
        .map(|meta| (meta.dev(), meta.ino()))
        .collect();
    if !namespaces.is_empty() {
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<i32>().ok())
            else {
                continue;
            };
            let inside = std::fs::metadata(entry.path().join("ns/net"))
                .is_ok_and(|meta| namespaces.contains(&(meta.dev(), meta.ino())));
            if inside {
                pids.insert(pid);
            }
        }
    }
    pids.into_iter().collect()
}

/// SIGKILLs `pids` with one `kill` (blocking: call it off the async runtime). A PID that is
/// gone already is what the caller wants anyway.
pub fn kill_processes(pids: &[i32]) {
    if pids.is_empty() {
        return;
    }
    let _ = std::process::Command::new("kill")
        .arg("-KILL")
        .arg("--")
        .args(pids.iter().map(i32::to_string))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

fn remove_cgroup_tree(path: &Path) {
    if let Ok(children) = std::fs::read_dir(path) {
        for child in children.flatten() {
            if child.path().is_dir() {
                remove_cgroup_tree(&child.path());
            }
        }
    }
    // A cgroup that still holds a process cannot go; the caller killed them first, and the
    // tests' leftover checks would find one that stays.
    let _ = std::fs::remove_dir(path);
}

/// Host-wide claims, so that no two nodes or clusters on this host — of any magnumd, with any
/// state directory — share a uid range, a subnet or a short name (bridge, netns, cgroup and
/// firewall names are cut from the cluster's id). A claim is a symlink `<kind>/<key>` → the
/// owner's directory; a claim whose owner directory is gone is stale and reused. Claims are
/// made under one exclusive lock and kept on disk: a node keeps its uid range (its images and
/// volumes are owned by it) across host restarts.
#[derive(Debug)]
pub struct HostClaims {
    directory: PathBuf,
    /// Where the host's own subordinate id ranges are declared.
    login_defs: PathBuf,
    subuid: PathBuf,
    subgid: PathBuf,
}

#[cfg(test)]
impl HostClaims {
    /// Claims kept under `directory`, for tests: no host file is read or written.
    pub(crate) fn scratch(directory: &Path) -> Self {
        Self {
            directory: directory.join("claims"),
            login_defs: directory.join("login.defs"),
            subuid: directory.join("subuid"),
            subgid: directory.join("subgid"),
        }
    }
}

impl Default for HostClaims {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("/var/lib/magnum-local/claims"),
            login_defs: PathBuf::from("/etc/login.defs"),
            subuid: PathBuf::from("/etc/subuid"),
            subgid: PathBuf::from("/etc/subgid"),
        }
    }
}

/// Held while claims are read and made.
pub struct ClaimsLock {
    _file: std::fs::File,
}

impl HostClaims {
    /// Takes the host-wide lock.
    pub fn lock(&self) -> Result<ClaimsLock, DriverError> {
        std::fs::create_dir_all(&self.directory).map_err(|error| {
            failed(format!(
                "cannot create {}: {error}",
                self.directory.display()
            ))
        })?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.directory.join(".lock"))
            .map_err(|error| failed(format!("cannot lock the host's claims: {error}")))?;
        file.lock()
            .map_err(|error| failed(format!("cannot lock the host's claims: {error}")))?;
        Ok(ClaimsLock { _file: file })
    }

    /// Who holds `kind/key`, if a live owner does.
    pub fn holder(&self, _lock: &ClaimsLock, kind: &str, key: &str) -> Option<PathBuf> {
        std::fs::read_link(self.directory.join(kind).join(key))
            .ok()
            .filter(|owner| owner.exists())
    }

    /// Claims `kind/key` for `owner` (an existing directory), replacing a stale claim.
    pub fn take(
        &self,
        _lock: &ClaimsLock,
        kind: &str,
        key: &str,
        owner: &Path,
    ) -> Result<(), DriverError> {
        let directory = self.directory.join(kind);
        std::fs::create_dir_all(&directory)
            .map_err(|error| failed(format!("cannot create {}: {error}", directory.display())))?;
        let claim = directory.join(key);
        // A stale claim (its owner gone) is replaced; the usual case is no claim at all.
        let _ = std::fs::remove_file(&claim);
        std::os::unix::fs::symlink(owner, &claim)
            .map_err(|error| failed(format!("cannot claim {kind} {key}: {error}")))
    }

    /// Gives up every claim `owner` holds, of every kind.
    pub fn release(&self, owner: &Path) {
        self.release_where(|held| held == owner);
    }

    /// Gives up every claim whose owner is `directory` or lies under it (a cluster and all
    /// its nodes), of every kind, under one lock.
    pub fn release_within(&self, directory: &Path) {
        self.release_where(|held| held.starts_with(directory));
    }

    /// Gives up, under the lock, every claim whose owner `held` says is to go.
    fn release_where(&self, held: impl Fn(&Path) -> bool) {
        let Ok(_lock) = self.lock() else {
            return;
        };
        let Ok(kinds) = std::fs::read_dir(&self.directory) else {
            return;
        };
        for kind in kinds.flatten().filter(|kind| kind.path().is_dir()) {
            for claim in std::fs::read_dir(kind.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if std::fs::read_link(claim.path()).is_ok_and(|owner| held(&owner)) {
                    // One that cannot go is stale once the owner's directory is removed.
                    let _ = std::fs::remove_file(claim.path());
                }
            }
        }
    }

    /// The node's uid range: the one recorded for it if it still holds it (or can take it
    /// back), else the lowest free one above the host's own subordinate ranges.
    pub fn claim_uid_slot(&self, node: &Path, recorded: Option<u32>) -> Result<u32, DriverError> {
        let lock = self.lock()?;
        if let Some(slot) = recorded {
            return match self.holder(&lock, "uid-ranges", &slot.to_string()) {
                Some(owner) if owner != node => Err(failed(format!(
                    "The uid range of node {} is held by {}.",
                    node.display(),
                    owner.display()
                ))),
                _ => {
                    self.take(&lock, "uid-ranges", &slot.to_string(), node)?;
                    Ok(slot)
                }
            };
        }
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        let reserved = HostIdRanges::parse(
            &read(&self.login_defs),
            &[read(&self.subuid), read(&self.subgid)],
        );
        for slot in reserved.first_free_slot()..=LAST_SLOT {
            if reserved.overlaps(slot) {
                continue;
            }
            match self.holder(&lock, "uid-ranges", &slot.to_string()) {
                Some(owner) if owner != node => continue,
                _ => {
                    self.take(&lock, "uid-ranges", &slot.to_string(), node)?;
                    return Ok(slot);
                }
            }
        }
        Err(failed(
            "No uid range is left for another node on this host.",
        ))
    }
}

/// The host's own subordinate id ranges: what useradd has handed out (/etc/subuid,
/// /etc/subgid) and may hand out (`SUB_UID_MAX`/`SUB_GID_MAX` of /etc/login.defs).
#[derive(Debug, PartialEq)]
struct HostIdRanges {
    /// The highest id useradd may give a subordinate range.
    highest_automatic: u64,
    /// `[first, end)` of every declared range.
    declared: Vec<(u64, u64)>,
}

impl HostIdRanges {
    fn parse(login_defs: &str, subordinate_files: &[String]) -> Self {
        let setting = |name: &str| {
            login_defs.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(name))
                    .then(|| words.next().and_then(|value| value.parse::<u64>().ok()))
                    .flatten()
            })
        };
        // useradd's defaults when login.defs says nothing.
        let highest_automatic = setting("SUB_UID_MAX")
            .unwrap_or(600_100_000)
            .max(setting("SUB_GID_MAX").unwrap_or(600_100_000));
        let declared = subordinate_files
            .iter()
            .flat_map(|text| text.lines())
            .filter_map(|line| {
                let mut fields = line.trim().split(':');
                let _owner = fields.next()?;
                let first: u64 = fields.next()?.trim().parse().ok()?;
                let count: u64 = fields.next()?.trim().parse().ok()?;
                Some((first, first.saturating_add(count)))
            })
            .collect();
        Self {
            highest_automatic,
            declared,
        }
    }

    fn first_free_slot(&self) -> u32 {
        let above = (self.highest_automatic + 1).div_ceil(u64::from(RANGE));
        u32::try_from(above).unwrap_or(u32::MAX).max(FIRST_SLOT)
    }

    fn overlaps(&self, slot: u32) -> bool {
        let first = u64::from(slot) * u64::from(RANGE);
        let end = first + u64::from(RANGE);
        self.declared
            .iter()
            .any(|(start, stop)| *start < end && first < *stop)
    }
}

/// The cluster's nftables table: nothing from its bridge reaches the host (except replies to
/// connections the host opened) or any other interface; nothing from elsewhere is forwarded
/// onto it; nodes of the cluster reach each other. `inet` covers IPv6 (link-local addresses
/// of the bridge included). Matching on the interface, not on addresses, also covers the
/// host's addresses on other interfaces.
fn firewall_rules(table: &str, bridge: &str) -> String {
    format!(
        "table inet {table}\n\
         delete table inet {table}\n\
         table inet {table} {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" ct state established,related accept\n\
         \t\tiifname \"{bridge}\" drop\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" oifname \"{bridge}\" accept\n\
         \t\tiifname \"{bridge}\" drop\n\
         \t\toifname \"{bridge}\" drop\n\
         \t}}\n\
         }}\n"
    )
}

/// Installs (or replaces, atomically) the cluster's table.
pub async fn install_firewall(table: &str, bridge: &str) -> Result<(), DriverError> {
    let rules = firewall_rules(table, bridge);
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| {
            failed(format!(
                "cannot run nft (apt-get install nftables): {error}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        use tokio::io::AsyncWriteExt;
        stdin
            .write_all(rules.as_bytes())
            .await
            .map_err(|error| failed(format!("cannot give nft the cluster's rules: {error}")))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|error| failed(format!("nft failed: {error}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(failed(format!(
            "cannot install the cluster's firewall table {table}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

pub async fn remove_firewall(table: &str) {
    // Absent already (never installed, or a host flush) is the same as removed.
    let _ = tokio::process::Command::new("nft")
        .args(["delete", "table", "inet", table])
        .output()
        .await;
}

/// Writes `contents` to a new 0600 file.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), DriverError> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|error| failed(format!("cannot write {}: {error}", path.display())))?;
    file.write_all(contents)
        .map_err(|error| failed(format!("cannot write {}: {error}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_in(scratch: &Path, login_defs: &str, subuid: &str) -> HostClaims {
        std::fs::write(scratch.join("login.defs"), login_defs).unwrap();
        std::fs::write(scratch.join("subuid"), subuid).unwrap();
        HostClaims {
            directory: scratch.join("claims"),
            login_defs: scratch.join("login.defs"),
            subuid: scratch.join("subuid"),
            subgid: scratch.join("missing"),
        }
    }

    #[test]
    fn a_node_log_is_trimmed_to_its_newest_part_and_its_tail_read_from_the_end() {
        let scratch = tempfile::tempdir().unwrap();
        let sandbox = NodeSandbox {
            directory: scratch.path().to_owned(),
            run_directory: scratch.path().join("run"),
            netns: "unused".to_owned(),
            cgroup: "unused".to_owned(),
            hostname: "unused".to_owned(),
        };
        assert_eq!(sandbox.log_tail(3), "", "no log yet");
        let line = "x".repeat(99) + "\n";
        let mut text = line.repeat(usize::try_from(LOG_LIMIT).unwrap() / 100);
        text.push_str("second to last\nlast\n");
        std::fs::write(sandbox.log_file(), &text).unwrap();
        assert_eq!(sandbox.log_tail(2), "second to last / last");

        sandbox.trim_log();
        let trimmed = std::fs::read_to_string(sandbox.log_file()).unwrap();
        assert!(trimmed.starts_with("[log trimmed by magnumd]\n"));
        assert!(trimmed.ends_with("second to last\nlast\n"));
        let expected = usize::try_from(LOG_KEPT).unwrap() + "[log trimmed by magnumd]\n".len();
        assert_eq!(trimmed.len(), expected);
        // Under the limit, nothing changes.
        sandbox.trim_log();
        assert_eq!(
            std::fs::read_to_string(sandbox.log_file()).unwrap(),
            trimmed
        );
    }

    #[test]
    fn uid_ranges_are_distinct_reclaimed_and_released() {
        let scratch = tempfile::tempdir().unwrap();
        // No automatic ranges above 1,048,575 and one declared range over slot 17.
        let claims = claims_in(
            scratch.path(),
            "SUB_UID_MAX 1048575\nSUB_GID_MAX 1000\n",
            "someone:1114112:65536\n",
        );
        let first = scratch.path().join("a");
        let second = scratch.path().join("b");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        let a = claims.claim_uid_slot(&first, None).unwrap();
        let b = claims.claim_uid_slot(&second, None).unwrap();
        assert_eq!(a, FIRST_SLOT);
        assert_eq!(
            b,
            FIRST_SLOT + 2,
            "slot 17 overlaps the host's declared range"
        );
        // A node asking again keeps its range; another node cannot take it.
        assert_eq!(claims.claim_uid_slot(&first, Some(a)).unwrap(), a);
        assert!(claims.claim_uid_slot(&second, Some(a)).is_err());
        // A node whose directory is gone leaves a stale claim that is reused.
        std::fs::remove_dir_all(&first).unwrap();
        let third = scratch.path().join("c");
        std::fs::create_dir_all(&third).unwrap();
        assert_eq!(claims.claim_uid_slot(&third, None).unwrap(), a);
        claims.release(&third);
        let range = |slot: u32| claims.directory.join("uid-ranges").join(slot.to_string());
        assert!(std::fs::read_link(range(a)).is_err());
        assert!(std::fs::read_link(range(b)).is_ok());
        claims.release(&second);
        assert!(std::fs::read_link(range(b)).is_err());
    }

    #[test]
    fn a_clusters_claims_go_together_and_no_other() {
        let scratch = tempfile::tempdir().unwrap();
        let claims = claims_in(scratch.path(), "SUB_UID_MAX 1048575\n", "");
        let cluster = scratch.path().join("clusters/a");
        let sibling = scratch.path().join("clusters/ab");
        for directory in [cluster.join("n1"), cluster.join("n2"), sibling.join("n1")] {
            std::fs::create_dir_all(&directory).unwrap();
            claims.claim_uid_slot(&directory, None).unwrap();
        }
        let lock = claims.lock().unwrap();
        claims.take(&lock, "names", "a", &cluster).unwrap();
        claims.take(&lock, "names", "ab", &sibling).unwrap();
        drop(lock);
        claims.release_within(&cluster);
        let mut left: Vec<PathBuf> = ["uid-ranges", "names"]
            .iter()
            .flat_map(|kind| std::fs::read_dir(claims.directory.join(kind)).unwrap())
            .map(|claim| std::fs::read_link(claim.unwrap().path()).unwrap())
            .collect();
        left.sort();
        // A sibling whose name starts the same is another cluster: its claims stay.
        assert_eq!(left, vec![sibling.clone(), sibling.join("n1")]);
    }

    #[test]
    fn uid_ranges_start_above_what_useradd_may_hand_out() {
        let defaults = HostIdRanges::parse("", &[]);
        assert_eq!(defaults.highest_automatic, 600_100_000);
        assert_eq!(defaults.first_free_slot(), 9_157);
        let debian = HostIdRanges::parse(
            "# comment\nSUB_UID_MIN\t\t   100000\nSUB_UID_MAX\t\t600100000\nSUB_GID_MAX 700000000\n",
            &["alice:100000:65536\nbob:165536:65536\n".to_owned(), "garbage\n".to_owned()],
        );
        assert_eq!(debian.first_free_slot(), 10_682);
        assert_eq!(
            debian.declared,
            vec![(100_000, 165_536), (165_536, 231_072)]
        );
        assert!(debian.overlaps(1) && debian.overlaps(3) && !debian.overlaps(4));
    }

    #[test]
    fn firewall_table_drops_bridge_to_host_and_other_interfaces() {
        let rules = firewall_rules("magnum_1a2b3c4d", "mb1a2b3c4d");
        assert!(
            rules.starts_with("table inet magnum_1a2b3c4d\ndelete table inet magnum_1a2b3c4d\n")
        );
        assert!(rules.contains("iifname \"mb1a2b3c4d\" ct state established,related accept\n\t\tiifname \"mb1a2b3c4d\" drop"));
        assert!(rules.contains("iifname \"mb1a2b3c4d\" oifname \"mb1a2b3c4d\" accept"));
        assert!(rules.contains("oifname \"mb1a2b3c4d\" drop"));
    }
}
