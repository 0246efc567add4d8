//! `pollen kv slave|master`: one node of the replicated key-value store on the real driver —
//! its options, the checks between them (a log's options need `--data-dir`, which only a
//! worker takes), and the role built from them: failure detector, journal, version base.
//! `--fsync` is parsed here for `pollen sim kv` too.

use getopts::{Matches, Options};

use super::Exit;
use super::args::{self, number};
use crate::info;
use crate::journal::{self, Fsync};
use crate::net;
use crate::node::NodeId;
use crate::roles::kv::{self, Kv};

const BRIEF: &str = "\
usage: pollen kv slave PORT [-h HOST] [--peer-config-file FILE] [--cluster NAME]  (alias: worker)
                       [--cookie-file FILE]
                       [--data-dir DIR [--fsync always|everysec|no] [--rewrite-min BYTES]]
                       [-v | -q]
       pollen kv master PORT [-h HOST] [--peer-config-file FILE] [--cluster NAME]
                        [--cookie-file FILE] [--replicas N] [--resp-port P] [--no-repl]
                        [--suspect-ms MS] [--evict-ms MS] [-v | -q]
       pollen kv node PORT [-h HOST] [--peer-config-file FILE] [--cluster NAME]
                      [--cookie-file FILE] [--replicas N] [--write-quorum W]
                      [--read-quorum R] [--resp-port P] [--repl] [--front-door]
                      [--data-dir DIR [--fsync always|everysec|no]] [-v | -q]

The peers file lists the workers (default peers.json). The master reads commands on stdin
(GET, SET, DEL, KILL, NODES, SHUTDOWN, QUIT, ...) and serves the Redis protocol on --resp-port
(default 7379). A worker with --data-dir logs every write there before acknowledging it and
replays the log when it starts again.

`kv node` is a node of the masterless store: the peers file lists every node, each serves
Redis clients on --resp-port (default PORT + 1000) and coordinates their requests on the key's
replicas itself (quorums W and R, default a majority of --replicas, default 3). With
--front-door the node is not in the peers file and holds no data: it coordinates for its
clients only (distro-db's master, minus the single point of failure).";

/// The options in the order `--help` lists them (master's and worker's interleaved).
fn options() -> Options {
    let mut options = Options::new();
    args::common_options(&mut options);
    args::cookie_option(&mut options);
    options.optopt("h", "host", "this node's host (default 127.0.0.1)", "HOST");
    args::peers_option(&mut options, "workers' peers file (default peers.json)");
    options.optopt("", "replicas", "copies of each key (default 2)", "N");
    options.optopt(
        "",
        "resp-port",
        "port for Redis clients (default 7379)",
        "P",
    );
    options.optflag("", "no-repl", "do not read commands from stdin");
    options.optflag("", "repl", "node: read commands from stdin");
    options.optflag(
        "",
        "front-door",
        "node: hold no data; coordinate for this node's clients only (not in the peers file)",
    );
    options.optopt(
        "",
        "write-quorum",
        "node: replicas that must hold a write (default replicas/2 + 1)",
        "W",
    );
    options.optopt(
        "",
        "read-quorum",
        "node: replicas a read asks (default replicas + 1 - W)",
        "R",
    );
    options.optopt(
        "",
        "data-dir",
        "worker: keep an append-only log of writes here",
        "DIR",
    );
    options.optopt(
        "",
        "fsync",
        "worker: sync the log before every acknowledgement (always), once a second \
         (everysec, the default) or never (no)",
        "POLICY",
    );
    options.optopt(
        "",
        "suspect-ms",
        "master: stop waiting for a worker silent this long (default 1000; workers beat every \
         100 ms)",
        "MS",
    );
    options.optopt(
        "",
        "evict-ms",
        "master: take a worker suspected this long out of the membership (default 10000)",
        "MS",
    );
    options.optopt(
        "",
        "rewrite-min",
        "worker: rewrite the log once it is past this size and twice the live data \
         (default 67108864)",
        "BYTES",
    );
    args::cluster_option(
        &mut options,
        "cluster name in the handshake (default pollen-kv)",
    );
    options
}

/// Everything but the peers: what the role is built from.
struct Settings {
    is_master: bool,
    port: u16,
    host: String,
    replicas: usize,
    resp_port: u16,
    fsync: Fsync,
    rewrite_min: u64,
    suspect_ms: u64,
    evict_ms: u64,
    data_dir: Option<String>,
}

pub(super) fn run(args: &[String]) -> Result<(), Exit> {
    let matches = args::parse_with_positionals(&options(), args, BRIEF)?;
    if matches.free.first().is_some_and(|word| word == "node") {
        return run_node(&matches);
    }
    for option in ["repl", "write-quorum", "read-quorum", "front-door"] {
        if matches.opt_present(option) {
            return Err(Exit::Usage(format!("kv: --{option} is for `kv node`")));
        }
    }
    let settings = settings(&matches)?;
    let cluster = args::cluster(&matches, "pollen-kv")?;
    let members = args::master_and_workers(
        "kv",
        args::peers(&matches)?,
        kv::WORKERS_MAX,
        (&settings.host, settings.port),
        settings.is_master,
    )?;
    let is_master = settings.is_master;
    let repl = is_master && !matches.opt_present("no-repl");
    let clients = if is_master {
        let address = format!("{}:{}", settings.host, settings.resp_port);
        Some(crate::peers::resolve(&address).map_err(Exit::Usage)?)
    } else {
        None
    };
    let role = role(&settings, members.node, members.workers, repl)?;
    let config = net::Config {
        node: members.node,
        addresses: members.addresses,
        cluster,
        clients,
        repl,
        output: None,
        cookie: args::cookie(&matches)?,
    };
    let driver = args::start_driver(config, role)?;
    if is_master {
        let port = driver
            .client_address()
            .map_or(settings.resp_port, |a| a.port());
        info!(
            "kv master: {} workers, {} replicas, Redis clients on port {port}",
            members.workers, settings.replicas
        );
    } else {
        let own = driver
            .local_address()
            .map_err(|e| Exit::Failure(e.to_string()))?;
        info!(
            "worker {}: waiting for a master to connect to {own}",
            members.node
        );
    }
    args::run_driver(driver)?;
    Ok(())
}

/// The positional words and every option but the peers file, cluster and cookie, checked
/// against each other.
fn settings(matches: &Matches) -> Result<Settings, Exit> {
    let free: Vec<&str> = matches.free.iter().map(String::as_str).collect();
    let (is_master, port) = match free.as_slice() {
        ["slave" | "worker", port] => (false, *port),
        ["master", port] => (true, *port),
        _ => {
            return Err(Exit::Usage(
                "kv: expected `slave PORT` or `master PORT` (try --help)".to_string(),
            ));
        }
    };
    let port = args::positional_port("kv", port)?;
    let host = args::host(matches);
    let replicas: usize = number(matches, "replicas", 2)?;
    let replicas_max = kv::placement::REPLICAS_MAX;
    if !(1..=replicas_max).contains(&replicas) {
        return Err(Exit::Usage(format!(
            "--replicas must be 1..={replicas_max}"
        )));
    }
    let resp_port: u16 = number(matches, "resp-port", 7379)?;
    let fsync = fsync(matches)?.unwrap_or(Fsync::EverySec);
    let rewrite_min: u64 = number(matches, "rewrite-min", 64 << 20)?;
    let suspect_ms: u64 = number(matches, "suspect-ms", 1000)?;
    let evict_ms: u64 = number(matches, "evict-ms", 10_000)?;
    if suspect_ms < 300 || evict_ms < suspect_ms {
        return Err(Exit::Usage(
            "kv: --suspect-ms must be at least 300 (three heartbeats) and --evict-ms at least \
             --suspect-ms"
                .to_string(),
        ));
    }
    let data_dir = matches.opt_str("data-dir");
    if data_dir.is_none() && (matches.opt_present("fsync") || matches.opt_present("rewrite-min")) {
        return Err(Exit::Usage(
            "kv: --fsync and --rewrite-min need --data-dir".to_string(),
        ));
    }
    if is_master && data_dir.is_some() {
        return Err(Exit::Usage(
            "kv: --data-dir is for workers (the master keeps no data)".to_string(),
        ));
    }
    Ok(Settings {
        is_master,
        port,
        host,
        replicas,
        resp_port,
        fsync,
        rewrite_min,
        suspect_ms,
        evict_ms,
        data_dir,
    })
}

/// `--fsync`, if given.
pub(super) fn fsync(matches: &Matches) -> Result<Option<Fsync>, Exit> {
    let Some(text) = matches.opt_str("fsync") else {
        return Ok(None);
    };
    let policy = Fsync::parse(&text)
        .ok_or_else(|| Exit::Usage(format!("--fsync {text:?}: expected always, everysec or no")))?;
    Ok(Some(policy))
}

/// The master or a worker, with its failure detector and, for a worker with `--data-dir`, its
/// journal (opened, and so replayed, here).
fn role(settings: &Settings, node: NodeId, workers: usize, repl: bool) -> Result<Kv, Exit> {
    let heartbeat_us = kv::worker::HEARTBEAT_US;
    let (suspect_us, evict_us) = (settings.suspect_ms * 1000, settings.evict_ms * 1000);
    let mut role = Kv::new(
        node,
        workers,
        settings.replicas,
        repl.then_some(net::REPL_CLIENT),
    )
    .with_failure_detector(heartbeat_us, suspect_us, evict_us);
    if let Some(dir) = &settings.data_dir {
        let journal = journal::file::FileJournal::open(std::path::Path::new(dir), settings.fsync)
            .map_err(Exit::Failure)?;
        role = role.with_journal(Box::new(journal), settings.rewrite_min);
    }
    // Versions start at the master's start time (µs × 16): a restarted master issues newer
    // versions than the previous one did, unless that one wrote faster than 16 per µs.
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Ok(role.with_version_base((since_epoch.as_micros() as u64).saturating_mul(16)))
}

/// `kv node PORT`: a node of the masterless store (`roles::kv::dynamo`).
fn run_node(matches: &Matches) -> Result<(), Exit> {
    let port = match matches.free.as_slice() {
        [_, port] => args::positional_port("kv", port)?,
        _ => {
            return Err(Exit::Usage(
                "kv: expected `node PORT` (try --help)".to_string(),
            ));
        }
    };
    for option in ["no-repl", "suspect-ms", "evict-ms", "rewrite-min"] {
        if matches.opt_present(option) {
            return Err(Exit::Usage(format!("kv: --{option} is not for `kv node`")));
        }
    }
    let host = args::host(matches);
    let mut addresses = args::peers(matches)?;
    let data_nodes = addresses.len();
    let front_door = matches.opt_present("front-door");
    let own = crate::peers::resolve(&format!("{host}:{port}")).map_err(Exit::Usage)?;
    // The place past the data nodes is a front door's: data nodes keep it open (a front door
    // dials them; they never dial it), so one may come and go.
    let node = if front_door {
        if addresses.contains(&own) {
            return Err(Exit::Usage(format!(
                "kv: the front door's {own} is listed as a data node"
            )));
        }
        data_nodes
    } else {
        args::find_self(&addresses, &host, port)?
    };
    addresses.push(if front_door {
        own
    } else {
        "0.0.0.0:0".parse().expect("valid")
    });
    let config = node_config(matches, data_nodes)?;
    let fsync = fsync(matches)?;
    let data_dir = matches.opt_str("data-dir");
    if front_door && data_dir.is_some() {
        return Err(Exit::Usage(
            "kv: a front door keeps no data (no --data-dir)".to_string(),
        ));
    }
    if data_dir.is_none() && fsync.is_some() {
        return Err(Exit::Usage("kv: --fsync needs --data-dir".to_string()));
    }
    let journal: Option<Box<dyn journal::Journal>> = match &data_dir {
        Some(dir) => {
            let policy = fsync.unwrap_or(Fsync::EverySec);
            let journal = journal::file::FileJournal::open(std::path::Path::new(dir), policy)
                .map_err(Exit::Failure)?;
            Some(Box::new(journal))
        }
        None => None,
    };
    let default_resp_port = port.checked_add(1000).unwrap_or(port);
    let resp_port: u16 = number(matches, "resp-port", default_resp_port)?;
    let address = format!("{host}:{resp_port}");
    let clients = Some(crate::peers::resolve(&address).map_err(Exit::Usage)?);
    let replicas = config.replicas;
    let (write_quorum, read_quorum) = (config.write_quorum, config.read_quorum);
    let role = Kv::Node(Box::new(kv::dynamo::Node::new(config, node, journal)));
    let net_config = net::Config {
        node,
        addresses,
        cluster: args::cluster(matches, "pollen-kv")?,
        clients,
        repl: matches.opt_present("repl"),
        output: None,
        cookie: args::cookie(matches)?,
    };
    let driver = args::start_driver(net_config, role)?;
    let port = driver.client_address().map_or(resp_port, |a| a.port());
    let what = if front_door { "front door" } else { "node" };
    info!(
        "kv {what} {node}: {replicas} replicas, W={write_quorum} R={read_quorum}, Redis \
         clients on port {port}"
    );
    args::run_driver(driver)?;
    Ok(())
}

/// The replica count and quorums of `kv node`: `R + W > N` is required (it is what makes
/// the store linearizable).
fn node_config(matches: &Matches, nodes: usize) -> Result<kv::dynamo::Config, Exit> {
    if !(1..=kv::WORKERS_MAX).contains(&nodes) {
        return Err(Exit::Usage(format!(
            "kv: the peers file must list 1..={} nodes",
            kv::WORKERS_MAX
        )));
    }
    let replicas_max = kv::placement::REPLICAS_MAX.min(nodes);
    let replicas: usize = number(matches, "replicas", 3.min(nodes))?;
    if !(1..=replicas_max).contains(&replicas) {
        return Err(Exit::Usage(format!(
            "--replicas must be 1..={replicas_max} (at most the nodes)"
        )));
    }
    let mut config = kv::dynamo::Config::new(nodes, nodes + 1, replicas);
    config.write_quorum = number(matches, "write-quorum", config.write_quorum)?;
    config.read_quorum = number(matches, "read-quorum", replicas + 1 - config.write_quorum)?;
    let (w, r) = (config.write_quorum, config.read_quorum);
    if !(1..=replicas).contains(&w) || !(1..=replicas).contains(&r) || r + w <= replicas {
        return Err(Exit::Usage(format!(
            "kv: quorums must be 1..={replicas} with R + W > N (got W={w} R={r} N={replicas})"
        )));
    }
    config.seed = std::process::id() as u64;
    Ok(config)
}
