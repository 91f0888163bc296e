#!/usr/bin/env node
// Builds the grpc.health.v1 descriptor set that reflection serves, under the file name clients expect
// (grpc/health/v1/health.proto): grpc-health-check ships the proto as health/v1/health.proto.
// Usage: node scripts/health-descriptor.js OUT.binpb
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const out = process.argv[2];
if (!out) {
  console.error('usage: node scripts/health-descriptor.js OUT.binpb');
  process.exit(2);
}
const root = path.resolve(__dirname, '..');
const src = path.join(root, 'node_modules/grpc-health-check/proto/health/v1/health.proto');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'wanas-health-'));
try {
  fs.mkdirSync(path.join(tmp, 'grpc/health/v1'), { recursive: true });
  fs.copyFileSync(src, path.join(tmp, 'grpc/health/v1/health.proto'));
  execFileSync(path.join(root, 'node_modules/.bin/buf'), ['build', tmp, '-o', path.resolve(out)], {
    stdio: 'inherit',
  });
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
