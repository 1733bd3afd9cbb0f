//! Real kernel-level partitions: one network namespace per node.
//!
//! Each node gets a namespace, a veth pair whose host end joins a bridge in
//! the root namespace, and a private address (`10.77.0.11` for N1, ...; the
//! bridge is `.1`, which is how the harness reaches the HTTP ports).
//! Partitions are DROP rules inside the namespaces (nftables, or iptables
//! when nft is missing), so packets die in the kernel, not in keel's own
//! socket filter. Everything here is command *generation*, testable
//! without root; [`NetnsGuard`] runs the commands and undoes them on drop.

use crate::types::NodeId;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Which of a node's traffic with some peers a rule drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropSpec {
    /// Packets the node receives from them.
    pub inbound: bool,
    /// Packets the node sends to them.
    pub outbound: bool,
    /// The share dropped, at random, in percent (100: all).
    pub percent: u8,
}

impl DropSpec {
    /// Everything, both ways: a cut.
    pub const ALL: DropSpec = DropSpec {
        inbound: true,
        outbound: true,
        percent: 100,
    };
}

/// The nftables table the harness owns inside each namespace.
const TABLE: &str = "keel_jepsen";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("--netns needs root (network namespaces, veth and firewall rules); run as root or drop --netns")]
    NotRoot,
    #[error("--netns needs `ip` (iproute2); install it with: apt-get install -y iproute2")]
    NoIp,
    #[error("--netns needs nftables or iptables; install one with: apt-get install -y nftables")]
    NoFirewall,
    #[error(
        "{subnet}.0/24 is already in use on this host ({detail}); pick another with --netns-subnet"
    )]
    SubnetInUse { subnet: String, detail: String },
    #[error("`{cmd}` failed: {output}")]
    Command { cmd: String, output: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firewall {
    Nft,
    Iptables,
}

/// Names and addresses of one run's namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetnsPlan {
    /// Short, unique per harness process: interface names max out at 15
    /// bytes.
    pub tag: String,
    /// First three octets, e.g. `[10, 77, 0]`.
    pub subnet: [u8; 3],
    pub nodes: u32,
    pub firewall: Firewall,
}

pub type Cmd = Vec<String>;

fn cmd(parts: &[&str]) -> Cmd {
    parts.iter().map(|s| s.to_string()).collect()
}

impl NetnsPlan {
    pub fn new(tag: &str, subnet: [u8; 3], nodes: u32, firewall: Firewall) -> Self {
        let tag: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(7)
            .collect();
        NetnsPlan {
            tag,
            subnet,
            nodes,
            firewall,
        }
    }

    pub fn namespace(&self, node: NodeId) -> String {
        format!("kj{}n{}", self.tag, node.0)
    }

    pub fn bridge(&self) -> String {
        format!("kjb{}", self.tag)
    }

    fn host_veth(&self, node: NodeId) -> String {
        format!("kjh{}n{}", self.tag, node.0)
    }

    fn ns_veth(&self, node: NodeId) -> String {
        format!("kjp{}n{}", self.tag, node.0)
    }

    pub fn node_ip(&self, node: NodeId) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 10 + node.0 as u8)
    }

    pub fn host_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.subnet;
        Ipv4Addr::new(a, b, c, 1)
    }

    fn ids(&self) -> impl Iterator<Item = NodeId> {
        (1..=self.nodes).map(NodeId)
    }

    /// Runs a command inside a node's namespace.
    pub fn exec_prefix(&self, node: NodeId) -> Cmd {
        cmd(&["ip", "netns", "exec", &self.namespace(node)])
    }

    fn in_ns(&self, node: NodeId, parts: &[&str]) -> Cmd {
        let mut c = self.exec_prefix(node);
        c.extend(parts.iter().map(|s| s.to_string()));
        c
    }

    /// Creates namespaces, veths, the bridge, addresses and (nft) the
    /// table and chains the partition rules go into.
    pub fn setup_commands(&self) -> Vec<Cmd> {
        let br = self.bridge();
        let host = format!("{}/24", self.host_ip());
        let mut out = vec![
            cmd(&["ip", "link", "add", &br, "type", "bridge"]),
            cmd(&["ip", "addr", "add", &host, "dev", &br]),
            cmd(&["ip", "link", "set", &br, "up"]),
        ];
        for n in self.ids() {
            let ns = self.namespace(n);
            let (hv, pv) = (self.host_veth(n), self.ns_veth(n));
            let addr = format!("{}/24", self.node_ip(n));
            out.push(cmd(&["ip", "netns", "add", &ns]));
            out.push(cmd(&[
                "ip", "link", "add", &hv, "type", "veth", "peer", "name", &pv,
            ]));
            out.push(cmd(&["ip", "link", "set", &pv, "netns", &ns]));
            out.push(cmd(&["ip", "link", "set", &hv, "master", &br]));
            out.push(cmd(&["ip", "link", "set", &hv, "up"]));
            out.push(cmd(&["ip", "-n", &ns, "addr", "add", &addr, "dev", &pv]));
            out.push(cmd(&["ip", "-n", &ns, "link", "set", &pv, "up"]));
            out.push(cmd(&["ip", "-n", &ns, "link", "set", "lo", "up"]));
            if self.firewall == Firewall::Nft {
                out.push(self.in_ns(n, &["nft", "add", "table", "inet", TABLE]));
                for (chain, hook) in [("in", "input"), ("out", "output")] {
                    let spec = format!("{{ type filter hook {hook} priority 0; policy accept; }}");
                    out.push(self.in_ns(n, &["nft", "add", "chain", "inet", TABLE, chain, &spec]));
                }
            }
        }
        out
    }

    /// Deleting a namespace deletes its veth end, which deletes the pair.
    /// Every command runs even if an earlier one failed.
    pub fn teardown_commands(&self) -> Vec<Cmd> {
        let mut out: Vec<Cmd> = self
            .ids()
            .map(|n| cmd(&["ip", "netns", "del", &self.namespace(n)]))
            .collect();
        out.push(cmd(&["ip", "link", "del", &self.bridge()]));
        out
    }

    /// Rules inside `node`'s namespace dropping all traffic to and from
    /// `peers`. Rules only add up: heal first to replace a partition.
    pub fn block_commands(&self, node: NodeId, peers: &BTreeSet<NodeId>) -> Vec<Cmd> {
        self.drop_commands(node, peers, DropSpec::ALL)
    }

    /// Rules inside `node`'s namespace dropping what `spec` says of the
    /// traffic with `peers`: a direction, all of it or a random share.
    pub fn drop_commands(
        &self,
        node: NodeId,
        peers: &BTreeSet<NodeId>,
        spec: DropSpec,
    ) -> Vec<Cmd> {
        let mut out = Vec::new();
        let pct = spec.percent.min(100);
        let chance = format!("{pct}");
        let probability = format!("{:.2}", f64::from(pct) / 100.0);
        for &p in peers {
            let ip = self.node_ip(p).to_string();
            let ways = [
                (spec.inbound, "in", "saddr", "INPUT", "-s"),
                (spec.outbound, "out", "daddr", "OUTPUT", "-d"),
            ];
            for (on, chain, field, ipt_chain, ipt_flag) in ways {
                if !on {
                    continue;
                }
                let args: Vec<&str> = match (self.firewall, pct < 100) {
                    (Firewall::Nft, false) => {
                        vec![
                            "nft", "add", "rule", "inet", TABLE, chain, "ip", field, &ip, "drop",
                        ]
                    }
                    (Firewall::Nft, true) => vec![
                        "nft", "add", "rule", "inet", TABLE, chain, "ip", field, &ip, "numgen",
                        "random", "mod", "100", "<", &chance, "drop",
                    ],
                    (Firewall::Iptables, false) => {
                        vec!["iptables", "-A", ipt_chain, ipt_flag, &ip, "-j", "DROP"]
                    }
                    (Firewall::Iptables, true) => vec![
                        "iptables",
                        "-A",
                        ipt_chain,
                        ipt_flag,
                        &ip,
                        "-m",
                        "statistic",
                        "--mode",
                        "random",
                        "--probability",
                        &probability,
                        "-j",
                        "DROP",
                    ],
                };
                out.push(self.in_ns(node, &args));
            }
        }
        out
    }

    /// Removes every rule the harness added in `node`'s namespace.
    pub fn heal_commands(&self, node: NodeId) -> Vec<Cmd> {
        match self.firewall {
            Firewall::Nft => vec![
                self.in_ns(node, &["nft", "flush", "chain", "inet", TABLE, "in"]),
                self.in_ns(node, &["nft", "flush", "chain", "inet", TABLE, "out"]),
            ],
            Firewall::Iptables => vec![
                self.in_ns(node, &["iptables", "-F", "INPUT"]),
                self.in_ns(node, &["iptables", "-F", "OUTPUT"]),
            ],
        }
    }
}

/// Parses `10.77.0` (or `10.77.0.0/24`) into the first three octets.
pub fn parse_subnet(s: &str) -> Result<[u8; 3], String> {
    let head = s.split('/').next().unwrap_or("");
    let parts: Vec<&str> = head.split('.').collect();
    let octets: Vec<u8> = parts
        .iter()
        .take(3)
        .map(|p| p.parse::<u8>())
        .collect::<Result<_, _>>()
        .map_err(|_| format!("bad subnet {s:?}: expected like 10.77.0"))?;
    match (octets.as_slice(), parts.get(3)) {
        ([a, b, c], None | Some(&"0")) => Ok([*a, *b, *c]),
        _ => Err(format!("bad subnet {s:?}: expected like 10.77.0")),
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Root, `ip`, and a firewall tool; nft preferred.
pub fn check_prerequisites() -> Result<Firewall, NetnsError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(NetnsError::NotRoot);
    }
    if !on_path("ip") {
        return Err(NetnsError::NoIp);
    }
    if on_path("nft") {
        Ok(Firewall::Nft)
    } else if on_path("iptables") {
        Ok(Firewall::Iptables)
    } else {
        Err(NetnsError::NoFirewall)
    }
}

/// Runs one command, capturing its output for the error.
pub fn run(c: &Cmd) -> Result<(), NetnsError> {
    let shown = c.join(" ");
    let Some((prog, args)) = c.split_first() else {
        return Ok(());
    };
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetnsError::Command {
            cmd: shown.clone(),
            output: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            cmd: shown,
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// The namespaces of one run; torn down on drop (also on error paths and
/// after Ctrl-C, which the runner turns into an orderly return).
pub struct NetnsGuard {
    pub plan: NetnsPlan,
}

impl NetnsGuard {
    pub fn create(plan: NetnsPlan) -> Result<Self, NetnsError> {
        let probe = Command::new("ip")
            .args(["-o", "-4", "addr", "show"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let [a, b, c] = plan.subnet;
        let prefix = format!(" {a}.{b}.{c}.");
        if let Some(line) = probe.lines().find(|l| l.contains(&prefix)) {
            return Err(NetnsError::SubnetInUse {
                subnet: format!("{a}.{b}.{c}"),
                detail: line
                    .split_whitespace()
                    .take(4)
                    .collect::<Vec<_>>()
                    .join(" "),
            });
        }
        // From here on, drop cleans up whatever was created.
        let guard = NetnsGuard { plan };
        for c in guard.plan.setup_commands() {
            run(&c)?;
        }
        Ok(guard)
    }

    pub fn block(&self, node: NodeId, peers: &BTreeSet<NodeId>) -> Result<(), NetnsError> {
        self.plan
            .block_commands(node, peers)
            .iter()
            .try_for_each(run)
    }

    /// Drops what `spec` says of `node`'s traffic with `peers`.
    pub fn drop(
        &self,
        node: NodeId,
        peers: &BTreeSet<NodeId>,
        spec: DropSpec,
    ) -> Result<(), NetnsError> {
        self.plan
            .drop_commands(node, peers, spec)
            .iter()
            .try_for_each(run)
    }

    pub fn heal(&self, node: NodeId) -> Result<(), NetnsError> {
        self.plan.heal_commands(node).iter().try_for_each(run)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for c in self.plan.teardown_commands() {
            if let Err(e) = run(&c) {
                eprintln!("keel-jepsen: cleanup: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(fw: Firewall) -> NetnsPlan {
        NetnsPlan::new("12345", [10, 77, 0], 3, fw)
    }

    #[test]
    fn names_fit_interface_limits_and_addresses_are_private() {
        let p = NetnsPlan::new("4194304-extra!", [10, 77, 0], 9, Firewall::Nft);
        assert_eq!(p.tag, "4194304");
        for n in 1..=9 {
            assert!(p.host_veth(NodeId(n)).len() <= 15);
            assert!(p.ns_veth(NodeId(n)).len() <= 15);
        }
        assert!(p.bridge().len() <= 15);
        assert_eq!(p.node_ip(NodeId(2)), Ipv4Addr::new(10, 77, 0, 12));
        assert_eq!(p.host_ip(), Ipv4Addr::new(10, 77, 0, 1));
    }

    #[test]
    fn setup_creates_one_namespace_and_veth_per_node_on_one_bridge() {
        let p = plan(Firewall::Nft);
        let cmds: Vec<String> = p.setup_commands().iter().map(|c| c.join(" ")).collect();
        assert_eq!(cmds[0], "ip link add kjb12345 type bridge");
        assert!(cmds.contains(&"ip addr add 10.77.0.1/24 dev kjb12345".to_string()));
        for n in 1..=3 {
            assert!(cmds.contains(&format!("ip netns add kj12345n{n}")));
            assert!(cmds.contains(&format!("ip link set kjh12345n{n} master kjb12345")));
            assert!(cmds.contains(&format!(
                "ip -n kj12345n{n} addr add 10.77.0.{}/24 dev kjp12345n{n}",
                10 + n
            )));
        }
        // The nft chains exist before any rule is added to them.
        let add_chain = cmds
            .iter()
            .position(|c| c.contains("add chain inet keel_jepsen in"))
            .unwrap();
        assert!(cmds[add_chain].starts_with("ip netns exec kj12345n1 nft"));
        assert!(cmds[add_chain].contains("hook input"));
        // iptables needs no setup inside the namespace.
        let ipt = plan(Firewall::Iptables).setup_commands();
        assert!(ipt.iter().all(|c| !c.contains(&"nft".to_string())));
    }

    #[test]
    fn loss_and_one_way_rules_drop_a_share_or_one_direction() {
        let peers = BTreeSet::from([NodeId(1)]);
        let lossy = DropSpec {
            percent: 30,
            ..DropSpec::ALL
        };
        let show = |f, spec| -> Vec<String> {
            plan(f)
                .drop_commands(NodeId(2), &peers, spec)
                .iter()
                .map(|c| c.join(" "))
                .collect()
        };
        assert_eq!(
            show(Firewall::Nft, lossy),
            [
                "ip netns exec kj12345n2 nft add rule inet keel_jepsen in ip saddr 10.77.0.11 numgen random mod 100 < 30 drop",
                "ip netns exec kj12345n2 nft add rule inet keel_jepsen out ip daddr 10.77.0.11 numgen random mod 100 < 30 drop",
            ]
        );
        assert_eq!(
            show(Firewall::Iptables, lossy)[1],
            "ip netns exec kj12345n2 iptables -A OUTPUT -d 10.77.0.11 -m statistic --mode random --probability 0.30 -j DROP"
        );
        let outbound_only = DropSpec {
            inbound: false,
            ..DropSpec::ALL
        };
        assert_eq!(
            show(Firewall::Nft, outbound_only),
            ["ip netns exec kj12345n2 nft add rule inet keel_jepsen out ip daddr 10.77.0.11 drop"]
        );
    }

    #[test]
    fn blocks_drop_both_directions_inside_the_namespace() {
        let p = plan(Firewall::Nft);
        let peers = BTreeSet::from([NodeId(1), NodeId(3)]);
        let cmds: Vec<String> = p
            .block_commands(NodeId(2), &peers)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(cmds.len(), 4);
        assert!(cmds
            .iter()
            .all(|c| c.starts_with("ip netns exec kj12345n2 ")));
        assert!(cmds.contains(
            &"ip netns exec kj12345n2 nft add rule inet keel_jepsen in ip saddr 10.77.0.11 drop"
                .to_string()
        ));
        assert!(cmds.contains(
            &"ip netns exec kj12345n2 nft add rule inet keel_jepsen out ip daddr 10.77.0.13 drop"
                .to_string()
        ));
        let ipt: Vec<String> = plan(Firewall::Iptables)
            .block_commands(NodeId(2), &peers)
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert!(ipt.contains(
            &"ip netns exec kj12345n2 iptables -A OUTPUT -d 10.77.0.11 -j DROP".to_string()
        ));
        // Heal flushes exactly the harness' own rules.
        let heal: Vec<String> = p
            .heal_commands(NodeId(2))
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            heal,
            [
                "ip netns exec kj12345n2 nft flush chain inet keel_jepsen in",
                "ip netns exec kj12345n2 nft flush chain inet keel_jepsen out"
            ]
        );
    }

    #[test]
    fn teardown_deletes_every_namespace_and_the_bridge() {
        let cmds: Vec<String> = plan(Firewall::Nft)
            .teardown_commands()
            .iter()
            .map(|c| c.join(" "))
            .collect();
        assert_eq!(
            cmds,
            [
                "ip netns del kj12345n1",
                "ip netns del kj12345n2",
                "ip netns del kj12345n3",
                "ip link del kjb12345"
            ]
        );
    }

    #[test]
    fn subnets_parse_strictly() {
        assert_eq!(parse_subnet("10.77.0"), Ok([10, 77, 0]));
        assert_eq!(parse_subnet("10.78.3.0/24"), Ok([10, 78, 3]));
        assert!(parse_subnet("10.77").is_err());
        assert!(parse_subnet("10.77.0.5").is_err());
        assert!(parse_subnet("300.1.1").is_err());
    }
}
