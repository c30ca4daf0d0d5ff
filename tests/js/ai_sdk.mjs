// The Vercel AI SDK's OpenAI provider, unchanged: `openai(model)` speaks the Responses API by default.
// Usage: CHATGATE_BASE_URL=http://127.0.0.1:8000 node tests/js/ai_sdk.mjs
// Prints one JSON object (what came back, and the failures); tests/server/test_responses_js.py checks it.
import { generateText, stepCountIs, streamText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { z } from "zod";

const base = process.env.CHATGATE_BASE_URL;
if (!base) {
  console.error("CHATGATE_BASE_URL is not set (e.g. http://127.0.0.1:8000)");
  process.exit(2);
}
const openai = createOpenAI({ baseURL: `${base.replace(/\/+$/, "")}/v1`, apiKey: "anything" });
const model = openai("gpt-4.1-mini");
const result = { failures: [] };

async function step(name, work) {
  try {
    result[name] = await work();
  } catch (err) {
    result.failures.push({ step: name, error: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
  }
}

await step("generate", async () => {
  const r = await generateText({ model, prompt: "Say hello in one short sentence.", maxOutputTokens: 256,
                                 temperature: 0 });
  return { text: r.text, finishReason: r.finishReason, usage: r.usage, responseId: r.response.id,
           modelId: r.response.modelId };
});

await step("stream", async () => {
  const r = streamText({ model, prompt: "Say hi.", maxOutputTokens: 256, temperature: 0 });
  let text = "";
  for await (const delta of r.textStream) text += delta;
  return { text, finishReason: await r.finishReason, usage: await r.usage };
});

const weather = tool({
  description: "Get the current weather in a city.",
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => ({ city, temperature_c: 21 }),
});

await step("tool", async () => {
  const r = await generateText({
    model, prompt: "What is the weather in Paris?", tools: { weather }, maxOutputTokens: 128, temperature: 0,
    stopWhen: stepCountIs(2),
    prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? { type: "tool", toolName: "weather" } : "none" }),
  });
  return {
    steps: r.steps.map((s) => ({ finishReason: s.finishReason, toolCalls: s.toolCalls.map((c) => c.toolName),
                                 toolResults: s.toolResults.map((t) => t.output) })),
    text: r.text,
  };
});

await step("stream_tool", async () => {
  const r = streamText({
    model, prompt: "What is the weather in Oslo?", tools: { weather }, maxOutputTokens: 128, temperature: 0,
    stopWhen: stepCountIs(2),
    prepareStep: ({ stepNumber }) => ({ toolChoice: stepNumber === 0 ? { type: "tool", toolName: "weather" } : "none" }),
  });
  let text = "";
  for await (const delta of r.textStream) text += delta;
  const steps = await r.steps;
  return { steps: steps.map((s) => ({ finishReason: s.finishReason, toolCalls: s.toolCalls.map((c) => c.toolName) })),
           text };
});

console.log(JSON.stringify(result));
process.exit(result.failures.length ? 1 : 0);
