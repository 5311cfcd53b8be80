//! The DPDK layer's ownership rules, on a real EAL (`--no-pci --no-huge`,
//! its own file prefix, a `net_null` device). The EAL starts once per
//! process, so this is one test walking through the rules in order.

use engine::dpdk::{self, Burst, Eal, Mempool, Port, PortSetup};
use std::path::PathBuf;

/// Removes the EAL's runtime directory, also when an assertion fails.
struct RuntimeDir(PathBuf);

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn setup() -> PortSetup {
    PortSetup { rx_queues: 1, tx_queues: 1, rx_descriptors: 64, tx_descriptors: 64, rss: None, promiscuous: false }
}

#[test]
fn dpdk_objects_hold_what_they_depend_on() {
    assert!(dpdk::is_root(), "starts DPDK: run as root");
    let prefix = format!("lbd_t_dpdkobj_{}", std::process::id());
    let _dir = RuntimeDir(PathBuf::from("/var/run/dpdk").join(&prefix));
    let args: Vec<String> = ["lbd-test", "--no-pci", "--no-huge", "-m", "256", "--log-level=error", "-l", "0"]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--file-prefix={prefix}"), "--vdev=net_null0".to_owned(), "--vdev=net_null1".to_owned()])
        .collect();
    let eal = Eal::init(&args).expect("EAL init");
    let pool = Mempool::new(&eal, "t_pool", 2047, 0, -1).expect("mempool");
    let id = Port::find(&eal, "net_null0").expect("net_null0");

    // A port's queues are handed out once.
    let (mut port, rx, tx) = Port::start(&eal, id, &setup(), &pool).expect("first start");
    assert_eq!((rx.len(), tx.len()), (1, 1));
    assert!(port.stop().is_err(), "a port stopped while its queues could still be polled");
    drop((rx, tx));
    port.stop().expect("stop once the queues are gone");
    assert!(
        Port::start(&eal, id, &setup(), &pool).is_err(),
        "a second start handed out a second set of queues while the first port lives"
    );

    // The device closes (and DPDK releases its id) when the last of port
    // and queues goes; a monitor then reads zeros and "down".
    let monitor = port.monitor();
    drop(port);
    assert_eq!(Port::find(&eal, "net_null0"), None, "the port was not closed");
    assert!(!monitor.link_up());
    assert_eq!(monitor.stats(), dpdk::PortStats::default());
    drop(monitor);

    // Queues keep their port open (and with it the pool).
    let id = Port::find(&eal, "net_null1").expect("net_null1");
    let (port, mut rx, tx) = Port::start(&eal, id, &setup(), &pool).expect("start net_null1");
    let monitor = port.monitor();
    drop(port);
    assert_eq!(Port::find(&eal, "net_null1"), Some(id), "the port closed under its queues");
    assert!(monitor.link_up(), "the port stopped under its queues");
    let mut b = Burst::default();
    assert!(rx[0].rx(&mut b, 32) > 0, "net_null receives");
    drop(b);
    assert!(monitor.stats().ipackets > 0);
    drop((rx, tx));
    assert_eq!(Port::find(&eal, "net_null1"), None, "the port outlived its last queue");
    drop(monitor);
    assert_eq!(pool.in_use(), 0, "closing the port returns its descriptors' mbufs");

    // Rings hold the pool and free what they still hold when they go.
    let (mut producer, consumer) = dpdk::spsc_ring(&eal, &pool, "t_ring", 1024, -1).expect("ring");
    let mut b = Burst::default();
    b.push(pool.alloc().expect("mbuf")).expect("room");
    assert_eq!(producer.enqueue(&mut b), 1);
    assert_eq!(pool.in_use(), 1);
    drop((producer, consumer));
    assert_eq!(pool.in_use(), 0);

    // An mbuf outliving its pool: the pool is leaked with a hold on the EAL
    // instead of freed, so the mbuf stays valid and the EAL is not cleaned.
    let mbuf = pool.alloc().expect("mbuf");
    drop(pool);
    drop(mbuf);
    assert!(!eal.cleanup(), "the EAL was cleaned up under an mbuf that was still out");
}
