// Copies files tsc does not emit (the console's page, script and stylesheet) from src to dist, so a built
// broker (and the broker image, which holds dist only) serves them.
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
for (const dir of ['packages/broker/src/console/assets']) {
  const from = path.join(root, dir);
  const to = path.join(root, dir.replace('/src/', '/dist/'));
  fs.mkdirSync(to, { recursive: true });
  for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(to, f));
}
