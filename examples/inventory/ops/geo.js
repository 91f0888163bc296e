/**
 * A plug-in module: operations written in JavaScript against @wanas/operations alone, loaded by the
 * topology's `- module: ./ops/geo.js`. `geo.where` answers where each pod is and how far it is from a
 * point; the federation-wide answer is the nearest pod.
 */
'use strict';
const { defineOperation, z, Code, OperationError } = require('@wanas/operations');

/** Made-up coordinates per site (a real module would read them from its own configuration). */
const PLACES = {
  'us-east': { lat: 39.0, lon: -77.5 },
  'eu-west': { lat: 53.3, lon: -6.3 },
  'ap-south': { lat: 19.1, lon: 72.9 },
};

function km(a, b) {
  const rad = Math.PI / 180;
  const h =
    Math.sin(((b.lat - a.lat) * rad) / 2) ** 2 +
    Math.cos(a.lat * rad) * Math.cos(b.lat * rad) * Math.sin(((b.lon - a.lon) * rad) / 2) ** 2;
  return Math.round(2 * 6371 * Math.asin(Math.sqrt(h)));
}

const where = defineOperation({
  name: 'geo.where',
  description: 'where each pod is and how far from a point (lat, lon); reduced: the nearest pod',
  idempotent: true,
  params: z.strictObject({ lat: z.number().min(-90).max(90), lon: z.number().min(-180).max(180) }),
  execute: (p, ctx) => {
    const place = PLACES[ctx.site];
    if (!place) throw new OperationError(Code.NOT_FOUND, `no coordinates for site ${ctx.site}`);
    ctx.logger.debug('geo.where', { site: ctx.site, pod: ctx.pod });
    return { site: ctx.site, pod: ctx.pod, ...place, km: km(p, place) };
  },
  reduce: (results) => {
    const ok = results.filter((r) => r.code === 0 && r.result);
    ok.sort((a, b) => a.result.km - b.result.km);
    return { nearest: ok[0] ? `${ok[0].site}/${ok[0].pod}` : null, km: ok[0] ? ok[0].result.km : null };
  },
});

module.exports = { operations: [where] };
