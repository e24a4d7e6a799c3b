// The Express peer of the tessera server in scripts/bench.sh: the membership
// app of the seeds' tutorials (register, login, profile with a visit counter
// in the session, logout), written the way they write it: express +
// express-session (the default MemoryStore, or connect-redis on Redis),
// passwords hashed with bcrypt, `req.session.regenerate` at login, an
// `isLoggedIn` flag and the user name in the session.
//
// Differences from the tutorials, all for the benchmark: the cookie is not
// `Secure` (the benchmark speaks plain HTTP on loopback), and the bench user
// is registered at start-up. Like the tutorials, no CSRF tokens, no security
// headers and no access log.
//
//   PORT=3000 STORE=memory|redis REDIS_URL=redis://127.0.0.1:6379 node app.js
"use strict";
const express = require("express");
const session = require("express-session");
const bcrypt = require("bcrypt");

const port = Number(process.env.PORT || 3000);
const saltRounds = 10;
const users = new Map(); // username -> { username, passwordHash }

async function sessionStore() {
  if (process.env.STORE !== "redis") return undefined; // express-session's MemoryStore
  const { createClient } = require("redis");
  const connectRedis = require("connect-redis");
  const RedisStore = connectRedis.RedisStore || connectRedis.default || connectRedis;
  const client = createClient({ url: process.env.REDIS_URL || "redis://127.0.0.1:6379" });
  await client.connect();
  return new RedisStore({ client, prefix: "myapp:" });
}

async function main() {
  const app = express();
  app.use(express.urlencoded({ extended: false }));
  app.use(
    session({
      name: "sessionId",
      secret: process.env.SESSION_SECRET || "bench-secret-not-for-production",
      store: await sessionStore(),
      resave: false,
      saveUninitialized: false,
      cookie: { httpOnly: true, sameSite: "strict", maxAge: 15 * 60 * 1000 },
    })
  );

  app.get("/hello", (req, res) => res.send("Hello, World!"));

  app.post("/register", async (req, res) => {
    const { username, password } = req.body;
    if (!username || !password) return res.status(400).send("Username and password are required");
    if (users.has(username)) return res.status(409).send("User already exists");
    users.set(username, { username, passwordHash: await bcrypt.hash(password, saltRounds) });
    res.redirect("/login");
  });

  app.post("/login", async (req, res, next) => {
    const { username, password } = req.body;
    const user = users.get(username);
    if (!user || !(await bcrypt.compare(password || "", user.passwordHash))) {
      return res.status(401).send("Invalid username or password");
    }
    // Against session fixation: a new session ID at login.
    req.session.regenerate((err) => {
      if (err) return next(err);
      req.session.isLoggedIn = true;
      req.session.username = user.username;
      res.redirect("/profile");
    });
  });

  app.get("/me", (req, res) => {
    if (!req.session.isLoggedIn) return res.status(401).json({ error: "Not logged in" });
    res.json({ username: req.session.username });
  });

  app.get("/profile", (req, res) => {
    if (!req.session.isLoggedIn) return res.redirect("/login");
    req.session.views = (req.session.views || 0) + 1;
    res.send(
      `<!DOCTYPE html><html><head><title>Profile</title></head><body>` +
        `<h1>Welcome, ${escapeHtml(req.session.username)}</h1>` +
        `<p>You have visited this page ${req.session.views} times.</p>` +
        `<form method="post" action="/logout"><button>Log out</button></form></body></html>`
    );
  });

  app.post("/logout", (req, res, next) => {
    req.session.destroy((err) => {
      if (err) return next(err);
      res.clearCookie("sessionId");
      res.redirect("/login");
    });
  });

  const benchUser = process.env.BENCH_USER || "bench";
  const benchPassword = process.env.BENCH_PASSWORD || "correct horse battery staple";
  // The bench user, and the accounts the login benchmark cycles through.
  const names = [benchUser];
  for (let i = 0; i < Number(process.env.BENCH_USERS || 0); i++) names.push(`${benchUser}${i}`);
  for (const name of names) {
    users.set(name, { username: name, passwordHash: await bcrypt.hash(benchPassword, saltRounds) });
  }
  app.listen(port, "127.0.0.1", () => console.log(`listening on http://127.0.0.1:${port}`));
}

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
