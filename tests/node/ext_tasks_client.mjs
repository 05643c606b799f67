// The official tasks client (@modelcontextprotocol/ext-tasks) over the official TypeScript SDK
// runs exai's chat as a task and settles it, in one generation.
// Usage: node ext_tasks_client.mjs MCP_URL legacy|modern; prints one JSON line of what it saw.
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import {
  createTaskSessionFromClient,
  resultFromTaskOutcome,
  toolDeclarationFromMcpTool,
} from '@modelcontextprotocol/ext-tasks/client';

const [url, generation] = process.argv.slice(2);
const MODERN = '2026-07-28';
const clientInfo = { name: 'exai-ext-tasks-test', version: '1.0.0' };
const clientCapabilities = { extensions: { 'io.modelcontextprotocol/tasks': {} } };

// The modern path: each request POSTed on its own, routing headers mirroring the body.
let nextId = 1;
async function rawDispatch(raw) {
  const request = { jsonrpc: '2.0', id: raw.id ?? `ext-${nextId++}`, ...raw };
  const params = request.params ?? {};
  const name = request.method === 'tools/call' ? params.name : params.taskId;
  const headers = {
    'Content-Type': 'application/json',
    Accept: 'application/json, text/event-stream',
    'MCP-Protocol-Version': MODERN,
    'Mcp-Method': request.method,
  };
  if (name !== undefined) headers['Mcp-Name'] = name;
  const answer = await fetch(url, { method: 'POST', headers, body: JSON.stringify(request) });
  const text = await answer.text();
  if ((answer.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
    const messages = text.split('\n').filter((l) => l.startsWith('data:') && l.slice(5).trim()).map((l) => JSON.parse(l.slice(5)));
    return messages.find((m) => m.id === request.id);
  }
  return JSON.parse(text);
}

const options = generation === 'modern' ? { versionNegotiation: { mode: 'auto' } } : {};
const client = new Client(clientInfo, options);
const transport = new StreamableHTTPClientTransport(new URL(url));
await client.connect(transport);
const seen = { era: client.getProtocolEra(), version: client.getNegotiatedProtocolVersion() };
const framing = generation === 'modern'
  ? { rawDispatch, v2RequestFraming: { protocolVersion: MODERN, clientInfo, clientCapabilities } }
  : {};
const session = createTaskSessionFromClient(client, { endpointId: 'exai-test', ...framing });
try {
  const { tools } = await client.listTools();
  const declaration = toolDeclarationFromMcpTool(tools.find((t) => t.name === 'chat'));
  const execution = await session.callTool(
    'chat',
    { prompt: 'as a task\n#sim {"chunks": 8, "chunk_delay_s": 0.2, "reply": "settled answer"}' },
    { declaration, task: { preference: 'prefer', retentionMs: 60000 } },
  );
  seen.kind = execution.kind ?? null;
  const settled = await execution.settle();
  const result = resultFromTaskOutcome(settled.outcome);
  seen.outcome = settled.outcome.kind ?? settled.outcome.status ?? null;
  seen.text = result.content?.[0]?.text ?? null;
  seen.isError = result.isError ?? null;
} finally {
  await session.close();
  if (generation === 'legacy') await transport.terminateSession(); // DELETE: the session ends now
  await client.close();
}
console.log(JSON.stringify(seen));
