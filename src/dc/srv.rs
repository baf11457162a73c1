//! Where a federated DC is, from DNS: an SRV lookup of
//! `_ntmtun._udp.<domain>` through the system resolver, then A/AAAA of the
//! SRV target. Message building and parsing are pure (hickory-proto); the
//! blocking exchange runs on a thread of its own so the DC loop never waits
//! for DNS. DNS only says where: the key is pinned in `[[federation]]`.

use anyhow::{bail, Context, Result};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;
use tracing::{debug, warn};

/// Per-query wait, and tries per resolver.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const TRIES: usize = 2;
/// Retry a failed lookup after this long (the answer's TTL otherwise).
pub const FAILED_TTL: Duration = Duration::from_secs(10);

/// The SRV name of a domain's DC.
pub fn srv_name(domain: &str) -> String {
    format!("_ntmtun._udp.{domain}.")
}

/// A recursive query for `name`/`rtype` with message id `id`.
pub fn query(id: u16, name: &str, rtype: RecordType) -> Result<Vec<u8>> {
    let name = Name::from_ascii(name).with_context(|| format!("{name:?} is not a DNS name"))?;
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(name, rtype));
    m.metadata.recursion_desired = true;
    m.to_vec().context("encoding a DNS query")
}

/// An answer to query `id`, checked: a response, with the same id, NOERROR.
fn answer(bytes: &[u8], id: u16) -> Result<Message> {
    let m = Message::from_vec(bytes).context("undecodable DNS answer")?;
    if m.metadata.message_type != MessageType::Response || m.metadata.id != id {
        bail!("not the answer to our query");
    }
    if m.metadata.response_code != ResponseCode::NoError {
        bail!("the resolver answered {}", m.metadata.response_code);
    }
    Ok(m)
}

/// SRV targets of an answer, best first (lowest priority, then highest
/// weight), with the smallest TTL seen.
pub fn parse_srv(bytes: &[u8], id: u16) -> Result<(Vec<(Name, u16)>, u32)> {
    let m = answer(bytes, id)?;
    let mut srv: Vec<_> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((
                s.priority,
                u16::MAX - s.weight,
                s.target.clone(),
                s.port,
                r.ttl,
            )),
            _ => None,
        })
        .collect();
    srv.sort_by_key(|s| (s.0, s.1));
    let ttl = srv.iter().map(|s| s.4).min().unwrap_or(0);
    Ok((srv.into_iter().map(|s| (s.2, s.3)).collect(), ttl))
}

/// Addresses (A and AAAA) of an answer, with the smallest TTL seen.
pub fn parse_addrs(bytes: &[u8], id: u16) -> Result<(Vec<IpAddr>, u32)> {
    let m = answer(bytes, id)?;
    let mut ttl = u32::MAX;
    let addrs = m
        .answers
        .iter()
        .filter_map(|r| {
            let ip = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => return None,
            };
            ttl = ttl.min(r.ttl);
            Some(ip)
        })
        .collect::<Vec<_>>();
    Ok((addrs, if ttl == u32::MAX { 0 } else { ttl }))
}

/// One question to the first resolver that answers (blocking, bounded):
/// the query id and the answer's bytes.
fn ask(resolvers: &[IpAddr], name: &str, rtype: RecordType) -> Result<(u16, Vec<u8>)> {
    let mut last = None;
    for &r in resolvers {
        let bind: SocketAddr = if r.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
        let sock = UdpSocket::bind(bind).context("binding a socket for DNS")?;
        sock.set_read_timeout(Some(QUERY_TIMEOUT))?;
        for _ in 0..TRIES {
            let id: u16 = rand::random();
            sock.send_to(&query(id, name, rtype)?, (r, 53))
                .with_context(|| format!("sending a DNS query to {r}"))?;
            let mut buf = [0u8; 4096];
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from.ip() == r => return Ok((id, buf[..n].to_vec())),
                Ok(_) => {}
                Err(e) => last = Some(anyhow::anyhow!("{r}: {e}")),
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no nameserver in /etc/resolv.conf")))
        .with_context(|| format!("no answer for {name} {rtype}"))
}

/// The DC addresses of `domain` and how long they may be kept.
pub fn lookup(domain: &str, resolvers: &[IpAddr]) -> Result<(Vec<SocketAddr>, Duration)> {
    let name = srv_name(domain);
    let (id, bytes) = ask(resolvers, &name, RecordType::SRV)?;
    let (targets, mut ttl) = parse_srv(&bytes, id).with_context(|| format!("SRV {name}"))?;
    if targets.is_empty() {
        bail!("no SRV record {name}: publish one, or set `address` in this [[federation]] entry");
    }
    let mut out = Vec::new();
    for (target, port) in targets {
        let host = target.to_ascii();
        for rtype in [RecordType::A, RecordType::AAAA] {
            match ask(resolvers, &host, rtype).and_then(|(id, b)| parse_addrs(&b, id)) {
                Ok((ips, t)) => {
                    if !ips.is_empty() {
                        ttl = ttl.min(t);
                    }
                    out.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, port)));
                }
                Err(e) => debug!(%host, %rtype, error = format!("{e:#}"), "address lookup failed"),
            }
        }
    }
    if out.is_empty() {
        bail!("the SRV targets of {name} have no A or AAAA records");
    }
    Ok((out, Duration::from_secs(ttl.into())))
}

/// What the lookup thread answers: the domain, its DC's addresses (none
/// on failure) and how long to keep them.
pub type Found = (String, Vec<SocketAddr>, Duration);

/// A lookup thread: send it domains, receive (domain, addresses, TTL).
/// Failures come back as no addresses and [`FAILED_TTL`].
pub fn spawn() -> Result<(Sender<String>, Receiver<Found>)> {
    let (req_tx, req_rx) = mpsc::channel::<String>();
    let (ans_tx, ans_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("dc-srv".into())
        .spawn(move || {
            for domain in req_rx {
                let resolvers = crate::net::resolv::system_resolvers().unwrap_or_default();
                let (addrs, ttl) = match lookup(&domain, &resolvers) {
                    Ok(x) => x,
                    Err(e) => {
                        warn!(%domain, error = format!("{e:#}"), "cannot find the federated DC in DNS; retrying");
                        (Vec::new(), FAILED_TTL)
                    }
                };
                if ans_tx.send((domain, addrs, ttl)).is_err() {
                    break;
                }
            }
        })
        .context("starting the DNS SRV lookup thread")?;
    Ok((req_tx, ans_rx))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::Record;
    use std::net::Ipv4Addr;

    fn reply(id: u16, records: Vec<Record>) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Response, OpCode::Query);
        m.answers = records;
        m.to_vec().unwrap()
    }

    #[test]
    fn srv_targets_come_best_first_with_the_smallest_ttl() {
        let name = Name::from_ascii(srv_name("y.ntm.internal")).unwrap();
        let srv = |p, w, port, host: &str, ttl| {
            Record::from_rdata(
                name.clone(),
                ttl,
                RData::SRV(SRV::new(p, w, port, Name::from_ascii(host).unwrap())),
            )
        };
        let bytes = reply(
            7,
            vec![
                srv(20, 0, 9000, "backup.y.", 300),
                srv(10, 5, 7446, "dc.y.", 60),
                srv(10, 50, 7447, "dc2.y.", 120),
            ],
        );
        let (targets, ttl) = parse_srv(&bytes, 7).unwrap();
        let ports: Vec<u16> = targets.iter().map(|t| t.1).collect();
        assert_eq!(ports, vec![7447, 7446, 9000]);
        assert_eq!(ttl, 60);
        assert!(parse_srv(&bytes, 8).is_err(), "another query's answer");
    }

    #[test]
    fn addresses_and_errors() {
        let name = Name::from_ascii("dc.y.").unwrap();
        let bytes = reply(
            3,
            vec![Record::from_rdata(
                name,
                40,
                RData::A(A(Ipv4Addr::new(198, 51, 100, 13))),
            )],
        );
        assert_eq!(
            parse_addrs(&bytes, 3).unwrap(),
            (vec!["198.51.100.13".parse().unwrap()], 40)
        );
        let mut nx = Message::new(3, MessageType::Response, OpCode::Query);
        nx.metadata.response_code = ResponseCode::NXDomain;
        let err = parse_addrs(&nx.to_vec().unwrap(), 3).unwrap_err();
        assert!(
            format!("{err:#}").contains("NXDomain") || format!("{err:#}").contains("Non-Existent"),
            "{err:#}"
        );
        assert_eq!(srv_name("y.ntm.internal"), "_ntmtun._udp.y.ntm.internal.");
        assert!(query(1, &srv_name("y.ntm.internal"), RecordType::SRV).is_ok());
    }
}
