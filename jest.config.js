/** Jest: TypeScript through ts-jest (transpile only; `npm run build` type-checks), packages mapped to src. */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/packages', '<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  moduleNameMapper: { '^@wanas/([a-z-]+)$': '<rootDir>/packages/$1/src' },
  transform: {
    '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.base.json', diagnostics: false }],
  },
  testTimeout: 60000,
  // One file at a time for `npx jest <path>`. `npm test` runs the projects of jest.suite.config.js, two
  // files at a time where that is safe (scripts/run-tests.js).
  maxWorkers: 1,
};
