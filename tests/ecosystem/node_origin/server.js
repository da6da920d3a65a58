// A Node.js origin written with @fanoutio/serve-grip and @fanoutio/grip, the way their READMEs
// show it (plain node:http, the middleware run per request as in the Next.js example), for
// pushpin-tx's ecosystem tests.
//
//   node server.js
//
// It listens on a free loopback port and prints "origin port N", then reads one line from
// stdin: the GRIP_URL of the proxy's control API (the proxy routes here, so its ports are known
// only after ours). It then builds the ServeGrip middleware (gripVerifyKey: only requests with a
// valid Grip-Sig from the proxy's sig_key count as proxied; others get 501) and prints
// "origin ready".
//
//   GET  /stream        hold a stream on channel "news", "[stream open]\n" first
//   GET  /longpoll      hold a long-poll on channel "poll"; on timeout "no news\n"
//   POST /chat          WebSocket-over-HTTP: accept and subscribe to "chat"; every text
//                       message is published to "chat" as "<meta user>: <text>"
//   POST /publish?channel=C&format=stream|response|ws&text=T
//                       publish T on C with the @fanoutio/grip Publisher, then answer "ok"

import http from 'node:http';
import readline from 'node:readline';
import { ServeGrip } from '@fanoutio/serve-grip';
import { HttpResponseFormat, HttpStreamFormat, WebSocketMessageFormat } from '@fanoutio/grip';

const SIG_KEY = 'changeme'; // the stock pushpin.conf's sig_key

let serveGrip = null;

async function handle(req, res) {
  const url = new URL(req.url, 'http://origin');
  if (url.pathname === '/publish') { // the test calls this directly, not through the proxy
    const publisher = serveGrip.getPublisher();
    const channel = url.searchParams.get('channel');
    const text = url.searchParams.get('text');
    const format = url.searchParams.get('format');
    if (format === 'stream') {
      await publisher.publishHttpStream(channel, text);
    } else if (format === 'response') {
      await publisher.publishFormats(channel, new HttpResponseFormat({ body: text }));
    } else {
      await publisher.publishFormats(channel, new WebSocketMessageFormat(text));
    }
    res.end('ok\n');
    return;
  }
  if (!(await serveGrip.run(req, res))) {
    return; // the middleware answered (501 when not proxied)
  }
  if (url.pathname === '/stream') {
    const instruct = res.grip.startInstruct();
    instruct.addChannel('news');
    instruct.setHoldStream();
    res.setHeader('Content-Type', 'text/plain');
    res.end('[stream open]\n');
    return;
  }
  if (url.pathname === '/longpoll') {
    const instruct = res.grip.startInstruct();
    instruct.addChannel('poll');
    instruct.setHoldLongPoll(20);
    res.setHeader('Content-Type', 'text/plain');
    res.end('no news\n');
    return;
  }
  if (url.pathname === '/chat' && req.grip.wsContext) {
    const ws = req.grip.wsContext;
    if (ws.isOpening()) {
      ws.accept();
      ws.subscribe('chat');
    }
    const user = ws.meta.user || 'someone';
    while (ws.canRecv()) {
      const message = ws.recv();
      if (message == null) { // the client closed
        ws.close();
        break;
      }
      if (message.startsWith('/nick ')) {
        ws.meta.user = message.slice(6);
        ws.send(`you are ${ws.meta.user}`);
      } else {
        await serveGrip.getPublisher().publishFormats(
          'chat', new WebSocketMessageFormat(`${ws.meta.user || user}: ${message}`));
      }
    }
    res.end();
    return;
  }
  res.statusCode = 404;
  res.end('not found\n');
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => {
    console.error(err);
    res.statusCode = 500;
    res.end('origin error\n');
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(`origin port ${server.address().port}`);
  const lines = readline.createInterface({ input: process.stdin });
  lines.once('line', (gripUrl) => {
    serveGrip = new ServeGrip({
      grip: gripUrl.trim(),
      gripVerifyKey: SIG_KEY,
      gripProxyRequired: true,
    });
    console.log('origin ready');
  });
});

process.on('SIGTERM', () => {
  server.close();
  process.exit(0);
});
