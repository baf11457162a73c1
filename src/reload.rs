//! SIGHUP reload planning, shared by the three roles: the new config file is
//! compared with the running configuration, key by key. Keys a role can
//! apply live become change messages for its core, in the core's own types
//! (`dc::settings::DcChange`, `relay::core::RelayChange`, `NodeChange`
//! here); the rest are named in a warning ("restart to apply: KEY") and keep
//! their running value. A file that does not load is refused as a whole and
//! nothing changes.
//!
//! Each `plan_*` destructures the new config exhaustively, so a key added to
//! a config struct does not compile until it is classified here.

use crate::config::{ConfigError, DcConfig, NodeConfig, RelayConfig};
use crate::dc::settings::DcChange;
use crate::relay::core::RelayChange;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::{error, info, warn};

/// What a reload does: the live changes, the keys that need a restart, and
/// the configuration now in force (the new values of applied keys, the old
/// values of the others), against which the next reload is compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<C, Cfg> {
    pub changes: Vec<C>,
    pub restart: Vec<&'static str>,
    pub running: Cfg,
}

impl<C, Cfg> Plan<C, Cfg> {
    fn new(running: Cfg) -> Self {
        Plan {
            changes: Vec::new(),
            restart: Vec::new(),
            running,
        }
    }

    /// Records `key` as needing a restart when its value differs.
    fn fixed<T: PartialEq>(&mut self, key: &'static str, old: &T, new: &T) {
        if old != new {
            self.restart.push(key);
        }
    }
}

/// A node key applied live.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeChange {
    /// `[dns] resolvers`: the real resolvers (captured, or the stub's upstreams).
    Resolvers(Vec<IpAddr>),
    /// `keepalive_secs` (None: keepalives off).
    Keepalive(Option<Duration>),
    RekeySecs(Duration),
}

pub fn plan_dc(old: &DcConfig, new: DcConfig) -> Plan<DcChange, DcConfig> {
    let DcConfig {
        listen,
        domain,
        private_key,
        virtual_prefix,
        state_dir,
        auth_keys,
        node_expiry_secs,
        relays,
        metrics_listen,
        route_grants,
        federation,
    } = new;
    let mut p = Plan::new(old.clone());
    if route_grants != old.route_grants {
        p.running.route_grants = route_grants.clone();
        p.changes.push(DcChange::RouteGrants(route_grants));
    }
    if auth_keys != old.auth_keys {
        p.running.auth_keys = auth_keys.clone();
        p.changes.push(DcChange::AuthKeys(auth_keys));
    }
    if relays != old.relays {
        p.running.relays = relays.clone();
        p.changes.push(DcChange::Relays(relays));
    }
    if federation != old.federation {
        p.running.federation = federation.clone();
        p.changes.push(DcChange::Federation(federation));
    }
    p.fixed("listen", &old.listen, &listen);
    p.fixed("domain", &old.domain, &domain);
    p.fixed("private_key", &old.private_key, &private_key);
    p.fixed("virtual_prefix", &old.virtual_prefix, &virtual_prefix);
    p.fixed("state_dir", &old.state_dir, &state_dir);
    p.fixed("node_expiry_secs", &old.node_expiry_secs, &node_expiry_secs);
    p.fixed("metrics_listen", &old.metrics_listen, &metrics_listen);
    p
}

pub fn plan_relay(old: &RelayConfig, new: RelayConfig) -> Plan<RelayChange, RelayConfig> {
    let RelayConfig {
        listen,
        private_key,
        dc_public_key,
        session_rate_mbps,
        metrics_listen,
    } = new;
    let mut p = Plan::new(old.clone());
    if session_rate_mbps != old.session_rate_mbps {
        p.running.session_rate_mbps = session_rate_mbps;
        p.changes
            .push(RelayChange::SessionRateMbps(session_rate_mbps));
    }
    p.fixed("listen", &old.listen, &listen);
    p.fixed("private_key", &old.private_key, &private_key);
    p.fixed("dc_public_key", &old.dc_public_key, &dc_public_key);
    p.fixed("metrics_listen", &old.metrics_listen, &metrics_listen);
    p
}

pub fn plan_node(old: &NodeConfig, new: NodeConfig) -> Plan<NodeChange, NodeConfig> {
    let NodeConfig {
        name,
        private_key,
        dc,
        dc_public_key,
        auth_key,
        tun,
        listen_port,
        control_socket,
        workers,
        keepalive_secs,
        rekey_secs,
        dns,
        metrics_listen,
        advertise_routes,
        accept_routes,
        snat,
        io,
    } = new;
    let mut p = Plan::new(old.clone());
    if dns.resolvers != old.dns.resolvers {
        p.running.dns.resolvers = dns.resolvers.clone();
        p.changes.push(NodeChange::Resolvers(dns.resolvers));
    }
    if keepalive_secs != old.keepalive_secs {
        p.running.keepalive_secs = keepalive_secs;
        p.changes.push(NodeChange::Keepalive(
            (keepalive_secs > 0).then(|| Duration::from_secs(keepalive_secs)),
        ));
    }
    if rekey_secs != old.rekey_secs {
        p.running.rekey_secs = rekey_secs;
        p.changes
            .push(NodeChange::RekeySecs(Duration::from_secs(rekey_secs)));
    }
    p.fixed("name", &old.name, &name);
    p.fixed("private_key", &old.private_key, &private_key);
    p.fixed("dc", &old.dc, &dc);
    p.fixed("dc_public_key", &old.dc_public_key, &dc_public_key);
    p.fixed("auth_key", &old.auth_key, &auth_key);
    p.fixed("tun", &old.tun, &tun);
    p.fixed("listen_port", &old.listen_port, &listen_port);
    p.fixed("control_socket", &old.control_socket, &control_socket);
    p.fixed("workers", &old.workers, &workers);
    p.fixed("[dns] mode", &old.dns.mode, &dns.mode);
    p.fixed("advertise_routes", &old.advertise_routes, &advertise_routes);
    p.fixed("accept_routes", &old.accept_routes, &accept_routes);
    p.fixed("snat", &old.snat, &snat);
    p.fixed("io", &old.io, &io);
    p.fixed("metrics_listen", &old.metrics_listen, &metrics_listen);
    p
}

/// The SIGHUP handler of a role: reloads `path` with `load`, plans against
/// the running configuration with `plan`, warns about keys that need a
/// restart and hands the live changes to `deliver` (a channel into the
/// role's core). A file that does not load is refused with its error.
pub fn on_sighup<C, Cfg>(
    path: PathBuf,
    running: Cfg,
    load: fn(&Path) -> Result<Cfg, ConfigError>,
    plan: fn(&Cfg, Cfg) -> Plan<C, Cfg>,
    mut deliver: impl FnMut(Vec<C>) + Send + 'static,
) -> impl FnMut() + Send + 'static
where
    C: std::fmt::Debug + Send + 'static,
    Cfg: Send + 'static,
{
    let mut running = Some(running);
    move || {
        let Some(current) = running.take() else {
            return;
        };
        let new = match load(&path) {
            Ok(c) => c,
            Err(e) => {
                error!(error = %e, "reload refused; the running configuration stays in force");
                running = Some(current);
                return;
            }
        };
        let p = plan(&current, new);
        for key in &p.restart {
            warn!("restart to apply: {key} (changed in {})", path.display());
        }
        if p.changes.is_empty() {
            info!("reload: nothing to apply live");
        } else {
            info!(changes = ?p.changes, "reload: applying");
            deliver(p.changes);
        }
        running = Some(p.running);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DnsConfig;
    use crate::dc::settings::{FederationSpec, RelaySpec, RouteGrant};
    use crate::keys::PrivateKey;
    use crate::node::split_dns::DnsMode;

    fn dc() -> DcConfig {
        DcConfig {
            listen: vec!["198.51.100.10:7446".parse().unwrap()],
            domain: "ntm.internal".into(),
            private_key: PrivateKey::generate(),
            virtual_prefix: crate::config::DEFAULT_VIRTUAL_PREFIX,
            state_dir: "/var/lib/ntmtun/dc".into(),
            auth_keys: vec!["old".into()],
            node_expiry_secs: 90,
            relays: Vec::new(),
            metrics_listen: None,
            route_grants: Vec::new(),
            federation: Vec::new(),
        }
    }

    fn node() -> NodeConfig {
        NodeConfig {
            name: "alice".into(),
            private_key: PrivateKey::generate(),
            dc: vec!["198.51.100.10:7446".parse().unwrap()],
            dc_public_key: PrivateKey::generate().public_key(),
            auth_key: "t".into(),
            tun: "ntm0".into(),
            listen_port: 0,
            control_socket: "/run/ntmtun/ntmtun.sock".into(),
            workers: 0,
            keepalive_secs: 25,
            rekey_secs: 120,
            dns: DnsConfig {
                mode: DnsMode::Capture,
                resolvers: vec!["198.51.100.53".parse().unwrap()],
            },
            metrics_listen: None,
            advertise_routes: Vec::new(),
            accept_routes: true,
            snat: false,
            io: Default::default(),
        }
    }

    #[test]
    fn same_config_changes_nothing() {
        let old = dc();
        let p = plan_dc(&old, old.clone());
        assert!(p.changes.is_empty() && p.restart.is_empty());
        assert_eq!(p.running, old);
    }

    #[test]
    fn dc_auth_keys_and_relays_apply_live_the_rest_waits() {
        let old = dc();
        let mut new = old.clone();
        new.auth_keys = vec!["new".into()];
        new.relays = vec![RelaySpec {
            public_key: PrivateKey::generate().public_key(),
            addresses: vec!["198.51.100.20:7447".parse().unwrap()],
        }];
        new.domain = "other.internal".into();
        new.listen = vec!["198.51.100.10:7000".parse().unwrap()];
        let p = plan_dc(&old, new.clone());
        assert_eq!(
            p.changes,
            vec![
                DcChange::AuthKeys(vec!["new".into()]),
                DcChange::Relays(new.relays.clone())
            ]
        );
        assert_eq!(p.restart, vec!["listen", "domain"]);
        // Applied keys take their new value, the others keep the old one.
        assert_eq!(p.running.auth_keys, new.auth_keys);
        assert_eq!(p.running.domain, old.domain);
        assert_eq!(p.running.listen, old.listen);
    }

    #[test]
    fn route_grants_apply_live_and_gateway_keys_wait() {
        let old = dc();
        let mut new = old.clone();
        new.route_grants = vec![RouteGrant {
            node: "gwa".into(),
            prefixes: vec!["192.0.2.128/27".parse().unwrap()],
        }];
        let p = plan_dc(&old, new.clone());
        assert_eq!(
            p.changes,
            vec![DcChange::RouteGrants(new.route_grants.clone())]
        );
        assert_eq!(p.running, new);
        let old = node();
        let mut new = old.clone();
        new.advertise_routes = vec!["192.0.2.128/27".parse().unwrap()];
        new.snat = true;
        let p = plan_node(&old, new);
        assert!(p.changes.is_empty());
        assert_eq!(p.restart, vec!["advertise_routes", "snat"]);
    }

    #[test]
    fn federation_applies_live() {
        let old = dc();
        let mut new = old.clone();
        new.federation = vec![FederationSpec {
            domain: "y.ntm.internal".into(),
            public_key: PrivateKey::generate().public_key(),
            address: None,
        }];
        let p = plan_dc(&old, new.clone());
        assert_eq!(
            p.changes,
            vec![DcChange::Federation(new.federation.clone())]
        );
        assert!(p.restart.is_empty());
        assert_eq!(p.running, new);
    }

    #[test]
    fn a_key_changed_back_is_applied_again() {
        let old = dc();
        let mut new = old.clone();
        new.auth_keys = vec!["new".into()];
        let first = plan_dc(&old, new);
        let second = plan_dc(&first.running, old.clone());
        assert_eq!(second.changes, vec![DcChange::AuthKeys(old.auth_keys)]);
    }

    #[test]
    fn relay_rate_applies_live() {
        let old = RelayConfig {
            listen: vec!["198.51.100.20:7447".parse().unwrap()],
            private_key: PrivateKey::generate(),
            dc_public_key: PrivateKey::generate().public_key(),
            session_rate_mbps: 1000,
            metrics_listen: None,
        };
        let mut new = old.clone();
        new.session_rate_mbps = 10;
        new.dc_public_key = PrivateKey::generate().public_key();
        let p = plan_relay(&old, new);
        assert_eq!(p.changes, vec![RelayChange::SessionRateMbps(10)]);
        assert_eq!(p.restart, vec!["dc_public_key"]);
        assert_eq!(p.running.dc_public_key, old.dc_public_key);
    }

    #[test]
    fn node_timers_and_resolvers_apply_live_mode_and_name_wait() {
        let old = node();
        let mut new = old.clone();
        new.keepalive_secs = 0;
        new.rekey_secs = 60;
        new.dns.resolvers = vec!["198.51.100.54".parse().unwrap()];
        new.dns.mode = DnsMode::Stub;
        new.name = "carol".into();
        let p = plan_node(&old, new);
        assert_eq!(
            p.changes,
            vec![
                NodeChange::Resolvers(vec!["198.51.100.54".parse().unwrap()]),
                NodeChange::Keepalive(None),
                NodeChange::RekeySecs(Duration::from_secs(60)),
            ]
        );
        assert_eq!(p.restart, vec!["name", "[dns] mode"]);
        assert_eq!(p.running.dns.mode, DnsMode::Capture);
        assert_eq!(p.running.keepalive_secs, 0);
    }

    #[test]
    fn sighup_handler_refuses_a_bad_file_and_keeps_running_config() {
        let dir = std::env::temp_dir().join(format!("ntmtun-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("relay.toml");
        let old = RelayConfig {
            listen: vec!["198.51.100.20:7447".parse().unwrap()],
            private_key: PrivateKey::generate(),
            dc_public_key: PrivateKey::generate().public_key(),
            session_rate_mbps: 1000,
            metrics_listen: None,
        };
        let write = |rate: &str| {
            std::fs::write(
                &path,
                format!(
                    "listen = [\"198.51.100.20:7447\"]\nprivate_key = \"{}\"\ndc_public_key = \"{}\"\nsession_rate_mbps = {rate}\n",
                    old.private_key.to_base64(),
                    old.dc_public_key
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        };
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = got.clone();
        let mut hup = on_sighup(
            path.clone(),
            old.clone(),
            crate::config::load_relay,
            plan_relay,
            move |c| sink.lock().unwrap().extend(c),
        );
        write("\"fast\"");
        hup();
        assert!(got.lock().unwrap().is_empty(), "a bad file was applied");
        write("10");
        hup();
        hup();
        // Applied once: the second SIGHUP compares against the new running config.
        assert_eq!(*got.lock().unwrap(), vec![RelayChange::SessionRateMbps(10)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
