// Starts the Node reference server (@durable-streams/server, installed by bench/streams/run into
// its cache). usage: node node-server.mjs PORT [DATA_DIR]  (with DATA_DIR: file-backed, LMDB;
// without: in memory). Prints "listening <url>" once it accepts connections.
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [port, dataDir] = process.argv.slice(2);
const modDir = process.env.DS_NODE_MODULES;
const require = createRequire(pathToFileURL(modDir + "/").href);
const { DurableStreamTestServer } = await import(pathToFileURL(require.resolve("@durable-streams/server")).href);
const opts = { port: Number(port), host: "127.0.0.1", longPollTimeout: 500 };
if (dataDir) opts.dataDir = dataDir;
const server = new DurableStreamTestServer(opts);
const url = await server.start();
console.log(`listening ${url}`);
const stop = async () => { await server.stop(); process.exit(0); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
