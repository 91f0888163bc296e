// The `e2e-unary` and `alone-unary` projects (jest.suite.config.js): every broker a test starts calls
// and is called the unary way, as with WANAS_SESSIONS=off in the environment.
process.env.WANAS_SESSIONS = 'off';
