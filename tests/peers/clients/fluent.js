// Sends a fixed set of records with npm's fluent-logger in one event mode, each acknowledged
// (requireAckResponse: the logger waits for {"ack": chunk} and fails without it):
//
//   NODE_PATH=<dir>/node/node_modules node fluent.js PORT MODE TAG N
//
// MODE is Message, PackedForward or CompressedPackedForward. Prints the records it sent as JSON
// ([{time_ns, record}]); exits 1 if any emit failed (no ack within the timeout, connection
// closed).
'use strict';
const logger = require('fluent-logger');

const [port, mode, tag, n] = [Number(process.argv[2]), process.argv[3], process.argv[4], Number(process.argv[5])];
const sender = logger.createFluentSender(null, {
  host: '127.0.0.1',
  port,
  timeout: 10.0,
  reconnectInterval: 600000,
  requireAckResponse: true,
  ackResponseTimeout: 10000,
  eventMode: mode,
  flushInterval: 10,
});
const sent = [];
let failed = 0;
sender.on('error', (e) => {
  failed += 1;
  console.error(`fluent-logger error: ${e}`);
});
const emits = [];
for (let i = 0; i < n; i += 1) {
  const seconds = 1700000000 + i;
  const nanos = 123456789;
  const time = new logger.EventTime(seconds, nanos);
  const record = { log: `line ${i} of ${tag}`, seq: i, level: i % 2 ? 'warn' : 'info', ok: i % 3 === 0, ratio: 0.5, nested: { k: 'v', list: [1, 'two'] } };
  sent.push({ time_ns: `${seconds}${String(nanos).padStart(9, '0')}`, record });
  emits.push(new Promise((resolve) => {
    sender.emit(tag, record, time, (err) => {
      if (err) {
        failed += 1;
        console.error(`emit ${i}: ${err}`);
      }
      resolve();
    });
  }));
}
Promise.all(emits).then(() => {
  sender.end(null, null, () => {
    console.log(JSON.stringify(sent));
    process.exit(failed ? 1 : 0);
  });
});
