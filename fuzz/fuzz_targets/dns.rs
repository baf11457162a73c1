//! DNS interception: `DnsInterceptor::classify` on arbitrary queries, then
//! `answer` for each resolution when it asks the DC, and `servfail_for`.
//! Every reply must parse as DNS. The first byte picks the interceptor: the
//! fixed one for `ntm.internal` and 198.18.0.0/15, or one built from the
//! input (the domain comes from the DC in real life).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ntmtun::node::dns::DnsInterceptor;
use ntmtun_fuzz::node::dns_check;
use ntmtun_fuzz::Reader;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

fn fixed() -> &'static DnsInterceptor {
    static DNS: OnceLock<DnsInterceptor> = OnceLock::new();
    DNS.get_or_init(|| {
        DnsInterceptor::new(
            ntmtun_fuzz::DOMAIN,
            ntmtun_fuzz::PREFIX.parse().unwrap(),
            60,
        )
        .expect("interceptor")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let mode = r.u8();
    let vip = Ipv4Addr::new(198, 18, r.u8(), r.u8());
    if mode & 1 == 0 {
        dns_check(fixed(), r.rest(), vip);
        return;
    }
    let domain = String::from_utf8_lossy(r.short_bytes()).into_owned();
    let prefix = ipnet::Ipv4Net::new(Ipv4Addr::from(r.u32()), r.u8() % 33)
        .map(|n| n.trunc())
        .expect("prefix length <= 32");
    let ttl = r.u32();
    if let Ok(dns) = DnsInterceptor::new(&domain, prefix, ttl) {
        let _ = dns.domain();
        dns_check(&dns, r.rest(), vip);
    }
});
