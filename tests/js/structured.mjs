// Structured output with zod, as openai-node documents it: zodResponseFormat + chat.completions.parse.
// Usage: CHATGATE_BASE_URL=http://127.0.0.1:8000 node tests/js/structured.mjs
// Prints one JSON object: the JSON schema the SDK sent and each seed's content and parsed value.
// tests/server/test_js_sdk.py runs this and validates every content against the schema.
import OpenAI from "openai";
import { zodResponseFormat } from "openai/helpers/zod";
import { z } from "zod";

const base = process.env.CHATGATE_BASE_URL;
if (!base) {
  console.error("CHATGATE_BASE_URL is not set (e.g. http://127.0.0.1:8000)");
  process.exit(2);
}
const client = new OpenAI({ baseURL: `${base.replace(/\/+$/, "")}/v1`, apiKey: "anything", maxRetries: 0, timeout: 120_000 });

const User = z.object({
  id: z.number().int(),
  age: z.number().int().min(18).max(99),
  email: z.string().email(),
  name: z.string().min(1).max(30),
  score: z.number().min(0).max(1),
});
const format = zodResponseFormat(User, "user");
const result = { schema: format.json_schema.schema, answers: [], failures: [] };

const ask = { model: "gpt-4", messages: [{ role: "user", content: "Invent a user, in JSON." }], response_format: format,
              max_tokens: 300, temperature: 1 };
try {
  const r = await client.chat.completions.parse({ ...ask, seed: 0 });
  result.parsed = r.choices[0].message.parsed;
  result.parsed_content = r.choices[0].message.content;
} catch (err) {
  result.failures.push({ seed: 0, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
}
// More seeds through create(): an answer cut by max_tokens (which parse() refuses) is closed so it still validates.
for (const seed of [1, 2, 3]) {
  try {
    const r = await client.chat.completions.create({ ...ask, seed });
    const choice = r.choices[0];
    const zod = User.safeParse(JSON.parse(choice.message.content));
    result.answers.push({ seed, content: choice.message.content, zod_ok: zod.success, finish_reason: choice.finish_reason });
  } catch (err) {
    result.failures.push({ seed, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
}
console.log(JSON.stringify(result));
