/*
 * C shim over DPDK's `static inline` fast-path functions and per-lcore
 * macros, which bindgen cannot bind. Each function is a one-line forward so
 * the optimiser in the C compiler keeps the DPDK implementation inline here;
 * Rust pays one direct call per burst, not per packet.
 */
#ifndef LBD_DPDK_SHIM_H
#define LBD_DPDK_SHIM_H

#include <stdint.h>

#include <rte_config.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_cycles.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_version.h>
#include <rte_log.h>

uint16_t lbd_shim_rx_burst(uint16_t port_id, uint16_t queue_id,
                           struct rte_mbuf **rx_pkts, uint16_t nb_pkts);
uint16_t lbd_shim_tx_burst(uint16_t port_id, uint16_t queue_id,
                           struct rte_mbuf **tx_pkts, uint16_t nb_pkts);

struct rte_mbuf *lbd_shim_pktmbuf_alloc(struct rte_mempool *mp);
void lbd_shim_pktmbuf_free(struct rte_mbuf *m);
char *lbd_shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len);

unsigned int lbd_shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs,
                                         unsigned int n);
unsigned int lbd_shim_ring_dequeue_burst(struct rte_ring *r, void **objs,
                                         unsigned int n);
unsigned int lbd_shim_ring_count(const struct rte_ring *r);
unsigned int lbd_shim_ring_free_count(const struct rte_ring *r);

unsigned int lbd_shim_mempool_in_use(const struct rte_mempool *mp);

int lbd_shim_errno(void);
uint64_t lbd_shim_rdtsc(void);

/* Flag values built with RTE_BIT64(), which bindgen does not evaluate. */
uint64_t lbd_shim_rss_ipv4_tcp_udp(void);
uint64_t lbd_shim_rss_src_only(void);
uint64_t lbd_shim_rss_dst_only(void);
uint32_t lbd_shim_ring_f_sp_enq(void);
uint32_t lbd_shim_ring_f_sc_deq(void);

#endif
