/* adsync snippet v1 (docs/tracking.md): keeps the Microsoft Ads click id in a first-party cookie,
   reports clicks and conversions, retries failed calls (Retry-After honoured, one idempotencyKey
   per call). With data-consent="required" it stores nothing until consent allows it.
   Never throws into the page: failures end in console.debug. */
(function (w, d) {
  'use strict';
  var a = w.adsync = w.adsync || {};
  if (a.loaded) return;
  a.loaded = true;

  var ID = /^[A-Za-z0-9_-]{1,100}$/, VID = /^[A-Za-z0-9_-]{1,64}$/, QK = 'adsync_retry';
  var site = '', endpoint = '', vid = '', clk = '', landed = '', required = false;
  var told = { s: '', u: '' };  // adStorage, adUserData as the page said: 'granted', 'denied' or ''

  function debug(e) {
    try { console.debug('adsync:', (e && e.message) || e); } catch (_) {}
  }

  function getCookie(name) {
    try {
      var m = d.cookie.match(new RegExp('(?:^|;\\s*)' + name + '=([^;]*)'));
      return m ? decodeURIComponent(m[1]) : '';
    } catch (e) { return ''; }
  }

  function setCookie(name, value, days) {
    try {
      d.cookie = name + '=' + encodeURIComponent(value) + '; max-age=' + days * 86400 +
        '; path=/; SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : '');
    } catch (e) { debug(e); }
  }

  function randomId() {
    var b = new Uint8Array(16), s = '', i;
    try { crypto.getRandomValues(b); } catch (e) {
      for (i = 0; i < 16; i++) b[i] = Math.random() * 256;
    }
    for (i = 0; i < 16; i++) s += (b[i] + 256).toString(16).slice(1);
    return s;
  }

  // The landing's msclkid (parameter name in any case; the value is kept as-is).
  function urlClickId() {
    try {
      var found = '';
      new URLSearchParams(location.search).forEach(function (v, k) {
        if (!found && k.toLowerCase() === 'msclkid') found = v.trim();
      });
      return ID.test(found) ? found : '';
    } catch (e) { return ''; }
  }

  // Our cookie, else what this page saw, else Microsoft UET's cookie without its "_uet" prefix.
  function clickId() {
    var c = getCookie('adsync_msclkid') || clk;
    if (ID.test(c)) return c;
    var u = getCookie('_uetmsclkid').replace(/^_uet/, '');
    return ID.test(u) ? u : null;
  }

  // Ad storage consent: the page's adsync.consent(), else the last ad_storage in UET's queue (readable
  // only while window.uetq is still a plain array, before UET's bat.js loads), else '' (not told).
  function storage() {
    var q = w.uetq, v = '';
    for (var i = 0; Array.isArray(q) && i + 2 < q.length; i++) {
      if (q[i] === 'consent' && q[i + 2] && /^(default|update)$/.test(q[i + 1])) v = q[i + 2].ad_storage || v;
    }
    return told.s || (/^(granted|denied)$/.test(v) ? v : '');
  }

  // Not told: allowed unless the tag says consent is required.
  function allows(v) { return v ? v === 'granted' : !required; }

  // Retry queue in localStorage, only while ad storage is allowed: at most 20 calls
  // ({b: body without email/phone, t: tries, at: due, x: expiry}), 6 tries, 1 day.
  function queue(q) {
    try {
      if (q) w.localStorage.setItem(QK, JSON.stringify(q.slice(-20)));
      else q = JSON.parse(w.localStorage.getItem(QK)) || [];
    } catch (e) { q = []; }
    return q;
  }

  function later(body, tries, wait) {
    if (tries > 5 || !allows(storage())) return;
    var ms = Math.min(wait > 0 ? wait : 2 << tries, 86400) * 1000, b = {}, k, q = queue();
    for (k in body) if (k !== 'email' && k !== 'phone') b[k] = body[k];
    q.push({ b: b, t: tries + 1, at: Date.now() + ms, x: Date.now() + 864e5 });
    queue(q);
    setTimeout(retry, ms + 50);
  }

  function retry() {
    var q = queue(), now = Date.now(), due = [], keep = [];
    for (var i = 0; i < q.length; i++) {
      if (q[i] && q[i].x > now) (q[i].at > now ? keep : due).push(q[i]);
    }
    if (keep.length) setTimeout(retry, Math.min(keep[0].at - now, 864e5) + 50);
    if (due.length) queue(keep);
    for (var j = 0; j < due.length; j++) post(due[j].b, due[j].t);
  }

  // text/plain keeps this a CORS "simple request": no preflight round trip.
  function post(body, tries) {
    return fetch(endpoint, {
      method: 'POST', body: JSON.stringify(body), keepalive: true, credentials: 'omit',
      headers: { 'Content-Type': 'text/plain' }
    }).then(function (r) {
      if (r.status === 429 || r.status >= 500) later(body, tries, +(r.headers && r.headers.get('Retry-After')));
      return r.json();
    }, function (e) { later(body, tries, 0); throw e; })
      .catch(function (e) { debug(e); return null; });
  }

  // Callers catch what this throws.
  function send(body) {
    if (!site || !endpoint || typeof fetch !== 'function') throw 'not configured; nothing sent';
    body.site = site;
    if (vid) body.visitorId = vid;
    body.idempotencyKey = randomId();
    return post(body, 0);
  }

  function num(v) {
    return typeof v === 'string' && v.trim() !== '' && isFinite(v) ? Number(v) : v;
  }

  // Once ad storage is allowed: the visitor id, the landing's click kept and reported, and earlier calls retried.
  function start() {
    var s = storage();
    if (vid || !allows(s)) return s;
    vid = getCookie('adsync_vid');
    if (!VID.test(vid)) vid = randomId();
    setCookie('adsync_vid', vid, 90);
    clk = getCookie('adsync_msclkid');
    if (landed && landed !== clk) {
      clk = landed;
      setCookie('adsync_msclkid', landed, 90);
      send({ type: 'click', msclkid: landed, url: location.href.slice(0, 2000), consent: s ? { adStorage: s } : undefined });
    }
    if (endpoint && typeof fetch === 'function') retry();
    return s;
  }

  // adsync.trackConversion('purchase', {orderId, value, currency, signature}, {email, phone}) -> Promise<JSON|null>
  // Without ad storage consent: no click or visitor id; without ad user data consent: no email or phone.
  function trackConversion(event, data, who) {
    try {
      data = data || {};
      who = who || {};
      var s = start(), ok = allows(s), share = ok && allows(told.u || s);
      return send({
        type: 'conversion', event: event, orderId: data.orderId, value: num(data.value), currency: data.currency,
        signature: data.signature, msclkid: ok ? clickId() : null, email: share ? who.email : null,
        phone: share ? who.phone : null,
        consent: s || told.u ? { adStorage: s || undefined, adUserData: told.u || undefined } : undefined
      });
    } catch (e) {
      debug(e);
      return Promise.resolve(null);
    }
  }

  // adsync.consent({adStorage: 'granted'|'denied', adUserData: ...}): granted sets the cookies and keeps
  // the landing's click; denied deletes adsync's cookies and retry queue and stores nothing more.
  function consent(c) {
    try {
      c = c || {};
      ['adStorage', 'adUserData'].forEach(function (k) {
        if (c[k] && !/^(granted|denied)$/.test(c[k])) throw new Error(k + ': use granted or denied');
      });
      told = { s: c.adStorage || told.s, u: c.adUserData || told.u };
      if (allows(start())) return;
      setCookie('adsync_vid', '', 0);
      setCookie('adsync_msclkid', '', 0);
      try { w.localStorage.removeItem(QK); } catch (e) { debug(e); }
      vid = clk = '';
    } catch (e) { debug(e); }
  }

  try {
    var me = d.currentScript || d.querySelector('script[data-site][src*="/t/v1/adsync.js"]');
    if (me) {
      site = me.getAttribute('data-site') || '';
      endpoint = me.src.replace(/\/t\/v1\/adsync\.js.*$/, '/t/v1/collect');
      required = me.getAttribute('data-consent') === 'required';
    }
    landed = urlClickId();  // in memory only, until ad storage is allowed
  } catch (e) { debug(e); }

  // Replay calls queued before this script loaded, in order ({consent: {...}} items are consent calls);
  // later pushes to adsync.q run at once.
  var queued = a.q;
  a.trackConversion = trackConversion;
  a.consent = consent;
  a.q = { push: function (args) { if (args && args.consent) consent(args.consent); else trackConversion.apply(null, args || []); } };
  try {
    for (var k = 0; queued && k < queued.length; k++) a.q.push(queued[k]);
    start();
  } catch (e) { debug(e); }
})(window, document);
