// Preloaded into every Haraka process (NODE_OPTIONS=--require, inherited by
// the cluster workers) so that no DNS query leaves the machine: every
// resolver Node makes (the default one, dns.promises', and each
// `new Resolver()` a plugin builds at load) asks only the bench's loopback
// DNS server, BENCH_DNS=127.0.0.1:PORT. Case (f) also sets BENCH_PUBLIC=1:
// the bench's only client is 127.0.0.1, which Haraka marks private (and
// local) and its dns-list, helo and spf checks would then skip; the other
// servers check it.
'use strict'

const dns = require('node:dns')
const servers = [process.env.BENCH_DNS]
if (!/^127\.\d+\.\d+\.\d+:\d+$/.test(servers[0] || '')) {
  throw new Error('BENCH_DNS must be 127.x.y.z:port')
}

dns.setServers(servers)
dns.promises.setServers(servers)
for (const ns of [dns, dns.promises]) {
  const Base = ns.Resolver
  ns.Resolver = class extends Base {
    constructor(...args) {
      super(...args)
      this.setServers(servers)
    }
  }
}

if (process.env.BENCH_PUBLIC === '1') {
  const where = { paths: [process.env.BENCH_HARAKA_PREFIX] }
  const nu = require(require.resolve('haraka-net-utils', where))
  nu.is_private_ip = () => false
  nu.is_local_ip = () => false
  // dns.reverse (Haraka's PTR lookup of every client) goes through c-ares'
  // getHostByAddr, which answers 127.0.0.1 from /etc/hosts; a real client
  // is never there, so ask the DNS server for the PTR record, as the others.
  const net = require('node:net')
  const ptr = new dns.Resolver()
  const reverse = dns.reverse
  dns.reverse = (ip, cb) => {
    if (!net.isIPv4(ip)) return reverse(ip, cb)
    ptr.resolvePtr(`${ip.split('.').reverse().join('.')}.in-addr.arpa`, cb)
  }
}
