// The official TypeScript MCP client against exai over Streamable HTTP, era negotiation on.
// Usage: node modern_client.mjs MCP_URL STATUS_URL; prints one JSON line of what it saw.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';

const [url, statusUrl] = process.argv.slice(2);
const client = new Client({ name: 'exai-ts-test', version: '1.0.0' }, { versionNegotiation: { mode: 'auto' } });
await client.connect(new StreamableHTTPClientTransport(new URL(url)));
const era = client.getProtocolEra();
const version = client.getNegotiatedProtocolVersion();
const { tools } = await client.listTools();

let progress = 0;
const prompt = 'stream\n#sim {"chunks": 6, "chunk_delay_s": 0.1}';
const result = await client.callTool(
  { name: 'chat', arguments: { prompt }, _meta: {} },
  { onprogress: () => { progress += 1; } },
);

// Cancel a call once the daemon shows it running: the SDK closes the request's stream.
const abort = new AbortController();
const held = client.callTool({ name: 'chat', arguments: { prompt: 'x\n#sim {"hang": true}' } }, { signal: abort.signal });
const deadline = Date.now() + 5000;
while (Date.now() < deadline) {
  const status = await (await fetch(statusUrl)).json();
  if (status.requests.some((r) => r.tool === 'chat' && r.state === 'running')) break;
  await new Promise((resolve) => setTimeout(resolve, 20));
}
abort.abort();
let cancelled = false;
try {
  await held;
} catch {
  cancelled = true;
}
await client.close();
console.log(JSON.stringify({ era, version, tools: tools.map((t) => t.name), progress, isError: result.isError, cancelled }));
