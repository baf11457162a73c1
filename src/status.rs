//! `ntmtun status`: the report a node gives over its control socket, the
//! client that asks for it, and the plain-text table.
//!
//! The JSON field names are a public contract (scripts parse them).

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// Status of the node, as `ntmtun status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    pub name: String,
    pub fqdn: Option<String>,
    pub virtual_ip: Option<Ipv4Addr>,
    pub dc: DcStatus,
    pub peers: Vec<PeerStatus>,
    /// Handshake initiations the node dropped since it started.
    #[serde(default)]
    pub refused_handshakes: RefusedHandshakes,
    /// How the node handles DNS (absent from nodes older than stub mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsStatus>,
    /// This node's `advertise_routes` and what the DC made of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub advertised_routes: Vec<AdvertisedRoute>,
    /// Other gateways' LAN prefixes the DC announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<SubnetRoute>,
    /// The data plane: fields `io`, `workers`, `offload` (absent where the
    /// report does not come from a running node).
    #[serde(flatten)]
    pub dataplane: DataplaneStatus,
}

/// Why handshake initiations were dropped, counted since the node started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RefusedHandshakes {
    /// Valid initiations from keys the DC has not directed to this node.
    pub undirected: u64,
    /// Initiations over the per-source rate limit.
    pub rate_limited: u64,
}

/// The DNS mode in force: "capture", "stub" or "off" (stub falls back to
/// capture where systemd-resolved does not run), and the stub's address.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DnsStatus {
    pub mode: String,
    pub stub_address: Option<Ipv4Addr>,
}

/// One advertised prefix: `state` is "granted", "refused" (with `reason`)
/// or "pending" (not registered yet).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AdvertisedRoute {
    pub prefix: ipnet::Ipv4Net,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reason: Option<String>,
}

/// A LAN prefix behind another gateway; `installed` when it is routed into
/// the TUN here (`accept_routes`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubnetRoute {
    pub prefix: ipnet::Ipv4Net,
    pub gateway: Ipv4Addr,
    pub installed: bool,
}

/// How the node's data plane runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DataplaneStatus {
    /// The IO shell: "uring" or "epoll".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// The TUN reads super-packets (TSO/USO) and the socket uses UDP GSO/GRO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offload: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DcStatus {
    pub state: String,
    pub address: Option<SocketAddr>,
    pub reflexive: Option<SocketAddr>,
    pub last_registered_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    pub fqdn: String,
    pub virtual_ip: Ipv4Addr,
    pub public_key: String,
    /// "direct", "punched" (direct through NATs) or "relay".
    pub path: String,
    /// Where packets go: the peer's address, or the relay's when relayed.
    pub endpoint: Option<SocketAddr>,
    /// The relay in use, when `path` is "relay".
    pub relay: Option<SocketAddr>,
    /// Round-trip time of the last answered ping, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Largest inner packet the path to the peer carries (probed).
    #[serde(default)]
    pub path_mtu: u16,
    pub last_handshake_secs: Option<u64>,
    pub last_rx_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Times the direct path to this peer stopped answering and the pair
    /// moved to the relay.
    #[serde(default)]
    pub relay_fallbacks: u64,
}

/// The one request the control socket understands today.
pub const STATUS_REQUEST: &str = "status";

/// Prefix of the control-socket request for `ntmtun ping NAME`.
pub const PING_REQUEST: &str = "ping";

/// The answer to one `ntmtun ping`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PingReport {
    pub name: String,
    pub rtt_ms: Option<f64>,
    pub path: Option<String>,
    pub endpoint: Option<String>,
    pub error: Option<String>,
}

/// Sends one request line to the node on `socket`; returns its answer line.
fn request(socket: &Path, line: &str) -> Result<String> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the node's control socket {}: is `ntmtun node` running, and is this the \
             `control_socket` from its config (use --socket PATH)? Are you root?",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .context("reading the node's answer")?;
    if answer.trim().is_empty() {
        bail!("the node closed the control socket without answering");
    }
    Ok(answer)
}

/// Asks the node listening on `socket` for its status.
pub fn query(socket: &Path) -> Result<StatusReport> {
    let answer = request(socket, STATUS_REQUEST)?;
    serde_json::from_str(&answer).context("the node's answer is not a status report")
}

/// Asks the node to ping peer `name` once.
pub fn ping(socket: &Path, name: &str) -> Result<PingReport> {
    let answer = request(socket, &format!("{PING_REQUEST} {name}"))?;
    serde_json::from_str(&answer).context("the node's answer is not a ping report")
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "-".to_string(), |x| x.to_string())
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The human-readable form of a report.
pub fn render(r: &StatusReport) -> String {
    let mut s = String::new();
    let fqdn = r.fqdn.as_deref().unwrap_or(&r.name);
    s += &format!("node:     {fqdn} ({})\n", opt(&r.virtual_ip));
    s += &format!(
        "dc:       {} via {} (seen as {}, refreshed {}s ago)\n",
        r.dc.state,
        opt(&r.dc.address),
        opt(&r.dc.reflexive),
        opt(&r.dc.last_registered_secs)
    );
    if let Some(e) = &r.dc.error {
        s += &format!("dc error: {e}\n");
    }
    if let Some(d) = &r.dns {
        match d.stub_address {
            Some(a) => s += &format!("dns:      {} (resolver {a})\n", d.mode),
            None => s += &format!("dns:      {}\n", d.mode),
        }
    }
    for a in &r.advertised_routes {
        s += &format!("route:    {} advertised, {}", a.prefix, a.state);
        if let Some(why) = &a.reason {
            s += &format!(": {why}");
        }
        s += "\n";
    }
    for rt in &r.routes {
        let how = if rt.installed {
            ""
        } else {
            " (not installed: accept_routes = false)"
        };
        s += &format!("route:    {} via gateway {}{how}\n", rt.prefix, rt.gateway);
    }
    let d = &r.dataplane;
    if let Some(io) = &d.io {
        s += &format!(
            "dataplane: io {io}, {} workers, offload {}\n",
            opt(&d.workers),
            d.offload.map_or("-", |o| if o { "on" } else { "off" })
        );
    }
    if r.peers.is_empty() {
        s += "peers:    none yet (resolve a name in the domain to reach one)\n";
        return s;
    }
    let header = [
        "PEER",
        "VIRTUAL IP",
        "PATH",
        "ENDPOINT",
        "RTT",
        "MTU",
        "HANDSHAKE",
        "RX",
        "TX",
    ];
    let rows: Vec<[String; 9]> = r
        .peers
        .iter()
        .map(|p| {
            [
                p.fqdn.clone(),
                p.virtual_ip.to_string(),
                p.path.clone(),
                opt(&p.endpoint),
                p.rtt_ms.map_or("-".into(), |r| format!("{r:.2} ms")),
                p.path_mtu.to_string(),
                p.last_handshake_secs
                    .map_or("never".into(), |t| format!("{t}s ago")),
                bytes(p.rx_bytes),
                bytes(p.tx_bytes),
            ]
        })
        .collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: &[String]| {
        let mut l = String::new();
        for (c, w) in cells.iter().zip(width) {
            l += &format!("{c:<w$}  ");
        }
        l.trim_end().to_string() + "\n"
    };
    s += "\n";
    s += &line(&header.map(String::from));
    for row in &rows {
        s += &line(row);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_contract_fields() {
        let r = StatusReport {
            name: "bob".into(),
            fqdn: Some("bob.ntm.internal".into()),
            virtual_ip: Some(Ipv4Addr::new(198, 18, 0, 2)),
            dc: DcStatus {
                state: "registered".into(),
                address: Some("198.51.100.10:7446".parse().unwrap()),
                reflexive: None,
                last_registered_secs: Some(3),
                error: None,
            },
            peers: vec![PeerStatus {
                name: "alice".into(),
                fqdn: "alice.ntm.internal".into(),
                virtual_ip: Ipv4Addr::new(198, 18, 0, 1),
                public_key: "k".into(),
                path: "direct".into(),
                endpoint: Some("198.51.100.11:4000".parse().unwrap()),
                relay: None,
                rtt_ms: Some(0.25),
                path_mtu: 1432,
                last_handshake_secs: Some(1),
                last_rx_secs: Some(0),
                rx_bytes: 2048,
                tx_bytes: 10,
                rx_packets: 2,
                tx_packets: 1,
                relay_fallbacks: 0,
            }],
            refused_handshakes: RefusedHandshakes::default(),
            dns: Some(DnsStatus {
                mode: "stub".into(),
                stub_address: Some(Ipv4Addr::new(198, 18, 0, 0)),
            }),
            advertised_routes: vec![AdvertisedRoute {
                prefix: "192.0.2.192/27".parse().unwrap(),
                state: "refused".into(),
                reason: Some("not granted".into()),
            }],
            routes: vec![SubnetRoute {
                prefix: "192.0.2.128/27".parse().unwrap(),
                gateway: Ipv4Addr::new(198, 18, 0, 1),
                installed: true,
            }],
            dataplane: DataplaneStatus {
                io: Some("uring".into()),
                workers: Some(2),
                offload: Some(true),
            },
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["dns"]["mode"], "stub");
        assert_eq!(v["dns"]["stub_address"], "198.18.0.0");
        assert!(render(&r).contains("dns:      stub (resolver 198.18.0.0)"));
        assert_eq!(
            (&v["io"], &v["workers"], &v["offload"]),
            (&"uring".into(), &2.into(), &true.into())
        );
        let back: StatusReport = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(back, r);
        for k in ["name", "fqdn", "virtual_ip", "dc", "peers"] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["dc"]["state"], "registered");
        let p = &v["peers"][0];
        for k in [
            "name",
            "fqdn",
            "virtual_ip",
            "path",
            "endpoint",
            "last_handshake_secs",
            "rx_bytes",
            "tx_bytes",
            "relay_fallbacks",
        ] {
            assert!(p.get(k).is_some(), "peer missing {k}");
        }
        assert_eq!(v["advertised_routes"][0]["prefix"], "192.0.2.192/27");
        assert_eq!(v["advertised_routes"][0]["state"], "refused");
        assert_eq!(v["routes"][0]["gateway"], "198.18.0.1");
        let table = render(&r);
        assert!(
            table.contains("alice.ntm.internal") && table.contains("2.0 KiB"),
            "{table}"
        );
        assert!(
            table.contains("192.0.2.192/27 advertised, refused: not granted")
                && table.contains("192.0.2.128/27 via gateway 198.18.0.1"),
            "{table}"
        );
        assert!(
            table.contains("dataplane: io uring, 2 workers, offload on"),
            "{table}"
        );
        // A report without the data plane (older node) still parses.
        let mut old = v;
        for k in ["io", "workers", "offload"] {
            old.as_object_mut().unwrap().remove(k);
        }
        let old: StatusReport = serde_json::from_value(old).unwrap();
        assert_eq!(old.dataplane, DataplaneStatus::default());
    }
}
