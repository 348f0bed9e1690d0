//! The internal zone as a snapshot holds it: names → containers, and who is
//! asking, by source address. Built by the planner with the routing table;
//! [`answer`] decides what a query gets, and the DNS server only encodes it.
//! Pure.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::names::canonical_name;
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
    parents: HashSet<String>,
    askers: HashMap<IpAddr, Asker>,
    /// The subnets of the Docker networks berth's containers are on.
    pub subnets: Vec<IpNet>,
}

/// A name and its containers, for `berth dns` and the admin API.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NameView {
    pub name: String,
    pub ready: Vec<IpAddr>,
    pub containers: Vec<TargetView>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct TargetView {
    pub container: String,
    pub project: Option<String>,
    pub ready: bool,
    pub addrs: Vec<IpAddr>,
}

impl DnsTable {
    /// Adds `target` under `name` (relative to the zone; lowercased here).
    pub fn insert(&mut self, name: &str, target: Target) {
        let name = canonical_name(name).into_owned();
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

/// The query types the zone tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Any,
    Soa,
    /// Anything else: the name exists or not, but has no such record.
    Other,
}

/// One question, as the DNS server received it.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// Fully qualified, with or without the trailing dot, any case.
    pub name: &'a str,
    pub qtype: QueryType,
    /// Class IN (the only one the zone has).
    pub class_in: bool,
    /// Who asks: a container gets its own project's and networks' answers.
    pub from: IpAddr,
}

/// What a query gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Outside the zone: forwarded upstream, or refused without forwarding.
    Forward,
    Refused,
    /// The zone's SOA record (the apex, asked for SOA or ANY).
    Soa,
    /// The name exists, with no record of that type: SOA in the authority.
    NoData,
    NxDomain,
    /// These addresses, in this order.
    Addrs(Vec<IpAddr>),
}

/// The name below `zone`: `Some("")` for the apex, `None` outside the zone.
fn relative<'n>(zone: &str, name: &'n str) -> Option<&'n str> {
    if name == zone {
        return Some("");
    }
    name.strip_suffix(zone)?.strip_suffix('.')
}

/// Whether the answer to `q` depends on a source the table does not know
/// yet: a container that asks right after its start. The server then waits
/// a moment for the snapshot that knows it.
pub fn must_learn(table: &DnsTable, zone: &str, q: &Query<'_>) -> bool {
    let name = canonical_name(q.name);
    relative(zone, &name).is_some_and(|r| {
        q.class_in && !r.is_empty() && table.depends_on_asker(r) && !table.knows(q.from)
    })
}

/// The answer to `q` from the zone `zone` (lowercase, no trailing dot) as
/// `table` holds it. `turn` is asked only when addresses are answered, and
/// rotates them: one step per answer.
pub fn answer(table: &DnsTable, zone: &str, q: &Query<'_>, turn: impl FnOnce() -> usize) -> Answer {
    let name = canonical_name(q.name);
    let Some(rel) = relative(zone, &name) else {
        return Answer::Forward;
    };
    if !q.class_in {
        return Answer::Refused;
    }
    if rel.is_empty() {
        // The zone itself: its SOA, nothing else.
        return match q.qtype {
            QueryType::Soa | QueryType::Any => Answer::Soa,
            _ => Answer::NoData,
        };
    }
    let Some(mut addrs) = table.lookup(rel, q.from) else {
        return Answer::NxDomain;
    };
    addrs.retain(|ip| match q.qtype {
        QueryType::A => ip.is_ipv4(),
        QueryType::Aaaa => ip.is_ipv6(),
        QueryType::Any => true,
        QueryType::Soa | QueryType::Other => false,
    });
    if addrs.is_empty() {
        return Answer::NoData;
    }
    let n = addrs.len();
    addrs.rotate_left(turn() % n);
    Answer::Addrs(addrs)
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

    #[test]
    fn answers_by_table() {
        let mut t = DnsTable::default();
        let v4 = addr("blog_default", "172.20.0.2");
        let v6 = NetAddress {
            network: "blog_default".into(),
            ip: "fd00::2".parse().unwrap(),
            prefix: 64,
        };
        t.insert(
            "web",
            target("blog-web-1", Some("blog"), true, &[v4.clone(), v6]),
        );
        t.insert(
            "web",
            target(
                "blog-web-2",
                Some("blog"),
                true,
                &[addr("blog_default", "172.20.0.3")],
            ),
        );
        t.insert("db", target("blog-db-1", Some("blog"), false, &[]));
        t.insert(
            "web.blog",
            target("blog-web-1", Some("blog"), true, std::slice::from_ref(&v4)),
        );
        use QueryType::*;
        let q = |name, qtype, class_in| Query {
            name,
            qtype,
            class_in,
            from: HOST,
        };
        let addrs = |list: &[&str]| Answer::Addrs(ips(list));
        for (query, turn, want) in [
            (
                q("web.internal.", A, true),
                0,
                addrs(&["172.20.0.2", "172.20.0.3"]),
            ),
            (
                q("WEB.Internal", A, true),
                1,
                addrs(&["172.20.0.3", "172.20.0.2"]),
            ),
            (q("web.internal", Aaaa, true), 0, addrs(&["fd00::2"])),
            (
                q("web.internal", Any, true),
                0,
                addrs(&["172.20.0.2", "172.20.0.3", "fd00::2"]),
            ),
            (q("web.internal", Other, true), 0, Answer::NoData),
            (q("db.internal", A, true), 0, Answer::NoData),
            (q("blog.internal", A, true), 0, Answer::NoData),
            (q("nope.internal", A, true), 0, Answer::NxDomain),
            (q("internal.", Soa, true), 0, Answer::Soa),
            (q("internal", Any, true), 0, Answer::Soa),
            (q("internal", A, true), 0, Answer::NoData),
            (q("web.internal", A, false), 0, Answer::Refused),
            (q("example.com.", A, true), 0, Answer::Forward),
            (q("notinternal", A, true), 0, Answer::Forward),
        ] {
            let mut asked = false;
            let got = answer(&t, "internal", &query, || {
                asked = true;
                turn
            });
            assert_eq!(got, want, "{query:?}");
            assert_eq!(
                asked,
                matches!(want, Answer::Addrs(_)),
                "turns only for addresses"
            );
        }
    }

    #[test]
    fn an_unknown_asker_waits_only_where_projects_share_a_name() {
        let mut t = DnsTable::default();
        let a = addr("a_default", "172.21.0.5");
        t.insert(
            "db",
            target("a-db-1", Some("a"), true, std::slice::from_ref(&a)),
        );
        t.insert(
            "web",
            target("a-web-1", Some("a"), true, std::slice::from_ref(&a)),
        );
        t.insert(
            "db",
            target(
                "b-db-1",
                Some("b"),
                true,
                &[addr("b_default", "172.22.0.5")],
            ),
        );
        let stranger: IpAddr = "172.21.0.99".parse().unwrap();
        let q = |name| Query {
            name,
            qtype: QueryType::A,
            class_in: true,
            from: stranger,
        };
        assert!(must_learn(&t, "internal", &q("db.internal")));
        assert!(!must_learn(&t, "internal", &q("web.internal")));
        assert!(!must_learn(&t, "internal", &q("db.example.com")));
        t.add_asker(Some("a"), &[addr("a_default", "172.21.0.99")]);
        assert!(!must_learn(&t, "internal", &q("db.internal")));
        assert_eq!(
            answer(&t, "internal", &q("db.internal"), || 0),
            Answer::Addrs(ips(&["172.21.0.5"]))
        );
    }
}
