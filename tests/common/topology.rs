//! The namespace testbed of `testbed/topology.sh` as a test guard: built
//! on creation, torn down on drop (also when the test fails).

use super::{device_counter, repo, run, unique, Lbd, Stopped, TempDir};
use std::process::{Command, Output};

/// A testbed topology: a client namespace, lbd's two ports, three backend
/// namespaces behind a bridge (see `testbed/topology.sh`).
pub struct Topology {
    pub name: String,
    /// lbd's ports live in namespace `NAME-lb` (and lbd runs there), so
    /// its kernel exception interfaces can be on.
    pub lb_netns: bool,
}

impl Topology {
    /// lbd's ports in the root namespace; exception interfaces off.
    pub fn up() -> Topology {
        Topology::build(false)
    }

    /// lbd's ports, lbd and its exception interfaces in namespace `NAME-lb`.
    pub fn up_with_lb_netns() -> Topology {
        Topology::build(true)
    }

    fn build(lb_netns: bool) -> Topology {
        let name = unique("t");
        assert!(name.len() <= 8);
        let t = Topology { name, lb_netns };
        let mut cmd = Command::new(repo().join("testbed/topology.sh"));
        cmd.arg("up").arg(&t.name);
        if lb_netns {
            cmd.arg("lbns");
        }
        run(&mut cmd);
        t
    }

    /// The full name of namespace `NAME-<role>` (client, sw, be1..3, lb).
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.name)
    }

    /// Runs `args` in namespace `NAME-<role>`.
    pub fn exec(&self, role: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {args:?} in {}: {e}", self.ns(role)))
    }

    /// Runs `args` in namespace `NAME-<role>`; its stdout, which it must
    /// succeed.
    pub fn exec_ok(&self, role: &str, args: &[&str]) -> String {
        let out = self.exec(role, args);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?} in {} failed: {}{}",
            self.ns(role),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    pub fn client(&self, args: &[&str]) -> Output {
        self.exec("client", args)
    }

    pub fn client_ok(&self, args: &[&str]) -> String {
        self.exec_ok("client", args)
    }

    /// `n` connections one after another from the client to the VIP's
    /// port 80 (testbed/conns.py seq), from `sources` in turn or from the
    /// client's own address: the (source, backend) of each. A connection
    /// that fails fails the call.
    pub fn sequential_connections(&self, n: usize, sources: &[&str]) -> Vec<(String, String)> {
        let py = repo().join("testbed/conns.py").display().to_string();
        let count = n.to_string();
        let mut args = vec!["/usr/bin/python3", py.as_str(), "seq", "10.0.0.100", "80", count.as_str()];
        args.extend_from_slice(sources);
        let out = self.client_ok(&args);
        out.lines()
            .map(|l| {
                let (src, backend) = l.split_once(' ').unwrap_or_else(|| panic!("conns.py said {l:?}"));
                (src.to_owned(), backend.to_owned())
            })
            .collect()
    }

    /// Frames the kernel received on lbd's veth ends (`NAME-e`, `NAME-i`,
    /// in the root namespace: not for [`Topology::up_with_lb_netns`]):
    /// every one is offered to lbd's af_packet socket or XDP program.
    pub fn lbd_veths_rx(&self) -> u64 {
        ["e", "i"]
            .iter()
            .map(|s| {
                let p = format!("/sys/class/net/{}-{s}/statistics/rx_packets", self.name);
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}")).trim().parse::<u64>().unwrap()
            })
            .sum()
    }

    /// Overflows lbd's RX ring: with lbd stopped (SIGSTOP), `datagrams`
    /// UDP datagrams from the client to the VIP; then waits until every
    /// frame the kernel gave lbd's veths meanwhile is either received or
    /// missed by lbd's ports (failing after 30 s), and returns how many
    /// were missed. The client must know the VIP's MAC already.
    pub fn overflow_stopped_lbd(&self, lbd: &mut Lbd, datagrams: u32) -> u64 {
        let before = lbd.stats_now();
        let kernel_before = self.lbd_veths_rx();
        {
            let _stopped = Stopped::new(lbd.pid());
            let send = format!(
                "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor _ in range({datagrams}): s.sendto(b'x', ('10.0.0.100', 9))"
            );
            self.client_ok(&["/usr/bin/python3", "-c", &send]);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let s = lbd.stats_now();
            let k = self.lbd_veths_rx() - kernel_before;
            let d = device_counter(&s, "ipackets") - device_counter(&before, "ipackets");
            let m = device_counter(&s, "imissed") - device_counter(&before, "imissed");
            if k == d + m {
                return m;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the kernel received {k} frames on lbd's veths, lbd {d}, missed {m}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// The topology's lbd configuration (`topology.sh config`).
    pub fn config(&self, workers: usize, prefix: &str) -> String {
        run(Command::new(repo().join("testbed/topology.sh")).args(["config", &self.name, &workers.to_string(), prefix]))
    }

    /// Starts lbd with the topology's configuration, edited by `edit`
    /// (e.g. to add health checks), in `dir`, in the namespace its ports
    /// live in.
    pub fn start_lbd_with(&self, workers: usize, dir: &TempDir, edit: impl FnOnce(String) -> String) -> Lbd {
        let prefix = unique("lbdn");
        let path = dir.join("lbd.yaml");
        std::fs::write(&path, edit(self.config(workers, &prefix))).expect("write config");
        let ns = self.ns("lb");
        Lbd::start_in(self.lb_netns.then_some(ns.as_str()), &path, dir.path(), &prefix)
    }

    pub fn start_lbd(&self, workers: usize, dir: &TempDir) -> Lbd {
        self.start_lbd_with(workers, dir, |c| c)
    }

    /// The control socket of the lbd the configuration describes.
    pub fn socket(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("/run/lbd-testbed/{}/lbd.sock", self.name))
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("testbed/topology.sh")).arg("down").arg(&self.name).status();
    }
}
