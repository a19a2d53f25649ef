// A second implementation of the Vigil agent's side of the wire, written from docs/wire.md
// and proto/vigil.proto only (no Python). tests/conformance/test_node_client.py runs it:
//
//   node client.js '{"proto": ".../vigil.proto", "enrol": "127.0.0.1:P", "stream": "...",
//                    "ca": ".../ca.pem", "token": "vgl_..."}'
//
// It prints one JSON line per check ({"check": name, "ok": true|false, ...}) and exits 1 if
// any check failed.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const cfg = JSON.parse(process.argv[2]);
const def = protoLoader.loadSync(cfg.proto, {
  keepCase: true, longs: String, enums: String, defaults: true, oneofs: true,
});
const v1 = grpc.loadPackageDefinition(def).vigil.v1;
// docs/wire.md section 1: keepalive every 30 s, never below the server's 10 s minimum
const OPTIONS = {
  'grpc.keepalive_time_ms': 30000, 'grpc.keepalive_timeout_ms': 10000,
  'grpc.keepalive_permit_without_calls': 1,
  'grpc.max_send_message_length': 8 << 20, 'grpc.max_receive_message_length': 8 << 20,
};
const caPem = fs.readFileSync(cfg.ca);
let failed = 0;

function report(check, ok, detail) {
  if (!ok) failed += 1;
  console.log(JSON.stringify({ check, ok: Boolean(ok), detail: detail ?? null }));
}

function retryHint(err) {
  const v = err && err.metadata ? err.metadata.get('retry-after-ms') : [];
  return v.length ? String(v[0]) : null;
}

// -- identity (docs/wire.md section 2) ----------------------------------------------------
function base32(buf) {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let bits = 0, value = 0, out = '';
  for (const byte of buf) {
    value = (value << 8) | byte; bits += 8;
    while (bits >= 5) { out += alphabet[(value >>> (bits - 5)) & 31]; bits -= 5; }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

function der(tag, body) {
  const n = body.length;
  let len;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes = [];
    for (let m = n; m > 0; m >>= 8) bytes.unshift(m & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}

function csrPem(privateKey, spki) {
  // PKCS#10 by hand: Node's crypto has no CSR builder.
  const cn = der(0x30, Buffer.concat([der(0x06, Buffer.from('550403', 'hex')),
    der(0x0c, Buffer.from('node-conformance'))]));
  const info = der(0x30, Buffer.concat([Buffer.from('020100', 'hex'),
    der(0x30, der(0x31, cn)), spki, Buffer.from('a000', 'hex')]));
  const sig = crypto.sign('sha256', info, privateKey);  // DER ECDSA signature
  const alg = der(0x30, der(0x06, Buffer.from('2a8648ce3d040302', 'hex')));
  const csr = der(0x30, Buffer.concat([info, alg, der(0x03, Buffer.concat([Buffer.from([0]), sig]))]));
  const b64 = csr.toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN CERTIFICATE REQUEST-----\n${b64}\n-----END CERTIFICATE REQUEST-----\n`;
}

// -- bundles (docs/wire.md section 4) -----------------------------------------------------
function canon(v) {
  if (Array.isArray(v)) return '[' + v.map(canon).join(',') + ']';
  if (v !== null && typeof v === 'object') {
    return '{' + Object.keys(v).sort().map((k) => JSON.stringify(k) + ':' + canon(v[k])).join(',') + '}';
  }
  return JSON.stringify(v);
}

function verifyBundle(bytes, publicPem) {
  const env = JSON.parse(Buffer.from(bytes).toString('utf8'));
  if (env.format !== 'vigil-rules-bundle/1') return 'bad format';
  const key = crypto.createPublicKey(publicPem);
  const ok = crypto.verify(null, Buffer.from(env.payload, 'utf8'), key,
    Buffer.from(env.signature, 'base64'));
  if (!ok) return 'bad signature';
  const payload = JSON.parse(env.payload);
  const rules = payload.rules.slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const hash = crypto.createHash('sha256').update(canon(rules), 'utf8').digest('hex');
  if (hash !== payload.content_hash) return `content hash ${hash} != ${payload.content_hash}`;
  return payload;
}

// -- helpers --------------------------------------------------------------------------------
function capture(fields) {
  const now = String(Date.now());
  return {
    id: `node-${crypto.randomUUID()}`, os_user: 'pupil-node', time_unix_ms: now,
    last_time_unix_ms: now, count: 1, source: 'SOURCE_KEYS', rule_id: 'wire.self_harm',
    category: 'self_harm', severity: 4, match: 'wire test phrase',
    context: 'typed a wire test phrase here', window_title: 'Notepad', process: 'notepad',
    match_kind: 'MATCH_KIND_EXACT', rules_version: '1', hostname: 'node-pc', ...fields,
  };
}

class Stream {
  constructor(client) {
    this.call = client.Connect();
    this.messages = [];
    this.waiters = [];
    this.ended = new Promise((resolve) => {
      this.call.on('error', (err) => resolve(err));
      this.call.on('end', () => resolve(null));
    });
    this.call.on('data', (msg) => { this.messages.push(msg); this.poke(); });
    this.ended.then(() => this.poke());
  }
  poke() { for (const w of this.waiters.splice(0)) w(); }
  send(msg) { this.call.write(msg); }
  // wait (on events, with a timeout) until cond(messages) returns something truthy
  waitFor(cond, what, ms = 20000) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      const check = () => {
        const v = cond(this.messages);
        if (v) { clearTimeout(timer); resolve(v); } else this.waiters.push(check);
      };
      check();
    });
  }
}

async function main() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  const deviceId = 'd-' + base32(crypto.createHash('sha256').update(spki).digest()).slice(0, 26);
  const enrolment = new v1.Enrollment(cfg.enrol, grpc.credentials.createSsl(caPem), OPTIONS);
  const enroll = (req) => new Promise((resolve) => {
    enrolment.Enroll(req, { deadline: Date.now() + 20000 }, (err, resp) => resolve({ err, resp }));
  });

  // 1. a refused enrolment: status and retry hint
  const bad = await enroll({ token: 'vgl_not_a_token', csr_pem: Buffer.from(csrPem(privateKey, spki)) });
  report('enrol_bad_token_permission_denied',
    bad.err && bad.err.code === grpc.status.PERMISSION_DENIED && retryHint(bad.err) === 'never',
    bad.err ? `${bad.err.code} ${retryHint(bad.err)}` : 'accepted');

  // 2. enrol; the collector derives the same device id
  const { err, resp } = await enroll({ token: cfg.token, csr_pem: Buffer.from(csrPem(privateKey, spki)),
    hostname: 'node-pc', os: 'node', agent_version: 'conformance-1' });
  report('enrol', !err && resp.device_id === deviceId, err ? err.message : resp.device_id);
  if (err) return;
  enrolment.close();

  const keyPem = privateKey.export({ type: 'pkcs8', format: 'pem' });
  const mtls = grpc.credentials.createSsl(caPem, Buffer.from(keyPem), resp.client_cert_pem);
  const collector = new v1.Collector(cfg.stream, mtls, OPTIONS);

  // 3. heartbeat first; config and the active bundle come back; verify the bundle
  const s = new Stream(collector);
  s.send({ heartbeat: { agent_version: 'conformance-1', rules_version: '0', os_user: 'pupil-node',
    hostname: 'node-pc', os: 'node' } });
  const config = await s.waitFor((m) => m.find((x) => x.body === 'config'), 'AgentConfig');
  report('config_after_heartbeat', config.config.heartbeat_seconds > 0, config.config.group);
  const rules = await s.waitFor((m) => m.find((x) => x.body === 'rules'), 'RuleBundle');
  const payload = verifyBundle(rules.rules.bundle, resp.rules_public_key_pem);
  report('bundle_signature_and_content_hash', typeof payload === 'object'
    && String(payload.version) === rules.rules.version, typeof payload === 'object' ? payload.version : payload);
  const tampered = Buffer.from(rules.rules.bundle).toString('utf8').replace('wire test phrase', 'wire test phrasE');
  report('tampered_bundle_refused', verifyBundle(Buffer.from(tampered), resp.rules_public_key_pem) === 'bad signature');
  s.send({ rules_ack: { version: rules.rules.version, applied: true, error: '' } });

  // 4. captures: one stored, one refused with a reason and "do not retry"
  const good = capture({});
  const unknown = capture({ rule_id: 'no.such.rule' });
  s.send({ captures: { captures: [good, unknown] } });
  const ack = await s.waitFor((m) => m.find((x) => x.body === 'ack'), 'Ack');
  const rej = ack.ack.rejected.find((r) => r.id === unknown.id);
  report('capture_acked', ack.ack.stored_ids.includes(good.id), ack.ack.stored_ids);
  report('unknown_rule_rejected', rej && rej.reason === 'unknown_rule' && rej.retry_after_ms === 0
    && rej.index === 1, rej || null);

  // 5. a model the collector never published: NOT_FOUND, do not retry
  const fetchErr = await new Promise((resolve) => {
    const call = collector.FetchModel({ digest: '0'.repeat(64), file: 'model.onnx', offset: '0' });
    call.on('data', () => {});
    call.on('error', resolve);
    call.on('end', () => resolve(null));
  });
  report('fetch_unknown_model_not_found', fetchErr && fetchErr.code === grpc.status.NOT_FOUND
    && retryHint(fetchErr) === 'never', fetchErr ? `${fetchErr.code} ${retryHint(fetchErr)}` : 'ok');

  // 6. one stream per device, the newest wins: the old one ends ABORTED with a hint
  const newer = new Stream(collector);
  newer.send({ heartbeat: { agent_version: 'conformance-1', rules_version: rules.rules.version,
    os_user: 'pupil-node', hostname: 'node-pc', os: 'node' } });
  const ended = await Promise.race([s.ended, new Promise((r) => setTimeout(() => r('timeout'), 20000))]);
  report('replaced_stream_aborted', ended && ended.code === grpc.status.ABORTED
    && Number(retryHint(ended)) >= 1000, ended && ended.code !== undefined ? `${ended.code} ${retryHint(ended)}` : String(ended));
  await newer.waitFor((m) => m.find((x) => x.body === 'config'), 'config on the newer stream');
  newer.call.end();
  await newer.ended;
  collector.close();
}

main().then(() => process.exit(failed ? 1 : 0), (e) => {
  report('unexpected_error', false, String(e && e.stack ? e.stack : e));
  process.exit(1);
});
