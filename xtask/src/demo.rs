//! `cargo xtask demo`: a throw-away lab (node namespace with an uplink to an outside
//! host, two container namespaces), the agent running in the node namespace, two
//! containers attached, traffic between them, a container reaching the outside through
//! SNAT, a published port reached from outside (traced hop by hop), and what the
//! datapath counted. Then
//! cluster mode: two nodes on an underlay switch with etcd, a pod on each, reaching
//! each other through the VXLAN overlay, traced across the tunnel. Everything lives in namespaces the demo creates and is removed at the end, on
//! error, and on Ctrl-C. The root namespace is not touched.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use netpath_tests::{
    cluster::{self as lab_cluster, Underlay},
    trace, Lab, NODE_UPLINK_IP, OUTSIDE_IP,
};

use crate::step;

const DEMO_PREFIX: &str = "npdemo";

pub fn run() -> Result<()> {
    crate::preflight::check()?;
    crate::setup::run()?;
    crate::build_netpath()?;
    let lab = start_lab()?;
    let db_ip = attach_containers(&lab)?;
    ping(&lab, db_ip)?;
    tcp_transfer(&lab, db_ip)?;
    to_the_outside(&lab)?;
    published_port(&lab)?;

    step("netpath stats (per-CPU counters summed, read from the pinned maps)");
    print!("{}", lab.netpath_ok(&["stats"]));

    step("removing the lab");
    drop(lab);
    cluster()?;
    let left = netpath_tests::sweep(DEMO_PREFIX);
    step(&format!("done ({left} leftovers removed)"));
    Ok(())
}

/// A fresh lab (no leftovers of an earlier demo, removed on Ctrl-C) with the agent
/// running in its node namespace.
fn start_lab() -> Result<Lab> {
    netpath_tests::sweep(DEMO_PREFIX);
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: removing the lab");
        netpath_tests::sweep(DEMO_PREFIX);
        std::process::exit(130);
    })
    .context("cannot install the Ctrl-C handler")?;

    let mut lab = Lab::with_prefix(DEMO_PREFIX, 2);
    step(&format!(
        "lab {}: node namespace {} (uplink {NODE_UPLINK_IP} -> outside host {} at {OUTSIDE_IP}), containers {} and {}",
        lab.id, lab.node.name, lab.outside.name, lab.containers[0].name, lab.containers[1].name
    ));
    step(&format!(
        "starting `netpath agent` in {} (maps pinned in {})",
        lab.node.name,
        lab.bpffs_dir.display()
    ));
    lab.start_agent();
    Ok(lab)
}

/// Attaches web and db, shows what the agent and web see; db's address.
fn attach_containers(lab: &Lab) -> Result<Ipv4Addr> {
    let mut ips = Vec::new();
    for (name, i) in [("web", 0), ("db", 1)] {
        step(&format!("netpath endpoint add {name} --netns {}", lab.containers[i].path().display()));
        ips.push(lab.add_endpoint(name, i));
    }
    step("netpath endpoint list");
    print!("{}", lab.netpath_ok(&["endpoint", "list"]));

    let web = &lab.containers[0];
    step(&format!("inside {}: ip addr and ip route, as the seed checks them", web.name));
    print!("{}", String::from_utf8_lossy(&web.exec(&["ip", "-br", "addr"]).stdout));
    print!("{}", String::from_utf8_lossy(&web.exec(&["ip", "route"]).stdout));
    Ok(ips[1])
}

fn ping(lab: &Lab, db_ip: Ipv4Addr) -> Result<()> {
    step("web -> db: ping (ARP for the gateway answered by the datapath, echo redirected into db)");
    let ping = lab.containers[0].exec(&["ping", "-n", "-c", "5", "-i", "0.2", &db_ip.to_string()]);
    print!("{}", String::from_utf8_lossy(&ping.stdout));
    if !ping.status.success() {
        bail!("ping from web to db failed; agent log:\n{}", lab.agent_log());
    }
    Ok(())
}

/// 16 MiB from web to db over TCP, timed.
fn tcp_transfer(lab: &Lab, db_ip: Ipv4Addr) -> Result<()> {
    step("web -> db: 16 MiB over TCP");
    let listener = lab.containers[1]
        .run(move || TcpListener::bind(SocketAddrV4::new(db_ip, 5201)))
        .join()
        .expect("listener thread")?;
    let server = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    });
    let started = Instant::now();
    lab.containers[0]
        .run(move || -> std::io::Result<()> {
            let mut s =
                TcpStream::connect_timeout(&SocketAddrV4::new(db_ip, 5201).into(), Duration::from_secs(5))?;
            let chunk = vec![0x5au8; 1 << 16];
            for _ in 0..256 {
                s.write_all(&chunk)?;
            }
            Ok(())
        })
        .join()
        .expect("client thread")?;
    let received = server.join().expect("server thread")?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "db received {received} bytes in {secs:.3} s ({:.2} Gbit/s)",
        received as f64 * 8.0 / secs / 1e9
    );
    Ok(())
}

/// One TCP connection from `client` to `to`, served in `server` on `listen`: the address
/// the server saw the client come from.
fn connection(
    server: &netpath_tests::Netns,
    listen: SocketAddrV4,
    client: &netpath_tests::Netns,
    to: SocketAddrV4,
) -> Result<std::net::SocketAddr> {
    let listener = server.run(move || TcpListener::bind(listen)).join().expect("listener thread")?;
    let accepted = std::thread::spawn(move || -> std::io::Result<std::net::SocketAddr> {
        let (mut s, peer) = listener.accept()?;
        s.write_all(b"hello\n")?;
        Ok(peer)
    });
    client
        .run(move || -> std::io::Result<()> {
            let mut s = TcpStream::connect_timeout(&to.into(), Duration::from_secs(5))?;
            let mut hello = [0u8; 6];
            s.read_exact(&mut hello)
        })
        .join()
        .expect("client thread")?;
    Ok(accepted.join().expect("server thread")?)
}

/// The seed's masquerade: web reaches a host outside the node, which sees the node.
fn to_the_outside(lab: &Lab) -> Result<()> {
    step(&format!(
        "web -> outside host {OUTSIDE_IP}:8000: masqueraded (SNAT) by the datapath, no iptables rule"
    ));
    let to = SocketAddrV4::new(OUTSIDE_IP, 8000);
    let seen = connection(&lab.outside, to, &lab.containers[0], to)?;
    println!(
        "the outside host saw the connection come from {seen} (the node's address, a port of the NAT range)"
    );
    step("netpath nat list: which container flow holds which node port");
    print!("{}", lab.netpath_ok(&["nat", "list"]));
    Ok(())
}

/// The seed's `-p 8080:80`: the outside host reaches web through the node, and web sees
/// the client's own address; traced hop by hop.
fn published_port(lab: &Lab) -> Result<()> {
    step("netpath port add 8080 web:80 (docker's -p 8080:80, DNAT in the datapath)");
    print!("{}", lab.netpath_ok(&["port", "add", "8080", "web:80"]));
    let web: Ipv4Addr = lab.netpath_ok(&["endpoint", "list", "-o", "json"]).parse::<serde_json::Value>()?
        ["endpoints"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["name"] == "web"))
        .and_then(|e| e["ip"].as_str()?.parse().ok())
        .context("web's address")?;
    step(&format!(
        "outside host -> {NODE_UPLINK_IP}:8080, traced: uplink-in (DNAT) and to-container, from-container and uplink-out (reply)"
    ));
    let t = trace::start(
        lab,
        &["--host", &OUTSIDE_IP.to_string(), "--proto", "tcp", "--count", "4", "--duration", "10"],
    );
    let seen = connection(
        &lab.containers[0],
        SocketAddrV4::new(web, 80),
        &lab.outside,
        SocketAddrV4::new(NODE_UPLINK_IP, 8080),
    )?;
    for line in trace::lines(t) {
        println!("{line}");
    }
    println!(
        "web saw the connection come from {seen} (the client's own address: no masquerade on the way in)"
    );
    Ok(())
}

/// Cluster mode: two nodes, a pod on each, across the overlay, traced.
fn cluster() -> Result<()> {
    let mut u = Underlay::switch(DEMO_PREFIX);
    u.start_etcd();
    step(&format!(
        "cluster mode: underlay switch {} in {} with etcd at {}, two nodes on it",
        lab_cluster::SWITCH,
        u.ns.name,
        u.store()
    ));
    let mut nodes = [u.node(0, 1), u.node(1, 1)];
    for (i, node) in nodes.iter_mut().enumerate() {
        let name = format!("n{i}");
        step(&format!(
            "netpath agent --node-name {name} --store {} --cluster-cidr {} (tunnel vxlan) in {}",
            u.store(),
            lab_cluster::CLUSTER,
            node.node.name
        ));
        lab_cluster::start(node, &u, &name);
    }
    step("netpath node list: each node got a subnet of its own from etcd");
    print!("{}", nodes[0].netpath_ok(&["node", "list"]));
    let ips: Vec<Ipv4Addr> = nodes.iter().map(|n| n.add_endpoint("pod", 0)).collect();
    for node in &nodes {
        lab_cluster::wait_for_routes(node, 1);
    }
    step(&format!(
        "pod on n0 ({}) -> pod on n1 ({}): ping, traced on n0 (to-tunnel towards n1, from-tunnel back)",
        ips[0], ips[1]
    ));
    let host = ips[1].to_string();
    let t =
        trace::start(&nodes[0], &["--host", &host, "--proto", "icmp", "--count", "4", "--duration", "10"]);
    let ok = nodes[0].containers[0].ping(ips[1], 1);
    for line in trace::lines(t) {
        println!("{line}");
    }
    if !ok {
        bail!("the pods on n0 and n1 cannot reach each other; agent log:\n{}", nodes[0].agent_log());
    }
    step("removing the cluster");
    Ok(())
}
