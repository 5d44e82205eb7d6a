// aedes, the MQTT broker Node users pick, in its default in-memory setup, for
// bench/mqtt.mjs:  node bench/mqtt/aedes-broker.mjs PORT
import net from 'node:net';
import { Aedes } from 'aedes';

const aedes = await Aedes.createBroker();
// noDelay: TCP_NODELAY on accepted sockets, as for every broker in the benchmark.
const server = net.createServer({ noDelay: true }, aedes.handle);
server.listen(Number(process.argv[2]), '127.0.0.1');
process.once('SIGTERM', () => server.close(() => aedes.close(() => process.exit(0))));
