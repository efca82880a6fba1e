// The demo page's script: a chat over gotalk, using only the global `gotalk` from
// /gotalk/gotalk.js. The server keeps the rooms (examples/demo/src/chat/); this page
// shows one room at a time, answers the server's `chat.ping` and `chat.name`, and renders
// what the `chat.*` notifications say. Direct messages go page to page through the gateway's
// relay (topic `chat.dm`), addressed by the peer id each member carries. A search panel shows
// one request answered by many sources (the `search` service's shards).
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------
  // What the page remembers between visits (a private window may refuse storage).

  const saved = {
    get(key) {
      try {
        return localStorage.getItem(`gotalk-chat-${key}`);
      } catch {
        return null;
      }
    },
    set(key, value) {
      try {
        localStorage.setItem(`gotalk-chat-${key}`, value);
      } catch {
        // Not kept: the page still works for this visit.
      }
    },
  };

  /**
   * A secret of this tab's, presented with the name: when the page reconnects through the load
   * balancer to another server while its old connection's rows still linger in the rooms (its
   * server died), the servers know the name is still this page's. Kept for the tab only
   * (sessionStorage), so another tab with the same saved name is someone else; the servers
   * keep only a hash of it and never show it to other pages.
   */
  const secret = (() => {
    const fresh = () => [...crypto.getRandomValues(new Uint8Array(32))].map((b) => b.toString(16).padStart(2, '0')).join('');
    try {
      let kept = sessionStorage.getItem('gotalk-chat-secret');
      if (!kept) {
        kept = fresh();
        sessionStorage.setItem('gotalk-chat-secret', kept);
      }
      return kept;
    } catch {
      // No storage: the secret still lasts as long as the page.
      return fresh();
    }
  })();

  /** Who this page is: its connection id on its server, its relay id, its name. */
  const me = { id: null, peer: null, name: saved.get('name') };
  let room = saved.get('room') || 'lobby';
  /** Whether this connection is in a room yet: a refused name can leave it in none. */
  let inRoom = false;
  let maxText = 1000;
  /**
   * Lines already shown in this room, so one shown from its result or the history is not
   * shown twice. A line is its sender's relay id and its `seq`: behind a load balancer each
   * server numbers its own lines.
   */
  let shown = new Set();
  const lineKey = (m) => `${m.peer || ''}/${m.seq}`;
  /** Whether a member, or a line's sender, is this page: by relay id, unique across servers. */
  const isMe = (peer, id) => (peer && me.peer ? peer === me.peer : id === me.id);
  /** The last name seen for each relay peer id, from the member lists: who a `from` id is. */
  const names = new Map();
  /** Direct-message conversations by the other page's peer id: `{ peer, messages, unread }`. */
  const conversations = new Map();
  /** The peer whose conversation is open, or null. */
  let openPeer = null;

  // ---------------------------------------------------------------------------------------
  // Small helpers for building the page.

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  /** A stable colour per name. */
  function hue(name) {
    let h = 0;
    for (const ch of name) h = (h * 31 + ch.codePointAt(0)) % 360;
    return h;
  }

  function avatar(name, className = 'avatar') {
    const node = el('span', className, [...(name || '?')][0].toUpperCase());
    node.style.setProperty('--hue', hue(name || '?'));
    node.setAttribute('aria-hidden', 'true');
    return node;
  }

  function clock(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function formatRtt(ms) {
    return ms == null ? '–' : ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
  }

  // ---------------------------------------------------------------------------------------
  // The connection and the server's calls to the page.

  // The server times this to measure the round trip, on connect and every 15 s.
  gotalk.handle('chat.ping', (_value, result) => result(null));

  // The server asks a new page its name. The answer goes back at once (a request held open
  // would hold up the server's graceful shutdown): a returning visitor's saved name, or for a
  // newcomer the server's suggestion for now, while a dialog asks for a better one.
  gotalk.handle('chat.name', (ask, result) => {
    if (me.name) return result({ name: me.name, secret });
    result({ name: ask.suggestion, secret });
    askName({ suggestion: ask.suggestion, maxChars: ask.max_chars, first: true });
  });

  // `ask-page` (the "Server → page" panel) calls this on the page that asked.
  gotalk.handle('page-info', (value, result) => {
    result({ title: document.title, userAgent: navigator.userAgent, echo: value });
  });

  gotalk.handleNotification('chat.message', (message) => {
    if (message.room === room) addMessage(message);
  });
  gotalk.handleNotification('chat.members', ({ room: r, members }) => {
    if (r === room) showMembers(members);
  });
  gotalk.handleNotification('chat.rooms', ({ rooms }) => showRooms(rooms));
  gotalk.handleNotification('chat.you', (you) => showMe(you));
  // The servers' bus came back after an outage: lines said meanwhile elsewhere may be
  // missing here, so the room is fetched again (joining a room one is in changes nothing).
  gotalk.handleNotification('chat.resync', () => {
    if (inRoom) join(room);
  });

  const s = gotalk.connection();

  // Every (re)connection joins the room again: a restarted server knows nobody.
  s.on('open', () => {
    $('address').textContent = s.address() || '/gotalk/';
    inRoom = false;
    join(room);
  });

  // ---------------------------------------------------------------------------------------
  // The connection indicator: connected, reconnecting in N s, offline.

  let countdown = null;
  function showState(state) {
    document.body.dataset.state = state;
    clearInterval(countdown);
    countdown = null;
    const label = $('state');
    const text = $('text');
    switch (state) {
      case 'open':
        label.textContent = 'connected';
        text.placeholder = `Message # ${room}`;
        break;
      case 'reconnecting': {
        const tick = () => {
          const at = s.nextReconnectAt;
          label.textContent =
            at == null ? 'reconnecting…' : `reconnecting in ${Math.max(0, Math.ceil((at - Date.now()) / 1000))} s`;
        };
        tick();
        countdown = setInterval(tick, 250);
        text.placeholder = 'Not connected: messages wait and go out on reconnect';
        break;
      }
      case 'offline':
        label.textContent = 'offline';
        text.placeholder = 'Offline: messages wait and go out when you are back online';
        break;
      case 'closed':
        label.textContent = 'disconnected';
        break;
      default:
        label.textContent = 'connecting…';
    }
  }
  s.on('state', showState);
  showState(s.state);

  // ---------------------------------------------------------------------------------------
  // Rooms.

  async function join(name) {
    const previous = room;
    $('room-error').textContent = '';
    let joined;
    try {
      joined = await s.request('chat.join', { room: name, name: me.name || undefined, secret });
    } catch (err) {
      // The server refuses a name (taken in that room, or not allowed) with an error that
      // begins with "name". A page in no room asks its user for another and joins again
      // once the server has taken it; it never retries on its own.
      if (!inRoom && /^name\b/.test(err.message)) {
        askName({ suggestion: me.name, first: true, error: err.message, rejoin: name });
      } else {
        $('room-error').textContent = err.message;
      }
      return false;
    }
    inRoom = true;
    // A dialog opened because an earlier join refused the name has nothing left to ask: this
    // connection is in (the name came free, or the page reconnected meanwhile).
    if (nameAsked?.rejoin && dialog.open) {
      nameAsked = null;
      dialog.close();
    }
    room = joined.room;
    saved.set('room', room);
    maxText = joined.max_text_chars;
    showMe(joined.you);
    showRooms(joined.rooms);
    showMembers(joined.members);
    $('room-title').textContent = `# ${room}`;
    $('text').placeholder = `Message # ${room}`;
    const list = $('messages');
    list.replaceChildren();
    shown = new Set();
    if (joined.history.length === 0) list.append(el('li', 'empty', `This is the start of # ${room}.`));
    for (const message of joined.history) addMessage(message);
    list.scrollTop = list.scrollHeight;
    // One room at a time: leave the one this page was in (unless it is the same).
    if (previous !== room) {
      s.request('chat.leave', { room: previous }).catch(() => {
        // Not in it (a restarted server): nothing to leave.
      });
    }
    closeDrawers();
    return true;
  }

  function showRooms(rooms) {
    const list = $('rooms');
    list.replaceChildren(
      ...rooms.map((r) => {
        const item = el('li');
        const button = el('button', r.name === room ? 'room active' : 'room');
        button.type = 'button';
        button.append(el('span', 'hash', '#'), el('span', 'room-name', r.name), el('span', 'count', String(r.members)));
        if (r.name === room) button.setAttribute('aria-current', 'true');
        button.addEventListener('click', () => r.name !== room && join(r.name));
        item.append(button);
        return item;
      }),
    );
  }

  $('new-room').addEventListener('submit', async (event) => {
    event.preventDefault();
    const input = $('room-name');
    if (await join(input.value)) input.value = '';
  });

  function showMembers(members) {
    for (const m of members) if (m.peer) names.set(m.peer, m.name);
    $('member-count').textContent = String(members.length);
    $('room-sub').textContent = members.length === 1 ? 'just you so far' : `${members.length} here`;
    $('members').replaceChildren(
      ...members.map((m) => {
        const item = el('li', 'member');
        item.dataset.id = m.id;
        const name = el('span', 'member-name', m.name);
        const parts = [avatar(m.name), name];
        if (isMe(m.peer, m.id)) name.append(el('span', 'tag', 'you'));
        if (m.transport !== 'websocket') parts.push(el('span', 'tag transport', m.transport));
        if (m.rtt_ms != null) parts.push(el('span', 'rtt', formatRtt(m.rtt_ms)));
        // Anyone else with a relay id can be messaged directly; one without (the relay off)
        // is listed as before.
        if (!isMe(m.peer, m.id) && m.peer) {
          item.classList.add('dm-able');
          item.dataset.peer = m.peer;
          const button = el('button', 'member-button');
          button.type = 'button';
          button.title = `Message ${m.name} directly`;
          button.append(...parts, el('span', 'unread', ''));
          button.addEventListener('click', () => openDm(m.peer));
          item.append(button);
        } else {
          item.append(...parts);
        }
        return item;
      }),
    );
    showDmBadges();
    if (openPeer) showDmHead();
  }

  // ---------------------------------------------------------------------------------------
  // Messages.

  function addMessage(m) {
    if (shown.has(lineKey(m))) return;
    shown.add(lineKey(m));
    const list = $('messages');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
    list.querySelector('.empty')?.remove();
    list.append(renderMessage(m));
    if (atBottom || isMe(m.peer, m.from)) list.scrollTop = list.scrollHeight;
  }

  function renderMessage(m) {
    if (m.kind !== 'text') {
      const what = { join: 'joined', leave: 'left', rename: `was ${m.text}` }[m.kind] || m.kind;
      const item = el('li', `event ${m.kind}`);
      item.append(el('strong', null, m.name), ` ${what}`, el('time', null, clock(m.time)));
      return item;
    }
    const item = el('li', isMe(m.peer, m.from) ? 'message mine' : 'message');
    item.dataset.seq = m.seq;
    const body = el('div', 'body');
    const head = el('div', 'head');
    head.append(el('span', 'name', m.name), el('time', null, clock(m.time)));
    head.querySelector('.name').style.setProperty('--hue', hue(m.name));
    body.append(head, el('p', 'text', m.text));
    item.append(avatar(m.name), body);
    return item;
  }

  const text = $('text');

  function updateCount() {
    const n = [...text.value].length;
    const counter = $('text-count');
    counter.textContent = n > maxText * 0.8 ? `${n} / ${maxText}` : '';
    counter.classList.toggle('over', n > maxText);
    // Grow with the text, up to a few lines.
    text.style.height = 'auto';
    text.style.height = `${Math.min(text.scrollHeight, 160)}px`;
  }
  text.addEventListener('input', updateCount);
  text.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('composer').requestSubmit();
    }
  });

  $('composer').addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = text.value;
    if (!value.trim()) return;
    text.value = '';
    updateCount();
    // Shown at once, and settled by the server's answer: the message itself, or why not.
    const pending = renderMessage({ kind: 'text', seq: 0, time: Date.now(), from: me.id, peer: me.peer, name: me.name || 'you', text: value });
    pending.classList.add('pending');
    const status = el('p', 'status-line', s.state === 'open' ? 'sending…' : 'waiting for the connection…');
    pending.querySelector('.body').append(status);
    const list = $('messages');
    list.querySelector('.empty')?.remove();
    list.append(pending);
    list.scrollTop = list.scrollHeight;
    try {
      const message = await s.request('chat.say', { room, text: value });
      if (message.room === room && !shown.has(lineKey(message))) {
        shown.add(lineKey(message));
        pending.replaceWith(renderMessage(message));
      } else {
        pending.remove();
      }
    } catch (err) {
      pending.classList.replace('pending', 'failed');
      status.className = 'status-line error';
      status.setAttribute('role', 'alert');
      status.textContent = `Not sent: ${err.message}`;
      const retry = el('button', 'link', 'Edit');
      retry.type = 'button';
      retry.addEventListener('click', () => {
        text.value = value;
        updateCount();
        pending.remove();
        text.focus();
      });
      status.append(' ', retry);
    }
  });

  // ---------------------------------------------------------------------------------------
  // Who I am: the name (asked by the server, editable) and the round trip.

  function showMe(you) {
    me.id = you.id;
    me.peer = you.peer || null;
    if (you.peer && you.name) names.set(you.peer, you.name);
    if (you.name) {
      $('me-name').textContent = you.name;
      const mark = $('me-avatar');
      mark.textContent = [...you.name][0].toUpperCase();
      mark.style.setProperty('--hue', hue(you.name));
    }
    if (you.rtt_ms != null) $('rtt').textContent = `RTT ${formatRtt(you.rtt_ms)}`;
  }

  $('rtt').addEventListener('click', async () => {
    try {
      const { rtt_ms } = await s.request('chat.rtt');
      $('rtt').textContent = `RTT ${formatRtt(rtt_ms)}`;
    } catch (err) {
      $('rtt').textContent = 'RTT –';
      $('rtt').title = err.message;
    }
  });

  const dialog = $('name-dialog');
  let nameAsked = null;

  /**
   * Opens the name dialog; the name is taken by a `chat.rename` request. With `error` (the
   * server refused the name the page joined with), the room `rejoin` is joined once the
   * server takes the new name.
   */
  function askName({ suggestion, maxChars, first, error, rejoin }) {
    const input = $('name-input');
    input.value = suggestion || me.name || '';
    if (maxChars) input.maxLength = maxChars;
    $('name-title').textContent = error ? 'Choose another name' : first ? 'Welcome to gotalk chat' : 'Change your name';
    $('name-why').textContent = error
      ? `The server did not let you into # ${rejoin} under this name.`
      : first
        ? `The server just asked this page what to call you, and suggests ${suggestion}.`
        : 'Everyone in your room sees the change.';
    $('name-ok').textContent = first ? 'Start chatting' : 'Save';
    $('name-error').textContent = error || '';
    nameAsked = { first, rejoin };
    if (!dialog.open) dialog.showModal();
    input.select();
  }

  $('name-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = $('name-input').value.trim();
    if (!name || !nameAsked) return;
    // A rename is a request of the page's own, so its ErrorResult can be shown here.
    let you;
    try {
      you = await s.request('chat.rename', { name, secret });
    } catch (err) {
      $('name-error').textContent = err.message;
      return;
    }
    // As the server keeps it: fullwidth letters made plain, spaces made single.
    me.name = you.name;
    saved.set('name', you.name);
    const { rejoin } = nameAsked;
    nameAsked = null;
    dialog.close();
    if (rejoin) join(rejoin);
  });

  // Escape keeps the suggestion the first time, and the old name afterwards.
  dialog.addEventListener('cancel', (event) => {
    if (nameAsked?.first) {
      event.preventDefault();
      $('name-form').requestSubmit();
    } else {
      nameAsked = null;
    }
  });

  $('me').addEventListener('click', () => askName({ suggestion: me.name, first: false }));

  // ---------------------------------------------------------------------------------------
  // Direct messages: page to page through the relay. The server only lists who is where (each
  // member with its peer id); what is said here never passes through the chat.

  /** Messages a conversation keeps; older ones are dropped (a chatty peer costs bounded memory). */
  const DM_KEEP = 200;

  /** The name the gateway's `from` id maps to; never the name a message claims. */
  function nameOf(peer) {
    return names.get(peer) || `peer ${peer.slice(0, 8)}`;
  }

  function conversation(peer) {
    let conv = conversations.get(peer);
    if (!conv) {
      conv = { peer, messages: [], unread: 0 };
      conversations.set(peer, conv);
    }
    return conv;
  }

  function keep(conv, entry) {
    conv.messages.push(entry);
    if (conv.messages.length > DM_KEEP) conv.messages.splice(0, conv.messages.length - DM_KEEP);
  }

  function renderDm(entry) {
    const item = el('li', entry.mine ? 'dm-message mine' : 'dm-message');
    const who = entry.mine ? me.name || 'you' : nameOf(entry.from);
    const head = el('div', 'head');
    const name = el('span', 'name', who);
    name.style.setProperty('--hue', hue(who));
    head.append(name, el('time', null, clock(entry.time)));
    item.append(head, el('p', 'text', entry.text));
    if (entry.status === 'sending') {
      item.classList.add('pending');
      item.append(el('p', 'status-line', s.state === 'open' ? 'sending…' : 'waiting for the connection…'));
    } else if (entry.status === 'failed') {
      item.classList.add('failed');
      const line = el('p', 'status-line error', entry.error);
      line.setAttribute('role', 'alert');
      item.append(line);
    }
    entry.node = item;
    return item;
  }

  /** Shows a change to a message already on screen. */
  function refreshDm(entry) {
    if (entry.node?.isConnected) entry.node.replaceWith(renderDm(entry));
  }

  function appendDm(entry) {
    const list = $('dm-messages');
    list.querySelector('.empty')?.remove();
    list.append(renderDm(entry));
    list.scrollTop = list.scrollHeight;
  }

  function showDmHead() {
    const who = nameOf(openPeer);
    $('dm-name').textContent = who;
    $('dm-peer').textContent = openPeer.slice(0, 8);
    $('dm-peer').title = openPeer;
    const gone = conversations.get(openPeer)?.gone;
    $('dm-via').textContent = gone ? 'no longer connected:' : 'via the relay to';
    $('dm-via').classList.toggle('error', Boolean(gone));
    const mark = $('dm-avatar');
    mark.textContent = [...who][0].toUpperCase();
    mark.style.setProperty('--hue', hue(who));
    $('dm-text').placeholder = `Message ${who} directly`;
    for (const item of $('members').querySelectorAll('.member')) {
      item.classList.toggle('dm-current', item.dataset.peer === openPeer);
    }
  }

  function openDm(peer) {
    openPeer = peer;
    const conv = conversation(peer);
    conv.unread = 0;
    $('dm-home').hidden = true;
    $('dm-open').hidden = false;
    showDmHead();
    const list = $('dm-messages');
    list.replaceChildren();
    if (conv.messages.length === 0) {
      list.append(el('li', 'empty', `Only ${nameOf(peer)}'s page gets what you send here.`));
    }
    for (const entry of conv.messages) list.append(renderDm(entry));
    list.scrollTop = list.scrollHeight;
    showDmBadges();
    openDrawer('toggle-tools', 'side-pane');
    $('dm-text').focus();
  }

  function closeDm() {
    openPeer = null;
    $('dm-open').hidden = true;
    $('dm-home').hidden = false;
    for (const item of $('members').querySelectorAll('.member')) item.classList.remove('dm-current');
    showDmList();
  }

  /** The conversations so far, newest first, each with its unread count. */
  function showDmList() {
    const convs = [...conversations.values()].filter((c) => c.messages.length > 0);
    convs.sort((a, b) => b.messages[b.messages.length - 1].time - a.messages[a.messages.length - 1].time);
    $('dm-list').replaceChildren(
      ...convs.map((conv) => {
        const last = conv.messages[conv.messages.length - 1];
        const button = el('button', 'dm-entry');
        button.type = 'button';
        const who = nameOf(conv.peer);
        const words = el('span', 'dm-entry-words');
        words.append(el('span', 'member-name', who), el('span', 'dm-last muted', `${last.mine ? 'you: ' : ''}${last.text}`));
        button.append(avatar(who), words, el('span', 'unread', conv.unread ? String(conv.unread) : ''));
        button.addEventListener('click', () => openDm(conv.peer));
        const item = el('li');
        item.append(button);
        return item;
      }),
    );
  }

  /** Unread counts on the members, the panel's title and (narrow screens) the drawer button. */
  function showDmBadges() {
    let total = 0;
    for (const conv of conversations.values()) total += conv.unread;
    for (const item of $('members').querySelectorAll('.member.dm-able')) {
      const n = conversations.get(item.dataset.peer)?.unread || 0;
      item.querySelector('.unread').textContent = n ? String(n) : '';
    }
    const badge = $('dm-unread');
    badge.textContent = String(total);
    badge.hidden = total === 0;
    $('toggle-tools').classList.toggle('has-unread', total > 0);
    if (!openPeer) showDmList();
  }

  /** The relay's refusal, in words for the person who sent it. */
  function explain(err, peer) {
    if (err.message === 'unknown peer') {
      return `Not delivered: ${nameOf(peer)} is no longer connected (the relay says: unknown peer).`;
    }
    return `Not delivered: ${err.message}`;
  }

  s.on('relay', ({ from, topic, body }) => {
    // Other topics are for other programs; a body without text is not a chat message.
    if (topic !== 'chat.dm' || typeof body?.text !== 'string' || !body.text) return;
    const conv = conversation(from);
    const entry = { from, text: body.text, time: Date.now(), mine: false };
    keep(conv, entry);
    if (openPeer === from) {
      appendDm(entry);
    } else {
      conv.unread += 1;
    }
    showDmBadges();
  });

  // A new id on every connection: the member lists the page gets on rejoining carry it.
  s.on('id', (id) => {
    $('my-peer').textContent = id;
  });
  if (s.id) $('my-peer').textContent = s.id;

  $('dm-back').addEventListener('click', closeDm);

  const dmText = $('dm-text');
  dmText.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $('dm-composer').requestSubmit();
    }
  });
  dmText.addEventListener('input', () => {
    dmText.style.height = 'auto';
    dmText.style.height = `${Math.min(dmText.scrollHeight, 128)}px`;
  });

  $('dm-composer').addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = dmText.value;
    if (!value.trim() || !openPeer) return;
    dmText.value = '';
    dmText.style.height = 'auto';
    const peer = openPeer;
    const conv = conversation(peer);
    const entry = { from: s.id, text: value, time: Date.now(), mine: true, status: 'sending' };
    keep(conv, entry);
    appendDm(entry);
    try {
      // The name is a courtesy for other programs; this page shows the id the gateway stamped.
      await s.relay(peer, 'chat.dm', { name: me.name, text: value });
      entry.status = null;
    } catch (err) {
      entry.status = 'failed';
      entry.error = explain(err, peer);
      // That id will not come back: a page that reconnects gets a new one.
      if (err.message === 'unknown peer') conv.gone = true;
    }
    refreshDm(entry);
    if (openPeer === peer) showDmHead();
  });

  // ---------------------------------------------------------------------------------------
  // Search: one `search` request answered by sources, a source per shard of the demo text
  // (server/src/bin/gotalk/demo_sources.rs). Each shard gets a card when it is announced and
  // fills as its frames arrive, so the fan-out is there to watch. Server data goes in as text.

  /** The search on screen: `{ sources, query, cards, started, stopped }`, or null. */
  let search = null;

  /** `text` as nodes, each case-insensitive occurrence of `query` in a <mark>. */
  function highlighted(text, query) {
    const lower = text.toLowerCase();
    const q = query.toLowerCase();
    // Lowercasing can change a string's length (a few non-ASCII letters); then just the text.
    if (!q || lower.length !== text.length) return [text];
    const nodes = [];
    let at = 0;
    for (let i = lower.indexOf(q); i !== -1; i = lower.indexOf(q, i + q.length)) {
      if (i > at) nodes.push(text.slice(at, i));
      nodes.push(el('mark', null, text.slice(i, i + q.length)));
      at = i + q.length;
    }
    if (at < text.length) nodes.push(text.slice(at));
    return nodes;
  }

  function decode(bytes) {
    return JSON.parse(new TextDecoder().decode(bytes));
  }

  /** A shard's card: its header info, a state, a count and the lines it sent. */
  function shardCard(source, header) {
    const name = typeof header.shard === 'string' ? header.shard : `source ${source.id}`;
    const lines = Number.isInteger(header.lines) && header.lines > 0 ? header.lines : null;
    const card = el('section', 'shard');
    card.dataset.shard = name;
    card.dataset.state = 'streaming';
    const head = el('div', 'shard-head');
    const title = el('div', 'shard-title');
    title.append(
      el('strong', 'shard-name', name),
      el('span', 'shard-meta muted', `source ${source.id}${lines ? ` · ${lines} lines` : ''}`),
    );
    const state = el('span', 'shard-state', 'streaming');
    const count = el('span', 'shard-count', '0');
    count.title = 'Matching lines so far';
    head.append(title, state, count);
    const bar = el('div', 'shard-bar');
    const fill = el('span');
    bar.append(fill);
    bar.hidden = !lines;
    const hits = el('ol', 'shard-hits');
    card.append(head, bar, hits);
    return { card, state, count, fill, hits, lines, n: 0, ended: false };
  }

  function showSearchStatus(text, kind) {
    const status = $('search-status');
    status.textContent = text;
    status.dataset.kind = kind;
  }

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  /** The overall line: progress while shards stream, a summary once they have all ended. */
  function summarize(current, err) {
    const cards = [...current.cards.values()];
    const matches = cards.reduce((sum, c) => sum + c.n, 0);
    const done = cards.filter((c) => c.ended === 'done').length;
    const aborted = cards.length - done - cards.filter((c) => !c.ended).length;
    $('search-total').textContent = matches ? String(matches) : '';
    if (!current.finished) {
      showSearchStatus(
        `Searching: ${plural(cards.length, 'shard', 'shards')} announced, ${done} done, ${plural(matches, 'match', 'matches')} so far…`,
        'busy',
      );
      return;
    }
    const seconds = ((performance.now() - current.started) / 1000).toFixed(2);
    const parts = `${plural(matches, 'match', 'matches')} from ${plural(cards.length, 'shard', 'shards')}`;
    if (err) {
      showSearchStatus(`Failed: ${err.message}`, 'bad');
    } else if (aborted) {
      const why = current.stopped ? 'Stopped' : 'Finished with errors';
      showSearchStatus(`${why}: ${parts}; ${done} done, ${aborted} aborted (${seconds} s)`, current.stopped ? 'stopped' : 'bad');
    } else {
      showSearchStatus(`Done: ${parts}, all complete in ${seconds} s`, 'ok');
    }
  }

  function setSearching(on) {
    const button = $('search-go');
    button.textContent = on ? 'Stop' : 'Search';
    button.classList.toggle('stop', on);
    button.title = on ? 'Cancel every shard still streaming' : '';
    $('search').classList.toggle('busy', on);
  }

  function startSearch(query) {
    if (search && !search.finished) search.sources.cancel();
    const current = { query, cards: new Map(), started: performance.now(), stopped: false, finished: false };
    search = current;
    const shards = $('search-shards');
    shards.replaceChildren();
    setSearching(true);
    summarize(current);
    current.sources = s.sources('search', query);
    current.sources.on('source', (source) => {
      let header = {};
      try {
        header = decode(source.header);
      } catch {
        // A header that is not JSON still gets a card, named by its source id.
      }
      const shard = shardCard(source, header);
      current.cards.set(source.id, shard);
      shards.append(shard.card);
      // Listeners go on now: a frame may already be waiting for them.
      source.on('data', (frame) => {
        let hit;
        try {
          hit = decode(frame);
        } catch {
          hit = { text: new TextDecoder().decode(frame) };
        }
        const item = el('li', 'hit');
        item.append(
          el('span', 'hit-line', Number.isInteger(hit.line) ? String(hit.line) : '·'),
          el('span', 'hit-text'),
        );
        const words = String(hit.text ?? '');
        item.lastChild.append(...highlighted(words, query.trim()));
        item.title = words;
        shard.hits.append(item);
        shard.n += 1;
        shard.count.textContent = String(shard.n);
        if (shard.lines) shard.fill.style.width = `${Math.min(100, (100 * shard.n) / shard.lines)}%`;
        if (search === current) summarize(current);
      });
      source.on('end', (err) => {
        shard.ended = err ? 'aborted' : 'done';
        shard.card.dataset.state = shard.ended;
        shard.state.textContent = err ? `aborted: ${err.message}` : 'done';
        if (!err && shard.n === 0) shard.hits.append(el('li', 'hit-none', 'no matching lines'));
        if (search === current) summarize(current);
      });
      if (search === current) summarize(current);
    });
    current.sources.on('end', (err) => {
      current.finished = true;
      if (search !== current) return;
      setSearching(false);
      summarize(current, err);
    });
  }

  $('search-form').addEventListener('submit', (event) => {
    event.preventDefault();
    startSearch($('search-query').value);
  });
  // While a search runs the button stops it; Enter in the box starts the next one.
  $('search-go').addEventListener('click', (event) => {
    if (search && !search.finished) {
      event.preventDefault();
      search.stopped = true;
      search.sources.cancel();
      showSearchStatus('Stopping: cancelling every shard still streaming…', 'busy');
    }
  });

  // ---------------------------------------------------------------------------------------
  // Narrow screens: the rooms and the side pane open as drawers.

  function toggleDrawer(button, pane) {
    const open = !pane.classList.contains('open');
    closeDrawers();
    pane.classList.toggle('open', open);
    button.setAttribute('aria-expanded', String(open));
  }
  /** Opens a drawer (a no-op on a screen wide enough to show the pane anyway). */
  function openDrawer(button, pane) {
    closeDrawers();
    $(pane).classList.add('open');
    $(button).setAttribute('aria-expanded', 'true');
  }
  function closeDrawers() {
    for (const [button, pane] of [['toggle-rooms', 'rooms-pane'], ['toggle-tools', 'side-pane']]) {
      $(pane).classList.remove('open');
      $(button).setAttribute('aria-expanded', 'false');
    }
  }
  $('toggle-rooms').addEventListener('click', () => toggleDrawer($('toggle-rooms'), $('rooms-pane')));
  $('toggle-tools').addEventListener('click', () => toggleDrawer($('toggle-tools'), $('side-pane')));

  // ---------------------------------------------------------------------------------------
  // Under the hood: a request each way.

  function show(output, value, failed) {
    output.textContent = value;
    output.classList.toggle('error', Boolean(failed));
  }

  $('greet').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const { greeting } = await s.request('greet', { name: $('greet-name').value });
      show($('greeting'), greeting);
    } catch (err) {
      show($('greeting'), err.message, true);
    }
  });

  $('ask-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const info = $('asked-info');
    try {
      const answer = await s.request('ask-page', { op: 'page-info', value: $('ask-value').value });
      show($('asked'), typeof answer.echo === 'string' ? answer.echo : JSON.stringify(answer.echo));
      info.textContent = `title: ${answer.title}\nuser agent: ${answer.userAgent}`;
      info.hidden = false;
    } catch (err) {
      show($('asked'), err.message, true);
      info.hidden = true;
    }
  });
})();
