/* adsync snippet v1: keeps the Microsoft Ads click id (msclkid) in a first-party cookie and
   reports conversions. <script async src="https://ADSYNC/t/v1/adsync.js" data-site="KEY"></script>
   Never throws into the page: every failure ends in console.debug and a null result. */
(function (w, d) {
  'use strict';
  var a = w.adsync = w.adsync || {};
  if (a.loaded) return;
  a.loaded = true;

  var ID = /^[A-Za-z0-9_-]{1,100}$/;
  var VID = /^[A-Za-z0-9_-]{1,64}$/;
  var site = '', endpoint = '', vid = '', clk = '';

  function debug(e) {
    try { console.debug('adsync:', (e && e.message) || e); } catch (_) {}
  }

  function getCookie(name) {
    try {
      var m = d.cookie.match(new RegExp('(?:^|;\\s*)' + name + '=([^;]*)'));
      return m ? decodeURIComponent(m[1]) : '';
    } catch (e) { return ''; }
  }

  function setCookie(name, value) {
    try {
      d.cookie = name + '=' + encodeURIComponent(value) + '; max-age=' + 90 * 86400 +
        '; path=/; SameSite=Lax' + (location.protocol === 'https:' ? '; Secure' : '');
    } catch (e) { debug(e); }
  }

  function randomId() {
    var b = new Uint8Array(16), s = '';
    try { crypto.getRandomValues(b); } catch (e) {
      for (var i = 0; i < 16; i++) b[i] = Math.random() * 256;
    }
    for (var j = 0; j < 16; j++) s += (b[j] + 256).toString(16).slice(1);
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

  function send(body) {
    try {
      if (!site || !endpoint || typeof fetch !== 'function') {
        debug('no site key or no fetch; nothing sent');
        return Promise.resolve(null);
      }
      body.site = site;
      body.visitorId = vid;
      // text/plain keeps this a CORS "simple request": no preflight round trip.
      return fetch(endpoint, {
        method: 'POST', body: JSON.stringify(body), keepalive: true, credentials: 'omit',
        headers: { 'Content-Type': 'text/plain' }
      }).then(function (r) { return r.json(); })
        .catch(function (e) { debug(e); return null; });
    } catch (e) {
      debug(e);
      return Promise.resolve(null);
    }
  }

  function num(v) {
    return typeof v === 'string' && v.trim() !== '' && isFinite(v) ? Number(v) : v;
  }

  // adsync.trackConversion('purchase', {orderId, value, currency}, {email, phone}) -> Promise<JSON|null>
  function trackConversion(event, data, who) {
    try {
      data = data || {};
      who = who || {};
      return send({
        type: 'conversion', event: event, orderId: data.orderId, value: num(data.value),
        currency: data.currency, msclkid: clickId(), email: who.email, phone: who.phone
      });
    } catch (e) {
      debug(e);
      return Promise.resolve(null);
    }
  }

  try {
    var me = d.currentScript || d.querySelector('script[data-site][src*="/t/v1/adsync.js"]');
    if (me) {
      site = me.getAttribute('data-site') || '';
      endpoint = me.src.replace(/\/t\/v1\/adsync\.js.*$/, '/t/v1/collect');
    }
    vid = getCookie('adsync_vid');
    if (!VID.test(vid)) vid = randomId();
    setCookie('adsync_vid', vid);

    var landed = urlClickId();
    clk = getCookie('adsync_msclkid');
    if (landed && landed !== clk) {
      clk = landed;
      setCookie('adsync_msclkid', landed);
      send({ type: 'click', msclkid: landed, url: location.href.slice(0, 2000) });
    }
  } catch (e) { debug(e); }

  // Replay calls queued before this script loaded; later pushes to adsync.q run at once.
  var queued = a.q;
  a.trackConversion = trackConversion;
  a.q = { push: function (args) { trackConversion.apply(null, args || []); } };
  try {
    for (var k = 0; queued && k < queued.length; k++) a.q.push(queued[k]);
  } catch (e) { debug(e); }
})(window, document);
