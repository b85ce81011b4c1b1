// tern self-test pages: /check (relay on each transport, then a call with itself through
// the relay) and /call (a two-person room signaled through tern).
//
// Plain script, no build step, served by tern from /assets/selftest.js. Each page names
// itself with <body data-page="check|call">; there is no inline script, so the pages
// work under a strict Content-Security-Policy (script-src 'self').
//
// For tests, /check publishes window.selftestResult and /call window.callState.
'use strict';

(() => {
  const TRANSPORTS = ['udp', 'tcp', 'tls'];
  const TRANSPORT_NAMES = { udp: 'UDP', tcp: 'TCP', tls: 'TLS (turns:)' };
  const GATHER_MS = 10_000;
  const CALL_MS = 20_000;
  const ECHO_COUNT = 20;
  const params = new URLSearchParams(location.search);

  // ---------------------------------------------------------------------------------
  // Shared helpers.

  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function setText(id, text) {
    $(id).textContent = text;
  }

  // An element with text content only: nothing from the network is parsed as HTML.
  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  // Resolves like `promise`, or rejects with "<what> did not finish within N s".
  function withTimeout(promise, ms, what) {
    let timer;
    const expired = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${Math.round(ms / 1000)} s`)), ms);
    });
    return Promise.race([promise, expired]).finally(() => clearTimeout(timer));
  }

  // A relative URL (so the pages also work behind a path prefix) carrying the token.
  function apiUrl(path, extra = {}) {
    const url = new URL(path, location.href);
    url.search = new URLSearchParams({ token: params.get('token') || '', ...extra }).toString();
    return url;
  }

  // Fresh TURN credentials and this server's TURN URLs (see docs/selftest.md).
  async function fetchIce() {
    let res;
    try {
      res = await fetch(apiUrl('api/ice'), { cache: 'no-store' });
    } catch (e) {
      throw new Error(`cannot reach the self-test server (${e.message})`);
    }
    if (res.status === 403) throw new Error('wrong link: the server did not accept the token in this link');
    if (!res.ok) throw new Error(`the server answered ${res.status} to the credential request`);
    return res.json();
  }

  function iceConfig(ice, urls, relayOnly) {
    return {
      iceServers: [{ urls, username: ice.username, credential: ice.credential }],
      iceTransportPolicy: relayOnly ? 'relay' : 'all',
    };
  }

  // Parses an ICE candidate line ("candidate:1 1 udp 41885695 203.0.113.5 50000 typ relay ...").
  function parseCandidate(line) {
    const f = (line || '').replace(/^a=/, '').split(/\s+/);
    const typ = f.indexOf('typ');
    if (f.length < 8 || typ < 0) return null;
    return { protocol: f[2].toLowerCase(), address: f[4], port: Number(f[5]), type: f[typ + 1] };
  }

  function hostPort(address, port) {
    return address.includes(':') ? `[${address}]:${port}` : `${address}:${port}`;
  }

  function ipv4Parts(ip) {
    const m = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
    return m ? m.slice(1).map(Number) : null;
  }

  // Addresses nobody on another network can reach: RFC 1918, loopback, CGNAT
  // (100.64/10), link-local, and their IPv6 counterparts.
  function isPrivateAddress(ip) {
    const v4 = ipv4Parts(ip);
    if (v4) {
      const [a, b] = v4;
      return a === 10 || a === 127 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168)
        || (a === 100 && b >= 64 && b <= 127) || (a === 169 && b === 254);
    }
    const v6 = ip.toLowerCase().replace(/^\[|\]$/g, '');
    return v6 === '::1' || /^f[cd]/.test(v6) || /^fe[89ab]/.test(v6);
  }

  // Whether the browser reached this page by a name or address other networks use.
  function pageHostIsPublic() {
    const host = location.hostname.replace(/^\[|\]$/g, '');
    if (host === 'localhost' || host.endsWith('.localhost')) return false;
    const literal = ipv4Parts(host) || host.includes(':');
    return literal ? !isPrivateAddress(host) : true;
  }

  // The candidate pair `pc` sends on: local/remote candidate types, the protocol of the
  // path, and how this browser reaches its TURN server (relayProtocol), with counters.
  async function selectedPair(pc) {
    const stats = await pc.getStats();
    let pair = null;
    stats.forEach((s) => {
      if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    });
    if (!pair) {
      // Firefox marks the pair itself instead of naming it on the transport.
      stats.forEach((s) => {
        if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s;
      });
    }
    if (!pair) return null;
    const local = stats.get(pair.localCandidateId) || {};
    const remote = stats.get(pair.remoteCandidateId) || {};
    return {
      local: local.candidateType,
      remote: remote.candidateType,
      protocol: local.protocol,
      relayProtocol: local.relayProtocol || null,
      localAddress: local.address ? hostPort(local.address, local.port) : null,
      remoteAddress: remote.address ? hostPort(remote.address, remote.port) : null,
      rttMs: pair.currentRoundTripTime !== undefined ? Math.round(pair.currentRoundTripTime * 1000) : null,
      bytesSent: pair.bytesSent || 0,
      bytesReceived: pair.bytesReceived || 0,
    };
  }

  // Totals of the inbound video streams of `pc`.
  async function inboundVideo(pc) {
    const stats = await pc.getStats();
    const video = { framesDecoded: 0, bytesReceived: 0 };
    stats.forEach((s) => {
      if (s.type === 'inbound-rtp' && (s.kind || s.mediaType) === 'video') {
        video.framesDecoded += s.framesDecoded || 0;
        video.bytesReceived += s.bytesReceived || 0;
      }
    });
    return video;
  }

  function describePair(pair) {
    if (!pair) return '–';
    const via = pair.relayProtocol ? `, to the TURN server over ${pair.relayProtocol.toUpperCase()}` : '';
    return `${pair.local} ↔ ${pair.remote} (${pair.protocol}${via})`;
  }

  function formatBytes(n) {
    if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`;
    if (n >= 1e3) return `${(n / 1e3).toFixed(1)} kB`;
    return `${n} B`;
  }

  // A generated video track: a moving bar and a clock on a canvas, for browsers without
  // a camera (or when the camera is refused).
  function testPattern() {
    const canvas = document.createElement('canvas');
    canvas.width = 320;
    canvas.height = 240;
    const ctx = canvas.getContext('2d');
    const t0 = performance.now();
    const draw = () => {
      const t = (performance.now() - t0) / 1000;
      ctx.fillStyle = '#1d3b72';
      ctx.fillRect(0, 0, 320, 240);
      ctx.fillStyle = '#f2b705';
      ctx.fillRect(((t * 80) % 360) - 40, 0, 40, 240);
      ctx.fillStyle = '#fff';
      ctx.font = '28px sans-serif';
      ctx.fillText(`tern ${t.toFixed(1)} s`, 20, 130);
    };
    draw();
    // A timer rather than requestAnimationFrame: it keeps running in background tabs.
    const timer = setInterval(draw, 1000 / 15);
    const stream = canvas.captureStream(15);
    return {
      stream,
      stop() {
        clearInterval(timer);
        stream.getTracks().forEach((t) => t.stop());
      },
    };
  }

  // Plays a <video>; when autoplay with sound is refused, plays it muted and shows `unmute`.
  function play(video, unmuteButton) {
    video.play().catch(() => {
      if (!unmuteButton) return;
      video.muted = true;
      video.play().catch(() => {});
      unmuteButton.hidden = false;
      unmuteButton.onclick = () => {
        video.muted = false;
        unmuteButton.hidden = true;
      };
    });
  }

  // ---------------------------------------------------------------------------------
  // /check: relay on each transport, a loopback call, a verdict.

  // Gathers with only `url` and relay-only policy: resolves with the first relay candidate,
  // or the ICE errors once gathering ends or `ms` passes.
  function gatherRelay(ice, url, ms) {
    const pc = new RTCPeerConnection(iceConfig(ice, [url], true));
    const t0 = performance.now();
    const errors = [];
    return new Promise((resolve) => {
      const finish = (outcome) => {
        clearTimeout(timer);
        pc.close();
        const error = outcome.ok ? null : outcome.error || describeIceErrors(errors, ms);
        const codes = errors.map((e) => e.errorCode);
        resolve({ ms: Math.round(performance.now() - t0), relay: null, ...outcome, error, errorCodes: codes });
      };
      const timer = setTimeout(() => finish({ ok: false, timedOut: true }), ms);
      pc.onicecandidateerror = (e) => errors.push({ errorCode: e.errorCode, errorText: e.errorText });
      pc.onicecandidate = (e) => {
        const c = e.candidate && parseCandidate(e.candidate.candidate);
        if (c && c.type === 'relay') {
          finish({ ok: true, relay: hostPort(c.address, c.port), relayAddress: c.address });
        } else if (!e.candidate) {
          // End of gathering without a relay; the error event may still be queued.
          setTimeout(() => finish({ ok: false }), 50);
        }
      };
      pc.createDataChannel('probe');
      pc.createOffer()
        .then((offer) => pc.setLocalDescription(offer))
        .catch((e) => finish({ ok: false, error: `cannot start ICE: ${e.message}` }));
    });
  }

  function describeIceErrors(errors, ms) {
    if (!errors.length) return `no answer from the server within ${ms / 1000} s`;
    const seen = new Set(errors.map((e) => `${e.errorCode} ${e.errorText || ''}`.trim()));
    return [...seen].join('; ');
  }

  // Two relay-only peer connections in this page: a data channel echo and a generated
  // video track, through `urls` (the transports that gave a relay candidate).
  async function loopbackCall(ice, urls, ms) {
    const deadline = performance.now() + ms;
    const left = () => Math.max(1, deadline - performance.now());
    const a = new RTCPeerConnection(iceConfig(ice, urls, true));
    const b = new RTCPeerConnection(iceConfig(ice, urls, true));
    const pattern = testPattern();
    const result = { ok: false, rttMs: null, bytes: null, framesDecoded: 0, pair: null, error: null };
    try {
      trickle(a, b);
      trickle(b, a);
      pattern.stream.getTracks().forEach((t) => a.addTrack(t, pattern.stream));
      b.ontrack = (e) => showVideo(e.streams[0] || new MediaStream([e.track]));
      b.ondatachannel = (e) => {
        e.channel.onmessage = (m) => e.channel.send(m.data);
      };
      const channel = a.createDataChannel('echo');
      const failed = connectionFailed(a, b);
      // Only the races below consume it; after the call it must not count as unhandled.
      failed.catch(() => {});
      await a.setLocalDescription(await a.createOffer());
      await b.setRemoteDescription(a.localDescription);
      await b.setLocalDescription(await b.createAnswer());
      await a.setRemoteDescription(b.localDescription);
      await withTimeout(Promise.race([opened(channel), failed]), left(), 'the connection through the relay');
      result.rttMs = await withTimeout(Promise.race([echo(channel, ECHO_COUNT), failed]), left(), 'the data channel echo');
      result.framesDecoded = await withTimeout(Promise.race([firstFrames(b), failed]), left(), 'the video');
      const [pairA, pairB, video] = await Promise.all([selectedPair(a), selectedPair(b), inboundVideo(b)]);
      freezeVideo();
      Object.assign(result, {
        ok: true,
        pair: pairA,
        remotePair: pairB,
        iceRttMs: pairA ? pairA.rttMs : null,
        bytes: { sent: pairA ? pairA.bytesSent : 0, received: pairB ? pairB.bytesReceived : 0 },
        framesDecoded: video.framesDecoded,
      });
    } catch (e) {
      result.error = e.message;
      result.pair = await selectedPair(a).catch(() => null);
    } finally {
      a.close();
      b.close();
      pattern.stop();
    }
    return result;
  }

  function showVideo(stream) {
    const video = $('call-video');
    video.srcObject = stream;
    video.hidden = false;
    $('call-still').hidden = true;
    play(video);
  }

  // Keeps the last received frame on screen once the call is closed.
  function freezeVideo() {
    const video = $('call-video');
    const still = $('call-still');
    if (!video.videoWidth) return;
    still.getContext('2d').drawImage(video, 0, 0, still.width, still.height);
    still.hidden = false;
    video.hidden = true;
  }

  function trickle(from, to) {
    from.onicecandidate = (e) => {
      if (e.candidate) to.addIceCandidate(e.candidate).catch(() => {});
    };
  }

  function opened(channel) {
    return new Promise((resolve) => {
      channel.onopen = resolve;
    });
  }

  // Rejects as soon as either connection fails (ICE gave up).
  function connectionFailed(...pcs) {
    return new Promise((_, reject) => {
      for (const pc of pcs) {
        pc.addEventListener('connectionstatechange', () => {
          if (pc.connectionState === 'failed') reject(new Error('the connection through the relay failed'));
        });
      }
    });
  }

  // Sends `count` messages one at a time and returns the median round trip in ms.
  async function echo(channel, count) {
    const rtts = [];
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      const back = new Promise((resolve) => {
        channel.onmessage = (m) => {
          if (m.data === `ping ${i}`) resolve();
        };
      });
      channel.send(`ping ${i}`);
      await back;
      rtts.push(performance.now() - t0);
    }
    rtts.sort((x, y) => x - y);
    return Math.round(rtts[Math.floor(rtts.length / 2)] * 10) / 10;
  }

  // Polls until `pc` has decoded a few video frames (about half a second at 15 frames
  // per second, so one is on screen); returns the frame count.
  async function firstFrames(pc) {
    for (;;) {
      const { framesDecoded } = await inboundVideo(pc);
      if (framesDecoded >= 8) return framesDecoded;
      await sleep(200);
    }
  }

  // The verdict and its likely cause in plain words, from what the steps found.
  function diagnose(ice, result) {
    const offered = TRANSPORTS.filter((t) => result.transports[t]);
    const working = offered.filter((t) => result.transports[t].ok);
    const failing = offered.filter((t) => !result.transports[t].ok);
    const notes = privateRelayNotes(ice, result, working);
    const fail = (cause) => ({ verdict: 'fail', cause, notes });
    if (!offered.length) return fail('The server offers no TURN URL: no UDP, TCP or TLS listener is enabled.');
    if (!working.length) return fail(noRelayCause(ice, result, offered));
    if (!result.call || !result.call.ok) {
      const relay = result.transports[working[0]].relay;
      return fail(`The relay address ${relay} is not reachable: check relay.external_ips (the address the server `
        + 'advertises for its relays) and that the relay port range (UDP) is open in the firewall.'
        + (result.call && result.call.error ? ` (${result.call.error})` : ''));
    }
    if (failing.length) return fail(partialCause(ice, result, failing));
    return { verdict: 'ok', cause: '', notes };
  }

  // "3478/udp" for a transport, from the URL the server handed out.
  function portOf(ice, transport) {
    const port = /:(\d+)(\?|$)/.exec(ice.urls[transport]);
    const proto = transport === 'udp' ? 'udp' : 'tcp';
    return `${port ? port[1] : '?'}/${proto}`;
  }

  function noRelayCause(ice, result, offered) {
    const codes = offered.flatMap((t) => result.transports[t].errorCodes);
    if (codes.includes(401)) {
      return 'Credentials refused (401): the server did not accept the credentials it minted for this page. '
        + 'Check the realm, the server clock (REST credentials carry an expiry time), and the secret.';
    }
    const ports = offered.map((t) => portOf(ice, t)).join(', ');
    return 'Cannot reach the server\'s TURN ports: no relay on any transport. A firewall probably blocks '
      + `${ports}, on the server or on this network.`;
  }

  function partialCause(ice, result, failing) {
    const works = TRANSPORTS.filter((t) => result.transports[t] && result.transports[t].ok)
      .map((t) => TRANSPORT_NAMES[t]).join(' and ');
    if (failing.length === 1 && failing[0] === 'udp') {
      return `UDP to the server is blocked on this network; browsers will fall back to ${works}. `
        + `Calls work, with more delay. If UDP should work here, open ${portOf(ice, 'udp')} in the server's firewall.`;
    }
    const list = failing.map((t) => `${TRANSPORT_NAMES[t]} (${result.transports[t].error})`).join(', ');
    const ports = failing.map((t) => portOf(ice, t)).join(', ');
    const tls = failing.includes('tls') ? ' For TLS, also check that the certificate is valid for this host name.' : '';
    return `Calls work over ${works}, but not over ${list}. Check that ${ports} is open in the firewall.${tls}`;
  }

  // A relay address only reachable from the server's own network, while this page was
  // reached by a public name: remote peers that do not use TURN cannot reach it.
  function privateRelayNotes(ice, result, working) {
    if (!pageHostIsPublic()) return [];
    const relays = working.map((t) => result.transports[t]).filter((r) => isPrivateAddress(r.relayAddress));
    if (!relays.length) return [];
    const advertised = ice.externalIp ? ` (it is set to ${ice.externalIp}, which the relays do not use)` : '';
    return [`The relay address ${relays[0].relay} is private, but this page was reached at ${location.hostname}: `
      + `set relay.external_ips to the server's public address${advertised}.`];
  }

  function renderTransport(name, r) {
    const row = $(`transport-${name}`);
    row.replaceChildren(
      el('td', TRANSPORT_NAMES[name]),
      r ? el('td', r.ok ? '✓ relay' : '✗ failed', `mark ${r.ok ? 'ok' : 'fail'}`) : el('td', '… checking', 'mark wait'),
      el('td', r ? `${r.ms} ms` : ''),
      el('td', r && r.relay ? r.relay : '–', 'mono'),
      el('td', r ? (r.ok ? '' : r.error) : '', 'muted'),
    );
  }

  // Step 2's facts, starting afresh with its one-line result.
  function renderCallResult(text) {
    const facts = $('call-facts');
    facts.replaceChildren(el('dt', 'Result'), el('dd', text));
    return (label, value) => facts.append(el('dt', label), el('dd', value));
  }

  function renderCall(call) {
    if (!call) {
      renderCallResult('not tried: no transport gave a relay');
      return;
    }
    const add = renderCallResult(call.ok ? '✓ data and video went through the relay' : `✗ ${call.error}`);
    if (!call.ok) return;
    add('Route', describePair(call.pair));
    add('Relay address', call.pair && call.pair.localAddress ? call.pair.localAddress : '–');
    add('Data round trip', `${call.rttMs} ms (median of ${ECHO_COUNT} echoes)`);
    add('ICE round trip', call.iceRttMs !== null ? `${call.iceRttMs} ms` : '–');
    add('Bytes', `${formatBytes(call.bytes.sent)} sent, ${formatBytes(call.bytes.received)} received`);
    add('Video frames decoded', String(call.framesDecoded));
  }

  function renderVerdict(result) {
    const box = $('verdict');
    box.dataset.verdict = result.verdict;
    const title = { running: 'Checking…', ok: '✓ Calls through this server work', fail: '✗ Problem found' };
    const partly = result.verdict === 'fail' && result.call && result.call.ok;
    setText('verdict-title', partly ? '✗ Calls work, but not on every transport' : title[result.verdict]);
    setText('verdict-cause', result.cause || (result.verdict === 'ok' ? 'Every transport relays, and a call went through the relay.' : ''));
    $('verdict-notes').replaceChildren(...result.notes.map((n) => el('li', n)));
    $('rerun').hidden = result.verdict === 'running';
  }

  async function runCheck() {
    const result = { done: false, transports: {}, call: null, verdict: 'running', cause: '', notes: [] };
    window.selftestResult = result;
    renderVerdict(result);
    $('transports').replaceChildren();
    renderCallResult('waiting for step 1');
    $('call-video').hidden = true;
    $('call-still').hidden = true;
    let ice;
    try {
      ice = await fetchIce();
    } catch (e) {
      Object.assign(result, { verdict: 'fail', cause: e.message, done: true });
      renderVerdict(result);
      return;
    }
    setText('creds', `Test credentials: user ${ice.username}, valid ${Math.round(ice.ttl / 60)} minutes, realm ${ice.realm}.`);
    const offered = TRANSPORTS.filter((t) => ice.urls && ice.urls[t]);
    for (const name of offered) {
      const row = el('tr');
      row.id = `transport-${name}`;
      $('transports').append(row);
      renderTransport(name, null);
    }
    await Promise.all(offered.map(async (name) => {
      result.transports[name] = await gatherRelay(ice, ice.urls[name], GATHER_MS);
      result.transports[name].url = ice.urls[name];
      renderTransport(name, result.transports[name]);
    }));
    const working = offered.filter((t) => result.transports[t].ok);
    if (working.length) {
      renderCallResult('calling…');
      result.call = await loopbackCall(ice, working.map((t) => ice.urls[t]), CALL_MS);
    }
    renderCall(result.call);
    Object.assign(result, diagnose(ice, result));
    renderVerdict(result);
    result.done = true;
  }

  function startCheck() {
    const check = () => runCheck().catch((e) => {
      Object.assign(window.selftestResult, { verdict: 'fail', cause: `the check stopped: ${e.message}`, done: true });
      renderVerdict(window.selftestResult);
    });
    $('rerun').onclick = check;
    check();
  }

  // ---------------------------------------------------------------------------------
  // /call: a two-person room. The server's WebSocket relays our JSON messages to the
  // other member; the member already waiting makes the offer when the other arrives.

  const ERROR_WORDS = {
    'room full': 'This room already has two people in it. Pick another room name in the link.',
    'room expired': 'This room has expired. Open the link again to start a new one.',
    'wrong link': 'This link is not valid: the server did not accept its token or room name. Ask for a fresh link.',
    'peer left': 'The other person left. Waiting for someone to join again.',
    disconnected: 'Lost the connection to the server.',
  };

  class Call {
    constructor() {
      this.room = params.get('room') || '';
      this.relayOnly = params.get('policy') !== 'all';
      this.state = {
        role: null, status: 'starting', connected: false, pair: null,
        framesDecoded: 0, bytesReceived: 0, peersLeft: 0, media: null, error: null,
      };
      window.callState = this.state;
      this.ws = null;
      this.pc = null;
      this.media = null;
      this.inbox = Promise.resolve();
      this.statsTimer = null;
      this.lastBytes = null;
      this.ended = false;
    }

    async start() {
      setText('room-name', this.room ? `room “${this.room}”` : '');
      $('invite').value = this.inviteLink();
      $('hangup').onclick = () => this.hangUp();
      this.status('starting', 'Starting…', 'Getting credentials and the camera.');
      try {
        this.ice = await fetchIce();
      } catch (e) {
        this.fail(e.message.startsWith('wrong link') ? 'wrong link' : e.message);
        return;
      }
      this.media = await localMedia(params.get('media') === 'pattern');
      this.state.media = this.media.kind;
      const local = $('local-video');
      local.srcObject = this.media.stream;
      play(local);
      setText('local-caption', this.media.kind === 'camera' ? 'You (camera)' : `You (test pattern${this.media.why ? `: ${this.media.why}` : ''})`);
      this.connect();
    }

    inviteLink() {
      const url = new URL(location.href);
      url.searchParams.delete('media');
      return url.toString();
    }

    connect() {
      const url = apiUrl('api/ws', { room: this.room });
      url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
      this.ws = new WebSocket(url);
      this.ws.onmessage = (e) => {
        // One message at a time, in order: each may await SDP work.
        this.inbox = this.inbox.then(() => this.handle(JSON.parse(e.data))).catch((err) => this.fail(err.message));
      };
      this.ws.onclose = (e) => this.socketClosed(e);
    }

    send(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    async handle(msg) {
      switch (msg.type) {
        case 'welcome':
          this.state.role = msg.role;
          this.waiting();
          break;
        case 'peer-joined':
          await this.offer();
          break;
        case 'offer':
          await this.answer(msg.sdp);
          break;
        case 'answer':
          if (this.pc) await this.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp });
          break;
        case 'candidate':
          if (this.pc && msg.candidate) await this.pc.addIceCandidate(msg.candidate).catch(() => {});
          break;
        case 'peer-left':
          this.state.peersLeft += 1;
          this.closePeer();
          this.waiting(ERROR_WORDS['peer left']);
          break;
        case 'error':
          this.fail(msg.reason || 'error');
          break;
        default:
          break;
      }
    }

    newPeer() {
      this.closePeer();
      const pc = new RTCPeerConnection(iceConfig(this.ice, Object.values(this.ice.urls || {}), this.relayOnly));
      this.media.stream.getTracks().forEach((t) => pc.addTrack(t, this.media.stream));
      pc.onicecandidate = (e) => {
        if (e.candidate) this.send({ type: 'candidate', candidate: e.candidate.toJSON() });
      };
      pc.ontrack = (e) => {
        const video = $('remote-video');
        video.srcObject = e.streams[0] || new MediaStream([e.track]);
        play(video, $('unmute'));
      };
      pc.onconnectionstatechange = () => this.connectionChanged(pc);
      this.pc = pc;
      this.lastBytes = null;
      this.statsTimer = setInterval(() => this.updateStats(pc), 1000);
      this.status('connecting', 'Connecting…', 'The other person is here; setting up the call through the relay.');
      return pc;
    }

    async offer() {
      const pc = this.newPeer();
      await pc.setLocalDescription(await pc.createOffer());
      this.send({ type: 'offer', sdp: pc.localDescription.sdp });
    }

    async answer(sdp) {
      const pc = this.newPeer();
      await pc.setRemoteDescription({ type: 'offer', sdp });
      await pc.setLocalDescription(await pc.createAnswer());
      this.send({ type: 'answer', sdp: pc.localDescription.sdp });
    }

    connectionChanged(pc) {
      if (pc !== this.pc) return;
      setText('conn-state', pc.connectionState);
      this.state.connected = pc.connectionState === 'connected';
      if (this.state.connected) {
        this.status('connected', 'Connected', 'You are in a call through the TURN server.');
      } else if (pc.connectionState === 'failed') {
        this.status('error', 'The call could not connect',
          'No route through the relay worked. Run the check page (/check) to see which transport fails.');
      }
    }

    async updateStats(pc) {
      if (pc !== this.pc) return;
      const [pair, video] = await Promise.all([selectedPair(pc), inboundVideo(pc)]).catch(() => [null, null]);
      if (!video || pc !== this.pc) return;
      Object.assign(this.state, {
        pair: pair && { local: pair.local, remote: pair.remote, protocol: pair.protocol, relayProtocol: pair.relayProtocol },
        framesDecoded: video.framesDecoded,
        bytesReceived: pair ? pair.bytesReceived : 0,
      });
      setText('conn-pair', describePair(pair));
      setText('conn-relay', pair && pair.local === 'relay' ? pair.localAddress : '–');
      setText('conn-rtt', pair && pair.rttMs !== null ? `${pair.rttMs} ms` : '–');
      setText('conn-frames', String(video.framesDecoded));
      if (pair) this.showRates(pair);
    }

    // Bit rates from the byte counters' change since the previous second.
    showRates(pair) {
      const now = performance.now();
      const last = this.lastBytes;
      this.lastBytes = { at: now, sent: pair.bytesSent, received: pair.bytesReceived };
      if (!last) return;
      const seconds = (now - last.at) / 1000;
      const kbps = (bytes) => `${Math.max(0, Math.round((bytes * 8) / 1000 / seconds))} kbit/s`;
      setText('conn-out', `${kbps(pair.bytesSent - last.sent)} (${formatBytes(pair.bytesSent)} in all)`);
      setText('conn-in', `${kbps(pair.bytesReceived - last.received)} (${formatBytes(pair.bytesReceived)} in all)`);
    }

    closePeer() {
      clearInterval(this.statsTimer);
      if (this.pc) this.pc.close();
      this.pc = null;
      Object.assign(this.state, { connected: false, pair: null, framesDecoded: 0, bytesReceived: 0 });
      $('remote-video').srcObject = null;
      setText('conn-state', 'no call');
    }

    waiting(detail) {
      this.status('waiting', 'Waiting for the other person…', detail || 'Send them the link below.');
    }

    socketClosed(e) {
      if (this.ended) return;
      const reasons = { 1008: 'the server closed the room connection: too many messages', 1009: 'the server closed the room connection: message too big' };
      // A socket refused before the welcome means the server turned the link down.
      const reason = this.state.error || reasons[e.code] || (this.state.role ? 'disconnected' : 'wrong link');
      this.fail(reason);
    }

    fail(reason) {
      if (this.ended) return;
      this.state.error = reason;
      this.end();
      this.status('error', 'The call stopped', ERROR_WORDS[reason] || reason);
    }

    hangUp() {
      if (this.ended) return;
      this.end();
      this.status('hung-up', 'You hung up', '');
    }

    // Leaves the room for good: no call, no socket, camera off, a way back in.
    end() {
      this.ended = true;
      this.closePeer();
      if (this.ws) this.ws.close(1000);
      if (this.media) this.media.stop();
      this.offerRejoin();
    }

    offerRejoin() {
      $('hangup').hidden = true;
      const rejoin = $('rejoin');
      rejoin.href = location.href;
      rejoin.hidden = false;
    }

    status(name, title, detail) {
      this.state.status = name;
      $('status').dataset.status = name;
      setText('status-title', title);
      setText('status-detail', detail);
    }
  }

  // The camera and microphone when allowed, else the generated pattern (with the reason).
  async function localMedia(patternOnly) {
    if (!patternOnly && navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
      try {
        const stream = await withTimeout(navigator.mediaDevices.getUserMedia({ video: true, audio: true }), 15_000, 'camera access');
        return { kind: 'camera', stream, stop: () => stream.getTracks().forEach((t) => t.stop()) };
      } catch (e) {
        const pattern = testPattern();
        return { kind: 'pattern', why: `no camera: ${e.message}`, ...pattern };
      }
    }
    return { kind: 'pattern', why: patternOnly ? '' : 'this browser has no camera access', ...testPattern() };
  }

  function startCall() {
    const call = new Call();
    call.start().catch((e) => call.fail(e.message));
  }

  // ---------------------------------------------------------------------------------

  const pages = { check: startCheck, call: startCall };
  const start = pages[document.body.dataset.page];
  if (start) start();
})();
