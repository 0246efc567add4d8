//! The peers file: every node's address, in node-id order.
//!
//! Two formats, told apart by the first non-blank character:
//! - a JSON array (chatterbox's `peers.json`): `["127.0.0.1:3000:0", "127.0.0.1:3001:0"]`;
//!   entries may also be objects `{"host": "127.0.0.1", "port": 3000}`;
//! - plain text: one `host:port` per line, `#` starts a comment, blank lines are skipped.
//!
//! An entry is `host:port`, optionally followed by `:N` — the end-point index of a Cloud Haskell
//! node id, which pollen ignores. `host` is an IP address or a name resolved once at start-up;
//! IPv6 addresses go in brackets (`[::1]:3000`).

use std::net::{SocketAddr, ToSocketAddrs};

use serde_json::Value;

use crate::node::NodeId;
use crate::wire::NODES_MAX;

/// Parses and resolves a peers file's text. Errors name the offending entry.
pub fn parse(text: &str) -> Result<Vec<SocketAddr>, String> {
    let addresses = entries(text)?
        .iter()
        .map(|entry| resolve(entry))
        .collect::<Result<Vec<_>, _>>()?;
    for (index, address) in addresses.iter().enumerate() {
        if addresses[..index].contains(address) {
            return Err(format!("{address} is listed twice"));
        }
    }
    Ok(addresses)
}

/// The entries of a peers file (text or JSON), not yet resolved: `host:port` strings.
pub fn entries(text: &str) -> Result<Vec<String>, String> {
    let entries = if text.trim_start().starts_with('[') {
        json_entries(text)?
    } else {
        text.lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter(|line| !line.is_empty())
            .map(str::to_string)
            .collect()
    };
    if entries.is_empty() {
        return Err("no peers listed".to_string());
    }
    if entries.len() > NODES_MAX {
        return Err(format!(
            "{} peers listed; at most {NODES_MAX}",
            entries.len()
        ));
    }
    Ok(entries)
}

pub fn load(path: &str) -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("{path}: {error}"))?;
    parse(&text).map_err(|error| format!("{path}: {error}"))
}

fn json_entries(text: &str) -> Result<Vec<String>, String> {
    let value: Value = serde_json::from_str(text).map_err(|error| format!("bad JSON: {error}"))?;
    let Value::Array(items) = value else {
        return Err("JSON peers file must be an array".to_string());
    };
    items
        .iter()
        .map(|item| match item {
            Value::String(entry) => Ok(entry.clone()),
            Value::Object(fields) => match (fields.get("host"), fields.get("port")) {
                (Some(Value::String(host)), Some(Value::Number(port))) => {
                    Ok(format!("{host}:{port}"))
                }
                _ => Err(format!("peer object without host and port: {item}")),
            },
            _ => Err(format!(
                "peer entry is neither a string nor an object: {item}"
            )),
        })
        .collect()
}

/// `host:port` or `host:port:N`; the first IPv4 address a name resolves to wins.
pub fn resolve(entry: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = entry.parse::<SocketAddr>() {
        return Ok(address);
    }
    let host_port = match entry.rsplit_once(':') {
        Some((front, index))
            if front.contains(':')
                && !index.is_empty()
                && index.bytes().all(|b| b.is_ascii_digit()) =>
        {
            front
        }
        _ => entry,
    };
    if let Ok(address) = host_port.parse::<SocketAddr>() {
        return Ok(address);
    }
    let candidates: Vec<SocketAddr> = host_port
        .to_socket_addrs()
        .map_err(|error| format!("bad peer address {entry:?}: {error}"))?
        .collect();
    candidates
        .iter()
        .find(|address| address.is_ipv4())
        .or(candidates.first())
        .copied()
        .ok_or_else(|| format!("peer address {entry:?} resolves to nothing"))
}

/// This node's index: the entry equal to `host:port`.
pub fn find_self(addresses: &[SocketAddr], host: &str, port: u16) -> Result<NodeId, String> {
    let own = resolve(&format!("{host}:{port}"))?;
    addresses
        .iter()
        .position(|address| *address == own)
        .ok_or_else(|| format!("{own} is not in the peers file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatterbox_json_with_endpoint_suffix() {
        let text = r#"["127.0.0.1:3000:0", "127.0.0.1:3001:0", "localhost:3002"]"#;
        let addresses = parse(text).unwrap();
        let ports: Vec<u16> = addresses.iter().map(SocketAddr::port).collect();
        assert_eq!(ports, vec![3000, 3001, 3002]);
        assert!(addresses.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(find_self(&addresses, "127.0.0.1", 3001), Ok(1));
        assert!(find_self(&addresses, "127.0.0.1", 4000).is_err());
    }

    #[test]
    fn json_objects() {
        let text = r#"[{"host": "127.0.0.1", "port": 7000}, {"host": "127.0.0.1", "port": 7001}]"#;
        assert_eq!(parse(text).unwrap()[1], "127.0.0.1:7001".parse().unwrap());
    }

    #[test]
    fn lines_with_comments_and_ipv6() {
        let text = "# cluster\n127.0.0.1:5000   # first\n\n[::1]:5001\n127.0.0.1:5002:0\n";
        let addresses = parse(text).unwrap();
        assert_eq!(addresses.len(), 3);
        assert_eq!(addresses[1], "[::1]:5001".parse().unwrap());
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse("").unwrap_err().contains("no peers"));
        assert!(parse("[1, 2]").unwrap_err().contains("neither"));
        assert!(parse("[\"127.0.0.1:1\"").unwrap_err().contains("bad JSON"));
        assert!(
            parse("127.0.0.1:1\n127.0.0.1:1")
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse("nonsense").unwrap_err().contains("nonsense"));
        assert!(parse("{}").is_err());
    }
}
