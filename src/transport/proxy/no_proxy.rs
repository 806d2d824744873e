//! `NO_PROXY` lists, read as curl reads them.

use std::net::IpAddr;

use ipnet::IpNet;

use super::split_host_port;

/// A `NO_PROXY` list.
#[derive(Clone, Debug, Default)]
pub(super) struct NoProxy {
    all: bool,
    entries: Vec<Bypass>,
}

#[derive(Clone, Debug)]
enum Bypass {
    Domain(String, Option<u16>),
    Ip(IpAddr, Option<u16>),
    Net(IpNet),
}

impl NoProxy {
    pub(super) fn extend(mut self, list: &str) -> Self {
        for raw in list.split(',') {
            let item = raw.trim().to_ascii_lowercase();
            if item.is_empty() {
                continue;
            }
            if item == "*" {
                self.all = true;
                continue;
            }
            if let Ok(net) = item.parse::<IpNet>() {
                self.entries.push(Bypass::Net(net));
                continue;
            }
            if let Ok(ip) = item.trim_matches(['[', ']']).parse::<IpAddr>() {
                self.entries.push(Bypass::Ip(ip, None));
                continue;
            }
            let (host, port) = match split_host_port(&item, 0) {
                Some((h, p)) if item.contains(':') => (h, Some(p)),
                _ => (item.clone(), None),
            };
            if let Ok(ip) = host.parse::<IpAddr>() {
                self.entries.push(Bypass::Ip(ip, port));
                continue;
            }
            let domain = host
                .trim_start_matches("*.")
                .trim_start_matches('.')
                .trim_end_matches('.')
                .to_owned();
            if !domain.is_empty() {
                self.entries.push(Bypass::Domain(domain, port));
            }
        }
        self
    }

    pub(super) fn matches(&self, host: &str, port: u16) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let ip = host.trim_matches(['[', ']']).parse::<IpAddr>().ok();
        self.entries.iter().any(|entry| match entry {
            Bypass::Net(net) => ip.is_some_and(|ip| net.contains(&ip)),
            Bypass::Ip(want, p) => ip == Some(*want) && p.is_none_or(|p| p == port),
            Bypass::Domain(d, p) => {
                (host == *d || host.ends_with(&format!(".{d}"))) && p.is_none_or(|p| p == port)
            }
        })
    }
}
