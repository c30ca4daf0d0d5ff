// The official OpenAI JavaScript SDK, used exactly as OpenAI documents it, against chatgate.
// Usage: CHATGATE_BASE_URL=http://127.0.0.1:8000 node tests/js/smoke.mjs
// Prints one JSON object with what the server returned; exits non-zero if any step fails.
// tests/server/test_js_sdk.py runs this and checks the facts.
import OpenAI from "openai";
import { VERSION } from "openai/version";

const base = process.env.CHATGATE_BASE_URL;
if (!base) {
  console.error("CHATGATE_BASE_URL is not set (e.g. http://127.0.0.1:8000)");
  process.exit(2);
}

const client = new OpenAI({
  baseURL: `${base.replace(/\/+$/, "")}/v1`,
  apiKey: "anything",
  maxRetries: 0,
  timeout: 120_000,
});

const messages = [
  { role: "system", content: "You are a helpful assistant." },
  { role: "user", content: "Say hello in one short sentence." },
];

const failures = [];
const result = { sdk_version: VERSION };

function fail(step, err) {
  const detail = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
  failures.push(`${step}: ${detail}`);
}

// (a) A non-streamed completion.
try {
  const completion = await client.chat.completions.create({
    model: "gpt-4",
    messages,
    temperature: 0.7,
    max_tokens: 20,
  });
  const choice = completion.choices[0];
  result.completion = {
    id: completion.id,
    object: completion.object,
    model: completion.model,
    n_choices: completion.choices.length,
    role: choice?.message?.role ?? null,
    content: choice?.message?.content ?? null,
    finish_reason: choice?.finish_reason ?? null,
    usage: completion.usage ?? null,
  };
  if (!choice?.message?.content) fail("completion", "empty content");
} catch (err) {
  fail("completion", err);
}

// (b) A streamed completion with a final usage chunk.
try {
  const stream = await client.chat.completions.create({
    model: "gpt-4",
    messages,
    temperature: 0.7,
    max_tokens: 20,
    stream: true,
    stream_options: { include_usage: true },
  });
  const deltas = [];
  const ids = new Set();
  const models = new Set();
  let chunks = 0;
  let role = null;
  let finishReason = null;
  let usage = null;
  let usageChunkIndex = null;
  let usageChunkChoices = null;
  for await (const chunk of stream) {
    chunks += 1;
    ids.add(chunk.id);
    models.add(chunk.model);
    for (const choice of chunk.choices) {
      if (choice.delta?.role) role = choice.delta.role;
      if (choice.delta?.content) deltas.push(choice.delta.content);
      if (choice.finish_reason) finishReason = choice.finish_reason;
    }
    if (chunk.usage) {
      usage = chunk.usage;
      usageChunkIndex = chunks;
      usageChunkChoices = chunk.choices.length;
    }
  }
  result.stream = {
    chunks,
    ids: [...ids],
    models: [...models],
    role,
    text: deltas.join(""),
    n_deltas: deltas.length,
    finish_reason: finishReason,
    usage,
    usage_in_last_chunk: usageChunkIndex !== null && usageChunkIndex === chunks,
    usage_chunk_choices: usageChunkChoices,
  };
  if (deltas.length === 0) fail("stream", "no content deltas");
  if (usage === null) fail("stream", "no usage chunk");
} catch (err) {
  fail("stream", err);
}

// (c) An unknown model: the SDK must raise its APIError with OpenAI's status and code.
try {
  await client.chat.completions.create({ model: "no-such-model", messages });
  result.error = null;
  fail("error", "no error was thrown for model no-such-model");
} catch (err) {
  if (err instanceof OpenAI.APIError) {
    result.error = {
      class: err.constructor.name,
      is_not_found_error: err instanceof OpenAI.NotFoundError,
      status: err.status ?? null,
      code: err.code ?? null,
      type: err.type ?? null,
      param: err.param ?? null,
      message: err.message,
    };
    if (err.status !== 404 || err.code !== "model_not_found") {
      fail("error", `expected 404 model_not_found, got ${err.status} ${err.code}`);
    }
  } else {
    result.error = null;
    fail("error", err);
  }
}

// (d) The model list.
try {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  result.models = ids;
  if (ids.length === 0) fail("models", "empty model list");
} catch (err) {
  fail("models", err);
}

result.failures = failures;
console.log(JSON.stringify(result));
process.exit(failures.length === 0 ? 0 : 1);
