'use strict';
// Preload (node --require) for the conformance suite, loaded AFTER
// scripts/peers.sh's loopback.cjs ($LOOPBACK_PRELOAD).
//
// The suite's mock servers bind with `app.listen(0)` and no host, then read
// `server.address().port` on the very next line. loopback.cjs adds the host
// 127.0.0.1 to such calls, and with a host Node binds only after a DNS lookup
// (a nextTick even for an IP literal), so address() is still null there and
// the scenario crashes ("Cannot read properties of null (reading 'port')").
//
// This binds `listen([port][, backlog][, cb])` calls without a host
// synchronously on 127.0.0.1 (BALLAST_LISTEN_HOST), exactly as Node's own
// no-host path does on all interfaces: through net.Server#_listen2, the
// legacy alias of Node's internal setupListenHandle (Node 18-24). Every other
// form (a host, a path, a handle, an options object), a cluster worker, or a
// Node without _listen2 goes to the previous listen (loopback.cjs), which
// still keeps the bind on loopback, just asynchronously.
const net = require('net');
const cluster = require('cluster');
const HOST = process.env.BALLAST_LISTEN_HOST || '127.0.0.1';
const prev = net.Server.prototype.listen;
if (!prev.__ballastListenSync) {
  const isPort = (v) =>
    typeof v === 'number' ||
    (typeof v === 'string' && v.trim() !== '' && Number.isInteger(Number(v)));
  const family = net.isIP(HOST) || 4;
  const patched = function listen(...args) {
    const rest = args.slice();
    const cb = typeof rest[rest.length - 1] === 'function' ? rest.pop() : null;
    const port = rest.length === 0 ? 0 : rest[0];
    const backlog = rest[1];
    const simple =
      (rest.length === 0 || isPort(port) || port === undefined || port === null) &&
      rest.length <= 2 &&
      (backlog === undefined || typeof backlog === 'number');
    if (!simple || this._handle || typeof this._listen2 !== 'function' || !cluster.isPrimary) {
      return prev.apply(this, args);
    }
    const p = Number(port ?? 0);
    if (!Number.isInteger(p) || p < 0 || p > 65535) return prev.apply(this, args);
    if (cb) this.once('listening', cb);
    this._listen2(HOST, p, family, backlog);
    return this;
  };
  patched.__ballastListenSync = true;
  net.Server.prototype.listen = patched;
}
