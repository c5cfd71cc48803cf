//! The `testament` broker.
//!
//! `testament` (or `testament serve`) runs the broker; `keys` and `token`
//! make development keys and tokens; `check` validates a config file;
//! `decode` prints the packets of an MQTT byte stream.

#![allow(clippy::disallowed_methods)] // the binary reads the clock and files' times

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use testament::auth::{Acl, JwtAuthenticator, KeySet};
use testament::broker::Broker;
use testament::codec::{Decoder, ProtocolVersion};
use testament::config::{self, Config, ConfigError, DriverKind};
use testament::driver::{self, Control, JwtAclPolicy};
use testament::keys;

#[path = "cli/logging.rs"]
mod logging;

#[derive(Parser)]
#[command(
    name = "testament",
    version,
    about = "An MQTT 3.1.1 / 5.0 broker that authorizes the Last Will when it is sent"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (the default).
    Serve(ServeArgs),
    /// Development signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Mint a token for development and tests.
    Token {
        /// The private key (PEM) to sign with.
        #[arg(long)]
        key: PathBuf,
        /// The key id the JWKS knows it by.
        #[arg(long)]
        kid: String,
        /// The principal (`sub`).
        #[arg(long)]
        sub: String,
        /// A role (`roles` claim); repeat for more.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Lifetime: `90s`, `30m`, `1h`, `2d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// `iss`.
        #[arg(long)]
        iss: Option<String>,
        /// `aud`.
        #[arg(long)]
        aud: Option<String>,
    },
    /// Replay a recording (`serve --record`) through a fresh hub and print
    /// its audit records: the decisions the broker made, after the fact.
    Replay {
        /// The recording.
        file: PathBuf,
    },
    /// Validate a config file and print the effective configuration.
    Check {
        /// The file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Ask a running broker through its admin API: list the sessions, show
    /// one, disconnect a client.
    Admin(AdminArgs),
    /// Decode an MQTT byte stream (client or server side) and print its packets.
    Decode {
        /// Protocol version of the stream; by default a CONNECT sets it.
        #[arg(long, value_enum)]
        protocol: Option<Protocol>,
        /// Input is hex text (whitespace ignored) rather than raw bytes.
        #[arg(long)]
        hex: bool,
        /// Largest packet accepted, in bytes.
        #[arg(long, default_value_t = 1 << 20)]
        max_packet_size: u32,
        /// File to read; standard input when absent.
        file: Option<PathBuf>,
    },
}

#[derive(Args)]
struct AdminArgs {
    /// The broker's config: the API's address (`metrics.listen`) and token
    /// (`admin.token_file`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The endpoint (`http://127.0.0.1:9883`), instead of the config's.
    #[arg(long)]
    url: Option<String>,
    /// The token's file, instead of the config's.
    #[arg(long)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// The sessions, connected or stored, in client-id order.
    Clients {
        /// Start after this client id (the last of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One session, as JSON.
    Client {
        /// Its client id.
        client_id: String,
    },
    /// Disconnect a client: 5.0 DISCONNECT with the reason code, 3.1.1 a
    /// close; its will follows unless `--no-will`.
    Disconnect {
        /// Its client id.
        client_id: String,
        /// The DISCONNECT reason code (0x98 Administrative action).
        #[arg(long, default_value = "0x98")]
        reason: String,
        /// Delete its will instead of sending it.
        #[arg(long)]
        no_will: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write DIR/KID.pem and add its public key to DIR/jwks.json.
    Generate {
        /// RS256, ES256 or EdDSA.
        #[arg(long, default_value = "RS256")]
        alg: String,
        /// The key id.
        #[arg(long)]
        kid: String,
        /// The directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Remove a key from a JWKS file (the end of a rotation).
    Remove {
        /// The key id.
        #[arg(long)]
        kid: String,
        /// The JWKS file.
        #[arg(long)]
        jwks: PathBuf,
    },
}

#[derive(Args, Default, Clone)]
struct ServeArgs {
    /// The config file (TOML).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Address to listen on; repeat for more (overrides the config).
    #[arg(long)]
    listen: Vec<String>,
    /// JWKS file (overrides the config).
    #[arg(long)]
    jwks: Option<PathBuf>,
    /// ACL rules file (overrides the config).
    #[arg(long)]
    acl: Option<PathBuf>,
    /// Driver (overrides the config).
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    /// Let clients without credentials in, as `anonymous`.
    #[arg(long)]
    allow_anonymous: bool,
    /// Directory of the development key set.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Record every input of the hub to this file (JSON lines), for
    /// `testament replay`.
    #[arg(long)]
    record: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Driver {
    Mio,
    Smol,
    Blocking,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

// Per idle session, glibc's malloc left ~140 bytes of free holes between
// allocations in use (the transient ones of each CONNECT overflow its
// per-size caches); jemalloc's size classes leave next to none.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Pages freed by a burst (a table that grew, the buffers of a connect
    // storm) go back to the OS within jemalloc's decay time (10 s) instead
    // of staying resident until the next allocation comes to purge them: a
    // broker that went quiet has nothing else to wake the allocator.
    #[cfg(feature = "jemalloc")]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("testament: jemalloc's background thread is off: {e}");
    }
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(cli.serve),
        Some(Command::Serve(mut args)) => {
            args.config = args.config.or(cli.serve.config);
            serve(args)
        }
        Some(Command::Keys(KeysCommand::Generate { alg, kid, out })) => keys::algorithm(&alg)
            .and_then(|alg| keys::generate(alg, &kid, &out))
            .map(|()| {
                println!(
                    "wrote {} and {}",
                    out.join(format!("{kid}.pem")).display(),
                    out.join("jwks.json").display()
                );
                ExitCode::SUCCESS
            })
            .map_err(|e| e.to_string()),
        Some(Command::Keys(KeysCommand::Remove { kid, jwks })) => keys::remove(&kid, &jwks)
            .map(|removed| {
                if removed {
                    println!("removed {kid} from {}", jwks.display());
                    ExitCode::SUCCESS
                } else {
                    println!("no key {kid} in {}", jwks.display());
                    ExitCode::FAILURE
                }
            })
            .map_err(|e| e.to_string()),
        Some(Command::Token {
            key,
            kid,
            sub,
            roles,
            ttl,
            iss,
            aud,
        }) => token(&key, &kid, sub, roles, &ttl, iss, aud),
        Some(Command::Replay { file }) => replay(&file),
        Some(Command::Check { config }) => match Config::check(&config).and_then(|(c, files)| {
            c.acl()?;
            Ok((c, files))
        }) {
            Ok((c, files)) => {
                print!("{}", c.to_toml());
                for f in files {
                    eprintln!("checked {f}");
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Err(e.to_string()),
        },
        Some(Command::Admin(args)) => admin(args),
        Some(Command::Decode {
            protocol,
            hex,
            max_packet_size,
            file,
        }) => decode(protocol, hex, max_packet_size, file),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn token(
    key: &Path,
    kid: &str,
    subject: String,
    roles: Vec<String>,
    ttl: &str,
    issuer: Option<String>,
    audience: Option<String>,
) -> Result<ExitCode, String> {
    let pem = std::fs::read_to_string(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let claims = keys::TokenClaims {
        subject,
        roles,
        ttl: keys::parse_ttl(ttl)?,
        issuer,
        audience,
    };
    let token =
        keys::mint(&pem, kid, &claims, driver::SystemClock::wall()).map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// The configuration with the command line's overrides.
fn effective_config(args: &ServeArgs) -> Result<Config, ConfigError> {
    let mut c = match &args.config {
        Some(path) => Config::read(path)?,
        None => Config::default(),
    };
    if !args.listen.is_empty() {
        c.listen.clone_from(&args.listen);
    }
    if let Some(j) = &args.jwks {
        c.jwt.jwks = Some(j.clone());
    }
    if let Some(a) = &args.acl {
        c.acl.path = Some(a.clone());
        c.acl.rules.clear();
    }
    if let Some(d) = args.driver {
        c.driver = match d {
            Driver::Mio => DriverKind::Mio,
            Driver::Smol => DriverKind::Smol,
            Driver::Blocking => DriverKind::Blocking,
        };
    }
    c.allow_anonymous |= args.allow_anonymous;
    if let Some(d) = &args.data_dir {
        c.data_dir.clone_from(d);
    }
    c.validate()?;
    Ok(c)
}

/// The JWKS path in force: the configured one, or the development key set
/// (created on first run).
fn jwks_path(c: &Config) -> Result<PathBuf, String> {
    if let Some(p) = &c.jwt.jwks {
        return Ok(p.clone());
    }
    let jwks = c.data_dir.join("jwks.json");
    if !jwks.exists() {
        keys::algorithm("RS256")
            .and_then(|alg| keys::generate(alg, "dev-1", &c.data_dir))
            .map_err(|e| e.to_string())?;
        log::info!(
            "created a development key set in {} (key dev-1)",
            c.data_dir.display()
        );
    }
    Ok(jwks)
}

fn load(c: &Config, jwks: &Path) -> Result<(KeySet, Acl), ConfigError> {
    Ok((config::read_jwks(jwks, c.jwt.allow_hmac)?, c.acl()?))
}

fn modified(paths: &[PathBuf]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn serve(args: ServeArgs) -> Result<ExitCode, String> {
    let c = effective_config(&args).map_err(|e| e.to_string())?;
    logging::init(&c.log.level, c.log.json(), c.log.audit_file.as_deref())?;
    // The key set: fetched from its endpoint, or read from its file (the
    // development one, made on first start, when neither is configured).
    let (keys, jwks, fetched) = match &c.jwt.jwks_url {
        Some(url) => {
            let endpoint =
                driver::jwks::JwksEndpoint::new(url, c.jwt.jwks_ca.as_deref(), c.jwt.allow_hmac)
                    .map_err(|e| format!("jwt.jwks_ca: {e}"))?;
            let first = endpoint
                .fetch()
                .map_err(|e| format!("jwt.jwks_url {url}: {e}"))?;
            log::info!("key set from {url}: {}", driver::jwks::kids(&first.keys));
            let driver::jwks::Fetched {
                keys,
                body,
                max_age,
            } = first;
            (keys, None, Some((endpoint, body, max_age)))
        }
        None => {
            let jwks = jwks_path(&c)?;
            let keys = config::read_jwks(&jwks, c.jwt.allow_hmac).map_err(|e| e.to_string())?;
            (keys, Some(jwks), None)
        }
    };
    let acl = c.acl().map_err(|e| e.to_string())?;
    let broker_config = c.broker_config().map_err(|e| e.to_string())?;
    let reload_config = c.clone();
    let reload_jwks = jwks.clone();
    // A fetched key set is asked for anew by a token with an unknown kid
    // and by a reload (SIGHUP).
    let (refetch, asks) = driver::jwks::refetch_channel();
    let reload_refetch = refetch.clone();
    let mut policy = JwtAclPolicy::new(JwtAuthenticator::new(c.jwt_config(), keys), acl);
    if let Some(which) = c.certificate_principal().map_err(|e| e.to_string())? {
        policy = policy.with_certificate_principal(which);
    }
    let mut policy = policy.with_reloader(move || {
        let loaded = match &reload_jwks {
            Some(file) => load(&reload_config, file).map(|(k, a)| (Some(k), a)),
            // A fetched key set follows its endpoint: the ACL alone.
            None => {
                reload_refetch.ask();
                reload_config.acl().map(|a| (None, a))
            }
        };
        match loaded {
            Ok(loaded) => {
                log::info!("reloaded the key set and the ACL");
                Some(loaded)
            }
            Err(e) => {
                log::error!("reload refused, the old key set and ACL stay: {e}");
                None
            }
        }
    });
    if fetched.is_some() {
        policy = policy.with_unknown_key_hook(move |_| refetch.ask());
    }
    let policy = Arc::new(policy);
    if let Some((endpoint, body, max_age)) = fetched {
        let schedule = driver::jwks::Schedule {
            refresh: Duration::from_secs(c.jwt.jwks_refresh_secs),
            min_interval: Duration::from_secs(c.jwt.jwks_min_interval_secs),
        };
        let installed = policy.clone();
        driver::jwks::spawn(endpoint, body, max_age, schedule, asks, move |keys| {
            installed.replace_keys(keys);
        })
        .map_err(|e| e.to_string())?;
    }
    let mut driver_config = c.driver_config();
    // The operator's endpoint: bound now (a taken port stops the start),
    // served once the driver's control channel exists.
    let mut ops = None;
    if let Some(addr) = c.metrics.address().map_err(|e| e.to_string())? {
        let listener =
            std::net::TcpListener::bind(addr).map_err(|e| format!("metrics.listen {addr}: {e}"))?;
        let addr = listener.local_addr().unwrap_or(addr);
        if !addr.ip().is_loopback() {
            log::warn!(
                "the metrics endpoint on {addr} answers anyone who reaches it: keep it on a private network"
            );
        }
        let metrics = driver::metrics::Metrics::new();
        driver_config.metrics = Some(metrics.clone());
        ops = Some((listener, metrics, addr));
    }
    let admin_token = c.admin.token().map_err(|e| e.to_string())?;
    // What survives a restart: opened before anything is served; a store
    // that cannot be read stops the broker, naming the file.
    let mut restored = testament::broker::Restored::default();
    if broker_config.durable {
        let path = c.data_dir.join("testament.redb");
        let store = driver::storage::RedbStorage::open(&path).map_err(|e| e.to_string())?;
        restored = store.load().map_err(|e| e.to_string())?;
        log::info!(
            "storage {}: {} retained messages, {} sessions and {} of their messages restored",
            path.display(),
            restored.retained.len(),
            restored.sessions.len(),
            restored.messages.len()
        );
        driver_config.storage = Some(Arc::new(std::sync::Mutex::new(store)));
    }
    let mut recorder = match &args.record {
        Some(path) => {
            let file = std::fs::File::create(path)
                .map_err(|e| format!("record {}: {e}", path.display()))?;
            let acl = driver::Policy::acl(&*policy);
            Some(driver::Recorder::new(
                Box::new(std::io::BufWriter::new(file)),
                driver_config.clock.now(),
                &broker_config,
                acl.as_deref(),
            ))
        }
        None => None,
    };
    let policy: Arc<dyn driver::Policy> = policy;
    let tls = match c.tls_files() {
        Some(files) => Some(driver::tls::Tls::load(files).map_err(|e| e.to_string())?),
        None => None,
    };
    let watched: Vec<PathBuf> = jwks
        .clone()
        .into_iter()
        .chain(c.acl.path.clone())
        .chain(c.tls.cert.clone())
        .chain(c.tls.key.clone())
        .chain(c.tls.client_ca.clone())
        .collect();

    let mut listeners = Vec::new();
    for (addrs, tls, websocket) in [
        (&c.listen, None, false),
        (&c.tls.listen, tls.as_ref(), false),
        (&c.websocket.listen, None, true),
        (&c.websocket.tls_listen, tls.as_ref(), true),
    ] {
        for a in addrs {
            let l = bind(a).map_err(|e| format!("listen {a}: {e}"))?;
            if let Ok(a) = l.local_addr() {
                let kind = match (tls.is_some(), websocket) {
                    (false, false) => String::new(),
                    (true, false) => " (TLS)".to_owned(),
                    (false, true) => format!(" (WebSocket ws://{a}{})", c.websocket.path),
                    (true, true) => format!(" (WebSocket wss://{a}{})", c.websocket.path),
                };
                log::info!("testament listening on {a}{kind}");
                if tls.is_none() && !a.ip().is_loopback() {
                    log::warn!(
                        "{a} is plain TCP beyond loopback: tokens and messages cross the network in clear text; \
                         give remote clients a TLS listener ([tls] listen, [websocket] tls_listen)"
                    );
                }
            }
            listeners.push((l, tls.cloned(), websocket));
        }
    }
    if c.jwt.jwks.is_none() && c.jwt.jwks_url.is_none() {
        let key = c.data_dir.join("dev-1.pem");
        log::info!(
            "development keys: mint a token with `testament token --key {} --kid dev-1 --sub alice` \
             and connect with user name alice and the token as password",
            key.display()
        );
    }

    // Signals and file changes become controls for the driver.
    let (send, control): (Box<dyn Fn(Control) -> bool + Send + Sync>, Receiver) = match c.driver {
        DriverKind::Smol => {
            let (tx, rx) = smol::channel::unbounded();
            (
                Box::new(move |c| tx.send_blocking(c).is_ok()),
                Receiver::Smol(rx),
            )
        }
        DriverKind::Blocking | DriverKind::Mio => {
            let (tx, rx) = std::sync::mpsc::channel();
            let tx = std::sync::Mutex::new(tx);
            let send = Box::new(move |c| tx.lock().map(|t| t.send(c).is_ok()).unwrap_or(false));
            if c.driver == DriverKind::Mio {
                (send, Receiver::Mio(rx))
            } else {
                (send, Receiver::Blocking(rx))
            }
        }
    };
    let send: Arc<dyn Fn(Control) -> bool + Send + Sync> = Arc::from(send);
    if let Some((listener, metrics, addr)) = ops {
        let admin = admin_token.map(|token| driver::ops::AdminApi {
            token,
            send: send.clone(),
        });
        let with_admin = if admin.is_some() {
            " and the admin API on /admin/"
        } else {
            ""
        };
        driver::ops::serve(listener, metrics, admin).map_err(|e| e.to_string())?;
        log::info!("metrics on http://{addr}/metrics{with_admin}");
    }
    {
        let send = send.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGHUP,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .map_err(|e| format!("signals: {e}"))?;
        std::thread::spawn(move || {
            for signal in signals.forever() {
                let control = if signal == signal_hook::consts::SIGHUP {
                    Control::Reload
                } else {
                    Control::Shutdown
                };
                if !send(control) {
                    return;
                }
            }
        });
    }
    {
        let send = send.clone();
        // Taken here, not in the thread: a change made before the thread
        // first ran would otherwise be its starting point, never reloaded.
        let mut seen = modified(&watched);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(2));
                let now = modified(&watched);
                if now != seen {
                    seen = now;
                    if !send(Control::Reload) {
                        return;
                    }
                }
            }
        });
    }

    let durable = broker_config.durable;
    let mut hub = Broker::new(broker_config);
    if durable {
        let now = driver_config.clock.now();
        if let Some(r) = recorder.as_mut() {
            r.restore(now, &restored);
        }
        hub.restore_all(now, restored);
    }
    let result = match control {
        Receiver::Smol(rx) => {
            let listeners = listeners
                .into_iter()
                .map(|(l, tls, websocket)| {
                    l.set_nonblocking(true)?;
                    Ok(driver::smol::Listener {
                        tcp: smol::net::TcpListener::try_from(l)?,
                        tls,
                        websocket,
                    })
                })
                .collect::<std::io::Result<Vec<_>>>()
                .map_err(|e| format!("listen: {e}"))?;
            smol::block_on(driver::smol::serve(
                listeners,
                hub,
                policy,
                driver_config,
                recorder,
                rx,
            ))
        }
        Receiver::Blocking(rx) => {
            let listeners = listeners
                .into_iter()
                .map(|(tcp, tls, websocket)| driver::blocking::Listener {
                    tcp,
                    tls,
                    websocket,
                })
                .collect();
            driver::blocking::serve(listeners, hub, policy, driver_config, recorder, rx)
        }
        Receiver::Mio(rx) => {
            let listeners = listeners
                .into_iter()
                .map(|(tcp, tls, websocket)| driver::mio::Listener {
                    tcp,
                    tls,
                    websocket,
                })
                .collect();
            driver::mio::serve(listeners, hub, policy, driver_config, recorder, rx)
        }
    };
    result.map_err(|e| e.to_string())?;
    Ok(ExitCode::SUCCESS)
}

/// A listening socket with a backlog that absorbs a connect storm (the std
/// default is smaller).
fn bind(addr: &str) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let addr: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn replay(file: &Path) -> Result<ExitCode, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let records = driver::replay(std::io::BufReader::new(f)).map_err(|e| e.to_string())?;
    for r in records {
        println!("{r}");
    }
    Ok(ExitCode::SUCCESS)
}

enum Receiver {
    Smol(smol::channel::Receiver<Control>),
    Blocking(std::sync::mpsc::Receiver<Control>),
    Mio(std::sync::mpsc::Receiver<Control>),
}

/// `testament admin`: one request to the admin API, its answer printed.
fn admin(args: AdminArgs) -> Result<ExitCode, String> {
    let config = match &args.config {
        Some(path) => Some(Config::read(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let url = match (&args.url, &config) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(c)) => match c.metrics.address().map_err(|e| e.to_string())? {
            Some(a) => format!("http://{a}"),
            None => return Err("the config sets no metrics.listen: the admin API is off".into()),
        },
        (None, None) => return Err("give --config FILE, or --url and --token-file".into()),
    };
    let section = config::AdminSection {
        token_file: args
            .token_file
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.admin.token_file.clone())),
    };
    let token = section
        .token()
        .map_err(|e| e.to_string())?
        .ok_or("no token: give --token-file, or a config with admin.token_file")?;
    let id = |s: &str| {
        percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let bearer = format!("Bearer {token}");
    let (get, path) = match &args.command {
        AdminCommand::Clients { after, limit, .. } => {
            let after = after
                .as_deref()
                .map(|a| format!("&after={}", id(a)))
                .unwrap_or_default();
            (true, format!("/admin/clients?limit={limit}{after}"))
        }
        AdminCommand::Client { client_id } => (true, format!("/admin/clients/{}", id(client_id))),
        AdminCommand::Disconnect {
            client_id,
            reason,
            no_will,
        } => (
            false,
            format!(
                "/admin/clients/{}/disconnect?reason={}&will={}",
                id(client_id),
                id(reason),
                !no_will
            ),
        ),
    };
    let target = format!("{url}{path}");
    let response = if get {
        agent.get(&target).header("Authorization", &bearer).call()
    } else {
        agent
            .post(&target)
            .header("Authorization", &bearer)
            .send_empty()
    };
    let mut response = response.map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))?;
    let value: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| format!("{url}: not the admin API's answer ({e}): {body}"))?;
    if !status.is_success() {
        let message = value["error"].as_str().unwrap_or(&body);
        return Err(format!("{status}: {message}"));
    }
    match &args.command {
        AdminCommand::Clients { json: false, .. } => print_clients(&value),
        _ => println!("{}", serde_json::to_string_pretty(&value).unwrap_or(body)),
    }
    Ok(ExitCode::SUCCESS)
}

/// The sessions as a table, one line each.
fn print_clients(value: &serde_json::Value) {
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let columns = [
        ("CLIENT ID", "client_id"),
        ("PRINCIPAL", "principal"),
        ("ADDRESS", "address"),
        ("PROTOCOL", "protocol"),
        ("CONNECTED SINCE", "connected_since"),
        ("CREDENTIAL EXPIRES", "credential_expires_at"),
        ("WILL", "will_topic"),
        ("SUBS", "subscriptions"),
        ("QUEUED", "queued"),
    ];
    let empty = Vec::new();
    let clients = value["clients"].as_array().unwrap_or(&empty);
    let rows: Vec<Vec<String>> = clients
        .iter()
        .map(|c| columns.iter().map(|(_, key)| text(&c[*key])).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, (head, _))| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([head.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|(h, _)| *h).collect());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
    println!("{} of {} sessions", rows.len(), text(&value["total"]));
}

fn decode(
    protocol: Option<Protocol>,
    hex: bool,
    max_packet_size: u32,
    file: Option<PathBuf>,
) -> Result<ExitCode, String> {
    let mut raw = Vec::new();
    match &file {
        Some(path) => raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => {
            std::io::stdin()
                .read_to_end(&mut raw)
                .map_err(|e| format!("stdin: {e}"))?;
        }
    }
    let bytes = if hex { parse_hex(&raw)? } else { raw };
    let mut decoder = Decoder::new(max_packet_size);
    match protocol {
        Some(Protocol::V311) => decoder.set_version(ProtocolVersion::V311),
        Some(Protocol::V5) => decoder.set_version(ProtocolVersion::V5),
        None => {}
    }
    decoder.feed(&bytes);
    loop {
        match decoder.decode() {
            Ok(Some(packet)) => println!("{packet:?}"),
            Ok(None) if decoder.buffered() == 0 => return Ok(ExitCode::SUCCESS),
            Ok(None) => {
                println!(
                    "incomplete: {} bytes of a frame left over",
                    decoder.buffered()
                );
                return Ok(ExitCode::FAILURE);
            }
            Err(e) => {
                println!("error: {e} (reason code {})", e.reason_code());
                return Ok(ExitCode::FAILURE);
            }
        }
    }
}

fn parse_hex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("not hex: {}", String::from_utf8_lossy(pair)))
        })
        .collect()
}
