#include "shim.h"

uint16_t lbd_shim_rx_burst(uint16_t port_id, uint16_t queue_id,
                           struct rte_mbuf **rx_pkts, uint16_t nb_pkts)
{
	return rte_eth_rx_burst(port_id, queue_id, rx_pkts, nb_pkts);
}

uint16_t lbd_shim_tx_burst(uint16_t port_id, uint16_t queue_id,
                           struct rte_mbuf **tx_pkts, uint16_t nb_pkts)
{
	return rte_eth_tx_burst(port_id, queue_id, tx_pkts, nb_pkts);
}

struct rte_mbuf *lbd_shim_pktmbuf_alloc(struct rte_mempool *mp)
{
	return rte_pktmbuf_alloc(mp);
}


void lbd_shim_pktmbuf_free(struct rte_mbuf *m)
{
	rte_pktmbuf_free(m);
}

char *lbd_shim_pktmbuf_append(struct rte_mbuf *m, uint16_t len)
{
	return rte_pktmbuf_append(m, len);
}

unsigned int lbd_shim_ring_enqueue_burst(struct rte_ring *r, void *const *objs,
                                         unsigned int n)
{
	return rte_ring_enqueue_burst(r, objs, n, NULL);
}

unsigned int lbd_shim_ring_dequeue_burst(struct rte_ring *r, void **objs,
                                         unsigned int n)
{
	return rte_ring_dequeue_burst(r, objs, n, NULL);
}

unsigned int lbd_shim_ring_count(const struct rte_ring *r)
{
	return rte_ring_count(r);
}

unsigned int lbd_shim_ring_free_count(const struct rte_ring *r)
{
	return rte_ring_free_count(r);
}

unsigned int lbd_shim_mempool_in_use(const struct rte_mempool *mp)
{
	return rte_mempool_in_use_count(mp);
}

int lbd_shim_errno(void)
{
	return rte_errno;
}


uint64_t lbd_shim_rdtsc(void)
{
	return rte_rdtsc();
}



uint64_t lbd_shim_rss_ipv4_tcp_udp(void)
{
	return RTE_ETH_RSS_IPV4 | RTE_ETH_RSS_NONFRAG_IPV4_TCP | RTE_ETH_RSS_NONFRAG_IPV4_UDP;
}

uint64_t lbd_shim_rss_src_only(void)
{
	return RTE_ETH_RSS_L3_SRC_ONLY | RTE_ETH_RSS_L4_SRC_ONLY;
}

uint64_t lbd_shim_rss_dst_only(void)
{
	return RTE_ETH_RSS_L3_DST_ONLY | RTE_ETH_RSS_L4_DST_ONLY;
}


uint32_t lbd_shim_ring_f_sp_enq(void)
{
	return RING_F_SP_ENQ;
}

uint32_t lbd_shim_ring_f_sc_deq(void)
{
	return RING_F_SC_DEQ;
}
