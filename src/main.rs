//! The `berth` command: thin; everything lives in the library.
// One exception, measured: `large_buffers_from_the_system` below.
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use berth::config::{Config, LogFormat};

#[derive(Parser)]
#[command(
    name = "berth",
    version,
    about = "A Kubernetes-native, OCI-conformant container registry"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the registry (standalone by default: local data directory, embedded SQLite).
    Serve(ServeArgs),
    /// Run the operator: reconcile Registry, Project and CleanupPolicy objects.
    Operator(OperatorArgs),
    /// Check a data directory offline: every blob's digest, every manifest's
    /// references, orphans. Exit status 1 when problems remain.
    Fsck {
        /// The data directory [default: the config's, else ./berth-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// YAML configuration file (for its dataDir, and its auth.manifestDir's
        /// projects, to check repository depths against).
        #[arg(long, short = 'c', env = "BERTH_CONFIG")]
        config: Option<PathBuf>,
        /// Delete orphans (files and sessions nothing records or references).
        #[arg(long)]
        repair: bool,
        /// Metadata on PostgreSQL at this URL [default: the config's database].
        #[arg(long, env = "BERTH_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// With blobs on S3 (the config's storage.kind s3): read every object
        /// and check its digest, not only its size. Always done on the
        /// filesystem.
        #[arg(long)]
        verify_digests: bool,
    },
    /// Print the CustomResourceDefinitions (YAML), or write one file per CRD to --dir.
    Crds {
        /// Write `<crd name>.yaml` files into this directory instead of printing.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// YAML configuration file; flags override its values.
    #[arg(long, short = 'c', env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:5000].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Directory for blobs, uploads and the metadata database [default: ./berth-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Directory of Project and token Secret manifests (watched for changes).
    #[arg(long)]
    manifest_dir: Option<PathBuf>,
    /// Turn token authentication off: anyone may push, pull and delete.
    #[arg(long)]
    no_auth: bool,
    /// Log format [default: text].
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
    /// Metadata on PostgreSQL at this URL (sets database.kind postgres).
    #[arg(long, env = "BERTH_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Serve HTTPS with this PEM certificate chain (tls.certFile; watched and reloaded).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (tls.keyFile).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus /metrics on this address (metrics.listen) [default: off].
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
}

#[derive(clap::Args)]
struct OperatorArgs {
    /// Image for Registries that do not name one.
    #[arg(long, env = "BERTH_REGISTRY_IMAGE", default_value = concat!("berth:", env!("CARGO_PKG_VERSION")))]
    registry_image: String,
    /// How to reach registry pods for API calls: `service` in the cluster,
    /// `public-host` (spec.publicHost) when the operator runs outside it.
    #[arg(long, value_enum, default_value = "service")]
    registry_address: berth::kubernetes::operator::Connect,
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    metrics_listen: std::net::SocketAddr,
    /// Namespace of the leader election Lease (the operator's own namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "berth-system")]
    lease_namespace: String,
    /// Name of the leader election Lease.
    #[arg(long, default_value = "berth-operator")]
    lease_name: String,
    /// Run without leader election (only ever one replica).
    #[arg(long)]
    no_leader_election: bool,
    /// This replica's name in the Lease and in Events [default: the pod name, else host name and pid].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log filter, such as `info` or `berth=debug,info`; RUST_LOG wins.
    #[arg(long, default_value = "info")]
    log_level: String,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config, berth::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = self.data_dir {
            config.data_dir = dir;
        }
        if let Some(dir) = self.manifest_dir {
            config.auth.manifest_dir = Some(dir);
        }
        if self.no_auth {
            config.auth.enabled = false;
        }
        if let Some(format) = self.log_format {
            config.log.format = format;
        }
        if let Some(url) = self.database_url {
            config.database.url = Some(url);
            config.database.kind = berth::config::DatabaseKind::Postgres;
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            config.tls.cert_file = Some(cert);
            config.tls.key_file = Some(key);
        }
        if let Some(addr) = self.metrics_listen {
            config.metrics.listen = Some(addr);
        }
        config
            .validate()
            .map_err(|(key, message)| berth::config::ConfigError::Combined { key, message })?;
        Ok(config)
    }
}

/// On SIGHUP: the config file's `log.level` (the default, `info`, without
/// a file) becomes the log filter; a file that does not load, or a filter
/// that does not parse, leaves the current one and says why.
fn reload_log_level(log: &berth::observability::LogControl, config: Option<&std::path::Path>) {
    let level = match config.map(Config::from_file) {
        None => berth::config::LogConfig::default().level,
        Some(Ok(c)) => c.log.level,
        Some(Err(e)) => {
            tracing::error!("SIGHUP: log filter unchanged ({}): {e}", log.current());
            return;
        }
    };
    let before = log.current();
    match log.set(&level) {
        Ok(()) => tracing::info!("SIGHUP: log filter changed from {before:?} to {level:?}"),
        Err(e) => tracing::error!("SIGHUP: log filter unchanged ({before}): {e}"),
    }
}

/// Allocations of 256 KiB and more (the 1 MiB chunks of a blob on its way,
/// the HTTP read buffers) are mapped from the system and given back when
/// freed. glibc's default threshold rises to the size of the largest block
/// freed, after which such buffers come from per-thread heaps that keep the
/// memory: a 512 MiB push to S3 then peaked at 54 MiB RSS and stayed at
/// 32 MiB; with the threshold fixed, 42 MiB and back to 20 MiB when done.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn large_buffers_from_the_system() {
    const THRESHOLD: libc::c_int = 256 << 10;
    // SAFETY: mallopt only sets an allocator parameter; it is called once,
    // before any other thread of this process exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn large_buffers_from_the_system() {}

fn runtime() -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new()
        .map_err(|e| eprintln!("berth: cannot start the async runtime: {e}"))
        .ok()
}

fn main() -> ExitCode {
    large_buffers_from_the_system();
    let cli = Cli::parse();
    match cli.command {
        Command::Fsck {
            data_dir,
            config,
            repair,
            database_url,
            verify_digests,
        } => {
            let config = match config.map(|c| Config::from_file(&c)).transpose() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(2);
                }
            };
            let mut effective = config.clone().unwrap_or_default();
            if let Some(dir) = &data_dir {
                effective.data_dir = dir.clone();
            }
            if let Some(url) = database_url {
                effective.database.url = Some(url);
                effective.database.kind = berth::config::DatabaseKind::Postgres;
            }
            let database = match effective
                .validate()
                .map_err(|(key, message)| format!("{key}: {message}"))
                .and_then(|()| berth::server::database_config(&effective))
            {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("berth fsck: {e}");
                    return ExitCode::from(2);
                }
            };
            let data_dir = effective.data_dir.clone();
            // The declared projects, to check repository depths against.
            let projects = match config.as_ref().and_then(|c| c.auth.manifest_dir.as_ref()) {
                Some(dir) => match berth::auth::directory::load_dir(dir) {
                    Ok(declared) => Some(berth::auth::AccessModel::new(declared, None)),
                    Err(e) => {
                        eprintln!("berth fsck: {e}");
                        return ExitCode::from(2);
                    }
                },
                None => None,
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            let started = std::time::Instant::now();
            let on_s3 = effective.storage.kind == berth::config::StorageKind::S3;
            let report = runtime.block_on(async {
                let store = berth::server::open_store(&effective)
                    .await
                    .map_err(|e| e.to_string())?;
                let options = berth::fsck::Options {
                    repair,
                    verify_digests: verify_digests || !on_s3,
                    projects: projects.as_ref(),
                };
                berth::fsck::check_store(&data_dir, &database, store.as_ref(), &options, &|line| {
                    eprintln!("fsck: {line}")
                })
                .await
            });
            match report {
                Err(e) => {
                    eprintln!("berth fsck: {e}");
                    ExitCode::from(2)
                }
                Ok(r) => {
                    for w in &r.warnings {
                        println!("warning: {w}");
                    }
                    for p in &r.problems {
                        println!(
                            "{}{p}",
                            if repair && p.repairable() {
                                "repaired: "
                            } else {
                                ""
                            }
                        );
                    }
                    let left = r
                        .problems
                        .iter()
                        .filter(|p| !(repair && p.repairable()))
                        .count();
                    println!(
                        "fsck {}: {} blobs ({} bytes) {}, {} manifests, {} unreferenced blobs, {} warnings, {} problems, {} repaired, in {:.1} s",
                        data_dir.display(),
                        r.blobs,
                        r.blob_bytes,
                        if verify_digests || !on_s3 {
                            "verified"
                        } else {
                            "checked by size (--verify-digests reads them)"
                        },
                        r.manifests,
                        r.unreferenced_blobs,
                        r.warnings.len(),
                        r.problems.len(),
                        r.repaired,
                        started.elapsed().as_secs_f64()
                    );
                    if left == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        Command::Crds { dir: None } => {
            print!("{}", berth::kubernetes::crd::crds_yaml());
            ExitCode::SUCCESS
        }
        Command::Crds { dir: Some(dir) } => {
            for (name, yaml) in berth::kubernetes::crd::crd_files() {
                let path = dir.join(name);
                if let Err(e) =
                    std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, yaml))
                {
                    eprintln!("berth: cannot write {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("wrote {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Command::Operator(args) => {
            berth::observability::init_logging(&berth::config::LogConfig {
                format: args.log_format,
                level: args.log_level.clone(),
            });
            let identity = args.identity.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "berth".into());
                format!("{host}-{}", std::process::id())
            });
            let settings = berth::kubernetes::operator::Settings {
                registry_image: args.registry_image,
                connect: args.registry_address,
                metrics_listen: args.metrics_listen,
                lease_namespace: (!args.no_leader_election).then_some(args.lease_namespace),
                lease_name: args.lease_name,
                identity,
            };
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            match runtime.block_on(berth::kubernetes::operator::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("berth operator: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let config_path = args.config.clone();
            let config = match args.into_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("berth: {e}");
                    return ExitCode::from(2);
                }
            };
            let log = berth::observability::init_logging(&config.log);
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            if let Some(log) = log {
                runtime.spawn(berth::signal::hangups(move || {
                    reload_log_level(&log, config_path.as_deref())
                }));
            }
            match runtime.block_on(berth::server::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("berth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
