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
  // One file at a time: the e2e suites start many real processes; on 2 cores, two at once starve each other.
  maxWorkers: 1,
};
