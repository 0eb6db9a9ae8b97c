//! `coe`: the verbs of `openstack coe` in one binary, against magnum-rs or upstream Magnum.
//! Endpoint and identity: `--endpoint`/`MAGNUM_URL` (noauth), or Keystone from a cloud of
//! clouds.yaml (`--os-cloud`/`OS_CLOUD`) or the `OS_*` variables. Output like the OpenStack client: `-f table|json|yaml|value`, `-c COLUMN`.

mod output;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, CommandFactory, Parser, Subcommand};
use magnum_client::{clouds_yaml_search_path, Client, ClientError, Credentials, KeystoneLogin};
use serde_json::{json, Map, Value};

use output::{Format, Output};

#[derive(Parser)]
#[command(
    name = "coe",
    version,
    about = "Manage Magnum clusters (magnum-rs or upstream): the verbs of `openstack coe`",
    after_help = "Examples:\n  MAGNUM_URL=http://127.0.0.1:9511 coe cluster list\n  coe cluster create c1 --cluster-template swarm --node-count 2 --wait\n  eval $(coe cluster config c1)"
)]
struct Cli {
    /// The Magnum endpoint of a noauth server (http://host:9511); else Keystone from OS_*.
    #[arg(long, global = true, env = "MAGNUM_URL")]
    endpoint: Option<String>,
    /// Project to act as on a noauth server.
    #[arg(long, global = true, env = "MAGNUM_PROJECT_ID")]
    project_id: Option<String>,
    /// User to act as on a noauth server.
    #[arg(long, global = true, env = "MAGNUM_USER_ID")]
    user_id: Option<String>,
    /// Roles to act with on a noauth server (comma list).
    #[arg(long, global = true, env = "MAGNUM_ROLES")]
    roles: Option<String>,
    /// A cloud of clouds.yaml (./, ~/.config/openstack/, /etc/openstack/) to log in to
    /// Keystone with; else the OS_* variables.
    #[arg(long, global = true, env = "OS_CLOUD", value_name = "NAME")]
    os_cloud: Option<String>,
    /// Output format.
    #[arg(
        short = 'f',
        long = "format",
        global = true,
        value_enum,
        default_value = "table"
    )]
    format: Format,
    /// Only these columns (repeatable).
    #[arg(short = 'c', long = "column", global = true)]
    columns: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Clusters and cluster templates.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Nodegroups of a cluster.
    #[command(subcommand)]
    Nodegroup(NodegroupCommand),
    /// A cluster's certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Per-project limits (admin).
    #[command(subcommand)]
    Quotas(QuotaCommand),
    /// Cluster and node counts.
    #[command(subcommand)]
    Stats(StatsCommand),
    /// Conductor services (admin).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Node credentials.
    #[command(subcommand)]
    Credential(CredentialCommand),
    /// Shell completion: `coe completion bash > /etc/bash_completion.d/coe`.
    Completion { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Cluster templates.
    #[command(subcommand)]
    Template(TemplateCommand),
    /// Create a cluster. Example: coe cluster create c1 --cluster-template swarm --node-count 2 --wait
    Create(ClusterCreate),
    /// List clusters.
    List,
    /// Show a cluster. Example: coe cluster show c1 -c status -c status_reason
    Show { cluster: String },
    /// Change a cluster's worker count. Example: coe cluster update c1 --node-count 3 --wait
    Update {
        cluster: String,
        #[arg(long)]
        node_count: Option<i64>,
        /// Roll back to the previous counts if the update fails.
        #[arg(long)]
        rollback: bool,
        #[arg(long)]
        wait: bool,
    },
    /// Resize a nodegroup. Example: coe cluster resize c1 4 --nodegroup default-worker --wait
    Resize {
        cluster: String,
        node_count: i64,
        #[arg(long)]
        nodegroup: Option<String>,
        #[arg(long = "nodes-to-remove")]
        nodes_to_remove: Vec<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Upgrade to another template. Example: coe cluster upgrade c1 swarm-v2 --wait
    Upgrade {
        cluster: String,
        cluster_template: String,
        #[arg(long, default_value_t = 1)]
        max_batch_size: i64,
        #[arg(long)]
        nodegroup: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    /// Delete clusters. Example: coe cluster delete c1 --wait
    Delete {
        #[arg(required = true)]
        clusters: Vec<String>,
        #[arg(long)]
        wait: bool,
    },
    /// A cluster's events, oldest first (a magnum-rs extension). Example: coe cluster events c1 --watch
    Events {
        cluster: String,
        /// Go on showing events as they happen.
        #[arg(long)]
        watch: bool,
    },
    /// Write a client configuration and print how to use it. Example: eval $(coe cluster config c1)
    Config {
        cluster: String,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Also write ca.pem, cert.pem and key.pem next to a kubeconfig.
        #[arg(long)]
        output_certs: bool,
    },
}

#[derive(Args)]
struct ClusterCreate {
    name: String,
    #[arg(long)]
    cluster_template: String,
    #[arg(long, default_value_t = 1)]
    node_count: i64,
    #[arg(long, default_value_t = 1)]
    master_count: i64,
    #[arg(long)]
    keypair: Option<String>,
    #[arg(long, default_value_t = 60)]
    timeout: i64,
    #[arg(long)]
    flavor: Option<String>,
    #[arg(long)]
    master_flavor: Option<String>,
    /// key=value (repeatable, or comma separated).
    #[arg(long = "labels")]
    labels: Vec<String>,
    #[arg(long)]
    merge_labels: bool,
    #[arg(long)]
    wait: bool,
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Example: coe cluster template create swarm --coe swarm-mode --image local-node --external-network local
    Create(TemplateCreate),
    /// List templates. Example: coe cluster template list
    List,
    /// Show a template. Example: coe cluster template show swarm -f yaml
    Show { template: String },
    /// Example: coe cluster template update swarm replace labels='{"a": "b"}'
    Update {
        template: String,
        /// add|replace|remove
        op: String,
        /// path=value pairs (remove: path)
        #[arg(required = true)]
        attributes: Vec<String>,
    },
    /// Delete templates. Example: coe cluster template delete swarm
    Delete {
        #[arg(required = true)]
        templates: Vec<String>,
    },
}

#[derive(Args)]
struct TemplateCreate {
    name: String,
    #[arg(long)]
    coe: String,
    #[arg(long)]
    image: String,
    #[arg(long)]
    external_network: Option<String>,
    #[arg(long)]
    flavor: Option<String>,
    #[arg(long)]
    master_flavor: Option<String>,
    #[arg(long)]
    keypair: Option<String>,
    #[arg(long)]
    network_driver: Option<String>,
    #[arg(long)]
    docker_volume_size: Option<i64>,
    #[arg(long = "labels")]
    labels: Vec<String>,
    #[arg(long)]
    tls_disabled: bool,
    #[arg(long)]
    public: bool,
    #[arg(long)]
    master_lb_enabled: bool,
}

#[derive(Subcommand)]
enum NodegroupCommand {
    /// Example: coe nodegroup create c1 gpu --node-count 2 --node-labels tier=gpu --wait
    Create {
        cluster: String,
        name: String,
        #[arg(long, default_value_t = 1)]
        node_count: i64,
        #[arg(long)]
        min_nodes: Option<i64>,
        #[arg(long)]
        max_nodes: Option<i64>,
        #[arg(long)]
        flavor: Option<String>,
        #[arg(long)]
        role: Option<String>,
        #[arg(long = "node-labels")]
        node_labels: Vec<String>,
        #[arg(long)]
        wait: bool,
    },
    /// List a cluster's nodegroups. Example: coe nodegroup list c1
    List { cluster: String },
    /// Show a nodegroup. Example: coe nodegroup show c1 default-worker
    Show { cluster: String, nodegroup: String },
    /// Example: coe nodegroup update c1 gpu --max-nodes 5
    Update {
        cluster: String,
        nodegroup: String,
        #[arg(long)]
        min_nodes: Option<i64>,
        #[arg(long)]
        max_nodes: Option<i64>,
    },
    /// Delete a nodegroup. Example: coe nodegroup delete c1 gpu --wait
    Delete {
        cluster: String,
        nodegroup: String,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Print the cluster's CA certificate.
    Show { cluster: String },
    /// Sign a CSR file. Example: coe ca sign c1 client.csr > cert.pem
    Sign { cluster: String, csr: PathBuf },
    /// Replace the cluster's CA. Example: coe ca rotate c1 --wait
    Rotate {
        cluster: String,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum QuotaCommand {
    /// Example: coe quotas create --project-id p1 --resource Cluster --hard-limit 5
    Create {
        #[arg(long)]
        project_id: String,
        #[arg(long, default_value = "Cluster")]
        resource: String,
        #[arg(long, default_value_t = 1)]
        hard_limit: i64,
    },
    /// List quotas. Example: coe quotas list --all-tenants
    List {
        #[arg(long)]
        all_tenants: bool,
    },
    /// Show a project's quota. Example: coe quotas show --project-id p1
    Show {
        #[arg(long)]
        project_id: String,
        #[arg(long, default_value = "Cluster")]
        resource: String,
    },
    /// Change a quota. Example: coe quotas update --project-id p1 --hard-limit 10
    Update {
        #[arg(long)]
        project_id: String,
        #[arg(long, default_value = "Cluster")]
        resource: String,
        #[arg(long)]
        hard_limit: i64,
    },
    /// Remove a quota. Example: coe quotas delete --project-id p1
    Delete {
        #[arg(long)]
        project_id: String,
        #[arg(long, default_value = "Cluster")]
        resource: String,
    },
}

#[derive(Subcommand)]
enum StatsCommand {
    /// Example: coe stats list my-project
    List { project: Option<String> },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// List conductors. Example: coe service list
    List,
}

#[derive(Subcommand)]
enum CredentialCommand {
    /// Example: coe credential rotate c1
    Rotate { cluster: String },
}

/// `k=v` arguments (repeated or comma separated) as a labels object.
fn labels(pairs: &[String]) -> Result<Map<String, Value>, ClientError> {
    let mut labels = Map::new();
    for pair in pairs.iter().flat_map(|pair| pair.split(',')) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| ClientError::Setup(format!("{pair:?} is not key=value")))?;
        labels.insert(key.trim().to_owned(), json!(value.trim()));
    }
    Ok(labels)
}

async fn client(cli: &Cli) -> Result<Client, ClientError> {
    match &cli.endpoint {
        Some(endpoint) => Ok(Client::new(
            endpoint,
            Credentials::NoAuth {
                project_id: cli.project_id.clone(),
                user_id: cli.user_id.clone(),
                roles: cli.roles.clone(),
            },
        )),
        None => {
            let login = match cli.os_cloud.as_deref().filter(|name| !name.is_empty()) {
                Some(cloud) => KeystoneLogin::from_clouds_yaml(cloud, &clouds_yaml_search_path())?,
                None => KeystoneLogin::from_variables(|name| std::env::var(name).ok())?
                    .ok_or_else(|| {
                        ClientError::Setup(
                            "no endpoint: set MAGNUM_URL (or --endpoint) for a noauth server, or \
                             OS_CLOUD (clouds.yaml) or the OS_* variables for Keystone"
                                .to_owned(),
                        )
                    })?,
            };
            Client::from_keystone(&login).await
        }
    }
}

/// Nodes up (their addresses are known) out of the nodes wanted. Drivers that report node
/// readiness while they work (the local one: "2 of 3 nodes Ready.") say so in the reason.
fn node_summary(cluster: &Value) -> String {
    let count = |key: &str| cluster[key].as_array().map_or(0, Vec::len);
    let wanted = |key: &str| cluster[key].as_u64().unwrap_or(0);
    format!(
        "(nodes up {}/{}: {} masters, {} workers wanted)",
        count("master_addresses") + count("node_addresses"),
        wanted("master_count") + wanted("node_count"),
        wanted("master_count"),
        wanted("node_count")
    )
}

/// What `--wait` shows of a cluster: its status, then the latest word on it.
fn status_line(name: &str, status: &str, reason: &str, nodes: &str) -> String {
    let reason = reason.trim();
    match (reason.is_empty(), nodes.is_empty()) {
        (true, true) => format!("{name}: {status}"),
        (true, false) => format!("{name}: {status} {nodes}"),
        (false, true) => format!("{name}: {status} — {reason}"),
        (false, false) => format!("{name}: {status} — {reason} {nodes}"),
    }
}

/// Prints a progress line: rewritten in place on a terminal, one per change otherwise.
struct Progress {
    started: Instant,
    terminal: bool,
    last: String,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            last: String::new(),
        }
    }

    fn show(&mut self, line: String) {
        if line == self.last {
            return;
        }
        if self.terminal {
            eprint!("\r\x1b[2K{line} [{}s]", self.started.elapsed().as_secs());
        } else {
            eprintln!("{line} [{}s]", self.started.elapsed().as_secs());
        }
        self.last = line;
    }

    /// Each event on a line of its own (they are history), the status line after.
    fn event(&mut self, line: String) {
        if self.terminal {
            eprintln!("\r\x1b[2K{line} [{}s]", self.started.elapsed().as_secs());
        } else {
            eprintln!("{line} [{}s]", self.started.elapsed().as_secs());
        }
        self.last.clear();
    }

    fn done(&self) {
        if self.terminal && !self.last.is_empty() {
            eprintln!();
        }
    }
}

/// Where a cluster is: done (deleted or complete), failed (with why) or still going.
enum Standing {
    Done,
    Failed(String),
    Going,
}

fn standing(cluster: &str, status: &str, reason: &str, gone: bool) -> Standing {
    if status.ends_with("_FAILED") {
        Standing::Failed(format!("{cluster} is {status}: {reason}"))
    } else if !gone && status.ends_with("_COMPLETE") {
        Standing::Done
    } else {
        Standing::Going
    }
}

/// Follows a cluster to a terminal status, showing each event as it happens when the server
/// streams them (magnum-rs), by polling once a second otherwise (upstream Magnum).
async fn wait_for(client: &Client, cluster: &str, gone: bool) -> Result<(), ClientError> {
    let mut progress = Progress::new();
    let outcome = follow_stream(client, cluster, gone, &mut progress).await;
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => poll(client, cluster, gone, &mut progress).await,
    };
    progress.done();
    outcome
}

/// How long `--wait` follows a stream without an event before it reads the cluster again.
const STREAM_RECHECK: Duration = Duration::from_secs(30);

/// Reads the cluster once and shows where it is; with `gone`, a cluster no longer found is
/// where the wait ends. Returns where it stands and its name.
async fn look(
    client: &Client,
    cluster: &str,
    gone: bool,
    progress: &mut Progress,
) -> Result<(Standing, String), ClientError> {
    match client.cluster(cluster).await {
        Err(ClientError::Api { status: 404, .. }) if gone => {
            eprintln!(
                "{cluster}: deleted ({}s)",
                progress.started.elapsed().as_secs()
            );
            Ok((Standing::Done, cluster.to_owned()))
        }
        Err(error) => Err(error),
        Ok(body) => {
            let name = body["name"].as_str().unwrap_or(cluster).to_owned();
            let status = body["status"].as_str().unwrap_or_default();
            let reason = body["status_reason"].as_str().unwrap_or_default();
            progress.show(status_line(&name, status, reason, &node_summary(&body)));
            Ok((standing(cluster, status, reason, gone), name))
        }
    }
}

/// What a wait ends with, once the cluster stands somewhere final.
fn ended(standing: Standing) -> Option<Result<(), ClientError>> {
    match standing {
        Standing::Done => Some(Ok(())),
        Standing::Failed(message) => Some(Err(ClientError::Api { status: 0, message })),
        Standing::Going => None,
    }
}

/// `None` when the server has no event stream (or it broke before the end): poll instead.
async fn follow_stream(
    client: &Client,
    cluster: &str,
    gone: bool,
    progress: &mut Progress,
) -> Option<Result<(), ClientError>> {
    // Opened before the cluster is read: nothing that happens in between is missed.
    let path = format!("/clusters/{cluster}/events?watch=true");
    let mut stream = match client.open_stream(&path, None).await {
        Ok(Some(stream)) => stream,
        Ok(None) => return None,
        Err(error) => return Some(Err(error)),
    };
    let name = match look(client, cluster, gone, progress).await {
        Err(error) => return Some(Err(error)),
        Ok((standing, name)) => match ended(standing) {
            Some(outcome) => return Some(outcome),
            None => name,
        },
    };
    loop {
        // The cluster is read again now and then: a stream that missed the end (or a server
        // that never sends it) cannot keep --wait waiting.
        let event = match tokio::time::timeout(STREAM_RECHECK, stream.next()).await {
            Ok(Ok(Some(event))) => event,
            // The stream broke off: the rest by polling, which needs nothing of it.
            Ok(Ok(None)) | Ok(Err(_)) => return None,
            Err(_) => match look(client, cluster, gone, progress).await {
                Err(error) => return Some(Err(error)),
                Ok((standing, _)) => match ended(standing) {
                    Some(outcome) => return Some(outcome),
                    None => continue,
                },
            },
        };
        if event.kind == "end" {
            if event.data["reason"] == "cluster_deleted" && gone {
                eprintln!(
                    "{cluster}: deleted ({}s)",
                    progress.started.elapsed().as_secs()
                );
                return Some(Ok(()));
            }
            return None;
        }
        if event.kind != "cluster_event" {
            continue;
        }
        let data = &event.data;
        let status = data["cluster"]["status"].as_str().unwrap_or_default();
        let message = data["message"].as_str().unwrap_or_default();
        let kind = data["type"].as_str().unwrap_or("Normal");
        let reason = data["reason"].as_str().unwrap_or_default();
        progress.event(format!("{name}: {kind} {reason}: {message}"));
        if gone && reason == "Deleted" {
            eprintln!(
                "{cluster}: deleted ({}s)",
                progress.started.elapsed().as_secs()
            );
            return Some(Ok(()));
        }
        match standing(cluster, status, message, gone) {
            // The last line says where the cluster ended, nodes included.
            Standing::Done => {
                let _ = look(client, cluster, gone, progress).await;
                return Some(Ok(()));
            }
            other => {
                if let Some(outcome) = ended(other) {
                    return Some(outcome);
                }
            }
        }
    }
}

/// Follows a cluster by reading it once a second.
async fn poll(
    client: &Client,
    cluster: &str,
    gone: bool,
    progress: &mut Progress,
) -> Result<(), ClientError> {
    loop {
        let (standing, _) = look(client, cluster, gone, progress).await?;
        if let Some(outcome) = ended(standing) {
            return outcome;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Columns `coe cluster events` shows by default.
const EVENT_COLUMNS: [&str; 6] = [
    "created_at",
    "type",
    "reason",
    "nodegroup",
    "node",
    "message",
];

/// `coe cluster events`: the list, then (`--watch`) each event as it comes, resuming after
/// the server ends a stream for a reason a reconnection cures, warning when events were
/// dropped before they could be shown.
async fn cluster_events(
    client: &Client,
    out: &Output,
    cluster: &str,
    watch: bool,
) -> Result<(), ClientError> {
    let events = client
        .list_all(&format!("/clusters/{cluster}/events"), "events")
        .await?;
    out.list(&events, &EVENT_COLUMNS);
    if !watch {
        return Ok(());
    }
    let mut last = events.last().and_then(|event| event["sequence"].as_i64());
    loop {
        let path = format!("/clusters/{cluster}/events?watch=true");
        let Some(mut stream) = client.open_stream(&path, last).await? else {
            return Err(ClientError::Setup(
                "this server does not stream events (--watch needs magnum-rs)".to_owned(),
            ));
        };
        loop {
            match stream.next().await? {
                None => break,
                Some(event) if event.kind == "end" => {
                    last = event.id.or(last);
                    let reason = event.data["reason"].as_str().unwrap_or_default();
                    match reason {
                        "cluster_deleted" => return Ok(()),
                        "token_expired" => {
                            return Err(ClientError::Api {
                                status: 401,
                                message: event.data["message"]
                                    .as_str()
                                    .unwrap_or("the token expired")
                                    .to_owned(),
                            })
                        }
                        _ => break,
                    }
                }
                Some(event) if event.kind == "cluster_event" => {
                    last = event.id.or(last);
                    out.stream_row(&event.data, &EVENT_COLUMNS);
                }
                // Retention dropped events before they could be shown: said on stderr (the
                // rows on stdout stay events), then the stream goes on with what is kept.
                // Its id is past what is gone: a reconnection resumes there, not told again.
                Some(event) if event.kind == "gap" => {
                    last = event.id.or(last);
                    eprintln!(
                        "WARNING: {}",
                        event.data["message"]
                            .as_str()
                            .unwrap_or("events were dropped before they could be shown")
                    );
                }
                Some(_) => {}
            }
        }
        // Reconnected after a pause, from the last event shown.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn write_file(
    path: &PathBuf,
    contents: &str,
    private: bool,
    force: bool,
) -> Result<(), ClientError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() && !force {
        return Err(ClientError::Setup(format!(
            "{} already exists; use --force to overwrite it",
            path.display()
        )));
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| file.write_all(contents.as_bytes()))
        .map_err(|error| ClientError::Setup(format!("cannot write {}: {error}", path.display())))
}

async fn cluster_config(
    client: &Client,
    cluster: &str,
    dir: &PathBuf,
    force: bool,
    output_certs: bool,
) -> Result<String, ClientError> {
    let body = client.cluster(cluster).await?;
    let name = body["name"].as_str().unwrap_or(cluster).to_owned();
    let uuid = body["uuid"].as_str().unwrap_or_default().to_owned();
    let address = body["api_address"].as_str().map(str::to_owned);
    if address.is_none() {
        eprintln!("WARNING: the cluster has no api_address yet");
    }
    let address = address.unwrap_or_default();
    let template = client
        .template(body["cluster_template_id"].as_str().unwrap_or_default())
        .await?;
    let tls = !template["tls_disabled"].as_bool().unwrap_or(false);
    let swarm = template["coe"] != "kubernetes";
    std::fs::create_dir_all(dir)
        .map_err(|error| ClientError::Setup(format!("cannot create {}: {error}", dir.display())))?;
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let (mut ca, mut cert, mut key) = (String::new(), String::new(), String::new());
    if tls {
        ca = client.get(&format!("/certificates/{uuid}")).await?["pem"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let request = magnum_certs::client_key_and_csr("admin", Some("system:masters"))
            .map_err(|error| ClientError::Setup(error.to_string()))?;
        cert = client.sign(&uuid, &request.cert_pem).await?["pem"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        key = request.key_pem;
    }
    if swarm {
        if tls {
            write_file(&dir.join("ca.pem"), &ca, false, force)?;
            write_file(&dir.join("cert.pem"), &cert, false, force)?;
            write_file(&dir.join("key.pem"), &key, true, force)?;
            return Ok(format!(
                "export DOCKER_HOST={address}\nexport DOCKER_CERT_PATH={}\nexport DOCKER_TLS_VERIFY=1\n",
                dir.display()
            ));
        }
        return Ok(format!("export DOCKER_HOST={address}\n"));
    }
    let user = if tls {
        format!(
            "- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
            magnum_certs::base64_encode(cert.as_bytes()),
            magnum_certs::base64_encode(key.as_bytes())
        )
    } else {
        "- name: admin\n  user: {}\n".to_owned()
    };
    let authority = if tls {
        format!(
            "    certificate-authority-data: {}\n",
            magnum_certs::base64_encode(ca.as_bytes())
        )
    } else {
        String::new()
    };
    let kubeconfig = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n{authority}    server: {address}\n  name: {name}\ncontexts:\n- context:\n    cluster: {name}\n    user: admin\n  name: default\ncurrent-context: default\nkind: Config\npreferences: {{}}\nusers:\n{user}"
    );
    write_file(&dir.join("config"), &kubeconfig, true, force)?;
    if output_certs && tls {
        write_file(&dir.join("ca.pem"), &ca, false, force)?;
        write_file(&dir.join("cert.pem"), &cert, false, force)?;
        write_file(&dir.join("key.pem"), &key, true, force)?;
    }
    Ok(format!(
        "export KUBECONFIG={}\n",
        dir.join("config").display()
    ))
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let out = Output::new(cli.format, cli.columns.clone());
    if let Command::Completion { shell } = &cli.command {
        clap_complete::generate(*shell, &mut Cli::command(), "coe", &mut std::io::stdout());
        return Ok(());
    }
    let client = client(&cli).await?;
    match &cli.command {
        Command::Completion { .. } => {}
        Command::Cluster(command) => match command {
            ClusterCommand::Template(command) => match command {
                TemplateCommand::Create(create) => {
                    let mut body = json!({"name": create.name, "coe": create.coe, "image_id": create.image,
                        "tls_disabled": create.tls_disabled, "public": create.public,
                        "master_lb_enabled": create.master_lb_enabled});
                    for (key, value) in [
                        ("external_network_id", &create.external_network),
                        ("flavor_id", &create.flavor),
                        ("master_flavor_id", &create.master_flavor),
                        ("keypair_id", &create.keypair),
                        ("network_driver", &create.network_driver),
                    ] {
                        if let Some(value) = value {
                            body[key] = json!(value);
                        }
                    }
                    if let Some(size) = create.docker_volume_size {
                        body["docker_volume_size"] = json!(size);
                    }
                    if !create.labels.is_empty() {
                        body["labels"] = Value::Object(labels(&create.labels)?);
                    }
                    let created = client.send("POST", "/clustertemplates", Some(body)).await?;
                    out.show(&created);
                }
                TemplateCommand::List => {
                    let items = client
                        .list_all("/clustertemplates", "clustertemplates")
                        .await?;
                    out.list(&items, &["uuid", "name", "tags"]);
                }
                TemplateCommand::Show { template } => out.show(&client.template(template).await?),
                TemplateCommand::Update {
                    template,
                    op,
                    attributes,
                } => {
                    let patch: Vec<Value> = attributes
                        .iter()
                        .map(|attribute| match attribute.split_once('=') {
                            Some((path, value)) => {
                                json!({"op": op, "path": format!("/{path}"), "value": value})
                            }
                            None => json!({"op": op, "path": format!("/{attribute}")}),
                        })
                        .collect();
                    let updated = client
                        .send(
                            "PATCH",
                            &format!("/clustertemplates/{template}"),
                            Some(Value::Array(patch)),
                        )
                        .await?;
                    out.show(&updated);
                }
                TemplateCommand::Delete { templates } => {
                    for template in templates {
                        client
                            .send("DELETE", &format!("/clustertemplates/{template}"), None)
                            .await?;
                        out.message(&format!(
                            "Request to delete cluster template {template} has been accepted."
                        ));
                    }
                }
            },
            ClusterCommand::Create(create) => {
                let mut body = json!({"name": create.name, "cluster_template_id": create.cluster_template,
                    "node_count": create.node_count, "master_count": create.master_count,
                    "create_timeout": create.timeout, "keypair": create.keypair, "discovery_url": null});
                if let Some(flavor) = &create.flavor {
                    body["flavor_id"] = json!(flavor);
                }
                if let Some(flavor) = &create.master_flavor {
                    body["master_flavor_id"] = json!(flavor);
                }
                if !create.labels.is_empty() {
                    body["labels"] = Value::Object(labels(&create.labels)?);
                }
                if create.merge_labels {
                    body["merge_labels"] = json!(true);
                }
                let created = client.send("POST", "/clusters", Some(body)).await?;
                let uuid = created["uuid"].as_str().unwrap_or_default().to_owned();
                out.message(&format!("Request to create cluster {uuid} accepted"));
                if create.wait {
                    wait_for(&client, &uuid, false).await?;
                }
            }
            ClusterCommand::List => {
                let items = client.list_all("/clusters", "clusters").await?;
                out.list(
                    &items,
                    &[
                        "uuid",
                        "name",
                        "keypair",
                        "node_count",
                        "master_count",
                        "status",
                        "health_status",
                    ],
                );
            }
            ClusterCommand::Show { cluster } => out.show(&client.cluster(cluster).await?),
            ClusterCommand::Events { cluster, watch } => {
                cluster_events(&client, &out, cluster, *watch).await?
            }
            ClusterCommand::Update {
                cluster,
                node_count,
                rollback,
                wait,
            } => {
                let mut patch = Vec::new();
                if let Some(count) = node_count {
                    patch.push(json!({"op": "replace", "path": "/node_count", "value": count}));
                }
                let path = if *rollback {
                    format!("/clusters/{cluster}?rollback=True")
                } else {
                    format!("/clusters/{cluster}")
                };
                client
                    .send("PATCH", &path, Some(Value::Array(patch)))
                    .await?;
                out.message(&format!(
                    "Request to update cluster {cluster} has been accepted."
                ));
                if *wait {
                    wait_for(&client, cluster, false).await?;
                }
            }
            ClusterCommand::Resize {
                cluster,
                node_count,
                nodegroup,
                nodes_to_remove,
                wait,
            } => {
                let mut body = json!({"node_count": node_count});
                if let Some(nodegroup) = nodegroup {
                    body["nodegroup"] = json!(nodegroup);
                }
                if !nodes_to_remove.is_empty() {
                    body["nodes_to_remove"] = json!(nodes_to_remove);
                }
                client
                    .send(
                        "POST",
                        &format!("/clusters/{cluster}/actions/resize"),
                        Some(body),
                    )
                    .await?;
                out.message(&format!(
                    "Request to resize cluster {cluster} has been accepted."
                ));
                if *wait {
                    wait_for(&client, cluster, false).await?;
                }
            }
            ClusterCommand::Upgrade {
                cluster,
                cluster_template,
                max_batch_size,
                nodegroup,
                wait,
            } => {
                let mut body =
                    json!({"cluster_template": cluster_template, "max_batch_size": max_batch_size});
                if let Some(nodegroup) = nodegroup {
                    body["nodegroup"] = json!(nodegroup);
                }
                client
                    .send(
                        "POST",
                        &format!("/clusters/{cluster}/actions/upgrade"),
                        Some(body),
                    )
                    .await?;
                out.message(&format!(
                    "Request to upgrade cluster {cluster} has been accepted."
                ));
                if *wait {
                    wait_for(&client, cluster, false).await?;
                }
            }
            ClusterCommand::Delete { clusters, wait } => {
                for cluster in clusters {
                    client
                        .send("DELETE", &format!("/clusters/{cluster}"), None)
                        .await?;
                    out.message(&format!(
                        "Request to delete cluster {cluster} has been accepted."
                    ));
                }
                if *wait {
                    for cluster in clusters {
                        wait_for(&client, cluster, true).await?;
                    }
                }
            }
            ClusterCommand::Config {
                cluster,
                dir,
                force,
                output_certs,
            } => {
                print!(
                    "{}",
                    cluster_config(&client, cluster, dir, *force, *output_certs).await?
                );
            }
        },
        Command::Nodegroup(command) => match command {
            NodegroupCommand::Create {
                cluster,
                name,
                node_count,
                min_nodes,
                max_nodes,
                flavor,
                role,
                node_labels,
                wait,
            } => {
                // The defaults written out, as python-magnumclient sends them.
                let mut body = json!({"name": name, "node_count": node_count,
                    "min_node_count": min_nodes.unwrap_or(0), "max_node_count": max_nodes,
                    "role": role.clone().unwrap_or_else(|| "worker".to_owned())});
                if let Some(flavor) = flavor {
                    body["flavor_id"] = json!(flavor);
                }
                if !node_labels.is_empty() {
                    body["node_labels"] = Value::Object(labels(node_labels)?);
                }
                client
                    .send(
                        "POST",
                        &format!("/clusters/{cluster}/nodegroups"),
                        Some(body),
                    )
                    .await?;
                out.message(&format!("Request to create nodegroup {name} accepted"));
                if *wait {
                    wait_for(&client, cluster, false).await?;
                }
            }
            NodegroupCommand::List { cluster } => {
                let items = client
                    .list_all(&format!("/clusters/{cluster}/nodegroups"), "nodegroups")
                    .await?;
                out.list(
                    &items,
                    &[
                        "uuid",
                        "name",
                        "flavor_id",
                        "image_id",
                        "node_count",
                        "status",
                        "role",
                    ],
                );
            }
            NodegroupCommand::Show { cluster, nodegroup } => {
                out.show(
                    &client
                        .get(&format!("/clusters/{cluster}/nodegroups/{nodegroup}"))
                        .await?,
                );
            }
            NodegroupCommand::Update {
                cluster,
                nodegroup,
                min_nodes,
                max_nodes,
            } => {
                let mut patch = Vec::new();
                for (path, value) in [
                    ("/min_node_count", min_nodes),
                    ("/max_node_count", max_nodes),
                ] {
                    if let Some(value) = value {
                        patch.push(json!({"op": "replace", "path": path, "value": value}));
                    }
                }
                let updated = client
                    .send(
                        "PATCH",
                        &format!("/clusters/{cluster}/nodegroups/{nodegroup}"),
                        Some(Value::Array(patch)),
                    )
                    .await?;
                out.show(&updated);
            }
            NodegroupCommand::Delete {
                cluster,
                nodegroup,
                wait,
            } => {
                client
                    .send(
                        "DELETE",
                        &format!("/clusters/{cluster}/nodegroups/{nodegroup}"),
                        None,
                    )
                    .await?;
                out.message(&format!(
                    "Request to delete nodegroup {nodegroup} has been accepted."
                ));
                if *wait {
                    wait_for(&client, cluster, false).await?;
                }
            }
        },
        Command::Ca(command) => match command {
            CaCommand::Show { cluster } => {
                let uuid = client.cluster(cluster).await?["uuid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                println!(
                    "{}",
                    client.get(&format!("/certificates/{uuid}")).await?["pem"]
                        .as_str()
                        .unwrap_or_default()
                );
            }
            CaCommand::Sign { cluster, csr } => {
                let text = std::fs::read_to_string(csr).map_err(|error| {
                    ClientError::Setup(format!("cannot read {}: {error}", csr.display()))
                })?;
                println!(
                    "{}",
                    client.sign(cluster, &text).await?["pem"]
                        .as_str()
                        .unwrap_or_default()
                );
            }
            CaCommand::Rotate { cluster, wait } => {
                let uuid = client.cluster(cluster).await?["uuid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                client
                    .send("PATCH", &format!("/certificates/{uuid}"), None)
                    .await?;
                out.message(&format!(
                    "Request to rotate the CA of cluster {cluster} has been accepted."
                ));
                if *wait {
                    wait_for(&client, &uuid, false).await?;
                }
            }
        },
        Command::Quotas(command) => match command {
            QuotaCommand::Create {
                project_id,
                resource,
                hard_limit,
            } => {
                let created = client
                    .send("POST", "/quotas", Some(json!({"project_id": project_id, "resource": resource, "hard_limit": hard_limit})))
                    .await?;
                out.show(&created);
            }
            QuotaCommand::List { all_tenants } => {
                let path = if *all_tenants {
                    "/quotas?all_tenants=True"
                } else {
                    "/quotas"
                };
                let items = client.list_all(path, "quotas").await?;
                out.list(&items, &["project_id", "resource", "hard_limit"]);
            }
            QuotaCommand::Show {
                project_id,
                resource,
            } => out.show(
                &client
                    .get(&format!("/quotas/{project_id}/{resource}"))
                    .await?,
            ),
            QuotaCommand::Update {
                project_id,
                resource,
                hard_limit,
            } => {
                let updated = client
                    .send(
                        "PATCH",
                        &format!("/quotas/{project_id}/{resource}"),
                        Some(json!({"project_id": project_id, "resource": resource, "hard_limit": hard_limit})),
                    )
                    .await?;
                out.show(&updated);
            }
            QuotaCommand::Delete {
                project_id,
                resource,
            } => {
                client
                    .send("DELETE", &format!("/quotas/{project_id}/{resource}"), None)
                    .await?;
                out.message(&format!(
                    "Request to delete quota of {project_id} for {resource} has been accepted."
                ));
            }
        },
        Command::Stats(StatsCommand::List { project }) => {
            let path = match project {
                Some(project) => format!("/stats?project_id={project}"),
                None => "/stats".to_owned(),
            };
            out.show(&client.get(&path).await?);
        }
        Command::Service(ServiceCommand::List) => {
            let items = client.get("/mservices").await?["mservices"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            out.list(
                &items,
                &[
                    "id",
                    "host",
                    "binary",
                    "state",
                    "disabled",
                    "disabled_reason",
                    "created_at",
                    "updated_at",
                ],
            );
        }
        Command::Credential(CredentialCommand::Rotate { cluster }) => {
            let uuid = client.cluster(cluster).await?["uuid"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            client
                .send("PATCH", &format!("/credentials/{uuid}"), None)
                .await?;
            out.message(&format!(
                "Request to rotate the credentials of cluster {cluster} has been accepted."
            ));
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("coe: {error}");
            ExitCode::FAILURE
        }
    }
}
