#![forbid(unsafe_code)]
//! The `ferry` command: `run`, `check`, `demo`. Parses flags, sets up logging and the runtime,
//! and turns SIGTERM/SIGINT into a graceful drain.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use ferry::config::{self, Config};
use tracing::{info, warn};

/// mimalloc: per-thread free lists for every size ferry allocates per request (glibc's malloc
/// takes its slow path above 1 KiB: a request's future and read buffer).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "ferry", version, about = "In-cluster L4/L7 reverse proxy for Kubernetes workloads")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Which Kubernetes API to watch for endpoints.
#[derive(Clone, Copy, ValueEnum)]
enum Discovery {
    Endpointslices,
    Endpoints,
}

impl From<Discovery> for ferry::discovery::Mode {
    fn from(d: Discovery) -> Self {
        match d {
            Discovery::Endpointslices => ferry::discovery::Mode::Endpointslices,
            Discovery::Endpoints => ferry::discovery::Mode::Endpoints,
        }
    }
}

#[derive(clap::Args)]
struct RuntimeArgs {
    /// Worker threads [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Log format (level via RUST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// Ingress as a config source.
#[derive(clap::Args)]
struct IngressArgs {
    /// Be the cluster's Ingress controller: follow Ingress, IngressClass, Service, EndpointSlice and
    /// Secret objects (all namespaces) and serve the Ingresses of ferry's class, with Events on
    /// their problems.
    #[arg(long)]
    ingress: bool,
    /// Serve the Ingresses in these manifest files or directories (with their Services,
    /// EndpointSlices and Secrets) without a cluster; SIGHUP reads them again.
    #[arg(short = 'k', long = "manifests", value_name = "DIR")]
    manifests: Option<PathBuf>,
    /// The IngressClass name that is ferry's (its `spec.controller` must be ferry.dev/ingress-controller).
    #[arg(long, default_value = "ferry")]
    ingress_class: String,
    /// Where the Ingress routes listen for HTTP.
    #[arg(long, default_value = "0.0.0.0:8080")]
    ingress_http: SocketAddr,
    /// Where they listen for HTTPS (bound once an Ingress has a usable TLS Secret).
    #[arg(long, default_value = "0.0.0.0:8443")]
    ingress_https: SocketAddr,
    /// The admin listener when no routes file is given.
    #[arg(long, default_value = config::defaults::ADMIN)]
    admin: SocketAddr,
    /// Write `status.loadBalancer.ingress` of the Ingresses ferry serves from this Service
    /// (NAMESPACE/NAME): its LoadBalancer ingress if any, else the nodes' addresses for a NodePort
    /// Service. One replica writes, elected by a Lease.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    publish_service: Option<String>,
    /// Write these addresses (IPs or host names) as the Ingresses' status instead.
    #[arg(long, value_delimiter = ',', value_name = "ADDRESS")]
    publish_status_address: Vec<String>,
    /// The Lease that elects the status writer, in ferry's namespace (POD_NAMESPACE); this replica
    /// is POD_NAME (or the host name).
    #[arg(long, default_value = "ferry-ingress-status")]
    election_id: String,
    /// Where Secret data (certificates, htpasswd files) is kept as private files [default: a
    /// directory of this process under the temporary directory, removed at exit].
    #[arg(long)]
    secrets_dir: Option<PathBuf>,
    /// Be the data plane of this Gateway API Gateway (NAMESPACE/NAME; what `ferry
    /// gateway-controller` deploys): follow it, its routes, ReferenceGrants, Services,
    /// EndpointSlices and Secrets, and serve its listeners on their ports (0.0.0.0).
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with_all = ["ingress", "manifests"])]
    gateway: Option<String>,
}

impl IngressArgs {
    /// Where Secret files go, and whether that directory is this process's own (removed at exit).
    fn secrets_dir(&self) -> (PathBuf, bool) {
        match &self.secrets_dir {
            Some(d) => (d.clone(), false),
            None => (std::env::temp_dir().join(format!("ferry-secrets-{}", std::process::id())), true),
        }
    }

    fn enabled(&self) -> bool {
        self.ingress || self.manifests.is_some()
    }

    /// Status write-back, if asked for.
    fn status(&self, namespace: &str) -> anyhow::Result<Option<ferry::sources::status::StatusConfig>> {
        use ferry::sources::status::{Election, Publish, StatusConfig};
        let publish = match (&self.publish_service, self.publish_status_address.is_empty()) {
            (_, false) => Publish::Addresses(self.publish_status_address.clone()),
            (Some(s), true) => {
                let (ns, name) = s.split_once('/').context("--publish-service is NAMESPACE/NAME")?;
                Publish::Service((ns.to_string(), name.to_string()))
            }
            (None, true) => return Ok(None),
        };
        let identity = identity();
        let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| namespace.to_string());
        let election = Election {
            namespace,
            name: self.election_id.clone(),
            identity,
            duration: std::time::Duration::from_secs(15),
        };
        Ok(Some(StatusConfig { publish, election }))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy from a routes file (reloaded when it changes, or on SIGHUP; SIGUSR1 reopens
    /// access-log files).
    Run {
        /// The routes file [default: routes.yaml; optional with --ingress or -k, whose listeners
        /// and backends it then adds to].
        #[arg(short, long)]
        config: Option<PathBuf>,
        #[command(flatten)]
        ingress: Box<IngressArgs>,
        /// Which Kubernetes API to watch for endpoints: discovery.k8s.io/v1 EndpointSlices, or
        /// core/v1 Endpoints for clusters older than 1.21.
        #[arg(long, value_enum, default_value = "endpointslices")]
        discovery: Discovery,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// Validate a routes file (and read the certificate, key, CA, htpasswd and error page files and the static directories it names), print a summary, exit 0 if valid and 1 (listing every error as FILE:LINE:COL) if not.
    Check {
        /// The routes file.
        #[arg(short, long, default_value = "routes.yaml")]
        config: PathBuf,
        /// Check Kubernetes manifests instead (files or directories of Ingress, IngressClass,
        /// Service, Secret): the Ingresses of ferry's class are translated exactly as the
        /// controller would, every problem printed as FILE:LINE:COL: error|warning: OBJECT: FIELD:
        /// MESSAGE; exit 1 if any is an error.
        #[arg(short = 'k', long = "manifests", num_args = 1.., value_name = "FILE")]
        manifests: Vec<PathBuf>,
        /// The IngressClass name that is ferry's (with -k).
        #[arg(long, default_value = "ferry")]
        ingress_class: String,
    },
    /// Turn an nginx.conf (and the files it includes) into routes.yaml. Diagnostics go to stderr as
    /// FILE:LINE:COL: level: message. Exit 0: everything carried over (notes only); 3: written, with
    /// warnings (something not carried over, or a hazard in the config); 1: the input cannot be read
    /// or parsed (nothing written).
    Import {
        /// The nginx.conf.
        file: PathBuf,
        /// Where to write routes.yaml [default: stdout].
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Host names that are Services of this namespace (`svc`, `svc.ns`, `svc.ns.svc…`) become
        /// `service:` backends; without it every host name is a DNS address.
        #[arg(long)]
        namespace: Option<String>,
    },
    /// Be the cluster's Gateway API controller (GatewayClasses whose controllerName is
    /// ferry.dev/gateway-controller): give each Gateway its own data plane (a Deployment running
    /// `ferry run --gateway` and a Service, NodePort unless the class's parametersRef ConfigMap
    /// says `serviceType`), and write the status of GatewayClasses, Gateways and routes. One
    /// replica writes, elected by a Lease in its namespace (POD_NAMESPACE).
    GatewayController {
        /// The ferry image the data planes run.
        #[arg(long, env = "FERRY_DATA_PLANE_IMAGE")]
        data_plane_image: String,
        /// Their imagePullPolicy.
        #[arg(long, default_value = "IfNotPresent")]
        image_pull_policy: String,
        /// Data plane replicas per Gateway.
        #[arg(long, default_value_t = 2)]
        replicas: i32,
        /// The Lease that elects the writer.
        #[arg(long, default_value = "ferry-gateway-controller")]
        election_id: String,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
    /// Run ferry in front of built-in demo upstreams (config, eureka, gateway; three pods each). No cluster needed.
    Demo {
        /// Data listener address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Admin listener address.
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        #[command(flatten)]
        rt: RuntimeArgs,
    },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().flatten_event(true).init(),
    }
}

/// One worker: a current-thread runtime (no work-stealing, no cross-thread wake-ups; every task
/// runs on the thread that accepted its connection). More: tokio's work-stealing scheduler.
fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    b.enable_all().thread_name("ferry-worker").build().context("cannot start the runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { manifests, ingress_class, .. } if !manifests.is_empty() => {
            return check_manifests(&manifests, &ingress_class)
        }
        Command::Check { config, .. } => return check(&config),
        Command::Import { file, output, namespace } => return import(&file, output.as_deref(), namespace),
        Command::Run { config, ingress, discovery, rt } if ingress.gateway.is_some() => {
            init_logging(rt.log_format);
            runtime(rt.threads).and_then(|r| r.block_on(serve_gateway(config, ingress, discovery.into())))
        }
        Command::GatewayController { data_plane_image, image_pull_policy, replicas, election_id, rt } => {
            init_logging(rt.log_format);
            runtime(rt.threads).and_then(|r| {
                r.block_on(gateway_controller(data_plane_image, image_pull_policy, replicas, election_id))
            })
        }
        Command::Run { config, ingress, discovery, rt } if ingress.enabled() => {
            init_logging(rt.log_format);
            runtime(rt.threads).and_then(|r| r.block_on(serve_sources(config, ingress, discovery.into())))
        }
        Command::Run { config, discovery, rt, .. } => {
            init_logging(rt.log_format);
            let config = config.unwrap_or_else(|| PathBuf::from("routes.yaml"));
            // Parse the very bytes the reload watcher will compare against.
            let text = match std::fs::read_to_string(&config) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("{}: cannot read: {e}", config.display());
                    return ExitCode::from(1);
                }
            };
            match Config::parse(&config.display().to_string(), &text) {
                Err(errors) => {
                    for e in &errors.0 {
                        eprintln!("{e}");
                    }
                    eprintln!("ferry: {} error(s) in {}; not starting", errors.0.len(), config.display());
                    return ExitCode::from(1);
                }
                Ok(cfg) => runtime(rt.threads)
                    .and_then(|r| r.block_on(serve(cfg, config, text.into_bytes(), discovery.into()))),
            }
        }
        Command::Demo { listen, admin, rt } => {
            init_logging(rt.log_format);
            runtime(rt.threads).and_then(|r| r.block_on(demo(listen, admin)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferry: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    use std::io::Write;
    let errors: Vec<String> = match Config::load(path) {
        Err(config::LoadError::Read(e)) => vec![e.to_string()],
        Err(config::LoadError::Invalid(errors)) => errors.0.iter().map(|e| e.to_string()).collect(),
        // The files it names are read too (a certificate pair that does not match, a missing error
        // page or static directory fails here).
        Ok(c) => match ferry::tls::load_files(&c)
            .and_then(|certs| ferry::auth::UserFiles::default().load(&c).map(|()| certs))
            .and_then(|certs| ferry::files::Files::default().load(&c).map(|()| certs))
        {
            Ok(certs) => {
                let names = certs.into_iter().map(|(l, set)| (l, set.names)).collect();
                // Errors writing (a closed pipe) are ignored: the exit code still tells.
                let _ = std::io::stdout().lock().write_all(c.summary(&path.display().to_string(), &names).as_bytes());
                return ExitCode::SUCCESS;
            }
            Err(errors) => errors.0.iter().map(|e| e.to_string()).collect(),
        },
    };
    for e in &errors {
        eprintln!("{e}");
    }
    eprintln!("{}: {} error(s)", path.display(), errors.len());
    ExitCode::from(1)
}

fn check_manifests(paths: &[PathBuf], class: &str) -> ExitCode {
    use ferry::sources::{ingress, manifests::Manifests, Severity};
    let m = match Manifests::read(paths) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} error(s)", errors.len());
            return ExitCode::from(1);
        }
    };
    let dir = std::env::temp_dir().join(format!("ferry-check-{}", std::process::id()));
    let mut settings = ingress::Settings::new(
        "127.0.0.1:0".parse().expect("an address"),
        "127.0.0.1:0".parse().expect("an address"),
        dir,
    );
    settings.class = class.to_string();
    let out = ingress::translate(&m.objects, &settings);
    for p in &out.problems {
        eprintln!("{}", m.render(p));
    }
    let errors = out.problems.iter().filter(|p| p.severity == Severity::Error).count();
    let warnings = out.problems.len() - errors;
    // The translation as a whole must pass ferry's parser; if not, that is a bug in ferry.
    let parsed = ferry::sources::config(&out, None, config::defaults::ADMIN.parse().expect("an address"));
    let routes = match &parsed {
        Ok(c) => c.route_count(),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "{} Ingress(es) of class {class}: {routes} route(s), {} backend(s); {errors} error(s), {warnings} warning(s)",
        out.accepted.len(),
        out.backends.len()
    );
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn import(file: &std::path::Path, output: Option<&std::path::Path>, namespace: Option<String>) -> ExitCode {
    use std::io::Write;
    let out = match ferry::import::import(file, namespace) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    for d in &out.diags {
        eprintln!("{d}");
    }
    if out.exit_code() == 1 {
        return ExitCode::from(1);
    }
    // What is written must pass `ferry check`; if it does not, that is an importer bug, said as such.
    if let Err(e) = Config::parse(&output.map_or("<stdout>".into(), |p| p.display().to_string()), &out.yaml) {
        eprintln!(
            "{}: error: the imported routes.yaml does not pass ferry check (a bug in ferry import):\n{e}",
            file.display()
        );
        return ExitCode::from(1);
    }
    let written = match output {
        Some(p) => std::fs::write(p, &out.yaml).map_err(|e| format!("{}: {e}", p.display())),
        None => std::io::stdout().lock().write_all(out.yaml.as_bytes()).map_err(|e| e.to_string()),
    };
    if let Err(e) = written {
        eprintln!("cannot write routes.yaml: {e}");
        return ExitCode::from(1);
    }
    ExitCode::from(out.exit_code())
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// The Kubernetes client, if the config needs one: in-cluster environment, KUBECONFIG or
/// ~/.kube/config, in that order. Without one, starting fails on the first Service backend.
async fn kube_client(cfg: &Config) -> anyhow::Result<Option<kube::Client>> {
    if !cfg.uses_kubernetes() {
        return Ok(None);
    }
    let kc = match kube::Config::infer().await {
        Ok(kc) => kc,
        Err(e) => {
            warn!(error = %e, "no Kubernetes config found");
            return Ok(None);
        }
    };
    let ns = kc.default_namespace.clone();
    let client = kube::Client::try_from(kc).context("cannot build the Kubernetes client")?;
    info!(namespace = %ns, "following Kubernetes endpoints");
    Ok(Some(client))
}

async fn serve(cfg: Config, path: PathBuf, loaded: Vec<u8>, discovery: ferry::discovery::Mode) -> anyhow::Result<()> {
    let (drain_delay, shutdown_timeout) = (cfg.drain_delay, cfg.shutdown_timeout);
    // Every client connection holds a descriptor, and an upstream one per request in flight: take
    // the whole hard limit the pod is given (as Go programs do) instead of the usual soft 1024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => info!(open_files = n, "open-files limit"),
        Err(e) => warn!(error = %e, "cannot raise the open-files limit"),
    }
    let kube = kube_client(&cfg).await?;
    let running =
        std::sync::Arc::new(ferry::start_with(cfg, ferry::Options { kube, discovery, ..Default::default() }).await?);
    for (name, addr) in running.listeners() {
        info!(listener = %name, addr = %addr, "listening");
    }
    info!(addr = %running.admin, "admin listening");
    let watcher = match running.watch_config(path.clone(), loaded) {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, file = %path.display(), "cannot watch the config file; reload with SIGHUP");
            None
        }
    };
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
    let mut usr1 =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    let sig = loop {
        tokio::select! {
            sig = terminated() => break sig,
            _ = hup.recv() => {
                info!(file = %path.display(), "SIGHUP: reloading");
                running.reload_file(&path).await;
            }
            _ = usr1.recv() => {
                info!("SIGUSR1: reopening access log files");
                running.reopen_logs();
            }
        }
    };
    drop(watcher);
    info!(signal = sig, drain_delay = ?drain_delay, shutdown_timeout = ?shutdown_timeout, "draining");
    let running = sole(running)?;
    tokio::select! {
        done = running.shutdown(drain_delay, shutdown_timeout) => {
            if done {
                info!("drained; exiting");
            } else {
                warn!("shutdown_timeout passed with requests still in flight; exiting");
            }
        }
        sig = terminated() => warn!(signal = sig, "second signal; exiting now"),
    }
    Ok(())
}

/// Reads manifests from disk and translates them, as the live watch would (Service backends
/// become the addresses their EndpointSlices on disk list).
fn translate_files(
    dir: &std::path::Path,
    settings: &ferry::sources::ingress::Settings,
) -> anyhow::Result<ferry::sources::ingress::Output> {
    let m = ferry::sources::manifests::Manifests::read(&[dir.to_path_buf()])
        .map_err(|e| anyhow::anyhow!("cannot read the manifests:\n{}", e.join("\n")))?;
    let mut out = ferry::sources::ingress::translate(&m.objects, settings);
    for p in &out.problems {
        warn!(problem = %m.render(p), "Ingress problem");
    }
    m.resolve_services(&mut out);
    Ok(out)
}

/// Reads the routes file again whenever it changes (as `ferry run -c` does) and sends each valid
/// version; an invalid one is logged and the running config stays.
fn follow_routes_file(
    path: PathBuf,
    tx: tokio::sync::mpsc::Sender<Result<Config, String>>,
) -> anyhow::Result<ferry::server::watch::Watch> {
    let (mut w, mut changes) =
        ferry::server::watch::Watch::new("the config file", std::time::Duration::from_millis(100))
            .context("cannot watch the routes file")?;
    w.follow([path.as_path()]).context("cannot watch the routes file")?;
    tokio::spawn(async move {
        let mut last = std::fs::read(&path).ok();
        while changes.next().await {
            let now = std::fs::read(&path).ok();
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            match Config::load(&path) {
                Ok(cfg) => {
                    info!(file = %path.display(), "routes file changed; applying it with the Ingresses");
                    if tx.send(Ok(cfg)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    for line in e.to_string().lines() {
                        tracing::error!("{line}");
                    }
                    warn!(file = %path.display(), "routes file rejected; keeping the last good one");
                    if tx.send(Err(e.to_string())).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Ok(w)
}

/// ferry from Ingresses (live, or manifests on disk), with routes.yaml's listeners beside them when
/// a routes file is given. Every translation is applied like a reload (server::feed).
async fn serve_sources(
    config: Option<PathBuf>,
    args: Box<IngressArgs>,
    discovery: ferry::discovery::Mode,
) -> anyhow::Result<()> {
    use ferry::sources;
    let base = match &config {
        Some(p) => Some(Config::load(p).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let (secrets_dir, own_dir) = args.secrets_dir();
    let mut settings = sources::ingress::Settings::new(args.ingress_http, args.ingress_https, secrets_dir.clone());
    settings.class = args.ingress_class.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let kube = match &args.manifests {
        Some(dir) => {
            tx.send(translate_files(dir, &settings)?).await.ok();
            // A routes file that names Services still needs a client.
            match &base {
                Some(b) => kube_client(b).await?,
                None => None,
            }
        }
        None => {
            let kc = kube::Config::infer().await.context("--ingress needs a Kubernetes config")?;
            let ns = kc.default_namespace.clone();
            let client = kube::Client::try_from(kc).context("cannot build the Kubernetes client")?;
            let watch = sources::watch::Watch {
                settings: settings.clone(),
                reporter: Some("ferry".into()),
                status: args.status(&ns)?,
            };
            tokio::spawn(watch.run(client.clone(), tx.clone()));
            Some(client)
        }
    };
    let (drain_delay, shutdown_timeout) =
        base.as_ref().map_or((config::defaults::DRAIN_DELAY, config::defaults::SHUTDOWN_TIMEOUT), |b| {
            (b.drain_delay, b.shutdown_timeout)
        });
    // routes.yaml is followed as without --ingress: a change is applied with the last translation.
    let (bases_tx, bases) = tokio::sync::mpsc::channel(1);
    let _file_watch = match &config {
        Some(path) => Some(follow_routes_file(path.clone(), bases_tx)?),
        None => None,
    };
    let feed = ferry::server::feed::Feed { base, admin: args.admin, secrets_dir: secrets_dir.clone() };
    let (running, follow) = feed
        .start(
            rx,
            config.as_ref().map(|_| bases),
            // The controller follows every Service's endpoints: each new Ingress may name a new one.
            ferry::Options { kube, discovery, discovery_all: args.manifests.is_none(), ..Default::default() },
        )
        .await?;
    for (name, addr) in running.listeners() {
        info!(listener = %name, addr = %addr, "listening");
    }
    info!(addr = %running.admin, "admin listening");
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("SIGHUP handler")?;
    let sig = loop {
        tokio::select! {
            sig = terminated() => break sig,
            _ = hup.recv() => {
                if let Some(dir) = &args.manifests {
                    info!(dir = %dir.display(), "SIGHUP: reading the manifests again");
                    match translate_files(dir, &settings) {
                        Ok(out) => { let _ = tx.send(out).await; }
                        Err(e) => warn!(error = %format!("{e:#}"), "the manifests cannot be read; the last ones keep serving"),
                    }
                }
            }
        }
    };
    drop(tx);
    follow.abort();
    let _ = follow.await;
    info!(signal = sig, "draining");
    let running = sole(running)?;
    running.shutdown(drain_delay, shutdown_timeout).await;
    if own_dir {
        let _ = std::fs::remove_dir_all(&secrets_dir);
    }
    Ok(())
}

/// The server once nothing else holds it (every task that shared it has ended).
fn sole(running: std::sync::Arc<ferry::Running>) -> anyhow::Result<ferry::Running> {
    std::sync::Arc::try_unwrap(running).map_err(|_| anyhow::anyhow!("internal: the server is still shared at shutdown"))
}

/// This replica's name in a Lease: POD_NAME, else the host name.
fn identity() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("ferry-{}", std::process::id()))
}

/// The data plane of one Gateway: its translation applied like a reload at every change.
async fn serve_gateway(
    config: Option<PathBuf>,
    args: Box<IngressArgs>,
    discovery: ferry::discovery::Mode,
) -> anyhow::Result<()> {
    use ferry::sources::{gateway, gateway_watch::GatewayWatch};
    if config.is_some() {
        anyhow::bail!("--gateway serves its Gateway alone; a routes file does not go with it");
    }
    let spec = args.gateway.clone().unwrap_or_default();
    let (ns, name) = spec.split_once('/').context("--gateway is NAMESPACE/NAME")?;
    let (secrets_dir, own_dir) = args.secrets_dir();
    let settings = gateway::Settings::new([0, 0, 0, 0].into(), secrets_dir.clone());
    let kc = kube::Config::infer().await.context("--gateway needs a Kubernetes config")?;
    let client = kube::Client::try_from(kc).context("cannot build the Kubernetes client")?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let watch = GatewayWatch { settings, serve: Some((ns.to_string(), name.to_string())), controller: None };
    let watching = tokio::spawn(watch.run(client.clone(), Some(tx)));
    let feed = ferry::server::feed::Feed { base: None, admin: args.admin, secrets_dir: secrets_dir.clone() };
    let opts = ferry::Options { kube: Some(client), discovery, discovery_all: true, ..Default::default() };
    let (running, follow) = feed.start(rx, None, opts).await?;
    for (name, addr) in running.listeners() {
        info!(listener = %name, addr = %addr, "listening");
    }
    info!(addr = %running.admin, gateway = %spec, "admin listening");
    let sig = terminated().await;
    watching.abort();
    follow.abort();
    let _ = follow.await;
    info!(signal = sig, "draining");
    let running = sole(running)?;
    running.shutdown(config::defaults::DRAIN_DELAY, config::defaults::SHUTDOWN_TIMEOUT).await;
    if own_dir {
        let _ = std::fs::remove_dir_all(&secrets_dir);
    }
    Ok(())
}

async fn gateway_controller(
    image: String,
    image_pull_policy: String,
    replicas: i32,
    election_id: String,
) -> anyhow::Result<()> {
    use ferry::sources::{gateway, gateway_watch, provision::Provision, status::Election};
    let kc = kube::Config::infer().await.context("the Gateway controller needs a Kubernetes config")?;
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| kc.default_namespace.clone());
    let client = kube::Client::try_from(kc).context("cannot build the Kubernetes client")?;
    // The controller reads Secrets only to check certificates; their files are never served here.
    let dir = std::env::temp_dir().join(format!("ferry-gateway-controller-{}", std::process::id()));
    let watch = gateway_watch::GatewayWatch {
        settings: gateway::Settings::new([127, 0, 0, 1].into(), dir.clone()),
        serve: None,
        controller: Some(gateway_watch::Controller {
            provision: Provision { image, image_pull_policy, replicas },
            election: Election {
                namespace,
                name: election_id,
                identity: identity(),
                duration: std::time::Duration::from_secs(15),
            },
        }),
    };
    info!(controller = gateway::CONTROLLER, "Gateway controller starting");
    let task = tokio::spawn(watch.run(client, None));
    let sig = terminated().await;
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    info!(signal = sig, "Gateway controller stopped");
    Ok(())
}

async fn demo(listen: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let pods = ferry::demo::start_pods().await.context("cannot start demo upstreams")?;
    // The front end's files live in a directory of their own for the demo's lifetime.
    let front_end = std::env::temp_dir().join(format!("ferry-demo-{}", std::process::id()));
    ferry::demo::write_front_end(&front_end).context("cannot write the demo front end")?;
    let yaml = ferry::demo::config_yaml(listen, admin, &pods, &front_end);
    let cfg = Config::parse("<demo>", &yaml).map_err(|e| anyhow::anyhow!("demo config is invalid:\n{e}"))?;
    let drain = (config::defaults::SHUTDOWN_TIMEOUT, cfg.drain_delay);
    let running = ferry::start(cfg).await?;
    let web = running.addr("web").expect("demo has a web listener");
    println!("ferry demo: listening on http://{web} (admin http://{})", running.admin);
    for (svc, addrs) in &pods {
        let list: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
        println!("  {svc}: {}", list.join(", "));
    }
    println!("try:");
    println!("  curl http://{web}/config/application.yml      # config-0..2, round robin");
    println!("  curl http://{web}/eureka/apps                 # eureka-N, the same one for you (client_ip)");
    println!("  curl http://{web}/prod-api/orders             # gateway-0..2 (prefix removed)");
    println!("  open http://{web}/ in a browser                # the front end, served from files");
    println!("  curl http://{}/routes                 # the live table", running.admin);
    println!("  curl http://{}/metrics", running.admin);
    println!("Ctrl-C to stop.");
    let sig = terminated().await;
    info!(signal = sig, "stopping demo");
    running.shutdown(drain.1, drain.0).await;
    let _ = std::fs::remove_dir_all(&front_end);
    Ok(())
}
