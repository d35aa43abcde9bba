// Creates the user the services connect as: readWrite on the application
// database and nothing else (no other database, no user or server admin).
//
// docker-compose.yml mounts this into the mongo image's
// /docker-entrypoint-initdb.d, which runs it once, on the first start with an
// empty data volume, against a temporary mongod that listens on 127.0.0.1 only;
// the root user (MONGO_INITDB_ROOT_*) is created just before. mongosh runs on
// Node, so the names come from the container's environment (process.env):
//   MONGO_APP_DB        the database the services use (MONGODB_DB, default tradebots)
//   MONGO_APP_USERNAME  MONGO_APP_PASSWORD
// The services authenticate with authSource=<MONGO_APP_DB>. An existing
// volume is never re-initialised: to add the user to it, run this file once
// with mongosh as the root user (see docs/deployment.md).

const dbName = process.env.MONGO_APP_DB || "tradebots";
const user = process.env.MONGO_APP_USERNAME;
const pwd = process.env.MONGO_APP_PASSWORD;

if (!user || !pwd) {
  // Throwing makes mongosh exit non-zero, which stops the image's entrypoint:
  // the container fails instead of starting without the application user.
  throw new Error("init-app-user.js: MONGO_APP_USERNAME and MONGO_APP_PASSWORD must be set");
}

const appDb = db.getSiblingDB(dbName);
if (appDb.getUser(user) === null) {
  appDb.createUser({ user: user, pwd: pwd, roles: [{ role: "readWrite", db: dbName }] });
  print(`init-app-user.js: created ${user} with readWrite on ${dbName}`);
} else {
  appDb.updateUser(user, { pwd: pwd, roles: [{ role: "readWrite", db: dbName }] });
  print(`init-app-user.js: updated ${user} (readWrite on ${dbName})`);
}
