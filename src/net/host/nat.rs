//! The nftables table of a gateway, through nfnetlink: TCP MSS clamping of
//! forwarded SYNs into and out of the tunnel and, with `snat`, masquerade
//! of what leaves the tunnel by another interface. The same bytecode
//! `nft -f` sends for
//!
//! ```text
//! table ip NAME {
//!     chain forward {
//!         type filter hook forward priority mangle; policy accept;
//!         oifname "TUN" tcp flags syn tcp option maxseg size set rt mtu
//!         iifname "TUN" tcp flags syn tcp option maxseg size set rt mtu
//!     }
//!     chain postrouting {    # with snat only
//!         type nat hook postrouting priority srcnat; policy accept;
//!         iifname "TUN" oifname != "TUN" masquerade
//!     }
//! }
//! ```
//!
//! and `nft list table ip NAME` prints it back so. netlink-packet-netfilter
//! types the table, chain, rule, meta, cmp, payload and bitwise parts; the
//! expressions it lacks (rt, byteorder, exthdr, masq) are written here from
//! the kernel's uapi `linux/netfilter/nf_tables.h`.

use super::netlink::Netlink;
use super::Error;
use netlink_packet_core::{DefaultNla, NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::nftables::{
    Bitwise, ChainAttribute, ChainMessage, Cmp, DataAttribute, ExpressionAttribute, Expressions,
    Hook, InetHookNumber, ListAttribute, Meta, MetaKey, NfTablesMessage, Operator, Payload,
    Register, RuleAttribute, RuleMessage, TableAttribute, TableMessage,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::protocols::NETLINK_NETFILTER;

/// nfnetlink subsystem of nf_tables (batch messages name it).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// IFNAMSIZ: interface names are compared as 16 bytes, NUL padded.
const IFNAMSIZ: usize = 16;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
/// Chain priorities `mangle` and `srcnat`; the verdict `accept`.
const PRIORITY_MANGLE: i32 = -150;
const PRIORITY_SRCNAT: i32 = 100;
const NF_ACCEPT: u32 = 1;
/// NFT_PAYLOAD_TRANSPORT_HEADER; the TCP flags byte's offset in it.
const PAYLOAD_TRANSPORT: u32 = 2;
const TCP_FLAGS_OFFSET: u32 = 13;
/// The rt expression: NFTA_RT_DREG, NFTA_RT_KEY; NFT_RT_TCPMSS.
const NFTA_RT_DREG: u16 = 1;
const NFTA_RT_KEY: u16 = 2;
const NFT_RT_TCPMSS: u32 = 3;
/// The byteorder expression: attributes, and NFT_BYTEORDER_HTON.
const NFTA_BYTEORDER_SREG: u16 = 1;
const NFTA_BYTEORDER_DREG: u16 = 2;
const NFTA_BYTEORDER_OP: u16 = 3;
const NFTA_BYTEORDER_LEN: u16 = 4;
const NFTA_BYTEORDER_SIZE: u16 = 5;
const NFT_BYTEORDER_HTON: u32 = 1;
/// The exthdr expression: attributes, NFT_EXTHDR_OP_TCPOPT, and the MSS
/// option (kind 2, its 2-byte value at offset 2).
const NFTA_EXTHDR_TYPE: u16 = 2;
const NFTA_EXTHDR_OFFSET: u16 = 3;
const NFTA_EXTHDR_LEN: u16 = 4;
const NFTA_EXTHDR_OP: u16 = 6;
const NFTA_EXTHDR_SREG: u16 = 7;
const NFT_EXTHDR_OP_TCPOPT: u32 = 1;
const TCPOPT_MAXSEG: u8 = 2;

/// A gateway's nftables table: `table` (family ip) for the interface `tun`.
#[derive(Debug, Clone, Copy)]
pub struct Gateway<'a> {
    pub table: &'a str,
    pub tun: &'a str,
    pub snat: bool,
}

/// Installs the table, replacing one of that name (a predecessor's, or
/// ours with other settings): create, delete and create again in one
/// transaction, so no stale rule survives and nothing half-made stays.
pub fn install(gw: Gateway) -> Result<(), Error> {
    transact(
        parts(gw),
        &format!("installing nftables table ip {}", gw.table),
    )
}

/// The transaction `install` sends.
fn parts(gw: Gateway) -> Vec<Part> {
    let mut parts = vec![
        part(
            NfTablesMessage::NewTable(table(gw.table)),
            NLM_F_CREATE,
            format!("creating nftables table ip {}", gw.table),
        ),
        part(
            NfTablesMessage::DeleteTable(table(gw.table)),
            0,
            format!("emptying nftables table ip {}", gw.table),
        ),
        part(
            NfTablesMessage::NewTable(table(gw.table)),
            NLM_F_CREATE,
            format!("installing nftables table ip {}", gw.table),
        ),
        chain(
            gw.table,
            "forward",
            "filter",
            InetHookNumber::Forward,
            PRIORITY_MANGLE,
        ),
    ];
    for key in [MetaKey::Oifname, MetaKey::Iifname] {
        let mut exprs = ifname(key, Operator::Equal, gw.tun);
        exprs.extend(tcp_syn());
        exprs.extend(clamp_mss_to_route());
        parts.push(rule(gw.table, "forward", exprs));
    }
    if gw.snat {
        parts.push(chain(
            gw.table,
            "postrouting",
            "nat",
            InetHookNumber::PostRouting,
            PRIORITY_SRCNAT,
        ));
        let mut exprs = ifname(MetaKey::Iifname, Operator::Equal, gw.tun);
        exprs.extend(ifname(MetaKey::Oifname, Operator::NotEqual, gw.tun));
        exprs.push(other("masq", Vec::new()));
        parts.push(rule(gw.table, "postrouting", exprs));
    }
    parts
}

/// Deletes table `name` (family ip); an error that [`Error::is_absent`]
/// says there was none.
pub fn delete_table(name: &str) -> Result<(), Error> {
    let what = format!("deleting nftables table ip {name}");
    let parts = vec![part(
        NfTablesMessage::DeleteTable(table(name)),
        0,
        what.clone(),
    )];
    transact(parts, &what)
}

type Part = (NetfilterMessage, u16, String);
type Expr = ListAttribute<ExpressionAttribute>;

fn transact(parts: Vec<Part>, what: &str) -> Result<(), Error> {
    let batch = |m: ControlMessage| {
        NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES),
            m,
        )
    };
    Netlink::open(NETLINK_NETFILTER, what)?.batch(
        batch(ControlMessage::BatchBegin),
        parts,
        batch(ControlMessage::BatchEnd),
    )
}

fn part(msg: NfTablesMessage, flags: u16, what: String) -> Part {
    (
        NetfilterMessage::new(NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0), msg),
        flags,
        what,
    )
}

fn table(name: &str) -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(name.to_string())],
    }
}

/// A base chain of `kind` ("filter", "nat") on `hook` at `priority`,
/// policy accept.
fn chain(table: &str, name: &str, kind: &str, hook: InetHookNumber, priority: i32) -> Part {
    part(
        NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(table.to_string()),
                ChainAttribute::Name(name.to_string()),
                ChainAttribute::Hook(vec![
                    Hook::Number(hook.into()),
                    // The kernel reads the signed priority from these bits.
                    Hook::Priority(priority as u32),
                ]),
                ChainAttribute::Policy(NF_ACCEPT),
                ChainAttribute::Type(kind.to_string()),
            ],
        }),
        NLM_F_CREATE,
        format!("creating nftables chain ip {table} {name}"),
    )
}

fn rule(table: &str, chain: &str, exprs: Vec<Expr>) -> Part {
    part(
        NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_string()),
                RuleAttribute::Chain(chain.to_string()),
                RuleAttribute::Expressions(exprs),
            ],
        }),
        NLM_F_CREATE | NLM_F_APPEND,
        format!("adding a rule to nftables chain ip {table} {chain}"),
    )
}

/// `iifname`/`oifname` (`key`) `op` `name`.
fn ifname(key: MetaKey, op: Operator, name: &str) -> Vec<Expr> {
    let mut padded = name.as_bytes().to_vec();
    padded.resize(IFNAMSIZ, 0);
    vec![
        Expressions::Meta(vec![
            Meta::Key(key),
            Meta::DestinationRegister(Register::Reg1),
        ])
        .into(),
        cmp(op, padded),
    ]
}

/// `tcp flags syn`: TCP, with the SYN bit set.
fn tcp_syn() -> Vec<Expr> {
    vec![
        Expressions::Meta(vec![
            Meta::Key(MetaKey::L4Proto),
            Meta::DestinationRegister(Register::Reg1),
        ])
        .into(),
        cmp(Operator::Equal, vec![IPPROTO_TCP]),
        Expressions::Payload(vec![
            Payload::DestinationRegister(Register::Reg1),
            Payload::Base(PAYLOAD_TRANSPORT),
            Payload::Offset(TCP_FLAGS_OFFSET),
            Payload::Len(1),
        ])
        .into(),
        Expressions::Bitwise(vec![
            Bitwise::SourceRegister(Register::Reg1),
            Bitwise::DestinationRegister(Register::Reg1),
            Bitwise::Length(1),
            Bitwise::Mask(DataAttribute::Value(vec![TCP_FLAG_SYN])),
            Bitwise::Xor(DataAttribute::Value(vec![0])),
        ])
        .into(),
        cmp(Operator::NotEqual, vec![0]),
    ]
}

/// `tcp option maxseg size set rt mtu`: the route's MSS, in network
/// order, written into the SYN's MSS option.
fn clamp_mss_to_route() -> Vec<Expr> {
    let reg1 = u32::from(Register::Reg1);
    vec![
        other(
            "rt",
            vec![
                u32_attr(NFTA_RT_DREG, reg1),
                u32_attr(NFTA_RT_KEY, NFT_RT_TCPMSS),
            ],
        ),
        other(
            "byteorder",
            vec![
                u32_attr(NFTA_BYTEORDER_SREG, reg1),
                u32_attr(NFTA_BYTEORDER_DREG, reg1),
                u32_attr(NFTA_BYTEORDER_OP, NFT_BYTEORDER_HTON),
                u32_attr(NFTA_BYTEORDER_LEN, 2),
                u32_attr(NFTA_BYTEORDER_SIZE, 2),
            ],
        ),
        other(
            "exthdr",
            vec![
                DefaultNla::new(NFTA_EXTHDR_TYPE, vec![TCPOPT_MAXSEG]),
                u32_attr(NFTA_EXTHDR_OFFSET, 2),
                u32_attr(NFTA_EXTHDR_LEN, 2),
                u32_attr(NFTA_EXTHDR_OP, NFT_EXTHDR_OP_TCPOPT),
                u32_attr(NFTA_EXTHDR_SREG, reg1),
            ],
        ),
    ]
}

fn cmp(op: Operator, data: Vec<u8>) -> Expr {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(DataAttribute::Value(data)),
    ])
    .into()
}

/// An expression the crate has no type for, by name and attributes.
fn other(name: &str, attributes: Vec<DefaultNla>) -> Expr {
    Expressions::Other {
        expression_type: name.to_string(),
        attributes,
    }
    .into()
}

/// A big-endian u32 attribute, as nf_tables reads them.
fn u32_attr(kind: u16, value: u32) -> DefaultNla {
    DefaultNla::new(kind, value.to_be_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(exprs: &[Expr]) -> Vec<String> {
        exprs
            .iter()
            .filter_map(|e| match e {
                ListAttribute::Element(attrs) => attrs.iter().find_map(|a| match a {
                    ExpressionAttribute::Name(n) => Some(n.clone()),
                    _ => None,
                }),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_clamping_rule_is_the_bytecode_nft_makes() {
        // `nft --debug=netlink` for `oifname "ntm0" tcp flags syn tcp option
        // maxseg size set rt mtu`: meta, cmp, meta, cmp, payload, bitwise,
        // cmp, rt, byteorder, exthdr.
        let mut exprs = ifname(MetaKey::Oifname, Operator::Equal, "ntm0");
        exprs.extend(tcp_syn());
        exprs.extend(clamp_mss_to_route());
        assert_eq!(
            names(&exprs),
            [
                "meta",
                "cmp",
                "meta",
                "cmp",
                "payload",
                "bitwise",
                "cmp",
                "rt",
                "byteorder",
                "exthdr"
            ]
        );
        // The interface name is compared as 16 bytes, NUL padded.
        let ListAttribute::Element(attrs) = &exprs[1] else {
            panic!("not an element: {:?}", exprs[1]);
        };
        let want = Expressions::Cmp(vec![
            Cmp::SourceRegister(Register::Reg1),
            Cmp::Op(Operator::Equal),
            Cmp::Data(DataAttribute::Value(
                b"ntm0\0\0\0\0\0\0\0\0\0\0\0\0".to_vec(),
            )),
        ]);
        assert!(
            attrs.contains(&ExpressionAttribute::Data(want)),
            "{attrs:?}"
        );
    }

    #[test]
    fn snat_adds_a_masquerading_chain_and_nothing_else_changes() {
        let describe = |snat| {
            parts(Gateway {
                table: "ntmtun",
                tun: "ntm0",
                snat,
            })
            .into_iter()
            .map(|(m, _, what)| format!("{what}: {:?}", m.inner))
            .collect::<Vec<_>>()
        };
        let without = describe(false);
        let with = describe(true);
        assert_eq!(without.len(), 6, "{without:#?}");
        assert_eq!(with[..6], without[..], "snat changes only what it adds");
        assert_eq!(with.len(), 8, "{with:#?}");
        assert!(with[6].contains("chain ip ntmtun postrouting") && with[6].contains("PostRouting"));
        assert!(with[7].contains("\"masq\""), "{}", with[7]);
        assert!(!without.iter().any(|p| p.contains("masq")));
        // The table is created, emptied and created again: a replacement.
        assert!(without[0].contains("NewTable") && without[1].contains("DeleteTable"));
    }
}
