//! Sans-IO DNS interception for the node.
//!
//! DNS queries read from the TUN device are classified here: names in the
//! NTMobile domain (`<node>.<domain>`) are answered with the peer's virtual
//! IPv4 once the DC has been asked, reverse lookups for virtual addresses are
//! answered with the node name, and everything else is forwarded to the real
//! resolver byte for byte. All DNS parsing and encoding goes through
//! hickory-proto; this module only makes decisions and never does IO.
//!
//! Matching is case-insensitive, and replies echo the question exactly as it
//! was asked (including its letter case), as stub resolvers compare it.

use std::net::Ipv4Addr;

use hickory_proto::op::{
    Edns, Header, Message, MessageType, Metadata, OpCode, Query, ResponseCode,
    DEFAULT_MAX_PAYLOAD_LEN,
};
use hickory_proto::rr::rdata::{A, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use ipnet::{IpNet, Ipv4Net};

use crate::proto::name::{self, Domain, Label};

/// SOA timers for the synthetic zone. Nothing transfers this zone, so only
/// MINIMUM (the negative-caching TTL, set from the configured TTL) matters.
const SOA_SERIAL: u32 = 1;
const SOA_REFRESH: i32 = 3600;
const SOA_RETRY: i32 = 600;
const SOA_EXPIRE: i32 = 86400;

/// Errors from configuring the interceptor.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// The configured domain is not a usable DNS name.
    #[error("invalid NTMobile DNS domain {domain:?}: {reason}")]
    InvalidDomain {
        /// The domain as configured.
        domain: String,
        /// Why it was rejected.
        reason: String,
    },
}

/// What the node should do with one DNS query read from the TUN device.
#[derive(Debug, Clone)]
pub enum DnsAction {
    /// Not ours (or unparsable, or not a single-question standard query):
    /// send the original bytes unchanged to the real resolver.
    Forward,
    /// Answer the client right away with these bytes.
    Reply(Vec<u8>),
    /// Ask the DC about `target`, then build the reply with
    /// [`DnsInterceptor::answer`].
    Resolve {
        /// What is needed to build the reply later.
        pending: PendingQuery,
        /// What to ask the DC.
        target: ResolveTarget,
    },
}

/// The question to put to the DC.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ResolveTarget {
    /// Forward lookup of a node label in the interceptor's domain (e.g.
    /// `alice`), folded to lowercase.
    Name(Label),
    /// Reverse (PTR) lookup of a virtual address inside the prefix.
    Address(Ipv4Addr),
}

/// The DC's answer to a [`ResolveTarget`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The node exists: its label (e.g. `"alice"`) and virtual address.
    Found {
        /// Node label without the domain.
        name: String,
        /// The node's virtual IPv4 address.
        virtual_ip: Ipv4Addr,
    },
    /// The DC does not know the node or address.
    NotFound,
    /// The DC could not be asked or gave an unusable answer.
    Failed,
}

/// A query waiting for the DC; holds the parsed request so the reply can echo
/// its header bits, question and EDNS presence.
#[derive(Debug, Clone)]
pub struct PendingQuery {
    request: Message,
    kind: PendingKind,
}

impl PendingQuery {
    /// DNS message ID of the waiting query, e.g. for logging or de-duplication.
    pub fn id(&self) -> u16 {
        self.request.metadata.id
    }
}

/// Which record type the pending reply must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingKind {
    A,
    Ptr(Ipv4Addr),
}

/// How a query name relates to our domain.
enum NameMatch {
    /// Not under the domain at all.
    Outside,
    /// The domain itself.
    Apex,
    /// `<label>.<domain>` with a valid label (folded to lowercase).
    Node(Label),
    /// Under the domain but not a node name: deeper, or an invalid label.
    NonExistent,
}

/// Decides, per query, whether the node answers it, asks the DC, or forwards it.
#[derive(Debug, Clone)]
pub struct DnsInterceptor {
    /// Lowercase, fully qualified.
    domain: Name,
    /// The same, as [`DnsInterceptor::domain`] gives it.
    zone: Domain,
    /// Virtual address range; PTR queries inside it are ours.
    prefix: Ipv4Net,
    /// TTL of positive answers and of the SOA used for negative caching.
    ttl: u32,
}

impl DnsInterceptor {
    /// Creates an interceptor for `domain` (e.g. `"ntm.internal"`, any case,
    /// trailing dot optional) whose nodes get addresses from `prefix`.
    ///
    /// The domain must follow the name rule (`proto::name`), so the names
    /// we synthesize are plain hostnames.
    pub fn new(domain: &str, prefix: Ipv4Net, ttl: u32) -> Result<Self, DnsError> {
        let invalid = |reason: String| DnsError::InvalidDomain {
            domain: domain.to_string(),
            reason,
        };
        let zone = Domain::parse(&name::fold(domain)).map_err(|e| invalid(e.to_string()))?;
        let mut name = Name::from_ascii(zone.as_str()).map_err(|e| invalid(e.to_string()))?;
        name.set_fqdn(true);
        Ok(Self {
            domain: name,
            zone,
            prefix,
            ttl,
        })
    }

    /// The intercepted domain, lowercase and without a trailing dot.
    pub fn domain(&self) -> &str {
        self.zone.as_str()
    }

    /// The intercepted domain, as a [`Domain`].
    pub fn zone(&self) -> &Domain {
        &self.zone
    }

    /// The virtual prefix whose addresses it answers for (A and PTR).
    pub fn prefix(&self) -> Ipv4Net {
        self.prefix
    }

    /// Whether the question of `pending` lies in this interceptor's zone
    /// (its domain, or its prefix for PTR): with several interceptors (one
    /// per federated domain), the one that must build the answer.
    pub fn covers(&self, pending: &PendingQuery) -> bool {
        match pending.kind {
            PendingKind::Ptr(addr) => self.prefix.contains(&addr),
            PendingKind::A => pending
                .request
                .queries
                .first()
                .is_some_and(|q| self.domain.zone_of(&q.name)),
        }
    }

    /// Classifies raw query bytes (a UDP payload from the TUN device).
    ///
    /// Never panics; anything that is not clearly ours is forwarded so that
    /// interception can never break ordinary name resolution.
    pub fn classify(&self, query: &[u8]) -> DnsAction {
        // Cheap header check first, so non-candidates skip the full parse.
        let Ok(header) = Header::read(&mut BinDecoder::new(query)) else {
            return DnsAction::Forward;
        };
        if header.metadata.message_type != MessageType::Query
            || header.metadata.op_code != OpCode::Query
            || header.counts.queries != 1
        {
            return DnsAction::Forward;
        }
        let Ok(request) = Message::from_vec(query) else {
            return DnsAction::Forward;
        };
        let Some(question) = request.queries.first() else {
            return DnsAction::Forward;
        };

        match self.match_name(&question.name) {
            NameMatch::Outside => self.classify_reverse(request),
            NameMatch::Apex => self.negative_reply(&request, ResponseCode::NoError),
            NameMatch::NonExistent => self.negative_reply(&request, ResponseCode::NXDomain),
            NameMatch::Node(label) => {
                if question.query_type == RecordType::A && question.query_class == DNSClass::IN {
                    if let Some(reply) = self.badvers_reply(&request) {
                        return reply;
                    }
                    DnsAction::Resolve {
                        pending: PendingQuery {
                            request,
                            kind: PendingKind::A,
                        },
                        target: ResolveTarget::Name(label),
                    }
                } else {
                    // Nodes only have IPv4 virtual addresses: AAAA and every
                    // other type get NODATA so clients fall back to A quickly.
                    self.negative_reply(&request, ResponseCode::NoError)
                }
            }
        }
    }

    /// Builds the reply for a query that was waiting for the DC.
    ///
    /// A `Found` that contradicts the question (an A answer outside the
    /// virtual prefix, a PTR answer for another address, or a label we could
    /// not put in a name) is treated as `Failed`, so a confused DC cannot make
    /// us hand out real-world addresses. The result is empty only if hickory
    /// cannot encode even a bare SERVFAIL header, which does not happen.
    pub fn answer(&self, pending: &PendingQuery, resolution: &Resolution) -> Vec<u8> {
        let request = &pending.request;
        let Some(question) = request.queries.first() else {
            return self.reply_bytes(request, ResponseCode::ServFail, Vec::new(), Vec::new());
        };
        match resolution {
            Resolution::Found { name, virtual_ip } => {
                let data = match pending.kind {
                    PendingKind::A if self.prefix.contains(virtual_ip) => {
                        Some(RData::A(A(*virtual_ip)))
                    }
                    PendingKind::Ptr(addr) if addr == *virtual_ip => {
                        self.node_name(name).map(|n| RData::PTR(PTR(n)))
                    }
                    _ => None,
                };
                match data {
                    Some(data) => {
                        let record = Record::from_rdata(question.name.clone(), self.ttl, data);
                        self.reply_bytes(request, ResponseCode::NoError, vec![record], Vec::new())
                    }
                    None => {
                        self.reply_bytes(request, ResponseCode::ServFail, Vec::new(), Vec::new())
                    }
                }
            }
            Resolution::NotFound => {
                // The reverse zone is not ours to describe with an SOA.
                let authorities = match pending.kind {
                    PendingKind::A => vec![self.soa_record()],
                    PendingKind::Ptr(_) => Vec::new(),
                };
                self.reply_bytes(request, ResponseCode::NXDomain, Vec::new(), authorities)
            }
            Resolution::Failed => {
                self.reply_bytes(request, ResponseCode::ServFail, Vec::new(), Vec::new())
            }
        }
    }

    /// Places `name` relative to the domain.
    fn match_name(&self, name: &Name) -> NameMatch {
        if !self.domain.zone_of(name) {
            return NameMatch::Outside;
        }
        let extra = name.iter().len().saturating_sub(self.domain.iter().len());
        match extra {
            0 => NameMatch::Apex,
            // DNS is case-insensitive: fold, then the (lowercase) label rule.
            1 => match name.iter().next().map(std::str::from_utf8) {
                Some(Ok(label)) => {
                    Label::parse(&name::fold(label)).map_or(NameMatch::NonExistent, NameMatch::Node)
                }
                _ => NameMatch::NonExistent,
            },
            _ => NameMatch::NonExistent,
        }
    }

    /// PTR queries for canonical `d.c.b.a.in-addr.arpa.` names inside the
    /// virtual prefix are ours; everything else goes to the real resolver.
    fn classify_reverse(&self, request: Message) -> DnsAction {
        let Some(question) = request.queries.first() else {
            return DnsAction::Forward;
        };
        if question.query_type != RecordType::PTR || question.query_class != DNSClass::IN {
            return DnsAction::Forward;
        }
        let Ok(IpNet::V4(net)) = question.name.parse_arpa_name() else {
            return DnsAction::Forward;
        };
        let addr = net.addr();
        // Only full, canonically written addresses (no "018", "+1" or partial
        // zones), so the echoed name and the address agree.
        if net.prefix_len() != 32
            || !self.prefix.contains(&addr)
            || !Name::from(addr).eq_ignore_root(&question.name)
        {
            return DnsAction::Forward;
        }
        if let Some(reply) = self.badvers_reply(&request) {
            return reply;
        }
        DnsAction::Resolve {
            pending: PendingQuery {
                request,
                kind: PendingKind::Ptr(addr),
            },
            target: ResolveTarget::Address(addr),
        }
    }

    /// RFC 6891 §6.1.3: we only speak EDNS version 0.
    fn badvers_reply(&self, request: &Message) -> Option<DnsAction> {
        let edns = request.edns.as_ref()?;
        (edns.version() != 0).then(|| {
            DnsAction::Reply(self.reply_bytes(
                request,
                ResponseCode::BADVERS,
                Vec::new(),
                Vec::new(),
            ))
        })
    }

    /// NODATA (`NoError`) or NXDOMAIN for a name in our domain, with the SOA
    /// that RFC 2308 requires so resolvers may cache the negative answer.
    fn negative_reply(&self, request: &Message, rcode: ResponseCode) -> DnsAction {
        if let Some(reply) = self.badvers_reply(request) {
            return reply;
        }
        DnsAction::Reply(self.reply_bytes(request, rcode, Vec::new(), vec![self.soa_record()]))
    }

    /// `<label>.<domain>.` for a label from the DC (any case), if it is a
    /// valid label.
    fn node_name(&self, label: &str) -> Option<Name> {
        let label = Label::parse(&name::fold(label)).ok()?;
        self.domain.prepend_label(label.as_str()).ok()
    }

    /// Synthetic SOA for the domain; its MINIMUM and TTL bound negative caching.
    fn soa_record(&self) -> Record {
        let rname = self
            .domain
            .prepend_label("hostmaster")
            .unwrap_or_else(|_| self.domain.clone());
        let soa = SOA::new(
            self.domain.clone(),
            rname,
            SOA_SERIAL,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.ttl,
        );
        Record::from_rdata(self.domain.clone(), self.ttl, RData::SOA(soa))
    }

    /// Encodes an authoritative reply to `request`.
    fn reply_bytes(
        &self,
        request: &Message,
        rcode: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    ) -> Vec<u8> {
        let mut resp = response_skeleton(request, rcode);
        resp.metadata.authoritative = true;
        resp.answers = answers;
        resp.authorities = authorities;
        encode_or_servfail(&resp, request)
    }
}

/// SERVFAIL reply to arbitrary query bytes, for when the upstream resolver
/// fails and the client should not be left waiting for a timeout.
///
/// `None` if hickory cannot parse the bytes or they are a response (replying
/// to a response could loop).
pub fn servfail_for(query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.metadata.message_type != MessageType::Query {
        return None;
    }
    let resp = response_skeleton(&request, ResponseCode::ServFail);
    let bytes = encode_or_servfail(&resp, &request);
    (!bytes.is_empty()).then_some(bytes)
}

/// A response echoing the request's ID, opcode, RD, CD and question, with RA
/// set (we forward everything else) and an OPT record if the request had one.
fn response_skeleton(request: &Message, rcode: ResponseCode) -> Message {
    let mut resp = Message::response(request.metadata.id, request.metadata.op_code);
    resp.metadata = Metadata::response_from_request(&request.metadata);
    resp.metadata.recursion_available = true;
    resp.metadata.response_code = rcode;
    resp.queries = request.queries.clone();
    resp.edns = request.edns.as_ref().map(|req_edns| {
        let mut edns = Edns::new();
        edns.set_max_payload(DEFAULT_MAX_PAYLOAD_LEN);
        // RFC 3225 §3: the DO bit is copied from the query.
        edns.set_dnssec_ok(req_edns.flags().dnssec_ok);
        edns
    });
    resp
}

/// Encodes `resp`, falling back to a question-echoing SERVFAIL and then to a
/// bare SERVFAIL header, so callers always get something to send.
fn encode_or_servfail(resp: &Message, request: &Message) -> Vec<u8> {
    if let Ok(bytes) = resp.to_vec() {
        return bytes;
    }
    let mut fallback = response_skeleton(request, ResponseCode::ServFail);
    if let Ok(bytes) = fallback.to_vec() {
        return bytes;
    }
    fallback.queries = Vec::<Query>::new();
    fallback.edns = None;
    fallback.to_vec().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::AAAA;
    use proptest::prelude::*;

    const ID: u16 = 0xbeef;
    const TTL: u32 = 42;

    fn interceptor() -> DnsInterceptor {
        DnsInterceptor::new("ntm.internal", "198.18.0.0/15".parse().unwrap(), TTL).unwrap()
    }

    fn query_msg(name: &str, rtype: RecordType) -> Message {
        let mut m = Message::new(ID, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
        m
    }

    fn query(name: &str, rtype: RecordType) -> Vec<u8> {
        query_msg(name, rtype).to_vec().unwrap()
    }

    fn reply_of(action: DnsAction) -> Message {
        match action {
            DnsAction::Reply(bytes) => Message::from_vec(&bytes).unwrap(),
            other => panic!("expected Reply, got {other:?}"),
        }
    }

    fn resolve_of(action: DnsAction) -> (PendingQuery, ResolveTarget) {
        match action {
            DnsAction::Resolve { pending, target } => (pending, target),
            other => panic!("expected Resolve, got {other:?}"),
        }
    }

    fn assert_forward(action: DnsAction) {
        assert!(
            matches!(action, DnsAction::Forward),
            "expected Forward, got {action:?}"
        );
    }

    /// Header bits every reply for our domain must carry.
    fn assert_our_reply(resp: &Message, rcode: ResponseCode, asked: &Message) {
        assert_eq!(resp.metadata.id, asked.metadata.id);
        assert_eq!(resp.metadata.message_type, MessageType::Response);
        assert_eq!(resp.metadata.op_code, OpCode::Query);
        assert_eq!(resp.metadata.response_code, rcode);
        assert!(resp.metadata.authoritative);
        assert!(resp.metadata.recursion_available);
        assert_eq!(
            resp.metadata.recursion_desired,
            asked.metadata.recursion_desired
        );
        assert_eq!(
            resp.metadata.checking_disabled,
            asked.metadata.checking_disabled
        );
        assert_eq!(resp.queries.len(), 1);
        // Echoed exactly, letter case included.
        assert!(resp.queries[0].name.eq_case(&asked.queries[0].name));
        assert_eq!(resp.queries[0].query_type, asked.queries[0].query_type);
        assert_eq!(resp.edns.is_some(), asked.edns.is_some());
    }

    fn assert_soa(resp: &Message) {
        assert_eq!(resp.authorities.len(), 1);
        let soa = &resp.authorities[0];
        assert_eq!(soa.record_type(), RecordType::SOA);
        assert_eq!(soa.name, Name::from_ascii("ntm.internal.").unwrap());
        assert_eq!(soa.ttl, TTL);
        match &soa.data {
            RData::SOA(s) => assert_eq!(s.minimum, TTL),
            other => panic!("expected SOA, got {other:?}"),
        }
    }

    fn alice() -> Resolution {
        Resolution::Found {
            name: "alice".into(),
            virtual_ip: Ipv4Addr::new(198, 18, 0, 7),
        }
    }

    #[test]
    fn new_normalizes_and_validates_domain() {
        let prefix: Ipv4Net = "198.18.0.0/15".parse().unwrap();
        let d = DnsInterceptor::new("NTM.Internal.", prefix, 1).unwrap();
        assert_eq!(d.domain(), "ntm.internal");
        assert_eq!(interceptor().domain(), "ntm.internal");
        for bad in [
            "",
            ".",
            "a..b",
            "bad_domain.internal",
            "sp ace",
            "\u{e9}.internal",
        ] {
            assert!(
                DnsInterceptor::new(bad, prefix, 1).is_err(),
                "{bad:?} accepted"
            );
        }
        let long = "a".repeat(64);
        assert!(DnsInterceptor::new(&long, prefix, 1).is_err());
    }

    #[test]
    fn a_query_resolves_and_answers() {
        let d = interceptor();
        let asked = query_msg("alice.ntm.internal.", RecordType::A);
        let (pending, target) = resolve_of(d.classify(&asked.to_vec().unwrap()));
        assert_eq!(target, ResolveTarget::Name(Label::parse("alice").unwrap()));
        assert_eq!(pending.id(), ID);

        let resp = Message::from_vec(&d.answer(&pending, &alice())).unwrap();
        assert_our_reply(&resp, ResponseCode::NoError, &asked);
        assert_eq!(resp.answers.len(), 1);
        let rec = &resp.answers[0];
        assert!(rec.name.eq_case(&asked.queries[0].name));
        assert_eq!(rec.ttl, TTL);
        assert_eq!(rec.dns_class, DNSClass::IN);
        assert_eq!(rec.data, RData::A(A(Ipv4Addr::new(198, 18, 0, 7))));
        assert!(resp.authorities.is_empty());
    }

    #[test]
    fn mixed_case_matches_and_echoes_case() {
        let d = interceptor();
        let asked = query_msg("AlIcE.NTM.Internal.", RecordType::A);
        let (pending, target) = resolve_of(d.classify(&asked.to_vec().unwrap()));
        assert_eq!(target, ResolveTarget::Name(Label::parse("alice").unwrap()));
        let bytes = d.answer(&pending, &alice());
        // The wire bytes carry the question's original case.
        assert!(bytes.windows(5).any(|w| w == b"AlIcE"));
        let resp = Message::from_vec(&bytes).unwrap();
        assert_our_reply(&resp, ResponseCode::NoError, &asked);
        assert_eq!(resp.answers[0].name.to_ascii(), "AlIcE.NTM.Internal.");
    }

    #[test]
    fn header_bits_are_copied() {
        let d = interceptor();
        let mut asked = query_msg("alice.ntm.internal.", RecordType::A);
        asked.metadata.recursion_desired = false;
        asked.metadata.checking_disabled = true;
        let (pending, _) = resolve_of(d.classify(&asked.to_vec().unwrap()));
        let resp = Message::from_vec(&d.answer(&pending, &alice())).unwrap();
        assert_our_reply(&resp, ResponseCode::NoError, &asked);
        assert!(!resp.metadata.recursion_desired);
        assert!(resp.metadata.checking_disabled);
    }

    #[test]
    fn aaaa_and_other_types_are_nodata() {
        let d = interceptor();
        for rtype in [
            RecordType::AAAA,
            RecordType::MX,
            RecordType::TXT,
            RecordType::ANY,
        ] {
            let asked = query_msg("alice.ntm.internal.", rtype);
            let resp = reply_of(d.classify(&asked.to_vec().unwrap()));
            assert_our_reply(&resp, ResponseCode::NoError, &asked);
            assert!(resp.answers.is_empty(), "{rtype} had answers");
            assert_soa(&resp);
        }
    }

    #[test]
    fn non_in_class_a_is_nodata() {
        let d = interceptor();
        let mut asked = query_msg("alice.ntm.internal.", RecordType::A);
        asked.queries[0].query_class = DNSClass::CH;
        let resp = reply_of(d.classify(&asked.to_vec().unwrap()));
        assert_eq!(resp.metadata.response_code, ResponseCode::NoError);
        assert!(resp.answers.is_empty());
    }

    #[test]
    fn apex_is_nodata() {
        let d = interceptor();
        for rtype in [RecordType::A, RecordType::AAAA, RecordType::SOA] {
            let asked = query_msg("Ntm.Internal.", rtype);
            let resp = reply_of(d.classify(&asked.to_vec().unwrap()));
            assert_our_reply(&resp, ResponseCode::NoError, &asked);
            assert!(resp.answers.is_empty());
            assert_soa(&resp);
        }
    }

    #[test]
    fn deep_and_invalid_names_are_nxdomain() {
        let d = interceptor();
        let long = format!("{}.ntm.internal.", "a".repeat(63));
        assert!(matches!(
            d.classify(&query(&long, RecordType::A)),
            DnsAction::Resolve { .. }
        ));
        for name in [
            "x.alice.ntm.internal.",
            "a.b.c.ntm.internal.",
            "al_ice.ntm.internal.",
            "*.ntm.internal.",
            "al\\.ice.ntm.internal.",
        ] {
            let asked = query_msg(name, RecordType::A);
            let resp = reply_of(d.classify(&asked.to_vec().unwrap()));
            assert_our_reply(&resp, ResponseCode::NXDomain, &asked);
            assert!(resp.answers.is_empty());
            assert_soa(&resp);
        }
    }

    /// The label rule is `proto::name`'s, applied after folding case: a
    /// label starting or ending with '-' is no node name.
    #[test]
    fn labels_follow_the_name_rule_after_folding_case() {
        let d = interceptor();
        // Labels that from_ascii rejects but can arrive on the wire.
        for label in ["-alice", "alice-", "-"] {
            let labels: [&[u8]; 3] = [label.as_bytes(), b"ntm", b"internal"];
            let mut name = Name::from_labels(labels).unwrap();
            name.set_fqdn(true);
            let mut asked = Message::new(ID, MessageType::Query, OpCode::Query);
            asked.add_query(Query::query(name, RecordType::A));
            let resp = reply_of(d.classify(&asked.to_vec().unwrap()));
            assert_our_reply(&resp, ResponseCode::NXDomain, &asked);
        }
        let (_, target) = resolve_of(d.classify(&query("ALICE-2.ntm.internal.", RecordType::A)));
        assert_eq!(
            target,
            ResolveTarget::Name(Label::parse("alice-2").unwrap())
        );
    }

    #[test]
    fn other_names_are_forwarded() {
        let d = interceptor();
        for name in [
            "www.example.test.",
            "example.test.",
            ".",
            "internal.",
            "xntm.internal.",
            "alice.ntm.internal.evil.",
            "alice.ntm.",
        ] {
            assert_forward(d.classify(&query(name, RecordType::A)));
            assert_forward(d.classify(&query(name, RecordType::AAAA)));
        }
    }

    #[test]
    fn non_standard_queries_are_forwarded() {
        let d = interceptor();
        // A response.
        let mut m = query_msg("alice.ntm.internal.", RecordType::A);
        m.metadata.message_type = MessageType::Response;
        assert_forward(d.classify(&m.to_vec().unwrap()));
        // Other opcodes.
        for op in [OpCode::Status, OpCode::Notify, OpCode::Update] {
            let mut m = query_msg("alice.ntm.internal.", RecordType::A);
            m.metadata.op_code = op;
            assert_forward(d.classify(&m.to_vec().unwrap()));
        }
        // Zero and two questions.
        let m = Message::new(ID, MessageType::Query, OpCode::Query);
        assert_forward(d.classify(&m.to_vec().unwrap()));
        let mut m = query_msg("alice.ntm.internal.", RecordType::A);
        m.add_query(Query::query(
            Name::from_ascii("bob.ntm.internal.").unwrap(),
            RecordType::A,
        ));
        assert_forward(d.classify(&m.to_vec().unwrap()));
    }

    #[test]
    fn garbage_is_forwarded() {
        let d = interceptor();
        assert_forward(d.classify(&[]));
        assert_forward(d.classify(&[0xff; 11]));
        assert_forward(d.classify(b"definitely not a DNS message at all"));
        // Valid header claiming one question, truncated question.
        let bytes = query("alice.ntm.internal.", RecordType::A);
        assert_forward(d.classify(&bytes[..bytes.len() - 3]));
    }

    #[test]
    fn edns_is_echoed() {
        let d = interceptor();
        let mut asked = query_msg("alice.ntm.internal.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        edns.set_dnssec_ok(true);
        asked.set_edns(edns);
        let (pending, _) = resolve_of(d.classify(&asked.to_vec().unwrap()));
        let resp = Message::from_vec(&d.answer(&pending, &alice())).unwrap();
        assert_our_reply(&resp, ResponseCode::NoError, &asked);
        let e = resp.edns.as_ref().unwrap();
        assert_eq!(e.version(), 0);
        assert!(e.flags().dnssec_ok);
        assert_eq!(resp.answers.len(), 1);

        // Immediate replies echo it too.
        let mut aaaa = query_msg("alice.ntm.internal.", RecordType::AAAA);
        aaaa.set_edns(Edns::new());
        let resp = reply_of(d.classify(&aaaa.to_vec().unwrap()));
        assert!(resp.edns.is_some());
        assert!(!resp.edns.as_ref().unwrap().flags().dnssec_ok);

        // No OPT in, no OPT out.
        let plain = query_msg("alice.ntm.internal.", RecordType::AAAA);
        assert!(reply_of(d.classify(&plain.to_vec().unwrap()))
            .edns
            .is_none());
    }

    #[test]
    fn unknown_edns_version_is_badvers() {
        let d = interceptor();
        let mut asked = query_msg("alice.ntm.internal.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        asked.set_edns(edns);
        let resp = reply_of(d.classify(&asked.to_vec().unwrap()));
        // Extended RCODE 16 (hickory decodes the shared value as BADSIG).
        assert_eq!(u16::from(resp.metadata.response_code), 16);
        assert_eq!(
            u16::from(resp.metadata.response_code),
            u16::from(ResponseCode::BADVERS)
        );
        assert_eq!(resp.edns.as_ref().unwrap().version(), 0);
    }

    #[test]
    fn not_found_and_failed() {
        let d = interceptor();
        let asked = query_msg("alice.ntm.internal.", RecordType::A);
        let (pending, _) = resolve_of(d.classify(&asked.to_vec().unwrap()));

        let resp = Message::from_vec(&d.answer(&pending, &Resolution::NotFound)).unwrap();
        assert_our_reply(&resp, ResponseCode::NXDomain, &asked);
        assert!(resp.answers.is_empty());
        assert_soa(&resp);

        let resp = Message::from_vec(&d.answer(&pending, &Resolution::Failed)).unwrap();
        assert_our_reply(&resp, ResponseCode::ServFail, &asked);
        assert!(resp.answers.is_empty());
    }

    #[test]
    fn found_outside_prefix_is_servfail() {
        let d = interceptor();
        let (pending, _) = resolve_of(d.classify(&query("alice.ntm.internal.", RecordType::A)));
        let bogus = Resolution::Found {
            name: "alice".into(),
            virtual_ip: Ipv4Addr::new(8, 8, 8, 8),
        };
        let resp = Message::from_vec(&d.answer(&pending, &bogus)).unwrap();
        assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
        assert!(resp.answers.is_empty());
    }

    #[test]
    fn ptr_inside_prefix_resolves() {
        let d = interceptor();
        let asked = query_msg("7.0.18.198.In-Addr.ARPA.", RecordType::PTR);
        let (pending, target) = resolve_of(d.classify(&asked.to_vec().unwrap()));
        let addr = Ipv4Addr::new(198, 18, 0, 7);
        assert_eq!(target, ResolveTarget::Address(addr));

        let resp = Message::from_vec(&d.answer(&pending, &alice())).unwrap();
        assert_our_reply(&resp, ResponseCode::NoError, &asked);
        assert_eq!(resp.answers.len(), 1);
        let rec = &resp.answers[0];
        assert!(rec.name.eq_case(&asked.queries[0].name));
        assert_eq!(rec.ttl, TTL);
        match &rec.data {
            RData::PTR(PTR(n)) => assert_eq!(n.to_ascii(), "alice.ntm.internal."),
            other => panic!("expected PTR, got {other:?}"),
        }

        // Upper end of the /15.
        let (_, target) =
            resolve_of(d.classify(&query("255.255.19.198.in-addr.arpa.", RecordType::PTR)));
        assert_eq!(
            target,
            ResolveTarget::Address(Ipv4Addr::new(198, 19, 255, 255))
        );
    }

    #[test]
    fn ptr_not_found_failed_and_mismatch() {
        let d = interceptor();
        let asked = query_msg("7.0.18.198.in-addr.arpa.", RecordType::PTR);
        let (pending, _) = resolve_of(d.classify(&asked.to_vec().unwrap()));

        let resp = Message::from_vec(&d.answer(&pending, &Resolution::NotFound)).unwrap();
        assert_our_reply(&resp, ResponseCode::NXDomain, &asked);
        assert!(resp.authorities.is_empty());

        let resp = Message::from_vec(&d.answer(&pending, &Resolution::Failed)).unwrap();
        assert_our_reply(&resp, ResponseCode::ServFail, &asked);

        for bogus in [
            Resolution::Found {
                name: "alice".into(),
                virtual_ip: Ipv4Addr::new(198, 18, 0, 8),
            },
            Resolution::Found {
                name: "evil.example.com".into(),
                virtual_ip: Ipv4Addr::new(198, 18, 0, 7),
            },
            Resolution::Found {
                name: String::new(),
                virtual_ip: Ipv4Addr::new(198, 18, 0, 7),
            },
        ] {
            let resp = Message::from_vec(&d.answer(&pending, &bogus)).unwrap();
            assert_eq!(
                resp.metadata.response_code,
                ResponseCode::ServFail,
                "{bogus:?}"
            );
            assert!(resp.answers.is_empty());
        }

        // The DC's label is lowercased in the PTR target.
        let upper = Resolution::Found {
            name: "ALICE".into(),
            virtual_ip: Ipv4Addr::new(198, 18, 0, 7),
        };
        let resp = Message::from_vec(&d.answer(&pending, &upper)).unwrap();
        match &resp.answers[0].data {
            RData::PTR(PTR(n)) => {
                assert!(n.eq_case(&Name::from_ascii("alice.ntm.internal.").unwrap()))
            }
            other => panic!("expected PTR, got {other:?}"),
        }
    }

    #[test]
    fn ptr_outside_prefix_or_odd_forms_forward() {
        let d = interceptor();
        for name in [
            "1.1.168.192.in-addr.arpa.",
            "255.255.17.198.in-addr.arpa.",
            "0.0.20.198.in-addr.arpa.",
            "18.198.in-addr.arpa.",
            "0.18.198.in-addr.arpa.",
            "07.0.18.198.in-addr.arpa.",
            "x.7.0.18.198.in-addr.arpa.",
            "8.b.d.0.1.0.0.2.ip6.arpa.",
        ] {
            assert_forward(d.classify(&query(name, RecordType::PTR)));
        }
        // Labels that from_ascii rejects but can arrive on the wire.
        let mut m = Message::new(ID, MessageType::Query, OpCode::Query);
        let odd: [&[u8]; 6] = [b"+7", b"0", b"18", b"198", b"in-addr", b"arpa"];
        let mut name = Name::from_labels(odd).unwrap();
        name.set_fqdn(true);
        assert!(name.parse_arpa_name().is_ok());
        m.add_query(Query::query(name, RecordType::PTR));
        assert_forward(d.classify(&m.to_vec().unwrap()));
        // Non-PTR types for an in-prefix reverse name go upstream too.
        assert_forward(d.classify(&query("7.0.18.198.in-addr.arpa.", RecordType::A)));
    }

    #[test]
    fn servfail_for_queries() {
        let asked = {
            let mut m = query_msg("www.Example.test.", RecordType::AAAA);
            m.set_edns(Edns::new());
            m
        };
        let resp = Message::from_vec(&servfail_for(&asked.to_vec().unwrap()).unwrap()).unwrap();
        assert_eq!(resp.metadata.id, ID);
        assert_eq!(resp.metadata.message_type, MessageType::Response);
        assert_eq!(resp.metadata.response_code, ResponseCode::ServFail);
        assert!(resp.metadata.recursion_desired);
        assert!(resp.metadata.recursion_available);
        assert!(!resp.metadata.authoritative);
        assert!(resp.queries[0].name.eq_case(&asked.queries[0].name));
        assert!(resp.edns.is_some());

        assert_eq!(servfail_for(b"garbage"), None);
        assert_eq!(servfail_for(&[]), None);
        let mut response = query_msg("www.example.test.", RecordType::A);
        response.metadata.message_type = MessageType::Response;
        assert_eq!(servfail_for(&response.to_vec().unwrap()), None);
    }

    #[test]
    fn forwarded_aaaa_record_types_untouched() {
        // Sanity: a response carrying AAAA data is never treated as a query.
        let d = interceptor();
        let mut m = query_msg("alice.ntm.internal.", RecordType::AAAA);
        m.metadata.message_type = MessageType::Response;
        m.add_answer(Record::from_rdata(
            Name::from_ascii("alice.ntm.internal.").unwrap(),
            1,
            RData::AAAA(AAAA("::1".parse().unwrap())),
        ));
        assert_forward(d.classify(&m.to_vec().unwrap()));
    }

    proptest! {
        #[test]
        fn classify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let d = interceptor();
            if let DnsAction::Resolve { pending, .. } = d.classify(&bytes) {
                for r in [alice(), Resolution::NotFound, Resolution::Failed] {
                    let _ = d.answer(&pending, &r);
                }
            }
            let _ = servfail_for(&bytes);
        }

        #[test]
        fn classify_never_panics_on_mutated_queries(
            name_idx in 0usize..6,
            rtype in prop_oneof![
                Just(RecordType::A), Just(RecordType::AAAA),
                Just(RecordType::PTR), Just(RecordType::MX),
            ],
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
            cut in any::<usize>(),
        ) {
            let names = [
                "alice.ntm.internal.", "AlIcE.NTM.Internal.", "ntm.internal.",
                "x.alice.ntm.internal.", "7.0.18.198.in-addr.arpa.", "www.example.test.",
            ];
            let mut m = query_msg(names[name_idx], rtype);
            m.set_edns(Edns::new());
            let mut bytes = m.to_vec().unwrap();
            for (at, val) in edits {
                let len = bytes.len();
                bytes[at % len] = val;
            }
            bytes.truncate(cut % (bytes.len() + 1) + bytes.len() / 2);
            let d = interceptor();
            match d.classify(&bytes) {
                DnsAction::Resolve { pending, .. } => {
                    for r in [alice(), Resolution::NotFound, Resolution::Failed] {
                        let out = d.answer(&pending, &r);
                        prop_assert!(Message::from_vec(&out).is_ok());
                    }
                }
                DnsAction::Reply(out) => prop_assert!(Message::from_vec(&out).is_ok()),
                DnsAction::Forward => {}
            }
            let _ = servfail_for(&bytes);
        }
    }
}
