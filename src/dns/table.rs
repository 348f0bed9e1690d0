//! The internal zone as a snapshot holds it: names → containers, and who is
//! asking, by source address. Built by the planner with the routing table,
//! read by the DNS server on every query. Pure.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;

use crate::world::NetAddress;

/// One container behind a name.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub container: String,
    pub project: Option<String>,
    /// Ready: its addresses are answered. Not ready: the name still exists
    /// (NODATA, not NXDOMAIN).
    pub ready: bool,
    pub addrs: Vec<NetAddress>,
}

/// What a source address is: a container of some project, on some networks.
#[derive(Debug, Clone, Default, PartialEq)]
struct Asker {
    project: Option<String>,
    networks: Vec<String>,
}

#[derive(Debug, Default)]
pub struct DnsTable {
    /// Name relative to the zone, lowercase → the containers it names.
    names: HashMap<String, Vec<Target>>,
    /// Names that exist only because names below them do (`blog` of
    /// `web.blog`): NODATA, not NXDOMAIN (RFC 8020).
    parents: std::collections::HashSet<String>,
    askers: HashMap<IpAddr, Asker>,
    /// The subnets of the Docker networks berth's containers are on.
    pub subnets: Vec<IpNet>,
}

/// A name and its containers, for `berth dns` and the admin API.
#[derive(Debug, Serialize, PartialEq)]
pub struct NameView {
    pub name: String,
    pub ready: Vec<IpAddr>,
    pub containers: Vec<TargetView>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct TargetView {
    pub container: String,
    pub project: Option<String>,
    pub ready: bool,
    pub addrs: Vec<IpAddr>,
}

impl DnsTable {
    /// Adds `target` under `name` (relative to the zone; lowercased here).
    pub fn insert(&mut self, name: &str, target: Target) {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return;
        }
        let mut rest = name.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            self.parents.insert(parent.to_string());
            rest = parent;
        }
        let list = self.names.entry(name).or_default();
        if !list.contains(&target) {
            list.push(target);
        }
    }

    /// Remembers a container's addresses so that its queries can be answered
    /// from its own project and networks, and its networks as allowed sources.
    pub fn add_asker(&mut self, project: Option<&str>, addrs: &[NetAddress]) {
        for a in addrs {
            let asker = self.askers.entry(a.ip).or_default();
            asker.project = project.map(str::to_string);
            if !asker.networks.contains(&a.network) {
                asker.networks.push(a.network.clone());
            }
            if let Ok(net) = IpNet::new(a.ip, a.prefix) {
                let net = net.trunc();
                if !self.subnets.contains(&net) {
                    self.subnets.push(net);
                }
            }
        }
    }

    /// Whether `ip` is a container berth knows.
    pub fn knows(&self, ip: IpAddr) -> bool {
        self.askers.contains_key(&ip)
    }

    /// Whether the answer for `name` depends on who asks: containers of
    /// several projects share it.
    pub fn depends_on_asker(&self, name: &str) -> bool {
        self.names.get(name).is_some_and(|targets| {
            targets
                .iter()
                .any(|t| t.project.is_some() && t.project != targets[0].project)
        })
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The addresses to answer for `name` asked from `from`, sorted; `None`:
    /// no such name (NXDOMAIN); empty: the name exists, nothing is ready
    /// (NODATA).
    ///
    /// When containers of several projects share the name, a container of one
    /// of them gets its own project's; and a container gets the addresses on
    /// networks it shares with the target, when there are any.
    pub fn lookup(&self, name: &str, from: IpAddr) -> Option<Vec<IpAddr>> {
        let Some(targets) = self.names.get(name) else {
            return self.parents.contains(name).then(Vec::new);
        };
        let asker = self.askers.get(&from);
        let own = asker.and_then(|a| a.project.as_deref());
        let same_project = |t: &&Target| own.is_some() && t.project.as_deref() == own;
        let prefer_own = targets.iter().any(|t| same_project(&t));
        let mut out = Vec::new();
        for t in targets
            .iter()
            .filter(|t| t.ready && (!prefer_own || same_project(t)))
        {
            let shared: Vec<&NetAddress> = match asker {
                Some(a) => t
                    .addrs
                    .iter()
                    .filter(|x| a.networks.contains(&x.network))
                    .collect(),
                None => Vec::new(),
            };
            if shared.is_empty() {
                out.extend(t.addrs.iter().map(|x| x.ip));
            } else {
                out.extend(shared.into_iter().map(|x| x.ip));
            }
        }
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    /// Every name, sorted, with what it answers to a host-side asker.
    pub fn view(&self) -> Vec<NameView> {
        let sorted: BTreeMap<&String, &Vec<Target>> = self.names.iter().collect();
        sorted
            .into_iter()
            .map(|(name, targets)| {
                let mut ready: Vec<IpAddr> = targets
                    .iter()
                    .filter(|t| t.ready)
                    .flat_map(|t| t.addrs.iter().map(|a| a.ip))
                    .collect();
                ready.sort_unstable();
                ready.dedup();
                NameView {
                    name: name.clone(),
                    ready,
                    containers: targets
                        .iter()
                        .map(|t| TargetView {
                            container: t.container.clone(),
                            project: t.project.clone(),
                            ready: t.ready,
                            addrs: t.addrs.iter().map(|a| a.ip).collect(),
                        })
                        .collect(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(network: &str, ip: &str) -> NetAddress {
        NetAddress {
            network: network.into(),
            ip: ip.parse().unwrap(),
            prefix: 16,
        }
    }

    fn target(name: &str, project: Option<&str>, ready: bool, addrs: &[NetAddress]) -> Target {
        Target {
            container: name.into(),
            project: project.map(str::to_string),
            ready,
            addrs: addrs.to_vec(),
        }
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const HOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn ready_only_nodata_and_nxdomain() {
        let mut t = DnsTable::default();
        let a = addr("blog_default", "172.20.0.2");
        let b = addr("blog_default", "172.20.0.3");
        t.insert(
            "Web",
            target("blog-web-1", Some("blog"), true, std::slice::from_ref(&a)),
        );
        t.insert("web", target("blog-web-2", Some("blog"), false, &[b]));
        t.insert("db", target("blog-db-1", Some("blog"), false, &[]));
        assert_eq!(t.lookup("web", HOST), Some(ips(&["172.20.0.2"])));
        assert!(!t.depends_on_asker("web"), "one project");
        assert_eq!(t.lookup("db", HOST), Some(vec![]), "known, nothing ready");
        assert_eq!(t.lookup("nope", HOST), None);
        t.insert("web.blog", target("blog-web-1", Some("blog"), true, &[]));
        assert_eq!(
            t.lookup("blog", HOST),
            Some(vec![]),
            "an empty non-terminal"
        );
        assert_eq!(t.lookup("log", HOST), None);
        t.add_asker(Some("blog"), &[a]);
        assert_eq!(t.subnets, vec!["172.20.0.0/16".parse::<IpNet>().unwrap()]);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn own_project_wins_then_everyone_gets_all() {
        let mut t = DnsTable::default();
        let a = addr("a_default", "172.21.0.5");
        let b = addr("b_default", "172.22.0.5");
        t.insert(
            "db",
            target("a-db-1", Some("a"), true, std::slice::from_ref(&a)),
        );
        t.insert(
            "db",
            target("b-db-1", Some("b"), true, std::slice::from_ref(&b)),
        );
        let client_a = addr("a_default", "172.21.0.9");
        let client_c = addr("c_default", "172.23.0.9");
        t.add_asker(Some("a"), std::slice::from_ref(&client_a));
        t.add_asker(Some("c"), std::slice::from_ref(&client_c));
        assert_eq!(t.lookup("db", client_a.ip), Some(ips(&["172.21.0.5"])));
        assert_eq!(
            t.lookup("db", client_c.ip),
            Some(ips(&["172.21.0.5", "172.22.0.5"])),
            "a project without a db gets every project's"
        );
        assert_eq!(
            t.lookup("db", HOST),
            Some(ips(&["172.21.0.5", "172.22.0.5"]))
        );
        // Own project's db down: NODATA, not the other project's database.
        t.names.get_mut("db").unwrap()[0].ready = false;
        assert_eq!(t.lookup("db", client_a.ip), Some(vec![]));
    }

    #[test]
    fn shared_networks_narrow_the_addresses() {
        let mut t = DnsTable::default();
        let front = addr("front", "172.30.0.2");
        let back = addr("back", "172.31.0.2");
        t.insert("api", target("api-1", None, true, &[front, back]));
        let on_back = addr("back", "172.31.0.7");
        t.add_asker(None, std::slice::from_ref(&on_back));
        assert_eq!(t.lookup("api", on_back.ip), Some(ips(&["172.31.0.2"])));
        assert_eq!(
            t.lookup("api", HOST),
            Some(ips(&["172.30.0.2", "172.31.0.2"]))
        );
        let view = t.view();
        assert_eq!(view[0].name, "api");
        assert_eq!(view[0].ready.len(), 2);
    }
}
