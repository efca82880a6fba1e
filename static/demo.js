// The demo page's script: uses only the global `gotalk` from /gotalk/gotalk.js.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);

  // The server's `ask-page` calls this on the page that asked.
  gotalk.handle('page-info', (value, result) => {
    result({ title: document.title, userAgent: navigator.userAgent, echo: value });
  });

  const s = gotalk.connection();

  // The connection indicator, and a countdown to the next try while reconnecting.
  let countdown = null;
  function showState(state) {
    document.body.dataset.state = state;
    $('state').textContent = state;
    clearInterval(countdown);
    countdown = null;
    $('next').textContent = '';
    if (state === 'reconnecting') {
      const tick = () => {
        const at = s.nextReconnectAt;
        $('next').textContent =
          at == null ? '' : `next try in ${Math.max(0, Math.ceil((at - Date.now()) / 1000))} s`;
      };
      tick();
      countdown = setInterval(tick, 250);
    }
  }
  s.on('state', showState);
  s.on('open', () => {
    $('address').textContent = s.address() || '/gotalk/';
  });
  s.on('heartbeat', ({ time }) => {
    $('heartbeat').textContent = `last heartbeat ${new Date(time).toLocaleTimeString()}`;
  });
  showState(s.state);

  // Shows `text` in an <output>, marked as an error or not.
  function show(output, text, failed) {
    output.textContent = text;
    output.classList.toggle('error', Boolean(failed));
  }

  $('greet').addEventListener('submit', async (event) => {
    event.preventDefault();
    const output = $('greeting');
    try {
      const { greeting } = await s.request('greet', { name: $('name').value });
      show(output, greeting);
    } catch (err) {
      show(output, err.message, true);
    }
  });

  $('ask-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const output = $('asked');
    const info = $('asked-info');
    try {
      const answer = await s.request('ask-page', { op: 'page-info', value: $('ask-value').value });
      show(output, typeof answer.echo === 'string' ? answer.echo : JSON.stringify(answer.echo));
      info.textContent = `title: ${answer.title}\nuser agent: ${answer.userAgent}`;
      info.hidden = false;
    } catch (err) {
      show(output, err.message, true);
      info.hidden = true;
    }
  });
})();
