// The Vercel AI SDK as a client of ccgate's Responses API (run by test_responses_clients.py).
//
// usage: node aisdk.mjs BASE_URL MODE    (MODE: generate, stream, multiturn or multiturn-unstored)
//
// The default provider of @ai-sdk/openai speaks POST /v1/responses. The scripted model calls
// get_weather when the prompt carries a [[demo: tool=...]] directive; the SDK runs the tool and
// sends its result back (stopWhen: up to 5 steps). Prints one JSON summary on stdout.
import { createOpenAI } from '@ai-sdk/openai';
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';

const [baseURL, mode] = process.argv.slice(2);
const openai = createOpenAI({ baseURL, apiKey: 'unused' });
const model = openai('sonnet');
const calls = [];
const tools = {
  get_weather: tool({
    description: 'Get the weather for a city',
    inputSchema: z.object({ city: z.string() }),
    execute: async ({ city }) => {
      calls.push(city);
      return `Sunny in ${city}, 21 C`;
    },
  }),
};
const ask = (city) =>
  `Weather in ${city}? [[demo: tool=get_weather input={"city":"${city}"} id=call_${city}]]`;
const options = { model, tools, stopWhen: stepCountIs(5), maxRetries: 0 };

function summary(result, text) {
  return {
    text,
    steps: result.steps.length,
    finishReason: result.finishReason,
    toolCalls: result.steps.flatMap((s) => s.toolCalls.map((c) => [c.toolCallId, c.toolName, c.input])),
    responseIds: result.steps.map((s) => s.response.id),
  };
}

let out;
if (mode === 'generate') {
  const result = await generateText({ ...options, prompt: ask('Paris') });
  out = summary(result, result.text);
} else if (mode === 'stream') {
  const errors = [];
  const result = streamText({ ...options, prompt: ask('Rome'), onError: ({ error }) => errors.push(String(error)) });
  let text = '';
  const parts = new Set();
  for await (const part of result.fullStream) {
    parts.add(part.type);
    if (part.type === 'text-delta') text += part.text;
    if (part.type === 'error') errors.push(String(part.error?.message ?? part.error));
  }
  const steps = await result.steps;
  out = {
    ...summary({ steps, finishReason: await result.finishReason }, text),
    parts: [...parts].sort(),
    errors,
  };
} else if (mode === 'multiturn' || mode === 'multiturn-unstored') {
  // The second turn sends the first one's messages back. With the default store: true the SDK
  // sends the stored assistant message as an item_reference naming it; with store: false
  // (providerOptions.openai.store), every item in full.
  const store = mode === 'multiturn';
  const providerOptions = store ? undefined : { openai: { store: false } };
  const messages = [{ role: 'user', content: ask('Oslo') }];
  const first = await generateText({ ...options, providerOptions, messages });
  messages.push(...first.response.messages, { role: 'user', content: 'And tomorrow?' });
  const second = await generateText({ ...options, providerOptions, messages });
  out = { first: summary(first, first.text), second: summary(second, second.text) };
} else {
  throw new Error(`unknown mode ${mode}`);
}
console.log(JSON.stringify({ ...out, executed: calls }));
